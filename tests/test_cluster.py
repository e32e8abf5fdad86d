"""A real Dask cluster on 127.0.0.1: `dask scheduler` and two `dask worker` processes.

The CLI runs against it with --scheduler; results must equal a LocalCluster run byte for
byte, survive a worker killed mid-run, and resume after the client is killed.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from _models import save_test_model, smooth_scene, write_scene
from _procs import free_port, start, stop

from roadnet.pipeline.inference.run import RunConfig, predict_scene
from roadnet.pipeline.inference.store import done_chunks, staging_path

pytestmark = pytest.mark.cluster

ROADNET = [sys.executable, "-m", "roadnet.pipeline.cli"]
RUN_OPTS = ["--chunk", "128", "--overlap", "32", "--no-progress"]
SIZE = 1024  # 64 chunks of 128 px: long enough to interrupt
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return start(args, log, ENV)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cluster")


@pytest.fixture(scope="module")
def cluster(workdir: Path) -> Iterator[str]:
    from distributed import Client

    address = f"tcp://127.0.0.1:{free_port()}"
    dask = str(Path(sys.executable).with_name("dask"))
    procs = [
        _start(
            [
                dask,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                address.rsplit(":", 1)[1],
                "--dashboard-address",
                f"127.0.0.1:{free_port()}",
            ],
            workdir / "scheduler.log",
        )
    ]
    try:
        for i in range(2):
            procs.append(
                _start(
                    [
                        dask,
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--nworkers",
                        "1",
                        "--no-dashboard",
                        "--name",
                        f"w{i}",
                    ],
                    workdir / f"worker{i}.log",
                )
            )
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for proc in reversed(procs):
            stop(proc)


@pytest.fixture(scope="module")
def job(workdir: Path) -> dict[str, Path]:
    model = save_test_model(workdir / "m.keras")
    scene = write_scene(workdir / "scene.tif", smooth_scene(SIZE, SIZE, seed=3))
    local = workdir / "local.zarr"
    _, log = _run_ok(
        [
            *ROADNET,
            "run",
            str(scene),
            "--out",
            str(local),
            "--model",
            str(model),
            *RUN_OPTS,
            "--workers",
            "1",
            "--threads-per-worker",
            "1",
            "--dashboard",
        ]
    )
    assert "local cluster: 1 worker(s) x 1 thread(s), dashboard http://127.0.0.1:" in log, log
    return {"model": model, "scene": scene, "local": local}


def _raw(path: Path) -> dict[str, np.ndarray]:
    ds = xr.open_zarr(path, mask_and_scale=False)
    return {name: ds[name].values for name in ("surface", "edge", "centerline")}


def _assert_same(a: Path, b: Path) -> None:
    ra, rb = _raw(a), _raw(b)
    for name in ra:
        assert ra[name].dtype == np.uint8
        assert np.array_equal(ra[name], rb[name]), name


def _run_ok(args: list[str]) -> tuple[str, str]:
    """Run a roadnet CLI command to completion; assert success; its last line and stderr."""
    proc = subprocess.run(args, capture_output=True, text=True, env=ENV, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return (proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""), proc.stderr


def _computed(line: str) -> int:
    """Chunks computed, from the summary line '... N/M chunks computed ...'."""
    return int(line.split(" chunks computed")[0].rsplit(" ", 1)[1].split("/")[0])


def _kill_midway(proc: subprocess.Popen[bytes], out: Path) -> None:
    """SIGKILL a run's whole process group once 12 chunks are written; the store stays partial."""
    try:
        _wait_for_chunks(out, 12, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        stop(proc)
    assert not out.exists() and staging_path(out).exists()


def _cli_args(cluster: str, job: dict[str, Path], out: Path) -> list[str]:
    scene, model = str(job["scene"]), str(job["model"])
    return [*ROADNET, "run", scene, "--out", str(out), "--model", model, *RUN_OPTS,
            "--scheduler", cluster]  # fmt: skip


def _cli_on(cluster: str, job: dict[str, Path], out: Path) -> subprocess.Popen[bytes]:
    return _start(_cli_args(cluster, job, out), out.with_suffix(".log"))


def _wait_for_chunks(out: Path, count: int, proc: subprocess.Popen[bytes]) -> int:
    staging = staging_path(out)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, "run ended before it could be interrupted"
        if (staging / "progress" / "done" / "zarr.json").exists():
            done = int(done_chunks(staging).sum())
            if done >= count:
                return done
        time.sleep(0.1)
    raise AssertionError("no progress")


def test_graph_carries_no_model(job: dict[str, Path]) -> None:
    prediction = predict_scene(
        job["scene"], model=job["model"], config=RunConfig(chunk=128, overlap=32), validate=False
    )
    import cloudpickle

    runner = pickle.dumps(prediction.runner)
    assert len(runner) < 1000
    graph = cloudpickle.dumps(dict(prediction.codes.__dask_graph__()))
    # Task specs, the model's path and hash only: no Keras or TensorFlow object inside.
    assert b"keras" not in graph.replace(b".keras", b"") and b"tensorflow" not in graph
    assert len(graph) / 64 < 5000


def test_scheduler_run_equals_local_run(cluster: str, job: dict[str, Path], workdir: Path) -> None:
    from distributed import Client

    out = workdir / "remote.zarr"
    proc = _cli_on(cluster, job, out)
    assert proc.wait(timeout=300) == 0, out.with_suffix(".log").read_text()[-2000:]
    _assert_same(job["local"], out)
    log = out.with_suffix(".log").read_text()
    line = log.strip().splitlines()[-1]
    assert "64/64 chunks computed" in line and "Mpx/s" in line
    with Client(cluster) as client:
        from roadnet.pipeline.inference.runner import loaded_model_count

        counts = client.run(loaded_model_count)
        link = client.dashboard_link
    assert sorted(counts.values()) == [1, 1]  # once per worker process
    assert f"scheduler {cluster}, dashboard {link}" in log
    assert urllib.request.urlopen(link, timeout=10).status == 200  # the scheduler serves it


def test_worker_killed_mid_run(cluster: str, job: dict[str, Path], workdir: Path) -> None:
    from distributed import Client

    out = workdir / "killed-worker.zarr"
    proc = _cli_on(cluster, job, out)
    try:
        _wait_for_chunks(out, 6, proc)
        with Client(cluster) as client:
            pids = client.run(os.getpid)
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
        assert proc.wait(timeout=300) == 0, out.with_suffix(".log").read_text()[-2000:]
    finally:
        stop(proc)
    assert done_chunks(out).all()
    _assert_same(job["local"], out)


def test_killed_run_resumes(cluster: str, job: dict[str, Path], workdir: Path) -> None:
    out = workdir / "resumed.zarr"
    _kill_midway(_cli_on(cluster, job, out), out)
    line, _ = _run_ok(_cli_args(cluster, job, out))
    assert 0 < _computed(line) <= 64 - 12, line
    assert "resumed" in line
    _assert_same(job["local"], out)


def test_adapted_run_is_killed_and_resumes_with_the_same_fit(
    cluster: str, job: dict[str, Path], workdir: Path
) -> None:
    """`roadnet run --adapt`: a worker fits the model into the store; the rerun reuses it."""
    import json

    import keras

    from roadnet.model.roadnet import ModelConfig, build_roadnet
    from roadnet.pipeline.inference.adapt import ADAPTED_CARD

    keras.utils.set_random_seed(0)
    source = workdir / "tiny.keras"
    build_roadnet(ModelConfig(name="tiny", width_multiplier=0.125)).save(source)
    out = workdir / "adapted.zarr"
    args = [*ROADNET, "run", str(job["scene"]), "--out", str(out), "--model", str(source),
            *RUN_OPTS, "--scheduler", cluster, "--adapt", "--set", "adapt_tiles=4"]  # fmt: skip
    _kill_midway(_start(args, out.with_suffix(".log")), out)
    staging = staging_path(out)
    card = json.loads((staging / ADAPTED_CARD).read_text())
    stamp = (staging / card["model"]).stat().st_mtime_ns
    line, log = _run_ok(args)
    assert "resumed" in line and 0 < _computed(line) <= 64 - 12, line
    assert f"reused the adapted model {staging / card['model']}" in log, log[-2000:]
    assert (out / card["model"]).stat().st_mtime_ns == stamp
    # the chunks before and after the kill are the stored model's
    plain = workdir / "adapted-plain.zarr"
    _run_ok([*ROADNET, "run", str(job["scene"]), "--out", str(plain), "--model",
             str(out / card["model"]), *RUN_OPTS, "--scheduler", cluster])  # fmt: skip
    _assert_same(plain, out)


def test_default_layout_and_scheduler_address(monkeypatch: pytest.MonkeyPatch) -> None:
    from roadnet.errors import InputError
    from roadnet.pipeline.cluster import dask_client, default_layout, scheduler_address

    gib = 2**30
    assert default_layout(2, memory=24 * gib, gpus=0) == (2, 1)
    assert default_layout(16, memory=128 * gib, gpus=0) == (16, 1)
    assert default_layout(16, memory=8 * gib, gpus=0) == (4, 1)  # 2 GiB per worker
    assert default_layout(1, memory=gib, gpus=0) == (1, 1)
    assert default_layout(16, memory=128 * gib, gpus=1) == (1, 16)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    assert scheduler_address(None) is None
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://10.0.0.1:8786")
    assert scheduler_address(None) == "tcp://10.0.0.1:8786"
    assert scheduler_address("tcp://127.0.0.1:1") == "tcp://127.0.0.1:1"
    with pytest.raises(InputError, match="local cluster only"), dask_client(workers=2):
        pass


def test_visible_gpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from roadnet.pipeline.cluster import visible_gpus

    for value, expected in [("", 0), ("-1", 0), ("0", 1), ("0,1", 2), ("GPU-5d1e,GPU-77aa", 2)]:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
        assert visible_gpus() == expected, value
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert visible_gpus() == 0  # no nvidia-smi
    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        "echo 'GPU 0: NVIDIA H100 (UUID: GPU-1)'\n"
        "echo 'GPU 1: NVIDIA H100 (UUID: GPU-2)'\n"
    )
    smi.chmod(0o755)
    assert visible_gpus() == 2


