"""APLS on small road graphs whose scores are worked out by hand."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

import networkx as nx
import numpy as np
import pytest
from shapely import LineString

from roadnet.errors import InputError
from roadnet.pipeline.evaluate.apls import apls_score, control_points

NODES_ONLY = math.inf  # node_spacing_m: no control points inserted along edges


def road_graph(
    nodes: Mapping[Any, tuple[float, float]],
    edges: Iterable[tuple[Any, Any]],
    *,
    scale: float = 1.0,
) -> nx.MultiGraph:
    """Straight-edged MultiGraph as the vectorize stage makes it (``length`` = scale * geometry)."""
    g = nx.MultiGraph()
    for n, (x, y) in nodes.items():
        g.add_node(n, x=x, y=y)
    for u, v in edges:
        geom = LineString([nodes[u], nodes[v]])
        g.add_edge(u, v, length=scale * geom.length, geometry=geom)
    return g


def grid(
    n: int = 3, step: float = 100.0, drop: Iterable[tuple[Any, Any]] = (), x0: float = 0.0
) -> nx.MultiGraph:
    """``n`` x ``n`` nodes (i, j) at (x0 + step i, step j), edges between 4-neighbours."""
    nodes = {(i, j): (x0 + i * step, j * step) for i in range(n) for j in range(n)}
    gone = {frozenset(e) for e in drop}
    edges = [
        ((i, j), (i + di, j + dj))
        for i in range(n)
        for j in range(n)
        for di, dj in ((1, 0), (0, 1))
        if i + di < n and j + dj < n and frozenset({(i, j), (i + di, j + dj)}) not in gone
    ]
    return road_graph(nodes, edges)


def straight(x0: float, y0: float, x1: float, y1: float) -> nx.MultiGraph:
    return road_graph({0: (x0, y0), 1: (x1, y1)}, [(0, 1)])


def test_identical_graphs_score_one() -> None:
    g = grid(4)
    r = apls_score(g, g.copy(), node_spacing_m=30.0)
    assert r.apls == pytest.approx(1.0)
    assert r.apls_length_weighted == pytest.approx(1.0)
    assert r.truth_to_proposal.n_pairs > 100
    assert r.truth_to_proposal.n_missing == 0


def test_disjoint_graphs_score_zero() -> None:
    r = apls_score(grid(3), grid(3, x0=10_000.0))
    assert r.apls == 0.0
    assert r.truth_to_proposal.score == 0.0 and r.proposal_to_truth.score == 0.0
    assert r.truth_to_proposal.n_snapped == 0
    assert r.truth_to_proposal.n_missing == r.truth_to_proposal.n_pairs > 0


# The 3 x 3 grid, 100 m spacing, nodes (i, j) at (100 i, 100 j); the proposal lacks the edge
# e-f between the centre e = (1, 1) and f = (2, 1). In the full grid a shortest path is the
# Manhattan distance. Only pairs whose every monotone lattice path uses e-f get longer; with
# the row of e-f being d-e-f (d = (0, 1)) those are f-e and f-d. Every other pair (f-a: R R U
# avoids e-f, f-b: b-c-f, ...) keeps its length.


def test_grid_missing_edge_nodes_only_by_hand() -> None:
    # control_at_degree2=True and spacing infinite: control points are the 9 nodes (f has
    # degree 2 in the proposal and is kept), 36 pairs per direction, all snapped exactly.
    # truth->proposal: f-e: L = 100, L' = 300 (f-c-b-e)   -> 1 - min(1, 200/100) = 0
    #                  f-d: L = 200, L' = 400 (f-c-b-e-d) -> 1 - min(1, 200/200) = 0
    #                  other 34 pairs score 1             -> 34/36 = 17/18
    # proposal->truth: f-e: L = 300, L' = 100 -> 1 - 200/300 = 1/3
    #                  f-d: L = 400, L' = 200 -> 1 - 200/400 = 1/2
    #                  -> (34 + 1/3 + 1/2)/36 = 209/216
    # APLS = 2 (17/18)(209/216) / (17/18 + 209/216) = 2*204*209 / (216*413) = 3553/3717
    # Length-weighted: the sum of Manhattan distances over the 36 pairs is 7200 m.
    #   truth->proposal: (7200 - 100 - 200) / 7200 = 23/24
    #   proposal->truth: weights sum 7200 + 200 + 200 = 7600;
    #                    (6900 + 300/3 + 400/2) / 7600 = 18/19
    #   harmonic mean = 2 (23/24)(18/19) / (23/24 + 18/19) = 828/869
    truth, proposal = grid(), grid(drop=[((1, 1), (2, 1))])
    r = apls_score(truth, proposal, node_spacing_m=NODES_ONLY, control_at_degree2=True)
    t2p, p2t = r.truth_to_proposal, r.proposal_to_truth
    assert (t2p.n_control_points, t2p.n_pairs, p2t.n_pairs) == (9, 36, 36)
    assert t2p.score == pytest.approx(17 / 18)
    assert p2t.score == pytest.approx(209 / 216)
    assert r.apls == pytest.approx(3553 / 3717)
    assert t2p.score_length_weighted == pytest.approx(23 / 24)
    assert p2t.score_length_weighted == pytest.approx(18 / 19)
    assert r.apls_length_weighted == pytest.approx(828 / 869)
    assert t2p.n_missing == p2t.n_missing == 0  # paths got longer, none vanished


def test_grid_missing_edge_default_merges_degree2_by_hand() -> None:
    # Default: degree-2 nodes are merged away. Truth control points are the nodes of degree
    # != 2: b = (1, 0), d = (0, 1), e, f = (2, 1), h = (1, 2) -> 10 pairs; the corners are
    # inside 200 m roads such as b-a-d. In the proposal f has degree 2, so its control
    # points are b, d, e, h (6 pairs) and f lies inside the 400 m road b-c-f-k-h.
    # truth->proposal: f snaps onto the middle of b-c-f-k-h (a node is inserted there).
    #   e-f: L = 100, L' = 300 -> 0;  d-f: L = 200, L' = 400 -> 0;  other 8 pairs -> 1
    #   -> 8/10.  proposal->truth: the 6 pairs among b, d, e, h keep their lengths -> 1.
    # APLS = 2 * 0.8 * 1 / 1.8 = 8/9. Length-weighted truth->proposal: pair lengths sum to
    # 6 * 200 + 4 * 100 = 1600; (1600 - 100 - 200) / 1600 = 13/16.
    truth, proposal = grid(), grid(drop=[((1, 1), (2, 1))])
    r = apls_score(truth, proposal, node_spacing_m=NODES_ONLY)
    t2p, p2t = r.truth_to_proposal, r.proposal_to_truth
    assert (t2p.n_control_points, t2p.n_pairs, p2t.n_control_points, p2t.n_pairs) == (5, 10, 4, 6)
    assert t2p.score == pytest.approx(0.8)
    assert p2t.score == pytest.approx(1.0)
    assert r.apls == pytest.approx(8 / 9)
    assert t2p.score_length_weighted == pytest.approx(13 / 16)


def test_symmetric() -> None:
    a, b = grid(4), grid(4, drop=[((1, 1), (2, 1)), ((0, 3), (1, 3))])
    for spacing, max_pairs in ((NODES_ONLY, 10_000), (20.0, 300)):  # all pairs; sampled
        ab = apls_score(a, b, node_spacing_m=spacing, max_pairs=max_pairs)
        ba = apls_score(b, a, node_spacing_m=spacing, max_pairs=max_pairs)
        assert ab.apls == pytest.approx(ba.apls)
        assert ab.truth_to_proposal == ba.proposal_to_truth
        assert ab.proposal_to_truth == ba.truth_to_proposal


def test_dangling_spur_lowers_proposal_to_truth_only() -> None:
    # truth: a 200 m road with a degree-2 node m at (100, 0) (merged: control points 0 and 2,
    # one pair, L = 200). The proposal adds an 80 m spur m-s to (100, 80): its control
    # points are 0, 2, m (degree 3 now) and s -> 6 pairs.
    # truth->proposal: 0-2 has L' = 200 -> 1 (the spur is off every truth path).
    # proposal->truth: 0-m, m-2, 0-2 snap onto the truth road and keep 100, 100, 200 -> 1;
    #   s is 80 m from the truth (> 4 m snap): s-0, s-m, s-2 are missing -> 0.  3/6 = 0.5.
    # APLS = 2 * 1 * 0.5 / 1.5 = 2/3. Length-weighted proposal->truth:
    #   (100 + 100 + 200) / (100 + 100 + 200 + 180 + 80 + 180) = 400/840 = 10/21;
    #   harmonic mean with 1: 2 (10/21) / (31/21) = 20/31.
    nodes = {0: (0.0, 0.0), "m": (100.0, 0.0), 2: (200.0, 0.0)}
    truth = road_graph(nodes, [(0, "m"), ("m", 2)])
    proposal = road_graph({**nodes, "s": (100.0, 80.0)}, [(0, "m"), ("m", 2), ("m", "s")])
    r = apls_score(truth, proposal, node_spacing_m=NODES_ONLY)
    t2p, p2t = r.truth_to_proposal, r.proposal_to_truth
    assert t2p.score == pytest.approx(1.0) and t2p.n_pairs == 1
    assert p2t.score == pytest.approx(0.5)
    assert (p2t.n_pairs, p2t.n_missing, p2t.n_snapped) == (6, 3, 3)
    assert r.apls == pytest.approx(2 / 3)
    assert p2t.score_length_weighted == pytest.approx(10 / 21)
    assert r.apls_length_weighted == pytest.approx(20 / 31)


def test_snapping_within_and_outside_buffer() -> None:
    truth = straight(0, 0, 300, 0)
    near = straight(0, 3, 300, 3)  # 3 m off: every control point snaps (snap_m = 4)
    far = straight(0, 5, 300, 5)  # 5 m off: none does
    r = apls_score(truth, near, node_spacing_m=50.0, snap_m=4.0)
    # control points every 50 m: 7 per graph, 21 pairs, all lengths unchanged
    assert r.truth_to_proposal.n_control_points == 7
    assert r.truth_to_proposal.n_snapped == r.proposal_to_truth.n_snapped == 7
    assert r.apls == pytest.approx(1.0)
    r = apls_score(truth, far, node_spacing_m=50.0, snap_m=4.0)
    assert r.truth_to_proposal.n_snapped == r.proposal_to_truth.n_snapped == 0
    assert r.truth_to_proposal.n_missing == 21
    assert r.apls == 0.0
    assert apls_score(truth, far, node_spacing_m=50.0, snap_m=6.0).apls == pytest.approx(1.0)


def test_gap_skips_proposal_pairs_without_path_by_hand() -> None:
    # truth: 0 -- 200 m on y = 0, control points at 0, 50, 100, 150, 200 (10 pairs).
    # proposal: [0, 95] and [105, 200], each spaced ceil(95/50) = 2 -> points at 0, 47.5, 95
    # and 105, 152.5, 200.
    # truth->proposal: 100 is 5 m from both pieces (> 4 m): unsnapped. Pairs 0-50 and
    #   150-200 keep L' = L -> 1; the 4 pairs across the gap have no path in the proposal and
    #   the 4 pairs with 100 are unsnapped: 8 missing -> 2/10.
    # proposal->truth: the 9 pairs across the gap have no path in the proposal: skipped.
    #   The 6 pairs within a piece (47.5, 47.5, 95 each) snap onto the truth unchanged -> 1.
    # APLS = 2 * 0.2 * 1 / 1.2 = 1/3
    truth = straight(0, 0, 200, 0)
    proposal = road_graph(
        {0: (0.0, 0.0), 1: (95.0, 0.0), 2: (105.0, 0.0), 3: (200.0, 0.0)}, [(0, 1), (2, 3)]
    )
    r = apls_score(truth, proposal, node_spacing_m=50.0)
    t2p, p2t = r.truth_to_proposal, r.proposal_to_truth
    assert (t2p.n_pairs, t2p.n_missing, t2p.n_snapped, t2p.n_skipped) == (10, 8, 4, 0)
    assert (p2t.n_pairs, p2t.n_missing, p2t.n_skipped) == (6, 0, 9)
    assert t2p.score == pytest.approx(0.2)
    assert p2t.score == pytest.approx(1.0)
    assert r.apls == pytest.approx(1 / 3)


def test_length_attribute_is_the_weight() -> None:
    # Same geometry, proposal lengths 1.5x. Every pair: truth->proposal L' = 1.5 L -> 0.5;
    # proposal->truth L = 1.5 d, L' = d -> 1 - 0.5/1.5 = 2/3. APLS = 2(0.5)(2/3)/(7/6) = 4/7.
    # The 1.5x holds for the pieces cut at control points too (split in proportion).
    nodes = {(i, j): (i * 100.0, j * 100.0) for i in range(3) for j in range(3)}
    truth = grid()
    proposal = road_graph(nodes, [(u, v) for u, v, _ in truth.edges], scale=1.5)
    r = apls_score(truth, proposal, node_spacing_m=40.0)
    assert r.truth_to_proposal.score == pytest.approx(0.5)
    assert r.proposal_to_truth.score == pytest.approx(2 / 3)
    assert r.apls == pytest.approx(4 / 7)


def test_degree2_nodes_and_geometry_orientation_do_not_matter() -> None:
    # An L-shaped road (0,0) -> (100,0) -> (100,100), 200 m, as one edge whose geometry runs
    # backwards, or as two edges meeting at a degree-2 node.
    one = nx.MultiGraph()
    one.add_node("a", x=0.0, y=0.0)
    one.add_node("b", x=100.0, y=100.0)
    one.add_edge("a", "b", length=200.0, geometry=LineString([(100, 100), (100, 0), (0, 0)]))
    two = road_graph({"a": (0, 0), "c": (100, 0), "b": (100, 100)}, [("a", "c"), ("c", "b")])
    expected = {(0, 0), (100, 100), (50, 0), (100, 0), (100, 50)}  # ceil(200/50) = 4 pieces
    for g in (one, two):
        pts = control_points(g, node_spacing_m=50.0)
        assert {tuple(p) for p in np.round(pts, 9).tolist()} == expected
    r = apls_score(one, two)
    assert r.apls == pytest.approx(1.0)
    # kept, the degree-2 node c is one more control point and splits the spacing
    kept = control_points(two, node_spacing_m=50.0, control_at_degree2=True)
    assert len(kept) == 5 and {(100.0, 0.0)} <= {tuple(p) for p in kept.tolist()}


def test_directed_two_way_streets_count_once() -> None:
    g = grid()
    d = nx.MultiDiGraph()
    d.add_nodes_from(g.nodes(data=True))
    for u, v, data in g.edges(data=True):
        d.add_edge(u, v, **data)
        d.add_edge(v, u, **data)
    assert len(control_points(d)) == len(control_points(g))
    assert apls_score(g, d).apls == pytest.approx(1.0)


def test_seeded_sampling_is_deterministic() -> None:
    truth, proposal = grid(6), grid(6, drop=[((2, 2), (3, 2)), ((0, 4), (0, 5)), ((4, 1), (4, 2))])
    first = apls_score(truth, proposal, node_spacing_m=25.0, max_pairs=400, seed=3)
    again = apls_score(truth, proposal, node_spacing_m=25.0, max_pairs=400, seed=3)
    other = apls_score(truth, proposal, node_spacing_m=25.0, max_pairs=400, seed=4)
    assert first == again
    assert first != other
    t2p = first.truth_to_proposal
    assert t2p.n_control_points > 100  # far more than 400 pairs exist
    assert t2p.n_pairs + t2p.n_skipped <= 400
    full = apls_score(truth, proposal, node_spacing_m=25.0, max_pairs=10**6)
    assert first.apls == pytest.approx(full.apls, abs=0.05)  # the sample estimates the whole


def test_empty_graphs_defined() -> None:
    empty = nx.MultiGraph()
    assert apls_score(empty, empty).apls == 1.0
    r = apls_score(grid(), empty)
    assert r.apls == 0.0 and r.truth_to_proposal.n_missing == r.truth_to_proposal.n_pairs
    assert apls_score(empty, grid()).apls == 0.0


def test_bad_inputs_raise() -> None:
    g = nx.MultiGraph()
    g.add_edge(0, 1, length=1.0)
    with pytest.raises(InputError, match="'x'"):
        apls_score(g, g)
    with pytest.raises(InputError, match="networkx"):
        apls_score([], grid())
    with pytest.raises(InputError, match="snap_m"):
        apls_score(grid(), grid(), snap_m=0.0)
    with pytest.raises(InputError, match="max_pairs"):
        apls_score(grid(), grid(), max_pairs=0)
    for key, value in (("geometry", "LINESTRING (0 0, 1 1)"), ("length", "long"), ("length", -1)):
        bad = grid()
        u, v, k = next(iter(bad.edges(keys=True)))
        bad.edges[u, v, k][key] = value
        with pytest.raises(InputError, match=key):
            apls_score(bad, grid())


def test_result_is_a_plain_dataclass() -> None:
    d = dataclasses.asdict(apls_score(grid(), grid()))
    assert set(d) == {"apls", "apls_length_weighted", "truth_to_proposal", "proposal_to_truth"}
    assert d["truth_to_proposal"]["n_pairs"] > 0
