"""The tree dissolve against polygonizing the whole (sieved) mask at once."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import shapely
from dask.core import get_dependencies
from rasterio.features import shapes, sieve
from scipy import ndimage
from skimage.draw import bezier_curve, disk, polygon

from roadnet.errors import InputError
from roadnet.pipeline.vectorize.dissolve import (
    chunk_windows,
    dissolve,
    dissolve_array,
    dissolve_tree,
    merge_group,
    tree_levels,
    union_touching,
)
from roadnet.pipeline.vectorize.polygons import PixelWindow

THRESHOLD = 0.5
SIEVE_PX = 12
SHAPE = (1100, 900)  # ragged last chunks for 256 and 512
CORNER = (512, 512)  # a chunk corner for both 256 and 512 chunks
CORNER_BOX = (440, 590)  # kept free of other roads around CORNER


def _thick_segment(prob, r0, c0, r1, c1, half_width, value):
    direction = np.array([r1 - r0, c1 - c0], dtype=float)
    normal = np.array([-direction[1], direction[0]]) / np.hypot(*direction) * half_width
    rows = np.array([r0, r1, r1, r0]) + np.array([1, 1, -1, -1]) * normal[0]
    cols = np.array([c0, c1, c1, c0]) + np.array([1, 1, -1, -1]) * normal[1]
    rr, cc = polygon(rows, cols, shape=prob.shape)
    prob[rr, cc] = np.maximum(prob[rr, cc], value)


def road_codes(shape=SHAPE, *, seed=0, corner=True):
    """Seeded uint8 codes: roads, curves, patches, speckle, small holes, a nodata strip."""
    rng = np.random.default_rng(seed)
    h, w = shape
    prob = rng.uniform(0.0, 0.45, shape)
    for _ in range(8):  # long straight roads crossing many chunks
        r0, r1 = rng.integers(0, h, 2)
        _thick_segment(prob, r0, 0, r1, w - 1, rng.uniform(3, 8), rng.uniform(0.6, 1.0))
    for _ in range(6):  # curves
        r0, r1, r2 = rng.integers(0, h, 3)
        c0, c1, c2 = rng.integers(0, w, 3)
        rr, cc = bezier_curve(r0, c0, r1, c1, r2, c2, weight=2.0, shape=shape)
        line = np.zeros(shape, dtype=bool)
        line[rr, cc] = True
        thick = ndimage.binary_dilation(line, iterations=int(rng.integers(2, 5)))
        prob[thick] = np.maximum(prob[thick], 0.8)
    for _ in range(80):  # lone patches (parking lots, yards), some astride chunk borders
        r, c = rng.integers(0, h - 9), rng.integers(0, w - 9)
        prob[r : r + rng.integers(3, 9), c : c + rng.integers(3, 9)] = 0.7
    if corner:  # a road crossing the four chunks that meet at CORNER, apart from the rest
        lo, hi = CORNER_BOX
        prob[lo:hi, lo:hi] = rng.uniform(0.0, 0.45, (hi - lo, hi - lo))
        _thick_segment(prob, 470, 470, 560, 555, 6, 0.9)
        _thick_segment(prob, 480, 540, 545, 475, 4, 0.7)
        rr, cc = disk(CORNER, 9, shape=shape)
        prob[rr, cc] = 0.95
    prob[rng.random(shape) < 0.002] = 0.9  # speckle
    for _ in range(60):  # small holes (cars, shadows)
        r, c = rng.integers(0, h - 4), rng.integers(0, w - 4)
        prob[r : r + rng.integers(1, 4), c : c + rng.integers(1, 4)] = 0.1
    codes = np.round(prob * 254).astype(np.uint8)
    codes[1000:1010, :] = 255  # a nodata strip: never road, though 255 >= every threshold code
    return codes


def reference(codes, sieve_px=SIEVE_PX):
    """The whole-mask result the dissolve must reproduce: sieve, then shapes, at once."""
    mask = ((codes != 255) & (codes / 254 >= THRESHOLD)).astype(np.uint8)  # the definition
    sieved = sieve(mask, size=sieve_px, connectivity=4) if sieve_px > 1 else mask
    polys = [shapely.geometry.shape(g) for g, _ in shapes(sieved, mask=sieved == 1)]
    return np.asarray(polys, dtype=object), sieved


def canonical(polys):
    """Polygons sorted into a comparable order, normalized."""
    polys = shapely.normalize(np.asarray(polys, dtype=object))
    bounds = shapely.bounds(polys)
    order = np.lexsort((shapely.area(polys), bounds[:, 1], bounds[:, 0]))
    return polys[order]


@pytest.fixture(scope="module")
def scene():
    codes = road_codes()
    ref, sieved = reference(codes)
    layers = {
        chunks: dissolve_array(codes, threshold=THRESHOLD, sieve_px=SIEVE_PX, chunks=chunks)
        for chunks in (256, 512, max(SHAPE))
    }
    return codes, ref, sieved, layers


@pytest.mark.parametrize("chunks", [256, 512, max(SHAPE)])
def test_dissolve_matches_whole_mask_shapes(scene, chunks):
    _, ref, _, layers = scene
    ours = layers[chunks]
    assert len(ref) > 20  # the scene is not trivial: many components, one long network
    assert len(ours) == len(ref)
    assert shapely.get_type_id(ours).tolist() == [shapely.GeometryType.POLYGON] * len(ours)
    assert shapely.is_valid(ours).all()
    total = shapely.area(ref).sum()
    difference = shapely.symmetric_difference(shapely.union_all(ours), shapely.union_all(ref))
    assert difference.area <= 1e-9 * total
    np.testing.assert_array_equal(np.sort(shapely.area(ours)), np.sort(shapely.area(ref)))
    assert shapely.equals(canonical(ours), canonical(ref)).all()


def test_layer_does_not_depend_on_chunking(scene):
    _, _, _, layers = scene
    single = canonical(layers[max(SHAPE)])
    for chunks in (256, 512):
        other = canonical(layers[chunks])
        assert shapely.equals(other, single).all()
        # seam vertices are gone: the same rings, vertex for vertex
        assert shapely.to_wkb(other).tolist() == shapely.to_wkb(single).tolist()


def test_road_across_four_chunks_is_one_polygon_of_its_pixel_count(scene):
    _, _, sieved, layers = scene
    labels, _ = ndimage.label(sieved)  # 4-connected
    component = labels == labels[CORNER]
    rows, cols = np.nonzero(component)
    assert rows.min() < CORNER[0] <= rows.max() and cols.min() < CORNER[1] <= cols.max()
    lo, hi = CORNER_BOX
    for chunks in (256, 512):
        ours = layers[chunks]
        hits = ours[shapely.intersects(ours, shapely.box(lo + 20, lo + 20, hi - 20, hi - 20))]
        assert len(hits) == 1
        assert hits[0].area == component.sum()


def test_nodata_strip_is_never_road(scene):
    _, _, _, layers = scene
    strip = shapely.box(0, 1000, SHAPE[1], 1010)  # x = col, y = row
    assert shapely.intersection(shapely.union_all(layers[256]), strip).area == 0


def test_corner_touching_components_stay_separate():
    # two 6 x 6 blocks meeting only at the corner shared by four 256 px chunks
    codes = np.zeros((512, 512), dtype=np.uint8)
    codes[250:256, 250:256] = 254
    codes[256:262, 256:262] = 254
    codes[240:256, 262:270] = 254  # a third block, touching the second only diagonally too
    ours = dissolve_array(codes, threshold=THRESHOLD, sieve_px=4, chunks=256)
    ref, _ = reference(codes, sieve_px=4)
    assert len(ours) == len(ref) == 3
    assert sorted(shapely.area(ours)) == [36.0, 36.0, 128.0]
    assert shapely.is_valid(ours).all()


def test_sieve_sees_components_and_holes_across_chunk_borders():
    codes = np.zeros((128, 128), dtype=np.uint8)
    codes[60:62, 61:67] = 254  # 12 px split 6 / 6 by the border at col 64: kept
    codes[20:22, 62:65] = 254  # 6 px split 4 / 2 by it: removed
    codes[66:69, 100:103] = 254  # 9 px in the halo of the chunk above: removed
    codes[30:50, 56:90] = 254  # a road (680 px) crossing col 64, with
    codes[38:40, 70:82] = 0  # a 24 px hole: kept
    codes[45:47, 62:66] = 0  # a 4 px hole split by the border: filled
    codes[50:80, 20:40] = 254  # a road (600 px) crossing row 64, with
    codes[63:65, 25:27] = 0  # a 4 px hole split by the border: filled
    sieve_px = 10
    ref, _ = reference(codes, sieve_px=sieve_px)
    assert sorted(shapely.area(ref)) == [12.0, 600.0, 680.0 - 24.0]
    assert shapely.get_num_interior_rings(ref).sum() == 1
    for chunks in (64, 32, 16):
        ours = dissolve_array(codes, threshold=THRESHOLD, sieve_px=sieve_px, chunks=chunks)
        assert shapely.equals(canonical(ours), canonical(ref)).all(), chunks


# Found by a random search: with a halo of only ``sieve_px`` the windowed sieve keeps a 2 px
# hole at row 16 that the whole-mask sieve fills (the hole's big neighbour is cut off by the
# window's edge); the halo of 2 * sieve_px gets it right.
HALO_CASE = (
    "...###",
    "..##..",
    "...#..",
    "...#..",
    "..#.##",
    "..#.#.",
    "...#.#",
    "...#..",
    "..#.#.",
    ".#.##.",
    "..#..#",
    "...##.",
)


def test_halo_is_wide_enough_for_cut_neighbours():
    codes = np.zeros((32, 32), dtype=np.uint8)
    codes[6:18, 26:32] = np.array([[c == "#" for c in row] for row in HALO_CASE]) * 254
    ref, sieved = reference(codes, sieve_px=7)
    ours = dissolve_array(codes, threshold=THRESHOLD, sieve_px=7, chunks=16)
    assert shapely.equals(canonical(ours), canonical(ref)).all()
    assert sieved[16, 29:31].tolist() == [1, 1]


def test_halo_wider_than_a_chunk():
    codes = road_codes((300, 260), seed=3, corner=False)
    ref, _ = reference(codes, sieve_px=30)
    for chunks in (37, ((100, 150, 50), (20, 200, 40))):
        ours = dissolve_array(codes, threshold=THRESHOLD, sieve_px=30, chunks=chunks)
        assert shapely.equals(canonical(ours), canonical(ref)).all()
        with dask.config.set(scheduler="synchronous"):
            lazy = dissolve(da.from_array(codes, chunks=chunks), threshold=0.5, sieve_px=30)
        assert shapely.equals(canonical(lazy), canonical(ref)).all()


def test_no_sieve():
    codes = road_codes((300, 260), seed=4, corner=False)
    ref, _ = reference(codes, sieve_px=0)
    ours = dissolve_array(codes, threshold=THRESHOLD, sieve_px=0, chunks=64)
    assert len(ref) > 50  # speckle survives
    assert shapely.equals(canonical(ours), canonical(ref)).all()


# sieve_mask's catch_warnings is not thread-safe: with threads, rasterio's harmless
# NotGeoreferencedWarning can slip through now and then
@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
def test_dask_path_equals_pure_path(scheduler):
    codes = road_codes((700, 600), seed=1, corner=False)
    pure = dissolve_array(codes, threshold=THRESHOLD, sieve_px=SIEVE_PX, chunks=128)
    with dask.config.set(scheduler=scheduler):
        lazy = dissolve(da.from_array(codes, chunks=128), threshold=THRESHOLD, sieve_px=SIEVE_PX)
    assert len(lazy) == len(pure)
    assert shapely.to_wkb(lazy).tolist() == shapely.to_wkb(pure).tolist()


def test_graph_is_small_and_finals_go_only_to_the_caller():
    codes = da.zeros((1100, 900), dtype=np.uint8, chunks=256)  # 5 x 4 chunks
    finals = dissolve_tree(codes, threshold=THRESHOLD, sieve_px=SIEVE_PX)
    n_nodes = sum(len(row) for level in tree_levels(chunk_windows(codes.chunks)) for row in level)
    assert len(finals) == n_nodes == 20 + 6 + 2 + 1
    graph = dict(dask.delayed(finals).__dask_graph__())
    n_source = codes.npartitions
    # per node: the task, its final and its border; the chunks' source tasks; one list task
    assert len(graph) <= n_source + 3 * n_nodes + 1
    final_keys = {f.key for f in finals}
    users = {k for k in graph if k not in final_keys and get_dependencies(graph, k) & final_keys}
    assert len(users) <= 1  # only the list that gathers them


def test_merge_group_unions_across_children_and_splits_final_from_border():
    scene_shape = (40, 40)
    group = PixelWindow(0, 20, 0, 20)  # children: cols 0..10 and 10..20; bottom, right interior
    left = np.array([shapely.box(5, 5, 10, 8), shapely.box(2, 15, 10, 20)], dtype=object)
    right = np.array([shapely.box(10, 5, 14, 8), shapely.box(10, 13, 12, 15)], dtype=object)
    final, border = merge_group([left, right], group, scene_shape)
    # the two halves of one block: one final polygon, without the seam vertices (10, 5), (10, 8)
    assert sorted(shapely.area(final)) == [4.0, 27.0]
    block = final[shapely.area(final) == 27.0][0]
    assert block.equals(shapely.box(5, 5, 14, 8)) and len(block.exterior.coords) == 5
    # (2..10, 15..20) and (10..12, 13..15) meet at one corner: separate, and only the first
    # touches the group's interior bottom side
    assert len(border) == 1 and border[0].equals(left[1])
    final, border = merge_group([border], PixelWindow(0, 40, 0, 40), scene_shape)
    assert len(border) == 0 and final[0].equals(left[1])
    assert merge_group([], group, scene_shape)[0].shape == (0,)


def test_union_touching_joins_edges_not_corners():
    pieces = np.array(
        [
            shapely.box(0, 0, 2, 2),
            shapely.box(2, 0, 4, 1),  # shares an edge with the first
            shapely.box(4, 1, 5, 2),  # meets the second at a corner only
            shapely.box(9, 9, 10, 10),  # alone
        ],
        dtype=object,
    )
    merged = canonical(union_touching(pieces))
    assert shapely.area(merged).tolist() == [6.0, 1.0, 1.0]
    assert merged[0].equals(shapely.union_all(pieces[:2]))
    assert len(union_touching(pieces[3:])) == 1


def test_tree_levels_cover_ragged_grids():
    windows = chunk_windows(((256, 256, 256, 256, 76), (512, 388)))
    levels = tree_levels(windows)
    assert [(len(lv), len(lv[0])) for lv in levels] == [(5, 2), (3, 1), (2, 1), (1, 1)]
    assert levels[-1][0][0].window == PixelWindow(0, 1100, 0, 900)
    assert levels[1][2][0].window == PixelWindow(1024, 1100, 0, 900)
    assert levels[1][2][0].children == ((4, 0), (4, 1))


def test_bad_inputs_are_input_errors():
    codes = np.zeros((64, 64), dtype=np.uint8)
    with pytest.raises(InputError):
        dissolve_array(codes, threshold=0.5, sieve_px=-1)
    with pytest.raises(InputError):
        dissolve_array(codes, threshold=0.5, sieve_px=4, chunks=((32, 16), (64,)))
    with pytest.raises(InputError):
        dissolve_array(codes[None], threshold=0.5, sieve_px=4)
    with pytest.raises(InputError):
        dissolve_tree(da.zeros((64, 64), dtype=np.float32), threshold=0.5, sieve_px=4)
    with pytest.raises(InputError):
        dissolve_tree(da.zeros((64, 64), dtype=np.uint8), threshold=2.0, sieve_px=4)
