"""Rasterize road vectors onto a scene's grid: surface, edge and centerline labels.

Definitions, in pixels of the scene grid (``S`` is the surface mask; neighbours are the
4-connected ones):

- ``surface``: pixels whose centre lies inside a road surface polygon (road lines buffered
  to their width, see :func:`roadnet.pipeline.scenes.roads.road_surfaces`, and road polygons).
- ``edge``: the band straddling the surface boundary, ``edge_width_px`` wide: surface pixels
  within ``ceil(w / 2)`` 4-connected steps of a non-surface pixel, plus non-surface pixels
  within ``floor(w / 2)`` steps of a surface pixel. With the default ``w = 2``: every surface
  pixel with a non-surface neighbour and every non-surface pixel with a surface neighbour.
- ``centerline``: every pixel a road line passes through (GDAL ``ALL_TOUCHED``), so a line
  is an unbroken 8-connected chain of 1–2 px across; for road polygons, the skeleton
  (``skimage.morphology.skeletonize``) of the polygon's surface pixels; then dilated by
  ``centerline_dilate_px`` px on every side (a square).

Every window is computed with a margin (:func:`window_halo`), so a window's labels equal the
same pixels of the whole-grid result.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from pydantic import Field, model_validator
from rasterio.io import DatasetReader
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from rasterio.windows import transform as window_transform
from scipy import ndimage
from skimage.morphology import skeletonize

from roadnet.config import StrictModel, write_resolved_config
from roadnet.errors import InputError
from roadnet.outputs import staged_output_dir
from roadnet.pipeline.scenes._rasters import TILE, burn, tiled_profile
from roadnet.pipeline.scenes.roads import (
    LINE_TYPES,
    POLYGON_TYPES,
    RoadWidths,
    load_width_table,
    metres_per_unit,
    read_roads,
    road_surfaces,
)
from roadnet.tasks import TASKS

__all__ = [
    "LABEL_NAMES",
    "LabelsConfig",
    "SceneGrid",
    "make_labels",
    "open_raster",
    "rasterize_labels",
    "scene_grid",
    "window_halo",
    "write_labels",
]

log = logging.getLogger(__name__)

LABEL_NAMES = TASKS
#: Roads are read this far beyond the scene (more than half the widest road).
READ_MARGIN_M = 50.0

_CROSS = ndimage.generate_binary_structure(2, 1)


class LabelsConfig(StrictModel):
    """How road vectors become label rasters (defaults: ``configs/labels.yaml``)."""

    widths: str = Field(
        default="road-widths", description="Width table: a YAML path or bundled config name."
    )
    layer: str | None = Field(
        default=None, description="Layer of a multi-layer vector file (default: the first)."
    )
    edge_width_px: int = Field(default=2, ge=1, le=16, description="Width of the edge band.")
    centerline_dilate_px: int = Field(
        default=0, ge=0, le=8, description="Grow the centerline by this many px on every side."
    )
    polygon_centerlines: bool = Field(
        default=True, description="Skeletonize road polygons into centerline pixels."
    )
    cap_style: Literal["round", "flat", "square"] = Field(
        default="round", description="Buffer cap of road line ends."
    )
    halo_px: int = Field(default=32, ge=2, description="Margin computed around every window.")
    block_px: int = Field(
        default=2048, ge=TILE, multiple_of=TILE, description="Window size of the writer."
    )

    @model_validator(mode="after")
    def _halo_covers_morphology(self) -> LabelsConfig:
        need = max(math.ceil(self.edge_width_px / 2), self.centerline_dilate_px) + 1
        if self.halo_px < need:
            raise ValueError(f"halo_px must be at least {need} for these edge/centerline widths")
        return self


def _burn(geoms: np.ndarray, *, transform: Affine, shape: tuple[int, int], **options: Any) -> Any:
    """Burn an array of shapes as 1 onto a grid (see :func:`~._rasters.burn`)."""
    return burn(((g, 1) for g in geoms), shape=shape, transform=transform, **options)


def _edge(surface: np.ndarray, width_px: int) -> np.ndarray:
    """Edge band of a boolean ``(y, x)`` surface mask; see the module docstring."""
    inner, outer = math.ceil(width_px / 2), width_px // 2
    edge: np.ndarray = surface & ~ndimage.binary_erosion(
        surface, structure=_CROSS, iterations=inner, border_value=1
    )
    if outer:
        edge |= ndimage.binary_dilation(surface, structure=_CROSS, iterations=outer) & ~surface
    return edge


def window_halo(roads: gpd.GeoDataFrame, *, transform: Affine, config: LabelsConfig) -> int:
    """Margin in px to compute around a window so that it joins its neighbours seamlessly.

    ``config.halo_px`` covers the edge band and centerline dilation. Skeletonizing a road
    polygon thins it from its outline inwards, so a window cut within about the polygon's
    largest inscribed radius of it changes its skeleton: with polygon centerlines the halo
    grows to that radius plus 8 px, capped at ``config.block_px``.
    """
    polygons = roads.geometry.to_numpy()[np.isin(roads.geom_type.to_numpy(), POLYGON_TYPES)]
    if not config.polygon_centerlines or polygons.size == 0:
        return config.halo_px
    pixel = min(math.hypot(transform.a, transform.d), math.hypot(transform.b, transform.e))
    circles = shapely.maximum_inscribed_circle(polygons, tolerance=pixel)
    radius_px = float(np.max(shapely.length(circles))) / pixel
    return max(config.halo_px, min(math.ceil(radius_px) + 8, config.block_px))


def rasterize_labels(
    roads: gpd.GeoDataFrame,
    *,
    transform: Affine,
    shape: tuple[int, int],
    config: LabelsConfig,
    surfaces: gpd.GeoSeries | None = None,
    halo_px: int | None = None,
) -> dict[str, np.ndarray]:
    """Rasterize normalized roads into the labels of one window.

    Args:
        roads: output of :func:`roadnet.pipeline.scenes.roads.normalize_roads`, in the grid's CRS.
        transform: affine transform of the window's top-left pixel corner.
        shape: ``(height, width)`` of the window in pixels.
        config: label options.
        surfaces: :func:`road_surfaces` of ``roads`` (same order) if already computed.
        halo_px: margin computed around the window; default :func:`window_halo`.

    Returns:
        ``{"surface", "edge", "centerline"}``, each a ``(y, x)`` uint8 array in {0, 1},
        identical to the same pixels of a larger window that contains this one.
    """
    halo = window_halo(roads, transform=transform, config=config) if halo_px is None else halo_px
    height, width = shape
    big = (height + 2 * halo, width + 2 * halo)
    big_transform = transform @ Affine.translation(-halo, -halo)
    if surfaces is None:
        surfaces = road_surfaces(roads, cap_style=config.cap_style)
    geoms = roads.geometry.to_numpy()
    kinds = roads.geom_type.to_numpy()
    surface_geoms = surfaces.to_numpy()

    surface = _burn(surface_geoms, transform=big_transform, shape=big).astype(bool)
    edge = _edge(surface, config.edge_width_px)
    centerline = _burn(
        geoms[np.isin(kinds, LINE_TYPES)], transform=big_transform, shape=big, all_touched=True
    ).astype(bool)
    is_polygon = np.isin(kinds, POLYGON_TYPES)
    if config.polygon_centerlines and is_polygon.any():
        polygons = _burn(surface_geoms[is_polygon], transform=big_transform, shape=big)
        centerline |= skeletonize(polygons.astype(bool))
    if config.centerline_dilate_px:
        size = 2 * config.centerline_dilate_px + 1
        centerline = ndimage.binary_dilation(centerline, structure=np.ones((size, size), bool))

    core = (slice(halo, halo + height), slice(halo, halo + width))
    return {
        "surface": surface[core].astype(np.uint8),
        "edge": edge[core].astype(np.uint8),
        "centerline": centerline[core].astype(np.uint8),
    }


def write_labels(
    roads: gpd.GeoDataFrame,
    *,
    crs: Any,
    transform: Affine,
    width: int,
    height: int,
    out_dir: Path,
    config: LabelsConfig,
    block: int = 2048,
    surfaces: gpd.GeoSeries | None = None,
) -> dict[str, Path]:
    """Write the label GeoTIFFs of a whole grid, one ``block`` x ``block`` window at a time.

    Memory is bounded by the block size (plus the road vectors), never by the grid size: each
    window rasterizes only the roads an STRtree finds within its halo.

    Args:
        roads: normalized roads in ``crs``.
        crs: the grid's CRS.
        transform: the grid's affine transform.
        width: grid width in pixels.
        height: grid height in pixels.
        out_dir: existing directory to write ``surface.tif``, ``edge.tif``, ``centerline.tif``.
        config: label options.
        block: window size in pixels, a multiple of 512 (the GeoTIFF tile size).
        surfaces: :func:`road_surfaces` of ``roads`` if already computed.

    Returns:
        ``{name: path}`` of the three single-band uint8 GeoTIFFs (tiled 512, deflate).
    """
    if block % TILE:
        raise ValueError(f"block must be a multiple of {TILE}, got {block}")
    if surfaces is None:
        surfaces = road_surfaces(roads, cap_style=config.cap_style)
    tree = shapely.STRtree(surfaces.to_numpy())
    profile = tiled_profile(
        crs=crs, transform=transform, width=width, height=height, count=1, compress="deflate"
    )
    paths = {name: Path(out_dir) / f"{name}.tif" for name in LABEL_NAMES}
    labels_of = partial(
        _window_labels,
        roads=roads,
        surfaces=surfaces,
        tree=tree,
        transform=transform,
        config=config,
        halo=window_halo(roads, transform=transform, config=config),
    )
    with contextlib.ExitStack() as stack:
        dsts = {
            name: stack.enter_context(rasterio.open(p, "w", **profile)) for name, p in paths.items()
        }
        for name, dst in dsts.items():
            dst.set_band_description(1, name)
        for row in range(0, height, block):
            for col in range(0, width, block):
                window = Window(col, row, min(block, width - col), min(block, height - row))
                arrays = labels_of(window)
                if arrays is None:
                    continue  # GDAL fills never-written tiles with zeros on close
                for name, dst in dsts.items():
                    dst.write(arrays[name], 1, window=window)
            log.debug("labelled rows %d-%d of %d", row, min(row + block, height), height)
    return paths


def _window_labels(
    window: Window,
    *,
    roads: gpd.GeoDataFrame,
    surfaces: gpd.GeoSeries,
    tree: shapely.STRtree,
    transform: Affine,
    config: LabelsConfig,
    halo: int,
) -> dict[str, np.ndarray] | None:
    """:func:`rasterize_labels` of one window of the grid, from the roads within its halo.

    Args:
        window: the window, in pixels of the grid.
        roads: normalized roads of the whole grid.
        surfaces: their :func:`road_surfaces`, in the same order.
        tree: an STRtree of ``surfaces``.
        transform: the grid's affine transform.
        config: label options.
        halo: margin in px (:func:`window_halo`).

    Returns:
        The labels, or None where no road surface reaches into the window's halo.
    """
    padded = Window(
        window.col_off - halo,
        window.row_off - halo,
        window.width + 2 * halo,
        window.height + 2 * halo,
    )
    hits = tree.query(shapely.box(*window_bounds(padded, transform)), predicate="intersects")
    if hits.size == 0:
        return None
    hits.sort()
    return rasterize_labels(
        roads.iloc[hits],
        transform=window_transform(window, transform),
        shape=(int(window.height), int(window.width)),
        config=config,
        surfaces=surfaces.iloc[hits],
        halo_px=halo,
    )


@contextlib.contextmanager
def open_raster(path: Path) -> Iterator[DatasetReader]:
    """Open a raster for reading; a missing or unreadable file is an :class:`InputError`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"raster not found: {path}")
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"{path}: not a raster GDAL can read") from exc
    with src:
        yield src


