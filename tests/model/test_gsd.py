from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _models import mean_predictor, smooth_scene
from distributed import Client
from typer.testing import CliRunner

from roadnet.errors import InputError
from roadnet.model.gsd import (
    card_finest_gsd,
    card_predict_gsd,
    ground_gsd,
    parse_predict_gsd,
    resample,
    resolve_predict_gsd,
    scaled_shape,
)
from roadnet.pipeline.cli import app
from roadnet.pipeline.inference.blend import BLOCK_SCALE, predict_block
from roadnet.pipeline.inference.graph import model_shape_for


def test_auto_upsamples_only_scenes_coarser_than_the_card() -> None:
    assert resolve_predict_gsd("auto", scene_gsd=0.5, card_gsd=0.35) == 0.35
    assert resolve_predict_gsd("auto", scene_gsd=2.0, card_gsd=0.35) == 0.5  # 4 x at most
    assert resolve_predict_gsd("auto", scene_gsd=0.3, card_gsd=0.35) is None  # finer
    assert resolve_predict_gsd("auto", scene_gsd=0.36, card_gsd=0.35) is None  # within 5 %
    assert resolve_predict_gsd("auto", scene_gsd=None, card_gsd=0.35) is None  # no CRS
    assert resolve_predict_gsd("auto", scene_gsd=0.5, card_gsd=None) is None  # no card key
    assert resolve_predict_gsd("native", scene_gsd=0.5, card_gsd=0.35) is None
    assert resolve_predict_gsd(0.25, scene_gsd=0.5, card_gsd=None) == 0.25
    assert resolve_predict_gsd(0.6, scene_gsd=0.3, card_gsd=None) == 0.6  # coarser, asked
    assert resolve_predict_gsd(0.5, scene_gsd=0.5, card_gsd=0.3) is None  # its own
    with pytest.raises(InputError, match="needs a scene with a CRS"):
        resolve_predict_gsd(0.3, scene_gsd=None, card_gsd=None)
    assert resolve_predict_gsd(0.125, scene_gsd=0.5, card_gsd=None) == 0.125  # 4 x: allowed
    with pytest.raises(InputError, match=r"5.0 x finer than the scene's 0.5 m; at most 4 x"):
        resolve_predict_gsd(0.1, scene_gsd=0.5, card_gsd=None)


def test_auto_shrinks_scenes_finer_than_the_cards_finest() -> None:
    card = {"card_gsd": 0.35, "card_finest": 0.3}
    assert resolve_predict_gsd("auto", scene_gsd=0.15, **card) == 0.3
    assert resolve_predict_gsd("auto", scene_gsd=0.05, **card) == 0.3  # no bound shrinking
    assert resolve_predict_gsd("auto", scene_gsd=0.3, **card) is None  # between: as it is
    assert resolve_predict_gsd("auto", scene_gsd=0.29, **card) is None  # within 5 %
    assert resolve_predict_gsd("auto", scene_gsd=0.5, **card) == 0.35  # coarser: enlarged
    assert resolve_predict_gsd("auto", scene_gsd=0.15, card_gsd=0.35) is None  # no finest
    assert resolve_predict_gsd("auto", scene_gsd=0.15, card_gsd=None, card_finest=0.3) == 0.3
    assert resolve_predict_gsd("native", scene_gsd=0.15, **card) is None


