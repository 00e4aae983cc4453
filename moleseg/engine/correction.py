"""Correcting a lesion by hand: drawn regions added to or removed from the model's lesion, with undo and reset.

A correction is a list of :class:`Edit` (what the user drew and whether it adds or removes), replayed on
the model's lesion each time: undo drops the last edit, reset drops them all, and a new cleanup of the
model's result keeps the user's edits on top. Coordinates are ``x, y`` in pixels of the image,
pixel-corner convention (pixel ``(row, col)`` covers ``col..col+1``; its centre is ``col + 0.5``), the
same as :mod:`moleseg.core.outlines`. No Streamlit, no TensorFlow.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np
from scipy import ndimage

#: Sub-pixel bits of the rasterisation (cv2 ``shift``): vertices are placed to 1/16 px.
_SHIFT_BITS = 4
#: Most corners of one polygon (a drawing's polygons are filled row by row: the cost grows with corners x rows).
MAX_POLYGON_CORNERS: int = 1_000
#: Most points of one drawing, all its strokes together (a long brush stroke has a few hundred).
MAX_DRAWING_POINTS: int = 20_000
#: Most strokes of one drawing (each brush stroke, polygon or rectangle drawn before it is added or removed).
MAX_DRAWING_STROKES: int = 100
#: Most hand edits of one image: a run that shows it again after an undo replays them all (each is a pass over
#: the picture, and filling its holes another).
MAX_EDITS: int = 50
#: The strokes of all an image's edits cover at most this many times its pixels, counting the box around each
#: stroke within the image (its brush width included): every run that shows the image replays them all.
MAX_CORRECTION_COVER: int = 8
#: Edge-row crossings filled at once by :func:`_polygon_mask` (bounds its scratch arrays, ~50 bytes each).
_CROSSINGS_AT_ONCE = 1 << 18


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


#: A window of an image's pixels: ``(first row, first column, (h, w) bool mask)``.
Window = tuple[int, int, np.ndarray]


def _brush_window(centres: np.ndarray, radius_px: float, shape: tuple[int, int]) -> Window | None:
    """Pixels whose centre is within ``radius_px`` of the polyline through ``centres`` (x, y, pixel-centre
    coordinates), in the stroke's bounding box (within the image; None when that is empty)."""
    height, width = shape
    radius_px = min(radius_px, float(np.hypot(height, width)))  # wider covers no more: the canvas stays small
    margin = int(np.ceil(radius_px)) + 1
    x0 = max(0, int(np.floor(centres[:, 0].min())) - margin)
    y0 = max(0, int(np.floor(centres[:, 1].min())) - margin)
    x1 = min(width, int(np.ceil(centres[:, 0].max())) + margin + 1)
    y1 = min(height, int(np.ceil(centres[:, 1].max())) + margin + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    # the line, drawn 1 px wide on a canvas that also holds the parts of the stroke outside the image
    pad = margin
    canvas = np.zeros((y1 - y0 + 2 * pad, x1 - x0 + 2 * pad), dtype=np.uint8)
    local = np.round((centres - [x0 - pad, y0 - pad]) * (1 << _SHIFT_BITS)).astype(np.int32)
    if len(local) == 1:
        local = np.vstack([local, local])
    cv2.polylines(canvas, [local.reshape(-1, 1, 2)], False, 1, 1, cv2.LINE_8, _SHIFT_BITS)
    near = ndimage.distance_transform_edt(canvas == 0) <= radius_px
    return y0, x0, near[pad:pad + y1 - y0, pad:pad + x1 - x0]


def _polygon_window(centres: np.ndarray, shape: tuple[int, int]) -> Window | None:
    """Pixels whose centre lies inside the polygon through ``centres`` (x, y, pixel-centre coordinates) by the
    even-odd rule, with skimage's test (``skimage.draw.polygon``: a pixel ``(r, c)`` counts an edge ``i-1 -> i``
    when ``min(y) <= r < max(y)`` and ``c`` lies left of where the edge crosses row ``r``), computed row by row in
    the polygon's bounding box: each edge's crossings of the rows it spans toggle the pixels left of them (left of
    every corner a row has an even count of crossings)."""
    height, width = shape
    x, y = centres[:, 0], centres[:, 1]
    with np.errstate(over="ignore", invalid="ignore"):  # the browser's far-off corners: inf, nan (no crossing)
        row0, row1 = (int(np.clip(np.floor(y.min()), 0, height)), int(np.clip(np.ceil(y.max()) + 1, 0, height)))
        col0, col1 = (int(np.clip(np.floor(x.min()), 0, width)), int(np.clip(np.ceil(x.max()) + 1, 0, width)))
        if row0 >= row1 or col0 >= col1:
            return None
        x_prev, y_prev = np.roll(x, 1), np.roll(y, 1)
        first = np.clip(np.ceil(np.minimum(y, y_prev)), row0, row1).astype(np.int64)
        stop = np.clip(np.ceil(np.maximum(y, y_prev)), row0, row1).astype(np.int64)  # rows first..stop-1
        counts = stop - first
        toggles = np.zeros((row1 - row0, col1 - col0 + 1), dtype=np.uint8)  # [r, k]: crossings left of column k
        ends = np.cumsum(counts)
        edge = 0
        while edge < len(counts):
            start = ends[edge] - counts[edge]  # the first crossing of this part
            last = max(edge + 1, int(np.searchsorted(ends, start + _CROSSINGS_AT_ONCE, side="right")))
            part = slice(edge, last)
            edges = np.repeat(np.arange(edge, last), counts[part])
            starts = np.repeat(ends[part] - counts[part] - start, counts[part])
            rows = np.repeat(first[part], counts[part]) + np.arange(len(edges)) - starts
            crossing = ((x_prev[edges] - x[edges]) * (rows - y[edges]) / (y_prev[edges] - y[edges]) + x[edges])
            columns = np.where(np.isnan(crossing), 0, np.clip(np.ceil(crossing) - col0, 0, col1 - col0))
            np.add.at(toggles, (rows - row0, columns.astype(np.int64)), 1)  # a pixel c < crossing toggles
            edge = last
    inside = np.bitwise_xor.accumulate(toggles[:, ::-1] & 1, axis=1)[:, ::-1]
    return row0, col0, inside[:, 1:].astype(bool)


def stroke_window(stroke: Stroke, shape: tuple[int, int]) -> Window | None:
    """The pixels a stroke covers in an image of ``shape`` (rows, cols), in a window around it (None: none);
    :func:`stroke_mask` says which."""
    if not stroke.points:
        return None
    centres = np.asarray(stroke.points, dtype=np.float64) - 0.5  # pixel-corner -> pixel-centre coordinates
    if stroke.width_px > 0:
        return _brush_window(centres, stroke.width_px / 2, shape[:2])
    return _polygon_window(centres, shape[:2]) if len(centres) >= 3 else None


def stroke_cover(stroke: Stroke, shape: tuple[int, int]) -> int:
    """Pixels of the box around ``stroke`` (its brush width included) within an image of ``shape``: the work
    of drawing it (:data:`MAX_CORRECTION_COVER`)."""
    if not stroke.points:
        return 0
    points = np.asarray(stroke.points, dtype=np.float64)
    reach = min(stroke.width_px / 2, float(np.hypot(*shape[:2]))) + 1
    low = np.clip(np.floor(points.min(axis=0) - reach), 0, [shape[1], shape[0]])
    high = np.clip(np.ceil(points.max(axis=0) + reach), 0, [shape[1], shape[0]])
    return int(np.prod(np.maximum(high - low, 0)))


def drawing_refusal(strokes: Sequence[Stroke], shape: tuple[int, int], drawn_before: int = 0) -> str | None:
    """Why a drawing of ``strokes`` on an image of ``shape`` is not taken (None: it is): more than
    :data:`MAX_DRAWING_STROKES` strokes, a polygon of more than :data:`MAX_POLYGON_CORNERS` corners, more than
    :data:`MAX_DRAWING_POINTS` points, or strokes that with those of the image's edits before (``drawn_before``,
    :func:`stroke_cover`) cover it more than :data:`MAX_CORRECTION_COVER` times. The drawing comes from the
    browser."""
    if len(strokes) > MAX_DRAWING_STROKES:
        return f"The drawing has more than {MAX_DRAWING_STROKES} strokes: draw it in parts."
    if any(not stroke.width_px and len(stroke.points) > MAX_POLYGON_CORNERS for stroke in strokes):
        return f"The drawing has a polygon of more than {MAX_POLYGON_CORNERS} corners: draw it with fewer."
    if sum(len(stroke.points) for stroke in strokes) > MAX_DRAWING_POINTS:
        return f"The drawing has more than {MAX_DRAWING_POINTS} points: draw it in parts."
    pixels = shape[0] * shape[1]
    if drawn_before + sum(stroke_cover(stroke, shape) for stroke in strokes) > MAX_CORRECTION_COVER * pixels:
        return (f"With this drawing, the hand edits of the image would cover it more than {MAX_CORRECTION_COVER} "
                "times over (the boxes around their strokes): undo or reset some first.")
    return None


def stroke_mask(stroke: Stroke, shape: tuple[int, int]) -> np.ndarray:
    """The pixels a stroke covers in an image of ``shape`` (rows, cols), ``(H, W)`` bool.

    A polygon (3 points or more) covers the pixels whose centre lies inside it; a brush line covers
    the pixels within ``width_px / 2`` of the line. Points outside the image are clipped by drawing.
    """
    mask = np.zeros(shape[:2], dtype=bool)
    window = stroke_window(stroke, shape[:2])
    if window is not None:
        row, col, covered = window
        mask[row:row + covered.shape[0], col:col + covered.shape[1]] = covered
    return mask


def apply_edit(lesion: np.ndarray, edit: Edit, fill_holes: bool = False) -> np.ndarray:
    """The lesion with the edit's strokes added or removed (a new ``(H, W)`` bool array). ``fill_holes``: an
    added region's holes and the gaps it closes against the lesion are filled (as the cleanup's "fill holes"
    does); a removal is kept as drawn, holes included."""
    region = np.zeros(lesion.shape[:2], dtype=bool)
    for stroke in edit.strokes:  # each in its own window: a dot costs a dot, not the picture
        window = stroke_window(stroke, lesion.shape[:2])
        if window is not None:
            row, col, covered = window
            region[row:row + covered.shape[0], col:col + covered.shape[1]] |= covered
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
    #: The last :meth:`apply`'s lesion digest and ``fill_holes``, with its edits and result and those before the
    #: last of them (an undo).
    _applied: tuple[bytes, bool, list[tuple[tuple[Edit, ...], np.ndarray]]] | None = field(  # (edits, bits)
        default=None, init=False, repr=False, compare=False)

    @property
    def any(self) -> bool:
        return bool(self.edits)

    def push(self, strokes: Sequence[Stroke], add: bool, shape: tuple[int, int]) -> bool:
        """Record a drawing on an image of ``shape`` (rows, cols); returns False (nothing recorded) when it has no
        stroke. ValueError (nothing recorded) for a drawing beyond the limits (:func:`drawing_refusal`)."""
        strokes = tuple(s for s in strokes if s.points)
        if not strokes:
            return False
        refusal = self.refusal(strokes, shape)
        if refusal:
            raise ValueError(refusal)
        self.edits.append(Edit(strokes, add))
        return True

    def refusal(self, strokes: Sequence[Stroke], shape: tuple[int, int]) -> str | None:
        """Why a drawing of ``strokes`` on the image (``shape``) is not recorded on top of these edits
        (:func:`drawing_refusal`); None when it would be."""
        if len(self.edits) >= MAX_EDITS:
            return f"This image has {MAX_EDITS} hand edits, the most it keeps: undo or reset some first."
        before = sum(stroke_cover(stroke, shape) for edit in self.edits for stroke in edit.strokes)
        return drawing_refusal(strokes, shape, before)

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
        """The corrected lesion (``fill_holes``: each added region's holes filled, :func:`apply_edit`). Every run
        that shows the image asks for it: the last result is kept, and only the edits recorded since are replayed
        on it for the same lesion and ``fill_holes``, and the result before the last edit is kept for an undo
        (all of them are replayed after a second undo, or for another lesion). Both are kept as packed bits: a
        bit a pixel, beside the 29 bytes the analysis holds (:mod:`moleseg.app.heldmemory`)."""
        base = np.asarray(lesion, dtype=bool)
        packed = np.packbits(base)
        digest = hashlib.blake2b(packed.tobytes() + repr(base.shape).encode(), digest_size=16).digest()
        edits = tuple(self.edits)
        kept = self._applied[2] if self._applied is not None and self._applied[:2] == (digest, fill_holes) else []
        prefixes = [(done, bits) for done, bits in kept
                    if len(done) <= len(edits) and all(old is new for old, new in zip(done, edits))]
        done, bits = max(prefixes, key=lambda pair: len(pair[0]), default=((), packed))
        before_last = next(((d, b) for d, b in prefixes if len(d) < len(done)), None)
        result = np.unpackbits(bits, count=base.size).reshape(base.shape).view(bool)
        for index in range(len(done), len(edits)):
            before_last = (edits[:index], bits)
            result = apply_edit(result, edits[index], fill_holes)
            bits = np.packbits(result)
        self._applied = (digest, fill_holes, [(edits, bits)] + ([before_last] if before_last else []))
        return result
