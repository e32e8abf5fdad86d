from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from _results import road_codes, write_result

from roadnet.errors import InputError, OutputExistsError
from roadnet.pipeline.inference.blend import FILL_VALUE, SCALE_FACTOR
from roadnet.pipeline.inference.export import TILE, export_result, parse_tasks, windows
from roadnet.pipeline.inference.store import open_result
from roadnet.tasks import TASKS

ROADNET = [sys.executable, "-m", "roadnet.pipeline.cli"]
HEIGHT, WIDTH = 1100, 900  # over two tiles each way, ragged: overviews at 2 and 4


@pytest.fixture(scope="module")
def codes() -> np.ndarray:
    codes = road_codes(HEIGHT, WIDTH, seed=4)
    codes[:, :64, :96] = FILL_VALUE  # a nodata corner
    return codes


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory, codes: np.ndarray) -> Path:
    return write_result(tmp_path_factory.mktemp("export") / "r.zarr", codes, chunk=128)


def test_store_carries_cf_metadata(result: Path) -> None:
    # (Here rather than in test_store.py: it is what lets CF and GIS readers use the store.)
    import cf_xarray  # noqa: F401  (registers .cf)
    import xarray as xr

    from roadnet.pipeline.inference.store import cf_coordinate_attrs

    ds = xr.open_zarr(result, decode_coords="all")
    assert ds.attrs["Conventions"] == "CF-1.8"
    assert ds.cf.axes == {"X": ["x"], "Y": ["y"]}
    assert ds.cf.standard_names["projection_x_coordinate"] == ["x"]
    assert ds.x.attrs["units"] == ds.y.attrs["units"] == "m"
    assert ds.cf.grid_mapping_names == {"transverse_mercator": ["spatial_ref"]}
    assert ds.rio.crs.to_epsg() == 32635 and ds.surface.encoding["grid_mapping"] == "spatial_ref"
    assert open_result(result).cf["X"].name == "x"
    assert cf_coordinate_attrs(None) == ({"axis": "X"}, {"axis": "Y"})
    x, y = cf_coordinate_attrs("EPSG:4326")
    assert (x["standard_name"], x["units"], y["units"]) == (
        "longitude",
        "degrees_east",
        "degrees_north",
    )
    x, _ = cf_coordinate_attrs("EPSG:2272")  # Pennsylvania South, US survey feet
    assert x["units"] == "0.30480060960121924 m"