def test_ground_gsd_measures_degrees_and_web_mercator_on_the_ellipsoid(tmp_path: Path) -> None:
    import math

    import rasterio
    from affine import Affine

    from roadnet.pipeline.inference.open import open_scene

    shape = (1000, 1000)
    utm = Affine(0.3, 0, 385_000, 0, -0.3, 6_672_000)
    assert ground_gsd("EPSG:32635", utm, shape) == 0.3  # a local projection: its own metres
    feet = Affine(1.0, 0, 1_000_000, 0, -1.0, 200_000)
    assert ground_gsd("EPSG:2263", feet, shape) == pytest.approx(1200 / 3937)  # US survey ft
    radius = 6_378_137.0  # Web Mercator at 60 N: its metres are cos(60) = 0.5 on the ground
    north = radius * math.log(math.tan(math.pi / 4 + math.radians(60) / 2))
    mercator = Affine(0.3, 0, radius * math.radians(25), 0, -0.3, north)
    assert ground_gsd("EPSG:3857", mercator, shape) == pytest.approx(0.15, rel=0.01)
    # degrees at 60 N: 2.7e-6 deg is 0.30 m north-south, 0.15 m east-west; their mean
    degrees = Affine(2.7e-6, 0, 25.0, 0, -2.7e-6, 60.0)
    assert ground_gsd("EPSG:4326", degrees, shape) == pytest.approx(0.213, rel=0.01)
    assert ground_gsd(None, utm, shape) is None
    # a scene opened for roadnet run reports the same
    path = tmp_path / "mercator.tif"
    profile = {"driver": "GTiff", "width": 64, "height": 64, "count": 3, "dtype": "uint8"}
    with rasterio.open(path, "w", crs="EPSG:3857", transform=mercator, **profile) as dst:
        dst.write(np.zeros((3, 64, 64), np.uint8))
    assert open_scene(str(path), chunk=64).gsd == pytest.approx(0.15, rel=0.01)


def test_parse_predict_gsd() -> None:
    assert parse_predict_gsd("AUTO") == "auto"
    assert parse_predict_gsd("native") == "native"
    assert parse_predict_gsd("0.35") == 0.35
    for bad in ("fine", "0", "-1", "1000"):
        with pytest.raises(InputError, match="--predict-gsd"):
            parse_predict_gsd(bad)


def test_card_predict_gsd_reads_the_card_beside_the_model(tmp_path: Path) -> None:
    model = tmp_path / "m.keras"
    assert card_predict_gsd(model) is None  # no card
    (tmp_path / "m.json").write_text(json.dumps({"cutoffs": {"surface": 0.6}}))
    assert card_predict_gsd(model) is None
    (tmp_path / "m.json").write_text(json.dumps({"predict_gsd": {"gsd": 0.35}}))
    assert card_predict_gsd(model) == 0.35
    (tmp_path / "m.json").write_text("{not json")
    assert card_predict_gsd(model) is None


def test_resampled_predictions_take_the_predict_gsd_cutoffs(tmp_path: Path) -> None:
    from roadnet.model.card import card_cutoffs

    model = tmp_path / "m.keras"
    base = {"surface": 0.7, "edge": 0.45, "centerline": 0.45}
    (tmp_path / "m.json").write_text(json.dumps({"cutoffs": base, "predict_gsd": {"gsd": 0.35}}))
    assert card_cutoffs(model) == card_cutoffs(model, factor=2.0) == base  # none recorded
    own = {"surface": 0.75, "edge": 0.35, "centerline": 0.35}
    card = {"cutoffs": base, "predict_gsd": {"gsd": 0.35, "cutoffs": own}}
    (tmp_path / "m.json").write_text(json.dumps(card))
    assert card_cutoffs(model) == card_cutoffs(model, factor=0.5) == base
    assert card_cutoffs(model, factor=1.5) == own
    shrunk = {"surface": 0.6, "edge": 0.4, "centerline": 0.4}
    card["predict_gsd"]["finest"] = {"gsd": 0.3, "cutoffs": shrunk}
    (tmp_path / "m.json").write_text(json.dumps(card))
    assert card_cutoffs(model, factor=0.5) == shrunk  # shrunk to finest: its own
    assert card_cutoffs(model, factor=1.5) == own and card_cutoffs(model) == base
    assert card_finest_gsd(model) == 0.3 and card_predict_gsd(model) == 0.35


