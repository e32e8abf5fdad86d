"""Exact dissolve of per-chunk road polygons by a neighbourhood tree over chunk blocks.

A city's road surface is mostly one connected polygon with thousands of holes, so the dissolve
cannot be split by component, and one global union of all chunk polygons is what we avoid.
Instead, level 0 polygonizes every chunk (:func:`~roadnet.pipeline.vectorize.polygons.
chunk_polygons`); the pieces touching no chunk side inside the scene are final. Each higher level
groups 2 x 2 blocks of the level below and unions only the border pieces its children passed up
(:func:`merge_node`); the merged pieces that no longer touch the group's outer border (inside
the scene) are final, the rest go up. At the top everything is final. Pieces are in integer pixel
coordinates, so their shared edges match exactly and every union is exact.

Only outlines travel up. A hole of a piece never touches its window's border (a background
region that reached the border would lie outside the piece), so it lies strictly inside its
shell and away from every other piece: the union of pieces is the union of their *shells*
(exterior rings, no holes) less their holes, and a hole is complete, ring for ring, in the
node that first sees it. Each node therefore unions hole-free shells only, whose size goes with
the node's perimeter, not its area; holes (of the leaves' pieces, and the new ones a union
closes) are finished where they appear (:func:`~roadnet.pipeline.vectorize.polygons.
finish_rings`) and ride along with the shell that owns them (:class:`Border`) until their
component is final and is assembled (:func:`~roadnet.pipeline.vectorize.polygons.
assemble_polygons`). The root no longer re-unions the whole city, only the outline pieces
along its seams.

:func:`dissolve_array` runs the tree in-process on a numpy array; :func:`dissolve_tree` builds
the same tree as a dask graph (one task per chunk and one per tree node) and :func:`dissolve`
computes it. Each node's final pieces go straight to the caller: only border pieces travel up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, TypeVar, cast

import numpy as np
import shapely
from numpy.typing import NDArray

from roadnet.errors import InputError
from roadnet.pipeline.vectorize.polygons import (
    Finishing,
    PixelWindow,
    assemble_polygons,
    chunk_polygons,
    finish_pixel_polygons,
    finish_rings,
    halo_window,
    lowest_road_code,
    road_mask,
    sieve_halo,
    touched_sides,
)

if TYPE_CHECKING:
    import dask.array as da
    from dask.delayed import Delayed

__all__ = [
    "Border",
    "NodeOut",
    "TreeNode",
    "border_polygons",
    "chunk_windows",
    "dissolve",
    "dissolve_array",
    "dissolve_tree",
    "leaf_out",
    "merge_group",
    "merge_node",
    "tree_levels",
    "union_touching",
    "walk_tree",
]

Chunks = tuple[tuple[int, ...], tuple[int, ...]]
Pieces = NDArray[np.object_]
F = TypeVar("F")
B = TypeVar("B")


class Border(NamedTuple):
    """What a tree node passes up: its pieces touching a side of its window inside the scene.

    Attributes:
        shells: ``(n,)`` hole-free Polygons in pixel coordinates, the pieces' outlines.
        holes: ``(m,)`` LinearRings, the pieces' holes, already finished
            (:func:`~roadnet.pipeline.vectorize.polygons.finish_rings`).
        hole_areas: ``(m,)`` float64, the areas the holes enclose.
        owner: ``(m,)`` int64, the shell each hole belongs to.
    """

    shells: Pieces
    holes: Pieces
    hole_areas: NDArray[np.float64]
    owner: NDArray[np.int64]

    @classmethod
    def empty(cls) -> Border:
        """No pieces."""
        return cls(
            np.empty(0, dtype=object),
            np.empty(0, dtype=object),
            np.empty(0, dtype=np.float64),
            np.empty(0, dtype=np.int64),
        )


class NodeOut(NamedTuple):
    """A tree node's result: its final polygons (finished) and what it passes up."""

    final: Pieces
    border: Border


class TreeNode(NamedTuple):
    """One node of the dissolve tree: its pixel window and its children one level down."""

    window: PixelWindow
    children: tuple[tuple[int, int], ...]  # (row, col) in the level below; () at level 0


def chunk_windows(chunks: Chunks) -> list[list[PixelWindow]]:
    """The pixel window of every chunk, from dask-style chunk sizes.

    Args:
        chunks: ``((rows of each chunk row, ...), (cols of each chunk column, ...))``.

    Returns:
        ``windows[i][j]``: the window of chunk ``(i, j)``.
    """
    rows = np.concatenate([[0], np.cumsum(chunks[0])]).astype(int).tolist()
    cols = np.concatenate([[0], np.cumsum(chunks[1])]).astype(int).tolist()
    return [
        [PixelWindow(rows[i], rows[i + 1], cols[j], cols[j + 1]) for j in range(len(cols) - 1)]
        for i in range(len(rows) - 1)
    ]


