"""The ``roadnet`` command line: parse arguments, call one library function per command.

Heavy libraries are imported inside the commands so ``roadnet --help`` and
``roadnet --version`` never import TensorFlow, dask or rasterio.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from roadnet import __version__
from roadnet.errors import RoadnetError
from roadnet.pipeline.cli_model import calibrate_gate, evaluate_model, train
from roadnet.pipeline.cli_options import (
    BandsOpt,
    ConfigOpt,
    InputMaxOpt,
    NodataOpt,
    Overwrite,
    PredictGsdOpt,
    ProgressOpt,
    SceneArg,
    SchedulerOpt,
    SetOpt,
    ThreadsOpt,
    TlsCaOpt,
    TlsCertOpt,
    TlsKeyOpt,
    WorkersOpt,
)

__all__ = ["app", "main"]

log = logging.getLogger("roadnet")

app = typer.Typer(
    name="roadnet",
    help="Road surface, edge and centerline maps from very large aerial and satellite scenes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"verbose": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"roadnet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug logging and full tracebacks.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Road surface, edge and centerline maps from very large aerial and satellite scenes."""
    _state["verbose"] = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not verbose:
        for noisy in ("distributed", "tensorflow", "absl", "rasterio", "fiona", "pyogrio"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def labels(
    scene: Annotated[Path, typer.Argument(help="Scene GeoTIFF whose grid the labels follow.")],
    roads: Annotated[
        Path, typer.Argument(help="Road vectors (GeoPackage, GeoJSON, Parquet, OSM PBF ...).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")],
    layer: Annotated[
        str | None, typer.Option("--layer", help="Layer of a multi-layer vector file.")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: Overwrite = False,
) -> None:
    """Rasterize road vectors onto a scene's grid: surface, edge, centerline label GeoTIFFs."""
    from roadnet.config import bundled_config_path, load_config
    from roadnet.pipeline.scenes.labels import LabelsConfig, make_labels

    cfg = load_config(
        LabelsConfig,
        config or bundled_config_path("labels"),
        overrides=set_ or [],
        values={"layer": layer},
    )
    make_labels(scene, roads, out, config=cfg, overwrite=overwrite)


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")],
    osm: Annotated[
        str, typer.Option("--osm", help="'helsinki', 'test', or a path to an .osm.pbf extract.")
    ] = "helsinki",
    gsd: Annotated[
        float | None, typer.Option("--gsd", help="Ground sample distance, m/px.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed.")] = None,
    size: Annotated[
        str | None, typer.Option("--size", help="Scene size WxH in pixels (default: the extent).")
    ] = None,
    style: Annotated[
        str | None,
        typer.Option(
            "--style",
            help="Appearance preset (a name in configs/styles/, e.g. temperate or heldout; an "
            "unknown name lists them) or a style YAML; its ranges are drawn from the seed. "
            "--gsd and --set keys win over it.",
        ),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: Overwrite = False,
) -> None:
    """Render an orthophoto-like scene from real OSM geometry, with labels and truth vectors."""
    from roadnet.config import load_config
    from roadnet.pipeline.scenes.synth import SynthConfig, parse_size, synthesize

    cfg = load_config(
        SynthConfig,
        config,
        overrides=set_ or [],
        values={"gsd": gsd, "seed": seed, "size": parse_size(size) if size else None},
    )
    style_name = None
    if style is not None:
        from roadnet.pipeline.scenes.styles import apply_style, load_style

        chosen = load_style(style)
        keep = {item.partition("=")[0].strip().split(".")[0] for item in set_ or []}
        cfg = apply_style(cfg, chosen, keep=keep | ({"gsd"} if gsd is not None else set()))
        style_name = str(style)
    synthesize(osm, out, config=cfg, overwrite=overwrite, style=style_name)


@app.command()
def preview(
    raster: Annotated[Path, typer.Argument(help="Scene GeoTIFF to preview.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output PNG.")],
    labels_dir: Annotated[
        Path | None, typer.Option("--labels", help="Directory with label GeoTIFFs to overlay.")
    ] = None,
    result: Annotated[
        Path | None,
        typer.Option("--result", help="A roadnet run Zarr store to overlay (probability >= 0.5)."),
    ] = None,
    roads: Annotated[
        Path | None,
        typer.Option("--roads", help="A roadnet vectorize road layer (roads.gpkg) to draw."),
    ] = None,
    max_size: Annotated[int, typer.Option("--max-size", help="Longest side in pixels.")] = 1600,
    overwrite: Overwrite = False,
) -> None:
    """Write a downsampled RGB quicklook PNG with labels, predictions or roads overlaid."""
    from roadnet.pipeline.preflight import check_preview_inputs

    check_preview_inputs(
        raster, out, labels_dir=labels_dir, result=result, roads=roads, overwrite=overwrite
    )
    from roadnet.pipeline.preview import make_preview

    make_preview(
        raster,
        out,
        labels_dir=labels_dir,
        result=result,
        roads=roads,
        max_size=max_size,
        overwrite=overwrite,
    )


@app.command()
def run(
    scene: SceneArg,
    out: Annotated[
        str,
        typer.Option("--out", "-o", help="Output Zarr store: RESULT.zarr or s3://bucket/r.zarr."),
    ],
    model: Annotated[
        str | None, typer.Option("--model", help=".keras model path or URL (default: shipped).")
    ] = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    threads_per_worker: ThreadsOpt = None,
    tls_ca_file: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    chunk: Annotated[int | None, typer.Option("--chunk", help="Core chunk size, px.")] = None,
    overlap: Annotated[
        int | None, typer.Option("--overlap", help="Blended context per side, px.")
    ] = None,
    bands: BandsOpt = None,
    input_max: InputMaxOpt = None,
    nodata: NodataOpt = None,
    predict_gsd: PredictGsdOpt = None,
    tta: Annotated[
        int | None,
        typer.Option(
            "--tta",
            help="Average each block's probabilities over 1, 2, 4 or 8 flipped / turned views "
            "(the model runs that many times as long).",
        ),
    ] = None,
    adapt: Annotated[
        bool | None,
        typer.Option(
            "--adapt/--no-adapt",
            help="First fit the model's batch-normalization statistics to this scene (as "
            "roadnet adapt) on a worker; the adapted model is kept in the result store.",
        ),
    ] = None,
    progress: ProgressOpt = True,
    dashboard: Annotated[
        bool,
        typer.Option(
            "--dashboard", help="Serve the local cluster's Dask dashboard and log its link."
        ),
    ] = False,
    vectorize_out: Annotated[
        str | None,
        typer.Option(
            "--vectorize",
            help="Then vectorize the result into this road layer (roads.gpkg), same cluster.",
        ),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: Overwrite = False,
) -> None:
    """Predict road surface, edge and centerline probabilities into a Zarr store on Dask."""
    from roadnet.pipeline.preflight import check_layer_outputs, check_run_output, check_scene

    # refused before dask, xarray and GDAL are imported (seconds)
    check_scene(scene)
    check_run_output(out, overwrite=overwrite)
    if vectorize_out is not None:
        check_layer_outputs(vectorize_out, fmt="gpkg", overwrite=overwrite)

    from roadnet.config import load_config
    from roadnet.model.gsd import parse_predict_gsd
    from roadnet.pipeline.cluster import cluster_security, dask_client
    from roadnet.pipeline.inference.run import RunConfig, run_to_zarr

    security = cluster_security(ca_file=tls_ca_file, cert=tls_cert, key=tls_key)

    band_list = [b.strip() for b in bands.split(",")] if bands else None
    cfg = load_config(
        RunConfig,
        config or "run",
        overrides=set_ or [],
        values={
            "chunk": chunk,
            "overlap": overlap,
            "bands": band_list,
            "input_max": input_max,
            "nodata": nodata,
            "predict_gsd": None if predict_gsd is None else parse_predict_gsd(predict_gsd),
            "tta": tta,
            "adapt": adapt,
        },
    )
    if vectorize_out is None:
        summary = run_to_zarr(
            scene,
            out,
            model=model,
            config=cfg,
            scheduler=scheduler,
            workers=workers,
            threads_per_worker=threads_per_worker,
            overwrite=overwrite,
            progress=progress,
            dashboard=dashboard,
            security=security,
        )
        typer.echo(summary.line())
        return
    from roadnet.pipeline.vectorize.run import VectorizeConfig, vectorize_result

    vcfg = load_config(VectorizeConfig, "vectorize")
    with dask_client(
        scheduler=scheduler,
        workers=workers,
        threads_per_worker=threads_per_worker,
        dashboard=dashboard,
        security=security,
    ) as client:
        summary = run_to_zarr(
            scene,
            out,
            model=model,
            config=cfg,
            overwrite=overwrite,
            progress=progress,
            client=client,
        )
        typer.echo(summary.line())
        vsummary = vectorize_result(
            out, vectorize_out, config=vcfg, overwrite=overwrite, progress=progress, client=client
        )
    typer.echo(vsummary.line())


@app.command()
def adapt(
    scene: SceneArg,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="The adapted model: ADAPTED.keras (+ .json card).")
    ],
    model: Annotated[
        Path | None, typer.Option("--model", help="Source .keras model (default: shipped).")
    ] = None,
    tiles: Annotated[
        int,
        typer.Option("--tiles", help="Tiles drawn from the scene, at most: see --coverage."),
    ] = 64,
    coverage: Annotated[
        float,
        typer.Option(
            "--coverage",
            help="Draw no more tiles than cover the scene this many times (0: all --tiles).",
        ),
    ] = 2.0,
    tile_px: Annotated[int, typer.Option("--tile-px", help="Their side, px.")] = 512,
    strength: Annotated[
        float,
        typer.Option("--strength", help="Weight of the scene's statistics in [0, 1]."),
    ] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Where the tiles are drawn.")] = 0,
    match: Annotated[
        bool,
        typer.Option(
            "--match/--no-match",
            help="Match the scene's colours to the training imagery's first (card's "
            "input_statistics).",
        ),
    ] = True,
    bands: BandsOpt = None,
    input_max: InputMaxOpt = None,
    nodata: NodataOpt = None,
    predict_gsd: PredictGsdOpt = None,
    overwrite: Overwrite = False,
) -> None:
    """Fit a copy of the model's normalization to a scene's imagery (no labels needed)."""
    from roadnet.errors import InputError
    from roadnet.model.gsd import parse_predict_gsd
    from roadnet.pipeline.preflight import check_model_output, check_scene

    # refused before TensorFlow and GDAL are imported (seconds)
    check_scene(scene)
    check_model_output(out, overwrite=overwrite)
    gsd = parse_predict_gsd(predict_gsd or "auto")
    if coverage < 0:
        raise InputError(f"--coverage must be >= 0, got {coverage}")

    from roadnet.pipeline.inference.adapt import adapt_to_scene

    try:
        band_list = [int(b) for b in bands.split(",")] if bands else None
    except ValueError:
        raise InputError(f"--bands {bands!r}: give 1-based band numbers, e.g. 3,2,1") from None
    summary = adapt_to_scene(
        scene,
        out,
        model=model,
        tiles=tiles,
        tile_px=tile_px,
        strength=strength,
        seed=seed,
        bands=band_list,
        input_max=input_max,
        nodata=nodata,
        overwrite=overwrite,
        predict_gsd=gsd,
        coverage=coverage or None,
        match=match,
    )
    typer.echo(summary.line())


@app.command()
def vectorize(
    result: Annotated[
        str, typer.Argument(help="A roadnet run Zarr store (RESULT.zarr, or an s3:// URL).")
    ],
    out: Annotated[
        str,
        typer.Option(
            "--out", "-o", help="roads.gpkg, or a directory for --format parquet (or a URL)."
        ),
    ],
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    threads_per_worker: ThreadsOpt = None,
    tls_ca_file: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="Surface cut-off in (0, 1) (default: model card, 0.5)."),
    ] = None,
    min_area: Annotated[
        float | None, typer.Option("--min-area", help="Drop road components below this, m².")
    ] = None,
    hole_area: Annotated[
        float | None, typer.Option("--hole-area", help="Fill holes below this, m².")
    ] = None,
    simplify: Annotated[
        float | None,
        typer.Option("--simplify", help="Simplification tolerance, m (default: one pixel)."),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="gpkg (one GeoPackage) or parquet (GeoParquet dir).")
    ] = "gpkg",
    surface: Annotated[
        bool | None,
        typer.Option(
            "--surface/--no-surface", help="Make road_surface (--no-surface: left empty)."
        ),
    ] = None,
    graph: Annotated[
        bool | None,
        typer.Option(
            "--graph/--no-graph",
            help="Make the centerline graph (--no-graph: road_centerline, road_node empty).",
        ),
    ] = None,
    progress: ProgressOpt = True,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: Overwrite = False,
) -> None:
    """Turn a result into the dissolved road-surface layer and the centerline road graph."""
    from roadnet.errors import InputError
    from roadnet.pipeline.preflight import check_layer_outputs, check_result

    # refused before dask, xarray and GDAL are imported (seconds)
    if fmt not in ("gpkg", "parquet"):
        raise InputError(f"--format must be gpkg or parquet, got {fmt!r}")
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise InputError(f"--threshold must be in (0, 1), got {threshold}")
    check_layer_outputs(out, fmt=fmt, overwrite=overwrite)  # type: ignore[arg-type]
    check_result(result)

    from roadnet.config import load_config
    from roadnet.pipeline.cluster import cluster_security
    from roadnet.pipeline.vectorize.run import VectorizeConfig, vectorize_result

    cfg = load_config(
        VectorizeConfig,
        config or "vectorize",
        overrides=set_ or [],
        values={
            "threshold": threshold,
            "min_area_m2": min_area,
            "hole_area_m2": hole_area,
            "simplify_m": simplify,
            "surface": surface,
            "graph": graph,
        },
    )
    summary = vectorize_result(
        result,
        out,
        config=cfg,
        fmt=fmt,  # type: ignore[arg-type]
        scheduler=scheduler,
        workers=workers,
        threads_per_worker=threads_per_worker,
        overwrite=overwrite,
        progress=progress,
        security=cluster_security(ca_file=tls_ca_file, cert=tls_cert, key=tls_key),
    )
    typer.echo(summary.line())


