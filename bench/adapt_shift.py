"""How far each scene's batch-normalization statistics lie from a model's: the card's gate.

    python bench/adapt_shift.py --model M.keras runs/synth/helsinki/scene.tif ... \\
        [--card M.json --margin 1 [--keep-gate]]

For each scene, fits the model to it as ``roadnet run --adapt`` does (up to 64 tiles of
512 px at the run's pixel size, fewer on a small scene, seed 0) and prints the statistics shift
(:func:`roadnet.model.adapt.statistics_shift`) as one JSON line. With ``--card``, writes
``run.adapt.min_shift = margin x the largest shift`` into the card: a run under ``adapt:
auto`` then adapts only scenes further from the training looks than any of these scenes
(pass the training and validation renders), and ``input_statistics``: the scenes' band
means and standard deviations, averaged over the scenes, that a fit matches a foreign
scene's colours to first (``roadnet.model.adapt.match_input``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenes", type=Path, nargs="+")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--card", type=Path, help="card to write run.adapt.min_shift into")
    parser.add_argument("--margin", type=float, default=1.0)
    parser.add_argument(
        "--keep-gate", action="store_true", help="write input_statistics only, not run.adapt"
    )
    args = parser.parse_args()

    from roadnet.model.card import read_model_card, write_json_atomic
    from roadnet.pipeline.inference.adapt import adapt_to_scene

    shifts, means, stds = {}, [], []
    for scene in args.scenes:
        with tempfile.TemporaryDirectory() as tmp:
            summary = adapt_to_scene(
                str(scene), Path(tmp) / "a.keras", model=args.model, match=False
            )
        shifts[str(scene)] = round(summary.shift, 4)
        means.append(summary.band_mean)
        stds.append(summary.band_std)
        print(
            json.dumps(
                {
                    "scene": str(scene),
                    "shift": shifts[str(scene)],
                    "band_mean": [round(v, 2) for v in summary.band_mean],
                    "band_std": [round(v, 2) for v in summary.band_std],
                }
            ),
            flush=True,
        )
    if args.card is not None:
        card = read_model_card(args.card)
        card["input_statistics"] = {
            "mean": [round(float(v), 3) for v in np.mean(means, axis=0)],
            "std": [round(float(v), 3) for v in np.mean(stds, axis=0)],
            "scenes": len(args.scenes),
            "note": "per band, on the model's 0-255 input scale at the pixel size it "
            "predicts at: the mean over the scenes below of each scene's mean and std",
        }
        least = round(args.margin * max(shifts.values()), 3)
        if args.keep_gate:
            write_json_atomic(args.card, card)
            return
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
