"""The centerline road graph: per-chunk skeletons with a halo, skan per chunk, one join.

Per chunk, plain numpy kernels (the dask builder at the bottom only binds them to windows):

1. :func:`road_mask`: ``surface >= threshold`` (``source="surface"``, the default: the
   skeleton of the surface routes far better than the skeleton of the centerline task, which
   is fragments), ``centerline >= centerline_threshold`` (``"centerline"``), or either
   (``"combined"``: the centerline bridges gaps where it is confident). Probabilities are
   uint8 codes ``p * 254``; code 255 is nodata and never road.
2. :func:`fill_small_holes`: background components of at most ``hole_px`` px become road (a
   hole makes a loop in the skeleton). Components touching the window edge are left alone,
   in a window as in the whole scene, so a cut-off large hole is not mistaken for a small one.
3. ``skimage.morphology.skeletonize`` (Zhang-Suen thinning) of the chunk's *window*: its core
   plus ``halo_px`` on every side (clipped at the scene edge).
4. :func:`skeleton_piece`: ``skan.Skeleton`` of the window skeleton (cropped to the core plus
   16 px), its paths split into the runs of pixel links this chunk owns (below).

**Halo.** Thinning peels one layer of pixels per sub-iteration, in parallel over the image,
so a pixel's fate depends only on pixels a bounded distance away. A window edge that cuts a
road is an artificial boundary whose effect travels inward about one road width and no
further; so the halo must be at least the widest road (or blob: plaza, parking lot) in px,
plus a margin. Measured on random road networks of one width, chunks of 128 (the smallest
halo whose per-chunk skeleton cores equal ``skeletonize`` of the whole mask): 20 px roads
need 16 px, 40 px roads 32, 60 px roads 56, 90 px roads 96. The default, 48 px, covers roads
up to about 45 px wide: 13 m at 0.3 m/px but only 4.5 m at 0.1 m/px, so raise ``halo_px``
for finer scenes (the cost grows as ``((core + 2 halo) / core)²``: 1.41 for 512 chunks). It
must also exceed the extent of a ``hole_px`` hole, which is not filled where the window edge
cuts it. When the halo is too narrow, the chunks' skeletons disagree at their borders and
:func:`~roadnet.pipeline.vectorize.graph.join_pieces` warns.

**Border matching.** A *link* joins two 8-adjacent skeleton pixels. It belongs to the chunk
whose core holds the smaller of its two pixels in ``(row, col)`` order, so every link belongs
to exactly one chunk, and a chunk's polylines reach at most one pixel into a neighbour (the
far end of a link that crosses the border). Where a skeleton path passes from one chunk's
links to a neighbour's, both chunks cut it at the same pixel, a *border pixel*, and the
join matches the two polylines by that global pixel; it then contracts the degree-2 nodes
the cuts made. Because skan runs on the window, its pixel degrees and its junction clusters
(skan replaces each cluster of adjacent junction pixels by their minimum spanning tree) near
the core are the whole scene's, so both chunks see the same nodes and links.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import dask.array as da
import numpy as np
from affine import Affine
from dask.delayed import Delayed, delayed
from numpy.typing import NDArray
from scipy import ndimage
from skimage.morphology import skeletonize

from roadnet.errors import InputError
from roadnet.pipeline.vectorize.graph import (
    DEFAULT_MERGE_M,
    DEFAULT_PRUNE_M,
    DEFAULT_SIMPLIFY_M,
    EdgeTable,
    GraphPiece,
    NodeTable,
    join_pieces,
)

__all__ = [
    "DEFAULT_HALO_PX",
    "DEFAULT_HOLE_PX",
    "ChunkWindow",
    "Source",
    "centerline_graph",
    "centerline_pieces",
    "fill_small_holes",
    "graph_from_arrays",
    "plan_windows",
    "road_mask",
    "skeleton_piece",
    "window_piece",
    "window_skeleton",
]

Source = Literal["surface", "centerline", "combined"]
#: Context on each side of a chunk for the skeleton (see the module docstring).
DEFAULT_HALO_PX = 48
#: Background holes of at most this many px are filled before thinning.
DEFAULT_HOLE_PX = 32
NODATA = 255
CODE_MAX = 254
#: skan sees the core plus this margin: enough for pixel degrees (3 x 3) and junction
#: clusters (up to 11 px seen on noisy masks) at the core's border to be the whole scene's.
_SKAN_MARGIN_PX = 16

Bounds = tuple[int, int, int, int]
"""``(row0, row1, col0, col1)``, half-open, in global pixels."""


@dataclass(frozen=True)
class ChunkWindow:
    """One chunk's core and the window (core plus halo) its skeleton is computed on.

    Attributes:
        location: the chunk's ``(i, j)`` in the chunk grid.
        core: the chunk itself, global ``(row0, row1, col0, col1)``.
        window: the core grown by the halo and clipped to the scene.
    """

    location: tuple[int, int]
    core: Bounds
    window: Bounds

    @property
    def origin(self) -> tuple[int, int]:
        """Global ``(row, col)`` of the window's first pixel."""
        return (self.window[0], self.window[2])

    @property
    def slices(self) -> tuple[slice, slice]:
        """The window as ``(rows, cols)`` slices into the scene."""
        r0, r1, c0, c1 = self.window
        return slice(r0, r1), slice(c0, c1)