def test_resample_keeps_pixel_areas_aligned_and_values_in_range() -> None:
    assert scaled_shape((640, 640), 0.5 / 0.3) == (1067, 1067)
    image = np.zeros((40, 60, 1), np.float32)
    image[:, 20:30] = 255.0  # a 10 px stripe
    up = resample(image, scaled_shape((40, 60), 2.0))
    assert up.shape == (80, 120, 1) and up.dtype == np.float32
    assert up.min() >= 0.0 and up.max() <= 255.0
    assert np.flatnonzero(up[40, :, 0] > 127.5).tolist() == list(range(40, 60))  # twice as wide
    down = resample(up, (40, 60))
    assert np.abs(down - image).max() < 70  # only the stripe's two border columns blur
    assert abs(float(down.mean()) - float(image.mean())) < 0.5  # area kept
    assert resample(image, (40, 60)) is image


def test_predict_block_resampled_feeds_the_model_the_larger_grid() -> None:
    """The model sees the block upsampled by the factor; the result is on the block's grid."""
    block = smooth_scene(128 + 64, 128 + 64)
    factor = 0.5 / 0.3
    _, _, shape = model_shape_for((128, 128), core=128, overlap=32, resample=factor)
    assert shape == (320, 320)  # round(192 * 5/3) = 320
    seen: list[tuple[int, ...]] = []

    def predict(x: np.ndarray) -> np.ndarray:
        seen.append(x.shape)
        return mean_predictor(x)

    out = predict_block(
        block, predict=predict, overlap=32, model_shape=shape, scale=1.0, resample=factor
    )
    assert seen == [(1, 320, 320, 3)]
    assert out.shape == (4, 192, 192)
    plain = predict_block(
        block, predict=mean_predictor, overlap=32, model_shape=(192, 192), scale=1.0
    )
    # a near point-wise model gives nearly the same probabilities either way
    w = out[-1].astype(np.float64)
    centre = (slice(None), slice(48, 144), slice(48, 144))
    p_res = out[:3][centre] / np.maximum(w[centre[1:]], 1)
    p_plain = plain[:3][centre] / np.maximum(plain[-1][centre[1:]].astype(np.float64), 1)
    assert np.array_equal(out[-1], plain[-1])  # the blend weights stay on the scene grid
    assert np.abs(p_res - p_plain).max() < 0.05
    assert out[:3].max() <= BLOCK_SCALE


# A road 2 px wide at 0.6 m and a model that needs 3 px: its 3 x 3 mean must pass 200.
SIZE = 96
ROAD = slice(40, 42)


def _thin_road_files(
    directory: Path, *, gsd: float = 0.6, road: slice = ROAD
) -> tuple[Path, Path, Path, Path]:
    """Scene, labels, a Keras model that misses roads under 3 px wide, and its card."""
    import keras
    import rasterio
    from rasterio.transform import from_origin

    from roadnet.model.card import make_model_card, write_json_atomic

    profile = {
        "driver": "GTiff",
        "height": SIZE,
        "width": SIZE,
        "crs": "EPSG:32635",
        "transform": from_origin(385_000, 6_672_000, gsd, gsd),
        "dtype": "uint8",
    }
    image = np.zeros((3, SIZE, SIZE), np.uint8)
    image[:, road] = 255
    scene = directory / "scene.tif"
    with rasterio.open(scene, "w", count=3, **profile) as dst:
        dst.write(image)
    labels = directory / "labels"
    labels.mkdir()
    for task in ("surface", "edge", "centerline"):
        with rasterio.open(labels / f"{task}.tif", "w", count=1, **profile) as dst:
            dst.write((image[:1] > 0).astype(np.uint8))
    inputs = keras.Input((None, None, 3), dtype="float32")
    heads = {
        task: keras.layers.Conv2D(1, 3, padding="same", name=task)(inputs)
        for task in ("surface", "edge", "centerline")
    }
    model = keras.Model(inputs, heads, name="roadnet_thin")
    kernel = np.zeros((3, 3, 3, 1), np.float32)
    kernel[:, :, 0, 0] = 1 / 9 / 4  # (3 x 3 mean of band 1 - 200) / 4
    for task in heads:
        model.get_layer(task).set_weights([kernel, np.array([-50.0], np.float32)])
    path = directory / "thin.keras"
    model.save(path)
    card = make_model_card(path, variant="thin", parameters=84, data={}, metrics={}, training={})
    card["cutoffs"] = {"surface": 0.5, "edge": 0.5, "centerline": 0.5}
    return scene, labels, path, write_json_atomic(directory / "thin.json", card)


