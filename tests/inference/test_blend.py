from __future__ import annotations

import numpy as np
import pytest
from _models import mean_predictor

from roadnet.pipeline.inference.blend import (
    BLOCK_SCALE,
    FILL_VALUE,
    encode_probability,
    merge_neighbours,
    pad_from_neighbours,
    plan_chunks,
    predict_block,
    quantize_block,
    ramp,
    to_model_input,
    valid_mask,
)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (1500, (512, 512, 476)),
        (1100, (512, 512, 76)),
        (1024, (512, 512)),
        (300, (300,)),
        (1050, (512, 269, 269)),
        (540, (270, 270)),
    ],
)
def test_plan_chunks(size: int, expected: tuple[int, ...]) -> None:
    chunks = plan_chunks(size, core=512, overlap=64)
    assert chunks == expected
    assert sum(chunks) == size


def test_ramp_is_positive_and_neighbours_sum_to_one() -> None:
    core, d = 128, 32
    for margin in (0, 8):
        w = ramp(core + 2 * d, d, margin=margin)
        assert (w[:margin] == 0).all() and (w[margin : core + 2 * d - margin] > 0).all()
        assert w.max() == 1.0 and np.allclose(w, w[::-1])
        # Neighbouring padded blocks overlap by 2d px: their ramps add up to exactly 1 there.
        assert np.allclose(w[-2 * d :] + w[: 2 * d], 1.0)
        # Scene pixels lie at least d px inside their own block: weight above 1/2.
        assert w[d] > 0.5
    assert np.array_equal(ramp(10, 0), np.ones(10, np.float32))


def test_valid_mask_nodata_nan_and_alpha() -> None:
    block = np.full((3, 2, 3), 7, dtype=np.uint16)
    block[:, 0, 0] = 0  # all bands nodata
    block[0, 0, 1] = 0  # one band only: still data
    assert valid_mask(block, nodata=0).tolist() == [[False, True, True], [True, True, True]]
    assert valid_mask(block, nodata=None).all()
    floats = block.astype(np.float32)
    floats[1, 1, 2] = np.nan
    assert not valid_mask(floats, nodata=None)[1, 2]
    rgba = np.concatenate([block, np.array([[[255, 255, 0], [255, 255, 255]]], np.uint16)])
    assert valid_mask(rgba, nodata=None, alpha=True).tolist() == [
        [True, True, False],
        [True, True, True],
    ]


def test_to_model_input_scales_clips_and_drops_alpha() -> None:
    block = np.array([[[0, 65535]], [[32768, 70000 % 65536]], [[1, 2]], [[9, 9]]], np.uint16)
    x = to_model_input(block, scale=255 / 65535, alpha=True)
    assert x.shape == (1, 2, 3) and x.dtype == np.float32
    assert x[0, 1, 0] == pytest.approx(255.0)
    assert x[0, 0, 1] == pytest.approx(127.5, abs=0.01)
    assert to_model_input(np.array([[[2.0]], [[np.nan]], [[0.5]]]), scale=255).tolist() == [
        [[255.0, 0.0, 127.5]]
    ]


def test_encode_probability_rounds_and_fills() -> None:
    weighted = np.array([[[0.5, 0.0], [2.0, 0.3]]], np.float32)
    weight = np.array([[1.0, 0.0], [2.0, 0.6]], np.float32)
    codes = encode_probability(weighted, weight)
    assert codes.dtype == np.uint8
    assert codes.tolist() == [[[127, FILL_VALUE], [254, 127]]]


def test_predict_block_skips_model_on_nodata_core_and_pads_to_model_shape() -> None:
    calls: list[tuple[int, ...]] = []

    def predictor(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape)
        return mean_predictor(x)

    d = 8
    block = np.zeros((3, 40, 50), np.uint8)
    block[:, :d, :] = 200  # data only in the overlap
    out = predict_block(
        block, predict=predictor, overlap=d, model_shape=(48, 64), scale=1.0, nodata=0
    )
    assert calls == [] and not out.any()
    block[:, 20, 20] = 100
    out = predict_block(
        block, predict=predictor, overlap=d, model_shape=(48, 64), scale=1.0, nodata=0
    )
    assert calls == [(1, 48, 64, 3)]
    assert out.shape == (4, 40, 50) and out.dtype == np.uint16
    weight = out[-1]
    assert weight[20, 20] == BLOCK_SCALE and weight[30, 30] == 0  # nodata pixel: no weight


