"""``roadnet adapt``: a model copy fitted to a GeoTIFF's imagery, with its card (real Keras)."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from _cli import run_in_one_process
from _models import smooth_scene, write_scene

from roadnet.errors import InputError, OutputExistsError
from roadnet.model.adapt import batchnorm_layers
from roadnet.model.card import card_cutoffs
from roadnet.model.gsd import card_finest_gsd
from roadnet.model.io import content_hash, load_model
from roadnet.model.roadnet import ModelConfig, build_roadnet
from roadnet.pipeline.inference.adapt import adapt_to_scene, sample_tiles
from roadnet.pipeline.inference.open import open_scene

CUTOFFS = {"surface": 0.7, "edge": 0.45, "centerline": 0.4}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny RoadNet with a card that has cut-offs and a held-out evaluation."""
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    build_roadnet(ModelConfig(name="tiny", width_multiplier=0.125)).save(path)
    card = {"model": path.name, "cutoffs": CUTOFFS, "metrics": {"evaluations": {"held_out": {}}}}
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


def _stats(model: keras.Model) -> np.ndarray:
    return np.concatenate(
        [keras.ops.convert_to_numpy(bn.moving_mean) for bn in batchnorm_layers(model)]
    )


def test_adapted_model_and_card(tmp_path: Path, source: Path) -> None:
    scene = write_scene(
        tmp_path / "scene.tif", (0.5 * smooth_scene(200, 200) + 120).astype("uint8")
    )
    out = tmp_path / "adapted.keras"
    summary = adapt_to_scene(str(scene), out, model=source, tiles=6, tile_px=64, seed=3)
    assert (summary.tiles, summary.tile_px) == (6, 64) and summary.layers > 20
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["content_hash"] == content_hash(out) == summary.content_hash
    assert card["adapted"]["from"]["content_hash"] == content_hash(source)
    assert card["adapted"]["scene"] == str(scene) and card["adapted"]["tiles"] == 6
    assert "evaluations" not in card["metrics"]  # they scored the source model
    assert card_cutoffs(out) == CUTOFFS  # what roadnet run reads beside the model
    before, after = load_model(source), load_model(out)
    assert not np.allclose(_stats(before), _stats(after))
    kernel = before.get_layer("surface_conv1_1").conv.kernel
    same = after.get_layer("surface_conv1_1").conv.kernel
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(kernel), keras.ops.convert_to_numpy(same)
    )
    # same seed, same tiles, same model
    again = adapt_to_scene(
        str(scene), tmp_path / "again.keras", model=source, tiles=6, tile_px=64, seed=3
    )
    np.testing.assert_array_equal(_stats(load_model(again.out)), _stats(after))


def test_tiles_skip_nodata_and_a_scene_without_data_is_refused(tmp_path: Path) -> None:
    image = (0.5 * smooth_scene(160, 160) + 10).astype("uint8")  # values >= 10
    image[:, :, :80] = 0  # left half nodata
    scene = open_scene(str(write_scene(tmp_path / "half.tif", image, nodata=0)), chunk=64)
    tiles = sample_tiles(scene, tiles=5, tile_px=64, seed=0)
    assert tiles.shape == (5, 64, 64, 3) and tiles.min() >= 10
    empty = open_scene(str(write_scene(tmp_path / "empty.tif", image * 0, nodata=0)), chunk=64)
    with pytest.raises(InputError, match="free of nodata"):
        sample_tiles(empty, tiles=2, tile_px=64, seed=0)
    whole = open_scene(str(write_scene(tmp_path / "small.tif", smooth_scene(150, 150))), chunk=64)
    small = sample_tiles(whole, tiles=1, tile_px=512, seed=0)  # the largest side that fits
    assert small.shape == (1, 144, 144, 3)


