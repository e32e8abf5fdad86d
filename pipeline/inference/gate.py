"""``roadnet calibrate-gate``: the adapt gate and input statistics of a model's card.

A run under ``adapt: auto`` fits the model to a scene only when the scene's statistics shift
(:func:`roadnet.model.adapt.statistics_shift`) reaches the card's ``run.adapt.min_shift``,
and matches a fitted scene's colours to the card's ``input_statistics`` first
(README, "Adapting the model to a scene"). Both come from scenes in the model's training
looks: :func:`calibrate_gate` fits the model to each as a run would and keeps the largest
shift and the average band statistics; :func:`write_gate` puts them in the card.
``roadnet train`` does this at the end of every run (config key ``calibrate_gate``).
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roadnet.errors import InputError
from roadnet.model.card import read_model_card, write_json_atomic
from roadnet.pipeline.inference.adapt import adapt_to_scene

__all__ = ["GateCalibration", "calibrate_gate", "write_gate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateCalibration:
    """What :func:`calibrate_gate` measured: per-scene shifts and the training imagery's bands."""

    shifts: dict[str, float]
    band_mean: tuple[float, ...]
    band_std: tuple[float, ...]
    margin: float

    @property
    def min_shift(self) -> float:
        """The gate: ``margin`` x the largest shift of the scenes."""
        return round(self.margin * max(self.shifts.values()), 3)

    def card_entries(self, *, gate: bool = True) -> dict[str, Any]:
        """The card keys: ``input_statistics`` and, with ``gate``, ``run.adapt``."""
        entries: dict[str, Any] = {
            "input_statistics": {
                "mean": [round(v, 3) for v in self.band_mean],
                "std": [round(v, 3) for v in self.band_std],
                "scenes": len(self.shifts),
                "note": "per band, on the model's 0-255 input scale at the pixel size it "
                "predicts at: the mean over the scenes of each scene's mean and std",
            }
        }
        if gate:
            entries["run"] = {
                "adapt": {"min_shift": self.min_shift},
                "why": f"{self.margin:g} x the largest statistics shift of the scenes below, "
                "renders in the training looks: adapt scenes further from them than any",
                "shifts": self.shifts,
            }
        return entries


def calibrate_gate(
    model: str | Path, scenes: list[str], *, margin: float = 1.0, seed: int = 0
) -> GateCalibration:
    """Measure how far each of a model's training-look ``scenes`` lies from its statistics.

    Each scene is fitted as a run fits it (:func:`adapt_to_scene`, colours not matched) and
    its statistics shift kept, with its band means and spreads. A run under ``adapt: auto``
    with the returned gate (``margin`` x the largest shift) predicts imagery like these
    scenes as trained and fits anything further away; a fit matches a scene's colours to
    the scenes' average band statistics first.

    Raises:
        InputError: no scene, a margin that is not positive, or an unreadable scene.
    """
    if not scenes:
        raise InputError("calibrating the adapt gate needs at least one training-look scene")
    if not (margin > 0 and math.isfinite(margin)):
        raise InputError(f"the gate's margin must be a positive number, not {margin}")
    shifts: dict[str, float] = {}
    means, stds = [], []
    with tempfile.TemporaryDirectory(prefix="roadnet-gate-") as tmp:
        for i, scene in enumerate(dict.fromkeys(scenes)):
            summary = adapt_to_scene(
                scene, Path(tmp) / f"{i}.keras", model=model, match=False, seed=seed
            )
            shifts[scene] = round(summary.shift, 4)
            means.append(summary.band_mean)
            stds.append(summary.band_std)
            log.info("gate: %s shift %.4f", scene, summary.shift)
    return GateCalibration(
        shifts=shifts,
        band_mean=tuple(float(v) for v in np.mean(means, axis=0)),
        band_std=tuple(float(v) for v in np.mean(stds, axis=0)),
        margin=margin,
    )


def write_gate(card_path: str | Path, calibration: GateCalibration, *, gate: bool = True) -> None:
    """Write :meth:`GateCalibration.card_entries` into the card at ``card_path``."""
    card = read_model_card(Path(card_path))
    card.update(calibration.card_entries(gate=gate))
    write_json_atomic(Path(card_path), card)
