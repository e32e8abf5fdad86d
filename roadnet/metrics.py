"""Pixel scores of a predicted road mask against the truth: the one implementation.

``roadnet evaluate-model`` and ``roadnet evaluate`` score with these functions, and the
training metrics (:mod:`roadnet.model.metrics`) follow the same definitions.

Scores of a binary mask against the truth: precision ``tp / (tp + fp)``, recall
``tp / (tp + fn)``, F1 their harmonic mean, IoU ``tp / (tp + fp + fn)``; a score whose
denominator is zero is 1.0 when prediction and truth are both empty and 0.0 otherwise.

The *relaxed* variant (thin structures: edges, centerlines) counts a predicted pixel as correct
when a truth pixel lies within ``rho`` pixels of it (relaxed precision), and a truth pixel as
found when a predicted pixel lies within ``rho`` of it (relaxed recall).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

__all__ = [
    "SCORES",
    "confusion_counts",
    "pixel_scores",
    "relaxed_scores",
    "scores_from_counts",
    "within_distance",
]

Score = Literal["precision", "recall", "f1", "iou"]
SCORES: tuple[Score, ...] = ("precision", "recall", "f1", "iou")


def _ratio(num: float, den: float, *, both_empty: bool) -> float:
    if den > 0:
        return float(num) / float(den)
    return 1.0 if both_empty else 0.0


def scores_from_counts(tp: float, fp: float, fn: float) -> dict[str, float]:
    """Precision, recall, F1 and IoU from confusion counts (see the module docstring)."""
    empty = tp + fp + fn == 0
    precision = _ratio(tp, tp + fp, both_empty=empty)
    recall = _ratio(tp, tp + fn, both_empty=empty)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn, both_empty=empty)
    iou = _ratio(tp, tp + fp + fn, both_empty=empty)
    return {"precision": precision, "recall": recall, "f1": f1, "iou": iou}


def confusion_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """True positives, false positives, false negatives of two boolean masks of one shape."""
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    tp = int(np.count_nonzero(pred & truth))
    return tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(truth)) - tp


def pixel_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Precision, recall, F1, IoU of a ``(y, x)`` bool mask against a ``(y, x)`` bool truth."""
    tp, fp, fn = confusion_counts(pred, truth)
    return {**scores_from_counts(tp, fp, fn), "tp": tp, "fp": fp, "fn": fn}


def within_distance(mask: np.ndarray, rho: float) -> np.ndarray:
    """Pixels within Euclidean distance ``rho`` of any true pixel of ``mask``.

    A dilation by the disk of radius ``rho`` (pixel centres), which equals thresholding the
    Euclidean distance transform at ``rho`` and is several times faster.
    """
    if not mask.any():
        return np.zeros_like(mask)
    r = int(np.floor(rho))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = yy**2 + xx**2 <= rho**2
    within: np.ndarray = np.asarray(ndimage.binary_dilation(mask, structure=disk))
    return within


def relaxed_scores(pred: np.ndarray, truth: np.ndarray, *, rho: float = 2.0) -> dict[str, float]:
    """Relaxed precision, recall and F1 within ``rho`` pixels, ``(y, x)`` bool masks.

    Returns:
        ``precision``, ``recall``, ``f1`` (harmonic mean of the relaxed precision and recall),
        plus the counts they come from.
    """
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    n_pred, n_truth = int(pred.sum()), int(truth.sum())
    pred_ok = int(np.count_nonzero(pred & within_distance(truth, rho)))
    truth_found = int(np.count_nonzero(truth & within_distance(pred, rho)))
    both_empty = n_pred == 0 and n_truth == 0
    precision = _ratio(pred_ok, n_pred, both_empty=both_empty)
    recall = _ratio(truth_found, n_truth, both_empty=both_empty)
    f1 = _ratio(2 * precision * recall, precision + recall, both_empty=both_empty)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "pred_correct": pred_ok,
        "pred": n_pred,
        "truth_found": truth_found,
        "truth": n_truth,
    }
