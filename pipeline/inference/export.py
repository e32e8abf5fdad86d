"""Cloud-Optimized GeoTIFFs from a result store, for GDAL and QGIS.

The GDAL inside the rasterio wheel (and so QGIS on most installs) cannot open the Zarr
format 3 store that ``roadnet run`` writes, and reads no CRS from xarray's ``spatial_ref``
(DESIGN.md, "GDAL and Zarr v3"). :func:`export_result` writes one COG per task instead:
``(y, x)`` uint8 codes as stored (``p = code / 254``, 255 = nodata), the scene's CRS and
transform, 512 px tiles, DEFLATE or ZSTD, internal overviews averaged over valid pixels.

Memory stays bounded by the scene size: each task is copied from the lazy store window by
window (tile-aligned, a few chunks at a time) into a tiled GeoTIFF, which GDAL's COG driver
then rewrites with overviews through its block cache. Everything is written in a staging
directory renamed to ``OUT`` at the end (:func:`~roadnet.outputs.staged_output_dir`).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from roadnet import __version__
from roadnet.errors import InputError
from roadnet.outputs import staged_output_dir
from roadnet.pipeline.inference.blend import FILL_VALUE, SCALE_FACTOR
from roadnet.pipeline.inference.store import open_result
from roadnet.tasks import TASKS

__all__ = ["TILE", "ExportSummary", "export_result", "parse_tasks", "windows"]

#: COG tile size, px.
TILE = 512

#: A read window is at most this many tiles on a side (see :func:`windows`).
MAX_WINDOW_TILES = 8

Compress = Literal["deflate", "zstd"]


@dataclass(frozen=True)
class ExportSummary:
    """What an :func:`export_result` call wrote."""

    out: Path
    files: tuple[Path, ...]
    pixels: int
    seconds: float

    def line(self) -> str:
        """One line: the COGs, their size in Mpx, seconds."""
        names = ", ".join(f.name for f in self.files)
        return (
            f"{self.out}: {len(self.files)} COG(s) ({names}), {self.pixels / 1e6:.1f} Mpx each, "
            f"{self.seconds:.1f} s"
        )


def parse_tasks(text: str | None) -> tuple[str, ...]:
    """Tasks from a comma-separated list such as ``surface,centerline`` (None: all).

    Raises:
        InputError: an unknown task, or none.
    """
    if text is None:
        return TASKS
    tasks = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise InputError(f"--tasks {text!r}: choose from {', '.join(TASKS)} (comma-separated)")
    return tasks


def windows(
    height: int, width: int, *, chunk: int, tile: int = TILE
) -> Iterator[tuple[int, int, int, int]]:
    """Tile-aligned read windows ``(row0, row1, col0, col1)`` covering a ``(height, width)`` grid.

    A window's side is the least common multiple of ``tile`` and the store's ``chunk``, so
    that it covers whole tiles of the GeoTIFF and whole chunks of the store; where that
    exceeds :data:`MAX_WINDOW_TILES` tiles, one tile (a chunk is then read more than once).
    """
    side = math.lcm(tile, chunk)
    if side > MAX_WINDOW_TILES * tile:
        side = tile
    for r0 in range(0, height, side):
        for c0 in range(0, width, side):
            yield r0, min(r0 + side, height), c0, min(c0 + side, width)


def export_result(
    result: str | Path,
    out: str | Path,
    *,
    tasks: Sequence[str] = TASKS,
    compress: Compress = "deflate",
    overwrite: bool = False,
) -> ExportSummary:
    """Write one Cloud-Optimized GeoTIFF per task of a ``roadnet run`` result.

    Args:
        result: the complete result store.
        out: output directory; receives ``{task}.tif`` for each task.
        tasks: which of ``surface``, ``edge``, ``centerline``.
        compress: ``deflate`` (read by every GDAL) or ``zstd`` (faster, GDAL >= 2.3).
        overwrite: replace an existing ``out``.

    Returns:
        The files written (in ``out``) and the time taken.

    Raises:
        InputError: no complete result at ``result``, or an unknown task.
        OutputExistsError: ``out`` exists and is not empty, and ``overwrite`` is false.
    """
    start = time.perf_counter()
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise InputError(f"tasks {list(tasks)!r}: choose from {', '.join(TASKS)}")
    # Raw codes, lazily indexed without dask: each window reads only the chunks it covers.
    ds = open_result(result, mask_and_scale=False, chunks=None)
    out = Path(out)
    height, width = ds.sizes["y"], ds.sizes["x"]
    chunk = int(ds[tasks[0]].encoding.get("chunks", (TILE, TILE))[0])
    with staged_output_dir(out, overwrite=overwrite) as staging:
        work = staging / ".work"
        work.mkdir()
        for task in tasks:
            tiled = work / f"{task}.tif"
            _write_tiled(ds, task, tiled, chunk=chunk, source=str(result))
            _to_cog(tiled, staging / f"{task}.tif", compress=compress)
            tiled.unlink()
        shutil.rmtree(work)
    files = tuple(out / f"{task}.tif" for task in tasks)
    return ExportSummary(
        out=out, files=files, pixels=height * width, seconds=time.perf_counter() - start
    )


def _profile(ds: xr.Dataset) -> dict[str, Any]:
    """The GeoTIFF profile shared by the intermediate and the final files."""
    return {
        "driver": "GTiff",
        "height": ds.sizes["y"],
        "width": ds.sizes["x"],
        "count": 1,
        "dtype": "uint8",
        "nodata": FILL_VALUE,
        "crs": ds.rio.crs,
        "transform": ds.rio.transform(),
        "tiled": True,
        "blockxsize": TILE,
        "blockysize": TILE,
        "interleave": "band",
        "BIGTIFF": "IF_SAFER",
    }


def _tags(ds: xr.Dataset, task: str, source: str) -> dict[str, str]:
    tags = {"roadnet_task": task, "roadnet_source": source, "roadnet_version": __version__}
    for key in ("model_sha256", "model_name"):
        if key in ds.attrs:
            tags[f"roadnet_{key}"] = str(ds.attrs[key])
    return tags


def _write_tiled(ds: xr.Dataset, task: str, path: Path, *, chunk: int, source: str) -> None:
    """Copy one task's codes window by window into a tiled, lightly compressed GeoTIFF."""
    import rasterio
    from rasterio.windows import Window

    var = ds[task].variable
    height, width = ds.sizes["y"], ds.sizes["x"]
    with rasterio.open(path, "w", **_profile(ds), compress="deflate", zlevel=1) as dst:
        for r0, r1, c0, c1 in windows(height, width, chunk=chunk):
            block = np.asarray(var[r0:r1, c0:c1].values, dtype=np.uint8)
            dst.write(block, 1, window=Window(c0, r0, c1 - c0, r1 - r0))
        dst.set_band_description(1, f"road {task} probability code: p = code / 254, 255 nodata")
        dst.scales = (SCALE_FACTOR,)
        dst.offsets = (0.0,)
        dst.update_tags(**_tags(ds, task, source))
        dst.update_tags(
            1,
            scale_factor=repr(SCALE_FACTOR),
            add_offset="0",
            units="1",
            long_name=f"road {task} probability",
        )


def _to_cog(src: Path, dst: Path, *, compress: Compress) -> None:
    """Rewrite a tiled GeoTIFF as a COG with internal overviews (GDAL's COG driver)."""
    import rasterio.shutil

    options: dict[str, Any] = {
        "BLOCKSIZE": TILE,
        "COMPRESS": compress.upper(),
        "PREDICTOR": "YES",
        # Mean probability over the valid pixels of each overview cell (nodata excluded).
        "RESAMPLING": "AVERAGE",
        "OVERVIEWS": "AUTO",
        "BIGTIFF": "IF_SAFER",
    }
    rasterio.shutil.copy(str(src), str(dst), driver="COG", **options)
