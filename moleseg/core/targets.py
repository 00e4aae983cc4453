"""Training targets: binary lesion mask -> label image.

Three-class targets follow the article's ``optimizeDataset.m``: the lesion is eroded with a
structuring element (Matlab ``strel('diamond', N)`` by default), the eroded lesion is INSIDE and
the rest of the lesion -- the band between the lesion outline and its erosion -- is BORDER::

    INSIDE = erode(mask, se)          (label 2)
    BORDER = mask minus INSIDE        (label 1)
    BACK   = not mask                 (label 0)

so ``BORDER | INSIDE == mask`` always holds.

Image edge
----------
Matlab's ``imerode`` pads a binary image with 1 (foreground) outside the frame, so a lesion that
touches the image edge gets **no** BORDER along the frame: the frame is not a lesion border, the
lesion merely continues outside the picture. ``border_at_image_edge=False`` (the default)
reproduces that. ``border_at_image_edge=True`` pads with 0 instead, so the part of the lesion that
lies on the frame also gets a BORDER band.

The module also exposes the binary morphology it is built on (:func:`erode`, :func:`dilate`),
which the cleanup uses so that training targets and post-processing share one definition of each
structuring element. All operations are computed on the bounding box of the mask (plus the
structuring element's reach) and give exactly the full-image result.
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Integral
from typing import Any

import cv2
import numpy as np

from moleseg.core.config import BACK, BORDER, DEFAULT_BORDER_WIDTH_PX, DEFAULT_SHAPE, INSIDE

__all__ = [
    "SHAPES",
    "structuring_element",
    "erode",
    "dilate",
    "morphology",
    "make_targets",
    "class_frequencies",
    "check_label_range",
    "checked_label_image",
]

#: Structuring-element shapes understood by :func:`structuring_element`.
SHAPES: tuple[str, ...] = ("diamond", "disk", "square")


def _check_radius(radius_px: object, name: str = "radius_px") -> int:
    """Return ``radius_px`` as a non-negative int or raise a ValueError naming the parameter."""
    if isinstance(radius_px, (bool, np.bool_)) or not isinstance(radius_px, (Integral, float, np.floating)):
        raise ValueError(f"{name} must be a non-negative integer number of pixels, not {radius_px!r}")
    if isinstance(radius_px, (float, np.floating)):
        if not float(radius_px).is_integer():
            raise ValueError(f"{name} must be a whole number of pixels, not {radius_px!r}")
    value = int(radius_px)
    if value < 0:
        raise ValueError(f"{name} must be >= 0 pixels, not {value}")
    return value


def _check_shape(shape: object) -> str:
    """Normalise a structuring-element shape name or raise a ValueError listing the valid ones."""
    name = str(shape).strip().lower() if isinstance(shape, str) else None
    if name not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}; got {shape!r}")
    return name


def as_rgb_image(image: object, name: str = "image") -> np.ndarray:
    """``image`` as an ``(H, W, 3)`` uint8 RGB array (values 0-255), or a ValueError naming ``name``."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"{name} must be an (H, W, 3) uint8 RGB array, got {array.dtype} {array.shape}")
    return array


def as_binary_mask(mask: object, name: str = "mask") -> np.ndarray:
    """Return a 2-D bool array (non-zero = lesion) or raise a ValueError."""
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) array, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} has no pixels (shape {array.shape})")
    if array.dtype == bool:
        return array
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{name} must be a bool or numeric array, got dtype {array.dtype}")
    return array != 0


