"""The local width of a lesion's border band, from two exact distance transforms (defined in
:mod:`moleseg.core.measure`, whose ``border_width_mean`` and ``border_width_std`` they give)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
from scipy import ndimage

from moleseg.core.targets import as_binary_mask, bounding_box, expanded_box

__all__ = ["BandDistances", "band_distances", "border_width", "euclidean_distances"]

#: Largest distance (px) whose float32 root from OpenCV still rounds back to its exact integer square
#: (relative float32 error 2**-24 on the root: ``2 * d**2 * 2**-24 < 0.5``).
EXACT_FLOAT32_DISTANCE_PX: float = 2048.0


def border_width(lesion: np.ndarray, border: np.ndarray, *,
                 lesion_box: tuple[int, int, int, int] | None = None) -> tuple[float, float]:
    """Mean and population standard deviation (px) of the local width of the border band (defined in
    :mod:`moleseg.core.measure`): ``(0, 0)`` for an empty band, NaN when the width is undefined. ``lesion_box``:
    the lesion's bounding box when known (:func:`moleseg.core.targets.bounding_box` of ``lesion``), found
    otherwise.

    Raises
    ------
    ValueError
        Empty lesion, or masks of different sizes.
    """
    return band_distances(lesion, border, lesion_box=lesion_box).width()


def band_distances(lesion: np.ndarray, border: np.ndarray, *,
                   lesion_box: tuple[int, int, int, int] | None = None) -> "BandDistances":
    """The :class:`BandDistances` of the border band ``border`` of ``lesion`` (its bounding box ``lesion_box`` when
    known, found otherwise), whose :meth:`BandDistances.width` is :func:`border_width`.

    Raises
    ------
    ValueError
        Empty lesion, or masks of different sizes.
    """
    binary = as_binary_mask(lesion, "lesion")
    band = as_binary_mask(border, "border")
    if band.shape != binary.shape:
        raise ValueError(f"border and lesion masks differ in size: {band.shape} vs {binary.shape}")
    box = bounding_box(binary) if lesion_box is None else lesion_box
    if box is None:
        raise ValueError("lesion mask is empty: the border width is undefined")
    # Distances to non-lesion pixels are exact on the bounding box grown by one pixel (that
    # ring is background unless it is beyond the frame, where there is no lesion edge).
    e0, e1, f0, f1 = expanded_box(box, 1, binary.shape)
    lesion_window = binary[e0:e1, f0:f1]
    band_window = band[e0:e1, f0:f1] & lesion_window  # the band clipped to the lesion
    return BandDistances(lesion=lesion_window, band=band_window, inner=lesion_window & ~band_window)


@dataclass(frozen=True, eq=False)
class BandDistances:
    """A lesion's border band, clipped to the lesion, in the lesion's box grown by one pixel, with the two distance
    transforms of its local width (defined in :mod:`moleseg.core.measure`), which two threads may make one each.

    Attributes
    ----------
    lesion, band, inner : (h, w) bool
        The lesion, its band and its inside (the lesion minus the band) in the window.
    """

    lesion: np.ndarray
    band: np.ndarray
    inner: np.ndarray

    @property
    def defined(self) -> bool:
        """False when the width is undefined: no inside pixel, or no non-lesion pixel (the lesion fills the
        whole image, so the band has no outer edge)."""
        return bool(self.inner.any()) and not bool(self.lesion.all())

    def outer(self) -> np.ndarray:
        """Distance (px) of each band pixel, row-major, to the nearest non-lesion pixel (:attr:`defined` only)."""
        return euclidean_distances(self.lesion, at=self.band)

    def to_inside(self) -> np.ndarray:
        """Distance (px) of each band pixel, row-major, to the nearest inside pixel (:attr:`defined` only)."""
        return euclidean_distances(~self.inner, at=self.band)

    def width(self, *, outer: Callable[[], np.ndarray] | None = None,
              inside: Callable[[], np.ndarray] | None = None) -> tuple[float, float]:
        """Mean and population standard deviation (px) of the local widths ``d_out + d_in - 1`` at the band
        pixels: ``(0, 0)`` for an empty band, NaN when undefined. ``outer``, ``inside``: return :meth:`outer`'s
        and :meth:`to_inside`'s distances made elsewhere (another thread), called (``inside`` first) only when
        the width is :attr:`defined`."""
        if not self.defined:
            return math.nan, math.nan
        distance_in = inside() if inside is not None else self.to_inside()
        distance_out = outer() if outer is not None else self.outer()
        if distance_out.size == 0:
            return 0.0, 0.0
        widths = distance_out + distance_in - 1.0
        return float(widths.mean()), float(widths.std(ddof=0))


def euclidean_distances(mask: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
    """Exact Euclidean distance (px, float64) of each pixel to the nearest False pixel of ``mask`` (0 on
    False pixels); equal to ``scipy.ndimage.distance_transform_edt`` and faster (``docs/performance.md``).

    OpenCV's exact transform (``DIST_MASK_PRECISE``) returns float32 roots of integer squared distances;
    up to :data:`EXACT_FLOAT32_DISTANCE_PX` the float32 root squared lies within 0.5 of that integer, so
    rounding it and taking the float64 root gives the exact float64 distance. Farther distances (lesions
    thousands of pixels across) are computed with scipy. ``mask`` must hold at least one False pixel.
    With ``at`` (a boolean mask of the same shape), only the distances at its True pixels, in row-major
    order (``euclidean_distances(mask)[at]``, made exact for those pixels only).
    """
    approximate = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    if at is not None:
        approximate = approximate[at]
    if approximate.size and float(approximate.max()) > EXACT_FLOAT32_DISTANCE_PX:  # only the distances returned
        exact = ndimage.distance_transform_edt(mask)
        return exact if at is None else exact[at]
    return np.sqrt(np.rint(np.square(approximate, dtype=np.float64)))
