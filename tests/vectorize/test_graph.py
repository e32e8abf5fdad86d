"""The centerline graph's join: border matching, contraction, pruning, merging, tables."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
import shapely
from affine import Affine
from skimage.draw import line

from roadnet.pipeline.vectorize.graph import (
    EdgeTable,
    GraphPiece,
    NodeTable,
    join_pieces,
    to_networkx,
)

GSD = 0.3
T = Affine(GSD, 0.0, 385_000.0, 0.0, -GSD, 6_672_000.0)


def px_line(*points: tuple[int, int]) -> np.ndarray:
    """An 8-connected pixel polyline through ``(row, col)`` points, ``(k, 2)`` int64."""
    parts = []
    for (r0, c0), (r1, c1) in itertools.pairwise(points):
        rr, cc = line(r0, c0, r1, c1)
        parts.append(np.stack([rr, cc], axis=1))
    path = np.concatenate([parts[0]] + [p[1:] for p in parts[1:]])
    return path.astype(np.int64)


def cut(path: np.ndarray, *at: int) -> list[GraphPiece]:
    """``path`` split into one piece per chunk at the given indices (shared border pixels)."""
    bounds = [0, *at, len(path) - 1]
    return [
        GraphPiece.from_paths([path[a : b + 1]], border=[path[i] for i in (a, b) if i in at])
        for a, b in itertools.pairwise(bounds)
    ]


def join(pieces: list[GraphPiece], **options: float) -> tuple[NodeTable, EdgeTable]:
    return join_pieces(pieces, transform=T, **options)


def test_pieces_cut_at_border_pixels_join_into_one_edge() -> None:
    road = px_line((10, 0), (40, 300))
    whole = join([GraphPiece.from_paths([road])], simplify_m=0)
    nodes, edges = join(cut(road, 90, 170, 250), simplify_m=0)
    assert nodes["degree"].tolist() == [1, 1] and len(edges["u"]) == 1
    (geometry,) = edges["geometry"]
    assert len(geometry.coords) == len(road)  # every pixel once
    assert geometry.equals_exact(whole[1]["geometry"][0], 0.0)
    assert edges["length_m"][0] == pytest.approx(shapely.length(geometry))


def main_road() -> GraphPiece:
    """A 300 px road along row 50, cut at the junction pixel (50, 150) as skan does."""
    return GraphPiece.from_paths([px_line((50, 0), (50, 150)), px_line((50, 150), (50, 300))])


def t_junction(spur: int, *, cut_spur_at: int | None = None) -> list[GraphPiece]:
    """:func:`main_road` with a side road of ``spur`` px down from (50, 150)."""
    side = px_line((50, 150), (50 + spur, 150))
    return [main_road()] + (
        cut(side, cut_spur_at) if cut_spur_at else [GraphPiece.from_paths([side])]
    )


def test_short_spur_is_pruned_and_its_junction_contracted() -> None:
    nodes, edges = join(t_junction(10), prune_m=8.0)  # 3 m
    assert nodes["degree"].tolist() == [1, 1] and len(edges["u"]) == 1
    assert edges["length_m"][0] == pytest.approx(300 * GSD)
    nodes, edges = join(t_junction(60), prune_m=8.0)  # 18 m
    assert sorted(nodes["degree"].tolist()) == [1, 1, 1, 3] and len(edges["u"]) == 3
    nodes, _ = join(t_junction(10), prune_m=0)
    assert sorted(nodes["degree"].tolist()) == [1, 1, 1, 3]


def test_spurs_are_pruned_after_the_join() -> None:
    # 40 px = 12 m in two 20 px chunk pieces of 6 m each: the whole spur is kept
    nodes, _ = join(t_junction(40, cut_spur_at=20), prune_m=8.0)
    assert sorted(nodes["degree"].tolist()) == [1, 1, 1, 3]
    # 20 px = 6 m in two pieces: removed
    nodes, edges = join(t_junction(20, cut_spur_at=10), prune_m=8.0)
    assert nodes["degree"].tolist() == [1, 1] and len(edges["u"]) == 1


def test_pruning_repeats_until_no_spur_is_left() -> None:
    # a stem of 12 px (3.6 m) ending in a fork of two 12 px twigs: 10.8 m in all
    fork = [
        GraphPiece.from_paths([px_line((50, 150), (62, 150))]),
        GraphPiece.from_paths([px_line((62, 150), (74, 140)), px_line((62, 150), (74, 160))]),
    ]
    nodes, edges = join([main_road(), *fork], prune_m=8.0)
    assert nodes["degree"].tolist() == [1, 1] and len(edges["u"]) == 1


def test_close_junctions_merge_into_one_node() -> None:
    # an oblique crossing thinned into two Y junctions 3 px apart
    top, bottom = (100, 100), (103, 100)
    arms = [
        px_line(top, (40, 60)),
        px_line(top, (40, 140)),
        px_line(bottom, (163, 60)),
        px_line(bottom, (163, 140)),
        px_line(top, bottom),
    ]
    nodes, edges = join([GraphPiece.from_paths(arms)], merge_m=4.0)
    assert sorted(nodes["degree"].tolist()) == [1, 1, 1, 1, 4] and len(edges["u"]) == 4
    (centre,) = np.flatnonzero(nodes["degree"] == 4)
    assert (nodes["row"][centre], nodes["col"][centre]) in (top, bottom)
    for u, v, geometry in zip(edges["u"], edges["v"], edges["geometry"], strict=True):
        assert shapely.Point(geometry.coords[0]).equals(shapely.Point(nodes["x"][u], nodes["y"][u]))
        assert shapely.Point(geometry.coords[-1]).equals(
            shapely.Point(nodes["x"][v], nodes["y"][v])
        )
    nodes, edges = join([GraphPiece.from_paths(arms)], merge_m=0.0)
    assert sorted(nodes["degree"].tolist()) == [1, 1, 1, 1, 3, 3] and len(edges["u"]) == 5


def ring() -> np.ndarray:
    return px_line((20, 30), (20, 120), (90, 120), (90, 30), (20, 30))


def test_loop_road_is_one_node_wherever_it_is_cut() -> None:
    path = ring()
    rotated = np.concatenate([path[57:-1], path[:58]])  # skan may start a loop anywhere
    results = [
        join([GraphPiece.from_paths([path])]),
        join([GraphPiece.from_paths([rotated[::-1]])]),
        join(cut(rotated, 40, 150)),
    ]
    for nodes, edges in results:
        assert nodes["degree"].tolist() == [2]
        assert (nodes["row"][0], nodes["col"][0]) == (20, 30)  # the smallest pixel
        assert edges["u"].tolist() == edges["v"].tolist() == [0]
        assert edges["geometry"][0].is_ring
    for _, edges in results[1:]:
        assert edges["geometry"][0].equals_exact(results[0][1]["geometry"][0], 0.0)


def test_unmatched_border_pixel_warns() -> None:
    road = px_line((10, 0), (10, 100))
    left, _ = cut(road, 50)
    with pytest.warns(UserWarning, match="halo"):
        join([left])


def test_nodes_and_edges_are_in_map_coordinates() -> None:
    transform = Affine.translation(500.0, 900.0) @ Affine.rotation(30) @ Affine.scale(0.5, -0.5)
    road = px_line((10, 5), (10, 80), (60, 130))
    nodes, edges = join_pieces([GraphPiece.from_paths([road])], transform=transform, simplify_m=0.0)
    for i in range(2):
        x, y = transform @ (nodes["col"][i] + 0.5, nodes["row"][i] + 0.5)
        assert (nodes["x"][i], nodes["y"][i]) == pytest.approx((x, y))
    assert (nodes["row"].tolist(), nodes["col"].tolist()) == ([10, 60], [5, 130])
    (geometry,) = edges["geometry"]
    assert geometry.coords[0] == pytest.approx((nodes["x"][0], nodes["y"][0]))
    assert geometry.coords[-1] == pytest.approx((nodes["x"][1], nodes["y"][1]))
    assert edges["length_m"][0] == pytest.approx(0.5 * (75 + 50 * np.sqrt(2)))


def test_simplify_keeps_endpoints_and_drops_staircase_vertices() -> None:
    stairs = GraphPiece.from_paths([px_line((0, 0), (40, 100))])
    raw = join([stairs], simplify_m=0.0)[1]["geometry"][0]
    simple = join([stairs], simplify_m=0.5)[1]["geometry"][0]
    assert len(raw.coords) == 101 and len(simple.coords) == 2
    assert simple.coords[0] == raw.coords[0] and simple.coords[-1] == raw.coords[-1]
    assert shapely.hausdorff_distance(raw, simple) <= 0.5


def test_int64_pixels_past_int16() -> None:
    road = px_line((40_000, 70_000), (40_000, 70_100)) + np.int64(3_000_000_000)
    nodes, _ = join([GraphPiece.from_paths([road])])
    assert nodes["row"].tolist() == [3_000_040_000] * 2
    assert nodes["col"].tolist() == [3_000_070_000, 3_000_070_100]
    assert nodes["x"][0] == pytest.approx(T.c + GSD * (3_000_070_000 + 0.5))


def test_to_networkx_carries_lengths_and_coordinates() -> None:
    pieces = [*t_junction(60), GraphPiece.from_paths([ring() + 200])]
    nodes, edges = join(pieces)
    graph = to_networkx(nodes, edges)
    assert isinstance(graph, nx.MultiGraph)
    assert graph.number_of_nodes() == 5 and graph.number_of_edges() == 4
    total = sum(length for _, _, length in graph.edges(data="length"))
    assert total == pytest.approx(edges["length_m"].sum())
    assert total == pytest.approx(sum(g.length for g in edges["geometry"]))
    for i, data in graph.nodes(data=True):
        assert (data["x"], data["y"]) == (nodes["x"][i], nodes["y"][i])
    assert dict(graph.degree) == dict(enumerate(nodes["degree"].tolist()))
    assert all(isinstance(g, shapely.LineString) for _, _, g in graph.edges(data="geometry"))


def test_empty_input_gives_empty_tables() -> None:
    nodes, edges = join([GraphPiece.from_paths([])])
    assert len(nodes["id"]) == 0 and len(edges["u"]) == 0 and edges["geometry"].dtype == object
