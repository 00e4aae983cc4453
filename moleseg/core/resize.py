"""Array resizing shared by the training pipeline, prediction and evaluation (no TensorFlow)."""

from __future__ import annotations

import cv2
import numpy as np

from moleseg.core.constancy import correct_colour


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB uint8 image to ``size x size`` px (area averaging when shrinking, bilinear otherwise)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    shrinking = image.shape[0] > size or image.shape[1] > size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def resize_mask_to(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a boolean mask to ``height x width`` px: area-average (or bilinear) then threshold at 0.5."""
    if mask.shape == (height, width):
        return mask
    smaller = mask.shape[0] > height or mask.shape[1] > width
    resized = cv2.resize(mask.astype(np.float32), (width, height),
                         interpolation=cv2.INTER_AREA if smaller else cv2.INTER_LINEAR)
    return resized >= 0.5


def resize_probabilities(probabilities: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of ``(h, w, C)`` (or ``(h, w)``) float probabilities to ``(height, width, C)`` float32, kept
    class by class: the result is an ``(H, W, C)`` view of ``C`` contiguous ``(H, W)`` planes, so that what reads one
    class (the labels, the confidence) reads contiguous memory, not every C-th value (``docs/performance.md``).
    Each plane is OpenCV's bilinear resize of that channel alone: bit for bit the same channel of OpenCV's resize
    of the whole array for one, three or four classes, and closer to the exact bilinear values for two (within
    1.3e-7 of them from 512 px to 2000 px on random values, where OpenCV's two-channel resize errs by up to 2.7e-5).
    A channel already contiguous (such a view's own planes) is read as it is, not copied."""
    values = np.asarray(probabilities)
    channels = values[..., None] if values.ndim == 2 else values
    planes = np.empty((channels.shape[-1], height, width), dtype=np.float32)
    for channel, plane in enumerate(planes):
        cv2.resize(np.ascontiguousarray(channels[..., channel], dtype=np.float32), (width, height), dst=plane,
                   interpolation=cv2.INTER_LINEAR)
    return np.moveaxis(planes, 0, -1)


def scaled_shape(height: int, width: int, scale: float) -> tuple[int, int]:
    """``(height, width)`` in px times ``scale`` (> 0), rounded, at least 1 px each."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def rescale_image(image: np.ndarray, scale: float) -> np.ndarray:
    """An ``(H, W[, C])`` image resized by ``scale`` (> 0; 1 returns the same array object): bilinear when
    enlarging, area averaging when shrinking, as :func:`resize_image`."""
    if scale == 1.0:
        return image
    height, width = scaled_shape(image.shape[0], image.shape[1], scale)
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def network_image(image: np.ndarray, colour_constancy: str, *, input_size: int | None = None,
                  scale: float = 1.0) -> np.ndarray:
    """An RGB uint8 ``(H, W, 3)`` image as a network gets it, in training and prediction alike: resized to
    ``input_size`` x ``input_size`` px, or with ``input_size`` None (tiles and crops) to its own size times
    ``scale`` (> 0); then corrected by the ``colour_constancy`` method
    (:func:`moleseg.core.constancy.correct_colour`; ``"none"`` leaves it)."""
    resized = rescale_image(image, scale) if input_size is None else resize_image(image, input_size)
    return correct_colour(resized, colour_constancy)
