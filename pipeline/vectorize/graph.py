"""The centerline road graph's join: per-chunk skeleton pieces into one pruned, simplified graph.

The pieces come from :mod:`roadnet.pipeline.vectorize.centerlines`. Each is a list of pixel
polylines in global pixel ``(row, col)`` coordinates (int64, so scenes wider than 32767 px
work). A polyline ends at a skan node (junction or endpoint) or at a *border pixel*, where
the skeleton path passes from one chunk's links to a neighbour's. Both chunks end their
polylines at the same border pixel, so the join is exact: nodes are keyed by their global
pixel and the pieces' polylines simply become the edges of one ``networkx.MultiGraph``.

:func:`join_pieces` then, in this order:

1. contracts every node of degree 2 (the border pixels, and the start pixels skan picks for
   isolated loops), so a road crossing many chunks becomes one edge; a loop with no
   junction keeps one node, its smallest pixel;
2. prunes spurs: edges with a degree-1 end that are shorter than ``prune_m``, all of them
   at once, then contracts the junctions left with degree 2, and repeats until no spur is
   left (a fork of short spurs goes entirely; an isolated segment shorter than ``prune_m``
   is removed as well);
3. merges junctions joined by an edge shorter than ``merge_m`` (an oblique crossing of two
   wide roads thins into two Y junctions a few px apart; skan keeps adjacent junction
   pixels as separate nodes): the node of higher degree survives, the other's edges are
   extended along the short edge so geometry stays connected;
4. maps pixel centres to map coordinates, ``T * (col + 0.5, row + 0.5)``, and simplifies
   every edge with ``shapely.simplify`` (topology-preserving Douglas-Peucker; it keeps the
   endpoints, so edges still meet at their nodes).

Lengths are in the units of the transform's CRS, metres for the projected CRSs this
pipeline writes. ``prune_m`` and ``merge_m`` compare the pixel polyline (centre to centre,
so a staircase counts a little longer than the road); ``length_m`` is the length of the
simplified line.

Nodes are numbered by their pixel in row-major order, every edge runs from its lower node
id, edge lengths are kept as integer counts of pixel steps (so they add up exactly), and
every tie is broken by pixels: the result does not depend on the chunking, a chunked run
equals a whole-image run of the same mask to the last bit.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import networkx as nx
import numpy as np
import shapely
from affine import Affine
from numpy.typing import NDArray

__all__ = [
    "DEFAULT_MERGE_M",
    "DEFAULT_PRUNE_M",
    "DEFAULT_SIMPLIFY_M",
    "EdgeTable",
    "GraphPiece",
    "NodeTable",
    "join_pieces",
    "to_networkx",
]

#: Spurs (edges with a free end) shorter than this many metres are pruned.
DEFAULT_PRUNE_M = 8.0
#: Junctions joined by an edge shorter than this many metres are merged into one.
DEFAULT_MERGE_M = 4.0
#: Douglas-Peucker tolerance in metres for every edge line.
DEFAULT_SIMPLIFY_M = 0.5

#: Edge lines are made and simplified this many pixels at a time: the unsimplified lines of
#: a whole city would otherwise sit in the client at once (BENCHMARKS.md, "roadnet vectorize").
LINE_BATCH_PX = 1 << 17

Pixel = tuple[int, int]


@dataclass(frozen=True)
class GraphPiece:
    """The skeleton polylines one chunk contributes, in global pixel coordinates.

    Attributes:
        coords: ``(n, 2)`` int64, the ``(row, col)`` pixels of all polylines, concatenated.
        offsets: ``(e + 1,)`` int64; polyline ``i`` is ``coords[offsets[i]:offsets[i + 1]]``
            and has at least 2 pixels.
        border: ``(b, 2)`` int64, the pixels where a polyline was cut because the next
            link belongs to a neighbouring chunk; the neighbour's polyline ends there too.
    """

    coords: NDArray[np.int64]
    offsets: NDArray[np.int64]
    border: NDArray[np.int64]

    @classmethod
    def from_paths(
        cls, paths: Sequence[NDArray[np.int64]], *, border: Sequence[NDArray[np.int64]] = ()
    ) -> GraphPiece:
        """Pack polylines (each ``(k, 2)`` int64, ``k >= 2``) and border pixels (``(2,)``)."""
        lengths = [len(p) for p in paths]
        offsets = np.zeros(len(paths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        coords = (
            np.concatenate(paths).astype(np.int64, copy=False)
            if paths
            else np.empty((0, 2), dtype=np.int64)
        )
        border_px = (
            np.asarray(border, dtype=np.int64).reshape(-1, 2)
            if len(border)
            else np.empty((0, 2), dtype=np.int64)
        )
        return cls(coords=coords, offsets=offsets, border=border_px)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def paths(self) -> Iterator[NDArray[np.int64]]:
        """Yield each polyline as a ``(k, 2)`` int64 view of :attr:`coords`."""
        for start, stop in itertools.pairwise(self.offsets.tolist()):
            yield self.coords[start:stop]


class NodeTable(TypedDict):
    """Graph nodes, one row per node, ordered by ``id`` (GeoDataFrame-ready columns)."""

    id: NDArray[np.int64]
    x: NDArray[np.float64]
    y: NDArray[np.float64]
    degree: NDArray[np.int64]
    row: NDArray[np.int64]
    col: NDArray[np.int64]


class EdgeTable(TypedDict):
    """Graph edges: ``u <= v`` node ids, a map-CRS ``LineString`` from u to v, its length."""

    u: NDArray[np.int64]
    v: NDArray[np.int64]
    geometry: NDArray[np.object_]
    length_m: NDArray[np.float64]


def join_pieces(
    pieces: Iterable[GraphPiece],
    *,
    transform: Affine,
    prune_m: float = DEFAULT_PRUNE_M,
    merge_m: float = DEFAULT_MERGE_M,
    simplify_m: float = DEFAULT_SIMPLIFY_M,
) -> tuple[NodeTable, EdgeTable]:
    """Join chunk pieces into one road graph, prune, merge junctions, simplify.

    Args:
        pieces: the chunks' :class:`GraphPiece` objects, in any order.
        transform: the scene's affine transform, pixel ``(col, row)`` to map ``(x, y)``.
        prune_m: spurs shorter than this (map units) are removed; 0 keeps all.
        merge_m: junctions closer than this along an edge become one node; 0 keeps all.
        simplify_m: Douglas-Peucker tolerance (map units) for the edge lines; 0 keeps
            every pixel.

    Returns:
        The node table and the edge table.

    Warns:
        UserWarning: when a border pixel ends up with one edge only: the chunks' skeletons
            disagree there, usually because the halo is narrower than the roads need.
    """
    unit = _unit_steps(transform)
    graph, border = _assemble(pieces, unit)
    unmatched = sum(1 for px in border if graph.degree(px) == 1)
    if unmatched:
        warnings.warn(
            f"{unmatched} chunk-border skeleton pixels have no continuation in the neighbour "
            "chunk: the halo is too narrow for the widest road; raise halo_px",
            UserWarning,
            stacklevel=2,
        )
    _contract(graph, sorted(graph.nodes), unit)
    if prune_m > 0:
        _prune_spurs(graph, prune_m, unit)
    if merge_m > 0:
        _merge_junctions(graph, merge_m, unit)
    _canonical_loops(graph, unit)
    return _tables(graph, transform=transform, simplify_m=simplify_m)


def to_networkx(nodes: NodeTable, edges: EdgeTable) -> nx.MultiGraph:
    """Build a ``networkx.MultiGraph`` from the node and edge tables.

    Args:
        nodes: the node table of :func:`join_pieces`.
        edges: the edge table of :func:`join_pieces`.

    Returns:
        A graph whose nodes are the node ids with attributes ``x``, ``y`` (map
        coordinates), ``row``, ``col`` (pixel); its edges carry ``length`` (map units,
        metres) and ``geometry`` (a shapely ``LineString`` from ``u`` to ``v``).
    """
    graph = nx.MultiGraph()
    for i, x, y, row, col in zip(
        nodes["id"].tolist(),
        nodes["x"].tolist(),
        nodes["y"].tolist(),
        nodes["row"].tolist(),
        nodes["col"].tolist(),
        strict=True,
    ):
        graph.add_node(i, x=x, y=y, row=row, col=col)
    for u, v, geometry, length in zip(
        edges["u"].tolist(),
        edges["v"].tolist(),
        edges["geometry"],
        edges["length_m"].tolist(),
        strict=True,
    ):
        graph.add_edge(u, v, length=length, geometry=geometry)
    return graph


# -- building and contracting ----------------------------------------------------------------
#
# Every edge carries its pixel ``path`` and ``steps``, the counts of its horizontal, vertical,
# diagonal and anti-diagonal pixel steps. Lengths are ``steps @ unit`` (the four step lengths
# in map units): integers add exactly, so an edge has the same length to the last bit however
# the chunking cut and re-joined it, and ties between lengths (merge order) are real ties.

Unit = NDArray[np.float64]


def _unit_steps(transform: Affine) -> Unit:
    """Map lengths of the pixel steps (drow, dcol) = (0, 1), (1, 0), (1, 1), (1, -1)."""
    t = transform  # dx = a dcol + b drow, dy = d dcol + e drow
    return np.array(
        [
            np.hypot(t.a, t.d),
            np.hypot(t.b, t.e),
            np.hypot(t.a + t.b, t.d + t.e),
            np.hypot(t.b - t.a, t.e - t.d),
        ]
    )


def _step_counts(coords: NDArray[np.int64], offsets: NDArray[np.int64]) -> NDArray[np.int64]:
    """``(e, 4)`` step counts of the polylines ``coords[offsets[i]:offsets[i + 1]]``."""
    step = np.diff(coords, axis=0)
    turn = step[:, 0] * step[:, 1]
    kind = np.stack([step[:, 0] == 0, step[:, 1] == 0, turn > 0, turn < 0], axis=1)
    kind[offsets[1:-1] - 1] = False  # the jumps from one polyline to the next
    starts = offsets[:-1]
    return np.add.reduceat(kind.astype(np.int64), starts, axis=0) if len(starts) else kind


def _px(point: NDArray[np.int64]) -> Pixel:
    return (int(point[0]), int(point[1]))


def _add(
    graph: nx.MultiGraph, path: NDArray[np.int64], steps: NDArray[np.int64], unit: Unit
) -> int:
    """Add ``path`` as an edge between its end pixels; return its key."""
    key: int = graph.add_edge(
        _px(path[0]), _px(path[-1]), path=path, steps=steps, length=float(steps @ unit)
    )
    return key


def _assemble(pieces: Iterable[GraphPiece], unit: Unit) -> tuple[nx.MultiGraph, set[Pixel]]:
    graph = nx.MultiGraph()
    border: set[Pixel] = set()
    for piece in pieces:
        if len(piece) == 0:
            continue
        steps = _step_counts(piece.coords, piece.offsets)
        for path, path_steps in zip(piece.paths(), steps, strict=True):
            _add(graph, path, path_steps, unit)
        border.update(map(tuple, piece.border.tolist()))
    return graph, border


def _oriented(path: NDArray[np.int64], start: Pixel) -> NDArray[np.int64]:
    """``path`` reversed if needed so that it begins at pixel ``start``."""
    if path[0, 0] == start[0] and path[0, 1] == start[1]:
        return path
    return path[::-1]


def _loop_order(path: NDArray[np.int64]) -> NDArray[np.int64]:
    """A self-loop's path in the direction whose second pixel is the smaller one."""
    return path[::-1] if _px(path[-2]) < _px(path[1]) else path


