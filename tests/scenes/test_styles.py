"""Appearance keys of ``roadnet synth`` and the style presets: direction, determinism, baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from _colour_baseline import best_hsv_iou, best_interval_iou

from roadnet.errors import ConfigError
from roadnet.pipeline.scenes._ramps import RAMP_CLASSES
from roadnet.pipeline.scenes._render import WindowLayers, halo_px, render_window
from roadnet.pipeline.scenes._scenery import window_layers
from roadnet.pipeline.scenes.styles import (
    STYLE_KEYS,
    apply_style,
    bundled_styles,
    load_style,
    sample_style,
)
from roadnet.pipeline.scenes.synth import SynthConfig, plan_scene, synthesize

SIDE = 320
BASE = SynthConfig(gsd=0.5, seed=4, size=(SIDE, SIDE), window_px=512)


def read_rgb(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return np.moveaxis(src.read(), 0, -1)


def read_band(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def draw_layers(config: SynthConfig) -> tuple[np.ndarray, np.ndarray, WindowLayers, int]:
    """Central Helsinki: ``(y, x, 3)`` uint8, its ``(y, x)`` road mask, the layers, the halo."""
    plan = plan_scene("helsinki", config=config)
    params = config.render_params()
    halo = halo_px(params)
    layers = window_layers(
        plan.scenery,
        transform=plan.transform,
        row0=-halo,
        col0=-halo,
        height=plan.height + 2 * halo,
        width=plan.width + 2 * halo,
        car_density=config.car_density,
        markings=config.markings,
        sidewalk_share=config.sidewalk_share,
        building_share=config.building_share,
    )
    road = layers.road[halo:-halo, halo:-halo] > 0
    return render_window(layers, params=params, crop=halo), road, layers, halo


def draw(config: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """Central Helsinki: ``(y, x, 3)`` uint8 and its ``(y, x)`` road mask."""
    rgb, road, _, _ = draw_layers(config)
    return rgb, road


@pytest.fixture(scope="module")
def base() -> tuple[np.ndarray, np.ndarray]:
    return draw(BASE)


def with_(**values: object) -> tuple[np.ndarray, np.ndarray]:
    return draw(BASE.model_copy(update=values))


def green_fraction(rgb: np.ndarray) -> float:
    g = rgb.astype(int)
    return float(((g[..., 1] - g[..., 0] > 8) & (g[..., 1] - g[..., 2] > 8)).mean())


def detail(rgb: np.ndarray) -> float:
    """Mean absolute difference of horizontal neighbours (high-frequency energy)."""
    grey = rgb.astype(float).mean(axis=-1)
    return float(np.abs(np.diff(grey, axis=1)).mean())


def test_haze_lowers_contrast(base) -> None:
    hazy, _ = with_(haze=0.4)
    assert hazy.astype(float).std() < 0.75 * base[0].astype(float).std()


def test_seasons_take_the_green_away(base) -> None:
    dry, _ = with_(season="dry")
    bare, _ = with_(season="leafless")
    assert green_fraction(base[0]) > 0.1
    assert green_fraction(dry) < 0.5 * green_fraction(base[0])
    assert green_fraction(bare) < 0.5 * green_fraction(base[0])


def test_larger_gsd_fewer_pixels_for_the_same_extent() -> None:
    fine = plan_scene("test", config=SynthConfig(gsd=0.3))
    coarse = plan_scene("test", config=SynthConfig(gsd=0.6))
    assert coarse.width == pytest.approx(fine.width / 2, abs=1)
    assert coarse.height == pytest.approx(fine.height / 2, abs=1)


def test_road_palettes_change_the_road_colour(base) -> None:
    means = {}
    for palette in ("dark_asphalt", "pale_asphalt", "concrete", "cobbles", "unpaved"):
        rgb, road = with_(road_palette=palette, tree_density=0.0, car_density=0.0)
        means[palette] = rgb[road].astype(float).mean(axis=0)
    grey = {k: float(v.mean()) for k, v in means.items()}
    assert grey["dark_asphalt"] + 30 < grey["pale_asphalt"] < grey["concrete"]
    red_blue = {k: float(v[0] - v[2]) for k, v in means.items()}
    assert red_blue["unpaved"] > red_blue["cobbles"] > red_blue["dark_asphalt"] + 3
    assert red_blue["unpaved"] > 30


def test_markings_off_removes_paint(base) -> None:
    painted, road = with_(gsd=0.2, car_density=0.0, tree_density=0.0)
    plain, _ = with_(gsd=0.2, car_density=0.0, tree_density=0.0, markings=False)
    bright = lambda rgb: int((rgb[road].astype(int).min(axis=-1) > 170).sum())  # noqa: E731
    assert bright(painted) > 50
    assert bright(plain) < 0.2 * bright(painted)


def test_cover_and_roof_palettes(base) -> None:
    rgb, road = base
    dull, _ = with_(cover_saturation=0.3)
    cover = (dull != rgb).any(axis=-1)  # the land-cover pixels
    assert cover.mean() > 0.05
    sat = lambda a: float((a.max(axis=-1).astype(int) - a.min(axis=-1))[cover].mean())  # noqa: E731
    assert sat(dull) < 0.6 * sat(rgb)
    dark, _ = with_(cover_brightness=0.7)
    assert dark[~road].mean() < 0.85 * rgb[~road].mean()
    red, _ = with_(roof_palette="red_tiles")
    bright, _ = with_(roof_palette="bright")
    changed = (red != bright).any(axis=-1)
    assert changed.mean() > 0.005
    assert red[changed].astype(int)[:, 0].mean() - red[changed][:, 2].mean() > 30
    assert bright[changed].mean() > red[changed].mean() + 40


def test_low_sun_casts_more_shadow_and_azimuth_moves_it(base) -> None:
    low, _ = with_(sun_elevation_deg=20.0)
    dark = lambda a: float((a.astype(int).sum(axis=-1) < 150).mean())  # noqa: E731
    assert dark(low) > 1.3 * dark(base[0])
    other, _ = with_(sun_azimuth_deg=340.0)
    assert (
        (other.astype(int).sum(axis=-1) < 150) != (base[0].astype(int).sum(axis=-1) < 150)
    ).mean() > 0.01


def test_colour_cast(base) -> None:
    warm, _ = with_(cast_warmth=0.2)
    cool, _ = with_(cast_warmth=-0.2)
    ratio = lambda a: float(a[..., 0].mean() / a[..., 2].mean())  # noqa: E731
    assert ratio(warm) > 1.2 * ratio(base[0]) > 1.2 * ratio(cool)
    green, _ = with_(cast_tint=0.2)
    assert green[..., 1].mean() > base[0][..., 1].mean() * 1.1


def test_blur_noise_and_jpeg(base, tmp_path: Path) -> None:
    blurred, _ = with_(blur_px=2.0)
    noisy, _ = with_(noise_dn=12.0)
    assert detail(blurred) < 0.7 * detail(base[0])
    assert detail(noisy) > 1.5 * detail(base[0])
    # JPEG is applied per 512 px tile when the scene is written
    config = BASE.model_copy(update={"size": (256, 256)})
    clean = tmp_path / "clean"
    lossy = tmp_path / "lossy"
    synthesize("test", clean, config=config)
    synthesize("test", lossy, config=config.model_copy(update={"jpeg_quality": 20}))
    a, b = read_rgb(clean / "scene.tif").astype(int), read_rgb(lossy / "scene.tif").astype(int)
    assert 2.0 < np.abs(a - b).mean() < 20.0
    # 8x8 blocks: differences across block borders are larger than inside blocks
    step = np.abs(np.diff(b.mean(axis=-1), axis=1))
    assert step[:, 7::8].mean() > 1.1 * np.delete(step, np.s_[7::8], axis=1).mean()


def test_tree_and_car_densities() -> None:
    config = BASE.model_copy(update={"season": "green"})
    few, _ = draw(config.model_copy(update={"tree_density": 0.2}))
    many, _ = draw(config.model_copy(update={"tree_density": 2.5}))
    assert green_fraction(many) > green_fraction(few) + 0.02
    plan = plan_scene("helsinki", config=config)
    counts = []
    for density in (0.3, 2.5):
        layers = window_layers(
            plan.scenery,
            transform=plan.transform,
            row0=0,
            col0=0,
            height=SIDE,
            width=SIDE,
            car_density=density,
        )
        counts.append(int((layers.car > 0).sum()))
    assert counts[1] > 3 * counts[0] > 0


def test_sidewalk_and_building_shares(base) -> None:
    config = BASE.model_copy(update={"tree_density": 0.0, "car_density": 0.0})
    full_rgb, road, full, halo = draw_layers(config)
    inner = np.s_[halo:-halo, halo:-halo]
    walks = {}
    for share in (0.0, 0.5):
        rgb, same_road, layers, _ = draw_layers(config.model_copy(update={"sidewalk_share": share}))
        np.testing.assert_array_equal(same_road, road)  # labels and road surfaces stay
        walks[share] = int((layers.sidewalk[inner] > 0).sum())
        if share == 0.0:
            gone = (full.sidewalk[inner] > 0) & ~road
            changed = (rgb != full_rgb).any(axis=-1)
            assert gone.sum() > 1000 and changed[gone].mean() > 0.9
            # the paving left out is drawn as the land cover around it
            assert np.abs(rgb[gone].astype(int) - full_rgb[gone]).mean() > 5
    everything = int((full.sidewalk[inner] > 0).sum())
    assert walks[0.0] == 0 < 0.2 * everything < walks[0.5] < 0.95 * everything
    roofs = {}
    for share in (0.0, 0.3):
        _, _, layers, _ = draw_layers(config.model_copy(update={"building_share": share}))
        roofs[share] = int((layers.building[inner] > 0).sum())
    everything = int((full.building[inner] > 0).sum())
    assert roofs[0.0] == 0 < 0.05 * everything < roofs[0.3] < 0.6 * everything
    # at their defaults (1) both keys leave the original look, byte for byte
    again, _ = with_(sidewalk_share=1.0, building_share=1.0)
    np.testing.assert_array_equal(again, base[0])


def _surface(config: SynthConfig) -> np.ndarray:
    plan = plan_scene("test", config=config)
    layers = window_layers(
        plan.scenery,
        transform=plan.transform,
        row0=0,
        col0=0,
        height=plan.height,
        width=plan.width,
        car_density=0.0,
    )
    return layers.road > 0


def test_layout_mirror_rotate_scale() -> None:
    config = SynthConfig(gsd=2.0, seed=0, window_px=512)
    plain = _surface(config)
    mirrored = _surface(config.model_copy(update={"layout_mirror": True}))
    assert mirrored.shape == plain.shape
    assert (mirrored != plain[:, ::-1]).mean() < 0.01
    assert (mirrored != plain).mean() > 0.03
    turned = _surface(config.model_copy(update={"layout_rotation_deg": 90.0}))
    assert turned.shape == plain.shape[::-1]
    assert (turned != np.rot90(plain, 1)).mean() < 0.01
    tilted = _surface(config.model_copy(update={"layout_rotation_deg": 40.0}))
    assert tilted.mean() > 0.02  # roads are left inside the inscribed box
    wide = _surface(config.model_copy(update={"layout_scale": 2.0}))
    assert wide.shape[0] == pytest.approx(2 * plain.shape[0], abs=2)
    assert wide.mean() < 0.7 * plain.mean()  # same road widths, larger blocks


def test_ramps_add_curved_roads_clear_of_buildings() -> None:
    config = SynthConfig(gsd=2.0, seed=0, window_px=512)
    plain = plan_scene("test", config=config)
    ramped = plan_scene("test", config=config.model_copy(update={"ramps_per_km2": 10.0}))
    before, after = plain.scenery.roads, ramped.scenery.roads
    assert len(after) > len(before)
    added = after[~after.geometry.isin(before.geometry)]
    assert set(added["highway"]) <= set(RAMP_CLASSES) and "motorway_link" in set(added["highway"])
    assert added["width_m"].notna().all()
    # curved: each new line is longer than the straight line between its ends
    ends = shapely.distance(
        shapely.get_point(added.geometry.to_numpy(), 0),
        shapely.get_point(added.geometry.to_numpy(), -1),
    )
    assert (added.geometry.length.to_numpy() > 1.05 * ends).mean() > 0.5
    # no building is left under a new road, fewer buildings in all
    footprint = shapely.union_all(
        shapely.buffer(added.geometry.to_numpy(), added["width_m"].to_numpy() / 2)
    )
    assert not shapely.intersects(ramped.scenery.buildings.geometry.to_numpy(), footprint).any()
    assert len(ramped.scenery.buildings) < len(plain.scenery.buildings)
    # the labels come from the same lines: more road surface, and the same seed the same roads
    ramped_config = config.model_copy(update={"ramps_per_km2": 10.0})
    assert _surface(ramped_config).mean() > 1.05 * _surface(config).mean()
    np.testing.assert_array_equal(_surface(ramped_config), _surface(ramped_config))
    other = plan_scene("test", config=ramped_config.model_copy(update={"seed": 1}))
    assert not other.scenery.roads.geometry.equals(after.geometry)


# --- presets -----------------------------------------------------------------------------------


def test_presets_are_bundled_and_valid() -> None:
    assert {"temperate", "arid", "countryside", "heldout", "heldout-lush"} <= set(bundled_styles())
    for name in bundled_styles():
        style = load_style(name)
        assert set(style) - {"name"} <= set(STYLE_KEYS)
        for seed in range(5):
            config = apply_style(SynthConfig(seed=seed), style)
            assert isinstance(config, SynthConfig)


def _span(style: dict, key: str) -> tuple[float, float]:
    value = style[key]
    return (float(value[0]), float(value[1])) if isinstance(value, list) else (value, value)


def test_training_presets_do_not_overlap_and_heldout_is_outside() -> None:
    a, b, held = load_style("temperate"), load_style("arid"), load_style("heldout")
    numeric = [
        k
        for k in STYLE_KEYS
        if k in a and k in b and SynthConfig.model_fields[k].annotation in (int, float)
    ]
    apart = [
        k for k in numeric if _span(a, k)[1] < _span(b, k)[0] or _span(b, k)[1] < _span(a, k)[0]
    ]
    assert len(apart) >= 6, apart
    assert a["season"] != b["season"]
    assert _span(held, "gsd")[0] > max(_span(a, "gsd")[1], _span(b, "gsd")[1])
    assert held["season"] not in (a["season"], b["season"])
    trained_roads = set(a["road_palette"]) | set(b["road_palette"])
    assert not set(held["road_palette"]) & trained_roads
    assert held["roof_palette"] not in set(a["roof_palette"]) | set(b["roof_palette"])
    # the third training style, open country, stays clear of the held-out one as well
    c = load_style("countryside")
    assert _span(held, "gsd")[0] > _span(c, "gsd")[1]
    assert held["season"] not in c["season"] and c["markings"] != held["markings"]
    assert not set(held["road_palette"]) & set(c["road_palette"])
    assert held["roof_palette"] not in c["roof_palette"]
    assert _span(held, "layout_rotation_deg")[0] > _span(c, "layout_rotation_deg")[1]
    assert _span(c, "sidewalk_share")[1] < 0.5 and _span(c, "building_share")[1] <= 0.5


def test_oldtown_draws_the_heldout_roads_and_nothing_else_of_it() -> None:
    town, held = load_style("oldtown"), load_style("heldout")
    # the road materials the other training styles lack, and no asphalt or concrete
    assert set(town["road_palette"]) == {"cobbles", "unpaved"} == set(held["road_palette"])
    assert town["markings"] is False
    # apart from the held-out style on the rest of its foreign axes
    assert _span(town, "gsd")[1] < _span(held, "gsd")[0]
    assert held["season"] not in town["season"]
    assert held["roof_palette"] not in town["roof_palette"]
    for key in ("haze", "noise_dn", "blur_px", "cast_tint"):
        assert _span(town, key)[1] < _span(held, key)[0], key
    for key in ("sun_elevation_deg", "cast_warmth", "layout_scale"):
        assert _span(held, key)[1] < _span(town, key)[0], key
    assert not town["jpeg_quality"]
    # a drawn render uses one of the two materials, unmarked
    for seed in range(6):
        drawn = apply_style(SynthConfig(seed=seed), town)
        assert drawn.road_palette in ("cobbles", "unpaved") and not drawn.markings


def test_second_heldout_style_is_outside_every_training_style() -> None:
    lush = load_style("heldout-lush")
    trained = [load_style(name) for name in ("temperate", "arid", "countryside", "oldtown")]
    above = ["gsd", "sun_elevation_deg", "cast_warmth", "tree_density"]
    below = ["cover_hue_deg", "cover_brightness", "cast_tint", "noise_dn", "blur_px"]
    for style in trained:
        for key in above:
            assert _span(lush, key)[0] > _span(style, key)[1], (style["name"], key)
        for key in below:
            assert _span(lush, key)[1] < _span(style, key)[0], (style["name"], key)
        assert lush["roof_palette"] not in style["roof_palette"]
        assert _span(lush, "layout_scale")[1] < _span(style, "layout_scale")[0]
    # a green city: what separates it from `heldout` is not the season the training lacks
    assert lush["season"] == "green" != load_style("heldout")["season"]


def test_style_draw_is_seeded() -> None:
    style = load_style("arid")
    assert sample_style(style, seed=3) == sample_style(style, seed=3)
    assert sample_style(style, seed=3) != sample_style(style, seed=4)
    drawn = sample_style(style, seed=3)
    assert 0.33 <= drawn["gsd"] <= 0.45 and drawn["road_palette"] in ("pale_asphalt", "concrete")
    kept = apply_style(SynthConfig(seed=3, gsd=0.31), style, keep={"gsd"})
    assert kept.gsd == 0.31


def test_bad_styles(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no style 'nosuch'"):
        load_style("nosuch")
    bad = tmp_path / "bad.yaml"
    bad.write_text("gsd: [0.5, 0.2]\n")
    with pytest.raises(ConfigError, match="range"):
        load_style(bad)
    bad.write_text("hazee: 0.2\n")
    with pytest.raises(ConfigError, match="hazee"):
        load_style(bad)
    bad.write_text("haze: [0.85, 0.95]\n")
    with pytest.raises(ConfigError, match="haze"):
        apply_style(SynthConfig(seed=1), load_style(bad))


@pytest.fixture(scope="module")
def preset_scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One 512 x 512 px render of the Helsinki extract per bundled preset (seed 5)."""
    root = tmp_path_factory.mktemp("styles")
    out = {}
    for name in bundled_styles():
        config = apply_style(SynthConfig(seed=5, size=(512, 512), window_px=512), load_style(name))
        synthesize("helsinki", root / name, config=config, style=name)
        out[name] = root / name
    return out


