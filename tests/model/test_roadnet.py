from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from roadnet.config import bundled_config_path, load_config
from roadnet.model.io import load_model
from roadnet.model.layers import ConvBNAct, InputNormalization, SideOutput
from roadnet.model.roadnet import ModelConfig, build_roadnet, output_names, scaled_widths

TINY = ModelConfig(name="tiny", width_multiplier=0.125)


@pytest.fixture(scope="module")
def tiny_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_roadnet(TINY)


def test_bundled_variants_validate_and_scale() -> None:
    full = load_config(ModelConfig, bundled_config_path("roadnet"))
    lite = load_config(ModelConfig, bundled_config_path("roadnet-lite"))
    assert full.width_multiplier == 1.0 and lite.width_multiplier == 0.25
    assert scaled_widths(full.surface_widths, 1.0) == [64, 128, 256, 512, 512]
    assert scaled_widths(lite.task_widths, 0.25) == [8, 16, 32, 64]


def test_config_rejects_wrong_stage_count() -> None:
    with pytest.raises(ValueError, match="5 stages"):
        ModelConfig(surface_widths=[64, 128, 256, 512])


@pytest.mark.parametrize(("height", "width"), [(32, 48), (64, 32)])
def test_every_output_is_full_size_logits(tiny_model: keras.Model, height: int, width: int) -> None:
    x = np.random.default_rng(0).uniform(0, 255, (2, height, width, 3)).astype("float32")
    out = tiny_model(x, training=False)
    assert sorted(out) == sorted(output_names())
    assert len(out) == 3 + 5 + 4 + 4
    for name, value in out.items():
        assert tuple(value.shape) == (2, height, width, 1), name
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
    # logits, not probabilities: the fused outputs are not confined to [0, 1]
    fused = np.concatenate([np.asarray(out[t]).ravel() for t in ("surface", "edge", "centerline")])
    assert fused.min() < 0.0 or fused.max() > 1.0


def test_side_outputs_have_their_stage_stride(tiny_model: keras.Model) -> None:
    factors = {
        layer.name: layer.factor for layer in tiny_model.layers if isinstance(layer, SideOutput)
    }
    assert factors["surface_side1"] == 1 and factors["surface_side5"] == 16
    assert factors["edge_side4"] == 8 and factors["centerline_side4"] == 8


def test_conv_layout_follows_vgg16_and_task_nets() -> None:
    model = build_roadnet(ModelConfig(name="x", width_multiplier=0.25))
    convs = [layer for layer in model.layers if isinstance(layer, ConvBNAct)]
    surface = [c.filters for c in convs if c.name.startswith("surface")]
    edge = [c.filters for c in convs if c.name.startswith("edge")]
    assert surface == [16] * 2 + [32] * 2 + [64] * 3 + [128] * 6
    assert edge == [8] * 2 + [16] * 2 + [32] * 2 + [64] * 2
    # the edge net sees the image and the fused surface logit
    assert model.get_layer("edge_conv1_1").input.shape[-1] == 4


def test_normalization_inside_model_accepts_integer_inputs(tiny_model: keras.Model) -> None:
    rng = np.random.default_rng(1)
    x8 = rng.integers(0, 256, (1, 32, 32, 3)).astype("uint8")
    a = tiny_model(x8.astype("float32"), training=False)["surface"]
    b = tiny_model(keras.ops.convert_to_tensor(x8), training=False)["surface"]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    norm = InputNormalization(mean=[10.0, 20.0, 30.0], std=[2.0, 4.0, 5.0])
    got = np.asarray(norm(np.full((1, 1, 1, 3), 40, dtype="uint16")))
    np.testing.assert_allclose(got.ravel(), [15.0, 5.0, 2.0])


def test_save_load_safe_mode_gives_identical_outputs(
    tiny_model: keras.Model, tmp_path: Path
) -> None:
    path = tmp_path / "tiny.keras"
    tiny_model.save(path)
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json").decode()
    assert "Lambda" not in config
    assert "roadnet>ConvBNAct" in config and "roadnet>InputNormalization" in config
    loaded = load_model(path)
    x = np.random.default_rng(2).uniform(0, 255, (1, 48, 32, 3)).astype("float32")
    before = tiny_model(x, training=False)
    after = loaded(x, training=False)
    for name in output_names():
        np.testing.assert_array_equal(np.asarray(before[name]), np.asarray(after[name]))
    assert json.loads(config)["config"]["name"] == "tiny"


def test_conv_block_config_roundtrip() -> None:
    block = ConvBNAct(12, kernel_size=3, activation="selu", name="b")
    clone = ConvBNAct.from_config(block.get_config())
    assert (clone.filters, clone.kernel_size, clone.activation) == (12, 3, "selu")


def test_shipped_lite_model_meets_the_contract() -> None:
    from roadnet.model.io import content_hash, default_model_path

    path = default_model_path()
    assert path.name == "roadnet-lite.keras" and path.stat().st_size <= 20 * 2**20
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["content_hash"] == content_hash(path)
    assert card["variant"] == "roadnet-lite"
    model = load_model(path)
    x = np.full((2, 64, 48, 3), 128.0, "float32")
    out = model(x, training=False)
    for task in ("surface", "edge", "centerline"):
        assert tuple(out[task].shape) == (2, 64, 48, 1)
    evaluations = card["metrics"]["evaluations"]
    held_out = evaluations["held_out"]["scores"]
    assert held_out["surface"]["iou"] > 0.5  # far above the all-background baseline of 0
    # the held-out table: in style, the held-out style, 0.5 m; each of this model, none trained on
    trained = {pair["scene"] for pair in card["data"]["train"]}
    # and each scored as a default run predicts: adapted to the scene when the card says so
    from roadnet.model.card import card_adapts

    adapts = card_adapts(path)
    for name in ("held_out", "held_out_style", "held_out_0.5m"):
        assert evaluations[name]["content_hash"] == card["content_hash"]
        assert evaluations[name]["scene"] not in trained
        assert ("adapted" in evaluations[name]) == adapts, name
    # cut-offs chosen on the validation render, not on a held-out one; `roadnet run` reads them
    from roadnet.model.card import card_cutoffs

    cuts = card_cutoffs(path)
    assert cuts is not None and set(cuts) == {"surface", "edge", "centerline"}
    assert all(0.0 < cut < 1.0 for cut in cuts.values())
    assert card["cutoffs_chosen_on"]["scene"] == card["data"]["validation"]["scene"]
