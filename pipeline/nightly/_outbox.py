"""Reading and writing whole small files in the outbox, local or on an object store.

A write is atomic for readers: locally a temporary file renamed over the target; on an
object store one PUT (objects appear whole).
"""

from __future__ import annotations

import os
from pathlib import Path

import fsspec

from roadnet.paths import is_url

__all__ = ["exists", "join", "read_bytes", "write_bytes"]


def join(root: str, *parts: str) -> str:
    """``root/part/...`` for a local folder or a URL."""
    if is_url(root):
        return "/".join([root.rstrip("/"), *parts])
    return str(Path(root, *parts))


def read_bytes(location: str) -> bytes | None:
    """The file's bytes, or None when there is none."""
    try:
        if not is_url(location):
            return Path(location).read_bytes()
        fs, path = fsspec.core.url_to_fs(location)
        data: bytes = fs.cat_file(path)
        return data
    except FileNotFoundError:
        return None


def write_bytes(location: str, data: bytes) -> None:
    """Replace the file with ``data`` in one step (see the module docs)."""
    if is_url(location):
        fs, path = fsspec.core.url_to_fs(location)
        fs.pipe_file(path, data)
        return
    target = Path(location)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def exists(location: str) -> bool:
    """Whether a file or folder exists there."""
    if not is_url(location):
        return Path(location).exists()
    fs, path = fsspec.core.url_to_fs(location)
    return bool(fs.exists(path))