def test_quantize_block_rounds_to_uint16() -> None:
    step = 1 / BLOCK_SCALE
    values = np.array([0.0, 0.49 * step, 0.51 * step, 0.5, 1 - 0.4 * step, 1.0], np.float32)
    codes = quantize_block(values.copy())
    assert codes.dtype == np.uint16
    assert codes.tolist() == [0, 0, 1, round(0.5 * BLOCK_SCALE), BLOCK_SCALE, BLOCK_SCALE]


def test_merge_neighbours_equals_overlap_add_on_a_canvas() -> None:
    # A 3 x 3 neighbourhood of padded blocks with cores of different sizes, summed by
    # placing every block on a canvas at its offset: the centre core must match exactly.
    d = 3
    heights, widths = (7, 5, 9), (6, 8, 4)
    rng = np.random.default_rng(0)
    blocks = [
        [rng.uniform(0.1, 1, (4, h + 2 * d, w + 2 * d)).astype(np.float32) for w in widths]
        for h in heights
    ]
    canvas = np.zeros((4, sum(heights) + 2 * d, sum(widths) + 2 * d), np.float32)
    y0s, x0s = np.cumsum((0, *heights[:-1])), np.cumsum((0, *widths[:-1]))
    for i, (h, y0) in enumerate(zip(heights, y0s, strict=True)):
        for j, (w, x0) in enumerate(zip(widths, x0s, strict=True)):
            canvas[:, y0 : y0 + h + 2 * d, x0 : x0 + w + 2 * d] += blocks[i][j]
    core = canvas[:, d + y0s[1] : d + y0s[1] + heights[1], d + x0s[1] : d + x0s[1] + widths[1]]
    codes = merge_neighbours(blocks, overlap=d)  # type: ignore[arg-type]
    assert codes.shape == (3, heights[1], widths[1])
    assert np.array_equal(codes, encode_probability(core[:3], core[3]))

    # At the scene's corner (no blocks above or left) only the others contribute.
    corner = [[None, None, None], [None, blocks[1][1], blocks[1][2]], [None, *blocks[2][1:]]]
    canvas[:] = 0
    for i in (1, 2):
        for j in (1, 2):
            y0, x0 = y0s[i], x0s[j]
            h, w = heights[i], widths[j]
            canvas[:, y0 : y0 + h + 2 * d, x0 : x0 + w + 2 * d] += blocks[i][j]
    core = canvas[:, d + y0s[1] : d + y0s[1] + heights[1], d + x0s[1] : d + x0s[1] + widths[1]]
    assert np.array_equal(
        merge_neighbours(corner, overlap=d), encode_probability(core[:3], core[3])
    )

    # uint16 blocks, as pass 1 makes them (w·p and w scaled alike, so p is the same): the
    # same codes within one, mostly identical.
    scale = 0.5 / max(b.max() for row in blocks for b in row)
    q = [[quantize_block(b * scale) for b in row] for row in blocks]
    quantized = [[None, None, None], [None, q[1][1], q[1][2]], [None, q[2][1], q[2][2]]]
    codes16 = merge_neighbours(quantized, overlap=d)  # type: ignore[arg-type]
    float_codes = merge_neighbours(corner, overlap=d)
    assert np.abs(codes16.astype(int) - float_codes).max() <= 1
    assert (codes16 == float_codes).mean() > 0.95


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_pad_from_neighbours_equals_mirrored_scene(dtype: type) -> None:
    # Chunks of unequal sizes, two of them exactly as thin as the overlap: every chunk's
    # padded block must be the same window of the whole scene mirrored by np.pad.
    d = 4
    heights, widths = (4, 9, 6), (7, 4, 5, 8)
    rng = np.random.default_rng(1)
    scene = rng.integers(0, 250, (2, sum(heights), sum(widths))).astype(dtype)
    mirrored = np.pad(scene, ((0, 0), (d, d), (d, d)), mode="symmetric")
    y0s, x0s = np.cumsum((0, *heights)), np.cumsum((0, *widths))
    chunks = [
        [scene[:, y0s[i] : y0s[i + 1], x0s[j] : x0s[j + 1]] for j in range(len(widths))]
        for i in range(len(heights))
    ]

    def chunk(i: int, j: int) -> np.ndarray | None:
        inside = 0 <= i < len(heights) and 0 <= j < len(widths)
        return chunks[i][j] if inside else None

    for i, h in enumerate(heights):
        for j, w in enumerate(widths):
            blocks = [[chunk(i + di, j + dj) for dj in (-1, 0, 1)] for di in (-1, 0, 1)]
            padded = pad_from_neighbours(blocks, overlap=d)
            expected = mirrored[:, y0s[i] : y0s[i] + h + 2 * d, x0s[j] : x0s[j] + w + 2 * d]
            assert padded.dtype == scene.dtype
            assert np.array_equal(padded, expected), (i, j)
