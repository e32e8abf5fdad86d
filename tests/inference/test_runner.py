from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from _models import save_test_model, test_model_path

from roadnet.errors import ModelError
from roadnet.model.io import content_hash
from roadnet.pipeline.inference import runner as worker_model
from roadnet.pipeline.inference.runner import ModelRunner, fetch_model, validate_model

__all__ = ["test_model_path"]


def test_runner_is_small_caches_and_keeps_one_shape(test_model_path: Path) -> None:
    runner = ModelRunner(
        model=str(test_model_path), digest=content_hash(test_model_path), shape=(64, 48)
    )
    assert len(pickle.dumps(runner)) < 1000
    before = worker_model.loaded_model_count()
    runner.warm_up()
    out = runner(np.full((1, 64, 48, 3), 100, np.float32))
    assert out.shape == (64, 48, 3) and out.dtype == np.float32
    assert ((out > 0) & (out < 1)).all()
    # A second runner for the same file reuses the loaded model.
    ModelRunner(model=str(test_model_path), digest=runner.digest, shape=(32, 32)).warm_up()
    assert worker_model.loaded_model_count() <= before + 1
    with pytest.raises(Exception, match=r"(?i)shape|signature"):
        runner(np.zeros((1, 80, 48, 3), np.float32))


def test_changed_model_file_is_refused(tmp_path: Path) -> None:
    path = save_test_model(tmp_path / "m.keras")
    stale = ModelRunner(model=str(path), digest="0" * 16, shape=(32, 32))
    with pytest.raises(ModelError, match="changed"):
        stale.warm_up()


def test_model_from_url_is_fetched_once(
    tmp_path: Path, test_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROADNET_CACHE", str(tmp_path / "cache"))
    remote = tmp_path / "remote" / "model.keras"
    remote.parent.mkdir()
    shutil.copy(test_model_path, remote)
    local = fetch_model(f"file://{remote}")
    assert local.is_file() and local.read_bytes() == remote.read_bytes()
    assert validate_model(f"file://{remote}") == content_hash(remote)
    with pytest.raises(ModelError, match="cannot fetch"):
        fetch_model(f"file://{tmp_path}/nothing.keras")


def test_mixed_precision_copy_computes_in_float16_with_the_same_weights() -> None:
    # The GPU switch itself cannot run here; the copy it makes runs on the CPU too.
    # Loaded from a file, as on a worker: the saved float32 policies must be replaced.
    import keras

    from roadnet.model.io import default_model_path, load_model

    model = load_model(default_model_path())
    copy = worker_model.mixed_precision_model(model)
    convs = [layer for layer in copy._flatten_layers() if isinstance(layer, keras.layers.Conv2D)]
    assert convs and {layer.compute_dtype for layer in convs} == {"float16"}
    assert {w.dtype for w in copy.weights} == {"float32"}
    assert keras.mixed_precision.global_policy().name == "float32"  # left as it was
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    full, half = model(x, training=False), copy(x, training=False)
    for task in ("surface", "edge", "centerline"):
        assert half[task].dtype == "float16"
        p32 = 1 / (1 + np.exp(-np.asarray(full[task], np.float64)))
        p16 = 1 / (1 + np.exp(-np.asarray(half[task], np.float64)))
        assert np.abs(p32 - p16).max() < 0.02


def test_mixed_precision_without_a_gpu_keeps_float32(
    test_model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible: mixed precision applies")
    digest = content_hash(test_model_path)
    x = np.random.default_rng(1).uniform(0, 255, (1, 32, 48, 3)).astype(np.float32)
    plain = ModelRunner(model=str(test_model_path), digest=digest, shape=(32, 48))
    mixed = ModelRunner(
        model=str(test_model_path), digest=digest, shape=(32, 48), mixed_precision=True
    )
    with caplog.at_level("WARNING", logger="roadnet.pipeline.inference.runner"):
        out = mixed(x)
    assert "mixed precision applies to GPUs" in caplog.text
    assert np.array_equal(out, plain(x))
