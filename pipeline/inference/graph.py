"""The inference graph: every chunk predicted with context, then blended into its neighbours.

Pass 1 predicts every core chunk with ``overlap`` px of context (mirrored at the scene
border) and keeps the whole padded prediction, weighted, as uint16
(:func:`~roadnet.pipeline.inference.blend.predict_block`); its blocks are ``core + 2 * overlap`` px.
Pass 2 sums each chunk's block and its (up to) eight neighbours' overhangs into its core
(:func:`~roadnet.pipeline.inference.blend.merge_neighbours`). Each model call sees one block and the
model runs once per chunk.

Both passes are ``map_overlap`` in what they compute, but each is one graph layer of one
task per chunk whose inputs are the chunk's and its neighbours' blocks themselves
(:func:`_neighbourhood_layer`); ``da.map_overlap`` would first cut every neighbour's strip
out in a task of its own and concatenate the pieces. So a chunk takes three tasks (read,
predict, blend-and-write), far fewer than two ``map_overlap`` passes make: on a small
machine the scheduler's and workers' per-task work is taken from TensorFlow (BENCHMARKS.md,
"roadnet run"). A test checks pass 1's padded blocks against ``da.map_overlap`` with a
reflect boundary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.highlevelgraph import HighLevelGraph

from roadnet.errors import InputError
from roadnet.model.gsd import scaled_shape
from roadnet.pipeline.inference.batches import Stencil, Unit
from roadnet.pipeline.inference.blend import Predictor as Predictor
from roadnet.pipeline.inference.blend import (
    merge_neighbours,
    pad_from_neighbours,
    plan_chunks,
    predict_block,
)
from roadnet.tasks import INPUT_MULTIPLE, TASKS

__all__ = ["BlendPlan", "blend_plan", "model_shape_for", "predict_array"]


def _round_up(n: int, multiple: int = INPUT_MULTIPLE) -> int:
    return -(-n // multiple) * multiple


def model_shape_for(
    shape: tuple[int, int], *, core: int, overlap: int, resample: float = 1.0
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, int]]:
    """Chunking and the single model input shape for a scene.

    Args:
        shape: scene ``(height, width)`` in px.
        core: core chunk size.
        overlap: context per side.
        resample: model pixels per scene pixel (see
            :func:`~roadnet.pipeline.inference.blend.predict_block`).

    Returns:
        ``(y_chunks, x_chunks, (H, W))``: the chunks inference runs on (see
        :func:`~roadnet.pipeline.inference.blend.plan_chunks`) and the model input shape,
        the largest padded block, resampled, rounded up to the model's input multiple.

    A scene thinner than the overlap is one chunk along that axis, its context mirrored
    repeatedly (:func:`~roadnet.pipeline.inference.blend.pad_from_neighbours`).

    Raises:
        InputError: the scene is empty.
    """
    if min(shape) < 1:
        raise InputError(f"scene of {shape[1]} x {shape[0]} px is empty")
    ys = plan_chunks(shape[0], core=core, overlap=overlap)
    xs = plan_chunks(shape[1], core=core, overlap=overlap)
    block = (max(ys) + 2 * overlap, max(xs) + 2 * overlap)
    if resample != 1.0:
        block = scaled_shape(block, resample)
    return ys, xs, (_round_up(block[0]), _round_up(block[1]))


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
    resample: float = 1.0,
) -> da.Array:
    """Build the lazy blended prediction of a scene.

    Args:
        data: ``(band, y, x)`` scene values (any chunks).
        predict: the model call, see :func:`~roadnet.pipeline.inference.blend.predict_block`; it is
            pickled into the graph, so it must be small (a
            :class:`~roadnet.pipeline.inference.runner.ModelRunner`, not a model).
        core: core chunk size of the output.
        overlap: context per side; at most ``core // 2``.
        model_shape: the model input shape from :func:`model_shape_for`.
        scale: factor from scene values to 0–255.
        nodata: scene nodata value.
        alpha: the last band of ``data`` is an alpha mask.
        resample: model pixels per scene pixel (see
            :func:`~roadnet.pipeline.inference.blend.predict_block`).

    Returns:
        ``(task, y, x)`` uint8 probability codes, chunks ``(3, core, core)``.
    """
    d = overlap
    ys, xs, _ = model_shape_for(data.shape[1:], core=core, overlap=d)
    data = data.rechunk(((data.shape[0],), ys, xs))
    kernel = _kernel(
        predict=predict,
        overlap=d,
        model_shape=model_shape,
        scale=scale,
        nodata=nodata,
        alpha=alpha,
        resample=resample,
    )
    channels = len(TASKS) + 1
    if d == 0:
        weighted = da.map_blocks(
            kernel, data, chunks=((channels,), ys, xs), dtype=np.uint16, name="roadnet-predict"
        )
    else:
        weighted = _neighbourhood_layer(
            partial(_predict_padded, kernel=kernel, overlap=d),
            data,
            name="roadnet-predict-" + dask.base.tokenize(data.name, kernel),
            chunks=((channels,), tuple(c + 2 * d for c in ys), tuple(c + 2 * d for c in xs)),
            dtype=np.uint16,
        )
    blended = _blend(weighted, ys=ys, xs=xs, overlap=d)
    result: da.Array = blended.rechunk((len(TASKS), core, core))
    return result


def _kernel(
    *,
    predict: Predictor,
    overlap: int,
    model_shape: tuple[int, int],
    scale: float,
    nodata: float | None,
    alpha: bool,
    resample: float,
) -> Any:
    """Pass 1's per-block call: :func:`~roadnet.pipeline.inference.blend.predict_block`."""
    return partial(
        predict_block,
        predict=predict,
        overlap=overlap,
        model_shape=model_shape,
        scale=scale,
        nodata=nodata,
        alpha=alpha,
        resample=resample,
    )


