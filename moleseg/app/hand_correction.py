"""Correcting a lesion by hand on the Analyse page: the drawing canvas's background and strokes, the
corrections applied to the analyses, and saving the corrected (or accepted) lesion into the user's
dataset. The corrections live in each browser session's state (per session); nothing here is cached.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from moleseg.app.analysis import ImageOutcome
from moleseg.core.dataset import SavedPair, save_pair
from moleseg.engine.correction import MAX_DRAWING_POINTS, Corrections, Stroke
from moleseg.engine.pipeline import Analysis

def correction_key(model_key: str, upload_key: str) -> str:
    """Key of one image's hand corrections: they belong to the model's result they were drawn on."""
    return f"{model_key}|{upload_key}"


def with_corrections(outcomes: Sequence[ImageOutcome], corrections: Mapping[str, Corrections], model_key: str
                     ) -> list[ImageOutcome]:
    """The outcomes with each image's hand corrections applied (:meth:`Analysis.corrected`)."""
    result = []
    for outcome in outcomes:
        edits = corrections.get(correction_key(model_key, outcome.key))
        if outcome.analysis is not None and edits is not None and edits.any:
            outcome = dataclasses.replace(outcome, analysis=outcome.analysis.corrected(edits))
        result.append(outcome)
    return result


def _number(value: Any) -> float:
    """A finite number of a drawing; ValueError for anything else (the browser sends the drawing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    return float(value)


def _path_points(path: Sequence[Sequence[Any]]) -> list[tuple[float, float]]:
    points = []
    for command in path:
        numbers = [_number(value) for value in command[1:] if not isinstance(value, str)]
        points.extend(zip(numbers[0::2], numbers[1::2]))
    return points


def brush_width_limit(image_width: int) -> int:
    """The widest brush, in px of an image ``image_width`` px wide: the brush slider's end, and the most a drawing's
    stroke width (the browser's) is taken as."""
    return max(2, image_width // 10)


def _stroke(item: Mapping[str, Any], scale: float, widest_px: float, budget: int) -> Stroke | None:
    """The stroke of one canvas object (at most its first ``budget`` points or path commands), None for a kind that
    draws none; ValueError, TypeError or KeyError for one that is not as the canvas writes it."""
    kind = str(item.get("type", "")).lower()
    if kind in ("polygon", "polyline") and item.get("points"):
        points = [(_number(p["x"]), _number(p["y"])) for p in item["points"][:budget]]
        return Stroke.of(np.array(points) * scale)
    if kind == "path" and item.get("path"):
        if isinstance(item["path"], str):
            raise TypeError("a path is a list of commands")
        points = _path_points(item["path"][:budget])
        width = min(_number(item.get("strokeWidth", 1)) * scale, widest_px)
        return Stroke.of(np.array(points) * scale, width) if points else None
    if kind == "rect":
        left, top = _number(item.get("left", 0)), _number(item.get("top", 0))
        width = _number(item.get("width", 0)) * _number(item.get("scaleX", 1))
        height = _number(item.get("height", 0)) * _number(item.get("scaleY", 1))
        corners = [(left, top), (left + width, top), (left + width, top + height), (left, top + height)]
        return Stroke.of(np.array(corners) * scale)
    return None


def canvas_strokes(json_data: Mapping[str, Any] | None, scale: float, widest_px: float) -> list[Stroke]:
    """The strokes drawn on a ``streamlit-drawable-canvas`` (its ``json_data``), in image px.

    ``scale``: image px per canvas px. Polygons (``points``) become filled polygons; free drawings
    (``path``) become brush lines of their stroke width, at most ``widest_px`` (:func:`brush_width_limit`);
    rectangles become polygons. Other objects are ignored, and so is anything the canvas does not write (the
    browser sends it: wrong kinds, numbers that are not finite). Reading stops once the strokes have more than
    :data:`moleseg.engine.correction.MAX_DRAWING_POINTS` points: such a drawing is refused whole
    (:meth:`Corrections.refusal`).
    """
    objects = json_data.get("objects", []) if isinstance(json_data, Mapping) else []
    strokes: list[Stroke] = []
    budget = MAX_DRAWING_POINTS + 1
    for item in objects if isinstance(objects, list) else []:
        if budget <= 0:
            break
        try:
            stroke = _stroke(item, scale, widest_px, budget) if isinstance(item, Mapping) else None
        except (TypeError, ValueError, KeyError):
            continue
        if stroke is not None:
            strokes.append(stroke)
            budget -= len(stroke.points)
    return strokes


def save_to_dataset(outcome: ImageOutcome, folder: str | Path, model_name: str, model_key: str = ""
                    ) -> SavedPair:
    """Save the image in view and its lesion (corrected or as the model drew it) into the user's dataset
    (:func:`moleseg.core.dataset.save_pair`), with the model, the cleanup and whether it was corrected.
    An image already there (same pixels) keeps its entry, whose mask is replaced (``replaced``)."""
    analysis = outcome.analysis
    if analysis is None:
        raise ValueError(f"{outcome.name}: nothing to save (not analysed)")
    segmentation = analysis.segmentation
    provenance = {"source": outcome.name, "model": model_name, "model_key": model_key,
                  "status": "corrected by hand" if analysis.corrected_by_hand else "accepted as is",
                  "corrected_by_hand": analysis.corrected_by_hand,
                  "cleanup": segmentation.settings.to_dict(), "lesion_threshold": segmentation.lesion_threshold}
    return save_pair(folder, outcome.stem or Path(outcome.name).stem, analysis.image, segmentation.lesion,
                     provenance)


def dataset_save_message(name: str, saved: SavedPair, folder: str | Path) -> str:
    """What the page says after :func:`save_to_dataset` saved the image ``name`` as ``saved``
    (:class:`moleseg.core.dataset.SavedPair`) in ``folder``: a new pair, or the mask of the same image
    already in the dataset replaced (with the entry's file name when it differs from ``name``)."""
    if saved.replaced:
        entry = "" if saved.image.name == name else f" (as {saved.image.name})"
        return f"{name} was already in your dataset{entry}: its mask was replaced in {folder}."
    return f"Saved {saved.image.name} and its mask in {folder}."


#: Widest drawing canvas, in screen px; larger images are shown scaled down and strokes scaled back up.
CANVAS_MAX_WIDTH: int = 640
#: Canvas width, in screen px, while the browser has not yet said how wide the page is (a phone's width).
CANVAS_FIRST_WIDTH: int = 320


def canvas_size(image_shape: tuple[int, ...], available_px: int | None,
                max_px: int = CANVAS_MAX_WIDTH) -> tuple[int, int, float]:
    """``(width, height, scale)`` of the drawing canvas of an image of ``image_shape`` (``(H, W, ...)``), in
    screen px: as wide as the image, ``max_px`` and the width the browser gives it (``available_px``;
    :data:`CANVAS_FIRST_WIDTH` while unknown) allow, the height keeping the image's aspect; ``scale`` is image
    px per canvas px (>= 1)."""
    height, width = image_shape[:2]
    room = available_px if available_px and available_px > 0 else CANVAS_FIRST_WIDTH
    canvas_width = max(1, min(max_px, width, int(room)))
    scale = width / canvas_width
    return canvas_width, max(1, round(height / scale)), scale


def canvas_background(analysis: Analysis, width: int, height: int) -> bytes:
    """The overlay resized to the drawing canvas (``width`` x ``height`` screen px, area averaging) as JPEG
    bytes: the canvas sends its background to the browser as a data URL on every rerun, and a JPEG of a
    picture is encoded faster and is smaller than the PNG it would make (``docs/performance.md``)."""
    import cv2

    from moleseg.core.imagewrite import encode_jpeg

    picture = analysis.overlay
    if picture.shape[:2] != (height, width):
        picture = cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA)
    return encode_jpeg(picture)
