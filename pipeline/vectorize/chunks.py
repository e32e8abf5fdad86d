"""The vectorize graph on a cluster: one task per chunk that reads its own window.

Each chunk task reads the window it needs (the chunk plus the larger of the sieve halo and
the skeleton halo) straight from the result's Zarr arrays, then makes both the chunk's
polygons (:func:`~roadnet.pipeline.vectorize.polygons.chunk_polygons`) and its skeleton
piece (:func:`~roadnet.pipeline.vectorize.centerlines.window_piece`). A window overlaps up
to nine store chunks, and reading them in the task is a few milliseconds of decompression,
where taking them from dask arrays made workers send every chunk to its eight neighbours'
tasks over the network. The polygon pieces then go up the dissolve tree
(:func:`~roadnet.pipeline.vectorize.dissolve.merge_group`); the graph pieces go to the
client to be joined.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from roadnet.pipeline.vectorize.centerlines import ChunkWindow, Source, plan_windows, window_piece
from roadnet.pipeline.vectorize.dissolve import (
    TreeNode,
    chunk_windows,
    merge_group,
    tree_levels,
    walk_tree,
)
from roadnet.pipeline.vectorize.graph import GraphPiece
from roadnet.pipeline.vectorize.polygons import (
    PixelWindow,
    chunk_polygons,
    halo_window,
    lowest_road_code,
    road_mask,
    sieve_halo,
)

if TYPE_CHECKING:
    from dask.delayed import Delayed

__all__ = ["chunk_task", "vectorize_tasks"]

Pieces = NDArray[np.object_]


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
) -> tuple[Pieces, Pieces, GraphPiece]:
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

    Returns:
        ``(final, border)`` polygons in pixel coordinates and the :class:`GraphPiece`.
    """
    poly_win = halo_window(core, halo=sieve_halo(sieve_px), scene_shape=scene_shape)
    poly_bounds = (poly_win.row_start, poly_win.row_stop, poly_win.col_start, poly_win.col_stop)
    graph_bounds = graph_window.window
    read = (
        min(poly_bounds[0], graph_bounds[0]),
        max(poly_bounds[1], graph_bounds[1]),
        min(poly_bounds[2], graph_bounds[2]),
        max(poly_bounds[3], graph_bounds[3]),
    )
    surface = _read(store, "surface", read)
    mask = road_mask(_crop(surface, read, poly_bounds), threshold=threshold)
    final, border = chunk_polygons(
        mask, window=poly_win, core=core, scene_shape=scene_shape, sieve_px=sieve_px
    )
    centerline = _read(store, "centerline", graph_bounds) if source != "surface" else None
    piece = window_piece(
        _crop(surface, read, graph_bounds) if source != "centerline" else None,
        centerline,
        window=graph_window,
        source=source,
        threshold=threshold,
        centerline_threshold=centerline_threshold,
        hole_px=hole_px,
    )
    return final, border, piece


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
) -> tuple[list[Delayed], list[Delayed]]:
    """The delayed polygon finals (one per chunk and tree node) and graph pieces (per chunk).

    Args:
        store: path of the result's Zarr store (readable by every worker).
        chunks: the store's chunk sizes along ``y`` and ``x``.
        threshold: surface cut-off.
        sieve_px: speckle size for the polygons.
        source: mask the skeleton is thinned from.
        centerline_threshold: centerline cut-off (default ``threshold``).
        halo_px: skeleton context per chunk side.
        hole_px: holes filled before thinning.

    Returns:
        ``(finals, pieces)``: computing ``finals`` gives object arrays of pixel-coordinate
        Polygons whose concatenation is the dissolved layer; ``pieces`` the
        :class:`GraphPiece` of every chunk.
    """
    from dask.delayed import delayed

    lowest_road_code(threshold)  # fail here, not in every task
    scene_shape = (sum(chunks[0]), sum(chunks[1]))
    windows = {w.core: w for w in plan_windows(chunks, halo_px=halo_px)}
    cut_c = threshold if centerline_threshold is None else centerline_threshold
    task = delayed(chunk_task, nout=3, pure=True)
    merge = delayed(merge_group, nout=2, pure=True)
    pieces: list[Delayed] = []

    def leaf(node: TreeNode) -> tuple[Delayed, Delayed]:
        core = node.window
        bounds = (core.row_start, core.row_stop, core.col_start, core.col_stop)
        final, border, piece = task(
            store,
            core=core,
            graph_window=windows[bounds],
            scene_shape=scene_shape,
            threshold=threshold,
            sieve_px=sieve_px,
            source=source,
            centerline_threshold=cut_c,
            hole_px=hole_px,
        )
        pieces.append(piece)
        return final, border

    def up(children: list[Delayed], node: TreeNode) -> tuple[Delayed, Delayed]:
        final, border = merge(children, node.window, scene_shape)
        return final, border

    finals = walk_tree(tree_levels(chunk_windows(chunks)), leaf, up)
    return finals, pieces
