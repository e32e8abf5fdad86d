from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp

from roadnet.errors import InputError
from roadnet.pipeline.inference.open import open_scene


def test_opens_lazily_with_core_chunks(make_scene: Callable[..., Path]) -> None:
    path = make_scene(300, 200)
    scene = open_scene(str(path), chunk=128)
    assert scene.shape == (200, 300)
    assert scene.data.chunks == ((3,), (128, 72), (128, 128, 44))
    assert scene.scale == 1.0 and not scene.alpha and scene.nodata is None
    with rasterio.open(path) as src:
        assert np.array_equal(scene.data.values, src.read())
        assert scene.data.rio.crs == src.crs
        assert scene.data.rio.transform() == src.transform


def test_uint16_and_float_scaling(make_scene: Callable[..., Path]) -> None:
    u16 = make_scene(64, 64, dtype="uint16", name="u16.tif")
    assert open_scene(str(u16), chunk=64).scale == pytest.approx(255 / 65535)
    assert open_scene(str(u16), chunk=64, input_max=4095).scale == pytest.approx(255 / 4095)
    f32 = make_scene(64, 64, dtype="float32", name="f32.tif")
    assert open_scene(str(f32), chunk=64).scale == pytest.approx(255.0)
    with pytest.raises(InputError, match="input_max"):
        open_scene(str(f32), chunk=64, input_max=0)


def _write(path: Path, data: np.ndarray, **options: object) -> Path:
    """A ``(band, y, x)`` array as a GeoTIFF on the UTM 35N fixture grid."""
    from rasterio.transform import from_origin

    bands, height, width = data.shape
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": bands,
        "dtype": data.dtype.name, "crs": "EPSG:32635",
        "transform": from_origin(385_000, 6_672_000, 0.3, 0.3),
    }  # fmt: skip
    with rasterio.open(path, "w", **profile, **options) as dst:
        dst.write(data)
    return path


def _uint16_scene(path: Path, top: int, **options: object) -> Path:
    data = (np.random.default_rng(0).random((3, 600, 700)) * top).astype("uint16")
    return _write(path, data, **options)


def _uint8_dim(path: Path) -> Path:
    return _write(path, (np.random.default_rng(0).random((3, 64, 64)) * 12).astype("uint8"))


def test_declared_bit_depth_sets_input_max_and_dark_scenes_are_told(tmp_path: Path) -> None:
    from roadnet.pipeline.inference.open import dark_scene_warning

    twelve = _uint16_scene(tmp_path / "nbits.tif", 4095, NBITS=12)  # GDAL's NBITS tag
    scene = open_scene(str(twelve), chunk=256)
    assert scene.scale == pytest.approx(255 / 4095)
    assert dark_scene_warning(scene) is None
    assert open_scene(str(twelve), chunk=256, input_max=1000).scale == pytest.approx(0.255)
    # the same values in a file that does not say they are 12-bit: scaled by 65535, near black
    silent = _uint16_scene(tmp_path / "silent.tif", 4095)
    scene = open_scene(str(silent), chunk=256)
    assert scene.scale == pytest.approx(255 / 65535)
    warning = dark_scene_warning(scene)
    assert warning is not None and "looks nearly black" in warning
    assert "12-bit data, set input_max=4095" in warning
    assert dark_scene_warning(open_scene(str(silent), chunk=256, input_max=4095)) is None
    full = _uint16_scene(tmp_path / "full.tif", 65535)
    assert dark_scene_warning(open_scene(str(full), chunk=256)) is None
    # dark 8-bit imagery is not a bit-depth mistake: nothing to suggest
    dim = _uint8_dim(tmp_path / "dim.tif")
    assert dark_scene_warning(open_scene(str(dim), chunk=256)) is None
    # an empty (all-nodata) centre tells nothing
    empty = _uint16_scene(tmp_path / "empty.tif", 1, nodata=0)
    assert dark_scene_warning(open_scene(str(empty), chunk=256)) is None


def test_one_band_needs_explicit_bands(make_scene: Callable[..., Path]) -> None:
    grey = make_scene(64, 64, bands=1, name="grey.tif")
    with pytest.raises(InputError, match=r"1 image band\(s\).*\[1, 1, 1\]"):
        open_scene(str(grey), chunk=64)
    scene = open_scene(str(grey), chunk=64, bands=[1, 1, 1])
    data = scene.data.values
    assert data.shape == (3, 64, 64) and (data[0] == data[2]).all()


