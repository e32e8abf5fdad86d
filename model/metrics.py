"""Thresholded segmentation scores: Keras metrics for training, numpy functions for evaluation.

A pixel is predicted positive when ``sigmoid(logit) > threshold`` (``logit > logit(threshold)``
— the metrics take logits, like the losses). Scores of a binary mask against the truth:
precision ``tp / (tp + fp)``, recall ``tp / (tp + fn)``, F1 their harmonic mean, IoU
``tp / (tp + fp + fn)``; a score whose denominator is zero is 1.0 when prediction and truth are
both empty and 0.0 otherwise.

The *relaxed* variant (thin structures: edges, centerlines) counts a predicted pixel as correct
when a truth pixel lies within ``rho`` pixels of it (relaxed precision), and a truth pixel as
found when a predicted pixel lies within ``rho`` of it (relaxed recall).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import keras
import numpy as np
from keras import ops
from scipy import ndimage

from roadnet.model.roadnet import TASKS

__all__ = [
    "SCORES",
    "ThresholdedScore",
    "confusion_counts",
    "pixel_scores",
    "relaxed_scores",
    "scores_from_counts",
    "task_metrics",
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


def _within(mask: np.ndarray, rho: float) -> np.ndarray:
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
    pred_ok = int(np.count_nonzero(pred & _within(truth, rho)))
    truth_found = int(np.count_nonzero(truth & _within(pred, rho)))
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


@keras.saving.register_keras_serializable(package="roadnet")
class ThresholdedScore(keras.metrics.Metric):  # type: ignore[misc]
    """Streaming precision / recall / F1 / IoU of logits thresholded at ``sigmoid > threshold``.

    ``update_state(y_true, y_pred)`` takes ``(batch, H, W, 1)`` labels in {0, 1} and logits.
    """

    def __init__(
        self, score: Score = "f1", *, threshold: float = 0.5, name: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(name=name or score, **kwargs)
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.score = score
        self.threshold = float(threshold)
        self._logit_threshold = math.log(threshold / (1.0 - threshold))
        self.tp = self.add_variable(shape=(), initializer="zeros", name="tp")
        self.fp = self.add_variable(shape=(), initializer="zeros", name="fp")
        self.fn = self.add_variable(shape=(), initializer="zeros", name="fn")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:  # noqa: D102
        truth = ops.cast(ops.greater(ops.cast(y_true, "float32"), 0.5), "float32")
        pred = ops.cast(ops.greater(ops.cast(y_pred, "float32"), self._logit_threshold), "float32")
        tp = ops.sum(pred * truth)
        self.tp.assign_add(tp)
        self.fp.assign_add(ops.sum(pred) - tp)
        self.fn.assign_add(ops.sum(truth) - tp)

    def result(self) -> Any:  # noqa: D102
        tp, fp, fn = self.tp, self.fp, self.fn
        empty = ops.equal(tp + fp + fn, 0.0)
        if self.score == "precision":
            num, den = tp, tp + fp
        elif self.score == "recall":
            num, den = tp, tp + fn
        elif self.score == "f1":
            num, den = 2.0 * tp, 2.0 * tp + fp + fn
        else:
            num, den = tp, tp + fp + fn
        value = ops.divide(num, ops.maximum(den, 1.0))
        fallback = ops.where(empty, 1.0, 0.0)
        return ops.where(ops.greater(den, 0.0), value, fallback)

    def reset_state(self) -> None:  # noqa: D102
        for var in (self.tp, self.fp, self.fn):
            var.assign(0.0)

    def get_config(self) -> dict[str, Any]:  # noqa: D102
        return {**super().get_config(), "score": self.score, "threshold": self.threshold}


def task_metrics(*, threshold: float = 0.5) -> dict[str, list[ThresholdedScore]]:
    """Metrics for ``Model.compile``: each score per fused output, logged ``<task>_<score>``."""
    return {
        task: [ThresholdedScore(score, threshold=threshold, name=score) for score in SCORES]
        for task in TASKS
    }
