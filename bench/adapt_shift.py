"""How far each scene's batch-normalization statistics lie from a model's: the card's gate.

    python bench/adapt_shift.py --model M.keras runs/synth/helsinki/scene.tif ... \\
        [--card M.json --margin 1]

For each scene, fits the model to it as ``roadnet run --adapt`` does (up to 64 tiles of
512 px at the run's pixel size, fewer on a small scene, seed 0) and prints the statistics shift
(:func:`roadnet.model.adapt.statistics_shift`) as one JSON line. With ``--card``, writes
``run.adapt.min_shift = margin x the largest shift`` into the card: a run under ``adapt:
auto`` then adapts only scenes further from the training looks than any of these scenes
(pass the training and validation renders).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenes", type=Path, nargs="+")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--card", type=Path, help="card to write run.adapt.min_shift into")
    parser.add_argument("--margin", type=float, default=1.0)
    args = parser.parse_args()

    from roadnet.model.card import read_model_card, write_json_atomic
    from roadnet.pipeline.inference.adapt import adapt_to_scene

    shifts = {}
    for scene in args.scenes:
        with tempfile.TemporaryDirectory() as tmp:
            summary = adapt_to_scene(str(scene), Path(tmp) / "a.keras", model=args.model)
        shifts[str(scene)] = round(summary.shift, 4)
        print(json.dumps({"scene": str(scene), "shift": shifts[str(scene)]}), flush=True)
    if args.card is not None:
        card = read_model_card(args.card)
        least = round(args.margin * max(shifts.values()), 3)
        card["run"] = {
            "adapt": {"min_shift": least},
            "why": f"{args.margin:g} x the largest statistics shift of the scenes below, "
            "renders in the training looks: adapt scenes further from them than any",
            "shifts": shifts,
        }
        write_json_atomic(args.card, card)
        print(json.dumps({"min_shift": least}))


if __name__ == "__main__":
    main()
