"""Cut-offs chosen on a labelled scene: the choice, the card, and `roadnet run` / `vectorize`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from distributed import Client

from roadnet.model.cutoffs import DEFAULT_GRID, choose_cutoffs, cutoff_grid

TASKS = ("surface", "edge", "centerline")
SIZE = 96
ROAD = slice(10, 22)  # rows of the true road, every task
DECOY = slice(60, 72)  # rows the model scores a little lower, far (> rho) from the road
# per task (p on the road, p on the decoy): every cut between the two is perfect, so the best
# cut of the default grid is known: surface 0.3, edge 0.65, centerline 0.45 (0.5 is worse)
PROBS = {"surface": (0.35, 0.27), "edge": (0.70, 0.62), "centerline": (0.48, 0.42)}
BEST = {"surface": 0.3, "edge": 0.65, "centerline": 0.45}
SCALE = 16.0  # the model's logit is (band value - 128) / SCALE


def _value(p: float) -> int:
    return round(128 + SCALE * math.log(p / (1 - p)))


def _scene_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(y, x, 3)`` uint8 image (band k drives task k) and ``(y, x, 3)`` uint8 labels."""
    image = np.full((SIZE, SIZE, 3), 40, np.uint8)  # p < 0.01 off the road and the decoy
    for k, task in enumerate(TASKS):
        road, decoy = PROBS[task]
        image[ROAD, :, k] = _value(road)
        image[DECOY, :, k] = _value(decoy)
    labels = np.zeros((SIZE, SIZE, 3), np.uint8)
    labels[ROAD] = 1
    return image, labels


def _band_model(path: Path) -> Path:
    """A real Keras model: task k's logit is ``(band k - 128) / SCALE`` (1x1 convolutions)."""
    import keras

    inputs = keras.Input((None, None, 3), dtype="float32")
    heads = {task: keras.layers.Conv2D(1, 1, name=task)(inputs) for task in TASKS}
    model = keras.Model(inputs, heads, name="roadnet_bands")
    for k, task in enumerate(TASKS):
        kernel = np.zeros((1, 1, 3, 1), np.float32)
        kernel[0, 0, k, 0] = 1 / SCALE
        model.get_layer(task).set_weights([kernel, np.array([-128 / SCALE], np.float32)])
    model.save(path)
    return path


def _write_files(directory: Path) -> tuple[Path, Path, Path, Path]:
    """Scene GeoTIFF, labels directory, model ``bands.keras`` and its card ``bands.json``."""
    import rasterio
    from rasterio.transform import from_origin

    from roadnet.model.card import make_model_card, write_json_atomic

    image, labels = _scene_arrays()
    profile = {
        "driver": "GTiff",
        "height": SIZE,
        "width": SIZE,
        "crs": "EPSG:32635",
        "transform": from_origin(385_000, 6_672_000, 0.3, 0.3),
        "dtype": "uint8",
    }
    scene = directory / "scene.tif"
    with rasterio.open(scene, "w", count=3, **profile) as dst:
        dst.write(np.moveaxis(image, -1, 0))
    label_dir = directory / "labels"
    label_dir.mkdir()
    for k, task in enumerate(TASKS):
        with rasterio.open(label_dir / f"{task}.tif", "w", count=1, **profile) as dst:
            dst.write(labels[None, ..., k])
    model = _band_model(directory / "bands.keras")
    card = make_model_card(model, variant="bands", parameters=12, data={}, metrics={}, training={})
    return scene, label_dir, model, write_json_atomic(directory / "bands.json", card)


def test_the_best_cut_of_one_sweep_wins_per_task(tmp_path: Path) -> None:
    """One forward pass scored at every cut; each task gets the cut where its score peaks."""
    from roadnet.model.data import LabelledScene
    from roadnet.model.evaluate import evaluate_scene
    from roadnet.model.io import load_model

    model = load_model(_band_model(tmp_path / "m.keras"))
    image, labels = _scene_arrays()
    scene = LabelledScene(image, labels, (0, 0, SIZE, SIZE), "bands")
    scores = evaluate_scene(model, scene, tile=64, margin=16, sweep=cutoff_grid())
    choice = choose_cutoffs(scores["sweep"])
    assert choice["cutoffs"] == BEST
    for task in TASKS:
        chosen = choice["scores"][task]
        assert chosen["score"] == ("iou" if task == "surface" else "relaxed_f1")
        assert chosen["at_cutoff"] == 1.0
        assert chosen["at_0.5"] == scores[task][chosen["score"]]  # the main cut is 0.5
        assert chosen["gain"] == pytest.approx(1.0 - chosen["at_0.5"]) and chosen["gain"] > 0.2


