"""Option and argument types shared by the ``roadnet`` commands (typer ``Annotated`` aliases)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = [
    "BandsOpt",
    "ConfigOpt",
    "InputMaxOpt",
    "NodataOpt",
    "Overwrite",
    "PredictGsdOpt",
    "ProgressOpt",
    "SceneArg",
    "SchedulerOpt",
    "SetOpt",
    "ThreadsOpt",
    "TlsCaOpt",
    "TlsCertOpt",
    "TlsKeyOpt",
    "WorkersOpt",
]

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
