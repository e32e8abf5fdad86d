from __future__ import annotations

import keras
import numpy as np
import pytest

from roadnet.metrics import pixel_scores
from roadnet.model.metrics import ThresholdedScore, task_metrics


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
