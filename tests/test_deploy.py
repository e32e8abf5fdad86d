"""deploy/nightly.sh: the unattended job processes new scenes and skips finished ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from _models import save_test_model, smooth_scene, write_scene

import roadnet

NIGHTLY = Path(__file__).resolve().parents[1] / "deploy" / "nightly.sh"


def _nightly(inbox: Path, outbox: Path, model: Path) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "ROADNET": str(bin_dir / "roadnet"),
        "PYTHON": sys.executable,
        "ROADNET_ARGS": f"--model {model} --chunk 64 --overlap 16 --workers 1 "
        "--threads-per-worker 1 --no-progress",
        "PYTHONWARNINGS": "ignore",
    }
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return subprocess.run(
        ["bash", str(NIGHTLY), str(inbox), str(outbox)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_nightly_processes_new_scenes_and_reports_failures(tmp_path: Path) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "results"
    inbox.mkdir()
    write_scene(inbox / "a.tif", smooth_scene(80, 96, seed=1))
    (inbox / "broken.tif").write_text("not a raster")
    model = save_test_model(tmp_path / "m.keras")

    first = _nightly(inbox, outbox, model)
    assert first.returncode != 0  # one scene failed ...
    assert "FAILED broken" in first.stderr
    assert "done a" in first.stdout  # ... but the others were still processed
    assert roadnet.open_result(outbox / "a.zarr").surface.shape == (80, 96)
    assert not (outbox / "broken.zarr").exists()

    (inbox / "broken.tif").unlink()
    stamp = (outbox / "a.zarr" / "zarr.json").stat().st_mtime_ns
    second = _nightly(inbox, outbox, model)
    assert second.returncode == 0, second.stderr
    assert "skip a: complete result exists" in second.stdout
    assert (outbox / "a.zarr" / "zarr.json").stat().st_mtime_ns == stamp  # untouched
