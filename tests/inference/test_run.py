from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr
from _models import smooth_scene, test_model_path, write_scene
from _results import dataset_codes
from rasterio.enums import ColorInterp

import roadnet
from roadnet.config import load_config
from roadnet.errors import ConfigError, InputError, ModelError, OutputExistsError
from roadnet.pipeline.inference.run import (
    RunConfig,
    _job_fingerprint,
    predict_scene,
    prepare_worker,
    run,
    run_to_zarr,
)

__all__ = ["test_model_path"]

CFG = RunConfig(chunk=128, overlap=32)


def test_run_returns_lazy_georeferenced_probabilities(
    tmp_path: Path, test_model_path: Path
) -> None:
    scene = write_scene(tmp_path / "s.tif", smooth_scene(300, 420))
    ds = run(scene, model=test_model_path, config=CFG)
    assert ds.surface.chunks == ((128, 128, 44), (128, 128, 128, 36))
    assert ds.surface.dtype == np.float32
    with rasterio.open(scene) as src:
        assert ds.rio.crs == src.crs and ds.rio.transform() == src.transform
    values = ds.compute(scheduler="threads")
    assert float(values.surface.min()) >= 0 and float(values.surface.max()) <= 1
    assert values.edge.std() > 0.01
    # Same numbers as the uint8 codes the Zarr writer stores.
    codes = predict_scene(scene, model=test_model_path, config=CFG).codes
    assert np.array_equal(dataset_codes(values), codes.compute(scheduler="threads"))


def test_uint16_nodata_and_small_scene(tmp_path: Path, test_model_path: Path) -> None:
    image = smooth_scene(90, 110).astype(np.uint16) * 257  # full 16-bit range
    image[:, :20, :20] = 0
    u16 = write_scene(tmp_path / "u16.tif", image, nodata=0)
    as8 = write_scene(tmp_path / "u8.tif", (image // 257).astype(np.uint8), nodata=0)
    a = dataset_codes(run(u16, model=test_model_path, config=CFG).compute(scheduler="threads"))
    b = dataset_codes(run(as8, model=test_model_path, config=CFG).compute(scheduler="threads"))
    assert a.shape == (3, 90, 110)  # smaller than one chunk
    assert (a[:, :20, :20] == 255).all() and (a[:, 20:, 20:] < 255).all()
    assert np.abs(a.astype(int) - b).max() <= 1


def test_band_layouts(tmp_path: Path, test_model_path: Path) -> None:
    rgb = smooth_scene(96, 96)
    grey = write_scene(tmp_path / "grey.tif", rgb[:1])
    with pytest.raises(InputError, match="bands"):
        run(grey, model=test_model_path, config=CFG)
    grey_cfg = RunConfig(chunk=128, overlap=32, bands=[1, 1, 1])
    assert run(grey, model=test_model_path, config=grey_cfg).surface.shape == (96, 96)
    alpha = np.full((1, 96, 96), 255, np.uint8)
    alpha[:, 50:] = 0
    rgba = write_scene(
        tmp_path / "rgba.tif",
        np.concatenate([rgb, alpha]),
        colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha],
    )
    plain = dataset_codes(
        run(write_scene(tmp_path / "rgb.tif", rgb), model=test_model_path, config=CFG).compute(
            scheduler="threads"
        )
    )
    masked = dataset_codes(
        run(rgba, model=test_model_path, config=CFG).compute(scheduler="threads")
    )
    assert (masked[:, 50:] == 255).all()
    assert np.array_equal(masked[:, :50], plain[:, :50])


def test_config_and_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="overlap"):
        load_config(RunConfig, "run", values={"chunk": 128, "overlap": 65})
    with pytest.raises(ConfigError, match="bands"):
        load_config(RunConfig, "run", overrides=["bands=[1, x]"])
    assert load_config(RunConfig, "run") == RunConfig()
    scene = write_scene(tmp_path / "s.tif", smooth_scene(64, 64))
    with pytest.raises(ModelError, match="not found"):
        run(scene, model=tmp_path / "missing.keras", config=CFG)
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="cannot load"):
        run(scene, model=broken, config=CFG)


