"""The per-chunk tasks that read their own windows give what the dask-array builders give."""

from __future__ import annotations

from pathlib import Path

import dask
import numpy as np
import shapely
from _results import TRANSFORM, road_codes, write_result

from roadnet.pipeline.inference.store import open_result
from roadnet.pipeline.vectorize.centerlines import centerline_pieces
from roadnet.pipeline.vectorize.chunks import vectorize_tasks
from roadnet.pipeline.vectorize.dissolve import dissolve
from roadnet.pipeline.vectorize.graph import GraphPiece, join_pieces
from roadnet.pipeline.vectorize.polygons import Finishing, finish_polygons


def test_store_reading_tasks_equal_the_dask_array_path(tmp_path: Path) -> None:
    codes = road_codes(700, 900, seed=8)
    store = write_result(tmp_path / "r.zarr", codes, chunk=256)
    ds = open_result(store, mask_and_scale=False)
    surface, centerline = ds["surface"].data, ds["centerline"].data
    chunks = (tuple(surface.chunks[0]), tuple(surface.chunks[1]))
    with dask.config.set(scheduler="synchronous"):
        for source, per_task in (("surface", 1), ("combined", 1), ("surface", 2)):
            tasks = vectorize_tasks(
                str(store), chunks=chunks, threshold=0.5, sieve_px=16, source=source,
                centerline_threshold=0.6, halo_px=48, hole_px=32, chunks_per_task=per_task,
            )  # fmt: skip
            outs = dask.compute(*tasks)
            ours = np.concatenate([out.final for out in outs])
            ours_pieces = [out.piece for out in outs if out.piece is not None]
            ref = dissolve(surface, threshold=0.5, sieve_px=16)
            ref_pieces = dask.compute(
                *centerline_pieces(surface, centerline, source=source, threshold=0.5,
                                   centerline_threshold=0.6, halo_px=48, hole_px=32)
            )  # fmt: skip
            assert len(ours) == len(ref) > 0
            assert shapely.equals_exact(shapely.normalize(ours), shapely.normalize(ref), 0).all()
            if per_task > 1:  # other cuts: the same graph, not the same pieces
                assert len(ours_pieces) == 4  # 2 x 2 tasks over 3 x 4 chunks
                assert_same_graph(ours_pieces, ref_pieces)
                continue
            assert len(ours_pieces) == len(ref_pieces) == 12
            for a, b in zip(ours_pieces, ref_pieces, strict=True):
                assert np.array_equal(a.coords, b.coords)
                assert np.array_equal(a.offsets, b.offsets)
                assert np.array_equal(a.border, b.border)


def assert_same_graph(ours: list[GraphPiece], ref: list[GraphPiece]) -> None:
    a_nodes, a_edges = join_pieces(ours, transform=TRANSFORM)
    b_nodes, b_edges = join_pieces(ref, transform=TRANSFORM)
    assert len(a_edges["u"]) == len(b_edges["u"]) > 0
    for key in ("id", "row", "col", "degree"):
        assert np.array_equal(a_nodes[key], b_nodes[key])
    assert shapely.equals_exact(a_edges["geometry"], b_edges["geometry"], 0).all()


def test_tasks_finish_components_as_the_client_would(tmp_path: Path) -> None:
    """Finished in the tree, ring by ring where each closes: what finishing the whole is."""
    codes = road_codes(450, 520, seed=8)
    store = write_result(tmp_path / "r.zarr", codes, chunk=128)  # 4 x 5 chunks
    surface = open_result(store, mask_and_scale=False)["surface"].data
    chunks = (tuple(surface.chunks[0]), tuple(surface.chunks[1]))
    sizes = {"hole_area_m2": 2.0, "min_area_m2": 0.5, "simplify_m": 0.3}
    finishing = Finishing(transform=TRANSFORM, **sizes)
    with dask.config.set(scheduler="synchronous"):
        whole = finish_polygons(
            dissolve(surface, threshold=0.5, sieve_px=16), transform=TRANSFORM, **sizes
        )
        for per_task in (1, 3):
            tasks = vectorize_tasks(
                str(store), chunks=chunks, threshold=0.5, sieve_px=16, halo_px=48, hole_px=32,
                finishing=finishing, chunks_per_task=per_task,
            )  # fmt: skip
            ours = np.concatenate([out.final for out in dask.compute(*tasks)])
            assert len(ours) == len(whole) > 0
            holes = shapely.get_num_interior_rings(ours).sum()
            assert holes == shapely.get_num_interior_rings(whole).sum() > 10
            assert shapely.is_valid(ours).all()
            order_a = np.lexsort((shapely.area(ours), shapely.bounds(ours)[:, 0]))
            order_b = np.lexsort((shapely.area(whole), shapely.bounds(whole)[:, 0]))
            assert shapely.equals_exact(ours[order_a], whole[order_b], 0).all()