def _canonical(path: NDArray[np.int64]) -> NDArray[np.int64]:
    """``path`` oriented from its smaller end pixel (a loop: see :func:`_loop_order`)."""
    first, last = _px(path[0]), _px(path[-1])
    if first == last:
        return _loop_order(path)
    return path if first < last else path[::-1]


def _contract(graph: nx.MultiGraph, candidates: Iterable[Pixel], unit: Unit) -> None:
    """Dissolve each candidate node of degree 2 into the edge through it.

    A node whose two edge ends belong to one self-loop is a loop's last node and stays.
    """
    for node in candidates:
        if node not in graph or graph.degree(node) != 2 or graph.has_edge(node, node):
            continue
        (_, a, da), (_, _, db) = graph.edges(node, data=True)
        first = _oriented(da["path"], a)
        second = _oriented(db["path"], node)
        graph.remove_node(node)
        _add(graph, np.concatenate([first, second[1:]]), da["steps"] + db["steps"], unit)


def _prune_spurs(graph: nx.MultiGraph, prune_m: float, unit: Unit) -> None:
    while True:
        spurs = [
            (u, v, k)
            for u, v, k, length in graph.edges(keys=True, data="length")
            if u != v and length < prune_m and 1 in (graph.degree(u), graph.degree(v))
        ]
        if not spurs:
            return
        graph.remove_edges_from(spurs)
        touched = sorted({n for u, v, _ in spurs for n in (u, v)})
        graph.remove_nodes_from([n for n in touched if graph.degree(n) == 0])
        _contract(graph, touched, unit)


