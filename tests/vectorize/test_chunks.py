"""The per-chunk tasks that read their own windows give what the dask-array builders give."""

from __future__ import annotations

from pathlib import Path

import dask
import numpy as np
import shapely
from _results import road_codes, write_result

from roadnet.pipeline.inference.store import open_result
from roadnet.pipeline.vectorize.centerlines import centerline_pieces
from roadnet.pipeline.vectorize.chunks import vectorize_tasks
from roadnet.pipeline.vectorize.dissolve import dissolve


def test_store_reading_tasks_equal_the_dask_array_path(tmp_path: Path) -> None:
    codes = road_codes(700, 900, seed=8)
    store = write_result(tmp_path / "r.zarr", codes, chunk=256)
    ds = open_result(store, mask_and_scale=False)
    surface, centerline = ds["surface"].data, ds["centerline"].data
    chunks = (tuple(surface.chunks[0]), tuple(surface.chunks[1]))
    with dask.config.set(scheduler="synchronous"):
        for source in ("surface", "combined"):
            finals, pieces = vectorize_tasks(
                str(store), chunks=chunks, threshold=0.5, sieve_px=16, source=source,
                centerline_threshold=0.6, halo_px=48, hole_px=32,
            )  # fmt: skip
            ours = np.concatenate(dask.compute(*finals))
            ours_pieces = dask.compute(*pieces)
            ref = dissolve(surface, threshold=0.5, sieve_px=16)
            ref_pieces = dask.compute(
                *centerline_pieces(surface, centerline, source=source, threshold=0.5,
                                   centerline_threshold=0.6, halo_px=48, hole_px=32)
            )  # fmt: skip
            assert len(ours) == len(ref) > 0
            assert shapely.equals_exact(shapely.normalize(ours), shapely.normalize(ref), 0).all()
            assert len(ours_pieces) == len(ref_pieces) == 12
            for a, b in zip(ours_pieces, ref_pieces, strict=True):
                assert np.array_equal(a.coords, b.coords)
                assert np.array_equal(a.offsets, b.offsets)
                assert np.array_equal(a.border, b.border)
