"""Load, override, validate and record YAML configurations.

Configs are YAML files (bundled ones live in ``configs/`` and are installed as package data)
validated by pydantic models that forbid unknown keys, so a misspelt key is an error rather
than a silent default. The CLI is the only caller that parses files; library functions take
the validated models.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from roadnet.errors import ConfigError

__all__ = [
    "StrictModel",
    "apply_overrides",
    "bundled_config_path",
    "load_config",
    "write_resolved_config",
]

M = TypeVar("M", bound=BaseModel)

RESOLVED_CONFIG_NAME = "roadnet-config.yaml"


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def bundled_config_path(name: str) -> Path:
    """Return the path of a config bundled with the package, e.g. ``"road-widths"``.

    Raises:
        ConfigError: if no bundled config of that name exists.
    """
    stem = name.removesuffix(".yaml")
    resource = importlib.resources.files("roadnet.configs").joinpath(f"{stem}.yaml")
    path = Path(str(resource))
    if not path.is_file():
        available = sorted(
            p.name.removesuffix(".yaml")
            for p in importlib.resources.files("roadnet.configs").iterdir()
            if p.name.endswith(".yaml")
        )
        raise ConfigError(f"no bundled config {name!r}; available: {', '.join(available)}")
    return path


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides to a nested mapping; values are parsed as YAML.

    >>> apply_overrides({"a": {"b": 1}}, ["a.b=2", "c=[1, 2]"])
    {'a': {'b': 2}, 'c': [1, 2]}
    """
    out: dict[str, Any] = {k: v for k, v in data.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML") from exc
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return out


def load_config(
    model: type[M],
    source: str | Path | None = None,
    *,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> M:
    """Validate a config from a YAML file (or bundled name), overrides and explicit values.

    Precedence, lowest first: model defaults, the file, ``values`` (typed CLI options that
    were given), ``overrides`` (``--set key=value``).

    Args:
        model: the pydantic model to validate against.
        source: a YAML path, the name of a bundled config, or None for the defaults.
        overrides: ``dotted.key=value`` strings.
        values: top-level keys to set; ``None`` values are ignored (option not given).

    Raises:
        ConfigError: unreadable file, unknown key, or invalid value — one line.
    """
    data: dict[str, Any] = {}
    label = "defaults"
    if source is not None:
        path = Path(source)
        if not path.suffix and not path.is_file():
            path = bundled_config_path(str(source))
        data = _read_yaml(path)
        label = str(path)
    if values:
        data.update({k: v for k, v in values.items() if v is not None})
    if overrides:
        data = apply_overrides(data, overrides)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(str(p) for p in first["loc"])
        where = ".".join(loc) or "<root>"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        label = _origin(loc, overrides or [], values or {}) or label
        raise ConfigError(f"{label}: {where}: {first['msg']}{more}") from exc


def _origin(loc: tuple[str, ...], overrides: list[str], values: dict[str, Any]) -> str | None:
    """Where a bad value came from when not the file: the last ``--set`` or option naming it."""
    for item in reversed(overrides):  # the last override of a key is the one that counts
        key = tuple(item.partition("=")[0].strip().split("."))
        if loc[: len(key)] == key or key[: len(loc)] == loc:
            return f"--set {item}"
    if loc and values.get(loc[0]) is not None:
        return f"--{loc[0].replace('_', '-')} {values[loc[0]]}"
    return None


def write_resolved_config(
    config: BaseModel, directory: Path, *, extra: dict[str, Any] | None = None
) -> Path:
    """Write the fully resolved config beside an output, for provenance; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / RESOLVED_CONFIG_NAME
    payload: dict[str, Any] = {"config": config.model_dump(mode="json")}
    if extra:
        payload.update(extra)
    path.write_text(yaml.safe_dump(payload, sort_keys=False))
    return path
