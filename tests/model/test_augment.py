from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely
from PIL import Image
from rasterio.features import rasterize
from scipy import ndimage

from roadnet.config import load_config
from roadnet.errors import ConfigError
from roadnet.model.augment import AugmentConfig, augment, sample_grid, write_sample_grid
from roadnet.model.data import CropDataset, LabelledScene, sample_crop

OFF = AugmentConfig(flip=False, rot90=False, brightness=0, contrast=0, hue=0, scale=0)
STRONG = AugmentConfig(
    hsv_hue=20,
    hsv_saturation=0.4,
    hsv_value=0.3,
    gains=0.2,
    gamma=0.5,
    grey_world=0.5,
    channel_swap=0.5,
    grayscale=0.2,
    random_conv=0.3,
    blur=1.5,
    sharpen=1.0,
    noise=8.0,
    haze=0.3,
    jpeg=0.5,
    cutout=0.5,
    gsd_range=(0.15, 0.6),
)


def road_scene(size: int = 384, gsd: float = 0.3) -> LabelledScene:
    """Streets at several angles: the image and the labels are drawn from the same polygons."""
    lines = [
        shapely.LineString([(0, 60), (size, 140)]),
        shapely.LineString([(90, 0), (250, size)]),
        shapely.LineString([(size, 20), (30, size)]),
    ]
    roads = [line.buffer(w) for line, w in zip(lines, (9, 6, 4), strict=True)]
    edges = [r.boundary.buffer(1.0) for r in roads]
    centre = [line.buffer(1.0) for line in lines]
    masks = [
        rasterize([(g, 1) for g in geoms], out_shape=(size, size), dtype="uint8")
        for geoms in (roads, edges, centre)
    ]
    labels = np.stack(masks, axis=-1)
    image = np.where(labels[..., :1] > 0, np.uint8(200), np.uint8(40)) * np.ones(3, np.uint8)
    return LabelledScene(image, labels, (0, 0, size, size), "streets", gsd=gsd)


def test_geometric_augmentation_and_gsd_scaling_keep_labels_aligned() -> None:
    scene = road_scene()
    geometric = OFF.model_copy(update={"flip": True, "rot90": True, "scale": 0.2})
    for seed in range(12):
        rng = np.random.default_rng(seed)
        image, labels = sample_crop(scene, size=128, rng=rng, scale=0.2, gsd_range=(0.15, 0.6))
        image, labels = augment(image, labels, config=geometric, rng=rng)
        drawn = image[..., 0] > 120
        truth = labels[..., 0] > 0.5
        union = (drawn | truth).sum()
        if union:
            assert (drawn & truth).sum() / union > 0.93, seed
    # the GSD range really changes the ground a crop covers
    sides = []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        _, labels = sample_crop(scene, size=64, rng=rng, gsd_range=(0.15, 0.6))
        sides.append(labels[..., 0].mean())
    assert np.std(sides) > 0.03


def test_gsd_range_follows_the_scene_pixel_size() -> None:
    """Resampled to 0.6 m, a crop of a 0.15 m scene spans 4x the pixels of a 0.6 m one."""
    spans = {}
    for gsd in (0.15, 0.6):
        scene = road_scene(gsd=gsd)
        ramp = np.broadcast_to(np.arange(384, dtype=np.float32)[None, :] / 2, (384, 384))
        scene = LabelledScene(
            np.repeat(ramp[..., None], 3, axis=-1).astype(np.uint8),
            scene.labels,
            scene.window,
            scene.name,
            gsd=gsd,
        )
        image, _ = sample_crop(scene, size=64, rng=np.random.default_rng(0), gsd_range=(0.6, 0.6))
        spans[gsd] = float(image[..., 0].max() - image[..., 0].min())
    assert spans[0.6] == pytest.approx(31.5, abs=1)
    assert spans[0.15] == pytest.approx(4 * 32, abs=3)


def test_appearance_changes_image_not_labels_and_is_seeded() -> None:
    scene = road_scene()
    rng = np.random.default_rng(5)
    image, labels = sample_crop(scene, size=128, rng=rng)
    image = image + np.random.default_rng(0).uniform(-30, 30, image.shape).astype(np.float32)
    appearance = STRONG.model_copy(update={"flip": False, "rot90": False, "gsd_range": None})
    outs = []
    for seed in (1, 1, 2):
        img, lab = augment(image, labels, config=appearance, rng=np.random.default_rng(seed))
        np.testing.assert_array_equal(lab, labels)
        assert img.dtype == np.float32 and img.min() >= 0 and img.max() <= 255
        outs.append(img)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.allclose(outs[0], outs[2])
    assert not np.allclose(outs[0], image)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("hsv_hue", 40.0),
        ("hsv_saturation", 0.5),
        ("hsv_value", 0.3),
        ("gains", 0.3),
        ("gamma", 0.8),
        ("grey_world", 1.0),
        ("channel_swap", 1.0),
        ("grayscale", 1.0),
        ("random_conv", 1.0),
        ("blur", 2.0),
        ("sharpen", 2.0),
        ("noise", 10.0),
        ("haze", 0.5),
        ("jpeg", 1.0),
        ("cutout", 1.0),
    ],
)
def test_each_key_changes_the_image(key: str, value: float) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    image = np.stack([60 + 2 * xx, 90 + yy, 150 - xx], axis=-1).astype(np.float32)
    image[20:30, 20:30] = 240.0
    labels = np.zeros((64, 64, 3), np.float32)
    changed = smoother = False
    for _ in range(4):  # a drawn strength can be near zero, or a permutation the identity
        out, _ = augment(image, labels, config=OFF.model_copy(update={key: value}), rng=rng)
        changed |= float(np.abs(out - image).max()) > 5.0
        smoother |= np.abs(np.diff(out, axis=1)).max() < np.abs(np.diff(image, axis=1)).max()
    assert changed, key
    if key == "blur":
        assert smoother
    if key == "haze":  # a veil lifts the darks and flattens the contrast
        assert out.min() > image.min() + 5 and np.ptp(out) < np.ptp(image)
    if key == "grey_world":
        means = out.mean(axis=(0, 1))
        assert np.ptp(means) < 0.2 * np.ptp(image.mean(axis=(0, 1)))
    if key == "grayscale":  # at least half-way to grey: the bands close up around the luma
        spread = np.ptp(image, axis=-1)
        assert (np.ptp(out, axis=-1) <= 0.5 * spread + 1e-3).all()


