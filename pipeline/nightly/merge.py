"""The merged city road layer: every done scene's road surface, one layer, dissolved.

**Overlap rule: the newest scene wins per area.** Scenes are ordered by their time
(``acquired``: the STAC item's ``datetime``, else the file's mtime; ties by scene id); a
scene's *territory* is its footprint minus the footprints of all newer done scenes. The
merged layer is the union, over done scenes, of the scene's road polygons clipped to its
territory, dissolved into connected components (``shapely.union_all`` on a 1 mm grid, so
pieces cut along one footprint border join exactly). It does not depend on the order in which
scenes were processed.

**Only the neighbourhood of changed scenes is recomputed.** When scenes are added (or
reprocessed, or drop out by failing), let ``R`` be the union of their footprints. Components of
the current layer that do not touch ``R`` are kept as they are. Those that touch ``R`` are
cut: their parts outside ``R`` are kept (nothing there changed), and inside ``R`` every done
scene overlapping ``R`` contributes its roads clipped to its territory within ``R``; the cut
parts and the new pieces are dissolved again. This equals merging everything from scratch
(a test checks it).

The layer is ``OUTBOX/city-roads.parquet`` (GeoParquet, columns ``area_m2``, ``geometry``),
in the CRS of the config's ``crs``, else of the first merged scene; written whole, atomically.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from roadnet.pipeline.nightly._outbox import join, read_bytes, write_bytes
from roadnet.pipeline.nightly.catalog import Row

__all__ = [
    "MERGED_NAME",
    "MergeSummary",
    "merge_layer",
    "merged_path",
    "read_merged",
    "territories",
]

log = logging.getLogger(__name__)

MERGED_NAME = "city-roads.parquet"
#: Coordinates of the merged layer are snapped to this grid (CRS units, m): pieces of one road
#: cut along a footprint border by two scenes then share their border vertices exactly.
GRID = 1e-3
ROADS_LAYER = "road_surface"


@dataclass(frozen=True)
class MergeSummary:
    """What :func:`merge_layer` changed."""

    components: int
    kept: int
    rebuilt: int
    region_m2: float


def merged_path(outbox: str) -> str:
    """Where the merged layer of an outbox is."""
    return join(outbox, MERGED_NAME)


def read_merged(outbox: str) -> gpd.GeoDataFrame | None:
    """The merged layer, or None before the first merge."""
    raw = read_bytes(merged_path(outbox))
    return None if raw is None else gpd.read_parquet(io.BytesIO(raw))


def footprint(row: Row, crs: Any) -> BaseGeometry:
    """A scene's footprint (its bounds) in ``crs``, edges densified before reprojecting."""
    xmin, ymin, xmax, ymax = json.loads(row["scene_bounds"])
    box = shapely.box(xmin, ymin, xmax, ymax)
    series = gpd.GeoSeries([box], crs=row["scene_crs"])
    if series.crs != gpd.GeoSeries([], crs=crs).crs:
        step = max(xmax - xmin, ymax - ymin) / 64
        series = series.segmentize(step).to_crs(crs)
    geom: BaseGeometry = series.iloc[0]
    return geom


def _order(row: Row) -> tuple[float, str]:
    return (float(row.get("acquired") or 0.0), str(row["scene_id"]))


def territories(rows: list[Row], crs: Any) -> dict[str, BaseGeometry]:
    """Each done scene's territory in ``crs``: its footprint minus all newer footprints."""
    ordered = sorted(rows, key=_order, reverse=True)  # newest first
    prints = {r["scene_id"]: footprint(r, crs) for r in ordered}
    result: dict[str, BaseGeometry] = {}
    newer: list[BaseGeometry] = []
    for row in ordered:
        own = prints[row["scene_id"]]
        over = [g for g in newer if g.intersects(own)]
        result[row["scene_id"]] = own.difference(shapely.union_all(over)) if over else own
        newer.append(own)
    return result


