"""Benchmark ``roadnet vectorize`` against one-process vectorizing, side by side.

    .venv/bin/python bench/bench_vectorize.py --sizes 4096,8192,16384 --reps 2 \
        --work-dir /tmp/bench-vectorize --keep --json /tmp/bench-vectorize/results.json
    .venv/bin/python bench/bench_vectorize.py --report /tmp/bench-vectorize/results.json
    .venv/bin/python bench/bench_vectorize.py --kernels 32 --work-dir DIR --reuse --keep

The result stores: a 4096 x 4096 block of ``tests/_results.road_codes`` (``--roads`` straight
roads 9-21 px wide, specks and pinholes), or with ``--block-from`` the top-left (up to 4096 px)
of a real ``roadnet run`` result, tiled with mirrored copies, so that every road continues
across the copies, written with ``write_result`` in 512 px chunks one chunk at a time (the
generator holds one block, never the scene). The surface cut-off is 0.5, the sieve 16 px,
everything else ``VectorizeConfig``'s defaults.

Each repetition runs, for every size, in this order and each in a fresh child process (so its
peak RSS is its own; times are taken inside the child after its imports):
  (a)  whole-mask ``rasterio.features.sieve`` + ``rasterio.features.shapes`` in one process
       (read the surface codes whole, threshold, sieve, polygonize, shapely geometries);
  (b)  ``vectorize_result`` (surface polygons AND the centerline graph, GeoPackage written) on
       a LocalCluster of 2 single-threaded worker processes (``dask_client(workers=2,
       threads_per_worker=1)``, the function the command uses). Its clock starts once the
       cluster is up and the workers have imported the kernels and compiled skan's numba
       code (``start-up``, reported beside it: a user pays both). Client phases are timed by
       wrapping the functions ``vectorize_result`` calls (and the client's RSS sampled in
       each phase), task times come from the task stream, peak memory from each process's
       own ``VmHWM`` in the client and in every worker right after (b), the workers' RSS
       sampled every 0.1 s against the tasks they ran; then, on the same cluster:
  (bs) the same with ``graph=False`` (``roadnet vectorize --no-graph``: the surface polygons
       alone, the work (a) does);
  (bg) the same with ``surface=False`` (``--no-surface``: the centerline graph alone, the
       work (g1) does, plus the graph's join, pruning and simplification);
  (c)  per-chunk polygonize (``chunk_polygons``, the exact sieve halo) + ONE
       ``shapely.union_all`` of all chunk polygons in one process (the naive dissolve);
       killed after ``--c-timeout`` s, skipped at a size where 4 x its time at the size
       before would pass that limit;
  (g1) whole-image ``skimage.morphology.skeletonize`` + ``skan.Skeleton`` + ``summarize``
       in one process (skan's numba compilation before the clock).
Ratios are taken inside a repetition, then their median; CPU seconds are reported beside the
wall times (the machine is shared). ``--kernels`` times the per-chunk kernels of (b) one by
one on the chunks of one block instead; ``--report`` prints the tables of a ``--json`` file.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CHUNK = 512
THRESHOLD = 0.5
SIEVE_PX = 16
BLOCK = 4096
MIB = 2**20


# -- the result stores ---------------------------------------------------------------------------


class MirroredCodes:
    """A ``(3, height, width)`` view that tiles one ``(3, b, b)`` block with mirrored copies.

    Copies alternate between the block and its mirror image along each axis, so a road that
    leaves one copy enters the next at the same pixel. Only slicing is supported, which is
    what ``write_result`` does (one chunk at a time).
    """

    def __init__(self, block: np.ndarray, height: int, width: int) -> None:
        self.block = block
        self.shape = (block.shape[0], height, width)

    @staticmethod
    def _reflect(index: np.ndarray, n: int) -> np.ndarray:
        m = index % (2 * n)
        return np.where(m < n, m, 2 * n - 1 - m)

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        _, rows, cols = key
        r = self._reflect(np.arange(*rows.indices(self.shape[1])), self.block.shape[1])
        c = self._reflect(np.arange(*cols.indices(self.shape[2])), self.block.shape[2])
        return np.ascontiguousarray(self.block[:, r][:, :, c])


def _block_from(store: str, side: int) -> np.ndarray:
    """The top-left ``side`` x ``side`` codes of a ``roadnet run`` result, ``(3, y, x)``."""
    from roadnet.pipeline.inference.store import open_result
    from roadnet.tasks import TASKS

    ds = open_result(store, mask_and_scale=False)
    block = np.stack([ds[t][:side, :side].values for t in TASKS])
    if block.shape[1] < side or block.shape[2] < side:
        raise SystemExit(f"--block-from {store} is smaller than {side} px a side")
    return block


def make_result(
    path: Path, size: int, *, roads: int, seed: int, block_from: str | None = None
) -> dict[str, Any]:
    """Write a ``size`` x ``size`` result store: mirrored copies of one block of codes.

    The block is ``road_codes`` (straight synthetic roads), or with ``block_from`` the
    top-left ``BLOCK`` px (or ``size``, if smaller) of a real ``roadnet run`` result.
    """
    from _results import road_codes, write_result

    start = time.perf_counter()
    side = min(BLOCK, size)
    if block_from:
        side = min(side, *_store_shape(block_from))
        block = _block_from(block_from, side)
    else:
        block = road_codes(side, side, seed=seed, roads=roads)
    write_result(path, MirroredCodes(block, size, size), chunk=CHUNK)  # type: ignore[arg-type]
    stored = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {
        "size": size,
        "seconds": round(time.perf_counter() - start, 1),
        "store_mib": round(stored / MIB, 1),
        "road_fraction": round(float((block[0] >= 127).mean()), 4),
        "peak_mib": round(_rss_peak() / MIB),
    }


def _store_shape(store: str) -> tuple[int, int]:
    from roadnet.pipeline.inference.store import open_result

    ds = open_result(store, mask_and_scale=False)
    return int(ds.sizes["y"]), int(ds.sizes["x"])


def write_store(path: Path, size: int, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`make_result` in a child process, so that this one stays small."""
    extra: tuple[str, ...] = ("--sizes", str(size), "--roads", str(args.roads))
    extra += ("--seed", str(args.seed))
    if args.block_from:
        extra += ("--block-from", args.block_from)
    return run_child("make", path, work, args.timeout, extra)


