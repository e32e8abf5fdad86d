"""``roadnet adapt``: a model copy fitted to a GeoTIFF's imagery, with its card (real Keras)."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import rasterio
import zarr
from _cli import run_in_one_process
from _models import save_tiny_roadnet, smooth_scene, write_scene
from _results import dataset_codes, stored_codes
from distributed import Client

from roadnet.errors import ConfigError, InputError, OutputExistsError
from roadnet.model.adapt import batchnorm_layers
from roadnet.model.card import card_adapt_rule, card_adapts, card_cutoffs
from roadnet.model.evaluate import evaluate_model_on_files
from roadnet.model.gsd import card_finest_gsd
from roadnet.model.io import content_hash, load_model
from roadnet.pipeline.inference.adapt import (
    ADAPTED_CARD,
    MIN_TILES,
    _stored_fit,
    adapt_to_scene,
    sample_tiles,
)
from roadnet.pipeline.inference.open import open_scene
from roadnet.pipeline.inference.run import (
    ADAPT_SHIFT_ATTR,
    ADAPTED_MODEL_ATTR,
    ADAPTED_SHA_ATTR,
    RunConfig,
    run,
    run_to_zarr,
)
from roadnet.pipeline.inference.store import open_result, staging_path
from roadnet.tasks import TASKS

CUTOFFS = {"surface": 0.7, "edge": 0.45, "centerline": 0.4}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny RoadNet with a card that has cut-offs and a held-out evaluation."""
    card = {"cutoffs": CUTOFFS, "metrics": {"evaluations": {"held_out": {}}}}
    return save_tiny_roadnet(tmp_path_factory.mktemp("model"), card)


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
    assert card["adapted"]["shift"] == round(summary.shift, 4) > 0.05  # a brighter, flatter look
    assert f"shift {summary.shift:.3f} from the training ones" in summary.line()
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


def test_a_foreign_scene_is_matched_to_the_card_input_statistics_before_the_fit(
    tmp_path: Path, source: Path
) -> None:
    import shutil

    model = Path(shutil.copy(source, tmp_path / "m.keras"))
    card = json.loads(source.with_suffix(".json").read_text())
    training = {"mean": [100.0, 98.0, 90.0], "std": [35.0, 32.0, 30.0]}
    model.with_suffix(".json").write_text(json.dumps({**card, "input_statistics": training}))
    image = (0.3 * smooth_scene(200, 200) + np.array([60, 40, 20])[:, None, None]).astype("uint8")
    scene = str(write_scene(tmp_path / "dark.tif", image))  # dark, warm and flat
    kwargs = {"tiles": 6, "tile_px": 64, "seed": 3}
    fitted = adapt_to_scene(scene, tmp_path / "a.keras", model=model, **kwargs)
    assert fitted.matched and "colours matched to the training imagery" in fitted.line()
    matched = json.loads((tmp_path / "a.json").read_text())["adapted"]["input_matched"]
    norm = load_model(fitted.out).get_layer("normalize")
    np.testing.assert_allclose(norm.mean, matched["normalization_mean"], atol=1e-3)
    np.testing.assert_allclose(matched["scene_mean"], fitted.band_mean, atol=1e-3)
    assert matched["scene_mean"][0] > matched["scene_mean"][2]  # the warm cast, measured
    # the shift is measured before the match: the same as a plain fit's, the model not
    plain = adapt_to_scene(scene, tmp_path / "p.keras", model=model, match=False, **kwargs)
    assert not plain.matched and plain.shift == fitted.shift
    assert json.loads((tmp_path / "p.json").read_text())["adapted"]["input_matched"] is False
    assert load_model(plain.out).get_layer("normalize").mean == [127.5] * 3
    assert not np.allclose(_stats(load_model(plain.out)), _stats(load_model(fitted.out)))
    # below the gate a run keeps the model as trained: no second fit, nothing matched
    gated = adapt_to_scene(scene, tmp_path / "g.keras", model=model, min_shift=9.0, **kwargs)
    assert not gated.matched
    # a card without the training statistics adapts as before
    assert not adapt_to_scene(scene, tmp_path / "s.keras", model=source, **kwargs).matched


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


