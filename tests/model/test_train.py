from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from roadnet.errors import InputError, OutputExistsError

ORIGIN = (385_000.0, 6_672_000.0)


def write_road_scene(directory: Path, *, size: int = 256, seed: int = 0) -> tuple[Path, Path]:
    """A textured ground with straight grey roads of varying width; labels on the same grid.

    Surface = road pixels, edge = road pixels touching non-road, centerline = the middle
    row/column of each road. Returns (scene path, labels directory).
    """
    import rasterio
    from rasterio.transform import from_origin
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    ground = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 3)
    ground = (ground - ground.min()) / np.ptp(ground)
    image = np.stack([70 + 60 * ground, 100 + 70 * ground, 50 + 40 * ground], axis=-1)
    surface = np.zeros((size, size), bool)
    center = np.zeros((size, size), bool)
    for axis in (0, 1):
        pos = 12
        while pos < size - 20:
            pos += int(rng.integers(20, 60))
            width = int(rng.integers(5, 12))
            if pos + width >= size:
                break
            if axis == 0:
                surface[pos : pos + width, :] = True
                center[pos + width // 2, :] = True
            else:
                surface[:, pos : pos + width] = True
                center[:, pos + width // 2] = True
    road = 150 + rng.normal(0, 6, (size, size))
    image[surface] = np.stack([road, road, road + 5], axis=-1)[surface]
    image += rng.normal(0, 4, image.shape)
    edge = surface & ~ndimage.binary_erosion(surface, border_value=1)
    labels = {"surface": surface, "edge": edge, "centerline": center & surface}
    transform = from_origin(*ORIGIN, 0.3, 0.3)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "crs": "EPSG:32635",
        "transform": transform,
    }
    directory.mkdir(parents=True, exist_ok=True)
    scene = directory / "scene.tif"
    with rasterio.open(scene, "w", count=3, dtype="uint8", **profile) as dst:
        dst.write(np.moveaxis(np.clip(image, 0, 255).astype(np.uint8), -1, 0))
    (directory / "labels").mkdir(exist_ok=True)
    for name, mask in labels.items():
        with rasterio.open(
            directory / "labels" / f"{name}.tif", "w", count=1, dtype="uint8", **profile
        ) as dst:
            dst.write(mask.astype(np.uint8)[None])
    return scene, directory / "labels"


def _write_config(path: Path, scene: Path, labels: Path, **extra: object) -> Path:
    import yaml

    config = {
        "model": str(path.parent / "tiny.yaml"),
        "train": [{"scene": str(scene), "labels": str(labels), "window": [0, 0, 256, 160]}],
        "validation": {"scene": str(scene), "labels": str(labels), "window": [0, 160, 256, 256]},
        "crop_size": 96,
        "batch_size": 4,
        "steps_per_epoch": 10,
        "epochs": 3,
        "validation_tiles": 8,
        "learning_rate": 0.003,
        "seed": 0,
        **extra,
    }
    (path.parent / "tiny.yaml").write_text("name: tiny\nwidth_multiplier: 0.125\n")
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Train a tiny RoadNet through `roadnet train` for 3 short epochs; return (run, config)."""
    from typer.testing import CliRunner

    from roadnet.pipeline.cli import app

    base = tmp_path_factory.mktemp("train")
    scene, labels = write_road_scene(base / "data", size=256, seed=3)
    config = _write_config(base / "train.yaml", scene, labels)
    run = base / "run"
    result = CliRunner().invoke(app, ["train", "--config", str(config), "--out", str(run)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "best val_mean_f1" in result.output
    return run, config


def test_training_learns_roads_far_above_the_background_baseline(
    tiny_run: tuple[Path, Path],
) -> None:
    """The origin report's failure (everything predicted background) must not come back."""
    run, _ = tiny_run
    card = json.loads((run / "model.json").read_text())
    surface = card["metrics"]["validation_scene"]["surface"]
    # an all-background prediction scores IoU 0 and recall 0 on this held-out strip
    assert surface["iou"] > 0.6, surface
    assert surface["recall"] > 0.6 and surface["precision"] > 0.6, surface
    assert 0.15 < surface["truth_fraction"] < 0.6
    assert card["metrics"]["best"] > 0.2


def test_run_directory_has_model_card_logs_and_curves(tiny_run: tuple[Path, Path]) -> None:
    from roadnet.model.io import content_hash, load_model

    run, _ = tiny_run
    card = json.loads((run / "model.json").read_text())
    assert card["content_hash"] == content_hash(run / "model.keras")
    assert card["variant"] == "tiny" and card["parameters"] > 10_000
    assert card["data"]["validation"]["window"] == [0, 160, 256, 256]
    assert card["created"].startswith("20")
    # the adapt gate and input statistics, measured on the training and validation scene
    gate = card["run"]
    assert list(gate["shifts"]) == [card["data"]["validation"]["scene"]]  # one scene, once
    assert gate["adapt"]["min_shift"] == round(max(gate["shifts"].values()), 3) > 0
    assert len(card["input_statistics"]["mean"]) == 3 and card["input_statistics"]["scenes"] == 1
    with open(run / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert {"val_surface_iou", "val_mean_f1", "learning_rate"} <= set(rows[0])
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (run / "augment-samples.png").read_bytes()[:4] == b"\x89PNG"
    state = json.loads((run / "state.json").read_text())
    assert set(state["counters"]) == {"lr_plateau", "early_stopping"}
    assert any((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert (run / "roadnet-config.yaml").is_file()
    model = load_model(run / "model.keras")  # safe_mode=True
    assert getattr(model, "optimizer", None) is None  # shipped without optimizer state
    x = np.zeros((1, 32, 32, 3), "float32")
    assert set(model(x, training=False)) >= {"surface", "edge", "centerline"}


def test_card_records_the_cutoffs_chosen_on_the_validation_window(
    tiny_run: tuple[Path, Path],
) -> None:
    from roadnet.model.card import card_cutoffs
    from roadnet.model.cutoffs import DEFAULT_GRID

    run, _ = tiny_run
    card = json.loads((run / "model.json").read_text())
    chosen_on = card["cutoffs_chosen_on"]
    assert chosen_on["window"] == [0, 160, 256, 256] and chosen_on["rho"] == 2.0
    assert chosen_on["scene"].endswith("scene.tif") and chosen_on["grid"] == list(DEFAULT_GRID)
    assert card_cutoffs(run / "model.keras") == card["cutoffs"]  # what `roadnet run` reads
    assert set(card["cutoffs"]) == {"surface", "edge", "centerline"}
    validation = card["metrics"]["validation_scene"]
    assert "sweep" not in validation
    for task, cut in card["cutoffs"].items():
        assert cut in DEFAULT_GRID
        scores = chosen_on["scores"][task]
        # the scores at 0.5 are those of the same pass, reported at the training threshold
        assert scores["at_0.5"] == validation[task][scores["score"]]
        assert scores["at_cutoff"] >= scores["at_0.5"] and scores["gain"] >= 0


@pytest.mark.slow
def test_resume_continues_from_the_last_epoch(tiny_run: tuple[Path, Path]) -> None:
    from typer.testing import CliRunner

    from roadnet.pipeline.cli import app

    run, config = tiny_run
    args = ["train", "--config", str(config), "--out", str(run)]
    refused = CliRunner().invoke(app, args)
    assert isinstance(refused.exception, OutputExistsError)
    result = CliRunner().invoke(app, [*args, "--resume", "--set", "epochs=4"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    state = json.loads((run / "state.json").read_text())
    assert state["epoch"] == 4
    with open(run / "history.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [0, 1, 2, 3]


def test_bundled_training_config_validates() -> None:
    from roadnet.config import load_config
    from roadnet.model.train import TrainConfig

    config = load_config(TrainConfig, Path(__file__).parents[2] / "configs" / "train-lite.yaml")
    assert config.augment.gsd_range == (0.2, 0.5) and config.augment.cutout > 0
    assert len(config.train) >= 6


def test_init_from_copies_the_same_variant_and_widens_a_narrower_one(tmp_path: Path) -> None:
    from roadnet.model.roadnet import ModelConfig, build_roadnet
    from roadnet.model.train import _load_weights

    tiny = ModelConfig(name="tiny", width_multiplier=0.125)
    source = build_roadnet(tiny)
    source.save(tmp_path / "source.keras")
    target = build_roadnet(tiny)
    _load_weights(target, tmp_path / "source.keras", seed=0)
    for a, b in zip(source.get_weights(), target.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    wider = build_roadnet(ModelConfig(name="tiny", width_multiplier=0.25))
    _load_weights(wider, tmp_path / "source.keras", seed=0)
    x = np.random.default_rng(2).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(wider(x, training=False)["centerline"]),
        np.asarray(source(x, training=False)["centerline"]),
        atol=1e-4,
    )
    narrower = build_roadnet(ModelConfig(name="other", width_multiplier=0.0625))
    with pytest.raises(InputError, match="neither this variant nor a narrower one"):
        _load_weights(narrower, tmp_path / "source.keras", seed=0)
    with pytest.raises(InputError, match="not found"):
        _load_weights(target, tmp_path / "missing.keras", seed=0)


def test_mixed_precision_training_of_a_widened_model_ships_float32(tmp_path: Path) -> None:
    from roadnet.config import load_config
    from roadnet.model.io import content_hash, load_model
    from roadnet.model.roadnet import ModelConfig, build_roadnet
    from roadnet.model.train import TrainConfig, train

    scene, labels = write_road_scene(tmp_path / "d", size=256, seed=4)
    narrow = build_roadnet(ModelConfig(name="tiny", width_multiplier=0.0625))
    narrow.save(tmp_path / "narrow.keras")
    earlier = {"model": "first.keras", "content_hash": "0123456789abcdef"}
    (tmp_path / "narrow.json").write_text(json.dumps({"training": {"fine_tuned_from": earlier}}))
    path = _write_config(
        tmp_path / "t.yaml",
        scene,
        labels,
        init_from=str(tmp_path / "narrow.keras"),
        precision="mixed_bfloat16",
        epochs=1,
        steps_per_epoch=3,
        evaluate_validation_scene=False,
    )
    result = train(load_config(TrainConfig, path), tmp_path / "run")
    checkpoint = load_model(tmp_path / "run" / "last.keras")
    assert {layer.dtype_policy.name for layer in checkpoint.layers} >= {"mixed_bfloat16"}
    model = load_model(result.model_path)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    assert model.count_params() > narrow.count_params()
    assert result.card["training"]["config"]["precision"] == "mixed_bfloat16"
    # the card names what it started from, and that model's own origin from its card
    assert result.card["training"]["fine_tuned_from"] == {
        "model": str(tmp_path / "narrow.keras"),
        "content_hash": content_hash(tmp_path / "narrow.keras"),
        "fine_tuned_from": earlier,
    }
    assert re.fullmatch(
        r"\d+ CPU cores, (no GPU|\d+ GPU \(.+\))", result.card["training"]["hardware"]
    )
    out = model(np.zeros((1, 32, 32, 3), np.float32), training=False)
    assert out["surface"].dtype == "float32"


def test_bad_training_inputs_are_one_line_errors(tmp_path: Path) -> None:
    from roadnet.config import load_config
    from roadnet.errors import ConfigError
    from roadnet.model.train import TrainConfig, train

    scene, labels = write_road_scene(tmp_path / "d", size=128)
    overlapping = [{"scene": str(scene), "labels": str(labels), "window": None}]
    bad = _write_config(tmp_path / "bad.yaml", scene, labels, train=overlapping)
    with pytest.raises(ConfigError, match="overlaps the validation area"):
        load_config(TrainConfig, bad)
    config = _write_config(tmp_path / "t.yaml", scene, labels)
    with pytest.raises(ConfigError, match="crop_size"):
        load_config(TrainConfig, config, overrides=["crop_size=100"])
    with pytest.raises(ConfigError, match="cutoff_grid"):
        load_config(TrainConfig, config, overrides=["cutoff_grid=[0.3,1.0]"])
    with pytest.raises(ConfigError, match="jaccard_weight: unknown task 'road'"):
        load_config(TrainConfig, config, overrides=["jaccard_weight={road: 1.0}"])
    with pytest.raises(ConfigError, match="jaccard_weight: every weight"):
        load_config(TrainConfig, config, overrides=["jaccard_weight={surface: -1}"])
    cfg = load_config(TrainConfig, config)
    with pytest.raises(InputError, match="cannot resume"):
        train(cfg, tmp_path / "empty", resume=True)
    (labels / "edge.tif").unlink()
    with pytest.raises(InputError, match=r"edge\.tif"):
        train(cfg, tmp_path / "run")


def test_train_and_evaluate_help_do_not_import_tensorflow() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from roadnet.pipeline import cli\n"
        "for cmd in (['train', '--help'], ['evaluate-model', '--help']):\n"
        "    sys.argv = ['roadnet', *cmd]\n"
        "    try:\n        cli.main()\n    except SystemExit:\n        pass\n"
        "print('TF', 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "TF False False" in out.stdout, out.stdout + out.stderr
    assert "--resume" in out.stdout and "--rho" in out.stdout


@pytest.mark.slow
def test_lite_variant_learns_surface_on_cpu(tmp_path: Path) -> None:
    """roadnet-lite itself (the shipped variant) on a small scene, a couple of minutes on CPU."""
    from roadnet.config import load_config
    from roadnet.model.train import TrainConfig, train

    scene, labels = write_road_scene(tmp_path / "d", size=384, seed=5)
    config = _write_config(
        tmp_path / "t.yaml",
        scene,
        labels,
        model="roadnet-lite",
        train=[{"scene": str(scene), "labels": str(labels), "window": [0, 0, 384, 256]}],
        validation={"scene": str(scene), "labels": str(labels), "window": [0, 256, 384, 384]},
        crop_size=128,
        steps_per_epoch=25,
        epochs=4,
        learning_rate=0.002,
    )
    result = train(load_config(TrainConfig, config), tmp_path / "run")
    surface = result.card["metrics"]["validation_scene"]["surface"]
    assert result.card["variant"] == "roadnet-lite"
    assert "fine_tuned_from" not in result.card["training"]  # trained from scratch
    assert surface["iou"] > 0.7, surface
