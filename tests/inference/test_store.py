from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr
import zarr
from affine import Affine

from roadnet.errors import InputError, OutputExistsError
from roadnet.pipeline.inference.blend import FILL_VALUE
from roadnet.pipeline.inference.store import (
    COMPLETE_ATTR,
    JOB_ATTR,
    create_store,
    done_chunks,
    finish_store,
    open_result,
    prepare_store,
    road_chunks,
    staging_path,
    write_chunk,
)
from roadnet.tasks import TASKS

CHUNK = 64
TRANSFORM = Affine(0.5, 0.0, 385_000.0, 0.0, -0.5, 6_672_000.0)


def _template(height: int = 150, width: int = 100) -> xr.Dataset:
    codes = da.zeros((height, width), chunks=CHUNK, dtype=np.uint8)
    ys = TRANSFORM.f + TRANSFORM.e * (np.arange(height) + 0.5)
    xs = TRANSFORM.c + TRANSFORM.a * (np.arange(width) + 0.5)
    ds = xr.Dataset({t: (("y", "x"), codes) for t in TASKS}, coords={"y": ys, "x": xs})
    for t in TASKS:
        ds[t].attrs["scale_factor"] = 1 / 254
    return ds.rio.write_crs("EPSG:32635").rio.write_transform(TRANSFORM)


def _codes(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 255, (3, height, width), dtype=np.uint8)
    codes[:, :3, :3] = FILL_VALUE
    return codes