def _scene_roads(row: Row, crs: Any, region: BaseGeometry) -> np.ndarray:
    """The scene's road polygons near ``region``, in ``crs``."""
    # read whole (one scene's layer is small) rather than through the GeoPackage's R-tree,
    # which needs SQLite's rtree module in the GDAL build
    roads = gpd.read_file(row["roads"], layer=ROADS_LAYER)
    if roads.crs is not None and roads.crs != gpd.GeoSeries([], crs=crs).crs:
        roads = roads.to_crs(crs)
    geoms: np.ndarray = np.asarray(roads.geometry.values, dtype=object)
    result: np.ndarray = geoms[shapely.intersects(geoms, region)] if len(geoms) else geoms
    return result


def _components(geoms: list[BaseGeometry]) -> np.ndarray:
    """Dissolve into polygons (on :data:`GRID`), in a fixed order."""
    if not geoms:
        return np.empty(0, dtype=object)
    union = shapely.union_all(np.asarray(geoms, dtype=object), grid_size=GRID)
    parts = shapely.get_parts(union)
    parts = parts[shapely.get_type_id(parts) == 3]  # polygons only (drop slivers' lines)
    parts = shapely.normalize(parts)
    bounds = shapely.bounds(parts) if len(parts) else np.empty((0, 4))
    order: np.ndarray = (
        np.lexsort((shapely.area(parts), bounds[:, 0], -bounds[:, 3]))
        if len(parts)
        else np.empty(0, dtype=np.intp)
    )
    result: np.ndarray = parts[order]
    return result


def merge_layer(
    outbox: str,
    rows: dict[str, Row],
    changed: list[str],
    *,
    crs: str | None = None,
) -> MergeSummary:
    """Update the merged layer for the ``changed`` scenes (see the module docs).

    Args:
        outbox: the outbox.
        rows: the catalog (done scenes have ``roads``, ``scene_crs``, ``scene_bounds``).
        changed: ids of scenes added, reprocessed or no longer done since the last merge.
        crs: the layer's CRS for a first merge (default: the first changed scene's).
    """
    current = read_merged(outbox)
    done = [r for r in rows.values() if r.get("status") == "done" and r.get("roads")]
    touched = [rows[k] for k in changed if rows[k].get("scene_bounds")]
    if current is not None and current.crs is not None:
        target: Any = current.crs
    else:
        target = crs or (touched[0]["scene_crs"] if touched else None)
    if target is None or not touched:
        return MergeSummary(len(current) if current is not None else 0, 0, 0, 0.0)
    region = shapely.union_all([footprint(r, target) for r in touched])
    old = (
        np.asarray(current.geometry.values, dtype=object)
        if current is not None
        else np.empty(0, dtype=object)
    )
    hits = shapely.intersects(old, region) if len(old) else np.zeros(0, bool)
    kept = old[~hits]
    pieces: list[BaseGeometry] = [
        g for g in shapely.difference(old[hits], region) if not g.is_empty
    ]
    near = [r for r in done if footprint(r, target).intersects(region)]
    for scene_id, territory in territories(done, target).items():
        if not any(r["scene_id"] == scene_id for r in near):
            continue
        clip = territory.intersection(region)
        if clip.is_empty:
            continue
        roads = _scene_roads(rows[scene_id], target, clip)
        if len(roads):
            cut = shapely.intersection(roads, clip)
            pieces.extend(g for g in cut if not g.is_empty)
    rebuilt = _components(pieces)
    geoms = np.concatenate([kept, rebuilt]) if len(kept) else rebuilt
    layer = gpd.GeoDataFrame(
        {"area_m2": shapely.area(geoms)}, geometry=gpd.GeoSeries(geoms), crs=target
    )
    buffer = io.BytesIO()
    layer.to_parquet(buffer, index=False)
    write_bytes(merged_path(outbox), buffer.getvalue())
    log.info(
        "merged layer: %d components (%d kept, %d rebuilt near %d scene(s))",
        len(geoms),
        len(kept),
        len(rebuilt),
        len(touched),
    )
    return MergeSummary(len(geoms), len(kept), len(rebuilt), float(region.area))
