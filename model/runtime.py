"""TensorFlow's process-wide settings: thread pools and GPU memory growth."""

from __future__ import annotations

import logging

__all__ = ["configure_tensorflow"]

log = logging.getLogger(__name__)

_CONFIGURED: list[bool] = []


def configure_tensorflow(*, threads: int | None, inter_op: int = 1) -> None:
    """Set TensorFlow's threads and GPU memory growth, once per process.

    Effective only before TensorFlow starts executing; later calls change nothing. Memory
    growth lets a GPU worker share its device instead of reserving all of it at start.

    Args:
        threads: intra-op threads (None keeps TensorFlow's default: all cores).
        inter_op: inter-op threads, at most ``threads``.
    """
    if _CONFIGURED:
        return
    _CONFIGURED.append(True)
    import keras

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    try:
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(inter_op, threads)))
    except RuntimeError:
        log.debug("TensorFlow already initialized; thread and GPU settings left as they are")
