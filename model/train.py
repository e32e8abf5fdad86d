"""Train RoadNet on labelled scenes: random augmented crops, held-out validation, checkpoints.

A run directory holds everything a run writes::

    best.keras   last.keras   state.json        checkpoints (best validation F1 / every epoch)
    history.csv  curves.png   tensorboard/      logs
    augment-samples.png                         the first training batches, as augmented
    model.keras  model.json                     final model (best weights, no optimizer) + card
    roadnet-config.yaml                         the resolved config

``model.keras`` and ``model.json`` appear only when a run finishes; an interrupted run keeps
its checkpoints and continues with ``resume=True``.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from pydantic import Field, model_validator

from roadnet.config import (
    StrictModel,
    bundled_config_path,
    load_config,
    write_resolved_config,
)
from roadnet.errors import ConfigError, InputError, OutputExistsError
from roadnet.model.augment import write_sample_grid
from roadnet.model.callbacks import (
    MONITOR,
    CurvesPlot,
    EarlyStoppingState,
    MeanF1,
    PlateauState,
    RunState,
    TimeBudget,
    plot_curves,
    read_state,
)
from roadnet.model.card import make_model_card, read_card_beside, write_json_atomic
from roadnet.model.cutoffs import DEFAULT_GRID, RHO, choose_cutoffs, chosen_on, cutoff_grid
from roadnet.model.data import (
    AugmentConfig,
    CropDataset,
    LabelledScene,
    label_targets,
    read_labelled_scene,
    validation_tiles,
    windows_overlap,
)
from roadnet.model.evaluate import evaluate_scene
from roadnet.model.io import content_hash, load_model
from roadnet.model.losses import DEFAULT_SIDE_WEIGHTS, compile_losses
from roadnet.model.metrics import task_metrics
from roadnet.model.precision import Precision, policy_scope, with_policy
from roadnet.model.roadnet import ModelConfig, build_roadnet
from roadnet.model.runtime import configure_tensorflow, describe_hardware
from roadnet.model.widen import widen_into
from roadnet.tasks import INPUT_MULTIPLE, TASKS

__all__ = ["ScenePair", "TrainConfig", "TrainResult", "train"]

log = logging.getLogger("roadnet.train")


class ScenePair(StrictModel):
    """A scene GeoTIFF, its label directory, and optionally the pixel window to use."""

    scene: Path
    labels: Path
    window: tuple[int, int, int, int] | None = None  # col0, row0, col1, row1


class TrainConfig(StrictModel):
    """``configs/train-lite.yaml``; paths are relative to the working directory."""

    model: str = "roadnet-lite"  # a bundled variant name or a variant YAML path
    # start from this .keras model's weights (fine-tuning); a narrower model of the same
    # layout is widened into the variant, keeping its function (model/widen.py)
    init_from: Path | None = None
    train: list[ScenePair] = Field(min_length=1)
    validation: ScenePair
    crop_size: int = Field(256, ge=INPUT_MULTIPLE)
    batch_size: int = Field(4, ge=1)
    steps_per_epoch: int = Field(100, ge=1)
    epochs: int = Field(30, ge=1)
    validation_tiles: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    lr_factor: float = Field(0.5, gt=0, lt=1)
    lr_patience: int = Field(3, ge=1)
    min_learning_rate: float = Field(1e-5, ge=0)
    early_stopping_patience: int = Field(8, ge=1)
    max_minutes: float | None = Field(None, gt=0)
    threshold: float = Field(0.5, gt=0, lt=1)
    side_weights: dict[str, list[float]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_SIDE_WEIGHTS.items()}
    )
    fused_weight: float = Field(1.0, gt=0)
    l2_weight: float = Field(1.0, ge=0)
    # soft Jaccard (1 - soft IoU) on a task's fused output, per task; 0 or absent: off
    jaccard_weight: dict[str, float] = Field(default_factory=dict)
    augment: AugmentConfig = AugmentConfig()
    # each batch from one scene, its crops with one appearance draw: batch normalization
    # learns on one look at a time, as `roadnet adapt` refits it to one scene
    scene_batches: bool = False
    evaluate_validation_scene: bool = True  # score the whole validation window at the end
    # cuts tried on that window to choose each task's cut-off for the card (0.5 always added)
    cutoff_grid: list[float] = Field(default_factory=lambda: list(DEFAULT_GRID), min_length=1)
    # measure the training and validation scenes' statistics shifts at the end: the card's
    # adapt gate and input statistics (`roadnet calibrate-gate`), so a run adapts only
    # imagery further from the training looks than any of them
    calibrate_gate: bool = True
    seed: int = 0
    threads: int = Field(2, ge=1)
    jit_compile: bool = False  # XLA: slower to compile and to run on CPU; try on GPUs
    # compute dtype while training (model/precision.py); model.keras is always saved float32
    precision: Precision = "float32"

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.crop_size % INPUT_MULTIPLE:
            raise ValueError(f"crop_size must be a multiple of {INPUT_MULTIPLE}")
        if any(not 0.0 < cut < 1.0 for cut in self.cutoff_grid):
            raise ValueError("cutoff_grid: every cut must be strictly between 0 and 1")
        if sorted(self.side_weights) != sorted(TASKS):
            raise ValueError(f"side_weights needs exactly the keys {list(TASKS)}")
        if len(self.side_weights["surface"]) != 5 or any(
            len(self.side_weights[t]) != 4 for t in TASKS[1:]
        ):
            raise ValueError("side_weights: 5 values for surface, 4 for edge and centerline")
        unknown = sorted(set(self.jaccard_weight) - set(TASKS))
        if unknown:
            raise ValueError(f"jaccard_weight: unknown task {unknown[0]!r}; tasks: {list(TASKS)}")
        if any(not (w >= 0 and math.isfinite(w)) for w in self.jaccard_weight.values()):
            raise ValueError("jaccard_weight: every weight must be a finite number >= 0")
        for pair in self.train:
            same = pair.scene.resolve() == self.validation.scene.resolve()
            if same and (
                pair.window is None
                or self.validation.window is None
                or windows_overlap(pair.window, self.validation.window)
            ):
                raise ValueError(
                    f"training area of {pair.scene} overlaps the validation area: give both "
                    "disjoint windows"
                )
        return self


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced."""

    model_path: Path
    card_path: Path
    card: dict[str, Any]


