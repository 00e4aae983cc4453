"""Hard-case augmentation: make the rare dermoscopy images a network gets wrong common in training.

Four cases, each drawn per example with its own probability (the ``hard_case_share`` option):

* **zoom_in**: the lesion is zoomed about its centre until its bounding box is wider and taller than the
  frame, so it touches the frame on every side (a lesion filling the whole field); the labels are made
  again from the zoomed lesion (:func:`moleseg.core.targets.make_targets`) so the BORDER band keeps its width.
* **pink**: part of the lesion (a half cut by a random line through its centre), or all of it, is blended
  towards a pale pink made from the surrounding skin (an amelanotic, partly pigmented lesion).
* **vignette**: a dark circular lens vignette over the frame's outer part (the labels do not change: a
  lesion under the vignette is still lesion).
* **halo**: a faint brownish ring painted on the skin around the lesion, labelled skin (the labels do not
  change): the counterpart of pink, for faint lesions whose pale pigmented halo is not lesion.

Pure numpy/OpenCV on one ``input_size`` square; the ``tf.data`` pipeline and the numpy feed both call
:func:`hard_cases`, so the two paths agree given the same random generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from moleseg.core.config import BACK
from moleseg.core.targets import bounding_box, make_targets

#: Largest zoom factor of ``zoom_in``; a lesion that would need more (a small one) is left as it is.
MAX_ZOOM = 3.0
#: Margin by which the zoomed lesion's bounding box exceeds the frame, drawn in this range (fraction of the side).
ZOOM_MARGIN = (0.05, 0.35)
#: Pale pink (RGB 0..255) mixed half and half with the skin colour to make an amelanotic lesion's colour.
PINK_RGB = (226.0, 150.0, 160.0)
#: How far a lesion part is blended towards the pale pink (0: unchanged, 1: flat pink), drawn in this range.
PINK_STRENGTH = (0.35, 0.75)
#: Vignette radius (fraction of the side; the corners are at 0.71) and darkness (0: none, 1: black) ranges.
VIGNETTE_RADIUS = (0.42, 0.68)
VIGNETTE_DARKNESS = (0.6, 0.95)
#: Halo ring width as a fraction of the lesion's equivalent radius, and how far the ring is blended towards
#: the halo colour (half skin, half the lesion's mean colour) at the lesion's edge, drawn in these ranges.
HALO_WIDTH = (0.15, 0.45)
HALO_STRENGTH = (0.25, 0.6)


@dataclass(frozen=True)
class HardCaseLabels:
    """How labels are made again after a zoom: the training targets' classes, BORDER width and shape."""

    n_classes: int
    border_width_px: int
    shape: str


