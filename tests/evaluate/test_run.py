"""`roadnet evaluate` end to end: result stores, truth vectors and labels, a cluster, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from _cli import run_in_one_process
from _results import CRS, TRANSFORM, write_result
from distributed import Client
from PIL import Image

from roadnet.errors import InputError, OutputExistsError
from roadnet.pipeline.evaluate.errors import ERROR_COLORS
from roadnet.pipeline.evaluate.inputs import truth_graph
from roadnet.pipeline.evaluate.pixels import in_memory_scores
from roadnet.pipeline.evaluate.run import evaluate, format_report
from roadnet.pipeline.scenes.labels import LabelsConfig, rasterize_labels
from roadnet.pipeline.scenes.roads import load_width_table, normalize_roads
from roadnet.pipeline.vectorize.run import vectorize_result
from roadnet.tasks import TASKS

ROADNET = [sys.executable, "-m", "roadnet.pipeline.cli"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
HEIGHT, WIDTH = 420, 560  # 126 x 168 m at 0.3 m; ragged chunks at 256


def _at(col: float, row: float) -> tuple[float, float]:
    x, y = TRANSFORM * (col, row)
    return float(x), float(y)


def _roads() -> gpd.GeoDataFrame:
    """A cross of two 6 m streets and a 5 m street ending inside the scene."""
    lines = [
        shapely.LineString([_at(-20, 200), _at(WIDTH + 20, 230)]),
        shapely.LineString([_at(280, -20), _at(300, HEIGHT + 20)]),
        shapely.LineString([_at(60, 40), _at(200, 120), _at(290, 120)]),
    ]
    return gpd.GeoDataFrame({"width_m": [6.0, 6.0, 5.0]}, geometry=lines, crs=CRS)


@pytest.fixture(scope="module")
def truth_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("truth") / "truth.gpkg"
    _roads().to_file(path, layer="road_centerline", driver="GPKG", engine="pyogrio")
    # a second layer that must not be read as the centerlines
    far = gpd.GeoDataFrame(geometry=[shapely.box(*_at(0, 10), *_at(10, 0))], crs=CRS)
    far.to_file(path, layer="road_surface", driver="GPKG", engine="pyogrio")
    return path


@pytest.fixture(scope="module")
def labels() -> dict[str, np.ndarray]:
    """The labels stage's truth on the whole grid: what evaluate must rasterize."""
    roads = normalize_roads(_roads(), crs=CRS, widths=load_width_table())
    return rasterize_labels(
        roads, transform=TRANSFORM, shape=(HEIGHT, WIDTH), config=LabelsConfig()
    )


def _codes(labels: dict[str, np.ndarray], *, gap: bool = False, shift: int = 0) -> np.ndarray:
    """A prediction from the truth labels: ``shift`` px off, with a blob, maybe a gap."""
    codes = np.stack([np.where(labels[t] > 0, 230, 10) for t in TASKS]).astype(np.uint8)
    codes = np.roll(codes, shift, axis=2)
    codes[0, 330:360, 420:470] = 240  # a false alarm
    if gap:
        codes[:, 300:420, 250:340] = 10  # the vertical street's southern part is missed
    codes[:, :3, :3] = 255  # a corner without data
    return codes


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory, labels: dict[str, np.ndarray]) -> Path:
    path = tmp_path_factory.mktemp("pred") / "r.zarr"
    return write_result(path, _codes(labels, shift=1), chunk=256)


def _write_labels(folder: Path, arrays: dict[str, np.ndarray], *, transform=TRANSFORM) -> Path:  # type: ignore[no-untyped-def]
    folder.mkdir()
    for task, array in arrays.items():
        with rasterio.open(
            folder / f"{task}.tif",
            "w",
            driver="GTiff",
            width=array.shape[1],
            height=array.shape[0],
            count=1,
            dtype="uint8",
            crs=CRS,
            transform=transform,
        ) as dst:
            dst.write(array.astype(np.uint8), 1)
    return folder


