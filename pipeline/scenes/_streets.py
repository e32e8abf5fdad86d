"""Street furniture as vectors: lane paint, zebra crossings, cars in lanes, parked cars.

Each function takes road lines or parking polygons in the scene CRS (metres) with their
stable ``key`` and returns geometry or positions; every choice is hashed from the key and
the seed, so a feature looks the same in every window that shows it.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely

from roadnet.pipeline.scenes._textures import hash_uniform

__all__ = [
    "CAR_SIZE_M",
    "crossings",
    "dashes",
    "lane_counts",
    "markings",
    "parking_cars",
    "rectangles",
    "road_cars",
]

#: Length and width of a car in metres.
CAR_SIZE_M = (4.5, 1.8)
_EDGE_LINE_CLASSES = {"motorway", "trunk", "primary", "secondary"}


def lane_counts(frame: gpd.GeoDataFrame) -> np.ndarray:
    lanes = gpd.pd.to_numeric(frame["lanes"], errors="coerce").to_numpy(dtype=float)
    default = np.where(frame["highway"].astype(str).str.endswith("_link"), 1.0, 2.0)
    return np.where(np.isfinite(lanes) & (lanes > 0), lanes, default).clip(1, 8)


def dashes(lines: np.ndarray, *, dash: float, period: float, phase: np.ndarray) -> np.ndarray:
    """Straight dash segments of ``dash`` metres every ``period`` metres along each line."""
    lengths = shapely.length(lines)
    counts = np.maximum(np.floor((lengths - phase) / period).astype(np.int64) + 1, 0)
    idx = np.repeat(np.arange(lines.size), counts)
    if idx.size == 0:
        return np.empty(0, dtype=object)
    k = np.arange(idx.size) - np.repeat(np.cumsum(counts) - counts, counts)
    start = phase[idx] + k * period
    end = np.minimum(start + dash, lengths[idx])
    p0 = shapely.get_coordinates(shapely.line_interpolate_point(lines[idx], start))
    p1 = shapely.get_coordinates(shapely.line_interpolate_point(lines[idx], end))
    dashes: np.ndarray = shapely.linestrings(np.stack([p0, p1], axis=1))
    return dashes


def markings(roads: gpd.GeoDataFrame, seed: int) -> np.ndarray:
    """Paint lines of painted roads: lane dividers (dashed; solid centre on 4+ lanes), edges."""
    painted = roads[roads["group"].to_numpy() < 3]
    if painted.empty:
        return np.empty(0, dtype=object)
    lines = painted.geometry.to_numpy()
    width = painted["width_m"].to_numpy(dtype=float)
    lanes = lane_counts(painted)
    keys = painted["key"].to_numpy()
    out = []
    for k in range(1, int(lanes.max())):
        has = lanes > k
        offset = (k - lanes[has] / 2.0) * width[has] / lanes[has]
        moved = shapely.offset_curve(lines[has], offset)
        centre = (2 * k == lanes[has]) & (lanes[has] >= 4)
        out.append(moved[centre])
        phase = 12.0 * hash_uniform(seed, 21, keys[has][~centre], k)
        out.append(dashes(moved[~centre], dash=3.0, period=12.0, phase=phase))
    edged = painted["highway"].isin(_EDGE_LINE_CLASSES).to_numpy()
    for side in (-1.0, 1.0):
        out.append(shapely.offset_curve(lines[edged], side * (width[edged] / 2.0 - 0.4)))
    geoms = np.concatenate(out) if out else np.empty(0, dtype=object)
    kept: np.ndarray = geoms[~(shapely.is_empty(geoms) | shapely.is_missing(geoms))]
    return kept


def rectangles(centre: np.ndarray, axis: np.ndarray, length: float, width: float) -> np.ndarray:
    """Rotated rectangles (polygons) of ``length`` along unit ``axis`` around ``centre``."""
    normal = np.column_stack([-axis[:, 1], axis[:, 0]])
    a, b = axis * (length / 2.0), normal * (width / 2.0)
    ring = np.stack([centre + a + b, centre - a + b, centre - a - b, centre + a - b], axis=1)
    rects: np.ndarray = shapely.polygons(ring)
    return rects


def road_cars(
    roads: gpd.GeoDataFrame, seed: int, density: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cars along roads: centres, unit axes (x/y), keys; a hash decides every slot."""
    lines = roads.geometry.to_numpy()
    lengths = shapely.length(lines)
    slot = 9.0
    counts = np.floor(lengths / slot).astype(np.int64)
    idx = np.repeat(np.arange(lines.size), counts)
    k = np.arange(idx.size) - np.repeat(np.cumsum(counts) - counts, counts)
    keys = roads["key"].to_numpy()[idx]
    group = roads["group"].to_numpy()[idx]
    u = hash_uniform(seed, 31, keys, k)
    keep = u < density * np.array([0.0, 0.22, 0.18, 0.28], dtype=np.float32)[group]
    idx, k, keys = idx[keep], k[keep], keys[keep]
    along = (k + 0.5) * slot + (hash_uniform(seed, 32, keys, k) - 0.5) * 3.0
    p0 = shapely.get_coordinates(shapely.line_interpolate_point(lines[idx], along - 1.0))
    p1 = shapely.get_coordinates(shapely.line_interpolate_point(lines[idx], along + 1.0))
    axis = p1 - p0
    axis /= np.maximum(np.hypot(axis[:, 0], axis[:, 1]), 1e-9)[:, None]
    width = roads["width_m"].to_numpy(dtype=float)[idx]
    lanes = lane_counts(roads)[idx]
    lane = np.floor(hash_uniform(seed, 33, keys, k) * lanes)
    minor = roads["group"].to_numpy()[idx] == 3
    # minor streets: parked along either kerb; others: in the middle of a lane
    offset = np.where(
        minor,
        np.where(lane < lanes / 2, -1.0, 1.0) * (width / 2.0 - 1.2),
        (lane + 0.5 - lanes / 2.0) * width / lanes,
    )
    normal = np.column_stack([-axis[:, 1], axis[:, 0]])
    centre = (p0 + p1) / 2.0 + normal * offset[:, None]
    return centre, axis, keys * 4096 + k