def test_a_small_scene_gets_tiles_covering_it_twice_not_all_it_asked_for(
    tmp_path: Path,
) -> None:
    scene = open_scene(str(write_scene(tmp_path / "s.tif", smooth_scene(256, 256))), chunk=64)
    # 256 x 256 px is 16 tiles of 64 px: twice over is 32 of the 64 asked for
    assert len(sample_tiles(scene, tiles=64, tile_px=64, seed=0, coverage=2.0)) == 32
    assert len(sample_tiles(scene, tiles=20, tile_px=64, seed=0, coverage=2.0)) == 20
    assert len(sample_tiles(scene, tiles=64, tile_px=64, seed=0)) == 64  # no cap asked
    # at twice the model's pixels a tile covers a quarter of the scene px: 2 x 64 = 128 caps
    # nothing, and a scene smaller than one tile still gets one batch
    assert len(sample_tiles(scene, tiles=64, tile_px=64, seed=0, resample=2.0, coverage=2.0)) == 64
    assert len(sample_tiles(scene, tiles=64, tile_px=512, seed=0, coverage=2.0)) == MIN_TILES


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
        (["adapt", scene, "--out", str(tmp_path / "b.keras"), "--coverage", "-1"], "--coverage"),
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


def _adapted_run(tmp_path: Path, source: Path, client: Client) -> tuple[Path, RunConfig, Path]:
    """`roadnet run --adapt` of a scene brighter and flatter than anything the source saw."""
    scene = write_scene(tmp_path / "s.tif", (0.4 * smooth_scene(260, 300) + 140).astype("uint8"))
    cfg = RunConfig(chunk=128, overlap=32, adapt=True, adapt_tiles=4)
    out = tmp_path / "r.zarr"
    run_to_zarr(scene, out, model=source, config=cfg, client=client, progress=False)
    return scene, cfg, out


def test_run_adapt_predicts_with_the_model_it_keeps_in_the_store(
    tmp_path: Path, source: Path, client: Client
) -> None:
    scene, cfg, out = _adapted_run(tmp_path, source, client)
    ds = open_result(out)
    name = ds.attrs[ADAPTED_MODEL_ATTR]
    adapted = out / name
    card = json.loads((out / ADAPTED_CARD).read_text())
    assert name == card["model"] == f"roadnet-adapted-{content_hash(adapted)}.keras"
    assert ds.attrs[ADAPTED_SHA_ATTR] == card["content_hash"] == content_hash(adapted)
    assert card["adapted"]["from"] == {"model": str(source), "content_hash": content_hash(source)}
    assert card["adapted"]["scene"] == str(scene) and card["adapted"]["tiles"] == 4
    assert ds.attrs["model_sha256"] == content_hash(source)  # the run's job: source and config
    assert '"adapt": true' in ds.attrs["roadnet_config"]
    # the chunks are the adapted model's, not the source's
    plain = RunConfig(chunk=128, overlap=32)
    with_adapted = run(scene, model=adapted, config=plain).compute(scheduler="threads")
    with_source = run(scene, model=source, config=plain).compute(scheduler="threads")
    got = stored_codes(out)
    assert np.array_equal(got, dataset_codes(with_adapted))
    assert not np.array_equal(got, dataset_codes(with_source))
    # the lazy API has no store to keep the model in
    with pytest.raises(ConfigError, match="adapt writes the adapted model into the result"):
        run(scene, model=source, config=cfg)


def test_a_resumed_adapted_run_reuses_the_stored_model_and_ignores_another_one(
    tmp_path: Path, source: Path, client: Client
) -> None:
    scene, cfg, out = _adapted_run(tmp_path, source, client)
    expected = stored_codes(out)
    name = open_result(out).attrs[ADAPTED_MODEL_ATTR]
    # a run killed after the fit: two chunks unwritten, their data spoilt
    staging = staging_path(out)
    out.rename(staging)
    stamp = (staging / name).stat().st_mtime_ns
    group = zarr.open_group(str(staging), mode="r+")
    for row, col in [(0, 1), (2, 2)]:
        group["progress/done"][row, col] = 0
        for task in TASKS:
            group[task][row * 128 : row * 128 + 128, col * 128 : col * 128 + 128] = 7
    resumed = run_to_zarr(scene, out, model=source, config=cfg, client=client, progress=False)
    assert resumed.computed == 2
    assert (out / name).stat().st_mtime_ns == stamp  # the fit was reused, not redone
    assert np.array_equal(stored_codes(out), expected)
    assert sorted(p.name for p in out.glob("roadnet-adapted*")) == sorted([name, ADAPTED_CARD])
    # a card of another source model, or one naming a damaged model, is not reused
    fit = _stored_fit(str(out), str(source), content_hash(source))
    assert fit is not None and fit.applied and fit.reused
    assert (fit.model, fit.digest) == (str(out / name), name[16:32])
    assert _stored_fit(str(out), str(source), "0" * 16) is None
    (out / name).write_bytes(b"damaged")
    assert _stored_fit(str(out), str(source), content_hash(source)) is None


