"""The colour-threshold baseline: the best IoU any colour interval rule reaches on a scene."""

from __future__ import annotations

import numpy as np


def best_interval_iou(
    values: np.ndarray, truth: np.ndarray, bins: int, total: int | None = None
) -> float:
    """Best IoU of any rule ``lo <= value <= hi`` (values are integer bins).

    ``total`` is the number of road pixels the IoU counts (default: those in ``truth``).
    """
    pos = np.bincount(values[truth], minlength=bins).astype(float)
    neg = np.bincount(values[~truth], minlength=bins).astype(float)
    cp = np.concatenate([[0.0], np.cumsum(pos)])
    cn = np.concatenate([[0.0], np.cumsum(neg)])
    lo, hi = np.triu_indices(bins)
    road = truth.sum() if total is None else total
    iou = (cp[hi + 1] - cp[lo]) / (road + cn[hi + 1] - cn[lo])
    return float(iou.max())


def best_hsv_iou(rgb: np.ndarray, truth: np.ndarray, q: int = 32) -> float:
    """Best IoU of ``saturation <= s and v_lo <= value <= v_hi`` (quantized to q levels)."""
    top = rgb.max(axis=-1).astype(float)
    sat = np.where(top > 0, (top - rgb.min(axis=-1)) / np.maximum(top, 1.0), 0.0)
    s = np.minimum((sat * q).astype(int), q - 1)
    v = (top * q / 256).astype(int)
    best = 0.0
    for smax in range(q):
        keep = s <= smax
        best = max(best, best_interval_iou(v[keep], truth[keep], q, total=int(truth.sum())))
    return best
