"""The error map: classes, shrinking with a maximum, colours over a faded scene, the PNG."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from PIL import Image

from roadnet.errors import InputError, OutputExistsError
from roadnet.pipeline.evaluate.errors import (
    BLANK,
    ERROR_COLORS,
    error_classes,
    error_image,
    fade,
    scene_background,
    shrink_factor,
    shrink_max,
    write_error_map,
)


def test_error_classes_by_hand() -> None:
    pred = np.array([[1, 1, 0, 0]], bool)
    truth = np.array([[1, 0, 1, 0]], bool)
    classes = error_classes(pred, truth)
    assert classes["tp"].tolist() == [[True, False, False, False]]
    assert classes["fp"].tolist() == [[False, True, False, False]]
    assert classes["fn"].tolist() == [[False, False, True, False]]
    lazy = error_classes(da.from_array(pred), da.from_array(truth))
    assert all(np.array_equal(lazy[k].compute(), classes[k]) for k in classes)


def test_shrink_keeps_single_pixels_and_pads_the_edges() -> None:
    mask = np.zeros((10, 7), bool)
    mask[9, 6] = True  # in the padded last block both ways
    mask[4, 0] = True
    small = shrink_max(da.from_array(mask, chunks=4), 3)
    assert small.shape == (4, 3)
    expected = np.zeros((4, 3), bool)
    expected[3, 2] = expected[1, 0] = True
    assert np.array_equal(np.asarray(small.compute()), expected)
    assert np.array_equal(np.asarray(shrink_max(mask, 3)), expected)  # numpy the same
    assert shrink_max(mask, 1) is mask


def test_shrink_factor_like_preview() -> None:
    assert shrink_factor(1600, 900, max_size=1600) == 1
    assert shrink_factor(1601, 900, max_size=1600) == 2
    assert shrink_factor(20000, 30000, max_size=1600) == 19
    with pytest.raises(InputError, match="positive"):
        shrink_factor(10, 10, max_size=0)


def test_colours_are_drawn_in_order_over_the_faded_scene() -> None:
    scene = np.full((2, 3, 3), 100, np.uint8)
    tp = np.array([[1, 1, 0], [0, 0, 0]], bool)
    fp = np.array([[0, 1, 1], [0, 0, 0]], bool)
    fn = np.array([[0, 0, 1], [0, 0, 0]], bool)
    image = error_image(scene, {"tp": tp, "fp": fp, "fn": fn})
    assert tuple(image[0, 0]) == ERROR_COLORS["tp"]
    assert tuple(image[0, 1]) == ERROR_COLORS["fp"]  # a false alarm is not hidden by a hit
    assert tuple(image[0, 2]) == ERROR_COLORS["fn"]
    assert tuple(image[1, 0]) == (193, 193, 193)  # 0.4 * 100 + 0.6 * 255
    assert np.array_equal(fade(scene)[1:], image[1:])
    blank = error_image(None, {"tp": tp, "fp": fp, "fn": fn})
    assert tuple(blank[1, 2]) == (BLANK,) * 3
    with pytest.raises(ValueError, match="background"):
        error_image(scene[:1], {"tp": tp, "fp": fp, "fn": fn})


def test_png_is_written_safely(tmp_path: Path) -> None:
    image = np.zeros((4, 5, 3), np.uint8)
    image[1, 2] = ERROR_COLORS["fn"]
    out = write_error_map(image, tmp_path / "errors.png")
    assert np.array_equal(np.asarray(Image.open(out)), image)
    with pytest.raises(OutputExistsError):
        write_error_map(image, out)
    write_error_map(image[:2], out, overwrite=True)
    assert np.asarray(Image.open(out)).shape == (2, 5, 3)
    with pytest.raises(InputError, match=r"\.png"):
        write_error_map(image, tmp_path / "errors.jpg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["errors.png"]


def test_scene_background_is_the_shrunk_scene_or_none(
    tmp_path: Path, make_scene: Callable[..., Path]
) -> None:
    scene = make_scene(width=50, height=31)
    rgb = scene_background(scene, factor=4, shape=(31, 50))
    assert rgb.shape == (8, 13, 3) and rgb.dtype == np.uint8
    assert rgb.std() > 0
    assert scene_background(scene, factor=4, shape=(32, 50)) is None  # another grid
    assert scene_background(tmp_path / "gone.tif", factor=4, shape=(31, 50)) is None
    assert scene_background(None, factor=4, shape=(31, 50)) is None