def test_bad_input_is_refused_and_nothing_is_clobbered(tmp_path: Path, source: Path) -> None:
    scene = str(write_scene(tmp_path / "scene.tif", smooth_scene(96, 96)))
    existing = tmp_path / "kept.keras"
    existing.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        adapt_to_scene(scene, existing, model=source)
    assert existing.read_bytes() == b"keep me"
    with pytest.raises(InputError, match="strength"):
        adapt_to_scene(scene, tmp_path / "a.keras", model=source, strength=2.0)
    with pytest.raises(InputError, match="tiles"):
        adapt_to_scene(scene, tmp_path / "a.keras", model=source, tiles=0)
    cases = [
        (["adapt", str(tmp_path / "none.tif"), "--out", str(tmp_path / "b.keras")], "none.tif"),
        (["adapt", scene, "--out", str(tmp_path / "b.h5")], "must end in .keras"),
        (["adapt", scene, "--out", str(existing)], "--overwrite"),
    ]
    for (args, message), answer in zip(
        cases, run_in_one_process([a for a, _ in cases]), strict=True
    ):
        assert answer.code == 2 and message in answer.stderr, (args, answer)
        assert len(answer.stderr.strip().splitlines()) == 1 and answer.heavy == [], (args, answer)
    assert existing.read_bytes() == b"keep me"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_tiles_at_the_model_pixel_size_and_the_card_records_it(
    tmp_path: Path, source: Path
) -> None:
    image = np.zeros((3, 120, 120), np.uint8)
    image[:, :, 60:64] = 255  # a 4 px stripe at 0.6 m
    scene = open_scene(str(write_scene(tmp_path / "coarse.tif", image, gsd=0.6)), chunk=64)
    assert scene.gsd == pytest.approx(0.6)
    tiles = sample_tiles(scene, tiles=40, tile_px=64, seed=0, resample=2.0)
    assert tiles.shape == (40, 64, 64, 3)  # 32 scene px each, seen at 64 px
    row = [t[32, :, 0] > 127.5 for t in tiles]
    inside = [int(r.sum()) for r in row if r.any() and not (r[0] or r[-1])]  # not cut off
    assert inside and set(inside) == {8}  # the stripe is twice as wide as in the scene
    small = sample_tiles(scene, tiles=1, tile_px=512, seed=0, resample=2.0)
    assert small.shape == (1, 240, 240, 3)  # the whole 120 px scene, upsampled
    # the source card says 0.3 m: auto fits the statistics at 0.3 m and the card keeps it
    card = json.loads(source.with_suffix(".json").read_text())
    model = tmp_path / "src.keras"
    model.write_bytes(source.read_bytes())
    own = {"surface": 0.75, "edge": 0.35, "centerline": 0.35}
    entry = {"gsd": 0.3, "cutoffs": own}
    model.with_suffix(".json").write_text(json.dumps({**card, "predict_gsd": entry}))
    coarse = str(tmp_path / "coarse.tif")
    adapt_to_scene(coarse, tmp_path / "a.keras", model=model, tiles=2, tile_px=64)
    fitted = json.loads((tmp_path / "a.json").read_text())
    assert fitted["adapted"]["predict_gsd"] == 0.3 and fitted["predict_gsd"]["gsd"] == 0.3
    assert fitted["predict_gsd"]["cutoffs"] == own  # predicted on the grid they were chosen on
    adapt_to_scene(
        coarse, tmp_path / "n.keras", model=model, tiles=2, tile_px=64, predict_gsd="native"
    )
    native = json.loads((tmp_path / "n.json").read_text())
    # fitted on the scene's own pixels: run under auto must not upsample this scene
    assert native["adapted"]["predict_gsd"] == "native"
    assert native["predict_gsd"]["gsd"] == pytest.approx(0.6)
    assert "cutoffs" not in native["predict_gsd"]
    # a source whose finest is coarser than the scene: fitted shrunk, and run shrinks it again
    shrink = {"gsd": 1.4, "finest": {"gsd": 1.2, "cutoffs": own}}
    model.with_suffix(".json").write_text(json.dumps({**card, "predict_gsd": shrink}))
    adapt_to_scene(coarse, tmp_path / "s.keras", model=model, tiles=2, tile_px=32)
    shrunk = json.loads((tmp_path / "s.json").read_text())
    assert shrunk["adapted"]["predict_gsd"] == 1.2
    assert shrunk["predict_gsd"]["finest"] == {
        "gsd": 1.2, "chosen_on": "the adapted scene's tiles", "cutoffs": own
    }  # fmt: skip
    assert card_finest_gsd(tmp_path / "s.keras") == 1.2