def structuring_element(shape: str, radius_px: int) -> np.ndarray:
    """Flat structuring element of a given shape and radius.

    Parameters
    ----------
    shape : {"diamond", "disk", "square"}
        The footprints of :mod:`skimage.morphology` (``diamond``, ``disk``, ``footprint_rectangle``; computed
        here from their formulas, which a test checks against them, so that cleaning a prediction does not
        import scikit-image's morphology). ``"diamond"``: ``|dx| + |dy| <= r``, identical to Matlab ``strel('diamond', r)`` (the
        article's choice). ``"disk"``: ``dx**2 + dy**2 <= r**2``, the exact Euclidean disk, which
        approximates Matlab ``strel('disk', r)`` (Matlab uses a periodic-line decomposition for
        speed; its footprint is slightly polygonal). ``"square"``: the full ``(2r+1) x (2r+1)``
        square, i.e. Matlab ``strel('square', 2*r + 1)``.
    radius_px : int
        Radius in pixels, ``>= 0``. Radius 0 is the single pixel (the identity operation).

    Returns
    -------
    numpy.ndarray
        ``(2r+1, 2r+1)`` uint8 array of 0 and 1, centred on the middle element.

    Raises
    ------
    ValueError
        Unknown shape or a negative / non-integer radius.
    """
    name = _check_shape(shape)
    radius = _check_radius(radius_px)
    dy, dx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    if name == "diamond":
        element = np.abs(dx) + np.abs(dy) <= radius
    elif name == "disk":
        element = dx * dx + dy * dy <= radius * radius
    else:
        element = np.ones((2 * radius + 1, 2 * radius + 1), dtype=bool)
    return element.astype(np.uint8)


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(row0, row1, col0, col1), half-open, of the True pixels of ``mask``; None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def expanded_box(box: tuple[int, int, int, int], margin: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Grow a half-open box by ``margin`` pixels on every side, clipped to an image of ``shape``."""
    r0, r1, c0, c1 = box
    return max(r0 - margin, 0), min(r1 + margin, shape[0]), max(c0 - margin, 0), min(c1 + margin, shape[1])


def erode(
    mask: np.ndarray,
    radius_px: int,
    shape: str = DEFAULT_SHAPE,
    *,
    border_at_image_edge: bool = False,
) -> np.ndarray:
    """Binary erosion of a mask by a flat structuring element.

    Parameters
    ----------
    mask : (H, W) array
        Lesion mask; non-zero / True is lesion.
    radius_px : int
        Radius of the structuring element in pixels (``>= 0``; 0 returns the mask unchanged).
    shape : {"diamond", "disk", "square"}
        Structuring-element shape, see :func:`structuring_element`.
    border_at_image_edge : bool
        False (default, Matlab ``imerode``): outside the frame counts as lesion, so the image edge
        does not erode the mask. True: outside the frame counts as background, so a lesion
        touching the frame is eroded from that side too.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool, a subset of ``mask``.
    """
    return _around_the_mask(cv2.erode, mask, radius_px, shape, border_value=0 if border_at_image_edge else 1)


def dilate(mask: np.ndarray, radius_px: int, shape: str = DEFAULT_SHAPE) -> np.ndarray:
    """Binary dilation of a mask by a flat structuring element (outside the frame is background).

    Parameters
    ----------
    mask : (H, W) array
        Lesion mask; non-zero / True is lesion.
    radius_px : int
        Radius of the structuring element in pixels (``>= 0``; 0 returns the mask unchanged).
    shape : {"diamond", "disk", "square"}
        Structuring-element shape, see :func:`structuring_element`.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool, a superset of ``mask`` clipped to the image.
    """
    return _around_the_mask(cv2.dilate, mask, radius_px, shape, border_value=0)


def _around_the_mask(operation: Callable[..., np.ndarray], mask: np.ndarray, radius_px: int, shape: str,
                     border_value: int) -> np.ndarray:
    """:func:`morphology` of ``mask`` computed on its bounding box grown by the radius only: every window
    centred inside the box stays inside the grown box, or leaves the image through the frame, where cv2's
    constant border supplies ``border_value``. An empty mask gives an empty one, radius 0 a copy."""
    binary = as_binary_mask(mask)
    radius = _check_radius(radius_px)
    name = _check_shape(shape)
    result = np.zeros(binary.shape, dtype=bool)
    box = bounding_box(binary)
    if box is None:
        return result
    if radius == 0:
        return binary.copy()
    r0, r1, c0, c1 = expanded_box(box, radius, binary.shape)
    crop = binary[r0:r1, c0:c1].view(np.uint8)
    result[r0:r1, c0:c1] = morphology(operation, crop, radius, name, outside=border_value).view(bool)
    return result


#: The 3 x 3 cross: the diamond of radius 1.
_CROSS: np.ndarray = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def morphology(operation: Callable[..., np.ndarray], crop: np.ndarray, radius_px: int, shape: str = DEFAULT_SHAPE,
               *, outside: int = 0) -> np.ndarray:
    """Binary erosion or dilation of a 0 / 1 uint8 window by a flat structuring element, as :func:`erode` and
    :func:`dilate` make them on a mask's box.

    Parameters
    ----------
    operation : ``cv2.erode`` or ``cv2.dilate``
    crop : (H, W) uint8
        0 / 1 pixels of a window of a mask (a bool window's ``view(np.uint8)``).
    radius_px : int
        Radius of the structuring element in pixels (``>= 1``).
    shape : {"diamond", "disk", "square"}
        Structuring-element shape, see :func:`structuring_element`.
    outside : {0, 1}
        What every pixel beyond the window is worth: 1 for an erosion that treats the image frame as lesion, 0
        otherwise. Where the window's side is not the image frame, exact when no pixel the caller reads lies
        within ``radius_px`` of it.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` uint8 of 0 and 1. The diamond of radius ``r`` is ``r`` crosses in a row (every point within
        ``|dx| + |dy| <= r`` is reached by ``r`` unit steps that stay in the window), several times faster than
        its own ``(2r+1)²`` window and the same pixels.
    """
    if shape == "diamond":
        return operation(crop, _CROSS, iterations=radius_px, borderType=cv2.BORDER_CONSTANT, borderValue=outside)
    return operation(crop, structuring_element(shape, radius_px), borderType=cv2.BORDER_CONSTANT,
                     borderValue=outside)


def make_targets(
    mask: np.ndarray,
    *,
    classes: int = 3,
    border_width_px: int = DEFAULT_BORDER_WIDTH_PX,
    shape: str = DEFAULT_SHAPE,
    border_at_image_edge: bool = False,
) -> np.ndarray:
    """Label image for training from a binary lesion mask.

    Parameters
    ----------
    mask : (H, W) array
        Lesion mask; non-zero / True is lesion.
    classes : {2, 3}
        3: BACK=0, BORDER=1, INSIDE=2 (the article). 2: background=0, foreground=1 (the mask as
        labels; ``border_width_px``, ``shape`` and ``border_at_image_edge`` are then unused).
    border_width_px : int
        Radius in pixels (``>= 0``) of the structuring element that erodes the mask; the BORDER
        band is as thick as one erosion by it. 0 gives no BORDER at all (INSIDE == mask).
    shape : {"diamond", "disk", "square"}
        Structuring-element shape (the article: diamond).
    border_at_image_edge : bool
        False (default, as Matlab ``imerode``): a lesion touching the image frame gets no BORDER
        along the frame. True: the frame side gets a BORDER band too. See the module docstring.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` uint8 labels. Three classes guarantee ``(labels == INSIDE)`` is the erosion of
        the mask, ``(labels == BORDER)`` is the mask minus its erosion, and both together are
        exactly the mask.

    Raises
    ------
    ValueError
        Not a 2-D mask, ``classes`` not 2 or 3, or an invalid width / shape.
    """
    binary = as_binary_mask(mask)
    if isinstance(classes, bool) or classes not in (2, 3):
        raise ValueError(f"classes must be 2 or 3, not {classes!r}")
    if classes == 2:
        return binary.astype(np.uint8)
    inside = erode(binary, border_width_px, shape, border_at_image_edge=border_at_image_edge)
    labels = np.full(binary.shape, BACK, dtype=np.uint8)
    labels[binary] = BORDER
    labels[inside] = INSIDE
    return labels


def check_label_range(labels: np.ndarray, n_classes: int) -> None:
    """Refuse an integer label array with a value outside ``0 .. n_classes - 1`` (ValueError naming the range
    found). Unsigned labels are read once: only their largest value can be out of range."""
    high = int(labels.max())
    if high < n_classes and (labels.dtype.kind == "u" or int(labels.min()) >= 0):
        return
    raise ValueError(f"labels must lie in 0..{n_classes - 1}; found values from {int(labels.min())} to {high}")


def checked_label_image(labels: Any, n_classes: int) -> np.ndarray:
    """``labels`` as a 2-D integer array of class indices ``0 .. n_classes - 1`` (bool read as 0/1, not copied).

    Raises
    ------
    ValueError
        Not a non-empty ``(H, W)`` array, not integers (or bool), or a label outside ``0 .. n_classes - 1``.
    """
    array = np.asarray(labels)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"labels must be a non-empty 2-D (H, W) array, got shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.view(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"labels must be an integer array of class indices, got dtype {array.dtype}")
    check_label_range(array, n_classes)
    return array


def class_frequencies(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Fraction of pixels in each class.

    Parameters
    ----------
    labels : integer array of any shape
        Label image(s) with values in ``0 .. n_classes - 1`` (a stack of images is fine).
    n_classes : int
        Number of classes, ``>= 1``.

    Returns
    -------
    numpy.ndarray
        ``(n_classes,)`` float64 fractions in ``[0, 1]`` summing to 1; an absent class has 0.

    Raises
    ------
    ValueError
        No pixels, non-integer labels, or a label outside ``0 .. n_classes - 1``.
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, Integral) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, not {n_classes!r}")
    array = np.asarray(labels)
    if array.size == 0:
        raise ValueError("labels has no pixels: class frequencies are undefined")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"labels must be an integer array, got dtype {array.dtype}")
    check_label_range(array, n_classes)
    counts = np.bincount(array.ravel().astype(np.intp, copy=False), minlength=int(n_classes))
    return counts / counts.sum()