def _fill(
    staging: Path,
    full: np.ndarray,
    *,
    skip: set[tuple[int, int]] = frozenset(),  # type: ignore[assignment]
    job: str = "",
) -> None:
    rows, cols = -(-full.shape[1] // CHUNK), -(-full.shape[2] // CHUNK)
    for r in range(rows):
        for c in range(cols):
            if (r, c) not in skip:
                block = full[:, r * CHUNK : (r + 1) * CHUNK, c * CHUNK : (c + 1) * CHUNK]
                write_chunk(block, path=str(staging), row=r, col=c, chunk=CHUNK, job=job)


def test_chunks_are_flagged_with_road_above_the_cut_and_nodata_is_not_road(
    tmp_path: Path,
) -> None:
    staging, _ = prepare_store(tmp_path / "r.zarr", job="j", overwrite=False)
    create_store(staging, _template(), chunk=CHUNK, grid=(3, 2), attrs={JOB_ATTR: "j"})
    full = np.zeros((3, 150, 100), np.uint8)
    full[0, 70, 10] = 178  # chunk (1, 0): one pixel above the cut 177 (p 0.7)
    full[0, 140, 90] = 177  # chunk (2, 1): at the cut, not above it
    full[0, 10, 80] = FILL_VALUE  # chunk (0, 1): nodata is not road
    full[1:, 10, 10] = 254  # chunk (0, 0): edge and centerline do not count
    # the last chunk row goes in as one write, as a ragged edge does
    for r, c in ((0, 0), (0, 1), (1, 0), (1, 1)):
        block = full[:, r * CHUNK : (r + 1) * CHUNK, c * CHUNK : (c + 1) * CHUNK]
        write_chunk(block, path=str(staging), row=r, col=c, chunk=CHUNK, job="j", road_code=177)
    full[0, 130, 20] = 250  # chunk (2, 0)
    write_chunk(full[:, 128:], path=str(staging), row=2, col=0, chunk=CHUNK, road_code=177)
    assert done_chunks(staging).all() and road_chunks(staging) == 2
    flags = zarr.open_array(str(staging), path="progress/done", mode="r")[...]
    assert flags.tolist() == [[1, 1], [2, 1], [2, 1]]
    # a write without road_code flags its chunk done only
    write_chunk(full[:, 64:128, :64], path=str(staging), row=1, col=0, chunk=CHUNK)
    assert done_chunks(staging).all() and road_chunks(staging) == 1


def test_store_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "r.zarr"
    staging, resume = prepare_store(out, job="j1", overwrite=False)
    assert staging == staging_path(out) and not resume
    create_store(staging, _template(), chunk=CHUNK, grid=(3, 2), attrs={JOB_ATTR: "j1", "a": 1})
    full = _codes(150, 100, 0)
    _fill(staging, full, skip={(2, 1)})
    assert done_chunks(staging).tolist() == [[True, True], [True, True], [True, False]]
    with pytest.raises(InputError, match="not finished"):
        open_result(out)
    with pytest.raises(RuntimeError, match="not every chunk"):
        finish_store(staging, out, attrs={})
    _fill(staging, full)
    finish_store(staging, out, attrs={"b": 2})
    assert out.exists() and not staging.exists()

    ds = open_result(out)
    assert ds.attrs[COMPLETE_ATTR] is True and ds.attrs["a"] == 1 and ds.attrs["b"] == 2
    assert ds.rio.crs.to_epsg() == 32635
    assert ds.rio.transform() == TRANSFORM
    assert ds.surface.encoding["chunks"] == (CHUNK, CHUNK)
    assert "spatial_ref" in ds.coords and set(ds.data_vars) == set(TASKS)
    values = ds.edge.values
    assert np.isnan(values[:3, :3]).all()
    assert np.allclose(values[5:, 5:], full[1, 5:, 5:] / 254, atol=1e-6)
    # Plain xarray, no warnings about consolidated metadata.
    plain = xr.open_zarr(out, decode_coords="all")
    assert plain.rio.crs == ds.rio.crs
    # A user's fresh interpreter: roadnet.open_result alone makes .rio work.
    code = "import sys, roadnet; print(roadnet.open_result(sys.argv[1]).rio.crs.to_epsg())"
    fresh = subprocess.run(
        [sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120
    )
    assert fresh.stdout.strip() == "32635", fresh.stderr
    raw = xr.open_zarr(out, mask_and_scale=False)
    assert raw.centerline.dtype == np.uint8
    assert np.array_equal(raw.centerline.values, full[2])
    assert raw.centerline.encoding["compressors"]


def test_prepare_store_refuses_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "r.zarr"
    staging, _ = prepare_store(out, job="j1", overwrite=False)
    create_store(staging, _template(), chunk=CHUNK, grid=(3, 2), attrs={JOB_ATTR: "j1"})
    assert prepare_store(out, job="j1", overwrite=False) == (staging, True)
    with pytest.raises(OutputExistsError, match="another scene, model or config"):
        prepare_store(out, job="j2", overwrite=False)
    assert prepare_store(out, job="j2", overwrite=True) == (staging, False)
    assert not staging.exists()
    out.mkdir()
    with pytest.raises(OutputExistsError, match="already exists"):
        prepare_store(out, job="j1", overwrite=False)


def test_open_result_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no roadnet result"):
        open_result(tmp_path / "none.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="not a Zarr store"):
        open_result(tmp_path / "plain")
    store = tmp_path / "incomplete.zarr"
    create_store(store, _template(), chunk=CHUNK, grid=(3, 2), attrs={JOB_ATTR: "j"})
    with pytest.raises(InputError, match="incomplete"):
        open_result(store)


def test_overwrite_replaces_a_complete_result(tmp_path: Path) -> None:
    out = tmp_path / "r.zarr"
    for seed, job in ((0, "j1"), (1, "j2")):
        staging, _ = prepare_store(out, job=job, overwrite=seed > 0)
        create_store(staging, _template(), chunk=CHUNK, grid=(3, 2), attrs={JOB_ATTR: job})
        _fill(staging, _codes(150, 100, seed))
        finish_store(staging, out, attrs={})
    ds = open_result(out)
    assert ds.attrs[JOB_ATTR] == "j2"
    raw = xr.open_zarr(out, mask_and_scale=False)
    assert np.array_equal(raw.surface.values, _codes(150, 100, 1)[0])


def test_cached_store_handles_survive_an_overwrite(tmp_path: Path) -> None:
    # A long-lived worker keeps the arrays it opened for a job; the same job rerun with
    # --overwrite recreates the store at the same path, and the writes must land in it.
    out = tmp_path / "r.zarr"
    for seed in (1, 2):
        staging, _ = prepare_store(out, job="j", overwrite=True)
        create_store(staging, _template(), chunk=CHUNK, grid=(3, 2), attrs={JOB_ATTR: "j"})
        full = _codes(150, 100, seed)
        _fill(staging, full, job="j")
        finish_store(staging, out, attrs={})
        stored = np.stack([open_result(out, mask_and_scale=False)[t].values for t in TASKS])
        assert np.array_equal(stored, full)


def test_store_on_s3_is_written_in_place_and_marked_complete_last(s3_bucket: str) -> None:
    from _s3 import s3_fs

    out = f"{s3_bucket}/runs/r.zarr"
    staging, resume = prepare_store(out, job="j1", overwrite=False)
    assert staging == staging_path(out) == out and not resume
    create_store(staging, _template(), chunk=CHUNK, grid=(3, 2), attrs={JOB_ATTR: "j1"})
    full = _codes(150, 100, 0)
    _fill(staging, full, skip={(2, 1)}, job="j1")
    assert done_chunks(out).tolist() == [[True, True], [True, True], [True, False]]
    # Chunks are in the bucket, but no marker: refused, and resumed by the same job only.
    assert s3_fs().exists(out.removeprefix("s3://") + "/surface/c/0/0")
    with pytest.raises(InputError, match="incomplete roadnet result"):
        open_result(out)
    assert prepare_store(out, job="j1", overwrite=False) == (out, True)
    with pytest.raises(OutputExistsError, match="another scene, model or config"):
        prepare_store(out, job="j2", overwrite=False)
    with pytest.raises(RuntimeError, match="not every chunk"):
        finish_store(staging, out, attrs={})
    _fill(staging, full, skip={(r, c) for r in range(3) for c in range(2)} - {(2, 1)})
    finish_store(staging, out, attrs={"b": 2})

    ds = open_result(out)
    assert ds.attrs[COMPLETE_ATTR] is True and ds.attrs["b"] == 2
    assert ds.rio.crs.to_epsg() == 32635 and ds.rio.transform() == TRANSFORM
    raw = open_result(out, mask_and_scale=False)
    assert np.array_equal(np.stack([raw[t].values for t in TASKS]), full)
    # The marker lives in the group's zarr.json, beside the consolidated metadata.
    meta = json.loads(s3_fs().cat(out.removeprefix("s3://") + "/zarr.json"))
    assert meta["attributes"][COMPLETE_ATTR] is True
    assert set(TASKS) <= set(meta["consolidated_metadata"]["metadata"])
    with pytest.raises(InputError, match="no roadnet result"):
        open_result(f"{s3_bucket}/none.zarr")


def test_s3_overwrite_rules_match_local(s3_bucket: str) -> None:
    from _s3 import s3_fs

    out = f"{s3_bucket}/r.zarr"
    staging, _ = prepare_store(out, job="j1", overwrite=False)
    create_store(staging, _template(), chunk=CHUNK, grid=(3, 2), attrs={JOB_ATTR: "j1"})
    _fill(staging, _codes(150, 100, 0))
    finish_store(staging, out, attrs={})
    # A complete store is never clobbered without overwrite, whatever the job.
    for job in ("j1", "j2"):
        with pytest.raises(OutputExistsError, match="already exists"):
            prepare_store(out, job=job, overwrite=False)
    assert open_result(out).attrs[JOB_ATTR] == "j1"
    # With overwrite it is removed, marker first, and rebuilt from scratch.
    assert prepare_store(out, job="j2", overwrite=True) == (out, False)
    assert not s3_fs().exists(out.removeprefix("s3://"))
    create_store(out, _template(), chunk=CHUNK, grid=(3, 2), attrs={JOB_ATTR: "j2"})
    _fill(out, _codes(150, 100, 1), skip={(0, 0)})
    # Another job's leftover is discarded only with overwrite.
    assert prepare_store(out, job="j3", overwrite=True) == (out, False)
    # Something that is not a store is refused too.
    s3_fs().pipe(out.removeprefix("s3://") + "/notes.txt", b"x")
    with pytest.raises(OutputExistsError, match="already exists"):
        prepare_store(out, job="j3", overwrite=False)
    with pytest.raises(InputError, match="not a Zarr store"):
        open_result(out)


def test_s3_storage_options_reach_every_store_call(
    s3_bucket: str, s3_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import s3fs
    from _s3 import S3_ENV

    # The environment points nowhere; only the options lead to the server.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    s3fs.S3FileSystem.clear_instance_cache()
    options = {
        "endpoint_url": s3_server,
        "key": S3_ENV["AWS_ACCESS_KEY_ID"],
        "secret": S3_ENV["AWS_SECRET_ACCESS_KEY"],
    }
    out = f"{s3_bucket}/r.zarr"
    staging, _ = prepare_store(out, job="j", overwrite=False, storage_options=options)
    create_store(
        staging,
        _template(),
        chunk=CHUNK,
        grid=(3, 2),
        attrs={JOB_ATTR: "j"},
        storage_options=options,
    )
    full = _codes(150, 100, 0)
    for r in range(3):
        for c in range(2):
            block = full[:, r * CHUNK : (r + 1) * CHUNK, c * CHUNK : (c + 1) * CHUNK]
            write_chunk(
                block, path=out, row=r, col=c, chunk=CHUNK, job="j", storage_options=options
            )
    assert prepare_store(out, job="j", overwrite=False, storage_options=options) == (out, True)
    finish_store(out, out, attrs={}, storage_options=options)
    raw = open_result(out, storage_options=options, mask_and_scale=False)
    assert np.array_equal(np.stack([raw[t].values for t in TASKS]), full)
