from __future__ import annotations

from functools import partial
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from _models import (
    boundary_step_ratio,
    mean_predictor,
    reference_probabilities,
    save_test_model,
    smooth_scene,
)

from roadnet.errors import InputError
from roadnet.pipeline.inference.blend import FILL_VALUE, pad_from_neighbours
from roadnet.pipeline.inference.graph import _neighbourhood_layer, model_shape_for, predict_array
from roadnet.pipeline.inference.runner import ModelRunner, validate_model


def _chunked(image: np.ndarray, predict, *, core: int, overlap: int, **kw) -> np.ndarray:  # type: ignore[no-untyped-def]
    _, _, shape = model_shape_for(image.shape[1:], core=core, overlap=overlap)
    arr = predict_array(
        da.from_array(image, chunks=(image.shape[0], core, core)),
        predict=predict,
        core=core,
        overlap=overlap,
        model_shape=shape,
        scale=1.0,
        **kw,
    )
    assert arr.chunks[1][0] == min(core, image.shape[1])
    assert all(c == core for c in arr.chunks[1][:-1] + arr.chunks[2][:-1])
    return np.asarray(arr.compute(scheduler="threads"))


@pytest.mark.parametrize(
    ("height", "width", "core", "overlap"),
    [
        (300, 420, 128, 32),
        (150, 290, 128, 32),
        (100, 90, 128, 32),
        (260, 260, 128, 0),
        (37, 100, 128, 64),  # thinner than the overlap: padded by repeated mirroring
        (20, 500, 128, 32),
    ],
)
def test_chunked_equals_whole_scene_numpy(height: int, width: int, core: int, overlap: int) -> None:
    """Ragged chunks, a remainder thinner than the overlap (290 = 2·128 + 34), one chunk."""
    image = smooth_scene(height, width)
    codes = _chunked(image, mean_predictor, core=core, overlap=overlap)
    ref = reference_probabilities(image, mean_predictor, overlap=overlap)
    diff = np.abs(codes / 254.0 - ref)
    if overlap:
        # Blending is exact up to uint8 rounding when the receptive field fits the margin
        # (and the uint16 pass-1 blocks' rounding, at most 1.2e-4: see BLOCK_SCALE).
        assert diff.max() <= 0.5 / 254 + 1.2e-4
    else:
        # Without overlap the zero padding at chunk borders shows: a seam.
        assert diff.max() > 2 / 254


def test_seam_free_with_keras_model(tmp_path: Path) -> None:
    """1500 x 1100 scene, 512 cores: blended chunks match whole-scene inference."""
    model = save_test_model(tmp_path / "m.keras")
    digest = validate_model(str(model))
    core, overlap = 512, 64
    image = smooth_scene(1100, 1500)
    _, _, shape = model_shape_for((1100, 1500), core=core, overlap=overlap)
    codes = _chunked(
        image,
        ModelRunner(model=str(model), digest=digest, shape=shape),
        core=core,
        overlap=overlap,
    )
    ph, pw = 1100 + 2 * overlap, 1500 + 2 * overlap
    whole = ModelRunner(
        model=str(model), digest=digest, shape=(-(-ph // 16) * 16, -(-pw // 16) * 16)
    )
    ref = reference_probabilities(image, whole, overlap=overlap)
    diff = np.abs(codes / 254.0 - ref)
    assert diff.max() <= 2 / 254
    assert diff.mean() < 0.5 / 254
    assert boundary_step_ratio(codes, core=core) <= 1.05


def test_graph_is_one_predict_and_one_blend_task_per_chunk() -> None:
    image = smooth_scene(300, 420)
    data = da.from_array(image, chunks=(3, 128, 128))
    _, _, shape = model_shape_for((300, 420), core=128, overlap=32)
    arr = predict_array(
        data, predict=mean_predictor, core=128, overlap=32, model_shape=shape, scale=1.0
    )
    chunks = 3 * 4
    assert len(dict(arr.__dask_graph__())) == len(dict(data.__dask_graph__())) + 2 * chunks


def test_neighbourhood_padding_equals_map_overlap_reflect() -> None:
    # Pass 1 builds each padded block from its neighbours' chunks in one task; it must give
    # what dask's own map_overlap gives with a reflect boundary, ragged last chunks included.
    image = smooth_scene(300, 420)
    data = da.from_array(image, chunks=(3, 128, 128)).rechunk(
        ((3,), (128, 128, 44), (128,) * 3 + (36,))
    )
    chunks = ((3,), tuple(c + 64 for c in data.chunks[1]), tuple(c + 64 for c in data.chunks[2]))
    ours = _neighbourhood_layer(
        partial(pad_from_neighbours, overlap=32),
        data,
        name="padded",
        chunks=chunks,
        dtype=data.dtype,
    )
    theirs = da.map_overlap(
        lambda block: block,
        data,
        depth={0: 0, 1: 32, 2: 32},
        boundary="reflect",
        trim=False,
        chunks=chunks,
    )
    assert ours.chunks == theirs.chunks
    assert np.array_equal(ours.compute(scheduler="sync"), theirs.compute(scheduler="sync"))


def test_seam_metric_detects_a_seam() -> None:
    image = smooth_scene(512, 512)
    seamed = _chunked(image, mean_predictor, core=128, overlap=0)
    blended = _chunked(image, mean_predictor, core=128, overlap=32)
    assert boundary_step_ratio(seamed, core=128) > 1.2
    assert boundary_step_ratio(blended, core=128) <= 1.05


def test_nodata_chunks_skip_the_model_and_come_out_as_fill() -> None:
    calls = []

    def counting(x: np.ndarray) -> np.ndarray:
        calls.append(1)
        return mean_predictor(x)

    image = smooth_scene(256, 384)
    image[image == 0] = 1
    image[:, :, 256:] = 0  # the right column of chunks is nodata
    image[:, 10:20, 30:40] = 0  # a nodata hole inside a chunk
    codes = _chunked(image, counting, core=128, overlap=32, nodata=0)
    assert len(calls) == 4  # 6 chunks, 2 all-nodata
    assert (codes[:, :, 256:] == FILL_VALUE).all()
    assert (codes[:, 10:20, 30:40] == FILL_VALUE).all()
    assert (codes[:, :, :256] != FILL_VALUE).sum() == 3 * (256 * 256 - 100)


def test_empty_scene_is_an_input_error() -> None:
    with pytest.raises(InputError, match="empty"):
        model_shape_for((0, 500), core=128, overlap=32)
