"""The Zarr result store: created up front, filled by chunk-aligned writes, completed once.

Layout (zarr format 3): ``surface``, ``edge``, ``centerline`` over ``(y, x)``, uint8 codes with
``scale_factor`` 1/254 and ``_FillValue`` 255 (decoded by xarray to float probabilities with
NaN on nodata), chunks equal to the inference cores, zstd-compressed; ``x``/``y``
coordinates and ``spatial_ref`` (CRS and transform). A ``progress/done`` array holds one
flag per chunk, set after the chunk's data is written. A run with ``adapt`` also keeps its
adapted model and card at the root (``roadnet-adapted-HASH.keras``, ``roadnet-adapted.json``).
The metadata follows CF-1.8: the group says ``Conventions: CF-1.8``, ``x``/``y`` carry
``axis``, ``standard_name`` and ``units`` (see :func:`cf_coordinate_attrs`) and every task
names ``spatial_ref`` as its ``grid_mapping``, so CF-aware readers (cf_xarray, xarray's
``decode_coords="all"``) find the axes and the CRS.

A run writes into ``OUT.partial-run``; a rerun with the same job resumes there and computes
only the chunks whose flag is unset. When every flag is set the store's metadata is
consolidated, the store marked ``roadnet:complete``, and it is renamed to ``OUT``. So ``OUT``
only ever holds a complete result, and :func:`open_result` refuses anything else.

On an object store (``OUT`` an fsspec URL such as ``s3://bucket/r.zarr``) there is no
rename: the store is written in place, and the ``roadnet:complete`` attribute in the group's
``zarr.json``, written in one PUT after every chunk and the consolidated metadata, is the
completion marker. A store without it is refused by :func:`open_result`, resumed by a rerun
of the same job, and replaced (marker removed first) only with ``overwrite``.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor open_result's callers use)
import xarray as xr
import zarr
from zarr.codecs import ZstdCodec

from roadnet.errors import OutputExistsError
from roadnet.outputs import output_exists, remove_output, replace_with
from roadnet.paths import Location, StorageOptions, is_url
from roadnet.pipeline.inference.blend import FILL_VALUE
from roadnet.pipeline.preflight import (
    COMPLETE_ATTR,
    ZARR_FORMAT,
    check_result,
    check_run_output,
    staging_path,
)
from roadnet.pipeline.preflight import group_attrs as _group_attrs
from roadnet.pipeline.preflight import zarr_store as _store
from roadnet.tasks import TASKS

__all__ = [
    "COMPLETE_ATTR",
    "CONVENTIONS",
    "JOB_ATTR",
    "cf_coordinate_attrs",
    "create_store",
    "done_chunks",
    "finish_store",
    "open_result",
    "prepare_store",
    "road_chunks",
    "staging_path",
    "write_chunk",
]

JOB_ATTR = "roadnet:job"
PROGRESS = "progress/done"
#: Values of a chunk's :data:`PROGRESS` flag: written; written with some road in it (a
#: surface code above the run's cut-off, :func:`write_chunk`). 0 is not written yet.
DONE, DONE_WITH_ROAD = 1, 2
#: The group's ``Conventions`` attribute.
CONVENTIONS = "CF-1.8"


def _has_progress(path: Location, storage_options: StorageOptions | None) -> bool:
    try:
        done_chunks(path, storage_options=storage_options)
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.ArrayNotFoundError):
        return False
    return True


def prepare_store(
    out: Location,
    *,
    job: str,
    overwrite: bool,
    storage_options: StorageOptions | None = None,
) -> tuple[Location, bool]:
    """Decide where to write: a fresh staging store or the one a killed run left.

    Args:
        out: final store path or URL.
        job: fingerprint of scene, model and config; a leftover store resumes only if equal.
        overwrite: allow replacing a complete ``out`` and discarding another job's leftover.
        storage_options: fsspec options of a URL.

    Returns:
        ``(staging location, resume)``: ``resume`` is True when the leftover store is reused.
        On an object store the staging location is ``out``.

    Raises:
        OutputExistsError: ``out`` exists (or a leftover of another job does) without
            ``overwrite``.
    """
    if is_url(out):
        return _prepare_in_place(str(out), job=job, overwrite=overwrite, options=storage_options)
    out = Path(out)
    check_run_output(out, overwrite=overwrite)
    staging = Path(staging_path(out))
    if staging.exists():
        attrs = _group_attrs(staging)
        if attrs is not None and attrs.get(JOB_ATTR) == job:
            return staging, True
        if not overwrite:
            raise OutputExistsError(
                f"{staging} holds an unfinished run of another scene, model or config "
                "(use --overwrite to discard it)"
            )
        shutil.rmtree(staging)
    return staging, False


def _prepare_in_place(
    out: str, *, job: str, overwrite: bool, options: StorageOptions | None
) -> tuple[str, bool]:
    """:func:`prepare_store` on an object store: the store is ``out`` itself."""
    if not output_exists(out, storage_options=options):
        return out, False
    attrs = _group_attrs(out, options)
    if attrs is not None and attrs.get(COMPLETE_ATTR) is not True:
        if attrs.get(JOB_ATTR) == job and _has_progress(out, options):
            return out, True
        if not overwrite:
            raise OutputExistsError(
                f"{out} holds an unfinished run of another scene, model or config "
                "(use --overwrite to discard it)"
            )
    elif not overwrite:
        raise OutputExistsError(f"output {out} already exists (use --overwrite to replace it)")
    # The group's zarr.json goes first: it holds the completion marker.
    remove_output(out, first="zarr.json", storage_options=options)
    return out, False


def cf_coordinate_attrs(crs: Any) -> tuple[dict[str, str], dict[str, str]]:
    """CF attributes of the ``x`` and ``y`` coordinates for a CRS.

    Args:
        crs: the scene's CRS (anything :class:`pyproj.CRS` accepts, e.g. ``ds.rio.crs``),
            or None.

    Returns:
        ``(x attrs, y attrs)``: ``axis`` always; for a projected CRS also
        ``projection_x_coordinate`` / ``projection_y_coordinate`` with the CRS's linear unit
        in UDUNITS (``m``, or ``0.3048 m`` for feet); for a geographic one ``longitude`` /
        ``latitude`` in ``degrees_east`` / ``degrees_north``.
    """
    x: dict[str, str] = {"axis": "X"}
    y: dict[str, str] = {"axis": "Y"}
    if crs is None:
        return x, y
    from pyproj import CRS

    crs = CRS.from_user_input(crs)
    if crs.is_projected:
        factor = next(
            (a.unit_conversion_factor for a in crs.axis_info if a.unit_conversion_factor), 1.0
        )
        units = "m" if factor == 1.0 else f"{factor} m"
        x.update(
            standard_name="projection_x_coordinate",
            long_name="x coordinate of projection",
            units=units,
        )
        y.update(
            standard_name="projection_y_coordinate",
            long_name="y coordinate of projection",
            units=units,
        )
    elif crs.is_geographic:
        x.update(standard_name="longitude", long_name="longitude", units="degrees_east")
        y.update(standard_name="latitude", long_name="latitude", units="degrees_north")
    return x, y


def create_store(
    path: Location,
    template: xr.Dataset,
    *,
    chunk: int,
    grid: tuple[int, int],
    attrs: dict[str, Any],
    storage_options: StorageOptions | None = None,
) -> None:
    """Write the store's metadata and coordinates; no chunk data yet.

    Args:
        path: store directory or URL (must not exist).
        template: Dataset of lazy uint8 ``(y, x)`` code arrays with coordinates and
            ``spatial_ref``; only its metadata is written (``compute=False``), with the CF
            attributes added (``Conventions``, the ``x``/``y`` axes).
        chunk: core chunk size.
        grid: ``(rows, cols)`` of chunks.
        attrs: dataset attributes (provenance); must include :data:`JOB_ATTR`.
        storage_options: fsspec options of a URL.
    """
    ds = template.copy()
    ds.attrs = {"Conventions": CONVENTIONS, **attrs, COMPLETE_ATTR: False}
    x_attrs, y_attrs = cf_coordinate_attrs(ds.rio.crs)
    ds["x"].attrs = {**ds["x"].attrs, **x_attrs}
    ds["y"].attrs = {**ds["y"].attrs, **y_attrs}
    # zstd level 1: much cheaper than level 3 on noisy code planes and as small on road-like
    # ones; a chunk write's CPU is taken from the model on a small machine (BENCHMARKS.md,
    # "Figures behind design choices in the code").
    encoding = {
        name: {
            "_FillValue": FILL_VALUE,
            "grid_mapping": "spatial_ref",
            "chunks": (chunk, chunk),
            "compressors": (ZstdCodec(level=1),),
        }
        for name in TASKS
    }
    store = _store(path, storage_options)
    ds.to_zarr(
        store,
        mode="w-",
        compute=False,
        zarr_format=ZARR_FORMAT,
        consolidated=False,
        encoding=encoding,
    )
    group = zarr.open_group(store, mode="r+", zarr_format=ZARR_FORMAT)
    group.create_array(
        PROGRESS, shape=grid, chunks=(1, 1), dtype="uint8", fill_value=0, compressors=None
    )


@functools.lru_cache(maxsize=8)
def _open_arrays(path: str, job: str, options: str = "{}") -> tuple[zarr.Array, ...]:
    """The task arrays and the progress array of a store, opened once per process and job.

    Opening reads every array's metadata, a large part of a chunk write's cost. A store is
    only ever recreated with the same metadata for the same ``job``, so the handles stay valid.
    ``options`` are the storage options as JSON (hashable).
    """
    group = zarr.open_group(_store(path, json.loads(options)), mode="r+", zarr_format=ZARR_FORMAT)
    arrays = [group[name] for name in (*TASKS, PROGRESS)]
    return tuple(a for a in arrays if isinstance(a, zarr.Array))


def write_chunk(
    codes: np.ndarray,
    *,
    path: str,
    row: int,
    col: int,
    chunk: int,
    job: str = "",
    storage_options: StorageOptions | None = None,
    road_code: int | None = None,
) -> None:
    """Write whole output chunks, then flag them done.

    Args:
        codes: ``(task, y, x)`` uint8 codes of the chunks from ``(row, col)`` on: one chunk,
            or (at a ragged scene edge) a few whole chunks.
        path: store directory or URL.
        row: chunk row.
        col: chunk column.
        chunk: core chunk size.
        job: the store's job fingerprint (:data:`JOB_ATTR`); with it the opened arrays are
            reused by later writes in this process.
        storage_options: fsspec options of a URL.
        road_code: flag the chunks :data:`DONE_WITH_ROAD` when a surface code (the first
            plane) lies above this one and is not nodata (255), so a finished run can tell
            how many chunks hold road without reading them back (:func:`road_chunks`).
    """
    options = json.dumps(dict(storage_options or {}), sort_keys=True)
    opener = _open_arrays if job else _open_arrays.__wrapped__
    arrays = opener(path, job, options)
    *planes, progress = arrays
    y0, x0 = row * chunk, col * chunk
    region = (slice(y0, y0 + codes.shape[1]), slice(x0, x0 + codes.shape[2]))
    for array, plane in zip(planes, codes, strict=True):
        array[region] = plane
    rows, cols = -(-codes.shape[1] // chunk), -(-codes.shape[2] // chunk)
    flags = np.full((rows, cols), DONE, dtype="uint8")
    if road_code is not None:
        road = (codes[0] > road_code) & (codes[0] != FILL_VALUE)
        for r in range(rows):  # a ragged edge writes a few chunks at once
            for c in range(cols):
                if road[r * chunk : (r + 1) * chunk, c * chunk : (c + 1) * chunk].any():
                    flags[r, c] = DONE_WITH_ROAD
    progress[row : row + rows, col : col + cols] = flags


def _progress_flags(path: Location, storage_options: StorageOptions | None) -> np.ndarray:
    """The store's ``(rows, cols)`` :data:`PROGRESS` flags."""
    done = zarr.open_array(
        _store(path, storage_options), path=PROGRESS, mode="r", zarr_format=ZARR_FORMAT
    )
    return np.asarray(done[...])