class SceneGrid(StrictModel):
    """The pixel grid of a scene: CRS (WKT), affine transform, size."""

    crs: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int

    @property
    def affine(self) -> Affine:
        """The transform as an :class:`affine.Affine`."""
        return Affine(*self.transform)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the grid in its CRS."""
        return tuple(window_bounds(Window(0, 0, self.width, self.height), self.affine))


def scene_grid(path: Path) -> SceneGrid:
    """Return the grid of a scene raster.

    Raises:
        InputError: missing file, not a raster, or no CRS.
    """
    with open_raster(path) as src:
        if src.crs is None:
            raise InputError(f"{path}: raster has no CRS; labels need a georeferenced scene")
        return SceneGrid(
            crs=src.crs.to_wkt(),
            transform=tuple(src.transform)[:6],
            width=src.width,
            height=src.height,
        )


def make_labels(
    scene: Path, roads: Path, out: Path, *, config: LabelsConfig, overwrite: bool
) -> dict[str, Path]:
    """Rasterize a road vector file onto a scene's grid; write label GeoTIFFs to ``out``.

    Args:
        scene: the scene raster whose grid (CRS, transform, size) the labels follow.
        roads: road vectors (see :func:`roadnet.pipeline.scenes.roads.read_roads`), any CRS.
        out: output directory; gets ``surface.tif``, ``edge.tif``, ``centerline.tif`` and
            ``roadnet-config.yaml``.
        config: label options.
        overwrite: replace a non-empty ``out``.

    Returns:
        ``{name: path}`` of the three label GeoTIFFs.

    Raises:
        InputError: bad scene or road vectors, or no road in the scene's extent.
        OutputExistsError: ``out`` is not empty and ``overwrite`` is false.
    """
    grid = scene_grid(scene)
    widths = load_width_table(config.widths)
    with staged_output_dir(out, overwrite=overwrite) as staging:
        gdf, surfaces = _roads_near_grid(roads, grid, config=config, widths=widths, scene=scene)
        log.info("rasterizing %d roads onto a %d x %d grid", len(gdf), grid.width, grid.height)
        write_labels(
            gdf,
            crs=grid.crs,
            transform=grid.affine,
            width=grid.width,
            height=grid.height,
            out_dir=staging,
            config=config,
            block=config.block_px,
            surfaces=surfaces,
        )
        write_resolved_config(
            config,
            staging,
            extra={
                "scene": str(Path(scene).resolve()),
                "roads": str(Path(roads).resolve()),
                "roads_in_extent": len(gdf),
                "width_table": widths.model_dump(mode="json"),
            },
        )
    return {name: Path(out) / f"{name}.tif" for name in LABEL_NAMES}


def _roads_near_grid(
    roads: Path, grid: SceneGrid, *, config: LabelsConfig, widths: RoadWidths, scene: Path
) -> tuple[gpd.GeoDataFrame, gpd.GeoSeries]:
    """The roads whose surfaces reach within ``config.halo_px`` of the grid, and those surfaces.

    Raises:
        InputError: bad road vectors, or no road in the extent of ``scene``.
    """
    # read a margin beyond the scene: roads just outside it can reach in with their width
    gsd = max(abs(grid.transform[0]), abs(grid.transform[4]))
    pad = config.halo_px * gsd + READ_MARGIN_M / metres_per_unit(grid.crs)
    minx, miny, maxx, maxy = grid.bounds
    gdf = read_roads(
        roads,
        crs=grid.crs,
        widths=widths,
        bounds=(minx - pad, miny - pad, maxx + pad, maxy + pad),
        layer=config.layer,
    )
    surfaces = road_surfaces(gdf, cap_style=config.cap_style)
    if not surfaces.intersects(shapely.box(*grid.bounds)).any():
        raise InputError(f"no roads of {roads} lie in the extent of {scene}")
    # roads just outside the scene still shape its edge band and skeletons
    margin = config.halo_px * gsd
    inside = np.asarray(
        surfaces.intersects(shapely.box(minx - margin, miny - margin, maxx + margin, maxy + margin))
    )
    return gdf[inside], surfaces[inside]
