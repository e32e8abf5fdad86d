"""Pixel scores of a whole result against truth rasters, chunk by chunk, in bounded memory.

The scores are those of :mod:`roadnet.metrics` (the kernels ``roadnet evaluate-model`` uses):
strict precision, recall, F1 and IoU, and the relaxed precision, recall and F1 within ``rho``
pixels. Here they are computed from counts summed over the chunks of a grid, one dask task
per chunk (:func:`window_task`):

* **strict** counts (``tp``, ``fp``, ``fn``) of a chunk are those of its pixels;
* **relaxed** counts need the neighbourhood: the task reads the chunk's window with a halo
  of ``ceil(rho)`` px on every side (zeros beyond the grid's edge, as
  :func:`~roadnet.metrics.within_distance` treats the outside of a whole array), applies
  :func:`~roadnet.metrics.within_distance` to it and counts only the chunk's own pixels.
  Every pixel within ``rho`` of a chunk pixel lies in the halo, so the counts equal those
  of the whole array, and the sums, hence the scores, equal :func:`in_memory_scores`
  exactly.

The task reads its window itself, from the result's Zarr store and the truth GeoTIFFs
(:class:`StoreWindows`): a few milliseconds of decompression, where taking it from dask
arrays would send every chunk to its eight neighbours' tasks. :func:`score_windows` gives the
tasks to the scheduler in bands of whole chunk rows, two bands at a time, so memory (of
the workers and of the scheduler) is a few chunks per thread and a few bands whatever the
scene size (BENCHMARKS.md, "roadnet evaluate"). The same task shrinks its share of the error
map's classes (:func:`~roadnet.pipeline.evaluate.errors.shrink_block`).

Pixels a result holds no data for (code 255) are left out: neither prediction nor truth
there.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from roadnet.errors import InputError
from roadnet.metrics import (
    confusion_counts,
    pixel_scores,
    relaxed_scores,
    scores_from_counts,
    within_distance,
)
from roadnet.pipeline.evaluate.errors import CLASSES, error_classes, shrink_block
from roadnet.pipeline.inference.blend import CODE_MAX, FILL_VALUE
from roadnet.tasks import TASKS

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "COUNTS",
    "ArrayWindows",
    "Bounds",
    "StoreWindows",
    "Windows",
    "block_counts",
    "chunked_scores",
    "halo_px",
    "in_memory_scores",
    "predicted_mask",
    "score_windows",
    "scores_from_pixel_counts",
    "window_task",
]

#: The counts a chunk contributes, in the order of :func:`block_counts`.
COUNTS = ("tp", "fp", "fn", "pred_correct", "pred", "truth_found", "truth")


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


Bounds = tuple[int, int, int, int]
"""``(row0, row1, col0, col1)``, half-open, in pixels of the grid."""


@functools.lru_cache(maxsize=8)
def _zarr_arrays(store: str) -> dict[str, Any]:
    """A result's code arrays, opened once per process and store."""
    import zarr

    group = zarr.open_group(store, mode="r")
    return {task: group[task] for task in TASKS}


@dataclass(frozen=True)
class StoreWindows:
    """Windows of a result store and of truth label GeoTIFFs on its grid, read by the tasks.

    Attributes:
        store: path of the ``roadnet run`` Zarr store (readable by every worker).
        labels: per task (:data:`~roadnet.tasks.TASKS` order), the truth GeoTIFF's path.
        cuts: per task, the probability cut (:func:`predicted_mask`).
        shape: ``(height, width)`` of the grid.
    """

    store: str
    labels: tuple[str, ...]
    cuts: tuple[float, ...]
    shape: tuple[int, int]

    def read(self, bounds: Bounds) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
        """``[(pred, truth)]`` ``(y, x)`` bool per task, nodata removed from both, and nodata.

        Returns:
            The pairs, and the ``(y, x)`` bool nodata mask of the surface task.
        """
        import rasterio
        from rasterio.windows import Window

        r0, r1, c0, c1 = bounds
        arrays = _zarr_arrays(self.store)
        pairs, nodata = [], None
        for task, path, cut in zip(TASKS, self.labels, self.cuts, strict=True):
            pred, valid = predicted_mask(np.asarray(arrays[task][r0:r1, c0:c1]), threshold=cut)
            with rasterio.open(path) as src:
                truth = src.read(1, window=Window(c0, r0, c1 - c0, r1 - r0)) > 0
            pairs.append((pred, truth & valid))
            nodata = ~valid if nodata is None else nodata
        assert nodata is not None
        return pairs, nodata


