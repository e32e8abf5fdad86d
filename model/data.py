"""Training data: labelled scenes in memory, random augmented crops, fixed validation tiles.

A labelled scene is a scene GeoTIFF (``(band, y, x)``, 3 bands R, G, B) plus a directory with
``surface.tif``, ``edge.tif`` and ``centerline.tif`` (``(1, y, x)`` uint8 {0, 1}) on the same
grid — what ``roadnet synth`` and ``roadnet labels`` write. Each scene may be restricted to a
pixel window ``(col0, row0, col1, row1)`` so that training and validation areas of one scene
never overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from skimage.transform import resize

from roadnet.errors import InputError
from roadnet.model.augment import AugmentConfig, augment, redraw_thin_labels
from roadnet.model.gsd import ground_gsd
from roadnet.model.roadnet import output_names
from roadnet.tasks import INPUT_MULTIPLE, TASKS

__all__ = [
    "AugmentConfig",
    "CropDataset",
    "LabelledScene",
    "Window",
    "augment",
    "label_targets",
    "read_labelled_scene",
    "sample_crop",
    "to_display_range",
    "validation_tiles",
    "windows_overlap",
]

Window = tuple[int, int, int, int]  # col0, row0, col1, row1 (pixels, end exclusive)


@dataclass(frozen=True)
class LabelledScene:
    """A scene and its labels, held in memory.

    Attributes:
        image: ``(y, x, 3)`` uint8, R, G, B on the 0–255 scale.
        labels: ``(y, x, 3)`` uint8 {0, 1}: surface, edge, centerline.
        window: ``(col0, row0, col1, row1)`` — the part of the scene to use.
        name: the scene path, for messages and model cards.
        gsd: pixel size on the ground in metres (:func:`~roadnet.model.gsd.ground_gsd`;
            None when the scene has no CRS).
    """

    image: np.ndarray
    labels: np.ndarray
    window: Window
    name: str
    gsd: float | None = None


def to_display_range(image: np.ndarray) -> np.ndarray:
    """Map ``(..., bands)`` digital numbers to float32 on the 0–255 scale the model expects.

    uint8 passes through; other integer types are scaled by ``255 / dtype max``; floats are
    taken to be on the 0–255 scale already.
    """
    if image.dtype == np.uint8:
        return image.astype(np.float32)
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float32) * np.float32(255.0 / np.iinfo(image.dtype).max)
    return image.astype(np.float32)


def windows_overlap(a: Window, b: Window) -> bool:
    """True when two ``(col0, row0, col1, row1)`` windows share any pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def read_labelled_scene(
    scene: Path, labels_dir: Path, *, window: Sequence[int] | None = None
) -> LabelledScene:
    """Read a scene GeoTIFF and its three label GeoTIFFs into memory.

    Raises:
        InputError: a file is missing or unreadable, has the wrong band count, the grids
            differ, or the window lies outside the scene.
    """
    import rasterio

    def _open(path: Path) -> Any:
        if not path.is_file():
            raise InputError(f"file not found: {path}")
        try:
            return rasterio.open(path)
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"cannot read {path}: {exc}") from exc

    with _open(scene) as src:
        if src.count != 3:
            raise InputError(f"{scene}: expected 3 bands (R, G, B), found {src.count}")
        grid = (src.width, src.height, src.transform)
        gsd = ground_gsd(src.crs, src.transform, (src.height, src.width))
        image = to_display_range(np.moveaxis(src.read(), 0, -1))
    image8 = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    planes = []
    for task in TASKS:
        path = labels_dir / f"{task}.tif"
        with _open(path) as src:
            if (src.width, src.height, src.transform) != grid:
                raise InputError(f"{path}: grid differs from the scene {scene}")
            planes.append((src.read(1) > 0).astype(np.uint8))
    labels = np.stack(planes, axis=-1)
    height, width = image8.shape[:2]
    win: Window = (0, 0, width, height) if window is None else tuple(window)  # type: ignore[assignment]
    if len(win) != 4 or not (0 <= win[0] < win[2] <= width and 0 <= win[1] < win[3] <= height):
        raise InputError(f"window {list(win)} is not inside {scene} ({width}x{height} px)")
    return LabelledScene(image=image8, labels=labels, window=win, name=str(scene), gsd=gsd)


