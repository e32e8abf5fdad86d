"""Road-surface polygons: the per-chunk kernel and the finishing in map coordinates.

Everything here is plain numpy and shapely 2; the dask graph that runs these kernels over a
scene and dissolves their pieces across chunk borders lives in
:mod:`roadnet.pipeline.vectorize.dissolve`.

Polygons are made in *pixel* coordinates (x = column, y = row, the scene's upper-left pixel
corner at (0, 0)): ``rasterio.features.shapes`` then yields integer vertices, so the pieces of
one road in neighbouring chunks share their border edges exactly and re-unioning them is exact.
The scene transform is applied once, at the end, by :func:`finish_polygons`.
"""

from __future__ import annotations

import contextlib
import enum
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import shapely
from affine import Affine
from numpy.typing import NDArray
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import shapes, sieve

from roadnet.errors import InputError

__all__ = [
    "NODATA_CODE",
    "Finishing",
    "PixelWindow",
    "Side",
    "assemble_polygons",
    "chunk_polygons",
    "feature_columns",
    "fill_holes",
    "finish_pixel_polygons",
    "finish_polygons",
    "finish_rings",
    "halo_window",
    "lowest_road_code",
    "polygonize",
    "road_mask",
    "sieve_halo",
    "sieve_mask",
    "to_map",
    "touched_sides",
]

NODATA_CODE = 255
"""The uint8 code of a pixel without a prediction; it is never road."""

_CODE_SCALE = 254  # probability = code / 254


class Side(enum.IntFlag):
    """Bit flags naming the sides of a :class:`PixelWindow` a polygon touches."""

    TOP = 1  # row_start
    BOTTOM = 2  # row_stop
    LEFT = 4  # col_start
    RIGHT = 8  # col_stop


