"""The vectorize graph on a cluster: one task per chunk that reads its own window.

Each chunk task reads the window it needs (the chunk plus the larger of the sieve halo and
the skeleton halo) straight from the result's Zarr arrays, then makes both the chunk's
polygons (:func:`~roadnet.pipeline.vectorize.polygons.chunk_polygons`) and its skeleton
piece (:func:`~roadnet.pipeline.vectorize.centerlines.window_piece`). A window overlaps up
to nine store chunks, and reading them in the task is a few milliseconds of decompression,
where taking them from dask arrays made workers send every chunk to its eight neighbours'
tasks over the network. The polygon pieces then go up the dissolve tree
(:func:`~roadnet.pipeline.vectorize.dissolve.merge_node`); the graph pieces go to the
client to be joined.

Every task returns one small :class:`TaskOut`, so the graph holds one key per chunk and per
tree node and no tuple-splitting tasks. Final polygons are finished where they become
complete (in map coordinates, holes filled, small ones dropped, simplified: see
:class:`~roadnet.pipeline.vectorize.polygons.Finishing`), so the client only gathers the
finished layer. A chunk without road anywhere in its window costs one read and one test.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from roadnet.pipeline.vectorize.centerlines import ChunkWindow, Source, plan_windows, window_piece
from roadnet.pipeline.vectorize.dissolve import (
    Border,
    TreeNode,
    chunk_windows,
    leaf_out,
    merge_node,
    tree_levels,
    walk_tree,
)
from roadnet.pipeline.vectorize.graph import GraphPiece
from roadnet.pipeline.vectorize.polygons import (
    Finishing,
    PixelWindow,
    chunk_polygons,
    halo_window,
    lowest_road_code,
    road_mask,
    sieve_halo,
)

if TYPE_CHECKING:
    from dask.delayed import Delayed

__all__ = ["TaskOut", "chunk_task", "merge_task", "task_grid", "vectorize_tasks"]

Pieces = NDArray[np.object_]


class TaskOut(NamedTuple):
    """What one chunk task or tree-node task returns.

    Attributes:
        final: ``(n,)`` complete road-surface Polygons, finished (pixel coordinates when
            the tasks were built without a :class:`~.polygons.Finishing`).
        border: the pieces passed up the dissolve tree (only the parent node reads them).
        piece: the chunk's skeleton :class:`GraphPiece`; None for tree nodes.
    """

    final: Pieces
    border: Border
    piece: GraphPiece | None


@functools.lru_cache(maxsize=8)
def _arrays(store: str) -> dict[str, Any]:
    """The result's code arrays, opened once per worker process and store."""
    import zarr

    group = zarr.open_group(store, mode="r")
    return {name: group[name] for name in ("surface", "centerline")}


def _read(store: str, name: str, bounds: tuple[int, int, int, int]) -> NDArray[np.uint8]:
    r0, r1, c0, c1 = bounds
    data: NDArray[np.uint8] = np.asarray(_arrays(store)[name][r0:r1, c0:c1])
    return data


def _crop(
    data: NDArray[np.uint8], read: tuple[int, int, int, int], want: tuple[int, int, int, int]
) -> NDArray[np.uint8]:
    return data[want[0] - read[0] : want[1] - read[0], want[2] - read[2] : want[3] - read[2]]


def chunk_task(
    store: str,
    *,
    core: PixelWindow,
    graph_window: ChunkWindow,
    scene_shape: tuple[int, int],
    threshold: float,
    sieve_px: int,
    source: Source,
    centerline_threshold: float,
    hole_px: int,
    finishing: Finishing | None = None,
    polygons: bool = True,
    graph: bool = True,
) -> TaskOut:
    """One chunk's polygons and skeleton piece, read from the store.

    Args:
        store: path of the result's Zarr store.
        core: the chunk, in global pixels.
        graph_window: the chunk's skeleton window (:func:`~.centerlines.plan_windows`).
        scene_shape: ``(height, width)`` of the result.
        threshold: surface cut-off.
        sieve_px: speckle size for the polygons.
        source: mask the skeleton is thinned from.
        centerline_threshold: centerline cut-off.
        hole_px: holes filled before thinning.
        finishing: how final polygons are finished; None keeps pixel coordinates.
        polygons: make the polygons (else ``final`` and ``border`` are empty).
        graph: make the skeleton piece (else ``piece`` is None).

    Returns:
        The chunk's final polygons, border pieces and :class:`GraphPiece`.
    """
    poly_win = halo_window(core, halo=sieve_halo(sieve_px), scene_shape=scene_shape)
    poly_bounds = (poly_win.row_start, poly_win.row_stop, poly_win.col_start, poly_win.col_stop)
    graph_bounds = graph_window.window
    spans = [b for b, on in ((poly_bounds, polygons), (graph_bounds, graph)) if on]
    read = (
        min(b[0] for b in spans),
        max(b[1] for b in spans),
        min(b[2] for b in spans),
        max(b[3] for b in spans),
    )
    surface = _read(store, "surface", read) if polygons or source != "centerline" else None
    final: Pieces = np.empty(0, dtype=object)
    border = Border.empty()
    if polygons and surface is not None:
        mask = road_mask(_crop(surface, read, poly_bounds), threshold=threshold)
        final_px, border_px = chunk_polygons(
            mask, window=poly_win, core=core, scene_shape=scene_shape, sieve_px=sieve_px
        )
        final, border = leaf_out(final_px, border_px, finishing=finishing)
    if not graph:
        return TaskOut(final, border, None)
    centerline = _read(store, "centerline", graph_bounds) if source != "surface" else None
    piece = window_piece(
        _crop(surface, read, graph_bounds) if surface is not None else None,
        centerline,
        window=graph_window,
        source=source,
        threshold=threshold,
        centerline_threshold=centerline_threshold,
        hole_px=hole_px,
    )
    return TaskOut(final, border, piece)