def plan_windows(
    chunks: tuple[Sequence[int], Sequence[int]], *, halo_px: int = DEFAULT_HALO_PX
) -> list[ChunkWindow]:
    """Cores and halo windows for a chunk grid, in row-major chunk order.

    Args:
        chunks: row and column chunk sizes, as in ``dask.array.Array.chunks`` (ragged last
            chunks allowed).
        halo_px: context on each side, clipped at the scene edge.

    Returns:
        One :class:`ChunkWindow` per chunk.
    """
    if halo_px < 0:
        raise InputError(f"halo_px must be >= 0, got {halo_px}")
    row_edges = np.concatenate([[0], np.cumsum(chunks[0])]).tolist()
    col_edges = np.concatenate([[0], np.cumsum(chunks[1])]).tolist()
    height, width = row_edges[-1], col_edges[-1]
    windows = []
    for i, (r0, r1) in enumerate(itertools.pairwise(row_edges)):
        for j, (c0, c1) in enumerate(itertools.pairwise(col_edges)):
            window = (
                max(r0 - halo_px, 0),
                min(r1 + halo_px, height),
                max(c0 - halo_px, 0),
                min(c1 + halo_px, width),
            )
            windows.append(ChunkWindow(location=(i, j), core=(r0, r1, c0, c1), window=window))
    return windows


# -- kernels ------------------------------------------------------------------------------------


def road_mask(
    surface: NDArray[np.uint8] | None,
    centerline: NDArray[np.uint8] | None,
    *,
    source: Source = "surface",
    threshold: float = 0.5,
    centerline_threshold: float | None = None,
) -> NDArray[np.bool_]:
    """The mask that is thinned into the road graph.

    Args:
        surface: ``(y, x)`` uint8 probability codes (``p * 254``, 255 nodata); may be None
            for ``source="centerline"``.
        centerline: ``(y, x)`` uint8 codes like ``surface``; may be None for
            ``source="surface"``.
        source: ``"surface"``: ``surface >= threshold``; ``"centerline"``:
            ``centerline >= centerline_threshold``; ``"combined"``: either.
        threshold: probability cut for the surface, in (0, 1].
        centerline_threshold: probability cut for the centerline; defaults to ``threshold``.

    Returns:
        ``(y, x)`` bool, True on road; nodata is never road.
    """
    t_c = threshold if centerline_threshold is None else centerline_threshold
    _check_options(source=source, threshold=threshold, centerline_threshold=t_c)
    _check_arrays(surface, centerline, source=source)
    parts = []
    if source != "centerline":
        assert surface is not None
        parts.append(_cut(surface, threshold))
    if source != "surface":
        assert centerline is not None
        parts.append(_cut(centerline, t_c))
    mask = parts[0] if len(parts) == 1 else parts[0] | parts[1]
    return mask


def _cut(codes: NDArray[np.uint8], threshold: float) -> NDArray[np.bool_]:
    mask: NDArray[np.bool_] = (codes != NODATA) & (codes >= threshold * CODE_MAX)
    return mask


def fill_small_holes(mask: NDArray[np.bool_], *, max_px: int) -> NDArray[np.bool_]:
    """Fill background components of at most ``max_px`` px that do not touch the edge.

    Args:
        mask: ``(y, x)`` bool road mask.
        max_px: largest hole (4-connected background component) to fill; 0 fills none.

    Returns:
        ``(y, x)`` bool, a new array.
    """
    if max_px <= 0:
        return mask.copy()
    labels, count = ndimage.label(~mask)
    if count == 0:
        return mask.copy()
    small = np.bincount(labels.ravel(), minlength=count + 1) <= max_px
    small[0] = False
    small[labels[0]] = small[labels[-1]] = small[labels[:, 0]] = small[labels[:, -1]] = False
    filled: NDArray[np.bool_] = mask | small[labels]
    return filled


