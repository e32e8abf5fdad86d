"""Overlap-add blending of per-chunk predictions: pure numpy kernels, no dask.

Each core chunk (``core`` × ``core`` px, smaller at the scene's right and bottom edges) is
predicted with ``overlap`` px of context on every side. The prediction over the whole padded
block is kept and weighted by a separable linear ramp. Two neighbouring padded blocks overlap
by exactly ``2 * overlap`` px; there one block's ramp falls while the other's rises and the
two always add up to 1, so every pixel ends up as a weighted mean of the predictions that
cover it: ``p = Σ w·p / Σ w``.

The ramp is 0 on the outermost ``margin`` px of a padded block (default ``overlap // 4``),
where the model saw its own zero padding, and rises linearly over the next
``2 * (overlap - margin)`` px. Every pixel of the scene lies at least ``overlap`` px inside
its own block, so its weight there is above 1/2: pixels near the scene border (covered by
one block only, with mirrored context) keep their prediction. For a model whose receptive
field reaches at most ``margin`` px, the blended result equals whole-scene inference.

The weighted blocks travel between workers as uint16 (:data:`BLOCK_SCALE`). Probabilities
are stored as uint8 codes ``round(p * 254)``; code 255 is reserved for nodata (see
:data:`FILL_VALUE`, :data:`SCALE_FACTOR`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from roadnet.model.gsd import resample as resample_image
from roadnet.model.gsd import scaled_shape
from roadnet.tasks import TASKS

__all__ = [
    "FILL_VALUE",
    "SCALE_FACTOR",
    "default_margin",
    "encode_probability",
    "merge_neighbours",
    "pad_from_neighbours",
    "plan_chunks",
    "predict_block",
    "ramp",
    "to_model_input",
    "valid_mask",
]

FILL_VALUE = 255
CODE_MAX = 254
SCALE_FACTOR = 1.0 / CODE_MAX
#: Pass-1 blocks hold ``w·p`` and ``w`` (both in [0, 1]) as ``round(v * BLOCK_SCALE)`` in
#: uint16: blocks move between workers for the blend, and at half the bytes of float32 a
#: 2-worker run was faster (BENCHMARKS.md, "roadnet run"). The blended ``p = Σ w·p / Σ w``
#: moves by at most 1.2e-4 (the rounding of up to four blocks' terms over ``Σ w ≥ 1/2``), a
#: thirtieth of the 1/254 output step: a code changes only where ``p · 254`` lies that close
#: to a rounding boundary.
BLOCK_SCALE = 65535

Predictor = Callable[[np.ndarray], np.ndarray]


def plan_chunks(size: int, *, core: int, overlap: int) -> tuple[int, ...]:
    """Split ``size`` px into chunks of ``core`` px, none smaller than ``overlap``.

    A last remainder thinner than ``overlap`` cannot supply its neighbour's context, so it is
    merged with the chunk before it and the pair is split in two halves (each ≥ ``core / 2``).

    >>> plan_chunks(1100, core=512, overlap=64)
    (512, 512, 76)
    >>> plan_chunks(1050, core=512, overlap=64)
    (512, 269, 269)
    """
    full, rest = divmod(size, core)
    chunks = [core] * full + ([rest] if rest else [])
    if len(chunks) > 1 and chunks[-1] < overlap:
        pair = chunks[-2] + chunks.pop()
        chunks[-1:] = [pair - pair // 2, pair // 2]
    return tuple(chunks)


def default_margin(overlap: int) -> int:
    """Outer px of a padded block left out of the blend: ``overlap // 4``."""
    return overlap // 4


def ramp(length: int, overlap: int, *, margin: int | None = None) -> np.ndarray:
    """Blend weights along one axis of a padded block of ``length`` px.

    Args:
        length: padded block length (core + 2 * overlap).
        overlap: context per side.
        margin: outer px with weight 0 (default :func:`default_margin`); below ``overlap``.

    Returns:
        ``(length,)`` float32 in [0, 1]: 0 on the outer ``margin`` px, then
        ``(i + 0.5 - margin) / (2 * (overlap - margin))`` rising to 1, mirrored at the far
        end; all ones when ``overlap`` is 0.
    """
    if overlap == 0:
        return np.ones(length, dtype=np.float32)
    m = default_margin(overlap) if margin is None else margin
    i = np.arange(length, dtype=np.float64) + 0.5
    w = (np.minimum(i, length - i) - m) / (2 * (overlap - m))
    weights: np.ndarray = np.clip(w, 0.0, 1.0).astype(np.float32)
    return weights


def valid_mask(block: np.ndarray, *, nodata: float | None, alpha: bool = False) -> np.ndarray:
    """Pixels that hold data.

    Args:
        block: ``(band, y, x)`` scene values; with ``alpha`` the last band is an alpha mask.
        nodata: value marking missing pixels; a pixel is nodata when every image band holds
            it. NaN in any band of a float scene also marks the pixel missing.
        alpha: the last band is an alpha band (0 = transparent = missing).

    Returns:
        ``(y, x)`` bool, True where the pixel holds data.
    """
    image = block[:-1] if alpha else block
    valid = np.ones(block.shape[1:], dtype=bool)
    if nodata is not None and not np.isnan(nodata):
        valid &= ~np.all(image == image.dtype.type(nodata), axis=0)
    if image.dtype.kind == "f":
        valid &= ~np.any(np.isnan(image), axis=0)
    if alpha:
        valid &= block[-1] > 0
    return valid


