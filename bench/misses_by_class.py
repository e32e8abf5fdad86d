"""Where a result misses road surface: missed pixels per highway class of the truth.

    python bench/misses_by_class.py RESULT.zarr runs/synth/test-heldout [--cut 0.7]

Reads a ``roadnet run`` result and a ``roadnet synth`` directory (``labels/surface.tif``,
``truth.gpkg``), cuts the surface at ``--cut`` (default: the result's card cut-off) and
prints, per highway class, the class's surface pixels (each truth line buffered by half its
width and 0.6 m, the first class drawn wins where two overlap), the share of them missed,
and that class's share of all missed pixels; then how far the missed pixels' probabilities
were from the cut and how concentrated the misses are (connected stretches).
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result")
    parser.add_argument("synth_dir")
    parser.add_argument("--cut", type=float, default=None)
    args = parser.parse_args()

    import geopandas as gpd
    import rasterio
    from rasterio import features
    from scipy import ndimage

    from roadnet.pipeline.inference.store import open_result

    ds = open_result(args.result)
    cut = args.cut
    if cut is None:
        cut = float(json.loads(ds.attrs.get("roadnet:cutoffs", "{}")).get("surface", 0.5))
    prob = ds["surface"].to_numpy()
    with rasterio.open(f"{args.synth_dir}/labels/surface.tif") as src:
        truth = src.read(1) == 1
        transform, shape = src.transform, src.shape
    lines = gpd.read_file(f"{args.synth_dir}/truth.gpkg", layer="road_centerline")
    classes = sorted(lines["highway"].unique())
    owner = np.zeros(shape, np.uint8)
    for code, name in enumerate(classes, 1):
        sub = lines[lines["highway"] == name]
        shapes = (
            (geom.buffer(width / 2 + 0.6), 1)
            for geom, width in zip(sub.geometry, sub["width_m"].fillna(6.0), strict=True)
        )
        mask = features.rasterize(shapes, out_shape=shape, transform=transform) == 1
        owner[mask & (owner == 0)] = code
    missed = truth & ~(prob >= cut)
    total = int(missed.sum())
    tp = int((truth & (prob >= cut)).sum())
    fp = int((~truth & (prob >= cut)).sum())
    print(f"cut {cut:.2f}: surface IoU {tp / (tp + fp + total):.3f}, missed {total} px")
    print(f"{'class':16s} {'truth px':>10s} {'missed':>8s} {'share of misses':>16s}")
    for code, name in enumerate(classes, 1):
        mine = truth & (owner == code)
        lost = int((mine & missed).sum())
        rate = lost / max(int(mine.sum()), 1)
        print(f"{name:16s} {int(mine.sum()):10d} {rate:8.3f} {lost / max(total, 1):16.3f}")
    edges = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, cut]
    hist = np.histogram(prob[missed], bins=edges)[0] / max(total, 1)
    bins = zip(edges[:-1], edges[1:], hist, strict=True)
    spread = {f"{a:.1f}-{b:.2f}": round(float(h), 3) for a, b, h in bins}
    print("missed pixels by probability:", spread)
    labels, count = ndimage.label(missed)
    sizes = np.sort(np.bincount(labels.ravel())[1:])[::-1]
    print(f"{count} missed stretches; the 20 largest hold {sizes[:20].sum() / max(total, 1):.1%}")


if __name__ == "__main__":
    main()
