"""Pixel scores of a whole result against truth rasters, chunk by chunk, in bounded memory.

The scores are those of :mod:`roadnet.metrics` (the kernels ``roadnet evaluate-model`` uses):
strict precision, recall, F1 and IoU, and the relaxed precision, recall and F1 within ``rho``
pixels. Here they are computed from counts summed over the chunks of a dask array:

* **strict** counts (``tp``, ``fp``, ``fn``) of a chunk are those of its pixels;
* **relaxed** counts need the neighbourhood: a chunk is read with a halo of ``ceil(rho)`` px
  on every side (zeros beyond the scene edge, as :func:`~roadnet.metrics.within_distance`
  treats the outside of a whole array), :func:`~roadnet.metrics.within_distance` is applied
  to the padded block, and only the chunk's own pixels are counted. Every pixel within
  ``rho`` of a core pixel lies in the halo, so the counts equal those of the whole array,
  and the sums, hence the scores, equal :func:`in_memory_scores` exactly.

Memory is a few chunks per worker thread whatever the scene size (BENCHMARKS.md,
"roadnet evaluate").

Pixels a result holds no data for (code 255) are left out: neither prediction nor truth
there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from roadnet.errors import InputError
from roadnet.metrics import (
    confusion_counts,
    pixel_scores,
    relaxed_scores,
    scores_from_counts,
    within_distance,
)
from roadnet.pipeline.inference.blend import CODE_MAX, FILL_VALUE
from roadnet.tasks import TASKS

__all__ = [
    "COUNTS",
    "Grid",
    "block_counts",
    "check_same_grid",
    "chunked_scores",
    "halo_px",
    "in_memory_scores",
    "lazy_counts",
    "open_prediction",
    "open_truth_labels",
    "predicted_mask",
    "scores_from_pixel_counts",
    "task_thresholds",
]

#: The counts a chunk contributes, in the order of :func:`block_counts`.
COUNTS = ("tp", "fp", "fn", "pred_correct", "pred", "truth_found", "truth")

Grid = dict[str, Any]
"""``{"crs": rasterio CRS or None, "transform": Affine, "width": int, "height": int}``."""


def halo_px(rho: float) -> int:
    """Halo in px a chunk needs for relaxed counts within ``rho`` px: ``ceil(rho)``."""
    if not (rho >= 0 and math.isfinite(rho)):
        raise InputError(f"rho must be a finite number of pixels >= 0, got {rho}")
    return math.ceil(rho)


def block_counts(pred: np.ndarray, truth: np.ndarray, *, halo: int, rho: float) -> np.ndarray:
    """Strict and relaxed counts of the core of one padded block.

    Args:
        pred: ``(y + 2 * halo, x + 2 * halo)`` bool predicted mask of the chunk and its halo.
        truth: the truth mask of the same pixels, same shape, bool.
        halo: width of the halo on every side, px (at least ``floor(rho)``).
        rho: relaxed-score tolerance, px.

    Returns:
        ``(7,)`` int64 counts of the core's pixels in :data:`COUNTS` order: strict ``tp``,
        ``fp``, ``fn``; predicted pixels within ``rho`` of truth (``pred_correct``), predicted
        pixels (``pred``), truth pixels within ``rho`` of a prediction (``truth_found``),
        truth pixels (``truth``).
    """
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    core = (slice(halo, pred.shape[0] - halo), slice(halo, pred.shape[1] - halo))
    p, t = pred[core], truth[core]
    tp, fp, fn = confusion_counts(p, t)
    pred_correct = np.count_nonzero(p & within_distance(truth, rho)[core])
    truth_found = np.count_nonzero(t & within_distance(pred, rho)[core])
    return np.array([tp, fp, fn, pred_correct, tp + fp, truth_found, tp + fn], dtype=np.int64)


def _relaxed(pred_correct: int, n_pred: int, truth_found: int, n_truth: int) -> dict[str, float]:
    """Relaxed precision / recall / F1 from counts, as :func:`roadnet.metrics.relaxed_scores`.

    Precision and recall are :func:`~roadnet.metrics.scores_from_counts` ratios of the
    relaxed counts (all of them zero exactly when prediction and truth are both empty, so
    the zero-denominator rule is relaxed_scores' one); F1 is their harmonic mean.
    """
    both_empty = n_pred == 0 and n_truth == 0
    wrong, missed = n_pred - pred_correct, n_truth - truth_found
    precision = scores_from_counts(pred_correct, wrong, missed)["precision"]
    recall = scores_from_counts(truth_found, wrong, missed)["recall"]
    if precision + recall > 0:
        f1 = float(2 * precision * recall) / float(precision + recall)
    else:
        f1 = 1.0 if both_empty else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def scores_from_pixel_counts(counts: np.ndarray | Mapping[str, int]) -> dict[str, float]:
    """The strict and relaxed scores of summed counts.

    Args:
        counts: ``(7,)`` int counts in :data:`COUNTS` order, or a mapping with those keys.

    Returns:
        ``precision``, ``recall``, ``f1``, ``iou``, ``relaxed_precision``,
        ``relaxed_recall``, ``relaxed_f1`` and the counts (as floats, JSON-ready).
    """
    if isinstance(counts, Mapping):
        c = {k: int(counts[k]) for k in COUNTS}
    else:
        c = dict(zip(COUNTS, (int(v) for v in np.asarray(counts).tolist()), strict=True))
    strict = scores_from_counts(c["tp"], c["fp"], c["fn"])
    relaxed = _relaxed(c["pred_correct"], c["pred"], c["truth_found"], c["truth"])
    return {
        **strict,
        **{f"relaxed_{k}": v for k, v in relaxed.items()},
        **{k: float(v) for k, v in c.items()},
    }


def in_memory_scores(pred: np.ndarray, truth: np.ndarray, *, rho: float) -> dict[str, float]:
    """The reference: :mod:`roadnet.metrics` on whole ``(y, x)`` bool arrays, same keys.

    This is what ``roadnet evaluate-model`` computes; :func:`chunked_scores` equals it.
    """
    strict = pixel_scores(pred, truth)
    relaxed = relaxed_scores(pred, truth, rho=rho)
    out = {k: float(strict[k]) for k in ("precision", "recall", "f1", "iou")}
    out.update({f"relaxed_{k}": float(relaxed[k]) for k in ("precision", "recall", "f1")})
    out.update({k: float(strict[k]) for k in ("tp", "fp", "fn")})
    out.update({k: float(relaxed[k]) for k in ("pred_correct", "pred", "truth_found", "truth")})
    return out


def lazy_counts(pred: da.Array, truth: da.Array, *, rho: float) -> da.Array:
    """Summed counts of two ``(y, x)`` masks, lazily, one task per chunk plus a tree sum.

    Args:
        pred: ``(y, x)`` bool dask array.
        truth: ``(y, x)`` bool dask (or numpy) array of the same shape; rechunked to
            ``pred``'s chunks.
        rho: relaxed-score tolerance, px.

    Returns:
        ``(7,)`` int64 dask array in :data:`COUNTS` order.
    """
    if pred.shape != truth.shape:
        raise InputError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    halo = halo_px(rho)
    pred = pred.astype(bool)
    truth = da.asarray(truth).astype(bool).rechunk(pred.chunks)
    if halo:
        # a constant 0 boundary: beyond the scene is neither road nor prediction
        depth = {0: halo, 1: halo}
        pred = da.overlap.overlap(pred, depth=depth, boundary={0: 0, 1: 0})
        truth = da.overlap.overlap(truth, depth=depth, boundary={0: 0, 1: 0})
    blocks = da.map_blocks(
        _counts_block,
        pred,
        truth,
        halo=halo,
        rho=rho,
        new_axis=2,
        chunks=(1, 1, len(COUNTS)),
        dtype=np.int64,
        meta=np.empty((0, 0, 0), dtype=np.int64),
    )
    counts: da.Array = blocks.sum(axis=(0, 1), dtype=np.int64)
    return counts


def _counts_block(pred: np.ndarray, truth: np.ndarray, *, halo: int, rho: float) -> np.ndarray:
    return block_counts(pred, truth, halo=halo, rho=rho)[None, None, :]


def chunked_scores(pred: da.Array, truth: da.Array, *, rho: float) -> dict[str, float]:
    """:func:`lazy_counts` computed (with dask's current scheduler) and scored."""
    counts = np.asarray(lazy_counts(pred, truth, rho=rho).compute())
    return scores_from_pixel_counts(counts)


def predicted_mask(codes: da.Array, *, threshold: float) -> tuple[da.Array, da.Array]:
    """The predicted mask of a task and where the result holds data.

    Args:
        codes: ``(y, x)`` uint8 codes ``round(p * 254)``, 255 = nodata.
        threshold: probability cut in (0, 1): a pixel is road when ``p >= threshold`` (the
            road layer's rule, ``roadnet vectorize``).

    Returns:
        ``(pred, valid)``, two ``(y, x)`` bool dask arrays.
    """
    if not 0.0 < threshold < 1.0:
        raise InputError(f"threshold must be in (0, 1), got {threshold}")
    valid = codes != FILL_VALUE
    return valid & (codes >= threshold * CODE_MAX), valid


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
    from roadnet.pipeline.inference.run import CUTOFFS_ATTR

    if isinstance(threshold, Mapping):
        cuts = {t: float(threshold.get(t, 0.5)) for t in TASKS}
    elif threshold is not None:
        cuts = dict.fromkeys(TASKS, float(threshold))
    else:
        raw = attrs.get(CUTOFFS_ATTR)
        card = (json.loads(raw) if isinstance(raw, str) else dict(raw)) if raw else {}
        cuts = {t: float(card.get(t, 0.5)) for t in TASKS}
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


def open_truth_labels(
    labels_dir: Path, *, grid: Grid, chunks: tuple[tuple[int, ...], tuple[int, ...]], name: str
) -> dict[str, da.Array]:
    """The truth label rasters of a directory, lazily, on the prediction's grid and chunks.

    Args:
        labels_dir: a directory with ``surface.tif``, ``edge.tif``, ``centerline.tif``
            (``roadnet labels`` output, 0 / 1 uint8).
        grid: the prediction's grid (see :data:`Grid`).
        chunks: the prediction's ``(y, x)`` chunks.
        name: the prediction's name for error messages.

    Returns:
        ``{task: (y, x) bool dask array}`` for every task.

    Raises:
        InputError: a label file is missing or unreadable, or on another grid.
    """
    import rasterio
    import rioxarray

    out: dict[str, da.Array] = {}
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
        array = rioxarray.open_rasterio(
            path, chunks={"band": 1, "y": chunks[0], "x": chunks[1]}, lock=False
        )
        data: da.Array = array.data[0]  # type: ignore[union-attr]
        out[task] = data > 0
    return out
