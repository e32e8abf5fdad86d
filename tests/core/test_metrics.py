from __future__ import annotations

import numpy as np
import pytest

from roadnet.metrics import pixel_scores, relaxed_scores, scores_from_counts


def test_pixel_scores_by_hand() -> None:
    truth = np.zeros((4, 4), bool)
    truth[:2, :2] = True  # 4 truth pixels
    pred = np.zeros((4, 4), bool)
    pred[:2, 1:3] = True  # 2 right, 2 wrong
    s = pixel_scores(pred, truth)
    assert (s["tp"], s["fp"], s["fn"]) == (2, 2, 2)
    assert s["precision"] == 0.5 and s["recall"] == 0.5 and s["f1"] == 0.5
    assert s["iou"] == pytest.approx(2 / 6)


def test_empty_masks() -> None:
    assert scores_from_counts(0, 0, 0)["iou"] == 1.0
    assert scores_from_counts(0, 0, 5) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "iou": 0.0}
    with pytest.raises(ValueError, match="shape"):
        pixel_scores(np.zeros((2, 2), bool), np.zeros((3, 2), bool))


def test_relaxed_scores_tolerate_small_offsets() -> None:
    truth = np.zeros((20, 20), bool)
    truth[10, 2:18] = True
    shifted = np.roll(truth, 2, axis=0)  # a line 2 px off
    assert pixel_scores(shifted, truth)["f1"] == 0.0
    relaxed = relaxed_scores(shifted, truth, rho=2)
    assert relaxed["precision"] == 1.0 and relaxed["recall"] == 1.0 and relaxed["f1"] == 1.0
    far = np.roll(truth, 3, axis=0)
    assert relaxed_scores(far, truth, rho=2)["f1"] == 0.0
    half = truth.copy()
    half[10, 10:] = False
    r = relaxed_scores(half, truth, rho=2)
    assert r["precision"] == 1.0 and r["recall"] == pytest.approx(10 / 16)


@pytest.mark.parametrize("rho", [1.0, 1.5, 2.0, 3.0])
def test_relaxed_scores_equal_the_distance_transform_definition(rho: float) -> None:
    from scipy import ndimage

    rng = np.random.default_rng(int(rho * 10))
    truth = rng.random((40, 50)) < 0.05
    pred = rng.random((40, 50)) < 0.08
    near_truth = ndimage.distance_transform_edt(~truth) <= rho
    near_pred = ndimage.distance_transform_edt(~pred) <= rho
    got = relaxed_scores(pred, truth, rho=rho)
    assert got["precision"] == pytest.approx((pred & near_truth).sum() / pred.sum())
    assert got["recall"] == pytest.approx((truth & near_pred).sum() / truth.sum())
