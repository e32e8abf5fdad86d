"""``roadnet run``: a scene in, blended surface / edge / centerline probabilities out.

:func:`run` returns the lazy Dataset for callers who drive Dask themselves;
:func:`run_to_zarr` computes it on a Dask cluster into a resumable Zarr store and returns a
:class:`RunSummary`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dask.array as da
import numpy as np
import xarray as xr
from pydantic import Field, field_validator, model_validator

from roadnet import __version__
from roadnet.config import StrictModel
from roadnet.errors import ConfigError, InputError, ModelError
from roadnet.leases import hold_output
from roadnet.model.card import card_adapt_rule, card_cutoffs
from roadnet.model.gsd import MAX_GSD_M, card_pixel_sizes, predict_grid
from roadnet.model.io import content_hash, default_model_path
from roadnet.paths import Location, is_url, location
from roadnet.pipeline.inference.batches import run_stencil
from roadnet.pipeline.inference.blend import CODE_MAX, FILL_VALUE, SCALE_FACTOR
from roadnet.pipeline.inference.graph import blend_plan, model_shape_for, predict_array
from roadnet.pipeline.inference.open import (
    MODEL_BANDS,
    Scene,
    dark_scene_warning,
    open_scene,
    probe_scene,
    read_failure,
)
from roadnet.pipeline.inference.runner import ModelRunner, fetch_model, validate_model
from roadnet.pipeline.inference.store import (
    JOB_ATTR,
    create_store,
    done_chunks,
    finish_store,
    prepare_store,
    road_chunks,
    write_chunk,
)
from roadnet.tasks import TASKS

if TYPE_CHECKING:
    from distributed import Client, Security

#: Result attribute holding the model card's per-task cut-offs (JSON ``{task: p}``).
CUTOFFS_ATTR = "roadnet:cutoffs"
#: Result attributes of an adapted run: the adapted model's file in the store, its hash.
ADAPTED_MODEL_ATTR = "roadnet:adapted_model"
ADAPTED_SHA_ATTR = "roadnet:adapted_sha256"
#: Result attribute of a run that fitted the model: the scene's statistics shift.
ADAPT_SHIFT_ATTR = "roadnet:adapt_shift"
#: Result attribute: the pixel size the model predicted at (``"native"`` or metres).
PREDICT_GSD_ATTR = "roadnet:predict_gsd"
#: Result attribute: how many chunks hold road above the surface cut-off (0 is warned).
ROAD_CHUNKS_ATTR = "roadnet:road_chunks"


def result_cutoffs(attrs: Mapping[str, Any]) -> dict[str, float]:
    """The model card's per-task cut-offs a result records (``{}`` when it records none)."""
    raw = attrs.get(CUTOFFS_ATTR)
    if not raw:
        return {}
    return {
        task: float(p)
        for task, p in (json.loads(raw) if isinstance(raw, str) else dict(raw)).items()
    }


__all__ = [
    "ADAPTED_MODEL_ATTR",
    "ADAPTED_SHA_ATTR",
    "ADAPT_SHIFT_ATTR",
    "CUTOFFS_ATTR",
    "PREDICT_GSD_ATTR",
    "ROAD_CHUNKS_ATTR",
    "Prediction",
    "RunConfig",
    "RunSummary",
    "predict_scene",
    "prepare_worker",
    "resolve_adapt",
    "result_cutoffs",
    "run",
    "run_to_zarr",
]

log = logging.getLogger(__name__)


