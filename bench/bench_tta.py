"""What test-time augmentation costs: ``roadnet run`` with 1, 2, 4 and 8 views per block.

    roadnet synth --osm helsinki --gsd 0.3 --seed 35 --size 2048x2048 --out runs/synth/bench-tta
    python bench/bench_tta.py runs/synth/bench-tta/scene.tif --reps 3

One LocalCluster (2 workers x 1 thread) runs the shipped model on the scene at each
``tta`` back to back in each of ``--reps`` repetitions; compute seconds (after the workers
are ready) and their ratio to ``tta=1`` within each repetition, medians kept. The model
sees ``tta`` times the pixels, as one batch per block; the ratios say whether the batch
costs more or less than that.
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
    parser.add_argument("--views", default="1,2,4,8", help="tta settings, the first the base")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from roadnet.pipeline.inference.run import RunConfig, run_to_zarr

    views = [int(v) for v in args.views.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-tta-"))
    reps = []
    with (
        LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        for _ in range(args.reps):
            rep: dict[str, dict[str, float]] = {}
            for tta in views:
                out = work / f"tta{tta}.zarr"
                shutil.rmtree(out, ignore_errors=True)
                summary = run_to_zarr(
                    args.scene, out, config=RunConfig(tta=tta), client=client, progress=False
                )
                rep[str(tta)] = {"seconds": round(summary.seconds, 2)}
            base = rep[str(views[0])]["seconds"]
            for tta in views:
                rep[str(tta)]["ratio"] = round(rep[str(tta)]["seconds"] / base, 3)
            reps.append(rep)
            print(json.dumps(rep), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    medians = {str(t): float(np.median([r[str(t)]["ratio"] for r in reps])) for t in views}
    print(json.dumps({"ratio_median": medians}))


if __name__ == "__main__":
    main()
