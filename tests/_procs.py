"""Real processes on 127.0.0.1 for the cluster tests: a free port, start in a session, stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(args: list[str], log: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start a process in a session of its own (``stop`` ends its children), output to ``log``."""
    with open(log, "wb") as fh:
        return subprocess.Popen(
            args, stdout=fh, stderr=subprocess.STDOUT, env=dict(env), start_new_session=True
        )


def stop(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """End a process we started and everything in its session: SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
