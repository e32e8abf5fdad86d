from __future__ import annotations

from pathlib import Path

import pytest

from roadnet.errors import OutputExistsError
from roadnet.outputs import check_output_file, staged_output_dir


def test_staged_dir_appears_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), staged_output_dir(out, overwrite=False) as stage:
        (stage / "half.tif").write_text("partial")
        raise RuntimeError("killed")
    assert not out.exists()
    assert not list(tmp_path.glob("out.partial-*"))
    with staged_output_dir(out, overwrite=False) as stage:
        (stage / "a.tif").write_text("done")
    assert (out / "a.tif").read_text() == "done"


def test_nonempty_dir_is_not_clobbered_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with (
        pytest.raises(OutputExistsError, match="--overwrite"),
        staged_output_dir(out, overwrite=False),
    ):
        pass
    assert (out / "keep.txt").read_text() == "precious"
    with staged_output_dir(out, overwrite=True) as stage:
        (stage / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]


def test_existing_file_needs_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    path.write_bytes(b"x")
    with pytest.raises(OutputExistsError):
        check_output_file(path, overwrite=False)
    assert check_output_file(path, overwrite=True) == path
