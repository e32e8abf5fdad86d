"""Chunked pixel scores: hand-checked counts, and exactly the in-memory scores on any chunking."""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import rasterio
from _results import CRS, TRANSFORM, road_codes
from affine import Affine
from rasterio.crs import CRS as RioCRS

from roadnet.errors import InputError
from roadnet.pipeline.evaluate.inputs import check_same_grid, task_thresholds, truth_label_paths
from roadnet.pipeline.evaluate.pixels import (
    COUNTS,
    ArrayWindows,
    StoreWindows,
    block_counts,
    chunked_scores,
    halo_px,
    in_memory_scores,
    predicted_mask,
    score_windows,
    scores_from_pixel_counts,
    window_task,
)
from roadnet.pipeline.inference.run import CUTOFFS_ATTR
from roadnet.tasks import TASKS


def _mask(shape: tuple[int, int], *pixels: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    for r, c in pixels:
        out[r, c] = True
    return out


def test_relaxed_scores_by_hand() -> None:
    # truth at (2, 2); predictions at (2, 4): 2 px away, and (0, 0): sqrt(8) = 2.83 px away
    truth = _mask((5, 7), (2, 2))
    pred = _mask((5, 7), (2, 4), (0, 0))
    s = chunked_scores(pred, truth, chunks=3, rho=2)
    # strict: nothing hits; relaxed: 1 of 2 predictions within 2 px of truth, truth found
    assert (s["tp"], s["fp"], s["fn"]) == (0, 2, 1)
    assert s["precision"] == s["recall"] == s["f1"] == s["iou"] == 0.0
    assert s["relaxed_precision"] == 0.5
    assert s["relaxed_recall"] == 1.0
    assert s["relaxed_f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    # rho 1.5: the 2 px neighbour is out of reach; a diagonal one (1.41 px) is in
    s = chunked_scores(pred, truth, chunks=3, rho=1.5)
    assert s["relaxed_precision"] == s["relaxed_recall"] == 0.0
    diag = _mask((5, 7), (3, 3))
    s = chunked_scores(diag, truth, chunks=2, rho=1.5)
    assert s["relaxed_precision"] == s["relaxed_recall"] == s["relaxed_f1"] == 1.0
    assert s["precision"] == 0.0


def test_block_counts_use_the_halo_but_count_only_the_core() -> None:
    # a 4 x 4 core with a 2 px halo: truth in the halo only, prediction in the core only
    pred = _mask((8, 8), (2, 2))
    truth = _mask((8, 8), (0, 2), (7, 7))  # (0, 2) is 2 px above the core pixel; (7, 7) far
    counts = dict(zip(COUNTS, block_counts(pred, truth, halo=2, rho=2).tolist(), strict=True))
    # the halo's truth pixels are not the core's: no truth counted, but the prediction is
    # within 2 px of truth, so it counts as correct
    assert counts == {
        "tp": 0,
        "fp": 1,
        "fn": 0,
        "pred_correct": 1,
        "pred": 1,
        "truth_found": 0,
        "truth": 0,
    }


def _roadlike(shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    codes = road_codes(*shape, seed=seed, roads=5)
    truth = codes[2] > 160  # a thin centerline
    shifted = np.roll(road_codes(*shape, seed=seed, roads=5)[2] > 120, 1, axis=1)
    return shifted, truth


@pytest.mark.parametrize("rho", [0, 1, 1.5, 2, 4.2])
@pytest.mark.parametrize(
    ("shape", "chunks"),
    [((131, 157), (64, 64)), ((131, 157), (50, 37)), ((40, 33), (7, 5)), ((9, 120), (1, 300))],
)
def test_chunked_equals_in_memory_exactly(
    rho: float, shape: tuple[int, int], chunks: tuple[int, int]
) -> None:
    # ragged last chunks, chunks thinner than the halo, one chunk row
    rng = np.random.default_rng(int(rho * 10) + chunks[0])
    cases = [
        (rng.random(shape) < 0.05, rng.random(shape) < 0.03),  # scattered pixels
        _roadlike(shape, seed=3),  # thin roads off by a pixel or two
        (np.zeros(shape, bool), rng.random(shape) < 0.02),  # empty prediction
        (np.zeros(shape, bool), np.zeros(shape, bool)),  # nothing at all
    ]
    for pred, truth in cases:
        ours = chunked_scores(pred, truth, chunks=chunks, rho=rho)
        assert ours == in_memory_scores(pred, truth, rho=rho)  # every float bit for bit


def test_a_window_at_the_edge_is_padded_with_zeros() -> None:
    rng = np.random.default_rng(2)
    pred, truth = rng.random((20, 30)) < 0.2, rng.random((20, 30)) < 0.2
    source = ArrayWindows(((pred, truth),))
    counts, nodata, _ = window_task(source, core=(0, 8, 22, 30), rho=2)  # the top-right corner
    padded = [np.pad(a[0:10, 20:30], ((2, 0), (0, 2))) for a in (pred, truth)]
    assert np.array_equal(counts[0], block_counts(*padded, halo=2, rho=2))
    assert nodata == 0


def test_bands_and_clusters_do_not_change_the_counts() -> None:
    from distributed import Client, LocalCluster

    pred, truth = _roadlike((200, 180), seed=5)
    expected = in_memory_scores(pred, truth, rho=2)
    source = ArrayWindows(((pred, truth), (truth, pred)))
    chunks = ((40,) * 5, (40,) * 4 + (20,))
    for band_chunks in (1, 5, 1000):  # a band of one chunk row, of one, of all
        counts, _, _ = score_windows(source, chunks=chunks, rho=2, band_chunks=band_chunks)
        assert scores_from_pixel_counts(counts[0]) == expected
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None)
        as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        counts, _, classes = score_windows(
            source, chunks=chunks, rho=2, client=client, band_chunks=5, shrink=(1, 7)
        )
    assert scores_from_pixel_counts(counts[0]) == expected
    assert scores_from_pixel_counts(counts[1]) == in_memory_scores(truth, pred, rho=2)
    assert classes is not None and classes.shape == (3, 29, 26)
    from roadnet.pipeline.evaluate.errors import error_classes, shrink_max

    whole = error_classes(truth, pred)
    for k, name in enumerate(("tp", "fp", "fn")):  # chunk shares OR-ed = the whole shrunk
        assert np.array_equal(classes[k], shrink_max(whole[name], 7))


def test_store_windows_read_the_result_and_the_truth(tmp_path: Path) -> None:
    from _results import write_result

    codes = road_codes(300, 260, seed=2)
    codes[:, 100:120, 50:90] = 255  # no data there
    store = write_result(tmp_path / "r.zarr", codes, chunk=128)
    rng = np.random.default_rng(3)
    truth = {t: (codes[i] > 120) ^ (rng.random(codes[i].shape) < 0.01) for i, t in enumerate(TASKS)}
    folder = _write_labels(tmp_path / "labels", truth)
    source = StoreWindows(
        store=str(store),
        labels=tuple(str(folder / f"{t}.tif") for t in TASKS),
        cuts=(0.5, 0.6, 0.4),
        shape=(300, 260),
    )
    counts, nodata, _ = score_windows(source, chunks=((128, 128, 44), (128, 128, 4)), rho=2)
    assert nodata == 20 * 40
    for i, (task, cut) in enumerate(zip(TASKS, source.cuts, strict=True)):
        valid = codes[i] != 255
        pred = valid & (codes[i] >= cut * 254)
        assert scores_from_pixel_counts(counts[i]) == in_memory_scores(
            pred, truth[task] & valid, rho=2
        )


def test_zero_denominators_follow_roadnet_metrics() -> None:
    empty_pred = scores_from_pixel_counts(dict.fromkeys(COUNTS, 0) | {"fn": 5, "truth": 5})
    assert empty_pred["f1"] == empty_pred["relaxed_f1"] == empty_pred["relaxed_precision"] == 0.0
    nothing = scores_from_pixel_counts(np.zeros(len(COUNTS), int))
    assert nothing["iou"] == nothing["relaxed_f1"] == 1.0


def test_shape_mismatch_and_bad_rho_are_refused() -> None:
    with pytest.raises(InputError, match="shape"):
        chunked_scores(np.zeros((4, 4), bool), np.zeros((4, 5), bool), chunks=2, rho=2)
    with pytest.raises(InputError, match="do not cover"):
        score_windows(ArrayWindows(((np.zeros((4, 4), bool),) * 2,)), chunks=((2,), (4,)), rho=1)
    assert halo_px(2.0) == 2 and halo_px(2.1) == 3 and halo_px(0) == 0
    with pytest.raises(InputError, match="rho"):
        halo_px(-1)


def test_predicted_mask_rule_and_nodata() -> None:
    codes = da.from_array(np.array([[0, 126, 127, 254, 255]], dtype=np.uint8), chunks=2)
    pred, valid = predicted_mask(codes, threshold=0.5)  # 0.5 * 254 = 127
    assert pred.compute().tolist() == [[False, False, True, True, False]]
    assert valid.compute().tolist() == [[True, True, True, True, False]]
    pred, valid = predicted_mask(codes.compute(), threshold=0.5)  # numpy, the same
    assert pred.tolist() == [[False, False, True, True, False]]
    with pytest.raises(InputError, match="threshold"):
        predicted_mask(codes, threshold=1.0)


def test_task_thresholds() -> None:
    assert task_thresholds(None, {}) == dict.fromkeys(TASKS, 0.5)
    card = {CUTOFFS_ATTR: json.dumps({"surface": 0.7, "centerline": 0.3})}
    assert task_thresholds(None, card) == {"surface": 0.7, "edge": 0.5, "centerline": 0.3}
    assert task_thresholds(0.4, card) == dict.fromkeys(TASKS, 0.4)
    assert task_thresholds({"edge": 0.6}, card)["edge"] == 0.6
    with pytest.raises(InputError, match="edge threshold"):
        task_thresholds({"edge": 1.5}, {})


GRID = {"crs": RioCRS.from_user_input(CRS), "transform": TRANSFORM, "width": 40, "height": 30}


def test_grids_that_differ_are_named_both() -> None:
    check_same_grid(GRID, dict(GRID), pred_name="r.zarr", truth_name="l/surface.tif")
    other_crs = GRID | {"crs": RioCRS.from_epsg(3067)}
    with pytest.raises(InputError, match=r"l/surface.tif .*EPSG:3067.*CRS of prediction r.zarr"):
        check_same_grid(GRID, other_crs, pred_name="r.zarr", truth_name="l/surface.tif")
    shifted = GRID | {"transform": TRANSFORM * Affine.translation(1, 0)}
    with pytest.raises(InputError, match=r"grid of prediction r\.zarr") as info:
        check_same_grid(GRID, shifted, pred_name="r.zarr", truth_name="l/surface.tif")
    assert "385000.30" in str(info.value) and "385000.00" in str(info.value)
    with pytest.raises(InputError, match="40x30 px"):
        check_same_grid(GRID, GRID | {"width": 41}, pred_name="r", truth_name="t")


def _write_labels(folder: Path, labels: dict[str, np.ndarray], *, crs: str = CRS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for task, array in labels.items():
        profile = {
            "driver": "GTiff",
            "width": array.shape[1],
            "height": array.shape[0],
            "count": 1,
            "dtype": "uint8",
            "crs": crs,
            "transform": TRANSFORM,
        }
        with rasterio.open(folder / f"{task}.tif", "w", **profile) as dst:
            dst.write(array.astype(np.uint8), 1)
    return folder


def test_truth_labels_must_be_on_the_prediction_grid(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    labels = {t: (rng.random((30, 40)) < 0.2).astype(np.uint8) for t in TASKS}
    folder = _write_labels(tmp_path / "labels", labels)
    paths = truth_label_paths(folder, grid=GRID, name="r.zarr")
    assert paths == {t: folder / f"{t}.tif" for t in TASKS}
    (folder / "edge.tif").unlink()
    with pytest.raises(InputError, match=r"no edge\.tif"):
        truth_label_paths(folder, grid=GRID, name="r.zarr")
    wrong = _write_labels(tmp_path / "wrong", labels, crs="EPSG:3067")
    with pytest.raises(InputError, match=r"wrong/surface.tif.*r\.zarr"):
        truth_label_paths(wrong, grid=GRID, name="r.zarr")
