"""Peak memory of `roadnet evaluate`'s chunked pixel scores against scoring in memory.

Writes a synthetic result store (a procedural road network, chunk by chunk, in the store
layout `roadnet run` writes) and truth label GeoTIFFs on its grid (the same roads one pixel
off, other widths, a few specks), then scores them in two fresh processes:

* ``chunked``: :func:`roadnet.pipeline.evaluate.run.evaluate` with an error map, on an
  in-process cluster (``LocalCluster(processes=False)``, 1 worker x 2 threads), so the
  process's own peak RSS holds every byte the scoring used;
* ``memory``: the whole arrays read into numpy and scored with ``roadnet.metrics``, as
  ``roadnet evaluate-model`` does;

plus ``baseline``: the same imports and cluster, no scoring. It checks both give the same
scores and prints wall time and peak RSS (ru_maxrss) of each. GDAL's block cache is capped
at 64 MiB (``GDAL_CACHEMAX``), as on the workers of roadnet's LocalCluster.

    .venv/bin/python bench/bench_evaluate.py --size 16384 --out /tmp/bench-evaluate
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

CRS = "EPSG:32635"
GSD = 0.3
X0, Y0 = 385_000.0, 6_700_000.0


def _distances(r0: int, r1: int, c0: int, c1: int, *, shift: int) -> list[np.ndarray]:
    """Distances (px) of a window's pixels to three families of straight roads."""
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    xx += shift
    horizontal = np.abs((yy - 137 + 400) % 800 - 400)
    vertical = np.abs((xx - 271 + 500) % 1000 - 500)
    diagonal = np.abs((xx + yy + 1150) % 2300 - 1150) / np.float32(np.sqrt(2))
    return [horizontal, vertical, diagonal]


def _specks(r0: int, r1: int, c0: int, c1: int, seed: int) -> np.ndarray:
    """About one pixel in 2000, from a hash of the global position (any window the same)."""
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.uint64)
    h = (xx * np.uint64(73856093)) ^ (yy * np.uint64(19349663)) ^ np.uint64(seed * 83492791)
    return (h % np.uint64(2000)) == 0


