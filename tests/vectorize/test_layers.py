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
from roadnet.pipeline.vectorize.layers import (
    CONFIG_NAME,
    LAYERS,
    RoadLayers,
    check_outputs,
    frame,
    layer_paths,
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
        check_outputs("s3://b/roads", fmt="gpkg", overwrite=False)


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
