"""Open a scene lazily: rioxarray with chunks aligned to the inference cores, no read lock.

Accepts local paths, GDAL paths (``/vsi...``) and fsspec URLs (``file://``, ``s3://``,
``https://``, ...; read through rasterio's ``opener`` with the fsspec filesystem). The model
takes three bands R, G, B on a 0–255 scale:

- bands: ``bands`` picks and orders them (1-based, e.g. ``[3, 2, 1]`` for BGR files,
  ``[1, 1, 1]`` for a grey 1-band scene); by default a 3-band scene is used as is and a
  scene with more bands uses bands 1–3 (with an alpha band, it masks the pixels).
- values: divided by ``input_max`` and multiplied by 255, then clipped. ``input_max``
  defaults to the largest value of the bit depth the file declares (GDAL's ``NBITS``,
  e.g. 4095 for a 12-bit uint16 file), else to 255 for uint8, 65535 for uint16, the type's
  maximum for other integers and 1.0 for floats. :func:`dark_scene_warning` tells when a
  scene's values stay far below it (12-bit data in a uint16 file that does not say so).
- nodata: a pixel whose image bands all hold the nodata value (the file's, or ``nodata``),
  a NaN pixel of a float scene, or a pixel with alpha 0 is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
import rioxarray
import xarray as xr
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from roadnet.errors import InputError
from roadnet.paths import is_url

__all__ = [
    "MODEL_BANDS",
    "Scene",
    "dark_scene_warning",
    "default_input_max",
    "open_scene",
    "probe_scene",
    "read_failure",
]

MODEL_BANDS = 3


@dataclass(frozen=True)
class Scene:
    """A lazily opened scene and how to feed it to the model.

    Attributes:
        data: ``(band, y, x)`` dask-backed DataArray in the file's dtype, bands in model
            order (R, G, B), followed by the alpha band when ``alpha``; has ``x``/``y``
            coordinates and ``spatial_ref``.
        source: the path or URL it was opened from.
        scale: factor from file values to the model's 0–255 scale.
        nodata: the nodata value, or None.
        alpha: the last band of ``data`` is an alpha mask.
    """

    data: xr.DataArray
    source: str
    scale: float
    nodata: float | None
    alpha: bool

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` in px."""
        return int(self.data.sizes["y"]), int(self.data.sizes["x"])

    @property
    def gsd(self) -> float | None:
        """Pixel size on the ground in metres (:func:`~roadnet.model.gsd.ground_gsd`).

        The x resolution of a local projected CRS (UTM), the size measured on the ellipsoid
        for degrees and Web Mercator; None without a CRS.
        """
        from roadnet.model.gsd import ground_gsd

        return ground_gsd(self.data.rio.crs, self.data.rio.transform(), self.shape)


def default_input_max(dtype: np.dtype[Any], nbits: int | None = None) -> float:
    """The value that maps to 255 for a scene dtype and declared bit depth (module docs)."""
    if dtype.kind == "f":
        return 1.0
    if dtype.kind in "ui":
        top = int(np.iinfo(dtype).max)
        if nbits is not None and 0 < nbits < dtype.itemsize * 8:
            top = min(top, 2**nbits - 1)
        return float(top)
    raise InputError(f"unsupported scene data type {dtype}")


#: A scene whose sampled values stay below this fraction of ``input_max`` looks nearly black
#: to the model (16 of 255 at most).
DARK_FRACTION = 1 / 16

#: The side of the window :func:`dark_scene_warning` reads at the scene's centre, px.
DARK_SAMPLE_PX = 512


