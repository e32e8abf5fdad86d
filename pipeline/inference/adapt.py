"""``roadnet adapt``: a copy of a model whose normalization is fitted to one scene's imagery.

Random tiles of the scene (seeded; tiles with nodata or a transparent alpha are skipped)
are fed through the model to re-estimate its batch-normalization statistics
(:func:`roadnet.model.adapt.adapt_batchnorm`); no label is read and no learned weight
changes. When the model's card records the training imagery's band statistics
(``input_statistics``), a scene to be adapted has its colours matched to them first
(:func:`roadnet.model.adapt.match_input`). The adapted model is written with a card beside
it (``NAME.json``): the source card's cut-offs and training facts, an ``adapted`` block
saying on what and how, and no held-out evaluations (those were of the source model).
``roadnet run SCENE --model adapted.keras`` then uses it like any other model.

It pays off on imagery far from the training looks and costs on imagery close to them
(README, "Adapting the model to a scene"), so a run adapts by default only the scenes its
model card's gate calls foreign.

``roadnet run --adapt`` does the same on a worker before predicting
(:func:`adapt_for_run`): the adapted model and its card go into the result store, so every
worker reads the one file, a resumed run reuses it, and the result keeps the model that made
it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roadnet.errors import InputError, ModelError
from roadnet.model.card import read_model_card, write_json_atomic
from roadnet.model.gsd import PredictGsd, card_pixel_sizes, predict_grid
from roadnet.model.gsd import resample as resample_image
from roadnet.model.io import content_hash, default_model_path, load_model
from roadnet.outputs import upload_files
from roadnet.paths import filesystem, is_url
from roadnet.pipeline.inference.blend import to_model_input
from roadnet.pipeline.inference.open import Scene, open_scene
from roadnet.pipeline.inference.runner import fetch_model
from roadnet.pipeline.preflight import check_model_output
from roadnet.tasks import INPUT_MULTIPLE

__all__ = [
    "ADAPTED_CARD",
    "AdaptSummary",
    "RunFit",
    "adapt_for_run",
    "adapt_to_scene",
    "sample_tiles",
]

log = logging.getLogger(__name__)

#: The card of a run's adapted model, at the root of its result store. The model beside it
#: is named by its content hash (``roadnet-adapted-HASH.keras``): a model read from a URL is
#: cached by its URL, and an older run to the same store must not be served from there.
ADAPTED_CARD = "roadnet-adapted.json"

#: The fewest tiles a fit draws from a small scene: one forward batch.
MIN_TILES = 4

#: How many times over a fit's tiles cover a scene smaller than the tiles asked for
#: (:func:`sample_tiles`): 2 draws reach about 86 % of its pixels.
COVERAGE = 2.0


@dataclass(frozen=True)
class AdaptSummary:
    """What :func:`adapt_to_scene` wrote."""

    out: Path
    content_hash: str
    tiles: int
    tile_px: int
    layers: int
    seconds: float
    shift: float = 0.0
    band_mean: tuple[float, ...] = ()
    band_std: tuple[float, ...] = ()
    matched: bool = False

    def line(self) -> str:
        """One line for the command."""
        matched = ", colours matched to the training imagery first" if self.matched else ""
        return (
            f"{self.out}: batch-normalization statistics of {self.layers} layers fitted on "
            f"{self.tiles} tiles of {self.tile_px} px ({self.content_hash}){matched}, shift "
            f"{self.shift:.3f} from the training ones, {self.seconds:.1f} s"
        )


def _valid(block: np.ndarray, scene: Scene) -> bool:
    """Whether a ``(band, y, x)`` block has no nodata and no transparent pixel."""
    image = block[:-1] if scene.alpha else block
    if scene.alpha and (block[-1] == 0).any():
        return False
    if image.dtype.kind == "f" and np.isnan(image).any():
        return False
    return not (scene.nodata is not None and (image == scene.nodata).any())


def sample_tiles(
    scene: Scene,
    *,
    tiles: int,
    tile_px: int,
    seed: int,
    resample: float = 1.0,
    coverage: float | None = None,
) -> np.ndarray:
    """Random whole tiles of the scene on the model's input scale.

    Args:
        scene: the opened scene.
        tiles: how many tiles (at most, with ``coverage``).
        tile_px: their side as the model sees them, a multiple of the model's input
            multiple; smaller scenes give tiles of the largest such side that fits.
        seed: where the tiles are drawn.
        resample: model pixels per scene pixel: each tile covers ``side / resample`` scene
            px, resampled to ``side`` as ``roadnet run`` does (:mod:`roadnet.model.gsd`).
        coverage: draw no more tiles than cover the scene this many times over (and at
            least :data:`MIN_TILES`): more draws from a small scene repeat its pixels and
            cost a forward pass each. None: ``tiles`` whatever the scene's size.

    Returns:
        ``(n, side, side, 3)`` float32 on the 0–255 scale, ``n <= tiles`` (tiles with
        nodata are skipped; up to ``20 · tiles`` draws).

    Raises:
        InputError: the scene is smaller than one input multiple, or no draw was free of
            nodata.
    """
    height, width = scene.shape
    fits = int(min(height, width) * resample)
    side = min(tile_px, fits) // INPUT_MULTIPLE * INPUT_MULTIPLE
    if side == 0:
        raise InputError(f"{scene.source}: {height} x {width} px is too small to adapt on")
    span = min(max(1, round(side / resample)), height, width)  # scene px of one tile
    if coverage is not None:
        tiles = min(tiles, max(MIN_TILES, math.ceil(coverage * height * width / span**2)))
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for _ in range(20 * tiles):
        if len(out) == tiles:
            break
        row = int(rng.integers(0, height - span + 1))
        col = int(rng.integers(0, width - span + 1))
        block = np.asarray(scene.data.data[:, row : row + span, col : col + span].compute())
        if _valid(block, scene):
            x = to_model_input(block, scale=scene.scale, alpha=scene.alpha)
            out.append(resample_image(x, (side, side)))
    if not out:
        raise InputError(f"{scene.source}: no {side} px tile of the scene is free of nodata")
    return np.stack(out)


def adapt_to_scene(
    scene: str,
    out: str | Path,
    *,
    model: str | Path | None = None,
    tiles: int = 64,
    tile_px: int = 512,
    strength: float = 1.0,
    seed: int = 0,
    bands: list[int] | None = None,
    input_max: float | None = None,
    nodata: float | None = None,
    overwrite: bool = False,
    predict_gsd: PredictGsd = "auto",
    coverage: float | None = COVERAGE,
    match: bool = True,
    min_shift: float = 0.0,
) -> AdaptSummary:
    """Write a copy of ``model`` with batch-normalization statistics fitted to ``scene``.

    Args:
        scene: the scene raster (local path, GDAL path or fsspec URL).
        out: the adapted ``.keras`` file; its card goes beside it (``.json``).
        model: the source ``.keras`` model (default: the shipped one).
        tiles: tiles drawn from the scene, at most: a scene smaller than them gets
            enough to cover it ``coverage`` times over (:func:`sample_tiles`).
        tile_px: their side in px.
        strength: weight of the scene's statistics against the training ones, in [0, 1].
        seed: where the tiles are drawn.
        bands: 1-based bands for R, G, B, as in ``roadnet run``.
        input_max: the scene value mapped to 255.
        nodata: the nodata value overriding the file's.
        overwrite: replace an existing ``out`` and card.
        predict_gsd: the pixel size the tiles are fed at, as ``roadnet run --predict-gsd``
            (the source card's ``predict_gsd`` under ``auto``). The adapted card records it
            as its own ``predict_gsd``, so ``roadnet run`` under ``auto`` feeds the scene at
            the pixel size the statistics were fitted at.
        coverage: see ``tiles``; None draws ``tiles`` from any scene.
        match: when the source card records the training imagery's ``input_statistics``
            and the scene's shift is at least ``min_shift``, match the scene's band means
            and spreads to them (:func:`~roadnet.model.adapt.match_input`) and fit the
            statistics again on top. The shift is always measured without it, so a card's
            gate means the same either way.
        min_shift: see ``match`` (a run passes its card's gate: a scene it will not adapt
            is not fitted twice).

    Raises:
        InputError: bad scene or options; OutputExistsError: ``out`` exists;
        ModelError: the source model cannot be loaded.
    """
    import time

    from roadnet.model.adapt import (
        adapt_batchnorm,
        band_statistics,
        batchnorm_statistics,
        match_input,
        restore_batchnorm,
        statistics_shift,
    )

    out = Path(out)
    if tiles < 1:
        raise InputError(f"--tiles must be >= 1, got {tiles}")
    if tile_px < INPUT_MULTIPLE:
        raise InputError(f"--tile-px must be >= {INPUT_MULTIPLE}, got {tile_px}")
    if not 0.0 <= strength <= 1.0:
        raise InputError(f"--strength must be in [0, 1], got {strength}")
    check_model_output(out, overwrite=overwrite)
    card_out = out.with_suffix(".json")
    source = Path(model) if model is not None else default_model_path()
    net = load_model(source)
    started = time.perf_counter()
    opened = open_scene(scene, chunk=tile_px, bands=bands, input_max=input_max, nodata=nodata)
    card_gsd, finest = card_pixel_sizes(source)
    target, factor = predict_grid(
        predict_gsd, scene_gsd=opened.gsd, card_gsd=card_gsd, card_finest=finest
    )
    images = sample_tiles(
        opened, tiles=tiles, tile_px=tile_px, seed=seed, resample=factor, coverage=coverage
    )
    source_card = source.with_suffix(".json")
    card = read_model_card(source_card) if source_card.is_file() else {}
    trained = batchnorm_statistics(net)
    layers = adapt_batchnorm(net, images, strength=strength)
    shift = statistics_shift(trained, batchnorm_statistics(net))
    band_mean, band_std = band_statistics(images)
    reference = _input_statistics(card)
    matched: dict[str, Any] | None = None
    if match and reference is not None and shift >= min_shift:
        restore_batchnorm(net, trained)
        try:
            norm_mean, norm_std = match_input(net, scene=(band_mean, band_std), training=reference)
        except ValueError as exc:
            raise ModelError(f"{source}: cannot match the scene's colours: {exc}") from None
        adapt_batchnorm(net, images, strength=strength)
        matched = {
            "scene_mean": _rounded(band_mean),
            "scene_std": _rounded(band_std),
            "normalization_mean": _rounded(norm_mean),
            "normalization_std": _rounded(norm_std),
        }
    tmp = out.with_name(f".{out.stem}.partial-{os.getpid()}.keras")
    try:
        net.save(tmp)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    source_gsd = card.get("predict_gsd")
    card.get("metrics", {}).pop("evaluations", None)  # they scored the source model
    digest = content_hash(out)
    card |= {
        "model": out.name,
        "content_hash": digest,
        "size_bytes": out.stat().st_size,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "adapted": {
            "from": {"model": str(source), "content_hash": content_hash(source)},
            "scene": str(scene),
            "tiles": len(images),
            "tile_px": int(images.shape[1]),
            "strength": float(strength),
            "seed": int(seed),
            "batchnorm_layers": layers,
            "shift": round(shift, 4),
            "input_matched": matched if matched is not None else False,
            "predict_gsd": "native" if target is None else target,
            "note": "cut-offs are the source model's, chosen on its validation render",
        },
    }
    fitted_at = target if target is not None else opened.gsd
    if fitted_at is not None:
        card["predict_gsd"] = _fitted_entry(fitted_at, factor, source_gsd)
    write_json_atomic(card_out, card)
    seconds = time.perf_counter() - started
    log.info("adapted %s on %d tiles of %s", source.name, len(images), scene)
    return AdaptSummary(
        out=out,
        content_hash=digest,
        tiles=len(images),
        tile_px=int(images.shape[1]),
        layers=layers,
        seconds=seconds,
        shift=shift,
        band_mean=tuple(band_mean),
        band_std=tuple(band_std),
        matched=matched is not None,
    )


def _rounded(values: list[float]) -> list[float]:
    return [round(float(v), 3) for v in values]


def _input_statistics(card: dict[str, Any]) -> tuple[list[float], list[float]] | None:
    """The training imagery's band ``(mean, std)`` a card records, if it does."""
    stats = card.get("input_statistics")
    if not isinstance(stats, dict):
        return None
    mean, std = stats.get("mean"), stats.get("std")
    if not isinstance(mean, list) or not isinstance(std, list):
        return None
    return [float(m) for m in mean], [float(s) for s in std]


def _fitted_entry(fitted_at: float, factor: float, source: object) -> dict[str, Any]:
    """The adapted card's ``predict_gsd``, so that ``auto`` predicts at the fitted pixel size.

    Enlarged (``factor > 1``): ``gsd`` is that size; shrunk (``factor < 1``): ``finest`` is
    too, so the scene is shrunk again; native: ``gsd`` is the scene's own, so nothing is
    resampled. The source's cut-offs for that grid come along when they were chosen at the
    same pixel size.
    """
    chosen_on = "the adapted scene's tiles"
    entry: dict[str, Any] = {"gsd": fitted_at, "chosen_on": chosen_on}
    side: dict[str, Any] = entry
    theirs: Any = source if isinstance(source, dict) else {}
    if factor < 1.0:
        side = entry["finest"] = {"gsd": fitted_at, "chosen_on": chosen_on}
        theirs = theirs.get("finest") if isinstance(theirs.get("finest"), dict) else {}
    same = abs(float(theirs.get("gsd") or 0.0) - fitted_at) < 1e-9
    if factor != 1.0 and same and isinstance(theirs.get("cutoffs"), dict):
        side["cutoffs"] = theirs["cutoffs"]
    return entry


def _join(store: str, name: str) -> str:
    return f"{store.rstrip('/')}/{name}" if is_url(store) else str(Path(store) / name)


@dataclass(frozen=True)
class RunFit:
    """What :func:`adapt_for_run` decided for a run.

    Attributes:
        model: the model to predict with: the adapted one in the store, or the source when
            the scene was too close to the training looks to adapt (``applied`` false).
        digest: that model's content hash.
        shift: the scene's :func:`~roadnet.model.adapt.statistics_shift` (None: no tile of
            the scene could be fitted on).
        applied: whether the run predicts with the adapted model.
        reused: whether a killed run's fit (or decision) was found in the store.
    """

    model: str
    digest: str
    shift: float | None
    applied: bool
    reused: bool = False


def _read_card(ref: str) -> dict[str, Any] | None:
    try:
        if is_url(ref):
            fs, key = filesystem(ref)
            text = fs.cat_file(key).decode()
        else:
            text = Path(ref).read_text()
        card = json.loads(text)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return card if isinstance(card, dict) else None


def _stored_fit(store: str, model: str, source_digest: str) -> RunFit | None:
    """The fit (or the decision not to adapt) a killed run left in ``store``, if whole."""
    card = _read_card(_join(store, ADAPTED_CARD))
    if card is None:
        return None
    adapted = card.get("adapted", {})
    if adapted.get("from", {}).get("content_hash") != source_digest:
        return None
    shift = adapted.get("shift")
    shift = None if shift is None else float(shift)
    if adapted.get("applied") is False:
        return RunFit(model, source_digest, shift, applied=False, reused=True)
    ref = _join(store, str(card.get("model")))
    try:
        local = fetch_model(ref)
    except ModelError:  # an unreadable model: adapt anew
        return None
    if not local.is_file() or content_hash(local) != card.get("content_hash"):
        return None
    return RunFit(ref, str(card["content_hash"]), shift, applied=True, reused=True)


def adapt_for_run(
    scene: str,
    model: str,
    store: str,
    *,
    source_digest: str,
    min_shift: float = 0.0,
    strict: bool = True,
    tiles: int = 64,
    bands: list[int] | None = None,
    input_max: float | None = None,
    nodata: float | None = None,
    predict_gsd: PredictGsd = "auto",
    match: bool = True,
) -> RunFit:
    """On a worker: the model of ``roadnet run --adapt``, fitted to ``scene`` once per run.

    The adapted model is written into the run's (staging) store as
    ``roadnet-adapted-HASH.keras`` and its card as :data:`ADAPTED_CARD`, the card last: a
    card names a whole model. A scene whose statistics shift less than ``min_shift`` keeps
    the source model, and the card alone records that (``adapted.applied: false``). A
    resumed run finds the card there and follows it, so its chunks come from the same model
    as the first ones.

    Args:
        scene: the scene as the workers read it.
        model: the source model's path or URL.
        store: the run's store (local directory or URL) the workers write into.
        source_digest: the source model's content hash (a leftover of another is ignored).
        min_shift: the least :func:`~roadnet.model.adapt.statistics_shift` to adapt at.
        strict: raise when no tile of the scene is free of nodata; else (a run adapting
            because the card asks) warn, record the decision and keep the source model.
        tiles: tiles of the scene drawn to fit the statistics.
        bands: 1-based bands for R, G, B, as the run reads the scene.
        input_max: the scene value mapped to 255, as the run.
        nodata: the nodata value overriding the file's, as the run.
        predict_gsd: the pixel size the run feeds the model (:func:`adapt_to_scene`).
        match: match the scene's colours to the training imagery's before the fit, when
            the card records them (:func:`adapt_to_scene`).
    """
    found = _stored_fit(store, model, source_digest)
    if found is not None:
        return found
    with tempfile.TemporaryDirectory(prefix="roadnet-adapt-") as tmp:
        local = Path(tmp) / "adapted.keras"
        try:
            summary = adapt_to_scene(
                scene,
                local,
                model=fetch_model(model),
                tiles=tiles,
                bands=bands,
                input_max=input_max,
                nodata=nodata,
                predict_gsd=predict_gsd,
                match=match,
                min_shift=min_shift,
            )
        except InputError as exc:
            if strict:
                raise
            log.warning(
                "cannot fit the model to %s (%s): predicting with it as trained", scene, exc
            )
            _unfitted_card(store, model, source_digest, scene=scene, reason=str(exc))
            return RunFit(model, source_digest, None, applied=False)
        applied = summary.shift >= min_shift
        name = f"roadnet-adapted-{summary.content_hash}.keras"
        card_path = local.with_suffix(".json")
        card = read_model_card(card_path)
        card["model"] = name if applied else None
        card["adapted"] |= {
            "from": {"model": model, "content_hash": source_digest},
            "seconds": round(summary.seconds, 1),
            "min_shift": min_shift,
            "applied": applied,
        }
        write_json_atomic(card_path, card)
        ref = _join(store, name)
        _put([(local, ref)] if applied else [], card_path, store)
    log.info("%s", summary.line().replace(str(local), ref if applied else "(not applied)"))
    if not applied:
        return RunFit(model, source_digest, summary.shift, applied=False)
    return RunFit(ref, summary.content_hash, summary.shift, applied=True)


def _unfitted_card(store: str, model: str, digest: str, *, scene: str, reason: str) -> None:
    """Record in the store that the run could not fit the model, for a resume to follow."""
    with tempfile.TemporaryDirectory(prefix="roadnet-adapt-") as tmp:
        card_path = write_json_atomic(
            Path(tmp) / ADAPTED_CARD,
            {
                "model": None,
                "adapted": {
                    "from": {"model": model, "content_hash": digest},
                    "scene": scene,
                    "shift": None,
                    "applied": False,
                    "reason": reason,
                },
            },
        )
        _put([], card_path, store)


def _put(files: list[tuple[Path, str]], card: Path, store: str) -> None:
    """Copy finished local files into the store, then the card: a card names whole files.

    On an object store each is one PUT; on a directory each goes in under a hidden name and
    is renamed into place.
    """
    files = [*files, (card, _join(store, ADAPTED_CARD))]
    if is_url(store):
        upload_files(files)
        return
    for src, dst in files:
        part = Path(dst).with_name(f".{Path(dst).name}.partial")
        shutil.copyfile(src, part)
        part.replace(dst)
