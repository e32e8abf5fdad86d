from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from roadnet.model.losses import (
    DEFAULT_SIDE_WEIGHTS,
    BalancedSigmoidCrossEntropy,
    balanced_bce,
    compile_losses,
    l2_on_probability,
    roadnet_loss,
    soft_jaccard,
    task_loss,
)
from roadnet.model.roadnet import ModelConfig, build_roadnet, output_names
from roadnet.tasks import TASKS

to_np = keras.ops.convert_to_numpy


def _np_balanced(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Hand-written reference with explicit logs of probabilities, per image."""
    out = []
    for yi, zi in zip(y, z, strict=True):
        p = 1.0 / (1.0 + np.exp(-zi.astype(np.float64)))
        beta = (yi == 0).sum() / yi.size
        terms = -(beta * yi * np.log(p) + (1 - beta) * (1 - yi) * np.log(1 - p))
        out.append(terms.mean())
    return np.array(out)


def _np_l2(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
    return ((p - y) ** 2).reshape(len(y), -1).mean(axis=1)


@pytest.fixture
def small() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = (rng.random((3, 4, 5, 1)) < 0.3).astype("float32")
    y[2] = 0.0  # an all-background image
    z = rng.normal(0, 2, (3, 4, 5, 1)).astype("float32")
    return y, z


def test_balanced_bce_matches_numpy_reference(small: tuple[np.ndarray, np.ndarray]) -> None:
    y, z = small
    got = to_np(balanced_bce(y, z))
    np.testing.assert_allclose(got, _np_balanced(y, z), rtol=1e-5)
    assert got[2] == 0.0  # no positives: the balanced term vanishes


def test_hand_computed_two_pixel_image() -> None:
    # one positive, one negative: beta = 1/2; logits 0 -> each pixel log(2) / 2
    y = np.array([1.0, 0.0], "float32").reshape(1, 1, 2, 1)
    z = np.zeros((1, 1, 2, 1), "float32")
    np.testing.assert_allclose(to_np(balanced_bce(y, z)), [0.5 * np.log(2)], rtol=1e-6)
    np.testing.assert_allclose(to_np(l2_on_probability(y, z)), [0.25], rtol=1e-6)


def test_all_background_image_is_only_the_l2_term() -> None:
    y = np.zeros((1, 3, 3, 1), "float32")
    z = np.full((1, 3, 3, 1), 2.0, "float32")
    loss = BalancedSigmoidCrossEntropy(l2_weight=1.0)
    expected = (1 / (1 + np.exp(-2.0))) ** 2
    np.testing.assert_allclose(float(loss(y, z)), expected, rtol=1e-6)


def test_loss_is_on_logits_not_probabilities() -> None:
    # a confident correct logit gives near-zero loss; feeding sigmoid(z) as if it were a
    # logit (the double-sigmoid bug) would leave a large loss
    y = np.array([1.0, 0.0], "float32").reshape(1, 1, 2, 1)
    z = np.array([12.0, -12.0], "float32").reshape(1, 1, 2, 1)
    assert float(balanced_bce(y, z)[0]) < 1e-4
    double = 1 / (1 + np.exp(-z))
    assert float(balanced_bce(y, double.astype("float32"))[0]) > 0.2


def test_task_and_total_loss_match_reference(small: tuple[np.ndarray, np.ndarray]) -> None:
    y, _ = small
    rng = np.random.default_rng(1)
    outputs = {name: rng.normal(0, 2, y.shape).astype("float32") for name in output_names()}
    labels = {task: y for task in TASKS}
    expected_tasks = {}
    for task in TASKS:
        per_image = _np_balanced(y, outputs[task]) + _np_l2(y, outputs[task])
        for k, w in enumerate(DEFAULT_SIDE_WEIGHTS[task]):
            per_image += w * _np_balanced(y, outputs[f"{task}_side{k + 1}"])
        expected_tasks[task] = per_image.mean()
        got = float(task_loss(y, outputs, task=task))
        np.testing.assert_allclose(got, expected_tasks[task], rtol=1e-5)
    total = float(roadnet_loss(labels, outputs))
    np.testing.assert_allclose(total, sum(expected_tasks.values()), rtol=1e-5)
    # the per-output losses given to Model.compile add up to the same total
    losses, weights = compile_losses()
    assert sorted(losses) == sorted(output_names())
    compiled = sum(weights[k] * float(losses[k](y, outputs[k])) for k in losses)
    np.testing.assert_allclose(compiled, total, rtol=1e-5)


def test_edge_and_centerline_losses_reach_the_surface_net() -> None:
    keras.utils.set_random_seed(0)
    model = build_roadnet(ModelConfig(name="tiny", width_multiplier=0.125))
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    y = (np.random.default_rng(1).random((1, 32, 32, 1)) < 0.2).astype("float32")
    surface_kernel = model.get_layer("surface_conv1_1").conv.kernel
    edge_kernel = model.get_layer("edge_conv1_1").conv.kernel
    for task in ("edge", "centerline"):
        with tf.GradientTape() as tape:
            loss = task_loss(y, model(x, training=True), task=task)
        grad_surface, grad_edge = tape.gradient(loss, [surface_kernel.value, edge_kernel.value])
        assert grad_surface is not None and float(tf.reduce_max(tf.abs(grad_surface))) > 0, task
        if task == "centerline":
            assert grad_edge is None  # the tasks are parallel heads on the surface net


def _np_jaccard(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
    inter = (p * y).reshape(len(y), -1).sum(axis=1)
    union = p.reshape(len(y), -1).sum(axis=1) + y.reshape(len(y), -1).sum(axis=1) - inter
    return 1.0 - (inter + 1.0) / (union + 1.0)


def test_soft_jaccard_matches_reference_and_rewards_overlap(
    small: tuple[np.ndarray, np.ndarray],
) -> None:
    y, z = small
    np.testing.assert_allclose(to_np(soft_jaccard(y, z)), _np_jaccard(y, z), rtol=1e-5)
    # a confident exact prediction costs nearly nothing; the same road predicted one pixel
    # off (half the overlap) costs about 1 - 1/3
    road = np.zeros((1, 8, 8, 1), "float32")
    road[0, :, 2:4] = 1.0
    exact = np.where(road > 0, 20.0, -20.0).astype("float32")
    shifted = np.roll(exact, 1, axis=2)
    assert float(soft_jaccard(road, exact)[0]) < 1e-3
    np.testing.assert_allclose(float(soft_jaccard(road, shifted)[0]), 1 - 9 / 25, rtol=1e-3)


def test_jaccard_weight_adds_its_term_to_the_fused_output_only(
    small: tuple[np.ndarray, np.ndarray],
) -> None:
    y, _ = small
    rng = np.random.default_rng(2)
    outputs = {name: rng.normal(0, 2, y.shape).astype("float32") for name in output_names()}
    labels = {task: y for task in TASKS}
    plain = float(roadnet_loss(labels, outputs))
    weights = {"surface": 0.5}
    with_jaccard = float(roadnet_loss(labels, outputs, jaccard_weights=weights))
    expected = plain + 0.5 * _np_jaccard(y, outputs["surface"]).mean()
    np.testing.assert_allclose(with_jaccard, expected, rtol=1e-5)
    losses, loss_weights = compile_losses(fused_weight=2.0, jaccard_weights=weights)
    total = float(roadnet_loss(labels, outputs, fused_weight=2.0, jaccard_weights=weights))
    compiled = sum(loss_weights[k] * float(losses[k](y, outputs[k])) for k in losses)
    np.testing.assert_allclose(compiled, total, rtol=1e-5)
    assert losses["surface"].get_config()["jaccard_weight"] == 0.25  # folded by fused_weight
    assert losses["surface_side1"].get_config()["jaccard_weight"] == 0.0
