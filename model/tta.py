"""Test-time augmentation: average the model's probabilities over flipped and turned views.

A view is one of the eight symmetries of the square (the dihedral group D4) written as
``(transpose, flip left-right, flip up-down)``, applied in that order; its inverse applies
the flips first, then the transpose. Every view of a pixel grid is exact (no resampling),
so the averaged probabilities stay on the input's pixels and tile borders stay where they
were: the blend of ``roadnet run`` sees nothing different.

``tta`` counts the views, nested so that more views always include the fewer:

* 1: the image as it is;
* 2: plus its left-right mirror;
* 4: plus the up-down mirror and the half turn;
* 8: plus the transpose and the quarter turns (square inputs only).

The model sees ``tta`` times the pixels; the views go through it as one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from keras import ops

from roadnet.errors import InputError
from roadnet.tasks import TASKS

__all__ = ["TTA_VIEWS", "View", "check_tta", "tta_probabilities", "view_forward", "view_inverse"]

View = tuple[bool, bool, bool]  # transpose, flip left-right, flip up-down

TTA_VIEWS: tuple[View, ...] = (
    (False, False, False),
    (False, True, False),
    (False, False, True),
    (False, True, True),
    (True, False, False),
    (True, True, False),
    (True, False, True),
    (True, True, True),
)
"""The eight views in the order ``tta`` takes them."""

_ALLOWED = (1, 2, 4, 8)


def check_tta(tta: int, *, shape: tuple[int, int] | None = None) -> int:
    """``tta`` if it is 1, 2, 4 or 8 (and, for 8, ``shape`` is square); else InputError."""
    if tta not in _ALLOWED:
        raise InputError(f"tta must be one of {', '.join(map(str, _ALLOWED))}, got {tta}")
    if tta == 8 and shape is not None and shape[0] != shape[1]:
        raise InputError(f"tta 8 turns the input a quarter: it needs square tiles, not {shape}")
    return tta


def view_forward(x: Any, view: View) -> Any:
    """Apply ``view`` to ``(batch, H, W, C)`` ``x``."""
    transpose, flip_lr, flip_ud = view
    if transpose:
        x = ops.transpose(x, (0, 2, 1, 3))
    if flip_lr:
        x = ops.flip(x, axis=2)
    if flip_ud:
        x = ops.flip(x, axis=1)
    return x


def view_inverse(x: Any, view: View) -> Any:
    """Undo ``view`` on ``(batch, H, W, C)`` ``x``: ``view_inverse(view_forward(x, v), v) == x``."""
    transpose, flip_lr, flip_ud = view
    if flip_ud:
        x = ops.flip(x, axis=1)
    if flip_lr:
        x = ops.flip(x, axis=2)
    if transpose:
        x = ops.transpose(x, (0, 2, 1, 3))
    return x


def tta_probabilities(
    forward: Callable[[Any], Mapping[str, Any]], x: Any, *, tta: int
) -> dict[str, Any]:
    """Probabilities of each task, the mean over ``tta`` views of ``x``.

    Args:
        forward: the model call, ``(batch, H, W, 3)`` to a mapping of logits per output name
            (``(batch, H, W, 1)`` for each task in :data:`~roadnet.tasks.TASKS`).
        x: ``(batch, H, W, 3)`` input.
        tta: 1, 2, 4 or 8 views (8 needs ``H == W``).

    Returns:
        ``{task: (batch, H, W, 1) float32}`` probabilities (a sigmoid of the logits, then the
        mean over the views).
    """
    check_tta(tta, shape=(int(x.shape[1]), int(x.shape[2])))
    views = TTA_VIEWS[:tta]
    batch = int(x.shape[0])
    stacked = ops.concatenate([view_forward(x, v) for v in views], axis=0) if tta > 1 else x
    out = forward(stacked)
    probs: dict[str, Any] = {}
    for task in TASKS:
        p = ops.sigmoid(ops.cast(out[task], "float32"))
        back = [view_inverse(p[i * batch : (i + 1) * batch], v) for i, v in enumerate(views)]
        probs[task] = back[0] if tta == 1 else ops.mean(ops.stack(back, axis=0), axis=0)
    return probs
