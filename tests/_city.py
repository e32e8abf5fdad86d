"""A city with a street grid, scenes cut from it, a model that finds its roads; process helpers."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import _procs
import numpy as np

GSD = 0.3
ORIGIN = (385_000.0, 6_672_000.0)
CITY = (1024, 1536)  # (rows, cols) of the whole city image
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "ROADNET_LEASE_TTL": "10"}
ROADNET = [sys.executable, "-m", "roadnet.pipeline.cli"]


@functools.lru_cache(maxsize=1)
def city_image() -> np.ndarray:
    """``(3, y, x)`` uint8: 14 px dark streets every 150 / 170 px on bright noisy ground."""
    rows, cols = CITY
    rng = np.random.default_rng(5)
    ground = 190 + rng.normal(0, 12, (rows, cols))
    yy, xx = np.mgrid[0:rows, 0:cols]
    road = ((yy + 40) % 150 < 14) | ((xx + 25) % 170 < 14)
    road |= np.abs((yy - 0.55 * xx) % 400 - 200) < 5  # some diagonals
    image = np.where(road, 45 + rng.normal(0, 10, (rows, cols)), ground)
    grey = np.clip(image, 0, 255).astype(np.uint8)
    return np.stack([grey, grey, grey])


def write_window(path: Path, *, row: int, col: int, height: int, width: int) -> Path:
    """Write the city's window at (row, col) as a georeferenced GeoTIFF scene."""
    import rasterio
    from rasterio.transform import from_origin

    image = city_image()[:, row : row + height, col : col + width]
    transform = from_origin(ORIGIN[0] + col * GSD, ORIGIN[1] - row * GSD, GSD, GSD)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8",
        crs="EPSG:32635", transform=transform, tiled=True, blockxsize=128, blockysize=128,
    ) as dst:  # fmt: skip
        dst.write(image)
    return path


def truncate(path: Path, fraction: float = 0.5) -> Path:
    """Cut a file to ``fraction`` of its bytes, as an interrupted copy leaves it."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(int(size * fraction))
    return path


def age(path: Path, seconds: float = 600.0) -> Path:
    """Set a file's mtime ``seconds`` back: it has long been stable."""
    import time

    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def save_road_model(path: Path) -> Path:
    """A Keras model with the RoadNet contract that calls dark pixels road (logit 0.1·(115−v))."""
    import keras

    inputs = keras.Input((None, None, 3), dtype="float32")
    outputs = {
        task: keras.layers.Conv2D(
            1,
            1,
            name=task,
            kernel_initializer=keras.initializers.Constant(-0.1 / 3),
            bias_initializer=keras.initializers.Constant(11.5),
        )(inputs)
        for task in ("surface", "edge", "centerline")
    }
    keras.Model(inputs, outputs, name="roadnet_roads").save(path)
    return path


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start a process in a session of its own with the city tests' environment."""
    return _procs.start(args, log, ENV)