def merge_task(
    children: list[TaskOut],
    window: PixelWindow,
    scene_shape: tuple[int, int],
    finishing: Finishing | None = None,
) -> TaskOut:
    """One dissolve-tree node over its children's results (:func:`~.dissolve.merge_node`)."""
    out = merge_node([child.border for child in children], window, scene_shape, finishing=finishing)
    return TaskOut(out.final, out.border, None)


def task_grid(
    chunks: tuple[tuple[int, ...], tuple[int, ...]], per_task: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The grid of task windows: ``per_task`` x ``per_task`` store chunks each (fewer at the end).

    A task over 2 x 2 chunks of 512 px does the work of four with less halo (the polygon
    window grows 1.13 x instead of 1.27 x, the skeleton window 1.20 x instead of 1.41 x), a
    quarter of the tasks, and no union for the first tree level, where the shells are largest.
    """
    if per_task < 1:
        raise ValueError(f"per_task must be >= 1, got {per_task}")
    rows, cols = (
        tuple(sum(sizes[i : i + per_task]) for i in range(0, len(sizes), per_task))
        for sizes in chunks
    )
    return rows, cols


def vectorize_tasks(
    store: str,
    *,
    chunks: tuple[tuple[int, ...], tuple[int, ...]],
    threshold: float,
    sieve_px: int,
    source: Source = "surface",
    centerline_threshold: float | None = None,
    halo_px: int,
    hole_px: int,
    finishing: Finishing | None = None,
    chunks_per_task: int = 1,
    polygons: bool = True,
    graph: bool = True,
) -> list[Delayed]:
    """One delayed :class:`TaskOut` per task window and per dissolve-tree node.

    Args:
        store: path of the result's Zarr store (readable by every worker).
        chunks: the store's chunk sizes along ``y`` and ``x``.
        threshold: surface cut-off.
        sieve_px: speckle size for the polygons.
        source: mask the skeleton is thinned from.
        centerline_threshold: centerline cut-off (default ``threshold``).
        halo_px: skeleton context per chunk side.
        hole_px: holes filled before thinning.
        finishing: how final polygons are finished; None keeps pixel coordinates.
        chunks_per_task: store chunks per task window side (:func:`task_grid`); the result
            does not depend on it.
        polygons: make the road-surface polygons (and the dissolve tree).
        graph: make the skeleton pieces.

    Returns:
        The tasks, chunks first in row-major order: the concatenation of their ``final``
        arrays is the dissolved layer, their ``piece`` values (chunk tasks only) the
        skeleton pieces to join.
    """
    from dask.delayed import delayed

    lowest_road_code(threshold)  # fail here, not in every task
    if not (polygons or graph):
        raise ValueError("nothing to make: polygons and graph both off")
    chunks = task_grid(chunks, chunks_per_task)
    scene_shape = (sum(chunks[0]), sum(chunks[1]))
    windows = {w.core: w for w in plan_windows(chunks, halo_px=halo_px)}
    cut_c = threshold if centerline_threshold is None else centerline_threshold
    task = delayed(chunk_task, pure=True)
    merge = delayed(merge_task, pure=True)

    def leaf(node: TreeNode) -> tuple[Delayed, Delayed]:
        core = node.window
        bounds = (core.row_start, core.row_stop, core.col_start, core.col_stop)
        out = task(
            store,
            core=core,
            graph_window=windows[bounds],
            scene_shape=scene_shape,
            threshold=threshold,
            sieve_px=sieve_px,
            source=source,
            centerline_threshold=cut_c,
            hole_px=hole_px,
            finishing=finishing,
            polygons=polygons,
            graph=graph,
        )
        return out, out

    def up(children: list[Delayed], node: TreeNode) -> tuple[Delayed, Delayed]:
        out = merge(children, node.window, scene_shape, finishing)
        return out, out

    levels = tree_levels(chunk_windows(chunks))
    # Without polygons there is nothing to dissolve: the chunk tasks alone.
    outs: list[Delayed] = walk_tree(levels if polygons else levels[:1], leaf, up)
    return outs
