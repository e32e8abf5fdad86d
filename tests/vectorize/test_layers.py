"""The layer writers: local files and uploads to an S3 server (moto) on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from _results import CRS
from _s3 import s3_fs
from geopandas.testing import assert_geodataframe_equal

from roadnet.errors import InputError, OutputExistsError
from roadnet.pipeline.preflight import check_layer_outputs
from roadnet.pipeline.vectorize.layers import (
    CONFIG_NAME,
    LAYERS,
    RoadLayers,
    frame,
    layer_paths,
    read_graph,
    write_layers,
)


def _layers(n: int = 2) -> RoadLayers:
    x0, y0 = 385_000.0, 6_672_000.0
    polys = np.array([shapely.box(x0 + 10 * i, y0, x0 + 10 * i + 5, y0 + 5) for i in range(n)])
    ends = shapely.points([x0, x0 + 10 * n], [y0, y0])
    return RoadLayers(
        surface=frame(
            {
                "area_m2": shapely.area(polys),
                "perimeter_m": shapely.length(polys),
                "model_sha256": np.full(n, "f" * 64, dtype=object),
                "geometry": polys,
            },
            crs=CRS,
        ),
        centerline=frame(
            {
                "u": np.array([0]),
                "v": np.array([1]),
                "length_m": np.array([10.0 * n]),
                "geometry": np.array([shapely.LineString(shapely.get_coordinates(ends))]),
            },
            crs=CRS,
        ),
        nodes=frame(
            {"id": np.array([0, 1]), "degree": np.array([1, 1]), "geometry": ends}, crs=CRS
        ),
    )


def test_layer_paths_of_urls_follow_the_local_names(tmp_path: Path) -> None:
    assert layer_paths("s3://b/maps/roads.gpkg", fmt="gpkg") == {
        "layers": "s3://b/maps/roads.gpkg",
        "graph": "s3://b/maps/roads.graphml",
        "config": f"s3://b/maps/roads.{CONFIG_NAME}",
    }
    local = layer_paths(tmp_path / "roads.gpkg", fmt="gpkg")
    assert local["graph"] == tmp_path / "roads.graphml"
    assert layer_paths("s3://b/pq/", fmt="parquet")["config"] == f"s3://b/pq/{CONFIG_NAME}"
    with pytest.raises(InputError, match=r"must end in \.gpkg"):
        check_layer_outputs("s3://b/roads", fmt="gpkg", overwrite=False)


@pytest.mark.parametrize("fmt", ["gpkg", "parquet"])
def test_layers_upload_whole_and_equal_the_local_files(
    tmp_path: Path, s3_bucket: str, fmt: str
) -> None:
    name = "roads.gpkg" if fmt == "gpkg" else "roads"
    local = write_layers(_layers(), tmp_path / name, fmt=fmt, config_text="a: 1\n")  # type: ignore[arg-type]
    url = f"{s3_bucket}/maps/{name}"
    urls = write_layers(_layers(), url, fmt=fmt, config_text="a: 1\n")  # type: ignore[arg-type]
    fs = s3_fs()
    for key in ("graph", "config"):
        assert fs.cat(urls[key].removeprefix("s3://")) == Path(local[key]).read_bytes()
    got = tmp_path / "got" / name
    got.parent.mkdir()
    fs.get(url.removeprefix("s3://"), str(got), recursive=fmt == "parquet")
    for layer in LAYERS:
        if fmt == "gpkg":
            back = gpd.read_file(got, layer=layer, engine="pyogrio")
            want = gpd.read_file(local["layers"], layer=layer, engine="pyogrio")
        else:
            back = gpd.read_parquet(f"{url.removeprefix('s3://')}/{layer}.parquet", filesystem=fs)
            want = gpd.read_parquet(Path(local["layers"]) / f"{layer}.parquet")
        assert_geodataframe_equal(back, want)

    # Existing outputs are refused, then replaced with overwrite (a parquet directory whole).
    with pytest.raises(OutputExistsError, match="already exists"):
        write_layers(_layers(3), url, fmt=fmt)  # type: ignore[arg-type]
    if fmt == "parquet":
        fs.pipe(f"{url.removeprefix('s3://')}/stale.parquet", b"old")
    write_layers(_layers(3), url, fmt=fmt, config_text="a: 2\n", overwrite=True)  # type: ignore[arg-type]
    fs = s3_fs()
    assert fs.cat(urls["config"].removeprefix("s3://")) == b"a: 2\n"
    if fmt == "parquet":
        assert not fs.exists(f"{url.removeprefix('s3://')}/stale.parquet")
        surface = gpd.read_parquet(
            f"{url.removeprefix('s3://')}/road_surface.parquet", filesystem=fs
        )
        assert len(surface) == 3


def test_a_failed_write_uploads_nothing(tmp_path: Path, s3_bucket: str) -> None:
    url = f"{s3_bucket}/roads.gpkg"
    with pytest.raises(TypeError):
        write_layers(_layers(), url, config_text=b"not text")  # type: ignore[arg-type]
    assert s3_fs().ls(s3_bucket.removeprefix("s3://")) == []


def test_graphml_is_the_networkx_graph_of_the_layers(tmp_path: Path) -> None:
    """The streamed GraphML reads back (networkx) as ``RoadLayers.graph()``, parallel edges,
    a loop and a reversed edge included, each edge ``source=u target=v`` along its line."""
    import networkx as nx

    base = _layers()
    x0, y0 = 385_000.0, 6_672_000.0
    nodes = shapely.points([x0, x0 + 20.0, x0 + 20.0], [y0, y0, y0 + 30.0])
    lines = np.array(
        [
            shapely.LineString([(x0, y0), (x0 + 20.0, y0)]),  # 0-1
            shapely.LineString([(x0 + 20.0, y0), (x0 + 10.0, y0 + 4.0), (x0, y0)]),  # 1-0
            shapely.LineString([(x0 + 20.0, y0 + 30.0), (x0 + 20.0, y0)]),  # 2-1: u > v
            shapely.LineString(  # a loop at 2
                [(x0 + 20, y0 + 30), (x0 + 25, y0 + 35), (x0 + 15, y0 + 35), (x0 + 20, y0 + 30)]
            ),
        ]
    )
    layers = RoadLayers(
        surface=base.surface,
        centerline=frame(
            {
                "u": np.array([0, 1, 2, 2]),
                "v": np.array([1, 0, 1, 2]),
                "length_m": shapely.length(lines),
                "geometry": lines,
            },
            crs=CRS,
        ),
        nodes=frame(
            {"id": np.arange(3), "degree": np.array([2, 3, 3]), "geometry": nodes}, crs=CRS
        ),
    )
    out = tmp_path / "roads.gpkg"
    write_layers(layers, out)
    graphml = out.with_suffix(".graphml")

    expected, loaded = layers.graph(), read_graph(graphml)
    assert loaded.graph["crs"] == expected.graph["crs"] == layers.nodes.crs.to_wkt()
    assert dict(loaded.nodes(data=True)) == dict(expected.nodes(data=True))

    def edges(g: nx.MultiGraph) -> list[tuple[int, int, float, str]]:
        return sorted(
            (min(u, v), max(u, v), d["length"], shapely.to_wkt(shapely.normalize(d["geometry"])))
            for u, v, d in g.edges(data=True)
        )

    assert edges(loaded) == edges(expected) and len(edges(loaded)) == 4
    plain = nx.read_graphml(graphml)  # what a user gets with networkx alone
    assert plain.is_multigraph() and plain.number_of_edges() == 4
    assert sorted(k for _, _, k in plain.edges(keys=True)) == [0, 0, 0, 1]
    # source -> target runs along the line, as u -> v does in road_centerline
    from xml.etree import ElementTree

    xy = {n: (d["x"], d["y"]) for n, d in loaded.nodes(data=True)}
    ns = {"g": "http://graphml.graphdrawing.org/xmlns"}
    written = ElementTree.parse(graphml).getroot().findall("g:graph/g:edge", ns)
    assert len(written) == 4
    for edge in written:
        wkt = edge.find("g:data[@key='geometry']", ns).text  # type: ignore[union-attr]
        line = shapely.from_wkt(wkt)
        assert line.coords[0] == pytest.approx(xy[int(edge.get("source"))])  # type: ignore[arg-type]
        assert line.coords[-1] == pytest.approx(xy[int(edge.get("target"))])  # type: ignore[arg-type]
