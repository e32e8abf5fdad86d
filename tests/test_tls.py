"""A TLS Dask cluster on 127.0.0.1: `dask scheduler --tls-*` and one `dask worker`.

A test CA signs one certificate for 127.0.0.1 that the scheduler, the worker and roadnet
use. A client without it is refused; `roadnet vectorize` and `roadnet run` with the
--tls-* options (or the same settings from Dask's config) give what a LocalCluster gives.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from _procs import free_port, start, stop

from roadnet.errors import InputError
from roadnet.tasks import TASKS

pytestmark = pytest.mark.cluster

ROADNET = [sys.executable, "-m", "roadnet.pipeline.cli"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
RUN_OPTS = ["--chunk", "128", "--overlap", "32", "--no-progress"]


# -- certificates --------------------------------------------------------------------------


def _name(cn: str):  # type: ignore[no-untyped-def]
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_pki(d: Path, tag: str) -> dict[str, Path]:
    """A CA and a certificate for 127.0.0.1 signed by it (EC P-256), as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(f"roadnet test CA {tag}"))
        .issuer_name(_name(f"roadnet test CA {tag}"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": d / f"{tag}-ca.pem", "cert": d / f"{tag}-cert.pem", "key": d / f"{tag}-key.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths["key"].chmod(0o600)
    return paths


def _tls_args(pki: dict[str, Path]) -> list[str]:
    return ["--tls-ca-file", str(pki["ca"]), "--tls-cert", str(pki["cert"]),
            "--tls-key", str(pki["key"])]  # fmt: skip


# -- processes -----------------------------------------------------------------------------


def _start(args: list[str], log: Path, env: dict[str, str] = ENV) -> subprocess.Popen[bytes]:
    return start(args, log, env)


def _finish(proc: subprocess.Popen[bytes], log: Path) -> str:
    """Wait for a CLI process; assert success; its log."""
    try:
        rc = proc.wait(timeout=300)
    finally:
        stop(proc)
    text = log.read_text()
    assert rc == 0, text[-3000:]
    return text


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest.fixture(scope="module")
def pki(workdir: Path) -> dict[str, Path]:
    return _write_pki(workdir, "cluster")


@pytest.fixture(scope="module")
def tls_cluster(workdir: Path, pki: dict[str, Path]) -> Iterator[str]:
    from distributed import Client, Security

    port = free_port()
    address = f"tls://127.0.0.1:{port}"
    dask = str(Path(sys.executable).with_name("dask"))
    procs = [
        _start(
            [
                dask,
                "scheduler",
                "--protocol",
                "tls",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--dashboard-address",
                f"127.0.0.1:{free_port()}",
                *_tls_args(pki),
            ],
            workdir / "scheduler.log",
        )
    ]
    try:
        procs.append(
            _start(
                [
                    dask,
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--nworkers",
                    "1",
                    "--no-dashboard",
                    "--name",
                    "tls0",
                    *_tls_args(pki),
                ],
                workdir / "worker.log",
            )
        )
        security = Security(
            tls_ca_file=str(pki["ca"]),
            tls_client_cert=str(pki["cert"]),
            tls_client_key=str(pki["key"]),
            require_encryption=True,
        )
        with Client(address, security=security, timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
            workers = client.scheduler_info()["workers"]
        assert all(w.startswith("tls://127.0.0.1:") for w in workers), workers
        yield address
    finally:
        for proc in reversed(procs):
            stop(proc)


# -- options and config, in process --------------------------------------------------------


def test_cluster_security_from_options_and_config(
    pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import dask

    from roadnet.pipeline.cluster import cluster_security, dask_client

    assert cluster_security() is None  # the client then reads Dask's config by itself
    sec = cluster_security(ca_file=pki["ca"], cert=pki["cert"], key=pki["key"])
    assert sec is not None and sec.require_encryption
    assert (sec.tls_ca_file, sec.tls_client_cert, sec.tls_client_key) == tuple(
        str(pki[k]) for k in ("ca", "cert", "key")
    )
    with dask.config.set(
        {"distributed.comm.tls.client.cert": "/c.pem", "distributed.comm.tls.client.key": "/k"}
    ):
        sec = cluster_security(ca_file=pki["ca"])  # the others from the config
        assert sec is not None
        assert (sec.tls_ca_file, sec.tls_client_cert) == (str(pki["ca"]), "/c.pem")
    with pytest.raises(InputError, match=r"--tls-key .*no such file"):
        cluster_security(ca_file=pki["ca"], cert=pki["cert"], key=pki["ca"].with_name("nope"))

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    sec = cluster_security(ca_file=pki["ca"], cert=pki["cert"], key=pki["key"])
    # Refused before any connection is tried.
    with (
        pytest.raises(InputError, match="uses TLS: give --tls-ca-file"),
        dask_client(scheduler="tls://127.0.0.1:9"),
    ):
        pass
    with (
        pytest.raises(InputError, match="need a tls:// scheduler"),
        dask_client(scheduler="tcp://127.0.0.1:9", security=sec),
    ):
        pass
    with pytest.raises(InputError, match="existing scheduler"), dask_client(security=sec):
        pass


# -- the cluster ---------------------------------------------------------------------------


def test_client_without_the_clusters_certificate_is_refused(
    tls_cluster: str, pki: dict[str, Path], workdir: Path
) -> None:
    from distributed import Client, Security

    port = tls_cluster.rsplit(":", 1)[1]
    start = time.monotonic()
    with pytest.raises(OSError):  # reset by the TLS server, or timed out
        Client(f"tcp://127.0.0.1:{port}", timeout="3s")  # plain TCP
    # The CA is right but the client's certificate comes from another CA.
    rogue = _write_pki(workdir, "rogue")
    security = Security(
        tls_ca_file=str(pki["ca"]),
        tls_client_cert=str(rogue["cert"]),
        tls_client_key=str(rogue["key"]),
        require_encryption=True,
    )
    with pytest.raises(OSError):  # reset by the TLS server, or timed out
        Client(tls_cluster, security=security, timeout="3s")
    assert time.monotonic() - start < 30


@pytest.fixture(scope="module")
def roads(workdir: Path) -> Path:
    from _results import road_codes, write_result

    return write_result(workdir / "roads.zarr", road_codes(512, 512, seed=8, roads=6), chunk=128)


def _assert_same_layers(a: Path, b: Path) -> None:
    import geopandas as gpd
    import shapely

    for layer in ("road_surface", "road_centerline", "road_node"):
        fa = gpd.read_file(a, layer=layer, engine="pyogrio")
        fb = gpd.read_file(b, layer=layer, engine="pyogrio")
        assert len(fa) == len(fb) > 0, layer
        assert shapely.equals_exact(fa.geometry.to_numpy(), fb.geometry.to_numpy(), 0).all()
        assert fa.drop(columns="geometry").equals(fb.drop(columns="geometry")), layer


def test_vectorize_over_tls_equals_local(
    tls_cluster: str, pki: dict[str, Path], roads: Path, workdir: Path
) -> None:
    vec = [*ROADNET, "vectorize", str(roads), "--no-progress", "--out"]
    local, remote = workdir / "local.gpkg", workdir / "tls.gpkg"
    runs = [
        (_start([*vec, str(local), "--workers", "1", "--threads-per-worker", "1"],
                workdir / "local.log"), workdir / "local.log"),
        (_start([*vec, str(remote), "--scheduler", tls_cluster, *_tls_args(pki)],
                workdir / "tls.log"), workdir / "tls.log"),
        # A tls:// scheduler without certificates: one line, exit 2, before connecting.
        (_start([*vec, str(workdir / "none.gpkg"), "--scheduler", tls_cluster],
                workdir / "none.log"), None),
    ]  # fmt: skip
    for proc, log in runs[:2]:
        assert log is not None
        _finish(proc, log)
    assert f"scheduler {tls_cluster}" in (workdir / "tls.log").read_text()
    _assert_same_layers(local, remote)
    refused = runs[2][0]
    assert refused.wait(timeout=120) == 2
    lines = (workdir / "none.log").read_text().strip().splitlines()
    assert len(lines) == 1 and "uses TLS: give --tls-ca-file" in lines[0], lines
    assert not (workdir / "none.gpkg").exists()


def test_vectorize_over_tls_from_dask_config(
    tls_cluster: str, pki: dict[str, Path], roads: Path, workdir: Path
) -> None:
    out = workdir / "tls-config.gpkg"
    env = {
        **ENV,
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(pki["ca"]),
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(pki["cert"]),
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(pki["key"]),
        "DASK_SCHEDULER_ADDRESS": tls_cluster,
    }
    log = workdir / "tls-config.log"
    vec = [*ROADNET, "vectorize", str(roads), "--no-progress", "--out"]
    _finish(_start([*vec, str(out)], log, env=env), log)
    local = workdir / "local.gpkg"
    if not local.exists():  # run on its own: make the LocalCluster reference here
        args = [*vec, str(local), "--workers", "1", "--threads-per-worker", "1"]
        _finish(_start(args, workdir / "local.log"), workdir / "local.log")
    _assert_same_layers(local, out)


def _raw(path: Path) -> dict[str, np.ndarray]:
    ds = xr.open_zarr(path, mask_and_scale=False)
    return {name: ds[name].values for name in TASKS}


def test_run_over_tls_equals_local(tls_cluster: str, pki: dict[str, Path], workdir: Path) -> None:
    from _models import save_test_model, smooth_scene, write_scene

    model = save_test_model(workdir / "m.keras")
    scene = write_scene(workdir / "scene.tif", smooth_scene(256, 384, seed=5))
    run = [*ROADNET, "run", str(scene), "--model", str(model), *RUN_OPTS, "--out"]
    local, remote = workdir / "local.zarr", workdir / "tls.zarr"
    procs = [
        (_start([*run, str(local), "--workers", "1", "--threads-per-worker", "1"],
                workdir / "run-local.log"), workdir / "run-local.log"),
        (_start([*run, str(remote), "--scheduler", tls_cluster, *_tls_args(pki)],
                workdir / "run-tls.log"), workdir / "run-tls.log"),
    ]  # fmt: skip
    for proc, log in procs:
        _finish(proc, log)
    assert "6/6 chunks computed" in (workdir / "run-tls.log").read_text()
    a, b = _raw(local), _raw(remote)
    for name in TASKS:
        assert a[name].dtype == np.uint8 and a[name].shape == (256, 384)
        assert np.array_equal(a[name], b[name]), name