def _predict_padded(
    blocks: list[list[np.ndarray | None]], *, kernel: Any, overlap: int
) -> np.ndarray:
    result: np.ndarray = kernel(pad_from_neighbours(blocks, overlap=overlap))
    return result


def _predict_alone(blocks: list[list[np.ndarray]], *, kernel: Any) -> np.ndarray:
    """Pass 1 without overlap: ``blocks`` is the 1 x 1 list of the chunk itself."""
    result: np.ndarray = kernel(blocks[0][0])
    return result


def _neighbourhood_layer(
    func: Any,
    array: da.Array,
    *,
    name: str,
    chunks: tuple[tuple[int, ...], ...],
    dtype: Any,
    reach: bool = True,
) -> da.Array:
    """One ``func(blocks)`` task per chunk of a ``(1, rows, cols)``-block array.

    ``blocks`` is the 3 x 3 nested list of the chunk's block and its neighbours' (None beyond
    the array, and everywhere but the centre when ``reach`` is false), the task's own inputs:
    no slicing or concatenating tasks in between.
    """
    _, rows, cols = array.numblocks

    def key(i: int, j: int) -> tuple[str, int, int, int] | None:
        return (array.name, 0, i, j) if 0 <= i < rows and 0 <= j < cols else None

    steps = (-1, 0, 1) if reach else (0,)
    layer: dict[Any, Any] = {
        (name, 0, i, j): (
            func,
            [
                [key(i + di, j + dj) if di in steps and dj in steps else None for dj in (-1, 0, 1)]
                for di in (-1, 0, 1)
            ],
        )
        for i in range(rows)
        for j in range(cols)
    }
    dependencies: list[Any] = [array]
    graph = HighLevelGraph.from_collections(name, layer, dependencies=dependencies)
    return da.Array(graph, name, chunks=chunks, dtype=dtype)


def _blend(
    weighted: da.Array, *, ys: tuple[int, ...], xs: tuple[int, ...], overlap: int
) -> da.Array:
    """Pass 2: one :func:`~roadnet.pipeline.inference.blend.merge_neighbours` task per chunk."""
    return _neighbourhood_layer(
        partial(merge_neighbours, overlap=overlap),
        weighted,
        name="roadnet-blend-" + dask.base.tokenize(weighted.name, overlap),
        chunks=((len(TASKS),), ys, xs),
        dtype=np.uint8,
        reach=overlap > 0,
    )


