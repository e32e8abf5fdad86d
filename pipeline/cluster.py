"""Where the graph runs: a LocalCluster sized to the machine, or an existing Dask scheduler.

The scheduler address comes from ``--scheduler`` or ``DASK_SCHEDULER_ADDRESS``. Without one, a
LocalCluster of worker processes is started (see :func:`default_layout`); each process loads
the model once and runs one model call at a time, with TensorFlow using the process's
threads (one per process on CPUs).

TLS: a ``tls://`` scheduler needs the cluster's CA and a client certificate and key, from
``--tls-ca-file``/``--tls-cert``/``--tls-key`` (:func:`cluster_security`) or, without them,
from Dask's own config (``distributed.comm.tls.ca-file``, ``distributed.comm.tls.client.cert``
and ``.key``, or the ``DASK_DISTRIBUTED__COMM__TLS__...`` environment variables), which
``distributed.Security()`` reads by itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dask
import psutil
from distributed import Client, LocalCluster, Security

from roadnet.errors import InputError

__all__ = [
    "cluster_security",
    "dask_client",
    "default_layout",
    "scheduler_address",
    "visible_gpus",
]

log = logging.getLogger(__name__)

#: Dask settings for the LocalCluster. They cut its background work — the workers' statistical
#: profiler (a stack sample every 10 ms), the system and memory monitors, the event-loop tick
#: check — because on a small machine every such cycle is taken from TensorFlow's threads
#: (BENCHMARKS.md, "Figures behind design choices in the code"). The profiler feeds only the
#: dashboard's profile page.
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.admin.tick.interval": "200ms",
    "distributed.worker.memory.monitor-interval": "1s",
}

#: Memory a worker process is given room for: TensorFlow and the model, the blocks of the
#: chunks in flight and headroom (BENCHMARKS.md, "Figures behind design choices in the code").
WORKER_MEMORY = 2 * 2**30


def default_layout(
    cores: int | None = None, *, memory: int | None = None, gpus: int | None = None
) -> tuple[int, int]:
    """``(workers, threads_per_worker)`` for a LocalCluster.

    On CPUs, one worker process per core, each with one thread, so that each model call runs
    on a single TensorFlow thread: TensorFlow's threads wait on each other at every layer, so
    on 2 cores two single-threaded processes predicted more blocks per second than one
    process running TensorFlow on both (BENCHMARKS.md, "roadnet run"). Memory caps the count
    at one worker per :data:`WORKER_MEMORY`. With GPUs (counted as in :func:`visible_gpus`)
    one worker uses the first, with all the cores: the model calls queue on it while the
    other threads read, blend and write; several GPUs need one worker each (dask-cuda, see
    the README).

    Args:
        cores: CPU cores (default: all).
        memory: bytes of RAM (default: the machine's).
        gpus: visible GPUs (default: :func:`visible_gpus`).
    """
    cores = cores or os.cpu_count() or 1
    if gpus is None:
        gpus = visible_gpus()
    if gpus:
        return 1, cores
    memory = memory or psutil.virtual_memory().total
    return max(1, min(cores, memory // WORKER_MEMORY)), 1


def visible_gpus() -> int:
    """NVIDIA GPUs this process would see, without importing TensorFlow.

    ``CUDA_VISIBLE_DEVICES`` when set (empty or ``-1``: none), else the devices
    ``nvidia-smi -L`` lists, else 0.
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        devices = [d for d in env.split(",") if d.strip()]
        return 0 if not devices or devices[0].strip() == "-1" else len(devices)
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in listed.stdout.splitlines())


def scheduler_address(scheduler: str | None) -> str | None:
    """The scheduler to use: the argument, else ``DASK_SCHEDULER_ADDRESS``, else None."""
    return scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None


def cluster_security(
    *,
    ca_file: str | Path | None = None,
    cert: str | Path | None = None,
    key: str | Path | None = None,
) -> Security | None:
    """TLS settings for a client from the ``--tls-*`` options, or None when none is given.

    Each option given overrides its Dask config key (``distributed.comm.tls.ca-file``,
    ``distributed.comm.tls.client.cert``, ``distributed.comm.tls.client.key``); the others
    still come from the config. Encryption is then required: the client refuses a plain
    ``tcp://`` scheduler. With no option, None: the client then uses ``Security()``, which
    reads the whole TLS configuration (and ``distributed.comm.require-encryption``) from
    Dask's config and environment.

    Args:
        ca_file: PEM file of the CA that signed the scheduler's and workers' certificates.
        cert: PEM file of this client's certificate (it may hold the key too).
        key: PEM file of the certificate's private key.

    Raises:
        InputError: a given file does not exist.
    """
    given = {
        name: str(value)
        for name, value in (
            ("tls_ca_file", ca_file),
            ("tls_client_cert", cert),
            ("tls_client_key", key),
        )
        if value is not None
    }
    if not given:
        return None
    flags = {"tls_ca_file": "--tls-ca-file", "tls_client_cert": "--tls-cert"}
    for name, value in given.items():
        if not Path(value).is_file():
            raise InputError(f"{flags.get(name, '--tls-key')} {value}: no such file")
    return Security(require_encryption=True, **given)


