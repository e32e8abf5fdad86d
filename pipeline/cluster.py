"""Where the graph runs: a LocalCluster sized to the machine, or an existing Dask scheduler.

The scheduler address comes from ``--scheduler`` or ``DASK_SCHEDULER_ADDRESS``. Without one, a
LocalCluster of worker processes is started (see :func:`default_layout`); each process loads
the model once and runs one model call at a time, with TensorFlow using the process's
threads.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterator

import dask
from distributed import Client, LocalCluster

from roadnet.errors import InputError

__all__ = ["dask_client", "default_layout", "scheduler_address"]

log = logging.getLogger(__name__)

#: Dask settings for the LocalCluster. Its background work — the workers' statistical
#: profiler (a stack sample every 10 ms), the system and memory monitors, the event-loop tick
#: check — took 0.68 CPU-s per 10 s idle on a 2-core machine, 0.14 with these (measured).
#: On a small machine every such cycle is taken from TensorFlow's threads. The profiler feeds
#: only the dashboard's profile page.
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.admin.tick.interval": "200ms",
    "distributed.worker.memory.monitor-interval": "1s",
}

#: Worker processes get this many threads at most: beyond it one TensorFlow call per
#: process scales poorly, so more processes do better.
MAX_THREADS_PER_WORKER = 4


def default_layout(cores: int | None = None) -> tuple[int, int]:
    """``(workers, threads_per_worker)`` for a LocalCluster on ``cores`` cores.

    One process per (started) four cores, the cores shared evenly: on 2 cores one worker with
    2 threads (TensorFlow uses both for each model call while the other thread reads, blends
    and writes), on 6 cores 2 x 3, on 16 cores 4 x 4.
    """
    cores = cores or os.cpu_count() or 1
    workers = max(1, -(-cores // MAX_THREADS_PER_WORKER))
    return workers, max(1, cores // workers)


def scheduler_address(scheduler: str | None) -> str | None:
    """The scheduler to use: the argument, else ``DASK_SCHEDULER_ADDRESS``, else None."""
    return scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None


@contextlib.contextmanager
def dask_client(
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int | None = None,
) -> Iterator[Client]:
    """Yield a distributed Client on an existing scheduler or a new LocalCluster.

    Args:
        scheduler: address such as ``tcp://host:8786``; falls back to
            ``DASK_SCHEDULER_ADDRESS``; None starts a LocalCluster.
        workers: LocalCluster worker processes (default: :func:`default_layout`).
        threads_per_worker: threads per LocalCluster worker (default: :func:`default_layout`).

    Raises:
        InputError: the scheduler cannot be reached, or both a scheduler and a local layout
            were given.
    """
    if not logging.getLogger("roadnet").isEnabledFor(logging.DEBUG):
        # distributed resets its loggers to INFO when first imported.
        logging.getLogger("distributed").setLevel(logging.WARNING)
    address = scheduler_address(scheduler)
    if address is not None:
        if workers is not None or threads_per_worker is not None:
            raise InputError("--workers/--threads-per-worker apply to a local cluster only")
        try:
            client = Client(address, timeout="20s")
        except OSError as exc:
            raise InputError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc
        with client:
            log.info("scheduler %s, dashboard %s", address, client.dashboard_link)
            yield client
        return
    default_workers, default_threads = default_layout()
    n_workers = workers or default_workers
    threads = threads_per_worker or (
        default_threads if workers is None else max(1, (os.cpu_count() or 1) // n_workers)
    )
    dashboard = importlib.util.find_spec("bokeh") is not None
    with dask.config.set(LOCAL_CLUSTER_CONFIG):  # read as the scheduler and workers start
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads,
            processes=True,
            dashboard_address=":0",
            env={
                "TF_CPP_MIN_LOG_LEVEL": "2",
                # GDAL's block cache defaults to 5 % of RAM per process and fills up with every
                # block read: cap it so worker memory does not grow with the scene.
                "GDAL_CACHEMAX": os.environ.get("GDAL_CACHEMAX", "64"),
            },
        )
    with cluster, Client(cluster) as client:
        log.info(
            "local cluster: %d worker(s) x %d thread(s)%s",
            n_workers,
            threads,
            f", dashboard {client.dashboard_link}" if dashboard else "",
        )
        yield client
