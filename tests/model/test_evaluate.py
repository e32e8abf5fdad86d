from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from _models import build_test_model, save_test_model

from roadnet.model.data import LabelledScene
from roadnet.model.evaluate import evaluate_scene, predict_scene


def _image(height: int, width: int) -> np.ndarray:
    from scipy import ndimage

    rng = np.random.default_rng(0)
    img = ndimage.gaussian_filter(rng.uniform(0, 255, (height, width, 3)), (2, 2, 0))
    return ((img - img.min()) / np.ptp(img) * 255).astype(np.float32)


def test_tiled_prediction_equals_whole_image_prediction_inside() -> None:
    model = build_test_model()  # 7 px receptive field, far below the 16 px margin
    image = _image(100, 150)
    tiled = predict_scene(model, image, tile=64, margin=16)
    direct = model(image[None], training=False)
    for task, prob in tiled.items():
        assert prob.shape == (100, 150)
        want = keras.ops.convert_to_numpy(keras.ops.sigmoid(direct[task]))[0, ..., 0]
        # zero 'same' padding vs mirrored tiles differ only within the receptive field of
        # the image border
        np.testing.assert_allclose(prob[4:-4, 4:-4], want[4:-4, 4:-4], atol=1e-5)


def test_tile_must_fit_the_model() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        predict_scene(build_test_model(), _image(32, 32), tile=50, margin=8)


def test_scores_are_perfect_against_the_models_own_prediction() -> None:
    model = build_test_model()
    image = _image(96, 96).astype(np.uint8)
    probs = predict_scene(model, image.astype(np.float32), tile=64, margin=16)
    labels = np.stack([probs[t] > 0.5 for t in ("surface", "edge", "centerline")], -1)
    assert 0 < labels.mean() < 1
    scene = LabelledScene(image, labels.astype(np.uint8), (0, 0, 96, 96), "own prediction")
    scores = evaluate_scene(model, scene, tile=64, margin=16)
    for task in ("surface", "edge", "centerline"):
        assert scores[task]["iou"] == 1.0 and scores[task]["relaxed_f1"] == 1.0
    shifted = LabelledScene(
        scene.image, np.roll(scene.labels, 1, axis=1), scene.window, "shifted by 1 px"
    )
    moved = evaluate_scene(model, shifted, tile=64, margin=16)["surface"]
    assert moved["iou"] < 1.0 and moved["relaxed_f1"] > moved["f1"]


