"""The custom RoadNet layers, registered so saved models load with ``safe_mode=True``.

Every layer is written with ``keras.ops`` (no ``Lambda``, no backend calls), so the same model
runs on the TensorFlow, JAX and PyTorch backends. All tensors are channels-last:
``(batch, H, W, channels)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

__all__ = ["ConvBNAct", "InputNormalization", "SideOutput"]

_PACKAGE = "roadnet"


def _initializer_for(activation: str) -> str:
    """Kernel initializer matched to the activation (LeCun for SELU, He otherwise)."""
    return "lecun_normal" if activation == "selu" else "he_normal"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class InputNormalization(keras.layers.Layer):  # type: ignore[misc]
    """Cast to float32 and standardize per band: ``(x - mean) / std``.

    Input ``(batch, H, W, bands)`` of any numeric dtype, digital numbers on the 0–255 scale,
    bands in the order the constants are given (R, G, B for the bundled configs). Output the
    same shape, float32.
    """

    def __init__(self, *, mean: Sequence[float], std: Sequence[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} bands but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {list(std)}")
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def build(self, input_shape: tuple[int | None, ...]) -> None:  # noqa: D102
        bands = input_shape[-1]
        if bands is not None and bands != len(self.mean):
            raise ValueError(f"input has {bands} bands, normalization expects {len(self.mean)}")
        super().build(input_shape)

    def call(self, inputs: Any) -> Any:  # noqa: D102
        x = ops.cast(inputs, "float32")
        mean = ops.convert_to_tensor(self.mean, dtype="float32")
        std = ops.convert_to_tensor(self.std, dtype="float32")
        return (x - mean) / std

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:  # noqa: D102
        return input_shape

    def get_config(self) -> dict[str, Any]:  # noqa: D102
        return {**super().get_config(), "mean": self.mean, "std": self.std}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConvBNAct(keras.layers.Layer):  # type: ignore[misc]
    """A bias-free ``k×k`` convolution, batch normalization and an activation.

    Input ``(batch, H, W, C)`` float32; output ``(batch, H, W, filters)`` float32 ("same"
    padding, stride 1).
    """

    def __init__(
        self, filters: int, *, kernel_size: int = 3, activation: str = "relu", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.activation = str(activation)
        self.conv = keras.layers.Conv2D(
            self.filters,
            self.kernel_size,
            padding="same",
            use_bias=False,
            kernel_initializer=_initializer_for(self.activation),
            name="conv",
        )
        self.bn = keras.layers.BatchNormalization(name="bn")
        self.act = keras.layers.Activation(self.activation, name="act")

    def build(self, input_shape: tuple[int | None, ...]) -> None:  # noqa: D102
        self.conv.build(input_shape)
        self.bn.build(self.conv.compute_output_shape(input_shape))
        super().build(input_shape)

    def call(self, inputs: Any, training: bool | None = None) -> Any:  # noqa: D102
        return self.act(self.bn(self.conv(inputs), training=training))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:  # noqa: D102
        return (*input_shape[:-1], self.filters)

    def get_config(self) -> dict[str, Any]:  # noqa: D102
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "activation": self.activation,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SideOutput(keras.layers.Layer):  # type: ignore[misc]
    """A side output: ``1×1`` convolution to one logit channel, bilinear upsampling by ``factor``.

    Input ``(batch, H/f, W/f, C)`` float32 from a stage of stride ``factor``; output
    ``(batch, H, W, 1)`` float32 logits at full resolution.
    """

    def __init__(self, *, factor: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.factor = int(factor)
        self.score = keras.layers.Conv2D(1, 1, name="score")
        self.upsample = (
            keras.layers.UpSampling2D(self.factor, interpolation="bilinear", name="upsample")
            if self.factor > 1
            else None
        )

    def build(self, input_shape: tuple[int | None, ...]) -> None:  # noqa: D102
        self.score.build(input_shape)
        super().build(input_shape)

    def call(self, inputs: Any) -> Any:  # noqa: D102
        logits = self.score(inputs)
        return self.upsample(logits) if self.upsample is not None else logits

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:  # noqa: D102
        batch, height, width, _ = input_shape
        scale = self.factor
        return (
            batch,
            None if height is None else height * scale,
            None if width is None else width * scale,
            1,
        )

    def get_config(self) -> dict[str, Any]:  # noqa: D102
        return {**super().get_config(), "factor": self.factor}