def _check_tls(address: str, security: Security | None) -> None:
    """Refuse TLS settings that cannot work with ``address`` before connecting.

    Raises:
        InputError: a ``tls://`` address without a CA and client certificate, or TLS
            options with a plain address.
    """
    tls = address.startswith("tls://")
    effective = security if security is not None else Security()
    # Security sets its fields with setattr (from the arguments or the config).
    ca, cert = (getattr(effective, f, None) for f in ("tls_ca_file", "tls_client_cert"))
    if tls and not (ca and cert):
        raise InputError(
            f"the scheduler {address} uses TLS: give --tls-ca-file and --tls-cert (and "
            "--tls-key), or set distributed.comm.tls.ca-file and "
            "distributed.comm.tls.client.cert/.key in the Dask config"
        )
    if security is not None and security.require_encryption and not tls:
        raise InputError(f"--tls-* options need a tls:// scheduler address, not {address}")


@contextlib.contextmanager
def dask_client(
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    dashboard: bool = False,
    security: Security | None = None,
    client: Client | None = None,
) -> Iterator[Client]:
    """Yield a distributed Client on an existing scheduler or a new LocalCluster.

    Args:
        client: a client the caller holds (e.g. one cluster for several stages): yielded as
            it is, nothing started or closed, the other arguments ignored.
        scheduler: address such as ``tcp://host:8786``; falls back to
            ``DASK_SCHEDULER_ADDRESS``; None starts a LocalCluster.
        workers: LocalCluster worker processes (default: :func:`default_layout`).
        threads_per_worker: threads per LocalCluster worker (default: :func:`default_layout`).
        dashboard: serve the LocalCluster's dashboard and log its link. Off by default: the
            progress bar shows a local run, and the dashboard's cost on a small machine is
            unsettled (BENCHMARKS.md, "roadnet run"). An existing scheduler's link is always
            logged.
        security: TLS settings for an existing scheduler (see :func:`cluster_security`);
            None: Dask's config decides (``Security()``), which for a ``tls://`` address must
            name the CA and a client certificate.

    Raises:
        InputError: the scheduler cannot be reached (or refuses this client's certificate),
            its address and the TLS settings do not fit, a TLS file does not load, or a local
            layout or TLS settings were given without a scheduler.
    """
    if client is not None:
        yield client
        return
    if not logging.getLogger("roadnet").isEnabledFor(logging.DEBUG):
        # distributed resets its loggers to INFO when first imported.
        logging.getLogger("distributed").setLevel(logging.WARNING)
    address = scheduler_address(scheduler)
    if address is not None:
        if workers is not None or threads_per_worker is not None:
            raise InputError("--workers/--threads-per-worker apply to a local cluster only")
        _check_tls(address, security)
        try:
            client = Client(address, timeout="20s", security=security)
        except ssl.SSLError as exc:  # e.g. a certificate or key file that does not load
            raise InputError(f"TLS with the Dask scheduler at {address} failed: {exc}") from exc
        except OSError as exc:
            raise InputError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc
        with client:
            log.info("scheduler %s, dashboard %s", address, client.dashboard_link)
            yield client
        return
    if security is not None:
        raise InputError("--tls-* options apply to an existing scheduler (--scheduler) only")
    n_workers, threads = _local_layout(workers, threads_per_worker)
    with (
        _local_cluster(n_workers, threads, dashboard=dashboard) as cluster,
        Client(cluster) as client,
    ):
        log.info(
            "local cluster: %d worker(s) x %d thread(s)%s",
            n_workers,
            threads,
            f", dashboard {client.dashboard_link}" if dashboard else "",
        )
        yield client


def _local_layout(workers: int | None, threads_per_worker: int | None) -> tuple[int, int]:
    """``(workers, threads_per_worker)``: the given ones, the rest from :func:`default_layout`."""
    if workers is None:  # only then: the layout may ask nvidia-smi
        n_workers, default_threads = default_layout()
    else:
        n_workers, default_threads = workers, max(1, (os.cpu_count() or 1) // workers)
    return n_workers, threads_per_worker or default_threads


def _local_cluster(n_workers: int, threads: int, *, dashboard: bool) -> LocalCluster:
    """Start a LocalCluster of worker processes with :data:`LOCAL_CLUSTER_CONFIG`."""
    with dask.config.set(LOCAL_CLUSTER_CONFIG):  # read as the scheduler and workers start
        return LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads,
            processes=True,
            dashboard_address=":0" if dashboard else None,
            env={
                "TF_CPP_MIN_LOG_LEVEL": "2",
                # GDAL's block cache defaults to 5 % of RAM per process and fills up with every
                # block read: cap it so worker memory does not grow with the scene.
                "GDAL_CACHEMAX": os.environ.get("GDAL_CACHEMAX", "64"),
            },
        )