@app.command()
def nightly(
    inbox: Annotated[
        str, typer.Option("--inbox", help="Folder, bucket URL or STAC listing folder of scenes.")
    ],
    outbox: Annotated[
        str, typer.Option("--outbox", help="Folder or URL: outputs, catalog, city layer, report.")
    ],
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    threads_per_worker: ThreadsOpt = None,
    tls_ca_file: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="Retry scenes that failed before, even unchanged."),
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show progress bars.")
    ] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Process the scenes new in an inbox: results, road layers, catalog, merged city layer."""
    from roadnet.config import load_config
    from roadnet.pipeline.cluster import cluster_security
    from roadnet.pipeline.nightly.run import NightlyConfig
    from roadnet.pipeline.nightly.run import nightly as run_nightly

    cfg = load_config(NightlyConfig, config or "nightly", overrides=set_ or [])
    summary = run_nightly(
        inbox,
        outbox,
        config=cfg,
        scheduler=scheduler,
        workers=workers,
        threads_per_worker=threads_per_worker,
        security=cluster_security(ca_file=tls_ca_file, cert=tls_cert, key=tls_key),
        retry_failed=retry_failed,
        progress=progress,
    )
    typer.echo(summary.line())
    if summary.failed or summary.merge_error:
        sys.exit(1)  # some scene failed this run (its error is in the catalog and report)


app.command()(train)
app.command("evaluate-model")(evaluate_model)
app.command("calibrate-gate")(calibrate_gate)


@app.command()
def evaluate(
    pred: Annotated[
        str, typer.Option("--pred", help="RESULT.zarr (roadnet run) or roads.gpkg (vectorize).")
    ],
    truth: Annotated[
        Path,
        typer.Option("--truth", help="Label directory, or road vectors (truth.gpkg, .osm.pbf)."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON report (metrics.json).")],
    rho: Annotated[float, typer.Option("--rho", help="Relaxed-score tolerance, px.")] = 2.0,
    buffer_m: Annotated[
        float, typer.Option("--buffer-m", help="Buffer of the centerline scores, m.")
    ] = 2.0,
    errors: Annotated[
        Path | None, typer.Option("--errors", help="Error map PNG (hits, false alarms, misses).")
    ] = None,
    errors_task: Annotated[
        str, typer.Option("--errors-task", help="Task the error map shows.")
    ] = "surface",
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="Probability cut of every task (default: card, 0.5)."),
    ] = None,
    graph_source: Annotated[
        list[str] | None,
        typer.Option(
            "--graph-source",
            help="Vectorize with surface, centerline or combined; repeat to compare.",
        ),
    ] = None,
    truth_layer: Annotated[
        str | None, typer.Option("--truth-layer", help="Layer of a multi-layer truth file.")
    ] = None,
    by_class: Annotated[
        str | None,
        typer.Option("--by-class", help="Truth column (e.g. highway): completeness per class."),
    ] = None,
    scene: Annotated[
        Path | None, typer.Option("--scene", help="Error map background (default: the source).")
    ] = None,
    max_size: Annotated[
        int, typer.Option("--max-size", help="Longest side of the error map, px.")
    ] = 1600,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    threads_per_worker: ThreadsOpt = None,
    tls_ca_file: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: Overwrite = False,
) -> None:
    """Score a road layer against truth: pixel, buffer and APLS scores, and an error map."""
    from typing import get_args

    from roadnet.errors import InputError
    from roadnet.pipeline.preflight import check_evaluate_inputs

    # refused before dask, xarray and GDAL are imported (seconds)
    sources = [s for item in graph_source or [] for s in item.split(",") if s]
    check_evaluate_inputs(
        pred,
        truth,
        out,
        errors=errors,
        errors_task=errors_task,
        buffer_m=buffer_m,
        sources=bool(sources),
        by_class=by_class,
        overwrite=overwrite,
    )

    from roadnet.config import load_config
    from roadnet.pipeline.cluster import cluster_security
    from roadnet.pipeline.evaluate.run import evaluate as run_evaluate
    from roadnet.pipeline.evaluate.run import format_report
    from roadnet.pipeline.vectorize.centerlines import Source
    from roadnet.pipeline.vectorize.run import VectorizeConfig

    bad = [s for s in sources if s not in get_args(Source)]
    if bad:
        raise InputError(f"--graph-source {bad[0]!r}: use surface, centerline or combined")
    vcfg = load_config(VectorizeConfig, config or "vectorize", overrides=set_ or [])
    report = run_evaluate(
        pred,
        truth,
        out,
        rho=rho,
        buffer_m=buffer_m,
        errors=errors,
        errors_task=errors_task,
        threshold=threshold,
        graph_sources=sources or None,  # type: ignore[arg-type]
        vectorize=vcfg,
        truth_layer=truth_layer,
        by_class=by_class,
        scene=scene,
        max_size=max_size,
        scheduler=scheduler,
        workers=workers,
        threads_per_worker=threads_per_worker,
        security=cluster_security(ca_file=tls_ca_file, cert=tls_cert, key=tls_key),
        overwrite=overwrite,
    )
    typer.echo(format_report(report))
    typer.echo(f"{out}: written in {report['seconds']:.1f} s")


@app.command()
def export(
    result: Annotated[Path, typer.Argument(help="A roadnet run Zarr store (RESULT.zarr).")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output directory: one TASK.tif COG per task.")
    ],
    tasks: Annotated[
        str | None,
        typer.Option("--tasks", help="Comma-separated tasks (default: surface,edge,centerline)."),
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Write Cloud-Optimized GeoTIFFs of a result, for QGIS and other GDAL readers."""
    from roadnet.pipeline.preflight import check_export_inputs

    check_export_inputs(result, out, overwrite=overwrite)
    from roadnet.pipeline.inference.export import export_result, parse_tasks

    summary = export_result(result, out, tasks=parse_tasks(tasks), overwrite=overwrite)
    typer.echo(summary.line())


def _usage_errors() -> tuple[type[Exception], ...]:
    """Click's usage errors; newer typer vendors click, so its classes are not ``click``'s."""
    import click

    vendored = getattr(typer, "TyperException", None)
    return (click.ClickException,) + ((vendored,) if vendored is not None else ())


def main() -> None:
    """Console entry point: run the app, turn roadnet errors into one line and exit code 2."""
    try:
        app(standalone_mode=False)
    except RoadnetError as exc:
        if _state["verbose"]:
            log.exception("failed")
        typer.echo(f"roadnet: error: {exc}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("roadnet: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("roadnet: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        show = getattr(exc, "show", None)
        if isinstance(exc, _usage_errors()) and callable(show):
            show()  # the usage line and "Error: No such option ..." as click prints them
            sys.exit(getattr(exc, "exit_code", 2))
        if _state["verbose"]:
            raise
        typer.echo(
            f"roadnet: unexpected {type(exc).__name__}: {exc} (rerun with --verbose for the "
            "traceback)",
            err=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
