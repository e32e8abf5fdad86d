"""Safe outputs: never clobber without ``overwrite``, never leave a partial result that looks whole.

Directory outputs are built in a sibling staging directory and renamed into place only when
complete, so an interrupted run leaves ``OUT.partial-*`` behind, never a half-filled ``OUT``.

Object stores (fsspec URLs) have no rename. There a file is written locally and uploaded
whole (:func:`upload_files`): an object becomes visible only when its upload completes (one
PUT, or the completion of a multipart upload), so no half file ever appears under its final
name. Zarr stores are written in place and marked complete last (see
:mod:`roadnet.pipeline.inference.store`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from roadnet.errors import OutputExistsError
from roadnet.paths import Location, StorageOptions, filesystem, is_url

__all__ = [
    "check_output_dir",
    "check_output_file",
    "output_exists",
    "remove_output",
    "replace_with",
    "staged_output_dir",
    "upload_files",
]


def _is_nonempty(path: Path) -> bool:
    if path.is_dir():
        return any(path.iterdir())
    return path.exists()


def check_output_file(path: Path, *, overwrite: bool) -> Path:
    """Refuse an existing output file unless ``overwrite``; create its parent directory."""
    if path.exists() and not overwrite:
        raise OutputExistsError(f"output {path} already exists (use --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def check_output_dir(out: Path, *, overwrite: bool) -> None:
    """Refuse an output directory (or file) that exists and is not empty, unless ``overwrite``.

    Raises:
        OutputExistsError: ``out`` holds something and ``overwrite`` is false.
    """
    if _is_nonempty(Path(out)) and not overwrite:
        raise OutputExistsError(
            f"output directory {out} is not empty (use --overwrite to replace it)"
        )


@contextlib.contextmanager
def staged_output_dir(out: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a fresh staging directory that replaces ``out`` only if the body succeeds.

    Raises:
        OutputExistsError: ``out`` exists and is not empty and ``overwrite`` is false.
    """
    out = Path(out)
    check_output_dir(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f"{out.name}.partial-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_with(staging, out)


def replace_with(staging: Path, out: Path) -> None:
    """Move a finished ``staging`` file or directory to ``out``, replacing what is there.

    The caller has already checked ``overwrite``. Both lie in one directory, so the final
    step is a rename: readers see the old output or the new one, never a half-written one
    (an old directory is removed just before).
    """
    if out.is_dir() and not out.is_symlink():
        shutil.rmtree(out)
    elif out.exists() and staging.is_dir():
        out.unlink()
    os.replace(staging, out)


def output_exists(out: Location, *, storage_options: StorageOptions | None = None) -> bool:
    """Whether anything is at ``out``: a file or directory, an object or a key prefix."""
    if not is_url(out):
        return Path(out).exists() or Path(out).is_symlink()
    fs, path = filesystem(str(out), storage_options)
    return bool(fs.exists(path))


def remove_output(
    out: Location, *, first: str | None = None, storage_options: StorageOptions | None = None
) -> None:
    """Remove a file, directory, object or key prefix at ``out``, if there.

    Args:
        out: what to remove.
        first: a member (relative name) removed before the rest, e.g. the marker that makes
            the output look complete, so an interrupted removal never leaves that behind.
        storage_options: fsspec options of a URL.
    """
    if not is_url(out):
        path = Path(out)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        return
    fs, key = filesystem(str(out), storage_options)
    if first is not None and fs.exists(f"{key}/{first}"):
        fs.rm(f"{key}/{first}")
    if fs.exists(key):
        fs.rm(key, recursive=True)
    fs.invalidate_cache()


def upload_files(
    files: list[tuple[Path, str]], *, storage_options: StorageOptions | None = None
) -> None:
    """Upload finished local files to their URLs, one whole object each, in the given order.

    Put the file that makes an output look complete last: a killed upload leaves the earlier
    objects only.
    """
    for local, url in files:
        fs, path = filesystem(url, storage_options)
        fs.put_file(str(local), path)
