"""Telling URLs from local paths, and the few path operations outputs need on both.

An output is a local path or an fsspec URL (``s3://bucket/key``, ``gs://…``); URLs are
treated as object stores: no rename, but every object appears whole when its upload ends.
Credentials and endpoints come from the environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, …, which botocore and s3fs read, or fsspec's own ``FSSPEC_*``
configuration) and, where a caller has them, from ``storage_options``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = [
    "Location",
    "StorageOptions",
    "filesystem",
    "is_url",
    "location",
    "with_name",
]

#: A local path or an fsspec URL.
Location = str | Path
#: Keyword arguments of the fsspec filesystem (``key``, ``endpoint_url``, …).
StorageOptions = Mapping[str, Any]


def is_url(location: str | Path) -> bool:
    """Whether ``location`` is an fsspec URL (``s3://…``, ``https://…``), not a local path."""
    return "://" in str(location)


def location(value: Location) -> Location:
    """An output's canonical form: a URL as given (no trailing ``/``), a local path resolved."""
    if is_url(value):
        return str(value).rstrip("/")
    return Path(value).resolve()


def with_name(value: Location, name: str) -> Location:
    """``value`` with its last component replaced by ``name`` (``Path.with_name`` for URLs)."""
    if not is_url(value):
        return Path(value).with_name(name)
    protocol, _, rest = str(value).partition("://")
    return f"{protocol}://{PurePosixPath(rest).with_name(name)}"


def filesystem(
    url: str, storage_options: StorageOptions | None = None
) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem of ``url`` and the path in it (no protocol).

    The filesystem's listing cache is cleared: outputs are checked for existence just after
    other processes may have written or removed them.
    """
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(url, **dict(storage_options or {}))
    fs.invalidate_cache()
    return fs, str(path)
