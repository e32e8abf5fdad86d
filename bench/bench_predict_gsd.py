"""What predicting at the model card's pixel size costs: ``roadnet run`` native vs resampled.

    python bench/bench_predict_gsd.py runs/synth/val-gsd-31/scene.tif --predict-gsd 0.35

One LocalCluster (2 workers x 1 thread) runs the shipped model on the scene with
``predict_gsd=native`` and with the given pixel size, back to back in each of ``--reps``
repetitions; compute seconds (after the workers are ready) and their ratio within each
repetition, medians kept. The resampled run calls the model on (scene GSD / predict GSD)^2
as many pixels; the ratio says what the resampling around it adds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scene", type=Path)
    parser.add_argument("--predict-gsd", type=float, default=0.35)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from roadnet.pipeline.inference.run import RunConfig, run_to_zarr

    work = Path(tempfile.mkdtemp(prefix="bench-gsd-"))
    settings: list[str | float] = ["native", args.predict_gsd]
    reps = []
    with (
        LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        for _ in range(args.reps):
            rep = {}
            for setting in settings:
                out = work / f"{setting}.zarr"
                shutil.rmtree(out, ignore_errors=True)
                summary = run_to_zarr(
                    args.scene, out, config=RunConfig(predict_gsd=setting), client=client,
                    progress=False,
                )  # fmt: skip
                rep[str(setting)] = {"seconds": round(summary.seconds, 2), "px": summary.pixels}
            rep["ratio"] = round(
                rep[str(args.predict_gsd)]["seconds"] / rep["native"]["seconds"], 3
            )
            reps.append(rep)
            print(json.dumps(rep), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"ratio_median": float(np.median([r["ratio"] for r in reps]))}))


if __name__ == "__main__":
    main()