def test_run_adapt_to_an_object_store(
    tmp_path: Path, source: Path, client: Client, s3_bucket: str
) -> None:
    from _s3 import s3_fs

    scene = write_scene(tmp_path / "s.tif", (0.4 * smooth_scene(200, 260) + 140).astype("uint8"))
    cfg = RunConfig(chunk=128, overlap=32, adapt=True, adapt_tiles=3)
    local = run_to_zarr(
        scene, tmp_path / "r.zarr", model=source, config=cfg, client=client, progress=False
    )
    url = f"{s3_bucket}/r.zarr"
    run_to_zarr(scene, url, model=source, config=cfg, client=client, progress=False)
    assert np.array_equal(stored_codes(url), stored_codes(local.out))
    name = open_result(url).attrs[ADAPTED_MODEL_ATTR]
    keys = {k.rsplit("/", 1)[-1] for k in s3_fs().ls(url.removeprefix("s3://"))}
    assert {name, ADAPTED_CARD} <= keys
    fit = _stored_fit(url, str(source), content_hash(source))
    assert fit is not None and (fit.model, fit.digest) == (f"{url}/{name}", name[16:32])


def test_adapt_auto_follows_the_model_card(
    tmp_path: Path, source: Path, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    scene = write_scene(tmp_path / "s.tif", (0.4 * smooth_scene(200, 200) + 140).astype("uint8"))
    asking = tmp_path / "asking.keras"
    asking.write_bytes(source.read_bytes())
    card = json.loads(source.with_suffix(".json").read_text())
    asking.with_suffix(".json").write_text(json.dumps({**card, "run": {"adapt": True}}))
    assert card_adapts(asking) and not card_adapts(source)
    auto = RunConfig(chunk=128, overlap=32)  # adapt: auto
    assert auto.adapt == "auto"
    runs = {}
    for name, model, cfg in [
        ("asking", asking, auto),
        ("plain", source, auto),
        ("refused", asking, auto.model_copy(update={"adapt": False})),
    ]:
        out = tmp_path / f"{name}.zarr"
        run_to_zarr(scene, out, model=model, config=cfg, client=client, progress=False)
        runs[name] = open_result(out)
    assert ADAPTED_MODEL_ATTR in runs["asking"].attrs
    assert '"adapt": true' in runs["asking"].attrs["roadnet_config"]  # resolved, in the job
    for name in ("plain", "refused"):
        assert ADAPTED_MODEL_ATTR not in runs[name].attrs
        assert '"adapt": false' in runs[name].attrs["roadnet_config"]
    # an adapted copy never asks again
    adapted = tmp_path / "asking.zarr" / runs["asking"].attrs[ADAPTED_MODEL_ATTR]
    stored = json.loads((tmp_path / "asking.zarr" / ADAPTED_CARD).read_text())
    assert stored["run"] == {"adapt": True} and "adapted" in stored
    assert not card_adapts(adapted.with_name(stored["model"]))
    # the lazy API cannot keep an adapted model: it says so and predicts with the model as is
    with caplog.at_level("WARNING", logger="roadnet.pipeline.inference.run"):
        lazy = run(scene, model=asking, config=auto).compute(scheduler="threads")
    assert "predicting with the model as it is" in caplog.text
    assert np.array_equal(dataset_codes(lazy), stored_codes(tmp_path / "refused.zarr"))


def _labels_above(scene: Path, out: Path, *, cut: float | None) -> Path:
    """Labels of every task where the scene's first band exceeds ``cut`` (None: its median)."""
    out.mkdir()
    with rasterio.open(scene) as src:
        profile = {**src.profile, "count": 1}
        band = src.read(1)
    mask = (band > (np.median(band) if cut is None else cut)).astype("uint8")[None]
    for task in TASKS:
        with rasterio.open(out / f"{task}.tif", "w", **profile) as dst:
            dst.write(mask)
    return out


def test_evaluate_model_adapts_as_the_run_does(tmp_path: Path, source: Path) -> None:
    scene = write_scene(tmp_path / "s.tif", (0.4 * smooth_scene(128, 128) + 140).astype("uint8"))
    labels = _labels_above(scene, tmp_path / "labels", cut=None)
    kwargs = {"threshold": 0.5, "tile": 128}
    plain = evaluate_model_on_files(scene, labels, model_path=source, **kwargs)
    fitted = evaluate_model_on_files(scene, labels, model_path=source, adapt=True, **kwargs)
    assert "adapted" not in plain and fitted["content_hash"] == content_hash(source)
    adapt_to_scene(str(scene), tmp_path / "a.keras", model=source)  # the same defaults
    by_hand = evaluate_model_on_files(scene, labels, model_path=tmp_path / "a.keras", **kwargs)
    assert fitted["scores"] == by_hand["scores"] != plain["scores"]
    assert fitted["adapted"]["tiles"] == MIN_TILES  # 128 x 128 px: one 128 px tile is all


def test_a_card_with_a_least_shift_adapts_only_scenes_that_far_from_training(
    tmp_path: Path, source: Path, client: Client
) -> None:
    scene = write_scene(tmp_path / "s.tif", (0.4 * smooth_scene(200, 200) + 140).astype("uint8"))
    card = json.loads(source.with_suffix(".json").read_text())
    models = {}
    for name, least in (("near", 1e-4), ("far", 1e4)):
        models[name] = tmp_path / f"{name}.keras"
        models[name].write_bytes(source.read_bytes())
        gate = {"run": {"adapt": {"min_shift": least}}}
        models[name].with_suffix(".json").write_text(json.dumps({**card, **gate}))
        assert card_adapt_rule(models[name]) == least
    cfg = RunConfig(chunk=128, overlap=32)  # adapt: auto
    results = {}
    for name, model in models.items():
        out = tmp_path / f"{name}.zarr"
        run_to_zarr(scene, out, model=model, config=cfg, client=client, progress=False)
        results[name] = open_result(out)
    shift = results["near"].attrs[ADAPT_SHIFT_ATTR]
    assert shift == results["far"].attrs[ADAPT_SHIFT_ATTR] > 0.05  # one fit of one scene
    assert ADAPTED_MODEL_ATTR in results["near"].attrs
    # too close to the training looks for this card: the model as trained predicts, and the
    # store keeps the decision (a card without a model) for a resumed run to follow
    assert ADAPTED_MODEL_ATTR not in results["far"].attrs
    kept = json.loads((tmp_path / "far.zarr" / ADAPTED_CARD).read_text())
    assert kept["model"] is None and kept["adapted"]["applied"] is False
    assert not list((tmp_path / "far.zarr").glob("roadnet-adapted-*.keras"))
    plain = run(scene, model=source, config=RunConfig(chunk=128, overlap=32))
    assert np.array_equal(stored_codes(tmp_path / "far.zarr"), dataset_codes(plain.compute()))
    fit = _stored_fit(str(tmp_path / "far.zarr"), str(models["far"]), content_hash(source))
    assert fit is not None and not fit.applied and fit.model == str(models["far"])
    # evaluate-model under auto follows the same gate
    labels = _labels_above(scene, tmp_path / "labels", cut=180)
    kwargs = {"threshold": 0.5, "tile": 128}
    near = evaluate_model_on_files(scene, labels, model_path=models["near"], **kwargs)
    far = evaluate_model_on_files(scene, labels, model_path=models["far"], **kwargs)
    assert near["adapted"]["applied"] and not far["adapted"]["applied"]
    assert (
        far["scores"]
        == evaluate_model_on_files(scene, labels, model_path=source, **kwargs)["scores"]
        != near["scores"]
    )


def test_a_scene_without_a_whole_tile_runs_as_trained_unless_adapt_was_asked_for(
    tmp_path: Path, source: Path, client: Client
) -> None:
    image = (0.4 * smooth_scene(200, 200) + 140).astype("uint8")
    image[:, ::37, ::41] = 0  # scattered nodata pixels: no tile of the scene is free of them
    scene = write_scene(tmp_path / "s.tif", image, nodata=0)
    asking = tmp_path / "asking.keras"
    asking.write_bytes(source.read_bytes())
    card = json.loads(source.with_suffix(".json").read_text())
    asking.with_suffix(".json").write_text(json.dumps({**card, "run": {"adapt": True}}))
    out = tmp_path / "auto.zarr"
    run_to_zarr(
        scene, out, model=asking, config=RunConfig(chunk=128, overlap=32, adapt_tiles=2),
        client=client, progress=False,
    )  # fmt: skip
    ds = open_result(out)
    assert ADAPTED_MODEL_ATTR not in ds.attrs and ADAPT_SHIFT_ATTR not in ds.attrs
    kept = json.loads((out / ADAPTED_CARD).read_text())["adapted"]
    assert kept["applied"] is False and "free of nodata" in kept["reason"]
    plain = run(scene, model=source, config=RunConfig(chunk=128, overlap=32))
    assert np.array_equal(stored_codes(out), dataset_codes(plain.compute()))
    with pytest.raises(InputError, match="free of nodata"):
        run_to_zarr(
            scene, tmp_path / "asked.zarr", model=asking, client=client, progress=False,
            config=RunConfig(chunk=128, overlap=32, adapt=True, adapt_tiles=2),
        )  # fmt: skip
