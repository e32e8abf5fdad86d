"""Fixtures of the nightly tests: the road model, configs, a real cluster on 127.0.0.1."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _city import save_road_model, start
from _procs import free_port, stop


@pytest.fixture(scope="session")
def road_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_road_model(tmp_path_factory.mktemp("roadmodel") / "roads.keras")


@pytest.fixture
def nightly_config(tmp_path: Path, road_model: Path) -> Callable[..., Path]:
    """Write a nightly YAML config for the tests' small scenes; returns its path."""

    def _write(**extra: object) -> Path:
        import yaml

        data = {
            "stable_seconds": 3,
            "lease_ttl": 10,
            "model": str(road_model),
            "preview_max_size": 200,
            "run": {"chunk": 128, "overlap": 16},
            **extra,
        }
        path = tmp_path / "nightly.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return _write


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`dask scheduler` and two `dask worker` processes (one thread each) on 127.0.0.1."""
    from distributed import Client

    logs = tmp_path_factory.mktemp("cluster-logs")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = str(Path(sys.executable).with_name("dask"))
    procs = [
        start(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--dashboard-address", f"127.0.0.1:{free_port()}"],
            logs / "scheduler.log",
        )
    ]  # fmt: skip
    try:
        for i in range(2):
            procs.append(
                start(
                    [dask, "worker", address, "--nthreads", "1", "--nworkers", "1",
                     "--no-dashboard", "--name", f"w{i}"],
                    logs / f"worker{i}.log",
                )
            )  # fmt: skip
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for proc in reversed(procs):
            stop(proc)
