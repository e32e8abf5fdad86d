"""Benchmark ``roadnet run`` against the raw model and a naive windowed loop, side by side.

    python bench/bench_run.py --size 2048 --model lite --layouts 1x2,2x1
    python bench/bench_run.py --memory --model test --sizes 4096,16384

Throughput (one run, same scene and model, same fixed 640 x 640 model input; (a), (b), (c)
back to back in each of --reps repetitions, ratios taken within a repetition, medians kept):
  (a) the raw model called on fixed windows in this process (the ceiling);
  (b) ``run_to_zarr`` on a LocalCluster, for each worker x thread layout (compute seconds
      after the cluster is up and the model loaded; wall seconds include start-up);
  (c) a naive single-process loop: rasterio windowed read with the same context (mirrored at
      the scene border) -> model -> crop -> write a GeoTIFF window.
Raw model (--tf-threads): ms per 640 x 640 call for one process with TensorFlow on every core
against one process per core with one TensorFlow thread each, all calling at once (the
reason for the default worker layout).
Memory (--memory): peak resident memory of the whole process tree (client + workers) while
``run_to_zarr`` runs on scenes of different sizes.

``--model lite`` builds RoadNet-lite (configs/roadnet-lite.yaml) with untrained weights: the
same computation as the trained model. ``--model test`` is the tiny test model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

CORE, OVERLAP = 512, 64
SHAPE = (CORE + 2 * OVERLAP, CORE + 2 * OVERLAP)


def make_model(kind: str, directory: Path) -> Path:
    if kind == "test":
        from _models import save_test_model

        return save_test_model(directory / "roadnet-test.keras")
    if kind == "lite":
        from roadnet.config import load_config
        from roadnet.model.roadnet import ModelConfig, build_roadnet

        model = build_roadnet(load_config(ModelConfig, "roadnet-lite"))
        path = directory / "roadnet-lite-untrained.keras"
        model.save(path)
        return path
    return Path(kind)


def make_scene(path: Path, size: int, *, seed: int = 0) -> Path:
    """Write a ``size`` x ``size`` 3-band uint8 tiled GeoTIFF in strips (bounded memory)."""
    rng = np.random.default_rng(seed)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32635",
        "transform": from_origin(385_000.0, 6_672_000.0, 0.3, 0.3),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
    }
    ramp = np.linspace(0, 200, size, dtype=np.float32)
    with rasterio.open(path, "w", **profile) as dst:
        for y0 in range(0, size, 512):
            h = min(512, size - y0)
            noise = rng.integers(0, 56, (3, h, size), dtype=np.uint8)
            strip = (noise + ramp[np.newaxis, np.newaxis, :]).astype(np.uint8)
            dst.write(strip, window=Window(0, y0, size, h))
    return path


def bench_raw(runner, calls: int) -> float:  # type: ignore[no-untyped-def]
    """(a): seconds per model call on one fixed window."""
    x = np.random.default_rng(0).uniform(0, 255, (1, *SHAPE, 3)).astype(np.float32)
    runner(x)  # trace + warm up
    start = time.perf_counter()
    for _ in range(calls):
        runner(x)
    return (time.perf_counter() - start) / calls


def bench_naive(scene: Path, out: Path, runner) -> float:  # type: ignore[no-untyped-def]
    """(c): seconds for the whole scene, read -> predict -> write, one window at a time."""
    start = time.perf_counter()
    with rasterio.open(scene) as src:
        profile = {**src.profile, "count": 3, "dtype": "uint8", "compress": "deflate"}
        h, w = src.height, src.width
        with rasterio.open(out, "w", **profile) as dst:
            for y0 in range(0, h, CORE):
                for x0 in range(0, w, CORE):
                    ch, cw = min(CORE, h - y0), min(CORE, w - x0)
                    ry0, rx0 = max(0, y0 - OVERLAP), max(0, x0 - OVERLAP)
                    ry1, rx1 = min(h, y0 + ch + OVERLAP), min(w, x0 + cw + OVERLAP)
                    block = src.read(window=Window(rx0, ry0, rx1 - rx0, ry1 - ry0))
                    top, left = OVERLAP - (y0 - ry0), OVERLAP - (x0 - rx0)
                    bottom = OVERLAP - (ry1 - y0 - ch)
                    right = OVERLAP - (rx1 - x0 - cw)
                    block = np.pad(block, ((0, 0), (top, bottom), (left, right)), "symmetric")
                    x = np.moveaxis(block, 0, -1).astype(np.float32)
                    x = np.pad(x, ((0, SHAPE[0] - x.shape[0]), (0, SHAPE[1] - x.shape[1]), (0, 0)))
                    probs = runner(x[np.newaxis])[OVERLAP : OVERLAP + ch, OVERLAP : OVERLAP + cw]
                    codes = np.rint(np.moveaxis(probs, -1, 0) * 254).astype(np.uint8)
                    dst.write(codes, window=Window(x0, y0, cw, ch))
    return time.perf_counter() - start


class PeakRSS:
    """Sample the resident memory of this process and its children every 0.1 s."""

    def __init__(self) -> None:
        self.peak = 0
        self.peak_main = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
            self.peak = max(self.peak, total)
            with contextlib.suppress(psutil.Error):
                self.peak_main = max(self.peak_main, me.memory_info().rss)
            time.sleep(0.1)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def bench_roadnet(  # type: ignore[type-arg]
    scene: Path,
    out: Path,
    model: Path,
    workers: int,
    threads: int,
    batch_chunks: int = 32,
    dashboard: bool = False,
) -> dict:
    """(b): ``run_to_zarr`` on a LocalCluster; compute and wall seconds, peak memory."""
    from roadnet.pipeline.inference.run import RunConfig, run_to_zarr

    start = time.perf_counter()
    with PeakRSS() as rss:
        summary = run_to_zarr(
            scene,
            out,
            model=model,
            config=RunConfig(chunk=CORE, overlap=OVERLAP),
            workers=workers,
            threads_per_worker=threads,
            overwrite=True,
            progress=False,
            batch_chunks=batch_chunks,
            dashboard=dashboard,
        )
    return {
        "layout": f"{workers}x{threads}" + "+dashboard" * dashboard,
        "compute_s": round(summary.seconds, 2),
        "wall_s": round(time.perf_counter() - start, 2),
        "mpx_s": round(summary.pixels / 1e6 / summary.seconds, 3),
        "peak_rss_mb": round(rss.peak / 2**20),
        "peak_client_mb": round(rss.peak_main / 2**20),
    }


def throughput(args: argparse.Namespace, work: Path) -> dict:  # type: ignore[type-arg]
    from roadnet.model.io import content_hash
    from roadnet.model.runtime import configure_tensorflow
    from roadnet.pipeline.inference.runner import ModelRunner

    model = make_model(args.model, work)
    scene = make_scene(work / "scene.tif", args.size)
    chunks = (-(-args.size // CORE)) ** 2
    results: dict = {"model": args.model, "scene_px": args.size**2, "chunks": chunks}  # type: ignore[type-arg]
    configure_tensorflow(threads=os.cpu_count())
    runner = ModelRunner(model=str(model), digest=content_hash(model), shape=SHAPE)
    calls = min(chunks, args.raw_calls)
    layouts = [_layout(layout) for layout in args.layouts.split(",")]
    context = CORE**2 / (SHAPE[0] * SHAPE[1])
    # The machine is shared and its speed drifts: (a), (b), (c) run back to back in every
    # repetition, (a) both before and after (b) and (c) (its mean is used), and the ratios
    # are taken within a repetition, then their median.
    reps = []
    for _ in range(args.reps):
        before = bench_raw(runner, calls=calls)
        runs = [
            bench_roadnet(scene, work / f"r{w}x{t}.zarr", model, w, t, dashboard=dash)
            for w, t, dash in layouts
        ]
        naive_mpx = args.size**2 / 1e6 / bench_naive(scene, work / "naive.tif", runner)
        raw_mpx = SHAPE[0] * SHAPE[1] / 1e6 / ((before + bench_raw(runner, calls=calls)) / 2)
        target = 0.9 * raw_mpx * context
        for r in runs:
            r["vs_target"] = round(r["mpx_s"] / target, 3)
            r["vs_naive"] = round(r["mpx_s"] / naive_mpx, 3)
        reps.append(
            {"raw_mpx_s": round(raw_mpx, 3), "naive_mpx_s": round(naive_mpx, 3), "runs": runs}
        )
    results["reps"] = reps
    results["raw_mpx_s_median"] = round(float(np.median([r["raw_mpx_s"] for r in reps])), 3)
    results["naive_mpx_s_median"] = round(float(np.median([r["naive_mpx_s"] for r in reps])), 3)
    summary = []
    for i in range(len(layouts)):
        runs = [rep["runs"][i] for rep in reps]
        summary.append(
            {
                "layout": runs[0]["layout"],
                "mpx_s_median": round(float(np.median([r["mpx_s"] for r in runs])), 3),
                "vs_target_median": round(float(np.median([r["vs_target"] for r in runs])), 3),
                "vs_naive_median": round(float(np.median([r["vs_naive"] for r in runs])), 3),
                "peak_rss_mb_max": max(r["peak_rss_mb"] for r in runs),
                "wall_s_median": round(float(np.median([r["wall_s"] for r in runs])), 1),
            }
        )
    results["roadnet_run"] = summary
    return results


def _layout(text: str) -> tuple[int, int, bool]:
    """``"2x1"`` or ``"2x1+dashboard"`` -> (workers, threads, dashboard)."""
    layout, _, extra = text.partition("+")
    workers, threads = (int(v) for v in layout.split("x"))
    return workers, threads, extra == "dashboard"


def _raw_calls_in_child(model: str, threads: int, calls: int, start: Any, out: Any) -> None:
    """Child process: time ``calls`` model calls with TensorFlow on ``threads`` threads."""
    from roadnet.model.io import content_hash
    from roadnet.model.runtime import configure_tensorflow
    from roadnet.pipeline.inference.runner import ModelRunner

    configure_tensorflow(threads=threads)
    runner = ModelRunner(model=model, digest=content_hash(model), shape=SHAPE)
    x = np.random.default_rng(0).uniform(0, 255, (1, *SHAPE, 3)).astype(np.float32)
    runner(x)
    start.wait()  # every process loaded and traced: all call the model at once
    cpu, began = time.process_time(), time.perf_counter()
    for _ in range(calls):
        runner(x)
    out.put((time.perf_counter() - began, time.process_time() - cpu))


def tf_threads(args: argparse.Namespace, work: Path) -> dict:  # type: ignore[type-arg]
    """Raw model throughput: one process with TensorFlow on every core vs one process per
    core with one TensorFlow thread each, all calling the model at once; alternated."""
    import multiprocessing as mp

    model = str(make_model(args.model, work))
    cores = os.cpu_count() or 1
    ctx = mp.get_context("spawn")
    rows = []
    for _ in range(args.reps):
        for procs, threads in ((1, cores), (cores, 1)):
            start, out = ctx.Barrier(procs), ctx.Queue()
            children = [
                ctx.Process(
                    target=_raw_calls_in_child,
                    args=(model, threads, args.raw_calls, start, out),
                )
                for _ in range(procs)
            ]
            for child in children:
                child.start()
            timings = [out.get() for _ in children]
            for child in children:
                child.join()
            wall = max(t[0] for t in timings)
            rows.append(
                {
                    "layout": f"{procs} process(es) x {threads} TF thread(s)",
                    "ms_per_call": round(1000 * wall / (procs * args.raw_calls), 1),
                    "cpu_ms_per_call": round(
                        1000 * sum(t[1] for t in timings) / (procs * args.raw_calls), 1
                    ),
                }
            )
    return {"model": args.model, "window": SHAPE, "runs": rows}


def memory(args: argparse.Namespace, work: Path) -> dict:  # type: ignore[type-arg]
    model = make_model(args.model, work)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        scene = make_scene(work / f"scene{size}.tif", size)
        w, t, dash = _layout(args.layouts.split(",")[0])
        row = bench_roadnet(scene, work / f"m{size}.zarr", model, w, t, args.batch_chunks, dash)
        rows.append({"scene_mpx": round(size**2 / 1e6), **row})
        scene.unlink()
    return {
        "model": args.model,
        "runs": rows,
        "peak_ratio": round(rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lite", help="lite, test, or a .keras path")
    parser.add_argument("--size", type=int, default=2048, help="scene side in px")
    parser.add_argument(
        "--layouts",
        default="1x2,2x1",
        help="workers x threads, comma-separated; +dashboard serves the dashboard (2x1+dashboard)",
    )
    parser.add_argument("--raw-calls", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--memory", action="store_true", help="peak memory vs scene size")
    parser.add_argument(
        "--tf-threads", action="store_true", help="raw model: 1 x all cores vs cores x 1 thread"
    )
    parser.add_argument("--sizes", default="4096,16384", help="scene sides for --memory")
    parser.add_argument("--batch-chunks", type=int, default=32, help="chunks per band (--memory)")
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        work = Path(tmp)
        if args.memory:
            result = memory(args, work)
        elif args.tf_threads:
            result = tf_threads(args, work)
        else:
            result = throughput(args, work)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
