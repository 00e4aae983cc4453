"""Colours of a lesion: the six dermoscopic colours of the ABCD rule, their shares and a variegation score.

Descriptive only: the colours are reported, no score of malignancy is derived from them.

Method
------
The "C" of the ABCD rule of dermoscopy (Stolz et al., 1994) counts which of six colours a lesion shows:
white, red, light brown, dark brown, blue-grey and black. Automatic versions of it compare each lesion
pixel with one fixed reference colour per class; the reference values used here are those of Kasmi &
Mokrani, "Classification of malignant melanoma and benign skin lesions: implementation of automatic
ABCD rule", IET Image Processing 10(6), 2016, given in normalised RGB (0..1):

==============  =================
white           (1.0, 1.0, 1.0)
red             (0.8, 0.2, 0.2)
light brown     (0.6, 0.4, 0.0)
dark brown      (0.2, 0.0, 0.0)
blue-grey       (0.2, 0.6, 0.6)
black           (0.0, 0.0, 0.0)
==============  =================

1. The image and the reference colours are converted to CIELAB (sRGB, D65 white,
   :func:`skimage.color.rgb2lab`), where Euclidean distance (Delta E 1976) follows perceived colour
   difference far better than in RGB.
2. Every lesion pixel is given the reference colour nearest to it (smallest Delta E 1976); the share
   of a colour is the fraction of lesion pixels given to it (the six shares sum to 1).
3. A colour is **present** when its share is at least :data:`PRESENT_MIN_SHARE` (5 % of the lesion, the
   threshold of Kasmi & Mokrani), so a few stray pixels (hair, glare, noise) do not count.
4. The **colour count** is the number of present colours (0..6, the ABCD rule's C).
5. The **colour variegation** is the normalised Shannon entropy of the six shares,
   ``-sum(p log p) / log 6`` in [0, 1]: 0 when one colour covers the whole lesion, 1 when the six
   cover equal parts. Unlike the count, it grows smoothly as a second colour takes over.

The classification depends on the camera's colour rendering and the lighting: compare colours of the
same lesion taken with the same device, not across devices. Between two photographs of one lesion the
light's strength and the white balance still differ a little; :func:`skin_matched` removes that (von Kries
gains that give the second image's skin the first one's median colour) before a later visit's colours are
compared with an earlier one's.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np
from skimage.color import rgb2lab

from moleseg.core.targets import as_binary_mask, as_rgb_image

__all__ = [
    "COLOUR_NAMES",
    "PRESENT_MIN_SHARE",
    "REFERENCE_RGB",
    "ColourResult",
    "classify_colours",
    "code_classes",
    "lesion_colours",
    "packed_rgb",
    "skin_colour",
    "skin_matched",
    "unpacked_rgb",
]

#: The six dermoscopic colours, in the order of the ABCD rule, with their reference values (normalised
#: RGB 0..1, Kasmi & Mokrani 2016).
REFERENCE_RGB: dict[str, tuple[float, float, float]] = {
    "white": (1.0, 1.0, 1.0),
    "red": (0.8, 0.2, 0.2),
    "light brown": (0.6, 0.4, 0.0),
    "dark brown": (0.2, 0.0, 0.0),
    "blue-grey": (0.2, 0.6, 0.6),
    "black": (0.0, 0.0, 0.0),
}
#: Names of the six colours, in order.
COLOUR_NAMES: tuple[str, ...] = tuple(REFERENCE_RGB)
#: Smallest share of the lesion (0..1) a colour must cover to count as present.
PRESENT_MIN_SHARE: float = 0.05
#: Skin pixels darker than this on any channel (0..255: the dermatoscope's dark vignette, shadows) are left
#: out of the skin's colour.
SKIN_MIN_LEVEL: int = 30

_REFERENCE_LAB: np.ndarray = rgb2lab(np.array([list(REFERENCE_RGB.values())], dtype=np.float64))[0]


@dataclass(frozen=True)
class ColourResult:
    """Colours of one lesion.

    Attributes
    ----------
    shares : dict of str to float
        Fraction (0..1) of the lesion's pixels nearest to each of the six colours; they sum to 1.
    present : tuple of str
        The colours covering at least :data:`PRESENT_MIN_SHARE` of the lesion, in ABCD order.
    variegation : float
        Normalised Shannon entropy of the shares, 0 (one colour) .. 1 (six equal parts).
    """

    shares: dict[str, float]
    present: tuple[str, ...]
    variegation: float

    @property
    def count(self) -> int:
        """Number of present colours (0..6)."""
        return len(self.present)


def classify_colours(image: np.ndarray) -> np.ndarray:
    """Index (0..5, into :data:`COLOUR_NAMES`) of the reference colour nearest to each pixel in CIELAB.

    Parameters
    ----------
    image : (H, W, 3) or (N, 3) uint8
        RGB pixels.

    Returns
    -------
    numpy.ndarray of uint8
        The image's shape without its last axis.
    """
    pixels = np.asarray(image)
    if pixels.ndim < 2 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"colours need uint8 RGB pixels (..., 3), got {pixels.dtype} {pixels.shape}")
    lab = rgb2lab(pixels.reshape(-1, 1, 3).astype(np.float64) / 255.0).reshape(-1, 3)
    lightness, green_red, blue_yellow = lab[:, 0], lab[:, 1], lab[:, 2]
    # squared distance to each reference, summed in the order of a sum over the last axis, and the first
    # nearest kept on a tie: np.argmin of the (N, 6, 3) differences exactly, without building them
    nearest = np.zeros(len(lab), np.uint8)
    best = None
    for index, (ref_l, ref_a, ref_b) in enumerate(_REFERENCE_LAB):
        dl, da, db = lightness - ref_l, green_red - ref_a, blue_yellow - ref_b
        distance = dl * dl + da * da + db * db
        if best is None:
            best = distance
            continue
        closer = distance < best
        nearest[closer] = index
        best = np.minimum(best, distance)
    return nearest.reshape(pixels.shape[:-1])


def packed_rgb(pixels: np.ndarray) -> np.ndarray:
    """``(N, 3)`` or ``(H, W, 3)`` uint8 RGB pixels as ``(N,)`` or ``(H, W)`` int32 codes
    ``R * 65536 + G * 256 + B`` (0 .. 2**24 - 1)."""
    array = np.asarray(pixels, dtype=np.uint8)
    if array.size == 0:
        return np.zeros(array.shape[:-1], np.int32)
    image = array.reshape(-1, 1, 3) if array.ndim == 2 else array
    # OpenCV writes B, G, R, A bytes, which read as one little-endian 32-bit word are B + G << 8 + R << 16 +
    # A << 24: without the alpha byte, the code (several times faster than shifting three int32 channels)
    words = cv2.cvtColor(image, cv2.COLOR_RGB2BGRA).view("<u4")[..., 0]
    np.bitwise_and(words, np.uint32(0xFFFFFF), out=words)  # below 2**24: the same value read as int32
    return words.view("<i4").reshape(array.shape[:-1])  # little-endian like the words, whatever the machine


@functools.cache
def _classes_seen() -> np.ndarray:
    """One byte per 24-bit colour code: its class (:func:`classify_colours`) plus 1 once classified, 0 before.
    16 MiB, written once at the first use (about 3 ms: cheaper than the page faults of lazily mapped zeros)."""
    return np.full(1 << 24, 0, np.uint8)


def code_classes(codes: np.ndarray) -> np.ndarray:
    """:func:`classify_colours` of :func:`packed_rgb` codes (int32, 0 .. 2**24 - 1), as uint8 0..5 of their shape.
    Each colour is classified once per process and remembered: the next lesion (a moved slider, the next
    image) holds mostly the same colours. The class of a colour depends on that colour only, so threads
    that classify the same new colour at once write the same byte."""
    seen = _classes_seen()
    classes = seen[codes]
    new = classes == 0
    if new.any():  # each new colour classified once, however many pixels have it
        unseen = codes[new]
        # the distinct values by sorting (return_counts): numpy's unique of the values alone, or with their
        # inverse, is several times slower
        distinct = np.unique(unseen, return_counts=True)[0]
        seen[distinct] = classify_colours(unpacked_rgb(distinct)) + np.uint8(1)
        classes[new] = seen[unseen]
    return np.subtract(classes, np.uint8(1), out=classes)


def unpacked_rgb(codes: np.ndarray) -> np.ndarray:
    """The ``(N, 3)`` uint8 RGB pixels of :func:`packed_rgb` codes."""
    return np.stack([codes >> 16, (codes >> 8) & 0xFF, codes & 0xFF], axis=1).astype(np.uint8)


def lesion_colours(image: np.ndarray, lesion: np.ndarray, *, min_share: float = PRESENT_MIN_SHARE,
                   box: tuple[int, int, int, int] | None = None) -> ColourResult:
    """Shares of the six dermoscopic colours in a lesion, the present ones and the variegation.

    Parameters
    ----------
    image : (H, W, 3) uint8
        RGB image.
    lesion : (H, W) array
        Lesion mask (non-zero = lesion); must not be empty.
    min_share : float
        Share (0..1) a colour must reach to be present; default :data:`PRESENT_MIN_SHARE`.
    box : tuple of int, optional
        ``(row0, row1, col0, col1)``, half-open: a box holding every lesion pixel (its bounding box when known,
        :func:`moleseg.core.targets.bounding_box`); found otherwise.

    Raises
    ------
    ValueError
        Not a uint8 RGB image, masks of another size, or an empty lesion.
    """
    rgb = as_rgb_image(image)
    binary = as_binary_mask(lesion, "lesion")
    if binary.shape != rgb.shape[:2]:
        raise ValueError(f"lesion mask {binary.shape} and image {rgb.shape[:2]} differ in size")
    if box is None:
        left, top, width, height = cv2.boundingRect(np.ascontiguousarray(binary).view(np.uint8))
        box = None if width == 0 else (top, top + height, left, left + width)
    if box is None:
        raise ValueError("lesion mask is empty: its colours are undefined")
    if not 0.0 <= min_share <= 1.0:
        raise ValueError(f"min_share must be in [0, 1], not {min_share}")
    # Each pixel's colour packed into one 24-bit integer and its class looked up among the colours classified
    # before (:func:`code_classes`: a new colour is classified once), then the pixels of each class counted, on
    # the lesion's box: fewer pixels to index.
    window = np.s_[box[0]:box[1], box[2]:box[3]]
    codes = packed_rgb(rgb[window])[binary[window]]  # packed first: a 2-D selection is far faster than one of RGB triples
    classes = code_classes(codes)
    # one comparison per colour: faster than np.bincount, which first widens every class to a 64-bit index
    counts = np.array([np.count_nonzero(classes == index) for index in range(len(COLOUR_NAMES))])
    fractions = counts / counts.sum()
    shares = {name: float(share) for name, share in zip(COLOUR_NAMES, fractions)}
    present = tuple(name for name in COLOUR_NAMES if shares[name] >= min_share and shares[name] > 0)
    nonzero = fractions[fractions > 0]
    variegation = float(-(nonzero * np.log(nonzero)).sum() / math.log(len(COLOUR_NAMES)))
    return ColourResult(shares=shares, present=present, variegation=max(0.0, variegation))


def skin_colour(image: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    """The median RGB (``(3,)`` float64, 0..255) of the skin: the pixels outside the lesion, none of whose
    channels is under :data:`SKIN_MIN_LEVEL` (the whole image's when no such pixel is left)."""
    rgb = np.asarray(image).reshape(-1, 3)
    outside = ~np.asarray(lesion, dtype=bool).reshape(-1)
    skin = rgb[outside & (rgb.min(axis=1) >= SKIN_MIN_LEVEL)]
    return np.median((skin if len(skin) else rgb).astype(np.float64), axis=0)


def skin_matched(image: np.ndarray, lesion: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``image`` with each channel multiplied so that its skin's median colour (:func:`skin_colour`) becomes
    ``reference`` (``(3,)`` RGB 0..255, another photograph's skin colour); uint8, clipped to 0..255."""
    gains = (np.asarray(reference, dtype=np.float64) + 1.0) / (skin_colour(image, lesion) + 1.0)
    return np.clip(np.asarray(image).astype(np.float32) * gains.astype(np.float32), 0, 255).astype(np.uint8)