def load_variant(name: str) -> ModelConfig:
    """A model variant config from a bundled name (``roadnet-lite``) or a YAML path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        return load_config(ModelConfig, path)
    return load_config(ModelConfig, bundled_config_path(name))


def _compile(model: keras.Model, config: TrainConfig) -> None:
    losses, weights = compile_losses(
        side_weights=config.side_weights,
        fused_weight=config.fused_weight,
        l2_weight=config.l2_weight,
        jaccard_weights=config.jaccard_weight,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=losses,
        loss_weights=weights,
        metrics=task_metrics(threshold=config.threshold),
        jit_compile=config.jit_compile,
    )


def _prepare_run_dir(out: Path, *, overwrite: bool, resume: bool) -> dict[str, Any] | None:
    """Check the run directory; return the saved state when resuming."""
    if resume:
        state_path, last = out / "state.json", out / "last.keras"
        if not (state_path.is_file() and last.is_file()):
            raise InputError(f"cannot resume: {out} holds no state.json and last.keras")
        return read_state(state_path)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(
                f"run directory {out} is not empty (use --overwrite, or --resume to continue)"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return None


def _scene_entry(pair: ScenePair) -> dict[str, Any]:
    return {
        "scene": str(pair.scene),
        "labels": str(pair.labels),
        "window": list(pair.window) if pair.window else None,
    }


@dataclass(frozen=True)
class _Data:
    """The training scenes and the validation scene with its fixed tiles.

    ``x_val`` and ``y_val`` are ``(n, size, size, 3)`` float32 images and labels
    (:func:`~roadnet.model.data.validation_tiles`).
    """

    scenes: list[LabelledScene]
    validation: LabelledScene
    x_val: np.ndarray
    y_val: np.ndarray


@dataclass(frozen=True)
class _Start:
    """Where training starts: the epoch count so far and the best score up to it."""

    epoch: int = 0
    best: float = -1.0
    best_epoch: int = 0
    counters: dict[str, Any] | None = None


def _read_data(config: TrainConfig) -> _Data:
    """Read every training scene and cut the validation scene's tiles."""
    scenes = [read_labelled_scene(p.scene, p.labels, window=p.window) for p in config.train]
    val_scene = read_labelled_scene(
        config.validation.scene, config.validation.labels, window=config.validation.window
    )
    x_val, y_val = validation_tiles(
        val_scene, size=config.crop_size, max_tiles=config.validation_tiles
    )
    return _Data(scenes=scenes, validation=val_scene, x_val=x_val, y_val=y_val)