class PixelWindow(NamedTuple):
    """A half-open window ``[row_start, row_stop) x [col_start, col_stop)`` of scene pixels."""

    row_start: int
    row_stop: int
    col_start: int
    col_stop: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the window."""
        return self.row_stop - self.row_start, self.col_stop - self.col_start

    def interior_sides(self, scene_shape: tuple[int, int]) -> Side:
        """The sides of the window that lie inside the scene (not on its border)."""
        height, width = scene_shape
        inside = (
            self.row_start > 0,
            self.row_stop < height,
            self.col_start > 0,
            self.col_stop < width,
        )
        return Side(sum(side for side, yes in zip(Side, inside, strict=True) if yes))


def lowest_road_code(threshold: float) -> int:
    """The smallest code counted as road: ``ceil(threshold * 254 - 1e-9)``.

    Comparing integer codes avoids float division; the ``1e-9`` makes a threshold that is
    itself a code over 254 (``77 / 254``) select that code despite float rounding.

    Raises:
        InputError: ``threshold`` lies outside [0, 1].
    """
    if not 0.0 <= threshold <= 1.0:  # also rejects NaN
        raise InputError(f"threshold must lie in [0, 1], got {threshold}")
    return math.ceil(threshold * _CODE_SCALE - 1e-9)


def road_mask(codes: NDArray[np.uint8], *, threshold: float) -> NDArray[np.bool_]:
    """Which pixels are road: ``code != 255 and code / 254 >= threshold``, on integer codes.

    Args:
        codes: ``(y, x)`` uint8 probability codes (probability = code / 254; 255 = nodata).
        threshold: probability in [0, 1] at and above which a pixel is road; compared as
            ``code >= lowest_road_code(threshold)``.

    Returns:
        ``(y, x)`` bool, True for road.

    Raises:
        InputError: ``codes`` is not uint8 or ``threshold`` lies outside [0, 1].
    """
    codes = np.asarray(codes)
    if codes.dtype != np.uint8:
        raise InputError(f"probability codes must be uint8, got {codes.dtype}")
    road: NDArray[np.bool_] = (codes >= lowest_road_code(threshold)) & (codes != NODATA_CODE)
    return road


def sieve_halo(sieve_px: int) -> int:
    """The halo (px on each side of a chunk) that makes a per-chunk sieve exact: ``2 * sieve_px``.

    ``rasterio.features.sieve`` (GDAL) gives a 4-connected component of fewer than ``sieve_px``
    pixels the value of its largest neighbour if that one (or, following largest neighbours, a
    later one) has at least ``sieve_px`` pixels. A windowed sieve decides a core pixel as the
    whole-mask sieve does when it sees the same sizes:

    * A component smaller than ``sieve_px`` px spans fewer than ``sieve_px`` px, so one that
      touches the core lies wholly in the window once the halo is ``sieve_px`` or more; a
      larger one lies wholly inside too, or its piece in the window reaches from the core to
      the window's edge, which takes more than ``halo`` >= ``sieve_px`` pixels.
    * A small component's neighbours start within ``sieve_px - 1`` px of the core; a large
      neighbour cut by the window's edge keeps a path from there to the edge, of at least
      ``sieve_px`` pixels only when the halo is ``2 * sieve_px - 2`` or more. With a halo of
      just ``sieve_px``, a small component reaching into the halo can lose its only large
      neighbour to the cut and survive where the whole-mask sieve removes it (the tests keep
      such a case).

    Not settled is a small component whose neighbours are *all* small (GDAL then follows the
    chain of largest neighbours): that takes dense salt-and-pepper noise, not road probability
    maps, and stays exact while such chains stay inside the halo.

    Args:
        sieve_px: the sieve size in pixels; 0 or 1 sieves nothing.

    Returns:
        The halo in pixels (0 when nothing is sieved).
    """
    if sieve_px < 0:
        raise InputError(f"sieve_px must be >= 0, got {sieve_px}")
    return 2 * sieve_px if sieve_px > 1 else 0


def halo_window(core: PixelWindow, *, halo: int, scene_shape: tuple[int, int]) -> PixelWindow:
    """The core grown by ``halo`` px on each side, clipped to the scene."""
    height, width = scene_shape
    return PixelWindow(
        max(0, core.row_start - halo),
        min(height, core.row_stop + halo),
        max(0, core.col_start - halo),
        min(width, core.col_stop + halo),
    )


@contextlib.contextmanager
def _no_georeferencing_warning() -> Iterator[None]:
    """Silence the warning that ``sieve``'s and ``shapes``' in-memory datasets lack a transform.

    Pixel coordinates need none. (``catch_warnings`` swaps the process-wide filter list: with
    threads, the ignore filter may outlive the block or miss a call; either only affects this
    one harmless category.)
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


def sieve_mask(mask: NDArray[np.bool_], *, sieve_px: int) -> NDArray[np.uint8]:
    """Remove road components and fill holes of fewer than ``sieve_px`` pixels (4-connected).

    Args:
        mask: ``(y, x)`` bool road mask.
        sieve_px: minimum component size kept, in pixels; 0 or 1 keeps everything.

    Returns:
        ``(y, x)`` uint8, 1 for road and 0 elsewhere.
    """
    mask_u8 = np.ascontiguousarray(mask, dtype=np.uint8)
    if sieve_px <= 1 or mask_u8.size == 0:
        return mask_u8
    with _no_georeferencing_warning():
        sieved = sieve(mask_u8, size=sieve_px, connectivity=4)
    return np.asarray(sieved, dtype=np.uint8)


