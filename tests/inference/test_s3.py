"""`roadnet run` and `roadnet vectorize` to s3:// on a real S3 server (moto) on 127.0.0.1.

The results and layers written to the bucket equal those of local runs; a run killed with
SIGKILL leaves a store without the completion marker, which every reader refuses and a
rerun of the same job resumes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from _models import smooth_scene, test_model_path, write_scene
from _results import road_codes, stored_codes, write_result
from _s3 import s3_fs
from distributed import Client
from geopandas.testing import assert_geodataframe_equal
from typer.testing import CliRunner

from roadnet.errors import InputError, OutputExistsError
from roadnet.pipeline.cli import app
from roadnet.pipeline.inference.run import RunConfig, run_to_zarr
from roadnet.pipeline.inference.store import COMPLETE_ATTR, done_chunks, open_result
from roadnet.pipeline.vectorize.layers import CONFIG_NAME, LAYERS
from roadnet.pipeline.vectorize.run import vectorize_result

__all__ = ["test_model_path"]  # the session fixture, used below

ROADNET = [sys.executable, "-m", "roadnet.pipeline.cli"]


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """In-process workers behind a TCP scheduler, which a `roadnet` subprocess can reach."""
    from distributed import LocalCluster

    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            processes=False,
            protocol="tcp://",
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _address(client: Client) -> str:
    address: str = client.scheduler.address  # type: ignore[union-attr]
    return address


def _cli(*args: str) -> None:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_cli_run_to_s3_equals_the_local_run(
    tmp_path: Path, test_model_path: Path, client: Client, s3_bucket: str
) -> None:
    scene = write_scene(tmp_path / "s.tif", smooth_scene(300, 260))
    config = RunConfig(chunk=128, overlap=32)
    local = run_to_zarr(
        scene,
        tmp_path / "r.zarr",
        model=test_model_path,
        config=config,
        client=client,
        progress=False,
    )
    url = f"{s3_bucket}/results/r.zarr"
    args = ["run", str(scene), "--out", url, "--model", str(test_model_path)]
    args += ["--chunk", "128", "--overlap", "32", "--scheduler", _address(client)]
    _cli(*args, "--no-progress")
    assert np.array_equal(stored_codes(url), stored_codes(local.out))
    ds = open_result(url)
    assert ds.attrs[COMPLETE_ATTR] is True and ds.rio.crs.to_epsg() == 32635
    keys = s3_fs().ls(url.removeprefix("s3://"))
    assert not any(".partial" in key for key in keys)  # written in place, no staging copy
    # A complete store is not clobbered without --overwrite; with it, it is rebuilt.
    with pytest.raises(OutputExistsError, match="already exists"):
        _cli(*args, "--no-progress")
    _cli(*args, "--no-progress", "--overwrite")
    assert np.array_equal(stored_codes(url), stored_codes(local.out))


def test_cli_vectorize_from_and_to_s3_equals_the_local_layers(
    tmp_path: Path, client: Client, s3_bucket: str
) -> None:
    codes = road_codes(400, 500, seed=4)
    write_result(tmp_path / "r.zarr", codes, chunk=128)
    url = f"{s3_bucket}/r.zarr"
    write_result(url, codes, chunk=128)  # type: ignore[arg-type]
    vectorize_result(tmp_path / "r.zarr", tmp_path / "roads.gpkg", client=client, progress=False)
    vectorize_result(
        tmp_path / "r.zarr", tmp_path / "pq", fmt="parquet", client=client, progress=False
    )
    common = ["--scheduler", _address(client), "--no-progress"]
    _cli("vectorize", url, "--out", f"{s3_bucket}/out/roads.gpkg", *common)
    _cli("vectorize", url, "--out", f"{s3_bucket}/out/pq", "--format", "parquet", *common)

    fs = s3_fs()
    bucket = s3_bucket.removeprefix("s3://")
    assert sorted(fs.ls(f"{bucket}/out/pq")) == sorted(
        f"{bucket}/out/pq/{name}"
        for name in (*(f"{layer}.parquet" for layer in LAYERS), "roads.graphml", CONFIG_NAME)
    )
    got = tmp_path / "got"
    fs.get(f"{bucket}/out/", str(got), recursive=True)
    for layer in LAYERS:
        expected = gpd.read_file(tmp_path / "roads.gpkg", layer=layer, engine="pyogrio")
        assert len(expected) > 0
        downloaded = gpd.read_file(got / "roads.gpkg", layer=layer, engine="pyogrio")
        assert_geodataframe_equal(downloaded, expected)
        from_bucket = gpd.read_parquet(f"{bucket}/out/pq/{layer}.parquet", filesystem=fs)
        assert_geodataframe_equal(
            from_bucket, gpd.read_parquet(tmp_path / "pq" / f"{layer}.parquet")
        )
    assert (got / "roads.graphml").read_bytes() == (tmp_path / "roads.graphml").read_bytes()
    assert "result: s3://" in (got / "roads.roadnet-config.yaml").read_text()
    # The existing-output check works on the bucket too.
    with pytest.raises(OutputExistsError, match="already exists"):
        _cli("vectorize", url, "--out", f"{s3_bucket}/out/roads.gpkg", *common)
    with pytest.raises(OutputExistsError, match="already exists"):
        _cli("vectorize", url, "--out", f"{s3_bucket}/out/pq", "--format", "parquet", *common)


def _progress_flags(fs: object, url: str) -> int:
    try:
        return len(fs.find(url.removeprefix("s3://") + "/progress/done/c"))  # type: ignore[attr-defined]
    except FileNotFoundError:
        return 0


def _task_count(dask_scheduler: object) -> int:
    return len(dask_scheduler.tasks)  # type: ignore[attr-defined]


def test_killed_run_on_s3_is_refused_then_resumed(
    tmp_path: Path, test_model_path: Path, client: Client, s3_bucket: str
) -> None:
    # 384 x 384 px in 64 px chunks: 36 chunks, some seconds of writes to the bucket.
    scene = write_scene(tmp_path / "s.tif", smooth_scene(384, 384, seed=3))
    config = RunConfig(chunk=64, overlap=16)
    clean = run_to_zarr(
        scene,
        tmp_path / "clean.zarr",
        model=test_model_path,
        config=config,
        client=client,
        progress=False,
    )
    url = f"{s3_bucket}/r.zarr"
    args = [str(scene), "--out", url, "--model", str(test_model_path), "--chunk", "64"]
    args += ["--overlap", "16", "--scheduler", _address(client), "--no-progress"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        [*ROADNET, "run", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    fs = s3_fs()
    deadline = time.monotonic() + 60
    try:
        while _progress_flags(fs, url) < 2:
            assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the run wrote no chunks in 60 s"
            time.sleep(0.05)
            fs.invalidate_cache()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # The scheduler drops the dead client's tasks; those already running finish their writes.
    while client.run_on_scheduler(_task_count) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    written = int(done_chunks(url).sum())
    assert 0 < written < 36, written
    with pytest.raises(InputError, match="incomplete roadnet result; rerun roadnet run"):
        open_result(url)
    # vectorize refuses it with the same line (the CLI prints it and exits 2)
    with pytest.raises(InputError) as refused:
        _cli("vectorize", url, "--out", str(tmp_path / "roads.gpkg"), "--no-progress")
    assert str(refused.value) == (
        f"{url} is an incomplete roadnet result; rerun roadnet run to finish"
    )
    truth = ["--truth", str(tmp_path), "--out", str(tmp_path / "metrics.json")]
    with pytest.raises(InputError, match="incomplete roadnet result"):
        _cli("evaluate", "--pred", url, *truth)
    resumed = run_to_zarr(
        scene, url, model=test_model_path, config=config, client=client, progress=False
    )
    assert resumed.chunks == 36 and resumed.computed == 36 - written
    assert np.array_equal(stored_codes(url), stored_codes(clean.out))
    assert not _left_outputs(tmp_path)
    with pytest.raises(InputError, match="evaluate reads local results only"):
        _cli("evaluate", "--pred", url, *truth)


def _left_outputs(tmp_path: Path) -> bool:
    """Whether a refused command left a layer or a report behind."""
    return any(p.name.startswith(("roads", "metrics")) for p in tmp_path.iterdir())
