"""Pictures of a segmentation: translucent overlays, outlines, class maps, side-by-side panels.

Every function returns a new ``(H, W, 3) uint8`` RGB array at the input image's own resolution
(nothing is resized except by :func:`side_by_side`, which matches heights, and :func:`shrunk` /
:func:`scaled_down`, which make a picture the size a page shows it at). Colours are RGB tuples of
three integers 0-255; opacities are floats in ``[0, 1]``. A blended pixel is::

    out = round((1 - opacity) * image + opacity * colour)      (per channel)

so opacity 1 paints the colour exactly and opacity 0 leaves the image unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy import ndimage

from moleseg.core.config import BACK, BORDER, INSIDE, class_names
from moleseg.core.targets import bounding_box, checked_label_image

__all__ = [
    "BACKGROUND_COLOR",
    "BORDER_COLOR",
    "BORDER_OPACITY",
    "CONTOUR_COLOR",
    "FILL_COLOR",
    "FILL_OPACITY",
    "FOREGROUND_COLOR",
    "Color",
    "blend",
    "class_colors",
    "class_map",
    "contour_overlay",
    "legend",
    "outline",
    "overlay",
    "scale_bar_length_mm",
    "scaled_down",
    "shrunk",
    "side_by_side",
    "swipe",
    "with_scale_bar",
]

Color = tuple[int, int, int]

#: Default translucent fill of the lesion (amber).
FILL_COLOR: Color = (255, 200, 0)
#: Default colour of the border band (cyan).
BORDER_COLOR: Color = (0, 255, 255)
#: Default opacities (0..1) of the lesion's fill and of its border band.
FILL_OPACITY: float = 0.35
BORDER_OPACITY: float = 1.0
#: Default colour of a drawn outline (cyan, visible on skin and on pigment).
CONTOUR_COLOR: Color = (0, 255, 255)
#: Class-map colour of BACK / two-class background (dark grey).
BACKGROUND_COLOR: Color = (40, 40, 40)
#: Class-map colour of the two-class foreground.
FOREGROUND_COLOR: Color = (255, 200, 0)
#: Class-map colours of the three classes, indexed by label (BACK, BORDER, INSIDE).
_THREE_CLASS_COLORS: dict[int, Color] = {BACK: BACKGROUND_COLOR, BORDER: BORDER_COLOR, INSIDE: FILL_COLOR}
#: Share of the image width a scale bar aims at (its length is the nice number of mm nearest below it).
SCALE_BAR_WIDTH_SHARE: float = 0.2
#: Lengths (mm, times a power of ten) a scale bar may have.
_SCALE_BAR_STEPS: tuple[float, ...] = (1.0, 2.0, 5.0)
#: Longest side of a picture shown on a page, in px (the Analyse page's overlay and class map beside each
#: other): about twice the width of their half-page column on a wide screen, so they stay sharp on
#: high-density screens.
DISPLAY_SIDE_PX: int = 1200
#: Colour of the gap between side-by-side panels (white).
_GAP_COLOR: Color = (255, 255, 255)


def as_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    """``image`` as ``(H, W, 3) uint8``; an ``(H, W)`` uint8 or bool grey image is repeated to RGB."""
    array = np.asarray(image)
    if array.dtype == np.bool_ and array.ndim == 2:
        array = array.astype(np.uint8) * np.uint8(255)
    if array.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 (0-255), got dtype {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must be an (H, W, 3) RGB or (H, W) grey array, got shape {np.shape(image)}")
    return array


def _mask(mask: np.ndarray, shape: tuple[int, int], name: str) -> np.ndarray:
    """``mask`` as ``(H, W)`` bool (non-zero is True); its H x W must equal ``shape``."""
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) mask, got shape {array.shape}")
    if array.shape != tuple(shape):
        raise ValueError(
            f"{name} is {array.shape[0]}x{array.shape[1]} (H x W) but the image is {shape[0]}x{shape[1]}"
        )
    if not (array.dtype == np.bool_ or np.issubdtype(array.dtype, np.number)):
        raise ValueError(f"{name} must be boolean or numeric, got dtype {array.dtype}")
    return np.asarray(array, dtype=bool)


def _color(color: Sequence[int], name: str) -> np.ndarray:
    values = np.asarray(color)
    if values.shape != (3,) or not np.issubdtype(values.dtype, np.number) or np.any(values != np.round(values)):
        raise ValueError(f"{name} must be an RGB tuple of three integers 0-255, got {color!r}")
    if values.min() < 0 or values.max() > 255:
        raise ValueError(f"{name} must have values 0-255, got {color!r}")
    return values.astype(np.float64)


def _opacity(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def blend(image: np.ndarray, where: np.ndarray, color: Color, opacity: float) -> np.ndarray:
    """Paint ``color`` with ``opacity`` over the pixels of ``image`` where ``where`` is True.

    Parameters
    ----------
    image : (H, W, 3) uint8
    where : (H, W) bool
    color : RGB tuple, 0-255
    opacity : float in [0, 1]

    Returns
    -------
    (H, W, 3) uint8
        A new array; ``round((1 - opacity) * image + opacity * color)`` under ``where``, the image
        elsewhere.
    """
    rgb = as_rgb(image)
    region = _mask(where, rgb.shape[:2], "where")
    paint = _color(color, "color")
    alpha = _opacity(opacity, "opacity")
    result = rgb.copy()
    _paint(result, region, paint, alpha)
    return result


def _paint(result: np.ndarray, region: np.ndarray, paint: np.ndarray, alpha: float, *, boxed: bool = False) -> None:
    """:func:`blend` in place on ``result`` (H, W, 3) uint8, on the bounding box of ``region`` only (``boxed``:
    ``region`` is cropped to a box holding it already, painted whole)."""
    if alpha <= 0:
        return
    box = (0, region.shape[0], 0, region.shape[1]) if boxed else bounding_box(region)
    if box is None:
        return
    r0, r1, c0, c1 = box
    window = result[r0:r1, c0:c1]
    where = region[r0:r1, c0:c1].view(np.uint8)
    if alpha == 1.0:  # opaque: the colour itself (the blend's 0 * value + 1 * colour), set under the mask in place
        cv2.bitwise_and(window, (0, 0, 0, 0), dst=window, mask=where)
        cv2.bitwise_or(window, (*paint.tolist(), 0), dst=window, mask=where)
        return
    # Every blended value depends only on (channel, value): one 256-entry table per channel, applied with
    # OpenCV's LUT and copied under the mask (the same float64 arithmetic as blending each pixel).
    levels = np.arange(256, dtype=np.float64)[:, None]
    table = np.clip(np.rint((1.0 - alpha) * levels + alpha * paint), 0, 255).astype(np.uint8)
    # OpenCV's masked copy writes into the window of ``result`` in place (several times faster than numpy's).
    cv2.copyTo(cv2.LUT(window, table[None]), where, window)


def overlay(
    image: np.ndarray,
    lesion: np.ndarray,
    border: np.ndarray | None,
    *,
    fill_color: Color = FILL_COLOR,
    border_color: Color = BORDER_COLOR,
    fill_opacity: float = FILL_OPACITY,
    border_opacity: float = BORDER_OPACITY,
    box: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """The image with the lesion filled translucently and its border band drawn on top.

    Parameters
    ----------
    image : (H, W, 3) uint8 RGB (or (H, W) uint8 grey)
    lesion : (H, W) bool
        The lesion; filled with ``fill_color`` at ``fill_opacity`` (except under the border).
    border : (H, W) bool or None
        The border band (usually inside the lesion, e.g. :attr:`moleseg.core.cleanup.CleanupResult.border`);
        painted with ``border_color`` at ``border_opacity``. None draws no border.
    fill_color, border_color : RGB tuples, 0-255
    fill_opacity, border_opacity : float in [0, 1]
    box : tuple of int, optional
        ``(row0, row1, col0, col1)``, half-open: a box holding every lesion and border pixel (the lesion's bounding
        box when the border lies in the lesion, :attr:`moleseg.engine.segmenter.Segmentation.lesion_box`); found
        otherwise.

    Returns
    -------
    (H, W, 3) uint8
        Pixels outside the lesion and the border are the image's own.

    Raises
    ------
    ValueError
        A mask whose H x W differs from the image's, a bad colour or opacity.
    """
    rgb = as_rgb(image)
    shape = rgb.shape[:2]
    lesion_mask = _mask(lesion, shape, "lesion")
    border_mask = _mask(border, shape, "border") if border is not None else np.zeros(shape, dtype=bool)
    _color(border_color, "border_color")
    _opacity(border_opacity, "border_opacity")
    fill = _color(fill_color, "fill_color")
    fill_alpha = _opacity(fill_opacity, "fill_opacity")
    paint = _color(border_color, "border_color")
    alpha = _opacity(border_opacity, "border_opacity")
    result = rgb.copy()
    if box is not None:  # the fill, disjoint from the border (each pixel painted once), and the border, in the box
        window = np.s_[box[0]:box[1], box[2]:box[3]]
        _paint(result[window], lesion_mask[window] & ~border_mask[window], fill, fill_alpha, boxed=True)
        _paint(result[window], border_mask[window], paint, alpha, boxed=True)
        return result
    lesion_box = bounding_box(lesion_mask)
    if lesion_box is not None:  # the fill on the lesion's box
        window = np.s_[lesion_box[0]:lesion_box[1], lesion_box[2]:lesion_box[3]]
        _paint(result[window], lesion_mask[window] & ~border_mask[window], fill, fill_alpha)
    _paint(result, border_mask, paint, alpha)
    return result


def outline(mask: np.ndarray, thickness_px: int = 2) -> np.ndarray:
    """Inner outline of a mask: its pixels within ``thickness_px`` of the background.

    Parameters
    ----------
    mask : (H, W) bool
    thickness_px : int
        Width of the outline in pixels (``>= 1``): mask pixels at a Euclidean distance of at most
        ``thickness_px`` from the nearest background pixel. The outline lies inside the mask, so it
        never covers background pixels; where the mask touches the image frame no outline is drawn (the
        lesion continues outside the picture).

    Returns
    -------
    (H, W) bool
    """
    if isinstance(thickness_px, bool) or not isinstance(thickness_px, (int, np.integer)) or thickness_px < 1:
        raise ValueError(f"thickness_px must be an integer >= 1, got {thickness_px!r}")
    binary = np.asarray(mask).astype(bool)
    if binary.ndim != 2:
        raise ValueError(f"mask must be a 2-D (H, W) array, got shape {binary.shape}")
    if not binary.any():
        return binary.copy()
    radius = int(thickness_px)
    rows, cols = np.nonzero(binary.any(axis=1))[0], np.nonzero(binary.any(axis=0))[0]
    # Every background pixel within `radius` of the mask lies in its bounding box grown by `radius`.
    top, bottom = max(0, rows[0] - radius), min(binary.shape[0], rows[-1] + radius + 1)
    left, right = max(0, cols[0] - radius), min(binary.shape[1], cols[-1] + radius + 1)
    crop = binary[top:bottom, left:right]
    result = np.zeros_like(binary)
    if crop.all():  # the mask fills the picture: no background, no outline
        return result
    # Euclidean distance to the nearest background pixel; outside the array is not background,
    # so the image frame is not outlined.
    distance = ndimage.distance_transform_edt(crop)
    result[top:bottom, left:right] = crop & (distance <= radius)
    return result


def contour_overlay(
    image: np.ndarray,
    lesion: np.ndarray,
    *,
    color: Color = CONTOUR_COLOR,
    thickness_px: int = 2,
    opacity: float = 1.0,
) -> np.ndarray:
    """The image with only the lesion's outline drawn (see :func:`outline`).

    Parameters
    ----------
    image : (H, W, 3) uint8 RGB (or (H, W) uint8 grey)
    lesion : (H, W) bool
    color : RGB tuple, 0-255
    thickness_px : int
        Outline width in pixels (``>= 1``), drawn just inside the lesion.
    opacity : float in [0, 1]

    Returns
    -------
    (H, W, 3) uint8
    """
    rgb = as_rgb(image)
    lesion_mask = _mask(lesion, rgb.shape[:2], "lesion")
    return blend(rgb, outline(lesion_mask, thickness_px), color, opacity)


def scaled_down(picture: np.ndarray, scale: float) -> np.ndarray:
    """``picture`` (``(H, W)`` or ``(H, W, C)``) times ``scale`` (> 0) by area averaging when ``scale`` is below 1,
    each side at least 1 px; ``picture`` itself otherwise."""
    if scale >= 1:
        return picture
    height, width = picture.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(picture, size, interpolation=cv2.INTER_AREA)


def shrunk(picture: np.ndarray, side_px: int = DISPLAY_SIDE_PX) -> np.ndarray:
    """``picture`` shrunk so that its longer side is at most ``side_px`` (>= 1) px, by area averaging; itself
    when it is that small already."""
    return scaled_down(picture, side_px / max(picture.shape[:2]))


def _resize_to_height(image: np.ndarray, height: int) -> np.ndarray:
    if image.shape[0] == height:
        return image
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    interpolation = cv2.INTER_AREA if height < image.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def side_by_side(left: np.ndarray, right: np.ndarray, gap_px: int = 8) -> np.ndarray:
    """Two images next to each other, the lower one enlarged to the taller one's height.

    Parameters
    ----------
    left, right : (H, W, 3) uint8 RGB or (H, W) uint8 / bool grey
    gap_px : int
        Width (px, ``>= 0``) of the white gap between them.

    Returns
    -------
    (max(H_left, H_right), W_left' + gap_px + W_right', 3) uint8
        Aspect ratios are kept (the resized image's width rounds to the nearest pixel).
    """
    if isinstance(gap_px, bool) or not isinstance(gap_px, (int, np.integer)) or gap_px < 0:
        raise ValueError(f"gap_px must be an integer >= 0, got {gap_px!r}")
    first = as_rgb(left, "left")
    second = as_rgb(right, "right")
    height = max(first.shape[0], second.shape[0])
    first = _resize_to_height(first, height)
    second = _resize_to_height(second, height)
    gap = np.empty((height, int(gap_px), 3), dtype=np.uint8)
    gap[:] = _GAP_COLOR
    return np.concatenate([first, gap, second], axis=1)


def class_colors(n_classes: int) -> dict[int, Color]:
    """Class-map colour of each label: three classes BACK dark grey, BORDER cyan, INSIDE amber;
    two classes background dark grey, foreground amber."""
    class_names(n_classes)  # validates n_classes
    if n_classes == 3:
        return dict(_THREE_CLASS_COLORS)
    return {0: BACKGROUND_COLOR, 1: FOREGROUND_COLOR}


def class_map(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Colour picture of a label image (see :func:`class_colors`).

    Parameters
    ----------
    labels : (H, W) integer array
        Values ``0 .. n_classes - 1``.
    n_classes : {2, 3}

    Returns
    -------
    (H, W, 3) uint8

    Raises
    ------
    ValueError
        Not a 2-D integer (or bool) array, or a label outside ``0 .. n_classes - 1``.
    """
    colors = class_colors(n_classes)
    values = checked_label_image(labels, n_classes)
    palette = np.array([colors[label] for label in range(n_classes)], dtype=np.uint8)
    return np.take(palette, values, axis=0)  # a row per label: faster than fancy indexing


def legend(n_classes: int) -> list[tuple[str, Color]]:
    """``(class name, colour)`` of each class of :func:`class_map`, in label order."""
    colors = class_colors(n_classes)
    return [(name, colors[label]) for label, name in enumerate(class_names(n_classes))]


def scale_bar_length_mm(width_px: int, pixel_size_mm: float) -> float:
    """The scale bar's length for an image ``width_px`` wide: the largest 1, 2 or 5 times a power of ten
    mm not longer than :data:`SCALE_BAR_WIDTH_SHARE` of the image's width (e.g. 1 mm for a 768 px image at
    0.01 mm/px, where a fifth of the width is 1.54 mm; 2 mm at 0.015 mm/px, where it is 2.30 mm)."""
    if not (isinstance(pixel_size_mm, (int, float, np.floating)) and np.isfinite(pixel_size_mm)
            and pixel_size_mm > 0):
        raise ValueError(f"pixel_size_mm must be a positive number of mm per pixel, got {pixel_size_mm!r}")
    target_mm = width_px * SCALE_BAR_WIDTH_SHARE * float(pixel_size_mm)
    power = 10.0 ** np.floor(np.log10(target_mm))
    return max(step * power for step in _SCALE_BAR_STEPS if step * power <= target_mm * (1 + 1e-9))


def with_scale_bar(image: np.ndarray, pixel_size_mm: float) -> np.ndarray:
    """The image with a scale bar in its lower left corner: a white bar with a black edge, exactly
    :func:`scale_bar_length_mm` long at ``pixel_size_mm`` (mm per px), labelled in mm above it.

    Returns
    -------
    (H, W, 3) uint8
        A new array; the input is not changed.
    """
    picture = as_rgb(image).copy()
    height, width = picture.shape[:2]
    length_mm = scale_bar_length_mm(width, pixel_size_mm)
    length_px = max(1, round(length_mm / float(pixel_size_mm)))
    unit = max(1, round(min(height, width) / 100))  # line widths and margins grow with the picture
    left, bottom = 3 * unit, height - 3 * unit
    thickness = max(2, 2 * unit)
    top = bottom - thickness
    cv2.rectangle(picture, (left - unit, top - unit), (left + length_px - 1 + unit, bottom + unit - 1),
                  (0, 0, 0), thickness=-1)
    cv2.rectangle(picture, (left, top), (left + length_px - 1, bottom - 1), (255, 255, 255), thickness=-1)
    text = f"{length_mm:g} mm"
    scale = 0.35 * unit
    weight = max(1, unit // 2)
    origin = (left, top - 2 * unit)
    cv2.putText(picture, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), weight + 2 * unit, cv2.LINE_AA)
    cv2.putText(picture, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), weight, cv2.LINE_AA)
    return picture


def swipe(left: np.ndarray, right: np.ndarray, position: float, line_color: Color = (255, 255, 255)) -> np.ndarray:
    """A wipe between two pictures of the same size: ``left`` to the left of the column at ``position``
    (0..1 of the width), ``right`` from it on, with a thin line (``line_color``, 2 px per 400 px of width,
    at least 1) centred on the cut.

    Returns
    -------
    (H, W, 3) uint8
        ``position`` 0 gives ``right``, 1 gives ``left`` (with the line at the edge).

    Raises
    ------
    ValueError
        Pictures of different sizes, or a position outside 0..1.
    """
    first, second = as_rgb(left, "left"), as_rgb(right, "right")
    if first.shape != second.shape:
        raise ValueError(f"the two pictures differ in size: {first.shape[:2]} and {second.shape[:2]}")
    if not 0.0 <= float(position) <= 1.0:
        raise ValueError(f"position must be within 0..1, got {position!r}")
    width = first.shape[1]
    cut = int(round(float(position) * width))
    picture = second.copy()
    picture[:, :cut] = first[:, :cut]
    half = max(1, width // 400)
    picture[:, max(0, cut - half):min(width, cut + half)] = line_color
    return picture
