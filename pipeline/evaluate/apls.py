"""APLS (Average Path Length Similarity, SpaceNet) of a proposal road graph against truth.

Implemented from the definition on networkx graphs: node attributes ``x``, ``y`` (metres, one
projected CRS), edge attributes ``length`` (metres) and optional ``geometry`` (LineString).

* **Roads.** Directed graphs are read as undirected; parallel edges with the same geometry
  (two directions of a street) count once. No ``geometry``: the straight line between the
  nodes; no ``length``: the geometry's length. A geometry may run either way.
* **Degree-2 nodes** are, by default, not control points: chains of them are merged into one
  road (as osmnx's ``simplify_graph``), so the score does not depend on where roads are cut
  into edges (OSM ways, chunk borders); a cycle of degree-2 nodes keeps one node.
  ``control_at_degree2=True`` keeps every node and spaces each edge on its own, as the
  reference implementation does on unsimplified graphs. Isolated nodes are never used.
* **Control points**: the remaining nodes, plus ``ceil(g / node_spacing_m) - 1`` equally
  spaced points inside each road of geometric length ``g`` (``math.inf``: nodes only). Roads
  are split there; a piece weighs the road's ``length`` times its share of the geometry.
* **Snapping.** A control point of one graph snaps to the nearest point of the other graph's
  roads (STRtree nearest) within ``snap_m``, where a node is inserted (or the node there
  used); farther points stay unsnapped.
* **Pairs.** All unordered pairs when ``n (n - 1) / 2 <= max_pairs``; else
  ``ceil(sqrt(max_pairs))`` sources drawn without replacement, each paired with
  ``max_pairs // sources`` other points drawn without replacement (duplicates dropped), so
  every pair has the same chance and one single-source Dijkstra per source and graph serves
  all its pairs. Each direction draws with ``numpy.random.default_rng(seed)`` afresh, so
  swapping the graphs swaps the directions exactly.
* **Pair score** ``1 - min(1, |L - L'| / L)``, ``L`` the shortest path (``length`` weight)
  between two control points of the source graph, ``L'`` that between their snapped
  counterparts in the other graph. Skipped: no path in the source graph, ``L < min_path_m``
  or ``L == 0``. *Missing* (score 0): an end unsnapped, or no path in the other graph.
* **Directions.** Mean pair score per direction: truth->proposal penalizes missed and
  broken roads, proposal->truth spurious ones. APLS is their harmonic mean (0 if either is
  0). A direction without scored pairs scores 1.0 if the other has none either (two empty
  graphs), else 0.0.
* **Length-weighted variant** ``apls_length_weighted``: per direction
  ``sum(L * score) / sum(L)`` (long routes count more), then the harmonic mean. SpaceNet 5's
  "APLS_length" is plain APLS on ``length`` weights (vs. "APLS_time"): ``apls`` here.

Defaults follow the SpaceNet reference: 50 m spacing, 4 m snapping, 10 m minimum path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import networkx as nx
import numpy as np
import shapely

from roadnet.errors import InputError

__all__ = ["APLSDirection", "APLSResult", "apls_score", "control_points"]

_EPS_M = 1e-6  # a snapped point this close to a station is that station


@dataclass(frozen=True)
class APLSDirection:
    """APLS of one direction: control points of a source graph routed in a target graph.

    Attributes:
        score: Mean pair score, ``1 - mean(min(1, |L - L'| / L))``, in [0, 1].
        score_length_weighted: Pair scores weighted by source path length ``L``, in [0, 1].
        n_control_points: Control points of the source graph.
        n_snapped: Those snapped onto the target graph within ``snap_m``.
        n_pairs: Pairs scored (including missing ones).
        n_missing: Scored pairs with an unsnapped end or no path in the target (score 0).
        n_skipped: Drawn pairs left out: no path in the source graph, or ``L < min_path_m``.
    """

    score: float
    score_length_weighted: float
    n_control_points: int
    n_snapped: int
    n_pairs: int
    n_missing: int
    n_skipped: int


@dataclass(frozen=True)
class APLSResult:
    """APLS of a proposal graph against a truth graph.

    Attributes:
        apls: Harmonic mean of the two directions' scores, in [0, 1].
        apls_length_weighted: Harmonic mean of the two length-weighted scores.
        truth_to_proposal: Truth control points routed in the proposal.
        proposal_to_truth: Proposal control points routed in the truth.
    """

    apls: float
    apls_length_weighted: float
    truth_to_proposal: APLSDirection
    proposal_to_truth: APLSDirection


@dataclass
class _Net:
    """A graph prepared for APLS.

    Nodes are ints. Road ``r`` runs along ``lines[r]`` through the nodes ``stations[r]`` at
    ``positions[r]`` metres along the line; the graph edge between stations ``k`` and
    ``k + 1`` has key ``(r, k)`` and weight ``length`` (metres).
    """

    graph: nx.MultiGraph
    route: nx.Graph  # the same, parallel edges reduced to the shortest: faster Dijkstra
    lines: np.ndarray  # (roads,) LineString
    positions: list[np.ndarray]  # per road (stations,) float64, 0 .. line length
    stations: list[np.ndarray]  # per road (stations,) int node ids
    scale: np.ndarray  # (roads,) weight per metre of geometry
    control: np.ndarray  # (n,) int node ids of the control points
    control_xy: np.ndarray  # (n, 2) float64 their coordinates
    n_nodes: int


def _edges(graph: Any) -> tuple[np.ndarray, list[tuple[int, int, np.ndarray, float]]]:
    """Node coordinates ``(nodes, 2)`` and deduplicated edges ``(u, v, coords u->v, length)``."""
    if not isinstance(graph, nx.Graph):
        raise InputError(f"expected a networkx graph, got {type(graph).__name__}")
    if graph.is_directed():
        graph = graph.to_undirected()
    index = {n: i for i, n in enumerate(graph.nodes)}
    xy = np.empty((len(index), 2))
    for n, i in index.items():
        xy[i] = _as_float(graph.nodes[n].get("x")), _as_float(graph.nodes[n].get("y"))
        if not np.isfinite(xy[i]).all():
            raise InputError(f"node {n!r} needs numeric 'x' and 'y' attributes")
    edges: list[tuple[int, int, np.ndarray, float]] = []
    seen: dict[tuple[int, int], list[np.ndarray]] = {}
    for a, b, data in graph.edges(data=True):
        u, v = index[a], index[b]
        geom = data.get("geometry")
        if geom is None:
            coords = np.stack([xy[u], xy[v]])
        elif isinstance(geom, shapely.LineString) and not geom.is_empty:
            coords = shapely.get_coordinates(geom)
            if np.hypot(*(coords[0] - xy[v])) < np.hypot(*(coords[0] - xy[u])):
                coords = coords[::-1]
        else:
            raise InputError(f"edge {a!r}-{b!r}: 'geometry' must be a non-empty LineString")
        given = data.get("length")
        length = _as_float(shapely.length(shapely.linestrings(coords)) if given is None else given)
        if not (math.isfinite(length) and length >= 0):
            raise InputError(f"edge {a!r}-{b!r}: 'length' must be a number >= 0, got {given!r}")
        twins = seen.setdefault((min(u, v), max(u, v)), [])
        if any(
            c.shape == coords.shape and np.allclose(c[:: 1 if u <= v else -1], coords)
            for c in twins
        ):
            continue  # the same road once more, e.g. the other direction of a street
        twins.append(coords if u <= v else coords[::-1])
        edges.append((u, v, coords, length))
    return xy, edges


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _roads(
    n_nodes: int, edges: list[tuple[int, int, np.ndarray, float]], *, keep_degree2: bool
) -> tuple[list[tuple[int, int, np.ndarray, float]], np.ndarray]:
    """Merge chains of degree-2 nodes; return the roads and the nodes that end roads."""
    degree = np.zeros(n_nodes, dtype=np.int64)
    incident: list[list[int]] = [[] for _ in range(n_nodes)]
    for k, (u, v, _, _) in enumerate(edges):
        degree[u] += 1
        degree[v] += 1
        incident[u].append(k)
        incident[v].append(k)
    ends = np.ones(n_nodes, dtype=bool) if keep_degree2 else degree != 2
    used = np.zeros(len(edges), dtype=bool)

    def walk(start: int, k: int) -> tuple[int, int, np.ndarray, float]:
        parts: list[np.ndarray] = []
        total, node = 0.0, start
        while True:
            used[k] = True
            u, v, coords, length = edges[k]
            parts.append(coords if node == u else coords[::-1])
            node = v if node == u else u
            total += length
            if ends[node]:
                break
            k = next(j for j in incident[node] if not used[j])
        merged = np.concatenate([parts[0], *(p[1:] for p in parts[1:])])
        return start, node, merged, total

    roads = [walk(n, k) for n in np.flatnonzero(ends).tolist() for k in incident[n] if not used[k]]
    for k in range(len(edges)):  # what is left are cycles of degree-2 nodes
        if not used[k]:
            ends[edges[k][0]] = True
            roads.append(walk(edges[k][0], k))
    return roads, ends & (degree > 0)


def _prepare(graph: Any, *, node_spacing_m: float, keep_degree2: bool) -> _Net:
    if not node_spacing_m > 0:
        raise InputError(f"node_spacing_m must be > 0, got {node_spacing_m}")
    xy, edges = _edges(graph)
    roads, ends = _roads(len(xy), edges, keep_degree2=keep_degree2)
    g = nx.MultiGraph()
    control = [int(n) for n in np.flatnonzero(ends)]
    control_xy = [xy[n] for n in control]
    lines = np.empty(len(roads), dtype=object)
    lines[:] = [shapely.LineString(coords) for _, _, coords, _ in roads]
    lengths = shapely.length(lines)
    positions: list[np.ndarray] = []
    stations: list[np.ndarray] = []
    scale = np.zeros(len(roads))
    next_id = len(xy)
    for r, ((a, b, _, weight), glen) in enumerate(zip(roads, lengths, strict=True)):
        n_in = max(0, math.ceil(glen / node_spacing_m) - 1) if glen > 0 else 0
        pos = np.linspace(0.0, glen, n_in + 2)
        ids = np.array([a, *range(next_id, next_id + n_in), b], dtype=np.int64)
        next_id += n_in
        if n_in:
            inner = shapely.line_interpolate_point(lines[r], pos[1:-1])
            control.extend(ids[1:-1].tolist())
            control_xy.extend(shapely.get_coordinates(inner))
        scale[r] = weight / glen if glen > 0 else 0.0
        steps = np.diff(pos) * scale[r] if glen > 0 else np.array([weight])
        for k, w in enumerate(steps.tolist()):
            g.add_edge(int(ids[k]), int(ids[k + 1]), key=(r, k), length=w)
        positions.append(pos)
        stations.append(ids)
    return _Net(
        graph=g,
        route=_simple(g),
        lines=lines,
        positions=positions,
        stations=stations,
        scale=scale,
        control=np.asarray(control, dtype=np.int64),
        control_xy=np.asarray(control_xy, dtype=np.float64).reshape(-1, 2),
        n_nodes=next_id,
    )


def _simple(g: nx.MultiGraph) -> nx.Graph:
    """``g`` as a simple graph keeping the shortest of parallel edges (weight ``length``)."""
    out = nx.Graph()
    out.add_nodes_from(g)
    for u, v, w in g.edges(data="length"):
        if not out.has_edge(u, v) or w < out[u][v]["length"]:
            out.add_edge(u, v, length=w)
    return out


def _snap(xy: np.ndarray, net: _Net, snap_m: float) -> tuple[nx.Graph, np.ndarray]:
    """Insert the ``(n, 2)`` points ``xy`` into a copy of ``net``'s graph where they snap.

    Returns the routing graph and ``(n,)`` int node ids, -1 for points beyond ``snap_m``.
    """
    node_of = np.full(len(xy), -1, dtype=np.int64)
    if len(xy) == 0 or len(net.lines) == 0:
        return net.route, node_of
    points = shapely.points(xy)
    ip, ir = shapely.STRtree(net.lines).query_nearest(
        points, max_distance=snap_m, all_matches=False
    )
    hits: dict[tuple[int, int], list[tuple[float, int]]] = {}
    pos = shapely.line_locate_point(net.lines[ir], points[ip])
    for i, r, p in zip(ip.tolist(), ir.tolist(), pos.tolist(), strict=True):
        k = int(np.searchsorted(net.positions[r], p, side="right")) - 1
        hits.setdefault((r, min(max(k, 0), len(net.positions[r]) - 2)), []).append((p, i))
    g = net.graph.copy()
    next_id = net.n_nodes
    for (r, k), found in hits.items():
        p0, p1 = net.positions[r][k : k + 2].tolist()
        a, b = net.stations[r][k : k + 2].tolist()
        chain_pos, chain_ids = [p0], [a]
        for p, i in sorted(found):
            if p - p0 <= _EPS_M:
                node_of[i] = a
            elif p1 - p <= _EPS_M:
                node_of[i] = b
            else:
                if p - chain_pos[-1] > _EPS_M:  # else the same point as the last one
                    chain_pos.append(p)
                    chain_ids.append(next_id)
                    next_id += 1
                node_of[i] = chain_ids[-1]
        if len(chain_ids) > 1:
            g.remove_edge(a, b, key=(r, k))
            ids = [*chain_ids, b]
            for j, w in enumerate((np.diff([*chain_pos, p1]) * net.scale[r]).tolist()):
                g.add_edge(ids[j], ids[j + 1], key=(r, k, j), length=w)
    return _simple(g), node_of


def _pairs(n: int, max_pairs: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Control point pairs as ``{source index: (targets,) indices}``, each unordered once."""
    if n * (n - 1) // 2 <= max_pairs:
        return {i: np.arange(i + 1, n) for i in range(n - 1)}
    n_src = min(n, math.ceil(math.sqrt(max_pairs)))
    per = min(n - 1, max(1, max_pairs // n_src))
    seen: set[tuple[int, int]] = set()
    out: dict[int, np.ndarray] = {}
    for s in rng.choice(n, size=n_src, replace=False).tolist():
        targets = rng.choice(n - 1, size=per, replace=False)
        targets[targets >= s] += 1
        keep = []
        for t in targets.tolist():
            pair = (min(s, t), max(s, t))
            if pair not in seen:
                seen.add(pair)
                keep.append(t)
        out[s] = np.asarray(keep, dtype=np.int64)
    return out


def _direction(
    src: _Net, dst: _Net, *, snap_m: float, min_path_m: float, max_pairs: int, seed: int
) -> APLSDirection:
    """Route ``src``'s control points in ``dst``; scores are 0.0 when no pair is scored."""
    g_dst, node_of = _snap(src.control_xy, dst, snap_m)
    rng = np.random.default_rng(seed)
    total = weighted = weight = 0.0
    n_pairs = n_missing = n_skipped = 0
    for i, js in _pairs(len(src.control), max_pairs, rng).items():
        lens = _lengths_from(src.route, int(src.control[i]), src.control[js])
        ok = np.isfinite(lens) & (lens >= min_path_m) & (lens > 0)
        n_skipped += int(np.count_nonzero(~ok))
        lens, js = lens[ok], js[ok]
        if lens.size == 0:
            continue
        if node_of[i] >= 0:
            found = _lengths_from(g_dst, int(node_of[i]), node_of[js])
        else:
            found = np.full(lens.size, np.nan)
        missing = ~np.isfinite(found)
        scores = np.where(missing, 0.0, 1.0 - np.minimum(1.0, np.abs(lens - found) / lens))
        total += float(scores.sum())
        weighted += float((scores * lens).sum())
        weight += float(lens.sum())
        n_pairs += int(lens.size)
        n_missing += int(np.count_nonzero(missing))
    return APLSDirection(
        score=total / n_pairs if n_pairs else 0.0,
        score_length_weighted=weighted / weight if weight > 0 else 0.0,
        n_control_points=len(src.control),
        n_snapped=int(np.count_nonzero(node_of >= 0)),
        n_pairs=n_pairs,
        n_missing=n_missing,
        n_skipped=n_skipped,
    )


def _lengths_from(graph: nx.Graph, source: int, targets: np.ndarray) -> np.ndarray:
    """``(k,)`` shortest-path lengths from ``source`` to ``targets``; NaN where none (or -1)."""
    dist = nx.single_source_dijkstra_path_length(graph, source, weight="length")
    return np.array([dist.get(t, np.nan) if t >= 0 else np.nan for t in targets.tolist()])


def _hmean(a: float, b: float) -> float:
    return 0.0 if a <= 0 or b <= 0 else 2 * a * b / (a + b)


def control_points(
    graph: Any, *, node_spacing_m: float = 50.0, control_at_degree2: bool = False
) -> np.ndarray:
    """Coordinates of the APLS control points of a road graph.

    Args:
        graph: A networkx graph with node ``x``, ``y`` (metres) and edge ``length``
            (metres) and optional ``geometry`` (LineString).
        node_spacing_m: Largest spacing of control points along a road, in metres.
        control_at_degree2: Keep degree-2 nodes as control points (see the module notes).

    Returns:
        ``(n, 2)`` float64 ``(x, y)``: the road-ending nodes first, then the points inserted
        along roads.

    Raises:
        InputError: If the graph lacks coordinates or has bad edges, or the spacing is not > 0.
    """
    net = _prepare(graph, node_spacing_m=node_spacing_m, keep_degree2=control_at_degree2)
    return net.control_xy


def apls_score(
    truth: Any,
    proposal: Any,
    *,
    node_spacing_m: float = 50.0,
    snap_m: float = 4.0,
    min_path_m: float = 10.0,
    max_pairs: int = 10_000,
    seed: int = 0,
    control_at_degree2: bool = False,
) -> APLSResult:
    """APLS of a proposal road graph against a truth graph (see the module notes).

    Args:
        truth: Truth road graph (networkx, node ``x``/``y``, edge ``length``/``geometry``),
            in the same projected CRS in metres as ``proposal``.
        proposal: Proposed road graph, e.g. from the vectorize stage.
        node_spacing_m: Largest spacing of control points along a road, in metres;
            ``math.inf`` for control points at nodes only.
        snap_m: Largest distance, in metres, at which a control point snaps onto the other
            graph.
        min_path_m: Pairs whose source path is shorter than this (metres) are skipped.
        max_pairs: Most pairs drawn per direction; all pairs when there are no more.
        seed: Seed of the pair draw (the same for both directions).
        control_at_degree2: Keep degree-2 nodes as control points instead of merging
            chains of them into one road.

    Returns:
        Both directions, their harmonic mean and the length-weighted variant.

    Raises:
        InputError: If a graph lacks node coordinates or has bad edges, or an option is out
            of range.
    """
    if not (snap_m > 0 and math.isfinite(snap_m)):
        raise InputError(f"snap_m must be finite and > 0, got {snap_m}")
    if not min_path_m >= 0:
        raise InputError(f"min_path_m must be >= 0, got {min_path_m}")
    if max_pairs < 1:
        raise InputError(f"max_pairs must be >= 1, got {max_pairs}")
    nets = [
        _prepare(g, node_spacing_m=node_spacing_m, keep_degree2=control_at_degree2)
        for g in (truth, proposal)
    ]
    t2p, p2t = (
        _direction(src, dst, snap_m=snap_m, min_path_m=min_path_m, max_pairs=max_pairs, seed=seed)
        for src, dst in ((nets[0], nets[1]), (nets[1], nets[0]))
    )
    if t2p.n_pairs == 0 and p2t.n_pairs == 0:  # nothing to route on either side
        t2p = replace(t2p, score=1.0, score_length_weighted=1.0)
        p2t = replace(p2t, score=1.0, score_length_weighted=1.0)
    return APLSResult(
        apls=_hmean(t2p.score, p2t.score),
        apls_length_weighted=_hmean(t2p.score_length_weighted, p2t.score_length_weighted),
        truth_to_proposal=t2p,
        proposal_to_truth=p2t,
    )