def test_ties_go_to_the_cut_nearest_one_half_and_the_grid_holds_it() -> None:
    flat = [{"threshold": c, "iou": 0.8, "relaxed_f1": 0.8} for c in (0.3, 0.45, 0.5, 0.55, 0.6)]
    rows = [{**r, "iou": 0.9 if r["threshold"] in (0.3, 0.45, 0.55) else 0.8} for r in flat]
    choice = choose_cutoffs({"surface": rows, "edge": flat, "centerline": flat})
    assert choice["cutoffs"] == {"surface": 0.45, "edge": 0.5, "centerline": 0.5}
    assert choice["scores"]["edge"]["gain"] == 0.0
    assert cutoff_grid([0.7, 0.3, 0.3]) == [0.3, 0.5, 0.7]
    assert cutoff_grid() == [0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8]
    assert list(DEFAULT_GRID) == cutoff_grid()
    with pytest.raises(ValueError, match=r"no cut at 0\.5"):
        choose_cutoffs({t: [r for r in flat if r["threshold"] != 0.5] for t in TASKS})
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        cutoff_grid([0.0, 0.5])


def test_evaluate_model_records_cutoffs_once_and_run_and_vectorize_follow_them(
    tmp_path: Path, client: Client
) -> None:
    from typer.testing import CliRunner

    import roadnet
    from roadnet.errors import ModelError, OutputExistsError
    from roadnet.pipeline.cli import app
    from roadnet.pipeline.inference.run import CUTOFFS_ATTR, RunConfig, run_to_zarr
    from roadnet.pipeline.vectorize.run import vectorize_result

    scene, labels, model, card_path = _write_files(tmp_path)
    before = json.loads(card_path.read_text())
    args = ["evaluate-model", str(scene), str(labels), "--model", str(model)]
    record = [*args, "--card", str(card_path), "--record-cutoffs"]
    result = CliRunner().invoke(app, [*record, "--out", str(tmp_path / "report.json")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    card = json.loads(card_path.read_text())
    assert card["cutoffs"] == BEST
    chosen_on = card["cutoffs_chosen_on"]
    assert chosen_on["scene"] == str(scene) and chosen_on["window"] == [0, 0, SIZE, SIZE]
    assert chosen_on["grid"] == list(DEFAULT_GRID) and chosen_on["rho"] == 2.0
    assert chosen_on["scores"]["surface"]["at_0.5"] == 0.0  # nothing above 0.5 on the road
    assert {k: v for k, v in card.items() if not k.startswith("cutoffs")} == before
    assert "surface     cut 0.30  iou 1.0000  at 0.5 0.0000  (+1.0000)" in result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert [r["threshold"] for r in report["sweep"]["edge"]] == list(DEFAULT_GRID)

    # a second time: refused before the model runs, the card unchanged; --overwrite replaces
    again = CliRunner().invoke(app, record)
    assert isinstance(again.exception, OutputExistsError), again.output
    assert json.loads(card_path.read_text()) == card
    other = CliRunner().invoke(app, [*record, "--overwrite", "--sweep", "0.25,0.6"])
    assert other.exit_code == 0, other.output + repr(other.exception)
    # 0.25 takes the decoy too (still best for surface and centerline); edge ties at 0.5
    replaced = json.loads(card_path.read_text())
    assert replaced["cutoffs"] == {"surface": 0.25, "edge": 0.5, "centerline": 0.25}
    assert replaced["cutoffs_chosen_on"]["grid"] == [0.25, 0.5, 0.6]
    alien = tmp_path / "alien.json"
    alien.write_text(json.dumps({**before, "content_hash": "0" * 16}))
    mismatch = CliRunner().invoke(app, [*args, "--card", str(alien), "--record-cutoffs"])
    assert isinstance(mismatch.exception, ModelError) and "describes model" in str(
        mismatch.exception
    )
    assert "cutoffs" not in json.loads(alien.read_text())
    needs_card = CliRunner().invoke(app, [*args, "--record-cutoffs"])
    assert "needs --card" in str(needs_card.exception)

    # roadnet run copies the card beside the model into the result; vectorize follows it
    card_path.write_text(json.dumps({**card, "cutoffs": BEST}))
    store = tmp_path / "r.zarr"
    config = RunConfig(chunk=64, overlap=16)
    run_to_zarr(scene, store, model=model, config=config, client=client, progress=False)
    attrs = roadnet.open_result(store).attrs
    assert json.loads(attrs[CUTOFFS_ATTR]) == BEST
    summary = vectorize_result(store, tmp_path / "roads.gpkg", client=client, progress=False)
    assert summary.threshold == 0.3 and summary.components == 1  # p = 0.35 is road at 0.3


def test_refusal_is_one_line_and_exit_2(tmp_path: Path) -> None:
    scene, labels, model, card_path = _write_files(tmp_path)
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, "cutoffs": BEST}))
    args = [str(scene), str(labels), "--model", str(model), "--card", str(card_path)]
    proc = subprocess.run(
        [sys.executable, "-m", "roadnet.pipeline.cli", "evaluate-model", *args, "--record-cutoffs"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("roadnet: error:")]
    assert len(lines) == 1 and "already records cut-offs" in lines[0], proc.stderr
    assert "--overwrite" in lines[0] and json.loads(card_path.read_text())["cutoffs"] == BEST