@dataclass(frozen=True)
class ArrayWindows:
    """Windows of ``(y, x)`` bool ``(pred, truth)`` pairs in memory (tests, small data)."""

    pairs: tuple[tuple[np.ndarray, np.ndarray], ...]

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the arrays."""
        height, width = self.pairs[0][0].shape
        return int(height), int(width)

    def read(self, bounds: Bounds) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
        """The pairs' windows (no nodata)."""
        r0, r1, c0, c1 = bounds
        pairs = [(p[r0:r1, c0:c1], t[r0:r1, c0:c1]) for p, t in self.pairs]
        return pairs, np.zeros((r1 - r0, c1 - c0), dtype=bool)


Windows = StoreWindows | ArrayWindows


def window_task(
    source: Windows,
    *,
    core: Bounds,
    rho: float,
    shrink: tuple[int, int] | None = None,
) -> tuple[np.ndarray, int, tuple[int, int, np.ndarray] | None]:
    """Counts of one chunk: its window read with a halo, zeros beyond the grid.

    Args:
        source: where the windows come from.
        core: the chunk.
        rho: relaxed-score tolerance, px; the halo is ``ceil(rho)``.
        shrink: ``(pair index, factor)``: also that pair's error classes, shrunk.

    Returns:
        ``(counts, nodata, partial)``: ``(pairs, 7)`` int64 counts in :data:`COUNTS` order,
        the chunk's nodata px, and ``(row0, col0, (3, h, w) bool)`` shares of the shrunk
        tp / fp / fn (:func:`~roadnet.pipeline.evaluate.errors.shrink_block`) or None.
    """
    halo = halo_px(rho)
    height, width = source.shape
    r0, r1, c0, c1 = core
    window = (max(r0 - halo, 0), min(r1 + halo, height), max(c0 - halo, 0), min(c1 + halo, width))
    pairs, nodata = source.read(window)
    pad = (
        (window[0] - r0 + halo, r1 + halo - window[1]),
        (window[2] - c0 + halo, c1 + halo - window[3]),
    )
    inner = (slice(r0 - window[0], r1 - window[0]), slice(c0 - window[2], c1 - window[2]))
    counts = np.empty((len(pairs), len(COUNTS)), dtype=np.int64)
    partial = None
    for k, (pred, truth) in enumerate(pairs):
        pred, truth = np.pad(pred, pad), np.pad(truth, pad)
        counts[k] = block_counts(pred, truth, halo=halo, rho=rho)
        if shrink is not None and shrink[0] == k:
            core_px = (slice(halo, pred.shape[0] - halo), slice(halo, pred.shape[1] - halo))
            classes = error_classes(pred[core_px], truth[core_px])
            shares = [shrink_block(classes[c], origin=(r0, c0), factor=shrink[1]) for c in CLASSES]
            partial = (shares[0][0], shares[0][1], np.stack([share[2] for share in shares]))
    return counts, int(np.count_nonzero(nodata[inner])), partial


