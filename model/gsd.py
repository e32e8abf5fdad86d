"""Predicting a scene at another pixel size than its own.

A model reads roads best near the pixel size it was trained at: on coarser imagery roads
are fewer pixels wide and its edge and centerline heads miss them. Upsampling such a scene
to the model card's ``predict_gsd`` before the model, then resampling the probabilities
back onto the scene's own grid, recovers much of that (README, "Shipped model and held-out
scores"). Outputs always stay on the scene's pixels; only the model sees the other grid.

Far finer imagery fails the other way: at 0.15 m a road is twice as many pixels wide as in
any training crop, and the shipped model finds almost none of it; such a scene is shrunk to
the card's ``predict_gsd.finest`` first.

The setting is ``"auto"`` (resample scenes coarser than the card's ``predict_gsd`` to it, by
at most :data:`MAX_UPSAMPLE` along an axis, and scenes finer than its ``finest`` to that;
leave the scenes between, scenes without a CRS and models without the keys as
they are), ``"native"`` (never resample), or a pixel size in metres (always predict at it).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from roadnet.errors import InputError

__all__ = [
    "AUTO_TOLERANCE",
    "GSD_TIE",
    "MAX_GSD_M",
    "MAX_UPSAMPLE",
    "PredictGsd",
    "card_finest_gsd",
    "card_pixel_sizes",
    "card_predict_gsd",
    "choose_predict_gsd_on_files",
    "ground_gsd",
    "ground_scale",
    "parse_predict_gsd",
    "pick_predict_gsd",
    "predict_grid",
    "resample",
    "resolve_predict_gsd",
    "scaled_shape",
]

PredictGsd = Literal["auto", "native"] | float

#: Mean scores of predict-GSD candidates closer than this count as equal, and the coarser
#: wins: far below the spread of a model's scores between scenes (the 0.25 m of the
#: ``finest`` of the card of ``a0cbb1eb`` beat 0.3 m by 0.00003).
GSD_TIE = 1e-3

#: ``auto`` leaves a scene alone unless it is this much coarser than the card's pixel size.
AUTO_TOLERANCE = 1.05

#: The most model pixels per scene pixel along an axis: 4 x already feeds the model 16 x
#: the pixels (a 640 px block becomes 2,560 px); finer asks are refused, not run out of memory.
MAX_UPSAMPLE = 4.0

#: The largest pixel size a ``predict_gsd`` may name, metres.
MAX_GSD_M = 100.0


def card_pixel_sizes(model_path: str | Path) -> tuple[float | None, float | None]:
    """``(predict_gsd, predict_gsd.finest)`` in metres from the card beside a model.

    Coarser scenes are enlarged to the first under ``auto``, finer ones shrunk to the
    second; None where the card (or the key) is missing.
    """
    from roadnet.model.card import read_card_beside

    card = read_card_beside(model_path)
    entry = None if card is None else card.get("predict_gsd")
    if not isinstance(entry, dict):
        return _metres(entry), None
    finest = entry.get("finest")
    return _metres(entry.get("gsd")), _metres(
        finest.get("gsd") if isinstance(finest, dict) else None
    )


def card_predict_gsd(model_path: str | Path) -> float | None:
    """The ``predict_gsd`` (metres) of the card beside a model, or None without one."""
    return card_pixel_sizes(model_path)[0]


def card_finest_gsd(model_path: str | Path) -> float | None:
    """The ``predict_gsd.finest`` (metres) of the card beside a model, or None without one."""
    return card_pixel_sizes(model_path)[1]


def _metres(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and value > 0 else None


#: A projected CRS whose ground pixel size is within this fraction of its nominal one (UTM
#: and other local projections) keeps the nominal size.
NOMINAL_TOLERANCE = 0.01


def ground_gsd(crs: Any, transform: Any, shape: tuple[int, int]) -> float | None:
    """A scene's pixel size on the ground, metres, at its centre; None when unknown.

    The pixel's sides are measured along the ellipsoid (pyproj ``Geod``), so a scene in
    degrees (EPSG:4326) gets its size in metres, and one in Web Mercator (EPSG:3857), whose
    metres shrink by cos(latitude) on the ground, its true size: a 0.3 m pixel at 60 N is
    0.15 m wide. The size is the geometric mean of the two sides. A projected CRS within
    :data:`NOMINAL_TOLERANCE` of its nominal size (UTM and other local projections) keeps
    the nominal x resolution in metres.

    Args:
        crs: anything pyproj reads (a rasterio ``CRS``, ``"EPSG:32635"``); None: unknown.
        transform: the scene's affine transform (pixel to CRS coordinates).
        shape: ``(height, width)`` in pixels.
    """
    if crs is None:
        return None
    from pyproj import CRS, Transformer
    from pyproj.exceptions import CRSError, ProjError

    try:
        crs = CRS.from_user_input(crs)
    except CRSError:
        return None
    try:
        col, row = shape[1] / 2, shape[0] / 2
        corners = [transform * (col, row), transform * (col + 1, row), transform * (col, row + 1)]
        to_lonlat = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
        lon, lat = to_lonlat.transform([c[0] for c in corners], [c[1] for c in corners])
        geod = crs.get_geod()
        if geod is None:
            raise CRSError("no ellipsoid")
        _, _, across = geod.inv(lon[0], lat[0], lon[1], lat[1])
        _, _, down = geod.inv(lon[0], lat[0], lon[2], lat[2])
        ground = math.sqrt(abs(across * down))
    except (CRSError, ProjError, TypeError, ValueError):
        ground = math.nan
    nominal = None
    if crs.is_projected:
        nominal = abs(float(transform.a)) * float(crs.axis_info[0].unit_conversion_factor)
    if not math.isfinite(ground) or ground <= 0:
        return nominal
    if nominal is not None and abs(ground / nominal - 1.0) < NOMINAL_TOLERANCE:
        return nominal
    return ground


def ground_scale(crs: Any, transform: Any, shape: tuple[int, int]) -> float:
    """Metres on the ground per map unit of a projected scene, at its centre.

    1 for UTM and other local projections in metres; the unit's size for one in feet
    (0.3048 m); about cos(latitude) for Web Mercator, whose map metres are not ground metres.
    Web Mercator is conformal, so the scale is the same in every direction, and over a city
    it changes little (at 60 N by 0.3 % across 10 km north to south).

    Args:
        crs: a projected CRS pyproj reads.
        transform: the scene's affine transform (pixel to CRS coordinates).
        shape: ``(height, width)`` in pixels.

    Raises:
        ValueError: ``crs`` is not projected.
    """
    from pyproj import CRS

    crs = CRS.from_user_input(crs)
    if not crs.is_projected:
        raise ValueError(f"not a projected CRS: {crs}")
    unit = float(crs.axis_info[0].unit_conversion_factor)
    ground = ground_gsd(crs, transform, shape)
    nominal = abs(float(transform.a)) * unit
    if ground is None or ground == nominal:  # a local projection: the unit is ground metres
        return unit
    return ground / math.sqrt(abs(float(transform.determinant)))


def resolve_predict_gsd(
    setting: PredictGsd,
    *,
    scene_gsd: float | None,
    card_gsd: float | None,
    card_finest: float | None = None,
) -> float | None:
    """The pixel size to predict at, or None to predict on the scene's own grid.

    Args:
        setting: ``"auto"``, ``"native"`` or metres (see the module docstring).
        scene_gsd: the scene's pixel size on the ground, metres (:func:`ground_gsd`); None
            without a CRS.
        card_gsd: the model card's ``predict_gsd``; None when it records none.
        card_finest: the model card's ``predict_gsd.finest``; None when it records none.

    Raises:
        InputError: a pixel size was asked for a scene whose pixel size is unknown, or one
            more than :data:`MAX_UPSAMPLE` times finer than the scene's.
    """
    if setting == "native":
        return None
    if setting == "auto":
        if scene_gsd is None:
            return None
        if card_gsd is not None and scene_gsd > card_gsd * AUTO_TOLERANCE:
            return max(card_gsd, scene_gsd / MAX_UPSAMPLE)  # a far coarser scene: 4 x at most
        if card_finest is not None and scene_gsd * AUTO_TOLERANCE < card_finest:
            return card_finest
        return None
    if scene_gsd is None:
        raise InputError(
            f"predict_gsd={setting:g} needs a scene with a CRS (its pixel size in "
            "metres); use predict_gsd=native"
        )
    if scene_gsd / float(setting) > MAX_UPSAMPLE:
        raise InputError(
            f"predict_gsd={setting:g} m is {scene_gsd / float(setting):.1f} x finer than the "
            f"scene's {scene_gsd:g} m; at most {MAX_UPSAMPLE:g} x (predict_gsd >= "
            f"{scene_gsd / MAX_UPSAMPLE:g})"
        )
    return None if abs(scene_gsd / float(setting) - 1.0) < 1e-6 else float(setting)


def predict_grid(
    setting: PredictGsd,
    *,
    scene_gsd: float | None,
    card_gsd: float | None,
    card_finest: float | None = None,
) -> tuple[float | None, float]:
    """:func:`resolve_predict_gsd` and the factor it implies: ``(metres or None, factor)``.

    The factor is model pixels per scene pixel, 1.0 when the scene's own grid is kept
    (above 1 the scene is enlarged, below 1 shrunk).
    """
    target = resolve_predict_gsd(
        setting, scene_gsd=scene_gsd, card_gsd=card_gsd, card_finest=card_finest
    )
    if target is None or scene_gsd is None:
        return None, 1.0
    return target, scene_gsd / target


def scaled_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    """``shape`` times ``factor``, rounded, at least 1 px."""
    return max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor))


def resample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resample ``(y, x, band)`` float32 to ``shape``: bilinear up, area-averaged down.

    Pixel areas stay aligned (the grid's outer edges map onto each other; a pixel's centre
    sits at ``(i + 0.5) * step``). Enlarging interpolates linearly between the nearest two
    pixels (the border pixel repeated beyond the edge, as a mirror would give); shrinking
    averages the pixels each output pixel covers, weighted by the covered fraction, so
    means are kept and nothing aliases. Values keep their range. Each axis is one sparse
    matrix product (a 640 px block of 3 bands to 914 px ~21 ms, and back ~9 ms).
    """
    if image.shape[:2] == tuple(shape):
        return image
    h, w, bands = image.shape
    out_h, out_w = shape
    rows = _axis_matrix(h, out_h) @ image.reshape(h, w * bands)  # (out_h, w * bands)
    across = np.moveaxis(rows.reshape(out_h, w, bands), 1, 0).reshape(w, out_h * bands)
    cols = _axis_matrix(w, out_w) @ across  # (out_w, out_h * bands)
    result = np.moveaxis(cols.reshape(out_w, out_h, bands), 0, 1)
    return np.ascontiguousarray(result, dtype=np.float32)