def to_model_input(block: np.ndarray, *, scale: float, alpha: bool = False) -> np.ndarray:
    """Map scene values to the model's input scale.

    Args:
        block: ``(band, y, x)`` scene values of any numeric dtype.
        scale: factor to the 0–255 scale (``255 / input_max``).
        alpha: drop the last band (an alpha mask).

    Returns:
        ``(y, x, band)`` float32 in [0, 255], NaN replaced by 0.
    """
    image = block[:-1] if alpha else block
    x = np.empty((*image.shape[1:], image.shape[0]), dtype=np.float32)
    np.copyto(x, np.moveaxis(image, 0, -1), casting="unsafe")
    if scale != 1.0:
        x *= np.float32(scale)
    if image.dtype.kind == "f":
        np.nan_to_num(x, copy=False, nan=0.0)
    if image.dtype != np.uint8 or scale > 1.0:  # uint8 at scale <= 1 is within 0-255 already
        np.clip(x, 0.0, 255.0, out=x)
    return x


def predict_block(
    block: np.ndarray,
    *,
    predict: Predictor,
    overlap: int,
    model_shape: tuple[int, int],
    scale: float,
    nodata: float | None = None,
    alpha: bool = False,
    resample: float = 1.0,
) -> np.ndarray:
    """Predict one padded block and weight it for overlap-add.

    Args:
        block: ``(band, y, x)`` scene values of one core chunk plus ``overlap`` px of context
            on each side (reflected at the scene border).
        predict: maps ``(1, H, W, 3)`` float32 on the 0–255 scale to ``(H, W, 3)`` float32
            probabilities for surface, edge, centerline; always called with ``model_shape``.
        overlap: context width in px.
        model_shape: the one ``(H, W)`` the model is called with (≥ the block as the model
            sees it, multiples of 16); the block is padded to it by mirroring and the padding
            cropped afterwards.
        scale: factor from scene values to the 0–255 scale.
        nodata: scene nodata value, or None.
        alpha: the last band is an alpha mask.
        resample: model pixels per scene pixel: the block is resampled by this factor
            before the model and its probabilities back onto the block's own grid
            (:mod:`roadnet.model.gsd`); 1 predicts on the scene's grid.

    Returns:
        ``(4, y, x)`` uint16: ``w·p`` for surface, edge, centerline, then the weight ``w``,
        each ``round(v * BLOCK_SCALE)`` (see :data:`BLOCK_SCALE`). ``w`` is 0 on nodata
        pixels; a block whose core holds no data skips the model and is all zeros.
    """
    _, h, w = block.shape
    valid = valid_mask(block, nodata=nodata, alpha=alpha)
    if not valid[overlap : h - overlap, overlap : w - overlap].any():
        return np.zeros((len(TASKS) + 1, h, w), dtype=np.uint16)
    out = np.empty((len(TASKS) + 1, h, w), dtype=np.float32)
    x = to_model_input(block, scale=scale, alpha=alpha)
    sh, sw = (h, w) if resample == 1.0 else scaled_shape((h, w), resample)
    if (sh, sw) != (h, w):
        x = resample_image(x, (sh, sw))
    mh, mw = model_shape
    if (mh, mw) != (sh, sw):
        x = np.pad(x, ((0, mh - sh), (0, mw - sw), (0, 0)), mode="symmetric")
    probs = predict(x[np.newaxis])[:sh, :sw]
    if (sh, sw) != (h, w):
        probs = np.clip(resample_image(probs, (h, w)), 0.0, 1.0)
    weight = out[-1]
    np.multiply(ramp(h, overlap)[:, np.newaxis], ramp(w, overlap), out=weight)
    if not valid.all():
        weight *= valid
    np.multiply(np.moveaxis(probs, -1, 0), weight, out=out[: len(TASKS)])
    return quantize_block(out)


def quantize_block(block: np.ndarray) -> np.ndarray:
    """``round(block * BLOCK_SCALE)`` as uint16, for float32 values in [0, 1] (overwritten)."""
    block *= np.float32(BLOCK_SCALE)
    block += np.float32(0.5)  # then truncating rounds: the values are not negative
    result: np.ndarray = block.astype(np.uint16)
    return result


def _centre(blocks: list[list[np.ndarray | None]]) -> np.ndarray:
    """The chunk's own block, ``blocks[1][1]`` of a 3 x 3 neighbourhood."""
    centre = blocks[1][1]
    if centre is None:
        raise ValueError("a neighbourhood needs its centre block")
    return centre