def test_preset_render_is_deterministic(preset_scenes, tmp_path: Path) -> None:
    config = apply_style(SynthConfig(seed=5, size=(512, 512), window_px=512), load_style("heldout"))
    synthesize("helsinki", tmp_path / "again", config=config, style="heldout")
    first = preset_scenes["heldout"] / "scene.tif"
    with rasterio.open(first) as a, rasterio.open(tmp_path / "again" / "scene.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
    assert first.read_bytes() == (tmp_path / "again" / "scene.tif").read_bytes()
    text = (preset_scenes["heldout"] / "roadnet-config.yaml").read_text()
    assert "style: heldout" in text and "season: leafless" in text


def test_colour_threshold_baseline_fails_for_every_preset(preset_scenes) -> None:
    for name, out in preset_scenes.items():
        rgb = read_rgb(out / "scene.tif")
        road = read_band(out / "labels" / "surface.tif").astype(bool)
        assert road.mean() > 0.02, name
        grey = (rgb.astype(np.uint16).sum(axis=-1) // 3).astype(np.uint8)
        scores = {"grey": best_interval_iou(grey, road, 256), "hsv": best_hsv_iou(rgb, road)}
        for b, band in enumerate("rgb"):
            scores[band] = best_interval_iou(rgb[..., b], road, 256)
        assert max(scores.values()) < 0.5, (name, scores)


def test_cli_style_option(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    import yaml
    from typer.testing import CliRunner

    from roadnet.pipeline.cli import app

    out = tmp_path / "styled"
    args = ["synth", "--osm", "test", "--size", "96x96", "--seed", "3", "--style", "arid"]
    result = CliRunner().invoke(
        app, [*args, "--gsd", "4", "--set", "season=leafless", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    resolved = yaml.safe_load((out / "roadnet-config.yaml").read_text())
    drawn = sample_style(load_style("arid"), seed=3)
    assert resolved["style"] == "arid"
    assert resolved["config"]["gsd"] == 4.0 and resolved["config"]["season"] == "leafless"
    assert resolved["config"]["road_palette"] == drawn["road_palette"]
    assert resolved["config"]["haze"] == drawn["haze"]
    bad = subprocess.run(
        [sys.executable, "-m", "roadnet.pipeline.cli", *args[:-1], "nosuch", "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        timeout=120,
    )
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1 and "nosuch" in lines[0], bad.stderr