def done_chunks(path: Location, *, storage_options: StorageOptions | None = None) -> np.ndarray:
    """``(rows, cols)`` bool: which chunks a store already holds."""
    return _progress_flags(path, storage_options).astype(bool)


def road_chunks(path: Location, *, storage_options: StorageOptions | None = None) -> int:
    """How many of a store's written chunks hold road (flagged :data:`DONE_WITH_ROAD`)."""
    return int((_progress_flags(path, storage_options) == DONE_WITH_ROAD).sum())


def finish_store(
    staging: Location,
    out: Location,
    *,
    attrs: dict[str, Any],
    storage_options: StorageOptions | None = None,
) -> None:
    """Consolidate a fully written store, mark it complete, and move it to ``out``.

    The marker is written last, after the consolidated metadata; on an object store
    (``staging`` is ``out``) it is the completion, locally the rename follows.

    Raises:
        RuntimeError: some chunk is not flagged done (a bug: callers check first).
    """
    if not done_chunks(staging, storage_options=storage_options).all():
        raise RuntimeError(f"{staging}: not every chunk is written")
    store = _store(staging, storage_options)
    with warnings.catch_warnings():
        # Consolidated metadata is a zarr-python extension for format 3; xarray reads it and
        # it saves readers one request per array, so the warning is expected here.
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        # an adapted run keeps its model beside the arrays (roadnet run --adapt)
        warnings.filterwarnings("ignore", message="Object at roadnet-adapted", category=UserWarning)
        zarr.consolidate_metadata(store, zarr_format=ZARR_FORMAT)
    # The root's attributes are not part of the consolidated metadata: updating them keeps it.
    group = zarr.open_group(store, mode="r+", zarr_format=ZARR_FORMAT)
    group.attrs.update(
        {**attrs, COMPLETE_ATTR: True, "roadnet:completed": dt.datetime.now(dt.UTC).isoformat()}
    )
    if not is_url(out):
        replace_with(Path(staging), Path(out))


def open_result(
    path: Location, *, storage_options: StorageOptions | None = None, **kwargs: Any
) -> xr.Dataset:
    """Open a complete ``roadnet run`` result lazily, with its CRS and transform.

    Args:
        path: the store written by ``roadnet run``: a directory or a URL (``s3://…``).
        storage_options: fsspec options of a URL (default: from the environment).
        **kwargs: passed to :func:`xarray.open_zarr`.

    Returns:
        Dataset with ``surface``, ``edge``, ``centerline`` ``(y, x)`` float probabilities
        (NaN on nodata) and ``spatial_ref``; ``.rio.crs`` / ``.rio.transform()`` work.

    Raises:
        InputError: no store there, or the run that writes it has not finished.
    """
    path = check_result(path, storage_options=storage_options)
    kwargs.setdefault("decode_coords", "all")
    kwargs.setdefault("consolidated", True)
    ds: xr.Dataset = xr.open_zarr(_store(path, storage_options), **kwargs)
    return ds
