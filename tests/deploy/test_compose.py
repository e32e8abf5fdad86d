"""deploy/docker/compose.yaml: valid compose, one image, project paths, never root, and its
scheduler and worker commands form a working cluster when run as real processes."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[2]
COMPOSE = PROJECT / "deploy" / "docker" / "compose.yaml"
COMPOSE_TLS = PROJECT / "deploy" / "docker" / "compose.tls.yaml"
DOCKERFILE = PROJECT / "deploy" / "docker" / "Dockerfile"
BIN = Path(sys.executable).parent


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _compose_schema() -> dict[str, Any]:
    from importlib.resources import files

    text = files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    return json.loads(text.read_text())


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with nothing set in the environment: the defaults."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_TLS], ids=lambda p: p.name)
def test_compose_file_validates_against_the_compose_spec(path: Path) -> None:
    proc = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_schema_catches_a_misspelt_key() -> None:
    import jsonschema

    schema = _compose_schema()
    jsonschema.validate(_compose(), schema)
    broken = copy.deepcopy(_compose())
    broken["services"]["worker"]["comand"] = broken["services"]["worker"].pop("command")
    with pytest.raises(jsonschema.ValidationError, match="comand"):
        jsonschema.validate(broken, schema)


def test_one_image_project_paths_and_no_root() -> None:
    services = _compose()["services"]
    assert {"scheduler", "worker", "nightly"} <= set(services)
    images = {_interpolate(s["image"]) for s in services.values()}
    builds = {json.dumps(s["build"], sort_keys=True) for s in services.values()}
    assert len(images) == 1 and len(builds) == 1  # one shared image
    build = services["scheduler"]["build"]
    # Relative paths resolve against the compose file's directory.
    assert (COMPOSE.parent / build["context"]).resolve() == PROJECT
    assert (PROJECT / build["dockerfile"]).resolve() == DOCKERFILE
    for name, service in services.items():
        user = _interpolate(service["user"])
        uid, gid = (int(part) for part in user.split(":"))
        assert uid != 0 and gid != 0, name
        assert re.fullmatch(r"\$\{ROADNET_UID:-\d+\}:\$\{ROADNET_GID:-\d+\}", service["user"])
        (volume,) = service["volumes"]
        assert volume["target"] == "/data"
        assert (COMPOSE.parent / _interpolate(volume["source"])).resolve() == PROJECT / "data"
        assert volume["bind"]["create_host_path"] is False  # no root-owned directory


def test_nightly_service_runs_roadnet_nightly_against_the_scheduler() -> None:
    services = _compose()["services"]
    nightly = services["nightly"]["command"]
    assert nightly[:2] == ["roadnet", "nightly"]
    options = dict(zip(nightly[2::2], nightly[3::2], strict=True))
    assert options["--scheduler"] == "tcp://scheduler:8786"
    assert options["--inbox"].startswith("/data/") and options["--outbox"].startswith("/data/")
    assert services["nightly"]["profiles"] == ["nightly"]  # one-shot, not started by `up`
    scheduler = services["scheduler"]["command"]
    assert scheduler[scheduler.index("--port") + 1] == "8786"


def test_tls_override_is_the_plain_commands_over_tls() -> None:
    """compose.tls.yaml changes only the protocol and adds the certificates."""
    base = _compose()["services"]
    tls = yaml.safe_load(COMPOSE_TLS.read_text())["services"]
    assert set(tls) == {"scheduler", "worker", "nightly", "run"}
    for name, service in tls.items():
        command = list(service["command"])
        for option in ("--tls-ca-file", "--tls-cert", "--tls-key"):
            i = command.index(option)
            assert command[i + 1].startswith("/data/tls/"), (name, option)
            del command[i : i + 2]
        if name == "scheduler":
            i = command.index("--protocol")
            assert command[i + 1] == "tls"
            del command[i : i + 2]
        plain = [
            a.replace("tcp://scheduler:8786", "tls://scheduler:8786") for a in base[name]["command"]
        ]
        assert command == plain, name


def _image_env() -> dict[str, str]:
    """The ENV of the Dockerfile (what every container of the image starts with)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(item.split("=", 1) for item in line[4:].split())
    return env


def _local(command: list[str], replace: dict[str, str]) -> list[str]:
    """A compose command as a process here: our `dask`, 127.0.0.1 and free ports."""
    args = [replace.get(arg, arg) for arg in command]
    args[0] = str(BIN / args[0])
    return args


def _wait_healthy(healthcheck: list[str], replace: dict[str, str], env: dict[str, str]) -> None:
    """Wait for the scheduler's dashboard, then run the compose healthcheck (``CMD ...``)."""
    assert healthcheck[0] == "CMD"
    url = f"http://{replace[':8787']}/health"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                break
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    args = [sys.executable if a == "python" else a for a in healthcheck[1:]]
    args = [a.replace("127.0.0.1:8787", replace[":8787"]) for a in args]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.cluster
