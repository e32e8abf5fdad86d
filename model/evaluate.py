"""Whole-scene prediction and held-out scores of a model (in memory, one process).

For city-scale scenes use the Dask pipeline (``roadnet run``); this module serves training
(validation of a finished model) and ``roadnet evaluate-model``, on scenes that fit in memory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from roadnet.metrics import pixel_scores, relaxed_scores
from roadnet.model.data import LabelledScene
from roadnet.model.gsd import PredictGsd
from roadnet.tasks import INPUT_MULTIPLE, TASKS

__all__ = [
    "evaluate_gap_on_files",
    "evaluate_model_on_files",
    "evaluate_scene",
    "generalization_gap",
    "parse_cuts",
    "parse_thresholds",
    "predict_scene",
]


def _forward_fn(model: Any) -> Any:
    """``model(x, training=False)``, traced once into a graph on the TensorFlow backend."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return lambda x: model(x, training=False)


def predict_scene(
    model: Any,
    image: np.ndarray,
    *,
    tile: int = 512,
    margin: int = 32,
    batch: int = 2,
    resample: float = 1.0,
    tta: int = 1,
) -> dict[str, np.ndarray]:
    """Predict a whole image tile by tile, keeping each tile's centre.

    Tiles of ``tile`` px overlap by ``2 * margin``; the image is reflect-padded so every pixel
    is predicted by a tile centre. With ``resample`` the image is first resampled by that
    factor (model pixels per image pixel) and the probabilities back onto its own grid
    (:mod:`roadnet.model.gsd`).

    Args:
        model: a RoadNet ``keras.Model`` (logit outputs).
        image: ``(y, x, 3)`` float32 R, G, B on the 0–255 scale.
        tile: tile side, a multiple of 16.
        margin: pixels discarded at each tile edge.
        batch: tiles per model call (the last call may hold fewer).
        resample: model pixels per image pixel; 1 predicts on the image's own grid.
        tta: views averaged per tile (1, 2, 4 or 8; :mod:`roadnet.model.tta`).

    Returns:
        ``{task: (y, x) float32 probability}`` for surface, edge and centerline.
    """
    if tile % INPUT_MULTIPLE or tile <= 2 * margin:
        raise ValueError(f"tile must be a multiple of {INPUT_MULTIPLE} larger than 2*margin")
    if resample != 1.0:
        from roadnet.model.gsd import resample as resample_image
        from roadnet.model.gsd import scaled_shape

        own = image.shape[:2]
        scaled = resample_image(image.astype(np.float32, copy=False), scaled_shape(own, resample))
        probs = predict_scene(model, scaled, tile=tile, margin=margin, batch=batch, tta=tta)
        stack = np.stack([probs[t] for t in TASKS], axis=-1)
        back = np.clip(resample_image(stack, own), 0.0, 1.0)
        return {task: back[..., i] for i, task in enumerate(TASKS)}
    from keras import ops

    from roadnet.model.tta import check_tta, tta_probabilities

    check_tta(tta)
    height, width = image.shape[:2]
    step = tile - 2 * margin
    rows, cols = math.ceil(height / step), math.ceil(width / step)
    pad_y, pad_x = rows * step - height + margin, cols * step - width + margin
    widths = ((margin, pad_y), (margin, pad_x), (0, 0))
    if min(height, width) > max(pad_y, pad_x):
        padded = np.pad(image, widths, mode="reflect")
    else:
        padded = np.pad(image, widths, mode="symmetric")
    out = {task: np.zeros((rows * step, cols * step), np.float32) for task in TASKS}
    forward = _forward_fn(model)
    origins = [(r * step, c * step) for r in range(rows) for c in range(cols)]
    for start in range(0, len(origins), batch):
        group = origins[start : start + batch]
        tiles = np.stack([padded[r : r + tile, c : c + tile] for r, c in group])
        views = tta_probabilities(forward, tiles.astype(np.float32), tta=tta)
        for task in TASKS:
            probs = ops.convert_to_numpy(views[task])[..., 0]
            for (r, c), prob in zip(group, probs, strict=True):
                out[task][r : r + step, c : c + step] = prob[
                    margin : margin + step, margin : margin + step
                ]
    return {task: out[task][:height, :width] for task in TASKS}


Thresholds = float | Mapping[str, float]

#: ``"card"``: the cut-offs of the model's card; on a resampled grid those of the
#: ``predict_gsd`` side used (:func:`~roadnet.model.card.card_cutoffs`).
CardOr = Thresholds | Literal["card"]