def window_skeleton(
    surface: NDArray[np.uint8] | None,
    centerline: NDArray[np.uint8] | None,
    *,
    source: Source = "surface",
    threshold: float = 0.5,
    centerline_threshold: float | None = None,
    hole_px: int = DEFAULT_HOLE_PX,
) -> NDArray[np.bool_]:
    """The skeleton of one window: mask, fill small holes, thin.

    Args:
        surface: ``(y, x)`` uint8 codes of the window (see :func:`road_mask`).
        centerline: ``(y, x)`` uint8 codes of the window, or None.
        source: which mask to thin (see :func:`road_mask`).
        threshold: probability cut for the surface.
        centerline_threshold: probability cut for the centerline (default ``threshold``).
        hole_px: holes of at most this many px are filled first.

    Returns:
        ``(y, x)`` bool, one-pixel-wide 8-connected skeleton.
    """
    mask = road_mask(
        surface,
        centerline,
        source=source,
        threshold=threshold,
        centerline_threshold=centerline_threshold,
    )
    if not mask.any():  # most of a city is not road: nothing to thin
        return mask
    filled = fill_small_holes(mask, max_px=hole_px)
    skeleton: NDArray[np.bool_] = skeletonize(filled)  # type: ignore[no-untyped-call]
    return skeleton


def skeleton_piece(
    skeleton: NDArray[np.bool_], *, origin: tuple[int, int], core: Bounds
) -> GraphPiece:
    """The polylines of a window skeleton that one chunk owns, from ``skan``.

    Args:
        skeleton: ``(y, x)`` bool skeleton of the window.
        origin: global ``(row, col)`` of ``skeleton[0, 0]``.
        core: the chunk's global ``(row0, row1, col0, col1)``; links whose smaller pixel lies
            in it are this chunk's (module docstring).

    Returns:
        The chunk's :class:`GraphPiece`, global int64 pixel coordinates.
    """
    import skan  # numba-compiled; loaded where it is used

    height, width = skeleton.shape
    r0, r1, c0, c1 = core
    top = min(max(r0 - origin[0] - _SKAN_MARGIN_PX, 0), height)
    left = min(max(c0 - origin[1] - _SKAN_MARGIN_PX, 0), width)
    bottom = max(min(r1 - origin[0] + _SKAN_MARGIN_PX, height), top)
    right = max(min(c1 - origin[1] + _SKAN_MARGIN_PX, width), left)
    crop = skeleton[top:bottom, left:right]
    if not _has_link(crop):  # skan fails on a skeleton without paths
        return GraphPiece.from_paths([])
    skel = skan.Skeleton(crop)
    shift = np.array([origin[0] + top, origin[1] + left], dtype=np.int64)
    paths: list[NDArray[np.int64]] = []
    border: list[NDArray[np.int64]] = []
    for index in range(skel.n_paths):
        path = np.asarray(skel.path_coordinates(index), dtype=np.int64) + shift
        _owned_runs(path, core, paths, border)
    return GraphPiece.from_paths(paths, border=border)


def _has_link(skeleton: NDArray[np.bool_]) -> bool:
    """Whether any two skeleton pixels are 8-adjacent (isolated pixels make no path)."""
    s = skeleton
    return bool(
        (s[:, :-1] & s[:, 1:]).any()
        or (s[:-1, :] & s[1:, :]).any()
        or (s[:-1, :-1] & s[1:, 1:]).any()
        or (s[:-1, 1:] & s[1:, :-1]).any()
    )


def _owned_runs(
    path: NDArray[np.int64],
    core: Bounds,
    paths: list[NDArray[np.int64]],
    border: list[NDArray[np.int64]],
) -> None:
    """Append the runs of ``path``'s links owned by ``core`` and the pixels where they cut."""
    a, b = path[:-1], path[1:]
    a_first = (a[:, 0] < b[:, 0]) | ((a[:, 0] == b[:, 0]) & (a[:, 1] < b[:, 1]))
    low = np.where(a_first[:, None], a, b)
    r0, r1, c0, c1 = core
    owned = (low[:, 0] >= r0) & (low[:, 0] < r1) & (low[:, 1] >= c0) & (low[:, 1] < c1)
    if owned.all():
        paths.append(path)
        return
    steps = np.diff(np.concatenate([[0], owned.view(np.int8), [0]]))
    for start, stop in zip(np.flatnonzero(steps == 1), np.flatnonzero(steps == -1), strict=True):
        paths.append(path[start : stop + 1])
        if start > 0:
            border.append(path[start])
        if stop < len(owned):
            border.append(path[stop])


