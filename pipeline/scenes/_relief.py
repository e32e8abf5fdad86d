"""What stands above the ground: tree crowns, and the shadows of everything tall.

Both work on ``(y, x)`` float32 height fields in metres of one padded window. Trees sit on a
jittered grid of absolute cells (plus the mapped single trees), each decided by a hash of
its cell and the seed, so a tree is the same in every window whose area holds its centre.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from roadnet.pipeline.scenes._textures import hash_uniform, value_noise

if TYPE_CHECKING:
    from roadnet.pipeline.scenes._render import RenderParams, WindowLayers

__all__ = ["MAX_CROWN_M", "cast_shadow", "draw_trees", "tree_list"]

F32 = np.float32

#: Largest crown radius drawn (mapped trees: 3-5 m).
MAX_CROWN_M = 5.0
# trees per 5 m cell, by cover class (osm.COVER_CLASSES); street verges get _VERGE_TREES
_TREE_DENSITY = np.array([0.05, 0.06, 0.85, 0.0, 0.0, 0.01, 0.02, 0.12, 0.0], F32)
_VERGE_TREES = 0.35
_TREE_CELL_M = 5.0
_TREE_RADIUS_M = (2.0, 4.5)
_TREE_HEIGHT_M = (7.0, 18.0)


def _shift(a: np.ndarray, dy: int, dx: int, fill: float) -> np.ndarray:
    """``out[y, x] = a[y + dy, x + dx]``, ``fill`` where that falls outside ``a``."""
    out = np.full_like(a, fill)
    h, w = a.shape
    ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
    xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
    out[yd, xd] = a[ys, xs]
    return out


def cast_shadow(height: np.ndarray, p: RenderParams) -> np.ndarray:
    """Pixels in the shadow of taller ones, ``(y, x)`` bool, for ``(y, x)`` heights in metres.

    A pixel is shaded when some pixel s steps towards the sun is higher than it by more
    than s times the sun's slope; the maximum over s is built by doubling the reach.
    """
    dc, dr = p.shadow_dir
    drop = F32(math.tan(math.radians(p.sun_elevation_deg)) * p.gsd)
    reach = _shift(height, round(-dr), round(-dc), -np.inf) - drop
    n = 1
    while 2 * n <= max(p.shadow_px, 1):
        moved = _shift(reach, round(-dr * n), round(-dc * n), -np.inf)
        moved -= drop * n
        np.maximum(reach, moved, out=reach)
        n *= 2
    out: np.ndarray = reach > height + F32(0.25)
    return out


def tree_list(layers: WindowLayers, p: RenderParams) -> np.ndarray:
    """Trees drawn in this window: ``(n, 5)`` col, row, radius px, height m, tint."""
    h, w = layers.cover.shape
    cell = _TREE_CELL_M / p.gsd
    cy = np.arange(math.floor(layers.row0 / cell), math.floor((layers.row0 + h) / cell) + 1)
    cx = np.arange(math.floor(layers.col0 / cell), math.floor((layers.col0 + w) / cell) + 1)
    gy, gx = np.meshgrid(cy, cx, indexing="ij")
    u = [hash_uniform(p.seed, 90 + i, gy, gx) for i in range(5)]
    row = (gy + 0.1 + 0.8 * u[0]) * cell
    col = (gx + 0.1 + 0.8 * u[1]) * cell
    ri, ci = (
        np.floor(row).astype(np.int64) - layers.row0,
        np.floor(col).astype(np.int64) - layers.col0,
    )
    ok = (ri >= 0) & (ri < h) & (ci >= 0) & (ci < w)
    row, col, ri, ci = row[ok], col[ok], ri[ok], ci[ok]
    u = [v[ok] for v in u]
    cover = layers.cover[ri, ci]
    free = (layers.road[ri, ci] == 0) & (layers.building[ri, ci] == 0)
    density = np.where(layers.verge[ri, ci], _VERGE_TREES, _TREE_DENSITY[cover])
    # trees come in clumps: a smooth field over the cells scales the density
    clump = value_noise(cy * cell, cx * cell, cell=40.0 / p.gsd, seed=p.seed, salt=95)[ok]
    density = density * np.clip(F32(0.5) + F32(1.6) * clump, 0.0, 2.0)
    density[cover == 2] = _TREE_DENSITY[2]
    keep = free & (u[2] < density * p.tree_density)
    forest = cover == 2
    rmin, rmax = _TREE_RADIUS_M
    radius = np.where(forest, rmin + 0.5 * (rmax - rmin) * u[3], rmin + (rmax - rmin) * u[3])
    height = _TREE_HEIGHT_M[0] + (_TREE_HEIGHT_M[1] - _TREE_HEIGHT_M[0]) * u[4]
    tint = 0.8 + 0.45 * hash_uniform(p.seed, 96, gy[ok], gx[ok])
    procedural = np.column_stack([col, row, radius / p.gsd, height, tint])[keep]
    mapped = layers.trees
    if mapped.size:
        key = np.floor(mapped * 8).astype(np.int64)
        v = [hash_uniform(p.seed, 97 + i, key[:, 0], key[:, 1]) for i in range(3)]
        procedural = np.vstack(
            [
                procedural,
                np.column_stack(
                    [mapped, (3.0 + 2.0 * v[0]) / p.gsd, 9.0 + 9.0 * v[1], 0.8 + 0.45 * v[2]]
                ),
            ]
        )
    trees: np.ndarray = procedural.astype(np.float32)
    return trees


def draw_trees(
    layers: WindowLayers, p: RenderParams, ripple: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Canopy height (m) and tint fields, ``(y, x)`` float32, of every tree in the window."""
    h, w = layers.cover.shape
    top = np.zeros((h, w), F32)
    tint = np.ones((h, w), F32)
    for col, row, r, height, shade in tree_list(layers, p):
        ext = r * 1.3
        y0, y1 = max(0, int(row - ext) - layers.row0), min(h, int(row + ext) + 1 - layers.row0)
        x0, x1 = max(0, int(col - ext) - layers.col0), min(w, int(col + ext) + 1 - layers.col0)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = (np.arange(y0, y1, dtype=F32) + (layers.row0 + 0.5) - row) / r
        dx = (np.arange(x0, x1, dtype=F32) + (layers.col0 + 0.5) - col) / r
        dome = 1.0 + 0.3 * ripple[y0:y1, x0:x1] - dy[:, None] ** 2 - dx[None, :] ** 2
        crown = height * np.sqrt(np.clip(dome, 0.0, None))
        win = top[y0:y1, x0:x1]
        higher = crown > win
        win[higher] = crown[higher]
        tint[y0:y1, x0:x1][higher] = shade
    return top, tint
