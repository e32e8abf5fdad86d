from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from _models import save_test_model, test_model_path

from roadnet.errors import ModelError
from roadnet.model.io import content_hash
from roadnet.pipeline import worker_model
from roadnet.pipeline.worker_model import ModelRunner, fetch_model, validate_model

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
