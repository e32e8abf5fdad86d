"""What ``roadnet evaluate`` reads: the prediction, the truth, and one grid for both.

* the prediction: a result store's uint8 codes and grid (:func:`open_prediction`), or a
  road layer's centerlines and graph (:func:`read_layer`) and the extent of the result it
  came from (:func:`layer_extent`);
* truth rasters on the prediction's grid: a label directory, checked to be on that grid
  (:func:`truth_label_paths`, :func:`check_same_grid`), or truth vectors rasterized onto it
  with the labels stage (:func:`rasterize_truth`);
* truth vectors: read and normalized like ``roadnet labels`` reads them
  (:func:`read_truth_roads`), their lines clipped to the extent (:func:`truth_lines`; the class
  of each in a column, :func:`truth_line_classes`) and their road graph
  (:func:`truth_graph`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import shapely

from roadnet.errors import InputError
from roadnet.tasks import TASKS

__all__ = [
    "READ_MARGIN_M",
    "Grid",
    "check_same_grid",
    "describe_grid",
    "grid_bounds",
    "layer_extent",
    "open_prediction",
    "rasterize_truth",
    "read_layer",
    "read_truth_roads",
    "sha256_tree",
    "task_thresholds",
    "truth_graph",
    "truth_label_paths",
    "truth_line_classes",
    "truth_lines",
]

log = logging.getLogger(__name__)

Grid = dict[str, Any]
"""``{"crs": rasterio CRS or None, "transform": Affine, "width": int, "height": int}``."""

#: Truth vectors are read this far beyond the result's extent, metres.
READ_MARGIN_M = 50.0


def open_prediction(path: Path) -> tuple[Any, Grid]:
    """A result store's uint8 codes, lazily, and its grid.

    Returns:
        ``(dataset, grid)``: an xarray Dataset of ``surface``, ``edge``, ``centerline``
        ``(y, x)`` uint8 codes (dask-backed, 255 = nodata) and its :data:`Grid`.

    Raises:
        InputError: no finished result there, no projected CRS, or no uint8 task codes.
    """
    from roadnet.pipeline.inference.store import open_result

    ds = open_result(path, mask_and_scale=False)
    crs = ds.rio.crs
    if crs is None or not crs.is_projected:
        raise InputError(f"{path} has no projected CRS: scores in metres need one")
    for task in TASKS:
        if task not in ds or ds[task].dtype != np.uint8:
            raise InputError(f"{path} has no uint8 {task} codes: not a roadnet result")
    grid = {
        "crs": crs,
        "transform": ds.rio.transform(),
        "width": int(ds.sizes["x"]),
        "height": int(ds.sizes["y"]),
    }
    return ds, grid


def task_thresholds(
    threshold: float | Mapping[str, float] | None, attrs: Mapping[str, Any]
) -> dict[str, float]:
    """Per-task probability cuts: the given ones, else the model card's, else 0.5.

    Args:
        threshold: one cut for every task, ``{task: cut}`` (tasks not named: 0.5), or None.
        attrs: the result's attributes; ``roadnet:cutoffs`` holds the model card's cuts.
    """
    from roadnet.pipeline.inference.run import result_cutoffs

    if isinstance(threshold, Mapping):
        cuts = {t: float(threshold.get(t, 0.5)) for t in TASKS}
    elif threshold is not None:
        cuts = dict.fromkeys(TASKS, float(threshold))
    else:
        card = result_cutoffs(attrs)
        cuts = {t: card.get(t, 0.5) for t in TASKS}
    for task, cut in cuts.items():
        if not 0.0 < cut < 1.0:
            raise InputError(f"{task} threshold must be in (0, 1), got {cut}")
    return cuts


def _describe(grid: Grid) -> str:
    t = grid["transform"]
    crs = grid["crs"]
    name = "no CRS" if crs is None else (crs.to_string() if hasattr(crs, "to_string") else crs)
    return (
        f"{grid['width']}x{grid['height']} px of {abs(t.a):g} m at ({t.c:.2f}, {t.f:.2f}) in {name}"
    )


def check_same_grid(pred: Grid, truth: Grid, *, pred_name: str, truth_name: str) -> None:
    """Refuse truth on another grid than the prediction, naming both.

    Raises:
        InputError: the CRSs, transforms or sizes differ (or a CRS is missing).
    """
    if pred["crs"] is None or truth["crs"] is None:
        missing = pred_name if pred["crs"] is None else truth_name
        raise InputError(f"{missing} has no CRS: cannot check it is on the same grid")
    same_crs = pred["crs"] == truth["crs"]
    same_grid = (pred["width"], pred["height"]) == (truth["width"], truth["height"]) and all(
        math.isclose(a, b, rel_tol=0, abs_tol=1e-6)
        for a, b in zip(tuple(pred["transform"])[:6], tuple(truth["transform"])[:6], strict=True)
    )
    if not (same_crs and same_grid):
        what = "CRS" if not same_crs else "grid"
        raise InputError(
            f"truth {truth_name} ({_describe(truth)}) is not on the {what} of prediction "
            f"{pred_name} ({_describe(pred)}); rasterize the truth onto the prediction's grid "
            "(roadnet labels) or pass its vectors"
        )


def grid_bounds(grid: Grid) -> tuple[float, float, float, float]:
    """``(minx, miny, maxx, maxy)`` of a grid in its CRS."""
    t = grid["transform"]
    xs = sorted((t.c, t.c + t.a * grid["width"]))
    ys = sorted((t.f, t.f + t.e * grid["height"]))
    return (float(xs[0]), float(ys[0]), float(xs[1]), float(ys[1]))


def describe_grid(grid: Grid, chunks: tuple[tuple[int, ...], ...]) -> dict[str, Any]:
    """A grid as JSON: CRS, transform, size and chunk size."""
    return {
        "crs": grid["crs"].to_string(),
        "transform": list(grid["transform"])[:6],
        "width": grid["width"],
        "height": grid["height"],
        "chunk": [int(chunks[0][0]), int(chunks[1][0])],
    }


def rasterize_truth(
    roads: Any, *, grid: Grid, config: Any, out_dir: Path, names: tuple[str, str]
) -> Path:
    """Write truth roads' labels onto the prediction's grid with the labels stage.

    Args:
        roads: normalized roads in the grid's CRS
            (:func:`roadnet.pipeline.scenes.roads.read_roads`).
        grid: the prediction's grid.
        config: a :class:`~roadnet.pipeline.scenes.labels.LabelsConfig`.
        out_dir: existing directory for ``surface.tif``, ``edge.tif``, ``centerline.tif``.
        names: the truth's and the prediction's names for the error message.

    Raises:
        InputError: no road surface reaches into the grid.
    """
    import shapely

    from roadnet.pipeline.scenes.labels import write_labels
    from roadnet.pipeline.scenes.roads import road_surfaces

    surfaces = road_surfaces(roads, cap_style=config.cap_style)
    if not surfaces.intersects(shapely.box(*grid_bounds(grid))).any():
        raise InputError(f"no roads of {names[0]} lie in the extent of {names[1]}")
    write_labels(
        roads,
        crs=grid["crs"],
        transform=grid["transform"],
        width=grid["width"],
        height=grid["height"],
        out_dir=out_dir,
        config=config,
        block=config.block_px,
        surfaces=surfaces,
    )
    return out_dir


def truth_label_paths(labels_dir: Path, *, grid: Grid, name: str) -> dict[str, Path]:
    """The truth label rasters of a directory, checked to lie on the prediction's grid.

    Args:
        labels_dir: a directory with ``surface.tif``, ``edge.tif``, ``centerline.tif``
            (``roadnet labels`` output, 0 / 1 uint8).
        grid: the prediction's grid (see :data:`Grid`).
        name: the prediction's name for error messages.

    Returns:
        ``{task: path}`` for every task.

    Raises:
        InputError: a label file is missing or unreadable, or on another grid.
    """
    import rasterio

    out: dict[str, Path] = {}
    for task in TASKS:
        path = Path(labels_dir) / f"{task}.tif"
        if not path.is_file():
            raise InputError(f"{labels_dir}: no {task}.tif (write the truth with roadnet labels)")
        try:
            with rasterio.open(path) as src:
                truth_grid = {
                    "crs": src.crs,
                    "transform": src.transform,
                    "width": src.width,
                    "height": src.height,
                }
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"{path}: not a raster GDAL can read") from exc
        check_same_grid(grid, truth_grid, pred_name=name, truth_name=str(path))
        out[task] = path
    return out


def truth_graph(lines: Any) -> nx.MultiGraph:
    """The road graph of truth lines: nodes at line ends and crossings, one edge between.

    Args:
        lines: ``(n,)`` LineStrings / MultiLineStrings in a projected CRS in metres.

    Returns:
        A ``MultiGraph`` with node ``x``, ``y`` and edge ``length`` (metres) and ``geometry``
        (LineString), the form :func:`~roadnet.pipeline.evaluate.apls.apls_score` reads.
        Lines are noded where they cross or touch (``shapely.node``; overlaps count once) and
        merged through points where exactly two meet (``shapely.line_merge``).
    """
    graph = nx.MultiGraph()
    parts = shapely.get_parts(np.asarray(lines, dtype=object))
    parts = parts[~shapely.is_empty(parts) & (shapely.length(parts) > 0)]
    if parts.size == 0:
        return graph
    merged = shapely.get_parts(shapely.line_merge(shapely.node(shapely.multilinestrings(parts))))
    ids: dict[tuple[float, float], int] = {}
    for line in merged:
        coords = shapely.get_coordinates(line)
        ends = []
        for x, y in (coords[0].tolist(), coords[-1].tolist()):
            if (x, y) not in ids:
                ids[(x, y)] = len(ids)
                graph.add_node(ids[(x, y)], x=x, y=y)
            ends.append(ids[(x, y)])
        graph.add_edge(ends[0], ends[1], length=float(line.length), geometry=line)
    return graph


def sha256_tree(path: Path) -> str:
    """SHA-256 of a file, or of a directory's files (sorted relative names and contents)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_layer(pred: Path) -> tuple[Any, nx.MultiGraph]:
    """The ``road_centerline`` lines (GeoSeries) of a vectorize road layer and its graph."""
    import geopandas as gpd

    from roadnet.pipeline.vectorize.layers import read_graph

    try:
        if pred.is_dir():
            frame = gpd.read_parquet(pred / "road_centerline.parquet")
        else:
            frame = gpd.read_file(pred, layer="road_centerline", engine="pyogrio")
    except Exception as exc:  # pyogrio and pyarrow raise several kinds
        raise InputError(f"{pred}: no readable road_centerline layer ({exc})") from exc
    if frame.crs is None or not frame.crs.is_projected:
        raise InputError(f"{pred} has no projected CRS: scores in metres need one")
    return frame.geometry, read_graph(pred)