def test_relative_scene_is_resolved_and_workers_check_the_scene(
    tmp_path: Path, test_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from roadnet.pipeline.inference.runner import model_call_count

    write_scene(tmp_path / "s.tif", smooth_scene(64, 64))
    monkeypatch.chdir(tmp_path)
    # Workers of a remote cluster need not share the client's working directory.
    prediction = predict_scene("s.tif", model=test_model_path, config=CFG)
    assert prediction.scene.source == str(tmp_path / "s.tif")
    calls = model_call_count()
    prepare_worker(prediction.runner, prediction.scene.source)  # reads a pixel, warms up
    assert model_call_count() == calls + 1
    (tmp_path / "s.tif").rename(tmp_path / "moved.tif")
    with pytest.raises(InputError, match=r"on worker host .*cannot read scene"):
        prepare_worker(prediction.runner, prediction.scene.source)


def test_wrong_model_contract_is_a_model_error(tmp_path: Path) -> None:
    import keras

    inputs = keras.Input((None, None, 3))
    keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs)).save(tmp_path / "plain.keras")
    scene = write_scene(tmp_path / "s.tif", smooth_scene(64, 64))
    with pytest.raises(ModelError, match="surface, edge, centerline"):
        run(scene, model=tmp_path / "plain.keras", config=CFG)


def test_run_to_zarr_round_trip_and_refusal(tmp_path: Path, test_model_path: Path) -> None:
    scene = write_scene(tmp_path / "s.tif", smooth_scene(300, 260))
    out = tmp_path / "r.zarr"
    summary = run_to_zarr(
        scene,
        out,
        model=test_model_path,
        config=CFG,
        workers=1,
        threads_per_worker=1,
        progress=False,
    )
    assert summary.chunks == summary.computed == 9 and summary.pixels == 300 * 260
    assert "Mpx/s" in summary.line() and "9/9 chunks" in summary.line()
    ds = roadnet.open_result(out)
    with rasterio.open(scene) as src:
        assert ds.rio.crs == src.crs and ds.rio.transform() == src.transform
        assert np.allclose(ds.x.values, src.xy(0, np.arange(260))[0])
    assert ds.attrs["model_sha256"] and ds.attrs["source"] == str(scene)
    assert ds.attrs["roadnet_version"] == roadnet.__version__
    assert '"chunk": 128' in ds.attrs["roadnet_config"]
    lazy = run(scene, model=test_model_path, config=CFG).compute(scheduler="threads")
    assert np.array_equal(dataset_codes(ds.compute()), dataset_codes(lazy))
    with pytest.raises(OutputExistsError):
        run_to_zarr(scene, out, model=test_model_path, config=CFG, progress=False)