def pad_from_neighbours(blocks: list[list[np.ndarray | None]], *, overlap: int) -> np.ndarray:
    """One chunk with ``overlap`` px of context from its neighbours, mirrored beyond the scene.

    Args:
        blocks: 3 × 3 nested list of ``(band, y, x)`` scene chunks, ``blocks[1][1]`` this
            chunk, the others its neighbours, None beyond the scene. A chunk is at least
            ``overlap`` px along an axis unless it is the scene's only chunk along it.
        overlap: context per side in px.

    Returns:
        ``(band, y + 2 * overlap, x + 2 * overlap)`` of the chunk's dtype; beyond the scene
        the context mirrors the scene about its border, repeating the border pixel (numpy's
        ``symmetric`` mode, dask's ``reflect`` boundary), corners mirrored along both axes.
    """
    d = overlap
    centre = _centre(blocks)
    if d == 0:
        return centre
    bands, h, w = centre.shape
    out = np.empty((bands, h + 2 * d, w + 2 * d), dtype=centre.dtype)
    into = (slice(0, d), slice(d, d + h), slice(d + h, None))
    into_x = (slice(0, d), slice(d, d + w), slice(d + w, None))
    take = (slice(-d, None), slice(None), slice(0, d))
    for i, row in enumerate(blocks):
        for j, block in enumerate(row):
            if block is not None:
                out[:, into[i], into_x[j]] = block[:, take[i], take[j]]
    # Mirror the missing sides: columns first, then rows over the full width (corners).
    # An axis thinner than the overlap (a thin scene, one chunk along it) mirrors repeatedly.
    if w < d:
        out[:] = np.pad(out[:, :, d : d + w], ((0, 0), (0, 0), (d, d)), mode="symmetric")
    else:
        if blocks[1][0] is None:
            out[:, :, :d] = out[:, :, 2 * d - 1 : d - 1 : -1]
        if blocks[1][2] is None:
            out[:, :, d + w :] = out[:, :, d + w - 1 : w - 1 : -1]
    if h < d:
        out[:] = np.pad(out[:, d : d + h], ((0, 0), (d, d), (0, 0)), mode="symmetric")
    else:
        if blocks[0][1] is None:
            out[:, :d] = out[:, 2 * d - 1 : d - 1 : -1]
        if blocks[2][1] is None:
            out[:, d + h :] = out[:, d + h - 1 : h - 1 : -1]
    return out


def merge_neighbours(blocks: list[list[np.ndarray | None]], *, overlap: int) -> np.ndarray:
    """Sum one chunk's weighted prediction and its neighbours' overhangs, and encode it.

    Neighbouring padded blocks overlap by ``2 * overlap`` px, so each neighbour reaches
    ``overlap`` px into this chunk's core: the block above with its last ``overlap`` rows,
    the block below with its first ``overlap`` rows, the left and right blocks likewise
    with columns, and the diagonal ones with an ``overlap`` × ``overlap`` corner.

    Args:
        blocks: 3 × 3 nested list of :func:`predict_block` outputs (uint16, or float32
            ``w·p`` and ``w`` unscaled), ``blocks[1][1]`` this chunk's
            (``(4, core_y + 2 * overlap, core_x + 2 * overlap)``), the others its
            neighbours' in the same layout, None beyond the scene.
        overlap: context per side in px; every core is at least this large.

    Returns:
        ``(3, core_y, core_x)`` uint8 probability codes (see :func:`encode_probability`).
    """
    d = overlap
    centre = _centre(blocks)
    h, w = centre.shape[1] - 2 * d, centre.shape[2] - 2 * d
    total = centre[:, d : d + h, d : d + w].astype(np.float32)
    if d:
        # Where a neighbour one step away along an axis lands in this core, and what it gives.
        into = {-1: slice(0, d), 0: slice(0, None), 1: slice(-d, None)}
        take = {-1: slice(-d, None), 0: slice(d, -d), 1: slice(0, d)}
        for i, row in enumerate(blocks):
            for j, block in enumerate(row):
                if block is None or (i, j) == (1, 1):
                    continue
                dy, dx = i - 1, j - 1
                total[:, into[dy], into[dx]] += block[:, take[dy], take[dx]]
    return encode_probability(total[: len(TASKS)], total[-1])


def encode_probability(weighted: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Normalize summed predictions and encode them as uint8.

    Args:
        weighted: ``(task, y, x)`` float32 sums of ``w·p``.
        weight: ``(y, x)`` float32 sums of ``w`` on the same scale; 0 marks nodata.

    Returns:
        ``(task, y, x)`` uint8: ``round(p * 254)`` in 0–254, :data:`FILL_VALUE` on nodata.
    """
    has = weight > 0
    inverse = np.divide(np.float32(CODE_MAX), weight, out=np.zeros_like(weight), where=has)
    p = np.multiply(weighted, inverse, dtype=np.float32)
    np.clip(p, 0.0, CODE_MAX, out=p)
    np.rint(p, out=p)
    codes = p.astype(np.uint8)
    if not has.all():
        codes[:, ~has] = FILL_VALUE
    result: np.ndarray = codes
    return result
