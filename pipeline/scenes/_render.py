"""Draw one padded window of a synthetic orthophoto: rasters in, RGB ``(y, x, 3)`` uint8 out.

Pure numpy/scipy. Every random choice is hashed from absolute pixel or feature positions
with the seed, and every neighbourhood operation (cast shadows, tree crowns, blur) reaches
less far than the halo, so a pixel's value does not depend on the window it was drawn in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from roadnet.pipeline.scenes._relief import MAX_CROWN_M, cast_shadow, draw_trees
from roadnet.pipeline.scenes._streets import CAR_SIZE_M
from roadnet.pipeline.scenes._textures import (
    fbm,
    hash_u32,
    hash_uniform,
    upsampled,
    value_noise,
    white_noise,
)

__all__ = [
    "ROAD_PALETTES",
    "ROOF_PALETTES",
    "SEASONS",
    "RenderParams",
    "WindowLayers",
    "halo_px",
    "jpeg_roundtrip",
    "render_window",
]

F32 = np.float32

# Land cover (order of osm.COVER_CLASSES): two colours mixed by a large-scale noise field,
# the mix offset, and the amplitudes of medium-scale and per-pixel texture.
_COVER_A = np.array(
    [
        [0.36, 0.40, 0.25],  # ground: grass
        [0.27, 0.38, 0.18],  # grass
        [0.11, 0.17, 0.09],  # forest floor
        [0.33, 0.37, 0.20],  # farmland: crop
        [0.09, 0.14, 0.16],  # water
        [0.56, 0.55, 0.52],  # paved: concrete
        [0.45, 0.38, 0.29],  # soil
        [0.30, 0.38, 0.21],  # residential: lawn
        [0.33, 0.33, 0.34],  # parking: asphalt
    ],
    F32,
)
_COVER_B = np.array(
    [
        [0.47, 0.42, 0.33],  # ground: bare soil / gravel
        [0.45, 0.45, 0.30],  # grass: dry
        [0.16, 0.22, 0.11],
        [0.47, 0.40, 0.30],  # farmland: tilled soil
        [0.11, 0.17, 0.19],
        [0.34, 0.34, 0.35],  # paved: asphalt yard
        [0.38, 0.32, 0.25],
        [0.52, 0.51, 0.48],  # residential: paved yard
        [0.41, 0.41, 0.41],  # parking: faded asphalt
    ],
    F32,
)
_COVER_OFFSET = np.array([0.0, -0.2, 0.0, 0.0, 0.0, -0.1, 0.0, -0.15, -0.2], F32)
_COVER_MID = np.array([0.12, 0.12, 0.25, 0.08, 0.03, 0.05, 0.10, 0.12, 0.05], F32)
_COVER_GRAIN = np.array([0.07, 0.07, 0.10, 0.05, 0.02, 0.04, 0.06, 0.07, 0.04], F32)
_ROOFS = np.array(
    [
        [0.30, 0.30, 0.31],
        [0.42, 0.24, 0.19],
        [0.52, 0.51, 0.49],
        [0.20, 0.20, 0.21],
        [0.36, 0.45, 0.41],
        [0.62, 0.61, 0.58],
        [0.36, 0.30, 0.27],
        [0.45, 0.45, 0.46],
    ],
    F32,
)
_CARS = np.array(
    [
        [0.85, 0.85, 0.85],
        [0.08, 0.08, 0.09],
        [0.60, 0.61, 0.63],
        [0.35, 0.36, 0.38],
        [0.12, 0.18, 0.35],
        [0.55, 0.10, 0.09],
        [0.90, 0.90, 0.88],
        [0.20, 0.22, 0.22],
    ],
    F32,
)
#: Roof colours per palette ("mixed" is every roof colour of a European city centre).
ROOF_PALETTES: dict[str, np.ndarray] = {
    "mixed": _ROOFS,
    "red_tiles": np.array(
        [[0.55, 0.25, 0.17], [0.62, 0.31, 0.21], [0.48, 0.22, 0.16], [0.66, 0.38, 0.27]], F32
    ),
    "grey": np.array(
        [[0.42, 0.42, 0.43], [0.50, 0.50, 0.50], [0.36, 0.37, 0.38], [0.56, 0.55, 0.54]], F32
    ),
    "dark": np.array(
        [[0.14, 0.14, 0.15], [0.20, 0.20, 0.21], [0.11, 0.12, 0.13], [0.24, 0.22, 0.21]], F32
    ),
    "bright": np.array(
        [[0.80, 0.80, 0.78], [0.72, 0.73, 0.72], [0.86, 0.85, 0.82], [0.68, 0.66, 0.62]], F32
    ),
}


@dataclass(frozen=True)
class _RoadLook:
    """A road surface material: grey ``tone = base + spread * (tone - 0.31)``, tint, texture."""

    base: float
    spread: float
    tint: tuple[float, float, float]
    texture: float  # multiplier of the wear / grain amplitudes
    joints_m: float = 0.0  # concrete slab joints every this many metres (0: none)


#: Road surface palettes. "mixed" is asphalt whose grey varies by class, some streets old.
ROAD_PALETTES: dict[str, _RoadLook | None] = {
    "mixed": None,
    "dark_asphalt": _RoadLook(0.17, 0.5, (0.95, 1.0, 1.10), 1.0),
    "pale_asphalt": _RoadLook(0.50, 0.6, (1.0, 1.0, 1.01), 1.0),
    "concrete": _RoadLook(0.62, 0.4, (1.03, 1.0, 0.95), 0.7, joints_m=5.0),
    "cobbles": _RoadLook(0.40, 0.4, (1.06, 1.0, 0.92), 3.0),
    "unpaved": _RoadLook(0.46, 0.4, (1.18, 1.0, 0.74), 2.5),
}
#: Vegetation seasons.
SEASONS = ("green", "dry", "leafless")
# per season: (target colour of vegetated land cover, how far it moves there, leaf colour)
_VEGETATED = np.array([0, 1, 2, 3, 7])
_SEASON_LOOK = {
    "dry": (np.array([0.54, 0.48, 0.32], F32), 0.65, np.array([0.22, 0.21, 0.10], F32)),
    "leafless": (np.array([0.41, 0.38, 0.32], F32), 0.75, np.array([0.27, 0.24, 0.21], F32)),
}
_LEAF = np.array([0.13, 0.21, 0.09], F32)
_HAZE = np.array([0.80, 0.82, 0.86], F32)
_SIDEWALK = np.array([[0.0, 0.0, 0.0], [0.58, 0.57, 0.54], [0.40, 0.40, 0.40]], F32)
_PAINT = np.array([0.86, 0.86, 0.82], F32)
_SHADE = np.array([0.40, 0.45, 0.58], F32)
_CAR_HEIGHT_M = 1.5
_FRAME_M = 900.0


@dataclass(frozen=True)
class RenderParams:
    """Look of a scene: pixel size, seed, sun, densities and sensor."""

    gsd: float
    seed: int
    sun_azimuth_deg: float = 160.0
    sun_elevation_deg: float = 40.0
    tree_density: float = 1.0
    noise_dn: float = 2.5
    blur_px: float = 0.6
    max_height_m: float = 30.0
    road_palette: str = "mixed"
    roof_palette: str = "mixed"
    cover_hue_deg: float = 0.0
    cover_saturation: float = 1.0
    cover_brightness: float = 1.0
    season: str = "green"
    haze: float = 0.0
    cast_warmth: float = 0.0
    cast_tint: float = 0.0

    @property
    def shadow_dir(self) -> tuple[float, float]:
        """Unit (d_col, d_row) pointing from an object along its shadow."""
        az = math.radians(self.sun_azimuth_deg)
        return -math.sin(az), math.cos(az)

    @property
    def shadow_px(self) -> int:
        """Longest cast shadow in pixels."""
        length = self.max_height_m / math.tan(math.radians(self.sun_elevation_deg))
        return math.ceil(length / self.gsd)


def halo_px(params: RenderParams) -> int:
    """Margin a window needs so shadows, crowns and blur do not depend on the window."""
    reach = params.shadow_px + math.ceil(MAX_CROWN_M * 1.4 / params.gsd)
    return reach + math.ceil(4 * params.blur_px) + 4


@dataclass(frozen=True)
class WindowLayers:
    """Rasters of one padded window (all ``(y, x)``) and per-feature lookup tables.

    Id rasters (``road``, ``building``, ``car``) index the tables, whose row 0 is "none".
    Positions (``*_centre``, ``trees``) are absolute scene pixels (col, row); axes are unit
    (col, row) vectors.
    """

    row0: int
    col0: int
    cover: np.ndarray  # uint8 index of osm.COVER_CLASSES
    road: np.ndarray  # int32
    road_tone: np.ndarray  # (n+1,) float32 asphalt grey
    road_group: np.ndarray  # (n+1,) uint8
    sidewalk: np.ndarray  # uint8: 0 none, 1 concrete, 2 asphalt
    verge: np.ndarray  # bool, street tree strip
    paint: np.ndarray  # uint8: 0 none, 1 thin line (sub-pixel), 2 area (zebra stripes)
    building: np.ndarray  # int32
    building_height: np.ndarray  # (n+1,) float32 metres
    building_roof: np.ndarray  # (n+1,) uint32 hash
    building_pitched: np.ndarray  # (n+1,) bool
    building_axis: np.ndarray  # (n+1, 2) float32
    building_centre: np.ndarray  # (n+1, 2) float32
    car: np.ndarray  # int32
    car_kind: np.ndarray  # (n+1,) uint32 hash
    car_centre: np.ndarray  # (n+1, 2) float32
    car_axis: np.ndarray  # (n+1, 2) float32
    trees: np.ndarray  # (m, 2) float32 mapped single trees


def _chroma_matrix(degrees: float, saturation: float) -> np.ndarray:
    """``(3, 3)`` RGB->RGB matrix: rotate chroma by ``degrees`` and scale it (YIQ space)."""
    to_yiq = np.array(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float64
    )
    t = math.radians(degrees)
    rot = np.array(
        [[1.0, 0.0, 0.0], [0.0, math.cos(t), -math.sin(t)], [0.0, math.sin(t), math.cos(t)]]
    )
    rot[1:, 1:] *= saturation
    return np.asarray(np.linalg.inv(to_yiq) @ rot @ to_yiq, dtype=F32)


def _cover_palette(p: RenderParams) -> tuple[np.ndarray, np.ndarray]:
    """The two land-cover colour tables of a scene: season, hue, saturation, brightness."""
    a, b = _COVER_A.copy(), _COVER_B.copy()
    if p.season in _SEASON_LOOK:
        target, amount, _ = _SEASON_LOOK[p.season]
        for table in (a, b):
            table[_VEGETATED] += (target - table[_VEGETATED]) * F32(amount)
            table[2] *= F32(0.6)  # forest floor stays darker
    if p.cover_hue_deg or p.cover_saturation != 1.0:
        m = _chroma_matrix(p.cover_hue_deg, p.cover_saturation)
        a, b = a @ m.T, b @ m.T
    if p.cover_brightness != 1.0:
        a, b = a * F32(p.cover_brightness), b * F32(p.cover_brightness)
    return np.clip(a, 0.0, 1.0).astype(F32), np.clip(b, 0.0, 1.0).astype(F32)


def _road_tone(
    tone: np.ndarray,
    at: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    lo: np.ndarray,
    m: np.ndarray,
    g: np.ndarray,
    p: RenderParams,
) -> np.ndarray:
    """``(n, 3)`` colours of road pixels ``at`` (flat indices of the inner region)."""
    look = ROAD_PALETTES[p.road_palette]
    if look is None:
        shade = tone * (F32(1.0) + F32(0.10) * lo + F32(0.08) * m + F32(0.05) * g)
        shade[(np.abs(m) < 0.015) & (lo > 0.05)] *= F32(0.72)  # cracks
        out: np.ndarray = shade[:, None] * np.array([0.99, 1.0, 1.03], F32)
        return out
    k = F32(look.texture)
    shade = (F32(look.base) + F32(look.spread) * (tone - F32(0.31))) * (
        F32(1.0) + k * (F32(0.10) * lo + F32(0.08) * m + F32(0.05) * g)
    )
    if look.joints_m:
        cell = look.joints_m / p.gsd
        r = np.take(rows, at // cols.size).astype(np.float64)
        c = np.take(cols, at % cols.size).astype(np.float64)
        joint = (np.mod(r, cell) < 1.0) | (np.mod(c, cell) < 1.0)
        shade[joint] *= F32(0.8)
    else:
        shade[(np.abs(m) < 0.015) & (lo > 0.05)] *= F32(0.78)  # cracks, potholes
    out = np.clip(shade, 0.0, 1.0)[:, None] * np.array(look.tint, F32)
    return out


def jpeg_roundtrip(rgb: np.ndarray, *, quality: int) -> np.ndarray:
    """Compress and decompress ``(y, x, 3)`` uint8 with JPEG at ``quality`` (1-100)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as img:
        out: np.ndarray = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return out