class RunConfig(StrictModel):
    """Options of ``roadnet run`` (defaults in ``configs/run.yaml``)."""

    chunk: int = Field(default=512, ge=32, description="core chunk size in px (= Zarr chunks)")
    overlap: int = Field(default=64, ge=0, description="context per side in px, blended")
    bands: list[int] | None = Field(default=None, description="1-based bands for R, G, B")
    input_max: float | None = Field(default=None, gt=0, description="scene value mapped to 255")
    nodata: float | None = Field(default=None, description="nodata value overriding the file's")
    mixed_precision: bool = Field(
        default=False, description="float16 on GPUs, bfloat16 on CPUs with AMX / AVX-512 BF16"
    )
    predict_gsd: Literal["auto", "native"] | float = Field(
        default="auto",
        description="pixel size the model sees: auto (the card's predict_gsd for coarser "
        "scenes, predict_gsd.finest for finer ones), native, or metres",
    )
    tta: int = Field(
        default=1,
        description="views of each block averaged (1, 2, 4 or 8 flips and turns; "
        "roadnet.model.tta): tta x the model time",
    )
    adapt: Literal["auto"] | bool = Field(
        default="auto",
        description="fit the model's batch-normalization statistics to the scene first "
        "(roadnet adapt) and keep the adapted model in the result store; auto: when the "
        "model card asks for it (run.adapt)",
    )
    adapt_tiles: int = Field(
        default=64,
        ge=1,
        description="scene tiles the adapt step draws, at most (a smaller scene: twice over)",
    )
    adapt_match: bool = Field(
        default=True,
        description="match the scene's band means and spreads to the training imagery's "
        "before the fit (when the model card records them)",
    )

    @field_validator("tta")
    @classmethod
    def _known_tta(cls, value: int) -> int:
        if value not in (1, 2, 4, 8):
            raise ValueError(f"tta must be 1, 2, 4 or 8, not {value}")
        return value

    @field_validator("predict_gsd")
    @classmethod
    def _positive_gsd(cls, value: str | float) -> str | float:
        if isinstance(value, float) and not 0.0 < value <= MAX_GSD_M:
            raise ValueError(
                f"predict_gsd must be auto, native or metres in (0, {MAX_GSD_M:g}], not {value}"
            )
        return value

    @model_validator(mode="after")
    def _overlap_fits(self) -> RunConfig:
        if self.overlap > self.chunk // 2:
            raise ValueError(f"overlap ({self.overlap}) must be at most chunk / 2")
        return self


@dataclass(frozen=True)
class Prediction:
    """A scene's lazy prediction and what describes it.

    Attributes:
        scene: the opened scene.
        codes: ``(task, y, x)`` uint8 dask array of probability codes, chunks
            ``(3, chunk, chunk)``.
        runner: the model handle in the graph.
        attrs: provenance attributes for the result.
        resample: model pixels per scene pixel (1: the model sees the scene's own grid).
        adapt: the least statistics shift at which the model is fitted to the scene before
            predicting (``adapt`` resolved: 0 always, None never; only :func:`run_to_zarr`
            adapts, into its store).
    """

    scene: Scene
    codes: da.Array
    runner: ModelRunner
    attrs: dict[str, Any]
    resample: float = 1.0
    adapt: float | None = None

    def dataset(self) -> xr.Dataset:
        """``surface``, ``edge``, ``centerline`` ``(y, x)`` uint8 codes with coords and CRS."""
        src = self.scene.data
        coords = {"y": src.coords["y"], "x": src.coords["x"]}
        variables = {
            task: xr.DataArray(
                self.codes[k], dims=("y", "x"), coords=coords, attrs=_var_attrs(task)
            )
            for k, task in enumerate(TASKS)
        }
        ds = xr.Dataset(variables, attrs=self.attrs)
        ds = ds.rio.write_crs(src.rio.crs)
        result: xr.Dataset = ds.rio.write_transform(src.rio.transform())
        return result


def _var_attrs(task: str) -> dict[str, Any]:
    return {
        "long_name": f"road {task} probability",
        "units": "1",
        "scale_factor": SCALE_FACTOR,
        "valid_range": [0, FILL_VALUE - 1],
    }


def _resolve_model(model: str | Path | None) -> str:
    if model is None:
        path = default_model_path()
        if not path.is_file():
            raise ModelError(f"no model at the default path {path}; pass --model PATH")
        return str(path)
    text = str(model)
    return text if is_url(text) else str(Path(text).resolve())


def _scene_ref(scene: str | Path) -> str:
    """A local scene as an absolute path, URLs and GDAL paths as given.

    Workers of a remote cluster need not share this process's working directory.
    """
    text = str(scene)
    if is_url(text) or text.startswith("/vsi") or not Path(text).exists():
        return text
    return str(Path(text).resolve())