def test_predict_gsd_is_chosen_on_validation_scenes_and_run_follows_it(
    tmp_path: Path, client: Client
) -> None:
    import roadnet
    from roadnet.errors import OutputExistsError
    from roadnet.pipeline.inference.run import (
        CUTOFFS_ATTR,
        PREDICT_GSD_ATTR,
        RunConfig,
        run_to_zarr,
    )

    scene, labels, model, card_path = _thin_road_files(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    scene2, *_ = _thin_road_files(other, gsd=0.5)
    args = [str(scene), str(labels), "--model", str(model), "--card", str(card_path)]
    record = ["--also-scene", str(scene2), "--record-predict-gsd", "0.3,0.45"]
    result = CliRunner().invoke(app, ["evaluate-model", *args, *record])
    assert result.exit_code == 0, result.output + repr(result.exception)
    entry = json.loads(card_path.read_text())["predict_gsd"]
    assert entry["gsd"] == 0.3
    tried = {t["gsd"]: t for t in entry["chosen_on"]["tried"]}
    assert list(tried) == ["native", 0.45, 0.3]
    assert tried["native"]["mean"] == 0.0  # the 2 px road is missed at its own size
    assert tried[0.3]["mean"] > 0.5
    assert [s["scene_gsd"] for s in tried[0.3]["scenes"]] == [0.6, 0.5]
    # upsampled, the road's probability sits just under 0.5: the candidate's own cut-offs
    # find all of it, the card's (0.5) not, and the card records the winner's
    assert tried[0.3]["mean"] == 1.0 > tried[0.3]["mean_at_card_cutoffs"]
    assert entry["cutoffs"] == tried[0.3]["cutoffs"]
    assert entry["cutoffs"]["surface"] < 0.5
    assert "predict_gsd 0.3 m, cut-offs surface 0.40" in result.output

    again = CliRunner().invoke(app, ["evaluate-model", *args, "--record-predict-gsd", "0.3"])
    assert isinstance(again.exception, OutputExistsError)
    mixed = CliRunner().invoke(
        app, ["evaluate-model", *args, "--record-predict-gsd", "0.3,0.7", "--overwrite"]
    )
    assert "must all lie below" in str(mixed.exception)

    # evaluate-model and roadnet run read the card: the road is found on the scene's grid
    plain = ["evaluate-model", str(scene), str(labels), "--model", str(model)]
    scored = CliRunner().invoke(app, plain)
    assert scored.exit_code == 0 and "surface     cut 0.50  IoU 1.0000" in scored.output
    native = CliRunner().invoke(app, [*plain, "--predict-gsd", "native"])
    assert native.exit_code == 0 and "surface     cut 0.50  IoU 0.0000" in native.output
    # --threshold card: the predict_gsd's cut-offs on a resampled scene, else the card's
    cut = entry["cutoffs"]["surface"]
    carded = CliRunner().invoke(app, [*plain, "--threshold", "card"])
    assert carded.exit_code == 0 and f"surface     cut {cut:.2f}  IoU 1.0000" in carded.output
    base = CliRunner().invoke(app, [*plain, "--threshold", "card", "--predict-gsd", "native"])
    assert base.exit_code == 0 and "surface     cut 0.50" in base.output
    config = RunConfig(chunk=64, overlap=16)
    means = {}
    for setting in ("auto", "native"):
        store = tmp_path / f"{setting}.zarr"
        run_to_zarr(
            scene, store, model=model, client=client, progress=False,
            config=config.model_copy(update={"predict_gsd": setting}),
        )  # fmt: skip
        ds = roadnet.open_result(store)
        assert ds.attrs[PREDICT_GSD_ATTR] == ("0.3" if setting == "auto" else "native")
        # the road layer's default cut-offs follow the grid the model saw
        want = entry["cutoffs"] if setting == "auto" else dict.fromkeys(entry["cutoffs"], 0.5)
        assert json.loads(ds.attrs[CUTOFFS_ATTR]) == want
        assert ds.surface.shape == (SIZE, SIZE)
        means[setting] = float(ds.surface[ROAD].mean())
    assert means["auto"] >= 0.45 and means["native"] < 0.05, means


def test_finest_is_chosen_on_fine_validation_scenes_and_kept_beside_the_coarse_entry(
    tmp_path: Path,
) -> None:
    from roadnet.errors import OutputExistsError

    wide = slice(40, 52)  # 12 px at 0.1 m: 1.5 px, missed, once shrunk to 0.8 m
    scene, labels, model, card_path = _thin_road_files(tmp_path, gsd=0.1, road=wide)
    card = json.loads(card_path.read_text())
    coarse = {"gsd": 0.35, "cutoffs": {"surface": 0.7, "edge": 0.4, "centerline": 0.4}}
    card["predict_gsd"] = coarse
    card_path.write_text(json.dumps(card))
    args = [str(scene), str(labels), "--model", str(model), "--card", str(card_path)]
    result = CliRunner().invoke(app, ["evaluate-model", *args, "--record-predict-gsd", "0.2,0.8"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    entry = json.loads(card_path.read_text())["predict_gsd"]
    assert {k: entry[k] for k in coarse} == coarse  # the coarse side is kept
    finest = entry["finest"]
    tried = {t["gsd"]: t["mean"] for t in finest["chosen_on"]["tried"]}
    assert list(tried) == [0.8, 0.2, "native"]  # coarsest first: it wins ties
    assert tried[0.8] < 0.5 < tried[0.2]
    assert finest["gsd"] == 0.2  # as good as native here, and 4 x fewer pixels
    assert card_finest_gsd(model) == 0.2
    again = CliRunner().invoke(app, ["evaluate-model", *args, "--record-predict-gsd", "0.4"])
    assert isinstance(again.exception, OutputExistsError)
    assert "predict_gsd.finest 0.2" in str(again.exception)
    assert "predict_gsd.finest 0.2 m, cut-offs" in result.output
    # under auto this 0.1 m scene is now shrunk to 0.2 m and cut at the finest's cut-offs:
    # the score the choice saw
    plain = ["evaluate-model", str(scene), str(labels), "--model", str(model), "--out"]
    scored = CliRunner().invoke(app, [*plain, str(tmp_path / "r.json"), "--threshold", "card"])
    assert scored.exit_code == 0, scored.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["predict_gsd"] == 0.2
    assert report["scores"]["surface"]["iou"] == pytest.approx(
        finest["chosen_on"]["tried"][1]["at_cutoffs"]["surface"]
    )
    assert report["threshold"] == finest["cutoffs"]


def test_near_equal_candidates_go_to_the_coarser_grid() -> None:
    from roadnet.model.gsd import GSD_TIE, pick_predict_gsd

    tried = [{"gsd": "native", "mean": 0.70}, {"gsd": 0.3, "mean": 0.78954}]
    tried.append({"gsd": 0.25, "mean": 0.78957})  # better by 0.00003: a tie
    assert pick_predict_gsd(tried)["gsd"] == 0.3
    tried.append({"gsd": 0.2, "mean": 0.78954 + 2 * GSD_TIE})  # clearly better
    assert pick_predict_gsd(tried)["gsd"] == 0.2
    assert pick_predict_gsd(tried, tie=0.0)["gsd"] == 0.2
    assert pick_predict_gsd(tried[:3], tie=0.0)["gsd"] == 0.25
