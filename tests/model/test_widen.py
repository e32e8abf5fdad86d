from __future__ import annotations

import numpy as np
import pytest

from roadnet.model.roadnet import ModelConfig, build_roadnet
from roadnet.model.widen import widen_into


def _logits(model: object, x: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in model(x, training=False).items()}  # type: ignore[operator]


@pytest.fixture(scope="module")
def narrow_and_input() -> tuple[object, np.ndarray]:
    import keras

    keras.utils.set_random_seed(5)
    narrow = build_roadnet(ModelConfig(name="n", width_multiplier=0.0625))
    # trained-looking batch-norm statistics, so the copies must carry them along
    for layer in narrow.layers:
        bn = getattr(layer, "bn", None)
        if bn is not None:
            rng = np.random.default_rng(len(layer.name))
            shape = bn.moving_mean.shape
            bn.moving_mean.assign(rng.normal(0, 0.5, shape))
            bn.moving_variance.assign(rng.uniform(0.5, 2.0, shape))
            bn.gamma.assign(rng.uniform(0.5, 1.5, shape))
            bn.beta.assign(rng.normal(0, 0.2, shape))
    x = np.random.default_rng(0).uniform(0, 255, (1, 48, 64, 3)).astype(np.float32)
    return narrow, x


@pytest.mark.parametrize("multiplier", [0.125, 0.1])  # doubled, and uneven (4 -> 6 channels)
def test_widened_model_computes_the_narrow_ones_logits(
    narrow_and_input: tuple[object, np.ndarray], multiplier: float
) -> None:
    narrow, x = narrow_and_input
    wide = build_roadnet(ModelConfig(name="w", width_multiplier=multiplier))
    widen_into(narrow, wide, seed=1)  # type: ignore[arg-type]
    assert wide.count_params() > narrow.count_params()  # type: ignore[attr-defined]
    before, after = _logits(narrow, x), _logits(wide, x)
    assert set(before) == set(after)
    for name, value in before.items():
        scale = float(np.abs(value).max())
        assert scale > 0.1, name  # the outputs are not trivially zero
        assert np.abs(after[name] - value).max() < 1e-4 * max(1.0, scale), name


def test_copies_get_different_shares_so_training_can_separate_them(
    narrow_and_input: tuple[object, np.ndarray],
) -> None:
    narrow, _ = narrow_and_input
    wide = build_roadnet(ModelConfig(name="w", width_multiplier=0.125))
    widen_into(narrow, wide, seed=1)  # type: ignore[arg-type]
    old = np.asarray(narrow.get_layer("surface_conv1_2").conv.kernel)  # type: ignore[attr-defined]
    new = np.asarray(wide.get_layer("surface_conv1_2").conv.kernel)
    n = old.shape[2]  # 4 old input channels, each copied twice
    np.testing.assert_allclose(new[:, :, :n] + new[:, :, n:], old[..., np.arange(8) % 4], atol=1e-6)
    assert not np.allclose(new[:, :, :n], new[:, :, n:])
    # the incoming side of a copy is its original's, exactly
    first = np.asarray(wide.get_layer("surface_conv1_1").conv.kernel)
    np.testing.assert_array_equal(first[..., :n], first[..., n:])


def test_narrower_or_other_layouts_are_refused(
    narrow_and_input: tuple[object, np.ndarray],
) -> None:
    narrow, _ = narrow_and_input
    narrower = build_roadnet(ModelConfig(name="t", width_multiplier=0.03))
    with pytest.raises(ValueError, match="cannot widen"):
        widen_into(narrow, narrower)  # type: ignore[arg-type]
    deeper = build_roadnet(
        ModelConfig(name="d", width_multiplier=0.125, surface_convs=[2, 2, 3, 3, 4])
    )
    with pytest.raises(ValueError, match="different layers"):
        widen_into(narrow, deeper)  # type: ignore[arg-type]
