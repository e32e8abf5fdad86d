"""The checks a command can make before it imports dask, xarray, GDAL or TensorFlow.

A typo'd path or an existing output should be refused in a fraction of a second, not after
the ~5 s that dask, xarray and GDAL take to import on 2 cores (bench/bench_cli.py). These
functions use only the standard library, fsspec for URLs and — to read a store's group
attributes — zarr; the stages call the same functions again, so the Python API refuses the
same inputs with the same words.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from roadnet.errors import InputError, OutputExistsError
from roadnet.outputs import check_output_dir, check_output_file, output_exists
from roadnet.paths import Location, StorageOptions, is_url

if TYPE_CHECKING:
    from zarr.storage import StoreLike

__all__ = [
    "COMPLETE_ATTR",
    "ZARR_FORMAT",
    "check_evaluate_inputs",
    "check_export_inputs",
    "check_layer_outputs",
    "check_model_output",
    "check_preview_inputs",
    "check_result",
    "check_run_output",
    "check_scene",
    "group_attrs",
    "staging_path",
    "zarr_store",
]

#: The group attribute ``roadnet run`` sets last, when every chunk is written.
COMPLETE_ATTR = "roadnet:complete"
ZARR_FORMAT: Literal[3] = 3


def staging_path(out: Location) -> Location:
    """Where the store is built (and resumed) before it becomes ``out``.

    A sibling ``OUT.partial-run`` directory, or on an object store ``out`` itself.
    """
    if is_url(out):
        return str(out)
    out = Path(out)
    return out.with_name(f"{out.name}.partial-run")


def zarr_store(location: Location, storage_options: StorageOptions | None = None) -> StoreLike:
    """What zarr and xarray open: a local directory's path, or an fsspec store of a URL."""
    if not is_url(location):
        return str(location)
    from zarr.storage import FsspecStore

    # Listings are not cached: another process may have just written or removed the store.
    options = {"use_listings_cache": False, **(storage_options or {})}
    return FsspecStore.from_url(str(location), storage_options=options, read_only=False)


def group_attrs(
    path: Location, storage_options: StorageOptions | None = None
) -> dict[str, Any] | None:
    """The attributes of the Zarr v3 group at ``path``, or None when there is none."""
    import zarr

    try:
        group = zarr.open_group(
            zarr_store(path, storage_options), mode="r", zarr_format=ZARR_FORMAT
        )
        return dict(group.attrs)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError):
        return None


def check_result(path: Location, *, storage_options: StorageOptions | None = None) -> Location:
    """Refuse anything but a finished ``roadnet run`` store; its canonical location.

    Raises:
        InputError: no store there, an unfinished run's staging store only, not a Zarr
            group, or a store without the completion marker.
    """
    if is_url(path):
        path = str(path).rstrip("/")
        if not output_exists(path, storage_options=storage_options):
            raise InputError(f"no roadnet result at {path}")
    else:
        path = Path(path)
        if not path.exists():
            staging = Path(staging_path(path))
            if staging.exists():
                raise InputError(
                    f"{path} is not finished: a run is still writing or was interrupted "
                    f"({staging.name}); rerun roadnet run to resume it"
                )
            raise InputError(f"no roadnet result at {path}")
    attrs = group_attrs(path, storage_options)
    if attrs is None:
        raise InputError(f"{path} is not a Zarr store")
    if attrs.get(COMPLETE_ATTR) is not True:
        raise InputError(f"{path} is an incomplete roadnet result; rerun roadnet run to finish")
    return path


def check_scene(scene: str) -> None:
    """Refuse a local scene path that does not exist.

    URLs, GDAL virtual paths (``/vsizip/…``) and subdataset names (``GTIFF_DIR:1:a.tif``,
    ``NETCDF:a.nc:var``) pass: only GDAL can tell whether those open.

    Raises:
        InputError: ``scene`` is a local path and there is nothing there.
    """
    gdal_name = scene.startswith("/vsi") or re.match(r"[A-Za-z0-9_]{2,}:", scene) is not None
    if is_url(scene) or gdal_name or Path(scene).exists():
        return
    raise InputError(f"cannot open scene {scene}: no such file")


def check_run_output(out: Location, *, overwrite: bool) -> None:
    """Refuse a finished local result store at ``out`` without ``overwrite``.

    An unfinished run's store (``OUT.partial-run``, or an object store without the
    completion marker) is for :func:`roadnet.pipeline.inference.store.prepare_store` to
    resume or refuse: whether it resumes depends on the scene, model and config.

    Raises:
        OutputExistsError: ``out`` is a local path that exists.
    """
    if not is_url(out) and Path(out).exists() and not overwrite:
        raise OutputExistsError(f"output {out} already exists (use --overwrite to replace it)")


def check_model_output(out: Path, *, overwrite: bool) -> None:
    """Refuse a model output that is not a ``.keras`` name, or that exists with its card.

    Raises:
        InputError: ``out`` does not end in ``.keras``.
        OutputExistsError: ``out`` or its card ``out.json`` exists and ``overwrite`` is false.
    """
    if out.suffix != ".keras":
        raise InputError(f"--out {out} must end in .keras")
    for path in (out, out.with_suffix(".json")):
        check_output_file(path, overwrite=overwrite)


