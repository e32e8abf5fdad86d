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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[2]
COMPOSE = PROJECT / "deploy" / "docker" / "compose.yaml"
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


def test_compose_file_validates_against_the_compose_spec() -> None:
    proc = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
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
    """Run the compose healthcheck (``CMD ...``) until it passes, as Docker would."""
    assert healthcheck[0] == "CMD"
    args = [sys.executable if a == "python" else a for a in healthcheck[1:]]
    args = [re.sub("127.0.0.1:8787", replace[":8787"], a) for a in args]
    deadline = time.monotonic() + 60
    while True:
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=30)
        if proc.returncode == 0:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"scheduler healthcheck never passed: {proc.stderr}")
        time.sleep(0.5)


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
    replicas = int(worker["deploy"]["replicas"])
    for i in range(replicas):  # started at once: workers retry until the scheduler listens
        processes(
            [*_local(worker["command"], replace), "--host", "127.0.0.1"],
            env=env,
            log=f"worker{i}.log",
        )
    _wait_healthy(services["scheduler"]["healthcheck"]["test"], replace, env)
    with Client(f"tcp://127.0.0.1:{port}", timeout="30s") as client:
        client.wait_for_workers(replicas, timeout=60)
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        # The layout rule: one process per core, one thread each (cpus: 1 per container).
        assert [w["nthreads"] for w in workers] == [1] * replicas
        assert float(worker["cpus"]) == 1
        assert all(w["memory_limit"] == 2 * 2**30 for w in workers)
        assert client.submit(sum, [1, 2, 3]).result() == 6
        x = da.arange(10_000, chunks=1_000)
        assert int(client.compute(x.sum()).result()) == 49_995_000