def test_a_run_counts_its_road_chunks_and_warns_when_there_are_none(
    tmp_path: Path, test_model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import json
    import shutil

    model = Path(shutil.copy(test_model_path, tmp_path / "m.keras"))
    scene = write_scene(tmp_path / "s.tif", smooth_scene(300, 260))
    kwargs = {"model": model, "config": CFG, "workers": 1, "threads_per_worker": 1}
    counts = {}
    for cut in (0.0, 1.0):  # every chunk has a surface code above 0; none above 254
        (tmp_path / "m.json").write_text(json.dumps({"cutoffs": {"surface": cut}}))
        out = tmp_path / f"r{cut}.zarr"
        caplog.clear()
        with caplog.at_level("WARNING", logger="roadnet"):
            summary = run_to_zarr(scene, out, progress=False, **kwargs)  # type: ignore[arg-type]
        counts[cut] = (summary.road_chunks, roadnet.open_result(out).attrs["roadnet:road_chunks"])
        assert summary.line().endswith(f"road in {summary.road_chunks} chunks")
        assert ("no road above the surface cut-off" in caplog.text) == (cut == 1.0)
    assert counts == {0.0: (9, 9), 1.0: (0, 0)}
    assert "check --bands and --input-max, or fit the model to it with --adapt" in caplog.text


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    scene = write_scene(tmp_path / "s.tif", smooth_scene(64, 64))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "roadnet.pipeline.cli",
            "run",
            str(scene),
            "--out",
            str(tmp_path / "r.zarr"),
            "--model",
            str(tmp_path / "missing.keras"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("roadnet: error: model file not found")


def test_banded_run_equals_lazy_result_computes_each_block_once_and_resumes(
    tmp_path: Path, test_model_path: Path
) -> None:
    from distributed import LocalCluster

    from roadnet.pipeline.inference.runner import model_call_count
    from roadnet.pipeline.inference.store import staging_path

    # 700 x 520 px: 6 x 5 chunks of 128 px; the last inference column is two halves of
    # 136 px, so output chunks and pass-1 blocks do not line up along x.
    scene = write_scene(tmp_path / "s.tif", smooth_scene(700, 520))
    expected = dataset_codes(
        run(scene, model=test_model_path, config=CFG).compute(scheduler="threads")
    )
    out = tmp_path / "r.zarr"
    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        options = {"model": test_model_path, "config": CFG, "scheduler": cluster.scheduler_address}
        calls_before = model_call_count()
        # One chunk row per band: five band borders, each shared by two bands.
        summary = run_to_zarr(scene, out, batch_chunks=1, progress=False, **options)
        assert summary.computed == summary.chunks == 30
        # In-process workers: this process's count is theirs. Every block predicted once,
        # besides the probe and the warm-up before the run.
        assert model_call_count() - calls_before == 6 * 5 + 2
        assert np.array_equal(dataset_codes(roadnet.open_result(out).compute()), expected)

        # A run killed after some chunks: clear three flags (two in one row), spoil the data.
        staging = staging_path(out)
        out.rename(staging)
        group = zarr.open_group(str(staging), mode="r+")
        for row, col in [(1, 1), (1, 4), (4, 2)]:
            group["progress/done"][row, col] = 0
            region = (slice(row * 128, row * 128 + 128), slice(col * 128, col * 128 + 128))
            for task in ("surface", "edge", "centerline"):
                group[task][region] = 7
        resumed = run_to_zarr(scene, out, batch_chunks=1, progress=False, **options)
    assert resumed.computed == 3 and resumed.chunks == 30
    assert np.array_equal(dataset_codes(roadnet.open_result(out).compute()), expected)


def test_predict_gsd_upsamples_a_coarse_scene_and_keeps_its_grid(
    tmp_path: Path, test_model_path: Path
) -> None:
    import json
    import shutil

    model = Path(shutil.copy(test_model_path, tmp_path / "m.keras"))
    (tmp_path / "m.json").write_text(json.dumps({"predict_gsd": {"gsd": 0.3}}))
    scene = write_scene(tmp_path / "s.tif", smooth_scene(200, 260), gsd=0.6)
    auto = predict_scene(scene, model=model, config=CFG)
    assert auto.resample == pytest.approx(2.0)
    assert auto.attrs["roadnet:predict_gsd"] == "0.3"
    assert auto.runner.shape == (384, 384)  # (128 + 2 * 32) * 2
    native = predict_scene(
        scene, model=model, config=CFG.model_copy(update={"predict_gsd": "native"})
    )
    assert native.resample == 1.0 and native.attrs["roadnet:predict_gsd"] == "native"
    assert native.runner.shape == (192, 192)
    a = auto.codes.compute(scheduler="threads")
    b = native.codes.compute(scheduler="threads")
    assert a.shape == b.shape == (3, 200, 260)
    assert 0 < np.abs(a.astype(int) - b).mean() < 40  # another input grid, same scene
    ds = auto.dataset()
    with rasterio.open(scene) as src:
        assert ds.rio.transform() == src.transform  # outputs on the scene's pixels
    # a store resumes only at the same pixel size, also when only the card changed
    (tmp_path / "m.json").write_text(json.dumps({"predict_gsd": {"gsd": 0.4}}))
    again = predict_scene(scene, model=model, config=CFG)
    assert again.attrs["roadnet:predict_gsd"] == "0.4"
    assert _job_fingerprint(again, str(scene)) != _job_fingerprint(auto, str(scene))
    # a scene finer than the card's pixel size is left alone under auto
    fine = write_scene(tmp_path / "f.tif", smooth_scene(200, 260), gsd=0.25)
    assert predict_scene(fine, model=model, config=CFG).resample == 1.0
    # ... unless the card has a finest pixel size: then it is shrunk to it, cut at its cut-offs
    cuts = {"surface": 0.6, "edge": 0.4, "centerline": 0.4}
    card = {"predict_gsd": {"gsd": 0.4, "finest": {"gsd": 0.5, "cutoffs": cuts}}}
    (tmp_path / "m.json").write_text(json.dumps(card))
    shrunk = predict_scene(fine, model=model, config=CFG)
    assert shrunk.resample == pytest.approx(0.5) and shrunk.attrs["roadnet:predict_gsd"] == "0.5"
    assert json.loads(shrunk.attrs["roadnet:cutoffs"]) == cuts
    assert shrunk.runner.shape == (96, 96)  # (128 + 2 * 32) / 2
    assert shrunk.codes.compute(scheduler="threads").shape == (3, 200, 260)


def test_a_near_black_scene_is_told_in_the_log(
    tmp_path: Path, test_model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    twelve_bit = (smooth_scene(200, 260).astype(np.uint16) * 16).astype(np.uint16)  # <= 4080
    scene = write_scene(tmp_path / "u16.tif", twelve_bit)
    with caplog.at_level("WARNING", logger="roadnet"):
        predict_scene(scene, model=test_model_path, config=CFG)
    assert "looks nearly black" in caplog.text and "input_max=4095" in caplog.text
    caplog.clear()
    fixed = CFG.model_copy(update={"input_max": 4095})
    with caplog.at_level("WARNING", logger="roadnet"):
        predict_scene(scene, model=test_model_path, config=fixed)
    assert "nearly black" not in caplog.text


def test_tta_two_makes_the_run_of_a_mirrored_scene_the_mirrored_run(
    tmp_path: Path, test_model_path: Path
) -> None:
    # 256 x 256 px in chunks of 128: the blocks and their blend are mirror-symmetric, so with
    # the mirror averaged in (tta 2) the mirrored scene gives the mirrored probabilities
    image = smooth_scene(256, 256, seed=4)
    scene = write_scene(tmp_path / "s.tif", image)
    mirrored = write_scene(tmp_path / "m.tif", np.ascontiguousarray(image[..., ::-1]))
    codes = {}
    for tta in (1, 2):
        cfg = RunConfig(chunk=128, overlap=32, tta=tta)
        for name, path in (("s", scene), ("m", mirrored)):
            ds = run(path, model=test_model_path, config=cfg).compute(scheduler="threads")
            codes[name, tta] = dataset_codes(ds)
        assert f'"tta": {tta}' in ds.attrs["roadnet_config"]
    assert not np.array_equal(codes["m", 1], codes["s", 1][..., ::-1])
    assert np.array_equal(codes["m", 2], codes["s", 2][..., ::-1])
    assert not np.array_equal(codes["s", 2], codes["s", 1])
    with pytest.raises(ConfigError, match="tta must be 1, 2, 4 or 8"):
        load_config(RunConfig, "run", values={"tta": 3})


def test_cli_refuses_a_tta_it_does_not_know_in_one_line(tmp_path: Path) -> None:
    scene = write_scene(tmp_path / "s.tif", smooth_scene(64, 64))
    args = ["run", str(scene), "--out", str(tmp_path / "r.zarr"), "--tta", "3"]
    proc = subprocess.run(
        [sys.executable, "-m", "roadnet.pipeline.cli", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "tta must be 1, 2, 4 or 8" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "r.zarr").exists()