def prepare_worker(runner: ModelRunner, scene: str) -> None:
    """Ready a worker process for a run: read a pixel of the scene, load the model, trace it.

    Run on every worker (``client.run``) before a run's clock starts, as part of start-up.
    Unpickling this function imports this module and with it what the tasks need (xarray,
    rioxarray, rasterio, zarr): a worker's first tasks would otherwise do that on its event
    loop (BENCHMARKS.md, "roadnet run"), and the first chunks would wait for the model.

    Raises:
        InputError: this worker cannot read the scene (e.g. a path only the client sees).
    """
    try:
        probe_scene(scene)
    except InputError as exc:
        raise InputError(f"on worker host {socket.gethostname()}: {exc}") from exc
    runner.warm_up()


def predict_scene(
    scene: str | Path,
    *,
    model: str | Path | None = None,
    config: RunConfig | None = None,
    validate: bool = True,
) -> Prediction:
    """Open a scene and build its lazy blended prediction.

    Args:
        scene: path or URL of the scene.
        model: ``.keras`` path or URL (default: the shipped model).
        config: run options.
        validate: load and probe the model in this process first; with False only its
            content hash is taken (the caller validates it where it runs, e.g. on a worker).
    """
    config = config or RunConfig()
    model_ref = _resolve_model(model)
    min_shift = resolve_adapt(config.adapt, model_ref)
    config = config.model_copy(update={"adapt": min_shift is not None})
    if validate:
        digest = validate_model(model_ref, bands=MODEL_BANDS)
    else:
        local = fetch_model(model_ref)
        if not local.is_file():
            raise ModelError(f"model file not found: {model_ref}")
        digest = content_hash(local)
    opened = open_scene(
        _scene_ref(scene),
        chunk=config.chunk,
        bands=config.bands,
        input_max=config.input_max,
        nodata=config.nodata,
    )
    dark = dark_scene_warning(opened)
    if dark is not None:
        log.warning("%s", dark)
    scene_gsd = opened.gsd
    card_gsd, finest = (None, None) if is_url(model_ref) else card_pixel_sizes(model_ref)
    target, factor = predict_grid(
        config.predict_gsd, scene_gsd=scene_gsd, card_gsd=card_gsd, card_finest=finest
    )
    if factor != 1.0:
        log.info(
            "predicting at %g m (the scene is %g m): the model sees %.2f x the pixels "
            "(predict_gsd=%s; native keeps the scene's)",
            target, scene_gsd, factor**2, config.predict_gsd,
        )  # fmt: skip
    _, _, shape = model_shape_for(
        opened.shape, core=config.chunk, overlap=config.overlap, resample=factor
    )
    if config.tta == 8 and shape[0] != shape[1]:
        raise InputError(f"tta 8 turns blocks a quarter: it needs square blocks, not {shape}")
    runner = ModelRunner(
        model=model_ref,
        digest=digest,
        shape=shape,
        mixed_precision=config.mixed_precision,
        tta=config.tta,
    )
    codes = predict_array(
        opened.data.data,
        predict=runner,
        core=config.chunk,
        overlap=config.overlap,
        model_shape=shape,
        scale=opened.scale,
        nodata=opened.nodata,
        alpha=opened.alpha,
        resample=factor,
    )
    attrs = {
        "title": "roadnet road probabilities",
        "source": opened.source,
        "model_name": Path(model_ref).name,
        "model_sha256": digest,
        "roadnet_version": __version__,
        "roadnet_config": json.dumps(config.model_dump(mode="json")),
        "encoding_note": "probability = code / 254; code 255 = nodata",
        # the pixel size the model saw, metres ("native": the scene's own grid)
        PREDICT_GSD_ATTR: "native" if target is None else f"{target:g}",
        "created": dt.datetime.now(dt.UTC).isoformat(),
    }
    # the road layer's default cut-offs (roadnet vectorize, evaluate): on a resampled grid
    # those the card chose for its predict_gsd, when it has them
    cutoffs = None if is_url(model_ref) else card_cutoffs(model_ref, factor=factor)
    if cutoffs:
        attrs[CUTOFFS_ATTR] = json.dumps(cutoffs)
    return Prediction(
        scene=opened,
        codes=codes,
        runner=runner,
        attrs=attrs,
        resample=factor,
        adapt=min_shift,
    )


