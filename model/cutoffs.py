"""Per-task probability cut-offs chosen on a validation scene, recorded in the model card.

One forward pass over the scene, scored at every cut of a grid (the ``sweep`` of
:func:`~roadnet.model.evaluate.evaluate_scene`); per task the cut with the best score wins:
surface by pixel IoU, edge and centerline by relaxed F1 (a predicted pixel counts within
``rho`` px of truth). Ties go to the cut nearest 0.5 (of two as near, the lower).
``roadnet run`` copies the card's ``cutoffs`` into its result, and ``roadnet vectorize`` /
``roadnet evaluate`` use them as their default cut-offs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from roadnet.tasks import TASKS

__all__ = [
    "CUTOFF_SCORES",
    "DEFAULT_GRID",
    "RHO",
    "check_card",
    "choose_cutoffs",
    "chosen_on",
    "cutoff_grid",
    "record_cutoffs_on_files",
]

#: The score each task's cut-off maximizes.
CUTOFF_SCORES: dict[str, str] = {
    "surface": "iou",
    "edge": "relaxed_f1",
    "centerline": "relaxed_f1",
}

#: The cuts tried by default: 0.2, 0.25, ..., 0.8.
DEFAULT_GRID: tuple[float, ...] = tuple(round(0.2 + 0.05 * i, 2) for i in range(13))

#: Tolerance of the relaxed scores, px (the project's default).
RHO = 2.0

#: The cut every choice is compared with, and that ties lean towards.
REFERENCE = 0.5

# scores closer than this are a tie (they come from integer pixel counts)
_TIE = 1e-9


def cutoff_grid(cuts: Sequence[float] = DEFAULT_GRID) -> list[float]:
    """The cuts to sweep, sorted, without duplicates, always holding 0.5 (the reference).

    Raises:
        ValueError: a cut is not strictly between 0 and 1.
    """
    bad = [c for c in cuts if not 0.0 < float(c) < 1.0]
    if bad:
        raise ValueError(f"cut-offs must be in (0, 1), got {bad}")
    return sorted({round(float(c), 6) for c in cuts} | {REFERENCE})


def choose_cutoffs(sweep: Mapping[str, Sequence[Mapping[str, float]]]) -> dict[str, Any]:
    """Choose each task's cut-off from scores at several cuts.

    Args:
        sweep: ``{task: [scores, ...]}``, one dict per cut holding ``threshold`` and the
            task's score (``iou`` for surface, ``relaxed_f1`` otherwise), as in the
            ``"sweep"`` of :func:`~roadnet.model.evaluate.evaluate_scene`; must include 0.5.

    Returns:
        ``{"cutoffs": {task: cut}, "scores": {task: {"score": name, "at_cutoff": value,
        "at_0.5": value, "gain": at_cutoff - at_0.5}}}``.

    Raises:
        ValueError: a task is missing or its sweep has no row at 0.5.
    """
    cutoffs: dict[str, float] = {}
    scores: dict[str, dict[str, Any]] = {}
    for task in TASKS:
        rows = sweep.get(task)
        if not rows:
            raise ValueError(f"no sweep for {task!r}")
        name = CUTOFF_SCORES[task]
        by_cut = {float(r["threshold"]): float(r[name]) for r in rows}
        reference = next((v for c, v in by_cut.items() if abs(c - REFERENCE) < 1e-6), None)
        if reference is None:
            raise ValueError(f"the sweep of {task!r} has no cut at {REFERENCE}")
        top = max(by_cut.values())
        best = min(
            (c for c, v in by_cut.items() if v >= top - _TIE),
            key=lambda c: (round(abs(c - REFERENCE), 9), c),  # equally near: the lower
        )
        cutoffs[task] = best
        scores[task] = {
            "score": name,
            "at_cutoff": by_cut[best],
            f"at_{REFERENCE}": reference,
            "gain": by_cut[best] - reference,
        }
    return {"cutoffs": cutoffs, "scores": scores}


def chosen_on(report: Mapping[str, Any], choice: Mapping[str, Any]) -> dict[str, Any]:
    """The card's ``cutoffs_chosen_on`` entry: where, how, and what the choice gained.

    Args:
        report: names the scene: ``scene``, ``labels``, ``window``, ``rho``, ``grid``.
        choice: the result of :func:`choose_cutoffs`.
    """
    return {
        "scene": str(report["scene"]),
        "labels": str(report["labels"]),
        "window": list(report["window"]) if report.get("window") is not None else None,
        "grid": [float(c) for c in report["grid"]],
        "rho": float(report["rho"]),
        "scores": dict(choice["scores"]),
    }


def check_card(card_path: Path, model_path: Path, *, overwrite: bool, key: str = "cutoffs") -> None:
    """Refuse before any work: a card of another model, or ``key`` already recorded.

    ``key`` may be dotted (``predict_gsd.finest``: the ``finest`` entry of ``predict_gsd``).

    Raises:
        InputError: the card cannot be read.
        ModelError: the card describes another model file.
        OutputExistsError: the card has ``key`` and ``overwrite`` is False.
    """
    from roadnet.errors import InputError, ModelError, OutputExistsError
    from roadnet.model.card import read_model_card
    from roadnet.model.io import content_hash

    try:
        card = read_model_card(card_path)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read model card {card_path}: {exc}") from None
    want = content_hash(model_path)
    if card.get("content_hash") != want:
        raise ModelError(
            f"{card_path} describes model {card.get('content_hash')}, not {model_path} ({want})"
        )
    value: Any = card
    for part in key.split("."):  # a dotted key names an entry inside another
        value = value.get(part) if isinstance(value, dict) else None
    if value and not overwrite:
        what = {"cutoffs": "cut-offs"}.get(key, key)
        shown = value.get("gsd", value) if isinstance(value, dict) else value
        raise OutputExistsError(f"{card_path} already records {what} {shown} (use --overwrite)")


def record_cutoffs_on_files(
    scene: Path,
    labels_dir: Path,
    *,
    card_path: Path,
    model_path: Path | None = None,
    out: Path | None = None,
    window: tuple[int, int, int, int] | None = None,
    grid: Sequence[float] = DEFAULT_GRID,
    threshold: float | Mapping[str, float] | Literal["card"] = 0.5,
    rho: float = RHO,
    tile: int = 512,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Choose the cut-offs of a saved model on a labelled scene and write them to its card.

    The card (``card_path``, normally ``NAME.json`` beside ``NAME.keras``, where
    ``roadnet run`` reads it) gets ``cutoffs`` and ``cutoffs_chosen_on``; it is checked
    before the model runs and rewritten atomically.

    Args:
        scene: scene GeoTIFF ``(3, y, x)``, R, G, B.
        labels_dir: directory with ``surface.tif``, ``edge.tif``, ``centerline.tif``.
        card_path: the model card JSON of ``model_path``.
        model_path: a ``.keras`` model; None for the shipped default model.
        out: JSON file for the evaluation report (with its sweep), or None.
        window: ``(col0, row0, col1, row1)`` part of the scene to use; None for all of it.
        grid: the cuts to try (0.5 is always added).
        threshold: the cut of the report's main scores (one, or per task).
        rho: tolerance of the relaxed scores, pixels.
        tile: prediction tile side, a multiple of 16.
        overwrite: replace cut-offs already in the card, and an existing ``out``.

    Returns:
        ``{"report": evaluation report, "cutoffs": {task: cut}, "cutoffs_chosen_on": {...}}``.

    Raises:
        ModelError: the card describes another model file.
        OutputExistsError: the card already has cut-offs (or ``out`` exists) without
            ``overwrite``.
    """
    from roadnet.model.card import read_model_card, write_json_atomic
    from roadnet.model.evaluate import evaluate_model_on_files
    from roadnet.model.io import default_model_path

    path = Path(model_path) if model_path is not None else default_model_path()
    check_card(card_path, path, overwrite=overwrite)
    cuts = cutoff_grid(grid)
    report = evaluate_model_on_files(
        scene,
        labels_dir,
        model_path=path,
        out=out,
        window=window,
        threshold=threshold,
        rho=rho,
        tile=tile,
        sweep=cuts,
        overwrite=overwrite,
        adapt=False,  # chosen on the model as trained, whatever its card asks of runs
    )
    choice = choose_cutoffs(report["sweep"])
    entry = chosen_on({**report, "grid": cuts}, choice)
    check_card(card_path, path, overwrite=overwrite)  # unchanged while the model ran
    card = read_model_card(card_path)
    card["cutoffs"] = choice["cutoffs"]
    card["cutoffs_chosen_on"] = entry
    write_json_atomic(card_path, card)
    return {"report": report, "cutoffs": choice["cutoffs"], "cutoffs_chosen_on": entry}
