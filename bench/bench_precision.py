"""Compute precision on this machine: float32 against mixed bfloat16 (and float16), side by side.

    python bench/bench_precision.py --scene runs/synth/val-gsd-31/scene.tif --json /tmp/p.json

Three parts, each alternating the precisions inside every repetition (ratios within a
repetition, medians kept; these machines are noisy):

- ``model``: one forward pass of a 1 x 640 x 640 x 3 batch (a 512 px chunk with its 64 px
  overlap, the block ``roadnet run`` feeds the model) and one training step (batch 4 of 256²
  crops, the project's losses, Adam) for each variant in ``--variants``, untrained weights;
- ``window``: the shipped model on the centre 640² window of ``--scene`` rebuilt under each
  precision (``mixed_float16`` too, which this CPU emulates slowly): how far its codes move;
- ``run``: ``roadnet run`` of ``--scene`` with the shipped model (or ``--model``) on a
  LocalCluster of 1 worker x 2 threads, ``mixed_precision`` off and on;
- ``codes``: how far the stored codes (probability x 254) of the two runs differ: the largest
  and mean difference per task, the share of pixels more than 2 codes apart, and the share
  that changes side of the cut-off the result records (the card's, for its pixel size).

On a CPU, ``mixed_precision=true`` means bfloat16 where the CPU has it natively (AMX or
AVX-512 BF16, see :func:`roadnet.model.precision.cpu_has_bfloat16`).

The ``model`` part runs on any Keras backend (``KERAS_BACKEND=jax`` or ``torch``; the
other parts need TensorFlow): ``bench/device_check.sh`` uses that on GPU machines whose
image has PyTorch and JAX but no TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TASK_ORDER = ("surface", "edge", "centerline")


def _best_of(fn: Any, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _forward(model: Any) -> Any:
    """The compiled forward pass, returning the outputs on the host.

    A ``tf.function`` on TensorFlow (what ``roadnet run`` traces), Keras' own compiled
    predict step on the other backends (jit on JAX). Both copy the outputs to the host, so
    a GPU's work is finished when the call returns.
    """
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        fn = tf.function(
            lambda x: [tf.cast(v, tf.float32) for v in model(x, training=False).values()]
        )
        return lambda x: [np.asarray(v) for v in fn(x)]
    return model.predict_on_batch


def _devices(backend: str) -> list[str]:
    """The devices the Keras backend computes on (a GPU's name, when it has one)."""
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices()]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] or ["cpu"]
    import tensorflow as tf

    return [d.name for d in tf.config.list_physical_devices()]


