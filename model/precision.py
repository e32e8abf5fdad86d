"""Compute precision of a RoadNet: Keras dtype policies, and copies of a model under another.

``float32`` is the default everywhere. ``mixed_bfloat16`` computes convolutions in bfloat16
with float32 weights; CPUs with AMX or AVX-512 BF16 run it natively (the full variant trains
about 1.6 × and predicts about 2.6 × as fast on such a CPU, BENCHMARKS.md). ``mixed_float16``
is the GPU choice (tensor cores).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

__all__ = [
    "PRECISIONS",
    "Precision",
    "cpu_flags_have_bfloat16",
    "cpu_has_bfloat16",
    "policy_scope",
    "with_policy",
]

Precision = Literal["float32", "mixed_bfloat16", "mixed_float16"]
PRECISIONS: tuple[Precision, ...] = ("float32", "mixed_bfloat16", "mixed_float16")


_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def cpu_flags_have_bfloat16(cpuinfo: str) -> bool:
    """Whether a ``/proc/cpuinfo`` text lists native bfloat16 arithmetic (AMX or AVX-512)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and _BF16_FLAGS & set(value.split()):
            return True
    return False


def cpu_has_bfloat16() -> bool:
    """Whether this machine's CPU computes bfloat16 natively (Linux ``/proc/cpuinfo``)."""
    try:
        with open("/proc/cpuinfo") as fh:
            return cpu_flags_have_bfloat16(fh.read())
    except OSError:
        return False


@contextmanager
def policy_scope(policy: Precision) -> Iterator[None]:
    """Build layers under Keras' global dtype ``policy``; the previous one is restored after."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def with_policy(model: Any, policy: Precision) -> Any:
    """A copy of a built model whose layers compute under ``policy``, with the same weights.

    A saved model records each layer's dtype policy, so setting the global policy before
    loading changes nothing. The copy is rebuilt layer by layer under ``policy``
    (:func:`keras.models.clone_model`, each layer recreated from its config less its dtype)
    and given the original weights, which stay float32 under every policy here.
    """
    import keras

    def recreate(layer: Any) -> Any:
        config = {k: v for k, v in layer.get_config().items() if k != "dtype"}
        return layer.__class__.from_config(config)

    with policy_scope(policy):
        copy = keras.models.clone_model(model, clone_function=recreate)
    copy.set_weights(model.get_weights())
    return copy
