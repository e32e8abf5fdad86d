"""RoadNet: a surface net feeding an edge net and a centerline net, trained end to end.

Layout (widths are the paper's, times ``width_multiplier``):

- surface net: VGG16 convolutions in 5 stages (2×64, 2×128, 3×256, 3×512, 3×512), 2×2 max-pool
  between stages;
- edge net and centerline net: 4 stages each (2×32, 2×64, 2×128, 2×256), each fed
  ``concat(normalized image, fused surface logit)``;
- every convolution is followed by batch normalization and the activation; every stage has a
  side output (``1×1`` conv to one logit, bilinearly upsampled to full size); a bias-free ``1×1``
  conv fuses the side outputs of a net into its output.

The model maps ``(batch, H, W, 3)`` float32 (R, G, B on the 0–255 scale; H and W multiples of
16) to a dict of ``(batch, H, W, 1)`` float32 logits: ``surface``, ``edge``, ``centerline``
(fused) and ``<task>_side<k>`` (side outputs, k = 1 at full resolution).
"""

from __future__ import annotations

from typing import Any, Literal

import keras
from pydantic import Field, model_validator

from roadnet.config import StrictModel
from roadnet.model.layers import ConvBNAct, InputNormalization, SideOutput
from roadnet.tasks import TASKS

__all__ = [
    "ModelConfig",
    "build_roadnet",
    "output_names",
    "scaled_widths",
]


class ModelConfig(StrictModel):
    """A RoadNet variant (``configs/roadnet.yaml``, ``configs/roadnet-lite.yaml``)."""

    name: str = "roadnet"
    width_multiplier: float = Field(1.0, gt=0, le=4)
    surface_widths: list[int] = Field(default_factory=lambda: [64, 128, 256, 512, 512])
    surface_convs: list[int] = Field(default_factory=lambda: [2, 2, 3, 3, 3])
    task_widths: list[int] = Field(default_factory=lambda: [32, 64, 128, 256])
    task_convs: list[int] = Field(default_factory=lambda: [2, 2, 2, 2])
    activation: Literal["relu", "selu"] = "relu"
    mean: list[float] = Field(default_factory=lambda: [127.5, 127.5, 127.5])
    std: list[float] = Field(default_factory=lambda: [64.0, 64.0, 64.0])

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if len(self.surface_widths) != 5 or len(self.surface_convs) != 5:
            raise ValueError("the surface net has 5 stages: give 5 widths and 5 conv counts")
        if len(self.task_widths) != 4 or len(self.task_convs) != 4:
            raise ValueError("edge and centerline nets have 4 stages: give 4 widths and counts")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need 3 values (R, G, B), std positive")
        if min(self.surface_convs + self.task_convs) < 1:
            raise ValueError("every stage needs at least one convolution")
        return self


def scaled_widths(widths: list[int], multiplier: float) -> list[int]:
    """Channel widths times ``multiplier``, rounded, at least 4."""
    return [max(4, round(w * multiplier)) for w in widths]


def output_names() -> list[str]:
    """Names of every model output: the fused task logits, then each task's side outputs."""
    names = list(TASKS)
    for task in TASKS:
        names += [f"{task}_side{k + 1}" for k in range(5 if task == "surface" else 4)]
    return names


def _stage_net(
    x: Any, *, widths: list[int], convs: list[int], activation: str, prefix: str
) -> list[Any]:
    """Stacked conv stages with a side output each; returns the full-size side logits."""
    sides = []
    for stage, (width, count) in enumerate(zip(widths, convs, strict=True)):
        if stage > 0:
            x = keras.layers.MaxPooling2D(2, name=f"{prefix}_pool{stage}")(x)
        for i in range(count):
            x = ConvBNAct(width, activation=activation, name=f"{prefix}_conv{stage + 1}_{i + 1}")(x)
        sides.append(SideOutput(factor=2**stage, name=f"{prefix}_side{stage + 1}")(x))
    return sides


def _fuse(sides: list[Any], *, name: str) -> Any:
    """Concatenate side logits and mix them with a bias-free ``1×1`` conv (starts as the mean)."""
    stacked = keras.layers.Concatenate(name=f"{name}_sides")(sides)
    return keras.layers.Conv2D(
        1,
        1,
        use_bias=False,
        kernel_initializer=keras.initializers.Constant(1.0 / len(sides)),
        name=name,
    )(stacked)


def build_roadnet(config: ModelConfig) -> keras.Model:
    """Build an untrained RoadNet from a variant config.

    Returns:
        A functional ``keras.Model`` named ``config.name``: input ``(batch, H, W, 3)`` float32,
        output a dict of ``(batch, H, W, 1)`` float32 logits keyed by :func:`output_names`.
    """
    m = config.width_multiplier
    image = keras.Input(shape=(None, None, 3), dtype="float32", name="image")
    x = InputNormalization(mean=config.mean, std=config.std, name="normalize")(image)
    outputs: dict[str, Any] = {}
    surface_sides = _stage_net(
        x,
        widths=scaled_widths(config.surface_widths, m),
        convs=config.surface_convs,
        activation=config.activation,
        prefix="surface",
    )
    outputs["surface"] = _fuse(surface_sides, name="surface")
    task_sides: dict[str, list[Any]] = {"surface": surface_sides}
    for task in TASKS[1:]:
        task_input = keras.layers.Concatenate(name=f"{task}_input")([x, outputs["surface"]])
        task_sides[task] = _stage_net(
            task_input,
            widths=scaled_widths(config.task_widths, m),
            convs=config.task_convs,
            activation=config.activation,
            prefix=task,
        )
        outputs[task] = _fuse(task_sides[task], name=task)
    for task in TASKS:
        for k, side in enumerate(task_sides[task]):
            outputs[f"{task}_side{k + 1}"] = side
    return keras.Model(image, outputs, name=config.name)
