"""``roadnet vectorize``: a run's Zarr result in, the citywide road layer and road graph out.

:func:`vectorize_result` reads a complete result store lazily, builds the two chunked graphs
(the exact polygon dissolve of :mod:`~roadnet.pipeline.vectorize.dissolve` and the
centerline pieces of :mod:`~roadnet.pipeline.vectorize.centerlines`), computes them together
on a Dask cluster, gathers the final polygons and graph pieces as they finish (the client
holds the output layer, never the raster), joins the graph, and writes the layers
(:mod:`~roadnet.pipeline.vectorize.layers`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
import yaml
from pydantic import Field, model_validator

from roadnet.config import StrictModel
from roadnet.errors import InputError
from roadnet.leases import hold_output
from roadnet.model.gsd import ground_scale
from roadnet.paths import Location, is_url, location
from roadnet.pipeline.inference.run import result_cutoffs
from roadnet.pipeline.preflight import check_layer_outputs
from roadnet.pipeline.vectorize.centerlines import DEFAULT_HALO_PX, DEFAULT_HOLE_PX, Source
from roadnet.pipeline.vectorize.chunks import vectorize_tasks
from roadnet.pipeline.vectorize.graph import (
    DEFAULT_MERGE_M,
    DEFAULT_PRUNE_M,
    GraphPiece,
    join_pieces,
)
from roadnet.pipeline.vectorize.layers import (
    Format,
    RoadLayers,
    frame,
    write_layers,
)
from roadnet.pipeline.vectorize.polygons import Finishing, feature_columns

if TYPE_CHECKING:
    import xarray as xr
    from distributed import Client, Security

__all__ = [
    "VectorizeConfig",
    "VectorizeSummary",
    "card_cutoff",
    "default_threshold",
    "road_layers",
    "vectorize_result",
]

log = logging.getLogger(__name__)


class VectorizeConfig(StrictModel):
    """Options of ``roadnet vectorize`` (defaults in ``configs/vectorize.yaml``)."""

    threshold: float | None = Field(
        default=None, gt=0, lt=1, description="surface cut-off (default: model card, else 0.5)"
    )
    sieve_px: int = Field(default=16, ge=0, description="speckle smaller than this is removed")
    min_area_m2: float = Field(default=10.0, ge=0, description="smaller components are dropped")
    hole_area_m2: float = Field(default=10.0, ge=0, description="smaller holes are filled")
    simplify_m: float | None = Field(
        default=None, ge=0, description="simplification tolerance (default: one pixel)"
    )
    graph_source: Source = Field(default="surface", description="mask the graph is thinned from")
    centerline_threshold: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="centerline cut-off of the centerline and combined sources "
        "(default: model card, else the surface cut-off)",
    )
    halo_px: int = Field(default=DEFAULT_HALO_PX, ge=0, description="skeleton context, px")
    graph_hole_px: int = Field(default=DEFAULT_HOLE_PX, ge=0, description="holes filled, px")
    prune_m: float = Field(default=DEFAULT_PRUNE_M, ge=0, description="shorter spurs pruned")
    merge_m: float = Field(default=DEFAULT_MERGE_M, ge=0, description="closer junctions merged")
    task_px: int = Field(
        default=2048, ge=1, description="task window side, px, in whole store chunks (>= 1)"
    )
    surface: bool = Field(default=True, description="make the road_surface polygons")
    graph: bool = Field(
        default=True, description="make the centerline graph (road_centerline, road_node)"
    )

    @model_validator(mode="after")
    def _needs_a_layer(self) -> VectorizeConfig:
        if not (self.surface or self.graph):
            raise ValueError("surface and graph are both off: nothing to make")
        return self


@dataclass(frozen=True)
class VectorizeSummary:
    """What a :func:`vectorize_result` call made."""

    out: Location
    components: int
    km: float
    nodes: int
    edges: int
    threshold: float
    seconds: float
    surface: bool = True
    graph: bool = True

    def line(self) -> str:
        """One line: components, km of centerline, nodes, seconds."""
        made = (
            f"{self.components} road components" if self.surface else "no road_surface (off)",
            f"{self.km:.2f} km of centerline in {self.edges} edges, {self.nodes} nodes"
            if self.graph
            else "no centerline graph (off)",
        )
        return (
            f"{self.out}: {made[0]}, {made[1]} (cut-off {self.threshold:g}), {self.seconds:.1f} s"
        )


def card_cutoff(attrs: dict[str, Any], task: str) -> float | None:
    """One task's cut-off recorded with a result's model (its card), or None."""
    return result_cutoffs(attrs).get(task)


def default_threshold(attrs: dict[str, Any]) -> float:
    """The surface cut-off recorded with a result's model (its card), else 0.5."""
    value = card_cutoff(attrs, "surface")
    return 0.5 if value is None else value


