"""The inference graph: two ``map_overlap`` passes that predict and blend chunk edges.

Pass 1 predicts every core chunk with ``overlap`` px of context (reflected at the scene
border) and keeps the whole padded prediction, weighted (:func:`~roadnet.pipeline.blend.
predict_block`); its blocks are ``core + 2 * overlap`` px. Pass 2 gives every padded block
``overlap`` px of its neighbours' blocks — exactly their overhangs into its core — and sums
them into the core (:func:`~roadnet.pipeline.blend.merge_block`). Each model call sees one
block, the model runs once per chunk, and nothing crosses a chunk but the overhangs.
"""

from __future__ import annotations

from functools import partial

import dask.array as da
import numpy as np

from roadnet.errors import InputError
from roadnet.pipeline.blend import TASKS, merge_block, plan_chunks, predict_block
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
    blended = da.map_overlap(
        partial(merge_block, overlap=d),
        weighted,
        depth={0: 0, 1: d, 2: d},
        boundary=0,
        trim=False,
        allow_rechunk=False,
        chunks=((len(TASKS),), ys, xs),
        dtype=np.uint8,
        meta=np.empty((0, 0, 0), dtype=np.uint8),
        name="roadnet-blend",
    )
    result: da.Array = blended.rechunk((len(TASKS), core, core))
    return result
