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
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: Overwrite = False,
) -> None:
    """Rasterize road vectors onto a scene's grid: surface, edge, centerline label GeoTIFFs."""
    from roadnet.pipeline.config import load_config
    from roadnet.pipeline.labels import LabelsConfig, make_labels

    cfg = load_config(LabelsConfig, config or "labels", overrides=set_ or [])
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
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: Overwrite = False,
) -> None:
    """Render an orthophoto-like scene from real OSM geometry, with labels and truth vectors."""
    from roadnet.pipeline.config import load_config
    from roadnet.pipeline.synth import SynthConfig, parse_size, synthesize

    cfg = load_config(
        SynthConfig,
        config,
        overrides=set_ or [],
        values={"gsd": gsd, "seed": seed, "size": parse_size(size) if size else None},
    )
    synthesize(osm, out, config=cfg, overwrite=overwrite)


@app.command()
def preview(
    raster: Annotated[Path, typer.Argument(help="Scene GeoTIFF to preview.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output PNG.")],
    labels_dir: Annotated[
        Path | None, typer.Option("--labels", help="Directory with label GeoTIFFs to overlay.")
    ] = None,
    max_size: Annotated[int, typer.Option("--max-size", help="Longest side in pixels.")] = 1600,
    overwrite: Overwrite = False,
) -> None:
    """Write a downsampled RGB quicklook PNG, optionally with labels overlaid."""
    from roadnet.pipeline.preview import make_preview

    make_preview(raster, out, labels_dir=labels_dir, max_size=max_size, overwrite=overwrite)


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
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(2)
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
