"""The ``roadnet`` command line: parse arguments, call one library function per command.

Heavy libraries are imported inside the commands so ``roadnet --help`` and
``roadnet --version`` never import TensorFlow, dask or rasterio.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from roadnet import __version__
from roadnet.errors import RoadnetError

if TYPE_CHECKING:
    from roadnet.model.evaluate import CardOr
    from roadnet.model.gsd import PredictGsd

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

Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace existing outputs instead of refusing.")
]
ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="YAML config file, or the name of a bundled config."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value: dotted.key=value (repeatable)."),
]
SceneArg = Annotated[str, typer.Argument(help="Scene raster: local path or fsspec URL.")]
BandsOpt = Annotated[
    str | None, typer.Option("--bands", help="1-based R,G,B bands, e.g. 3,2,1 or 1,1,1.")
]
InputMaxOpt = Annotated[
    float | None, typer.Option("--input-max", help="Scene value mapped to 255.")
]
NodataOpt = Annotated[
    float | None, typer.Option("--nodata", help="Nodata value overriding the file's.")
]
PredictGsdOpt = Annotated[
    str | None,
    typer.Option(
        "--predict-gsd",
        help="Pixel size the model sees: auto (the model card's predict_gsd for coarser "
        "scenes, its finest for finer ones), native, or metres. Outputs stay on the scene's "
        "grid.",
    ),
]
SchedulerOpt = Annotated[
    str | None,
    typer.Option("--scheduler", help="Dask scheduler address (default: $DASK_SCHEDULER_ADDRESS)."),
]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", help="Local cluster worker processes.")
]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads-per-worker", help="Threads per local worker.")
]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")]
TlsCaOpt = Annotated[
    Path | None,
    typer.Option(
        "--tls-ca-file",
        help="CA of a tls:// scheduler (default: Dask config distributed.comm.tls.ca-file).",
    ),
]
TlsCertOpt = Annotated[
    Path | None,
    typer.Option(
        "--tls-cert", help="Client certificate (default: distributed.comm.tls.client.cert)."
    ),
]
TlsKeyOpt = Annotated[
    Path | None,
    typer.Option("--tls-key", help="Client key (default: distributed.comm.tls.client.key)."),
]


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
            help="Appearance preset (configs/styles/: temperate, arid, heldout) or a style "
            "YAML; its ranges are drawn from the seed. --gsd and --set keys win over it.",
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
    tiles: Annotated[int, typer.Option("--tiles", help="Tiles drawn from the scene.")] = 64,
    tile_px: Annotated[int, typer.Option("--tile-px", help="Their side, px.")] = 512,
    strength: Annotated[
        float,
        typer.Option("--strength", help="Weight of the scene's statistics in [0, 1]."),
    ] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Where the tiles are drawn.")] = 0,
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


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory.")],
    config: Annotated[
        str, typer.Option("--config", "-c", help="Training YAML (e.g. configs/train-lite.yaml).")
    ],
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in OUT from its last checkpoint.")
    ] = False,
    set_: SetOpt = None,
    overwrite: Overwrite = False,
) -> None:
    """Train RoadNet on labelled scenes; writes checkpoints, logs, curves, model and card."""
    from roadnet.config import load_config
    from roadnet.model.train import TrainConfig
    from roadnet.model.train import train as run_training

    cfg = load_config(TrainConfig, config, overrides=set_ or [])
    result = run_training(cfg, out, overwrite=overwrite, resume=resume)
    metrics = result.card["metrics"]
    typer.echo(
        f"{result.model_path}: best val_mean_f1 {metrics['best']:.4f} at epoch "
        f"{metrics['best_epoch']} ({result.card['content_hash']})"
    )


def _evaluate_gap(
    in_style: tuple[Path, Path],
    out_of_style: tuple[Path, Path],
    *,
    model: Path | None,
    out: Path | None,
    cuts: CardOr,
    rho: float,
    card: Path | None,
    card_key: str,
    overwrite: bool,
    predict_gsd: PredictGsd,
    tta: int,
) -> None:
    """``evaluate-model --out-of-style``: both scenes side by side, then the gap."""
    from roadnet.model.evaluate import evaluate_gap_on_files

    report = evaluate_gap_on_files(
        in_style,
        out_of_style,
        model_path=model,
        out=out,
        threshold=cuts,
        rho=rho,
        overwrite=overwrite,
        predict_gsd=predict_gsd,
        tta=tta,
    )
    if card is not None:
        from roadnet.model.card import attach_evaluation

        attach_evaluation(card, report, name=card_key)
    typer.echo(f"in-style: {in_style[0]}\nout-of-style: {out_of_style[0]}")
    typer.echo(
        f"{'task':<11} {'IoU in':>7} {'out':>7} {'gap':>7}   "
        f"{'relaxed F1 in':>13} {'out':>7} {'gap':>7}   (rho={rho:g})"
    )
    for task, gap in report["gap"].items():
        a, b = report["in_style"]["scores"][task], report["out_of_style"]["scores"][task]
        typer.echo(
            f"{task:<11} {a['iou']:7.4f} {b['iou']:7.4f} {gap['iou']:+7.4f}   "
            f"{a['relaxed_f1']:13.4f} {b['relaxed_f1']:7.4f} {gap['relaxed_f1']:+7.4f}"
        )


def _record_predict_gsd(
    scenes: list[tuple[Path, Path]],
    *,
    model: Path | None,
    card: Path,
    candidates: str,
    grid: list[float],
    rho: float,
    overwrite: bool,
) -> None:
    """``evaluate-model --record-predict-gsd``: choose the pixel size and its cut-offs."""
    from roadnet.errors import InputError
    from roadnet.model.gsd import choose_predict_gsd_on_files

    try:
        gsds = [float(v) for v in candidates.split(",")]
    except ValueError:
        raise InputError(f"--record-predict-gsd {candidates!r}: metres, e.g. 0.4,0.3") from None
    entry = choose_predict_gsd_on_files(
        scenes, card_path=card, candidates=gsds, model_path=model, rho=rho, grid=grid,
        overwrite=overwrite,
    )  # fmt: skip
    names = ", ".join(str(s) for s, _ in scenes)
    cuts = " ".join(f"{t} {c:.2f}" for t, c in entry["cutoffs"].items())
    typer.echo(
        f"{card}: {entry['key'].removesuffix('.gsd')} {entry['gsd']:g} m, cut-offs {cuts}, "
        f"chosen on {names} (rho={rho:g})"
    )
    for tried in entry["chosen_on"]["tried"]:
        at = "native" if tried["gsd"] == "native" else f"{tried['gsd']:g} m"
        per = "  ".join(
            f"{t} {v:.3f} at {tried['cutoffs'][t]:.2f}" for t, v in tried["at_cutoffs"].items()
        )
        typer.echo(
            f"  at {at}: mean {tried['mean']:.4f}  ({per}; at the card's cut-offs "
            f"{tried['mean_at_card_cutoffs']:.4f})"
        )


def _record_cutoffs(
    scene: Path,
    labels_dir: Path,
    *,
    model: Path | None,
    card: Path,
    out: Path | None,
    window: tuple[int, int, int, int] | None,
    grid: list[float],
    cuts: CardOr,
    rho: float,
    overwrite: bool,
) -> None:
    """``evaluate-model --record-cutoffs``: choose the cut-offs, write them to the card."""
    from roadnet.model.cutoffs import DEFAULT_GRID, record_cutoffs_on_files

    result = record_cutoffs_on_files(
        scene,
        labels_dir,
        card_path=card,
        model_path=model,
        out=out,
        window=window,
        grid=grid or DEFAULT_GRID,
        threshold=cuts,
        rho=rho,
        overwrite=overwrite,
    )
    typer.echo(f"{card}: cut-offs chosen on {scene} (rho={rho:g})")
    for task, s in result["cutoffs_chosen_on"]["scores"].items():
        typer.echo(
            f"{task:<11} cut {result['cutoffs'][task]:.2f}  {s['score']} {s['at_cutoff']:.4f}"
            f"  at 0.5 {s['at_0.5']:.4f}  ({s['gain']:+.4f})"
        )


@app.command("evaluate-model")
def evaluate_model(
    scene: Annotated[Path, typer.Argument(help="Scene GeoTIFF (R, G, B).")],
    labels_dir: Annotated[
        Path, typer.Argument(help="Directory with surface.tif, edge.tif, centerline.tif.")
    ],
    model: Annotated[
        Path | None, typer.Option("--model", help=".keras model (default: the shipped one).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="JSON report.")] = None,
    window: Annotated[
        str | None, typer.Option("--window", help="Pixel window col0,row0,col1,row1.")
    ] = None,
    threshold: Annotated[
        str,
        typer.Option(
            "--threshold",
            help="Probability cut: 0.5, or per task surface=0.6,edge=0.5,..., or card (the "
            "model card's cut-offs; those of its predict_gsd when the scene is resampled).",
        ),
    ] = "0.5",
    sweep: Annotated[
        str | None, typer.Option("--sweep", help="Also score these cuts, e.g. 0.3,0.5,0.7.")
    ] = None,
    rho: Annotated[float, typer.Option("--rho", help="Relaxed-score tolerance, px.")] = 2.0,
    card: Annotated[
        Path | None,
        typer.Option("--card", help="Model card JSON to record the scores in (same model)."),
    ] = None,
    card_key: Annotated[
        str, typer.Option("--card-key", help="Name of the evaluation in the card.")
    ] = "held_out",
    record_cutoffs: Annotated[
        bool,
        typer.Option(
            "--record-cutoffs",
            help="Choose each task's cut-off on this scene over --sweep (default "
            "0.2,0.25,...,0.8) and write them to --card (the card beside the model is the one "
            "`roadnet run` reads), instead of an evaluation.",
        ),
    ] = False,
    out_of_style: Annotated[
        Path | None,
        typer.Option(
            "--out-of-style",
            help="A second scene, in a style the model never saw (e.g. `roadnet synth --style "
            "heldout`): report both scenes side by side and the generalization gap.",
        ),
    ] = None,
    out_of_style_labels: Annotated[
        Path | None,
        typer.Option(
            "--out-of-style-labels",
            help="Labels of --out-of-style (default: the labels/ folder beside it).",
        ),
    ] = None,
    predict_gsd: Annotated[
        str,
        typer.Option(
            "--predict-gsd",
            help="Pixel size the model sees, as `roadnet run --predict-gsd`: auto, native, "
            "or metres.",
        ),
    ] = "auto",
    record_predict_gsd: Annotated[
        str | None,
        typer.Option(
            "--record-predict-gsd",
            help="Choose the pixel size to predict at on this (validation) scene and any "
            "--also-scene, among their own and these, e.g. 0.45,0.4,0.35,0.3, each at its "
            "best cut-offs over --sweep (default 0.2,0.25,...,0.8); write both to --card.",
        ),
    ] = None,
    also_scene: Annotated[
        list[Path] | None,
        typer.Option(
            "--also-scene",
            help="Another validation scene for --record-predict-gsd (labels/ beside it); "
            "repeatable.",
        ),
    ] = None,
    tta: Annotated[
        int,
        typer.Option(
            "--tta",
            help="Average the probabilities over 1, 2, 4 or 8 flipped / turned views of each "
            "tile, as `roadnet run --tta`.",
        ),
    ] = 1,
    overwrite: Overwrite = False,
) -> None:
    """Score a model on a labelled scene: pixel and relaxed precision / recall / F1 / IoU."""
    from roadnet.errors import InputError
    from roadnet.model.evaluate import evaluate_model_on_files, parse_cuts, parse_thresholds
    from roadnet.model.gsd import parse_predict_gsd

    cuts = parse_thresholds(threshold)
    gsd = parse_predict_gsd(predict_gsd)
    if tta != 1 and (record_predict_gsd is not None or record_cutoffs):
        raise InputError("--tta scores a model; --record-cutoffs and --record-predict-gsd use 1")
    if record_predict_gsd is not None:
        if card is None or out_of_style is not None or record_cutoffs:
            raise InputError("--record-predict-gsd needs --card, and no --out-of-style")
        scenes = [(scene, labels_dir)] + [(s, s.parent / "labels") for s in also_scene or []]
        _record_predict_gsd(
            scenes, model=model, card=card, candidates=record_predict_gsd, rho=rho,
            grid=parse_cuts(sweep) if sweep else [], overwrite=overwrite,
        )  # fmt: skip
        return
    if record_cutoffs and (card is None or out_of_style is not None):
        raise InputError("--record-cutoffs needs --card, and no --out-of-style")
    if out_of_style is not None:
        if window or sweep:
            raise InputError("--out-of-style scores whole scenes: drop --window and --sweep")
        _evaluate_gap(
            (scene, labels_dir),
            (out_of_style, out_of_style_labels or out_of_style.parent / "labels"),
            model=model,
            out=out,
            cuts=cuts,
            rho=rho,
            card=card,
            card_key=card_key,
            overwrite=overwrite,
            predict_gsd=gsd,
            tta=tta,
        )
        return
    sweep_cuts = parse_cuts(sweep) if sweep else []
    win = None
    if window:
        try:
            c0, r0, c1, r1 = (int(v) for v in window.split(","))
        except ValueError:
            raise InputError(f"--window {window!r} is not col0,row0,col1,row1") from None
        win = (c0, r0, c1, r1)
    if record_cutoffs and card is not None:
        _record_cutoffs(
            scene,
            labels_dir,
            model=model,
            card=card,
            out=out,
            window=win,
            grid=sweep_cuts,
            cuts=cuts,
            rho=rho,
            overwrite=overwrite,
        )
        return
    report = evaluate_model_on_files(
        scene,
        labels_dir,
        model_path=model,
        out=out,
        window=win,
        threshold=cuts,
        rho=rho,
        sweep=sweep_cuts,
        overwrite=overwrite,
        predict_gsd=gsd,
        tta=tta,
    )
    if card is not None:
        from roadnet.model.card import attach_evaluation

        attach_evaluation(card, report, name=card_key)
    for task, s in report["scores"].items():
        typer.echo(
            f"{task:<11} cut {s['threshold']:.2f}  IoU {s['iou']:.4f}  F1 {s['f1']:.4f}  "
            f"P {s['precision']:.4f}  R {s['recall']:.4f}  relaxed(rho={rho:g}) "
            f"F1 {s['relaxed_f1']:.4f}  P {s['relaxed_precision']:.4f}  "
            f"R {s['relaxed_recall']:.4f}"
        )


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
