"""Road vectors: read them, give every line a width, and turn them into surface polygons.

Roads come as lines with a width attribute, as lines with an OpenStreetMap ``highway`` (and
``lanes``) attribute whose width comes from the width table (``configs/road-widths.yaml``),
or as road surface polygons. :func:`normalize_roads` reprojects them to the scene's CRS and
adds a float ``width_m`` column (NaN for polygons); :func:`road_surfaces` buffers the lines
to their width.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pydantic import Field

from roadnet.config import StrictModel, load_config
from roadnet.errors import InputError

__all__ = [
    "HighwayClass",
    "RoadWidths",
    "load_width_table",
    "metres_per_unit",
    "normalize_roads",
    "read_roads",
    "road_surfaces",
]

LINE_TYPES = ("LineString", "MultiLineString")
POLYGON_TYPES = ("Polygon", "MultiPolygon")
WIDTH_COLUMNS = ("width_m", "width")
PBF_SUFFIXES = (".osm.pbf", ".pbf")
PARQUET_SUFFIXES = (".parquet", ".geoparquet")

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:m|metres|meters)?\s*$", re.IGNORECASE)

Bounds = tuple[float, float, float, float]


class HighwayClass(StrictModel):
    """Default cross-section of one OSM ``highway`` class."""

    lanes: float = Field(gt=0, description="Lane count when the road has no `lanes` value.")
    lane_width_m: float | None = Field(
        default=None, gt=0, description="Lane width; None uses the table's default."
    )
    extra_m: float = Field(
        default=0.0, ge=0, description="Shoulders, gutters and edge strips, added once."
    )


class RoadWidths(StrictModel):
    """The width table: which ``highway`` classes are roads and how wide they are."""

    lane_width_m: float = Field(default=3.25, gt=0)
    classes: dict[str, HighwayClass] = Field(default_factory=dict)
    exclude: list[str] = Field(default_factory=list)
    drop_tunnels: bool = True

    def width_m(self, highway: str, lanes: float | None = None) -> float:
        """Return the width in metres of a road of class ``highway`` with ``lanes`` lanes.

        Raises:
            InputError: ``highway`` is not a class of the table.
        """
        try:
            cls = self.classes[highway]
        except KeyError:
            raise InputError(_unknown_class_message(highway, 1)) from None
        n = lanes if lanes is not None and np.isfinite(lanes) and lanes > 0 else cls.lanes
        lane = cls.lane_width_m if cls.lane_width_m is not None else self.lane_width_m
        return float(n * lane + cls.extra_m)


def _unknown_class_message(highway: str, count: int) -> str:
    return (
        f"unknown highway class {highway!r} ({count} road{'s' if count != 1 else ''}): "
        "add it to the width table's classes or exclude list"
    )


def load_width_table(source: str | Path | None = None) -> RoadWidths:
    """Load the width table from a YAML path or bundled config name (default: road-widths).

    Raises:
        ConfigError: unreadable file or invalid table.
    """
    return load_config(RoadWidths, source if source is not None else "road-widths")


def metres_per_unit(crs: Any) -> float:
    """Return the length of one horizontal unit of a projected CRS in metres.

    Raises:
        InputError: the CRS is geographic (degrees), so widths in metres cannot be drawn.
    """
    from pyproj import CRS

    parsed = CRS.from_user_input(crs)
    if not parsed.is_projected:
        raise InputError(
            f"CRS {parsed.name!r} is not projected; road widths in metres need a projected "
            "CRS (e.g. the scene's UTM zone)"
        )
    return float(parsed.axis_info[0].unit_conversion_factor)


def _parse_numbers(values: pd.Series) -> np.ndarray:
    """Parse attribute values such as ``7``, ``"7.5"``, ``"7 m"`` or ``"2;3"`` to float64.

    Unparseable or missing values become NaN; for ``"2;3"`` (OSM multi-values) the first.
    """
    out = np.full(len(values), np.nan)
    for i, value in enumerate(values.to_numpy(dtype=object)):
        if value is None:
            continue
        if isinstance(value, int | float | np.integer | np.floating):
            out[i] = float(value)
            continue
        match = _NUMBER.match(str(value).split(";")[0])
        if match:
            out[i] = float(match.group(1))
    out[~(out > 0)] = np.nan
    return out


def _tunnel_mask(roads: gpd.GeoDataFrame) -> np.ndarray:
    if "tunnel" not in roads.columns:
        return np.zeros(len(roads), dtype=bool)
    tunnel = roads["tunnel"].astype(object)
    return np.asarray(tunnel.notna() & ~tunnel.astype(str).str.lower().isin(["no", "false", ""]))


def _line_widths(lines: gpd.GeoDataFrame, widths: RoadWidths) -> np.ndarray:
    """Width in metres for every line: explicit width, else highway class and lanes."""
    width = np.full(len(lines), np.nan)
    for column in WIDTH_COLUMNS:
        if column in lines.columns:
            width = np.where(np.isnan(width), _parse_numbers(lines[column]), width)
    missing = np.isnan(width)
    if not missing.any():
        return width
    if "highway" not in lines.columns:
        raise InputError(
            f"{int(missing.sum())} road lines have no width and there is no highway attribute "
            "to look one up (give a 'width' column in metres or OSM 'highway' classes)"
        )
    highway = lines["highway"].astype(object).to_numpy()
    no_class = missing & pd.isna(highway)
    if no_class.any():
        raise InputError(
            f"{int(no_class.sum())} road lines have neither a width nor a highway class"
        )
    needed = pd.Series(highway[missing].astype(str))
    unknown = needed[~needed.isin(list(widths.classes))].value_counts()
    if len(unknown):
        raise InputError(_unknown_class_message(str(unknown.index[0]), int(unknown.iloc[0])))
    lanes = (
        _parse_numbers(lines["lanes"]) if "lanes" in lines.columns else np.full(len(lines), np.nan)
    )
    for i in np.flatnonzero(missing):
        width[i] = widths.width_m(str(highway[i]), float(lanes[i]))
    return width


def normalize_roads(roads: gpd.GeoDataFrame, *, crs: Any, widths: RoadWidths) -> gpd.GeoDataFrame:
    """Reproject road vectors to ``crs`` and give every line a width.

    Rows whose ``highway`` class is in ``widths.exclude``, tunnels (when
    ``widths.drop_tunnels``) and geometries that are neither lines nor polygons are dropped;
    multi-part geometries stay one row.

    Args:
        roads: road lines and/or polygons, in any CRS.
        crs: the target CRS (anything pyproj accepts).
        widths: the width table.

    Returns:
        The roads in ``crs`` with their original attributes and a float64 ``width_m`` column:
        metres for lines, NaN for polygons (which are road surfaces as they are).

    Raises:
        InputError: the vectors have no CRS, no usable geometry, a line has no width and no
            highway class, or a highway class is unknown (the message names it).
    """
    if roads.crs is None:
        raise InputError("road vectors have no CRS; assign one (e.g. with ogr2ogr -a_srs)")
    metres_per_unit(crs)
    roads = roads[roads.geometry.notna() & ~roads.geometry.is_empty]
    roads = roads[roads.geom_type.isin(LINE_TYPES + POLYGON_TYPES)]
    if "highway" in roads.columns and widths.exclude:
        roads = roads[~roads["highway"].astype(object).isin(widths.exclude)]
    if widths.drop_tunnels:
        roads = roads[~_tunnel_mask(roads)]
    if roads.empty:
        raise InputError("road vectors hold no usable road lines or polygons")
    roads = roads.to_crs(crs).reset_index(drop=True)
    is_line = np.asarray(roads.geom_type.isin(LINE_TYPES))
    width = np.full(len(roads), np.nan)
    if is_line.any():
        width[is_line] = _line_widths(roads[is_line], widths)
    roads = roads.copy()
    roads["width_m"] = width
    if not is_line.all():  # repair self-intersecting polygons, keeping only their area
        geoms = roads.geometry.to_numpy()
        geoms[~is_line] = shapely.make_valid(
            geoms[~is_line], method="structure", keep_collapsed=False
        )
        roads = roads.set_geometry(gpd.GeoSeries(geoms, index=roads.index, crs=roads.crs))
        roads = roads[~roads.geometry.is_empty].reset_index(drop=True)
        if roads.empty:
            raise InputError("road vectors hold no usable road lines or polygons")
    return roads


def _first_sentence(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.split(r"(?<=[.;])\s", text, maxsplit=1)[0].rstrip(".;")


def _read_pbf(path: Path, bounds_4326: Bounds | None, network_type: str) -> gpd.GeoDataFrame:
    import pyrosm
    from google.protobuf.message import DecodeError
    from pyrosm.exceptions import PBFException

    try:
        osm = pyrosm.OSM(str(path), bounding_box=list(bounds_4326) if bounds_4326 else None)
        roads = osm.get_network(network_type=network_type)
    except (PBFException, DecodeError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable OSM PBF file ({_first_sentence(exc)})") from exc
    if roads is None or len(roads) == 0:
        raise InputError(f"{path}: no {network_type} roads in the OSM extract")
    return roads


def _read_ogr(path: Path, *, crs: Any, bounds: Bounds | None, layer: str | None) -> Any:
    import pyogrio
    from pyproj import CRS
    from rasterio.warp import transform_bounds

    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
        if layer is not None and layer not in layers:
            raise InputError(f"{path}: no layer {layer!r}; layers: {', '.join(layers)}")
        if layer is None and len(layers) > 1:
            log.warning("%s: reading its first layer %r of %s", path, layers[0], layers)
        layer = layer if layer is not None else layers[0] if layers else None
        info = pyogrio.read_info(path, layer=layer)
        bbox = None
        if bounds is not None and info.get("crs"):
            bbox = transform_bounds(CRS.from_user_input(crs), info["crs"], *bounds)
        return pyogrio.read_dataframe(path, layer=layer, bbox=bbox)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise InputError(f"{path}: not a readable vector file ({_first_sentence(exc)})") from exc


def read_roads(
    path: Path,
    *,
    crs: Any,
    widths: RoadWidths,
    bounds: Bounds | None = None,
    network_type: str = "driving",
    layer: str | None = None,
) -> gpd.GeoDataFrame:
    """Read road vectors from a file and :func:`normalize_roads` them to ``crs``.

    Args:
        path: any vector format GDAL reads (GeoPackage, GeoJSON, Shapefile, FlatGeobuf ...),
            GeoParquet (``.parquet``), or an OpenStreetMap extract (``.osm.pbf``, read with
            pyrosm as its ``network_type`` network).
        crs: the CRS to reproject to.
        widths: the width table.
        bounds: optional (minx, miny, maxx, maxy) in ``crs``: read only roads near it.
        network_type: pyrosm network for ``.osm.pbf`` input.
        layer: layer of a multi-layer file (GeoPackage ...); default the first, with a
            warning when there are several.

    Raises:
        InputError: missing or unreadable file, plus everything :func:`normalize_roads` raises.
    """
    from pyproj import CRS
    from rasterio.warp import transform_bounds

    path = Path(path)
    if not path.exists():
        raise InputError(f"road vectors not found: {path}")
    name = path.name.lower()
    if name.endswith(PBF_SUFFIXES):
        box = transform_bounds(CRS.from_user_input(crs), "EPSG:4326", *bounds) if bounds else None
        roads = _read_pbf(path, box, network_type)
    elif name.endswith(PARQUET_SUFFIXES):
        if importlib.util.find_spec("pyarrow") is None:
            raise InputError(f"{path}: reading GeoParquet needs pyarrow (pip install pyarrow)")
        try:
            roads = gpd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise InputError(
                f"{path}: not a readable GeoParquet file ({_first_sentence(exc)})"
            ) from exc
    else:
        roads = _read_ogr(path, crs=crs, bounds=bounds, layer=layer)
    if not isinstance(roads, gpd.GeoDataFrame) or roads.geometry.name not in roads.columns:
        raise InputError(f"{path}: holds no geometry column")
    if bounds is not None and roads.empty:
        box = ", ".join(f"{b:.1f}" for b in bounds)
        raise InputError(f"no roads of {path} lie in the extent ({box}) of the target grid")
    return normalize_roads(roads, crs=crs, widths=widths)


def road_surfaces(
    roads: gpd.GeoDataFrame,
    *,
    cap_style: Literal["round", "flat", "square"] = "round",
    quad_segs: int = 8,
) -> gpd.GeoSeries:
    """Return the surface polygon of every road: lines buffered by half their width.

    Joins are round, so bends keep their width; caps are round by default, so lines that
    meet at an angle leave no notch at the junction (a dead end then extends half a width
    past its last vertex; ``cap_style="flat"`` stops exactly at it).

    Args:
        roads: output of :func:`normalize_roads` (lines with ``width_m``; polygons), in a
            projected CRS (widths are converted from metres to its unit).
        cap_style: buffer cap style for line ends.
        quad_segs: segments per quarter circle of round caps and joins.

    Returns:
        One (Multi)Polygon per road, same index and CRS as ``roads``.
    """
    geoms = roads.geometry.to_numpy()
    is_line = np.asarray(roads.geom_type.isin(LINE_TYPES))
    out = geoms.copy()
    if is_line.any():
        half = roads["width_m"].to_numpy(dtype=float)[is_line] / 2.0 / metres_per_unit(roads.crs)
        out[is_line] = shapely.buffer(
            geoms[is_line], half, quad_segs=quad_segs, cap_style=cap_style, join_style="round"
        )
    return gpd.GeoSeries(out, index=roads.index, crs=roads.crs)
