"""`roadnet vectorize` end to end: real result stores, a real in-process cluster, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import networkx as nx
import numpy as np
import pytest
import rasterio.features
import shapely
from _cli import run_in_one_process
from _models import smooth_scene, test_model_path, write_scene
from _results import CRS, TRANSFORM, road_codes, write_result
from distributed import Client

from roadnet.errors import InputError, OutputExistsError
from roadnet.pipeline.inference.run import CUTOFFS_ATTR
from roadnet.pipeline.vectorize.layers import read_graph
from roadnet.pipeline.vectorize.run import VectorizeConfig, default_threshold, vectorize_result

ROADNET = [sys.executable, "-m", "roadnet.pipeline.cli"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
__all__ = ["test_model_path"]  # the session fixture, used below

# one store chunk per task, so that every chunk border is a seam of the dissolve tree
EXACT = VectorizeConfig(min_area_m2=0, hole_area_m2=0, simplify_m=0, sieve_px=16, task_px=1)


@pytest.fixture(scope="module")
def codes() -> np.ndarray:
    # 1100 x 900 px: ragged last chunks at 256 (4 x 5 chunks) and 512 (2 x 3)
    return road_codes(900, 1100, seed=4)


def _reference(surface: np.ndarray, *, threshold: float, sieve_px: int) -> np.ndarray:
    """What a notebook would do: sieve and polygonize the whole mask, in map coordinates."""
    mask = ((surface >= np.ceil(threshold * 254 - 1e-9)) & (surface != 255)).astype(np.uint8)
    sieved = rasterio.features.sieve(mask, size=sieve_px, connectivity=4)
    shapes = rasterio.features.shapes(
        sieved, mask=sieved.astype(bool), connectivity=4, transform=TRANSFORM
    )
    return np.array([shapely.geometry.shape(g) for g, _ in shapes], dtype=object)


def _layer(path: Path, layer: str) -> gpd.GeoDataFrame:
    return gpd.read_file(path, layer=layer, engine="pyogrio")


@pytest.mark.parametrize("chunk", [256, 512, 2048])
def test_road_surface_equals_whole_mask_polygonize(
    tmp_path: Path, client: Client, codes: np.ndarray, chunk: int
) -> None:
    result = write_result(tmp_path / "r.zarr", codes, chunk=chunk)
    summary = vectorize_result(
        result, tmp_path / "roads.gpkg", config=EXACT, client=client, progress=False
    )
    ours = _layer(tmp_path / "roads.gpkg", "road_surface")
    ref = _reference(codes[0], threshold=0.5, sieve_px=16)
    assert summary.components == len(ours) == len(ref)
    assert ours.crs == CRS
    geoms = ours.geometry.to_numpy()
    assert shapely.is_valid(geoms).all()
    assert (shapely.get_type_id(geoms) == shapely.GeometryType.POLYGON).all()
    total = float(shapely.area(ref).sum())
    diff = shapely.symmetric_difference(shapely.union_all(geoms), shapely.union_all(ref)).area
    assert diff <= 1e-9 * total
    assert np.allclose(np.sort(ours["area_m2"]), np.sort(shapely.area(ref)))
    assert np.allclose(ours["area_m2"], shapely.area(geoms))
    assert set(ours["model_sha256"]) == {"f" * 64}


def test_corner_road_is_one_polygon_of_its_pixel_area(tmp_path: Path, client: Client) -> None:
    codes = np.zeros((3, 300, 300), np.uint8)
    # a blob of 61 x 47 px straddling the corner where four 128 px chunks meet
    codes[0, 100:161, 110:157] = 254
    result = write_result(tmp_path / "r.zarr", codes, chunk=128)
    vectorize_result(result, tmp_path / "roads.gpkg", config=EXACT, client=client, progress=False)
    ours = _layer(tmp_path / "roads.gpkg", "road_surface")
    assert len(ours) == 1
    assert ours.geometry.iloc[0].area == pytest.approx(61 * 47 * 0.3 * 0.3)


def test_layers_and_graph_same_for_every_chunking(
    tmp_path: Path, client: Client, codes: np.ndarray
) -> None:
    layers = {}
    for chunk in (256, 512, 2048):
        result = write_result(tmp_path / f"r{chunk}.zarr", codes, chunk=chunk)
        out = tmp_path / f"roads{chunk}.gpkg"
        # tasks of 2 x 2 chunks at 256, 1 chunk at 512, the whole scene at 2048
        config = VectorizeConfig(task_px=512)
        vectorize_result(result, out, config=config, client=client, progress=False)
        layers[chunk] = {
            name: _layer(out, name) for name in ("road_surface", "road_centerline", "road_node")
        }
    for chunk in (256, 512):
        for name, frame in layers[chunk].items():
            ref = layers[2048][name]
            assert len(frame) == len(ref), (chunk, name)
            same = shapely.equals_exact(frame.geometry.to_numpy(), ref.geometry.to_numpy(), 1e-6)
            assert same.all(), (chunk, name)


def test_graph_reads_into_networkx_with_lengths(
    tmp_path: Path, client: Client, codes: np.ndarray
) -> None:
    result = write_result(tmp_path / "r.zarr", codes, chunk=256)
    out = tmp_path / "roads.gpkg"
    summary = vectorize_result(result, out, client=client, progress=False)
    lines = _layer(out, "road_centerline")
    nodes = _layer(out, "road_node")
    graph = read_graph(out)
    assert isinstance(graph, nx.MultiGraph)
    assert graph.number_of_nodes() == len(nodes) == summary.nodes
    assert graph.number_of_edges() == len(lines) == summary.edges
    total = graph.size(weight="length")
    assert total == pytest.approx(lines["length_m"].sum()) == pytest.approx(summary.km * 1000)
    assert lines["length_m"].to_numpy() == pytest.approx(shapely.length(lines.geometry.to_numpy()))
    # nodes carry coordinates; every edge runs between its nodes' points
    for u, v, data in list(graph.edges(data=True))[:20]:
        start, end = shapely.get_coordinates(data["geometry"])[[0, -1]]
        ends = {
            (graph.nodes[u]["x"], graph.nodes[u]["y"]),
            (graph.nodes[v]["x"], graph.nodes[v]["y"]),
        }
        assert {tuple(start), tuple(end)} == ends
    # plain networkx reads the GraphML too
    plain = nx.read_graphml(out.with_suffix(".graphml"))
    assert plain.number_of_edges() == len(lines)
    degrees = dict(graph.degree())
    assert sorted(degrees.values()) == sorted(nodes["degree"])
    # nine straight roads crossing: junctions of degree 3 and 4 exist
    assert {3, 4} & set(degrees.values())


def test_parquet_format_and_config_beside(tmp_path: Path, client: Client) -> None:
    codes = road_codes(300, 400, seed=2, roads=4)
    result = write_result(tmp_path / "r.zarr", codes, chunk=128)
    out = tmp_path / "roads"
    vectorize_result(result, out, fmt="parquet", client=client, progress=False)
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "road_centerline.parquet",
        "road_node.parquet",
        "road_surface.parquet",
        "roadnet-config.yaml",
        "roads.graphml",
    ]
    surface = gpd.read_parquet(out / "road_surface.parquet")
    assert surface.crs == CRS and len(surface) >= 1
    assert read_graph(out).number_of_edges() == len(
        gpd.read_parquet(out / "road_centerline.parquet")
    )
    assert "threshold: 0.5" in (out / "roadnet-config.yaml").read_text()


def test_threshold_default_follows_the_model_card(tmp_path: Path, client: Client) -> None:
    assert default_threshold({}) == 0.5
    assert default_threshold({CUTOFFS_ATTR: '{"surface": 0.3, "edge": 0.6}'}) == 0.3
    codes = np.zeros((3, 200, 200), np.uint8)
    codes[0, 50:150, 60:80] = 100  # p = 0.39: road at a 0.3 cut-off, not at 0.5
    attrs = {CUTOFFS_ATTR: '{"surface": 0.3}'}
    result = write_result(tmp_path / "r.zarr", codes, chunk=128, attrs=attrs)
    summary = vectorize_result(result, tmp_path / "a.gpkg", client=client, progress=False)
    assert summary.threshold == 0.3 and summary.components == 1
    explicit = VectorizeConfig(threshold=0.5)
    summary = vectorize_result(
        result, tmp_path / "b.gpkg", config=explicit, client=client, progress=False
    )
    assert summary.threshold == 0.5 and summary.components == 0


def test_centerline_source_cut_follows_the_model_card(tmp_path: Path, client: Client) -> None:
    codes = np.zeros((3, 200, 200), np.uint8)
    codes[0, 40:160, 90:110] = 230  # surface p = 0.9
    codes[2, 40:160, 98:102] = 100  # centerline p = 0.39: a line at a 0.35 cut, not at 0.6
    attrs = {CUTOFFS_ATTR: '{"surface": 0.6, "centerline": 0.35}'}
    carded = write_result(tmp_path / "c.zarr", codes, chunk=128, attrs=attrs)
    bare = write_result(
        tmp_path / "b.zarr", codes, chunk=128, attrs={CUTOFFS_ATTR: '{"surface": 0.6}'}
    )
    config = VectorizeConfig(graph_source="centerline", surface=False)
    km = {}
    for label, result in (("card", carded), ("bare", bare)):
        out = tmp_path / f"{label}.gpkg"
        km[label] = vectorize_result(result, out, config=config, client=client, progress=False).km
    assert km["card"] > 0  # the 120 px line, cut at the card's 0.35
    assert km["bare"] == 0  # no centerline cut-off in the card: the surface's 0.6
    explicit = VectorizeConfig(graph_source="centerline", surface=False, centerline_threshold=0.5)
    summary = vectorize_result(
        carded, tmp_path / "x.gpkg", config=explicit, client=client, progress=False
    )
    assert summary.km == 0  # the option wins over the card


def test_surface_only_and_graph_only_equal_the_full_run(
    tmp_path: Path, client: Client, codes: np.ndarray
) -> None:
    result = write_result(tmp_path / "r.zarr", codes, chunk=256)
    names = ("road_surface", "road_centerline", "road_node")
    made = {}
    for label, options in {
        "full": {},
        "surface": {"graph": False},
        "graph": {"surface": False},
    }.items():
        out = tmp_path / f"{label}.gpkg"
        config = VectorizeConfig(task_px=512, **options)
        summary = vectorize_result(result, out, config=config, client=client, progress=False)
        made[label] = {name: _layer(out, name) for name in names}
        assert label == "graph" or summary.components == len(made[label]["road_surface"])
    full = made["full"]
    assert len(full["road_surface"]) > 0 and len(full["road_centerline"]) > 0
    for label, kept in (("surface", ("road_surface",)), ("graph", names[1:])):
        for name in names:
            frame = made[label][name]
            if name not in kept:
                assert len(frame) == 0, (label, name)  # written, empty
                continue
            ref = full[name]
            assert len(frame) == len(ref), (label, name)
            same = shapely.equals_exact(frame.geometry.to_numpy(), ref.geometry.to_numpy(), 0)
            assert same.all(), (label, name)
    assert read_graph(tmp_path / "surface.gpkg").number_of_edges() == 0
    assert read_graph(tmp_path / "graph.gpkg").number_of_edges() == len(full["road_centerline"])
    with pytest.raises(ValueError, match="nothing to make"):
        VectorizeConfig(surface=False, graph=False)


def test_empty_result_gives_empty_layers(tmp_path: Path, client: Client) -> None:
    result = write_result(tmp_path / "r.zarr", np.zeros((3, 200, 300), np.uint8), chunk=128)
    summary = vectorize_result(result, tmp_path / "roads.gpkg", client=client, progress=False)
    assert (summary.components, summary.nodes, summary.edges) == (0, 0, 0)
    assert len(_layer(tmp_path / "roads.gpkg", "road_surface")) == 0
    assert read_graph(tmp_path / "roads.gpkg").number_of_nodes() == 0


@pytest.mark.parametrize("crs", ["EPSG:3857", "EPSG:2249"])  # Web Mercator; feet (Massachusetts)
def test_areas_lengths_and_options_are_ground_metres_in_any_projected_crs(
    tmp_path: Path, client: Client, crs: str
) -> None:
    from affine import Affine

    from roadnet.model.gsd import ground_scale

    codes = road_codes(400, 500, seed=6, roads=5)
    codes[0, 20:29, 20:29] = 254  # 81 px = 7.3 m2 on the ground: under min_area_m2 = 10
    # Unsimplified, the two layers are the same pixel outlines and must measure the same.
    # Simplified (default: one pixel), GEOS may keep another vertex here and there when the
    # coordinates differ, so those agree to 0.5 % only (below).
    exact = VectorizeConfig(task_px=256, simplify_m=0)
    reference = write_result(tmp_path / "utm.zarr", codes, chunk=256)  # 0.3 m, in metres
    # the same pixels, again 0.3 m on the ground: Web Mercator at 60.2 N has 0.6 m map units
    # per pixel there (its metres are cos(latitude) of the ground's), the state plane 0.98 ft
    origin = {"EPSG:3857": (2_776_000.0, 8_437_000.0), "EPSG:2249": (770_000.0, 2_950_000.0)}
    x0, y0 = origin[crs]
    size = 1.0
    for _ in range(3):  # the scale at the scene's centre, which depends on the pixel size
        size = 0.3 / ground_scale(crs, Affine(size, 0, x0, 0, -size, y0), (400, 500))
    other = write_result(
        tmp_path / "other.zarr", codes, chunk=256, crs=crs,
        transform=Affine(size, 0.0, x0, 0.0, -size, y0),
    )  # fmt: skip
    for config, rtol in ((exact, 1e-6), (VectorizeConfig(task_px=256), 5e-3)):
        layers = {}
        for name, store in (("utm", reference), ("other", other)):
            out = tmp_path / f"{name}.gpkg"
            vectorize_result(store, out, config=config, client=client, overwrite=True)
            layers[name] = {
                layer: _layer(out, layer)
                for layer in ("road_surface", "road_centerline", "road_node")
            }
        assert layers["other"]["road_surface"].crs == crs
        for layer, column in (
            ("road_surface", "area_m2"),
            ("road_surface", "perimeter_m"),
            ("road_centerline", "length_m"),
        ):
            ours, ref = layers["other"][layer], layers["utm"][layer]
            assert len(ours) == len(ref) > 0, layer  # the speck is dropped in both
            np.testing.assert_allclose(np.sort(ours[column]), np.sort(ref[column]), rtol=rtol)
        assert len(layers["other"]["road_node"]) == len(layers["utm"]["road_node"])
        assert layers["utm"]["road_surface"]["area_m2"].min() >= 10


def test_bad_inputs_are_refused_and_nothing_is_clobbered(tmp_path: Path, client: Client) -> None:
    codes = road_codes(200, 200, seed=3, roads=3)
    with pytest.raises(InputError, match="no roadnet result"):
        vectorize_result(tmp_path / "missing.zarr", tmp_path / "a.gpkg", client=client)
    write_result(tmp_path / "part.zarr", codes, chunk=128, finish=False)
    with pytest.raises(InputError, match="not finished"):
        vectorize_result(tmp_path / "part.zarr", tmp_path / "a.gpkg", client=client)
    nocrs = write_result(tmp_path / "nocrs.zarr", codes, chunk=128, crs=None)
    with pytest.raises(InputError, match="no CRS"):
        vectorize_result(nocrs, tmp_path / "a.gpkg", client=client)
    good = write_result(tmp_path / "good.zarr", codes, chunk=128)
    with pytest.raises(InputError, match=r"\.gpkg"):
        vectorize_result(good, tmp_path / "a.shp", client=client)
    existing = tmp_path / "existing.gpkg"
    existing.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        vectorize_result(good, existing, client=client)
    assert existing.read_bytes() == b"keep me"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ROADNET, *args], capture_output=True, text=True, env=ENV, check=False, timeout=300
    )


def test_cli_errors_are_one_line_with_exit_2(tmp_path: Path) -> None:
    good = write_result(tmp_path / "good.zarr", road_codes(200, 200, seed=3, roads=3), chunk=128)
    write_result(
        tmp_path / "part.zarr", road_codes(200, 200, seed=3, roads=3), chunk=128, finish=False
    )
    existing = tmp_path / "existing.gpkg"
    existing.write_bytes(b"keep me")
    new = str(tmp_path / "a.gpkg")
    # refused before dask, xarray and GDAL are imported
    early = [
        (["vectorize", str(tmp_path / "none.zarr"), "--out", new], "no roadnet result"),
        (["vectorize", str(tmp_path / "part.zarr"), "--out", new], "not finished"),
        (["vectorize", str(good), "--out", new, "--threshold", "1.5"], "(0, 1)"),
        (["vectorize", str(good), "--out", new, "--threshold", "0"], "(0, 1)"),
        (["vectorize", str(good), "--out", str(existing)], "--overwrite"),
        (["vectorize", str(good), "--out", new, "--format", "shp"], "gpkg or parquet"),
        (["vectorize", str(good), "--out", str(tmp_path / "a.shp")], "must end in .gpkg"),
    ]
    late = [
        (["vectorize", str(good), "--out", new, "--no-surface", "--no-graph"], "nothing to make")
    ]
    answers = run_in_one_process([args for args, _ in early + late])
    for (args, message), answer in zip(early + late, answers, strict=True):
        assert answer.code == 2, (args, answer)
        lines = answer.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, answer.stderr)
    for (args, _), answer in zip(early, answers, strict=False):
        assert answer.heavy == [], (args, answer.heavy)
    assert existing.read_bytes() == b"keep me"
    assert not (tmp_path / "a.gpkg").exists() and not (tmp_path / "a.shp").exists()


def test_cli_vectorizes_with_a_summary_line(tmp_path: Path) -> None:
    good = write_result(tmp_path / "good.zarr", road_codes(300, 300, seed=5, roads=4), chunk=128)
    out = tmp_path / "roads.gpkg"
    proc = _cli("vectorize", str(good), "--out", str(out), "--workers", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = proc.stdout.strip().splitlines()[-1]
    assert "road components" in line and "km of centerline" in line and "nodes" in line
    assert out.is_file() and out.with_suffix(".graphml").is_file()
    assert out.with_name("roads.roadnet-config.yaml").is_file()


def test_run_with_vectorize_goes_from_scene_to_roads(tmp_path: Path, test_model_path: Path) -> None:
    scene = write_scene(tmp_path / "s.tif", smooth_scene(300, 260))
    out, roads = tmp_path / "r.zarr", tmp_path / "roads.gpkg"
    base = ["run", str(scene), "--out", str(out), "--model", str(test_model_path),
            "--chunk", "128", "--overlap", "32", "--workers", "1", "--no-progress"]  # fmt: skip
    proc = _cli(*base, "--vectorize", str(roads))
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert "chunks computed" in lines[-2] and "road components" in lines[-1], lines
    assert out.is_dir() and roads.is_file() and roads.with_suffix(".graphml").is_file()
    # an existing road layer is refused before anything runs: the result stays as it was
    stamp = (out / "zarr.json").stat().st_mtime_ns
    roads_bytes = roads.read_bytes()
    proc = _cli(*base[:3], str(tmp_path / "r2.zarr"), *base[4:], "--vectorize", str(roads))
    assert proc.returncode == 2 and "--overwrite" in proc.stderr, proc.stderr
    assert not (tmp_path / "r2.zarr").exists() and roads.read_bytes() == roads_bytes
    assert (out / "zarr.json").stat().st_mtime_ns == stamp
