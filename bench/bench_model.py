"""Forward throughput of the RoadNet variants on this machine, against its float32 matmul peak.

For each variant (untrained weights: the cost does not depend on the values) and batch size,
times the compiled forward pass ``model(x, training=False)`` on ``size``×``size`` inputs and
reports megapixels per second and achieved GFLOP/s. FLOPs are counted analytically from the
convolutions (2 × output pixels × k² × C_in × C_out; batch norm, activations, pooling and
upsampling are not counted, so the achieved figure is a slight underestimate). The peak is the
best of numpy and TensorFlow float32 matmuls (n = 2048) on the same threads.

    .venv/bin/python bench/bench_model.py --size 256 --batches 1 4 8 --out bench-model.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import numpy as np


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    flops = 2.0 * n**3

    def best(fn: Any) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return flops / min(times) / 1e9

    ta, tb = tf.constant(a), tf.constant(b)
    return {
        "numpy": best(lambda: a @ b),
        "tensorflow": best(lambda: tf.matmul(ta, tb).numpy()),
    }


def conv_flops(model: Any, size: int) -> float:
    """FLOPs of every convolution of a RoadNet forward pass on one ``size``×``size`` image."""
    import keras

    from roadnet.model.layers import ConvBNAct, SideOutput

    convs = []
    for layer in model.layers:
        if isinstance(layer, ConvBNAct):
            convs.append((layer, layer.conv.kernel.shape))
        elif isinstance(layer, SideOutput):
            convs.append((layer, layer.score.kernel.shape))
        elif isinstance(layer, keras.layers.Conv2D):
            convs.append((layer, layer.kernel.shape))
    probe = keras.Model(model.input, [layer.input for layer, _ in convs])
    shapes = [tuple(t.shape) for t in probe(np.zeros((1, size, size, 3), np.float32))]
    total = 0.0
    for (_, (kh, kw, cin, cout)), shape in zip(convs, shapes, strict=True):
        total += 2.0 * shape[1] * shape[2] * kh * kw * cin * cout
    return total


def time_forward(model: Any, *, batch: int, size: int, seconds: float) -> float:
    """Median seconds of one compiled forward pass of ``batch`` images."""
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)), tf.float32)
    fn(x)  # trace
    fn(x)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < seconds and len(times) < 50):
        t = time.perf_counter()
        out = fn(x)
        _ = out["surface"].numpy()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["roadnet-lite", "roadnet"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--seconds", type=float, default=6.0, help="timing budget per case")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()

    from roadnet.model.roadnet import build_roadnet
    from roadnet.model.train import load_variant

    peak = matmul_peak_gflops()
    peak_best = max(peak.values())
    rows = []
    for name in args.variants:
        model = build_roadnet(load_variant(name))
        flops = conv_flops(model, args.size)
        for batch in args.batches:
            seconds = time_forward(model, batch=batch, size=args.size, seconds=args.seconds)
            mpx = batch * args.size**2 / seconds / 1e6
            gflops = batch * flops / seconds / 1e9
            rows.append(
                {
                    "variant": name,
                    "parameters": int(model.count_params()),
                    "batch": batch,
                    "size": args.size,
                    "seconds_per_batch": round(seconds, 4),
                    "mpx_per_s": round(mpx, 3),
                    "gflop_per_image": round(flops / 1e9, 3),
                    "gflop_per_s": round(gflops, 2),
                    "fraction_of_peak": round(gflops / peak_best, 3),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "matmul_peak_gflops": {k: round(v, 1) for k, v in peak.items()},
        },
        "rows": rows,
    }
    print("| variant | batch | Mpx/s | GFLOP/s | of peak |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['batch']} | {r['mpx_per_s']:.2f} | {r['gflop_per_s']:.1f} "
            f"| {100 * r['fraction_of_peak']:.0f}% |"
        )
    print(f"matmul peak (float32, n=2048): {result['machine']['matmul_peak_gflops']} GFLOP/s")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