@functools.lru_cache(maxsize=32)
def _axis_matrix(n_in: int, n_out: int) -> Any:
    """The ``(n_out, n_in)`` sparse matrix resampling one axis (see :func:`resample`)."""
    from scipy import sparse

    step = n_in / n_out  # input px per output px
    if n_out >= n_in:  # linear interpolation at the output pixel centres
        centre = (np.arange(n_out) + 0.5) * step - 0.5
        left = np.floor(centre)
        frac = centre - left
        lo = np.clip(left, 0, n_in - 1).astype(np.int64)
        hi = np.clip(left + 1, 0, n_in - 1).astype(np.int64)
        out_rows = np.repeat(np.arange(n_out), 2)
        in_cols = np.stack([lo, hi], axis=1).ravel()
        weights = np.stack([1.0 - frac, frac], axis=1).ravel()
    else:  # box filter: the covered fraction of every input pixel
        start = np.arange(n_out) * step
        first = np.floor(start).astype(np.int64)
        span = int(np.ceil(step)) + 1
        in_idx = first[:, None] + np.arange(span)[None, :]
        lo = np.maximum(in_idx, start[:, None])
        hi = np.minimum(in_idx + 1, (start + step)[:, None])
        cover = np.clip(hi - lo, 0.0, None) / step
        keep = (cover > 0) & (in_idx < n_in)
        out_rows = np.broadcast_to(np.arange(n_out)[:, None], in_idx.shape)[keep]
        in_cols = in_idx[keep]
        weights = cover[keep]
    matrix = sparse.csr_matrix(
        (weights.astype(np.float32), (out_rows, in_cols)), shape=(n_out, n_in)
    )
    return matrix


