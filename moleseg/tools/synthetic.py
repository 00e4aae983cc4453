"""The one maker of synthetic dermoscopy-like pictures (a brown ellipse on noisy skin inside a dark
dermoscope vignette) and their lesion masks: the benchmark's and the GPU check's images, and the tests'.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def ellipse(shape: tuple[int, int], centre: tuple[float, float], semi_axes: tuple[float, float],
            angle_deg: float = 0.0) -> np.ndarray:
    """Filled ellipse (H, W) bool around ``centre`` (row, col); ``semi_axes = (a, b)`` in px along the x and y
    axes rotated by ``angle_deg``."""
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(float)
    angle = math.radians(angle_deg)
    x, y = cols - centre[1], rows - centre[0]
    u = x * math.cos(angle) + y * math.sin(angle)
    v = -x * math.sin(angle) + y * math.cos(angle)
    return (u / semi_axes[0]) ** 2 + (v / semi_axes[1]) ** 2 <= 1.0


def synthetic_dermoscopy(
    shape: tuple[int, int] = (480, 640),
    centre: tuple[float, float] = (250, 330),
    axes: tuple[float, float] = (110, 160),
    seed: int = 0,
    angle_deg: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A brown ellipse (``axes`` = semi-axes along rows, cols in px, turned by ``angle_deg``) on light skin, with
    a black round vignette in the corners and mild noise: ``(image (H, W, 3) uint8 RGB, lesion (H, W) bool)``."""
    rng = np.random.default_rng(seed)
    height, width = shape
    image = np.empty((height, width, 3), dtype=np.float64)
    image[:] = (225, 185, 165)  # light skin
    lesion = ellipse(shape, centre, (axes[1], axes[0]), angle_deg)
    image[lesion] = (120, 75, 55)  # brown pigment
    rows, cols = np.ogrid[:height, :width]
    radius = np.hypot((rows - height / 2) / (height / 2), (cols - width / 2) / (width / 2))
    image[radius > 1.15] = (8, 8, 8)  # dermoscope vignette
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), lesion


def random_dermoscopy(shape: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`synthetic_dermoscopy` with the lesion's centre (the middle 30 % of each side), semi-axes (12 to
    30 % of each side) and angle drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    height, width = shape
    centre = (height * rng.uniform(0.35, 0.65), width * rng.uniform(0.35, 0.65))
    axes = (height * rng.uniform(0.12, 0.3), width * rng.uniform(0.12, 0.3))
    return synthetic_dermoscopy(shape, centre, axes, seed=seed, angle_deg=float(rng.uniform(0, 180)))


def write_pairs(folder: Path, count: int, shape: tuple[int, int]) -> list:
    """``count`` :func:`random_dermoscopy` pictures (seeds 0 .. count - 1) as ``folder/images/<i>.png`` and
    their masks as ``folder/masks/<i>.png`` (0/255); returns their :class:`moleseg.core.pairing.Pair` list."""
    from moleseg.core.imagewrite import write_png
    from moleseg.core.pairing import pair_folders

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image, lesion = random_dermoscopy(shape, seed=index)
        write_png(folder / "images" / f"{index}.png", image)
        write_png(folder / "masks" / f"{index}.png", lesion.astype(np.uint8) * 255)
    return pair_folders(folder / "images", folder / "masks").pairs