def test_truth_graph_by_hand() -> None:
    cross = [shapely.LineString([(0, 5), (10, 5)]), shapely.LineString([(5, 0), (5, 10)])]
    g = truth_graph(cross)
    assert (g.number_of_nodes(), g.number_of_edges()) == (5, 4)  # four arms meet in the middle
    assert sorted(d["length"] for *_, d in g.edges(data=True)) == [5.0] * 4
    assert {(d["x"], d["y"]) for _, d in g.nodes(data=True)} >= {(5.0, 5.0), (0.0, 5.0)}
    # pieces end to end are one road; a duplicate counts once
    chain = [
        shapely.LineString([(0, 0), (3, 0)]),
        shapely.LineString([(3, 0), (7, 0)]),
        shapely.LineString([(0, 0), (3, 0)]),
    ]
    g = truth_graph(chain)
    assert (g.number_of_nodes(), g.number_of_edges()) == (2, 1)
    assert next(iter(g.edges(data=True)))[2]["length"] == 7.0
    assert truth_graph([]).number_of_nodes() == 0


def test_pixel_scores_equal_the_in_memory_reference(
    tmp_path: Path, client: Client, result: Path, truth_file: Path, labels: dict[str, np.ndarray]
) -> None:
    codes = _codes(labels, shift=1)
    valid = codes[0] != 255
    expected = {
        t: in_memory_scores((codes[i] >= 127) & valid, (labels[t] > 0) & valid, rho=2)
        for i, t in enumerate(TASKS)
    }
    from_vectors = evaluate(result, truth_file, client=client, graph_sources=["surface"])
    assert from_vectors["pixel"] == expected
    assert from_vectors["grid"]["nodata_px"] == 9
    assert 0.9 < expected["surface"]["precision"] < 1.0  # a real, imperfect score
    assert expected["edge"]["relaxed_f1"] > expected["edge"]["f1"]
    # the same truth as a label directory: the same pixel scores, no vector scores
    folder = _write_labels(tmp_path / "labels", labels)
    from_labels = evaluate(result, folder, client=client)
    assert from_labels["pixel"] == expected
    assert from_labels["vector"] == {}
    assert from_labels["inputs"]["truth"]["kind"] == "labels"


def test_vector_scores_see_a_missing_street(
    tmp_path: Path, client: Client, result: Path, truth_file: Path, labels: dict[str, np.ndarray]
) -> None:
    out = tmp_path / "metrics.json"
    good = evaluate(
        result,
        truth_file,
        out,
        client=client,
        buffer_m=2.0,
        graph_sources=["surface", "centerline"],
    )
    gapped = write_result(tmp_path / "gap.zarr", _codes(labels, shift=1, gap=True), chunk=256)
    bad = evaluate(gapped, truth_file, client=client)
    surface = good["vector"]["surface"]
    assert surface["buffer"]["completeness"] > 0.9
    assert surface["buffer"]["correctness"] > 0.9
    assert surface["apls"]["apls"] > 0.8
    missed = bad["vector"]["surface"]
    assert missed["buffer"]["completeness"] < surface["buffer"]["completeness"] - 0.05
    assert missed["apls"]["apls"] < surface["apls"]["apls"] - 0.1
    assert set(good["vector"]) == {"surface", "centerline"}
    # the report on disk: every score, the parameters and the inputs' hashes
    written = json.loads(out.read_text())
    assert written["vector"]["surface"]["apls"]["apls"] == surface["apls"]["apls"]
    assert written["parameters"]["rho_px"] == 2.0 and written["parameters"]["buffer_m"] == 2.0
    assert written["parameters"]["graph_sources"] == ["surface", "centerline"]
    digest = hashlib.sha256(truth_file.read_bytes()).hexdigest()
    assert written["inputs"]["truth"]["sha256"] == digest
    assert len(written["inputs"]["prediction"]["sha256"]) == 64
    table = format_report(written)
    assert "surface" in table and "relaxed" in table and f"{surface['apls']['apls']:.3f}" in table
    assert not list(tmp_path.glob(".*truth-*"))  # the rasterized truth is cleaned up