def parking_cars(
    lots: np.ndarray, keys: np.ndarray, seed: int, density: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cars parked in rows inside parking polygons, aligned with each lot's long side."""
    centres, axes, car_keys, stalls = [], [], [], []
    for lot, key in zip(lots, keys, strict=True):
        rect = shapely.get_coordinates(shapely.minimum_rotated_rectangle(lot))[:4]
        edges = np.diff(np.vstack([rect, rect[:1]]), axis=0)
        long_edge = edges[np.argmax(np.hypot(edges[:, 0], edges[:, 1]))]
        along = long_edge / max(float(np.hypot(*long_edge)), 1e-9)
        across = np.array([-along[1], along[0]])
        rel = shapely.get_coordinates(lot) - rect[0]
        u = rel @ along
        v = rel @ across
        gu = np.arange(u.min() + 1.3, u.max() - 1.2, 2.6)
        gv = np.arange(v.min() + 2.6, v.max() - 2.5, 5.4)
        if gu.size == 0 or gv.size == 0:
            continue
        uu, vv = np.meshgrid(gu, gv)
        row = np.arange(gv.size)[:, None] * np.ones_like(uu)
        aisle = (row % 3) == 2
        uu, vv, row = uu[~aisle], vv[~aisle], row[~aisle]
        pts = rect[0] + uu[:, None] * along + vv[:, None] * across
        inside = shapely.contains_xy(shapely.buffer(lot, -2.0), pts[:, 0], pts[:, 1])
        pts = pts[inside]
        if pts.shape[0] == 0:
            continue
        slot = np.arange(pts.shape[0])
        half = along * 1.3
        stalls.append(
            shapely.linestrings(
                np.stack([pts - half - across * 2.4, pts - half + across * 2.4], axis=1)
            )
        )
        full = hash_uniform(seed, 41, key, slot) < 0.7 * density
        centres.append(pts[full])
        axes.append(np.repeat(across[None, :], int(full.sum()), axis=0))
        car_keys.append(key * 65536 + slot[full] + (1 << 40))
    if not centres:
        empty = np.empty((0, 2))
        return empty, empty, np.empty(0, np.int64), np.empty(0, dtype=object)
    return (
        np.concatenate(centres),
        np.concatenate(axes),
        np.concatenate(car_keys),
        np.concatenate(stalls) if stalls else np.empty(0, dtype=object),
    )


def crossings(roads: gpd.GeoDataFrame, seed: int) -> np.ndarray:
    """Zebra crossings (stripe polygons) near some ends of painted roads.

    OSM splits ways at junctions, so a way's ends are where crossings usually are: each end
    of a main or collector road longer than 30 m gets one, 8 m in, with probability 0.4.
    Stripes are 0.5 m wide, 1 m apart and 3 m long along the road, across its full width.
    """
    painted = roads[(roads["group"].to_numpy() < 3) & (shapely.length(roads.geometry) > 30.0)]
    if painted.empty:
        return np.empty(0, dtype=object)
    lines = np.repeat(painted.geometry.to_numpy(), 2)
    keys = np.repeat(painted["key"].to_numpy(), 2)
    end = np.tile([0, 1], len(painted))
    width = np.repeat(painted["width_m"].to_numpy(dtype=float), 2)
    chosen = hash_uniform(seed, 81, keys, end) < 0.4
    lines, width = lines[chosen], width[chosen]
    at = np.where(end[chosen] == 0, 8.0, shapely.length(lines) - 8.0)
    p0 = shapely.get_coordinates(shapely.line_interpolate_point(lines, at - 1.0))
    p1 = shapely.get_coordinates(shapely.line_interpolate_point(lines, at + 1.0))
    axis = p1 - p0
    axis /= np.maximum(np.hypot(axis[:, 0], axis[:, 1]), 1e-9)[:, None]
    normal = np.column_stack([-axis[:, 1], axis[:, 0]])
    counts = np.maximum(np.floor(width - 1.0).astype(np.int64) + 1, 0)
    idx = np.repeat(np.arange(lines.size), counts)
    k = np.arange(idx.size) - np.repeat(np.cumsum(counts) - counts, counts)
    offset = k - (counts[idx] - 1) / 2.0  # centred on the line, 1 m apart
    centre = (p0 + p1)[idx] / 2.0 + normal[idx] * offset[:, None]
    return rectangles(centre, axis[idx], 3.0, 0.5)