def test_export_writes_one_cog_per_task(result: Path, codes: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "cogs"
    summary = export_result(result, out)
    assert summary.files == tuple(out / f"{t}.tif" for t in TASKS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cogs"]  # staging renamed, no leftovers
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{t}.tif" for t in TASKS)
    assert "3 COG(s)" in summary.line() and str(out) in summary.line()
    store = open_result(result)
    for k, task in enumerate(TASKS):
        with rasterio.open(out / f"{task}.tif") as src:
            assert src.crs == store.rio.crs and src.crs.to_epsg() == 32635
            assert src.transform == store.rio.transform()
            assert (src.height, src.width, src.count, src.dtypes) == (HEIGHT, WIDTH, 1, ("uint8",))
            assert src.nodata == FILL_VALUE
            assert np.array_equal(src.read(1), codes[k]), task
            # A valid COG: GDAL's COG layout, 512 px tiles, compressed, internal overviews.
            assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            assert src.profile["tiled"] and src.block_shapes == [(TILE, TILE)]
            assert src.compression.name.lower() == "deflate"
            assert src.overviews(1) == [2, 4]
            assert src.scales == (pytest.approx(SCALE_FACTOR),) and src.offsets == (0.0,)
            assert float(src.tags(1)["scale_factor"]) == pytest.approx(1 / 254)
            assert "code / 254" in src.descriptions[0] and task in src.descriptions[0]
            assert src.tags()["roadnet_task"] == task
            assert src.tags()["roadnet_model_sha256"] == "f" * 64
            # Overviews average the valid codes; the nodata corner stays nodata.
            half = src.read(1, out_shape=(HEIGHT // 2, WIDTH // 2))
        plane = codes[k, : HEIGHT // 2 * 2, : WIDTH // 2 * 2].astype(float)
        mean = plane.reshape(HEIGHT // 2, 2, WIDTH // 2, 2).mean(axis=(1, 3))
        assert (half[:32, :48] == FILL_VALUE).all()
        valid = np.s_[40:, 60:]
        assert np.abs(half[valid] - mean[valid]).max() <= 1.0, task


def test_export_tasks_and_compression(result: Path, codes: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "cogs"
    export_result(result, out, tasks=("centerline",), compress="zstd")
    assert [p.name for p in out.iterdir()] == ["centerline.tif"]
    with rasterio.open(out / "centerline.tif") as src:
        assert src.compression.name.lower() == "zstd"
        assert np.array_equal(src.read(1), codes[2])
    with pytest.raises(OutputExistsError, match="not empty"):
        export_result(result, out)
    export_result(result, out, tasks=("edge",), overwrite=True)
    assert [p.name for p in out.iterdir()] == ["edge.tif"]
    with pytest.raises(InputError, match="choose from"):
        export_result(result, tmp_path / "x", tasks=("roads",))


def test_parse_tasks() -> None:
    assert parse_tasks(None) == TASKS
    assert parse_tasks(" centerline,surface,centerline ") == ("centerline", "surface")
    for bad in ("", ",", "surface,road"):
        with pytest.raises(InputError, match="choose from"):
            parse_tasks(bad)


@pytest.mark.parametrize(("chunk", "side"), [(128, 512), (512, 512), (1024, 1024), (500, 512)])
def test_windows_cover_the_grid_once_on_tile_borders(chunk: int, side: int) -> None:
    seen = np.zeros((HEIGHT * 3, WIDTH * 3), np.int8)
    sides = set()
    for r0, r1, c0, c1 in windows(HEIGHT * 3, WIDTH * 3, chunk=chunk):
        assert r0 % TILE == 0 and c0 % TILE == 0
        seen[r0:r1, c0:c1] += 1
        sides.add(r1 - r0)
    assert (seen == 1).all()
    assert max(sides) == side


def test_cli_export_and_bad_inputs(result: Path, tmp_path: Path) -> None:
    write_result(tmp_path / "unfinished.zarr", road_codes(128, 128), chunk=128, finish=False)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "surface.tif").write_bytes(b"old")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cases = {
        "ok": [str(result), "--out", str(tmp_path / "ok"), "--tasks", "surface,centerline"],
        "missing": [str(tmp_path / "none.zarr"), "--out", str(tmp_path / "o1")],
        "unfinished": [str(tmp_path / "unfinished.zarr"), "--out", str(tmp_path / "o2")],
        "exists": [str(result), "--out", str(taken)],
    }
    procs = {
        name: subprocess.Popen(
            [*ROADNET, "export", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name, args in cases.items()
    }
    outs = {name: (proc.communicate(timeout=300), proc.returncode) for name, proc in procs.items()}
    (stdout, stderr), rc = outs.pop("ok")
    assert rc == 0, stderr
    assert "2 COG(s) (surface.tif, centerline.tif)" in stdout
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == ["centerline.tif", "surface.tif"]
    expected = {
        "missing": "no roadnet result",
        "unfinished": "is not finished",
        "exists": "not empty (use --overwrite",
    }
    for name, ((_, stderr), rc) in outs.items():
        lines = stderr.strip().splitlines()
        assert rc == 2 and len(lines) == 1, (name, stderr)
        assert lines[0].startswith("roadnet: error:") and expected[name] in lines[0], name
    assert (taken / "surface.tif").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ok",
        "taken",
        "unfinished.zarr.partial-run",
    ]  # no output (nor staging) for the refused ones