def _load_weights(model: keras.Model, path: Path, *, seed: int) -> None:
    """Copy a saved model of this variant into ``model``, or widen a narrower one into it.

    Raises:
        InputError: the file is missing or holds another architecture.
    """
    if not path.is_file():
        raise InputError(f"init_from: file not found: {path}")
    source = load_model(path)
    try:
        model.set_weights(source.get_weights())
    except ValueError:
        try:
            widen_into(source, model, seed=seed)
        except ValueError as exc:
            raise InputError(
                f"init_from: {path} is neither this variant nor a narrower one of its layout "
                f"({exc})"
            ) from exc
        log.info(
            "starting from %s widened: %d -> %d parameters",
            path,
            source.count_params(),
            model.count_params(),
        )
        return
    log.info("starting from the weights of %s", path)


def _model_and_start(
    config: TrainConfig, variant: ModelConfig, out: Path, state: dict[str, Any] | None
) -> tuple[keras.Model, _Start]:
    """A new compiled model, or the last checkpoint and its state when resuming.

    Raises:
        ConfigError: the resumed run already has ``config.epochs`` epochs.
    """
    start = _Start()
    if state is not None:
        model = load_model(out / "last.keras", compile=True)
        model.jit_compile = config.jit_compile
        start = _Start(
            epoch=int(state["epoch"]),
            best=float(state["best"]),
            best_epoch=int(state["best_epoch"]),
            counters=state.get("counters"),
        )
        log.info("resuming %s after epoch %d (best %s %.4f)", out, start.epoch, MONITOR, start.best)
    else:
        with policy_scope(config.precision):
            model = build_roadnet(variant)
        if config.init_from is not None:
            _load_weights(model, config.init_from, seed=config.seed)
        _compile(model, config)
    if start.epoch >= config.epochs:
        raise ConfigError(f"run {out} already has {start.epoch} epochs; raise `epochs`")
    return model, start


def _callbacks(
    config: TrainConfig, out: Path, start: _Start, *, resume: bool, budget: TimeBudget | None
) -> list[keras.callbacks.Callback]:
    """The epoch-end callbacks, in the order their logs depend on each other."""
    # order matters: MeanF1 adds the monitored key and ReduceLROnPlateau the learning rate
    # to the epoch logs that the later callbacks read
    plateau = PlateauState(
        monitor=MONITOR,
        mode="max",
        factor=config.lr_factor,
        patience=config.lr_patience,
        min_lr=config.min_learning_rate,
    )
    stopping = EarlyStoppingState(
        monitor=MONITOR, mode="max", patience=config.early_stopping_patience
    )
    counters = start.counters or {}
    plateau.restore(counters.get("lr_plateau"))
    stopping.restore(counters.get("early_stopping"))
    callbacks: list[keras.callbacks.Callback] = [
        MeanF1(),
        plateau,
        stopping,
        RunState(
            out,
            best=start.best,
            best_epoch=start.best_epoch,
            counters={"lr_plateau": plateau, "early_stopping": stopping},
        ),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=resume),
        CurvesPlot(out / "history.csv", out / "curves.png"),
        keras.callbacks.TensorBoard(str(out / "tensorboard"), write_graph=False),
    ]
    if budget is not None:
        callbacks.append(budget)
    return callbacks


def _fit(
    model: keras.Model,
    data: _Data,
    config: TrainConfig,
    out: Path,
    start: _Start,
    *,
    resume: bool,
) -> tuple[float, TimeBudget | None]:
    """Fit from ``start.epoch`` to ``config.epochs``; return wall seconds and the time budget."""
    dataset = CropDataset(
        data.scenes,
        crop_size=config.crop_size,
        batch_size=config.batch_size,
        steps=config.steps_per_epoch,
        augment_config=config.augment,
        seed=config.seed,
        scene_batches=config.scene_batches,
        workers=1,
        use_multiprocessing=False,
    )
    dataset.epoch = start.epoch
    write_sample_grid(dataset, out / "augment-samples.png")
    budget = TimeBudget(config.max_minutes * 60) if config.max_minutes else None
    callbacks = _callbacks(config, out, start, resume=resume, budget=budget)
    started = time.monotonic()
    model.fit(
        dataset,
        epochs=config.epochs,
        initial_epoch=start.epoch,
        validation_data=(data.x_val, label_targets(data.y_val)),
        validation_batch_size=config.batch_size,
        callbacks=callbacks,
        verbose=2,
    )
    return time.monotonic() - started, budget


def _save_final_model(out: Path) -> tuple[Path, keras.Model]:
    """Save the best checkpoint without optimizer state as ``model.keras``; return it too."""
    best_model = load_model(out / "best.keras")
    if any(layer.dtype_policy.name != "float32" for layer in best_model.layers):  # mixed
        best_model = with_policy(best_model, "float32")
    model_path = out / "model.keras"
    tmp = out / f".tmp-{model_path.name}"
    best_model.save(tmp)  # uncompiled: weights only, no optimizer state
    tmp.replace(model_path)
    return model_path, best_model


