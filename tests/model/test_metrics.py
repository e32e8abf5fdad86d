from __future__ import annotations

import keras
import numpy as np
import pytest

from roadnet.model.metrics import (
    ThresholdedScore,
    pixel_scores,
    relaxed_scores,
    scores_from_counts,
    task_metrics,
)


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


def test_keras_metric_thresholds_logits_and_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((2, 8, 8, 1)) < 0.4).astype("float32")
    z = rng.normal(0, 2, (2, 8, 8, 1)).astype("float32")
    expected = pixel_scores(z > 0, y > 0)  # sigmoid(z) > 0.5  <=>  z > 0
    for score in ("precision", "recall", "f1", "iou"):
        metric = ThresholdedScore(score)
        metric.update_state(y[:1], z[:1])
        metric.update_state(y[1:], z[1:])  # streaming over batches
        assert float(metric.result()) == pytest.approx(expected[score], rel=1e-6)
    strict = ThresholdedScore("precision", threshold=0.9)
    strict.update_state(y, z)
    assert float(strict.result()) == pytest.approx(
        pixel_scores(z > np.log(9.0), y > 0)["precision"], rel=1e-6
    )


def test_metric_rejects_bad_arguments_and_roundtrips() -> None:
    with pytest.raises(ValueError, match="score"):
        ThresholdedScore("accuracy")  # type: ignore[arg-type]
    m = ThresholdedScore("iou", threshold=0.3, name="surface_iou")
    clone = keras.metrics.deserialize(keras.metrics.serialize(m))
    assert clone.score == "iou" and clone.threshold == 0.3
    assert sorted(task_metrics()) == ["centerline", "edge", "surface"]


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