def parse_cuts(text: str) -> list[float]:
    """Parse comma-separated probability cuts, e.g. ``"0.3,0.5,0.7"``.

    Raises:
        InputError: a value is not a number strictly between 0 and 1.
    """
    from roadnet.errors import InputError

    cuts = []
    for item in (part.strip() for part in text.split(",")):
        try:
            value = float(item)
        except ValueError:
            raise InputError(f"threshold {item!r} is not a number") from None
        if not 0.0 < value < 1.0:
            raise InputError(f"threshold {item!r} is not between 0 and 1")
        cuts.append(value)
    return cuts


def parse_thresholds(text: str) -> dict[str, float] | Literal["card"]:
    """Parse ``"0.5"`` (every task), ``"surface=0.6,edge=0.4"`` or ``"card"``.

    Tasks not named keep 0.5; ``"card"`` (the model card's cut-offs) is resolved per scene by
    :func:`evaluate_model_on_files`.

    Raises:
        InputError: a value is not a number in (0, 1) or a task name is unknown.
    """
    from roadnet.errors import InputError

    if text.strip().lower() == "card":
        return "card"
    if "=" not in text:
        (value,) = parse_cuts(text) if "," not in text else (None,)
        if value is None:
            raise InputError(f"threshold {text!r}: give one value or task=value pairs")
        return dict.fromkeys(TASKS, value)
    out = dict.fromkeys(TASKS, 0.5)
    for item in (part.strip() for part in text.split(",")):
        task, _, raw = item.partition("=")
        if task.strip() not in TASKS:
            raise InputError(f"threshold {item!r}: unknown task (use {', '.join(TASKS)})")
        (out[task.strip()],) = parse_cuts(raw)
    return out


def _per_task(threshold: Thresholds) -> dict[str, float]:
    if isinstance(threshold, Mapping):
        missing = [t for t in TASKS if t not in threshold]
        if missing:
            raise ValueError(f"threshold missing for {missing}")
        return {t: float(threshold[t]) for t in TASKS}
    return dict.fromkeys(TASKS, float(threshold))


def _scores(
    prob: np.ndarray, truth: np.ndarray, *, threshold: float, rho: float
) -> dict[str, float]:
    pred = prob > threshold
    scores = {k: float(v) for k, v in pixel_scores(pred, truth).items()}
    relaxed = relaxed_scores(pred, truth, rho=rho)
    for key in ("precision", "recall", "f1"):
        scores[f"relaxed_{key}"] = float(relaxed[key])
    scores["threshold"] = threshold
    return scores


def evaluate_scene(
    model: Any,
    scene: LabelledScene,
    *,
    threshold: Thresholds = 0.5,
    rho: float = 2.0,
    tile: int = 512,
    margin: int = 32,
    sweep: Sequence[float] = (),
    resample: float = 1.0,
    tta: int = 1,
) -> dict[str, Any]:
    """Scores of a model on the window of a labelled scene.

    Args:
        model: a RoadNet ``keras.Model``.
        scene: the labelled scene; only its window is scored.
        threshold: probability cut, one for all tasks or one per task.
        rho: tolerance of the relaxed scores, pixels.
        tile: prediction tile side, a multiple of 16.
        margin: pixels discarded at each tile edge.
        sweep: extra thresholds to score every task at (under ``"sweep"``).
        resample: model pixels per scene pixel (see :func:`predict_scene`).
        tta: views averaged per tile (see :func:`predict_scene`).

    Returns:
        ``{task: {...}}`` with pixel ``precision``, ``recall``, ``f1``, ``iou``, the relaxed
        ``relaxed_precision``, ``relaxed_recall``, ``relaxed_f1`` within ``rho`` pixels and
        the ``threshold`` used; with ``sweep``, also ``"sweep": {task: [scores, ...]}``.
    """
    cuts = _per_task(threshold)
    col0, row0, col1, row1 = scene.window
    image = scene.image[row0:row1, col0:col1].astype(np.float32)
    probs = predict_scene(model, image, tile=tile, margin=margin, resample=resample, tta=tta)
    result: dict[str, Any] = {}
    swept: dict[str, list[dict[str, float]]] = {}
    for i, task in enumerate(TASKS):
        truth = scene.labels[row0:row1, col0:col1, i] > 0
        result[task] = _scores(probs[task], truth, threshold=cuts[task], rho=rho)
        result[task]["truth_fraction"] = float(truth.mean())
        if sweep:
            swept[task] = [_scores(probs[task], truth, threshold=t, rho=rho) for t in sweep]
    if sweep:
        result["sweep"] = swept
    return result


