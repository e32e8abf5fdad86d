"""Batch-normalization statistics re-estimated on target imagery (real Keras, tiny RoadNet)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from _models import smooth_scene

from roadnet.model.adapt import (
    adapt_batchnorm,
    band_statistics,
    batchnorm_layers,
    batchnorm_statistics,
    match_input,
    restore_batchnorm,
    statistics_shift,
)
from roadnet.model.roadnet import ModelConfig, build_roadnet

TINY = ModelConfig(name="tiny", width_multiplier=0.125)


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_roadnet(TINY)


def _images(n: int = 6, size: int = 32, seed: int = 0) -> np.ndarray:
    """Hazy, pale tiles: statistics far from the ones a fresh network starts with."""
    tiles = [smooth_scene(size, size, seed=seed + i).transpose(1, 2, 0) for i in range(n)]
    return (0.4 * np.stack(tiles) + 140.0).astype(np.float32)


def _weights(model: keras.Model) -> dict[str, np.ndarray]:
    return {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}


def test_first_layer_statistics_are_the_mean_of_its_batch_statistics() -> None:
    model, images = _model(), _images()
    block = model.get_layer("surface_conv1_1")
    before = keras.Model(model.inputs, block.input)  # the normalized input of the block
    z = keras.ops.convert_to_numpy(block.conv(before(images)))
    batches = [z[i : i + 4] for i in range(0, len(z), 4)]  # 4 + 2 tiles
    mean = np.mean([b.mean(axis=(0, 1, 2)) for b in batches], axis=0)
    var = np.mean([b.var(axis=(0, 1, 2)) for b in batches], axis=0)
    assert adapt_batchnorm(model, images, batch_size=4) == len(batchnorm_layers(model)) > 20
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(block.bn.moving_mean), mean, rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(block.bn.moving_variance), var, rtol=1e-3, atol=1e-5
    )


def test_only_the_statistics_change_and_strength_blends_them() -> None:
    images = _images()
    base = _model()
    start = _weights(base)
    full, half, none = _model(), _model(), _model()
    adapt_batchnorm(full, images, strength=1.0)
    adapt_batchnorm(half, images, strength=0.5)
    adapt_batchnorm(none, images, strength=0.0)
    after, halfway = _weights(full), _weights(half)
    stats = {k for k in start if k.endswith(("moving_mean", "moving_variance"))}
    assert len(stats) == 2 * len(batchnorm_layers(base))
    for key, value in start.items():
        if key in stats:
            np.testing.assert_allclose(halfway[key], (value + after[key]) / 2, rtol=1e-5, atol=1e-6)
        else:  # learned weights untouched
            np.testing.assert_array_equal(after[key], value)
    assert any(not np.allclose(after[k], start[k]) for k in stats)
    for key, value in _weights(none).items():
        np.testing.assert_array_equal(value, start[key])
    assert all(bn.momentum == 0.99 for bn in batchnorm_layers(full))  # restored


def test_adaptation_moves_the_outputs_on_that_imagery() -> None:
    images = _images()
    model = _model()
    before = keras.ops.convert_to_numpy(model(images[:2], training=False)["surface"])
    adapt_batchnorm(model, images)
    after = keras.ops.convert_to_numpy(model(images[:2], training=False)["surface"])
    assert np.abs(after - before).max() > 1e-3
    with pytest.raises(ValueError, match="strength"):
        adapt_batchnorm(model, images, strength=1.5)
    with pytest.raises(ValueError, match="no images"):
        adapt_batchnorm(model, images[:0])


def test_statistics_shift_measures_means_in_deviations_and_spreads_in_log_ratio() -> None:
    trained = [(np.zeros(4), np.full(4, 4.0)), (np.ones(2), np.ones(2))]
    assert statistics_shift(trained, trained) == 0.0
    moved = [(np.full(4, 2.0), np.full(4, 4.0)), (np.ones(2), np.ones(2))]  # one deviation
    assert statistics_shift(trained, moved, epsilon=0.0) == pytest.approx(0.5)
    wider = [(np.zeros(4), np.full(4, 4.0)), (np.ones(2), np.full(2, np.e**2))]  # log 1
    assert statistics_shift(trained, wider, epsilon=0.0) == pytest.approx(0.5)
    both = [(np.full(4, 2.0), np.full(4, 4.0 * np.e**2)), (np.ones(2), np.ones(2))]
    assert statistics_shift(trained, both, epsilon=0.0) == pytest.approx(0.5 * np.sqrt(2))
    assert statistics_shift([], []) == 0.0  # no batch normalization: nothing to shift
    with pytest.raises(ValueError, match="different"):
        statistics_shift(trained, trained[:1])


def test_matched_input_makes_the_model_see_the_recoloured_scene() -> None:
    model = _model()
    scene = _images(seed=3) * np.array([0.5, 0.8, 1.1], np.float32) + 20  # a cast camera
    training = ([100.0, 98.0, 90.0], [35.0, 32.0, 30.0])
    mean, std = band_statistics(scene)
    recoloured = (scene - np.array(mean)) / np.array(std) * np.array(training[1]) + np.array(
        training[0]
    )
    before = model(recoloured.astype(np.float32), training=False)["surface"]
    match_input(model, scene=(mean, std), training=training)
    after = model(scene.astype(np.float32), training=False)["surface"]
    np.testing.assert_allclose(np.asarray(after), np.asarray(before), rtol=1e-4, atol=1e-4)
    # the normalization is in the model's config, so a saved copy keeps it
    assert keras.models.clone_model(model).get_layer("normalize").mean != [127.5] * 3
    with pytest.raises(ValueError, match="band counts"):
        match_input(model, scene=(mean[:2], std[:2]), training=training)
    with pytest.raises(ValueError, match="spread"):
        match_input(model, scene=(mean, [0.0, 1.0, 1.0]), training=training)


def test_batchnorm_statistics_are_restored_exactly() -> None:
    model = _model()
    trained = batchnorm_statistics(model)
    adapt_batchnorm(model, _images())
    assert statistics_shift(trained, batchnorm_statistics(model)) > 0
    restore_batchnorm(model, trained)
    assert statistics_shift(trained, batchnorm_statistics(model)) == 0