def test_completeness_by_class_sees_which_class_was_missed(
    tmp_path: Path, client: Client, labels: dict[str, np.ndarray]
) -> None:
    classed = _roads()
    classed["highway"] = ["primary", "residential", None]
    truth = tmp_path / "classed.gpkg"
    classed.to_file(truth, layer="road_centerline", driver="GPKG", engine="pyogrio")
    gapped = write_result(tmp_path / "gap.zarr", _codes(labels, shift=1, gap=True), chunk=256)
    report = evaluate(gapped, truth, client=client, by_class="highway")
    vec = report["vector"]["surface"]
    by = vec["by_class"]
    assert list(by) == ["primary", "residential", "(none)"]  # longest first
    assert by["primary"]["completeness"] > 0.95
    # the vertical street's southern part is missed: about 0.3 of its length
    assert 0.4 < by["residential"]["completeness"] < 0.85
    lengths = sum(c["truth_length_m"] for c in by.values())
    assert lengths == pytest.approx(vec["buffer"]["truth_length_m"])
    matched = sum(c["matched_truth_length_m"] for c in by.values())
    assert matched == pytest.approx(vec["buffer"]["matched_truth_length_m"], rel=1e-6)
    assert report["parameters"]["by_class"] == "highway"
    table = format_report(report)
    assert "highway (surface)" in table and "residential" in table
    # a road layer prediction: the same split
    roads = tmp_path / "roads.gpkg"
    vectorize_result(gapped, roads, client=client, progress=False)
    layer = evaluate(roads, truth, client=client, by_class="highway")["vector"]["layer"]
    assert list(layer["by_class"]) == list(by)
    for name, c in by.items():
        assert layer["by_class"][name] == pytest.approx(c)
    with pytest.raises(InputError, match=r"no column 'lanes' to split by \(it has: .*highway"):
        evaluate(gapped, truth, client=client, by_class="lanes")
    assert "by_class" not in evaluate(gapped, truth, client=client)["vector"]["surface"]


def test_road_layer_prediction_scores_like_its_result(
    tmp_path: Path, client: Client, result: Path, truth_file: Path
) -> None:
    roads = tmp_path / "roads.gpkg"
    vectorize_result(result, roads, client=client, progress=False)
    layer = evaluate(roads, truth_file, client=client)
    raster = evaluate(result, truth_file, client=client)
    assert layer["pixel"] == {} and layer["inputs"]["prediction"]["kind"] == "layer"
    assert layer["parameters"]["extent"] == raster["parameters"]["extent"]  # truth clipped
    assert layer["vector"]["layer"]["buffer"] == pytest.approx(
        raster["vector"]["surface"]["buffer"]
    )
    assert layer["vector"]["layer"]["apls"]["apls"] == pytest.approx(
        raster["vector"]["surface"]["apls"]["apls"]
    )


def test_empty_prediction_scores_zero(tmp_path: Path, client: Client, truth_file: Path) -> None:
    empty = write_result(tmp_path / "e.zarr", np.full((3, HEIGHT, WIDTH), 8, np.uint8), chunk=256)
    report = evaluate(empty, truth_file, client=client)
    for task in TASKS:
        s = report["pixel"][task]
        assert s["pred"] == 0 and s["truth"] > 0
        assert s["precision"] == s["recall"] == s["f1"] == s["relaxed_f1"] == 0.0
    vec = report["vector"]["surface"]
    assert vec["edges"] == 0 and vec["km"] == 0.0
    assert vec["buffer"]["completeness"] == vec["buffer"]["quality"] == 0.0
    assert vec["apls"]["apls"] == 0.0


def test_error_map(
    tmp_path: Path,
    client: Client,
    truth_file: Path,
    labels: dict[str, np.ndarray],
    make_scene: Callable[..., Path],
) -> None:
    gapped = write_result(tmp_path / "gap.zarr", _codes(labels, gap=True), chunk=256)
    scene = make_scene(width=WIDTH, height=HEIGHT)
    png = tmp_path / "errors.png"
    evaluate(gapped, truth_file, client=client, errors=png, scene=scene, max_size=200)
    image = np.asarray(Image.open(png))
    assert image.shape == (140, 187, 3)  # 3 times smaller, edges padded
    colours = {tuple(c) for c in image.reshape(-1, 3).tolist()}
    assert set(ERROR_COLORS.values()) <= colours
    fn = np.all(image == ERROR_COLORS["fn"], axis=2)
    assert fn[110:140, 85:110].mean() > 0.05  # the missed street, south of the crossing
    fp = np.all(image == ERROR_COLORS["fp"], axis=2)
    assert fp[110:120, 140:157].mean() > 0.9  # the false blob


