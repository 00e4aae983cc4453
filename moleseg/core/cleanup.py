"""Post-processing of a predicted label image into lesion / border / inside masks.

Article rule (``rule="article"``, ``testBorderSegmentation.m``), three classes::

    D      = fill_holes(labels == INSIDE)                     (if fill_holes)
    G      = (labels == BORDER) minus D                       (BORDER - INSIDE clamped at 0)
    G      = close(G, disk(closing_radius_px))                 (the article: strel('disk', 15))
    lesion = fill_holes(D | G)  -> largest component           (each step optional)
    border = G & lesion                                        (closed band clipped to the lesion)
    inside = lesion & ~border

The article stops at D and G; the lesion as their filled union, the largest-component filter
and the clipping of the band to the lesion are moleseg's additions so that the three returned
masks are always consistent. ``border_width_px`` and ``shape`` are not used by this rule.

Grow-inside rule (``rule="grow_inside"``), three classes: a network trained with inverse-frequency
class weights over-predicts the rare BORDER class, drawing it too thick and outward. This rule
trusts only INSIDE: it fills its holes, keeps its largest component, and dilates it back outward
by ``border_width_px`` with the structuring element ``shape`` -- undoing the erosion that made the
INSIDE targets. The reported border is then the lesion minus its erosion by the same element
(the band of the training targets). If the prediction has no INSIDE at all but has BORDER (a tiny
lesion drawn entirely as border) the article rule is used instead, so such lesions do not vanish.

Two classes (either rule): lesion = foreground, holes filled and largest component kept when
asked, border = lesion minus its erosion by ``border_width_px`` / ``shape``.

Every result satisfies ``border <= lesion`` and ``inside == lesion & ~border``. Band erosions use
the Matlab image-edge convention of :mod:`moleseg.core.targets` (no band along the image frame, where
the lesion simply leaves the picture). The closing is computed as if the image were surrounded by
background (the band is padded with zeros before closing), so it never bridges a lesion to the
frame -- Matlab's ``imclose`` would, because its erosion pads with 1. Empty predictions give empty
masks. Connectivity: components are 8-connected; holes are background regions not 4-connected to
the image frame (Matlab ``imfill(..., 'holes')``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping

import cv2
import numpy as np

from moleseg.core.config import (
    BORDER,
    DEFAULT_BORDER_WIDTH_PX,
    DEFAULT_CLOSING_RADIUS_PX,
    DEFAULT_SHAPE,
    INSIDE,
)
from moleseg.core.options import not_true_or_false
from moleseg.core.targets import (
    SHAPES,
    as_binary_mask,
    bounding_box,
    checked_label_image,
    expanded_box,
    erode,
    morphology,
    structuring_element,
)

__all__ = [
    "RULES",
    "RULE_WORDS",
    "CLEANUP_VARIANTS",
    "CleanupSettings",
    "CleanupResult",
    "cleanup",
    "fill_holes",
    "keep_largest_component",
    "close_mask",
]

#: Lesion rules understood by :func:`cleanup`.
RULES: tuple[str, ...] = ("article", "grow_inside")
#: Each rule of :data:`RULES` in words, for people (the app's rule picker).
RULE_WORDS: dict[str, str] = {"article": "INSIDE plus the closed BORDER band (the article's method)",
                              "grow_inside": "INSIDE grown outward by the border width (for models that draw "
                                             "the border too thick)"}
#: Cleanup variants, by number of classes, that training compares by validation FM every epoch (the best
#: becomes the model's default) and cross-validation compares out of fold: changes to a model's settings.
CLEANUP_VARIANTS: dict[int, dict[str, dict[str, Any]]] = {
    3: {"article": {"rule": "article"}, "grow_inside": {"rule": "grow_inside"}},
    2: {"largest": {"largest_component": True}, "all_components": {"largest_component": False}},
}
#: Largest structuring-element radius accepted by the settings, in pixels.
MAX_RADIUS_PX: int = 1000
#: Value a flood fill writes over the pixels it reaches (the masks it floods hold 0 and 1).
_REACHED: int = 2


def _validated_radius(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer number of pixels, not {value!r}")
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    if not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer number of pixels, not {value!r}")
    value = int(value)
    if not 0 <= value <= MAX_RADIUS_PX:
        raise ValueError(f"{name} must be between 0 and {MAX_RADIUS_PX} pixels, not {value}")
    return value


def _validated_flag(name: str, value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(not_true_or_false(name, value))


@dataclass
class CleanupSettings:
    """How a predicted label image becomes lesion / border / inside masks.

    Attributes
    ----------
    rule : {"article", "grow_inside"}
        Lesion rule for three-class predictions (see the module docstring). Ignored for two.
    closing_radius_px : int
        Radius (px, 0..1000) of the disk that closes the border band in the article rule
        (the article: 15). 0 disables the closing.
    fill_holes : bool
        Fill holes of INSIDE and of the lesion (two classes: of the foreground).
    largest_component : bool
        Keep only the largest 8-connected lesion component.
    border_width_px : int
        Radius (px, 0..1000) of the structuring element of the border band (two classes and
        ``grow_inside``; ``grow_inside`` also dilates INSIDE by it). Should match the width the
        model was trained with.
    shape : {"diamond", "disk", "square"}
        Structuring-element shape for ``border_width_px``.

    Values are validated on construction (and by :meth:`validate`) with a ValueError.
    """

    rule: str = "article"
    closing_radius_px: int = DEFAULT_CLOSING_RADIUS_PX
    fill_holes: bool = True
    largest_component: bool = True
    border_width_px: int = DEFAULT_BORDER_WIDTH_PX
    shape: str = DEFAULT_SHAPE

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check and normalise every field in place; raise ValueError naming a bad field."""
        if not isinstance(self.rule, str) or self.rule.strip().lower() not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}; got {self.rule!r}")
        self.rule = self.rule.strip().lower()
        if not isinstance(self.shape, str) or self.shape.strip().lower() not in SHAPES:
            raise ValueError(f"shape must be one of {', '.join(SHAPES)}; got {self.shape!r}")
        self.shape = self.shape.strip().lower()
        self.closing_radius_px = _validated_radius("closing_radius_px", self.closing_radius_px)
        self.border_width_px = _validated_radius("border_width_px", self.border_width_px)
        self.fill_holes = _validated_flag("fill_holes", self.fill_holes)
        self.largest_component = _validated_flag("largest_component", self.largest_component)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of the settings."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "CleanupSettings":
        """Settings from a dict; missing keys take defaults, unknown keys are ignored.

        Raises
        ------
        ValueError
            ``data`` is not a mapping, or a value is invalid (the message names the field).
        """
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError(f"cleanup settings must be a dict, not {type(data).__name__}")
        known = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass
