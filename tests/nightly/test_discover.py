from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from _city import age, write_window

from roadnet.errors import InputError
from roadnet.pipeline.nightly.discover import discover, file_checksum, scene_id


def test_any_case_suffix_and_tif_tiff_are_two_scenes(tmp_path: Path) -> None:
    for name in ("a.tif", "a.tiff", "B.TIF", "sub/c.TiFf"):
        age(write_window(tmp_path / name, row=0, col=0, height=32, width=32))
    (tmp_path / "notes.txt").write_text("not a scene")
    (tmp_path / "a.tif.done").write_text("")
    found = discover(str(tmp_path), stable_seconds=60)
    names = sorted(Path(c.source).relative_to(tmp_path).as_posix() for c in found.scenes)
    assert names == ["B.TIF", "a.tif", "a.tiff", "sub/c.TiFf"]
    ids = {c.scene_id for c in found.scenes}
    assert len(ids) == 4
    assert all(c.stable for c in found.scenes)
    assert {c.source for c in found.scenes} == {str(tmp_path / n) for n in names}


def test_stable_by_age_or_done_marker(tmp_path: Path) -> None:
    fresh = write_window(tmp_path / "fresh.tif", row=0, col=0, height=32, width=32)
    marked = write_window(tmp_path / "marked.tif", row=0, col=0, height=32, width=32)
    (tmp_path / "marked.tif.done").write_text("")
    found = discover(str(tmp_path), stable_seconds=30)
    by_name = {Path(c.source).name: c for c in found.scenes}
    assert not by_name["fresh.tif"].stable and by_name["marked.tif"].stable
    assert [Path(c.source).name for c in found.waiting] == ["fresh.tif"]
    then = time.time() - 31
    os.utime(fresh, (then, then))
    assert all(c.stable for c in discover(str(tmp_path), stable_seconds=30).scenes)
    assert marked.exists()


def test_stac_item_collection_lists_tiff_assets(tmp_path: Path) -> None:
    scene = age(write_window(tmp_path / "data" / "x.tif", row=0, col=0, height=32, width=32))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "tile-7",
        "geometry": None,
        "properties": {"datetime": "2026-05-01T10:00:00Z"},
        "links": [],
        "assets": {
            "visual": {"href": str(scene), "type": "image/tiff; application=geotiff"},
            "meta": {"href": "meta.xml", "type": "application/xml"},
        },
    }
    (inbox / "listing.json").write_text(
        json.dumps({"type": "FeatureCollection", "features": [item]})
    )
    (inbox / "other.json").write_text(json.dumps({"hello": "world"}))
    found = discover(str(inbox), stable_seconds=60)
    assert len(found.scenes) == 1
    only = found.scenes[0]
    assert only.source == str(scene) and only.stable
    assert only.scene_id.startswith("tile-7-")
    assert only.acquired == pytest.approx(1777629600.0)


def test_missing_inbox_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a folder"):
        discover(str(tmp_path / "nope"), stable_seconds=1)


def test_scene_id_and_checksum(tmp_path: Path) -> None:
    assert scene_id("a b/c.tif", "/x") != scene_id("a b/c.tif", "/y")
    assert scene_id("a b/c.tif", "/x").startswith("a_b_c.tif-")
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    assert file_checksum(str(path)) == (
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_stac_catalog_with_child_items(tmp_path: Path) -> None:
    import pystac

    scene = age(write_window(tmp_path / "inbox" / "tiles" / "y.tif", row=0, col=0, height=32,
                             width=32))  # fmt: skip
    catalog = pystac.Catalog(id="city", description="scenes")
    item = pystac.Item(id="tile-9", geometry=None, bbox=None,
                       datetime=pystac.utils.str_to_datetime("2026-06-01T00:00:00Z"),
                       properties={})  # fmt: skip
    item.add_asset("image", pystac.Asset(href=str(scene), media_type=pystac.MediaType.COG))
    catalog.add_item(item)
    catalog.normalize_hrefs(str(tmp_path / "inbox" / "stac"))
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    found = discover(str(tmp_path / "inbox"), stable_seconds=60)
    # the file itself, the catalog's item and the item's own JSON name it: one scene
    assert [c.source for c in found.scenes] == [str(scene)]
    elsewhere = tmp_path / "other-inbox"
    (tmp_path / "inbox" / "tiles" / "y.tif").rename(tmp_path / "y.tif")
    catalog.normalize_hrefs(str(elsewhere / "stac"))
    item.assets["image"].href = str(tmp_path / "y.tif")
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    found = discover(str(elsewhere), stable_seconds=60)
    assert [c.source for c in found.scenes] == [str(tmp_path / "y.tif")]
    assert found.scenes[0].scene_id.startswith("tile-9-") and found.scenes[0].stable


def test_inbox_in_a_bucket(s3_bucket: str, tmp_path: Path) -> None:
    from _s3 import s3_fs

    scene = write_window(tmp_path / "a.TIF", row=0, col=0, height=32, width=32)
    fs = s3_fs()
    bucket = s3_bucket.removeprefix("s3://")
    fs.put_file(str(scene), f"{bucket}/inbox/a.TIF")
    fs.put_file(str(scene), f"{bucket}/inbox/b.tif")
    fs.pipe_file(f"{bucket}/inbox/b.tif.done", b"")
    found = discover(f"{s3_bucket}/inbox", stable_seconds=3600)
    by_source = {c.source: c for c in found.scenes}
    assert sorted(by_source) == [f"{s3_bucket}/inbox/a.TIF", f"{s3_bucket}/inbox/b.tif"]
    assert not by_source[f"{s3_bucket}/inbox/a.TIF"].stable  # just uploaded
    assert by_source[f"{s3_bucket}/inbox/b.tif"].stable  # its marker says it is complete
    assert by_source[f"{s3_bucket}/inbox/a.TIF"].size == scene.stat().st_size
    assert file_checksum(f"{s3_bucket}/inbox/a.TIF") == file_checksum(str(scene))
