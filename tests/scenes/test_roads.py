from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import Transformer

from roadnet.errors import ConfigError, InputError
from roadnet.pipeline.scenes.roads import (
    RoadWidths,
    load_width_table,
    normalize_roads,
    read_roads,
    road_surfaces,
)

UTM = "EPSG:32635"


@pytest.fixture(scope="module")
def widths() -> RoadWidths:
    return load_width_table()


def lines(crs: str | None = UTM, **columns: list[object]) -> gpd.GeoDataFrame:
    n = len(next(iter(columns.values())))
    geoms = [
        shapely.LineString([(385_000 + 10 * i, 6_672_000), (385_100, 6_672_050)]) for i in range(n)
    ]
    return gpd.GeoDataFrame(columns, geometry=geoms, crs=crs)


def test_bundled_table_covers_osm_road_classes(widths: RoadWidths) -> None:
    for cls in ("motorway", "primary", "residential", "service", "track", "trunk_link"):
        assert 2.0 <= widths.width_m(cls) <= 20.0
    assert widths.width_m("motorway") > widths.width_m("primary") > widths.width_m("service")
    assert {"footway", "cycleway", "path"} <= set(widths.exclude)
    assert not set(widths.exclude) & set(widths.classes)


def test_width_table_formula(widths: RoadWidths) -> None:
    primary = widths.classes["primary"]
    lane = primary.lane_width_m or widths.lane_width_m
    assert widths.width_m("primary") == pytest.approx(primary.lanes * lane + primary.extra_m)
    assert widths.width_m("primary", 4) == pytest.approx(4 * lane + primary.extra_m)
    with pytest.raises(InputError, match="'highway_x'"):
        widths.width_m("highway_x")


def test_width_table_rejects_misspelt_keys(tmp_path: Path) -> None:
    bad = tmp_path / "w.yaml"
    bad.write_text("classes:\n  primary: {lanes: 2, lane_widht_m: 3}\n")
    with pytest.raises(ConfigError, match="lane_widht_m"):
        load_width_table(bad)


def test_width_priority_explicit_then_lanes_then_class(widths: RoadWidths) -> None:
    gdf = lines(
        highway=["primary", "primary", "primary", "residential"],
        lanes=["4", None, "2;3", None],
        width=["9.5 m", None, None, "bad"],
    )
    out = normalize_roads(gdf, crs=UTM, widths=widths)
    assert out["width_m"].tolist() == pytest.approx(
        [
            9.5,
            widths.width_m("primary"),
            widths.width_m("primary", 2),
            widths.width_m("residential"),
        ]
    )


def test_excluded_classes_and_tunnels_are_dropped(widths: RoadWidths) -> None:
    gdf = lines(
        highway=["residential", "footway", "primary", "primary"],
        tunnel=[None, None, "yes", "no"],
        name=["a", "b", "c", "d"],
    )
    out = normalize_roads(gdf, crs=UTM, widths=widths)
    assert out["name"].tolist() == ["a", "d"]


def test_unknown_highway_class_is_named(widths: RoadWidths) -> None:
    gdf = lines(highway=["residential", "hovercraft_lane", "hovercraft_lane"])
    with pytest.raises(InputError, match=r"unknown highway class 'hovercraft_lane' \(2 roads\)"):
        normalize_roads(gdf, crs=UTM, widths=widths)
    # an explicit width makes the class irrelevant
    gdf["width_m"] = [5.0, 4.0, 4.0]
    assert len(normalize_roads(gdf, crs=UTM, widths=widths)) == 3


def test_bad_vectors_raise_input_error(widths: RoadWidths) -> None:
    with pytest.raises(InputError, match="no CRS"):
        normalize_roads(lines(crs=None, highway=["primary"]), crs=UTM, widths=widths)
    points = gpd.GeoDataFrame(geometry=[shapely.Point(0, 0)], crs=UTM)
    with pytest.raises(InputError, match="no usable"):
        normalize_roads(points, crs=UTM, widths=widths)
    with pytest.raises(InputError, match="neither a width nor a highway"):
        normalize_roads(lines(highway=[None]), crs=UTM, widths=widths)
    with pytest.raises(InputError, match="no highway attribute"):
        normalize_roads(lines(name=["x"]), crs=UTM, widths=widths)
    with pytest.raises(InputError, match="not projected"):
        normalize_roads(lines(width=[5.0]), crs="EPSG:4326", widths=widths)


def test_reprojects_and_keeps_polygons(widths: RoadWidths) -> None:
    to_wgs = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    lon, lat = to_wgs.transform([385_000.0, 385_200.0], [6_672_000.0, 6_672_000.0])
    square = shapely.box(lon[0], lat[0], lon[1], lat[0] + 0.001)
    gdf = gpd.GeoDataFrame(
        {"highway": ["tertiary", None]},
        geometry=[shapely.LineString(zip(lon, lat, strict=True)), square],
        crs="EPSG:4326",
    )
    out = normalize_roads(gdf, crs=UTM, widths=widths)
    assert out.crs.to_epsg() == 32635
    start = out.geometry.iloc[0].coords[0]
    assert start == pytest.approx((385_000.0, 6_672_000.0), abs=1e-3)
    assert math.isnan(out["width_m"].iloc[1])
    assert out.geom_type.tolist() == ["LineString", "Polygon"]