def resolve_adapt(adapt: bool | Literal["auto"], model_ref: str) -> float | None:
    """``adapt`` of a run as the least statistics shift to adapt at (0: always; None: never).

    ``true`` and ``false`` as given; under ``auto`` what the model's card asks for
    (:func:`~roadnet.model.card.card_adapt_rule`; a URL's card is not read).
    """
    if isinstance(adapt, bool):
        return 0.0 if adapt else None
    return None if is_url(model_ref) else card_adapt_rule(model_ref)


def run(
    scene: str | Path, *, model: str | Path | None = None, config: RunConfig | None = None
) -> xr.Dataset:
    """Lazy blended prediction of a scene, for callers who drive Dask themselves.

    Returns:
        Dataset of ``surface``, ``edge``, ``centerline`` ``(y, x)`` float32 probabilities in
        [0, 1] (NaN on nodata, quantized to 1/254), dask-backed, with CRS and transform;
        ``ds.to_zarr(...)`` stores them as uint8 again (encoding is set).
    """
    config = config or RunConfig()
    if config.adapt is True:
        raise ConfigError(
            "adapt writes the adapted model into the result store: use roadnet run --out "
            "(run_to_zarr), or roadnet adapt and pass its model"
        )
    if resolve_adapt(config.adapt, _resolve_model(model)) is not None:
        log.warning(
            "the model card asks to adapt the model to each scene, which needs a result store "
            "(run_to_zarr, roadnet run); predicting with the model as it is"
        )
    config = config.model_copy(update={"adapt": False})
    ds = predict_scene(scene, model=model, config=config).dataset()
    for task in TASKS:
        codes = ds[task]
        attrs = {k: v for k, v in codes.attrs.items() if k not in ("scale_factor", "valid_range")}
        probs = xr.where(codes == FILL_VALUE, np.float32(np.nan), codes * np.float32(SCALE_FACTOR))
        ds[task] = probs.astype(np.float32).assign_attrs(attrs)
        ds[task].encoding = {
            "dtype": "uint8",
            "scale_factor": SCALE_FACTOR,
            "_FillValue": FILL_VALUE,
        }
    return ds


@dataclass(frozen=True)
class RunSummary:
    """What a :func:`run_to_zarr` call did."""

    out: Location
    pixels: int
    chunks: int
    computed: int
    seconds: float
    road_chunks: int | None = None

    def line(self) -> str:
        """One line: pixels, chunks (computed / total), compute seconds, Mpx/s, road chunks."""
        mpx = self.pixels / 1e6
        rate = mpx * self.computed / max(self.chunks, 1) / max(self.seconds, 1e-9)
        resumed = (
            ""
            if self.computed == self.chunks
            else f" (resumed: {self.chunks - self.computed} already written)"
        )
        road = "" if self.road_chunks is None else f", road in {self.road_chunks} chunks"
        return (
            f"{self.out}: {mpx:.1f} Mpx, {self.computed}/{self.chunks} chunks computed{resumed}, "
            f"{self.seconds:.1f} s computing, {rate:.2f} Mpx/s{road}"
        )


