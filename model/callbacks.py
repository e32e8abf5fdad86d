"""Training callbacks: mean validation F1, resumable run state, a wall-clock budget, curves PNG."""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras

from roadnet.model.card import write_json_atomic
from roadnet.tasks import TASKS

__all__ = [
    "MONITOR",
    "CurvesPlot",
    "EarlyStoppingState",
    "MeanF1",
    "PlateauState",
    "RunState",
    "TimeBudget",
    "plot_curves",
    "read_state",
]

MONITOR = "val_mean_f1"


class MeanF1(keras.callbacks.Callback):  # type: ignore[misc]
    """Adds ``mean_f1`` and ``val_mean_f1`` (mean of the tasks' fused F1) to the epoch logs.

    Must come first in the callback list: later callbacks read the key it adds.
    """

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:  # noqa: D102
        if logs is None:
            return
        for prefix in ("", "val_"):
            keys = [f"{prefix}{task}_f1" for task in TASKS]
            if all(k in logs for k in keys):
                logs[f"{prefix}mean_f1"] = float(sum(float(logs[k]) for k in keys) / len(keys))


def _plain(value: Any) -> Any:
    """A counter as JSON can hold it (numpy and tensor scalars become floats)."""
    if value is None or isinstance(value, int | float):
        return value
    return float(value)


class _Counters:
    """Mixin: a callback whose counters survive ``--resume`` (Keras resets them per fit)."""

    COUNTERS: tuple[str, ...] = ()

    def counters(self) -> dict[str, Any]:
        """The counters now, for ``state.json``."""
        return {key: _plain(getattr(self, key)) for key in self.COUNTERS}

    def restore(self, counters: Mapping[str, Any] | None) -> None:
        """Counters to set when the next fit begins (after Keras has reset them)."""
        self._restored = {k: v for k, v in (counters or {}).items() if k in self.COUNTERS}

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)  # type: ignore[misc]
        for key, value in getattr(self, "_restored", {}).items():
            setattr(self, key, value)


class PlateauState(_Counters, keras.callbacks.ReduceLROnPlateau):  # type: ignore[misc]
    """``ReduceLROnPlateau`` whose wait, cooldown and best survive a resumed run."""

    COUNTERS = ("wait", "cooldown_counter", "best")


class EarlyStoppingState(_Counters, keras.callbacks.EarlyStopping):  # type: ignore[misc]
    """``EarlyStopping`` whose wait, best and best epoch survive a resumed run."""

    COUNTERS = ("wait", "best", "best_epoch")


def _save_atomic(model: keras.Model, path: Path) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    model.save(tmp)
    tmp.replace(path)


class RunState(keras.callbacks.Callback):  # type: ignore[misc]
    """Saves ``last.keras`` (with optimizer) every epoch, ``best.keras`` on a new best F1.

    ``state.json`` records the completed epochs, the best score and its epoch, and the
    counters of the plateau and early-stopping callbacks (``counters``), so a run can
    resume where it stopped; files are replaced atomically, so an interrupted run leaves
    usable checkpoints.
    """

    def __init__(
        self,
        directory: Path,
        *,
        best: float = -1.0,
        best_epoch: int = 0,
        counters: Mapping[str, _Counters] | None = None,
    ) -> None:
        super().__init__()
        self.directory = directory
        self.best = best
        self.best_epoch = best_epoch
        self.counter_sources = dict(counters or {})
        self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:  # noqa: D102
        score = float((logs or {}).get(MONITOR, -1.0))
        if score > self.best:
            self.best, self.best_epoch = score, epoch + 1
            _save_atomic(self.model, self.directory / "best.keras")
        _save_atomic(self.model, self.directory / "last.keras")
        write_json_atomic(
            self.directory / "state.json",
            {
                "epoch": epoch + 1,
                "best": self.best,
                "best_epoch": self.best_epoch,
                "monitor": MONITOR,
                "wall_s_this_session": round(time.monotonic() - self.started, 1),
                "counters": {name: cb.counters() for name, cb in self.counter_sources.items()},
            },
        )


class TimeBudget(keras.callbacks.Callback):  # type: ignore[misc]
    """Stops training at an epoch end when the next epoch would overrun ``seconds``."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.started = time.monotonic()
        self.epoch_started = self.started
        self.stopped_early = False

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:  # noqa: D102
        self.epoch_started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:  # noqa: D102
        now = time.monotonic()
        if now - self.started + (now - self.epoch_started) > self.seconds:
            self.stopped_early = True
            self.model.stop_training = True


def plot_curves(history_csv: Path, out_png: Path) -> Path:
    """Plot loss, F1 per task and learning rate per epoch from a Keras CSV log into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    epochs = [int(r["epoch"]) + 1 for r in rows]

    def series(key: str) -> list[float] | None:
        if not rows or key not in rows[0]:
            return None
        return [float(r[key]) if r[key] not in ("", None) else float("nan") for r in rows]

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key in ("loss", "val_loss"):
        if (values := series(key)) is not None:
            axes[0].plot(epochs, values, label=key)
    axes[0].set_yscale("log")
    axes[0].set_title("loss")
    for task in (*TASKS, "mean"):
        for prefix, style in (("", ":"), ("val_", "-")):
            if (values := series(f"{prefix}{task}_f1")) is not None:
                axes[1].plot(epochs, values, style, label=f"{prefix}{task}_f1")
    axes[1].set_title("F1 at threshold 0.5 (dotted: training crops)")
    axes[1].set_ylim(0, 1)
    for key in ("learning_rate", "lr"):
        if (values := series(key)) is not None:
            axes[2].plot(epochs, values)
            axes[2].set_yscale("log")
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


class CurvesPlot(keras.callbacks.Callback):  # type: ignore[misc]
    """Redraws the training curves PNG from the CSV log after every epoch."""

    def __init__(self, history_csv: Path, out_png: Path) -> None:
        super().__init__()
        self.history_csv = history_csv
        self.out_png = out_png

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:  # noqa: D102
        if self.history_csv.is_file():
            plot_curves(self.history_csv, self.out_png)


def read_state(path: Path) -> dict[str, Any]:
    """Read a run's ``state.json``."""
    state: dict[str, Any] = json.loads(path.read_text())
    return state