def window_piece(
    surface: NDArray[np.uint8] | None,
    centerline: NDArray[np.uint8] | None,
    *,
    window: ChunkWindow,
    source: Source = "surface",
    threshold: float = 0.5,
    centerline_threshold: float | None = None,
    hole_px: int = DEFAULT_HOLE_PX,
) -> GraphPiece:
    """One chunk's task: the window's skeleton, then the polylines the chunk owns.

    Args:
        surface: ``(y, x)`` uint8 codes of ``window.window`` (None for ``"centerline"``).
        centerline: ``(y, x)`` uint8 codes of ``window.window`` (None for ``"surface"``).
        window: the chunk's core and window.
        source: which mask to thin (see :func:`road_mask`).
        threshold: probability cut for the surface.
        centerline_threshold: probability cut for the centerline (default ``threshold``).
        hole_px: holes of at most this many px are filled first.

    Returns:
        The chunk's :class:`GraphPiece`.
    """
    skeleton = window_skeleton(
        surface,
        centerline,
        source=source,
        threshold=threshold,
        centerline_threshold=centerline_threshold,
        hole_px=hole_px,
    )
    return skeleton_piece(skeleton, origin=window.origin, core=window.core)


def graph_from_arrays(
    surface: NDArray[np.uint8] | None,
    centerline: NDArray[np.uint8] | None,
    *,
    transform: Affine,
    source: Source = "surface",
    threshold: float = 0.5,
    centerline_threshold: float | None = None,
    hole_px: int = DEFAULT_HOLE_PX,
    prune_m: float = DEFAULT_PRUNE_M,
    merge_m: float = DEFAULT_MERGE_M,
    simplify_m: float = DEFAULT_SIMPLIFY_M,
) -> tuple[NodeTable, EdgeTable]:
    """The road graph of a whole scene in memory, as one window (the reference path).

    Args:
        surface: ``(y, x)`` uint8 codes of the scene (None for ``"centerline"``).
        centerline: ``(y, x)`` uint8 codes of the scene (None for ``"surface"``).
        transform: the scene's affine transform, pixel ``(col, row)`` to map ``(x, y)``.
        source: which mask to thin (see :func:`road_mask`).
        threshold: probability cut for the surface.
        centerline_threshold: probability cut for the centerline (default ``threshold``).
        hole_px: holes of at most this many px are filled first.
        prune_m: spurs shorter than this many metres are removed.
        merge_m: junctions closer than this many metres are merged.
        simplify_m: Douglas-Peucker tolerance in metres.

    Returns:
        The node table and the edge table (see ``join_pieces``).
    """
    reference = surface if surface is not None else centerline
    if reference is None:
        raise InputError("graph_from_arrays needs a surface or a centerline array")
    height, width = reference.shape[-2:]
    (window,) = plan_windows(((height,), (width,)), halo_px=0)
    piece = window_piece(
        surface,
        centerline,
        window=window,
        source=source,
        threshold=threshold,
        centerline_threshold=centerline_threshold,
        hole_px=hole_px,
    )
    return join_pieces(
        [piece], transform=transform, prune_m=prune_m, merge_m=merge_m, simplify_m=simplify_m
    )


# -- dask ---------------------------------------------------------------------------------------


