"""deploy/slurm/roadnet.sbatch, run here as Slurm would run it: the batch script itself with
`srun` replaced by a script that starts each task's command on this machine. The scheduler,
workers and `roadnet run` are real processes on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from _models import save_test_model, smooth_scene, write_scene

import roadnet

PROJECT = Path(__file__).resolve().parents[2]
SBATCH = PROJECT / "deploy" / "slurm" / "roadnet.sbatch"

#: srun on one machine: start the command once per task (--ntasks), here, and wait for them;
#: record the options it was given.
SRUN = r"""#!/usr/bin/env bash
set -euo pipefail
printf '%s\n' "$*" >> "${SRUN_LOG:?}"
ntasks=1
while [ $# -gt 0 ]; do
  case $1 in
    --ntasks=*) ntasks=${1#--ntasks=}; shift ;;
    --*) shift ;;
    *) break ;;
  esac
done
pids=()
trap 'kill "${pids[@]}" 2> /dev/null || true; wait; exit 143' TERM INT
for ((i = 0; i < ntasks; i++)); do
  SLURM_PROCID=$i "$@" &
  pids+=("$!")
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit "$status"
"""


def _sbatch(
    tmp_path: Path, *args: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text(SRUN)
    (bin_dir / "srun").chmod(0o755)
    srun_log = tmp_path / "srun.log"
    environ = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_NTASKS": "1",
        "SLURM_CPUS_PER_TASK": "2",
        "SLURM_MEM_PER_CPU": "3000",
        "SLURM_JOB_ID": "4242",
        "SLURM_SUBMIT_DIR": str(tmp_path),
        "SRUN_LOG": str(srun_log),
        "ROADNET_VENV": str(Path(sys.executable).parents[1]),
        "ROADNET_SCHEDULER_OPTIONS": "--host 127.0.0.1 --dashboard-address 127.0.0.1:0",
        "ROADNET_WORKER_OPTIONS": "--host 127.0.0.1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **env,
    }
    environ.pop("DASK_SCHEDULER_ADDRESS", None)
    proc = subprocess.run(
        ["bash", str(SBATCH), *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=tmp_path,
        timeout=300,
    )
    calls = srun_log.read_text().splitlines() if srun_log.exists() else []
    return proc, calls


def _left_running(tmp_path: Path) -> list[str]:
    """Processes with this test's directory on their command line still running after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        left = []
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if str(tmp_path) in cmdline:
                left.append(cmdline)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def _job_dirs(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob("roadnet-4242.*"))


def _assert_ran_on_its_own_cluster(
    proc: subprocess.CompletedProcess[str], calls: list[str], tmp_path: Path
) -> None:
    assert proc.returncode == 0, proc.stderr
    # One single-threaded worker process per CPU of the task, as many CPUs as Slurm gave.
    assert "2 of 2 workers, threads [1]" in proc.stderr
    (call,) = calls
    assert call.startswith("--ntasks=1 --cpus-per-task=2 ")
    assert "--nworkers 2 --nthreads 1 --memory-limit 3000MiB" in call
    assert _job_dirs(tmp_path) == []  # the scheduler file and logs are cleaned up
    assert _left_running(tmp_path) == []


@pytest.mark.cluster
def test_sbatch_vectorizes_a_result_on_its_own_cluster(tmp_path: Path) -> None:
    import geopandas as gpd
    from _results import road_codes, write_result

    result = write_result(tmp_path / "r.zarr", road_codes(128, 128, seed=2), chunk=64)
    roads = tmp_path / "roads.gpkg"
    proc, calls = _sbatch(tmp_path, "vectorize", str(result), "--out", str(roads))
    _assert_ran_on_its_own_cluster(proc, calls, tmp_path)
    assert len(gpd.read_file(roads, layer="road_centerline")) > 0


@pytest.mark.slow
@pytest.mark.cluster
def test_sbatch_runs_the_model_on_its_own_cluster(tmp_path: Path) -> None:
    model = save_test_model(tmp_path / "m.keras")
    scene = write_scene(tmp_path / "scene.tif", smooth_scene(96, 128, seed=1))
    out = tmp_path / "out.zarr"
    proc, calls = _sbatch(
        tmp_path, "run", str(scene), "--out", str(out), "--model", str(model),
        "--chunk", "64", "--overlap", "16", "--no-progress",
    )  # fmt: skip
    _assert_ran_on_its_own_cluster(proc, calls, tmp_path)
    assert roadnet.open_result(out).surface.shape == (96, 128)


def test_sbatch_gives_up_waiting_for_the_scheduler_file(tmp_path: Path) -> None:
    proc, calls = _sbatch(
        tmp_path, "run", "x.tif", "--out", "x.zarr", ROADNET_SCHEDULER_TIMEOUT="0"
    )
    assert proc.returncode == 1
    assert "no scheduler file" in proc.stderr and "after 0 s" in proc.stderr
    assert calls == []  # no worker was started
    (job,) = _job_dirs(tmp_path)  # kept, with the logs, since the job failed
    assert f"logs in {job}" in proc.stderr
    assert not (job / "scheduler.json").exists()
    assert _left_running(tmp_path) == []  # the scheduler was stopped


def test_sbatch_reports_a_scheduler_that_exits(tmp_path: Path) -> None:
    proc, _ = _sbatch(
        tmp_path, "run", "x.tif", "--out", "x.zarr", ROADNET_SCHEDULER_OPTIONS="--no-such-option"
    )
    assert proc.returncode == 1
    assert "the scheduler exited before writing" in proc.stderr
    assert "--no-such-option" in proc.stderr  # its log is shown


def test_sbatch_needs_a_command(tmp_path: Path) -> None:
    proc, _ = _sbatch(tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("roadnet.sbatch: no roadnet command given")