def test_compose_scheduler_and_worker_commands_run_a_computation(
    processes: Callable[..., subprocess.Popen[bytes]], free_port: Callable[[], int]
) -> None:
    import dask.array as da
    from distributed import Client

    services = _compose()["services"]
    port, dashboard = free_port(), free_port()
    replace = {
        "0.0.0.0": "127.0.0.1",
        "8786": str(port),
        ":8787": f"127.0.0.1:{dashboard}",
        "tcp://scheduler:8786": f"tcp://127.0.0.1:{port}",
    }
    image_env = {k: v for k, v in _image_env().items() if k != "HOME"}
    assert image_env["DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"] == "False"
    env = {**os.environ, **image_env}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    processes(_local(services["scheduler"]["command"], replace), env=env, log="scheduler.log")
    worker = services["worker"]
    assert int(worker["deploy"]["replicas"]) >= 1
    # One replica (the others run the same command), started at once: it retries until the
    # scheduler listens.
    processes(
        [*_local(worker["command"], replace), "--host", "127.0.0.1"], env=env, log="worker.log"
    )
    _wait_healthy(services["scheduler"]["healthcheck"]["test"], replace, env)
    with Client(f"tcp://127.0.0.1:{port}", timeout="30s") as client:
        client.wait_for_workers(1, timeout=60)
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        # The layout rule: one process per core, one thread each (cpus: 1 per container).
        assert [w["nthreads"] for w in workers] == [1]
        assert float(worker["cpus"]) == 1
        assert all(w["memory_limit"] == 2 * 2**30 for w in workers)
        assert client.submit(sum, [1, 2, 3]).result() == 6
        x = da.arange(10_000, chunks=1_000)
        assert int(client.compute(x.sum()).result()) == 49_995_000


def _write_pki(directory: Path) -> dict[str, Path]:
    """A throwaway CA and one certificate for 127.0.0.1 signed by it, as the PEM files
    compose.tls.yaml names (the one certificate serves every role)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("roadnet deploy test CA"))
        .issuer_name(name("roadnet deploy test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    directory.mkdir(parents=True)
    files = {
        "ca.pem": ca.public_bytes(pem),
        "node.pem": cert.public_bytes(pem),
        "node-key.pem": key_pem,
        "client.pem": cert.public_bytes(pem),
        "client-key.pem": key_pem,
    }
    for file, data in files.items():
        (directory / file).write_bytes(data)
    return {file: directory / file for file in files}


@pytest.mark.slow
@pytest.mark.cluster
def test_compose_tls_commands_admit_only_clients_with_the_certificates(
    processes: Callable[..., subprocess.Popen[bytes]],
    free_port: Callable[[], int],
    tmp_path: Path,
) -> None:
    from distributed import Client, Security

    pki = _write_pki(tmp_path / "data" / "tls")
    services = yaml.safe_load(COMPOSE_TLS.read_text())["services"]
    port, dashboard = free_port(), free_port()
    replace = {
        "0.0.0.0": "127.0.0.1",
        "8786": str(port),
        ":8787": f"127.0.0.1:{dashboard}",
        "tls://scheduler:8786": f"tls://127.0.0.1:{port}",
        **{f"/data/tls/{name}": str(path) for name, path in pki.items()},
    }
    env = {**os.environ, **{k: v for k, v in _image_env().items() if k != "HOME"}}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    processes(_local(services["scheduler"]["command"], replace), env=env, log="scheduler.log")
    processes(
        [*_local(services["worker"]["command"], replace), "--host", "127.0.0.1"],
        env=env,
        log="worker.log",
    )
    healthcheck = _compose()["services"]["scheduler"]["healthcheck"]["test"]
    _wait_healthy(healthcheck, replace, env)  # plain HTTP, unchanged under TLS

    nightly = services["nightly"]["command"]
    security = Security(
        tls_ca_file=replace[nightly[nightly.index("--tls-ca-file") + 1]],
        tls_client_cert=replace[nightly[nightly.index("--tls-cert") + 1]],
        tls_client_key=replace[nightly[nightly.index("--tls-key") + 1]],
        require_encryption=True,
    )
    address = f"tls://127.0.0.1:{port}"
    with Client(address, security=security, timeout="30s") as client:
        client.wait_for_workers(1, timeout=60)
        assert client.submit(sum, [1, 2, 3]).result() == 6
    with pytest.raises((OSError, TimeoutError)):  # a plain client is refused
        Client(f"tcp://127.0.0.1:{port}", timeout="5s")