def _worker_settings(dask_worker: Any) -> dict[str, object]:
    import dask

    return {
        "profile": dask.config.get("distributed.worker.profile.enabled"),
        "monitor": dask.config.get("distributed.admin.system-monitor.interval"),
        "threads": dask_worker.state.nthreads,
    }


def test_local_cluster_turns_off_background_work(monkeypatch: pytest.MonkeyPatch) -> None:
    import dask

    from roadnet.pipeline.cluster import dask_client

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with dask_client(workers=1, threads_per_worker=2) as client:
        settings = list(client.run(_worker_settings).values())
    assert settings == [{"profile": False, "monitor": "2s", "threads": 2}]
    assert dask.config.get("distributed.worker.profile.enabled") is True  # this process: as was


@pytest.mark.slow
def test_killed_local_run_resumes(job: dict[str, Path], workdir: Path) -> None:
    """The whole `roadnet run` with its LocalCluster killed at once (process group)."""
    out = workdir / "resumed-local.zarr"
    args = [*ROADNET, "run", str(job["scene"]), "--out", str(out), "--model", str(job["model"]),
            *RUN_OPTS, "--workers", "1", "--threads-per-worker", "1"]  # fmt: skip
    _kill_midway(_start(args, out.with_suffix(".log")), out)
    line, log = _run_ok(args)
    assert "resumed" in line, line
    assert "local cluster: 1 worker(s) x 1 thread(s)" in log and "dashboard" not in log, log
    assert 0 < _computed(line) <= 64 - 12, line
    _assert_same(job["local"], out)


