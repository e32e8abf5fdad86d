"""Time and peak memory of `roadnet synth`, plus the renderer's throughput on one core.

Usage:
    .venv/bin/python bench/bench_synth.py --size 4096x4096 [--size 20000x20000] [--osm helsinki]

Each size runs `roadnet synth` in a child process, so its peak RSS is its own (read with
psutil every 0.2 s and from the kernel's ru_maxrss of that child); numpy and GDAL get one
thread. Prints one Markdown table row per size. `--render-only` times render_window
(rasterizing + drawing, no I/O) alone on the windows of a 4096 x 4096 scene, in CPU seconds
so that other load on the machine counts less.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

SINGLE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "GDAL_NUM_THREADS": "1",
}


def run_synth(osm: str, size: str, gsd: float, workdir: Path) -> dict[str, float]:
    out = workdir / f"synth-{size}"
    cmd = [
        sys.executable,
        "-m",
        "roadnet.pipeline.cli",
        "synth",
        "--osm",
        osm,
        "--gsd",
        str(gsd),
        "--size",
        size,
        "--seed",
        "0",
        "--out",
        str(out),
        "--overwrite",
    ]
    env = {**os.environ, **SINGLE_THREAD, "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        with contextlib.suppress(psutil.NoSuchProcess):
            peak = max(peak, ps.memory_info().rss)
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"synth failed ({code}): {stderr[-2000:]}")
    kernel_peak = usage.ru_maxrss * 1024  # this child's own peak (Linux reports KiB)
    width, height = (int(v) for v in size.lower().split("x"))
    scene_mb = (out / "scene.tif").stat().st_size / 2**20
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "mpx_per_s": width * height / 1e6 / seconds,
        "mpx_per_cpu_s": width * height / 1e6 / cpu,
        "peak_gib": max(peak, kernel_peak) / 2**30,
        "scene_mib": scene_mb,
    }


def render_only(osm: str, gsd: float) -> float:
    """Megapixels per CPU second of window_layers + render_window over a 4096 x 4096 scene."""
    from roadnet.pipeline.scenes._render import halo_px, render_window
    from roadnet.pipeline.scenes._scenery import window_layers
    from roadnet.pipeline.scenes.synth import SynthConfig, plan_scene

    config = SynthConfig(gsd=gsd, seed=0, size=(4096, 4096))
    plan = plan_scene(osm, config=config)
    params = config.render_params()
    halo = halo_px(params)
    step = config.window_px
    start = time.process_time()
    for row in range(0, plan.height, step):
        for col in range(0, plan.width, step):
            layers = window_layers(
                plan.scenery,
                transform=plan.transform,
                row0=row - halo,
                col0=col - halo,
                height=step + 2 * halo,
                width=step + 2 * halo,
                car_density=config.car_density,
            )
            render_window(layers, params=params, crop=halo)
    return plan.width * plan.height / 1e6 / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", action="append", default=[], help="WxH, repeatable")
    parser.add_argument("--osm", default="helsinki")
    parser.add_argument("--gsd", type=float, default=0.3)
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    if args.render_only:
        rate = render_only(args.osm, args.gsd)
        print(f"window_layers + render_window: {rate:.2f} Mpx per CPU second (one thread)")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        print(
            "| size | wall (s) | CPU (s) | Mpx per wall s | Mpx per CPU s | peak RSS (GiB) "
            "| scene.tif (MiB) |"
        )
        print("|---|---|---|---|---|---|---|")
        for size in args.size:
            r = run_synth(args.osm, size, args.gsd, Path(tmp))
            print(
                f"| {size} | {r['seconds']:.0f} | {r['cpu_seconds']:.0f} | "
                f"{r['mpx_per_s']:.2f} | {r['mpx_per_cpu_s']:.2f} | "
                f"{r['peak_gib']:.2f} | {r['scene_mib']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