def code_state() -> dict[str, str]:
    """The commit and a digest of the vectorize stage's sources as they are on disk now."""
    import roadnet.pipeline.vectorize as stage  # the checkout's, or --before's in a child

    digest = hashlib.sha1()
    for path in sorted(Path(stage.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    head = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    return {"head": head, "vectorize_sha1": digest.hexdigest()[:12]}


# -- child processes: the measurements ------------------------------------------------------------


def _rss_peak() -> int:
    """This process's own peak resident memory in bytes: ``VmHWM``, reset by ``exec``.

    (``ru_maxrss`` is not: a child started by ``fork`` + ``exec`` keeps its parent's peak as
    its starting value, so small children all showed the parent's peak.)
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _warm_read(result: Path) -> None:
    """Open the store and read one pixel, before the clock: the imports that happen then."""
    from roadnet.pipeline.inference.store import open_result

    open_result(result, mask_and_scale=False)["surface"][:1, :1].load()


def _read_surface(result: Path) -> tuple[np.ndarray, Any]:
    """The whole surface code plane and the transform, as a notebook reads them."""
    from roadnet.pipeline.inference.store import open_result

    ds = open_result(result, mask_and_scale=False)
    return ds["surface"].values, ds.rio.transform()


def child_whole(result: Path) -> dict[str, Any]:
    """(a): sieve + shapes over the whole mask, in map coordinates."""
    import rasterio.features
    import shapely.geometry

    from roadnet.pipeline.vectorize.polygons import road_mask

    _warm_read(result)
    t0, cpu0 = time.perf_counter(), time.process_time()
    surface, transform = _read_surface(result)
    t1 = time.perf_counter()
    mask = road_mask(surface, threshold=THRESHOLD).astype(np.uint8)
    del surface
    sieved = rasterio.features.sieve(mask, size=SIEVE_PX, connectivity=4)
    del mask
    t2 = time.perf_counter()
    found = rasterio.features.shapes(
        sieved, mask=sieved.astype(bool), connectivity=4, transform=transform
    )
    polys = [shapely.geometry.shape(g) for g, _ in found]
    t3 = time.perf_counter()
    return {
        "seconds": t3 - t0,
        "cpu_s": time.process_time() - cpu0,
        "read_s": t1 - t0,
        "sieve_s": t2 - t1,
        "shapes_s": t3 - t2,
        "polygons": len(polys),
        "vertices": int(sum(shapely.get_num_coordinates(polys))),
        "peak_mib": _rss_peak() / MIB,
    }


def child_naive(result: Path) -> dict[str, Any]:
    """(c): per-chunk polygonize (exact sieve halo), then one union_all of every piece."""
    import shapely

    from roadnet.pipeline.vectorize.dissolve import chunk_windows
    from roadnet.pipeline.vectorize.polygons import (
        chunk_polygons,
        halo_window,
        road_mask,
        sieve_halo,
    )

    _warm_read(result)
    t0, cpu0 = time.perf_counter(), time.process_time()
    surface, _ = _read_surface(result)
    t1 = time.perf_counter()
    shape = (int(surface.shape[0]), int(surface.shape[1]))
    halo = sieve_halo(SIEVE_PX)
    rows = tuple(np.diff(np.r_[0 : shape[0] : CHUNK, shape[0]]).tolist())
    cols = tuple(np.diff(np.r_[0 : shape[1] : CHUNK, shape[1]]).tolist())
    pieces = []
    for row in chunk_windows((rows, cols)):
        for core in row:
            win = halo_window(core, halo=halo, scene_shape=shape)
            mask = road_mask(
                surface[win.row_start : win.row_stop, win.col_start : win.col_stop],
                threshold=THRESHOLD,
            )
            final, border = chunk_polygons(
                mask, window=win, core=core, scene_shape=shape, sieve_px=SIEVE_PX
            )
            pieces.extend([final, border])
    everything = np.concatenate(pieces)
    t2 = time.perf_counter()
    parts = shapely.get_parts(shapely.union_all(everything))
    t3 = time.perf_counter()
    return {
        "seconds": t3 - t0,
        "cpu_s": time.process_time() - cpu0,
        "read_s": t1 - t0,
        "polygonize_s": t2 - t1,
        "union_s": t3 - t2,
        "pieces": len(everything),
        "polygons": len(parts),
        "peak_mib": _rss_peak() / MIB,
    }


def _tiny_skeleton() -> np.ndarray:
    skeleton = np.zeros((32, 32), bool)
    skeleton[16, 2:30] = True
    skeleton[2:30, 16] = True
    skeleton[4, 4:12] = True
    return skeleton


def child_skeleton(result: Path) -> dict[str, Any]:
    """(g1): whole-image skeletonize + skan Skeleton + summarize."""
    import skan
    from skimage.morphology import skeletonize

    from roadnet.pipeline.vectorize.centerlines import road_mask

    t = time.perf_counter()
    skan.summarize(skan.Skeleton(_tiny_skeleton()), separator="_")  # numba compilation
    jit_s = time.perf_counter() - t
    _warm_read(result)
    t0, cpu0 = time.perf_counter(), time.process_time()
    surface, _ = _read_surface(result)
    t1 = time.perf_counter()
    mask = road_mask(surface, None, source="surface", threshold=THRESHOLD)
    del surface
    skeleton = skeletonize(mask)
    del mask
    t2 = time.perf_counter()
    skel = skan.Skeleton(skeleton)
    table = skan.summarize(skel, separator="_")
    t3 = time.perf_counter()
    return {
        "seconds": t3 - t0,
        "cpu_s": time.process_time() - cpu0,
        "jit_s": jit_s,
        "read_s": t1 - t0,
        "skeletonize_s": t2 - t1,
        "skan_s": t3 - t2,
        "skeleton_px": int(skeleton.sum()),
        "paths": len(table),
        "peak_mib": _rss_peak() / MIB,
    }


def _warm_worker() -> int:
    """On each worker: import the kernels and compile skan's numba code (not timed in (b))."""
    import skan  # noqa: F401
    import xarray  # noqa: F401
    import zarr  # noqa: F401

    from roadnet.pipeline.vectorize import centerlines, dissolve, polygons

    skeleton = _tiny_skeleton()
    centerlines.skeleton_piece(skeleton, origin=(0, 0), core=(0, 32, 0, 32))
    dissolve.merge_group(
        [polygons.polygonize(skeleton)], polygons.PixelWindow(0, 32, 0, 32), (32, 32)
    )
    return os.getpid()


def _worker_stats() -> dict[str, float]:
    return {"peak_mib": _rss_peak() / MIB, "cpu_s": time.process_time()}


#: The client phase running now, for :class:`_Sampler` (set by the timing wrappers).
PHASE = ["other (client)"]


class _Timed:
    """Wrap a function and add its wall time to ``phases[name]``."""

    def __init__(self, phases: dict[str, float], name: str, func: Any) -> None:
        self.phases, self.name, self.func = phases, name, func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        outer, PHASE[0] = PHASE[0], self.name
        try:
            return self.func(*args, **kwargs)
        finally:
            PHASE[0] = outer
            self.phases[self.name] += time.perf_counter() - start


class _TimedIterator:
    """Time an iterator from its creation to its end (the wait for the cluster's results)."""

    def __init__(self, phases: dict[str, float], name: str, inner: Any) -> None:
        self.phases, self.name, self.inner = phases, name, inner
        self.start = time.perf_counter()
        self.outer, PHASE[0] = PHASE[0], name

    def __iter__(self) -> _TimedIterator:
        return self

    def __next__(self) -> Any:
        try:
            return next(self.inner)
        except StopIteration:
            PHASE[0] = self.outer
            self.phases[self.name] += time.perf_counter() - self.start
            raise


class _Sampler:
    """Poll the RSS of this process (per client phase) and of each worker every 0.1 s."""

    def __init__(self, workers: dict[str, int]) -> None:
        self.client_peak: dict[str, float] = defaultdict(float)
        self.client_samples: list[tuple[float, float, str]] = []
        self.samples: dict[str, list[tuple[float, float]]] = {w: [] for w in workers}
        self._procs = {w: psutil.Process(pid) for w, pid in workers.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            now = time.time()
            with contextlib.suppress(psutil.Error):
                phase = PHASE[0]
                rss = me.memory_info().rss / MIB
                self.client_peak[phase] = max(self.client_peak[phase], rss)
                self.client_samples.append((now, rss, phase))
                for w, proc in self._procs.items():
                    self.samples[w].append((now, proc.memory_info().rss / MIB))
            time.sleep(0.1)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def client_timeline(self, start: float, points: int = 40) -> list[tuple[float, int, str]]:
        """The client's RSS, about ``points`` samples: (s into the run, MiB, phase)."""
        step = max(1, len(self.client_samples) // points)
        picked = self.client_samples[::step] + self.client_samples[-1:]
        return [(round(t - start, 1), round(rss), phase) for t, rss, phase in picked]

    def worker_peaks(self, records: list[dict[str, Any]], start: float) -> list[dict[str, Any]]:
        """Each worker's sampled peak: when (s into the run) and the task it was running."""
        from dask.utils import key_split

        peaks = []
        for w, samples in self.samples.items():
            if not samples:
                continue
            when, rss = max(samples, key=lambda s: s[1])
            running = sorted(
                {
                    key_split(rec["key"])
                    for rec in records
                    if rec.get("worker") == w
                    for ss in rec["startstops"]
                    if ss["action"] == "compute" and ss["start"] - 0.15 <= when <= ss["stop"] + 0.15
                }
            )
            peaks.append({"mib": round(rss), "at_s": round(when - start, 1), "running": running})
        return peaks


class _ShapelyProxy:
    """``shapely`` for the vectorize run module, with ``normalize`` timed."""

    def __init__(self, phases: dict[str, float]) -> None:
        import shapely

        self._shapely = shapely
        self.normalize = _Timed(phases, "normalize (client)", shapely.normalize)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shapely, name)


def _instrument(phases: dict[str, float], captured: dict[str, Any]) -> None:
    """Time the client's phases of ``vectorize_result`` by wrapping what it calls."""
    import distributed

    import roadnet.pipeline.vectorize.run as vr

    wrapped = {
        "vectorize_tasks": "build graphs (client)",  # one task per chunk (chunks.py)
        "dissolve_tree": "build graphs (client)",  # before it: two graphs on dask arrays
        "centerline_pieces": "build graphs (client)",
        "finish_polygons": "finish polygons (client)",
        "join_pieces": "join graph (client)",
    }
    for name, phase in wrapped.items():
        if hasattr(vr, name):
            setattr(vr, name, _Timed(phases, phase, getattr(vr, name)))
    vr.shapely = _ShapelyProxy(phases)  # type: ignore[assignment]
    write = _Timed(phases, "write GeoPackage (client)", vr.write_layers)

    def write_layers(layers: Any, *args: Any, **kwargs: Any) -> Any:
        captured["layers"] = layers
        return write(layers, *args, **kwargs)

    vr.write_layers = write_layers
    as_completed = distributed.as_completed

    def timed_as_completed(*args: Any, **kwargs: Any) -> _TimedIterator:
        return _TimedIterator(phases, "wait for tasks (client)", as_completed(*args, **kwargs))

    distributed.as_completed = timed_as_completed  # type: ignore[assignment]


def _task_profile(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Compute seconds per task kind from the task stream, and the tree's serial tail."""
    from dask.utils import key_split

    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    longest: dict[str, float] = defaultdict(float)
    stops: dict[str, float] = defaultdict(float)
    transfer = 0.0
    merges: list[float] = []
    for rec in records:
        name = key_split(rec["key"])
        for ss in rec["startstops"]:
            seconds = ss["stop"] - ss["start"]
            if ss["action"] == "compute":
                total[name] += seconds
                count[name] += 1
                longest[name] = max(longest[name], seconds)
                stops[name] = max(stops[name], ss["stop"])
                if name in ("merge_group", "merge_task"):
                    merges.append(seconds)
            elif ss["action"] == "transfer":
                transfer += seconds
    leaves = max(stops.get(k, 0.0) for k in ("chunk_task", "polygonize_blocks", "window_piece"))
    return {
        "compute_s": {k: round(v, 2) for k, v in sorted(total.items(), key=lambda kv: -kv[1])},
        "tasks": dict(count),
        "longest_s": {k: round(v, 2) for k, v in longest.items()},
        "transfer_s": round(transfer, 2),
        "merge_tail_s": round(
            max(max(stops.get(k, 0.0) for k in ("merge_group", "merge_task")) - leaves, 0.0), 2
        ),
        "merge_longest_s": [round(x, 2) for x in sorted(merges, reverse=True)[:6]],
    }


def _wkb_mib(layers: Any) -> float:
    """The output layers' geometries as WKB, MiB."""
    import shapely

    sizes = [len(w) for f in layers.frames().values() for w in shapely.to_wkb(f.geometry.values)]
    return sum(sizes) / MIB


def _one_layer_run(client: Any, result: Path, out: Path, **layers: bool) -> dict[str, Any]:
    """``vectorize_result`` with one of its two products switched off, on ``client``."""
    from roadnet.pipeline.vectorize.run import VectorizeConfig, vectorize_result

    before = client.run(_worker_stats)
    cpu0, t0 = time.process_time(), time.perf_counter()
    summary = vectorize_result(
        result,
        out,
        config=VectorizeConfig(threshold=THRESHOLD, sieve_px=SIEVE_PX, **layers),
        client=client,
        progress=False,
        overwrite=True,
    )
    seconds = time.perf_counter() - t0
    client_cpu = time.process_time() - cpu0
    after = client.run(_worker_stats)
    return {
        "seconds": seconds,
        "cpu_s": client_cpu + sum(after[w]["cpu_s"] - before[w]["cpu_s"] for w in after),
        "components": summary.components,
        "edges": summary.edges,
    }


def child_cluster(result: Path, out: Path) -> dict[str, Any]:
    """(b), (bs) and (bg) on one LocalCluster of 2 single-threaded worker processes."""
    import distributed

    from roadnet.pipeline.cluster import dask_client
    from roadnet.pipeline.vectorize.run import VectorizeConfig, vectorize_result

    phases: dict[str, float] = defaultdict(float)
    captured: dict[str, Any] = {}
    _instrument(phases, captured)
    _warm_read(result)
    me = psutil.Process()
    t0 = time.perf_counter()
    with dask_client(workers=2, threads_per_worker=1) as client:
        t1 = time.perf_counter()
        pids = client.run(_warm_worker)
        t2 = time.perf_counter()
        base_mib = me.memory_info().rss / MIB
        before = client.run(_worker_stats)
        cpu0 = time.process_time()
        with distributed.get_task_stream(client=client) as stream, _Sampler(pids) as sampler:
            t3, wall3 = time.perf_counter(), time.time()
            summary = vectorize_result(
                result,
                out,
                config=VectorizeConfig(threshold=THRESHOLD, sieve_px=SIEVE_PX),
                client=client,
                progress=False,
                overwrite=True,
            )
            b_s = time.perf_counter() - t3
        client_cpu = time.process_time() - cpu0
        client_peak = _rss_peak() / MIB
        after = client.run(_worker_stats)
        profile = _task_profile(stream.data)
        peaks = sampler.worker_peaks(stream.data, wall3)
        layers = captured.pop("layers")
        wkb = _wkb_mib(layers)
        del layers
        gpkg = out.stat().st_size / MIB
        client_phases = {k: round(v, 2) for k, v in phases.items()}
        client_phases["other (client)"] = round(b_s - sum(phases.values()), 2)
        surface_only = _one_layer_run(client, result, out, graph=False)
        graph_only = _one_layer_run(client, result, out, surface=False)
    return {
        "startup_s": t1 - t0,
        "warm_s": t2 - t1,
        "seconds": b_s,
        "components": summary.components,
        "edges": summary.edges,
        "nodes": summary.nodes,
        "km": round(summary.km, 1),
        "client_phases": client_phases,
        "tasks": profile,
        "cpu_s": client_cpu + sum(after[w]["cpu_s"] - before[w]["cpu_s"] for w in after),
        "client_cpu_s": client_cpu,
        "client_base_mib": base_mib,
        "client_peak_mib": client_peak,
        "worker_peak_mib": sorted(v["peak_mib"] for v in after.values()),
        "worker_sampled_peaks": peaks,
        "client_peak_by_phase_mib": {k: round(v) for k, v in sampler.client_peak.items()},
        "client_timeline": sampler.client_timeline(wall3),
        "output_wkb_mib": wkb,
        "gpkg_mib": gpkg,
        "surface_only": surface_only,
        "graph_only": graph_only,
    }


def child_kernels(result: Path, chunks: int) -> dict[str, Any]:
    """The per-chunk kernels of (b), one by one, on ``chunks`` chunks: ms per chunk."""
    from roadnet.pipeline.vectorize import centerlines as cl
    from roadnet.pipeline.vectorize.dissolve import chunk_windows, merge_group
    from roadnet.pipeline.vectorize.polygons import (
        chunk_polygons,
        halo_window,
        road_mask,
        sieve_halo,
    )

    _warm_worker()
    surface, _ = _read_surface(result)
    shape = (int(surface.shape[0]), int(surface.shape[1]))
    rows = tuple(np.diff(np.r_[0 : shape[0] : CHUNK, shape[0]]).tolist())
    windows = [w for row in chunk_windows((rows, rows)) for w in row][:chunks]
    timing: dict[str, float] = defaultdict(float)
    borders = []

    def clock(name: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        value = func(*args, **kwargs)
        timing[name] += time.perf_counter() - start
        return value

    halo = sieve_halo(SIEVE_PX)
    for core in windows:
        win = halo_window(core, halo=halo, scene_shape=shape)
        codes = surface[win.row_start : win.row_stop, win.col_start : win.col_stop]
        mask = clock("polygons: threshold", road_mask, codes, threshold=THRESHOLD)
        _, border = clock(
            "polygons: sieve + polygonize",
            chunk_polygons,
            mask,
            window=win,
            core=core,
            scene_shape=shape,
            sieve_px=SIEVE_PX,
        )
        borders.append(border)
        r0, r1 = max(core.row_start - 48, 0), min(core.row_stop + 48, shape[0])
        c0, c1 = max(core.col_start - 48, 0), min(core.col_stop + 48, shape[1])
        window = surface[r0:r1, c0:c1]
        graph_mask = clock("graph: threshold", cl.road_mask, window, None, threshold=THRESHOLD)
        filled = clock("graph: fill holes", cl.fill_small_holes, graph_mask, max_px=32)
        skeleton = clock("graph: skeletonize", cl.skeletonize, filled)
        clock(
            "graph: skan piece",
            cl.skeleton_piece,
            skeleton,
            origin=(r0, c0),
            core=(core.row_start, core.row_stop, core.col_start, core.col_stop),
        )
    clock("merge: one 2x2 node (first 4 chunks)", merge_group, borders[:4], windows[0], shape)
    n = len(windows)
    return {"chunks": n, "ms_per_chunk": {k: round(1000 * v / n, 1) for k, v in timing.items()}}


# -- the parent: children, ratios, tables ---------------------------------------------------------


def run_child(
    kind: str,
    result: Path,
    work: Path,
    timeout: float,
    extra: tuple[str, ...] = (),
    *,
    code: str | None = None,
) -> dict[str, Any]:
    """Run one measurement in a fresh process; add its wall time and process-tree peak RSS.

    ``code``: a directory holding a ``roadnet`` package tree to import instead of the
    checkout's (put first on ``PYTHONPATH``, which the cluster's workers inherit).
    """
    label = f"{kind}-before" if code else kind
    out_json = work / f"{label}.json"
    out_json.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", kind, "--result", str(result)]
    cmd += ["--child-out", str(out_json), "--work-dir", str(work), *extra]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TF_CPP_MIN_LOG_LEVEL": "2"}
    if code:
        env["PYTHONPATH"] = os.pathsep.join([code, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    log = (work / f"{label}.log").open("w")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
    ps = psutil.Process(proc.pid)
    peak = 0
    timed_out = False
    while True:
        pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - start > timeout:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the child's own session
            _, status, _ = os.wait4(proc.pid, 0)
            break
        total = 0
        with contextlib.suppress(psutil.Error):
            for p in [ps, *ps.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
        peak = max(peak, total)
        time.sleep(0.2)
    log.close()
    wall = time.perf_counter() - start
    if timed_out:
        return {"timed_out": True, "wall_s": wall, "limit_s": timeout}
    exit_code = os.waitstatus_to_exitcode(status)
    if exit_code != 0 or not out_json.exists():
        tail = (work / f"{label}.log").read_text()[-3000:]
        raise SystemExit(f"child {label} failed ({exit_code}):\n{tail}")
    row: dict[str, Any] = json.loads(out_json.read_text())
    row["wall_s"] = wall
    row["tree_peak_mib"] = peak / MIB
    return row


def one_size(
    size: int, result: Path, work: Path, args: argparse.Namespace, c_skip: str | None
) -> dict[str, Any]:
    print(f"  {size}: (a)", end="", flush=True)
    row: dict[str, Any] = {"size": size, "load": os.getloadavg()[0]}
    row["a"] = run_child("whole", result, work, args.timeout)
    print(f" {row['a']['seconds']:.1f} s, (b)", end="", flush=True)
    row["b"] = run_child("cluster", result, work, args.timeout)
    print(f" {row['b']['seconds']:.1f} s,", end="", flush=True)
    if args.before:
        row["b0"] = run_child("cluster", result, work, args.timeout, code=args.before)
        print(f" (b) before {row['b0']['seconds']:.1f} s,", end="", flush=True)
    print(" (c)", end="", flush=True)
    if c_skip:
        row["c"] = {"skipped": c_skip}
        print(" skipped", end="", flush=True)
    else:
        row["c"] = run_child("naive", result, work, args.c_timeout)
        print(
            " timed out" if row["c"].get("timed_out") else f" {row['c']['seconds']:.1f} s",
            end="",
            flush=True,
        )
    row["g1"] = run_child("skeleton", result, work, args.timeout)
    print(f", (g1) {row['g1']['seconds']:.1f} s", flush=True)
    a, b, c, g1 = row["a"], row["b"], row["c"], row["g1"]
    bs, bg = b["surface_only"], b["graph_only"]
    both = a["seconds"] + g1["seconds"]
    ratios = {
        "b_vs_ag1": both / b["seconds"],
        "b_user_vs_ag1": both / (b["startup_s"] + b["warm_s"] + b["seconds"]),
        "bs_vs_a": a["seconds"] / bs["seconds"],
        "bg_vs_g1": g1["seconds"] / bg["seconds"],
        "b_vs_a": a["seconds"] / b["seconds"],
    }
    if "seconds" in c:
        ratios["bs_vs_c"] = c["seconds"] / bs["seconds"]
        ratios["b_vs_c"] = c["seconds"] / b["seconds"]
    if "b0" in row:
        ratios["b0_vs_a"] = a["seconds"] / row["b0"]["seconds"]
        ratios["b_vs_b0"] = row["b0"]["seconds"] / b["seconds"]
        ratios["b_vs_b0_cpu"] = row["b0"]["cpu_s"] / b["cpu_s"]
    row["ratios"] = ratios
    return row


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def report(results: dict[str, Any]) -> str:
    """Markdown tables of the repetitions."""
    reps = results["reps"]
    sizes = results["sizes"]
    lines = [
        "Times (s, inside each child after its imports; (b) start-up in brackets):",
        "",
        "| rep | scene | load | (a) whole | (c) naive | (g1) whole graph "
        "| (b) vectorize [start-up] | (bs) surface only | (bg) graph only |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, rep in enumerate(reps, 1):
        for row in rep:
            a, b, c, g1 = row["a"], row["b"], row["c"], row["g1"]
            c_text = (
                _fmt(c["seconds"], 1)
                if "seconds" in c
                else (f"> {c['limit_s']:.0f}" if c.get("timed_out") else "skipped")
            )
            lines.append(
                f"| {i} | {row['size']}² | {row['load']:.1f} | {a['seconds']:.1f} | {c_text} "
                f"| {g1['seconds']:.1f} "
                f"| {b['seconds']:.1f} [{b['startup_s'] + b['warm_s']:.1f}] "
                f"| {b['surface_only']['seconds']:.1f} | {b['graph_only']['seconds']:.1f} |"
            )
    keys = ("b_vs_ag1", "bs_vs_a", "bs_vs_c", "bg_vs_g1", "b_user_vs_ag1", "b_vs_a", "b_vs_c")
    lines += [
        "",
        "Speed ratios (× faster than the one-process variant; inside each repetition):",
        "",
        "| rep | scene | (b) vs (a) + (g1) | (bs) vs (a) | (bs) vs (c) | (bg) vs (g1) "
        "| (b) with start-up vs (a) + (g1) | (b) vs (a) | (b) vs (c) |",
        "| --- |" + " --- |" * (len(keys) + 1),
    ]
    for i, rep in enumerate(reps, 1):
        for row in rep:
            r = row["ratios"]
            cells = " | ".join(_fmt(r.get(k)) for k in keys)
            lines.append(f"| {i} | {row['size']}² | {cells} |")
    for j, size in enumerate(sizes):
        rows = [rep[j]["ratios"] for rep in reps]
        med = {
            k: float(np.median([r[k] for r in rows if k in r]))
            for k in rows[0]
            if all(k in r for r in rows)
        }
        cells = " | ".join(
            f"**{_fmt(med.get(k))}**" if k in keys[:4] else _fmt(med.get(k)) for k in keys
        )
        lines.append(f"| median | {size}² | {cells} |")
    if len(sizes) > 1:  # one size: nothing to scale against
        lines += [
            "",
            "Scaling of (b), time ratio to the size before (4 × the pixels; target ≤ 4.4):",
            "",
            "| rep | " + " | ".join(f"{b}² → {a}²" for b, a in itertools.pairwise(sizes)) + " |",
            "| --- |" + " --- |" * (len(sizes) - 1),
        ]
        scale_rows, steps = [], range(len(sizes) - 1)
        for i, rep in enumerate(reps, 1):
            ratio = [rep[j + 1]["b"]["seconds"] / rep[j]["b"]["seconds"] for j in steps]
            scale_rows.append(ratio)
            lines.append(f"| {i} | " + " | ".join(f"{x:.2f}" for x in ratio) + " |")
        if scale_rows:
            lines.append(
                "| median | "
                + " | ".join(f"**{np.median([r[j] for r in scale_rows]):.2f}**" for j in steps)
                + " |"
            )
    lines += [
        "",
        "CPU seconds of the same runs ((b): client process, scheduler included, plus both "
        "workers; in brackets the client's share), and (b)'s CPU ratio to the size before:",
        "",
        "| rep | scene | (a) | (c) | (g1) | (a) + (g1) | (b) [client] | (bs) | (bg) "
        "| (b) CPU × size before |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, rep in enumerate(reps, 1):
        for j, row in enumerate(rep):
            a, b, c, g1 = row["a"], row["b"], row["c"], row["g1"]
            growth = _fmt(b["cpu_s"] / rep[j - 1]["b"]["cpu_s"]) if j else "–"
            lines.append(
                f"| {i} | {row['size']}² | {a['cpu_s']:.1f} | {_fmt(c.get('cpu_s'), 1)} "
                f"| {g1['cpu_s']:.1f} | {a['cpu_s'] + g1['cpu_s']:.1f} "
                f"| {b['cpu_s']:.1f} [{b['client_cpu_s']:.1f}] "
                f"| {b['surface_only']['cpu_s']:.1f} | {b['graph_only']['cpu_s']:.1f} | {growth} |"
            )
    lines += [
        "",
        "Memory (MiB; workers: each one's kernel peak after (b); client: this process, "
        "scheduler included, its own peak after (b) and its RSS once the cluster was up):",
        "",
        "| rep | scene | raster (3 planes) | output (WKB) | gpkg | (b) workers peak "
        "| (b) client peak (at start) | (a) peak | (c) peak | (g1) peak |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, rep in enumerate(reps, 1):
        for row in rep:
            a, b, c, g1 = row["a"], row["b"], row["c"], row["g1"]
            raster = 3 * row["size"] ** 2 / MIB
            lines.append(
                f"| {i} | {row['size']}² | {raster:.0f} | {b['output_wkb_mib']:.1f} "
                f"| {b['gpkg_mib']:.1f} | {' / '.join(f'{w:.0f}' for w in b['worker_peak_mib'])} "
                f"| {b['client_peak_mib']:.0f} ({b['client_base_mib']:.0f}) "
                f"| {a['peak_mib']:.0f} | {_fmt(c.get('peak_mib'), 0)} | {g1['peak_mib']:.0f} |"
            )
    if any("b0" in row for rep in reps for row in rep):
        lines += _before_after(reps)
    return "\n".join(lines)


def _before_after(reps: list[list[dict[str, Any]]]) -> list[str]:
    """(b) with the ``--before`` code against (b) with the checkout's, same repetitions."""
    lines = [
        "",
        "Before / after ((b) with the --before code, then with the checkout's, back to back;"
        " memory in MiB):",
        "",
        "| rep | scene | (b) before s | (b) after s | × faster | CPU-s before | CPU-s after "
        "| tasks before | tasks after | workers peak before | workers peak after "
        "| client peak before | client peak after | (b) vs (a) before | (b) vs (a) after |",
        "| --- |" + " --- |" * 14,
    ]
    for i, rep in enumerate(reps, 1):
        for row in rep:
            if "b0" not in row:
                continue
            b0, b, r = row["b0"], row["b"], row["ratios"]
            n0 = sum(b0["tasks"]["tasks"].values())
            n1 = sum(b["tasks"]["tasks"].values())
            lines.append(
                f"| {i} | {row['size']}² | {b0['seconds']:.1f} | {b['seconds']:.1f} "
                f"| {r['b_vs_b0']:.2f} | {b0['cpu_s']:.1f} | {b['cpu_s']:.1f} | {n0} | {n1} "
                f"| {max(b0['worker_peak_mib']):.0f} | {max(b['worker_peak_mib']):.0f} "
                f"| {b0['client_peak_mib']:.0f} | {b['client_peak_mib']:.0f} "
                f"| {r['b0_vs_a']:.2f} | {r['b_vs_a']:.2f} |"
            )
    return lines


def benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    sizes = [int(s) for s in args.sizes.split(",")]
    stores = {}
    made = []
    for size in sizes:
        path = work / f"result-{size}.zarr"
        if not (args.reuse and path.exists()):
            shutil.rmtree(path, ignore_errors=True)
            made.append(write_store(path, size, work, args))
            print(f"store {size}² written: {made[-1]}", flush=True)
        stores[size] = path
    code = code_state()
    print(f"code: {code}", flush=True)
    reps = []
    for rep in range(args.reps):
        print(f"repetition {rep + 1}", flush=True)
        rows = []
        previous_c: float | None = None
        for size in sizes:
            c_skip = None
            if previous_c is not None and 4 * previous_c > args.c_timeout:
                c_skip = f"4 × {previous_c:.0f} s at the size before > {args.c_timeout:.0f} s"
            elif previous_c is None and rows:
                c_skip = "timed out or skipped at the size before"
            row = one_size(size, stores[size], work, args, c_skip)
            previous_c = row["c"].get("seconds")
            rows.append(row)
        reps.append(rows)
        (work / "partial.json").write_text(json.dumps(reps, indent=1))
    seen = {row[k].get("code") for rep in reps for row in rep for k in ("a", "b", "c", "g1")}
    seen.discard(None)
    code["changed_during_run"] = sorted(seen) if len(seen) > 1 else []
    if code["changed_during_run"]:
        print(f"WARNING: the vectorize sources changed during the run: {seen}", flush=True)
    results = {
        "code": code,
        "machine": {
            "cpus": os.cpu_count(),
            "ram_gib": round(psutil.virtual_memory().total / 2**30),
        },
        "sizes": sizes,
        "roads": args.roads,
        "block_from": args.block_from,
        "stores": made,
        "reps": reps,
    }
    if not args.keep:
        for path in stores.values():
            shutil.rmtree(path, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4096,8192,16384", help="scene sides in px")
    parser.add_argument("--reps", type=int, default=2, help="repetitions")
    parser.add_argument("--roads", type=int, default=24, help="roads in the 4096 px block")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--block-from",
        default=None,
        help="tile a real roadnet run result (its top-left 4096 px) instead of synthetic roads",
    )
    parser.add_argument("--c-timeout", type=float, default=600, help="(c) is killed after this")
    parser.add_argument("--timeout", type=float, default=3600, help="any other child, s")
    parser.add_argument("--kernels", type=int, default=0, help="time the kernels on N chunks")
    parser.add_argument("--work-dir", default=None, help="where the stores go (must exist)")
    parser.add_argument("--reuse", action="store_true", help="reuse stores in --work-dir")
    parser.add_argument("--keep", action="store_true", help="keep the stores")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "--before",
        default=None,
        help="a directory with an older roadnet package tree: (b) runs with it too",
    )
    parser.add_argument("--report", default=None, help="print the tables of a --json file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = Path(args.result)
        if args.child == "whole":
            row = child_whole(result)
        elif args.child == "naive":
            row = child_naive(result)
        elif args.child == "skeleton":
            row = child_skeleton(result)
        elif args.child == "cluster":
            row = child_cluster(result, Path(args.work_dir) / "roads.gpkg")
        elif args.child == "make":
            row = make_result(
                result,
                int(args.sizes),
                roads=args.roads,
                seed=args.seed,
                block_from=args.block_from,
            )
        elif args.child == "kernels":
            row = child_kernels(result, int(os.environ.get("BENCH_KERNEL_CHUNKS", "16")))
        else:
            raise SystemExit(f"unknown child {args.child}")
        row["code"] = code_state()["vectorize_sha1"]
        Path(args.child_out).write_text(json.dumps(row))
        return

    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return
    if args.reuse or args.keep:
        if args.work_dir is None:
            raise SystemExit("--reuse and --keep need --work-dir")
        work = Path(args.work_dir)
        context: Any = contextlib.nullcontext(str(work))
    else:
        context = tempfile.TemporaryDirectory(dir=args.work_dir)
    with context as tmp:
        work = Path(tmp)
        if args.kernels:
            size = BLOCK
            path = work / f"result-{size}.zarr"
            if not (args.reuse and path.exists()):
                write_store(path, size, work, args)
            os.environ["BENCH_KERNEL_CHUNKS"] = str(args.kernels)
            print(json.dumps(run_child("kernels", path, work, args.timeout), indent=2))
            return
        results = benchmark(args, work)
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print()
    print(report(results))


if __name__ == "__main__":
    main()