def test_bad_inputs_are_one_clear_error(
    tmp_path: Path, client: Client, result: Path, truth_file: Path, labels: dict[str, np.ndarray]
) -> None:
    from affine import Affine

    shifted = _write_labels(
        tmp_path / "off", labels, transform=TRANSFORM * Affine.translation(4, 0)
    )
    with pytest.raises(
        InputError, match=r"off/surface.tif .*not on the grid of prediction .*r\.zarr"
    ):
        evaluate(result, shifted, client=client)
    other = tmp_path / "utm34.gpkg"
    _roads().to_crs("EPSG:32634").to_file(other, engine="pyogrio")  # reprojected, fine
    assert evaluate(result, other, client=client)["pixel"]["surface"]["truth"] > 0
    far = tmp_path / "far.gpkg"
    moved = _roads()
    moved.geometry = moved.geometry.translate(5000, 0)
    moved.to_file(far, engine="pyogrio")
    with pytest.raises(InputError, match="no roads"):
        evaluate(result, far, client=client)
    zeros = _write_labels(tmp_path / "zeros", {t: np.zeros((HEIGHT, WIDTH)) for t in TASKS})
    with pytest.raises(InputError, match="no road pixels"):
        evaluate(result, zeros, client=client)
    roads = tmp_path / "roads.gpkg"
    roads.write_bytes(b"")
    with pytest.raises(InputError, match="label rasters"):
        evaluate(roads, zeros, client=client)
    with pytest.raises(InputError, match="by-class 'highway' needs road vectors"):
        evaluate(result, zeros, by_class="highway", client=client)
    with pytest.raises(InputError, match="graph-source"):
        evaluate(roads, truth_file, graph_sources=["centerline"], client=client)
    with pytest.raises(InputError, match=r"\.png"):
        evaluate(result, truth_file, errors=tmp_path / "e.jpg", client=client)
    with pytest.raises(InputError, match="no prediction"):
        evaluate(tmp_path / "nothing.zarr", truth_file, client=client)
    out = tmp_path / "metrics.json"
    out.write_text("{}")
    with pytest.raises(OutputExistsError):
        evaluate(result, truth_file, out, client=client)
    assert out.read_text() == "{}"


@pytest.mark.slow
def test_cli_scores_on_a_local_cluster(tmp_path: Path, result: Path, truth_file: Path) -> None:
    out = tmp_path / "metrics.json"
    ok = subprocess.run(
        [*ROADNET, "evaluate", "--pred", str(result), "--truth", str(truth_file), "--out", str(out),
         "--workers", "1", "--rho", "1.5", "--errors", str(tmp_path / "e.png")],
        capture_output=True, text=True, env=ENV, timeout=600,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "surface" in ok.stdout and "APLS" in ok.stdout
    report = json.loads(out.read_text())
    assert report["parameters"]["rho_px"] == 1.5
    assert (tmp_path / "e.png").is_file()


def test_cli_fails_with_one_line(tmp_path: Path, result: Path, truth_file: Path) -> None:
    far = tmp_path / "far.gpkg"
    moved = _roads()
    moved.geometry = moved.geometry.translate(0, 9000)
    moved.to_file(far, engine="pyogrio")
    (tmp_path / "r2.zarr.partial-run").mkdir()  # what a killed run leaves
    existing = tmp_path / "m1.json"
    existing.write_text("{}")
    new = str(tmp_path / "m2.json")
    base = ["evaluate", "--truth", str(truth_file)]
    # refused before dask, xarray and GDAL are imported
    early = [
        ([*base, "--pred", str(tmp_path / "none.zarr"), "--out", new], "no prediction"),
        ([*base, "--pred", str(tmp_path / "r2.zarr"), "--out", new], "not finished"),
        ([*base, "--pred", str(result), "--out", str(existing)], "--overwrite"),
        ([*base, "--pred", str(result), "--out", new, "--errors", "e.jpg"], ".png"),
        ([*base, "--pred", str(result), "--out", new, "--buffer-m", "0"], "--buffer-m"),
        ([*base, "--pred", str(result), "--out", new, "--by-class", " "], "--by-class"),
    ]
    late = [
        (["evaluate", "--pred", str(result), "--truth", str(far), "--out", new], "no roads"),
    ]
    answers = run_in_one_process([args for args, _ in early + late])
    for (args, message), answer in zip(early + late, answers, strict=True):
        assert answer.code == 2, (args, answer)
        lines = answer.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("roadnet: error:"), (args, answer)
        assert message in lines[0], (args, answer.stderr)
    for (args, _), answer in zip(early, answers, strict=False):
        assert answer.heavy == [], (args, answer.heavy)
    assert existing.read_text() == "{}" and not Path(new).exists()
