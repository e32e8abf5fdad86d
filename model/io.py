"""Load and identify saved RoadNet models.

The one place that turns a ``.keras`` path into a model: custom layers are registered first,
loading is ``safe_mode=True`` (no arbitrary code), and every failure is a ``ModelError``.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from pathlib import Path
from typing import Any

from roadnet.errors import ModelError

__all__ = ["DEFAULT_MODEL_NAME", "content_hash", "default_model_path", "load_model"]

DEFAULT_MODEL_NAME = "roadnet-lite.keras"


def default_model_path() -> Path:
    """Return the path of the shipped default model (installed as package data)."""
    return Path(str(importlib.resources.files("roadnet.model").joinpath("weights"))) / (
        DEFAULT_MODEL_NAME
    )


def content_hash(path: str | Path, *, length: int = 16) -> str:
    """Return the first ``length`` hex digits of the SHA-256 of a model file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def _register_custom_objects() -> None:
    """Import every module that registers a serializable roadnet layer or model."""
    importlib.import_module("roadnet.model.layers")


def load_model(path: str | Path | None = None, *, compile: bool = False) -> Any:
    """Load a saved model (``.keras``) with ``safe_mode=True``; None loads the default model.

    Args:
        path: the ``.keras`` file.
        compile: restore the saved optimizer, loss and metrics too (resuming training);
            inference needs none of them.

    Returns:
        A ``keras.Model`` mapping ``(batch, H, W, bands)`` float32 to a dict of logits.

    Raises:
        ModelError: the file is missing or is not a loadable roadnet model.
    """
    path = Path(path) if path is not None else default_model_path()
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    if path.suffix != ".keras":
        raise ModelError(f"model file must be a .keras archive: {path}")
    import keras

    _register_custom_objects()
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as exc:
        raise ModelError(f"cannot load model {path}: {type(exc).__name__}: {exc}") from exc
