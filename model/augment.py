"""Random augmentation of training crops: geometry with the labels, appearance without them.

Geometry (flips, 90° rotations; scale is drawn when the crop is cut, see
:func:`roadnet.model.data.sample_crop`) moves the labels with the image. Appearance — random
convolution (texture and colour), HSV jitter, per-channel gains, gamma, grey-world balance,
desaturation to grey, channel order, chroma rotation, contrast, brightness, haze, blur or
sharpening, noise, JPEG compression, cut-out occlusion — changes the image only:
a road under a cut-out box is still a road, as it is under a tree crown. Every draw comes
from the generator the caller passes (seeded per batch), so a run is reproducible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator
from scipy import ndimage

from roadnet.config import StrictModel

__all__ = ["AugmentConfig", "augment", "redraw_thin_labels", "sample_grid", "write_sample_grid"]

_CROSS = ndimage.generate_binary_structure(2, 1)
_SQUARE2 = np.ones((2, 2), bool)


class AugmentConfig(StrictModel):
    """Random augmentation of training crops (all off when every value is zero/false).

    Defaults are the light set the first shipped model was trained with; the stronger
    appearance keys default to off (``configs/train-lite.yaml`` turns them on).
    """

    flip: bool = True
    rot90: bool = True
    brightness: float = Field(default=0.1, ge=0, le=1)  # additive, fraction of the 0-255 range
    contrast: float = Field(default=0.15, ge=0, lt=1)  # multiplicative around the crop mean
    hue: float = Field(default=10.0, ge=0, le=180)  # degrees of chroma rotation (YIQ)
    scale: float = Field(default=0.1, ge=0, lt=1)  # crop side jitter, fraction
    gsd_range: tuple[float, float] | None = None  # resample crops to a GSD drawn here (m)
    hsv_hue: float = Field(default=0.0, ge=0, le=180)  # HSV hue shift, degrees
    hsv_saturation: float = Field(default=0.0, ge=0, lt=1)  # HSV saturation factor 1 ± this
    hsv_value: float = Field(default=0.0, ge=0, lt=1)  # HSV value factor 1 ± this
    gains: float = Field(default=0.0, ge=0, lt=1)  # per-channel gain 1 ± this
    gamma: float = Field(default=0.0, ge=0, le=2)  # gamma drawn log-uniformly in [1/(1+g), 1+g]
    grey_world: float = Field(default=0.0, ge=0, le=1)  # probability of grey-world balancing
    channel_swap: float = Field(default=0.0, ge=0, le=1)  # probability of a random band order
    # probability of desaturating the crop to its luma (Rec. 601), at a strength drawn in
    # [0.5, 1]: colour no longer tells road from tree or field, so texture and shape must
    grayscale: float = Field(default=0.0, ge=0, le=1)
    # probability of passing the crop through a random k x k, 3 -> 3 band convolution (k odd,
    # drawn up to random_conv_size; weights N(0, 1 / (3 k^2))), restandardized to the crop's
    # mean and spread and blended with it at a weight drawn in [0, 1]: colours and fine
    # texture become arbitrary while shapes stay, so the model must find roads by their shape
    random_conv: float = Field(default=0.0, ge=0, le=1)
    random_conv_size: int = Field(default=7, ge=1, le=15)
    blur: float = Field(default=0.0, ge=0, le=5)  # Gaussian sigma up to this, px (half the crops)
    sharpen: float = Field(default=0.0, ge=0, le=3)  # unsharp-mask amount up to this (the others)
    noise: float = Field(default=0.0, ge=0, le=50)  # Gaussian noise std up to this, DN
    haze: float = Field(default=0.0, ge=0, lt=1)  # veil of a pale airlight, opacity up to this
    jpeg: float = Field(default=0.0, ge=0, le=1)  # probability of a JPEG round trip ...
    jpeg_quality: tuple[int, int] = (30, 90)  # ... at a quality drawn uniformly here
    cutout: float = Field(default=0.0, ge=0, le=1)  # probability of each of up to 3 occluding boxes
    cutout_size: float = Field(default=0.25, gt=0, le=1)  # largest box side, fraction of the crop
    # how the scene's edge and centerline labels were drawn (``roadnet labels`` options): a
    # resampled crop gets them redrawn at these pixel widths from its resampled surface and
    # the thinned centerline, as the labels of a scene at that pixel size would be
    edge_width_px: int = Field(default=2, ge=1, le=16)
    centerline_dilate_px: int = Field(default=0, ge=0, le=8)

    @model_validator(mode="after")
    def _check(self) -> AugmentConfig:
        if self.gsd_range is not None and not 0 < self.gsd_range[0] <= self.gsd_range[1]:
            raise ValueError("gsd_range is [low, high] metres with 0 < low <= high")
        if self.random_conv_size % 2 == 0:
            raise ValueError("random_conv_size is an odd kernel side (1, 3, 5, ...)")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError("jpeg_quality is [low, high] with 1 <= low <= high <= 100")
        return self


def redraw_thin_labels(
    labels: np.ndarray, *, edge_width_px: int, centerline_dilate_px: int
) -> np.ndarray:
    """Edge and centerline labels of a resampled crop at the label widths in pixels.

    Resampling a crop stretches or thins its edge band and centerline with it; a scene
    rendered at that pixel size would have them at their usual widths. The edge band is
    drawn again from the surface (the definition of ``roadnet labels``: surface pixels
    within ``ceil(w / 2)`` 4-connected steps of a non-surface pixel, and non-surface pixels
    within ``floor(w / 2)`` of a surface pixel), the centerline is thinned to one pixel, grown
    to a 2 px chain (as a line burnt with GDAL's ``ALL_TOUCHED`` is 1-2 px across) and
    dilated by ``centerline_dilate_px``.

    Args:
        labels: ``(y, x, 3)`` float32 {0, 1}: surface, edge, centerline.
        edge_width_px: width of the edge band.
        centerline_dilate_px: growth of the one-pixel centerline on every side.

    Returns:
        ``(y, x, 3)`` float32 with the same surface.
    """
    from skimage.morphology import skeletonize

    surface = labels[..., 0] > 0.5
    inner, outer = -(-edge_width_px // 2), edge_width_px // 2
    edge = surface & ~ndimage.binary_erosion(
        surface, structure=_CROSS, iterations=inner, border_value=1
    )
    if outer:
        edge |= ndimage.binary_dilation(surface, structure=_CROSS, iterations=outer) & ~surface
    # thinned to one pixel, then grown to the 1-2 px chain a line burnt with ALL_TOUCHED is
    centre = ndimage.binary_dilation(skeletonize(labels[..., 2] > 0.5), structure=_SQUARE2)
    if centerline_dilate_px:
        size = 2 * centerline_dilate_px + 1
        centre = ndimage.binary_dilation(centre, structure=np.ones((size, size), bool))
    return np.stack([surface, edge, centre], axis=-1).astype(np.float32)


def _hue_matrix(degrees: float) -> np.ndarray:
    """``(3, 3)`` RGB->RGB matrix rotating chroma by ``degrees`` in YIQ space."""
    to_yiq = np.array(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float64
    )
    theta = np.deg2rad(degrees)
    rot = np.array(
        [[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]]
    )
    return np.asarray(np.linalg.inv(to_yiq) @ rot @ to_yiq, dtype=np.float32)


def _hsv_jitter(image: np.ndarray, c: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    from skimage.color import hsv2rgb, rgb2hsv

    hsv = rgb2hsv(np.clip(image, 0.0, 255.0) / 255.0)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-c.hsv_hue, c.hsv_hue) / 360.0) % 1.0
    hsv[..., 1] = np.clip(
        hsv[..., 1] * rng.uniform(1 - c.hsv_saturation, 1 + c.hsv_saturation), 0, 1
    )
    hsv[..., 2] = np.clip(hsv[..., 2] * rng.uniform(1 - c.hsv_value, 1 + c.hsv_value), 0, 1)
    out: np.ndarray = (hsv2rgb(hsv) * 255.0).astype(np.float32)
    return out


def _random_conv(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``image`` through a random ``k x k`` band-mixing convolution, blended with itself.

    Each output band is the sum over input bands of a convolution with Gaussian weights
    (standard deviation ``1 / sqrt(3 k^2)``, so the output keeps the input's scale), then
    standardized and given the crop's own mean and spread; the result is mixed into the crop
    at a weight drawn in [0, 1].
    """
    k = int(rng.choice(np.arange(1, size + 1, 2)))
    weights = rng.normal(0.0, 1.0 / np.sqrt(3 * k * k), size=(3, 3, k, k)).astype(np.float32)
    mixed = np.zeros_like(image)
    for out_band in range(3):
        for in_band in range(3):
            mixed[..., out_band] += ndimage.convolve(
                image[..., in_band], weights[out_band, in_band], mode="reflect"
            )
    centred = mixed - mixed.mean(axis=(0, 1))
    spread = np.maximum(mixed.std(axis=(0, 1)), 1e-3)
    mixed = centred / spread * max(float(image.std()), 1.0) + float(image.mean())
    alpha = rng.uniform(0.0, 1.0)
    return np.asarray(alpha * mixed + (1.0 - alpha) * image, dtype=np.float32)


def _appearance(image: np.ndarray, c: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Colour and tone of a ``(y, x, 3)`` float32 0–255 image."""
    if c.random_conv and rng.random() < c.random_conv:
        image = _random_conv(image, c.random_conv_size, rng)
    if c.hsv_hue or c.hsv_saturation or c.hsv_value:
        image = _hsv_jitter(image, c, rng)
    if c.gains:
        image = image * rng.uniform(1 - c.gains, 1 + c.gains, size=3).astype(np.float32)
    if c.gamma:
        g = float(np.exp(rng.uniform(-np.log1p(c.gamma), np.log1p(c.gamma))))
        image = 255.0 * (np.clip(image, 0.0, 255.0) / 255.0) ** g
    if c.grey_world and rng.random() < c.grey_world:
        means = image.mean(axis=(0, 1))
        image = image * (means.mean() / np.maximum(means, 1.0))
    if c.grayscale and rng.random() < c.grayscale:
        luma = image @ np.array([0.299, 0.587, 0.114], np.float32)
        strength = rng.uniform(0.5, 1.0)
        image = image * (1.0 - strength) + luma[..., None] * strength
    if c.channel_swap and rng.random() < c.channel_swap:
        image = image[..., rng.permutation(3)]
    if c.hue:
        image = image @ _hue_matrix(rng.uniform(-c.hue, c.hue)).T
    if c.contrast:
        mean = image.mean(axis=(0, 1), keepdims=True)
        image = (image - mean) * rng.uniform(1 - c.contrast, 1 + c.contrast) + mean
    if c.brightness:
        image = image + 255.0 * rng.uniform(-c.brightness, c.brightness)
    if c.haze:
        # atmospheric veil: a pale, slightly tinted airlight over the whole crop
        opacity = rng.uniform(0.0, c.haze)
        airlight = rng.uniform(170.0, 235.0) + rng.uniform(-12.0, 12.0, size=3)
        image = image * (1.0 - opacity) + airlight.astype(np.float32) * opacity
    return np.asarray(image, dtype=np.float32)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` through a JPEG encode and decode at ``quality`` (block and ringing artefacts)."""
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.fromarray(np.clip(image, 0.0, 255.0).astype(np.uint8)).save(
        buffer, format="JPEG", quality=quality
    )
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.float32)


def _camera(image: np.ndarray, c: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Blur or sharpening, then noise, JPEG compression and cut-out boxes."""
    if c.blur or c.sharpen:
        soft = rng.random() < 0.5 if c.blur and c.sharpen else bool(c.blur)
        if soft:
            sigma = rng.uniform(0.0, c.blur)
            image = ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0))
        else:
            smooth = ndimage.gaussian_filter(image, sigma=(1.0, 1.0, 0))
            image = image + rng.uniform(0.0, c.sharpen) * (image - smooth)
    if c.noise:
        std = rng.uniform(0.0, c.noise)
        image = image + rng.normal(0.0, std, size=image.shape).astype(np.float32)
    if c.jpeg and rng.random() < c.jpeg:
        image = _jpeg(image, int(rng.integers(c.jpeg_quality[0], c.jpeg_quality[1] + 1)))
    if c.cutout:
        h, w = image.shape[:2]
        image = np.array(image, dtype=np.float32)
        for _ in range(3):
            if rng.random() >= c.cutout:
                continue
            bh = int(rng.integers(4, max(5, int(h * c.cutout_size)) + 1))
            bw = int(rng.integers(4, max(5, int(w * c.cutout_size)) + 1))
            r, col = int(rng.integers(0, max(1, h - bh))), int(rng.integers(0, max(1, w - bw)))
            image[r : r + bh, col : col + bw] = rng.uniform(0.0, 255.0, size=3)
    return np.asarray(image, dtype=np.float32)


def augment(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    config: AugmentConfig,
    rng: np.random.Generator,
    look_rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Random flips and 90° rotations (with the labels), then appearance and camera changes.

    Args:
        image: ``(y, x, 3)`` float32 on the 0–255 scale.
        labels: ``(y, x, C)`` float32; moved with the image, never colour-jittered.
        config: which augmentations, and how strong.
        rng: the random generator (seeded by the caller).
        look_rng: draws the appearance and camera changes instead of ``rng`` when given:
            crops of one size given generators seeded alike get the same look.

    Returns:
        The augmented ``(image, labels)``; the image is clipped to 0–255.
    """
    if config.flip and rng.random() < 0.5:
        image, labels = image[:, ::-1], labels[:, ::-1]
    if config.flip and rng.random() < 0.5:
        image, labels = image[::-1], labels[::-1]
    if config.rot90:
        k = int(rng.integers(0, 4))
        image, labels = np.rot90(image, k), np.rot90(labels, k)
    look = rng if look_rng is None else look_rng
    image = _appearance(image, config, look)
    image = _camera(image, config, look)
    image = np.clip(image, 0.0, 255.0).astype(np.float32)
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def sample_grid(images: np.ndarray, labels: np.ndarray, *, columns: int = 4) -> np.ndarray:
    """Tile crops into one picture, each with its surface label's outline in magenta.

    Args:
        images: ``(n, size, size, 3)`` float32 0–255.
        labels: ``(n, size, size, C)`` float32 {0, 1}; channel 0 is the surface.
        columns: crops per row.

    Returns:
        ``(rows * (size + 4), columns * (size + 4), 3)`` uint8.
    """
    from skimage.segmentation import find_boundaries

    n, size = images.shape[0], images.shape[1]
    rows = -(-n // columns)
    cell = size + 4
    grid = np.full((rows * cell, columns * cell, 3), 255, np.uint8)
    for i in range(n):
        tile = np.clip(images[i], 0, 255).astype(np.uint8)
        outline = find_boundaries(labels[i, ..., 0] > 0.5, mode="inner")
        tile[outline] = (255, 0, 255)
        r, c = divmod(i, columns)
        grid[r * cell + 2 : r * cell + 2 + size, c * cell + 2 : c * cell + 2 + size] = tile
    return grid


def write_sample_grid(dataset: Any, path: Path, *, batches: int = 4) -> Path:
    """Write the first ``batches`` training batches of ``dataset`` as a PNG (atomically).

    ``dataset`` is a :class:`~roadnet.model.data.CropDataset`; batch ``i`` is exactly the
    batch ``i`` its current epoch trains on.
    """
    from PIL import Image

    images, labels = [], []
    for i in range(min(batches, len(dataset))):
        x, y = dataset[i]
        images.append(x)
        labels.append(y["surface"])
    grid = sample_grid(np.concatenate(images), np.concatenate(labels))
    tmp = path.with_name(f".tmp-{path.name}")
    Image.fromarray(grid).save(tmp, format="PNG")
    tmp.replace(path)
    return path
