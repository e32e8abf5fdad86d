"""TensorFlow's process-wide settings (thread pools, GPU memory growth) and the devices it sees."""

from __future__ import annotations

import logging
import os

__all__ = ["configure_tensorflow", "describe_hardware"]

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


def describe_hardware() -> str:
    """The devices this process computes on, for a model card: e.g. ``2 CPU cores, no GPU``.

    CPU cores are those this process may run on (its affinity, as a container limits it);
    GPUs are those TensorFlow sees, with their names where the driver gives them.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    import keras

    names: list[str] = []
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(gpu)
            names.append(str(details.get("device_name", gpu.name)))
    gpus = f"{len(names)} GPU ({', '.join(names)})" if names else "no GPU"
    return f"{cores} CPU cores, {gpus}"