def sample_crop(
    scene: LabelledScene,
    *,
    size: int,
    rng: np.random.Generator,
    scale: float = 0.0,
    gsd_range: tuple[float, float] | None = None,
    thin_widths: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A random square crop from the scene's window, resampled to ``size`` when scale-jittered.

    With ``gsd_range`` (metres) and a scene of known pixel size, the crop covers the ground a
    ``size`` px crop at a pixel size drawn log-uniformly from the range would cover, so the
    model sees roads as wide (in pixels) as at any GSD in the range; ``scale`` jitter is
    applied on top. Labels are resampled by nearest neighbour, the image bilinearly (with
    anti-aliasing when shrinking); with ``thin_widths`` = ``(edge_width_px,
    centerline_dilate_px)`` a crop resampled by more than 25 % gets its edge and centerline
    redrawn at those widths (:func:`~roadnet.model.augment.redraw_thin_labels`).

    Returns:
        ``(size, size, 3)`` float32 image on the 0–255 scale and ``(size, size, 3)`` float32
        labels in {0, 1}.
    """
    col0, row0, col1, row1 = scene.window
    limit = min(col1 - col0, row1 - row0)
    factor = 1.0
    if gsd_range is not None and scene.gsd:
        lo, hi = np.log(gsd_range[0]), np.log(gsd_range[1])
        factor = float(np.exp(rng.uniform(lo, hi))) / scene.gsd
    if scale > 0:
        factor *= rng.uniform(1.0 - scale, 1.0 + scale)
    side = round(size * factor)
    side = min(side, limit)
    if side < INPUT_MULTIPLE:
        raise InputError(f"{scene.name}: window {list(scene.window)} is too small for crops")
    r = int(rng.integers(row0, row1 - side + 1))
    c = int(rng.integers(col0, col1 - side + 1))
    image = scene.image[r : r + side, c : c + side].astype(np.float32)
    labels = scene.labels[r : r + side, c : c + side].astype(np.float32)
    if side != size:
        image = resize(image, (size, size), order=1, preserve_range=True, anti_aliasing=side > size)
        thin = labels[..., 2]
        labels = resize(labels, (size, size), order=0, preserve_range=True, anti_aliasing=False)
        if thin_widths is not None and not 0.8 <= side / size <= 1.25:
            if side > size:  # shrinking: keep every line that passes through a pixel
                shrunk = resize(thin, (size, size), order=1, anti_aliasing=True)
                labels[..., 2] = shrunk > 0.15
            labels = redraw_thin_labels(
                labels, edge_width_px=thin_widths[0], centerline_dilate_px=thin_widths[1]
            )
    return image.astype(np.float32), labels.astype(np.float32)


def label_targets(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Targets for every model output from ``(batch, y, x, 3)`` labels (surface, edge, centerline).

    Returns:
        A dict keyed by :func:`~roadnet.model.roadnet.output_names`, each ``(batch, y, x, 1)``
        float32; side outputs share their task's label.
    """
    per_task = {task: labels[..., i : i + 1].astype(np.float32) for i, task in enumerate(TASKS)}
    return {name: per_task[name.split("_side")[0]] for name in output_names()}


def validation_tiles(
    scene: LabelledScene, *, size: int, max_tiles: int
) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping ``size`` tiles on a regular grid over the scene's window, evenly thinned.

    Returns:
        ``(n, size, size, 3)`` float32 images and ``(n, size, size, 3)`` float32 labels.
    """
    col0, row0, col1, row1 = scene.window
    origins = [
        (r, c)
        for r in range(row0, row1 - size + 1, size)
        for c in range(col0, col1 - size + 1, size)
    ]
    if not origins:
        raise InputError(f"{scene.name}: window {list(scene.window)} holds no {size}px tile")
    pick = np.unique(np.linspace(0, len(origins) - 1, min(max_tiles, len(origins))).round())
    chosen = [origins[int(i)] for i in pick]
    images = np.stack([scene.image[r : r + size, c : c + size] for r, c in chosen])
    labels = np.stack([scene.labels[r : r + size, c : c + size] for r, c in chosen])
    return images.astype(np.float32), labels.astype(np.float32)


class CropDataset(keras.utils.PyDataset):  # type: ignore[misc]
    """Batches of random augmented crops: ``(batch, size, size, 3)`` float32 and target dict.

    Batch ``i`` of epoch ``e`` is drawn from a generator seeded with ``(seed, e, i)``, so a run
    is reproducible whatever the order batches are fetched in. Scenes are picked with
    probability proportional to their window area: per crop, or with ``scene_batches`` one
    scene per batch whose crops share one appearance draw, so that batch normalization in
    training sees the statistics of one scene's look, as ``roadnet adapt`` fits them.
    """

    def __init__(
        self,
        scenes: Sequence[LabelledScene],
        *,
        crop_size: int,
        batch_size: int,
        steps: int,
        augment_config: AugmentConfig,
        seed: int,
        scene_batches: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not scenes:
            raise InputError("no training scenes given")
        self.scenes = list(scenes)
        self.crop_size = crop_size
        self.batch_size = batch_size
        self.steps = steps
        self.augment_config = augment_config
        self.seed = seed
        self.scene_batches = scene_batches
        self.epoch = 0
        areas = np.array([(w[2] - w[0]) * (w[3] - w[1]) for w in (s.window for s in scenes)])
        self.weights = areas / areas.sum()

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        images, labels = [], []
        batch_scene = int(rng.choice(len(self.scenes), p=self.weights)) if self.scene_batches else 0
        for _ in range(self.batch_size):
            if self.scene_batches:
                scene = self.scenes[batch_scene]
                look = np.random.default_rng([self.seed, self.epoch, index, 1])
            else:
                scene = self.scenes[int(rng.choice(len(self.scenes), p=self.weights))]
                look = None
            image, label = sample_crop(
                scene,
                size=self.crop_size,
                rng=rng,
                scale=self.augment_config.scale,
                gsd_range=self.augment_config.gsd_range,
                thin_widths=(
                    self.augment_config.edge_width_px,
                    self.augment_config.centerline_dilate_px,
                ),
            )
            image, label = augment(image, label, config=self.augment_config, rng=rng, look_rng=look)
            images.append(image)
            labels.append(label)
        return np.stack(images), label_targets(np.stack(labels))

    def on_epoch_end(self) -> None:  # noqa: D102
        self.epoch += 1