def _job_fingerprint(prediction: Prediction, source: str) -> str:
    stat = os.stat(source) if Path(source).is_file() else None
    parts = {
        "source": str(Path(source).resolve()) if stat else source,
        "size": stat.st_size if stat else None,
        "mtime": stat.st_mtime_ns if stat else None,
        "shape": prediction.scene.shape,
        "model": prediction.attrs["model_sha256"],
        "config": prediction.attrs["roadnet_config"],
        "predict_gsd": prediction.attrs[PREDICT_GSD_ATTR],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def run_to_zarr(
    scene: str | Path,
    out: str | Path,
    *,
    model: str | Path | None = None,
    config: RunConfig | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    batch_chunks: int = 32,
    dashboard: bool = False,
    client: Client | None = None,
    security: Security | None = None,
) -> RunSummary:
    """Predict a scene on a Dask cluster into a Zarr store; resume a killed run.

    Args:
        scene: path or URL of the scene.
        out: Zarr store to create: a directory (local or on a filesystem the workers share)
            or an fsspec URL such as ``s3://bucket/r.zarr`` (written in place, marked complete
            last; see :mod:`~roadnet.pipeline.inference.store`).
        model: ``.keras`` path or URL readable by every worker (default: the shipped model).
        config: run options.
        scheduler: Dask scheduler address (else ``DASK_SCHEDULER_ADDRESS``, else local).
        workers: local worker processes.
        threads_per_worker: threads per local worker.
        overwrite: replace an existing result.
        progress: show a progress bar.
        batch_chunks: chunks submitted to the cluster at a time, in whole chunk rows (see
            :func:`~roadnet.pipeline.inference.batches.run_stencil`); bounds the scheduler's
            memory.
        dashboard: serve a local cluster's dashboard (see
            :func:`~roadnet.pipeline.cluster.dask_client`).
        client: run on this client's cluster instead (e.g. to vectorize next on the same
            cluster); ``scheduler``, ``security`` and the layout options are then ignored.
        security: TLS settings for a ``tls://`` scheduler (see
            :func:`~roadnet.pipeline.cluster.cluster_security`); None: from Dask's config.

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
        InputError, ModelError, ConfigError: bad scene, model or options.
    """
    from roadnet.pipeline.cluster import dask_client

    config = config or RunConfig()
    out = location(out)
    # The model is probed on a worker, so this process never imports TensorFlow.
    prediction = predict_scene(scene, model=model, config=config, validate=False)
    job = _job_fingerprint(prediction, str(scene))
    with hold_output(out):  # one run per output at a time (roadnet.leases)
        staging, resume = prepare_store(out, job=job, overwrite=overwrite)
        grid = (prediction.codes.numblocks[1], prediction.codes.numblocks[2])
        todo = ~done_chunks(staging) if resume else np.ones(grid, bool)
        computed = int(todo.sum())
        log.info("%d of %d chunks to compute%s", computed, todo.size, " (resuming)" * resume)
        cluster = dask_client(
            scheduler=scheduler,
            workers=workers,
            threads_per_worker=threads_per_worker,
            dashboard=dashboard,
            security=security,
            client=client,
        )
        with cluster as client:
            seconds, attrs = _compute_store(
                client,
                prediction,
                staging,
                job=job,
                todo=todo,
                create=not resume,
                config=config,
                batch_chunks=batch_chunks,
                progress=progress,
            )
        road = road_chunks(staging)
        attrs |= {"roadnet:seconds": round(seconds, 3), ROAD_CHUNKS_ATTR: road}
        finish_store(staging, out, attrs=attrs)
    if road == 0:
        log.warning("%s", _no_road_warning(out, prediction, attrs))
    h, w = prediction.scene.shape
    return RunSummary(
        out=out,
        pixels=h * w,
        chunks=grid[0] * grid[1],
        computed=computed,
        seconds=seconds,
        road_chunks=road,
    )


def _surface_cut(attrs: Mapping[str, Any]) -> float:
    """The result's surface cut-off (0.5 without one)."""
    return result_cutoffs(attrs).get("surface", 0.5)


def _road_code(attrs: Mapping[str, Any]) -> int:
    """The highest surface code at or below the result's surface cut-off."""
    return int(np.floor(_surface_cut(attrs) * CODE_MAX))


def _no_road_warning(out: Location, prediction: Prediction, attrs: Mapping[str, Any]) -> str:
    """What to tell the user of a finished run that found no road anywhere."""
    cut = _surface_cut(prediction.attrs)
    where = f"{out}: no road above the surface cut-off {cut:.2f} anywhere in the scene"
    if ADAPTED_MODEL_ATTR in attrs:
        return (
            f"{where}, even with the model fitted to it: if it has roads, the model is lost on it"
        )
    return (
        f"{where}: if it has roads, the scene may be unlike the imagery the model knows; "
        "check --bands and --input-max, or fit the model to it with --adapt"
    )


def _compute_store(
    client: Client,
    prediction: Prediction,
    staging: Location,
    *,
    job: str,
    todo: np.ndarray,
    create: bool,
    config: RunConfig,
    batch_chunks: int,
    progress: bool,
) -> tuple[float, dict[str, Any]]:
    """Ready the workers, create the store if new, write the chunks ``todo``.

    With ``adapt`` the model is first fitted to the scene on a worker, into the store
    (:func:`~roadnet.pipeline.inference.adapt.adapt_for_run`), and the chunks are predicted
    with that model.

    Returns:
        The seconds from the first chunk submitted to the last written (after the model
        has been checked, adapted and every worker prepared, :func:`prepare_worker`), and
        attributes for the finished store.
    """
    runner = prediction.runner
    client.submit(validate_model, runner.model, bands=runner.bands, pure=False).result()
    client.run(prepare_worker, runner, prediction.scene.source)  # every worker reads the scene
    if create:
        attrs = {**prediction.attrs, JOB_ATTR: job}
        grid = todo.shape
        create_store(staging, prediction.dataset(), chunk=config.chunk, grid=grid, attrs=attrs)
    finished: dict[str, Any] = {}
    if prediction.adapt is not None:
        runner, finished = _adapted_runner(
            client, prediction, str(staging), min_shift=prediction.adapt, config=config
        )
        if runner is not prediction.runner:
            client.run(prepare_worker, runner, prediction.scene.source)
    start = time.perf_counter()
    plan = blend_plan(
        prediction.scene.data.data,
        predict=runner,
        core=config.chunk,
        overlap=config.overlap,
        model_shape=runner.shape,
        scale=prediction.scene.scale,
        nodata=prediction.scene.nodata,
        alpha=prediction.scene.alpha,
        resample=prediction.resample,
        consume=partial(
            write_chunk,
            path=str(staging),
            chunk=config.chunk,
            job=job,
            road_code=_road_code(prediction.attrs),
        ),
    )
    try:
        run_stencil(
            client,
            plan.stencil,
            grid=plan.grid,
            units=plan.units(todo),
            batch_chunks=batch_chunks,
            progress=progress,
        )
    except Exception as exc:  # a damaged scene fails on a worker: name the file and window
        chunks = prediction.scene.data.data.chunks  # (band, y, x)
        failure = read_failure(exc, prediction.scene.source, rows=chunks[1], cols=chunks[2])
        if failure is None:
            raise
        raise failure from exc
    return time.perf_counter() - start, finished


def _adapted_runner(
    client: Client, prediction: Prediction, store: str, *, min_shift: float, config: RunConfig
) -> tuple[ModelRunner, dict[str, Any]]:
    """Fit the model to the scene on a worker (or follow a killed run's fit).

    Returns:
        The runner to predict with, and the attributes saying so for the finished store.
    """
    from roadnet.pipeline.inference.adapt import adapt_for_run

    runner = prediction.runner
    started = time.perf_counter()
    fit = client.submit(
        adapt_for_run,
        prediction.scene.source,
        runner.model,
        store,
        source_digest=runner.digest,
        min_shift=min_shift,
        strict=config.adapt is True,  # asked for by the user, not only by the card
        tiles=config.adapt_tiles,
        match=config.adapt_match,
        bands=config.bands,
        input_max=config.input_max,
        nodata=config.nodata,
        predict_gsd=config.predict_gsd,
        pure=False,
    ).result()
    seconds = time.perf_counter() - started
    attrs: dict[str, Any] = {} if fit.shift is None else {ADAPT_SHIFT_ATTR: round(fit.shift, 4)}
    if fit.shift is None:
        return runner, attrs  # no tile to fit on: adapt_for_run said so
    if not fit.applied:
        log.info(
            "%s: the scene's statistics shift %.3f < %g, within the training looks: "
            "predicting with the model as trained (%.1f s)",
            "reused the decision" if fit.reused else "not adapted", fit.shift, min_shift, seconds,
        )  # fmt: skip
        return runner, attrs
    log.info(
        "%s %s (%s), statistics shift %.3f, %.1f s",
        "reused the adapted model" if fit.reused else "adapted the model to the scene:",
        fit.model, fit.digest, fit.shift, seconds,
    )  # fmt: skip
    attrs |= {
        ADAPTED_MODEL_ATTR: fit.model.rstrip("/").rsplit("/", 1)[-1],
        ADAPTED_SHA_ATTR: fit.digest,
    }
    return replace(runner, model=fit.model, digest=fit.digest), attrs
