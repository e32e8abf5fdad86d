"""The catalog: one GeoParquet row per scene of the inbox, rewritten atomically.

``OUTBOX/catalog.parquet`` holds, per scene (:data:`COLUMNS`): its id, source URL, size,
mtime and checksum, its footprint (the scene's bounds as a polygon in EPSG:4326, the
``geometry`` column) and its CRS and bounds in that CRS, the status (``running``, ``done``,
``failed``), the attempts so far, when the last attempt started and finished, the seconds
of the run and vectorize steps, the model's hash, summary metrics (road components, km of
centerline, graph nodes), the error message of a failed attempt, where its outputs are, and
whether the merged city layer includes it.

Every change is a read-modify-write under the catalog's lease (``catalog.parquet.lease``,
held for the moment of the update), so two nightly runs never lose each other's rows. The
file is written whole: a temporary file renamed over it locally, one PUT on object stores.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Iterator
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from roadnet.errors import InputError
from roadnet.leases import LeaseInfo, acquire
from roadnet.pipeline.nightly._outbox import join, read_bytes, write_bytes

__all__ = [
    "CATALOG_NAME",
    "COLUMNS",
    "Row",
    "catalog_path",
    "read_catalog",
    "updating",
    "write_catalog",
]

log = logging.getLogger(__name__)

CATALOG_NAME = "catalog.parquet"
FOOTPRINT_CRS = "EPSG:4326"

#: Column name -> pandas dtype; ``geometry`` (the footprint) comes last.
COLUMNS: dict[str, str] = {
    "scene_id": "string",
    "source": "string",
    "size": "Int64",
    "mtime": "Float64",
    "checksum": "string",
    "acquired": "Float64",
    "scene_crs": "string",
    "scene_bounds": "string",  # JSON [xmin, ymin, xmax, ymax] in scene_crs
    "status": "string",
    "attempts": "Int64",
    "run_id": "string",
    "started": "string",
    "finished": "string",
    "run_seconds": "Float64",
    "vectorize_seconds": "Float64",
    "model_sha256": "string",
    "components": "Int64",
    "km": "Float64",
    "nodes": "Int64",
    "road_chunks": "Int64",  # chunks of the result with road above the cut-off (0: empty)
    "error": "string",
    "result": "string",
    "roads": "string",
    "preview": "string",
    "merged": "boolean",
}

Row = dict[str, Any]


def catalog_path(outbox: str) -> str:
    """Where the catalog of an outbox is."""
    return join(outbox, CATALOG_NAME)


def _clean(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_catalog(outbox: str) -> dict[str, Row]:
    """The catalog's rows by scene id (empty when there is no catalog yet).

    Raises:
        InputError: the catalog exists but is not readable GeoParquet.
    """
    raw = read_bytes(catalog_path(outbox))
    if raw is None:
        return {}
    try:
        frame = gpd.read_parquet(io.BytesIO(raw))
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise InputError(f"{catalog_path(outbox)}: not a readable catalog ({exc})") from exc
    rows: dict[str, Row] = {}
    for record in frame.to_dict("records"):
        row = {name: _clean(record.get(name)) for name in COLUMNS}
        row["geometry"] = record.get("geometry")
        rows[str(row["scene_id"])] = row
    return rows


def to_frame(rows: dict[str, Row]) -> gpd.GeoDataFrame:
    """The rows as a GeoDataFrame in :data:`COLUMNS` order, sorted by scene id."""
    ordered = [rows[k] for k in sorted(rows)]
    data = {
        name: pd.array([r.get(name) for r in ordered], dtype=dtype)
        for name, dtype in COLUMNS.items()
    }
    geometry = gpd.GeoSeries([r.get("geometry") for r in ordered], crs=FOOTPRINT_CRS)
    return gpd.GeoDataFrame(data, geometry=geometry, crs=FOOTPRINT_CRS)


def write_catalog(outbox: str, rows: dict[str, Row]) -> None:
    """Write the catalog whole, atomically (see the module docs)."""
    buffer = io.BytesIO()
    to_frame(rows).to_parquet(buffer, index=False)
    write_bytes(catalog_path(outbox), buffer.getvalue())


@contextlib.contextmanager
def updating(outbox: str, *, wait: float = 120.0, ttl: float = 30.0) -> Iterator[dict[str, Row]]:
    """Read the catalog under its lease, yield its rows to change, write them back.

    Args:
        outbox: the outbox.
        wait: seconds to wait for another run's update to finish.
        ttl: lifetime of the catalog lease (an update takes well under a second).

    Raises:
        InputError: the catalog stayed held for ``wait`` seconds.
    """
    location = f"{catalog_path(outbox)}.lease"
    deadline = time.monotonic() + wait
    while True:
        got = acquire(location, ttl=ttl, what="catalog update")
        if not isinstance(got, LeaseInfo):
            break
        if time.monotonic() > deadline:
            raise InputError(f"the catalog {catalog_path(outbox)} stays held ({got.describe()})")
        time.sleep(0.05)
    with got:
        rows = read_catalog(outbox)
        yield rows
        write_catalog(outbox, rows)
