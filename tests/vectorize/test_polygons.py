"""The per-chunk polygon kernel and the finishing of the road-surface layer."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from affine import Affine
from rasterio.transform import from_origin

from roadnet.errors import InputError
from roadnet.pipeline.vectorize.polygons import (
    NODATA_CODE,
    PixelWindow,
    Side,
    chunk_polygons,
    feature_columns,
    fill_holes,
    finish_polygons,
    halo_window,
    lowest_road_code,
    polygonize,
    road_mask,
    sieve_halo,
    sieve_mask,
    to_map,
    touched_sides,
)

GSD = 0.5
ORIGIN = (385_000.0, 6_672_000.0)
TRANSFORM = from_origin(*ORIGIN, GSD, GSD)


def test_road_mask_compares_integer_codes():
    codes = np.arange(256, dtype=np.uint8).reshape(16, 16)
    road = road_mask(codes, threshold=0.5)
    assert road.sum() == 254 - 127 + 1  # codes 127..254; 127 / 254 == 0.5 exactly
    assert not road.flat[126] and road.flat[127] and not road.flat[NODATA_CODE]
    assert lowest_road_code(77 / 254) == 77  # not 78, despite 77 / 254 * 254 > 77
    assert lowest_road_code(0.3) == 77  # 76 / 254 < 0.3 <= 77 / 254
    assert road_mask(codes, threshold=0.0).sum() == 255  # everything but nodata
    assert road_mask(codes, threshold=1.0).sum() == 1  # code 254 only


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan")])
def test_road_mask_rejects_thresholds_outside_0_1(threshold):
    with pytest.raises(InputError):
        road_mask(np.zeros((2, 2), dtype=np.uint8), threshold=threshold)


def test_road_mask_rejects_probabilities():
    with pytest.raises(InputError):
        road_mask(np.zeros((2, 2), dtype=np.float32), threshold=0.5)


def test_polygonize_gives_integer_scene_coordinates():
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:4, 1:5] = True
    mask[2, 2] = False  # a hole
    mask[4, 5] = True  # touches the block only at a corner: its own component
    polys = polygonize(mask, origin=(100, 200))
    assert len(polys) == 2
    block = polys[shapely.area(polys) == 11][0]
    assert block.bounds == (201.0, 101.0, 205.0, 104.0)  # x = col, y = row
    assert len(block.interiors) == 1
    coords = shapely.get_coordinates(polys)
    assert (coords == np.round(coords)).all()
    assert len(polygonize(np.zeros((4, 4), dtype=bool))) == 0


def test_touched_sides_only_count_sides_inside_the_scene():
    window = PixelWindow(0, 10, 10, 20)  # top on the scene border, right inside the scene
    polys = np.array(
        [
            shapely.box(12, 0, 14, 3),  # top: scene border
            shapely.box(18, 4, 20, 6),  # right
            shapely.box(10, 8, 12, 10),  # left and bottom
            shapely.box(12, 4, 14, 6),  # none
        ],
        dtype=object,
    )
    flags = touched_sides(polys, window=window, scene_shape=(30, 40))
    assert flags.tolist() == [0, Side.RIGHT, Side.LEFT | Side.BOTTOM, 0]
    assert touched_sides(polys, window=window, scene_shape=(10, 20)).tolist() == [0, 0, 4, 0]


def test_sieve_halo_and_windows():
    assert sieve_halo(0) == sieve_halo(1) == 0
    assert sieve_halo(12) == 24
    with pytest.raises(InputError):
        sieve_halo(-1)
    core = PixelWindow(0, 64, 64, 128)
    assert halo_window(core, halo=24, scene_shape=(100, 140)) == PixelWindow(0, 88, 40, 140)
    assert core.shape == (64, 64)


def test_sieve_mask_removes_small_components_and_fills_small_holes():
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:10, 2:10] = True
    mask[4:6, 4:6] = False  # 4 px hole
    mask[15:17, 15:17] = True  # 4 px speckle
    sieved = sieve_mask(mask, sieve_px=5)
    assert sieved.dtype == np.uint8
    assert sieved.sum() == 64
    assert sieve_mask(mask, sieve_px=1).sum() == mask.sum()


def test_chunk_polygons_uses_the_halo_and_splits_border_pieces():
    scene_shape = (64, 64)
    mask = np.zeros(scene_shape, dtype=bool)
    mask[10:12, 29:35] = True  # 12 px astride the chunk border at col 32
    mask[20:30, 5:15] = True  # inside the left chunk
    mask[40:42, 30:32] = True  # 4 px speckle against the border
    core = PixelWindow(0, 64, 0, 32)
    window = halo_window(core, halo=sieve_halo(10), scene_shape=scene_shape)
    part = mask[window.row_start : window.row_stop, window.col_start : window.col_stop]
    final, border = chunk_polygons(
        part, window=window, core=core, scene_shape=scene_shape, sieve_px=10
    )
    assert [p.bounds for p in final] == [(5.0, 20.0, 15.0, 30.0)]
    assert [p.bounds for p in border] == [(29.0, 10.0, 32.0, 12.0)]  # the left half, kept
    # without the halo the sieve would see only the 6 px half and remove it
    final, border = chunk_polygons(
        mask[:, :32], window=core, core=core, scene_shape=scene_shape, sieve_px=10
    )
    assert len(border) == 0


def test_chunk_polygons_rejects_mismatched_windows():
    core = PixelWindow(0, 8, 0, 8)
    with pytest.raises(InputError):
        chunk_polygons(
            np.zeros((4, 4), bool), window=core, core=core, scene_shape=(8, 8), sieve_px=0
        )
    with pytest.raises(InputError):
        chunk_polygons(
            np.zeros((4, 4), bool),
            window=PixelWindow(0, 4, 0, 4),
            core=core,
            scene_shape=(8, 8),
            sieve_px=0,
        )


def test_to_map_puts_pixel_origin_at_the_scene_origin():
    pixel = np.array([shapely.box(0, 0, 1, 1)], dtype=object)
    mapped = to_map(pixel, transform=TRANSFORM)[0]
    assert mapped.bounds == pytest.approx((ORIGIN[0], ORIGIN[1] - GSD, ORIGIN[0] + GSD, ORIGIN[1]))
    rotated = Affine.rotation(30) * Affine.translation(10, 20) * Affine.scale(0.3)
    square = np.array([shapely.box(3, 4, 7, 9)], dtype=object)
    expected = [rotated * xy for xy in shapely.get_coordinates(square)]
    np.testing.assert_allclose(shapely.get_coordinates(to_map(square, transform=rotated)), expected)
    with pytest.raises(InputError):
        to_map(square, transform=Affine.scale(0, 1))


def _square_with_holes():
    shell = [(0, 0), (40, 0), (40, 40), (0, 40)]
    small = [(5, 5), (7, 5), (7, 7), (5, 7)]  # 4 px = 1 m2 at 0.5 m
    large = [(20, 20), (30, 20), (30, 30), (20, 30)]  # 100 px = 25 m2
    return shapely.Polygon(shell, [small, large])


def test_fill_holes_by_area():
    poly = np.array([_square_with_holes()], dtype=object)
    assert len(fill_holes(poly, max_area=5)[0].interiors) == 1
    assert len(fill_holes(poly, max_area=4)[0].interiors) == 2  # 4 is not smaller than 4
    assert len(fill_holes(poly, max_area=101)[0].interiors) == 0


def test_finish_polygons_fills_holes_drops_small_and_simplifies():
    stairs = shapely.Polygon(
        [(50, 0), (60, 0), (60, 1), (61, 1), (61, 2), (62, 2), (62, 20), (50, 20)]
    )
    speck = shapely.box(100, 100, 102, 102)  # 4 px = 1 m2
    polys = np.array([_square_with_holes(), speck, stairs], dtype=object)
    out = finish_polygons(
        polys, transform=TRANSFORM, hole_area_m2=2.0, min_area_m2=2.0, simplify_m=0.0
    )
    assert len(out) == 2
    by_area = sorted(out, key=lambda p: p.area)
    assert by_area[1].area == pytest.approx((1600 - 100) * GSD**2)  # small hole filled
    assert len(by_area[1].interiors) == 1
    assert len(by_area[0].exterior.coords) == len(stairs.exterior.coords)  # not simplified
    simplified = finish_polygons(
        polys, transform=TRANSFORM, hole_area_m2=0.0, min_area_m2=0.0, simplify_m=1.0
    )
    assert len(simplified) == 3
    assert shapely.is_valid(simplified).all()
    assert sum(shapely.get_num_coordinates(simplified)) < sum(shapely.get_num_coordinates(polys))
    assert len(sorted(simplified, key=lambda p: p.area)[-1].interiors) == 2  # holes kept


def test_finish_polygons_keeps_a_dense_layer_valid():
    rng = np.random.default_rng(0)
    mask = rng.random((200, 200)) < 0.55  # ragged shapes with many touching holes
    polys = polygonize(sieve_mask(mask, sieve_px=3))
    out = finish_polygons(
        polys, transform=TRANSFORM, hole_area_m2=1.0, min_area_m2=0.0, simplify_m=0.75
    )
    assert len(out) > 0
    assert shapely.is_valid(out).all()
    assert (shapely.get_type_id(out) == shapely.GeometryType.POLYGON).all()


@pytest.mark.parametrize(
    "option", [{"hole_area_m2": -1.0}, {"min_area_m2": float("nan")}, {"simplify_m": -0.1}]
)
def test_finish_polygons_rejects_bad_sizes(option):
    sizes = {"hole_area_m2": 0.0, "min_area_m2": 0.0, "simplify_m": 0.0} | option
    with pytest.raises(InputError):
        finish_polygons(np.empty(0, dtype=object), transform=TRANSFORM, **sizes)


def test_feature_columns_in_metres():
    polys = to_map(np.array([_square_with_holes()], dtype=object), transform=TRANSFORM)
    columns = feature_columns(polys)
    assert columns["area_m2"].tolist() == pytest.approx([(1600 - 4 - 100) * GSD**2])
    assert columns["perimeter_m"].tolist() == pytest.approx([(160 + 8 + 40) * GSD])
    assert columns["area_m2"].dtype == np.float64