def _model_part(variants: list[str], precisions: list[str], reps: int) -> list[dict[str, Any]]:
    import keras

    from roadnet.model.losses import compile_losses
    from roadnet.model.precision import policy_scope
    from roadnet.model.roadnet import build_roadnet, output_names
    from roadnet.model.train import load_variant

    rng = np.random.default_rng(0)
    x_infer = rng.uniform(0, 255, (1, 640, 640, 3)).astype(np.float32)
    x_train = rng.uniform(0, 255, (4, 256, 256, 3)).astype(np.float32)
    y_train = {
        k: (rng.uniform(size=(4, 256, 256, 1)) > 0.9).astype(np.float32) for k in output_names()
    }
    rows = []
    for name in variants:
        built = {}
        for precision in precisions:
            keras.utils.set_random_seed(0)
            with policy_scope(precision):  # type: ignore[arg-type]
                model = build_roadnet(load_variant(name))
            losses, weights = compile_losses()
            model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=losses, loss_weights=weights)
            infer = _forward(model)
            infer(x_infer)
            model.train_on_batch(x_train, y_train)  # trace and build the optimizer
            built[precision] = (model, infer)
        for rep in range(reps):
            row: dict[str, Any] = {"variant": name, "rep": rep + 1}
            for precision, (model, infer) in built.items():
                row[f"infer_s_{precision}"] = round(_best_of(lambda f=infer: f(x_infer), 3), 4)
                row[f"train_s_{precision}"] = round(
                    _best_of(lambda m=model: m.train_on_batch(x_train, y_train), 3), 4
                )
            for precision in precisions[1:]:
                for what in ("infer", "train"):
                    row[f"{what}_speedup_{precision}"] = round(
                        row[f"{what}_s_float32"] / row[f"{what}_s_{precision}"], 3
                    )
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def _window_part(scene: Path, precisions: list[str]) -> dict[str, Any]:
    """The shipped model on the scene's centre 640² window: codes per precision vs float32."""
    import rasterio
    from rasterio.windows import Window

    from roadnet.model.io import default_model_path, load_model
    from roadnet.model.precision import with_policy

    with rasterio.open(scene) as src:
        window = Window(src.width // 2 - 320, src.height // 2 - 320, 640, 640)
        x = src.read([1, 2, 3], window=window).transpose(1, 2, 0)[None].astype(np.float32)
    model = load_model(default_model_path())

    def codes(m: Any) -> np.ndarray:
        out = m(x, training=False)
        logits = np.concatenate([np.asarray(out[t], np.float32) for t in TASK_ORDER], axis=-1)
        return np.round(254 / (1 + np.exp(-logits))).astype(np.int16)[0]

    plain = codes(model)
    report: dict[str, Any] = {}
    for precision in ["mixed_float16", *precisions[1:]]:
        d = np.abs(codes(with_policy(model, precision)) - plain)  # type: ignore[arg-type]
        report[precision] = {
            task: {
                "max": int(d[..., i].max()),
                "mean": round(float(d[..., i].mean()), 4),
                "over_2_codes": round(float((d[..., i] > 2).mean()), 6),
            }
            for i, task in enumerate(TASK_ORDER)
        }
    return report


def _run_part(scene: Path, model: str | None, reps: int) -> tuple[list[dict[str, Any]], Path]:
    from distributed import Client, LocalCluster

    from roadnet.pipeline.inference.run import RunConfig, run_to_zarr

    work = Path(tempfile.mkdtemp(prefix="bench-precision-"))
    rows = []
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=True) as cluster,
        Client(cluster) as client,
    ):
        for rep in range(reps):
            row: dict[str, Any] = {"rep": rep + 1}
            for mixed in (False, True):
                out = work / f"mixed-{mixed}.zarr"
                shutil.rmtree(out, ignore_errors=True)
                summary = run_to_zarr(
                    scene, out, model=model, config=RunConfig(mixed_precision=mixed),
                    client=client, progress=False,
                )  # fmt: skip
                row[f"seconds_mixed_{mixed}"] = round(summary.seconds, 2)
            row["speedup"] = round(row["seconds_mixed_False"] / row["seconds_mixed_True"], 3)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows, work


def _codes_part(work: Path) -> dict[str, Any]:
    import zarr

    from roadnet.pipeline.inference.run import result_cutoffs

    plain = zarr.open_group(work / "mixed-False.zarr", mode="r")
    mixed = zarr.open_group(work / "mixed-True.zarr", mode="r")
    cuts = result_cutoffs(plain.attrs)
    out: dict[str, Any] = {}
    for task in ("surface", "edge", "centerline"):
        a = np.asarray(plain[task][:], np.int16)
        b = np.asarray(mixed[task][:], np.int16)
        valid = (a != 255) & (b != 255)
        d = np.abs(a - b)[valid]
        cut = cuts.get(task, 0.5) * 254
        flips = ((a >= cut) != (b >= cut))[valid]
        out[task] = {
            "max": int(d.max()),
            "mean": round(float(d.mean()), 4),
            "over_2_codes": round(float((d > 2).mean()), 6),
            "flips_at_cutoff": round(float(flips.mean()), 6),
            "cutoff": round(cut / 254, 3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="roadnet-lite,roadnet")
    parser.add_argument("--precisions", default="float32,mixed_bfloat16")
    parser.add_argument("--scene", type=Path, help="a scene for the run and codes parts")
    parser.add_argument("--model", help="the .keras model of the run part (default: shipped)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import keras

    from roadnet.model.precision import cpu_has_bfloat16

    backend = keras.backend.backend()
    if backend == "tensorflow":
        from roadnet.model.runtime import configure_tensorflow

        configure_tensorflow(threads=2)
    elif args.scene:
        parser.error(f"--scene needs the TensorFlow backend (roadnet run); this is {backend}")
    report: dict[str, Any] = {
        "backend": backend,
        "devices": _devices(backend),
        "cpu_has_bfloat16": cpu_has_bfloat16(),
    }
    print(json.dumps(report), flush=True)
    precisions = args.precisions.split(",")
    report["model"] = _model_part(args.variants.split(","), precisions, args.reps)
    if args.scene:
        report["window"] = _window_part(args.scene, precisions)
        print(json.dumps(report["window"]), flush=True)
        report["run"], work = _run_part(args.scene, args.model, args.reps)
        report["codes"] = _codes_part(work)
        print(json.dumps(report["codes"]), flush=True)
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