def test_band_selection_and_order(make_scene: Callable[..., Path]) -> None:
    path = make_scene(64, 64, bands=4, name="rgbn.tif")
    with rasterio.open(path, "r+") as dst:
        # GDAL calls a 4-band uint8 GeoTIFF RGBA by default; this one is R, G, B, NIR.
        dst.colorinterp = [
            ColorInterp.red,
            ColorInterp.green,
            ColorInterp.blue,
            ColorInterp.undefined,
        ]
    with rasterio.open(path) as src:
        raw = src.read()
    scene = open_scene(str(path), chunk=64)
    assert not scene.alpha
    assert np.array_equal(scene.data.values, raw[:3])
    bgr = open_scene(str(path), chunk=64, bands=[3, 2, 1])
    assert np.array_equal(bgr.data.values, raw[[2, 1, 0]])
    with pytest.raises(InputError, match=r"cannot select \[5\]"):
        open_scene(str(path), chunk=64, bands=[1, 2, 5])
    with pytest.raises(InputError, match="must name 3 bands"):
        open_scene(str(path), chunk=64, bands=[1, 2])


def test_alpha_band_becomes_a_mask(make_scene: Callable[..., Path]) -> None:
    path = make_scene(64, 64, bands=4, name="rgba.tif")
    with rasterio.open(path, "r+") as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    scene = open_scene(str(path), chunk=64)
    assert scene.alpha and scene.data.sizes["band"] == 4


def test_nodata_from_file_or_override(make_scene: Callable[..., Path]) -> None:
    path = make_scene(64, 64, nodata=0)
    assert open_scene(str(path), chunk=64).nodata == 0
    assert open_scene(str(path), chunk=64, nodata=7).nodata == 7


def test_fsspec_url_reads_the_same(make_scene: Callable[..., Path]) -> None:
    path = make_scene(100, 80)
    local = open_scene(str(path), chunk=64).data.values
    remote = open_scene(f"file://{path}", chunk=64)
    assert np.array_equal(remote.data.compute(scheduler="threads").values, local)


def test_bad_inputs(make_scene: Callable[..., Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot open scene"):
        open_scene(str(tmp_path / "missing.tif"), chunk=64)
    plain = make_scene(64, 64, crs=None, name="nocrs.tif")
    with pytest.raises(InputError, match="georeferenced"):
        open_scene(str(plain), chunk=64)
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(InputError, match="cannot open scene"):
        open_scene(str(text), chunk=64)


def test_truncated_scene_names_the_failing_window(make_scene: Callable[..., Path]) -> None:
    from roadnet.pipeline.inference.open import read_failure

    path = make_scene(300, 260, name="cut.tif")
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    scene = open_scene(str(path), chunk=128)  # the header is intact: it opens
    _, rows, cols = scene.data.chunks
    with pytest.raises(rasterio.RasterioIOError) as raised:
        scene.data.values  # noqa: B018  (reading is what fails)
    # as it comes back from a worker: the type re-wrapped, GDAL's cause lost
    remote = Exception(repr(raised.value))
    failure = read_failure(remote, str(path), rows=rows, cols=cols)
    assert isinstance(failure, InputError)
    message = str(failure)
    assert message.startswith(f"cannot read scene {path}: window rows ")
    assert "cut.tif" in message.rsplit("(px):", 1)[1] and "\n" not in message
    found = re.search(r"window rows (\d+)-(\d+), cols (\d+)-(\d+) \(px\)", message)
    assert found is not None
    r0, r1, c0, c1 = (int(v) for v in found.groups())
    assert (r1 - r0 + 1, c1 - c0 + 1) in {(h, w) for h in rows for w in cols}
    with rasterio.open(path) as src, pytest.raises(rasterio.RasterioIOError):
        src.read(window=rasterio.windows.Window(c0, r0, c1 - c0 + 1, r1 - r0 + 1))
    assert read_failure(ValueError("other"), str(path), rows=rows, cols=cols) is None


def test_a_file_that_is_not_a_raster_is_named(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tif"
    junk.write_text("plain text, not a raster\n")
    with pytest.raises(InputError, match=f"cannot open scene {junk}: .*not recognized"):
        open_scene(str(junk), chunk=128)
