"""GraphML of a city-sized road graph: the streamed writer against networkx's, side by side.

Builds the layers of a grid city (``--side`` × ``--side`` junctions, every block edge a
curved 12-vertex road, so ``2 · side · (side − 1)`` edges), then in one process, in turn
and ``--reps`` times each, writes its graph (a) the way ``roadnet vectorize`` did before:
``RoadLayers.graph()`` copied into a WKT graph and ``networkx.write_graphml`` (ElementTree:
the whole XML tree in memory), and (b) with the streamed writer of
``roadnet.pipeline.vectorize.layers``. Reports the wall time of a write and the traced
peak of a second one (``tracemalloc``: Python allocations, GEOS' own are not counted), and
checks that both files read back (``read_graph``) as the same graph.

    .venv/bin/python bench/bench_graphml.py --side 200 --reps 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import shapely

from roadnet.pipeline.vectorize.layers import RoadLayers, frame, read_graph, write_graphml

CRS = "EPSG:32635"


def grid_city(side: int, *, block_m: float = 80.0) -> RoadLayers:
    """Junctions on a ``side`` × ``side`` grid joined by wavy roads along the block edges."""
    ids = np.arange(side * side).reshape(side, side)
    x0, y0 = 385_000.0, 6_672_000.0
    t = np.linspace(0.0, 1.0, 12)
    bend = 3.0 * np.sin(np.pi * t)
    us, vs, lines = [], [], []
    for r in range(side):
        for c in range(side):
            x, y = x0 + c * block_m, y0 + r * block_m
            if c + 1 < side:
                us.append(ids[r, c])
                vs.append(ids[r, c + 1])
                lines.append(np.column_stack([x + t * block_m, y + bend]))
            if r + 1 < side:
                us.append(ids[r, c])
                vs.append(ids[r + 1, c])
                lines.append(np.column_stack([x + bend, y + t * block_m]))
    geoms = shapely.linestrings(lines)
    cols, rows = np.meshgrid(np.arange(side), np.arange(side))
    points = shapely.points(x0 + cols.ravel() * block_m, y0 + rows.ravel() * block_m)
    degree = np.bincount(np.concatenate([us, vs]), minlength=side * side)
    empty = frame(
        {
            "area_m2": np.zeros(0),
            "perimeter_m": np.zeros(0),
            "model_sha256": np.zeros(0, object),
            "geometry": np.zeros(0, object),
        },
        crs=CRS,
    )
    return RoadLayers(
        surface=empty,
        centerline=frame(
            {
                "u": np.array(us),
                "v": np.array(vs),
                "length_m": shapely.length(geoms),
                "geometry": geoms,
            },
            crs=CRS,
        ),
        nodes=frame({"id": ids.ravel(), "degree": degree, "geometry": points}, crs=CRS),
    )


def networkx_writer(layers: RoadLayers, path: Path) -> None:
    """The writer ``roadnet vectorize`` used before the streamed one."""
    graph = layers.graph()
    plain = nx.MultiGraph(**graph.graph)
    plain.add_nodes_from(graph.nodes(data=True))
    for u, v, data in graph.edges(data=True):
        plain.add_edge(u, v, length=data["length"], geometry=shapely.to_wkt(data["geometry"]))
    nx.write_graphml(plain, path)


def measure(
    write: Callable[[RoadLayers, Path], None], layers: RoadLayers, path: Path
) -> tuple[float, float]:
    """Seconds of one write, then the traced peak MiB of another (tracing slows Python down)."""
    start = time.perf_counter()
    write(layers, path)
    seconds = time.perf_counter() - start
    tracemalloc.start()
    write(layers, path)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak


def _summary(graph: nx.MultiGraph) -> tuple[list[tuple[int, int, float]], dict[int, Any]]:
    """The edges (as unordered node pairs with lengths, sorted) and the nodes of ``graph``."""
    edges = sorted((min(u, v), max(u, v), d["length"]) for u, v, d in graph.edges(data=True))
    return edges, dict(graph.nodes(data=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=200, help="junctions per grid side")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    layers = grid_city(args.side)
    edges, nodes = len(layers.centerline), len(layers.nodes)
    print(f"grid city: {nodes:,} nodes, {edges:,} edges")
    variants = {"(a) networkx": networkx_writer, "(b) streamed": write_graphml}
    times: dict[str, list[float]] = {k: [] for k in variants}
    peaks: dict[str, list[float]] = {k: [] for k in variants}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: Path(tmp) / f"{i}.graphml" for i, k in enumerate(variants)}
        for _ in range(args.reps):
            for name, write in variants.items():
                seconds, peak = measure(write, layers, paths[name])
                times[name].append(seconds)
                peaks[name].append(peak)
        a, b = (read_graph(p) for p in paths.values())
        same = _summary(a) == _summary(b)
        sizes = {k: p.stat().st_size / 2**20 for k, p in paths.items()}
    print("| writer | seconds (median) | traced peak MiB | file MiB |")
    print("| --- | ---: | ---: | ---: |")
    for name in variants:
        print(
            f"| {name} | {statistics.median(times[name]):.2f} | "
            f"{statistics.median(peaks[name]):.1f} | {sizes[name]:.1f} |"
        )
    ta, tb = (statistics.median(times[k]) for k in variants)
    pa, pb = (statistics.median(peaks[k]) for k in variants)
    print(f"(b) is {ta / tb:.2f}x faster, {pa / pb:.1f}x less traced memory; same graph: {same}")


if __name__ == "__main__":
    main()
