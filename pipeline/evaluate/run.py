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
  grid, are the truth of the buffer scores, and their graph that of APLS (all read by
  :mod:`~roadnet.pipeline.evaluate.inputs`).

Pixel counts (:mod:`~roadnet.pipeline.evaluate.pixels`) and the shrunk error classes
(:mod:`~roadnet.pipeline.evaluate.errors`) are computed in one pass over the store on the
Dask cluster, so memory does not grow with the scene.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
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
from roadnet.pipeline.evaluate.apls import apls_score
from roadnet.pipeline.evaluate.buffer import buffer_scores, matched_lengths
from roadnet.pipeline.evaluate.errors import (
    CLASSES,
    error_image,
    scene_background,
    shrink_factor,
    write_error_map,
)
from roadnet.pipeline.evaluate.inputs import (
    Grid,
    describe_grid,
    grid_bounds,
    layer_extent,
    open_prediction,
    rasterize_truth,
    read_layer,
    read_truth_roads,
    sha256_tree,
    task_thresholds,
    truth_graph,
    truth_label_paths,
    truth_line_classes,
    truth_lines,
)
from roadnet.pipeline.evaluate.pixels import (
    StoreWindows,
    halo_px,
    score_windows,
    scores_from_pixel_counts,
)
from roadnet.pipeline.preflight import check_evaluate_inputs
from roadnet.tasks import TASKS

if TYPE_CHECKING:
    from distributed import Client
    from distributed.security import Security

    from roadnet.pipeline.scenes.labels import LabelsConfig
    from roadnet.pipeline.vectorize.centerlines import Source
    from roadnet.pipeline.vectorize.run import VectorizeConfig

__all__ = ["APLS_PARAMETERS", "evaluate", "format_report"]

#: The APLS options every evaluation uses (the SpaceNet reference's defaults).
APLS_PARAMETERS: dict[str, Any] = {
    "node_spacing_m": 50.0,
    "snap_m": 4.0,
    "min_path_m": 10.0,
    "max_pairs": 10_000,
}


def _score_pixels(
    client: Client,
    pred: Path,
    labels: dict[str, Path],
    *,
    grid: Grid,
    chunks: tuple[tuple[int, ...], tuple[int, ...]],
    cuts: dict[str, float],
    rho: float,
    shrink: tuple[int, int] | None,
) -> tuple[dict[str, dict[str, float]], int, np.ndarray | None]:
    """Scores of every task, nodata px and the shrunk error classes, in one pass."""
    source = StoreWindows(
        store=str(pred.resolve()),
        labels=tuple(str(labels[t].resolve()) for t in TASKS),
        cuts=tuple(cuts[t] for t in TASKS),
        shape=(grid["height"], grid["width"]),
    )
    counts, nodata, classes = score_windows(
        source, chunks=chunks, rho=rho, client=client, shrink=shrink
    )
    scores = {t: scores_from_pixel_counts(c) for t, c in zip(TASKS, counts, strict=True)}
    return scores, nodata, classes


def _vector_scores(
    truth_lines: np.ndarray,
    lines: Any,
    graph: nx.MultiGraph,
    t_graph: nx.MultiGraph,
    *,
    buffer_m: float,
    classes: np.ndarray | None = None,
) -> dict[str, Any]:
    """Buffer scores of the lines and APLS of the graph, as plain dicts.

    With ``classes`` (the class of every truth line), also the completeness of every
    class: its truth length within ``buffer_m`` of the prediction, longest class first.
    """
    scores: dict[str, Any] = {
        "buffer": dataclasses.asdict(buffer_scores(truth_lines, lines, buffer_m=buffer_m)),
        "apls": dataclasses.asdict(apls_score(t_graph, graph, **APLS_PARAMETERS)),
        "edges": graph.number_of_edges(),
        "km": float(shapely.length(np.asarray(lines, dtype=object)).sum()) / 1000.0,
    }
    if classes is not None:
        names, inverse = np.unique(classes, return_inverse=True)
        total = np.bincount(inverse, weights=shapely.length(truth_lines), minlength=names.size)
        per_line = matched_lengths(truth_lines, lines, buffer_m=buffer_m)
        matched = np.minimum(total, np.bincount(inverse, weights=per_line, minlength=names.size))
        scores["by_class"] = {
            str(names[i]): {
                "truth_length_m": float(total[i]),
                "matched_truth_length_m": float(matched[i]),
                "completeness": float(matched[i] / total[i]) if total[i] > 0 else 1.0,
            }
            for i in np.argsort(-total, kind="stable")
        }
    return scores


