"""What ``roadnet run --adapt`` costs: the whole run with and without the fit, side by side.

    roadnet synth --osm helsinki --gsd 0.3 --seed 35 --size 2048x2048 --out runs/synth/bench-tta
    python bench/bench_adapt.py runs/synth/bench-tta/scene.tif runs/synth/test-heldout/scene.tif

One LocalCluster (2 workers x 1 thread) runs the shipped model on each scene with
``adapt`` false and true back to back in each of ``--reps`` repetitions. The fit (up to 64
tiles of 512 px, fewer on a scene they would cover more than twice, through the model in
training mode on one worker, then the model written into the store) is a cost per scene,
so the wall-clock seconds of the whole ``run_to_zarr`` call are compared (workers ready,
store created and finished included); ratio to ``adapt=false`` within each repetition,
medians kept. One run before the repetitions warms the workers up.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenes", type=Path, nargs="+")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from roadnet.pipeline.inference.run import RunConfig, run_to_zarr

    work = Path(tempfile.mkdtemp(prefix="bench-adapt-"))
    medians = {}
    with (
        LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        warm = work / "warm.zarr"  # the workers' first run loads TensorFlow and the model
        run_to_zarr(
            args.scenes[0], warm, config=RunConfig(adapt=False), client=client, progress=False
        )
        for scene in args.scenes:
            ratios = []
            for _ in range(args.reps):
                rep: dict[str, float] = {}
                for adapt in (False, True):
                    out = work / f"adapt-{adapt}.zarr"
                    shutil.rmtree(out, ignore_errors=True)
                    started = time.perf_counter()
                    summary = run_to_zarr(
                        scene, out, config=RunConfig(adapt=adapt), client=client, progress=False
                    )
                    rep[f"adapt={adapt}"] = round(time.perf_counter() - started, 2)
                rep["ratio"] = round(rep["adapt=True"] / rep["adapt=False"], 3)
                ratios.append(rep["ratio"])
                print(json.dumps({"scene": str(scene), "mpx": summary.pixels / 1e6, **rep}))
            medians[str(scene)] = float(np.median(ratios))
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"ratio_median": medians}))


if __name__ == "__main__":
    main()
