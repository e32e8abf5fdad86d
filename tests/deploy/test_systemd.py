"""deploy/systemd/: install.sh stages every path the units assume (idempotently, and prints
without changing anything under --dry-run), and `systemd-analyze verify` passes on the
installed units."""

from __future__ import annotations

import configparser
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
SYSTEMD = PROJECT / "deploy" / "systemd"
INSTALL = SYSTEMD / "install.sh"
UNITS = ("roadnet-nightly.service", "roadnet-nightly.timer")
ANALYZE = shutil.which("systemd-analyze")


def _install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALL), "--root", str(root), "--python", sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _tree(root: Path) -> dict[str, tuple[int, str]]:
    """Every path under root: its mode and, for files, a hash of its bytes."""
    tree = {}
    for p in sorted(root.rglob("*")):
        plain = p.is_file() and not p.is_symlink()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if plain else ""
        tree[str(p.relative_to(root))] = (p.lstat().st_mode, digest)
    return tree


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(SYSTEMD / name)
    return parser


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stage")
    first = _install(root, "--no-pip")
    assert first.returncode == 0, first.stderr
    return root


def test_install_stages_every_path_the_units_assume(staged: Path) -> None:
    service = _unit("roadnet-nightly.service")["Service"]
    executable = service["ExecStart"].split()[0]
    assert (staged / executable.lstrip("/")).parent.is_dir()  # the venv's bin/
    assert (staged / "opt/roadnet/venv/bin/python").exists()
    assert (staged / service["EnvironmentFile"].lstrip("/")).is_file()
    assert (staged / service["WorkingDirectory"].lstrip("/")).is_dir()
    for path in service["ReadWritePaths"].split():
        assert (staged / path.lstrip("/")).is_dir()
    env = dict(
        line.split("=", 1)
        for line in (staged / "etc/roadnet/nightly.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    # The inbox and outbox the unit passes are directories the service may write.
    for key in ("ROADNET_INBOX", "ROADNET_OUTBOX"):
        assert (staged / env[key].lstrip("/")).is_dir()
        assert any(env[key].startswith(p) for p in service["ReadWritePaths"].split())
    for unit in UNITS:
        assert (staged / "etc/systemd/system" / unit).read_bytes() == (SYSTEMD / unit).read_bytes()


def test_install_is_idempotent_and_keeps_the_settings(staged: Path) -> None:
    settings = staged / "etc/roadnet/nightly.env"
    settings.write_text(settings.read_text() + "DASK_SCHEDULER_ADDRESS=tcp://sched:8786\n")
    before = _tree(staged)
    again = _install(staged, "--no-pip")
    assert again.returncode == 0, again.stderr
    assert _tree(staged) == before
    assert "keeping" in again.stdout and "up to date" in again.stdout


def test_dry_run_prints_and_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "stage"
    proc = _install(root, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert not root.exists()
    assert f"-m venv {root}/opt/roadnet/venv" in proc.stdout
    assert "pip install" in proc.stdout


def test_install_refuses_unknown_options(tmp_path: Path) -> None:
    proc = _install(tmp_path, "--prefixx")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "unknown option --prefixx" in proc.stderr


def test_units_hold_the_timeouts_and_hardening() -> None:
    unit = _unit("roadnet-nightly.service")
    assert "network-online.target" in unit["Unit"]["Wants"]
    assert "network-online.target" in unit["Unit"]["After"]
    service = unit["Service"]
    assert service["TimeoutStartSec"] and service["Type"] == "oneshot"
    assert service["User"] == "roadnet"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
    }.items():
        assert service[key] == value, key
    assert service["ExecStart"].split()[1:3] == ["nightly", "--inbox"]
    timer = _unit("roadnet-nightly.timer")
    assert timer["Timer"]["Unit"] == "roadnet-nightly.service"
    assert timer["Install"]["WantedBy"] == "timers.target"


def _installed_root(tmp_path: Path) -> Path:
    """install.sh into a staging root, with what systemd-analyze needs to read it there."""
    staged = tmp_path / "stage"
    installed = _install(staged, "--no-pip")
    assert installed.returncode == 0, installed.stderr
    # The units' ExecStart must exist: the real roadnet entry point in the staged venv.
    shutil.copy2(Path(sys.executable).with_name("roadnet"), staged / "opt/roadnet/venv/bin")
    # The system's own units (sysinit.target, timers.target, ...) inside the root.
    system = Path("/usr/lib/systemd/system")
    if system.is_dir():
        shutil.copytree(system, staged / "usr/lib/systemd/system", symlinks=True)
    return staged


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_passes_on_the_installed_units(tmp_path: Path) -> None:
    staged = _installed_root(tmp_path)
    target = staged / "opt/roadnet/venv/bin/roadnet"
    proc = subprocess.run(
        [str(ANALYZE), "verify", f"--root={staged}", *UNITS],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    # ... and it does fail on a unit whose binary is missing.
    target.unlink()
    missing = subprocess.run(
        [str(ANALYZE), "verify", f"--root={staged}", UNITS[0]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode != 0
    assert "roadnet is not executable" in missing.stderr


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_service_exposure_is_ok_for_systemd_analyze_security(tmp_path: Path) -> None:
    staged = _installed_root(tmp_path)
    proc = subprocess.run(
        [str(ANALYZE), "security", "--offline=true", "--threshold=40", f"--root={staged}",
         UNITS[0]],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # exposure at most 4.0 of 10 ("OK"; the unit's own figure is in its last line)
    assert proc.returncode == 0, proc.stdout.strip().splitlines()[-1]
