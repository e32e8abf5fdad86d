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


def test_mixed_precision_on_a_cpu_worker_is_bfloat16_where_the_cpu_has_it(
    test_model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import tensorflow as tf

    from roadnet.model.precision import cpu_has_bfloat16

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible: float16 applies")
    digest = content_hash(test_model_path)
    x = np.random.default_rng(1).uniform(0, 255, (1, 32, 48, 3)).astype(np.float32)
    plain = ModelRunner(model=str(test_model_path), digest=digest, shape=(32, 48))
    mixed = ModelRunner(
        model=str(test_model_path), digest=digest, shape=(32, 48), mixed_precision=True
    )
    with caplog.at_level("INFO", logger="roadnet.pipeline.inference.runner"):
        out = mixed(x)
    assert out.dtype == np.float32 and out.shape == (32, 48, 3)
    if cpu_has_bfloat16():  # this machine's branch: AMX / AVX-512 BF16
        assert "bfloat16" in caplog.text
        difference = np.abs(out - plain(x))
        assert 0 < difference.max() < 0.1
    else:
        assert "float32 kept" in caplog.text
        assert np.array_equal(out, plain(x))


def test_cpu_flags_with_bfloat16_are_recognized() -> None:
    from roadnet.model.precision import cpu_flags_have_bfloat16

    base = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f"
    assert not cpu_flags_have_bfloat16(base + "\n")
    assert cpu_flags_have_bfloat16(base + " amx_tile amx_bf16\n")
    assert cpu_flags_have_bfloat16(base + " avx512_bf16\n")
    assert not cpu_flags_have_bfloat16("model name\t: avx512_bf16 in the name\n")
