"""roadnet: citywide road maps from very large aerial and satellite scenes.

The package is split by data flow:

- :mod:`roadnet.pipeline` opens scenes, runs inference on Dask, writes Zarr, vectorizes;
- :mod:`roadnet.model` holds the RoadNet Keras model, its losses and training.

Heavy libraries (TensorFlow, dask, rasterio) are imported only where they are used, so
``import roadnet`` and ``roadnet --help`` stay fast.
"""

from __future__ import annotations

from typing import Any

from roadnet.errors import (
    ConfigError,
    InputError,
    ModelError,
    OutputExistsError,
    RoadnetError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "InputError",
    "ModelError",
    "OutputExistsError",
    "RoadnetError",
    "__version__",
    "open_result",
]


def open_result(path: str, **kwargs: Any) -> Any:
    """Open a ``roadnet run`` Zarr result as an ``xarray.Dataset`` with its CRS.

    Thin lazy wrapper around :func:`roadnet.pipeline.inference.store.open_result`.
    """
    from roadnet.pipeline.inference.store import open_result as _open_result

    return _open_result(path, **kwargs)