def tree_levels(windows: list[list[PixelWindow]]) -> list[list[list[TreeNode]]]:
    """The dissolve tree: level 0 holds the chunks, each level above groups 2 x 2 nodes.

    Args:
        windows: the chunk windows, as from :func:`chunk_windows`.

    Returns:
        ``levels[k][i][j]``: node ``(i, j)`` of level ``k``; the last level has one node.
    """
    levels = [[[TreeNode(w, ()) for w in row] for row in windows]]
    while len(levels[-1]) > 1 or len(levels[-1][0]) > 1:
        below = levels[-1]
        n_rows, n_cols = len(below), len(below[0])
        level: list[list[TreeNode]] = []
        for i in range(0, n_rows, 2):
            row: list[TreeNode] = []
            for j in range(0, n_cols, 2):
                children = tuple(
                    (ci, cj)
                    for ci in range(i, min(i + 2, n_rows))
                    for cj in range(j, min(j + 2, n_cols))
                )
                first, last = (
                    below[children[0][0]][children[0][1]],
                    below[children[-1][0]][children[-1][1]],
                )
                window = PixelWindow(
                    first.window.row_start,
                    last.window.row_stop,
                    first.window.col_start,
                    last.window.col_stop,
                )
                row.append(TreeNode(window, children))
            level.append(row)
        levels.append(level)
    return levels


def union_touching(pieces: Pieces) -> Pieces:
    """Union the pieces that touch into one Polygon per 4-connected component.

    ``shapely.disjoint_subset_union_all`` unions each subset of mutually connected pieces by
    itself (GEOS clusters them first), and the result is split into its Polygons: pieces that
    meet only at a corner (diagonal pixels) stay separate 4-connected components.

    Chosen by measurement on a synthetic 4096 px city (figures for BENCHMARKS.md): with one
    big component all strategies tie; with thousands of small ones this is fastest, ahead of
    clustering first (STRtree ``intersects`` query + scipy connected components, then
    ``union_all`` per cluster: the exact predicate on large pieces costs what clustering
    saves) and well ahead of one ``union_all`` of the group. All gave the same layer.

    Args:
        pieces: ``(n,)`` object array of pixel-coordinate Polygons that overlap only along
            shared edges.

    Returns:
        ``(m,)`` object array of Polygons, m <= n.
    """
    pieces = np.asarray(pieces, dtype=object)
    if len(pieces) < 2:
        return pieces
    parts: Pieces = shapely.get_parts(shapely.disjoint_subset_union_all(pieces))
    return parts


def _split_rings(polys: Pieces) -> tuple[Pieces, Pieces, NDArray[np.int64]]:
    """``(exteriors, interiors, owner)``: every polygon's rings, holes indexed by polygon."""
    if len(polys) == 0:
        return np.empty(0, dtype=object), np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
    rings, index = shapely.get_rings(polys, return_index=True)
    first = np.ones(len(rings), dtype=bool)
    first[1:] = index[1:] != index[:-1]  # get_rings lists each exterior ring first
    return rings[first], rings[~first], index[~first].astype(np.int64)


def _to_border(polys: Pieces, finishing: Finishing | None) -> Border:
    """Pieces as outlines plus their finished holes."""
    exteriors, interiors, owner = _split_rings(np.asarray(polys, dtype=object))
    holes, areas = finish_rings(interiors, finishing=finishing)
    return Border(shapely.polygons(exteriors), holes, areas, owner)


def leaf_out(final_px: Pieces, border_px: Pieces, *, finishing: Finishing | None = None) -> NodeOut:
    """A chunk's result (from :func:`~.polygons.chunk_polygons`) as a tree node's.

    Args:
        final_px: ``(n,)`` complete pixel-coordinate Polygons.
        border_px: ``(m,)`` pixel-coordinate Polygons touching a chunk side inside the scene.
        finishing: how final polygons are finished; None keeps them in pixel coordinates.

    Returns:
        The finished finals and the border pieces as a :class:`Border`.
    """
    final = finish_pixel_polygons(np.asarray(final_px, dtype=object), finishing=finishing)
    return NodeOut(final, _to_border(border_px, finishing))


