"""`roadnet nightly` and `roadnet run` as real processes against a real cluster on 127.0.0.1.

A `dask scheduler` and two `dask worker` processes (conftest ``cluster``); scenes are
windows of one city image with a street grid, processed by a model that finds its streets.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
import xarray as xr
from _city import ENV, ROADNET, age, start, truncate, write_window
from _procs import stop

from roadnet.pipeline.inference.store import done_chunks, open_result, staging_path
from roadnet.pipeline.nightly.catalog import read_catalog
from roadnet.pipeline.nightly.merge import footprint, merge_layer, read_merged

cluster_test = pytest.mark.cluster


def test_bundled_config_is_the_defaults_and_decisions() -> None:
    from roadnet.config import load_config
    from roadnet.pipeline.nightly.discover import Candidate
    from roadnet.pipeline.nightly.run import NightlyConfig, decide

    assert load_config(NightlyConfig, "nightly") == NightlyConfig()
    scene = Candidate("a-1", "/in/a.tif", size=10, mtime=5.0, stable=True)
    done = {"status": "done", "size": 10, "mtime": 5.0}
    assert decide(scene, None, retry_failed=False) == "new"
    assert decide(scene, done, retry_failed=False) == "skip"
    assert decide(scene, {**done, "mtime": 4.0}, retry_failed=False) == "changed"
    assert decide(scene, {**done, "status": "failed"}, retry_failed=False) == "skip"
    assert decide(scene, {**done, "status": "failed"}, retry_failed=True) == "retry"
    assert decide(scene, {**done, "status": "failed", "size": 9}, retry_failed=False) == "changed"
    assert decide(scene, {**done, "status": "running"}, retry_failed=False) == "resume"


def _nightly(cluster: str, inbox: Path, outbox: Path, config: Path, *extra: str) -> list[str]:
    return [*ROADNET, "nightly", "--inbox", str(inbox), "--outbox", str(outbox),
            "--scheduler", cluster, "--config", str(config), *extra]  # fmt: skip


def _call(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=ENV, check=False, timeout=300)


def _by_source(outbox: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    return {Path(r["source"]).name: r for r in read_catalog(str(outbox)).values()}


def _codes(path: str) -> dict[str, np.ndarray]:
    ds = xr.open_zarr(path, mask_and_scale=False)
    return {name: ds[name].values for name in ("surface", "edge", "centerline")}


def _same_outputs(a: dict, b: dict) -> None:  # type: ignore[type-arg]
    for name, plane in _codes(a["result"]).items():
        assert np.array_equal(plane, _codes(b["result"])[name]), name
    ra = gpd.read_file(a["roads"], layer="road_surface")
    rb = gpd.read_file(b["roads"], layer="road_surface")
    assert len(ra) == len(rb) > 0
    assert all(shapely.equals(ra.geometry.values, rb.geometry.values))


def _wait_for_chunks(store: Path, count: int, proc: subprocess.Popen[bytes]) -> None:
    staging = staging_path(store)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        flags = staging / "progress" / "done" / "zarr.json"
        if flags.exists() and int(done_chunks(staging).sum()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError("no progress")


@cluster_test
def test_inbox_bad_scene_rerun_new_scene_and_growing_file(
    cluster: str, tmp_path: Path, nightly_config
) -> None:  # type: ignore[no-untyped-def]
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    config = nightly_config()
    age(write_window(inbox / "west.tif", row=0, col=0, height=384, width=448))
    age(write_window(inbox / "east.TIFF", row=0, col=352, height=384, width=448))
    age(truncate(write_window(inbox / "broken.tif", row=500, col=0, height=384, width=384)))

    first = _call(_nightly(cluster, inbox, outbox, config))
    assert first.returncode == 1, first.stderr[-3000:]
    assert "2 scene(s) done, 1 failed" in first.stdout
    rows = _by_source(outbox)
    assert {k: r["status"] for k, r in rows.items()} == {
        "west.tif": "done", "east.TIFF": "done", "broken.tif": "failed"
    }  # fmt: skip
    assert all(r["attempts"] == 1 for r in rows.values())
    bad = rows["broken.tif"]["error"]
    assert "broken.tif" in bad and "window rows" in bad and "\n" not in bad
    for name in ("west.tif", "east.TIFF"):
        row = rows[name]
        assert row["components"] > 0 and row["km"] > 0.1 and row["nodes"] > 0
        attrs = open_result(row["result"]).attrs
        assert attrs["model_sha256"] == row["model_sha256"]
        assert row["road_chunks"] == attrs["roadnet:road_chunks"] > 0
        assert len(gpd.read_file(row["roads"], layer="road_surface")) == row["components"]
        assert (outbox / row["preview"]).is_file()
        assert row["checksum"].startswith("sha256:") and row["merged"] is True
    report = (outbox / "report.md").read_text()
    assert "broken.tif" in report and "window rows" in report and "preview.png" in report
    # the merged layer is dissolved across the border of the two scenes: a street crossing
    # it is one component reaching into both scenes' own parts
    merged = read_merged(str(outbox))
    assert merged is not None and len(merged) > 0
    west = footprint(rows["west.tif"], merged.crs)
    east = footprint(rows["east.TIFF"], merged.crs)
    only_west, only_east = west.difference(east), east.difference(west)
    assert any(g.intersects(only_west) and g.intersects(only_east) for g in merged.geometry)

    catalog = outbox / "catalog.parquet"
    before = catalog.stat().st_mtime_ns
    again = _call(_nightly(cluster, inbox, outbox, config))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing new" in again.stdout
    assert catalog.stat().st_mtime_ns == before  # not even rewritten

    # a scene still being copied in (a few KB a second) is skipped until stable
    data = write_window(tmp_path / "south.tif", row=320, col=500, height=384, width=448)
    whole = data.read_bytes()
    growing = inbox / "south.tif"
    growing.write_bytes(whole[:1000])
    stop_copy = threading.Event()

    def copy() -> None:
        done = 1000
        while not stop_copy.wait(0.2) and done < len(whole) - 4000:
            with open(growing, "ab") as fh:
                fh.write(whole[done : done + 1000])
            done += 1000
        with open(growing, "ab") as fh:
            fh.write(whole[done:])

    copier = threading.Thread(target=copy)
    copier.start()
    try:
        waiting = _call(_nightly(cluster, inbox, outbox, config))
    finally:
        stop_copy.set()
        copier.join()
    assert waiting.returncode == 0 and "1 still arriving" in waiting.stdout, waiting.stdout
    assert "south.tif" not in _by_source(outbox)
    assert growing.read_bytes() == whole
    time.sleep(3.2)  # stable_seconds

    old_layer = read_merged(str(outbox))
    third = _call(_nightly(cluster, inbox, outbox, config))
    assert third.returncode == 0, third.stderr[-3000:]
    assert "1 scene(s) done, 0 failed" in third.stdout
    now = _by_source(outbox)
    assert now["south.tif"]["status"] == "done" and now["south.tif"]["attempts"] == 1
    for name in ("west.tif", "east.TIFF", "broken.tif"):
        assert now[name]["run_id"] == rows[name]["run_id"]  # untouched
    # the merged layer changed only near the new scene: the city's streets are one
    # component, so compare the layers with and without the new footprint
    new_layer = read_merged(str(outbox))
    assert old_layer is not None and new_layer is not None
    south = footprint(now["south.tif"], new_layer.crs)
    before_all, after_all = old_layer.union_all(), new_layer.union_all()
    outside = before_all.difference(south).symmetric_difference(after_all.difference(south))
    assert outside.area < 1e-6 * before_all.area
    assert after_all.intersection(south).area > before_all.intersection(south).area + 100
    # ... and equals merging every scene from scratch
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    catalog_rows = read_catalog(str(outbox))
    merge_layer(str(scratch), catalog_rows, sorted(catalog_rows))
    full = read_merged(str(scratch))
    assert full is not None and len(full) == len(new_layer)
    assert abs(full.area.sum() - new_layer.area.sum()) < 1e-3 * full.area.sum()


@cluster_test
def test_two_concurrent_nightly_runs_never_share_a_scene(
    cluster: str, tmp_path: Path, nightly_config
) -> None:  # type: ignore[no-untyped-def]
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    config = nightly_config()
    for i in range(4):
        age(write_window(inbox / f"s{i}.tif", row=(i // 2) * 400, col=(i % 2) * 500,
                         height=320, width=384))  # fmt: skip
    procs = [start(_nightly(cluster, inbox, outbox, config), tmp_path / f"n{i}.log")
             for i in range(2)]  # fmt: skip
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            stop(p)
    logs = [(tmp_path / f"n{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs
    rows = read_catalog(str(outbox))
    assert len(rows) == 4
    assert all(r["status"] == "done" and r["attempts"] == 1 for r in rows.values())
    done = [int(log.split(" scene(s) done")[0].rsplit(" ", 1)[1]) for log in logs
            if " scene(s) done" in log]  # fmt: skip
    assert sum(done) == 4  # each scene processed by exactly one of the runs


def _run(cluster: str, scene: Path, out: Path, model: Path) -> list[str]:
    opts = ["--chunk", "128", "--overlap", "16", "--no-progress", "--scheduler", cluster]
    return [*ROADNET, "run", str(scene), "--out", str(out), "--model", str(model), *opts]


@cluster_test
def test_roadnet_run_bad_scenes_and_a_small_scene(
    cluster: str, tmp_path: Path, road_model: Path
) -> None:
    broken = truncate(write_window(tmp_path / "broken.tif", row=0, col=0, height=512, width=512))
    failed = _call(_run(cluster, broken, tmp_path / "broken.zarr", road_model))
    assert failed.returncode == 2, failed.stderr[-2000:]
    lines = [ln for ln in failed.stderr.splitlines() if ln.startswith("roadnet:")]
    assert len(lines) == 1 and str(broken) in lines[0] and "window rows" in lines[0], lines

    junk = tmp_path / "notes.tif"
    junk.write_text("this is not a raster\n" * 20)
    failed = _call(_run(cluster, junk, tmp_path / "junk.zarr", road_model))
    assert failed.returncode == 2
    assert (
        failed.stderr.strip()
        .splitlines()[-1]
        .startswith(f"roadnet: error: cannot open scene {junk}")
    )

    small = write_window(tmp_path / "small.tif", row=100, col=120, height=37, width=100)
    args = _run(cluster, small, tmp_path / "small.zarr", road_model)
    args[args.index("--overlap") + 1] = "64"  # thicker than the scene
    done = _call(args)
    assert done.returncode == 0, done.stderr[-2000:]
    result = open_result(tmp_path / "small.zarr")
    assert result.sizes == {"y": 37, "x": 100}
    assert not np.isnan(result["surface"].values).any()
    assert 0 < float((result["surface"] > 0.5).mean()) < 1  # the streets are found


@cluster_test
def test_roadnet_run_one_writer_per_output(cluster: str, tmp_path: Path, road_model: Path) -> None:
    scene = write_window(tmp_path / "city.tif", row=0, col=0, height=1024, width=1536)
    out = tmp_path / "city.zarr"
    procs = [start(_run(cluster, scene, out, road_model), tmp_path / f"r{i}.log") for i in (0, 1)]
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            stop(p)
    logs = [(tmp_path / f"r{i}.log").read_text() for i in (0, 1)]
    assert sorted(codes) == [0, 2], logs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    refusal = [ln for ln in logs[loser].splitlines() if ln.startswith("roadnet:")]
    assert len(refusal) == 1, logs[loser]
    assert refusal[0].startswith(f"roadnet: error: another run holds {out} (host ")
    assert f"pid {procs[winner].pid}" in refusal[0] and "since " in refusal[0]
    assert open_result(out).sizes == {"y": 1024, "x": 1536}
    assert not Path(f"{out}.lease").exists()


@cluster_test
@pytest.mark.slow
def test_roadnet_run_after_a_killed_holder(cluster: str, tmp_path: Path, road_model: Path) -> None:
    scene = write_window(tmp_path / "big.tif", row=0, col=0, height=768, width=768)
    out2 = tmp_path / "big2.zarr"
    holder = start(_run(cluster, scene, out2, road_model), tmp_path / "holder.log")
    try:
        _wait_for_chunks(out2, 4, holder)
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        stop(holder)
    assert Path(f"{out2}.lease").exists()  # left behind by the killed holder
    after = _call(_run(cluster, scene, out2, road_model))
    assert after.returncode == 0, after.stderr[-2000:]
    assert "resumed" in after.stdout
    clean = tmp_path / "clean.zarr"
    assert _call(_run(cluster, scene, clean, road_model)).returncode == 0
    for name, plane in _codes(str(clean)).items():
        assert np.array_equal(plane, _codes(str(out2))[name]), name


@cluster_test
@pytest.mark.slow
def test_killed_nightly_is_taken_over_and_a_killed_worker_survived(
    cluster: str, tmp_path: Path, nightly_config
) -> None:  # type: ignore[no-untyped-def]
    from distributed import Client

    config = nightly_config()
    inbox = tmp_path / "in"
    age(write_window(inbox / "big.tif", row=0, col=0, height=768, width=768))
    reference = tmp_path / "reference"
    clean = _call(_nightly(cluster, inbox, reference, config))
    assert clean.returncode == 0, clean.stderr[-3000:]
    ref = _by_source(reference)["big.tif"]

    # the nightly client is SIGKILLed mid-run; the next run takes its lease over
    outbox = tmp_path / "out"
    proc = start(_nightly(cluster, inbox, outbox, config), tmp_path / "killed.log")
    store = outbox / "scenes" / ref["scene_id"] / "result.zarr"
    try:
        _wait_for_chunks(store, 8, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        stop(proc)
    row = _by_source(outbox)["big.tif"]
    assert row["status"] == "running"
    assert (outbox / "leases" / f"{ref['scene_id']}.lease").exists()
    resumed = _call(_nightly(cluster, inbox, outbox, config))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    row = _by_source(outbox)["big.tif"]
    assert row["status"] == "done" and row["attempts"] == 2
    assert not (outbox / "leases" / f"{ref['scene_id']}.lease").exists()
    _same_outputs(row, ref)

    # a worker is killed mid-run: the run still completes, with the same outputs
    third = tmp_path / "out-worker"
    proc = start(_nightly(cluster, inbox, third, config), tmp_path / "worker.log")
    try:
        _wait_for_chunks(third / "scenes" / ref["scene_id"] / "result.zarr", 4, proc)
        with Client(cluster) as client:
            os.kill(sorted(client.run(os.getpid).values())[0], signal.SIGKILL)
        assert proc.wait(timeout=300) == 0, (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        stop(proc)
    _same_outputs(_by_source(third)["big.tif"], ref)
