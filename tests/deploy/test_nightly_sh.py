"""deploy/nightly.sh: the unattended job (`roadnet nightly`) processes new scenes only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from _models import save_test_model, smooth_scene, write_scene

import roadnet
from roadnet.pipeline.nightly.catalog import read_catalog

NIGHTLY = Path(__file__).resolve().parents[2] / "deploy" / "nightly.sh"


def _nightly(inbox: Path, outbox: Path, config: Path) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "ROADNET": str(bin_dir / "roadnet"), "PYTHONWARNINGS": "ignore"}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return subprocess.run(
        ["bash", str(NIGHTLY), str(inbox), str(outbox), "--config", str(config),
         "--workers", "1", "--threads-per-worker", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )  # fmt: skip


def test_nightly_processes_new_scenes_and_reports_failures(tmp_path: Path) -> None:
    """The wrapper runs `roadnet nightly`: failures recorded, finished scenes skipped."""
    inbox, outbox = tmp_path / "inbox", tmp_path / "results"
    inbox.mkdir()
    write_scene(inbox / "a.tif", smooth_scene(80, 96, seed=1))
    (inbox / "broken.tif").write_text("not a raster")
    model = save_test_model(tmp_path / "m.keras")
    config = tmp_path / "nightly.yaml"
    config.write_text(f"stable_seconds: 0\nmodel: {model}\nrun: {{chunk: 64, overlap: 16}}\n")

    first = _nightly(inbox, outbox, config)
    assert first.returncode == 1, first.stderr[-2000:]  # one scene failed ...
    assert "1 scene(s) done, 1 failed (broken.tif-" in first.stdout  # ... the other is done
    rows = {Path(r["source"]).name: r for r in read_catalog(str(outbox)).values()}
    assert rows["broken.tif"]["status"] == "failed"
    assert "not recognized as being in a supported file format" in rows["broken.tif"]["error"]
    assert roadnet.open_result(rows["a.tif"]["result"]).surface.shape == (80, 96)

    stamp = (Path(rows["a.tif"]["result"]) / "zarr.json").stat().st_mtime_ns
    second = _nightly(inbox, outbox, config)
    assert second.returncode == 0, second.stderr
    assert "nothing new" in second.stdout
    assert (Path(rows["a.tif"]["result"]) / "zarr.json").stat().st_mtime_ns == stamp  # untouched