@contextlib.contextmanager
def _scratch(near: Path) -> Iterator[Path]:
    """A temporary directory beside ``near`` (local workers see it), removed afterwards."""
    near.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{near.name}.truth-", dir=near.parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


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
    by_class: str | None = None,
    scene: str | Path | None = None,
    max_size: int = 1600,
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    security: Security | None = None,
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
        by_class: a column of the truth vectors (e.g. ``highway``): also the completeness
            of every class of it, under ``vector[source]["by_class"]``.
        scene: background of the error map (default: the result's source scene, if here).
        max_size: longest side of the error map, px.
        scheduler: Dask scheduler address (else ``DASK_SCHEDULER_ADDRESS``, else local).
        workers: local worker processes.
        threads_per_worker: threads per local worker.
        security: TLS settings for a ``tls://`` scheduler (see
            :func:`~roadnet.pipeline.cluster.cluster_security`).
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
    halo_px(rho)  # validates rho
    raster, truth_is_labels = check_evaluate_inputs(
        pred,
        truth,
        out,
        errors=errors,
        errors_task=errors_task,
        buffer_m=buffer_m,
        sources=bool(graph_sources),
        by_class=by_class,
        overwrite=overwrite,
    )
    pred, truth = Path(pred), Path(truth)
    errors_path = None if errors is None else Path(errors)
    vcfg, lcfg = vectorize or VectorizeConfig(), labels or LabelsConfig()
    sources = list(dict.fromkeys(graph_sources or [vcfg.graph_source]))
    ds, grid, bounds = None, None, None
    if raster:
        ds, grid = open_prediction(pred)
        bounds = grid_bounds(grid)
        crs = grid["crs"]
    else:
        layer_lines, layer_graph = read_layer(pred)
        crs = layer_lines.crs
        bounds = layer_extent(pred)
    cuts = task_thresholds(threshold, dict(ds.attrs) if ds is not None else {})
    roads = t_lines = line_classes = None
    if not truth_is_labels:
        roads = read_truth_roads(truth, crs=crs, bounds=bounds, layer=truth_layer)
        t_lines = truth_lines(roads, bounds=bounds, name=str(truth), extent=str(pred))
        if by_class is not None:
            line_classes = truth_line_classes(roads, by_class, bounds=bounds, name=str(truth))
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
                labels_dir = rasterize_truth(
                    roads, grid=grid, config=lcfg, out_dir=scratch, names=(str(truth), str(pred))
                )
            active = stack.enter_context(
                dask_client(
                    scheduler=scheduler,
                    workers=workers,
                    threads_per_worker=threads_per_worker,
                    security=security,
                    client=client,
                )
            )
            chunks = ds["surface"].data.chunks
            paths = truth_label_paths(labels_dir, grid=grid, name=str(pred))
            factor = shrink_factor(grid["width"], grid["height"], max_size=max_size)
            pixel, nodata_px, shrunk = _score_pixels(
                active,
                pred,
                paths,
                grid=grid,
                chunks=chunks,
                cuts=cuts,
                rho=rho,
                shrink=None if errors_path is None else (TASKS.index(errors_task), factor),
            )
            if all(pixel[t]["truth"] == 0 for t in TASKS):
                raise InputError(f"truth {truth} has no road pixels in the extent of {pred}")
            grid_info = {**describe_grid(grid, chunks), "nodata_px": nodata_px}
        if t_lines is not None:
            t_graph = truth_graph(t_lines)
            if raster:
                for source in sources:
                    config = vcfg.model_copy(update={"graph_source": source})
                    layers, _ = road_layers(active, pred, config=config)
                    lines = layers.centerline.geometry.to_numpy()
                    vector[source] = _vector_scores(
                        t_lines,
                        lines,
                        layers.graph(),
                        t_graph,
                        buffer_m=buffer_m,
                        classes=line_classes,
                    )
            else:
                vector["layer"] = _vector_scores(
                    t_lines,
                    layer_lines,
                    layer_graph,
                    t_graph,
                    buffer_m=buffer_m,
                    classes=line_classes,
                )
    if errors_path is not None and shrunk is not None and grid is not None and ds is not None:
        shape = (grid["height"], grid["width"])
        background = scene_background(scene or ds.attrs.get("source"), factor=factor, shape=shape)
        classes = dict(zip(CLASSES, shrunk, strict=True))
        write_error_map(error_image(background, classes), errors_path, overwrite=overwrite)
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
            "extent": None if bounds is None else list(bounds),
            "thresholds": cuts if raster else None,
            "graph_sources": sources if raster and vector else [],
            "vectorize": vcfg.model_dump(mode="json") if raster and vector else None,
            "labels": lcfg.model_dump(mode="json") if raster and roads is not None else None,
            "apls": APLS_PARAMETERS,
            "by_class": by_class,
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
    return {"path": str(path.resolve()), "kind": kind, "sha256": sha256_tree(path)}


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
        for source, v in report["vector"].items():
            if v.get("by_class"):
                rows.append(
                    f"{params['by_class'] + ' (' + source + ')':<24} {'km':>7} {'compl':>6}"
                )
                for name, c in v["by_class"].items():
                    rows.append(
                        f"{name:<24} {c['truth_length_m'] / 1000:>7.2f} {c['completeness']:>6.3f}"
                    )
    return "\n".join(rows)