def zoom_in(image: np.ndarray, labels: np.ndarray, how: HardCaseLabels, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """Zoom the lesion (``labels > 0``) until it touches the frame on every side.

    Parameters
    ----------
    image
        ``(S, S, 3)`` float32, 0..255.
    labels
        ``(S, S)`` uint8 classes; BACK (0) is outside the lesion.
    how
        How the labels are made from the zoomed lesion.
    rng
        Random generator (margin and centre jitter).

    Returns
    -------
    (image, labels)
        Zoomed copies; the inputs unchanged when there is no lesion, it already fills the frame, or it
        would need more than :data:`MAX_ZOOM`.
    """
    lesion = labels != BACK
    box = bounding_box(lesion)
    margin = rng.uniform(*ZOOM_MARGIN)
    jitter = rng.uniform(-0.05, 0.05, 2)
    if box is None:
        return image, labels
    top, bottom, left, right = box
    height, width = labels.shape
    needed = max(height / (bottom - top), width / (right - left))  # 1: already touches every side
    zoom = (1.0 + margin) * needed
    if needed <= 1.0 or zoom > MAX_ZOOM:
        return image, labels
    centre_x = (left + right - 1) / 2.0 + jitter[0] * (right - left)
    centre_y = (top + bottom - 1) / 2.0 + jitter[1] * (bottom - top)
    # output = frame centre + zoom * (input - lesion centre)
    matrix = np.array([[zoom, 0.0, (width - 1) / 2.0 - zoom * centre_x],
                       [0.0, zoom, (height - 1) / 2.0 - zoom * centre_y]])
    zoomed = cv2.warpAffine(image.astype(np.float32), matrix, (width, height), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT)
    zoomed_lesion = cv2.warpAffine(lesion.astype(np.uint8), matrix, (width, height), flags=cv2.INTER_NEAREST,
                                   borderMode=cv2.BORDER_REFLECT)
    zoomed_labels = make_targets(zoomed_lesion, classes=how.n_classes, border_width_px=how.border_width_px,
                                 shape=how.shape)
    return zoomed, zoomed_labels.astype(np.uint8)


def skin_colour(image: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    """RGB (0..255) of the skin: the median of the brighter half of the pixels outside ``lesion`` (not empty)."""
    background = image[~lesion]
    brightness = background.mean(axis=1)
    return np.median(background[brightness >= np.median(brightness)], axis=0)


def pink(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Turn part or all of the lesion pale pink (amelanotic).

    Half the time the whole lesion, otherwise the part on one side of a random line through its centre
    (soft edge); blended towards ``(skin + pink) / 2`` with a strength in :data:`PINK_STRENGTH`, so some
    texture stays (skin: :func:`skin_colour`).

    Returns
    -------
    numpy.ndarray
        ``(S, S, 3)`` float32 0..255; the input itself when there is no lesion or no background.
    """
    lesion = labels != BACK
    strength = rng.uniform(*PINK_STRENGTH)
    whole = rng.uniform() < 0.5
    angle = rng.uniform(0.0, 2.0 * np.pi)
    offset = rng.uniform(-0.2, 0.2)
    if not lesion.any() or lesion.all():
        return image
    pale = 0.5 * skin_colour(image, lesion) + 0.5 * np.asarray(PINK_RGB)
    side = image.shape[0]
    weight = cv2.GaussianBlur(lesion.astype(np.float32), (0, 0), max(1.0, side / 100.0))
    if not whole:
        rows, cols = np.nonzero(lesion)
        extent = max(np.ptp(rows), np.ptp(cols), 1)
        y, x = np.mgrid[0:side, 0:image.shape[1]].astype(np.float32)
        distance = ((x - cols.mean()) * np.cos(angle) + (y - rows.mean()) * np.sin(angle)) / extent - offset
        weight = weight / (1.0 + np.exp(-distance * 12.0))
    alpha = (strength * weight)[..., None]
    return (image * (1.0 - alpha) + pale.astype(np.float32) * alpha).astype(np.float32)


def vignette(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Darken the frame outside a circle about its centre, like a dermatoscope's lens vignette.

    Returns
    -------
    numpy.ndarray
        ``(S, S, 3)`` float32 0..255.
    """
    height, width = image.shape[:2]
    side = min(height, width)
    radius = rng.uniform(*VIGNETTE_RADIUS) * side
    softness = rng.uniform(0.03, 0.12) * side
    darkness = rng.uniform(*VIGNETTE_DARKNESS)
    centre = (np.array([width, height]) - 1) / 2.0 + rng.uniform(-0.05, 0.05, 2) * side
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    distance = np.hypot(x - centre[0], y - centre[1])
    shade = 1.0 - darkness * np.clip((distance - radius) / softness + 0.5, 0.0, 1.0)
    return (image * shade[..., None]).astype(np.float32)


def halo(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paint a faint pigmented halo on the skin around the lesion; the labels stay (the ring is skin).

    The ring fades linearly from the lesion's edge to a width drawn in :data:`HALO_WIDTH` times the
    lesion's equivalent radius; at the edge the skin is blended towards ``(skin + lesion mean) / 2`` with
    a strength drawn in :data:`HALO_STRENGTH` (skin: :func:`skin_colour`).

    Returns
    -------
    numpy.ndarray
        ``(S, S, 3)`` float32 0..255; the input itself when there is no lesion or no background.
    """
    lesion = labels != BACK
    width_share = rng.uniform(*HALO_WIDTH)
    strength = rng.uniform(*HALO_STRENGTH)
    if not lesion.any() or lesion.all():
        return image
    colour = 0.5 * skin_colour(image, lesion) + 0.5 * image[lesion].mean(axis=0)
    ring_px = max(2.0, width_share * np.sqrt(lesion.sum() / np.pi))
    outside_px = cv2.distanceTransform((~lesion).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    alpha = (strength * np.clip(1.0 - (outside_px - 1.0) / ring_px, 0.0, 1.0) * ~lesion)[..., None]
    return (image * (1.0 - alpha) + colour.astype(np.float32) * alpha).astype(np.float32)


def hard_cases(image: np.ndarray, labels: np.ndarray, *, zoom_in_share: float, pink_share: float,
               vignette_share: float, how: HardCaseLabels, rng: np.random.Generator, halo_share: float = 0.0
               ) -> tuple[np.ndarray, np.ndarray]:
    """Apply each hard case with its probability, in the order zoom_in, pink, halo, vignette.

    Parameters
    ----------
    image
        ``(S, S, 3)``, any dtype, 0..255.
    labels
        ``(S, S)`` uint8 classes.
    zoom_in_share, pink_share, vignette_share, halo_share
        Probability 0..1 of each case.
    how
        How labels are made again after a zoom.
    rng
        Random generator; the same number of draws is taken whichever cases happen (halo draws from a
        fourth child generator, so the first three cases are what they were before it existed).

    Returns
    -------
    (image float32 (S, S, 3) 0..255, labels uint8 (S, S))
    """
    draws = rng.uniform(0.0, 1.0, 3)
    case_rngs = rng.spawn(3)
    halo_rng = rng.spawn(1)[0]
    image = image.astype(np.float32)
    if draws[0] < zoom_in_share:
        image, labels = zoom_in(image, labels, how, case_rngs[0])
    if draws[1] < pink_share:
        image = pink(image, labels, case_rngs[1])
    if halo_rng.uniform() < halo_share:
        image = halo(image, labels, halo_rng)
    if draws[2] < vignette_share:
        image = vignette(image, case_rngs[2])
    return image, np.ascontiguousarray(labels, dtype=np.uint8)