@dataclass(frozen=True)
class BlendPlan:
    """The blend of a scene as a two-pass stencil for :func:`~.batches.run_stencil`.

    Attributes:
        stencil: scene reads, pass 1 (predict with context), pass 2 (blend and hand over).
        grid: ``(rows, cols)`` of inference chunks.
        ys: inference chunk heights (:func:`~roadnet.pipeline.inference.blend.plan_chunks`).
        xs: inference chunk widths.
        core: output chunk size.
    """

    stencil: Stencil
    grid: tuple[int, int]
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    core: int

    def units(self, todo: np.ndarray) -> list[Unit]:
        """The pass-2 units making the output chunks ``todo`` (``(rows, cols)`` bool).

        A unit is a rectangle of inference chunks that together make whole output chunks:
        one chunk, except where a thin last remainder made the last two inference chunks
        of an axis straddle the last two output chunks.
        """
        units = []
        for rows, out_rows in _axis_groups(self.ys, self.core):
            for cols, out_cols in _axis_groups(self.xs, self.core):
                if todo[out_rows[0] : out_rows[1], out_cols[0] : out_cols[1]].any():
                    units.append((rows, cols))
        return units


def blend_plan(
    data: da.Array,
    *,
    predict: Predictor,
    core: int,
    overlap: int,
    model_shape: tuple[int, int],
    scale: float,
    consume: Callable[..., None],
    nodata: float | None = None,
    alpha: bool = False,
    resample: float = 1.0,
) -> BlendPlan:
    """The same blend as :func:`predict_array`, as a stencil whose pass 2 hands results over.

    Args:
        data: ``(band, y, x)`` scene values (any chunks).
        predict: the model call, as for :func:`predict_array`.
        core: core chunk size of the output.
        overlap: context per side; at most ``core // 2``.
        model_shape: the model input shape from :func:`model_shape_for`.
        scale: factor from scene values to 0–255.
        consume: called on a worker as ``consume(codes, row=row, col=col)`` with the
            ``(task, y, x)`` uint8 codes of whole output chunks starting at output chunk
            ``(row, col)``; its result is dropped.
        nodata: scene nodata value.
        alpha: the last band of ``data`` is an alpha mask.
        resample: model pixels per scene pixel, as for :func:`predict_array`.
    """
    d = overlap
    ys, xs, _ = model_shape_for(data.shape[1:], core=core, overlap=d)
    reads = data.rechunk(((data.shape[0],), ys, xs)).to_delayed(optimize_graph=True)
    kernel = _kernel(
        predict=predict,
        overlap=d,
        model_shape=model_shape,
        scale=scale,
        nodata=nodata,
        alpha=alpha,
        resample=resample,
    )
    stencil = Stencil(
        read=lambda i, j: reads[0, i, j],
        first=partial(_predict_padded, kernel=kernel, overlap=d)
        if d
        else partial(_predict_alone, kernel=kernel),
        second=partial(_blend_unit, overlap=d, ys=ys, xs=xs, core=core, consume=consume),
        first_reach=d > 0,
        second_reach=d > 0,
    )
    return BlendPlan(stencil=stencil, grid=(len(ys), len(xs)), ys=ys, xs=xs, core=core)


def _axis_groups(
    chunks: tuple[int, ...], core: int
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Runs of inference chunks along an axis that end on output chunk borders.

    Returns:
        ``((i0, i1), (o0, o1))`` pairs: inference chunks ``i0 .. i1 - 1`` cover exactly the
        output chunks ``o0 .. o1 - 1``.
    """
    groups = []
    start, offset = 0, 0
    for i, size in enumerate(chunks):
        offset += size
        if offset % core == 0 or i == len(chunks) - 1:
            first = sum(chunks[:start]) // core
            groups.append(((start, i + 1), (first, -(-offset // core))))
            start = i + 1
    return groups


def _blend_unit(
    blocks: list[list[np.ndarray | None]],
    *,
    rows: tuple[int, int],
    cols: tuple[int, int],
    overlap: int,
    ys: tuple[int, ...],
    xs: tuple[int, ...],
    core: int,
    consume: Callable[..., None],
) -> None:
    """Pass 2 of a unit: blend each of its chunks, join them and hand them over."""
    pad = 1 if overlap else 0
    parts = []
    for a in range(rows[1] - rows[0]):
        line = []
        for b in range(cols[1] - cols[0]):
            if pad:
                around = [blocks[a + k][b : b + 3] for k in range(3)]
            else:
                around = [[None] * 3, [None, blocks[a][b], None], [None] * 3]
            line.append(merge_neighbours(around, overlap=overlap))
        parts.append(line)
    codes = np.block([[p[None] if p.ndim == 2 else p for p in line] for line in parts])
    y0, x0 = sum(ys[: rows[0]]), sum(xs[: cols[0]])
    consume(codes, row=y0 // core, col=x0 // core)
