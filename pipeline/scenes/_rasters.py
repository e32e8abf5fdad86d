"""Raster helpers shared by the label and scene writers: burning shapes, GeoTIFF profiles."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from affine import Affine
from rasterio.features import rasterize

__all__ = ["TILE", "burn", "tiled_profile"]

#: GeoTIFF tile size of every raster roadnet writes (the inference chunk size).
TILE = 512


def burn(
    pairs: Iterable[tuple[Any, Any]],
    *,
    shape: tuple[int, int],
    transform: Affine,
    dtype: str = "uint8",
    all_touched: bool = False,
) -> np.ndarray:
    """Rasterize ``(geometry, value)`` pairs onto a grid; empty or missing shapes are skipped.

    Args:
        pairs: shapely geometries in the grid's CRS with the value to burn.
        shape: ``(height, width)`` of the grid.
        transform: the grid's affine transform.
        dtype: of the result.
        all_touched: burn every pixel a shape touches, not only those whose centre it covers.

    Returns:
        ``(y, x)`` array of ``dtype``: the value of the last shape covering each pixel, else 0.
    """
    items = [(g, v) for g, v in pairs if g is not None and not g.is_empty]
    if not items:
        return np.zeros(shape, dtype=dtype)
    out: np.ndarray = rasterize(
        items, out_shape=shape, transform=transform, fill=0, all_touched=all_touched, dtype=dtype
    )
    return out


def tiled_profile(
    *, crs: Any, transform: Affine, width: int, height: int, count: int, **options: Any
) -> dict[str, Any]:
    """A uint8 GeoTIFF profile tiled in :data:`TILE` px, BigTIFF when needed.

    Args:
        crs: the raster's CRS.
        transform: its affine transform.
        width: in px.
        height: in px.
        count: bands.
        **options: further creation options (compression, photometric, ...).
    """
    return {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": "uint8",
        "crs": crs,
        "transform": transform,
        "tiled": True,
        "blockxsize": TILE,
        "blockysize": TILE,
        "BIGTIFF": "IF_SAFER",
        **options,
    }
