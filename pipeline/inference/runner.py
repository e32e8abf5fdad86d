"""The model inside a worker process: loaded once, called one block at a time, one shape.

The task graph carries only a :class:`ModelRunner` (a path or URL, the file's content hash and
the input shape — a few hundred bytes). On first use in a process it configures TensorFlow
(threads matched to the worker's cores, GPU memory growth, optional mixed precision), loads
the model with :func:`roadnet.model.io.load_model` and traces one ``tf.function`` for the
fixed input shape. Later calls reuse it. A process-wide lock lets one model call run at a
time (Keras models are not thread-safe); dask threads keep reading, blending and writing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roadnet.errors import ModelError
from roadnet.model.io import content_hash, load_model
from roadnet.model.precision import cpu_has_bfloat16, with_policy
from roadnet.model.runtime import configure_tensorflow
from roadnet.paths import is_url
from roadnet.tasks import TASKS

__all__ = ["ModelRunner", "fetch_model", "mixed_precision_model", "validate_model"]

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str], Any] = {}
_FUNCTIONS: dict[tuple[str, str, tuple[int, int], int, bool, int], Any] = {}
_CALLS: list[int] = [0]


def fetch_model(model: str) -> Path:
    """Local path of a model given as a path or an fsspec URL (copied to a local cache)."""
    if not is_url(model):
        return Path(model)
    import fsspec

    cache = Path(os.environ.get("ROADNET_CACHE", Path.home() / ".cache" / "roadnet")) / "models"
    cache.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(model.encode()).hexdigest()[:16]
    local = cache / f"{key}-{Path(model.split('?')[0]).name}"
    if not local.is_file():
        tmp = local.with_suffix(f".tmp-{os.getpid()}")
        try:
            with fsspec.open(model, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot fetch model {model}: {exc}") from exc
        tmp.replace(local)
    return local


def _worker_threads() -> int | None:
    """Cores this process may use: the dask worker's thread count, or ROADNET_TF_THREADS."""
    env = os.environ.get("ROADNET_TF_THREADS")
    if env:
        return int(env)
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError):
        return None


def mixed_precision_model(model: Any) -> Any:
    """A copy of a loaded model that computes in float16 and keeps float32 weights.

    See :func:`roadnet.model.precision.with_policy`: the saved float32 layer policies are
    replaced, so outputs are float16 logits.
    """
    return with_policy(model, "mixed_float16")


def _mixed_precision_for_this_worker(model: Any) -> Any:
    """float16 on a GPU, bfloat16 on a CPU that computes it natively, else float32 (warned)."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return mixed_precision_model(model)
    if cpu_has_bfloat16():
        log.info("mixed precision on this CPU: bfloat16 (AMX / AVX-512 BF16)")
        return with_policy(model, "mixed_bfloat16")
    log.warning(
        "mixed precision needs a GPU or a CPU with bfloat16 (AMX, AVX-512 BF16); float32 kept"
    )
    return model


def model_call_count() -> int:
    """How many model calls this process has made (warm-ups and probes included).

    For tests and benchmarks; not part of the public API (not in ``__all__``).
    """
    return _CALLS[0]


def loaded_model_count() -> int:
    """How many models this process has loaded (each load is cached for reuse).

    For tests; not part of the public API (not in ``__all__``).
    """
    return len(_MODELS)


@dataclass(frozen=True)
class ModelRunner:
    """A picklable handle to the model; calling it predicts one fixed-shape batch.

    Attributes:
        model: local path or fsspec URL of the ``.keras`` file, readable by every worker.
        digest: the file's :func:`roadnet.model.io.content_hash`; checked when loading.
        shape: the one ``(H, W)`` input shape (multiples of 16).
        bands: input channels.
        mixed_precision: compute in ``mixed_float16`` on a GPU, ``mixed_bfloat16`` on a CPU
            with native bfloat16; float32 elsewhere.
        tta: views averaged per block (1, 2, 4 or 8; :mod:`roadnet.model.tta`).
    """

    model: str
    digest: str
    shape: tuple[int, int]
    bands: int = 3
    mixed_precision: bool = False
    tta: int = 1

    def _function(self) -> Any:
        key = (self.model, self.digest, self.shape, self.bands, self.mixed_precision, self.tta)
        fn = _FUNCTIONS.get(key)
        if fn is not None:
            return fn
        configure_tensorflow(threads=_worker_threads())
        import tensorflow as tf

        from roadnet.model.tta import tta_probabilities

        model = _MODELS.get((self.model, self.digest))
        if model is None:
            path = fetch_model(self.model)
            if content_hash(path) != self.digest:
                raise ModelError(f"model {self.model} changed since the run started")
            model = _MODELS[(self.model, self.digest)] = load_model(path)
        if self.mixed_precision:
            model = _mixed_precision_for_this_worker(model)
        spec = tf.TensorSpec((1, *self.shape, self.bands), tf.float32)

        @tf.function(input_signature=[spec])  # type: ignore[untyped-decorator,misc]
        def infer(x: Any) -> Any:
            probs = tta_probabilities(lambda v: model(v, training=False), x, tta=self.tta)
            return tf.concat([probs[t] for t in TASKS], axis=-1)[0]

        _FUNCTIONS[key] = infer
        return infer

    def warm_up(self) -> None:
        """Load the model and trace the input shape now (e.g. on every worker before a run)."""
        self(np.zeros((1, *self.shape, self.bands), dtype=np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Predict probabilities.

        Args:
            x: ``(1, H, W, bands)`` float32 on the 0–255 scale, ``(H, W) == shape``.

        Returns:
            ``(H, W, 3)`` float32 probabilities for surface, edge, centerline.
        """
        with _LOCK:
            fn = self._function()
            _CALLS[0] += 1
            return np.asarray(fn(x))


def validate_model(model: str, *, bands: int = 3) -> str:
    """Check that a model loads and honours the contract; return its content hash.

    The model must map ``(1, H, W, bands)`` float32 to a dict with ``surface``, ``edge`` and
    ``centerline`` logits of shape ``(1, H, W, 1)``.

    Raises:
        ModelError: missing, unloadable, or a different input/output layout.
    """
    path = fetch_model(model)
    if not path.is_file():
        raise ModelError(f"model file not found: {model} (pass --model PATH)")
    digest = content_hash(path)
    probe = ModelRunner(model=model, digest=digest, shape=(32, 32), bands=bands)
    try:
        out = probe(np.zeros((1, 32, 32, bands), dtype=np.float32))
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"model {model} does not map (1, H, W, {bands}) to dict(surface, edge, centerline) "
            f"logits: {type(exc).__name__}: {exc}"
        ) from exc
    if out.shape != (32, 32, len(TASKS)):
        raise ModelError(f"model {model} returned shape {out.shape}, expected (32, 32, 3)")
    return digest