def _open_codes(result: str | Path) -> xr.Dataset:
    """The result's uint8 codes, lazily, with CRS; refuses stores that are not finished."""
    from roadnet.pipeline.inference.store import open_result

    ds = open_result(result, mask_and_scale=False)
    if ds.rio.crs is None:
        raise InputError(f"{result} has no CRS: cannot place the road layer on the map")
    if not ds.rio.crs.is_projected:
        raise InputError(
            f"{result} is in a geographic CRS ({ds.rio.crs}); road areas and lengths need "
            "a projected one: reproject the scene (e.g. gdalwarp -t_srs to its UTM zone) and "
            "run it again"
        )
    for task in ("surface", "centerline"):
        if task not in ds or ds[task].dtype != np.uint8:
            raise InputError(f"{result} has no uint8 {task} codes: not a roadnet result")
    return ds


def road_layers(
    client: Client,
    result: str | Path,
    *,
    config: VectorizeConfig | None = None,
    progress: bool = False,
) -> tuple[RoadLayers, float]:
    """Vectorize a complete result on ``client``'s cluster.

    Args:
        client: the Dask client.
        result: the ``roadnet run`` Zarr store.
        config: options.
        progress: show a progress bar of the tasks.

    Returns:
        The road layers in the result's CRS and the surface cut-off used.

    Raises:
        InputError: the store is missing, unfinished, not georeferenced or not a result.
    """
    from distributed import as_completed

    config = config or VectorizeConfig()
    ds = _open_codes(result)
    threshold = config.threshold or default_threshold(dict(ds.attrs))
    # the centerline source's cut: the option, else the card's centerline cut-off, else the
    # surface cut-off
    centerline_threshold = config.centerline_threshold or card_cutoff(dict(ds.attrs), "centerline")
    transform = ds.rio.transform()
    pixel = float(np.sqrt(abs(transform.determinant)))
    chunks = ds["surface"].data.chunks
    # The kernels measure in map units; the options and the columns are ground metres.
    # They differ for a CRS in feet, and for Web Mercator (by about cos(latitude)).
    height, width = ds["surface"].shape
    scale = ground_scale(ds.rio.crs, transform, (height, width))
    simplify = pixel if config.simplify_m is None else config.simplify_m / scale
    # Each component is finished (to map, holes filled, simplified ring by ring) on the
    # worker where it becomes complete; the client gathers the finished layer and the
    # skeleton pieces as they come, never the raster or the pixel polygons.
    tasks = vectorize_tasks(
        str(Path(result).resolve()) if not is_url(result) else str(result),
        chunks=(tuple(chunks[0]), tuple(chunks[1])),
        threshold=threshold,
        sieve_px=config.sieve_px,
        source=config.graph_source,
        centerline_threshold=centerline_threshold,
        halo_px=config.halo_px,
        hole_px=config.graph_hole_px,
        chunks_per_task=max(1, config.task_px // max(chunks[0][0], chunks[1][0])),
        polygons=config.surface,
        graph=config.graph,
        finishing=Finishing(
            transform=transform,
            hole_area_m2=config.hole_area_m2 / scale**2,
            min_area_m2=config.min_area_m2 / scale**2,
            simplify_m=simplify,
        ),
    )
    futures = client.compute(tasks)
    found: list[np.ndarray] = []
    graph_pieces: list[GraphPiece] = []
    with _bar(len(futures), enabled=progress) as advance:
        for future, value in as_completed(futures, with_results=True):
            found.append(value.final)
            if value.piece is not None:
                graph_pieces.append(value.piece)
            future.release()
            del value
            advance()
    polys = np.concatenate(found) if found else np.empty(0, dtype=object)
    nodes, edges = join_pieces(
        graph_pieces,
        transform=transform,
        prune_m=config.prune_m / scale,
        merge_m=config.merge_m / scale,
        simplify_m=simplify,
    )
    crs = ds.rio.crs
    model = str(ds.attrs.get("model_sha256", ""))
    polys = _ordered(polys)
    columns = feature_columns(polys)
    layers = RoadLayers(
        surface=frame(
            {
                **{k: v * scale ** (2 if k == "area_m2" else 1) for k, v in columns.items()},
                "model_sha256": np.full(len(polys), model, dtype=object),
                "geometry": polys,
            },
            crs=crs,
        ),
        centerline=frame(
            {
                "u": edges["u"],
                "v": edges["v"],
                "length_m": edges["length_m"] * scale,
                "geometry": edges["geometry"],
            },
            crs=crs,
        ),
        nodes=frame(
            {
                "id": nodes["id"],
                "degree": nodes["degree"],
                "geometry": shapely.points(nodes["x"], nodes["y"]),
            },
            crs=crs,
        ),
    )
    return layers, threshold


def _ordered(polys: np.ndarray) -> np.ndarray:
    """Polygons in a fixed order (top-left first), whatever order the tasks finished in."""
    if len(polys) == 0:
        return polys
    bounds = shapely.bounds(polys)
    order = np.lexsort((shapely.area(polys), bounds[:, 0], -bounds[:, 3]))
    ordered: np.ndarray = polys[order]
    return ordered


@contextlib.contextmanager
def _bar(total: int, *, enabled: bool) -> Any:
    if not enabled:
        yield lambda: None
        return
    from rich.progress import Progress

    with Progress(transient=False) as bar:
        task = bar.add_task("vectorize", total=total)
        yield lambda: bar.advance(task)


def vectorize_result(
    result: str | Path,
    out: str | Path,
    *,
    config: VectorizeConfig | None = None,
    fmt: Format = "gpkg",
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    client: Client | None = None,
    security: Security | None = None,
) -> VectorizeSummary:
    """Vectorize a result on a Dask cluster and write the road layers and graph.

    Args:
        result: the ``roadnet run`` Zarr store (a directory or a URL such as ``s3://…``).
        out: ``roads.gpkg``, or an output directory for ``fmt="parquet"``; local or an fsspec
            URL (credentials from the environment, here and on the workers).
        config: options.
        fmt: ``gpkg`` or ``parquet`` (see :mod:`~roadnet.pipeline.vectorize.layers`).
        scheduler: Dask scheduler address (else ``DASK_SCHEDULER_ADDRESS``, else local).
        workers: local worker processes.
        threads_per_worker: threads per local worker.
        overwrite: replace existing outputs.
        progress: show a progress bar.
        client: run on this client's cluster (``scheduler``, ``security`` and the layout are
            ignored).
        security: TLS settings for a ``tls://`` scheduler (see
            :func:`~roadnet.pipeline.cluster.cluster_security`); None: from Dask's config.

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
        InputError: bad result store or options.
    """
    from roadnet.pipeline.cluster import dask_client

    config = config or VectorizeConfig()
    out = location(out)
    with hold_output(out):  # one run per output at a time (roadnet.leases)
        check_layer_outputs(out, fmt=fmt, overwrite=overwrite)
        _open_codes(result)  # fail before starting a cluster
        cluster = dask_client(
            scheduler=scheduler,
            workers=workers,
            threads_per_worker=threads_per_worker,
            security=security,
            client=client,
        )
        start = time.perf_counter()
        with cluster as active:
            layers, threshold = road_layers(active, result, config=config, progress=progress)
        seconds = time.perf_counter() - start
        resolved = {
            "vectorize": {**config.model_dump(mode="json"), "threshold": threshold},
            "result": str(location(result)),
            "format": fmt,
            "seconds": round(seconds, 3),
        }
        write_layers(
            layers,
            out,
            fmt=fmt,
            config_text=yaml.safe_dump(resolved, sort_keys=False),
            overwrite=overwrite,
        )
    return VectorizeSummary(
        out=out,
        components=len(layers.surface),
        km=float(layers.centerline["length_m"].sum()) / 1000.0,
        nodes=len(layers.nodes),
        edges=len(layers.centerline),
        threshold=threshold,
        seconds=seconds,
        surface=config.surface,
        graph=config.graph,
    )
