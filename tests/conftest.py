"""Shared fixtures: small, seeded, georeferenced scenes made on the fly."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from _s3 import s3_bucket, s3_server  # noqa: F401  (fixtures: a real S3 server, a bucket)

if TYPE_CHECKING:
    from distributed import Client

# A UTM zone 35N grid near Helsinki, 0.3 m/px: the defaults of every fixture scene.
SCENE_CRS = "EPSG:32635"
SCENE_ORIGIN = (385_000.0, 6_672_000.0)  # upper-left x, y in metres


@pytest.fixture
def make_scene(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a seeded random GeoTIFF; returns its path.

    Arguments: ``width``, ``height``, ``bands`` (3), ``dtype`` ("uint8"), ``gsd`` (0.3),
    ``nodata`` (None), ``name`` ("scene.tif"), ``seed`` (0), ``crs`` (UTM 35N).
    """
    import rasterio
    from rasterio.transform import from_origin

    def _make(
        width: int = 256,
        height: int = 192,
        *,
        bands: int = 3,
        dtype: str = "uint8",
        gsd: float = 0.3,
        nodata: float | None = None,
        name: str = "scene.tif",
        seed: int = 0,
        crs: str | None = SCENE_CRS,
    ) -> Path:
        rng = np.random.default_rng(seed)
        top = np.iinfo(dtype).max if np.dtype(dtype).kind in "ui" else 1.0
        data = (rng.random((bands, height, width)) * top).astype(dtype)
        path = tmp_path / name
        profile = {
            "driver": "GTiff",
            "width": width,
            "height": height,
            "count": bands,
            "dtype": dtype,
            "transform": from_origin(*SCENE_ORIGIN, gsd, gsd),
            "nodata": nodata,
        }
        if crs is not None:
            profile["crs"] = crs
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
        return path

    return _make


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """A distributed client of an in-process LocalCluster: one worker, two threads."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