def test_random_conv_keeps_the_shapes_and_the_crops_brightness() -> None:
    """The road outline stays where it was; the bands' colour of it is arbitrary."""
    scene = road_scene(size=128)
    image = scene.image.astype(np.float32)
    road = scene.labels[..., 0] > 0
    config = OFF.model_copy(update={"random_conv": 1.0, "random_conv_size": 3})
    colours = set()
    for seed in range(6):
        out, labels = augment(
            image, scene.labels.astype(np.float32), config=config, rng=np.random.default_rng(seed)
        )
        np.testing.assert_array_equal(labels, scene.labels)
        assert abs(float(out.mean()) - float(image.mean())) < 25.0
        # away from the outline (wider than the kernel) road and ground stay apart in every
        # band the blend moved: the 3 x 3 kernel mixes only within 1 px of it
        inner = ndimage.binary_erosion(road, iterations=2)
        outer = ~ndimage.binary_dilation(road, iterations=2)
        spread = out[inner].std(axis=0) + out[outer].std(axis=0)
        gap = np.abs(out[inner].mean(axis=0) - out[outer].mean(axis=0))
        assert (gap > 5 * spread + 1).any(), seed
        colours.add(tuple(np.round(out[inner].mean(axis=0) / 10)))
    assert len(colours) > 3  # the road's colour differs from draw to draw


def test_config_ranges() -> None:
    with pytest.raises(ConfigError, match="random_conv_size"):
        load_config(AugmentConfig, values={"random_conv_size": 4})
    with pytest.raises(ConfigError, match="gsd_range"):
        load_config(AugmentConfig, values={"gsd_range": [0.5, 0.2]})
    with pytest.raises(ConfigError, match="gains"):
        load_config(AugmentConfig, values={"gains": 2.0})
    with pytest.raises(ConfigError, match="jpeg_quality"):
        load_config(AugmentConfig, values={"jpeg_quality": [90, 30]})


def test_jpeg_quality_sets_how_much_the_round_trip_loses() -> None:
    """A JPEG round trip at quality 10 moves the pixels far more than one at quality 95."""
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    image = np.stack([40 + 2.5 * xx + yy, 90 + yy, 200 - 1.5 * xx], axis=-1)
    image[::7, :] += 35.0  # some texture for the coder to quantize
    jpeg = OFF.model_copy(update={"jpeg": 1.0, "jpeg_quality": (10, 10)})
    out, _ = augment(
        image, np.zeros((64, 64, 3), np.float32), config=jpeg, rng=np.random.default_rng(0)
    )
    error = np.abs(out - image).mean()
    fine = OFF.model_copy(update={"jpeg": 1.0, "jpeg_quality": (95, 95)})
    out95, _ = augment(
        image, np.zeros((64, 64, 3), np.float32), config=fine, rng=np.random.default_rng(0)
    )
    assert error > 2.0 * np.abs(out95 - image).mean()


def test_sample_grid_png(tmp_path: Path) -> None:
    scene = road_scene()
    dataset = CropDataset(
        [scene], crop_size=64, batch_size=4, steps=3, augment_config=STRONG, seed=0
    )
    path = write_sample_grid(dataset, tmp_path / "augment-samples.png", batches=2)
    with Image.open(path) as img:
        assert img.size == (4 * 68, 2 * 68)
        pixels = np.asarray(img)
    # the label outlines are drawn, and the tiles are the dataset's own first batches
    assert ((pixels == (255, 0, 255)).all(axis=-1)).sum() > 50
    x0, _ = dataset[0]
    grid = sample_grid(x0, np.zeros_like(x0))
    np.testing.assert_array_equal(grid[2:66, 2:66], np.clip(x0[0], 0, 255).astype(np.uint8))


def test_resampled_crops_get_thin_labels_at_their_pixel_widths() -> None:
    """Zoomed in 2x or out 2x, the edge band stays 2 px and the centerline 2 px wide."""
    from skimage.morphology import skeletonize

    cross = ndimage.generate_binary_structure(2, 1)
    scene = road_scene(gsd=0.3)
    for target in (0.15, 0.6):
        checked = 0
        for seed in range(6):
            rng = np.random.default_rng(seed)
            _, labels = sample_crop(
                scene, size=96, rng=rng, gsd_range=(target, target), thin_widths=(2, 0)
            )
            surface, edge, centre = (labels[..., i] > 0.5 for i in range(3))
            if surface.sum() < 200:
                continue
            # the edge band is exactly the 2 px band of this surface; the centerline is thin
            want = surface & ~ndimage.binary_erosion(surface, cross, border_value=1)
            want |= ndimage.binary_dilation(surface, cross) & ~surface
            np.testing.assert_array_equal(edge, want)
            thinned = skeletonize(centre)  # a 2 px chain around a one-pixel skeleton
            assert centre.sum() <= 3.2 * thinned.sum()
            assert not (centre & ~ndimage.binary_dilation(thinned, np.ones((3, 3)))).any()
            assert centre.any() and (centre & surface).mean() > 0.9 * centre.mean()
            checked += 1
        assert checked, target