def score_windows(
    source: Windows,
    *,
    chunks: tuple[tuple[int, ...], tuple[int, ...]],
    rho: float,
    client: Client | None = None,
    shrink: tuple[int, int] | None = None,
    band_chunks: int = 256,
) -> tuple[np.ndarray, int, np.ndarray | None]:
    """Summed counts of every pair over the chunks, one task per chunk, band by band.

    Each task reads its own window (:func:`window_task`): no chunk travels to a neighbour's
    task. Chunk rows go to the scheduler in bands of about ``band_chunks`` chunks, two
    bands at a time, so the scheduler holds a bounded part of any scene.

    Args:
        source: where the windows come from.
        chunks: the chunks along ``y`` and ``x`` (the store's).
        rho: relaxed-score tolerance, px.
        client: compute on this cluster; None: dask's current scheduler.
        shrink: ``(pair index, factor)``: also shrink that pair's error classes.
        band_chunks: chunks per band (at least one chunk row).

    Returns:
        ``(counts, nodata, classes)``: ``(pairs, 7)`` int64 counts in :data:`COUNTS` order,
        nodata px, and ``(3, ceil(y / factor), ceil(x / factor))`` bool tp / fp / fn or None.
    """
    from dask.base import compute
    from dask.delayed import delayed

    halo_px(rho)  # validates rho before any task runs
    edges = [np.cumsum((0, *c)).tolist() for c in chunks]
    rows = [(a, b) for a, b in zip(edges[0][:-1], edges[0][1:], strict=True)]
    cols = [(a, b) for a, b in zip(edges[1][:-1], edges[1][1:], strict=True)]
    if (edges[0][-1], edges[1][-1]) != source.shape:
        raise InputError(f"chunks {edges[0][-1]}x{edges[1][-1]} do not cover {source.shape}")
    step = max(1, band_chunks // len(cols))
    task, src = delayed(window_task, pure=True), delayed(source, pure=True)
    counts, nodata = None, 0
    classes = None
    if shrink is not None:
        classes = np.zeros((3, *(math.ceil(n / shrink[1]) for n in source.shape)), dtype=bool)

    def jobs(first: int) -> list[Any]:
        return [
            task(src, core=(r[0], r[1], c[0], c[1]), rho=rho, shrink=shrink)
            for r in rows[first : first + step]
            for c in cols
        ]

    def add(results: Sequence[tuple[np.ndarray, int, Any]]) -> None:
        nonlocal counts, nodata
        for part, missing, partial in results:
            counts = part.copy() if counts is None else counts + part
            nodata += missing
            if partial is not None and classes is not None:
                row0, col0, small = partial
                classes[:, row0 : row0 + small.shape[1], col0 : col0 + small.shape[2]] |= small

    if client is None:
        for first in range(0, len(rows), step):
            add(compute(*jobs(first)))
    else:
        pending: list[Any] = []
        for first in range(0, len(rows), step):
            pending.append(client.compute(jobs(first)))
            if len(pending) == 2:  # the next band runs while this one is gathered
                add(client.gather(pending.pop(0)))
        for futures in pending:
            add(client.gather(futures))
    assert counts is not None
    return counts, nodata, classes


def chunked_scores(
    pred: np.ndarray, truth: np.ndarray, *, chunks: int | tuple[int, int], rho: float
) -> dict[str, float]:
    """Scores of two ``(y, x)`` bool arrays counted chunk by chunk (dask's scheduler).

    The same tasks as a store's (:func:`score_windows`); equals :func:`in_memory_scores`.
    """
    if pred.shape != truth.shape:
        raise InputError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    cy, cx = (chunks, chunks) if isinstance(chunks, int) else chunks
    grid = tuple(
        tuple(min(c, n - i) for i in range(0, n, c))
        for n, c in zip(pred.shape, (cy, cx), strict=True)
    )
    source = ArrayWindows(((np.asarray(pred, bool), np.asarray(truth, bool)),))
    counts, _, _ = score_windows(source, chunks=grid, rho=rho, band_chunks=64)  # type: ignore[arg-type]
    return scores_from_pixel_counts(counts[0])


def predicted_mask(codes: Any, *, threshold: float) -> tuple[Any, Any]:
    """The predicted mask of a task and where the result holds data.

    Args:
        codes: ``(y, x)`` uint8 codes ``round(p * 254)``, 255 = nodata; numpy or dask.
        threshold: probability cut in (0, 1): a pixel is road when ``p >= threshold`` (the
            road layer's rule, ``roadnet vectorize``).

    Returns:
        ``(pred, valid)``, two ``(y, x)`` bool arrays of the same kind.
    """
    if not 0.0 < threshold < 1.0:
        raise InputError(f"threshold must be in (0, 1), got {threshold}")
    valid = codes != FILL_VALUE
    return valid & (codes >= threshold * CODE_MAX), valid
