from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from roadnet.errors import InputError, OutputExistsError
from roadnet.pipeline.preview import (
    OVERLAY_COLORS,
    make_preview,
    overlay_labels,
    stretch_to_uint8,
)


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "RGB"
        return np.asarray(img)


def write_labels_like(scene: Path, out_dir: Path, arrays: dict[str, np.ndarray]) -> Path:
    out_dir.mkdir()
    with rasterio.open(scene) as src:
        profile = {**src.profile, "count": 1, "dtype": "uint8", "nodata": None}
    for name, array in arrays.items():
        with rasterio.open(out_dir / f"{name}.tif", "w", **profile) as dst:
            dst.write(array, 1)
    return out_dir


def test_uint8_scene_at_full_size_is_shown_as_is(
    make_scene: Callable[..., Path], tmp_path: Path
) -> None:
    scene = make_scene(64, 48)
    out = make_preview(scene, tmp_path / "p.png", max_size=100)
    with rasterio.open(scene) as src:
        expected = np.moveaxis(src.read(), 0, -1)
    assert np.array_equal(read_png(out), expected)


def test_downsampled_to_max_size_keeping_aspect(
    make_scene: Callable[..., Path], tmp_path: Path
) -> None:
    scene = make_scene(400, 250, dtype="uint16")
    rgb = read_png(make_preview(scene, tmp_path / "p.png", max_size=100))
    assert rgb.shape == (63, 100, 3)
    # a 2-98 % stretch spreads every band over the full range
    assert rgb.min() == 0 and rgb.max() == 255
    assert 100 < rgb.mean() < 155


def test_one_band_float_scene_is_grey_and_nodata_black(
    make_scene: Callable[..., Path], tmp_path: Path
) -> None:
    scene = make_scene(50, 40, bands=1, dtype="float32", nodata=-1.0)
    with rasterio.open(scene, "r+") as dst:
        data = dst.read(1)
        data[:10, :10] = -1.0
        dst.write(data, 1)
    rgb = read_png(make_preview(scene, tmp_path / "p.png"))
    assert rgb.shape == (40, 50, 3)
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
    assert (rgb[:10, :10] == 0).all()
    assert rgb[10:, 10:].max() == 255


def test_stretch_maps_percentiles_to_the_uint8_range() -> None:
    band = np.arange(101, dtype=np.float32).reshape(1, 1, 101)
    out = stretch_to_uint8(band)
    assert out.dtype == np.uint8
    assert out[0, 0, 2] == 0 and out[0, 0, 98] == 255
    assert out[0, 0, 50] == 128  # round(48 / 96 * 255)
    constant = stretch_to_uint8(np.full((1, 2, 2), 7.0))
    assert (constant == 0).all()


def test_overlay_colours() -> None:
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    labels = {
        "surface": np.array([[1, 1, 0], [0, 0, 0]]),
        "edge": np.array([[0, 0, 0], [1, 0, 0]]),
        "centerline": np.array([[0, 1, 0], [0, 0, 0]]),
    }
    out = overlay_labels(rgb, labels)
    surface_color, alpha = OVERLAY_COLORS["surface"]
    assert tuple(out[0, 0]) == tuple(round(alpha * c) for c in surface_color)
    assert tuple(out[1, 0]) == OVERLAY_COLORS["edge"][0]
    assert tuple(out[0, 1]) == OVERLAY_COLORS["centerline"][0]  # drawn last, on top
    assert tuple(out[0, 2]) == (0, 0, 0)


def test_thin_labels_survive_downsampling(make_scene: Callable[..., Path], tmp_path: Path) -> None:
    scene = make_scene(800, 400)
    line = np.zeros((400, 800), dtype=np.uint8)
    line[203, :] = 1  # one pixel wide, decimated 8x below
    labels = write_labels_like(scene, tmp_path / "labels", {"centerline": line})
    rgb = read_png(make_preview(scene, tmp_path / "p.png", labels_dir=labels, max_size=100))
    assert rgb.shape == (50, 100, 3)
    cyan = np.all(rgb == OVERLAY_COLORS["centerline"][0], axis=-1)
    assert np.flatnonzero(cyan.all(axis=1)).tolist() == [25]
    assert cyan.sum() == 100


def test_bad_input(make_scene: Callable[..., Path], tmp_path: Path) -> None:
    scene = make_scene(64, 48)
    with pytest.raises(InputError, match=r"raster not found: .*missing\.tif"):
        make_preview(tmp_path / "missing.tif", tmp_path / "p.png")
    text = tmp_path / "text.tif"
    text.write_text("no raster")
    with pytest.raises(InputError, match=r"text\.tif: not a raster"):
        make_preview(text, tmp_path / "p.png")
    with pytest.raises(InputError, match="labels directory not found"):
        make_preview(scene, tmp_path / "p.png", labels_dir=tmp_path / "nolabels")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds none of"):
        make_preview(scene, tmp_path / "p.png", labels_dir=tmp_path / "empty")
    other = make_scene(32, 32, name="other.tif")
    labels = write_labels_like(other, tmp_path / "small", {"surface": np.ones((32, 32), np.uint8)})
    with pytest.raises(InputError, match="label grid 32x32 differs"):
        make_preview(scene, tmp_path / "p.png", labels_dir=labels)
    with pytest.raises(InputError, match="must end in"):
        make_preview(scene, tmp_path / "p.txt")
    assert not (tmp_path / "p.png").exists()


def test_existing_preview_is_kept_without_overwrite(
    make_scene: Callable[..., Path], tmp_path: Path
) -> None:
    scene = make_scene(64, 48)
    out = tmp_path / "p.png"
    out.write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        make_preview(scene, out)
    assert out.read_bytes() == b"old"
    make_preview(scene, out, overwrite=True)
    assert read_png(out).shape == (48, 64, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png", "scene.tif"]


def test_result_overlay_draws_thresholded_predictions(tmp_path: Path) -> None:
    from _models import save_test_model, smooth_scene, write_scene

    from roadnet import open_result
    from roadnet.pipeline.inference.run import RunConfig, run_to_zarr

    scene = write_scene(tmp_path / "s.tif", smooth_scene(96, 80))
    model = save_test_model(tmp_path / "m.keras")
    store = tmp_path / "r.zarr"
    run_to_zarr(
        scene,
        store,
        model=model,
        config=RunConfig(chunk=64, overlap=16),
        workers=1,
        threads_per_worker=1,
        progress=False,
    )
    ds = open_result(store)
    masks = {n: (ds[n].values >= 0.5).astype(np.uint8) for n in OVERLAY_COLORS}
    assert 0 < masks["surface"].mean() < 1, "the test needs a mixed prediction"
    plain = read_png(make_preview(scene, tmp_path / "plain.png", max_size=200))
    shown = read_png(make_preview(scene, tmp_path / "r.png", result=store, max_size=200))
    assert np.array_equal(shown, overlay_labels(plain, masks))

    other = write_scene(tmp_path / "o.tif", smooth_scene(64, 64))
    with pytest.raises(InputError, match="differs"):
        make_preview(other, tmp_path / "o.png", result=store)
    with pytest.raises(InputError, match="not several"):
        make_preview(scene, tmp_path / "b.png", result=store, labels_dir=tmp_path)
