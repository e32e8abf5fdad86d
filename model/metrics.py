"""Thresholded segmentation scores as Keras metrics, for training.

A pixel is predicted positive when ``sigmoid(logit) > threshold`` (``logit > logit(threshold)``
— the metrics take logits, like the losses); the scores are those of :mod:`roadnet.metrics`.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from roadnet.metrics import SCORES, Score
from roadnet.tasks import TASKS

__all__ = ["ThresholdedScore", "task_metrics"]


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