def prediction_codes(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """``(3, y, x)`` uint8 codes of a window: surface, edge, centerline."""
    dists = _distances(r0, r1, c0, c1, shift=0)
    halves = (10.0, 7.0, 5.0)
    road = np.zeros(dists[0].shape, bool)
    edge = np.zeros_like(road)
    for d, half in zip(dists, halves, strict=True):
        road |= d <= half
        edge |= np.abs(d - half) <= 1.0
    road ^= _specks(r0, r1, c0, c1, seed=1)
    nearest = np.minimum.reduce(dists)
    surface = np.where(road, 230, 12).astype(np.uint8)
    centerline = np.clip(254 * (1 - nearest / 3.0), 0, 254).astype(np.uint8)
    return np.stack([surface, np.where(edge, 200, 5).astype(np.uint8), centerline])


def truth_labels(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """``(3, y, x)`` uint8 {0, 1} truth of a window: the roads 1 px off, other widths."""
    dists = _distances(r0, r1, c0, c1, shift=1)
    halves = (11.0, 6.0, 5.5)
    road = np.zeros(dists[0].shape, bool)
    edge = np.zeros_like(road)
    for d, half in zip(dists, halves, strict=True):
        road |= d <= half
        edge |= np.abs(d - half) <= 0.5
    road ^= _specks(r0, r1, c0, c1, seed=2)
    centerline = np.minimum.reduce(dists) <= 0.5
    return np.stack([road, edge, centerline]).astype(np.uint8)


def make_data(out: Path, size: int, chunk: int) -> tuple[Path, Path]:
    """Write ``out/result.zarr`` and ``out/labels/`` (3 GeoTIFFs) of a ``size``² grid."""
    import dask.array as da
    import rasterio
    import rioxarray  # noqa: F401
    import xarray as xr
    from affine import Affine

    from roadnet.pipeline.inference.store import (
        create_store,
        finish_store,
        staging_path,
        write_chunk,
    )
    from roadnet.tasks import TASKS

    store, labels = out / "result.zarr", out / "labels"
    if store.exists() and (labels / "centerline.tif").exists():
        return store, labels
    shutil.rmtree(out, ignore_errors=True)
    labels.mkdir(parents=True)
    transform = Affine(GSD, 0, X0, 0, -GSD, Y0)
    lazy = da.zeros((size, size), chunks=chunk, dtype=np.uint8)
    coords = {
        "y": Y0 - GSD * (np.arange(size) + 0.5),
        "x": X0 + GSD * (np.arange(size) + 0.5),
    }
    ds = xr.Dataset({t: (("y", "x"), lazy) for t in TASKS}, coords=coords)
    for t in TASKS:
        ds[t].attrs["scale_factor"] = 1 / 254
    ds = ds.rio.write_crs(CRS).rio.write_transform(transform)
    grid = (-(-size // chunk), -(-size // chunk))
    staging = staging_path(store)
    create_store(staging, ds, chunk=chunk, grid=grid, attrs={"roadnet:job": "bench"})
    for row in range(grid[0]):
        for col in range(grid[1]):
            r0, c0 = row * chunk, col * chunk
            codes = prediction_codes(r0, min(r0 + chunk, size), c0, min(c0 + chunk, size))
            write_chunk(codes, path=str(staging), row=row, col=col, chunk=chunk, job="bench")
    finish_store(staging, store, attrs={})
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint8",
        "crs": CRS, "transform": transform, "tiled": True, "blockxsize": 512,
        "blockysize": 512, "compress": "deflate",
    }  # fmt: skip
    dsts = [rasterio.open(labels / f"{t}.tif", "w", **profile) for t in TASKS]
    block = 2048
    for r0 in range(0, size, block):
        for c0 in range(0, size, block):
            r1, c1 = min(r0 + block, size), min(c0 + block, size)
            window = ((r0, r1), (c0, c1))
            for dst, plane in zip(dsts, truth_labels(r0, r1, c0, c1), strict=True):
                dst.write(plane, 1, window=window)
    for dst in dsts:
        dst.close()
    return store, labels


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, store: Path, labels: Path, out: Path, rho: float) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    from distributed import Client, LocalCluster

    from roadnet.pipeline.evaluate.pixels import in_memory_scores
    from roadnet.pipeline.evaluate.run import evaluate

    start = time.perf_counter()
    result: dict[str, Any] = {"mode": mode}
    if mode in ("baseline", "chunked"):
        with (
            LocalCluster(
                n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            if mode == "chunked":
                report = evaluate(
                    store,
                    labels,
                    out / "metrics.json",
                    rho=rho,
                    errors=out / "errors.png",
                    client=client,
                    overwrite=True,
                )
                result["pixel"] = report["pixel"]
    else:
        import rasterio
        import zarr

        from roadnet.tasks import TASKS

        group = zarr.open_group(str(store), mode="r")
        codes = {t: np.asarray(group[t][...]) for t in TASKS}
        truth = {}
        for t in TASKS:
            with rasterio.open(labels / f"{t}.tif") as src:
                truth[t] = src.read(1) > 0
        result["pixel"] = {}
        for t in TASKS:
            valid = codes[t] != 255
            pred = valid & (codes[t] >= 0.5 * 254)
            result["pixel"][t] = in_memory_scores(pred, truth[t] & valid, rho=rho)
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["peak_rss_mib"] = round(_peak_mib(), 0)
    return result


def _self(args: argparse.Namespace) -> list[str]:
    return [sys.executable, __file__, "--out", str(args.out), "--rho", str(args.rho)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384, help="grid side, px")
    parser.add_argument("--chunk", type=int, default=512, help="result chunk, px")
    parser.add_argument("--rho", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-evaluate"))
    parser.add_argument("--modes", default="baseline,chunked,memory", help="what to measure")
    parser.add_argument(
        "--child", choices=("make", "baseline", "chunked", "memory"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    store, labels = args.out / "result.zarr", args.out / "labels"
    if args.child == "make":
        make_data(args.out, args.size, args.chunk)
        return
    if args.child:
        print(json.dumps(child(args.child, store, labels, args.out, args.rho)))
        return
    start = time.perf_counter()
    # every step in a child: Linux keeps a process's peak RSS across fork and exec, so the
    # parent stays small to leave each child's own peak measurable
    subprocess.run([*_self(args), "--size", str(args.size), "--chunk", str(args.chunk),
                    "--child", "make"], check=True)  # fmt: skip
    print(f"data: {args.size} x {args.size} px ({args.size**2 / 1e6:.0f} Mpx), "
          f"chunk {args.chunk}, written in {time.perf_counter() - start:.0f} s")  # fmt: skip
    results = {}
    # GDAL's block cache, 5 % of RAM by default, would fill with every truth tile read:
    # capped as the workers of roadnet's LocalCluster have it
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "GDAL_CACHEMAX": "64"}
    for mode in args.modes.split(","):
        done = subprocess.run(
            [*_self(args), "--child", mode], capture_output=True, text=True, env=env
        )
        if done.returncode:
            raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{mode:>8}: {results[mode]['seconds']:7.1f} s, "
              f"peak RSS {results[mode]['peak_rss_mib']:6.0f} MiB")  # fmt: skip
    for task, s in results.get("chunked", {}).get("pixel", {}).items():
        print(f"  {task:<11} IoU {s['iou']:.4f}  relaxed F1 {s['relaxed_f1']:.4f}")
    if "chunked" in results and "memory" in results:
        same = results["chunked"]["pixel"] == results["memory"]["pixel"]
        print(f"chunked scores == in-memory scores: {same}")
        if not same:
            raise SystemExit("chunked and in-memory scores differ")


if __name__ == "__main__":
    main()