def _containing_part(shells: Pieces, parts: Pieces) -> NDArray[np.int64]:
    """For each shell, the index of the union part that holds it.

    The probe is the centre of the pixel below and right of a shell's top-left vertex (the
    leftmost vertex of its top row): that pixel is inside the shell, so inside one part.
    """
    coords, index = shapely.get_coordinates(shells, return_index=True)
    order = np.lexsort((coords[:, 0], coords[:, 1], index))
    starts = np.flatnonzero(np.r_[True, np.diff(index[order]) != 0])
    probes = shapely.points(coords[order[starts]] + 0.5)
    shapely.prepare(parts)
    part_i, probe_i = shapely.STRtree(probes).query(parts, predicate="contains")
    owner = np.full(len(shells), -1, dtype=np.int64)
    owner[probe_i] = part_i
    if (owner < 0).any():  # cannot happen for pixel outlines; a bug if it does
        raise RuntimeError("a dissolve piece lies in no union part")
    return owner


def merge_node(
    children: Sequence[Border],
    group_bounds: PixelWindow,
    scene_shape: tuple[int, int],
    *,
    finishing: Finishing | None = None,
) -> NodeOut:
    """One tree node: union its children's shells, finish the components that are complete.

    Args:
        children: what each child passed up.
        group_bounds: the union of the children's windows.
        scene_shape: ``(rows, cols)`` of the scene.
        finishing: how final polygons are finished; None keeps them in pixel coordinates.

    Returns:
        The final polygons (touching no side of ``group_bounds`` inside the scene: complete
        road components, finished) and the :class:`Border` the node passes up.
    """
    if not children:
        return NodeOut(np.empty(0, dtype=object), Border.empty())
    shells = np.concatenate([np.asarray(c.shells, dtype=object) for c in children])
    holes = np.concatenate([np.asarray(c.holes, dtype=object) for c in children])
    hole_areas = np.concatenate([np.asarray(c.hole_areas, dtype=np.float64) for c in children])
    offsets = np.cumsum([0] + [len(c.shells) for c in children[:-1]])
    owner = np.concatenate(
        [np.asarray(c.owner, dtype=np.int64) + o for c, o in zip(children, offsets, strict=True)]
    )
    if len(shells) == 0:
        return NodeOut(np.empty(0, dtype=object), Border.empty())
    parts = union_touching(shells)
    # the holes the union closed (background enclosed by pieces of several children)
    exteriors, closed, closed_owner = _split_rings(parts)
    closed_done, closed_areas = finish_rings(closed, finishing=finishing)
    holes = np.concatenate([holes, closed_done])
    hole_areas = np.concatenate([hole_areas, closed_areas])
    owner = np.concatenate([_containing_part(shells, parts)[owner], closed_owner])
    on_border = touched_sides(parts, window=group_bounds, scene_shape=scene_shape) != 0
    renumber = np.cumsum(~on_border) - 1
    done, done_areas = finish_rings(exteriors[~on_border], finishing=finishing)
    to_final = ~on_border[owner]
    final = assemble_polygons(
        done,
        done_areas,
        holes[to_final],
        hole_areas[to_final],
        renumber[owner[to_final]],
        finishing=finishing,
    )
    # collinear seam vertices go, so that later unions handle fewer
    up = shapely.simplify(shapely.polygons(exteriors[on_border]), 0.0, preserve_topology=False)
    renumber = np.cumsum(on_border) - 1
    border = Border(up, holes[~to_final], hole_areas[~to_final], renumber[owner[~to_final]])
    return NodeOut(final, border)


def border_polygons(border: Border) -> Pieces:
    """The pieces of a pixel-coordinate :class:`Border` as Polygons with their holes."""
    shells = np.asarray(border.shells, dtype=object)
    return assemble_polygons(
        shapely.get_exterior_ring(shells),
        shapely.area(shells),
        border.holes,
        border.hole_areas,
        border.owner,
        finishing=None,
    )


def merge_group(
    pieces_of_children: Sequence[Pieces],
    group_bounds: PixelWindow,
    scene_shape: tuple[int, int],
) -> tuple[Pieces, Pieces]:
    """:func:`merge_node` on plain pixel-coordinate Polygons (holes included), in and out.

    Args:
        pieces_of_children: per child, an ``(n_i,)`` object array of the pixel-coordinate
            Polygons it passed up (those touching one of its sides inside the scene).
        group_bounds: the union of the children's windows.
        scene_shape: ``(rows, cols)`` of the scene.

    Returns:
        ``(final, border)`` object arrays of Polygons: ``final`` ones touch no side of
        ``group_bounds`` inside the scene and are complete road components.
    """
    borders = [_to_border(np.asarray(p, dtype=object), None) for p in pieces_of_children]
    out = merge_node(borders, group_bounds, scene_shape)
    return out.final, border_polygons(out.border)


