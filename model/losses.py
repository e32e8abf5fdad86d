"""RoadNet's loss: class-balanced sigmoid cross-entropy on logits, plus an L2 term.

For one image with labels ``y`` in {0, 1} and logits ``z`` (``N`` pixels), with
``beta = |Y-| / N`` (the background fraction of that image)::

    bce(z, y) = mean( beta * y * softplus(-z) + (1 - beta) * (1 - y) * softplus(z) )

(``softplus(-z) = -log sigmoid(z)``, computed stably from the logits — the model outputs are
never put through a sigmoid first). An image with no positives has ``beta = 1``, so its
balanced term is zero. Per task::

    L_task = sum_k w_k * bce(side_k) + w_fused * bce(fused) + mean((sigmoid(fused) - y)^2)

with side weights ``[0.5, 0.75, 1.0, 0.75, 0.5]`` (surface) and ``[0.5, 0.75, 1.0, 0.75]``
(edge, centerline) and ``w_fused = 1``; the three task losses are summed and averaged over the
batch.

Optionally a task's fused output also carries a soft Jaccard term, ``w_jaccard * (1 - soft
IoU)`` per image with ``soft IoU = (sum(p y) + 1) / (sum(p) + sum(y) - sum(p y) + 1)`` and
``p = sigmoid(fused)``: the balanced term weights road pixels by the background share and
so rewards over-predicting road; the Jaccard term scores the overlap the pixel IoU measures.
Its weight is 0 (off) unless the training config sets ``jaccard_weight``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
from keras import ops

from roadnet.tasks import TASKS

__all__ = [
    "DEFAULT_SIDE_WEIGHTS",
    "BalancedSigmoidCrossEntropy",
    "balanced_bce",
    "compile_losses",
    "l2_on_probability",
    "roadnet_loss",
    "soft_jaccard",
    "task_loss",
]

DEFAULT_SIDE_WEIGHTS: dict[str, list[float]] = {
    "surface": [0.5, 0.75, 1.0, 0.75, 0.5],
    "edge": [0.5, 0.75, 1.0, 0.75],
    "centerline": [0.5, 0.75, 1.0, 0.75],
}
_IMAGE_AXES = (1, 2, 3)


def balanced_bce(y_true: Any, logits: Any) -> Any:
    """Class-balanced sigmoid cross-entropy per image.

    Args:
        y_true: ``(batch, H, W, 1)`` labels in {0, 1} (any numeric dtype).
        logits: ``(batch, H, W, 1)`` float32 logits.

    Returns:
        ``(batch,)`` float32: the balanced loss of each image (0 for an all-background image).
    """
    y = ops.cast(y_true, "float32")
    z = ops.cast(logits, "float32")
    beta = 1.0 - ops.mean(y, axis=_IMAGE_AXES, keepdims=True)
    per_pixel = beta * y * ops.softplus(-z) + (1.0 - beta) * (1.0 - y) * ops.softplus(z)
    return ops.mean(per_pixel, axis=_IMAGE_AXES)


def l2_on_probability(y_true: Any, logits: Any) -> Any:
    """Mean squared difference between ``sigmoid(logits)`` and the labels, per image.

    Args:
        y_true: ``(batch, H, W, 1)`` labels in {0, 1}.
        logits: ``(batch, H, W, 1)`` float32 logits.

    Returns:
        ``(batch,)`` float32.
    """
    y = ops.cast(y_true, "float32")
    p = ops.sigmoid(ops.cast(logits, "float32"))
    return ops.mean(ops.square(p - y), axis=_IMAGE_AXES)


def soft_jaccard(y_true: Any, logits: Any) -> Any:
    """``1 - soft IoU`` of ``sigmoid(logits)`` and the labels, per image (smoothed by 1 px).

    Args:
        y_true: ``(batch, H, W, 1)`` labels in {0, 1}.
        logits: ``(batch, H, W, 1)`` float32 logits.

    Returns:
        ``(batch,)`` float32 in [0, 1): 0 for a perfect prediction; an image without road
        scores ``sum(p) / (sum(p) + 1)``, so predicted road there still costs.
    """
    y = ops.cast(y_true, "float32")
    p = ops.sigmoid(ops.cast(logits, "float32"))
    inter = ops.sum(p * y, axis=_IMAGE_AXES)
    union = ops.sum(p, axis=_IMAGE_AXES) + ops.sum(y, axis=_IMAGE_AXES) - inter
    return 1.0 - (inter + 1.0) / (union + 1.0)


@keras.saving.register_keras_serializable(package="roadnet")
class BalancedSigmoidCrossEntropy(keras.losses.Loss):  # type: ignore[misc]
    """Keras loss: :func:`balanced_bce`, plus the L2 and soft Jaccard terms when weighted.

    ``l2_weight`` scales :func:`l2_on_probability` and ``jaccard_weight``
    :func:`soft_jaccard`. Side outputs use ``l2_weight=0``; fused outputs ``l2_weight=1``.
    Inputs are logits.
    """

    def __init__(
        self, *, l2_weight: float = 0.0, jaccard_weight: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.l2_weight = float(l2_weight)
        self.jaccard_weight = float(jaccard_weight)

    def call(self, y_true: Any, y_pred: Any) -> Any:  # noqa: D102
        loss = balanced_bce(y_true, y_pred)
        if self.l2_weight:
            loss = loss + self.l2_weight * l2_on_probability(y_true, y_pred)
        if self.jaccard_weight:
            loss = loss + self.jaccard_weight * soft_jaccard(y_true, y_pred)
        return loss

    def get_config(self) -> dict[str, Any]:  # noqa: D102
        return {
            **super().get_config(),
            "l2_weight": self.l2_weight,
            "jaccard_weight": self.jaccard_weight,
        }


def task_loss(
    y_true: Any,
    outputs: Mapping[str, Any],
    *,
    task: str,
    side_weights: Sequence[float] | None = None,
    fused_weight: float = 1.0,
    l2_weight: float = 1.0,
    jaccard_weight: float = 0.0,
) -> Any:
    """The loss of one task, averaged over the batch.

    Args:
        y_true: ``(batch, H, W, 1)`` labels of ``task`` in {0, 1}.
        outputs: the model's output dict of ``(batch, H, W, 1)`` logits.
        task: ``"surface"``, ``"edge"`` or ``"centerline"``.
        side_weights: one weight per side output; default :data:`DEFAULT_SIDE_WEIGHTS`.
        fused_weight: weight of the fused output's balanced term.
        l2_weight: weight of the L2 term on ``sigmoid(fused)``.
        jaccard_weight: weight of the soft Jaccard term on the fused output (0: none).

    Returns:
        A scalar float32 tensor.
    """
    weights = DEFAULT_SIDE_WEIGHTS[task] if side_weights is None else list(side_weights)
    total = fused_weight * balanced_bce(y_true, outputs[task])
    total = total + l2_weight * l2_on_probability(y_true, outputs[task])
    if jaccard_weight:
        total = total + jaccard_weight * soft_jaccard(y_true, outputs[task])
    for k, weight in enumerate(weights):
        total = total + weight * balanced_bce(y_true, outputs[f"{task}_side{k + 1}"])
    return ops.mean(total)


def roadnet_loss(
    labels: Mapping[str, Any],
    outputs: Mapping[str, Any],
    *,
    side_weights: Mapping[str, Sequence[float]] | None = None,
    fused_weight: float = 1.0,
    l2_weight: float = 1.0,
    jaccard_weights: Mapping[str, float] | None = None,
) -> Any:
    """The sum of the three task losses (scalar); ``labels`` maps task -> ``(batch, H, W, 1)``.

    ``jaccard_weights`` maps a task to its soft Jaccard weight; a task not named gets none.
    """
    weights = dict(DEFAULT_SIDE_WEIGHTS) if side_weights is None else dict(side_weights)
    jaccard = dict(jaccard_weights or {})
    return sum(
        task_loss(
            labels[task],
            outputs,
            task=task,
            side_weights=weights[task],
            fused_weight=fused_weight,
            l2_weight=l2_weight,
            jaccard_weight=jaccard.get(task, 0.0),
        )
        for task in TASKS
    )


def compile_losses(
    *,
    side_weights: Mapping[str, Sequence[float]] | None = None,
    fused_weight: float = 1.0,
    l2_weight: float = 1.0,
    jaccard_weights: Mapping[str, float] | None = None,
) -> tuple[dict[str, keras.losses.Loss], dict[str, float]]:
    """Per-output losses and loss weights for ``Model.compile`` that add up to :func:`roadnet_loss`.

    The fused output of a task carries the L2 and Jaccard terms; their weights are folded into
    the loss so that ``fused_weight`` scales the balanced term only.

    Returns:
        ``(losses, loss_weights)``, both keyed by output name.
    """
    weights = dict(DEFAULT_SIDE_WEIGHTS) if side_weights is None else dict(side_weights)
    jaccard = dict(jaccard_weights or {})
    losses: dict[str, keras.losses.Loss] = {}
    loss_weights: dict[str, float] = {}
    for task in TASKS:
        losses[task] = BalancedSigmoidCrossEntropy(
            l2_weight=l2_weight / fused_weight if fused_weight else 0.0,
            jaccard_weight=jaccard.get(task, 0.0) / fused_weight if fused_weight else 0.0,
            name=f"{task}_loss",
        )
        loss_weights[task] = float(fused_weight)
        for k, weight in enumerate(weights[task]):
            key = f"{task}_side{k + 1}"
            losses[key] = BalancedSigmoidCrossEntropy(l2_weight=0.0, name=f"{key}_loss")
            loss_weights[key] = float(weight)
    return losses, loss_weights