def check_layer_outputs(
    out: Location,
    *,
    fmt: Literal["gpkg", "parquet"],
    overwrite: bool,
    storage_options: StorageOptions | None = None,
) -> None:
    """Refuse to start when the road layers already exist and ``overwrite`` is false.

    Args:
        out: ``OUT.gpkg`` or a directory, local or a URL.
        fmt: ``gpkg`` or ``parquet``.
        overwrite: whether existing outputs may be replaced.
        storage_options: fsspec options of a URL.

    Raises:
        OutputExistsError: ``out`` exists.
        InputError: ``out`` does not suit the format (a ``.gpkg`` name for GeoPackage).
    """
    gpkg_name = str(out).rstrip("/").lower().endswith(".gpkg")
    if fmt == "gpkg" and not gpkg_name:
        raise InputError(f"--out {out} must end in .gpkg for --format gpkg")
    if fmt == "parquet" and gpkg_name:
        raise InputError(f"--out {out} is a GeoPackage name; give a directory for --format parquet")
    if output_exists(out, storage_options=storage_options) and not overwrite:
        raise OutputExistsError(f"output {out} already exists (use --overwrite to replace it)")


def check_evaluate_inputs(
    pred: Location,
    truth: Location,
    out: Location | None,
    *,
    errors: Location | None = None,
    errors_task: str = "surface",
    buffer_m: float = 2.0,
    sources: bool = False,
    by_class: str | None = None,
    overwrite: bool = False,
) -> tuple[bool, bool]:
    """Refuse the inputs ``roadnet evaluate`` cannot score; what kind each one is.

    Args:
        pred: a result store or a road layer (local).
        truth: a label directory or road vectors.
        out: the JSON report, or None.
        errors: the error map PNG, or None.
        errors_task: the task the error map shows.
        buffer_m: buffer of the centerline scores, m.
        sources: whether graph sources were asked for (they vectorize a result store).
        by_class: the truth column to split completeness by, or None (needs truth vectors).
        overwrite: whether ``out`` and ``errors`` may be replaced.

    Returns:
        ``(prediction is a result store, truth is a label directory)``.

    Raises:
        InputError: a missing, unfinished or remote prediction, a missing truth, a pair
            that cannot be scored, a bad option.
        OutputExistsError: ``out`` or ``errors`` exists and ``overwrite`` is false.
    """
    from roadnet.tasks import TASKS

    if is_url(pred):
        check_result(pred)  # an unfinished store is refused with its own line
        raise InputError(f"--pred {pred}: evaluate reads local results only; copy it first")
    if not buffer_m > 0:
        raise InputError(f"--buffer-m must be > 0, got {buffer_m}")
    if errors_task not in TASKS:
        raise InputError(f"error map task {errors_task!r}: use one of {', '.join(TASKS)}")
    pred, truth = Path(pred), Path(truth)
    if not pred.exists() and not Path(staging_path(pred)).exists():
        raise InputError(f"no prediction at {pred}")
    if not truth.exists():
        raise InputError(f"no truth at {truth}")
    raster = not pred.exists() or (
        pred.is_dir() and any((pred / n).exists() for n in ("zarr.json", ".zgroup"))
    )
    if raster:
        check_result(pred)
    labels = truth.is_dir()
    if not raster and sources:
        raise InputError(f"--graph-source needs a result store as the prediction, not {pred}")
    if not raster and labels:
        raise InputError(
            f"cannot score road layer {pred} against label rasters {truth}: give truth "
            "vectors, or the result store as the prediction"
        )
    if by_class is not None and (labels or not by_class.strip()):
        raise InputError(
            f"--by-class {by_class!r} needs road vectors as the truth (a column of theirs)"
            + (f", not label rasters {truth}" if labels else "")
        )
    if errors is not None and (not raster or Path(errors).suffix.lower() != ".png"):
        raise InputError(f"--errors {errors} must be a .png, for a result store prediction")
    for path in (out, errors):
        if path is not None:
            check_output_file(Path(path), overwrite=overwrite)
    return raster, labels


def check_preview_inputs(
    raster: Path,
    out: Path,
    *,
    labels_dir: Path | None,
    result: Path | None,
    roads: Path | None,
    overwrite: bool,
) -> None:
    """Refuse a preview whose raster or overlay is missing, or whose PNG exists.

    Raises:
        InputError: the raster, labels directory or road layer is not there, or the result
            is not a finished ``roadnet run`` store.
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
    """
    if not Path(raster).exists():
        raise InputError(f"raster not found: {raster}")
    if labels_dir is not None and not Path(labels_dir).is_dir():
        raise InputError(f"labels directory not found: {labels_dir}")
    if result is not None:
        check_result(result)
    if roads is not None and not Path(roads).exists():
        raise InputError(f"road layer not found: {roads}")
    check_output_file(Path(out), overwrite=overwrite)


def check_export_inputs(result: Location, out: Path, *, overwrite: bool) -> None:
    """Refuse an export of anything but a finished result, or into a non-empty directory.

    Raises:
        InputError: see :func:`check_result`.
        OutputExistsError: ``out`` holds something and ``overwrite`` is false.
    """
    check_result(result)
    check_output_dir(out, overwrite=overwrite)
