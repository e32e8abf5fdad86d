"""A tiny deterministic model with the RoadNet contract, for tests and benchmarks.

Input ``(batch, H, W, 3)`` float32 on 0–255; output a dict of ``surface``, ``edge`` and
``centerline`` logits ``(batch, H, W, 1)``. Plain Keras layers with seeded weights, so it
saves as ``.keras`` and loads with ``safe_mode=True``. Its receptive field is ``2 * depth + 1``
px wide (``depth`` 3×3 convolutions), far below the overlaps the tests use.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TASKS = ("surface", "edge", "centerline")


def build_test_model(*, depth: int = 3, width: int = 8, seed: int = 0):  # type: ignore[no-untyped-def]
    import keras

    inputs = keras.Input((None, None, 3), dtype="float32")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    for i in range(depth):
        x = keras.layers.Conv2D(
            width,
            3,
            padding="same",
            activation="tanh",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + i),
            bias_initializer=keras.initializers.RandomUniform(-0.1, 0.1, seed=seed + 100 + i),
        )(x)
    outputs = {
        task: keras.layers.Conv2D(
            1,
            1,
            name=task,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 200 + k),
        )(x)
        for k, task in enumerate(TASKS)
    }
    return keras.Model(inputs, outputs, name="roadnet_test")


def save_test_model(path: Path, **kwargs: int) -> Path:
    """Build and save the test model to ``path`` (a ``.keras`` file); return the path."""
    build_test_model(**kwargs).save(path)
    return path


@pytest.fixture(scope="session")
def test_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test model saved once per session as ``roadnet-test.keras``."""
    return save_test_model(tmp_path_factory.mktemp("model") / "roadnet-test.keras")


def mean_predictor(x):  # type: ignore[no-untyped-def]
    """A numpy stand-in for a model with a 3×3 receptive field, for pure-kernel tests.

    Maps ``(1, H, W, 3)`` on 0–255 to ``(H, W, 3)`` in [0, 1]: the 3×3 mean of each band
    (zero-padded, like a 'same' convolution).
    """
    import numpy as np
    from scipy.ndimage import uniform_filter

    img = x[0] / 255.0
    return np.stack(
        [uniform_filter(img[..., b], size=3, mode="constant") for b in range(img.shape[-1])],
        axis=-1,
    ).astype(np.float32)


def reference_probabilities(image, predict, *, overlap):  # type: ignore[no-untyped-def]
    """Whole-scene inference: ``(band, y, x)`` 0–255 scene, mirrored by ``overlap`` px and
    padded to a multiple of 16 like the chunked path; returns ``(task, y, x)`` float32."""
    import numpy as np

    _, h, w = image.shape
    pad = np.pad(image, ((0, 0), (overlap, overlap), (overlap, overlap)), mode="symmetric")
    ph, pw = pad.shape[1:]
    x = np.moveaxis(pad, 0, -1).astype(np.float32)
    x = np.pad(x, ((0, -ph % 16), (0, -pw % 16), (0, 0)), mode="symmetric")
    probs = predict(x[np.newaxis])[overlap : overlap + h, overlap : overlap + w]
    return np.moveaxis(probs, -1, 0)


def smooth_scene(height: int, width: int, *, seed: int = 0, bands: int = 3):  # type: ignore[no-untyped-def]
    """``(band, y, x)`` uint8 scene with structure at several scales (seeded)."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    img = np.stack([gaussian_filter(rng.random((height, width)), 1.5) for _ in range(bands)])
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255).astype(np.uint8)


def boundary_step_ratio(codes, *, core: int):  # type: ignore[no-untyped-def]
    """Mean |difference| between horizontally/vertically adjacent pixels across chunk
    boundaries, divided by the same inside chunks (≈ 1 when there is no seam)."""
    import numpy as np

    p = codes.astype(np.float64)
    dy = np.abs(np.diff(p, axis=1))  # dy[:, i] compares rows i and i + 1
    dx = np.abs(np.diff(p, axis=2))
    rows = np.arange(dy.shape[1])
    cols = np.arange(dx.shape[2])
    at_y = (rows + 1) % core == 0
    at_x = (cols + 1) % core == 0
    across = np.concatenate([dy[:, at_y].ravel(), dx[:, :, at_x].ravel()]).mean()
    inside = np.concatenate([dy[:, ~at_y].ravel(), dx[:, :, ~at_x].ravel()]).mean()
    return float(across / inside)


def write_scene(path: Path, image, *, nodata=None, gsd: float = 0.3, colorinterp=None) -> Path:  # type: ignore[no-untyped-def]
    """Write a ``(band, y, x)`` array as a GeoTIFF on the fixture grid (UTM 35N)."""
    import rasterio
    from rasterio.transform import from_origin

    bands, height, width = image.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=bands,
        dtype=image.dtype,
        crs="EPSG:32635",
        transform=from_origin(385_000.0, 6_672_000.0, gsd, gsd),
        nodata=nodata,
    ) as dst:
        dst.write(image)
        if colorinterp is not None:
            dst.colorinterp = colorinterp
    return path


def save_tiny_roadnet(directory: Path, card: dict) -> Path:  # type: ignore[type-arg]
    """An untrained tiny RoadNet (seed 0) saved as ``directory/tiny.keras``, ``card`` beside it."""
    import json

    import keras

    from roadnet.model.roadnet import ModelConfig, build_roadnet

    keras.utils.set_random_seed(0)
    path = directory / "tiny.keras"
    build_roadnet(ModelConfig(name="tiny", width_multiplier=0.125)).save(path)
    path.with_suffix(".json").write_text(json.dumps({"model": path.name, **card}))
    return path