def _check_sieve(sieve_px: int) -> int:
    if isinstance(sieve_px, bool) or not isinstance(sieve_px, int | np.integer) or sieve_px < 0:
        raise InputError(f"sieve_px must be an integer >= 0, got {sieve_px!r}")
    return int(sieve_px)


def _regular_chunks(shape: tuple[int, int], chunks: int | Chunks) -> Chunks:
    if not isinstance(chunks, int | np.integer):
        if tuple(sum(c) for c in chunks) != shape or min(min(c) for c in chunks) < 1:
            raise InputError(f"chunks {chunks} do not tile an array of shape {shape}")
        return (tuple(chunks[0]), tuple(chunks[1]))
    edge = int(chunks)
    if edge < 1:
        raise InputError(f"chunk size must be >= 1, got {edge}")
    rows, cols = ((edge,) * (n // edge) + ((n % edge,) if n % edge else ()) for n in shape)
    return rows, cols


def _run_chunk(
    window_codes: NDArray[np.uint8],
    *,
    window: PixelWindow,
    core: PixelWindow,
    scene_shape: tuple[int, int],
    threshold: float,
    sieve_px: int,
) -> NodeOut:
    mask = road_mask(window_codes, threshold=threshold)
    final, border = chunk_polygons(
        mask, window=window, core=core, scene_shape=scene_shape, sieve_px=sieve_px
    )
    return leaf_out(final, border)


def walk_tree(
    levels: list[list[list[TreeNode]]],
    leaf: Callable[[TreeNode], tuple[F, B]],
    merge: Callable[[list[B], TreeNode], tuple[F, B]],
) -> list[F]:
    """Run the tree bottom-up: ``leaf`` per chunk, ``merge`` per node; return all finals."""
    finals: list[F] = []
    below: list[list[B]] = []
    for k, level in enumerate(levels):
        above = []
        for row in level:
            borders = []
            for node in row:
                if k == 0:
                    final, border = leaf(node)
                else:
                    final, border = merge([below[i][j] for i, j in node.children], node)
                finals.append(final)
                borders.append(border)
            above.append(borders)
        below = above
    return finals


def dissolve_array(
    codes: NDArray[np.uint8],
    *,
    threshold: float,
    sieve_px: int,
    chunks: int | Chunks = 512,
) -> Pieces:
    """Road polygons of a whole array, computed chunk by chunk and dissolved in-process.

    The result does not depend on ``chunks``: it is one Polygon per 4-connected component of
    the sieved road mask, as ``rasterio.features.shapes`` over the whole mask would give.

    Args:
        codes: ``(y, x)`` uint8 probability codes (255 = nodata).
        threshold: road probability threshold, see
            :func:`~roadnet.pipeline.vectorize.polygons.road_mask`.
        sieve_px: sieve size in pixels (0 or 1: none).
        chunks: chunk edge in pixels (last chunks ragged), or dask-style chunk sizes.

    Returns:
        ``(n,)`` object array of Polygons in pixel coordinates (x = col, y = row), in the same
        order as :func:`dissolve` gives for a dask array with these chunks.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise InputError(f"probability codes must be (y, x), got shape {codes.shape}")
    scene_shape = (int(codes.shape[0]), int(codes.shape[1]))
    halo = sieve_halo(_check_sieve(sieve_px))
    levels = tree_levels(chunk_windows(_regular_chunks(scene_shape, chunks)))

    def leaf(node: TreeNode) -> NodeOut:
        win = halo_window(node.window, halo=halo, scene_shape=scene_shape)
        return _run_chunk(
            codes[win.row_start : win.row_stop, win.col_start : win.col_stop],
            window=win,
            core=node.window,
            scene_shape=scene_shape,
            threshold=threshold,
            sieve_px=sieve_px,
        )

    def merge(children: list[Border], node: TreeNode) -> NodeOut:
        return merge_node(children, node.window, scene_shape)

    return np.concatenate(walk_tree(levels, leaf, merge))


def _polygonize_blocks(
    blocks: list[list[NDArray[np.uint8]]],
    *,
    origin: tuple[int, int],
    window: PixelWindow,
    core: PixelWindow,
    scene_shape: tuple[int, int],
    threshold: float,
    sieve_px: int,
) -> NodeOut:
    """Dask task: assemble a chunk's halo window from the blocks it spans, then polygonize."""
    codes = np.block(blocks) if len(blocks) > 1 or len(blocks[0]) > 1 else blocks[0][0]
    r, c = window.row_start - origin[0], window.col_start - origin[1]
    window_codes = codes[r : r + window.shape[0], c : c + window.shape[1]]
    return _run_chunk(
        window_codes,
        window=window,
        core=core,
        scene_shape=scene_shape,
        threshold=threshold,
        sieve_px=sieve_px,
    )


def dissolve_tree(codes: da.Array, *, threshold: float, sieve_px: int) -> list[Delayed]:
    """The dissolve as a dask graph: one task per chunk, one per tree node.

    Each chunk task receives the blocks of ``codes`` its halo window spans (the chunk and,
    for a halo up to a chunk wide, its eight neighbours) and cuts the window itself, so no
    slicing or rechunking tasks are added. Every node returns ``(final, border)``; only
    ``border`` goes to the parent, ``final`` is one of the returned delayed objects, so final
    polygons travel once, from the node that made them to whoever computes the list.

    Args:
        codes: ``(y, x)`` uint8 dask array of probability codes (255 = nodata), any chunks.
        threshold: road probability threshold.
        sieve_px: sieve size in pixels (0 or 1: none).

    Returns:
        One Delayed per chunk and tree node, each computing an ``(n_i,)`` object array of
        pixel-coordinate Polygons; their concatenation is the whole layer (see :func:`dissolve`).

    Raises:
        InputError: ``codes`` is not a 2-D uint8 array or ``sieve_px`` is negative.
    """
    from dask.delayed import delayed

    if codes.ndim != 2 or codes.dtype != np.uint8:
        raise InputError(f"probability codes must be (y, x) uint8, got {codes.dtype} {codes.shape}")
    lowest_road_code(threshold)  # fail on the client, not in every task
    scene_shape = (int(codes.shape[0]), int(codes.shape[1]))
    halo = sieve_halo(_check_sieve(sieve_px))
    chunks: Chunks = (tuple(codes.chunks[0]), tuple(codes.chunks[1]))
    windows = chunk_windows(chunks)
    levels = tree_levels(windows)
    blocks = cast("Callable[[], NDArray[np.object_]]", codes.to_delayed)()
    row_edges = [w[0].row_start for w in windows] + [scene_shape[0]]
    col_edges = [w.col_start for w in windows[0]] + [scene_shape[1]]

    lazy = cast("Callable[..., Callable[..., tuple[Delayed, Delayed]]]", delayed)
    polygonize_chunk = lazy(_polygonize_blocks, nout=2, pure=True)
    merge_task = lazy(merge_node, nout=2, pure=True)

    def leaf(node: TreeNode) -> tuple[Delayed, Delayed]:
        win = halo_window(node.window, halo=halo, scene_shape=scene_shape)
        # the blocks that the window overlaps
        i0 = int(np.searchsorted(row_edges, win.row_start, side="right")) - 1
        i1 = int(np.searchsorted(row_edges, win.row_stop, side="left"))
        j0 = int(np.searchsorted(col_edges, win.col_start, side="right")) - 1
        j1 = int(np.searchsorted(col_edges, win.col_stop, side="left"))
        final, border = polygonize_chunk(
            [list(blocks[i, j0:j1]) for i in range(i0, i1)],
            origin=(row_edges[i0], col_edges[j0]),
            window=win,
            core=node.window,
            scene_shape=scene_shape,
            threshold=threshold,
            sieve_px=sieve_px,
        )
        return final, border

    def merge(children: list[Delayed], node: TreeNode) -> tuple[Delayed, Delayed]:
        final, border = merge_task(children, node.window, scene_shape)
        return final, border

    return walk_tree(levels, leaf, merge)


def dissolve(codes: da.Array, *, threshold: float, sieve_px: int) -> Pieces:
    """Compute :func:`dissolve_tree` with the current dask scheduler and gather the layer.

    Args:
        codes: ``(y, x)`` uint8 dask array of probability codes (255 = nodata).
        threshold: road probability threshold.
        sieve_px: sieve size in pixels (0 or 1: none).

    Returns:
        ``(n,)`` object array of Polygons in pixel coordinates, one per road component, in the
        same order as :func:`dissolve_array` gives for the same chunks.
    """
    from dask.base import compute

    compute_all = cast("Callable[..., tuple[Pieces, ...]]", compute)
    parts = compute_all(*dissolve_tree(codes, threshold=threshold, sieve_px=sieve_px))
    return np.concatenate(parts)