def test_evaluate_model_command_writes_a_report(tmp_path: Path) -> None:
    import rasterio
    from rasterio.transform import from_origin
    from typer.testing import CliRunner

    from roadnet.pipeline.cli import app

    model_path = save_test_model(tmp_path / "m.keras")
    image = _image(64, 96).astype(np.uint8)
    profile = {
        "driver": "GTiff",
        "height": 64,
        "width": 96,
        "crs": "EPSG:32635",
        "transform": from_origin(385_000, 6_672_000, 0.3, 0.3),
        "dtype": "uint8",
    }
    scene = tmp_path / "scene.tif"
    with rasterio.open(scene, "w", count=3, **profile) as dst:
        dst.write(np.moveaxis(image, -1, 0))
    labels = tmp_path / "labels"
    labels.mkdir()
    for i, name in enumerate(("surface", "edge", "centerline")):
        with rasterio.open(labels / f"{name}.tif", "w", count=1, **profile) as dst:
            dst.write((image[None, ..., i] > 128).astype(np.uint8))
    from roadnet.model.card import make_model_card, write_json_atomic

    card_path = write_json_atomic(
        tmp_path / "m.json",
        make_model_card(model_path, variant="test", parameters=1, data={}, metrics={}, training={}),
    )
    out = tmp_path / "metrics.json"
    args = ["evaluate-model", str(scene), str(labels), "--model", str(model_path)]
    result = CliRunner().invoke(
        app, [*args, "--out", str(out), "--window", "0,0,64,64", "--card", str(card_path)]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads(out.read_text())
    card = json.loads(card_path.read_text())
    assert card["metrics"]["evaluations"]["held_out"] == report
    assert report["window"] == [0, 0, 64, 64] and report["rho"] == 2.0
    assert set(report["scores"]) == {"surface", "edge", "centerline"}
    assert "relaxed(rho=2)" in result.output
    again = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert again.exit_code != 0  # refuses to overwrite
    bad = CliRunner().invoke(app, [*args, "--window", "1,2,3"])
    assert "col0,row0,col1,row1" in str(bad.exception)
    other = save_test_model(tmp_path / "other.keras", seed=9)
    mismatch = CliRunner().invoke(
        app,
        [
            "evaluate-model",
            str(scene),
            str(labels),
            "--model",
            str(other),
            "--card",
            str(card_path),
        ],
    )
    assert "describes model" in str(mismatch.exception)


def test_parse_thresholds() -> None:
    from roadnet.errors import InputError
    from roadnet.model.evaluate import parse_cuts, parse_thresholds

    assert parse_thresholds("0.6") == {"surface": 0.6, "edge": 0.6, "centerline": 0.6}
    assert parse_thresholds("edge=0.3") == {"surface": 0.5, "edge": 0.3, "centerline": 0.5}
    assert parse_cuts("0.3, 0.7") == [0.3, 0.7]
    for bad in ("1.5", "road=0.5", "x", "0.3,0.5"):
        with pytest.raises(InputError):
            parse_thresholds(bad)


def test_per_task_thresholds_and_sweep() -> None:
    model = build_test_model()
    image = _image(64, 64).astype(np.uint8)
    labels = (np.random.default_rng(0).random((64, 64, 3)) < 0.3).astype(np.uint8)
    scene = LabelledScene(image, labels, (0, 0, 64, 64), "m")
    cuts = {"surface": 0.3, "edge": 0.5, "centerline": 0.7}
    scores = evaluate_scene(model, scene, threshold=cuts, tile=64, margin=16, sweep=[0.3, 0.7])
    assert [scores[t]["threshold"] for t in cuts] == [0.3, 0.5, 0.7]
    swept = scores["sweep"]["surface"]
    assert [s["threshold"] for s in swept] == [0.3, 0.7]
    assert swept[0]["iou"] == scores["surface"]["iou"]
    assert swept[1]["tp"] + swept[1]["fp"] <= swept[0]["tp"] + swept[0]["fp"]


def test_evaluate_model_reports_the_generalization_gap(tmp_path: Path) -> None:
    """In-style vs out-of-style renders of the `test` extract, side by side, and their gap."""
    from typer.testing import CliRunner

    from roadnet.pipeline.cli import app
    from roadnet.pipeline.scenes.styles import apply_style, load_style
    from roadnet.pipeline.scenes.synth import SynthConfig, synthesize

    for name in ("temperate", "heldout"):
        config = apply_style(SynthConfig(seed=2, size=(256, 256), window_px=512), load_style(name))
        synthesize("test", tmp_path / name, config=config, style=name)
    model_path = save_test_model(tmp_path / "m.keras")
    out = tmp_path / "gap.json"
    inside = tmp_path / "temperate"
    args = ["evaluate-model", str(inside / "scene.tif"), str(inside / "labels")]
    args += ["--model", str(model_path), "--out-of-style", str(tmp_path / "heldout" / "scene.tif")]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads(out.read_text())
    assert report["in_style"]["scene"].endswith("temperate/scene.tif")
    assert report["out_of_style"]["labels"].endswith("heldout/labels")
    for task in ("surface", "edge", "centerline"):
        for key in ("iou", "f1", "relaxed_f1"):
            a = report["in_style"]["scores"][task][key]
            b = report["out_of_style"]["scores"][task][key]
            assert report["gap"][task][key] == pytest.approx(a - b)
    assert "IoU in" in result.output and "surface" in result.output
    line = next(row for row in result.output.splitlines() if row.startswith("surface"))
    assert f"{report['gap']['surface']['iou']:+7.4f}" in line
    bad = CliRunner().invoke(app, [*args, "--window", "0,0,64,64"])
    assert "drop --window" in str(bad.exception)