def _origin(path: Path) -> dict[str, Any]:
    """What a run started from: the file, its content hash and, from its card, its own origin.

    Read when the run ends, so a resumed run whose ``init_from`` file was replaced meanwhile
    records the new file.
    """
    origin: dict[str, Any] = {"model": str(path), "content_hash": None}
    if path.is_file():
        origin["content_hash"] = content_hash(path)
    card = read_card_beside(path) or {}
    before = card.get("training", {}).get("fine_tuned_from")
    if isinstance(before, dict):
        origin["fine_tuned_from"] = before
    return origin


def _finish(
    config: TrainConfig,
    variant: ModelConfig,
    out: Path,
    data: _Data,
    *,
    wall_s: float,
    budget: TimeBudget | None,
) -> TrainResult:
    """Write the final model, the curves and the model card of a finished run."""
    final_state = read_state(out / "state.json")
    model_path, best_model = _save_final_model(out)
    plot_curves(out / "history.csv", out / "curves.png")
    metrics: dict[str, Any] = {
        "monitor": MONITOR,
        "best": final_state["best"],
        "best_epoch": final_state["best_epoch"],
        "threshold": config.threshold,
        "validation_tiles": len(data.x_val),
    }
    cutoffs: dict[str, Any] = {}
    if config.evaluate_validation_scene:
        grid = cutoff_grid(config.cutoff_grid)
        scores = evaluate_scene(
            best_model, data.validation, threshold=config.threshold, rho=RHO, sweep=grid
        )
        choice = choose_cutoffs(scores.pop("sweep"))
        metrics["validation_scene"] = scores
        where = {**_scene_entry(config.validation), "window": list(data.validation.window)}
        cutoffs = {
            "cutoffs": choice["cutoffs"],
            "cutoffs_chosen_on": chosen_on({**where, "grid": grid, "rho": RHO}, choice),
        }
    card = make_model_card(
        model_path,
        variant=variant.name,
        parameters=best_model.count_params(),
        data={
            "train": [_scene_entry(p) for p in config.train],
            "validation": _scene_entry(config.validation),
            "crop_size": config.crop_size,
        },
        metrics=metrics,
        training={
            "epochs_completed": final_state["epoch"],
            "steps_per_epoch": config.steps_per_epoch,
            "batch_size": config.batch_size,
            "wall_s_last_session": round(wall_s, 1),
            "stopped_by_time_budget": bool(budget and budget.stopped_early),
            "seed": config.seed,
            "hardware": describe_hardware(),
            **({} if config.init_from is None else {"fine_tuned_from": _origin(config.init_from)}),
            "config": config.model_dump(mode="json"),
            "variant": variant.model_dump(mode="json"),
        },
    )
    card.update(cutoffs)  # per-task cut-offs chosen on the validation window, if scored
    # written first: the fits below read this run's card, not one left from an earlier run
    card_path = write_json_atomic(out / "model.json", card)
    if config.calibrate_gate:
        from roadnet.pipeline.inference.gate import calibrate_gate

        scenes = [str(pair.scene) for pair in (*config.train, config.validation)]
        calibration = calibrate_gate(model_path, scenes)
        card.update(calibration.card_entries())
        card_path = write_json_atomic(card_path, card)
        log.info("adapt gate %.3f from %d scenes", calibration.min_shift, len(calibration.shifts))
    log.info("wrote %s (%s)", model_path, card["content_hash"])
    return TrainResult(model_path=model_path, card_path=card_path, card=card)


def train(
    config: TrainConfig, out: Path, *, overwrite: bool = False, resume: bool = False
) -> TrainResult:
    """Train a RoadNet variant and write the run directory (see the module docstring).

    Raises:
        ConfigError: the variant config does not validate.
        InputError: a scene or label file is missing or unsuitable; nothing to resume.
        OutputExistsError: ``out`` is not empty and neither ``overwrite`` nor ``resume``.
    """
    configure_tensorflow(threads=config.threads, inter_op=2)
    variant = load_variant(config.model)
    state = _prepare_run_dir(out, overwrite=overwrite, resume=resume)
    keras.utils.set_random_seed(config.seed)
    data = _read_data(config)
    write_resolved_config(config, out, extra={"variant": variant.model_dump(mode="json")})
    model, start = _model_and_start(config, variant, out, state)
    wall_s, budget = _fit(model, data, config, out, start, resume=resume)
    return _finish(config, variant, out, data, wall_s=wall_s, budget=budget)
