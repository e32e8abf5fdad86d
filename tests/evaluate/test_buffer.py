"""Buffer scores (completeness, correctness, quality) checked by hand."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from shapely import LineString, MultiLineString, Point

from roadnet.errors import InputError
from roadnet.pipeline.evaluate.buffer import buffer_scores, matched_length, matched_lengths

X0, Y0 = 385_000.0, 6_672_000.0  # UTM 35N metres, as the fixture scenes


def line(*xy: tuple[float, float]) -> LineString:
    return LineString([(X0 + x, Y0 + y) for x, y in xy])


def test_offset_within_buffer_scores_one() -> None:
    truth = [line((0, 0), (100, 0))]
    pred = [line((0, 1.5), (100, 1.5))]  # 1.5 m off, buffer 2 m
    s = buffer_scores(truth, pred, buffer_m=2.0)
    assert s.completeness == pytest.approx(1.0)
    assert s.correctness == pytest.approx(1.0)
    assert s.quality == pytest.approx(1.0)
    assert s.truth_length_m == pytest.approx(100.0)
    assert s.prediction_length_m == pytest.approx(100.0)


def test_offset_beyond_buffer_scores_zero() -> None:
    truth = [line((0, 0), (100, 0))]
    pred = [line((0, 2.5), (100, 2.5))]  # 2.5 m off, buffer 2 m
    s = buffer_scores(truth, pred, buffer_m=2.0)
    assert (s.completeness, s.correctness, s.quality) == (0.0, 0.0, 0.0)
    assert s.matched_truth_length_m == 0.0


def test_half_overlap_by_hand() -> None:
    # truth x in [0, 100], prediction x in [50, 150], both on y = 0, buffer 2 m.
    # The round cap of a buffer reaches exactly 2 m past a line's end along the line (a buffer
    # vertex lies on the axis), so the truth is matched on x in [48, 100] -> 52 m and the
    # prediction on x in [50, 102] -> 52 m.
    #   completeness = 52 / 100
    #   correctness  = 52 / 100
    #   quality      = 52 / (100 + (100 - 52)) = 52 / 148
    s = buffer_scores([line((0, 0), (100, 0))], [line((50, 0), (150, 0))], buffer_m=2.0)
    assert s.matched_truth_length_m == pytest.approx(52.0)
    assert s.matched_prediction_length_m == pytest.approx(52.0)
    assert s.completeness == pytest.approx(0.52)
    assert s.correctness == pytest.approx(0.52)
    assert s.quality == pytest.approx(52 / 148)


def test_half_right_half_far_by_hand() -> None:
    # truth x in [0, 100] on y = 0; prediction: x in [0, 50] on y = 0 (right) and
    # x in [50, 100] on y = 10 (10 m off, wrong), buffer 2 m.
    #   matched prediction = 50 (the far piece is 10 m > 2 m away)
    #   matched truth      = 52 (x in [0, 52]: the right piece's cap reaches x = 52; the far
    #                        piece's buffer spans y in [8, 12] and misses the truth)
    #   completeness = 52 / 100, correctness = 50 / 100,
    #   quality = 50 / (100 + (100 - 52)) = 50 / 148
    truth = line((0, 0), (100, 0))
    pred = [line((0, 0), (50, 0)), line((50, 10), (100, 10))]
    s = buffer_scores(truth, pred, buffer_m=2.0)
    assert s.completeness == pytest.approx(0.52)
    assert s.correctness == pytest.approx(0.50)
    assert s.quality == pytest.approx(50 / 148)


def test_empty_inputs_defined() -> None:
    truth = [line((0, 0), (100, 0))]
    none = buffer_scores([], [], buffer_m=2.0)
    assert (none.completeness, none.correctness, none.quality) == (1.0, 1.0, 1.0)
    no_pred = buffer_scores(truth, [], buffer_m=2.0)
    assert (no_pred.completeness, no_pred.correctness, no_pred.quality) == (0.0, 0.0, 0.0)
    assert no_pred.truth_length_m == pytest.approx(100.0)
    no_truth = buffer_scores([], truth, buffer_m=2.0)
    assert (no_truth.completeness, no_truth.correctness, no_truth.quality) == (0.0, 0.0, 0.0)
    # missing and empty geometries are dropped, not errors
    only_empty = buffer_scores(truth, [None, LineString()], buffer_m=2.0)
    assert only_empty.prediction_length_m == 0.0
    assert only_empty.completeness == 0.0


def test_geoseries_lengths_in_metres() -> None:
    truth = gpd.GeoSeries([line((0, 0), (300, 0)), line((0, 0), (0, 400))], crs="EPSG:32635")
    pred = gpd.GeoSeries([line((0, 1), (300, 1))], crs="EPSG:32635")
    s = buffer_scores(truth, pred, buffer_m=2.0)
    assert s.truth_length_m == pytest.approx(700.0)
    assert s.prediction_length_m == pytest.approx(300.0)
    # truth matched: the 300 m road, plus the vertical one for y in [0, 3] (pred at y = 1,
    # buffer 2: the side of the pred buffer at y = 3 crosses the vertical line at x = 0)
    assert s.matched_truth_length_m == pytest.approx(303.0)
    assert s.correctness == pytest.approx(1.0)
    assert s.quality == pytest.approx(300 / (300 + 700 - 303))


def test_crs_checks() -> None:
    geo = gpd.GeoSeries([LineString([(24.9, 60.1), (24.91, 60.1)])], crs="EPSG:4326")
    with pytest.raises(InputError, match="geographic"):
        buffer_scores(geo, geo, buffer_m=2.0)
    a = gpd.GeoSeries([line((0, 0), (10, 0))], crs="EPSG:32635")
    b = gpd.GeoSeries([line((0, 0), (10, 0))], crs="EPSG:32634")
    with pytest.raises(InputError, match="differs"):
        buffer_scores(a, b, buffer_m=2.0)


def test_bad_inputs_raise() -> None:
    with pytest.raises(InputError, match="line"):
        buffer_scores([Point(0, 0)], [line((0, 0), (1, 0))], buffer_m=2.0)
    with pytest.raises(InputError, match="shapely"):
        buffer_scores(["LINESTRING (0 0, 1 0)"], [], buffer_m=2.0)
    with pytest.raises(InputError, match="buffer_m"):
        buffer_scores([], [], buffer_m=0.0)


def test_multilinestring_and_single_geometry() -> None:
    pred = MultiLineString([[(X0, Y0), (X0 + 50, Y0)], [(X0 + 50, Y0 + 10), (X0 + 100, Y0 + 10)]])
    s = buffer_scores(line((0, 0), (100, 0)), pred, buffer_m=2.0)
    assert s.correctness == pytest.approx(0.5)  # same geometry as the two-piece case


def test_local_clipping_equals_global_union() -> None:
    rng = np.random.default_rng(7)
    n = 300
    start = rng.uniform(0, 1000, (n, 2))
    end = start + rng.normal(0, 60, (n, 2))
    a = shapely.linestrings(np.stack([start, end], axis=1))
    b = shapely.linestrings(np.stack([start + rng.normal(0, 3, (n, 2)), end], axis=1))[::2]
    for d in (1.0, 5.0):
        one_union = shapely.union_all(shapely.buffer(b, d))
        expected = shapely.length(shapely.intersection(a, one_union)).sum()
        assert matched_length(a, b, buffer_m=d) == pytest.approx(expected, rel=1e-9)
        per_line = shapely.length(shapely.intersection(a, one_union))
        np.testing.assert_allclose(matched_lengths(a, b, buffer_m=d), per_line, rtol=1e-9)


def test_matched_lengths_per_line_by_hand() -> None:
    # the truth of the half-right case, cut in two, and a third line far from everything
    truth = [line((0, 0), (50, 0)), None, line((50, 0), (100, 0)), line((0, 500), (10, 500))]
    pred = [line((0, 0), (50, 0)), line((50, 10), (100, 10))]
    # the missing geometry is dropped; the second half keeps the 2 m cap of the first piece
    np.testing.assert_allclose(matched_lengths(truth, pred, buffer_m=2.0), [50.0, 2.0, 0.0])
    assert matched_lengths(truth, [], buffer_m=2.0).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(InputError, match="buffer_m"):
        matched_lengths(truth, pred, buffer_m=-1.0)