class CleanupResult:
    """Cleaned segmentation; three ``(H, W)`` bool masks with ``border <= lesion`` and
    ``inside == lesion & ~border``."""

    lesion: np.ndarray
    border: np.ndarray
    inside: np.ndarray


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill holes: background regions not 4-connected to the image frame (Matlab ``imfill``).

    Parameters
    ----------
    mask : (H, W) array
        Non-zero / True is foreground.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool, a superset of ``mask``.
    """
    binary = as_binary_mask(mask)
    result = binary.copy()
    box = bounding_box(binary)
    if box is None:
        return result
    r0, r1, c0, c1 = box
    # the ring around the bounding box is connected to the frame: through pixels outside the box, which are all
    # background, or it is the frame
    result[r0:r1, c0:c1] = filled_window(binary[r0:r1, c0:c1].view(np.uint8)).view(bool)
    return result


def filled_window(window: np.ndarray) -> np.ndarray:
    """A window of a mask with its holes filled, when a ring of background around it is connected to the image
    frame: the background a 4-connected flood from that ring does not reach becomes foreground.

    Parameters
    ----------
    window : (H, W) uint8
        0 / 1 pixels (a bool window's ``view(np.uint8)``).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` uint8 of 0 and 1, a superset of ``window``.
    """
    ringed = cv2.copyMakeBorder(window, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    cv2.floodFill(ringed, None, (0, 0), _REACHED, 0, 0, 4)
    return (ringed[1:-1, 1:-1] != _REACHED).view(np.uint8)


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 8-connected component; on a tie, the one OpenCV's labelling of the mask's bounding box
    numbers first (it scans two rows at a time, so not always the one whose first pixel comes first row by row).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool; empty when ``mask`` is empty.
    """
    binary = as_binary_mask(mask)
    result = np.zeros(binary.shape, dtype=bool)
    box = bounding_box(binary)
    if box is None:
        return result
    r0, r1, c0, c1 = box
    crop = binary[r0:r1, c0:c1]
    if _one_component(crop):
        return binary.copy()
    count, components, stats, _ = cv2.connectedComponentsWithStats(crop.astype(np.uint8), connectivity=8)
    if count <= 2:
        return binary.copy()
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    result[r0:r1, c0:c1] = components == largest
    return result


def _one_component(crop: np.ndarray) -> bool:
    """True when the True pixels of ``crop`` (bool, cropped to their bounding box) form one 8-connected
    component: an 8-connected flood from a pixel of its first row reaches all of them (the flood visits
    one component, labelling visits every pixel)."""
    flooded = np.ascontiguousarray(crop, dtype=np.uint8)  # floodFill writes only into a row-major image
    seed = int(np.argmax(flooded[0]))
    reached = cv2.floodFill(flooded, None, (seed, 0), _REACHED, 0, 0, 8)[0]
    return reached == cv2.countNonZero(flooded)


def close_mask(mask: np.ndarray, radius_px: int, shape: str = "disk") -> np.ndarray:
    """Morphological closing, computed as if the image were surrounded by background.

    The mask is padded with zeros by more than the radius before dilating and eroding, so the
    closing never fills the gap between an object and the image frame (no edge artefacts) and
    the result equals the closing on an unbounded background plane, cropped to the image.

    Parameters
    ----------
    mask : (H, W) array
        Non-zero / True is foreground.
    radius_px : int
        Radius (px, ``>= 0``) of the structuring element; 0 returns the mask unchanged.
    shape : {"diamond", "disk", "square"}
        Structuring-element shape (the article closes with a disk).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool, a superset of ``mask``.
    """
    binary = as_binary_mask(mask)
    element = structuring_element(shape, radius_px)
    radius = element.shape[0] // 2
    box = bounding_box(binary)
    if box is None or radius == 0:
        return binary.copy()
    # A closing never leaves the bounding box of the mask, so the box plus a zero pad of
    # radius + 1 holds every pixel the dilation can reach: the computation is exact.
    r0, r1, c0, c1 = box
    pad = radius + 1
    crop = np.pad(binary[r0:r1, c0:c1].astype(np.uint8), pad, constant_values=0)
    dilated = cv2.dilate(crop, element, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    closed = cv2.erode(dilated, element, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    result = binary.copy()
    result[r0:r1, c0:c1] |= closed[pad:-pad, pad:-pad].astype(bool)
    return result


def border_band(lesion: np.ndarray, settings: CleanupSettings) -> np.ndarray:
    """The lesion's border band: the lesion minus its erosion by ``settings.border_width_px`` (px, in
    ``settings.shape``), Matlab edge convention: no band along the frame. ``(H, W)`` bool."""
    return lesion & ~erode(lesion, settings.border_width_px, settings.shape)


def _result(lesion: np.ndarray, border: np.ndarray) -> CleanupResult:
    border = border & lesion
    return CleanupResult(lesion=lesion, border=border, inside=lesion & ~border)


def _article_rule(labels: np.ndarray, settings: CleanupSettings) -> CleanupResult:
    inside = labels == INSIDE
    if settings.fill_holes:
        inside = fill_holes(inside)
    band = (labels == BORDER) & ~inside
    band = close_mask(band, settings.closing_radius_px, "disk")
    lesion = inside | band
    if settings.fill_holes:
        lesion = fill_holes(lesion)
    if settings.largest_component:
        lesion = keep_largest_component(lesion)
    return _result(lesion, band)


def _grow_inside_rule(labels: np.ndarray, settings: CleanupSettings) -> CleanupResult:
    """The grow-inside rule on the whole label image, each step on the smallest window that holds it: INSIDE's
    box for filling its holes and keeping its largest component (neither leaves that box), then the grown window
    of :func:`_grown_inside`. The article rule when there is no INSIDE."""
    inside = labels == INSIDE
    box = bounding_box(inside)
    if box is None:
        return _on_labelled_box(_article_rule, labels, settings)
    r0, r1, c0, c1 = box
    window = inside[r0:r1, c0:c1]
    if settings.fill_holes:  # the same pixels as fill_holes: the ring around the box is background joined to the frame
        window = filled_window(window.view(np.uint8)).view(bool)
    if settings.largest_component:  # its box is the window, so it labels the same crop as on the whole image
        window = keep_largest_component(window)
    return _grown_inside(window, (r0, c0), labels.shape, settings)


def _grown_inside(inside: np.ndarray, origin: tuple[int, int], image_shape: tuple[int, ...],
                  settings: CleanupSettings) -> CleanupResult:
    """The grow-inside rule's last steps in one window: ``inside`` (a non-empty bool window whose first pixel lies
    at ``origin``, row and column, of an image of ``image_shape``, nothing outside it) dilated by the border width,
    its holes filled when asked, and the border band of the lesion that makes; the same masks as :func:`dilate`,
    :func:`fill_holes` and :func:`border_band` one after the other on the whole image.

    Exact on ``inside``'s box grown by ``2 * border_width_px + 1`` px: the lesion lies within the width of that
    box, and neither filling its holes (the window's outer ring is background joined to the frame) nor eroding it
    (which looks no farther than the width from a lesion pixel) reaches the window's sides except where they
    are the image frame, where the morphology's constant border stands for what lies beyond it."""
    radius, shape = settings.border_width_px, settings.shape
    i0, i1, j0, j1 = bounding_box(inside)
    top, left = origin
    r0, r1, c0, c1 = expanded_box((top + i0, top + i1, left + j0, left + j1), 2 * radius + 1, image_shape)
    window = np.zeros((r1 - r0, c1 - c0), dtype=np.uint8)
    window[top + i0 - r0:top + i1 - r0, left + j0 - c0:left + j1 - c0] = inside[i0:i1, j0:j1]
    grown = morphology(cv2.dilate, window, radius, shape) if radius else window
    if settings.fill_holes:
        grown = filled_window(grown)
    kept = morphology(cv2.erode, grown, radius, shape, outside=1) if radius else grown
    masks = []
    for part in (grown, cv2.subtract(grown, kept), kept):  # the lesion, its border band and the rest
        whole = np.zeros(image_shape, dtype=bool)
        whole[r0:r1, c0:c1] = part.view(bool)
        masks.append(whole)
    return CleanupResult(*masks)


def _two_class_rule(labels: np.ndarray, settings: CleanupSettings) -> CleanupResult:
    lesion = labels == 1
    if settings.fill_holes:
        lesion = fill_holes(lesion)
    if settings.largest_component:
        lesion = keep_largest_component(lesion)
    return _result(lesion, border_band(lesion, settings))


def cleanup(labels: np.ndarray, n_classes: int, settings: CleanupSettings | None = None) -> CleanupResult:
    """Turn a predicted label image into consistent lesion, border and inside masks.

    Parameters
    ----------
    labels : (H, W) integer array
        Predicted classes: BACK=0, BORDER=1, INSIDE=2 for three classes; 0 / 1 for two.
    n_classes : {2, 3}
        Number of classes of the model that produced ``labels``.
    settings : CleanupSettings, optional
        Rule and structuring-element sizes; defaults to ``CleanupSettings()`` (the article rule).

    Returns
    -------
    CleanupResult
        ``(H, W)`` bool masks with ``border <= lesion`` and ``inside == lesion & ~border``; all
        empty when nothing was predicted.

    Raises
    ------
    ValueError
        ``labels`` not 2-D integer, labels outside ``0 .. n_classes - 1``, ``n_classes`` not 2 or
        3, or invalid settings.
    """
    if isinstance(n_classes, bool) or n_classes not in (2, 3):
        raise ValueError(f"n_classes must be 2 or 3, not {n_classes!r}")
    array = checked_label_image(labels, n_classes)
    settings = CleanupSettings() if settings is None else settings
    if not isinstance(settings, CleanupSettings):
        raise ValueError(f"settings must be a CleanupSettings, not {type(settings).__name__}")
    settings.validate()
    if n_classes == 3 and settings.rule == "grow_inside":
        return _grow_inside_rule(array, settings)
    return _on_labelled_box(_two_class_rule if n_classes == 2 else _article_rule, array, settings)


def _on_labelled_box(rule: Callable[[np.ndarray, CleanupSettings], CleanupResult], labels: np.ndarray,
                     settings: CleanupSettings) -> CleanupResult:
    """``rule(labels, settings)`` computed on the box of the labelled (non-zero) pixels grown by
    ``2 * border_width_px + 1`` px, and placed back in the image: the same masks, fewer pixels to go through.

    Exact: every mask the article and two-class rules make lies in that box grown by ``border_width_px`` (holes
    filled and closings stay in the box of what they fill or close), and the border's erosion by the same width
    looks no farther, so no step reaches the box's sides, except where they are the image frame, which they then
    are in the box too."""
    box = bounding_box(labels != 0)
    if box is None:
        return rule(labels, settings)
    r0, r1, c0, c1 = expanded_box(box, 2 * settings.border_width_px + 1, labels.shape)
    if (r1 - r0, c1 - c0) == labels.shape:
        return rule(labels, settings)
    cropped = rule(labels[r0:r1, c0:c1], settings)
    masks = []
    for mask in (cropped.lesion, cropped.border, cropped.inside):
        whole = np.zeros(labels.shape, dtype=bool)
        whole[r0:r1, c0:c1] = mask
        masks.append(whole)
    return CleanupResult(*masks)