def dark_scene_warning(scene: Scene) -> str | None:
    """A warning when the scene's centre reads nearly black at its ``input_max``, else None.

    One window of at most :data:`DARK_SAMPLE_PX` px at the centre is read (one or a few
    blocks, also on an object store); when its 99.9th percentile scaled to the model's 0–255
    is below 255 × :data:`DARK_FRACTION`, the model would see a near-black image and find
    no road. The usual cause is 12- or 14-bit data in a uint16 file without ``NBITS``; the
    warning names the smallest common bit depth (8, 10, 11, 12, 14) holding the values, and
    is given only when that is below ``input_max``. A window that fails to read gives None:
    the run reports the damage itself.
    """
    height, width = scene.shape
    side = min(DARK_SAMPLE_PX, height, width)
    y0, x0 = (height - side) // 2, (width - side) // 2
    part = scene.data[:MODEL_BANDS, y0 : y0 + side, x0 : x0 + side]
    try:  # in this process, never on a cluster the caller may have made the default
        window = part.compute(scheduler="synchronous").values
    except Exception as exc:
        if _is_read_error(exc) or isinstance(exc, OSError):
            return None  # a damaged file: the run names the failing window (read_failure)
        raise
    values = window.astype(np.float64)
    if scene.nodata is not None:
        values = values[:, ~(values == scene.nodata).all(axis=0)]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    top = float(np.percentile(values, 99.9))
    input_max = 255.0 / scene.scale
    if top <= 0 or top * scene.scale >= 255.0 * DARK_FRACTION:
        return None  # bright enough, or a black centre that says nothing of the bit depth
    hint = next((2**b - 1 for b in (8, 10, 11, 12, 14) if top <= 2**b - 1), None)
    if hint is None or hint >= input_max:
        return None  # dark imagery at its own scale, not a bit-depth mistake
    return (
        f"{scene.source} looks nearly black to the model: its centre's values reach {top:g} "
        f"of input_max {input_max:g}; if it is {hint.bit_length()}-bit data, set "
        f"input_max={hint}"
    )


def _open_kwargs(source: str) -> tuple[str, dict[str, Any]]:
    """Path and rasterio open options for a local path, GDAL path or fsspec URL."""
    if not is_url(source):
        return source, {}
    import fsspec

    fs, path = fsspec.core.url_to_fs(source)
    return path, {"opener": fs}


def probe_scene(source: str) -> None:
    """Read one pixel of a scene, to show that this process can read it.

    Raises:
        InputError: the scene cannot be opened or read here.
    """
    path, kwargs = _open_kwargs(source)
    try:
        with rasterio.open(path, **kwargs) as src:
            src.read(1, window=Window(0, 0, 1, 1))
    except (rasterio.RasterioIOError, OSError) as exc:
        raise InputError(f"cannot read scene {source}: {exc}") from exc


def _choose_bands(src: Any, bands: list[int] | None) -> tuple[list[int], bool]:
    count = src.count
    interp = list(src.colorinterp)
    alpha_band = next((i + 1 for i, c in enumerate(interp) if c == ColorInterp.alpha), None)
    if bands is None:
        image = [b for b in range(1, count + 1) if b != alpha_band]
        if len(image) < MODEL_BANDS:
            raise InputError(
                f"{src.name}: has {len(image)} image band(s), the model needs {MODEL_BANDS} "
                "(R, G, B); choose them with bands, e.g. [1, 1, 1] for a grey scene"
            )
        bands = image[:MODEL_BANDS]
    elif len(bands) != MODEL_BANDS:
        raise InputError(f"bands must name {MODEL_BANDS} bands (R, G, B), got {bands}")
    bad = [b for b in bands if not 1 <= b <= count]
    if bad:
        raise InputError(f"{src.name}: has bands 1..{count}, cannot select {bad}")
    if alpha_band is not None and alpha_band not in bands:
        return [*bands, alpha_band], True
    return list(bands), False


