"""Correcting a lesion by hand: drawn regions added to or removed from the model's lesion, with undo and reset.

A correction is a list of :class:`Edit` (what the user drew and whether it adds or removes), replayed on
the model's lesion each time: undo drops the last edit, reset drops them all, and a new cleanup of the
model's result keeps the user's edits on top. Coordinates are ``x, y`` in pixels of the image,
pixel-corner convention (pixel ``(row, col)`` covers ``col..col+1``; its centre is ``col + 0.5``), the
same as :mod:`moleseg.core.outlines`. No Streamlit, no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np
from scipy import ndimage
from skimage.draw import polygon as draw_polygon

#: Sub-pixel bits of the rasterisation (cv2 ``shift``): vertices are placed to 1/16 px.
_SHIFT_BITS = 4


@dataclass(frozen=True)
class Stroke:
    """One drawn shape in image px.

    points : (N, 2) float ``x, y``
    width_px : 0 for a closed polygon or lasso (its inside is filled); > 0 for a brush line of that
        width (round ends).
    """

    points: tuple[tuple[float, float], ...]
    width_px: float = 0.0

    @classmethod
    def of(cls, points: np.ndarray | Sequence[Sequence[float]], width_px: float = 0.0) -> "Stroke":
        array = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return cls(tuple((float(x), float(y)) for x, y in array), float(width_px))


@dataclass(frozen=True)
class Edit:
    """Strokes drawn at once, added to the lesion (``add``) or removed from it."""

    strokes: tuple[Stroke, ...]
    add: bool


def _brush_mask(centres: np.ndarray, radius_px: float, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre is within ``radius_px`` of the polyline through ``centres`` (x, y, pixel-centre
    coordinates), computed in the stroke's bounding box only."""
    height, width = shape
    radius_px = min(radius_px, float(np.hypot(height, width)))  # wider covers no more: the canvas stays small
    margin = int(np.ceil(radius_px)) + 1
    x0 = max(0, int(np.floor(centres[:, 0].min())) - margin)
    y0 = max(0, int(np.floor(centres[:, 1].min())) - margin)
    x1 = min(width, int(np.ceil(centres[:, 0].max())) + margin + 1)
    y1 = min(height, int(np.ceil(centres[:, 1].max())) + margin + 1)
    result = np.zeros(shape, dtype=bool)
    if x0 >= x1 or y0 >= y1:
        return result
    # the line, drawn 1 px wide on a canvas that also holds the parts of the stroke outside the image
    pad = margin
    canvas = np.zeros((y1 - y0 + 2 * pad, x1 - x0 + 2 * pad), dtype=np.uint8)
    local = np.round((centres - [x0 - pad, y0 - pad]) * (1 << _SHIFT_BITS)).astype(np.int32)
    if len(local) == 1:
        local = np.vstack([local, local])
    cv2.polylines(canvas, [local.reshape(-1, 1, 2)], False, 1, 1, cv2.LINE_8, _SHIFT_BITS)
    near = ndimage.distance_transform_edt(canvas == 0) <= radius_px
    result[y0:y1, x0:x1] = near[pad:pad + y1 - y0, pad:pad + x1 - x0]
    return result


def stroke_mask(stroke: Stroke, shape: tuple[int, int]) -> np.ndarray:
    """The pixels a stroke covers in an image of ``shape`` (rows, cols), ``(H, W)`` bool.

    A polygon (3 points or more) covers the pixels whose centre lies inside it; a brush line covers
    the pixels within ``width_px / 2`` of the line. Points outside the image are clipped by drawing.
    """
    mask = np.zeros(shape[:2], dtype=bool)
    if not stroke.points:
        return mask
    centres = np.asarray(stroke.points, dtype=np.float64) - 0.5  # pixel-corner -> pixel-centre coordinates
    if stroke.width_px > 0:
        return _brush_mask(centres, stroke.width_px / 2, shape[:2])
    if len(centres) >= 3:
        rows, cols = draw_polygon(centres[:, 1], centres[:, 0], shape[:2])
        mask[rows, cols] = True
    return mask


def apply_edit(lesion: np.ndarray, edit: Edit, fill_holes: bool = False) -> np.ndarray:
    """The lesion with the edit's strokes added or removed (a new ``(H, W)`` bool array). ``fill_holes``: an
    added region's holes and the gaps it closes against the lesion are filled (as the cleanup's "fill holes"
    does); a removal is kept as drawn, holes included."""
    region = np.zeros(lesion.shape[:2], dtype=bool)
    for stroke in edit.strokes:
        region |= stroke_mask(stroke, lesion.shape[:2])
    lesion = np.asarray(lesion, dtype=bool)
    if not edit.add:
        return lesion & ~region
    return ndimage.binary_fill_holes(lesion | region) if fill_holes else lesion | region


def replay(lesion: np.ndarray, edits: Sequence[Edit], fill_holes: bool = False) -> np.ndarray:
    """The lesion after every edit in order (``fill_holes``: see :func:`apply_edit`)."""
    result = np.asarray(lesion, dtype=bool).copy()
    for edit in edits:
        result = apply_edit(result, edit, fill_holes)
    return result


@dataclass
class Corrections:
    """The hand edits of one image, newest last (each is a few hundred points: every one is kept, and
    undo can go back to the model's result)."""

    edits: list[Edit] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.edits)

    def push(self, strokes: Sequence[Stroke], add: bool) -> bool:
        """Record a drawing; returns False (nothing recorded) when it has no stroke."""
        strokes = tuple(s for s in strokes if s.points)
        if not strokes:
            return False
        self.edits.append(Edit(strokes, add))
        return True

    def undo(self) -> bool:
        """Drop the last edit; False when there was none."""
        if not self.edits:
            return False
        self.edits.pop()
        return True

    def reset(self) -> None:
        """Back to the model's result."""
        self.edits.clear()

    def apply(self, lesion: np.ndarray, fill_holes: bool = False) -> np.ndarray:
        """The corrected lesion (``fill_holes``: each added region's holes filled, :func:`apply_edit`)."""
        return replay(lesion, self.edits, fill_holes)
