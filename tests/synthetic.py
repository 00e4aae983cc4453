"""Synthetic images, masks and datasets of the tests: the one copy of each maker (import it as a module:
``from synthetic import disk``; the tests folder is on ``sys.path`` under pytest). The dermoscopy-like
picture and the ellipse are the package's (:mod:`moleseg.tools.synthetic`)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from moleseg.core.imagewrite import write_png
from moleseg.tools.synthetic import ellipse

#: Colours (RGB) of the app tests' moles.
SKIN = (224, 172, 150)
MOLE = (90, 55, 40)


def disk(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    """Boolean mask (H, W) of the pixels within ``radius`` px of ``centre`` (row, col)."""
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def mole_image(height: int = 96, width: int = 112, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A dark ellipse on skin colour with a little noise: ``(image (H, W, 3) uint8, mask (H, W) bool)``."""
    rng = np.random.default_rng(seed)
    cy = height / 2 + rng.uniform(-0.08, 0.08) * height
    cx = width / 2 + rng.uniform(-0.08, 0.08) * width
    ry, rx = height * rng.uniform(0.2, 0.3), width * rng.uniform(0.2, 0.3)
    mask = ellipse((height, width), (cy, cx), (rx, ry))
    image = np.empty((height, width, 3), dtype=np.float64)
    image[:] = SKIN
    image[mask] = MOLE
    image += rng.normal(0.0, 5.0, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def png_bytes(array: np.ndarray) -> bytes:
    """``array`` encoded as a PNG file."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def make_dataset(folder: Path, count: int = 6, size: int = 96, mask_suffix: str = "") -> Path:
    """``folder/images/m<i>.png`` (:func:`mole_image`) and ``folder/masks/m<i><mask_suffix>.png`` (0/255)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image, mask = mole_image(size, size, seed=index)
        Image.fromarray(image).save(folder / "images" / f"m{index}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / f"m{index}{mask_suffix}.png")
    return folder


def lesion_dataset(folder: Path, n: int = 8, size: int = 64, seed: int = 0, vary: bool = False,
                   names: list[str] | None = None) -> tuple[Path, Path]:
    """``n`` dermoscopy-like pairs (dark disk on light skin, ``size`` px square): ``folder/images/<i>.png``
    and ``folder/masks/<i>.png`` (or the file ``names`` given); returns (images dir, masks dir).

    Without ``vary`` every pair has the same disk (only the noise differs): every batch then has the same
    BatchNorm statistics, so the end-of-training BatchNorm check of a two-step training compares like with
    like and cannot fail by chance (with disks of random sizes it sometimes does).
    """
    rng = np.random.default_rng(seed)
    images, masks = folder / "images", folder / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names or [f"{i:03d}.png" for i in range(n)]):
        centre = rng.integers(size * 3 // 8, size * 5 // 8, 2) if vary else (size * 7 // 16, size // 2)
        radius = rng.integers(size // 6, size // 3) if vary else size * 7 // 32
        mask = disk((size, size), centre, radius)
        image = np.where(mask[..., None], np.array([90, 60, 40]), np.array([210, 180, 170]))
        image = np.clip(image + rng.integers(-10, 11, image.shape), 0, 255).astype(np.uint8)
        write_png(images / name, image)
        write_png(masks / name, mask)
    return images, masks


def lesion_scene(*, radius_px: float = 60.0, angle_deg: float = 0.0, shift_px: tuple[float, float] = (0.0, 0.0),
                  size_px: int = 320, seed: int = 0):
    """A textured skin image with a brown, slightly ragged lesion, seen rotated and shifted.

    The scene (skin texture, pigment dots, the lesion of mean radius ``radius_px``) is drawn on a canvas
    twice the size, rotated by ``angle_deg`` (counter-clockwise as displayed) about the canvas centre,
    moved by ``shift_px`` (dx, dy), and the central ``size_px`` square is cut out, so no edge is blank.
    The lesion's texture is the same for every radius (grow the radius to grow the lesion).

    Returns
    -------
    image : (size_px, size_px, 3) uint8
    lesion : (size_px, size_px) bool
        The true lesion.
    """
    import cv2
    import numpy as np

    canvas = 2 * size_px
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.standard_normal((canvas, canvas)).astype(np.float32), (0, 0), 3.0)
    noise = noise / noise.std()
    fine = cv2.GaussianBlur(rng.standard_normal((canvas, canvas)).astype(np.float32), (0, 0), 1.0)
    fine = fine / fine.std()
    skin = np.stack([215 + 10 * noise + 5 * fine, 170 + 10 * noise + 5 * fine, 150 + 10 * noise + 5 * fine], -1)
    for _ in range(250):  # freckle-like dots all over the skin: texture the features can hold on to
        x, y = rng.uniform(0, canvas, 2)
        cv2.circle(skin, (int(x), int(y)), int(rng.integers(1, 4)), (170.0, 120.0, 100.0), -1)
    rows, cols = np.mgrid[:canvas, :canvas].astype(np.float32)
    centre = canvas / 2
    angles = np.arctan2(rows - centre, cols - centre)
    wobble = 1 + 0.06 * np.sin(3 * angles + 0.5) + 0.04 * np.sin(5 * angles + 1.3)
    lesion = np.hypot(rows - centre, cols - centre) <= radius_px * wobble
    pigment = np.stack([110 + 12 * noise, 65 + 10 * noise, 45 + 8 * noise], -1)
    image = np.where(lesion[..., None], pigment, skin)
    matrix = cv2.getRotationMatrix2D((centre, centre), angle_deg, 1.0)
    matrix[:, 2] += shift_px
    image = cv2.warpAffine(np.clip(image, 0, 255).astype(np.float32), matrix, (canvas, canvas),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    lesion = cv2.warpAffine(lesion.astype(np.float32), matrix, (canvas, canvas), flags=cv2.INTER_LINEAR) >= 0.5
    start = (canvas - size_px) // 2
    crop = slice(start, start + size_px)
    return np.clip(np.round(image[crop, crop]), 0, 255).astype(np.uint8), lesion[crop, crop]