def _merge_junctions(graph: nx.MultiGraph, merge_m: float, unit: Unit) -> None:
    heap: list[tuple[float, Pixel, Pixel, bytes, int]] = []

    def push(u: Pixel, v: Pixel, key: int) -> None:
        data = graph.edges[u, v, key]
        if u != v and data["length"] < merge_m:
            tie = _canonical(data["path"]).tobytes()
            heapq.heappush(heap, (data["length"], min(u, v), max(u, v), tie, key))

    for u, v, key in list(graph.edges(keys=True)):
        push(u, v, key)
    while heap:
        _, u, v, tie, key = heapq.heappop(heap)
        # entries go stale as edges are replaced (networkx reuses keys): check again
        if not graph.has_edge(u, v, key):
            continue
        if _canonical(graph.edges[u, v, key]["path"]).tobytes() != tie:
            continue
        if min(graph.degree(u), graph.degree(v)) < 3:
            continue
        keep, gone = sorted((u, v), key=lambda n: (-graph.degree(n), n))
        link = _oriented(graph.edges[u, v, key]["path"], keep)
        link_steps = graph.edges[u, v, key]["steps"]
        graph.remove_edge(u, v, key)
        moved = list(graph.edges(gone, data=True))
        graph.remove_node(gone)
        for _, other, data in moved:
            if other == gone:  # a loop at the absorbed node: out along the link and back
                path = np.concatenate([link, data["path"][1:], link[::-1][1:]])
                steps = data["steps"] + 2 * link_steps
            else:
                path = np.concatenate([link, _oriented(data["path"], gone)[1:]])
                steps = data["steps"] + link_steps
            new = _add(graph, path, steps, unit)
            push(keep, _px(path[-1]), new)
        # loops within a junction cluster, left by the merge, are no roads
        graph.remove_edges_from(
            [(keep, keep, k) for k, d in graph[keep].get(keep, {}).items() if d["length"] < merge_m]
        )
        if graph.degree(keep) == 0:
            graph.remove_node(keep)
        else:
            _contract(graph, [keep], unit)