def layer_extent(pred: Path) -> tuple[float, float, float, float] | None:
    """The extent of the result a road layer was vectorized from, if its store is here.

    Truth beyond it is clipped off, as for a result prediction; without it the truth is
    scored as it is (logged).
    """
    import yaml

    from roadnet.pipeline.inference.store import open_result
    from roadnet.pipeline.vectorize.layers import layer_paths

    config = layer_paths(pred, fmt="parquet" if pred.is_dir() else "gpkg")["config"]
    with contextlib.suppress(OSError, yaml.YAMLError, InputError, AttributeError, TypeError):
        source = yaml.safe_load(config.read_text()).get("result")
        return tuple(float(b) for b in open_result(source).rio.bounds())  # type: ignore[return-value]
    log.warning("%s: its result store is not here; the truth is not clipped to its extent", pred)
    return None


def read_truth_roads(truth: Path, *, crs: Any, bounds: Any, layer: str | None) -> Any:
    """Normalized truth roads in ``crs``, near ``bounds`` when given (labels' reader)."""
    from roadnet.pipeline.scenes.roads import load_width_table, read_roads

    if layer is None and truth.suffix.lower() == ".gpkg":
        import pyogrio

        with contextlib.suppress(Exception):  # an unreadable file: read_roads says so
            if "road_centerline" in {row[0] for row in pyogrio.list_layers(truth)}:
                layer = "road_centerline"
    box = None
    if bounds is not None:
        m = READ_MARGIN_M
        box = (bounds[0] - m, bounds[1] - m, bounds[2] + m, bounds[3] + m)
    return read_roads(truth, crs=crs, widths=load_width_table(), bounds=box, layer=layer)


