"""Appearance styles of ``roadnet synth``: sets of ranges that the seed samples a look from.

A style is a YAML mapping from :class:`~roadnet.pipeline.scenes.synth.SynthConfig` keys
(the appearance keys: :data:`STYLE_KEYS`) to

- a single value: used as is;
- ``[low, high]`` for a numeric key: a value drawn uniformly in the range (whole numbers for
  integer keys, both ends included);
- a list for a text or true/false key: one item drawn.

Each key is drawn from its own generator seeded with the scene seed and the key's name, so
the same seed gives the same look (and, with it, the same bytes), and adding a key to a
style does not change how the others are drawn. Bundled presets live in
``configs/styles/`` (``roadnet synth --style NAME``); any YAML file path works too.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, get_args

import numpy as np
import yaml

from roadnet.errors import ConfigError

__all__ = [
    "STYLE_KEYS",
    "apply_style",
    "bundled_styles",
    "load_style",
    "sample_style",
    "style_path",
]

#: Config keys a style may set.
STYLE_KEYS = (
    "gsd",
    "sun_azimuth_deg",
    "sun_elevation_deg",
    "tree_density",
    "car_density",
    "sidewalk_share",
    "building_share",
    "noise_dn",
    "blur_px",
    "road_palette",
    "markings",
    "cover_hue_deg",
    "cover_saturation",
    "cover_brightness",
    "roof_palette",
    "season",
    "haze",
    "cast_warmth",
    "cast_tint",
    "jpeg_quality",
    "layout_mirror",
    "layout_rotation_deg",
    "layout_scale",
    "ramps_per_km2",
)
_META_KEYS = ("description",)


def _styles_dir() -> Path:
    import importlib.resources

    return Path(str(importlib.resources.files("roadnet.configs").joinpath("styles")))


def bundled_styles() -> list[str]:
    """Names of the presets in ``configs/styles/``."""
    return sorted(p.stem for p in _styles_dir().glob("*.yaml"))


def style_path(name: str | Path) -> Path:
    """The YAML file of a preset name or a path.

    Raises:
        ConfigError: neither a bundled preset nor an existing file.
    """
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"style file not found: {path}")
        return path
    bundled = _styles_dir() / f"{name}.yaml"
    if not bundled.is_file():
        raise ConfigError(f"no style {str(name)!r}; bundled: {', '.join(bundled_styles())}")
    return bundled


def _field_kind(key: str) -> type:
    from roadnet.pipeline.scenes.synth import SynthConfig

    annotation = SynthConfig.model_fields[key].annotation
    if annotation in (bool, int, float):
        return annotation  # type: ignore[return-value]
    return str if get_args(annotation) else object


def load_style(name: str | Path) -> dict[str, Any]:
    """Read and check a style: known keys, ranges ``[low, high]`` with low <= high.

    Returns:
        ``{key: value | [low, high] | [choices]}``, plus ``"name"`` (the preset's file stem).

    Raises:
        ConfigError: missing file, bad YAML, unknown key, or a malformed range — one line.
    """
    path = style_path(name)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a style is a mapping of config keys to values or ranges")
    unknown = sorted(set(data) - set(STYLE_KEYS) - set(_META_KEYS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown style key {unknown[0]!r}; keys: {', '.join(STYLE_KEYS)}"
        )
    style: dict[str, Any] = {"name": path.stem}
    for key, value in data.items():
        if key in _META_KEYS:
            continue
        kind = _field_kind(key)
        if isinstance(value, list):
            if not value:
                raise ConfigError(f"{path}: {key}: empty list")
            if kind in (int, float):
                numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
                if len(value) != 2 or not numeric or value[0] > value[1]:
                    raise ConfigError(f"{path}: {key}: a range is [low, high], got {value}")
        style[key] = value
    return style


def sample_style(style: dict[str, Any], *, seed: int) -> dict[str, Any]:
    """Draw one value per style key for ``seed`` (see the module docstring)."""
    out: dict[str, Any] = {}
    for key in STYLE_KEYS:
        if key not in style:
            continue
        value = style[key]
        if not isinstance(value, list):
            out[key] = value
            continue
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        kind = _field_kind(key)
        if kind is int:
            out[key] = int(rng.integers(int(value[0]), int(value[1]) + 1))
        elif kind is float:
            out[key] = round(float(rng.uniform(float(value[0]), float(value[1]))), 4)
        else:
            out[key] = value[int(rng.integers(len(value)))]
    return out


def apply_style(
    config: Any, style: dict[str, Any], *, keep: set[str] | frozenset[str] = frozenset()
) -> Any:
    """A copy of a ``SynthConfig`` with the style's values drawn for its seed.

    Args:
        config: the validated config (its ``seed`` drives the draw).
        style: from :func:`load_style`.
        keep: keys given explicitly (``--gsd``, ``--set``) that the style must not change.

    Raises:
        ConfigError: a drawn value is out of the config's range.
    """
    from pydantic import ValidationError

    drawn = {k: v for k, v in sample_style(style, seed=config.seed).items() if k not in keep}
    try:
        return type(config).model_validate({**config.model_dump(), **drawn})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"style {style.get('name')}: {where}: {first['msg']}") from exc
