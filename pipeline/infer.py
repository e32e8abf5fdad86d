"""The inference graph: ``map_overlap`` predicts every chunk with context, then a blend pass.

Pass 1 (``map_overlap``) predicts every core chunk with ``overlap`` px of context (reflected
at the scene border) and keeps the whole padded prediction, weighted (:func:`~roadnet.
pipeline.blend.predict_block`); its blocks are ``core + 2 * overlap`` px. Pass 2 is one task
per chunk that takes its own padded block and its (up to) eight neighbours' and sums their
overhangs into its core (:func:`~roadnet.pipeline.blend.merge_neighbours`). Each model call
sees one block and the model runs once per chunk.

Pass 2 is written as a graph layer of its own rather than a second ``map_overlap``, which
would first cut every neighbour's overhang out in a task of its own and concatenate the
pieces: with it a chunk took 34 tasks, now 18, and the run got faster (see BENCHMARKS.md).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.highlevelgraph import HighLevelGraph

from roadnet.errors import InputError
from roadnet.pipeline.blend import TASKS, merge_neighbours, plan_chunks, predict_block
from roadnet.pipeline.blend import Predictor as Predictor

__all__ = ["model_shape_for", "predict_array"]


def _round_up(n: int, multiple: int = 16) -> int:
    return -(-n // multiple) * multiple


def model_shape_for(
    shape: tuple[int, int], *, core: int, overlap: int
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, int]]:
    """Chunking and the single model input shape for a scene.

    Args:
        shape: scene ``(height, width)`` in px.
        core: core chunk size.
        overlap: context per side.

    Returns:
        ``(y_chunks, x_chunks, (H, W))``: the chunks inference runs on (see
        :func:`~roadnet.pipeline.blend.plan_chunks`) and the model input shape, the largest
        padded block rounded up to a multiple of 16.

    Raises:
        InputError: the scene is thinner than the overlap.
    """
    if min(shape) < max(overlap, 1):
        raise InputError(
            f"scene of {shape[1]} x {shape[0]} px is thinner than the overlap ({overlap} px)"
        )
    ys = plan_chunks(shape[0], core=core, overlap=overlap)
    xs = plan_chunks(shape[1], core=core, overlap=overlap)
    return ys, xs, (_round_up(max(ys) + 2 * overlap), _round_up(max(xs) + 2 * overlap))


def predict_array(
    data: da.Array,
    *,
    predict: Predictor,
    core: int,
    overlap: int,
    model_shape: tuple[int, int],
    scale: float,
    nodata: float | None = None,
    alpha: bool = False,
) -> da.Array:
    """Build the lazy blended prediction of a scene.

    Args:
        data: ``(band, y, x)`` scene values (any chunks).
        predict: the model call, see :func:`~roadnet.pipeline.blend.predict_block`; it is
            pickled into the graph, so it must be small (a
            :class:`~roadnet.pipeline.worker_model.ModelRunner`, not a model).
        core: core chunk size of the output.
        overlap: context per side; at most ``core // 2``.
        model_shape: the model input shape from :func:`model_shape_for`.
        scale: factor from scene values to 0–255.
        nodata: scene nodata value.
        alpha: the last band of ``data`` is an alpha mask.

    Returns:
        ``(task, y, x)`` uint8 probability codes, chunks ``(3, core, core)``.
    """
    d = overlap
    ys, xs, _ = model_shape_for(data.shape[1:], core=core, overlap=d)
    data = data.rechunk(((data.shape[0],), ys, xs))
    kernel = partial(
        predict_block,
        predict=predict,
        overlap=d,
        model_shape=model_shape,
        scale=scale,
        nodata=nodata,
        alpha=alpha,
    )
    channels = len(TASKS) + 1
    if d == 0:
        weighted = da.map_blocks(
            kernel, data, chunks=((channels,), ys, xs), dtype=np.float32, name="roadnet-predict"
        )
    else:
        weighted = da.map_overlap(
            kernel,
            data,
            depth={0: 0, 1: d, 2: d},
            boundary="reflect",
            trim=False,
            allow_rechunk=False,
            chunks=((channels,), tuple(c + 2 * d for c in ys), tuple(c + 2 * d for c in xs)),
            dtype=np.float32,
            meta=np.empty((0, 0, 0), dtype=np.float32),
            name="roadnet-predict",
        )
    blended = _blend(weighted, ys=ys, xs=xs, overlap=d)
    result: da.Array = blended.rechunk((len(TASKS), core, core))
    return result


def _blend(
    weighted: da.Array, *, ys: tuple[int, ...], xs: tuple[int, ...], overlap: int
) -> da.Array:
    """Pass 2: one :func:`~roadnet.pipeline.blend.merge_neighbours` task per chunk."""
    name = "roadnet-blend-" + dask.base.tokenize(weighted.name, overlap)
    rows, cols = len(ys), len(xs)
    merge = partial(merge_neighbours, overlap=overlap)
    reach = (-1, 0, 1) if overlap else (0,)

    def key(i: int, j: int) -> tuple[str, int, int, int] | None:
        return (weighted.name, 0, i, j) if 0 <= i < rows and 0 <= j < cols else None

    layer: dict[Any, Any] = {
        (name, 0, i, j): (
            merge,
            [
                [key(i + di, j + dj) if di in reach and dj in reach else None for dj in (-1, 0, 1)]
                for di in (-1, 0, 1)
            ],
        )
        for i in range(rows)
        for j in range(cols)
    }
    dependencies: list[Any] = [weighted]
    graph = HighLevelGraph.from_collections(name, layer, dependencies=dependencies)
    return da.Array(graph, name, chunks=((len(TASKS),), ys, xs), dtype=np.uint8)