def _roof_edges(ids: np.ndarray) -> np.ndarray:
    """Building pixels with a 4-neighbour of another id, ``(y, x)`` bool."""
    edge = np.zeros(ids.shape, bool)
    dy = ids[1:] != ids[:-1]
    dx = ids[:, 1:] != ids[:, :-1]
    edge[1:] |= dy
    edge[:-1] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    return edge & (ids > 0)


def _local(
    ids: np.ndarray,
    sel: tuple[np.ndarray, ...],
    rows: np.ndarray,
    cols: np.ndarray,
    centre: np.ndarray,
    axis: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Along/across-axis offsets (px) of selected pixels from their feature's centre."""
    r = np.take(rows + F32(0.5), sel[0]) - np.take(centre[:, 1], ids)
    c = np.take(cols + F32(0.5), sel[1]) - np.take(centre[:, 0], ids)
    ax, ay = np.take(axis[:, 0], ids), np.take(axis[:, 1], ids)
    return c * ax + r * ay, -c * ay + r * ax


def _ground(
    lay: WindowLayers,
    inner: tuple[slice, slice],
    rows: np.ndarray,
    cols: np.ndarray,
    low: np.ndarray,
    mid: np.ndarray,
    grain: np.ndarray,
    p: RenderParams,
) -> np.ndarray:
    """Land cover, sidewalks, roads and paint of the inner region, ``(y, x, 3)`` float32."""
    cover = lay.cover[inner]
    cover_a, cover_b = _cover_palette(p)
    # np.take: several times faster than fancy indexing for these lookups
    mix = np.clip(low * F32(4.0) + F32(0.5) + np.take(_COVER_OFFSET, cover), 0.0, 1.0)
    rgb = np.take(cover_a, cover, axis=0)
    rgb += np.take(cover_b - cover_a, cover, axis=0) * mix[..., None]
    texture = np.take(_COVER_MID, cover) * mid
    texture += np.take(_COVER_GRAIN, cover) * grain
    texture += F32(1.0)
    rgb *= texture[..., None]

    # the sparse layers below work on flat pixel indices (np.take flattens; cheap)
    flat_rgb = rgb.reshape(-1, 3)
    road = lay.road[inner]
    walk = lay.sidewalk[inner]
    at = np.flatnonzero((walk > 0) & (road == 0))
    flat_rgb[at] = (
        np.take(_SIDEWALK, np.take(walk, at), axis=0)
        * (F32(1.0) + F32(0.05) * np.take(mid, at) + F32(0.04) * np.take(grain, at))[:, None]
    )

    at = np.flatnonzero(road)
    m, lo = np.take(mid, at), np.take(low, at)
    tone = np.take(lay.road_tone, np.take(road, at))
    flat_rgb[at] = _road_tone(tone, at, rows, cols, lo, m, np.take(grain, at), p)

    paint = lay.paint[inner]
    at = np.flatnonzero(paint)
    cover = np.where(np.take(paint, at) == 2, F32(1.0), F32(min(1.0, 0.15 / p.gsd)))
    alpha = (cover * np.clip(0.8 + 0.8 * np.take(mid, at), 0.15, 1.0))[:, None]
    flat_rgb[at] = flat_rgb[at] * (F32(1.0) - alpha) + _PAINT * alpha
    out: np.ndarray = rgb
    return out


def _objects(
    lay: WindowLayers,
    inner: tuple[slice, slice],
    rgb: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    mid: np.ndarray,
    grain: np.ndarray,
    p: RenderParams,
) -> None:
    """Draw cars and roofs over ``rgb`` (the inner region), in place."""
    car = lay.car[inner]
    sel = np.nonzero(car)
    ids = car[sel]
    u, v = _local(ids, sel, rows, cols, lay.car_centre, lay.car_axis)
    u /= F32(CAR_SIZE_M[0] / 2 / p.gsd)
    v /= F32(CAR_SIZE_M[1] / 2 / p.gsd)
    kind = np.take(lay.car_kind, ids) % len(_CARS)
    body = np.take(_CARS, kind, axis=0) * (F32(1.0) - F32(0.3) * np.abs(v) ** 3)[:, None]
    glass = (np.abs(v) < 0.8) & (((u > 0.05) & (u < 0.45)) | ((u < -0.5) & (u > -0.8)))
    body[glass] = np.array([0.07, 0.08, 0.09], F32)
    rgb[sel] = body

    bld = lay.building[inner]
    sel = np.nonzero(bld)
    ids = bld[sel]
    roofs = ROOF_PALETTES[p.roof_palette]
    roof = np.take(roofs, np.take(lay.building_roof, ids) % len(roofs), axis=0)
    colour = roof * (F32(1.0) + F32(0.05) * mid[sel] + F32(0.04) * grain[sel])[:, None]
    _, across = _local(ids, sel, rows, cols, lay.building_centre, lay.building_axis)
    dc, dr = p.shadow_dir
    # horizontal roof normal . direction towards the sun, per building
    facing = lay.building_axis[:, 1] * F32(dc) - lay.building_axis[:, 0] * F32(dr)
    pitched = np.take(lay.building_pitched, ids)
    light = np.where(
        pitched, F32(1.0) + F32(0.22) * np.sign(across) * np.take(facing, ids), F32(1.0)
    )
    light[pitched & (np.abs(across) < 0.6)] = F32(1.12)  # ridge
    # plant boxes on flat roofs: one in some cells of a 4 m grid, decided per cell
    box = max(4.0 / p.gsd, 2.0)
    cy, cx = np.floor(rows / box), np.floor(cols / box)
    in_y, in_x = np.abs(rows / box - cy - 0.5) < 0.22, np.abs(cols / box - cx - 0.5) < 0.22
    cells = hash_uniform(
        p.seed, 63, np.unique(cy).astype(np.int64)[:, None], np.unique(cx).astype(np.int64)
    )
    iy, ix = (cy - cy[0]).astype(np.intp), (cx - cx[0]).astype(np.intp)
    vent = ~pitched & np.take(in_y, sel[0]) & np.take(in_x, sel[1])
    vent[vent] = cells[np.take(iy, sel[0][vent]), np.take(ix, sel[1][vent])] < 0.03
    colour[vent] = np.array([0.66, 0.66, 0.64], F32)
    light = np.where(_roof_edges(bld)[sel], light * F32(0.72), light)
    rgb[sel] = colour * light[:, None]


def _expose(rgb: np.ndarray, rows: np.ndarray, cols: np.ndarray, p: RenderParams) -> None:
    """Apply the survey camera to ``rgb`` ``(y, x, 3)`` in place.

    The scene is a mosaic of frames ``_FRAME_M`` wide, each with its own exposure and colour
    balance (seams between frames) and a vignette, under a slow brightness drift. The smooth
    part is computed every 8 px and interpolated, which feathers the vignette at the seams.
    """
    frame = _FRAME_M / p.gsd
    off = hash_uniform(p.seed, 6, np.arange(2)).astype(np.float64) * frame

    def smooth(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        drift = fbm(r, c, cell=600.0 / p.gsd, seed=p.seed, salt=5, octaves=3)
        tr = ((r + off[0]) / frame % 1.0 - 0.5).astype(F32)
        tc = ((c + off[1]) / frame % 1.0 - 0.5).astype(F32)
        vignette = F32(1.0) - F32(0.18) * (tr[:, None] ** 2 + tc[None, :] ** 2)
        out: np.ndarray = vignette * (F32(1.0) + F32(0.08) * drift)
        return out

    rgb *= upsampled(smooth, rows, cols, step=8)[..., None]
    fr = np.floor((rows + off[0]) / frame).astype(np.int64)
    fc = np.floor((cols + off[1]) / frame).astype(np.int64)
    row_starts = np.flatnonzero(np.diff(fr, prepend=fr[0] - 1))
    col_starts = np.flatnonzero(np.diff(fc, prepend=fc[0] - 1))
    for i, r0 in enumerate(row_starts):
        r1 = row_starts[i + 1] if i + 1 < row_starts.size else rows.size
        for j, c0 in enumerate(col_starts):
            c1 = col_starts[j + 1] if j + 1 < col_starts.size else cols.size
            balance = hash_uniform(p.seed, 7, fr[r0], fc[c0], np.arange(3))
            rgb[r0:r1, c0:c1] *= F32(0.965) + F32(0.07) * balance


def _atmosphere(rgb: np.ndarray, p: RenderParams) -> None:
    """Colour cast (warm/cool, green/magenta gains) and haze over ``rgb`` in place."""
    if p.cast_warmth or p.cast_tint:
        w, t = p.cast_warmth, p.cast_tint
        rgb *= np.array([(1.0 + w) * (1.0 - t / 2), 1.0 + t, (1.0 - w) * (1.0 - t / 2)], F32)
    if p.haze:
        rgb *= F32(1.0 - p.haze)
        rgb += _HAZE * F32(p.haze)


def render_window(layers: WindowLayers, *, params: RenderParams, crop: int) -> np.ndarray:
    """Render a padded window and return its core, ``(y, x, 3)`` uint8.

    Args:
        layers: rasters of the padded window.
        params: the scene's look.
        crop: the halo in pixels, cut from every side of the result.
    """
    p = params
    h, w = layers.cover.shape
    rows = np.arange(layers.row0, layers.row0 + h, dtype=np.int64)
    cols = np.arange(layers.col0, layers.col0 + w, dtype=np.int64)
    margin = min(crop, math.ceil(3 * p.blur_px) + 1)
    inner = (slice(crop - margin, h - crop + margin), slice(crop - margin, w - crop + margin))
    ri, ci = rows[inner[0]], cols[inner[1]]

    ripple = fbm(rows, cols, cell=6.0 / p.gsd, seed=p.seed, salt=2, octaves=2)
    mid = np.ascontiguousarray(ripple[inner])
    low = fbm(ri, ci, cell=80.0 / p.gsd, seed=p.seed, salt=1, octaves=4, step=4)
    grain = white_noise(ri, ci, seed=p.seed, salt=3)
    # clumps ~0.7 m across (at least 1.5 px): leaves, tufts of grass
    fine = value_noise(ri, ci, cell=max(1.5, 0.7 / p.gsd), seed=p.seed, salt=9)

    rgb = _ground(layers, inner, ri, ci, low, mid, grain + F32(0.8) * fine, p)
    _objects(layers, inner, rgb, ri.astype(F32), ci.astype(F32), mid, grain, p)

    canopy, tint = draw_trees(layers, p, ripple)
    leaf = _LEAF
    if p.season in _SEASON_LOOK:
        leaf = _SEASON_LOOK[p.season][2]
    if p.season == "leafless":
        # bare crowns: branches over about half the crown, the ground shows through the rest
        twigs = value_noise(rows, cols, cell=max(1.5, 0.5 / p.gsd), seed=p.seed, salt=10)
        canopy = np.where(twigs > -0.1, canopy * F32(0.6), F32(0.0))
    sel = np.nonzero(canopy[inner] > 0.3)
    gy, gx = np.gradient(canopy)
    dc, dr = p.shadow_dir
    slope = (gx[inner][sel] * F32(dc) + gy[inner][sel] * F32(dr)) / F32(p.gsd * 3.0)
    light = F32(1.0) + np.clip(slope, -0.45, 0.45) + F32(0.3) * fine[sel] + F32(0.12) * grain[sel]
    rgb[sel] = leaf * (tint[inner][sel] * light)[:, None]

    heights = np.minimum(np.take(layers.building_height, layers.building), F32(p.max_height_m))
    np.maximum(heights, canopy, out=heights)
    cars = layers.car > 0
    heights[cars] = np.maximum(heights[cars], F32(_CAR_HEIGHT_M))
    shade = np.flatnonzero(cast_shadow(heights, p)[inner])
    flat_rgb = rgb.reshape(-1, 3)
    flat_rgb[shade] *= _SHADE

    _expose(rgb, ri, ci, p)
    _atmosphere(rgb, p)
    if p.blur_px > 0:
        rgb = ndimage.gaussian_filter(rgb, sigma=(p.blur_px, p.blur_px, 0), truncate=3.0)
    core = rgb[margin : rgb.shape[0] - margin, margin : rgb.shape[1] - margin]
    rc, cc = ri[margin : ri.size - margin], ci[margin : ci.size - margin]
    noise = hash_u32(p.seed, 4, rc[:, None], cc[None, :])
    out = core * F32(255.0)
    for b in range(3):
        bits = ((noise >> np.uint32(10 * b)) & np.uint32(1023)).astype(F32)
        out[..., b] += (bits * F32(1.0 / 1023.0) - F32(0.5)) * F32(p.noise_dn * math.sqrt(12.0))
    np.clip(out + F32(0.5), 0.0, 255.0, out=out)
    image: np.ndarray = out.astype(np.uint8)
    return image
