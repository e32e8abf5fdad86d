"""``roadnet evaluate``: how good a road layer is — pixel, buffer and APLS scores against truth.

:func:`evaluate` scores what a pair of inputs allows:

* **prediction**: a ``roadnet run`` result store (a raster: pixel scores; vectorized on the
  cluster, once per graph source, for the vector scores) or a ``roadnet vectorize`` road
  layer (``roads.gpkg`` or a GeoParquet directory: vector scores of its ``road_centerline``
  lines and of the road graph beside it);
* **truth**: a label directory on the result's grid (``surface.tif``, ``edge.tif``,
  ``centerline.tif`` from ``roadnet labels``: pixel scores only) or road vectors (a
  GeoPackage such as ``roadnet synth``'s ``truth.gpkg``, any vector file, an ``.osm.pbf``
  extract). Vectors are rasterized with the labels stage onto the result's grid, into a
  temporary directory beside ``out``, for the pixel scores; their lines, clipped to the
  grid, are the truth of the buffer scores, and :func:`truth_graph` of them that of APLS.

Pixel counts (:mod:`~roadnet.pipeline.evaluate.pixels`) and the shrunk error classes
(:mod:`~roadnet.pipeline.evaluate.errors`) are computed in one pass over the store on the
Dask cluster, so memory does not grow with the scene.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np
import shapely

from roadnet import __version__
from roadnet.errors import InputError
from roadnet.outputs import check_output_file
from roadnet.pipeline.evaluate.apls import apls_score
from roadnet.pipeline.evaluate.buffer import buffer_scores
from roadnet.pipeline.evaluate.errors import (
    error_classes,
    error_image,
    scene_background,
    shrink_factor,
    shrink_max,
    write_error_map,
)
from roadnet.pipeline.evaluate.pixels import (
    Grid,
    halo_px,
    lazy_counts,
    open_prediction,
    open_truth_labels,
    predicted_mask,
    scores_from_pixel_counts,
    task_thresholds,
)
from roadnet.tasks import TASKS

if TYPE_CHECKING:
    from distributed import Client

    from roadnet.pipeline.scenes.labels import LabelsConfig
    from roadnet.pipeline.vectorize.centerlines import Source
    from roadnet.pipeline.vectorize.run import VectorizeConfig

__all__ = ["APLS_PARAMETERS", "evaluate", "format_report", "truth_graph"]

#: The APLS options every evaluation uses (the SpaceNet reference's defaults).
APLS_PARAMETERS: dict[str, Any] = {
    "node_spacing_m": 50.0,
    "snap_m": 4.0,
    "min_path_m": 10.0,
    "max_pairs": 10_000,
}
#: Truth vectors are read this far beyond the result's extent, metres.
READ_MARGIN_M = 50.0


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


def _sha256(path: Path) -> str:
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


def _read_layer(pred: Path) -> tuple[Any, nx.MultiGraph]:
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


def _truth_roads(truth: Path, *, crs: Any, bounds: Any, layer: str | None) -> Any:
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


def _truth_lines(roads: Any, *, bounds: Any, name: str, extent: str) -> np.ndarray:
    """``(n,)`` truth line geometries, clipped to ``bounds`` when given.

    Raises:
        InputError: no truth line in the extent.
    """
    from roadnet.pipeline.scenes.roads import LINE_TYPES

    lines = roads.geometry.to_numpy()[np.isin(roads.geom_type.to_numpy(), LINE_TYPES)]
    if bounds is not None:
        lines = shapely.clip_by_rect(lines, *bounds)
    kept: np.ndarray = lines[~shapely.is_empty(lines)]
    if kept.size == 0:
        raise InputError(f"truth {name} has no road lines in the extent of {extent}")
    return kept


def _rasterize_truth(
    roads: Any,
    *,
    grid: Grid,
    bounds: tuple[float, float, float, float],
    config: LabelsConfig,
    out_dir: Path,
    names: tuple[str, str],
) -> Path:
    """Write the truth's labels onto the result's grid with the labels stage."""
    from roadnet.pipeline.scenes.labels import write_labels
    from roadnet.pipeline.scenes.roads import road_surfaces

    surfaces = road_surfaces(roads, cap_style=config.cap_style)
    if not surfaces.intersects(shapely.box(*bounds)).any():
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


def _score_pixels(
    client: Client,
    ds: Any,
    truth: dict[str, Any],
    *,
    cuts: dict[str, float],
    rho: float,
    errors_task: str | None,
    factor: int,
) -> tuple[dict[str, dict[str, float]], int, dict[str, np.ndarray] | None]:
    """Scores of every task, nodata px and the shrunk error classes, in one pass."""
    lazy: list[Any] = []
    classes: dict[str, Any] = {}
    for task in TASKS:
        pred, valid = predicted_mask(ds[task].data, threshold=cuts[task])
        target = truth[task].rechunk(pred.chunks) & valid
        lazy.append(lazy_counts(pred, target, rho=rho))
        if task == errors_task:
            classes = {k: shrink_max(v, factor) for k, v in error_classes(pred, target).items()}
    lazy.append((ds["surface"].data == 255).sum())
    values = client.gather(client.compute([*lazy, *classes.values()]))
    scores = {
        t: scores_from_pixel_counts(np.asarray(v)) for t, v in zip(TASKS, values, strict=False)
    }
    n = len(TASKS) + 1
    shrunk = {k: np.asarray(v) for k, v in zip(classes, values[n:], strict=True)}
    return scores, int(values[n - 1]), shrunk or None


def _vector_scores(
    truth_lines: np.ndarray,
    lines: Any,
    graph: nx.MultiGraph,
    t_graph: nx.MultiGraph,
    *,
    buffer_m: float,
) -> dict[str, Any]:
    """Buffer scores of the lines and APLS of the graph, as plain dicts."""
    return {
        "buffer": dataclasses.asdict(buffer_scores(truth_lines, lines, buffer_m=buffer_m)),
        "apls": dataclasses.asdict(apls_score(t_graph, graph, **APLS_PARAMETERS)),
        "edges": graph.number_of_edges(),
        "km": float(shapely.length(np.asarray(lines, dtype=object)).sum()) / 1000.0,
    }


@contextlib.contextmanager
def _scratch(near: Path) -> Iterator[Path]:
    """A temporary directory beside ``near`` (local workers see it), removed afterwards."""
    near.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{near.name}.truth-", dir=near.parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _kinds(pred: Path, truth: Path, *, errors: Path | None, sources: bool) -> tuple[bool, bool]:
    """``(prediction is a result store, truth is a label directory)``; refuse bad pairs."""
    if not pred.exists():
        raise InputError(f"no prediction at {pred}")
    if not truth.exists():
        raise InputError(f"no truth at {truth}")
    raster = pred.is_dir() and any((pred / n).exists() for n in ("zarr.json", ".zgroup"))
    labels = truth.is_dir()
    if not raster and sources:
        raise InputError(f"--graph-source needs a result store as the prediction, not {pred}")
    if not raster and labels:
        raise InputError(
            f"cannot score road layer {pred} against label rasters {truth}: give truth "
            "vectors, or the result store as the prediction"
        )
    if errors is not None and (not raster or errors.suffix.lower() != ".png"):
        raise InputError(f"--errors {errors} must be a .png, for a result store prediction")
    return raster, labels


def evaluate(
    pred: str | Path,
    truth: str | Path,
    out: str | Path | None = None,
    *,
    rho: float = 2.0,
    buffer_m: float = 2.0,
    errors: str | Path | None = None,
    errors_task: str = "surface",
    threshold: float | Mapping[str, float] | None = None,
    graph_sources: Sequence[Source] | None = None,
    vectorize: VectorizeConfig | None = None,
    labels: LabelsConfig | None = None,
    truth_layer: str | None = None,
    scene: str | Path | None = None,
    max_size: int = 1600,
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    overwrite: bool = False,
    client: Client | None = None,
) -> dict[str, Any]:
    """Score a prediction against truth; optionally write ``metrics.json`` and an error map.

    Args:
        pred: a ``roadnet run`` result store, or a ``roadnet vectorize`` road layer.
        truth: a label directory on the result's grid, or road vectors (any CRS).
        out: JSON report to write, or None.
        rho: tolerance of the relaxed pixel scores, px.
        buffer_m: buffer of the centerline scores, metres.
        errors: error map PNG to write (a result store prediction only), or None.
        errors_task: the task the error map shows.
        threshold: probability cut, one or per task (default: the model card's, else 0.5).
        graph_sources: graph sources to vectorize a result with, each scored (default:
            ``vectorize.graph_source``).
        vectorize: vectorize options (default: :class:`VectorizeConfig`'s).
        labels: how truth vectors are rasterized (default: :class:`LabelsConfig`'s).
        truth_layer: layer of a multi-layer truth file (default ``road_centerline`` when a
            GeoPackage has one, else the first).
        scene: background of the error map (default: the result's source scene, if here).
        max_size: longest side of the error map, px.
        scheduler: Dask scheduler address (else ``DASK_SCHEDULER_ADDRESS``, else local).
        workers: local worker processes.
        threads_per_worker: threads per local worker.
        overwrite: replace existing outputs.
        client: run on this client's cluster (``scheduler`` and the layout are ignored).

    Returns:
        The report: ``inputs`` (paths, kinds, SHA-256), ``parameters``, ``grid``,
        ``pixel`` (scores per task), ``vector`` (``buffer`` and ``apls`` per graph source,
        or ``layer``), ``seconds``.

    Raises:
        InputError: a missing or unsuitable input, grids or CRSs that differ, truth without
            roads in the extent, or a pair of inputs that allows no score.
        OutputExistsError: ``out`` or ``errors`` exists and ``overwrite`` is false.
    """
    from roadnet.pipeline.cluster import dask_client
    from roadnet.pipeline.scenes.labels import LabelsConfig
    from roadnet.pipeline.vectorize.run import VectorizeConfig, road_layers

    started = time.perf_counter()
    pred, truth = Path(pred), Path(truth)
    errors_path = None if errors is None else Path(errors)
    halo_px(rho)  # validates rho
    if not buffer_m > 0:
        raise InputError(f"--buffer-m must be > 0, got {buffer_m}")
    if errors_task not in TASKS:
        raise InputError(f"error map task {errors_task!r}: use one of {', '.join(TASKS)}")
    raster, truth_is_labels = _kinds(pred, truth, errors=errors_path, sources=bool(graph_sources))
    for path in (out, errors_path):
        if path is not None:
            check_output_file(Path(path), overwrite=overwrite)
    vcfg, lcfg = vectorize or VectorizeConfig(), labels or LabelsConfig()
    sources = list(dict.fromkeys(graph_sources or [vcfg.graph_source]))
    ds, grid, bounds = None, None, None
    if raster:
        ds, grid = open_prediction(pred)
        bounds = tuple(float(b) for b in ds.rio.bounds())
        crs = grid["crs"]
    else:
        layer_lines, layer_graph = _read_layer(pred)
        crs = layer_lines.crs
    cuts = task_thresholds(threshold, dict(ds.attrs) if ds is not None else {})
    roads = t_lines = None
    if not truth_is_labels:
        roads = _truth_roads(truth, crs=crs, bounds=bounds, layer=truth_layer)
        t_lines = _truth_lines(roads, bounds=bounds, name=str(truth), extent=str(pred))
    pixel: dict[str, dict[str, float]] = {}
    vector: dict[str, Any] = {}
    grid_info: dict[str, Any] | None = None
    shrunk = None
    with contextlib.ExitStack() as stack:
        if raster:
            assert ds is not None and grid is not None and bounds is not None
            labels_dir = truth
            if roads is not None:
                scratch = stack.enter_context(_scratch(Path(out) if out is not None else pred))
                labels_dir = _rasterize_truth(
                    roads,
                    grid=grid,
                    bounds=bounds,  # type: ignore[arg-type]
                    config=lcfg,
                    out_dir=scratch,
                    names=(str(truth), str(pred)),
                )
            active = client or stack.enter_context(
                dask_client(
                    scheduler=scheduler, workers=workers, threads_per_worker=threads_per_worker
                )
            )
            chunks = ds["surface"].data.chunks
            arrays = open_truth_labels(labels_dir, grid=grid, chunks=chunks, name=str(pred))
            factor = shrink_factor(grid["width"], grid["height"], max_size=max_size)
            pixel, nodata_px, shrunk = _score_pixels(
                active,
                ds,
                arrays,
                cuts=cuts,
                rho=rho,
                errors_task=errors_task if errors_path is not None else None,
                factor=factor,
            )
            if all(pixel[t]["truth"] == 0 for t in TASKS):
                raise InputError(f"truth {truth} has no road pixels in the extent of {pred}")
            grid_info = {
                "crs": crs.to_string(),
                "transform": list(grid["transform"])[:6],
                "width": grid["width"],
                "height": grid["height"],
                "chunk": [int(chunks[0][0]), int(chunks[1][0])],
                "nodata_px": nodata_px,
            }
        if t_lines is not None:
            t_graph = truth_graph(t_lines)
            if raster:
                for source in sources:
                    config = vcfg.model_copy(update={"graph_source": source})
                    layers, _ = road_layers(active, pred, config=config)
                    lines = layers.centerline.geometry.to_numpy()
                    vector[source] = _vector_scores(
                        t_lines, lines, layers.graph(), t_graph, buffer_m=buffer_m
                    )
            else:
                vector["layer"] = _vector_scores(
                    t_lines, layer_lines, layer_graph, t_graph, buffer_m=buffer_m
                )
    if errors_path is not None and shrunk is not None and grid is not None and ds is not None:
        shape = (grid["height"], grid["width"])
        background = scene_background(scene or ds.attrs.get("source"), factor=factor, shape=shape)
        write_error_map(error_image(background, shrunk), errors_path, overwrite=overwrite)
    report = {
        "roadnet_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(),
        "inputs": {
            "prediction": _input(pred, "result" if raster else "layer"),
            "truth": _input(truth, "labels" if truth_is_labels else "vectors"),
        },
        "parameters": {
            "rho_px": rho,
            "buffer_m": buffer_m,
            "thresholds": cuts if raster else None,
            "graph_sources": sources if raster and vector else [],
            "vectorize": vcfg.model_dump(mode="json") if raster and vector else None,
            "labels": lcfg.model_dump(mode="json") if raster and roads is not None else None,
            "apls": APLS_PARAMETERS,
            "errors": None
            if errors_path is None
            else {"path": str(errors_path.resolve()), "task": errors_task},
        },
        "grid": grid_info,
        "pixel": pixel,
        "vector": vector,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if out is not None:
        _write_json(Path(out), report)
    return report


def _input(path: Path, kind: str) -> dict[str, str]:
    return {"path": str(path.resolve()), "kind": kind, "sha256": _sha256(path)}


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON under a temporary name, then rename it into place."""
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


def format_report(report: Mapping[str, Any]) -> str:
    """The printed table: pixel scores per task, then vector scores per graph source."""
    params = report["parameters"]
    rows = []
    if report["pixel"]:
        rows.append(
            f"{'task':<11} {'cut':>5} {'P':>6} {'R':>6} {'F1':>6} {'IoU':>6}   "
            f"relaxed P / R / F1 (rho {params['rho_px']:g} px)"
        )
        for task, s in report["pixel"].items():
            rows.append(
                f"{task:<11} {params['thresholds'][task]:>5.2f} {s['precision']:>6.3f} "
                f"{s['recall']:>6.3f} {s['f1']:>6.3f} {s['iou']:>6.3f}   "
                f"{s['relaxed_precision']:.3f} / {s['relaxed_recall']:.3f} / "
                f"{s['relaxed_f1']:.3f}"
            )
    if report["vector"]:
        rows.append(
            f"{'graph':<11} {'km':>6} {'compl':>6} {'corr':>6} {'qual':>6} {'APLS':>6}   "
            f"(buffer {params['buffer_m']:g} m)"
        )
        for source, v in report["vector"].items():
            b = v["buffer"]
            rows.append(
                f"{source:<11} {v['km']:>6.2f} {b['completeness']:>6.3f} "
                f"{b['correctness']:>6.3f} {b['quality']:>6.3f} {v['apls']['apls']:>6.3f}"
            )
    return "\n".join(rows)
