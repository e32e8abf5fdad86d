"""The model commands of ``roadnet``: ``train``, ``evaluate-model`` and ``calibrate-gate``.

:mod:`roadnet.pipeline.cli` registers them on its app. Heavy libraries are imported inside
the commands, as in the rest of the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from roadnet.pipeline.cli_options import Overwrite, SetOpt

if TYPE_CHECKING:
    from roadnet.model.evaluate import CardOr
    from roadnet.model.gsd import PredictGsd

__all__ = ["calibrate_gate", "evaluate_model", "train"]


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


def calibrate_gate(
    scenes: Annotated[
        list[str],
        typer.Argument(
            help="Scenes in the model's training looks (its training renders).", metavar="SCENE..."
        ),
    ],
    model: Annotated[
        Path, typer.Option("--model", help="The .keras model; its card is beside it.")
    ],
    margin: Annotated[
        float, typer.Option("--margin", help="Gate = this x the largest shift of the scenes.")
    ] = 1.0,
    statistics_only: Annotated[
        bool,
        typer.Option(
            "--statistics-only", help="Write the input statistics only; keep the card's gate."
        ),
    ] = False,
) -> None:
    """Set a model card's adapt gate and input statistics from scenes in its training looks."""
    from roadnet.errors import InputError
    from roadnet.pipeline.preflight import check_scene

    for scene in scenes:
        check_scene(scene)
    card = model.with_suffix(".json")
    if not model.is_file() or not card.is_file():
        raise InputError(f"{model}: needs the model file and its card {card.name} beside it")

    from roadnet.pipeline.inference.gate import calibrate_gate as calibrate
    from roadnet.pipeline.inference.gate import write_gate

    calibration = calibrate(str(model), scenes, margin=margin)
    for scene, shift in calibration.shifts.items():
        typer.echo(f"{scene}: shift {shift:.4f}")
    write_gate(card, calibration, gate=not statistics_only)
    gate = "kept" if statistics_only else f"{calibration.min_shift:.3f}"
    typer.echo(f"{card}: input statistics of {len(calibration.shifts)} scenes, adapt gate {gate}")


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
    adapt: bool | Literal["auto"],
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
        adapt=adapt,
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
    adapt: Annotated[
        bool | None,
        typer.Option(
            "--adapt/--no-adapt",
            help="First fit the model's normalization to each scene, as roadnet run --adapt "
            "(default: when the model card asks for it).",
        ),
    ] = None,
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
    if adapt and (record_predict_gsd is not None or record_cutoffs):
        raise InputError("--adapt scores a model; --record-cutoffs and --record-predict-gsd don't")
    fit: bool | Literal["auto"] = "auto" if adapt is None else adapt
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
            adapt=fit,
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
        adapt=fit,
    )
    if card is not None:
        from roadnet.model.card import attach_evaluation

        attach_evaluation(card, report, name=card_key)
    fitted = report.get("adapted")
    if fitted is not None:
        scored = "the fitted model" if fitted["applied"] else "the model as trained"
        if fitted.get("input_matched"):
            scored = "the fitted model, colours matched first,"
        typer.echo(
            f"fit to the scene: statistics shift {fitted['shift']:.3f}, least "
            f"{fitted['min_shift']:g}: {scored} scored"
        )
    for task, s in report["scores"].items():
        typer.echo(
            f"{task:<11} cut {s['threshold']:.2f}  IoU {s['iou']:.4f}  F1 {s['f1']:.4f}  "
            f"P {s['precision']:.4f}  R {s['recall']:.4f}  relaxed(rho={rho:g}) "
            f"F1 {s['relaxed_f1']:.4f}  P {s['relaxed_precision']:.4f}  "
            f"R {s['relaxed_recall']:.4f}"
        )
