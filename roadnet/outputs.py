"""Safe outputs: never clobber without ``overwrite``, never leave a partial result that looks whole.

Directory outputs are built in a sibling staging directory and renamed into place only when
complete, so an interrupted run leaves ``OUT.partial-*`` behind, never a half-filled ``OUT``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from roadnet.errors import OutputExistsError

__all__ = ["check_output_file", "replace_with", "staged_output_dir"]


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


@contextlib.contextmanager
def staged_output_dir(out: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a fresh staging directory that replaces ``out`` only if the body succeeds.

    Raises:
        OutputExistsError: ``out`` exists and is not empty and ``overwrite`` is false.
    """
    out = Path(out)
    if _is_nonempty(out) and not overwrite:
        raise OutputExistsError(
            f"output directory {out} is not empty (use --overwrite to replace it)"
        )
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
