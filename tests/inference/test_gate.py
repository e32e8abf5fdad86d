"""The adapt gate and input statistics written into a model card, and ``roadnet calibrate-gate``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _cli import run_in_one_process
from _models import save_tiny_roadnet, smooth_scene, write_scene

from roadnet.errors import InputError
from roadnet.model.card import card_adapt_rule
from roadnet.pipeline.inference.adapt import adapt_to_scene
from roadnet.pipeline.inference.gate import calibrate_gate, write_gate

CUTOFFS = {"surface": 0.7, "edge": 0.45, "centerline": 0.4}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained RoadNet with a card that has cut-offs."""
    return save_tiny_roadnet(tmp_path_factory.mktemp("model"), {"cutoffs": CUTOFFS})


def test_calibrate_gate_sets_the_gate_at_the_farthest_training_look(
    tmp_path: Path, source: Path
) -> None:
    model = Path(shutil.copy(source, tmp_path / "m.keras"))
    shutil.copy(source.with_suffix(".json"), model.with_suffix(".json"))
    near = write_scene(tmp_path / "near.tif", (0.5 * smooth_scene(200, 200) + 100).astype("uint8"))
    far = write_scene(tmp_path / "far.tif", (0.2 * smooth_scene(200, 200) + 30).astype("uint8"))
    scenes = [str(near), str(far), str(near)]  # a repeated scene is measured once
    calibration = calibrate_gate(str(model), scenes, margin=1.5)
    assert list(calibration.shifts) == [str(near), str(far)]
    each = {
        s: adapt_to_scene(s, tmp_path / f"{i}.keras", model=model, match=False).shift
        for i, s in enumerate(calibration.shifts)
    }
    assert calibration.shifts == pytest.approx(each, abs=1e-4)
    assert calibration.shifts[str(far)] != calibration.shifts[str(near)]
    assert calibration.min_shift == round(1.5 * max(each.values()), 3)
    # the band statistics are the scenes' average: between the dark and the bright scene
    assert 30 < calibration.band_mean[0] < 130 and len(calibration.band_std) == 3
    write_gate(model.with_suffix(".json"), calibration)
    assert card_adapt_rule(model) == calibration.min_shift
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["input_statistics"]["mean"] == [round(v, 3) for v in calibration.band_mean]
    assert card["cutoffs"] == CUTOFFS  # the rest of the card stays
    # statistics only: a gate set by hand is kept
    card["run"] = {"adapt": {"min_shift": 0.5}}
    model.with_suffix(".json").write_text(json.dumps(card))
    write_gate(model.with_suffix(".json"), calibration, gate=False)
    assert card_adapt_rule(model) == 0.5
    with pytest.raises(InputError, match="at least one"):
        calibrate_gate(str(model), [])
    with pytest.raises(InputError, match="margin"):
        calibrate_gate(str(model), [str(near)], margin=0.0)


def test_calibrate_gate_command(tmp_path: Path, source: Path) -> None:
    from typer.testing import CliRunner

    from roadnet.pipeline.cli import app

    model = Path(shutil.copy(source, tmp_path / "m.keras"))
    scene = write_scene(tmp_path / "s.tif", (0.5 * smooth_scene(200, 200) + 100).astype("uint8"))
    args = ["calibrate-gate", str(scene), "--model", str(model)]
    missing = ["calibrate-gate", str(tmp_path / "missing.tif"), "--model", str(model)]
    for answer, needle in zip(
        run_in_one_process([args, missing]), ["m.json beside it", "missing.tif"], strict=True
    ):
        assert answer.code == 2 and needle in answer.stderr, answer
        assert len(answer.stderr.strip().splitlines()) == 1 and answer.heavy == [], answer
    shutil.copy(source.with_suffix(".json"), model.with_suffix(".json"))
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    written = json.loads(model.with_suffix(".json").read_text())["run"]
    gate = written["adapt"]["min_shift"]
    assert f"{scene}: shift {written['shifts'][str(scene)]:.4f}" in result.output
    assert f"adapt gate {gate:.3f}" in result.output and card_adapt_rule(model) == gate
