"""Foreign cameras on familiar geometry: a held-out crop re-coloured, to test adapting.

    python bench/photometric_variants.py runs/synth/test-heldout runs/foreign
    for v in original haze dark-warm swap-gamma; do
      roadnet evaluate-model runs/foreign/$v/scene.tif runs/foreign/$v/labels \\
          --threshold card [--adapt | --no-adapt]
    done

Cuts a 4096 x 4096 px window (from col 1000, row 1000) of a rendered scene and its labels
and writes it four ways, each ``OUT/NAME/scene.tif`` with ``OUT/NAME/labels/``:
``original``; ``haze`` (``0.45 x + 120``: low contrast, bright); ``dark-warm`` (red x 0.75
+ 10, green x 0.6, blue x 0.45: an underexposed, warm camera); ``swap-gamma`` (bands
B, R, G, then gamma 0.6: a wrong band order). The road geometry is the same in all four, so
the scores differ by the look alone.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

VARIANTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "original": lambda x: x,
    "haze": lambda x: 0.45 * x + 120,
    "dark-warm": lambda x: np.stack([0.75 * x[0] + 10, 0.6 * x[1], 0.45 * x[2]]),
    "swap-gamma": lambda x: 255 * (x[[2, 0, 1]] / 255) ** 0.6,
}


def _write(path: Path, data: np.ndarray, like: Path, window: object) -> None:
    import rasterio

    with rasterio.open(like) as src:
        profile = src.profile | {
            "width": data.shape[2],
            "height": data.shape[1],
            "count": data.shape[0],
            "transform": src.window_transform(window),
        }
    profile.pop("photometric", None)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("render", type=Path, help="a roadnet synth output (scene.tif, labels/)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args()

    import rasterio
    from rasterio.windows import Window

    window = Window(1000, 1000, args.size, args.size)
    with rasterio.open(args.render / "scene.tif") as src:
        image = src.read(window=window).astype(np.float32)
    for name, look in VARIANTS.items():
        out = args.out / name
        (out / "labels").mkdir(parents=True, exist_ok=True)
        scene = np.clip(look(image), 0, 255).astype(np.uint8)
        _write(out / "scene.tif", scene, args.render / "scene.tif", window)
        for task in ("surface", "edge", "centerline"):
            label = args.render / "labels" / f"{task}.tif"
            with rasterio.open(label) as src:
                _write(out / "labels" / f"{task}.tif", src.read(window=window), label, window)
        print(out)


if __name__ == "__main__":
    main()