def open_scene(
    source: str,
    *,
    chunk: int,
    bands: list[int] | None = None,
    input_max: float | None = None,
    nodata: float | None = None,
) -> Scene:
    """Open a georeferenced scene lazily for inference.

    Args:
        source: local path, GDAL path or fsspec URL of a raster (GeoTIFF, COG, VRT ...).
        chunk: core chunk size in px; the dask chunks are ``(all bands, chunk, chunk)``.
        bands: 1-based bands for R, G, B (default: see the module docs).
        input_max: file value that maps to 255 (default: by dtype, see the module docs).
        nodata: nodata value overriding the file's.

    Raises:
        InputError: the file is missing or unreadable, has no CRS or transform, too few
            bands, or an unsupported dtype.
    """
    path, kwargs = _open_kwargs(str(source))
    try:
        with rasterio.open(path, **kwargs) as src:
            picked, alpha = _choose_bands(src, bands)
            dtypes = {src.dtypes[b - 1] for b in picked}
            file_nodata = src.nodata
            crs = src.crs
            identity = src.transform.is_identity
            nbits = _declared_bits(src, picked)
    except (rasterio.RasterioIOError, OSError) as exc:
        raise InputError(f"cannot open scene {source}: {_gdal_message(exc)}") from exc
    if crs is None or identity:
        raise InputError(f"{source}: no CRS or geotransform; the scene must be georeferenced")
    if len(dtypes) != 1:
        raise InputError(f"{source}: selected bands have different data types {sorted(dtypes)}")
    dtype = np.dtype(dtypes.pop())
    top = default_input_max(dtype, nbits) if input_max is None else float(input_max)
    if top <= 0:
        raise InputError(f"input_max must be positive, got {input_max}")
    data = rioxarray.open_rasterio(
        path,
        chunks={"band": -1, "y": chunk, "x": chunk},
        lock=False,
        masked=False,
        cache=False,
        **kwargs,
    )
    if not isinstance(data, xr.DataArray):  # a file of subdatasets opens as a list
        raise InputError(f"{source}: not a single raster (it holds subdatasets)")
    data = data.isel(band=[b - 1 for b in picked])
    return Scene(
        data=data,
        source=str(source),
        scale=255.0 / top,
        nodata=nodata if nodata is not None else file_nodata,
        alpha=alpha,
    )


def _declared_bits(src: Any, bands: Sequence[int]) -> int | None:
    """The bit depth GDAL's ``NBITS`` declares for the picked bands, if they all agree."""
    found = {src.tags(ns="IMAGE_STRUCTURE", bidx=b).get("NBITS") for b in bands}
    if len(found) != 1:
        return None
    value = found.pop()
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _gdal_message(exc: BaseException) -> str:
    """GDAL's own words for a failed read: rasterio puts them in the cause."""
    cause = exc.__cause__ or exc.__context__
    text = str(exc)
    if cause is not None and "previous exception" in text:
        text = str(cause)
    return " ".join(text.split())


def _is_read_error(exc: BaseException) -> bool:
    """A rasterio read error, also as it comes back from a Dask worker (maybe re-wrapped)."""
    return isinstance(exc, rasterio.RasterioIOError) or "RasterioIOError" in repr(exc)


def read_failure(
    exc: BaseException, source: str, *, rows: Sequence[int], cols: Sequence[int]
) -> InputError | None:
    """The one-line error for a scene whose pixels fail to read, or None for other errors.

    A truncated or corrupt file opens (its header is intact) and fails only when a worker
    reads a damaged block; the worker's error says only "Read failed". This reads the
    scene's chunk windows here, in order, to name the first failing one and GDAL's reason.

    Args:
        exc: the error a run raised.
        source: the scene's path or URL.
        rows: chunk heights of the scene as read (``(y, x)`` chunking), px.
        cols: chunk widths, px.
    """
    if not _is_read_error(exc):
        return None
    path, kwargs = _open_kwargs(source)
    try:
        with rasterio.open(path, **kwargs) as src:
            y0 = 0
            for height in rows:
                x0 = 0
                for width in cols:
                    window = Window(x0, y0, width, height)
                    try:
                        src.read(window=window)
                    except rasterio.RasterioIOError as err:
                        return InputError(
                            f"cannot read scene {source}: window rows {y0}-{y0 + height - 1}, "
                            f"cols {x0}-{x0 + width - 1} (px): {_gdal_message(err)}"
                        )
                    x0 += width
                y0 += height
    except (rasterio.RasterioIOError, OSError) as err:
        return InputError(f"cannot read scene {source}: {_gdal_message(err)}")
    return InputError(f"cannot read scene {source} on a worker: {_gdal_message(exc)}")
