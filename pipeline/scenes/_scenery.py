"""The vector side of a synthetic scene: mirror-tiled OSM geometry and its per-window rasters.

:func:`tile_scenery` lays copies of the extract over the scene (every other copy mirrored,
so roads stay continuous across copy borders) and fixes every random attribute of a feature
from a key hashed with the seed. :func:`window_layers` rasterizes what one padded window
needs (land cover, road surfaces, sidewalks, paint, buildings, cars) into the
:class:`~roadnet.pipeline.scenes._render.WindowLayers` the renderer draws. Coordinates are in the
scene's UTM CRS; pixel positions handed to the renderer are absolute scene pixels.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine

from roadnet.pipeline.scenes._rasters import burn
from roadnet.pipeline.scenes._render import WindowLayers
from roadnet.pipeline.scenes._streets import (
    CAR_SIZE_M,
    crossings,
    markings,
    parking_cars,
    rectangles,
    road_cars,
)
from roadnet.pipeline.scenes._textures import hash_u32, hash_uniform
from roadnet.pipeline.scenes.osm import COVER_CLASSES
from roadnet.pipeline.scenes.roads import Bounds, road_surfaces

__all__ = ["ROAD_GROUPS", "Scenery", "tile_scenery", "window_layers"]

#: Road class -> group: 1 major, 2 collector, 3 minor street (0 is "no road").
ROAD_GROUPS = {
    **dict.fromkeys(["motorway", "trunk", "primary"], 1),
    **dict.fromkeys(["motorway_link", "trunk_link", "primary_link"], 1),
    **dict.fromkeys(["secondary", "tertiary", "secondary_link", "tertiary_link"], 2),
}
_SIDEWALK_CLASSES = {"primary", "secondary", "tertiary", "residential", "unclassified"}
_SIDEWALK_M = 2.5
_VERGE_M = 4.0
_PAINT_M = 0.15


@dataclass(frozen=True)
class Scenery:
    """Mirror-tiled vectors of one scene, in its CRS, each feature with a stable ``key``.

    ``roads`` has ``highway``, ``lanes``, ``width_m`` and ``key``; ``surfaces`` holds the
    road surface polygon of every road row; ``buildings`` has ``height_m`` (filled),
    ``key``; ``areas`` has ``cover`` (index into COVER_CLASSES) and ``key``, largest first.
    """

    roads: gpd.GeoDataFrame
    surfaces: gpd.GeoSeries
    buildings: gpd.GeoDataFrame
    areas: gpd.GeoDataFrame
    trees: np.ndarray
    origin: tuple[float, float]
    gsd: float
    seed: int

    def __post_init__(self) -> None:
        for name, geoms in (
            ("_road_tree", self.surfaces.to_numpy()),
            ("_building_tree", self.buildings.geometry.to_numpy()),
            ("_area_tree", self.areas.geometry.to_numpy()),
            ("_tree_tree", self.trees),
        ):
            object.__setattr__(self, name, shapely.STRtree(geoms))

    def query(self, layer: str, box: shapely.Polygon) -> np.ndarray:
        """Sorted row positions of ``layer`` ('road', 'building', 'area', 'tree') in ``box``."""
        tree: shapely.STRtree = getattr(self, f"_{layer}_tree")
        hits = tree.query(box, predicate="intersects")
        hits.sort()
        out: np.ndarray = hits
        return out

    def to_pixels(self, xy: np.ndarray) -> np.ndarray:
        """Map ``(n, 2)`` x/y coordinates to absolute ``(n, 2)`` (col, row) pixel positions."""
        x0, y0 = self.origin
        return np.column_stack([(xy[:, 0] - x0) / self.gsd, (y0 - xy[:, 1]) / self.gsd])


def _copies(extent: Bounds, box: Bounds) -> Iterator[tuple[int, float, float, float, float]]:
    """Yield (index, sx, ox, sy, oy): x' = sx*x + ox, y' = sy*y + oy for every copy in box.

    Overhangs of the box below 1 % of the extent (rounding the size to whole pixels) get no
    copy of their own.
    """
    minx, miny, maxx, maxy = extent
    ex, ey = maxx - minx, maxy - miny
    ix = range(math.floor((box[0] - minx) / ex + 0.01), math.ceil((box[2] - minx) / ex - 0.01))
    iy = range(math.floor((box[1] - miny) / ey + 0.01), math.ceil((box[3] - miny) / ey - 0.01))
    for n, (i, j) in enumerate((i, j) for j in iy for i in ix):
        sx, ox = (1.0, i * ex) if i % 2 == 0 else (-1.0, minx + maxx + i * ex)
        sy, oy = (1.0, j * ey) if j % 2 == 0 else (-1.0, miny + maxy + j * ey)
        yield n, sx, ox, sy, oy


def _polygonal(geoms: np.ndarray) -> np.ndarray:
    """Keep only the polygon parts of geometry collections (clipping can leave slivers)."""
    mixed = np.flatnonzero(shapely.get_type_id(geoms) == 7)
    for i in mixed:
        parts = shapely.get_parts(geoms[i])
        geoms[i] = shapely.union_all(parts[np.isin(shapely.get_type_id(parts), [3, 6])])
    return geoms


def _tile(
    frame: gpd.GeoDataFrame,
    extent: Bounds,
    box: Bounds,
    *,
    clip: bool = True,
    simplify: float = 0.0,
) -> gpd.GeoDataFrame:
    """Copies of ``frame`` (clipped to ``extent``) over ``box``, with a unique ``key``.

    ``simplify`` (metres) drops vertices closer than that to a straight line: rasterizing
    goes through Python per vertex, and detail below a pixel is not drawn anyway.
    """
    geoms = frame.geometry.to_numpy()
    if clip:
        # clip_by_rect assumes ring orientations OSM does not guarantee; intersection does not
        geoms = _polygonal(shapely.intersection(shapely.make_valid(geoms), shapely.box(*extent)))
    if simplify > 0:
        geoms = shapely.simplify(geoms, simplify)
    keep = ~(shapely.is_empty(geoms) | shapely.is_missing(geoms))
    base = frame.loc[keep].reset_index(drop=True)
    geoms = geoms[keep]
    parts = []
    for n, sx, ox, sy, oy in _copies(extent, box):
        moved = shapely.transform(geoms, lambda c, s=(sx, sy), o=(ox, oy): c * s + o)
        part = base.copy()
        part["key"] = np.arange(len(base), dtype=np.int64) + n * len(base)
        parts.append(part.set_geometry(moved))
    return gpd.GeoDataFrame(
        gpd.pd.concat(parts, ignore_index=True), geometry="geometry", crs=frame.crs
    )


def tile_scenery(
    roads: gpd.GeoDataFrame,
    buildings: gpd.GeoDataFrame,
    areas: gpd.GeoDataFrame,
    trees: gpd.GeoSeries,
    *,
    extent: Bounds,
    box: Bounds,
    gsd: float,
    seed: int,
    cap_style: Literal["round", "flat", "square"] = "round",
) -> Scenery:
    """Cover ``box`` (the scene's bounds) with mirrored copies of ``extent`` of each layer.

    Args:
        roads: normalized road lines (``highway``, ``lanes``, ``width_m``) in the scene CRS;
            ``extent`` must contain them (they are not clipped).
        buildings: polygons with ``height_m`` (NaN allowed), scene CRS.
        areas: polygons with ``cover`` names, scene CRS.
        trees: points of single trees, scene CRS.
        extent: (minx, miny, maxx, maxy) of the geometry that is repeated.
        box: (minx, miny, maxx, maxy) of the scene.
        gsd: pixel size in metres.
        seed: the scene seed.
        cap_style: road line ends, as the labels draw them.
    """
    road_frame = roads[["highway", "lanes", "width_m", "geometry"]].copy()
    road_frame["group"] = road_frame["highway"].map(ROAD_GROUPS).fillna(3).astype(np.uint8)
    tiled = _tile(road_frame, extent, box, clip=False)
    # minor streets first, so major roads are drawn over them where they overlap
    tiled = tiled.iloc[np.lexsort((tiled["key"].to_numpy(), -tiled["group"].to_numpy()))]
    tiled = tiled.reset_index(drop=True)
    surfaces = road_surfaces(tiled, cap_style=cap_style)

    b = _tile(buildings[["height_m", "geometry"]], extent, box, simplify=gsd / 4)
    # no height in OSM: houses (small footprints) 4-8 m, larger buildings 7-23 m
    u = hash_uniform(seed, 11, b["key"].to_numpy())
    guess = np.where(b.area.to_numpy() < 250.0, 4.0 + 4.0 * u, 7.0 + 16.0 * u)
    b["height_m"] = np.where(np.isfinite(b["height_m"]), b["height_m"], guess).clip(3.0, 60.0)

    codes = {name: i for i, name in enumerate(COVER_CLASSES)}
    a = _tile(areas[["cover", "geometry"]], extent, box, simplify=gsd / 4)
    a["cover"] = a["cover"].map(codes).astype(np.uint8)
    a = a.iloc[np.lexsort((a["key"].to_numpy(), -a.area.to_numpy()))].reset_index(drop=True)

    t = _tile(gpd.GeoDataFrame(geometry=trees.to_numpy(), crs=trees.crs), extent, box)
    return Scenery(
        roads=tiled,
        surfaces=surfaces,
        buildings=b,
        areas=a,
        trees=t.geometry.to_numpy(),
        origin=(box[0], box[3]),
        gsd=gsd,
        seed=seed,
    )


def _long_axes(polygons: np.ndarray) -> np.ndarray:
    """Unit x/y direction of the long side of every polygon's minimum rotated rectangle."""
    rects = shapely.minimum_rotated_rectangle(polygons)
    boxy = shapely.get_num_coordinates(rects) == 5  # degenerate ones collapse to lines
    axes = np.tile(np.array([1.0, 0.0]), (polygons.size, 1))
    if boxy.any():
        rect = shapely.get_coordinates(rects[boxy]).reshape(-1, 5, 2)
        e1, e2 = rect[:, 1] - rect[:, 0], rect[:, 2] - rect[:, 1]
        n1, n2 = np.hypot(e1[:, 0], e1[:, 1]), np.hypot(e2[:, 0], e2[:, 1])
        long_axis = np.where((n1 >= n2)[:, None], e1, e2)
        axes[boxy] = (
            long_axis / np.maximum(np.hypot(long_axis[:, 0], long_axis[:, 1]), 1e-9)[:, None]
        )
    return axes


def _pixel_axis(axis_xy: np.ndarray) -> np.ndarray:
    """Unit vectors from x/y (north up) to (col, row) pixel directions."""
    return np.column_stack([axis_xy[:, 0], -axis_xy[:, 1]]).astype(np.float32)


def _with_zero(values: np.ndarray) -> np.ndarray:
    """Prepend a row for id 0 ("nothing") to a per-feature attribute array."""
    return np.concatenate([np.zeros((1, *values.shape[1:]), values.dtype), values])


@dataclass(frozen=True)
class _Grid:
    """A padded window's pixel grid and the boxes (scene CRS) its features are looked up in.

    ``box`` is the window's footprint; ``wide`` reaches 12 m beyond it, and roads, cars and
    single trees are looked up there.
    """

    transform: Affine
    shape: tuple[int, int]
    box: shapely.Polygon
    wide: shapely.Polygon

    def burn(self, pairs: Iterable[tuple[Any, Any]], dtype: str) -> np.ndarray:
        """``(y, x)`` raster of ``(geometry, value)`` pairs on this grid."""
        return burn(pairs, shape=self.shape, transform=self.transform, dtype=dtype)


def _window_grid(
    s: Scenery, *, transform: Affine, row0: int, col0: int, height: int, width: int
) -> _Grid:
    wt = transform @ Affine.translation(col0, row0)
    x0, y1 = wt.c, wt.f
    x1, y0 = x0 + width * s.gsd, y1 - height * s.gsd
    return _Grid(
        transform=wt,
        shape=(height, width),
        box=shapely.box(x0, y0, x1, y1),
        wide=shapely.box(x0 - 12.0, y0 - 12.0, x1 + 12.0, y1 + 12.0),
    )


class _Streets(NamedTuple):
    """Road surfaces and what lines them, as :class:`WindowLayers` holds them."""

    road: np.ndarray
    road_tone: np.ndarray
    road_group: np.ndarray
    sidewalk: np.ndarray
    verge: np.ndarray


def _share(u: np.ndarray, share: float) -> np.ndarray:
    """Which features a hashed draw ``u`` in [0, 1] keeps at ``share`` (all of them at 1)."""
    if share >= 1.0:
        return np.ones(u.shape, dtype=bool)
    kept: np.ndarray = u < share
    return kept


def _streets(
    s: Scenery, hits: np.ndarray, roads: gpd.GeoDataFrame, grid: _Grid, sidewalk_share: float
) -> _Streets:
    """Road ids with their asphalt tone and group, sidewalks (by material) and verges.

    ``hits`` are the row positions of ``roads`` in ``s.roads``; a road of the sidewalk
    classes has sidewalks when its hashed draw falls under ``sidewalk_share``.
    """
    ids = np.arange(1, hits.size + 1)
    road = grid.burn(zip(s.surfaces.to_numpy()[hits], ids, strict=True), "int32")
    keys = roads["key"].to_numpy()
    group = roads["group"].to_numpy()
    mean = np.array([0.0, 0.26, 0.31, 0.36], dtype=np.float32)[group]
    tone = mean + 0.05 * (hash_uniform(s.seed, 51, keys) - 0.5)
    old = (group == 3) & (hash_uniform(s.seed, 52, keys) < 0.2)
    tone = np.where(old, 0.47 + 0.06 * hash_uniform(s.seed, 53, keys), tone)

    walk = roads["highway"].isin(_SIDEWALK_CLASSES).to_numpy() & _share(
        hash_uniform(s.seed, 55, keys), sidewalk_share
    )
    half = roads["width_m"].to_numpy(dtype=float) / 2.0
    lines = roads.geometry.to_numpy()
    material = np.where(hash_uniform(s.seed, 54, keys) < 0.5, 1, 2).astype(np.uint8)
    sidewalk = grid.burn(
        zip(
            shapely.buffer(lines[walk], half[walk] + _SIDEWALK_M, quad_segs=2),
            material[walk],
            strict=True,
        ),
        "uint8",
    )
    verge = grid.burn(
        ((g, 1) for g in shapely.buffer(lines, half + _SIDEWALK_M * walk + _VERGE_M, quad_segs=2)),
        "uint8",
    )
    return _Streets(
        road=road,
        road_tone=_with_zero(tone.astype(np.float32)),
        road_group=_with_zero(group.astype(np.uint8)),
        sidewalk=sidewalk,
        verge=verge.astype(bool),
    )


class _Cars(NamedTuple):
    """Cars on the roads and in parking lots, and the lots' stall lines."""

    car: np.ndarray
    car_kind: np.ndarray
    car_centre: np.ndarray
    car_axis: np.ndarray
    stalls: np.ndarray


def _cars(
    s: Scenery,
    roads: gpd.GeoDataFrame,
    areas: gpd.GeoDataFrame,
    grid: _Grid,
    car_density: float,
) -> _Cars:
    parking = areas[areas["cover"].to_numpy() == COVER_CLASSES.index("parking")]
    pc, pa, pk, stalls = parking_cars(
        parking.geometry.to_numpy(), parking["key"].to_numpy(), s.seed, car_density
    )
    rc, ra, rk = road_cars(roads, s.seed, car_density)
    centre, axis, car_keys = np.vstack([rc, pc]), np.vstack([ra, pa]), np.concatenate([rk, pk])
    cars = rectangles(centre, axis, *CAR_SIZE_M)
    seen = shapely.intersects(cars, grid.wide)
    cars, centre, axis, car_keys = cars[seen], centre[seen], axis[seen], car_keys[seen]
    return _Cars(
        car=grid.burn(zip(cars, np.arange(1, cars.size + 1), strict=True), "int32"),
        car_kind=_with_zero(hash_u32(s.seed, 71, car_keys)),
        car_centre=_with_zero(s.to_pixels(centre).astype(np.float32)),
        car_axis=_with_zero(_pixel_axis(axis)),
        stalls=stalls,
    )


def _paint(s: Scenery, roads: gpd.GeoDataFrame, stalls: np.ndarray, grid: _Grid) -> np.ndarray:
    """Road markings and parking stall lines (1) and zebra crossings (2)."""
    paint_lines = np.concatenate([markings(roads, s.seed), stalls])
    if s.gsd <= _PAINT_M:
        paint_lines = shapely.buffer(paint_lines, _PAINT_M / 2.0, cap_style="flat")
    zebra = crossings(roads, s.seed)
    return grid.burn(
        itertools.chain(((g, 1) for g in paint_lines), ((g, 2) for g in zebra)), "uint8"
    )


class _Buildings(NamedTuple):
    """Building ids and their per-building tables, as :class:`WindowLayers` holds them."""

    building: np.ndarray
    building_height: np.ndarray
    building_roof: np.ndarray
    building_pitched: np.ndarray
    building_axis: np.ndarray
    building_centre: np.ndarray


def _buildings(s: Scenery, grid: _Grid, building_share: float) -> _Buildings:
    bh = s.query("building", grid.box)
    bh = bh[_share(hash_uniform(s.seed, 63, s.buildings["key"].to_numpy()[bh]), building_share)]
    blds = s.buildings.iloc[bh]
    bgeoms = blds.geometry.to_numpy()
    building = grid.burn(zip(bgeoms, np.arange(1, bh.size + 1), strict=True), "int32")
    long_axis = _long_axes(bgeoms)
    bkeys = blds["key"].to_numpy()
    pitched = (hash_uniform(s.seed, 61, bkeys) < 0.45) & (shapely.area(bgeoms) < 1500.0)
    return _Buildings(
        building=building,
        building_height=_with_zero(blds["height_m"].to_numpy(dtype=np.float32)),
        building_roof=_with_zero(hash_u32(s.seed, 62, bkeys)),
        building_pitched=_with_zero(pitched),
        building_axis=_with_zero(_pixel_axis(long_axis)),
        building_centre=_with_zero(
            s.to_pixels(shapely.get_coordinates(shapely.centroid(bgeoms))).astype(np.float32)
        ),
    )


def window_layers(
    s: Scenery,
    *,
    transform: Affine,
    row0: int,
    col0: int,
    height: int,
    width: int,
    car_density: float,
    markings: bool = True,
    sidewalk_share: float = 1.0,
    building_share: float = 1.0,
) -> WindowLayers:
    """Rasterize everything one padded window shows.

    Args:
        s: the scene's vectors.
        transform: the scene's affine transform.
        row0: absolute row of the window's top-left pixel (may be negative in the halo).
        col0: absolute column of the window's top-left pixel.
        height: window height in pixels.
        width: window width in pixels.
        car_density: multiplier of the car probabilities.
        markings: draw lane paint, zebra crossings and parking stall lines.
        sidewalk_share: share of the streets of the sidewalk classes drawn with sidewalks
            (a hash of each road's key decides).
        building_share: share of the buildings drawn (a hash of each building's key
            decides); the land cover shows where one is left out.
    """
    grid = _window_grid(s, transform=transform, row0=row0, col0=col0, height=height, width=width)
    areas = s.areas.iloc[s.query("area", grid.box)]
    cover = grid.burn(zip(areas.geometry, areas["cover"], strict=True), "uint8")
    road_hits = s.query("road", grid.wide)
    roads = s.roads.iloc[road_hits]
    streets = _streets(s, road_hits, roads, grid, sidewalk_share)
    cars = _cars(s, roads, areas, grid, car_density)
    paint = (
        _paint(s, roads, cars.stalls, grid) if markings else np.zeros(grid.shape, dtype=np.uint8)
    )
    blds = _buildings(s, grid, building_share)
    tree_xy = shapely.get_coordinates(s.trees[s.query("tree", grid.wide)])
    return WindowLayers(
        row0=row0,
        col0=col0,
        cover=cover,
        road=streets.road,
        road_tone=streets.road_tone,
        road_group=streets.road_group,
        sidewalk=streets.sidewalk,
        verge=streets.verge,
        paint=paint,
        building=blds.building,
        building_height=blds.building_height,
        building_roof=blds.building_roof,
        building_pitched=blds.building_pitched,
        building_axis=blds.building_axis,
        building_centre=blds.building_centre,
        car=cars.car,
        car_kind=cars.car_kind,
        car_centre=cars.car_centre,
        car_axis=cars.car_axis,
        trees=s.to_pixels(tree_xy).astype(np.float32),
    )
