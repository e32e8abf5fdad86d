from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr
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