def evaluate_model_on_files(
    scene: Path,
    labels_dir: Path,
    *,
    model_path: Path | None = None,
    out: Path | None = None,
    window: tuple[int, int, int, int] | None = None,
    threshold: CardOr = 0.5,
    rho: float = 2.0,
    tile: int = 512,
    sweep: Sequence[float] = (),
    overwrite: bool = False,
    predict_gsd: PredictGsd = "auto",
    tta: int = 1,
    adapt: bool | Literal["auto"] = "auto",
) -> dict[str, Any]:
    """Score a saved model on a labelled scene read from disk; optionally write JSON.

    Args:
        scene: scene GeoTIFF ``(3, y, x)``, R, G, B.
        labels_dir: directory with ``surface.tif``, ``edge.tif``, ``centerline.tif``.
        model_path: a ``.keras`` model; None for the shipped default model.
        out: JSON file to write the report to, or None.
        window: ``(col0, row0, col1, row1)`` part of the scene to score; None for all of it.
        threshold: probability above which a pixel is predicted positive (one, or per task),
            or ``"card"``: the cut-offs of the card beside the model, on a resampled grid
            those of the ``predict_gsd`` side used (as ``roadnet run`` writes into a result).
        rho: tolerance of the relaxed scores, pixels.
        tile: prediction tile side, a multiple of 16.
        sweep: extra thresholds to score (see :func:`evaluate_scene`).
        overwrite: replace an existing ``out``.
        predict_gsd: pixel size the model sees, as ``roadnet run`` (:mod:`roadnet.model.gsd`).
        tta: views averaged per tile, as ``roadnet run --tta`` (:mod:`roadnet.model.tta`).
        adapt: first fit the model's normalization to the whole scene, as ``roadnet run
            --adapt`` (:func:`~roadnet.pipeline.inference.adapt.adapt_to_scene`, defaults);
            ``auto``: as the model's card asks (every scene, or one whose statistics shift
            at least its ``min_shift``). The report names the source model and records the
            fit under ``adapted`` (``applied``: whether the fitted model was scored).

    Returns:
        The report: model path and content hash, scene, window, threshold, rho, the pixel
        size predicted at, the views averaged, scores per task.
    """
    from roadnet.model.card import card_adapt_rule
    from roadnet.model.data import read_labelled_scene
    from roadnet.model.gsd import card_pixel_sizes, predict_grid
    from roadnet.model.io import content_hash, default_model_path, load_model
    from roadnet.model.tta import check_tta
    from roadnet.outputs import check_output_file

    check_tta(tta)
    if out is not None:
        check_output_file(out, overwrite=overwrite)
    path = Path(model_path) if model_path is not None else default_model_path()
    min_shift = card_adapt_rule(path) if adapt == "auto" else (0.0 if adapt else None)
    if min_shift is not None:
        return _evaluate_adapted(
            scene, labels_dir, model_path=path, out=out, predict_gsd=predict_gsd,
            min_shift=min_shift, window=window, threshold=threshold, rho=rho, tile=tile,
            sweep=sweep, tta=tta,
        )  # fmt: skip
    model = load_model(path)
    data = read_labelled_scene(scene, labels_dir, window=window)
    card_gsd, finest = card_pixel_sizes(path)
    target, factor = predict_grid(
        predict_gsd, scene_gsd=data.gsd, card_gsd=card_gsd, card_finest=finest
    )
    if threshold == "card":
        from roadnet.errors import InputError
        from roadnet.model.card import card_cutoffs

        card = card_cutoffs(path, factor=factor)
        if card is None:
            raise InputError(f"threshold 'card': no model card with cut-offs beside {path}")
        threshold = card
    started = time.monotonic()
    scores = evaluate_scene(
        model, data, threshold=threshold, rho=rho, tile=tile, sweep=sweep, resample=factor,
        tta=tta,
    )  # fmt: skip
    swept = scores.pop("sweep", None)
    report = {
        "model": str(path),
        "content_hash": content_hash(path),
        "scene": str(scene),
        "labels": str(labels_dir),
        "window": list(data.window),
        "threshold": _per_task(threshold),
        "rho": rho,
        "tile": tile,
        "predict_gsd": "native" if target is None else target,
        "tta": tta,
        "seconds": round(time.monotonic() - started, 1),
        "scores": scores,
    }
    if swept is not None:
        report["sweep"] = swept
    if out is not None:
        from roadnet.model.card import write_json_atomic

        write_json_atomic(out, report)
    return report


#: Scores the generalization gap compares, per task.
GAP_KEYS = ("iou", "f1", "relaxed_f1")


