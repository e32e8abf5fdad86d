"""The argument checks the commands make before their heavy imports."""

from __future__ import annotations

from pathlib import Path

import pytest
from _results import road_codes, write_result

from roadnet.errors import InputError, OutputExistsError
from roadnet.pipeline.preflight import (
    check_layer_outputs,
    check_model_output,
    check_result,
    check_run_output,
    check_scene,
    staging_path,
)


def test_check_result_tells_missing_unfinished_foreign_and_complete_apart(tmp_path: Path) -> None:
    codes = road_codes(64, 64, seed=1, roads=2)
    with pytest.raises(InputError, match="no roadnet result"):
        check_result(tmp_path / "none.zarr")
    write_result(tmp_path / "part.zarr", codes, chunk=32, finish=False)
    with pytest.raises(InputError, match=r"not finished: .*part\.zarr\.partial-run"):
        check_result(tmp_path / "part.zarr")
    (tmp_path / "other").mkdir()
    with pytest.raises(InputError, match="not a Zarr store"):
        check_result(tmp_path / "other")
    good = write_result(tmp_path / "good.zarr", codes, chunk=32)
    assert check_result(good) == Path(good)


def test_check_scene_passes_urls_and_gdal_paths(tmp_path: Path) -> None:
    check_scene("s3://bucket/scene.tif")
    check_scene("/vsizip/archive.zip/scene.tif")
    check_scene("GTIFF_DIR:2:scene.tif")  # a subdataset: GDAL decides
    (tmp_path / "scene.tif").write_bytes(b"")
    check_scene(str(tmp_path / "scene.tif"))  # opening it is the run's job
    with pytest.raises(InputError, match=r"cannot open scene .*no such file"):
        check_scene(str(tmp_path / "nothing.tif"))


def test_check_run_output_leaves_unfinished_runs_to_resume(tmp_path: Path) -> None:
    out = tmp_path / "r.zarr"
    Path(staging_path(out)).mkdir()  # a killed run's store: resumed or refused by the run
    check_run_output(out, overwrite=False)
    out.mkdir()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        check_run_output(out, overwrite=False)
    check_run_output(out, overwrite=True)
    check_run_output("s3://bucket/r.zarr", overwrite=False)  # decided where the store is read


def test_check_layer_outputs_names_and_existing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"must end in \.gpkg"):
        check_layer_outputs(tmp_path / "roads", fmt="gpkg", overwrite=False)
    with pytest.raises(InputError, match="give a directory"):
        check_layer_outputs(tmp_path / "roads.gpkg", fmt="parquet", overwrite=False)
    (tmp_path / "roads.gpkg").write_bytes(b"")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        check_layer_outputs(tmp_path / "roads.gpkg", fmt="gpkg", overwrite=False)
    check_layer_outputs(tmp_path / "roads.gpkg", fmt="gpkg", overwrite=True)


def test_check_model_output_wants_keras_and_keeps_the_card(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"must end in \.keras"):
        check_model_output(tmp_path / "m.h5", overwrite=False)
    check_model_output(tmp_path / "m.keras", overwrite=False)
    (tmp_path / "m.json").write_text("{}")  # a card left without its model
    with pytest.raises(OutputExistsError, match=r"m\.json"):
        check_model_output(tmp_path / "m.keras", overwrite=False)
    check_model_output(tmp_path / "m.keras", overwrite=True)
