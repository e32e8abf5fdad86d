from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from roadnet.config import (
    StrictModel,
    apply_overrides,
    load_config,
    write_resolved_config,
)
from roadnet.errors import ConfigError


class Inner(StrictModel):
    depth: int = 2


class Demo(StrictModel):
    name: str = "x"
    scale: float = 1.0
    inner: Inner = Inner()


def test_defaults_file_values_overrides_precedence(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: file\nscale: 2.0\ninner: {depth: 3}\n")
    cfg = load_config(Demo, path, values={"scale": 5.0, "name": None}, overrides=["inner.depth=7"])
    assert cfg == Demo(name="file", scale=5.0, inner=Inner(depth=7))


def test_unknown_key_is_rejected_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("scael: 2.0\n")
    with pytest.raises(ConfigError, match="scael"):
        load_config(Demo, path)


def test_bad_value_and_bad_override() -> None:
    with pytest.raises(ConfigError, match="scale"):
        load_config(Demo, None, overrides=["scale=abc"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["novalue"])


def test_a_bad_value_names_where_it_came_from(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("scale: abc\ninner: {depth: 3}\n")
    with pytest.raises(ConfigError, match=r"^.*c\.yaml: scale: "):
        load_config(Demo, path, overrides=["inner.depth=4"])  # the file's value
    path.write_text("scale: 2.0\n")
    with pytest.raises(ConfigError, match=r"^--set inner\.depth=deep: inner\.depth: "):
        load_config(Demo, path, overrides=["inner.depth=3", "inner.depth=deep"])
    with pytest.raises(ConfigError, match=r"^--set inner=7: inner: "):
        load_config(Demo, path, overrides=["inner=7"])
    with pytest.raises(ConfigError, match=r"^--scale x: scale: "):
        load_config(Demo, path, values={"scale": "x"})


def test_missing_file_and_unknown_bundled_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(Demo, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="no bundled config"):
        load_config(Demo, "no-such-config")


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = Demo(name="a", inner=Inner(depth=4))
    path = write_resolved_config(cfg, tmp_path, extra={"source": "s.tif"})
    data = yaml.safe_load(path.read_text())
    assert Demo.model_validate(data["config"]) == cfg
    assert data["source"] == "s.tif"


def test_bundled_name_wins_over_a_same_named_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "no-such-config").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="no bundled config"):
        load_config(Demo, "no-such-config")