@pytest.fixture(scope="module")
def roads_job(workdir: Path) -> dict[str, Path]:
    """A synthetic road result big enough to interrupt, vectorized once on a LocalCluster."""
    from _results import road_codes, write_result

    result = write_result(
        workdir / "roads.zarr", road_codes(1280, 1280, seed=6, roads=16), chunk=128
    )
    local = workdir / "roads-local.gpkg"
    line, _ = _run_ok(
        [
            *ROADNET,
            "vectorize",
            str(result),
            "--out",
            str(local),
            "--workers",
            "2",
            "--threads-per-worker",
            "1",
            "--no-progress",
        ]
    )
    assert "road components" in line, line
    return {"result": result, "local": local}


def _assert_same_layers(a: Path, b: Path) -> None:
    import geopandas as gpd
    import shapely

    for layer in ("road_surface", "road_centerline", "road_node"):
        fa = gpd.read_file(a, layer=layer, engine="pyogrio")
        fb = gpd.read_file(b, layer=layer, engine="pyogrio")
        assert len(fa) == len(fb), layer
        assert shapely.equals_exact(fa.geometry.to_numpy(), fb.geometry.to_numpy(), 0).all()
        assert fa.drop(columns="geometry").equals(fb.drop(columns="geometry")), layer


def _vectorize_on(cluster: str, result: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    args = [*ROADNET, "vectorize", str(result), "--out", str(out), "--scheduler", cluster,
            "--no-progress", *extra]  # fmt: skip
    return _start(args, out.with_suffix(".log"))


def test_scheduler_vectorize_equals_local(
    cluster: str, roads_job: dict[str, Path], workdir: Path
) -> None:
    out = workdir / "roads-remote.gpkg"
    proc = _vectorize_on(cluster, roads_job["result"], out)
    assert proc.wait(timeout=300) == 0, out.with_suffix(".log").read_text()[-2000:]
    _assert_same_layers(roads_job["local"], out)


def test_worker_killed_mid_vectorize(
    cluster: str, roads_job: dict[str, Path], workdir: Path
) -> None:
    from distributed import Client

    out = workdir / "roads-killed.gpkg"
    with Client(cluster) as client:
        before = sum(client.run(lambda dask_worker: len(dask_worker.data)).values())
        # one chunk per task, so there are tasks to lose when the worker dies
        proc = _vectorize_on(cluster, roads_job["result"], out, "--set", "task_px=1")
        try:
            deadline = time.monotonic() + 120
            # wait until the workers hold some finished vectorize tasks, then kill one
            while time.monotonic() < deadline:
                assert proc.poll() is None, "vectorize ended before it could be interrupted"
                held = sum(client.run(lambda dask_worker: len(dask_worker.data)).values())
                if held - before >= 8:
                    break
                time.sleep(0.05)
            pids = client.run(os.getpid)
            os.kill(sorted(pids.values())[0], signal.SIGKILL)
            assert proc.wait(timeout=300) == 0, out.with_suffix(".log").read_text()[-2000:]
        finally:
            stop(proc)
    _assert_same_layers(roads_job["local"], out)
