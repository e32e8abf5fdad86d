"""The plateau and early-stopping counters survive a resumed run (state.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from roadnet.model.callbacks import (
    MONITOR,
    EarlyStoppingState,
    PlateauState,
    RunState,
    read_state,
)


class _Flat(keras.callbacks.Callback):  # type: ignore[misc]
    """Reports a validation score that improves once, in the first epoch, then stalls."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs[MONITOR] = 0.5 if epoch == 0 else 0.4


def _model() -> keras.Model:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def _fit(
    model: keras.Model, run: Path, *, start: int, epochs: int, state: dict[str, Any] | None
) -> tuple[PlateauState, EarlyStoppingState, list[float]]:
    plateau = PlateauState(monitor=MONITOR, mode="max", factor=0.5, patience=3, min_lr=1e-6)
    stopping = EarlyStoppingState(monitor=MONITOR, mode="max", patience=5)
    counters = (state or {}).get("counters", {})
    plateau.restore(counters.get("lr_plateau"))
    stopping.restore(counters.get("early_stopping"))
    rates: list[float] = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: rates.append(float(model.optimizer.learning_rate))
    )
    x, y = np.zeros((8, 2), "float32"), np.zeros((8, 1), "float32")
    model.fit(
        x,
        y,
        epochs=epochs,
        initial_epoch=start,
        verbose=0,
        callbacks=[
            _Flat(),
            plateau,
            stopping,
            RunState(
                run,
                best=-1.0 if state is None else state["best"],
                best_epoch=0 if state is None else state["best_epoch"],
                counters={"lr_plateau": plateau, "early_stopping": stopping},
            ),
            record,
        ],
    )
    return plateau, stopping, rates


def test_resume_keeps_plateau_and_early_stopping_counters(tmp_path: Path) -> None:
    model = _model()
    _fit(model, tmp_path, start=0, epochs=3, state=None)  # best at epoch 1, then 2 stalls
    state = read_state(tmp_path / "state.json")
    assert state["counters"]["early_stopping"]["wait"] == 2
    assert state["counters"]["lr_plateau"]["wait"] == 2
    assert state["counters"]["early_stopping"]["best"] == 0.5
    json.dumps(state)  # plain JSON

    resumed = keras.models.load_model(tmp_path / "last.keras")
    _, stopping, rates = _fit(resumed, tmp_path, start=3, epochs=20, state=state)
    # one more stall hits the plateau patience (3): the rate halves in the first resumed epoch
    assert rates[0] == pytest.approx(0.05)
    # 5 stalls in all stop the run after 3 resumed epochs (a reset would need 5 more)
    assert len(rates) == 3
    assert stopping.stopped_epoch == 5
    assert read_state(tmp_path / "state.json")["epoch"] == 6


def test_counters_reset_without_state(tmp_path: Path) -> None:
    _, stopping, rates = _fit(_model(), tmp_path, start=0, epochs=4, state=None)
    assert stopping.wait == 3 and len(rates) == 4
    assert rates[-1] == pytest.approx(0.05)  # plateau after 3 stalls
