"""``roadnet nightly``: process what arrived in the inbox on one Dask client, safely.

For every stable scene of the inbox (:mod:`.discover`) that the catalog (:mod:`.catalog`)
does not hold as done — new, changed since, or failed and then changed (or
``--retry-failed``) — the run takes the scene's lease (``OUTBOX/leases/<id>.lease``,
:mod:`roadnet.leases`), checks the catalog again, and then runs ``roadnet run`` and
``roadnet vectorize`` into ``OUTBOX/scenes/<id>/`` (``result.zarr``, ``roads.gpkg``,
``preview.png``), all on one Dask client for the whole night. A scene whose lease another
live run holds is left to it; a lease whose holder was killed is taken over, and the
killed attempt's Zarr store resumes.

Retries: a bad scene (an input error: unreadable, truncated, not georeferenced) fails at
once; other errors (a lost worker, a full disk) are retried up to ``max_attempts`` attempts
in all. A failed scene is not retried by later runs until its file changes (size, mtime or
checksum) or ``--retry-failed``. One scene's failure never stops the others; the run's exit
code is non-zero when any scene failed in it. After each scene the merged city layer is
updated around it (:mod:`.merge`); at the end a report (:mod:`.report`) is written.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from roadnet.config import StrictModel
from roadnet.errors import InputError, RoadnetError
from roadnet.leases import LeaseInfo, acquire
from roadnet.paths import is_url
from roadnet.pipeline.inference.run import RunConfig
from roadnet.pipeline.nightly._outbox import join
from roadnet.pipeline.nightly.catalog import Row, read_catalog, updating
from roadnet.pipeline.nightly.discover import Candidate, discover, file_checksum
from roadnet.pipeline.nightly.merge import merge_layer
from roadnet.pipeline.nightly.report import render_report, write_report
from roadnet.pipeline.vectorize.run import VectorizeConfig

if TYPE_CHECKING:
    from distributed import Client, Security

__all__ = ["NightlyConfig", "NightlySummary", "decide", "nightly"]

log = logging.getLogger(__name__)


class NightlyConfig(StrictModel):
    """Options of ``roadnet nightly`` (defaults in ``configs/nightly.yaml``)."""

    stable_seconds: float = Field(default=60.0, ge=0, description="unchanged this long: arrived")
    done_suffix: str = Field(default=".done", min_length=1, description="sidecar arrival marker")
    max_attempts: int = Field(default=3, ge=1, description="attempts per scene before failed")
    lease_ttl: float = Field(default=120.0, gt=0, description="scene lease lifetime, s")
    model: str | None = Field(default=None, description=".keras path or URL; null: shipped")
    crs: str | None = Field(default=None, description="merged layer CRS; null: first scene's")
    preview_max_size: int = Field(default=800, ge=16, description="preview longest side, px")
    run: RunConfig = Field(default_factory=RunConfig, description="roadnet run options")
    vectorize: VectorizeConfig = Field(
        default_factory=VectorizeConfig, description="roadnet vectorize options"
    )


@dataclass
class NightlySummary:
    """What one nightly run did."""

    run_id: str
    inbox: str
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    unchanged: int = 0
    report: str | None = None
    merge_error: str | None = None

    @property
    def nothing(self) -> bool:
        """Nothing was attempted."""
        return not (self.done or self.failed)

    def line(self) -> str:
        """One line for the log."""
        if self.nothing:
            extra = f", {len(self.held)} held by another run" if self.held else ""
            return (
                f"nothing new in {self.inbox}: {self.unchanged} scene(s) up to date, "
                f"{len(self.waiting)} still arriving{extra}"
            )
        failed = f" ({', '.join(self.failed)})" if self.failed else ""
        merge = f"; merging the city layer failed: {self.merge_error}" if self.merge_error else ""
        return (
            f"nightly {self.run_id}: {len(self.done)} scene(s) done, {len(self.failed)} "
            f"failed{failed}, {len(self.held)} held by another run, {len(self.waiting)} still "
            f"arriving{merge}; report {self.report}"
        )


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _changed(candidate: Candidate, row: Row) -> bool:
    if candidate.checksum and row.get("checksum") and candidate.checksum != row["checksum"]:
        return True
    return (candidate.size, candidate.mtime) != (row.get("size"), row.get("mtime"))


def decide(candidate: Candidate, row: Row | None, *, retry_failed: bool) -> str:
    """What to do with a stable scene given its catalog row.

    Returns:
        ``"new"``, ``"changed"`` (size, mtime or listed checksum differ), ``"retry"`` (failed,
        with ``retry_failed``), ``"resume"`` (a running row: its lease tells whether its
        holder is alive) or ``"skip"``.
    """
    if row is None:
        return "new"
    status = row.get("status")
    if status == "running":
        return "resume"
    if _changed(candidate, row):
        return "changed"
    if status == "failed" and retry_failed:
        return "retry"
    return "skip"


def _scene_meta(source: str) -> dict[str, Any]:
    """CRS, bounds and EPSG:4326 footprint of a scene, from its header; {} if unreadable."""
    import geopandas as gpd
    import rasterio
    import shapely

    from roadnet.pipeline.inference.open import _open_kwargs

    path, kwargs = _open_kwargs(source)
    try:
        with rasterio.open(path, **kwargs) as src:
            if src.crs is None:
                return {}
            bounds, crs = tuple(src.bounds), src.crs.to_string()
    except (rasterio.RasterioIOError, OSError):
        return {}
    box = gpd.GeoSeries([shapely.box(*bounds)], crs=crs)
    step = max(bounds[2] - bounds[0], bounds[3] - bounds[1]) / 64
    return {
        "scene_crs": crs,
        "scene_bounds": json.dumps([float(b) for b in bounds]),
        "geometry": box.segmentize(step).to_crs("EPSG:4326").iloc[0],
    }


class _Night:
    """One run's state: config, client, outbox, summary."""

    def __init__(
        self,
        inbox: str,
        outbox: str,
        *,
        config: NightlyConfig,
        retry_failed: bool,
        progress: bool,
    ) -> None:
        self.inbox = inbox
        self.outbox = outbox
        self.config = config
        self.retry_failed = retry_failed
        self.progress = progress
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        self.summary = NightlySummary(run_id=f"{stamp}-{os.getpid()}", inbox=inbox)
        self.attempted: list[str] = []

    def scene_dir(self, scene_id: str) -> str:
        return join(self.outbox, "scenes", scene_id)

    def update(self, scene_id: str, **values: Any) -> Row:
        with updating(self.outbox) as rows:
            row = rows.setdefault(scene_id, {"scene_id": scene_id, "attempts": 0})
            row.update(values)
            return dict(row)

    def process(self, client: Client, candidate: Candidate) -> None:
        """Take the scene's lease and process it, unless another run has it or did it."""
        lease_path = join(self.outbox, "leases", f"{candidate.scene_id}.lease")
        if not is_url(lease_path):
            Path(lease_path).parent.mkdir(parents=True, exist_ok=True)
        got = acquire(lease_path, ttl=self.config.lease_ttl, what=candidate.source)
        if isinstance(got, LeaseInfo):
            log.info("%s: held by another run (%s)", candidate.scene_id, got.describe())
            self.summary.held.append(candidate.scene_id)
            return
        with got:
            row = read_catalog(self.outbox).get(candidate.scene_id)
            why = decide(candidate, row, retry_failed=self.retry_failed)
            if why == "skip":
                return  # another run finished it meanwhile
            checksum = candidate.checksum or file_checksum(candidate.source)
            if row and row.get("status") == "done" and row.get("checksum") == checksum:
                self.update(candidate.scene_id, size=candidate.size, mtime=candidate.mtime)
                self.summary.unchanged += 1
                return  # touched, not changed
            fresh = why in ("changed", "retry", "new")
            self._attempts(client, candidate, checksum, fresh=fresh, prior=row)

    def _attempts(
        self, client: Client, candidate: Candidate, checksum: str, *, fresh: bool, prior: Row | None
    ) -> None:
        attempts = 0 if fresh or prior is None else int(prior.get("attempts") or 0)
        meta = _scene_meta(candidate.source)
        self.attempted.append(candidate.scene_id)
        while True:
            attempts += 1
            self.update(
                candidate.scene_id,
                source=candidate.source,
                size=candidate.size,
                mtime=candidate.mtime,
                acquired=candidate.acquired,
                checksum=checksum,
                status="running",
                attempts=attempts,
                run_id=self.summary.run_id,
                started=_now(),
                finished=None,
                error=None,
                **meta,
            )
            try:
                values = self._one(client, candidate)
            except RoadnetError as exc:
                self._fail(candidate, str(exc))
                return
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                log.warning("%s: attempt %d failed: %s", candidate.scene_id, attempts, message)
                if attempts >= self.config.max_attempts:
                    self._fail(candidate, f"{message} (after {attempts} attempts)")
                    return
                time.sleep(min(60.0, 2.0**attempts))  # let a lost worker come back
                continue
            self.update(candidate.scene_id, status="done", finished=_now(), **values)
            self.summary.done.append(candidate.scene_id)
            self.merge()
            return

    def merge(self) -> None:
        """:meth:`merge_now`; a failure is logged and left for the next run to redo."""
        try:
            self.merge_now()
        except Exception as exc:  # the scenes are done; only the city layer lags
            self.summary.merge_error = f"{type(exc).__name__}: {exc}"
            log.error("merging the city layer failed: %s", self.summary.merge_error)

    def _fail(self, candidate: Candidate, message: str) -> None:
        log.error("%s: failed: %s", candidate.scene_id, message)
        self.update(candidate.scene_id, status="failed", finished=_now(), error=message)
        self.summary.failed.append(candidate.scene_id)

    def _one(self, client: Client, candidate: Candidate) -> dict[str, Any]:
        """Run and vectorize one scene; the catalog values of its outputs."""
        from roadnet.pipeline.inference.run import ROAD_CHUNKS_ATTR, run_to_zarr
        from roadnet.pipeline.inference.store import open_result
        from roadnet.pipeline.vectorize.run import vectorize_result

        base = self.scene_dir(candidate.scene_id)
        result, roads = join(base, "result.zarr"), join(base, "roads.gpkg")
        start = time.perf_counter()
        run_to_zarr(
            candidate.source,
            result,
            model=self.config.model,
            config=self.config.run,
            overwrite=True,  # the scene's lease is ours: replace an older result
            progress=self.progress,
            client=client,
        )
        run_seconds = time.perf_counter() - start
        start = time.perf_counter()
        summary = vectorize_result(
            result,
            roads,
            config=self.config.vectorize,
            overwrite=True,
            progress=self.progress,
            client=client,
        )
        vectorize_seconds = time.perf_counter() - start
        attrs = open_result(result).attrs
        model = str(attrs.get("model_sha256", ""))
        road = attrs.get(ROAD_CHUNKS_ATTR)
        return {
            "run_seconds": round(run_seconds, 3),
            "vectorize_seconds": round(vectorize_seconds, 3),
            "model_sha256": model,
            "components": summary.components,
            "km": round(summary.km, 4),
            "nodes": summary.nodes,
            "road_chunks": None if road is None else int(road),
            "result": result,
            "roads": roads,
            "preview": self._preview(candidate, roads),
            "merged": False,
        }

    def _preview(self, candidate: Candidate, roads: str) -> str | None:
        """The scene with its roads drawn as ``preview.png``; None where it cannot be made."""
        if is_url(candidate.source) or is_url(self.outbox):
            return None
        from roadnet.pipeline.preview import make_preview

        out = Path(self.scene_dir(candidate.scene_id), "preview.png")
        try:
            make_preview(
                Path(candidate.source),
                out,
                roads=Path(roads),
                max_size=self.config.preview_max_size,
                overwrite=True,
            )
        except RoadnetError as exc:
            log.warning("%s: no preview: %s", candidate.scene_id, exc)
            return None
        return f"scenes/{candidate.scene_id}/preview.png"

    def merge_now(self) -> None:
        """Bring the merged layer up to date with the catalog, under the merge lease."""
        location = join(self.outbox, "city-roads.lease")
        deadline = time.monotonic() + 300
        while isinstance(
            got := acquire(location, ttl=self.config.lease_ttl, what="merge"), LeaseInfo
        ):
            if time.monotonic() > deadline:
                raise InputError(f"the merged layer stays held ({got.describe()})")
            time.sleep(0.2)
        with got:
            rows = read_catalog(self.outbox)
            changed = {
                k: r.get("finished")
                for k, r in rows.items()
                if (r.get("status") == "done") != bool(r.get("merged"))
            }
            if not changed:
                return
            merge_layer(self.outbox, rows, sorted(changed), crs=self.config.crs)
            with updating(self.outbox) as now:
                for k, finished in changed.items():
                    if now[k].get("finished") == finished:  # not reprocessed meanwhile
                        now[k]["merged"] = now[k].get("status") == "done"