def pick_predict_gsd(tried: Sequence[Mapping[str, Any]], *, tie: float = GSD_TIE) -> Any:
    """The first of ``tried`` (coarsest grid first) whose ``mean`` is within ``tie`` of the best.

    Args:
        tried: candidate entries with a ``"mean"`` score, the coarsest grid first.
        tie: scores closer than this to the best count as equal to it.
    """
    top = max(float(t["mean"]) for t in tried)
    return next(t for t in tried if float(t["mean"]) >= top - tie)


def choose_predict_gsd_on_files(
    scenes: list[tuple[Path, Path]],
    *,
    card_path: Path,
    candidates: list[float],
    model_path: Path | None = None,
    rho: float = 2.0,
    tile: int = 512,
    grid: Sequence[float] = (),
    overwrite: bool = False,
) -> dict[str, Any]:
    """Choose a pixel size to predict at, and its cut-offs, on labelled scenes; write both.

    The scenes are validation scenes, never held-out ones, all coarser than every candidate
    (then the choice is the card's ``predict_gsd``, where coarser scenes are enlarged to) or
    all finer (then it is ``predict_gsd.finest``, where finer scenes are shrunk to). Each
    scene is predicted at its own pixel size and at every candidate, and scored over a grid
    of cuts. Per candidate and task the cut with the best mean score over the scenes is its
    cut-off (surface IoU, edge and centerline relaxed F1; ties as in
    :func:`~roadnet.model.cutoffs.choose_cutoffs`), and the candidate's score is the mean of
    those three: resampled probabilities are smoother than native ones, so the line heads
    of a resampled scene want other cuts than the card's, and a candidate is judged at its
    own. The best wins, and of those within :data:`GSD_TIE` of it the coarser, which costs
    less (:func:`pick_predict_gsd`); when predicting each scene
    at its own pixel size wins, the coarsest (finest) scene's pixel size is recorded. The
    entry is ``{"gsd": metres, "cutoffs": {task: cut}, "chosen_on": {scenes, rho, grid,
    score, tried: [...]}}`` (each tried entry also keeps the scores at the card's
    ``cutoffs``); the other side's entry in the card is kept. ``roadnet run`` writes the
    entry's ``cutoffs`` into a result it resampled. Returns the entry with ``"key"``: where
    it went, ``predict_gsd.gsd`` or ``predict_gsd.finest``.

    Args:
        scenes: ``(scene, labels_dir)`` pairs, all coarser or all finer than the candidates.
        card_path: the model card JSON of ``model_path``.
        candidates: pixel sizes to try, metres.
        model_path: a ``.keras`` model; None for the shipped default model.
        rho: tolerance of the relaxed scores, pixels.
        tile: prediction tile side, a multiple of 16.
        grid: cuts to try (default 0.2, 0.25, ..., 0.8; 0.5 always added).
        overwrite: replace the entry the card already has on that side.

    Raises:
        InputError: a scene has no CRS, or the candidates are neither all below
            nor all above every scene's pixel size.
        ModelError: the card describes another model file.
        OutputExistsError: the card already records that side without ``overwrite``.
    """
    from roadnet.model.card import read_model_card, write_json_atomic
    from roadnet.model.cutoffs import (
        CUTOFF_SCORES,
        DEFAULT_GRID,
        check_card,
        choose_cutoffs,
        cutoff_grid,
    )
    from roadnet.model.data import read_labelled_scene
    from roadnet.model.evaluate import evaluate_scene
    from roadnet.model.io import default_model_path, load_model

    path = Path(model_path) if model_path is not None else default_model_path()
    check_card(card_path, path, overwrite=True)  # the model's card; the side comes next
    if not scenes or not candidates:
        raise InputError("choosing a predict GSD needs a scene and candidate pixel sizes")
    cuts = cutoff_grid(grid or DEFAULT_GRID)
    data = [read_labelled_scene(scene, labels) for scene, labels in scenes]
    gsds: list[float] = []
    for (scene, _), one in zip(scenes, data, strict=True):
        if one.gsd is None:
            raise InputError(f"{scene} has no CRS: its pixel size is unknown")
        gsds.append(one.gsd)
    if all(0.0 < c < min(gsds) for c in candidates):
        side = "gsd"  # coarse scenes, enlarged to the choice
    elif all(c > max(gsds) for c in candidates):
        side = "finest"  # fine scenes, shrunk to the choice
    else:
        raise InputError(
            f"predict GSD candidates {candidates} must all lie below {min(gsds):g} m (for "
            f"coarser scenes) or all above {max(gsds):g} m (for finer ones), the pixel sizes "
            "of the scenes"
        )
    check_card(card_path, path, overwrite=overwrite, key=f"predict_gsd.{side}")
    card_cuts = read_model_card(card_path).get("cutoffs") or 0.5
    model = load_model(path)
    tried: list[dict[str, Any]] = []
    # coarsest first: the first of equal scores wins, and a coarser grid costs less
    order = sorted(set(candidates), reverse=True)
    for target in [None, *order] if side == "gsd" else [*order, None]:
        per_scene: list[dict[str, Any]] = []
        sweeps: list[dict[str, list[dict[str, float]]]] = []
        for (scene, _), one, gsd in zip(scenes, data, gsds, strict=True):
            factor = 1.0 if target is None else gsd / target
            result = evaluate_scene(
                model, one, threshold=card_cuts, rho=rho, tile=tile, sweep=cuts, resample=factor
            )
            sweeps.append(result.pop("sweep"))
            scores = {task: result[task][key] for task, key in CUTOFF_SCORES.items()}
            per_scene.append({"scene": str(scene), "scene_gsd": gsd, "scores": scores})
        choice = choose_cutoffs(_mean_sweep(sweeps))
        at_cutoffs = {t: s["at_cutoff"] for t, s in choice["scores"].items()}
        tried.append({
            "gsd": "native" if target is None else target,
            "mean": float(np.mean(list(at_cutoffs.values()))),
            "cutoffs": choice["cutoffs"],
            "at_cutoffs": at_cutoffs,
            "mean_at_card_cutoffs": float(np.mean([list(s["scores"].values()) for s in per_scene])),
            "scenes": per_scene,
        })  # fmt: skip
    best = pick_predict_gsd(tried)
    own = max(gsds) if side == "gsd" else min(gsds)
    entry = {
        "gsd": own if best["gsd"] == "native" else best["gsd"],
        "cutoffs": best["cutoffs"],
        "chosen_on": {
            "scenes": [{"scene": str(s), "labels": str(lab)} for s, lab in scenes],
            "rho": rho,
            "grid": cuts,
            "score": "mean of "
            + ", ".join(f"{t} {k}" for t, k in CUTOFF_SCORES.items())
            + ", each the mean over scenes at the candidate's best cut of the grid",
            "tried": tried,
        },
    }
    check_card(card_path, path, overwrite=overwrite, key=f"predict_gsd.{side}")
    card = read_model_card(card_path)
    old = card.get("predict_gsd")
    old = dict(old) if isinstance(old, dict) else {}
    if side == "gsd":
        card["predict_gsd"] = {**entry, **({"finest": old["finest"]} if "finest" in old else {})}
    else:
        card["predict_gsd"] = {**old, "finest": entry}
    write_json_atomic(card_path, card)
    return {"key": f"predict_gsd.{side}", **entry}


def _mean_sweep(
    sweeps: Sequence[Mapping[str, Sequence[Mapping[str, float]]]],
) -> dict[str, list[dict[str, float]]]:
    """Per task and cut, the mean over scenes of each score (the sweeps share their cuts)."""
    mean: dict[str, list[dict[str, float]]] = {}
    for task in sweeps[0]:
        rows = zip(*(sweep[task] for sweep in sweeps), strict=True)
        mean[task] = [
            {key: float(np.mean([row[key] for row in same])) for key in same[0]} for same in rows
        ]
    return mean


def parse_predict_gsd(text: str) -> PredictGsd:
    """``"auto"``, ``"native"`` or metres from a command-line value.

    Raises:
        InputError: anything else, or a pixel size not in (0, :data:`MAX_GSD_M`] m.
    """
    word = text.strip().lower()
    if word in ("auto", "native"):
        return word  # type: ignore[return-value]
    try:
        value = float(word)
    except ValueError:
        raise InputError(f"--predict-gsd {text!r}: use auto, native or metres") from None
    if not 0.0 < value <= MAX_GSD_M:
        raise InputError(f"--predict-gsd {text!r}: a pixel size in metres, in (0, {MAX_GSD_M:g}]")
    return value
