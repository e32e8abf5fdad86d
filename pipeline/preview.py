"""Quicklook PNGs: a downsampled RGB view of a scene, optionally with its labels overlaid.

The scene is read decimated (GDAL uses overviews when the file has them), so a preview of a
scene far larger than memory costs memory in proportion to the preview only. Label rasters
are downsampled with a maximum, so one-pixel centerlines stay visible at any scale.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from affine import Affine
from PIL import Image
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT

from roadnet.errors import InputError
from roadnet.pipeline.labels import LABEL_NAMES, open_raster
from roadnet.pipeline.outputs import check_output_file

__all__ = ["OVERLAY_COLORS", "make_preview", "overlay_labels", "stretch_to_uint8"]

#: RGB colour and opacity of each label in the overlay, drawn in this order.
OVERLAY_COLORS: dict[str, tuple[tuple[int, int, int], float]] = {
    "surface": ((255, 210, 0), 0.35),
    "edge": ((255, 40, 40), 1.0),
    "centerline": ((0, 230, 255), 1.0),
}

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")


def stretch_to_uint8(
    data: np.ndarray, *, valid: np.ndarray | None = None, percentiles: tuple[float, float] = (2, 98)
) -> np.ndarray:
    """Scale every band to uint8: uint8 data as is, anything else by a percentile stretch.

    Args:
        data: ``(band, y, x)`` array of any numeric dtype.
        valid: ``(y, x)`` bool mask of pixels holding data (default: all finite pixels).
        percentiles: the low and high percentile mapped to 0 and 255, per band.

    Returns:
        ``(band, y, x)`` uint8.
    """
    if data.dtype == np.uint8:
        return data.copy()
    out = np.zeros(data.shape, dtype=np.uint8)
    for i, band in enumerate(data.astype(np.float64)):
        ok = np.isfinite(band) if valid is None else valid & np.isfinite(band)
        if not ok.any():
            continue
        low, high = np.percentile(band[ok], percentiles)
        scale = 255.0 / (high - low) if high > low else 0.0
        scaled = np.clip((np.nan_to_num(band, nan=low) - low) * scale, 0, 255)
        out[i] = np.where(ok, np.round(scaled), 0).astype(np.uint8)
    return out


def overlay_labels(rgb: np.ndarray, labels: dict[str, np.ndarray]) -> np.ndarray:
    """Blend label masks onto an image in the colours of :data:`OVERLAY_COLORS`.

    Args:
        rgb: ``(y, x, 3)`` uint8 image.
        labels: name -> ``(y, x)`` mask (non-zero = label), names from :data:`LABEL_NAMES`.

    Returns:
        ``(y, x, 3)`` uint8 image.
    """
    out = rgb.astype(np.float32)
    for name, (color, alpha) in OVERLAY_COLORS.items():
        if name not in labels:
            continue
        mask = labels[name] > 0
        out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, np.float32)
    return np.round(out).astype(np.uint8)


def _preview_shape(src: DatasetReader, max_size: int) -> tuple[int, int]:
    factor = max(1.0, max(src.width, src.height) / max_size)
    return max(1, math.ceil(src.height / factor)), max(1, math.ceil(src.width / factor))


def _read_image(src: DatasetReader, shape: tuple[int, int]) -> np.ndarray:
    """Read the first three bands (or the first, as grey) decimated to ``shape``: (y, x, 3)."""
    bands = [1, 2, 3] if src.count >= 3 else [1]
    data = src.read(bands, out_shape=(len(bands), *shape), resampling=Resampling.average)
    valid = src.dataset_mask(out_shape=shape, resampling=Resampling.nearest) > 0
    rgb = stretch_to_uint8(data, valid=valid)
    rgb[:, ~valid] = 0
    if len(bands) == 1:
        rgb = np.repeat(rgb, 3, axis=0)
    return np.moveaxis(rgb, 0, -1)


def _read_label(path: Path, src: DatasetReader, shape: tuple[int, int]) -> np.ndarray:
    """Read a label raster onto the preview grid with a max filter: (y, x) uint8."""
    with open_raster(path) as lab:
        if (lab.width, lab.height) != (src.width, src.height):
            raise InputError(
                f"{path}: label grid {lab.width}x{lab.height} differs from the scene's "
                f"{src.width}x{src.height}"
            )
        transform = lab.transform @ Affine.scale(lab.width / shape[1], lab.height / shape[0])
        crs = lab.crs or src.crs or "EPSG:3857"
        with WarpedVRT(
            lab,
            src_crs=crs,
            crs=crs,
            transform=transform,
            width=shape[1],
            height=shape[0],
            resampling=Resampling.max,
        ) as vrt:
            label: np.ndarray = vrt.read(1)
    return label


def make_preview(
    raster: Path,
    out: Path,
    *,
    labels_dir: Path | None = None,
    max_size: int = 1600,
    overwrite: bool = False,
) -> Path:
    """Write a downsampled RGB quicklook of a raster, optionally with labels overlaid.

    Args:
        raster: scene raster; bands 1–3 are shown as RGB (one band as grey); uint8 as is,
            other dtypes with a 2–98 % percentile stretch per band; nodata is black.
        out: output image (PNG; JPEG, TIFF and WebP by suffix too).
        labels_dir: directory with ``surface.tif`` / ``edge.tif`` / ``centerline.tif`` on the
            raster's grid (e.g. from ``roadnet labels``); those present are overlaid.
        max_size: longest side of the preview in pixels (never upsampled).
        overwrite: replace an existing ``out``.

    Returns:
        The path of the written image.

    Raises:
        InputError: missing or unreadable raster or labels, labels on another grid.
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
    """
    out = Path(out)
    if max_size < 1:
        raise InputError(f"max size must be a positive number of pixels, got {max_size}")
    if not out.name.lower().endswith(IMAGE_SUFFIXES):
        raise InputError(f"{out}: preview must end in one of {', '.join(IMAGE_SUFFIXES)}")
    with open_raster(raster) as src:
        shape = _preview_shape(src, max_size)
        rgb = _read_image(src, shape)
        if labels_dir is not None:
            labels_dir = Path(labels_dir)
            if not labels_dir.is_dir():
                raise InputError(f"labels directory not found: {labels_dir}")
            paths = {n: labels_dir / f"{n}.tif" for n in LABEL_NAMES}
            present = {n: p for n, p in paths.items() if p.exists()}
            if not present:
                raise InputError(f"{labels_dir}: holds none of {', '.join(LABEL_NAMES)} (.tif)")
            rgb = overlay_labels(rgb, {n: _read_label(p, src, shape) for n, p in present.items()})
    check_output_file(out, overwrite=overwrite)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}{out.suffix}")
    try:
        Image.fromarray(rgb).save(partial)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return out