def _clipped_lines(roads: Any, bounds: Any) -> tuple[np.ndarray, np.ndarray]:
    """The line geometries of ``roads`` clipped to ``bounds``, and the row of each."""
    from roadnet.pipeline.scenes.roads import LINE_TYPES

    rows = np.flatnonzero(np.isin(roads.geom_type.to_numpy(), LINE_TYPES))
    lines = roads.geometry.to_numpy()[rows]
    if bounds is not None:
        lines = shapely.clip_by_rect(lines, *bounds)
    keep = ~shapely.is_empty(lines)
    return lines[keep], rows[keep]


def truth_lines(roads: Any, *, bounds: Any, name: str, extent: str) -> np.ndarray:
    """``(n,)`` truth line geometries, clipped to ``bounds`` when given.

    Raises:
        InputError: no truth line in the extent.
    """
    kept, _ = _clipped_lines(roads, bounds)
    if kept.size == 0:
        raise InputError(f"truth {name} has no road lines in the extent of {extent}")
    return kept


def truth_line_classes(roads: Any, column: str, *, bounds: Any, name: str) -> np.ndarray:
    """The class (value of ``column``, as text) of every line :func:`truth_lines` returns.

    A missing value is the class ``"(none)"``.

    Raises:
        InputError: the truth has no such column.
    """
    if column not in roads.columns or column == roads.geometry.name:
        have = ", ".join(str(c) for c in roads.columns if c != roads.geometry.name)
        raise InputError(f"truth {name} has no column {column!r} to split by (it has: {have})")
    _, rows = _clipped_lines(roads, bounds)
    values = roads[column].iloc[rows]
    classes: np.ndarray = np.where(
        values.isna().to_numpy(), "(none)", values.astype(str).to_numpy()
    )
    return classes