def _canonical_loops(graph: nx.MultiGraph, unit: Unit) -> None:
    """Re-key every junction-free loop to its smallest pixel, so chunking cannot move it."""
    for node in [n for n in graph.nodes if graph.degree(n) == 2 and graph.has_edge(n, n)]:
        ((_, _, data),) = graph.edges(node, data=True)
        ring = data["path"][:-1]
        first = int(np.lexsort((ring[:, 1], ring[:, 0]))[0])
        ring = np.roll(ring, -first, axis=0)
        graph.remove_node(node)
        _add(graph, np.concatenate([ring, ring[:1]]), data["steps"], unit)


# -- tables -------------------------------------------------------------------------------------


def _tables(
    graph: nx.MultiGraph, *, transform: Affine, simplify_m: float
) -> tuple[NodeTable, EdgeTable]:
    order = sorted(graph.nodes)
    ids = {node: i for i, node in enumerate(order)}
    pixels = np.array(order, dtype=np.int64).reshape(-1, 2)
    x, y = _to_map(pixels, transform)
    nodes = NodeTable(
        id=np.arange(len(order), dtype=np.int64),
        x=x,
        y=y,
        degree=np.array([graph.degree(n) for n in order], dtype=np.int64),
        row=pixels[:, 0].copy(),
        col=pixels[:, 1].copy(),
    )
    rows: list[tuple[int, int, NDArray[np.int64]]] = []
    for a, b, path in graph.edges(data="path"):
        u, v = sorted((ids[a], ids[b]))
        rows.append((u, v, _canonical(path)))  # from node u: node ids follow pixel order
    pairs = collections.Counter((u, v) for u, v, _ in rows)
    # parallel edges are ordered by their pixels; the bytes are made for those alone
    rows.sort(key=lambda r: (r[0], r[1], r[2].tobytes() if pairs[r[0], r[1]] > 1 else b""))
    lines = np.empty(len(rows), dtype=object)
    for start, stop in _batches([len(r[2]) for r in rows], LINE_BATCH_PX):
        batch = _lines([r[2] for r in rows[start:stop]], transform)
        if simplify_m > 0:
            batch = shapely.simplify(batch, simplify_m, preserve_topology=True)
        lines[start:stop] = batch
    edges = EdgeTable(
        u=np.array([r[0] for r in rows], dtype=np.int64),
        v=np.array([r[1] for r in rows], dtype=np.int64),
        geometry=lines,
        length_m=shapely.length(lines).astype(np.float64),
    )
    return nodes, edges


def _batches(sizes: Sequence[int], limit: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` runs of consecutive items whose sizes add up to about ``limit``."""
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if total and total + size > limit:
            yield start, i
            start, total = i, 0
        total += size
    if start < len(sizes):
        yield start, len(sizes)


def _to_map(
    pixels: NDArray[np.int64], transform: Affine
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Map coordinates of pixel centres ``(n, 2)`` int64 ``(row, col)``: ``T * (col+½, row+½)``."""
    col = pixels[:, 1].astype(np.float64) + 0.5
    row = pixels[:, 0].astype(np.float64) + 0.5
    t = transform
    return t.a * col + t.b * row + t.c, t.d * col + t.e * row + t.f


def _lines(paths: Sequence[NDArray[np.int64]], transform: Affine) -> NDArray[np.object_]:
    if not paths:
        return np.empty(0, dtype=object)
    x, y = _to_map(np.concatenate(paths), transform)
    index = np.repeat(np.arange(len(paths)), [len(p) for p in paths])
    lines: Any = shapely.linestrings(x, y, indices=index)
    return np.asarray(lines, dtype=object)
