"""Every shell script in deploy/ (and the sbatch script) is shellcheck-clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
SHELLCHECK = Path(sys.executable).with_name("shellcheck")
SCRIPTS = sorted([*(PROJECT / "deploy").rglob("*.sh"), *(PROJECT / "deploy").rglob("*.sbatch")])


def test_the_scripts_are_found() -> None:
    names = {p.relative_to(PROJECT).as_posix() for p in SCRIPTS}
    assert {"deploy/slurm/roadnet.sbatch", "deploy/systemd/install.sh", "deploy/demo.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(PROJECT).as_posix())
def test_shellcheck_clean(script: Path) -> None:
    proc = subprocess.run(
        [str(SHELLCHECK), "--shell=bash", "--severity=style", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
