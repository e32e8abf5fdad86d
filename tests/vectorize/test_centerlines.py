"""Centerline road graph: masks, halo skeletons, per-chunk skan pieces, the dask builder."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import shapely
from affine import Affine
from rasterio.features import rasterize
from shapely import affinity
from skimage.morphology import skeletonize

from roadnet.errors import InputError
from roadnet.pipeline.vectorize.centerlines import (
    Source,
    centerline_graph,
    centerline_pieces,
    fill_small_holes,
    graph_from_arrays,
    plan_windows,
    road_mask,
    skeleton_piece,
    window_skeleton,
)
from roadnet.pipeline.vectorize.graph import EdgeTable, GraphPiece, NodeTable, join_pieces

GSD = 0.3
T = Affine(GSD, 0.0, 385_000.0, 0.0, -GSD, 6_672_000.0)  # UTM 35N, as tests/conftest.py


def band(shape: tuple[int, int], lines: list[shapely.LineString], width: float) -> np.ndarray:
    """uint8 codes: 254 where a pixel centre (col + ½, row + ½) lies within width/2 of a line."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    points = shapely.points(cols.ravel() + 0.5, rows.ravel() + 0.5)
    dist = shapely.distance(shapely.MultiLineString(lines), points).reshape(shape)
    return np.where(dist <= width / 2, 254, 3).astype(np.uint8)