def nightly(
    inbox: str,
    outbox: str,
    *,
    config: NightlyConfig | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    security: Security | None = None,
    retry_failed: bool = False,
    progress: bool = False,
) -> NightlySummary:
    """Process the inbox's new scenes into the outbox (see the module docs).

    Args:
        inbox: folder or fsspec URL the scenes arrive in.
        outbox: folder or fsspec URL of the outputs, catalog, merged layer and reports.
        config: options.
        scheduler: Dask scheduler address (else ``DASK_SCHEDULER_ADDRESS``, else local).
        workers: local worker processes.
        threads_per_worker: threads per local worker.
        security: TLS settings for a ``tls://`` scheduler.
        retry_failed: retry scenes that failed before even if unchanged.
        progress: show progress bars.

    Raises:
        InputError: the inbox cannot be listed, or the catalog is unreadable.
    """
    from roadnet.pipeline.cluster import dask_client

    config = config or NightlyConfig()
    if not is_url(inbox):
        inbox = str(Path(inbox).resolve())
    if not is_url(outbox):
        outbox = str(Path(outbox).resolve())
        Path(outbox).mkdir(parents=True, exist_ok=True)
    night = _Night(inbox, outbox, config=config, retry_failed=retry_failed, progress=progress)
    found = discover(inbox, stable_seconds=config.stable_seconds, done_suffix=config.done_suffix)
    night.summary.waiting = [c.scene_id for c in found.waiting]
    rows = read_catalog(outbox)
    todo = []
    for candidate in found.stable:
        why = decide(candidate, rows.get(candidate.scene_id), retry_failed=retry_failed)
        if why == "skip":
            night.summary.unchanged += 1
        else:
            todo.append(candidate)
    night.merge()  # a merge that a killed run left undone
    if not todo:
        log.info(night.summary.line())
        return night.summary
    log.info("%d scene(s) to process: %s", len(todo), ", ".join(c.scene_id for c in todo))
    with dask_client(
        scheduler=scheduler, workers=workers, threads_per_worker=threads_per_worker,
        security=security,
    ) as client:  # fmt: skip
        for candidate in todo:
            try:
                night.process(client, candidate)
            except Exception as exc:  # e.g. the file vanished: never stop the other scenes
                message = (
                    str(exc) if isinstance(exc, RoadnetError) else f"{type(exc).__name__}: {exc}"
                )
                log.error("%s: failed: %s", candidate.scene_id, message)
                night.summary.failed.append(candidate.scene_id)
    if night.attempted:
        catalog = read_catalog(outbox)
        lines = night.summary.line().split("; report")[0].split("; ")
        text = render_report(
            run_id=night.summary.run_id,
            inbox=inbox,
            outbox=outbox,
            lines=lines,
            rows=[catalog[k] for k in night.attempted if k in catalog],
        )
        night.summary.report = write_report(outbox, night.summary.run_id, text)
    return night.summary
