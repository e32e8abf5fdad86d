"""The error map: true positives, false positives and misses over a faded scene, as a PNG.

Every class is a ``(y, x)`` mask of the scene grid, shrunk by a whole factor with a maximum
(as ``roadnet preview`` shrinks labels, so one-pixel errors stay visible at any scale). The
pixel-score tasks shrink each chunk's share (:func:`shrink_block`) and the client ORs them
into the small image, so a city-size result costs the small image plus a few chunks. The scene
is read shrunk with preview's averaging reader (strips of rows, overviews when the file has
them) and faded towards white; the classes are drawn on it in the order true positive
(green), false positive (red), miss (blue), so an error is never hidden under a hit.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from roadnet.errors import InputError

__all__ = [
    "CLASSES",
    "ERROR_COLORS",
    "error_classes",
    "error_image",
    "fade",
    "scene_background",
    "shrink_block",
    "shrink_factor",
    "shrink_max",
    "write_error_map",
]

log = logging.getLogger(__name__)

#: RGB colour of each class, drawn in this order: hits, false alarms, misses.
ERROR_COLORS: dict[str, tuple[int, int, int]] = {
    "tp": (0, 170, 60),
    "fp": (230, 30, 30),
    "fn": (30, 90, 255),
}
#: The classes, in drawing order.
CLASSES = tuple(ERROR_COLORS)
#: Share of white mixed into the scene under the classes.
FADE = 0.6
#: Grey of the background when no scene is at hand.
BLANK = 235


def error_classes(pred: Any, truth: Any) -> dict[str, Any]:
    """Hits, false alarms and misses of a predicted mask.

    Args:
        pred: ``(y, x)`` bool mask, numpy or dask.
        truth: ``(y, x)`` bool truth mask of the same grid, same kind.

    Returns:
        ``{"tp": pred & truth, "fp": pred & ~truth, "fn": ~pred & truth}``, same kind.
    """
    return {"tp": pred & truth, "fp": pred & ~truth, "fn": ~pred & truth}


def shrink_factor(width: int, height: int, *, max_size: int) -> int:
    """The smallest whole factor that brings the longest side to at most ``max_size`` px."""
    if max_size < 1:
        raise InputError(f"max size must be a positive number of pixels, got {max_size}")
    return max(1, math.ceil(max(width, height) / max_size))


def shrink_max(mask: Any, factor: int) -> Any:
    """Shrink a ``(y, x)`` mask ``factor`` times with a maximum (edges padded), lazily.

    Args:
        mask: ``(y, x)`` bool, numpy or dask.
        factor: whole shrink factor >= 1.

    Returns:
        ``(ceil(y / factor), ceil(x / factor))`` bool array of the same kind (a pixel is set
        when any pixel of its ``factor`` x ``factor`` block is).
    """
    import xarray as xr

    if factor == 1:
        return mask
    array = xr.DataArray(mask, dims=("y", "x")).astype(np.uint8)
    small = array.coarsen(y=factor, x=factor, boundary="pad").max()
    return small.data > 0


def shrink_block(
    mask: np.ndarray, *, origin: tuple[int, int], factor: int
) -> tuple[int, int, np.ndarray]:
    """A chunk's share of :func:`shrink_max` of the whole grid.

    Args:
        mask: ``(y, x)`` bool chunk.
        origin: global ``(row, col)`` of the chunk's first pixel.
        factor: whole shrink factor >= 1.

    Returns:
        ``(row0, col0, small)``: ``small`` ``(h, w)`` bool covers the shrunk pixels
        ``row0 : row0 + h``, ``col0 : col0 + w`` the chunk reaches into; OR-ing every chunk's
        share into a blank image gives :func:`shrink_max` of the whole grid exactly (a shrunk
        pixel cut by a chunk border gets its part from each side).
    """
    row, col = origin
    row0, col0 = row // factor, col // factor
    h = -(-(row + mask.shape[0]) // factor) - row0
    w = -(-(col + mask.shape[1]) // factor) - col0
    padded = np.zeros((h * factor, w * factor), dtype=bool)
    dy, dx = row - row0 * factor, col - col0 * factor
    padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]] = mask
    small = np.asarray(padded.reshape(h, factor, w, factor).any(axis=(1, 3)))
    return row0, col0, small


def fade(rgb: np.ndarray, *, amount: float = FADE) -> np.ndarray:
    """Mix ``(y, x, 3)`` uint8 ``rgb`` with white: ``(1 - amount) * rgb + amount * 255``."""
    out = (1.0 - amount) * rgb.astype(np.float32) + amount * 255.0
    return np.round(out).astype(np.uint8)


def error_image(background: np.ndarray | None, classes: dict[str, np.ndarray]) -> np.ndarray:
    """Draw the classes over the faded background.

    Args:
        background: ``(y, x, 3)`` uint8 scene at the classes' size, or None for plain grey.
        classes: ``{"tp", "fp", "fn"}`` -> ``(y, x)`` bool masks (shrunk).

    Returns:
        ``(y, x, 3)`` uint8 image.
    """
    shape = next(iter(classes.values())).shape
    if background is None:
        out = np.full((*shape, 3), BLANK, dtype=np.uint8)
    else:
        if background.shape[:2] != shape:
            raise ValueError(f"background {background.shape[:2]} differs from classes {shape}")
        out = fade(background)
    for name, color in ERROR_COLORS.items():
        out[np.asarray(classes[name], dtype=bool)] = color
    return out


def scene_background(scene: str | Path | None, *, factor: int, shape: tuple[int, int]) -> Any:
    """The scene shrunk ``factor`` times (preview's reader), or None if it cannot be used.

    Args:
        scene: the scene raster the result was predicted from (bands 1-3 as RGB), or None.
        factor: shrink factor.
        shape: ``(y, x)`` size of the full-resolution grid; a scene of another size is not
            used (logged).

    Returns:
        ``(ceil(y / factor), ceil(x / factor), 3)`` uint8, or None.
    """
    if scene is None:
        return None
    import rasterio

    from roadnet.pipeline.preview import _read_image  # the shrinking reader of the previews

    path = Path(str(scene))
    if not path.is_file():
        log.warning("error map: scene %s not found; drawing on grey", scene)
        return None
    try:
        with rasterio.Env(GDAL_CACHEMAX=64), rasterio.open(path) as src:
            if (src.height, src.width) != tuple(shape):
                log.warning("error map: scene %s is not on the result's grid; grey", scene)
                return None
            return _read_image(src, factor)
    except rasterio.errors.RasterioIOError:
        log.warning("error map: scene %s is not readable; drawing on grey", scene)
        return None


def write_error_map(image: np.ndarray, out: Path, *, overwrite: bool = False) -> Path:
    """Write a ``(y, x, 3)`` uint8 image as a PNG, under a temporary name then renamed.

    Raises:
        InputError: ``out`` does not end in ``.png``.
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
    """
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise InputError(f"--errors {out} must end in .png")
    from roadnet.pipeline.preview import write_image

    return write_image(image, out, overwrite=overwrite)
