"""The merged city layer: newest wins per area, dissolved across scene borders, incremental."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import shapely

from roadnet.pipeline.nightly.catalog import Row
from roadnet.pipeline.nightly.merge import merge_layer, read_merged, territories

CRS = "EPSG:32635"


def _scene(tmp: Path, name: str, bounds: tuple[float, float, float, float], roads: list,
           acquired: float) -> Row:  # type: ignore[type-arg]  # fmt: skip
    path = tmp / f"{name}.gpkg"
    gpd.GeoDataFrame(geometry=roads, crs=CRS).to_file(path, layer="road_surface")
    return {"scene_id": name, "status": "done", "roads": str(path), "scene_crs": CRS,
            "scene_bounds": json.dumps(list(bounds)), "acquired": acquired}  # fmt: skip


def _two(tmp: Path, *, west_newer: bool) -> dict[str, Row]:
    # west covers x 0..100, east x 60..160; a street y 40..50 runs through both;
    # west alone sees a blob at x 70..80 in the overlap, east does not
    street_w = shapely.box(0, 40, 100, 50)
    street_e = shapely.box(60, 40, 160, 50)
    blob = shapely.box(70, 70, 80, 80)
    west = _scene(tmp, "west", (0, 0, 100, 100), [street_w, blob], 2.0 if west_newer else 1.0)
    east = _scene(tmp, "east", (60, 0, 160, 100), [street_e], 1.5)
    return {"west": west, "east": east}


def test_newest_wins_and_streets_dissolve_across_the_border(tmp_path: Path) -> None:
    rows = _two(tmp_path, west_newer=False)
    merge_layer(str(tmp_path), rows, ["west", "east"])
    layer = read_merged(str(tmp_path))
    assert layer is not None and layer.crs.to_epsg() == 32635
    assert len(layer) == 1  # the blob lies in east's territory (east is newer): dropped
    assert layer.geometry.iloc[0].equals(shapely.box(0, 40, 160, 50))
    assert abs(layer["area_m2"].iloc[0] - 1600) < 1e-6
    terr = territories(list(rows.values()), CRS)
    assert terr["east"].equals(shapely.box(60, 0, 160, 100))
    assert terr["west"].equals(shapely.box(0, 0, 60, 100))

    other = tmp_path / "west-newer"
    other.mkdir()
    rows = _two(other, west_newer=True)
    merge_layer(str(other), rows, ["west", "east"])
    layer = read_merged(str(other))
    assert layer is not None and len(layer) == 2  # now the blob is west's to show
    assert abs(layer.area.sum() - 1700) < 1e-6


def test_incremental_equals_from_scratch_and_far_components_are_kept(tmp_path: Path) -> None:
    far = shapely.box(500, 500, 520, 505)
    rows = _two(tmp_path, west_newer=False)
    rows["far"] = _scene(tmp_path, "far", (480, 480, 560, 560), [far], 0.5)
    step = tmp_path / "step"
    step.mkdir()
    merge_layer(str(step), rows, ["far"])
    merge_layer(str(step), rows, ["west"])
    before = read_merged(str(step))
    summary = merge_layer(str(step), rows, ["east"])
    after = read_merged(str(step))
    assert before is not None and after is not None
    assert summary.kept == 1 and any(g.equals(far) for g in after.geometry)  # untouched
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    merge_layer(str(scratch), rows, sorted(rows))
    full = read_merged(str(scratch))
    assert full is not None and len(full) == len(after) == 2
    assert all(any(a.equals(b) for b in full.geometry) for a in after.geometry)


def test_a_scene_that_is_no_longer_done_leaves_the_layer(tmp_path: Path) -> None:
    rows = _two(tmp_path, west_newer=False)
    merge_layer(str(tmp_path), rows, ["west", "east"])
    rows["east"] = {**rows["east"], "status": "failed"}
    merge_layer(str(tmp_path), rows, ["east"])
    layer = read_merged(str(tmp_path))
    assert layer is not None
    assert abs(layer.area.sum() - (1000 + 100)) < 1e-6  # west's street and now its blob
