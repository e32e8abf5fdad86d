"""Quicklook PNGs: a downsampled RGB view of a scene, optionally with its labels overlaid.

The scene is shrunk by a whole factor, read in strips of rows with GDAL's averaging (which
uses overviews when the file has them), so a preview of a scene far larger than memory costs
the preview plus one strip. Label rasters are shrunk with a maximum, so one-pixel
centerlines stay visible at any scale.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.windows import Window

from roadnet.errors import InputError
from roadnet.outputs import check_output_file
from roadnet.pipeline.scenes.labels import LABEL_NAMES, open_raster

__all__ = [
    "OVERLAY_COLORS",
    "make_preview",
    "overlay_labels",
    "stretch_to_uint8",
    "write_image",
]

#: Probability at or above which a ``roadnet run`` result pixel is drawn as its task.
RESULT_THRESHOLD = 0.5

#: RGB colour and opacity of each label in the overlay, drawn in this order.
OVERLAY_COLORS: dict[str, tuple[tuple[int, int, int], float]] = {
    "surface": ((255, 210, 0), 0.35),
    "edge": ((255, 40, 40), 1.0),
    "centerline": ((0, 230, 255), 1.0),
}

#: Rows of the source are read in strips of about this many bytes.
STRIP_BYTES = 64 * 2**20
#: GDAL block cache while previewing, MiB (unless GDAL_CACHEMAX is set).
CACHE_MB = 64

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


def _strips(height: int, factor: int, row_bytes: int) -> Iterator[tuple[Window, slice]]:
    """Split a raster's rows into strips of whole preview rows, about STRIP_BYTES each.

    Yields:
        (source window, preview row slice); the window's width is left 0 for the caller.
    """
    out_height = math.ceil(height / factor)
    step = max(1, STRIP_BYTES // max(1, factor * row_bytes))
    for out0 in range(0, out_height, step):
        out1 = min(out0 + step, out_height)
        row0, row1 = out0 * factor, min(out1 * factor, height)
        yield Window(0, row0, 0, row1 - row0), slice(out0, out1)


def _read_image(src: DatasetReader, factor: int) -> np.ndarray:
    """Read bands 1-3 (or band 1 as grey) averaged ``factor`` times down: (y, x, 3) uint8."""
    bands = [1, 2, 3] if src.count >= 3 else [1]
    out_width = math.ceil(src.width / factor)
    out_height = math.ceil(src.height / factor)
    data = np.zeros((len(bands), out_height, out_width), dtype=src.dtypes[0])
    valid = np.zeros((out_height, out_width), dtype=bool)
    row_bytes = src.width * len(bands) * np.dtype(src.dtypes[0]).itemsize
    for strip, rows in _strips(src.height, factor, row_bytes):
        window = Window(0, strip.row_off, src.width, strip.height)  # all columns
        shape = (rows.stop - rows.start, out_width)
        data[:, rows] = src.read(
            bands, window=window, out_shape=(len(bands), *shape), resampling=Resampling.average
        )
        valid[rows] = src.dataset_mask(window=window, out_shape=shape) > 0
    rgb = stretch_to_uint8(data, valid=valid)
    rgb[:, ~valid] = 0
    if len(bands) == 1:
        rgb = np.repeat(rgb, 3, axis=0)
    return np.moveaxis(rgb, 0, -1)


def _read_label(path: Path, src: DatasetReader, factor: int) -> np.ndarray:
    """Read a label raster ``factor`` times down with a maximum: (y, x) uint8."""
    with open_raster(path) as lab:
        if (lab.width, lab.height) != (src.width, src.height):
            raise InputError(
                f"{path}: label grid {lab.width}x{lab.height} differs from the scene's "
                f"{src.width}x{src.height}"
            )
        out_width = math.ceil(lab.width / factor)
        out = np.zeros((math.ceil(lab.height / factor), out_width), dtype=np.uint8)
        for strip, rows in _strips(lab.height, factor, lab.width):
            block = lab.read(1, window=Window(0, strip.row_off, lab.width, strip.height))
            n = rows.stop - rows.start
            padded = np.zeros((n * factor, out_width * factor), dtype=np.uint8)
            padded[: block.shape[0], : block.shape[1]] = block
            out[rows] = padded.reshape(n, factor, out_width, factor).max(axis=(1, 3))
    return out


def _read_result(path: Path, src: DatasetReader, factor: int) -> dict[str, np.ndarray]:
    """Threshold a ``roadnet run`` result and shrink it with a maximum: name -> (y, x) uint8.

    The result is read chunk by chunk through dask, so memory stays at a few chunks plus the
    preview whatever the scene size.
    """
    from roadnet.pipeline.inference.store import open_result

    ds = open_result(path)
    if (ds.sizes["x"], ds.sizes["y"]) != (src.width, src.height):
        raise InputError(
            f"{path}: result grid {ds.sizes['x']}x{ds.sizes['y']} differs from the scene's "
            f"{src.width}x{src.height}"
        )
    out = {}
    for name in LABEL_NAMES:
        mask = (ds[name] >= RESULT_THRESHOLD).astype(np.uint8)
        small = mask.coarsen(y=factor, x=factor, boundary="pad").max()
        out[name] = small.values.astype(np.uint8)
    return out


def _read_roads(path: Path, src: DatasetReader, factor: int) -> dict[str, np.ndarray]:
    """Rasterize a vectorize run's layers onto the preview grid: name -> (y, x) uint8.

    ``road_surface`` polygons are filled as the surface, ``road_centerline`` lines and
    ``road_node`` points (3 x 3 px) drawn as centerlines, each reprojected to the scene's CRS.
    """
    import geopandas as gpd
    import pyogrio
    from rasterio.features import rasterize

    if not path.is_file():
        raise InputError(f"road layer not found: {path}")
    try:
        names = {row[0] for row in pyogrio.list_layers(path)}
    except Exception as exc:  # pyogrio raises DataSourceError and others
        raise InputError(f"{path}: not a readable vector file ({exc})") from exc
    if "road_surface" not in names:
        raise InputError(f"{path}: has no road_surface layer (write it with roadnet vectorize)")
    transform = src.transform * src.transform.scale(factor, factor)
    shape = (math.ceil(src.height / factor), math.ceil(src.width / factor))
    out: dict[str, np.ndarray] = {}
    for layer, name, touched in (
        ("road_surface", "surface", False),
        ("road_centerline", "centerline", True),
    ):
        if layer not in names:
            continue
        frame = gpd.read_file(path, layer=layer, engine="pyogrio")
        if src.crs is not None and frame.crs is not None:
            frame = frame.to_crs(src.crs)
        geoms = [g for g in frame.geometry if g is not None and not g.is_empty]
        out[name] = (
            rasterize(geoms, out_shape=shape, transform=transform, all_touched=touched)
            if geoms
            else np.zeros(shape, np.uint8)
        )
    return out


def make_preview(
    raster: Path,
    out: Path,
    *,
    labels_dir: Path | None = None,
    result: Path | None = None,
    roads: Path | None = None,
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
        result: a ``roadnet run`` Zarr store on the raster's grid; its probabilities at or
            above :data:`RESULT_THRESHOLD` are overlaid in the label colours.
        roads: a ``roadnet vectorize`` GeoPackage; its road surface and centerline layers
            are drawn in the label colours.
        max_size: the preview's longest side is at most this many pixels; the scene is
            shrunk by the smallest whole factor that fits (never enlarged).
        overwrite: replace an existing ``out``.

    Returns:
        The path of the written image.

    Raises:
        InputError: missing or unreadable raster, labels, result or road layer, a result
            on another grid, or more than one overlay given.
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
    """
    out = Path(out)
    if max_size < 1:
        raise InputError(f"max size must be a positive number of pixels, got {max_size}")
    if sum(x is not None for x in (labels_dir, result, roads)) > 1:
        raise InputError("overlay one of --labels, --result or --roads, not several")
    if not out.name.lower().endswith(IMAGE_SUFFIXES):
        raise InputError(f"{out}: preview must end in one of {', '.join(IMAGE_SUFFIXES)}")
    check_output_file(out, overwrite=overwrite)  # before the scene is read, and again at the end
    # every block is read once: a large GDAL block cache (5 % of RAM by default) only costs
    # memory here, so cap it unless the user has set one
    cache = {} if "GDAL_CACHEMAX" in os.environ else {"GDAL_CACHEMAX": CACHE_MB}
    with rasterio.Env(**cache), open_raster(raster) as src:
        factor = max(1, math.ceil(max(src.width, src.height) / max_size))
        rgb = _read_image(src, factor)
        if labels_dir is not None:
            labels_dir = Path(labels_dir)
            if not labels_dir.is_dir():
                raise InputError(f"labels directory not found: {labels_dir}")
            paths = {n: labels_dir / f"{n}.tif" for n in LABEL_NAMES}
            present = {n: p for n, p in paths.items() if p.exists()}
            if not present:
                raise InputError(f"{labels_dir}: holds none of {', '.join(LABEL_NAMES)} (.tif)")
            rgb = overlay_labels(rgb, {n: _read_label(p, src, factor) for n, p in present.items()})
        elif result is not None:
            rgb = overlay_labels(rgb, _read_result(Path(result), src, factor))
        elif roads is not None:
            rgb = overlay_labels(rgb, _read_roads(Path(roads), src, factor))
    return write_image(rgb, out, overwrite=overwrite)


def write_image(image: np.ndarray, out: Path, *, overwrite: bool) -> Path:
    """Save a ``(y, x, 3)`` uint8 image under a temporary name, then rename it to ``out``.

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
    """
    check_output_file(out, overwrite=overwrite)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}{out.suffix}")
    try:
        Image.fromarray(image).save(partial)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return out
