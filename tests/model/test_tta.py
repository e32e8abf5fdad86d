from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from _models import build_test_model, test_model_path

from roadnet.errors import InputError
from roadnet.model.evaluate import predict_scene
from roadnet.model.io import content_hash
from roadnet.model.tta import TTA_VIEWS, check_tta, tta_probabilities, view_forward, view_inverse
from roadnet.pipeline.inference.runner import ModelRunner
from roadnet.tasks import TASKS

__all__ = ["test_model_path"]

to_np = keras.ops.convert_to_numpy


def _image(height: int, width: int, *, seed: int = 0) -> np.ndarray:
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.uniform(0, 255, (height, width, 3)), (2, 2, 0))
    return ((img - img.min()) / np.ptp(img) * 255).astype(np.float32)


def test_views_are_the_eight_distinct_symmetries_and_each_inverts() -> None:
    x = np.arange(2 * 5 * 5 * 1, dtype=np.float32).reshape(2, 5, 5, 1)
    seen = set()
    for view in TTA_VIEWS:
        moved = to_np(view_forward(x, view))
        seen.add(moved.tobytes())
        np.testing.assert_array_equal(to_np(view_inverse(moved, view)), x)
    assert len(seen) == 8


def test_tta_is_a_no_op_for_a_pointwise_model_and_symmetrizes_a_position_bias() -> None:
    x = _image(16, 16)[None]

    def pointwise(batch):  # type: ignore[no-untyped-def]
        logit = (batch[..., :1] - 128.0) / 32.0
        return {task: logit for task in TASKS}

    for tta in (1, 2, 4, 8):
        got = tta_probabilities(pointwise, x, tta=tta)
        want = 1 / (1 + np.exp(-(x[..., :1].astype(np.float64) - 128.0) / 32.0))
        np.testing.assert_allclose(to_np(got["surface"]), want, atol=1e-6)

    ramp = np.linspace(-3, 3, 16, dtype=np.float32)[None, None, :, None]

    def biased(batch):  # type: ignore[no-untyped-def]
        # looks only at the column: a model that prefers the right side of every tile
        logit = np.broadcast_to(ramp, (int(batch.shape[0]), 16, 16, 1))
        return {task: keras.ops.convert_to_tensor(logit) for task in TASKS}

    plain = to_np(tta_probabilities(biased, x, tta=1)["edge"])[0, ..., 0]
    mirrored = to_np(tta_probabilities(biased, x, tta=2)["edge"])[0, ..., 0]
    assert plain[0, -1] > 0.9 and plain[0, 0] < 0.1
    np.testing.assert_allclose(mirrored, mirrored[:, ::-1], atol=1e-6)
    np.testing.assert_allclose(mirrored, 0.5, atol=1e-6)  # the sigmoid of an odd ramp


def test_tta_values_are_checked() -> None:
    for bad in (0, 3, 16):
        with pytest.raises(InputError, match="tta must be one of"):
            check_tta(bad)
    with pytest.raises(InputError, match="square"):
        check_tta(8, shape=(64, 48))
    assert check_tta(8, shape=(64, 64)) == 8


def test_predict_scene_with_tta_is_the_mean_of_the_views() -> None:
    model = build_test_model()
    image = _image(96, 96, seed=3)  # one tile of 128 px with a 16 px margin: symmetric padding
    plain = predict_scene(model, image, tile=128, margin=16)
    mirror = predict_scene(model, image[:, ::-1].copy(), tile=128, margin=16)
    two = predict_scene(model, image, tile=128, margin=16, tta=2)
    for task in TASKS:
        want = (plain[task] + mirror[task][:, ::-1]) / 2
        np.testing.assert_allclose(two[task], want, atol=1e-5)
        assert np.abs(two[task] - plain[task]).max() > 1e-3  # the model is not symmetric


def test_model_runner_with_tta_averages_the_views(test_model_path: Path) -> None:
    digest = content_hash(test_model_path)
    x = _image(64, 64, seed=5)[None]
    plain = ModelRunner(model=str(test_model_path), digest=digest, shape=(64, 64))
    four = ModelRunner(model=str(test_model_path), digest=digest, shape=(64, 64), tta=4)
    views = [plain(np.ascontiguousarray(to_np(view_forward(x, v)))) for v in TTA_VIEWS[:4]]
    want = np.mean(
        [to_np(view_inverse(p[None], v))[0] for p, v in zip(views, TTA_VIEWS, strict=False)],
        axis=0,
    )
    np.testing.assert_allclose(four(x), want, atol=1e-5)
    assert np.abs(four(x) - views[0]).max() > 1e-3
