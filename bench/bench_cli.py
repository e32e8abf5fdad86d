"""How long a command takes to refuse a typo'd path: early checks against checks after imports.

For each command, in turn and ``--reps`` times, one fresh interpreter each:

* (old) what the command did before its checks moved ahead of the heavy imports — import
  the stage module that does the work (``roadnet.pipeline.vectorize.run``,
  ``…inference.run``, ``…evaluate.run``, ``…preview``, ``…inference.export``), then refuse;
* (new) the console entry point with a missing input, as a user runs it.

Both end with the same one-line error and exit code 2. Medians and their ratio are printed
as a Markdown table.

    .venv/bin/python bench/bench_cli.py --reps 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = {
    "vectorize": "roadnet.pipeline.vectorize.run",
    "run": "roadnet.pipeline.inference.run",
    "evaluate": "roadnet.pipeline.evaluate.run",
    "preview": "roadnet.pipeline.preview",
    "export": "roadnet.pipeline.inference.export",
}


def _args(command: str, tmp: Path) -> list[str]:
    missing = str(tmp / "missing")
    if command == "vectorize":
        return ["vectorize", f"{missing}.zarr", "--out", str(tmp / "roads.gpkg")]
    if command == "run":
        return ["run", f"{missing}.tif", "--out", str(tmp / "r.zarr")]
    if command == "preview":
        return ["preview", f"{missing}.tif", "--out", str(tmp / "look.png")]
    if command == "export":
        return ["export", f"{missing}.zarr", "--out", str(tmp / "cogs")]
    return ["evaluate", "--pred", f"{missing}.zarr", "--truth", missing, "--out", "m.json"]


def _seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    assert proc.returncode == 2 and proc.stderr.startswith("roadnet: error:"), proc.stderr
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    opts = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for command, stage in STAGES.items():
            args = _args(command, tmp)
            refuse = (
                f"import {stage}, sys; from roadnet.pipeline import cli; "
                f"sys.argv = ['roadnet', *{args!r}]; cli.main()"
            )
            old, new = [], []
            for _ in range(opts.reps):  # interleaved: load drifts hit both alike
                old.append(_seconds([sys.executable, "-c", refuse]))
                new.append(_seconds([sys.executable, "-m", "roadnet.pipeline.cli", *args]))
            rows.append((command, statistics.median(old), statistics.median(new)))
    print("| command | after the imports (old), s | before them (new), s | old / new |")
    print("| --- | ---: | ---: | ---: |")
    for command, old_s, new_s in rows:
        print(f"| `roadnet {command}` | {old_s:.2f} | {new_s:.2f} | {old_s / new_s:.1f} |")


if __name__ == "__main__":
    main()
