"""Coordinate-hashed noise: every value is a pure function of absolute pixel position and seed.

Nothing here depends on which window is being rendered, so a scene comes out identical
whatever the window size. Rows and columns are absolute scene pixel indices (int64 1-D
arrays); outputs are ``(y, x)`` float32 arrays.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "fbm",
    "hash_u32",
    "hash_uniform",
    "upsampled",
    "value_noise",
    "white_noise",
]

_M1 = np.uint32(0x7FEB352D)
_M2 = np.uint32(0x846CA68B)
_GOLD = np.uint32(0x9E3779B9)
_INV = np.float32(1.0 / 4294967296.0)


def _mix(x: np.ndarray) -> np.ndarray:
    """Avalanche a uint32 array (the 'lowbias32' integer hash), in place where possible."""
    x = x ^ (x >> np.uint32(16))
    x *= _M1
    x ^= x >> np.uint32(15)
    x *= _M2
    x ^= x >> np.uint32(16)
    return x


def hash_u32(*keys: np.ndarray | int) -> np.ndarray:
    """Hash integer keys (broadcast together) to uniformly spread uint32 values."""
    h: np.ndarray = np.full(1, 0x2545F491, dtype=np.uint32)
    for key in keys:
        k = (np.atleast_1d(np.asarray(key, dtype=np.int64)) & 0xFFFFFFFF).astype(np.uint32)
        h = _mix(h ^ (k * _GOLD + np.uint32(0x6A09E667)))
    return h


def hash_uniform(*keys: np.ndarray | int) -> np.ndarray:
    """Hash integer keys to float32 values in [0, 1)."""
    return hash_u32(*keys).astype(np.float32) * _INV


def white_noise(rows: np.ndarray, cols: np.ndarray, *, seed: int, salt: int) -> np.ndarray:
    """Independent per-pixel noise in [-1, 1), ``(y, x)`` float32 for ``rows`` x ``cols``."""
    row_key = hash_u32(seed, salt, rows)[:, None]
    col_key = ((cols.astype(np.int64) & 0xFFFFFFFF).astype(np.uint32) * _GOLD)[None, :]
    h = _mix(row_key ^ col_key)
    out = h.astype(np.float32)
    out *= np.float32(2.0) * _INV
    out -= np.float32(1.0)
    return out


def _axis_weights(coords: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Lattice index (relative to the first one), smoothstep weight, first lattice index."""
    pos = coords.astype(np.float64) / cell
    base = np.floor(pos)
    t = (pos - base).astype(np.float32)
    t = t * t * (np.float32(3.0) - np.float32(2.0) * t)
    first = int(base[0])
    return (base - first).astype(np.intp), t, first


def value_noise(
    rows: np.ndarray, cols: np.ndarray, *, cell: float, seed: int, salt: int
) -> np.ndarray:
    """Smooth lattice noise with feature size ``cell`` pixels, ``(y, x)`` float32 in [-1, 1].

    Lattice values are hashed from their absolute lattice indices, interpolated with a
    smoothstep, first along x (on the few lattice rows), then along y.
    """
    iy, ty, y0 = _axis_weights(rows, cell)
    ix, tx, x0 = _axis_weights(cols, cell)
    lat_rows = np.arange(y0, y0 + int(iy[-1]) + 2, dtype=np.int64)
    lat_cols = np.arange(x0, x0 + int(ix[-1]) + 2, dtype=np.int64)
    lattice = hash_uniform(seed, salt, lat_rows[:, None], lat_cols[None, :]) * 2.0 - 1.0
    along_x = lattice[:, ix] * (1.0 - tx) + lattice[:, ix + 1] * tx
    ty2 = ty[:, None]
    out = along_x[iy] * (np.float32(1.0) - ty2)
    out += along_x[iy + 1] * ty2
    result: np.ndarray = out.astype(np.float32, copy=False)
    return result


def fbm(
    rows: np.ndarray,
    cols: np.ndarray,
    *,
    cell: float,
    seed: int,
    salt: int,
    octaves: int = 4,
    gain: float = 0.5,
    step: int = 1,
) -> np.ndarray:
    """Fractal sum of :func:`value_noise` octaves (cell halves each octave), about [-1, 1].

    With ``step`` > 1 the sum is sampled every ``step`` absolute pixels and interpolated
    (:func:`upsampled`): for smooth fields (``cell / 2**(octaves - 1)`` well above ``step``)
    that costs about one octave instead of ``octaves``.
    """
    if step > 1:
        return upsampled(
            lambda r, c: fbm(r, c, cell=cell, seed=seed, salt=salt, octaves=octaves, gain=gain),
            rows,
            cols,
            step=step,
        )
    total = np.zeros((rows.size, cols.size), dtype=np.float32)
    amp, norm = 1.0, 0.0
    for octave in range(octaves):
        size = cell / 2**octave
        if size < 1.0:
            break
        total += np.float32(amp) * value_noise(rows, cols, cell=size, seed=seed, salt=salt + octave)
        norm += amp
        amp *= gain
    total /= np.float32(max(norm, 1e-6))
    return total


def upsampled(
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    rows: np.ndarray,
    cols: np.ndarray,
    *,
    step: int,
) -> np.ndarray:
    """Evaluate ``fn(rows, cols) -> (y, x, ...)`` every ``step`` pixels, interpolate linearly.

    The samples sit on absolute multiples of ``step``, so the result still depends only on
    pixel position, at about ``1 / step**2`` of the cost of ``fn``.
    """
    ry0, ry1 = int(rows[0]) // step, int(rows[-1]) // step + 1
    rx0, rx1 = int(cols[0]) // step, int(cols[-1]) // step + 1
    coarse = fn(
        np.arange(ry0, ry1 + 1, dtype=np.int64) * step,
        np.arange(rx0, rx1 + 1, dtype=np.int64) * step,
    )
    py = (rows.astype(np.int64) - ry0 * step).astype(np.float64) / step
    px = (cols.astype(np.int64) - rx0 * step).astype(np.float64) / step
    iy = np.floor(py).astype(np.intp)
    ix = np.floor(px).astype(np.intp)
    extra = (1,) * (coarse.ndim - 2)
    ty = (py - iy).astype(np.float32).reshape(-1, 1, *extra)
    tx = (px - ix).astype(np.float32).reshape(-1, *extra)
    along_x = coarse[:, ix] * (1.0 - tx) + coarse[:, ix + 1] * tx
    out: np.ndarray = along_x[iy] * (np.float32(1.0) - ty)
    out += along_x[iy + 1] * ty
    return out
