"""The catalog: GeoParquet round trip, atomic rewrite, no lost updates between processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import shapely

from roadnet.pipeline.nightly.catalog import COLUMNS, read_catalog, updating, write_catalog


def test_round_trip_with_every_column(tmp_path: Path) -> None:
    row = {name: None for name in COLUMNS}
    row.update(scene_id="a-1", source="/in/a.tif", size=10, mtime=1.5, status="done",
               attempts=2, km=1.25, components=3, merged=True, error=None)  # fmt: skip
    row["geometry"] = shapely.box(24.9, 60.1, 25.0, 60.2)
    write_catalog(str(tmp_path), {"a-1": row})
    frame = gpd.read_parquet(tmp_path / "catalog.parquet")
    assert list(frame.columns) == [*COLUMNS, "geometry"]
    assert frame.crs == "EPSG:4326"
    back = read_catalog(str(tmp_path))["a-1"]
    assert back["attempts"] == 2 and back["km"] == 1.25 and back["merged"] is True
    assert back["error"] is None and back["geometry"].equals(row["geometry"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.parquet"]  # no temp left


def test_a_catalog_written_before_a_column_existed_reads_and_gains_it(tmp_path: Path) -> None:
    row = {name: None for name in COLUMNS}
    row.update(scene_id="a-1", status="done", road_chunks=7)
    row["geometry"] = shapely.box(24.9, 60.1, 25.0, 60.2)
    write_catalog(str(tmp_path), {"a-1": row})
    path = tmp_path / "catalog.parquet"
    gpd.read_parquet(path).drop(columns=["road_chunks"]).to_parquet(path)  # an older catalog
    back = read_catalog(str(tmp_path))
    assert back["a-1"]["road_chunks"] is None and back["a-1"]["status"] == "done"
    write_catalog(str(tmp_path), back)
    assert "road_chunks" in gpd.read_parquet(path).columns


_UPDATE = """
import sys
from roadnet.pipeline.nightly.catalog import updating
for i in range(int(sys.argv[3])):
    with updating(sys.argv[1]) as rows:
        key = f"{sys.argv[2]}-{i}"
        rows[key] = {"scene_id": key, "status": "done", "attempts": 1}
"""


def test_concurrent_updates_lose_nothing(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", _UPDATE, str(tmp_path), f"p{k}", "8"])
        for k in range(3)
    ]
    with updating(str(tmp_path)) as rows:
        rows["main"] = {"scene_id": "main", "status": "failed"}
    assert all(p.wait(timeout=120) == 0 for p in procs)
    rows = read_catalog(str(tmp_path))
    assert len(rows) == 25 and rows["main"]["status"] == "failed"
    assert not (tmp_path / "catalog.parquet.lease").exists()


def test_catalog_on_s3(s3_bucket: str) -> None:
    outbox = f"{s3_bucket}/roads"
    assert read_catalog(outbox) == {}
    with updating(outbox) as rows:
        rows["a"] = {"scene_id": "a", "status": "done", "attempts": 1}
    assert read_catalog(outbox)["a"]["status"] == "done"
