from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from roadnet.errors import InputError
from roadnet.model.data import (
    AugmentConfig,
    CropDataset,
    LabelledScene,
    augment,
    label_targets,
    read_labelled_scene,
    sample_crop,
    to_display_range,
    validation_tiles,
    windows_overlap,
)
from roadnet.model.roadnet import output_names


def _scene(size: int = 64, window: tuple[int, int, int, int] | None = None) -> LabelledScene:
    rng = np.random.default_rng(0)
    labels = (rng.random((size, size, 3)) < 0.3).astype(np.uint8)
    image = (labels * 200 + 20).astype(np.uint8)  # the image encodes the labels
    return LabelledScene(image, labels, window or (0, 0, size, size), "mem")


def test_display_range() -> None:
    assert to_display_range(np.array([0, 255], np.uint8)).tolist() == [0.0, 255.0]
    assert to_display_range(np.array([0, 65535], np.uint16)).tolist() == [0.0, 255.0]
    assert to_display_range(np.array([12.5], np.float32)).tolist() == [12.5]


def test_windows_overlap() -> None:
    assert windows_overlap((0, 0, 10, 10), (9, 9, 20, 20))
    assert not windows_overlap((0, 0, 10, 10), (10, 0, 20, 10))


def test_crops_stay_in_window_and_match_labels() -> None:
    scene = _scene(64, window=(32, 0, 64, 64))
    rng = np.random.default_rng(1)
    for _ in range(20):
        image, labels = sample_crop(scene, size=32, rng=rng)
        assert image.shape == (32, 32, 3) and labels.shape == (32, 32, 3)
        np.testing.assert_array_equal(image, labels * 200 + 20)
        # the window is 32 px wide: every crop is the right half, at some row offset
        rows = [
            r
            for r in range(33)
            if np.array_equal(labels, scene.labels[r : r + 32, 32:].astype(np.float32))
        ]
        assert rows, "crop outside its window"
    jittered, jlabels = sample_crop(scene, size=16, rng=rng, scale=0.5)
    assert jittered.shape == (16, 16, 3) and set(np.unique(jlabels)) <= {0.0, 1.0}


def test_augment_moves_labels_with_the_image() -> None:
    scene = _scene()
    image, labels = scene.image.astype(np.float32), scene.labels.astype(np.float32)
    geometric = AugmentConfig(brightness=0, contrast=0, hue=0, scale=0)
    for seed in range(8):
        a_img, a_lab = augment(image, labels, config=geometric, rng=np.random.default_rng(seed))
        np.testing.assert_array_equal(a_img, a_lab * 200 + 20)
    colour = AugmentConfig(flip=False, rot90=False, brightness=0.2, contrast=0.3, hue=20, scale=0)
    c_img, c_lab = augment(image, labels, config=colour, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(c_lab, labels)
    assert not np.allclose(c_img, image) and c_img.min() >= 0 and c_img.max() <= 255


def test_targets_and_tiles() -> None:
    scene = _scene(64)
    images, labels = validation_tiles(scene, size=16, max_tiles=5)
    assert images.shape == (5, 16, 16, 3) and labels.shape == (5, 16, 16, 3)
    targets = label_targets(labels)
    assert sorted(targets) == sorted(output_names())
    np.testing.assert_array_equal(targets["edge_side3"], labels[..., 1:2])
    with pytest.raises(InputError, match="holds no"):
        validation_tiles(_scene(64, window=(0, 0, 8, 8)), size=16, max_tiles=2)


def test_crop_dataset_is_seeded() -> None:
    scene = _scene(64)
    kwargs = {"crop_size": 32, "batch_size": 2, "steps": 3, "augment_config": AugmentConfig()}
    a = CropDataset([scene], seed=5, **kwargs)
    b = CropDataset([scene], seed=5, **kwargs)
    x1, y1 = a[1]
    x2, y2 = b[1]
    assert len(a) == 3 and x1.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1["surface"], y2["surface"])
    a.on_epoch_end()
    assert not np.array_equal(a[1][0], x1)


def test_scene_batches_take_one_scene_and_one_look_per_batch() -> None:
    """Flat scenes of two colours: a scene batch is one colour, moved alike in every crop."""
    flat = [
        LabelledScene(
            np.full((64, 64, 3), value, np.uint8),
            np.zeros((64, 64, 3), np.uint8),
            (0, 0, 64, 64),
            n,
        )
        for value, n in ((60, "dark"), (190, "pale"))
    ]
    look = AugmentConfig(flip=False, rot90=False, scale=0, hsv_value=0.3, gains=0.2, noise=6.0)
    kwargs = {"crop_size": 16, "batch_size": 4, "steps": 12, "augment_config": look, "seed": 3}
    grouped = CropDataset(flat, scene_batches=True, **kwargs)
    means = []
    for i in range(len(grouped)):
        x, _ = grouped[i]
        for crop in x[1:]:  # the same scene and the same draws of colour and noise
            np.testing.assert_array_equal(crop, x[0])
        means.append(float(x.mean()))
    assert min(means) < 125 < max(means)  # both scenes are drawn
    mixed = CropDataset(flat, **kwargs)
    x, _ = mixed[0]
    assert not all(np.array_equal(crop, x[0]) for crop in x[1:])  # per crop: own look


def test_read_labelled_scene_checks_grids(make_scene, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import rasterio

    scene = make_scene(64, 48)
    labels = tmp_path / "labels"
    labels.mkdir()
    with rasterio.open(scene) as src:
        profile = {**src.profile, "count": 1}
    for name in ("surface", "edge", "centerline"):
        with rasterio.open(labels / f"{name}.tif", "w", **profile) as dst:
            dst.write(np.ones((1, 48, 64), np.uint8))
    data = read_labelled_scene(scene, labels, window=(0, 0, 32, 48))
    assert data.image.shape == (48, 64, 3) and data.labels.shape == (48, 64, 3)
    assert data.window == (0, 0, 32, 48)
    with pytest.raises(InputError, match="not inside"):
        read_labelled_scene(scene, labels, window=(0, 0, 65, 48))
    with rasterio.open(labels / "edge.tif", "w", **{**profile, "width": 32}) as dst:
        dst.write(np.ones((1, 48, 32), np.uint8))
    with pytest.raises(InputError, match="grid differs"):
        read_labelled_scene(scene, labels)
    one_band = make_scene(64, 48, bands=1, name="gray.tif")
    with pytest.raises(InputError, match="3 bands"):
        read_labelled_scene(one_band, labels)