def polygonize(
    mask: NDArray[np.generic], *, origin: tuple[int, int] = (0, 0)
) -> NDArray[np.object_]:
    """One Polygon per 4-connected road component, in integer pixel coordinates.

    Args:
        mask: ``(y, x)`` bool or 0/1 uint8 road mask.
        origin: ``(row, col)`` of ``mask[0, 0]`` in the scene; vertices are ``(col, row)``
            pixel corners of the scene.

    Returns:
        ``(n,)`` object array of shapely Polygons (holes included).
    """
    mask_u8 = np.ascontiguousarray(mask, dtype=np.uint8)
    if not mask_u8.any():
        return np.empty(0, dtype=object)
    row, col = origin
    coords: list[NDArray[np.float64]] = []
    ring_sizes: list[int] = []
    poly_of_ring: list[int] = []
    with _no_georeferencing_warning():
        found = shapes(
            mask_u8,
            mask=mask_u8.astype(bool),
            connectivity=4,
            transform=Affine.translation(col, row),
        )
        for index, (geometry, _value) in enumerate(found):
            for ring in geometry["coordinates"]:
                coords.append(np.asarray(ring, dtype=np.float64))
                ring_sizes.append(len(ring))
                poly_of_ring.append(index)
    # Build all rings and polygons in two vectorized calls instead of one shape() per polygon.
    ring_index = np.repeat(np.arange(len(ring_sizes)), ring_sizes)
    rings = shapely.linearrings(np.concatenate(coords), indices=ring_index)
    polys: NDArray[np.object_] = shapely.polygons(rings, indices=np.asarray(poly_of_ring))
    return polys


def touched_sides(
    polys: NDArray[np.object_], *, window: PixelWindow, scene_shape: tuple[int, int]
) -> NDArray[np.uint8]:
    """Which of the window's sides inside the scene each polygon touches, as :class:`Side` bits.

    Exact for pixel-coordinate polygons that lie inside ``window``: a polygon reaches a side
    exactly when its bounds do.

    Args:
        polys: ``(n,)`` object array of Polygons in pixel coordinates, inside ``window``.
        window: the window they were made in (or merged over).
        scene_shape: ``(rows, cols)`` of the scene; sides on the scene border never count.

    Returns:
        ``(n,)`` uint8 :class:`Side` flags, 0 for a polygon touching no interior side.
    """
    bounds = shapely.bounds(polys).reshape(-1, 4)  # minx (col), miny (row), maxx, maxy
    interior = window.interior_sides(scene_shape)
    flags = np.zeros(len(bounds), dtype=np.uint8)
    checks = (
        (Side.TOP, bounds[:, 1] == window.row_start),
        (Side.BOTTOM, bounds[:, 3] == window.row_stop),
        (Side.LEFT, bounds[:, 0] == window.col_start),
        (Side.RIGHT, bounds[:, 2] == window.col_stop),
    )
    for side, touches in checks:
        if side in interior:
            flags[touches] |= np.uint8(side)
    return flags


def chunk_polygons(
    window_mask: NDArray[np.bool_],
    *,
    window: PixelWindow,
    core: PixelWindow,
    scene_shape: tuple[int, int],
    sieve_px: int,
) -> tuple[NDArray[np.object_], NDArray[np.object_]]:
    """Sieve a chunk's window, polygonize its core, split final pieces from border pieces.

    The window is the core plus :func:`sieve_halo` px on each side, clipped to the scene, so
    the sieve gives the core the same pixels as a sieve of the whole mask (see there why).

    Args:
        window_mask: ``(y, x)`` bool road mask of ``window``.
        window: where ``window_mask`` lies in the scene.
        core: the chunk, inside ``window``.
        scene_shape: ``(rows, cols)`` of the scene.
        sieve_px: sieve size in pixels (0 or 1: none).

    Returns:
        ``(final, border)``: ``(n,)`` object arrays of pixel-coordinate Polygons; ``final`` ones
        touch no side of the core inside the scene and are complete road components.

    Raises:
        InputError: the mask does not match ``window`` or ``core`` is not inside it.
    """
    if tuple(np.shape(window_mask)) != window.shape:
        raise InputError(f"mask of shape {np.shape(window_mask)} does not fit {window}")
    if not (
        window.row_start <= core.row_start <= core.row_stop <= window.row_stop
        and window.col_start <= core.col_start <= core.col_stop <= window.col_stop
    ):
        raise InputError(f"core {core} is not inside window {window}")
    if not window_mask.any():  # most of a city is not road: nothing to sieve or trace
        return np.empty(0, dtype=object), np.empty(0, dtype=object)
    sieved = sieve_mask(window_mask, sieve_px=sieve_px)
    core_mask = sieved[
        core.row_start - window.row_start : core.row_stop - window.row_start,
        core.col_start - window.col_start : core.col_stop - window.col_start,
    ]
    polys = polygonize(core_mask, origin=(core.row_start, core.col_start))
    on_border = touched_sides(polys, window=core, scene_shape=scene_shape) != 0
    final: NDArray[np.object_] = polys[~on_border]
    border: NDArray[np.object_] = polys[on_border]
    return final, border