def centerline_pieces(
    surface: da.Array,
    centerline: da.Array | None,
    *,
    source: Source = "surface",
    threshold: float = 0.5,
    centerline_threshold: float | None = None,
    halo_px: int = DEFAULT_HALO_PX,
    hole_px: int = DEFAULT_HOLE_PX,
) -> list[Delayed]:
    """One delayed :class:`GraphPiece` per chunk of ``surface``, in row-major chunk order.

    Each task reads its window (core plus halo) by slicing the dask arrays, so the graph has
    one piece task per chunk (plus dask's slicing of the neighbours' edges).

    Args:
        surface: ``(y, x)`` uint8 codes; its chunks are the cores (square, e.g. 512, ragged
            last chunks allowed). Needed for the chunk grid even with ``"centerline"``.
        centerline: ``(y, x)`` uint8 codes of the same shape, or None for ``"surface"``.
        source: which mask to thin (see :func:`road_mask`).
        threshold: probability cut for the surface.
        centerline_threshold: probability cut for the centerline (default ``threshold``).
        halo_px: context on each side of a chunk (module docstring).
        hole_px: holes of at most this many px are filled first.

    Returns:
        ``dask.delayed`` pieces, to be joined with ``join_pieces``.
    """
    t_c = threshold if centerline_threshold is None else centerline_threshold
    _check_options(source=source, threshold=threshold, centerline_threshold=t_c)
    _check_arrays(surface, centerline if source != "surface" else None, source=source)
    task = delayed(window_piece, pure=True)
    pieces = []
    for window in plan_windows(surface.chunks, halo_px=halo_px):
        rows, cols = window.slices
        pieces.append(
            task(
                surface[rows, cols] if source != "centerline" else None,
                centerline[rows, cols] if centerline is not None and source != "surface" else None,
                window=window,
                source=source,
                threshold=threshold,
                centerline_threshold=t_c,
                hole_px=hole_px,
            )
        )
    return pieces


def centerline_graph(
    surface: da.Array,
    centerline: da.Array | None,
    *,
    transform: Affine,
    threshold: float = 0.5,
    source: Source = "surface",
    centerline_threshold: float | None = None,
    halo_px: int = DEFAULT_HALO_PX,
    hole_px: int = DEFAULT_HOLE_PX,
    prune_m: float = DEFAULT_PRUNE_M,
    merge_m: float = DEFAULT_MERGE_M,
    simplify_m: float = DEFAULT_SIMPLIFY_M,
) -> Delayed:
    """The scene's road graph as one delayed ``(nodes, edges)``: chunk pieces, then a join.

    ``centerline_graph(...).compute()`` runs one task per chunk and a final join task that
    receives all pieces. To join in the client process instead, compute
    :func:`centerline_pieces` and call ``join_pieces`` on the results: the same graph.

    Args:
        surface: ``(y, x)`` uint8 codes, chunked (see :func:`centerline_pieces`).
        centerline: ``(y, x)`` uint8 codes, or None for ``"surface"``.
        transform: the scene's affine transform, pixel ``(col, row)`` to map ``(x, y)``.
        threshold: probability cut for the surface.
        source: which mask to thin (see :func:`road_mask`).
        centerline_threshold: probability cut for the centerline (default ``threshold``).
        halo_px: context on each side of a chunk (module docstring).
        hole_px: holes of at most this many px are filled first.
        prune_m: spurs shorter than this many metres are removed.
        merge_m: junctions closer than this many metres are merged.
        simplify_m: Douglas-Peucker tolerance in metres.

    Returns:
        A ``Delayed`` whose value is the node table and the edge table (``nout=2``).
    """
    pieces = centerline_pieces(
        surface,
        centerline,
        source=source,
        threshold=threshold,
        centerline_threshold=centerline_threshold,
        halo_px=halo_px,
        hole_px=hole_px,
    )
    join = delayed(join_pieces, pure=True, nout=2)
    result: Delayed = join(
        pieces, transform=transform, prune_m=prune_m, merge_m=merge_m, simplify_m=simplify_m
    )
    return result


# -- checks -------------------------------------------------------------------------------------


def _check_options(*, source: str, threshold: float, centerline_threshold: float) -> None:
    if source not in get_args(Source):
        raise InputError(f"source must be one of {get_args(Source)}, got {source!r}")
    for name, value in (("threshold", threshold), ("centerline_threshold", centerline_threshold)):
        if not 0.0 < value <= 1.0:
            raise InputError(f"{name} must be in (0, 1], got {value}")


def _check_arrays(
    surface: NDArray[np.uint8] | da.Array | None,
    centerline: NDArray[np.uint8] | da.Array | None,
    *,
    source: str,
) -> None:
    if source != "centerline" and surface is None:
        raise InputError(f"source={source!r} needs the surface array")
    if source != "surface" and centerline is None:
        raise InputError(f"source={source!r} needs the centerline array")
    shapes = set()
    for name, array in (("surface", surface), ("centerline", centerline)):
        if array is None:
            continue
        if array.ndim != 2 or array.dtype != np.uint8:
            raise InputError(
                f"{name} must be a (y, x) uint8 array of probability codes, "
                f"got {array.ndim}-d {array.dtype}"
            )
        shapes.add(tuple(array.shape))
    if len(shapes) > 1:
        raise InputError(f"surface and centerline differ in shape: {sorted(shapes)}")