def network(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A seeded, city-like road mask as uint8 codes (y, x).

    Streets on a skewed grid (8-24 px wide), two oblique arterials (20-36 px), a ring road,
    short driveways (6 px), small holes (cars) in the surface and speckle outside it.
    """
    rng = np.random.default_rng(seed)
    height, width = shape
    shapes: list[tuple[shapely.Geometry, int]] = []

    def road(line: shapely.LineString, w: float) -> None:
        shapes.append((line.buffer(w / 2, quad_segs=8), 1))

    for r in rng.uniform(0.1, 0.9, 3) * height:
        road(
            shapely.LineString([(-20, r), (width + 20, r + rng.uniform(-40, 40))]),
            rng.uniform(8, 24),
        )
    for c in rng.uniform(0.1, 0.9, 3) * width:
        road(
            shapely.LineString([(c, -20), (c + rng.uniform(-40, 40), height + 20)]),
            rng.uniform(8, 24),
        )
    for _ in range(2):
        a, b = rng.uniform(0, 1, 2)
        road(shapely.LineString([(-20, a * height), (width + 20, b * height)]), rng.uniform(20, 36))
    centre = shapely.Point(rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height)
    road(centre.buffer(45).exterior, 10)
    for x, y in rng.uniform(0, 1, (6, 2)) * (width, height):
        angle = rng.uniform(0, 2 * np.pi)
        road(shapely.LineString([(x, y), (x + 30 * np.cos(angle), y + 30 * np.sin(angle))]), 6)
    mask = rasterize(shapes, out_shape=shape, dtype="uint8").astype(bool)
    for r, c in rng.integers(0, shape, (60, 2)):
        size = rng.integers(2, 5)
        mask[r : r + size, c : c + size] = ~mask[r : r + size, c : c + size]
    codes = np.where(mask, rng.integers(140, 255, shape), rng.integers(0, 100, shape))
    return codes.astype(np.uint8)


def dask_graph(codes: np.ndarray, chunks: int, **options: object) -> tuple[NodeTable, EdgeTable]:
    surface = da.from_array(codes, chunks=chunks)
    with dask.config.set(scheduler="synchronous"):
        nodes, edges = centerline_graph(surface, None, transform=T, **options).compute()
    return nodes, edges


def assert_same_graph(a: tuple[NodeTable, EdgeTable], b: tuple[NodeTable, EdgeTable]) -> None:
    (nodes_a, edges_a), (nodes_b, edges_b) = a, b
    for key in ("id", "row", "col", "degree", "x", "y"):
        np.testing.assert_array_equal(nodes_a[key], nodes_b[key], err_msg=key)
    for key in ("u", "v", "length_m"):
        np.testing.assert_array_equal(edges_a[key], edges_b[key], err_msg=key)
    assert all(shapely.equals_exact(edges_a["geometry"], edges_b["geometry"], 0.0))


# -- masks --------------------------------------------------------------------------------------


def test_road_mask_sources() -> None:
    surface = np.array([[0, 126, 127, 254, 255, 0]], dtype=np.uint8)
    centerline = np.array([[254, 0, 0, 0, 255, 200]], dtype=np.uint8)
    s = road_mask(surface, centerline, source="surface")
    c = road_mask(surface, centerline, source="centerline")
    both = road_mask(surface, centerline, source="combined")
    assert s.tolist() == [[False, False, True, True, False, False]]  # 127/254 = 0.5; 255 nodata
    assert c.tolist() == [[True, False, False, False, False, True]]
    assert both.tolist() == [[True, False, True, True, False, True]]
    high = road_mask(surface, centerline, source="combined", centerline_threshold=0.9)
    assert high.tolist() == [[True, False, True, True, False, False]]
    assert road_mask(None, centerline, source="centerline").tolist() == c.tolist()


@pytest.mark.parametrize(
    ("surface", "centerline", "options", "match"),
    [
        (np.zeros((4, 4), np.uint8), None, {"source": "combined"}, "needs the centerline"),
        (None, np.zeros((4, 4), np.uint8), {}, "needs the surface"),
        (np.zeros((4, 4), np.float32), None, {}, "uint8"),
        (np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8), {"source": "combined"}, "shape"),
        (np.zeros((4, 4), np.uint8), None, {"threshold": 0.0}, "threshold"),
        (np.zeros((4, 4), np.uint8), None, {"source": "edge"}, "source"),
    ],
)
def test_road_mask_rejects_bad_input(
    surface: np.ndarray | None, centerline: np.ndarray | None, options: dict, match: str
) -> None:
    with pytest.raises(InputError, match=match):
        road_mask(surface, centerline, **options)


def test_fill_small_holes_only_fills_small_inner_holes() -> None:
    mask = np.ones((40, 40), dtype=bool)
    mask[5:7, 5:8] = False  # 6 px hole: filled
    mask[20:30, 20:30] = False  # 100 px hole: kept
    mask[0:2, 15:17] = False  # 4 px but touches the edge: not a hole
    filled = fill_small_holes(mask, max_px=32)
    assert filled[5:7, 5:8].all()
    assert not filled[20:30, 20:30].any()
    assert not filled[0:2, 15:17].any()
    assert np.array_equal(fill_small_holes(mask, max_px=0), mask)


def test_small_hole_makes_no_loop() -> None:
    codes = band((120, 200), [shapely.LineString([(-5, 60), (205, 60)])], 15)
    codes[58:61, 100:103] = 0  # a car on the road
    assert graph_from_arrays(codes, None, transform=T, hole_px=0)[0]["degree"].max() == 3
    nodes, edges = graph_from_arrays(codes, None, transform=T)
    assert len(edges["u"]) == 1 and nodes["degree"].tolist() == [1, 1]


# -- windows and halo ---------------------------------------------------------------------------


def test_plan_windows_cover_ragged_chunks() -> None:
    windows = plan_windows(((128, 128, 44), (100, 37)), halo_px=48)
    assert len(windows) == 6
    assert windows[0].core == (0, 128, 0, 100) and windows[0].window == (0, 176, 0, 137)
    last = windows[-1]
    assert last.location == (2, 1) and last.core == (256, 300, 100, 137)
    assert last.window == (208, 300, 52, 137) and last.origin == (208, 52)
    covered = np.zeros((300, 137), dtype=int)
    for w in windows:
        r0, r1, c0, c1 = w.core
        covered[r0:r1, c0:c1] += 1
    assert (covered == 1).all()


def test_halo_skeleton_cores_equal_whole_image_skeleton() -> None:
    codes = network((512, 640), seed=3)
    whole = window_skeleton(codes, None)
    assert np.array_equal(whole, skeletonize(fill_small_holes(codes >= 127, max_px=32)))
    assert whole.sum() > 2000

    def mismatches(halo: int) -> int:
        bad = 0
        for w in plan_windows(((128,) * 4, (128,) * 5), halo_px=halo):
            skel = window_skeleton(codes[w.slices], None)
            r0, r1, c0, c1 = w.core
            o0, o1 = w.origin
            bad += not np.array_equal(
                skel[r0 - o0 : r1 - o0, c0 - o1 : c1 - o1], whole[r0:r1, c0:c1]
            )
        return bad

    assert mismatches(48) == 0
    assert mismatches(4) > 0  # the halo matters: too little context changes the skeleton


def test_too_narrow_halo_warns() -> None:
    codes = network((384, 384), seed=3)
    with pytest.warns(UserWarning, match="halo_px"):
        dask_graph(codes, 128, halo_px=4)


def test_chunks_cut_a_road_at_one_shared_border_pixel() -> None:
    codes = band((128, 256), [shapely.LineString([(-5, 40), (261, 90)])], 9)
    skeleton = window_skeleton(codes, None)
    left = skeleton_piece(skeleton, origin=(0, 0), core=(0, 128, 0, 128))
    right = skeleton_piece(skeleton, origin=(0, 0), core=(0, 128, 128, 256))
    assert len(left) == len(right) == 1
    assert left.border.tolist() == right.border.tolist()
    ((row, col),) = left.border.tolist()
    assert col in (127, 128)
    (a,), (b,) = list(left.paths()), list(right.paths())
    assert a[-1].tolist() == [row, col] and b[0].tolist() == [row, col]
    assert len(a) + len(b) - 1 == skeleton.sum()  # every pixel once, the border pixel twice


# -- graphs -------------------------------------------------------------------------------------


def test_straight_road_is_one_centred_edge_for_every_chunking() -> None:
    shape, width = (384, 640), 15
    axis = shapely.LineString([(-10, 30), (650, 330)])  # pixel (x=col, y=row), oblique
    codes = band(shape, [axis], width)
    results = [graph_from_arrays(codes, None, transform=T)]
    results += [dask_graph(codes, chunks) for chunks in (128, 256)]
    for nodes, edges in results:
        assert len(edges["u"]) == 1 and nodes["degree"].tolist() == [1, 1]
        (line,) = edges["geometry"]
        # thinning bends a road's end where the scene edge cuts it: compare away from there
        inner = shapely.box(width, width, shape[1] - width, shape[0] - width)
        inner, truth = (affinity.affine_transform(g, T.to_shapely()) for g in (inner, axis))
        assert shapely.hausdorff_distance(line & inner, truth & inner) <= 1.0 * GSD
    for other in results[1:]:
        assert_same_graph(results[0], other)


def junction_roads(kind: str, row: float, col: float) -> list[shapely.LineString]:
    """A T, an axis-aligned cross or an oblique cross meeting at pixel (row, col)."""
    x, y = col + 0.5, row + 0.5
    horizontal = shapely.LineString([(-10, y), (400, y)])
    if kind == "T":
        return [horizontal, shapely.LineString([(x, y), (x, 400)])]
    if kind == "cross":
        return [horizontal, shapely.LineString([(x, -10), (x, 400)])]
    return [  # oblique: about 50 degrees apart, thins into two Y junctions
        shapely.LineString([(x - 250, y - 120), (x + 250, y + 120)]),
        shapely.LineString([(x - 120, y + 250), (x + 120, y - 250)]),
    ]


@pytest.mark.parametrize(("kind", "degree"), [("T", 3), ("cross", 4), ("oblique", 4)])
def test_junction_is_one_node_wherever_the_chunk_border_runs(kind: str, degree: int) -> None:
    # inside a chunk, on a chunk border, one px off it, on a chunk corner (chunks of 128)
    for row, col in [(70, 80), (128, 90), (127, 129), (128, 128)]:
        codes = band((256, 256), junction_roads(kind, row, col), 15)
        whole = graph_from_arrays(codes, None, transform=T)
        nodes, edges = whole
        assert sorted(nodes["degree"].tolist()) == [1] * degree + [degree], (row, col)
        (junction,) = np.flatnonzero(nodes["degree"] == degree)
        assert abs(nodes["row"][junction] - row) <= 3 and abs(nodes["col"][junction] - col) <= 3
        assert len(edges["u"]) == degree
        assert_same_graph(whole, dask_graph(codes, 128))


@pytest.mark.parametrize("chunks", [128, 200])
def test_dask_path_equals_whole_image_path(chunks: int) -> None:
    codes = network((600, 520), seed=11)  # ragged last chunks for both chunkings
    whole = graph_from_arrays(codes, None, transform=T)
    nodes, edges = whole
    assert len(edges["u"]) > 20 and (nodes["degree"] >= 3).sum() > 10
    assert (nodes["degree"] != 2).all()
    assert_same_graph(whole, dask_graph(codes, chunks))


def test_sources_choose_the_mask_the_graph_follows() -> None:
    shape = (100, 300)
    road = shapely.LineString([(-5, 50), (305, 50)])
    surface = band(shape, [road], 15)
    surface[:, 140:160] = 20  # the surface misses a stretch (a shadow)
    centerline = band(shape, [road], 5)  # the centerline task is confident there
    centerline[:, :100] = 0  # and fragmentary elsewhere

    def graph(source: Source) -> tuple[NodeTable, EdgeTable]:
        return graph_from_arrays(surface, centerline, transform=T, source=source)

    assert len(graph("surface")[1]["u"]) == 2  # two pieces either side of the gap
    ((line,),) = [graph("combined")[1]["geometry"]]  # bridged: one road across
    assert line.length > 270 * GSD
    (cl,) = graph("centerline")[1]["geometry"]
    assert cl.length < 210 * GSD  # the centerline alone starts at col 100
    chunked = dask_graph(surface, 128)  # surface only: the centerline is not needed
    assert_same_graph(graph("surface"), chunked)


def test_centerline_pieces_is_one_task_per_chunk() -> None:
    codes = network((300, 260), seed=5)
    surface = da.from_array(codes, chunks=128)
    centerline = da.from_array(codes, chunks=128)
    pieces = centerline_pieces(surface, centerline, source="combined")
    assert len(pieces) == 9
    with dask.config.set(scheduler="synchronous"):
        computed = dask.compute(*pieces)
    assert all(isinstance(p, GraphPiece) for p in computed)
    assert sum(len(p) for p in computed) > 9
    assert all(p.coords.dtype == np.int64 for p in computed)
    client_side = join_pieces(computed, transform=T)
    whole = graph_from_arrays(codes, codes, transform=T, source="combined")
    assert_same_graph(whole, client_side)


def test_empty_and_speckled_scenes_give_empty_graphs() -> None:
    codes = np.zeros((200, 300), dtype=np.uint8)
    codes[::7, ::9] = 254  # isolated road pixels: a skeleton without links
    for surface in (np.zeros_like(codes), codes):
        nodes, edges = dask_graph(surface, 128)
        assert len(nodes["id"]) == 0 and len(edges["u"]) == 0


def test_centerline_graph_rejects_bad_arrays() -> None:
    surface = da.zeros((64, 64), dtype=np.float32, chunks=32)
    with pytest.raises(InputError, match="uint8"):
        centerline_graph(surface, None, transform=T)
    with pytest.raises(InputError, match="centerline"):
        centerline_pieces(da.zeros((64, 64), dtype=np.uint8, chunks=32), None, source="combined")
