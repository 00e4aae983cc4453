"""Colour constancy: remove the colour cast of the light (or camera) from an image.

Shades of Grey (Finlayson & Trezzi, "Shades of gray and colour constancy", CIC 2004): the light's colour
is estimated per channel as the Minkowski p-norm mean of the pixel values, ``e_c = (mean(I_c ** p)) **
(1 / p)``, and each channel is divided by it (von Kries), scaled so that a grey light leaves the image
unchanged. ``p = 1`` is Grey World, ``p = inf`` is White Patch (max-RGB); ``p = 6`` is the value Barata et
al. ("Improving dermoscopy image classification using color constancy", IEEE JBHI 19(3), 2015) found
best on dermoscopy images.
"""

from __future__ import annotations

import numpy as np

#: Minkowski norm of the Shades of Grey estimate (Barata et al. 2015 for dermoscopy).
SHADES_OF_GREY_POWER = 6.0
#: The ``colour_constancy`` option's methods: ``"none"`` leaves images as they are.
COLOUR_CONSTANCY_METHODS: tuple[str, ...] = ("none", "shades_of_grey")
#: Largest gain (x) one channel may get: a channel with almost no light (a fluorescence image's empty
#: channel, a pure-red picture) is brightened at most this much instead of turning its noise into colour.
MAX_CHANNEL_GAIN = 4.0


def illuminant(image: np.ndarray, power: float = SHADES_OF_GREY_POWER) -> np.ndarray:
    """The light's colour of an ``(H, W, 3)`` RGB image as a unit-length ``(3,)`` float64 vector.

    Parameters
    ----------
    image : (H, W, 3) array
        RGB, any numeric type (uint8 0..255 or float).
    power : float
        Minkowski norm ``p >= 1``; ``numpy.inf`` for max-RGB.

    Returns
    -------
    numpy.ndarray
        ``(3,)``, non-negative, norm 1; ``(1, 1, 1) / sqrt(3)`` for a black image.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"colour constancy needs an (H, W, 3) RGB image, not shape {image.shape}")
    if power < 1:
        raise ValueError(f"the Minkowski power must be at least 1, not {power}")
    pixels = image.reshape(-1, 3).astype(np.float32) / np.float32(255.0)
    if np.isinf(power):
        estimate = pixels.max(axis=0).astype(np.float64)
    else:
        powered = pixels * pixels * pixels * pixels * pixels * pixels if power == 6 else pixels ** np.float32(power)
        estimate = np.mean(powered, axis=0, dtype=np.float64) ** (1.0 / power)
    norm = float(np.linalg.norm(estimate))
    if norm == 0.0:
        return np.full(3, 1.0 / np.sqrt(3.0))
    return estimate / norm


def shades_of_grey(image: np.ndarray, power: float = SHADES_OF_GREY_POWER) -> np.ndarray:
    """``image`` (RGB uint8 ``(H, W, 3)``) with its light's colour cast removed (uint8, same shape).

    Each channel is divided by its share of the :func:`illuminant` times ``sqrt(3)`` (at most
    :data:`MAX_CHANNEL_GAIN` times brighter): a grey light (equal channels) leaves the image as it is;
    values above 255 are clipped.

    Parameters
    ----------
    image : (H, W, 3) uint8
        RGB, 0..255.
    power : float
        Minkowski norm ``p >= 1`` of the light's estimate.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8.
    """
    share = illuminant(image, power) * np.sqrt(3.0)  # 1 per channel under a grey light
    gains = 1.0 / np.maximum(share, 1.0 / MAX_CHANNEL_GAIN)
    corrected = image.astype(np.float32) * gains.astype(np.float32)
    return np.clip(np.rint(corrected), 0, 255).astype(np.uint8)


def correct_colour(image: np.ndarray, method: str) -> np.ndarray:
    """``image`` (RGB uint8) under the colour-constancy ``method`` (one of :data:`COLOUR_CONSTANCY_METHODS`):
    unchanged for ``"none"``, :func:`shades_of_grey` otherwise."""
    if method == "none":
        return image
    if method == "shades_of_grey":
        return shades_of_grey(image)
    raise ValueError(f"unknown colour constancy {method!r}; choose one of {', '.join(COLOUR_CONSTANCY_METHODS)}")
