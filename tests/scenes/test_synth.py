from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from _colour_baseline import best_hsv_iou, best_interval_iou
from rasterio.features import rasterize

from roadnet.config import load_config
from roadnet.errors import ConfigError, InputError, OutputExistsError
from roadnet.pipeline.scenes._relief import cast_shadow
from roadnet.pipeline.scenes._render import RenderParams, halo_px
from roadnet.pipeline.scenes._scenery import window_layers
from roadnet.pipeline.scenes._textures import fbm, value_noise, white_noise
from roadnet.pipeline.scenes.labels import write_labels
from roadnet.pipeline.scenes.synth import (
    ScenePlan,
    SynthConfig,
    parse_size,
    plan_scene,
    render_scene,
    synthesize,
)


def read_rgb(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return np.moveaxis(src.read(), 0, -1)


def read_band(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.fixture(scope="module")
def helsinki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthConfig]:
    """A 1024 x 768 px scene of central Helsinki at 0.3 m, written by synthesize()."""
    out = tmp_path_factory.mktemp("synth") / "helsinki"
    config = SynthConfig(gsd=0.3, seed=1, size=(1024, 768), window_px=512)
    synthesize("helsinki", out, config=config)
    return out, config


@pytest.fixture(scope="module")
def coarse_plan() -> tuple[ScenePlan, SynthConfig]:
    """The bundled test extract at 2 m/px: small enough to render several times."""
    config = SynthConfig(gsd=2.0, seed=3, size=(700, 600), window_px=512)
    return plan_scene("test", config=config), config


def render(plan: ScenePlan, config: SynthConfig, path: Path) -> np.ndarray:
    render_scene(
        plan.scenery,
        path,
        crs=plan.crs,
        transform=plan.transform,
        width=plan.width,
        height=plan.height,
        config=config,
    )
    return read_rgb(path)


# --- noise kernels: functions of absolute position -------------------------------------------


def test_noise_depends_only_on_absolute_position() -> None:
    rows, cols = np.arange(100, 400), np.arange(-50, 250)
    for field in (
        lambda r, c: value_noise(r, c, cell=17.0, seed=5, salt=1),
        lambda r, c: fbm(r, c, cell=120.0, seed=5, salt=2, step=4),
        lambda r, c: white_noise(r, c, seed=5, salt=3),
    ):
        whole = field(rows, cols)
        part = field(rows[37:211], cols[101:])
        np.testing.assert_array_equal(part, whole[37:211, 101:])
    assert abs(float(white_noise(rows, cols, seed=5, salt=3).mean())) < 0.01
    assert not np.array_equal(
        value_noise(rows, cols, cell=17.0, seed=5, salt=1),
        value_noise(rows, cols, cell=17.0, seed=6, salt=1),
    )


def test_cast_shadow_falls_away_from_the_sun() -> None:
    params = RenderParams(gsd=1.0, seed=0, sun_azimuth_deg=180.0, sun_elevation_deg=45.0)
    height = np.zeros((61, 61), np.float32)
    height[40, 30] = 10.0  # a 10 m pole, sun due south at 45 degrees: 10 m shadow to the north
    rows, cols = np.nonzero(cast_shadow(height, params))
    assert set(cols) == {30}
    assert rows.max() == 39 and 30 <= rows.min() <= 31  # ~10 px long


# --- the rendered scene ------------------------------------------------------------------------


def test_outputs_grid_and_format(helsinki: tuple[Path, SynthConfig]) -> None:
    out, _ = helsinki
    with rasterio.open(out / "scene.tif") as src:
        assert (src.count, src.dtypes, src.width, src.height) == (3, ("uint8",) * 3, 1024, 768)
        epsg = src.crs.to_epsg()
        assert epsg is not None and (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760)
        assert src.res == pytest.approx((0.3, 0.3))
        assert src.block_shapes[0] == (512, 512)
        assert src.compression is not None
        assert src.overviews(1)  # fast previews
        grid = (src.crs, src.transform, src.shape)
    for name in ("surface", "edge", "centerline"):
        with rasterio.open(out / "labels" / f"{name}.tif") as lab:
            assert (lab.crs, lab.transform, lab.shape) == grid
    truth = gpd.read_file(out / "truth.gpkg", layer="road_centerline")
    assert {"highway", "width_m"} <= set(truth.columns)
    assert (truth["width_m"] > 2).all()
    assert truth.crs.to_epsg() == epsg
    surface = gpd.read_file(out / "truth.gpkg", layer="road_surface")
    assert set(surface.geom_type) <= {"Polygon", "MultiPolygon"}
    assert (out / "roadnet-config.yaml").is_file()


def test_scene_looks_like_imagery_not_a_mask(helsinki: tuple[Path, SynthConfig]) -> None:
    out, _ = helsinki
    rgb = read_rgb(out / "scene.tif")
    road = read_band(out / "labels" / "surface.tif").astype(bool)
    assert 0.03 < road.mean() < 0.6
    # texture and variety: many distinct colours, roads not one flat value
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20_000
    assert rgb[road].std(axis=0).min() > 8
    # green vegetation somewhere
    green = (rgb[..., 1].astype(int) - rgb[..., 0] > 10) & (
        rgb[..., 1].astype(int) - rgb[..., 2] > 10
    )
    assert green.mean() > 0.02
    # the hard cases are there: tree crowns over road pixels (still labelled road)
    assert green[road].mean() > 0.005


def test_colour_threshold_baseline_fails(helsinki: tuple[Path, SynthConfig]) -> None:
    """Road pixels cannot be told apart by colour alone: the best threshold rules stay < 0.5."""
    out, _ = helsinki
    rgb = read_rgb(out / "scene.tif")
    road = read_band(out / "labels" / "surface.tif").astype(bool)
    grey = (rgb.astype(np.uint16).sum(axis=-1) // 3).astype(np.uint8)
    scores = {"grey": best_interval_iou(grey, road, 256)}
    for b, name in enumerate("rgb"):
        scores[name] = best_interval_iou(rgb[..., b], road, 256)
    scores["hsv"] = best_hsv_iou(rgb, road)
    assert max(scores.values()) < 0.5, scores
    # and the rules are not vacuous: each finds a good part of the road
    assert min(scores.values()) > 0.05, scores


def test_road_pixels_are_the_surface_label(coarse_plan, tmp_path: Path) -> None:
    plan, config = coarse_plan
    layers = window_layers(
        plan.scenery,
        transform=plan.transform,
        row0=0,
        col0=0,
        height=plan.height,
        width=plan.width,
        car_density=1.0,
    )
    paths = write_labels(
        plan.scenery.roads,
        crs=plan.crs,
        transform=plan.transform,
        width=plan.width,
        height=plan.height,
        out_dir=tmp_path,
        config=config.labels,
        surfaces=plan.scenery.surfaces,
    )
    label = read_band(paths["surface"]).astype(bool)
    assert label.any()
    drawn = layers.road > 0
    assert (drawn != label).mean() < 1e-4


def test_deterministic_for_a_seed_and_window_size(coarse_plan, tmp_path: Path) -> None:
    plan, config = coarse_plan
    first = render(plan, config, tmp_path / "a.tif")
    again = render(plan, config, tmp_path / "b.tif")
    np.testing.assert_array_equal(first, again)
    other_windows = render(plan, config.model_copy(update={"window_px": 1024}), tmp_path / "c.tif")
    np.testing.assert_array_equal(first, other_windows)


def test_window_size_does_not_change_a_fine_scene(
    helsinki: tuple[Path, SynthConfig], tmp_path: Path
) -> None:
    """At 0.3 m shadows, crowns and blur reach ~150 px across window borders."""
    out, config = helsinki  # rendered in 512 px windows
    larger = config.model_copy(update={"window_px": 1024})
    again = render(plan_scene("helsinki", config=larger), larger, tmp_path / "b.tif")
    np.testing.assert_array_equal(read_rgb(out / "scene.tif"), again)


def test_seeds_differ(coarse_plan, tmp_path: Path) -> None:
    plan, config = coarse_plan
    first = render(plan, config, tmp_path / "a.tif")
    other = config.model_copy(update={"seed": config.seed + 1})
    second = render(plan, other, tmp_path / "b.tif")
    assert (first != second).any(axis=-1).mean() > 0.5


def test_size_beyond_the_extract_mirrors_consistently(tmp_path: Path) -> None:
    config = SynthConfig(gsd=8.0, seed=0, window_px=512)
    base = plan_scene("helsinki", config=config)
    big = (math.ceil(base.width * 2.6), math.ceil(base.height * 1.3))
    out = tmp_path / "big"
    synthesize("helsinki", out, config=config.model_copy(update={"size": big}))
    label = read_band(out / "labels" / "surface.tif")
    assert label.shape == (big[1], big[0])
    truth = gpd.read_file(out / "truth.gpkg", layer="road_surface")
    lines = gpd.read_file(out / "truth.gpkg", layer="road_centerline")
    assert len(lines) > 2 * len(base.scenery.roads)
    with rasterio.open(out / "scene.tif") as src:
        transform = src.transform
    burnt = rasterize(
        ((g, 1) for g in truth.geometry),
        out_shape=label.shape,
        transform=transform,
        dtype="uint8",
    )
    assert (burnt != label).mean() < 1e-3
    # every copy of the extract holds roads: no empty tiles
    for rows in np.array_split(label, 2, axis=0):
        for block in np.array_split(rows, 3, axis=1):
            assert block.mean() > 0.01
    # truth lies inside the scene
    with rasterio.open(out / "scene.tif") as src:
        scene_box = shapely.box(*src.bounds)
    assert shapely.covers(scene_box.buffer(1e-6), lines.geometry.to_numpy()).all()


# --- bad input ---------------------------------------------------------------------------------


def test_parse_size() -> None:
    assert parse_size("4096x2048") == (4096, 2048)
    assert parse_size(" 10X20 ") == (10, 20)
    for bad in ("4096", "4096x", "0x10", "axb", "10x10x10", "-5x5"):
        with pytest.raises(InputError, match="WIDTHxHEIGHT"):
            parse_size(bad)


def test_missing_extract_and_existing_output(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nowhere\.osm\.pbf"):
        synthesize(tmp_path / "nowhere.osm.pbf", tmp_path / "o", config=SynthConfig())
    assert not (tmp_path / "o").exists()
    out = tmp_path / "kept"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="kept"):
        synthesize("test", out, config=SynthConfig(gsd=5.0))
    assert (out / "old.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "roadnet.pipeline.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--osm", "missing.osm.pbf"], "missing.osm.pbf"),
        (["--osm", "test", "--size", "12by12"], "12by12"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    out = tmp_path / "out"
    result = run_cli("synth", "--out", str(out), *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("roadnet: error:"), result.stderr
    assert needle in lines[0]
    assert not out.exists()


def test_cli_refuses_non_empty_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    result = run_cli("synth", "--osm", "test", "--gsd", "8", "--out", str(out))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--overwrite" in lines[0], result.stderr
    assert (out / "old.txt").read_text() == "keep me"


def test_overwrite_replaces_the_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("replace me")
    paths = synthesize("test", out, config=SynthConfig(gsd=8.0), overwrite=True)
    assert not (out / "old.txt").exists()
    assert all(p.is_file() for p in paths.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left behind


def test_config_rejects_bad_values() -> None:
    for values in ({"gsd": -1.0}, {"size": (0, 10)}, {"window_px": 1000}):
        with pytest.raises(ConfigError):
            load_config(SynthConfig, values=values)
    with pytest.raises(ConfigError, match="sun_elevaton"):
        load_config(SynthConfig, overrides=["sun_elevaton_deg=30"])


def test_halo_covers_the_longest_shadow() -> None:
    params = RenderParams(gsd=0.3, seed=0)
    assert halo_px(params) > params.shadow_px


def test_bundled_config_is_the_defaults() -> None:
    assert load_config(SynthConfig, "synth") == SynthConfig()