def to_map(polys_px: NDArray[np.object_], *, transform: Affine) -> NDArray[np.object_]:
    """Pixel-coordinate geometries to map coordinates: ``(x, y) = transform * (col, row)``.

    Args:
        polys_px: ``(n,)`` object array of geometries in pixel coordinates.
        transform: the scene's affine transform (pixel corner to map).

    Returns:
        ``(n,)`` object array of geometries in the scene's CRS.
    """
    a, b, c, d, e, f = tuple(transform)[:6]
    if a * e - b * d == 0:
        raise InputError(f"the scene transform is degenerate: {transform!r}")
    matrix = np.array([[a, d], [b, e]])
    offset = np.array([c, f])

    def apply(xy: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(xy @ matrix + offset, dtype=np.float64)

    result: NDArray[np.object_] = shapely.transform(np.asarray(polys_px, dtype=object), apply)
    return result


def fill_holes(polys: NDArray[np.object_], *, max_area: float) -> NDArray[np.object_]:
    """Drop the interior rings whose area is smaller than ``max_area``.

    Args:
        polys: ``(n,)`` object array of non-empty Polygons.
        max_area: holes with a smaller area (in the polygons' units squared) are filled.

    Returns:
        ``(n,)`` object array of Polygons, in the same order.
    """
    polys = np.asarray(polys, dtype=object)
    if max_area <= 0 or len(polys) == 0:
        return polys
    rings, index = shapely.get_rings(polys, return_index=True)
    shell = np.ones(len(rings), dtype=bool)
    shell[1:] = index[1:] != index[:-1]  # get_rings lists each exterior ring first
    keep = shell | (shapely.area(shapely.polygons(rings)) >= max_area)
    filled: NDArray[np.object_] = shapely.polygons(rings[keep], indices=index[keep])
    return filled


def _valid_polygons(geoms: NDArray[np.object_]) -> NDArray[np.object_]:
    """Repair the invalid ones with ``make_valid`` and keep only non-empty Polygons."""
    bad = ~shapely.is_valid(geoms)
    if bad.any():
        repaired = shapely.get_parts(shapely.get_parts(shapely.make_valid(geoms[bad])))
        geoms = np.concatenate([geoms[~bad], repaired])
    is_polygon = shapely.get_type_id(geoms) == shapely.GeometryType.POLYGON
    kept: NDArray[np.object_] = geoms[is_polygon & ~shapely.is_empty(geoms)]
    return kept


@dataclass(frozen=True)
class Finishing:
    """How final pixel polygons become the road-surface layer (see :func:`finish_polygons`).

    Attributes:
        transform: the scene's affine transform (pixel corner to map).
        hole_area_m2: holes with a smaller area are filled (0: none).
        min_area_m2: polygons with a smaller area (holes filled) are dropped (0: none).
        simplify_m: simplification tolerance (0: none).
    """

    transform: Affine
    hole_area_m2: float = 0.0
    min_area_m2: float = 0.0
    simplify_m: float = 0.0

    def __post_init__(self) -> None:
        sizes = {
            "hole_area_m2": self.hole_area_m2,
            "min_area_m2": self.min_area_m2,
            "simplify_m": self.simplify_m,
        }
        for name, value in sizes.items():
            if not (math.isfinite(value) and value >= 0):
                raise InputError(f"{name} must be a finite number >= 0, got {value}")
        a, b, _, d, e, _ = tuple(self.transform)[:6]
        if a * e - b * d == 0:
            raise InputError(f"the scene transform is degenerate: {self.transform!r}")


def finish_rings(
    rings_px: NDArray[np.object_], *, finishing: Finishing | None
) -> tuple[NDArray[np.object_], NDArray[np.float64]]:
    """Each ring by itself: canonical start, no collinear vertices, then to map and simplified.

    A ring is finished alone, whatever polygon it bounds, so a ring comes out the same
    whichever chunk or tree node completes it: normalized (it starts at its lowest vertex,
    always a corner of a pixel outline), Douglas-Peucker with tolerance 0 (which drops the
    collinear vertices a union leaves where chunk seams met straight edges); with
    ``finishing``, mapped by its transform and simplified topology-preserving (the ring stays
    simple; rings of one polygon are checked together by :func:`assemble_polygons`).

    Args:
        rings_px: ``(n,)`` object array of LinearRings in pixel coordinates.
        finishing: the layer's finishing; None keeps pixel coordinates.

    Returns:
        ``(rings, areas)``: ``(n,)`` LinearRings and the ``(n,)`` float64 areas they enclose
        before simplification (map units squared, or pixels without ``finishing``).
    """
    rings_px = np.asarray(rings_px, dtype=object)
    if len(rings_px) == 0:
        return np.empty(0, dtype=object), np.empty(0, dtype=np.float64)
    polys = shapely.simplify(
        shapely.normalize(shapely.polygons(rings_px)), 0.0, preserve_topology=False
    )
    if finishing is not None:
        polys = to_map(polys, transform=finishing.transform)
    areas = np.asarray(shapely.area(polys), dtype=np.float64)
    if finishing is not None and finishing.simplify_m > 0:
        polys = shapely.simplify(polys, finishing.simplify_m, preserve_topology=True)
    rings: NDArray[np.object_] = shapely.get_exterior_ring(polys)
    return rings, areas


def assemble_polygons(
    shells: NDArray[np.object_],
    shell_areas: NDArray[np.float64],
    holes: NDArray[np.object_],
    hole_areas: NDArray[np.float64],
    owner: NDArray[np.int64],
    *,
    finishing: Finishing | None,
) -> NDArray[np.object_]:
    """Polygons from finished rings (:func:`finish_rings`): shell ``i`` with its holes.

    With ``finishing``: holes smaller than ``hole_area_m2`` are filled, polygons smaller than
    ``min_area_m2`` (holes filled, before simplification) dropped, the rest checked for
    validity (an invalid one, where simplified rings came to cross, is repaired with
    ``make_valid``) and normalized.

    Args:
        shells: ``(n,)`` LinearRings, one per polygon.
        shell_areas: ``(n,)`` their areas.
        holes: ``(m,)`` LinearRings.
        hole_areas: ``(m,)`` their areas.
        owner: ``(m,)`` int64, the shell each hole belongs to.
        finishing: the layer's finishing; None: all rings kept as they are.

    Returns:
        ``(k,)`` object array of Polygons; ``k == n`` without ``finishing``.
    """
    n = len(shells)
    if n == 0:
        return np.empty(0, dtype=object)
    owner = np.asarray(owner, dtype=np.int64)
    keep_hole = np.ones(len(holes), dtype=bool)
    keep_shell = np.ones(n, dtype=bool)
    if finishing is not None:
        if finishing.hole_area_m2 > 0:
            keep_hole = np.asarray(hole_areas) >= finishing.hole_area_m2
        if finishing.min_area_m2 > 0:
            filled = np.asarray(shell_areas, dtype=np.float64) - np.bincount(
                owner[keep_hole], weights=np.asarray(hole_areas)[keep_hole], minlength=n
            )
            keep_shell = filled >= finishing.min_area_m2
        keep_hole &= keep_shell[owner]
    renumber = np.cumsum(keep_shell) - 1
    rings = np.concatenate([np.asarray(shells, dtype=object)[keep_shell], holes[keep_hole]])
    index = np.concatenate([renumber[keep_shell], renumber[owner[keep_hole]]])
    order = np.argsort(index, kind="stable")  # each shell before its holes
    polys: NDArray[np.object_] = shapely.polygons(rings[order], indices=index[order])
    if finishing is None:
        return polys
    normalized: NDArray[np.object_] = shapely.normalize(_valid_polygons(polys))
    return normalized


def finish_polygons(
    polys_px: NDArray[np.object_],
    *,
    transform: Affine,
    hole_area_m2: float,
    min_area_m2: float,
    simplify_m: float,
) -> NDArray[np.object_]:
    """Dissolved pixel polygons to the road-surface layer in map coordinates.

    Every ring is finished by itself (:func:`finish_rings`: canonical start, to map,
    simplified with tolerance ``simplify_m`` keeping the ring simple), so that the tree
    nodes of the dissolve can finish each ring where it becomes complete, on the workers,
    with the same result; then holes smaller than ``hole_area_m2`` are filled, polygons
    (holes filled) smaller than ``min_area_m2`` dropped, and a polygon whose simplified
    rings came to cross is repaired with ``make_valid`` (:func:`assemble_polygons`). Areas
    and lengths are in the CRS's units, metres for a projected scene.

    Args:
        polys_px: ``(n,)`` object array of Polygons in pixel coordinates (from the dissolve).
        transform: the scene's affine transform.
        hole_area_m2: holes with a smaller area are filled (0: none).
        min_area_m2: polygons with a smaller area are dropped (0: none).
        simplify_m: simplification tolerance (0: none).

    Returns:
        ``(m,)`` object array of valid, normalized Polygons in map coordinates, m <= n unless
        a repair split one.

    Raises:
        InputError: a size is negative or not finite, or the transform is degenerate.
    """
    finishing = Finishing(
        transform=transform,
        hole_area_m2=hole_area_m2,
        min_area_m2=min_area_m2,
        simplify_m=simplify_m,
    )
    return finish_pixel_polygons(np.asarray(polys_px, dtype=object), finishing=finishing)


def finish_pixel_polygons(
    polys_px: NDArray[np.object_], *, finishing: Finishing | None
) -> NDArray[np.object_]:
    """:func:`finish_rings` on every ring of ``polys_px``, then :func:`assemble_polygons`."""
    polys_px = np.asarray(polys_px, dtype=object)
    polys_px = polys_px[~shapely.is_empty(polys_px)]
    if len(polys_px) == 0:
        return np.empty(0, dtype=object)
    rings, index = shapely.get_rings(polys_px, return_index=True)
    first = np.ones(len(rings), dtype=bool)
    first[1:] = index[1:] != index[:-1]  # get_rings lists each exterior ring first
    done, areas = finish_rings(rings, finishing=finishing)
    return assemble_polygons(
        done[first],
        areas[first],
        done[~first],
        areas[~first],
        index[~first].astype(np.int64),
        finishing=finishing,
    )


def feature_columns(polys: NDArray[np.object_]) -> dict[str, NDArray[np.float64]]:
    """The per-feature attribute columns of the road-surface layer.

    Args:
        polys: ``(n,)`` object array of Polygons in a metric CRS.

    Returns:
        ``{"area_m2": (n,) float64, "perimeter_m": (n,) float64}`` (perimeter includes holes).
    """
    polys = np.asarray(polys, dtype=object)
    return {
        "area_m2": np.asarray(shapely.area(polys), dtype=np.float64),
        "perimeter_m": np.asarray(shapely.length(polys), dtype=np.float64),
    }
