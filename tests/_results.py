"""Synthetic ``roadnet run`` results: road-like probability codes in a real result store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr
from affine import Affine
from scipy import ndimage
from skimage.draw import line

from roadnet.pipeline.inference.store import (
    JOB_ATTR,
    create_store,
    finish_store,
    open_result,
    staging_path,
    write_chunk,
)
from roadnet.tasks import TASKS

#: 0.3 m pixels in UTM 35N near Helsinki, like the fixture scenes.
TRANSFORM = Affine(0.3, 0.0, 385_000.0, 0.0, -0.3, 6_672_000.0)
CRS = "EPSG:32635"


def dataset_codes(ds: xr.Dataset) -> np.ndarray:
    """``(task, y, x)`` uint8 codes of float probabilities (NaN: 255), as the store keeps them."""
    stacked = np.stack([ds[t].values for t in TASKS])
    return np.where(np.isnan(stacked), 255, np.rint(stacked * 254)).astype(np.uint8)


def stored_codes(path: str | Path) -> np.ndarray:
    """``(task, y, x)`` uint8 codes of a complete result store, read raw."""
    ds = open_result(path, mask_and_scale=False)
    return np.stack([ds[t].values for t in TASKS])


def road_codes(height: int, width: int, *, seed: int = 0, roads: int = 9) -> np.ndarray:
    """``(3, y, x)`` uint8 codes of a road network: random straight roads 9–21 px wide.

    Surface codes are high on the roads and low elsewhere, with a few specks and pinholes;
    the centerline code peaks on each road's axis; the edge code marks the road borders.
    """
    rng = np.random.default_rng(seed)
    axis = np.zeros((height, width), bool)
    width_px = np.zeros((height, width), np.float32)
    for _ in range(roads):
        side = rng.integers(0, 2)
        if side:
            r0, r1 = rng.integers(0, height, 2)
            c0, c1 = 0, width - 1
        else:
            r0, r1 = 0, height - 1
            c0, c1 = rng.integers(0, width, 2)
        rr, cc = line(int(r0), int(c0), int(r1), int(c1))
        axis[rr, cc] = True
        width_px[rr, cc] = np.maximum(width_px[rr, cc], rng.uniform(4.5, 10.5))
    dist, (ir, ic) = ndimage.distance_transform_edt(~axis, return_indices=True)
    half = width_px[ir, ic]
    surface = np.where(dist <= half, 230, 12).astype(np.uint8)
    specks = rng.random((height, width)) < 0.0008
    surface[specks] = 255 - surface[specks]  # specks off roads, pinholes on them
    centerline = np.clip(254 * (1 - dist / 3.0), 0, 254).astype(np.uint8)
    edge = np.where(np.abs(dist - half) <= 1.0, 200, 5).astype(np.uint8)
    return np.stack([surface, edge, centerline])


def write_result(
    path: Path,
    codes: np.ndarray,
    *,
    chunk: int,
    transform: Affine = TRANSFORM,
    crs: str | None = CRS,
    attrs: dict[str, Any] | None = None,
    finish: bool = True,
) -> Path:
    """Write ``(3, y, x)`` uint8 codes as a complete result store (or its staging store)."""
    _, height, width = codes.shape
    lazy = da.zeros((height, width), chunks=chunk, dtype=np.uint8)
    ys = transform.f + transform.e * (np.arange(height) + 0.5)
    xs = transform.c + transform.a * (np.arange(width) + 0.5)
    ds = xr.Dataset({t: (("y", "x"), lazy) for t in TASKS}, coords={"y": ys, "x": xs})
    for t in TASKS:
        ds[t].attrs["scale_factor"] = 1 / 254
    if crs is not None:
        ds = ds.rio.write_crs(crs)
    ds = ds.rio.write_transform(transform)
    grid = (-(-height // chunk), -(-width // chunk))
    staging = staging_path(path)
    job = "synthetic"
    create_store(
        staging,
        ds,
        chunk=chunk,
        grid=grid,
        attrs={"model_sha256": "f" * 64, **(attrs or {}), JOB_ATTR: job},
    )
    for row in range(grid[0]):
        for col in range(grid[1]):
            block = codes[:, row * chunk : (row + 1) * chunk, col * chunk : (col + 1) * chunk]
            write_chunk(block, path=str(staging), row=row, col=col, chunk=chunk, job=job)
    if finish:
        finish_store(staging, path, attrs={})
        return path
    return staging
