"""``roadnet run`` of this tree against another install of roadnet, alternating, same scene.

    git worktree add /tmp/base REV && python3 -m venv /tmp/base/.venv
    /tmp/base/.venv/bin/pip install -e /tmp/base
    python bench/bench_versions.py --baseline /tmp/base/.venv/bin/python --size 4096 --reps 3

Both run the CLI (``python -m roadnet.pipeline.cli run``) with the same options and the
default (shipped) model on one scene rendered once; each repetition runs baseline then
current (or the reverse, alternating the order), and the ratio current / baseline of the
summary line's Mpx/s is taken within the repetition. The output stores are compared: the
codes must be identical.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr


def _run(python: str, scene: Path, out: Path, extra: list[str]) -> float:
    cmd = [python, "-m", "roadnet.pipeline.cli", "run", str(scene), "--out", str(out),
           "--no-progress", "--overwrite", *extra]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"{python}: {proc.stderr[-2000:]}")
    line = proc.stdout.strip().splitlines()[-1]
    return float(line.rsplit(" Mpx/s", 1)[0].rsplit(" ", 1)[1])


def _codes(path: Path) -> dict[str, np.ndarray]:
    ds = xr.open_zarr(path, mask_and_scale=False)
    return {t: ds[t].values for t in ("surface", "edge", "centerline")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", required=True, help="python of the other install")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("extra", nargs="*", help="further `roadnet run` options")
    args = parser.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-versions-"))
    scene = work / "scene" / "scene.tif"
    if not scene.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "roadnet.pipeline.cli",
                "synth",
                "--osm",
                "test",
                "--gsd",
                "0.3",
                "--size",
                f"{args.size}x{args.size}",
                "--seed",
                "7",
                "--out",
                str(scene.parent),
            ],
            check=True,
        )
    rows = []
    for rep in range(args.reps):
        order = ["baseline", "current"] if rep % 2 == 0 else ["current", "baseline"]
        rate = {}
        for which in order:
            python = args.baseline if which == "baseline" else sys.executable
            rate[which] = _run(python, scene, work / f"{which}.zarr", args.extra)
        rows.append((rate["baseline"], rate["current"], rate["current"] / rate["baseline"]))
        print(
            f"rep {rep + 1} ({' then '.join(order)}): baseline {rate['baseline']:.3f} Mpx/s, "
            f"current {rate['current']:.3f} Mpx/s, ratio {rows[-1][2]:.3f}",
            flush=True,
        )
    base, cur = _codes(work / "baseline.zarr"), _codes(work / "current.zarr")
    same = all(np.array_equal(base[t], cur[t]) for t in base)
    print(
        f"median ratio current / baseline: {statistics.median(r[2] for r in rows):.3f}; "
        f"codes identical: {same}"
    )


if __name__ == "__main__":
    main()