def test_invalid_polygons_are_repaired(widths: RoadWidths) -> None:
    bowtie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    sliver = shapely.Polygon([(0, 0), (5, 0), (10, 0)])
    gdf = gpd.GeoDataFrame({"name": ["bowtie", "sliver"]}, geometry=[bowtie, sliver], crs=UTM)
    out = normalize_roads(gdf, crs=UTM, widths=widths)
    assert out["name"].tolist() == ["bowtie"]
    assert out.geometry.iloc[0].is_valid
    assert out.geometry.iloc[0].area == pytest.approx(50.0)


def test_road_surfaces_buffer_by_half_width(widths: RoadWidths) -> None:
    gdf = gpd.GeoDataFrame(
        {"width_m": [6.0, np.nan]},
        geometry=[shapely.LineString([(0, 0), (100, 0)]), shapely.box(0, 10, 5, 20)],
        crs=UTM,
    )
    roads = normalize_roads(gdf, crs=UTM, widths=widths)
    flat = road_surfaces(roads, cap_style="flat")
    assert flat.iloc[0].area == pytest.approx(600.0)
    assert flat.iloc[1].equals(shapely.box(0, 10, 5, 20))
    rounded = road_surfaces(roads)
    assert rounded.iloc[0].area == pytest.approx(600.0 + math.pi * 9, rel=5e-3)
    feet = road_surfaces(roads.set_crs("EPSG:2263", allow_override=True), cap_style="flat")
    assert feet.iloc[0].area == pytest.approx(100 * 6.0 / 0.3048, rel=1e-5)  # US survey ft


def test_read_roads_from_geopackage_with_bounds(tmp_path: Path, widths: RoadWidths) -> None:
    gdf = lines(highway=["primary", "residential"]).to_crs("EPSG:4326")
    far = gpd.GeoDataFrame(
        {"highway": ["primary"]},
        geometry=[shapely.LineString([(395_000, 6_682_000), (395_100, 6_682_000)])],
        crs=UTM,
    ).to_crs("EPSG:4326")
    path = tmp_path / "roads.gpkg"
    gpd.pd.concat([gdf, far]).to_file(path)
    assert len(read_roads(path, crs=UTM, widths=widths)) == 3
    near = read_roads(path, crs=UTM, widths=widths, bounds=(384_900, 6_671_900, 385_200, 6_672_100))
    assert len(near) == 2
    assert near.crs.to_epsg() == 32635


def test_read_roads_layers(
    tmp_path: Path, widths: RoadWidths, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "two.gpkg"
    lines(highway=["primary"]).to_file(path, layer="centerlines")
    polygon = gpd.GeoDataFrame(
        geometry=[shapely.box(385_000, 6_672_000, 385_010, 6_672_030)], crs=UTM
    )
    polygon.to_file(path, layer="surfaces")
    with caplog.at_level("WARNING", logger="roadnet.pipeline.scenes.roads"):
        first = read_roads(path, crs=UTM, widths=widths)
    assert first.geom_type.tolist() == ["LineString"]
    assert "first layer 'centerlines'" in caplog.text
    assert read_roads(path, crs=UTM, widths=widths, layer="surfaces").geom_type.tolist() == [
        "Polygon"
    ]
    with pytest.raises(InputError, match="no layer 'roads'; layers: centerlines, surfaces"):
        read_roads(path, crs=UTM, widths=widths, layer="roads")


def test_read_roads_bad_files(tmp_path: Path, widths: RoadWidths) -> None:
    with pytest.raises(InputError, match="not found"):
        read_roads(tmp_path / "missing.gpkg", crs=UTM, widths=widths)
    text = tmp_path / "notes.gpkg"
    text.write_text("not a vector file")
    with pytest.raises(InputError, match="not a readable vector file"):
        read_roads(text, crs=UTM, widths=widths)
    for name in ("bad.osm.pbf", "truncated.osm.pbf"):
        pbf = tmp_path / name
        if name.startswith("bad"):
            pbf.write_text("not a pbf")
        else:
            import pyrosm

            pbf.write_bytes(Path(pyrosm.get_data("test_pbf")).read_bytes()[:50_000])
        with pytest.raises(InputError, match=f"{name}: not a readable OSM PBF file"):
            read_roads(pbf, crs=UTM, widths=widths)
    nocrs = tmp_path / "nocrs.gpkg"
    with pytest.warns(UserWarning, match="crs"):
        lines(crs=None, highway=["primary"]).to_file(nocrs)
    with pytest.raises(InputError, match="no CRS"):
        read_roads(nocrs, crs=UTM, widths=widths)


def test_read_roads_from_osm_pbf(widths: RoadWidths) -> None:
    import pyrosm

    roads = read_roads(Path(pyrosm.get_data("test_pbf")), crs=UTM, widths=widths)
    assert len(roads) > 100
    assert roads.crs.to_epsg() == 32635
    assert roads["width_m"].between(2.0, 20.0).all()
    assert set(roads["highway"]) <= set(widths.classes)
