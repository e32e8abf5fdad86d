"""Where a ``roadnet run`` spends its CPU: per thread of every process, and per task kind.

    python bench/profile_run.py --size 3072 --model lite --layout 2x1 --runs 2

Starts one LocalCluster with the settings ``roadnet run`` uses, runs ``run_to_zarr`` on it
``--runs`` times and prints, for each run: compute seconds and Mpx/s; model calls per worker
(with the run's probe and warm-up calls: one per worker, one more on one);
the CPU seconds of every thread of every worker and of this process (which holds the
scheduler), by thread name (``tf_Compute`` or an unnamed ``python`` thread: TensorFlow;
``DaskThread``: the task thread; ``MainThread``: a worker's event loop; ``zarr_io`` and
``asyncio_*``: Zarr's I/O); and the task stream summed by task kind (compute and transfer
seconds). The first run's CPU includes loading TensorFlow and the model in the workers;
compare the later ones. Per-thread times come from ``/proc`` (Linux). ``--model lite`` is
RoadNet-lite with untrained weights: the same computation as the trained model.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

Threads = dict[tuple[int, str], float]


def thread_names() -> dict[int, str]:
    """Native thread id -> Python thread name, in the calling process."""
    return {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}


def thread_cpu(pid: int) -> Threads:
    """CPU seconds of every thread of a process, by (native id, OS thread name)."""
    out: Threads = {}
    for t in psutil.Process(pid).threads():
        try:
            name = Path(f"/proc/{pid}/task/{t.id}/comm").read_text().strip()
        except OSError:
            name = "?"
        out[(t.id, name)] = t.user_time + t.system_time
    return out


def cpu_delta(before: Threads, after: Threads, names: dict[int, str]) -> dict[str, float]:
    """CPU seconds spent between two readings, summed by thread name (above 0.05 s)."""
    spent: dict[str, float] = {}
    for (tid, os_name), seconds in after.items():
        delta = seconds - before.get((tid, os_name), 0.0)
        if delta > 0.05:
            name = re.sub(r"\d+-Dask-Default-Threads-\d+-", "DaskThread-", names.get(tid, os_name))
            spent[name] = spent.get(name, 0.0) + delta
    return {k: round(v, 2) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])}


def task_kinds(records: list[dict[str, Any]]) -> list[tuple[str, str, int, float]]:
    """Task-stream records summed by (action, task kind): count and seconds."""
    totals: dict[tuple[str, str], list[float]] = {}
    for record in records:
        kind = re.sub(r"-[0-9a-f]{32}.*", "", str(record["key"]).strip("()'\""))
        kind = kind.split("'")[0].split(",")[0][:40]
        for span in record["startstops"]:
            total = totals.setdefault((span["action"], kind), [0, 0.0])
            total[0] += 1
            total[1] += span["stop"] - span["start"]
    rows = [(action, kind, int(n), s) for (action, kind), (n, s) in totals.items()]
    return sorted(rows, key=lambda row: -row[3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lite", help="lite, test, or a .keras path")
    parser.add_argument("--size", type=int, default=3072, help="scene side in px")
    parser.add_argument("--layout", default="2x1", help="workers x threads")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--dashboard", action="store_true", help="serve the dashboard")
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()

    import dask
    from bench_run import CORE, OVERLAP, make_model, make_scene
    from distributed import Client, LocalCluster, get_task_stream

    from roadnet.pipeline.cluster import LOCAL_CLUSTER_CONFIG
    from roadnet.pipeline.inference.run import RunConfig, run_to_zarr
    from roadnet.pipeline.inference.runner import model_call_count

    workers, threads = (int(v) for v in args.layout.split("x"))
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        work = Path(tmp)
        scene = make_scene(work / "scene.tif", args.size)
        model = make_model(args.model, work)
        with dask.config.set(LOCAL_CLUSTER_CONFIG):
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=threads,
                processes=True,
                dashboard_address=":0" if args.dashboard else None,
                env={"TF_CPP_MIN_LOG_LEVEL": "2", "GDAL_CACHEMAX": "64"},
            )
        with cluster, Client(cluster) as client:
            pids = {address: int(pid) for address, pid in client.run(os.getpid).items()}
            me = os.getpid()
            for run in range(args.runs):
                calls = client.run(model_call_count)
                before = {pid: thread_cpu(pid) for pid in [*pids.values(), me]}
                with get_task_stream(client) as stream:
                    summary = run_to_zarr(
                        scene,
                        work / "out.zarr",
                        model=model,
                        config=RunConfig(chunk=CORE, overlap=OVERLAP),
                        scheduler=cluster.scheduler_address,
                        overwrite=True,
                        progress=False,
                    )
                after = {pid: thread_cpu(pid) for pid in [*pids.values(), me]}
                names = thread_names()
                for worker_names in client.run(thread_names).values():
                    names.update(worker_names)
                calls_after = client.run(model_call_count)
                mpx = summary.pixels / 1e6 / summary.seconds
                print(f"run {run}: {summary.seconds:.2f} s computing, {mpx:.3f} Mpx/s")
                for address, pid in pids.items():
                    spent = cpu_delta(before[pid], after[pid], names)
                    n = calls_after[address] - calls[address]
                    print(f"  worker {address}: {n} model calls, CPU {spent}")
                print(f"  client + scheduler: CPU {cpu_delta(before[me], after[me], names)}")
                for action, kind, n, seconds in task_kinds(stream.data):
                    per = 1000 * seconds / max(n, 1)
                    print(f"    {action:9s} {kind:40s} n={n:4d} {seconds:6.2f} s {per:6.1f} ms")
                time.sleep(1)


if __name__ == "__main__":
    main()
