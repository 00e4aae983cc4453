"""Decoded pixel values to 8 bits: integer images scaled from their bit depth, float images from [0, 1],
[0, 255] or their range, premultiplied alpha undone (the conversion rules of :mod:`moleseg.core.imageio`).
"""

from __future__ import annotations

import numpy as np

#: Bit depths tried, smallest first, when scaling integer images to 8 bits.
BIT_DEPTHS: tuple[int, ...] = (8, 10, 12, 14, 16, 24, 32, 64)


def integer_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale an integer array to uint8 (the rule is in :mod:`moleseg.core.imageio`'s docstring)."""
    if values.dtype == np.uint8:
        return values
    if values.size == 0:
        return np.zeros(values.shape, np.uint8)
    low = int(values.min())
    high = int(values.max())
    if low < 0:
        if high == low:
            return np.zeros(values.shape, np.uint8)
        scaled = (values.astype(np.float64) - low) * (255.0 / (high - low))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    bits = next(b for b in BIT_DEPTHS if high < 2**b)
    if bits == 8:
        return values.astype(np.uint8)
    full_scale = float(2**bits - 1)
    if bits <= 16:  # one table look-up per pixel
        table = np.rint(np.arange(2**bits, dtype=np.float64) * (255.0 / full_scale))
        return table.astype(np.uint8)[values]
    scaled = values.astype(np.float64) * (255.0 / full_scale)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def float_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale a float array to uint8: [0, 1] × 255, [0, 255] kept, otherwise min-max; non-finite → 0."""
    with np.errstate(invalid="ignore"):  # signalling NaNs warn when cast
        values = values.astype(np.float64, copy=False)
    finite = np.isfinite(values)
    all_finite = bool(finite.all())
    valid = values if all_finite else values[finite]
    if valid.size == 0:
        return np.zeros(values.shape, np.uint8)
    low = float(valid.min())
    high = float(valid.max())
    if low >= 0.0 and high <= 1.0:
        offset, scale = 0.0, 255.0
    elif low >= 0.0 and high <= 255.0:
        offset, scale = 0.0, 1.0
    elif high > low:
        offset, scale = low, 255.0 / (high - low)
    else:
        offset, scale = low, 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = np.where(finite, values, offset)
        scaled -= offset
        scaled *= scale
        np.rint(scaled, out=scaled)
        np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Any numeric array to uint8 by :mod:`moleseg.core.imageio`'s rules (bool → 0/255)."""
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(values.dtype, np.integer):
        return integer_to_uint8(values)
    if np.issubdtype(values.dtype, np.floating):
        return float_to_uint8(values)
    raise TypeError(f"unsupported sample type {values.dtype}")



def unpremultiply(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Undo premultiplied alpha (Pillow's ``La`` / ``RGBa``)."""
    a = alpha.astype(np.float32)
    if colour.ndim == 3:
        a = a[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        straight = np.where(a > 0, colour.astype(np.float32) * 255.0 / a, 0.0)
    return np.clip(np.rint(straight), 0, 255).astype(np.uint8)