def generalization_gap(
    in_style: Mapping[str, Any], out_of_style: Mapping[str, Any]
) -> dict[str, dict[str, float]]:
    """Per task and score, in-style minus out-of-style (positive: worse on the new style).

    Args:
        in_style: a report of :func:`evaluate_model_on_files` on a scene in the training style.
        out_of_style: a report of the same model on a scene of a style never trained on.
    """
    return {
        task: {
            key: float(in_style["scores"][task][key]) - float(out_of_style["scores"][task][key])
            for key in GAP_KEYS
        }
        for task in TASKS
    }


def _evaluate_adapted(
    scene: Path,
    labels_dir: Path,
    *,
    model_path: Path,
    out: Path | None,
    predict_gsd: PredictGsd,
    min_shift: float,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`evaluate_model_on_files` of ``model_path`` fitted to ``scene`` first.

    As ``roadnet run`` does: the fitted model is scored when the scene's statistics shift
    is at least ``min_shift``, else the model as trained.
    """
    import tempfile

    from roadnet.model.io import content_hash
    from roadnet.pipeline.inference.adapt import adapt_to_scene

    with tempfile.TemporaryDirectory(prefix="roadnet-adapt-") as tmp:
        adapted = Path(tmp) / "adapted.keras"
        summary = adapt_to_scene(
            str(scene), adapted, model=model_path, predict_gsd=predict_gsd, min_shift=min_shift
        )
        applied = summary.shift >= min_shift
        report = evaluate_model_on_files(
            scene, labels_dir, model_path=adapted if applied else model_path,
            predict_gsd=predict_gsd, adapt=False, **kwargs,
        )  # fmt: skip
    report |= {
        "model": str(model_path),
        "content_hash": content_hash(model_path),
        "adapted": {
            "content_hash": summary.content_hash,
            "tiles": summary.tiles,
            "tile_px": summary.tile_px,
            "seconds": round(summary.seconds, 1),
            "shift": round(summary.shift, 4),
            "min_shift": min_shift,
            "applied": applied,
            "input_matched": summary.matched,
        },
    }
    if out is not None:
        from roadnet.model.card import write_json_atomic

        write_json_atomic(out, report)
    return report


def evaluate_gap_on_files(
    in_style: tuple[Path, Path],
    out_of_style: tuple[Path, Path],
    *,
    model_path: Path | None = None,
    out: Path | None = None,
    threshold: CardOr = 0.5,
    rho: float = 2.0,
    tile: int = 512,
    overwrite: bool = False,
    predict_gsd: PredictGsd = "auto",
    tta: int = 1,
    adapt: bool | Literal["auto"] = "auto",
) -> dict[str, Any]:
    """Score one model on an in-style and an out-of-style labelled scene, and their gap.

    Args:
        in_style: ``(scene, labels_dir)`` rendered in a style the model was trained on.
        out_of_style: ``(scene, labels_dir)`` of a held-out style.
        model_path: a ``.keras`` model; None for the shipped default model.
        out: JSON file to write the report to, or None.
        threshold: probability cut (one, or per task), or ``"card"`` (resolved per scene).
        rho: tolerance of the relaxed scores, pixels.
        tile: prediction tile side, a multiple of 16.
        overwrite: replace an existing ``out``.
        predict_gsd: pixel size the model sees (see :func:`evaluate_model_on_files`).
        tta: views averaged per tile (see :func:`evaluate_model_on_files`).
        adapt: fit the model to each scene first (see :func:`evaluate_model_on_files`).

    Returns:
        ``{"model", "content_hash", "in_style": report, "out_of_style": report, "gap":
        {task: {score: in - out}}}``; the two reports are those of
        :func:`evaluate_model_on_files`.
    """
    from roadnet.outputs import check_output_file

    if out is not None:
        check_output_file(out, overwrite=overwrite)
    kwargs: dict[str, Any] = {
        "model_path": model_path,
        "threshold": threshold,
        "rho": rho,
        "predict_gsd": predict_gsd,
        "tta": tta,
        "adapt": adapt,
    }
    first = evaluate_model_on_files(*in_style, tile=tile, **kwargs)
    second = evaluate_model_on_files(*out_of_style, tile=tile, **kwargs)
    report = {
        "model": first["model"],
        "content_hash": first["content_hash"],
        "in_style": first,
        "out_of_style": second,
        "gap": generalization_gap(first, second),
    }
    if out is not None:
        from roadnet.model.card import write_json_atomic

        write_json_atomic(out, report)
    return report
