"""Finding the scenes of an inbox: GeoTIFFs in a folder or bucket, or assets of a STAC listing.

An inbox is a local folder or an fsspec URL (``s3://bucket/inbox``). Under it (recursively):

- every ``*.tif`` / ``*.tiff`` in any letter case (COGs included) is a scene; ``a.tif`` and
  ``a.tiff`` are two scenes with two ids;
- every ``*.json`` holding a STAC ItemCollection, Item, Catalog or Collection (read with
  pystac) contributes its items' GeoTIFF assets (media type ``image/tiff`` or an href ending
  in ``.tif`` / ``.tiff``), hrefs resolved against the JSON's location.

A file scene counts as arrived only when it is **stable**: a sidecar marker ``SCENE.done``
(e.g. ``a.tif.done``) exists, or its modification time is at least ``stable_seconds`` old (a
file still being copied in keeps changing its size and mtime). Assets listed in STAC count as
arrived when listed. A source is one scene however many listings name it (a file in the
inbox that a listing names too is taken as the file).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import fsspec

from roadnet.errors import InputError
from roadnet.paths import is_url

__all__ = ["Candidate", "Inbox", "discover", "file_checksum", "scene_id"]

log = logging.getLogger(__name__)

SCENE_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class Candidate:
    """A scene found in the inbox.

    Attributes:
        scene_id: stable id, unique per source (see :func:`scene_id`).
        source: the scene's URL or local path, as the workers open it.
        size: bytes (None when unknown, e.g. a STAC asset over HTTP).
        mtime: modification time, epoch seconds (None when unknown).
        stable: counts as arrived (see the module docs).
        checksum: a checksum the listing gave (STAC ``file:checksum``), else None.
        acquired: the scene's time for the overlap rule (STAC ``datetime``, else mtime).
    """

    scene_id: str
    source: str
    size: int | None
    mtime: float | None
    stable: bool
    checksum: str | None = None
    acquired: float | None = None


@dataclass(frozen=True)
class Inbox:
    """What :func:`discover` found."""

    scenes: list[Candidate]

    @property
    def stable(self) -> list[Candidate]:
        """The scenes that have arrived."""
        return [c for c in self.scenes if c.stable]

    @property
    def waiting(self) -> list[Candidate]:
        """The scenes still arriving."""
        return [c for c in self.scenes if not c.stable]


def scene_id(relative: str, source: str) -> str:
    """A readable id unique per source: the relative path slugged, and 8 hex of its hash.

    >>> scene_id("north/a.TIF", "/in/north/a.TIF")
    'north_a.TIF-1b0ee5f1'
    """
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", relative.strip("/")) or "scene"
    return f"{slug}-{hashlib.sha256(source.encode()).hexdigest()[:8]}"


def _mtime(info: dict[str, Any]) -> float | None:
    for key in ("mtime", "LastModified", "last_modified", "modified"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, int | float):
            return float(value)
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
    return None


def _url(fs: fsspec.AbstractFileSystem, path: str, local: bool) -> str:
    return path if local else fs.unstrip_protocol(path)


def discover(inbox: str, *, stable_seconds: float, done_suffix: str = ".done") -> Inbox:
    """List the scenes of an inbox and tell which have arrived.

    Args:
        inbox: a local folder or an fsspec URL.
        stable_seconds: a file whose mtime is at least this old has arrived.
        done_suffix: sidecar marker that says a scene has arrived at once.

    Raises:
        InputError: the inbox does not exist or cannot be listed.
    """
    local = not is_url(inbox)
    fs, root = fsspec.core.url_to_fs(inbox)
    try:
        if not fs.isdir(root):
            raise InputError(f"inbox {inbox} is not a folder (or bucket prefix)")
        listing: dict[str, dict[str, Any]] = fs.find(root, detail=True)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot list inbox {inbox}: {exc}") from exc
    names = set(listing)
    now = time.time()
    found: list[Candidate] = []
    listed: list[Candidate] = []
    for path, info in sorted(listing.items()):
        lower = path.lower()
        relative = path[len(root) :].lstrip("/")
        if lower.endswith(SCENE_SUFFIXES):
            mtime = _mtime(info)
            marked = f"{path}{done_suffix}" in names
            stable = marked or (mtime is not None and now - mtime >= stable_seconds)
            source = _url(fs, path, local)
            found.append(
                Candidate(
                    scene_id=scene_id(relative, source),
                    source=source,
                    size=int(info.get("size") or 0),
                    mtime=mtime,
                    stable=stable,
                    acquired=mtime,
                )
            )
        elif lower.endswith(".json"):
            listed.extend(_stac_scenes(fs, path, _url(fs, path, local)))
    # one scene per source: a file in the inbox that a listing also names is the file
    sources = {c.source for c in found}
    for candidate in listed:
        if candidate.source not in sources:
            sources.add(candidate.source)
            found.append(candidate)
    return Inbox(scenes=found)


def _stac_scenes(fs: fsspec.AbstractFileSystem, path: str, url: str) -> list[Candidate]:
    """The GeoTIFF assets of a STAC JSON file; [] for JSON that is not STAC."""
    try:
        data = json.loads(fs.cat_file(path))
    except (OSError, ValueError):
        log.warning("skipping %s: not readable JSON", url)
        return []
    if not isinstance(data, dict) or data.get("type") not in (
        "FeatureCollection",
        "Feature",
        "Catalog",
        "Collection",
    ):
        return []
    import pystac

    try:
        if data["type"] == "FeatureCollection":
            items = list(pystac.ItemCollection.from_dict(data, preserve_dict=False).items)
        elif data["type"] == "Feature":
            items = [pystac.Item.from_dict(data)]
        else:
            catalog = pystac.read_file(url)  # resolves the child links from the file
            if not isinstance(catalog, pystac.Catalog):
                return []
            items = list(catalog.get_items(recursive=True))
    except (pystac.STACError, KeyError, ValueError, TypeError) as exc:
        log.warning("skipping %s: not a valid STAC document (%s)", url, exc)
        return []
    base = url.rsplit("/", 1)[0]
    found = []
    for item in items:
        tiffs = [
            (key, asset)
            for key, asset in sorted(item.assets.items())
            if "image/tiff" in (asset.media_type or "")
            or asset.href.lower().endswith(SCENE_SUFFIXES)
        ]
        acquired = item.datetime.timestamp() if item.datetime else None
        for key, asset in tiffs:
            href = asset.href
            if not is_url(href) and not href.startswith("/"):
                href = f"{base}/{href.removeprefix('./')}"
            name = item.id if len(tiffs) == 1 else f"{item.id}_{key}"
            checksum = asset.extra_fields.get("file:checksum")
            found.append(
                Candidate(
                    scene_id=scene_id(name, href),
                    source=href,
                    size=asset.extra_fields.get("file:size"),
                    mtime=None,
                    stable=True,
                    checksum=str(checksum) if checksum else None,
                    acquired=acquired,
                )
            )
    return found


def file_checksum(source: str, *, block: int = 8 * 2**20) -> str:
    """``sha256:<hex>`` of a scene's bytes, read in blocks (local path or fsspec URL).

    Raises:
        InputError: the file cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with fsspec.open(source, "rb") as fh:
            while chunk := fh.read(block):
                digest.update(chunk)
    except OSError as exc:
        raise InputError(f"cannot read scene {source}: {exc}") from exc
    return f"sha256:{digest.hexdigest()}"
