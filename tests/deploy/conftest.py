"""Fixtures of the deploy/ tests: real processes on 127.0.0.1, stopped after each test."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import _procs
import pytest


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Returns a function giving a TCP port free at 127.0.0.1."""
    return _procs.free_port


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Factory starting a process in its own session, logged to tmp_path; all stopped after."""
    started: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], *, env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
        with open(tmp_path / log, "wb") as fh:
            proc = subprocess.Popen(
                args, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        _procs.stop(proc, grace_s=15)
