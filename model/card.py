"""Model cards: a JSON file beside every saved model saying what it is and how good it is."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path
from typing import Any

from roadnet import __version__
from roadnet.model.io import content_hash

__all__ = [
    "attach_evaluation",
    "card_adapt_rule",
    "card_adapts",
    "card_cutoffs",
    "make_model_card",
    "read_card_beside",
    "read_model_card",
    "write_json_atomic",
]


def write_json_atomic(path: Path, payload: dict[str, Any]) -> Path:
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)
    return path


def make_model_card(
    model_path: Path,
    *,
    variant: str,
    parameters: int,
    data: dict[str, Any],
    metrics: dict[str, Any],
    training: dict[str, Any],
) -> dict[str, Any]:
    """Describe a saved model: variant, data, metrics, date, content hash, versions.

    Args:
        model_path: the ``.keras`` file the card describes (hashed here).
        variant: the model variant name, e.g. ``"roadnet-lite"``.
        parameters: number of weights.
        data: training and validation scenes and windows.
        metrics: validation / held-out scores.
        training: the resolved training config and run facts (epochs, wall time ...).
    """
    import keras

    backend_version = "unknown"
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        backend_version = tf.__version__
    return {
        "model": model_path.name,
        "variant": variant,
        "content_hash": content_hash(model_path),
        "size_bytes": model_path.stat().st_size,
        "parameters": int(parameters),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "input": {
            "shape": "(batch, H, W, 3) float32, H and W multiples of 16",
            "bands": ["red", "green", "blue"],
            "scale": "digital numbers on the 0-255 scale; normalized inside the model",
        },
        "outputs": "dict of (batch, H, W, 1) float32 logits: surface, edge, centerline "
        "(fused) and <task>_side<k>; apply a sigmoid for probabilities",
        "data": data,
        "metrics": metrics,
        "training": training,
        "software": {
            "roadnet": __version__,
            "keras": keras.__version__,
            "backend": f"{keras.backend.backend()} {backend_version}",
            "python": platform.python_version(),
        },
    }


def read_model_card(path: Path) -> dict[str, Any]:
    """Read a model card JSON file."""
    card: dict[str, Any] = json.loads(Path(path).read_text())
    return card


def read_card_beside(model_path: str | Path) -> dict[str, Any] | None:
    """The card beside a model (``NAME.json``), or None when there is none or it is unreadable."""
    card_path = Path(model_path).with_suffix(".json")
    if not card_path.is_file():
        return None
    try:
        return read_model_card(card_path)
    except (OSError, ValueError):
        return None


def card_cutoffs(model_path: str | Path, *, factor: float = 1.0) -> dict[str, float] | None:
    """The per-task cut-offs in the card beside a model (``NAME.json``), if it has any.

    Args:
        model_path: the ``.keras`` model whose card is read.
        factor: model pixels per scene pixel of the prediction (:func:`~roadnet.model.gsd.
            predict_grid`). Resampled probabilities are smoother than native ones and want
            their own cuts: above 1 (enlarged to ``predict_gsd``) the ``predict_gsd.cutoffs``,
            below 1 (shrunk to ``predict_gsd.finest``) the ``predict_gsd.finest.cutoffs``
            win when the card has them.

    Returns:
        ``{task: probability}`` from the card's ``cutoffs`` (or the resampled grid's), or
        None when there is no card or it records none.
    """
    card = read_card_beside(model_path)
    if card is None:
        return None
    cutoffs = card.get("cutoffs")
    entry = card.get("predict_gsd")
    if factor != 1.0 and isinstance(entry, dict):
        side = entry if factor > 1.0 else entry.get("finest")
        if isinstance(side, dict) and isinstance(side.get("cutoffs"), dict):
            cutoffs = side["cutoffs"]
    if not isinstance(cutoffs, dict):
        return None
    return {str(task): float(value) for task, value in cutoffs.items()}


def card_adapt_rule(model_path: str | Path) -> float | None:
    """When the card beside a model asks ``roadnet run`` to fit it to a scene first.

    The card's ``run.adapt``: ``true`` (every scene) or ``{"min_shift": S}`` (a scene whose
    fitted statistics lie at least ``S`` from the trained ones,
    :func:`~roadnet.model.adapt.statistics_shift`). Never for an adapted copy, whose card
    has an ``adapted`` block.

    Returns:
        The least shift to adapt at (0: always), or None: never.
    """
    card = read_card_beside(model_path)
    if card is None or "adapted" in card:
        return None
    rule = card.get("run", {}).get("adapt") if isinstance(card.get("run"), dict) else None
    if rule is True:
        return 0.0
    if isinstance(rule, dict) and isinstance(rule.get("min_shift"), int | float):
        return float(rule["min_shift"])
    return None


def card_adapts(model_path: str | Path) -> bool:
    """Whether the card beside a model asks runs to adapt it to some scenes (see above)."""
    return card_adapt_rule(model_path) is not None


def attach_evaluation(card_path: Path, report: dict[str, Any], *, name: str) -> dict[str, Any]:
    """Record an evaluation report in a model card under ``metrics.evaluations[name]``.

    Raises:
        ModelError: the report was made with a different model file than the card describes.
    """
    from roadnet.errors import ModelError

    card = read_model_card(card_path)
    if report.get("content_hash") != card.get("content_hash"):
        raise ModelError(
            f"{card_path} describes model {card.get('content_hash')}, the report is of "
            f"{report.get('content_hash')}"
        )
    card.setdefault("metrics", {}).setdefault("evaluations", {})[name] = report
    write_json_atomic(Path(card_path), card)
    return card
