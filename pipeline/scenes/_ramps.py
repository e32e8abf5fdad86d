"""Curved roads that the extract does not have: loops, ramps and bends through open ground.

A city-centre extract is a grid of straight streets; the model trained on it has never seen
a road bend through a field, and finds motorway ramps and cloverleaf loops only faintly
(README, "Shipped model and held-out scores"). ``ramps_per_km2`` adds such roads to the
laid-out extract before it is tiled: each a cloverleaf-like loop (a 200-300 degree arc of
20-60 m radius with straight tails) or a smooth bend (a cubic Bezier curve 120-400 m
long), classed as a link, minor road or service road so the width table sets its width.
Buildings under a new road are removed and nothing else changes; the labels and truth
vectors come from the same road lines, so they include the new roads.
"""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import shapely

from roadnet.pipeline.scenes.roads import Bounds, RoadWidths, normalize_roads

__all__ = ["RAMP_CLASSES", "add_ramps"]

#: Classes a bend is drawn as (a loop is always a ``motorway_link``), with their odds.
RAMP_CLASSES = {"motorway_link": 0.4, "tertiary_link": 0.2, "unclassified": 0.25, "service": 0.15}

#: Space kept between a new road's edge and any building left standing, metres.
_CLEARANCE_M = 2.0
#: Vertices per metre of curve.
_DENSITY = 0.5


def _loop(rng: np.random.Generator, centre: np.ndarray) -> np.ndarray:
    radius = rng.uniform(20.0, 60.0)
    start = rng.uniform(0.0, 2 * math.pi)
    sweep = math.radians(rng.uniform(200.0, 300.0)) * rng.choice([-1.0, 1.0])
    n = max(16, int(abs(sweep) * radius * _DENSITY))
    angles = start + sweep * np.linspace(0.0, 1.0, n)
    arc = centre + radius * np.column_stack([np.cos(angles), np.sin(angles)])
    # straight tails along the tangents at both ends, as a ramp joins and leaves a road
    sign = math.copysign(1.0, sweep)
    head_dir = -sign * np.array([-math.sin(angles[0]), math.cos(angles[0])])
    tail_dir = sign * np.array([-math.sin(angles[-1]), math.cos(angles[-1])])
    head = arc[0] + head_dir * rng.uniform(30.0, 150.0)
    tail = arc[-1] + tail_dir * rng.uniform(30.0, 150.0)
    return np.vstack([head, arc, tail])


def _bend(rng: np.random.Generator, start: np.ndarray) -> np.ndarray:
    length = rng.uniform(120.0, 400.0)
    heading = rng.uniform(0.0, 2 * math.pi)
    direction = np.array([math.cos(heading), math.sin(heading)])
    normal = np.array([-direction[1], direction[0]])
    end = start + length * direction
    c1 = start + length * (0.33 * direction + rng.uniform(-0.6, 0.6) * normal)
    c2 = start + length * (0.67 * direction + rng.uniform(-0.6, 0.6) * normal)
    t = np.linspace(0.0, 1.0, max(16, int(length * _DENSITY)))[:, None]
    weights = np.hstack([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3])
    return np.asarray(weights @ np.vstack([start, c1, c2, end]))


def add_ramps(
    roads: gpd.GeoDataFrame,
    buildings: gpd.GeoDataFrame,
    extent: Bounds,
    *,
    per_km2: float,
    seed: int,
    widths: RoadWidths,
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """``roads`` with ``round(per_km2 x area)`` curved roads added inside ``extent``.

    Args:
        roads: normalized road lines in a metric CRS (``highway``, ``lanes``, ``width_m``).
        buildings: building polygons in the same CRS; those under a new road are dropped.
        extent: (minx, miny, maxx, maxy) the new roads are cut to.
        per_km2: new roads per square kilometre of ``extent``; 0 returns the inputs.
        seed: the scene seed (the same seed draws the same roads).
        widths: the width table that gives each new road its width.

    Returns:
        ``(roads, buildings)``.
    """
    minx, miny, maxx, maxy = extent
    count = round(per_km2 * (maxx - minx) * (maxy - miny) / 1e6)
    if count <= 0:
        return roads, buildings
    rng = np.random.default_rng([seed, 0x52414D50])  # "RAMP"
    names, odds = list(RAMP_CLASSES), np.array(list(RAMP_CLASSES.values()))
    lines, classes = [], []
    for _ in range(count):
        anchor = np.array([rng.uniform(minx, maxx), rng.uniform(miny, maxy)])
        if rng.random() < 0.4:
            lines.append(shapely.LineString(_loop(rng, anchor)))
            classes.append("motorway_link")
        else:
            lines.append(shapely.LineString(_bend(rng, anchor)))
            classes.append(names[rng.choice(len(names), p=odds / odds.sum())])
    new = gpd.GeoDataFrame(
        {"highway": classes, "lanes": [None] * count},
        geometry=shapely.clip_by_rect(np.array(lines, dtype=object), *extent),
        crs=roads.crs,
    )
    new = new[~new.geometry.is_empty].explode(index_parts=False)
    new = new[new.geometry.length > 1.0]
    if new.empty:
        return roads, buildings
    new = normalize_roads(new, crs=roads.crs, widths=widths)
    footprint = shapely.union_all(
        shapely.buffer(new.geometry.to_numpy(), new["width_m"].to_numpy() / 2 + _CLEARANCE_M)
    )
    keep = ~shapely.intersects(buildings.geometry.to_numpy(), footprint)
    merged = gpd.GeoDataFrame(
        {
            "highway": np.concatenate([roads["highway"].to_numpy(), new["highway"].to_numpy()]),
            "lanes": np.concatenate([roads["lanes"].to_numpy(), new["lanes"].to_numpy()]),
            "width_m": np.concatenate([roads["width_m"].to_numpy(), new["width_m"].to_numpy()]),
        },
        geometry=np.concatenate([roads.geometry.to_numpy(), new.geometry.to_numpy()]),
        crs=roads.crs,
    )
    return merged, buildings.loc[keep].reset_index(drop=True)
