"""Segmenters: anything that turns RGB images into per-pixel class probabilities, and the one path
from probabilities to a cleaned lesion (used by the app, the CLI, validation and evaluation alike).

A segmenter is either the classical baseline (``"classical"``, no TensorFlow) or a moleseg ``.keras``
model (TensorFlow is imported only when such a model is loaded).
"""

from __future__ import annotations

import dataclasses
import functools
import weakref
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from moleseg.core.cached import cached_value
from moleseg.core.cleanup import CleanupResult, CleanupSettings, cleanup
from moleseg.core.config import CLEANUP_MAX_SIDE_PX, UNDECIDED_PROBABILITY_RANGE
from moleseg.core.modelinfo import ModelInfo
from moleseg.core.resize import resize_mask_to, resize_probabilities
from moleseg.core.targets import bounding_box


class Segmenter(Protocol):
    """What every segmenter offers."""

    name: str
    n_classes: int
    class_names: tuple[str, ...]
    cleanup_defaults: CleanupSettings
    info: dict[str, Any]

    def predict_probabilities(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``(H, W, C)`` float32 probabilities (summing to 1 per pixel) at each image's own size."""
        ...


@dataclass
class Segmentation:
    """One image's prediction after cleanup.

    Attributes
    ----------
    labels : (H, W) uint8
        Class per pixel (0/1/2 or 0/1): arg-max, or the model's lesion threshold.
    probabilities : (H, W, C) float32
    lesion, border, inside : (H, W) bool
        The cleaned lesion, its border band (within the lesion) and the lesion minus its border.
    settings : CleanupSettings
        The cleanup that produced them, in px of this image.
    lesion_threshold : float or None
        The lesion probability threshold that made ``labels`` (0..1), None for the arg-max.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    lesion: np.ndarray
    border: np.ndarray
    inside: np.ndarray
    settings: CleanupSettings
    lesion_threshold: float | None = None

    @cached_value
    def confidence(self) -> float:
        """How sure the model is of this border, 0..1 (:func:`border_confidence` over the pixels it finds more
        likely lesion than background): from the probabilities only, so no cleanup setting (border width,
        closing, ...) and no lesion threshold changes it."""
        return _confidence(*_counted(self.probabilities, UNDECIDED_PROBABILITY_RANGE, likelier=True))

    @cached_value
    def lesion_box(self) -> tuple[int, int, int, int] | None:
        """The lesion's bounding box ``(row0, row1, col0, col1)``, half-open, in px of the image (None when no
        lesion was found), found once: it holds the border band too, so every measurement and picture of the
        lesion works on it."""
        return bounding_box(self.lesion)


def border_confidence(probabilities: np.ndarray, lesion: np.ndarray,
                      undecided: tuple[float, float] = UNDECIDED_PROBABILITY_RANGE) -> float:
    """How sure the model is of one image's border, 0..1 (1: every pixel decided).

    ``1 - U / A``, clipped at 0, where ``U`` counts the pixels whose lesion probability ``1 - P(BACK)``
    lies strictly inside ``undecided`` (the model hesitates there: they lie along an unsure border) and
    ``A`` is the area of the cleaned ``lesion`` (all objects in cells mode). ``U / A`` is about the share
    of the area the border could still move over, so a low confidence goes with a low FM: on the shipped
    models' validation images it ranked FM best among the measures tried (Spearman -0.59 for dermoscopy,
    -0.90 for cells, against -0.03 / -0.19 for the mean entropy along the border band and -0.52 / -0.77
    for the disagreement with the prediction of the mirrored image; see ``models/*.md``), and it needs no
    extra network call. An empty lesion has confidence 0.

    Parameters
    ----------
    probabilities : (H, W, C) float
        Class probabilities, class 0 the background.
    lesion : (H, W) bool
        The cleaned lesion of the same image.
    """
    return _confidence(_counted(probabilities, undecided, likelier=False)[0], int(np.count_nonzero(lesion)))


def _confidence(undecided_px: int, area_px: int) -> float:
    return 0.0 if area_px == 0 else max(0.0, 1.0 - undecided_px / area_px)


def _counted(probabilities: np.ndarray, undecided: tuple[float, float], *, likelier: bool) -> tuple[int, int]:
    """The pixels whose lesion probability ``1 - P(BACK)`` lies strictly inside ``undecided`` and, when
    ``likelier``, those with ``P(BACK) < 0.5`` (else 0), counted :data:`LABEL_BAND_ROWS` rows at a time (each
    band's arrays stay in cache)."""
    low, high = undecided
    undecided_px = likelier_px = 0
    for start in range(0, probabilities.shape[0], LABEL_BAND_ROWS):
        background = probabilities[start:start + LABEL_BAND_ROWS, ..., 0]
        lesion_probability = 1.0 - background
        undecided_px += int(np.count_nonzero((lesion_probability > low) & (lesion_probability < high)))
        if likelier:
            likelier_px += int(np.count_nonzero(background < 0.5))
    return undecided_px, likelier_px


#: Each segmenter's parsed record and the ``info`` dictionary it was parsed from, kept while the segmenter lives.
_RECORDS: weakref.WeakKeyDictionary[Any, tuple[dict[str, Any], ModelInfo]] = weakref.WeakKeyDictionary()


def model_record(segmenter: Segmenter) -> ModelInfo:
    """``segmenter.info`` as a :class:`ModelInfo`, parsed once per ``info`` dictionary the segmenter holds rather
    than once per image (a new dictionary is parsed again; a segmenter that cannot be a weak dictionary's key has
    it parsed every time)."""
    info = segmenter.info
    try:
        kept = _RECORDS.get(segmenter)
    except TypeError:  # not weakly referable, or not hashable
        return ModelInfo.from_dict(info)
    if kept is not None and kept[0] is info:
        return kept[1]
    record = ModelInfo.from_dict(info)
    _RECORDS[segmenter] = (info, record)
    return record


def cleanup_scale(segmenter: Segmenter, image_shape: tuple[int, ...]) -> float:
    """Factor from the px the segmenter's cleanup defaults were set in to px of an image of ``image_shape``.

    A resizing model's defaults are in px of its input: the image's longer side over the input size (a
    765 x 574 image seen by a 256 px network: about 3). A tiled model sees the image at its own size times
    ``tile_scale`` and its probabilities come back at the image's size: 1 / ``tile_scale``. 1 when the
    record says neither (the classical segmenters: px of any image).
    """
    info = model_record(segmenter)
    if info.inference == "tiles":
        return 1.0 / info.tile_scale
    if not info.input_size:
        return 1.0
    return max(image_shape[0], image_shape[1]) / info.input_size


def cleanup_for_image(segmenter: Segmenter, image_shape: tuple[int, ...],
                      settings: CleanupSettings | None = None) -> CleanupSettings:
    """Cleanup settings for an image of ``image_shape``.

    ``settings`` given by the user are used as they are (px of this image). Without them, the
    segmenter's defaults scaled by :func:`cleanup_scale`, at least 1 px.
    """
    if settings is not None:
        return settings
    factor = cleanup_scale(segmenter, image_shape)
    if factor == 1.0:
        return segmenter.cleanup_defaults
    return scale_settings(segmenter.cleanup_defaults, factor)


#: Rows of probabilities made into labels at a time: a band's temporaries (a few tens of kB at PH2 width) stay in
#: the core's cache instead of each pass over the image's probabilities going out to memory.
LABEL_BAND_ROWS: int = 32


def labels_from_probabilities(probabilities: np.ndarray, lesion_threshold: float | None = None) -> np.ndarray:
    """Class per pixel, ``(H, W)`` uint8, from ``(H, W, C)`` probabilities.

    Without ``lesion_threshold``: the arg-max. With it (0..1): a pixel is lesion when its lesion
    probability ``1 - P(BACK)`` reaches the threshold, and then takes the likelier of the lesion
    classes (BORDER or INSIDE; foreground with two classes); otherwise it is BACK. Made
    :data:`LABEL_BAND_ROWS` rows at a time (each pixel's label depends on its own probabilities only).
    """
    if lesion_threshold is not None and not 0.0 <= float(lesion_threshold) <= 1.0:
        raise ValueError(f"lesion threshold must be in 0..1, not {lesion_threshold}")
    labels = np.empty(probabilities.shape[:-1], dtype=np.uint8)
    for start in range(0, labels.shape[0], LABEL_BAND_ROWS):
        rows = slice(start, start + LABEL_BAND_ROWS)
        if lesion_threshold is None:
            class_argmax(probabilities[rows], 0, out=labels[rows])
        else:
            _threshold_labels(probabilities[rows], float(lesion_threshold), labels[rows])
    return labels


def _threshold_labels(probabilities: np.ndarray, lesion_threshold: float, out: np.ndarray) -> None:
    """:func:`labels_from_probabilities` at ``lesion_threshold`` (0..1) written into ``out``."""
    background = probabilities[..., 0]
    if background.dtype.kind == "f" and background.dtype.itemsize in (2, 4, 8):  # IEEE half, single, double
        lesion = background <= background_cutoff(background.dtype, lesion_threshold)
    else:
        lesion = (1.0 - background) >= lesion_threshold
    if probabilities.shape[-1] == 3:  # BORDER (1) unless INSIDE (2) is likelier, as class_argmax decides
        inside = np.greater(probabilities[..., 2], probabilities[..., 1])
        np.logical_and(inside, lesion, out=inside)
        np.add(lesion.view(np.uint8), inside.view(np.uint8), out=out)
    else:
        np.multiply(class_argmax(probabilities, 1, out=out), lesion.view(np.uint8), out=out)


@functools.lru_cache(maxsize=64)
def background_cutoff(dtype: np.dtype, lesion_threshold: float) -> np.floating:
    """The largest value ``b`` of the float ``dtype`` whose lesion probability ``1 - b``, computed in ``dtype``,
    reaches ``lesion_threshold`` (0..1): ``background <= b`` then equals ``(1 - background) >= lesion_threshold``
    for every value, NaN included (rounding keeps ``1 - b`` monotonic in ``b``), in one comparison instead of a
    subtraction and a comparison. Found by bisection over the values of ``dtype`` (IEEE float16, float32 or
    float64, either byte order) in their order."""
    dtype = np.dtype(dtype).newbyteorder("=")  # the bits below are read in this machine's byte order
    signed = np.dtype(f"i{dtype.itemsize}")

    def value(rank: int) -> np.ndarray:  # the float of rank ``rank`` (0 for zero, negative below it)
        bits = rank if rank >= 0 else np.iinfo(signed).min | -rank
        return np.array([bits], dtype=signed).view(dtype)

    def reaches(rank: int) -> bool:
        return bool(((1.0 - value(rank)) >= lesion_threshold)[0])

    infinity = int(np.array([np.inf], dtype=dtype).view(signed)[0])
    low, high = -infinity, infinity  # reaches(-inf) holds, reaches(+inf) does not
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if reaches(middle) else (low, middle)
    return value(low)[0]


def class_argmax(probabilities: np.ndarray, first: int, out: np.ndarray | None = None) -> np.ndarray:
    """``first + argmax(probabilities[..., first:], axis=-1)`` as ``(H, W)`` uint8 (the first class on a tie),
    one comparison per class: faster than ``np.argmax`` over the strided last axis (``docs/performance.md``);
    written into ``out`` (uint8 of that shape) when given."""
    labels = np.empty(probabilities.shape[:-1], dtype=np.uint8) if out is None else out
    labels.fill(first)
    best = probabilities[..., first]
    last = probabilities.shape[-1] - 1
    for index in range(first + 1, last + 1):
        candidate = probabilities[..., index]
        np.copyto(labels, np.uint8(index), where=candidate > best)
        if index < last:  # the last class's maximum is never compared again
            best = np.maximum(best, candidate)
    return labels


def model_threshold(segmenter: Segmenter) -> float | None:
    """The lesion threshold a model was calibrated with (``moleseg.json``), or None for arg-max."""
    value = model_record(segmenter).lesion_threshold
    return None if value is None else float(value)


def scale_settings(settings: CleanupSettings, factor: float) -> CleanupSettings:
    """The same cleanup for an image resized by ``factor`` (radii scaled, at least 1 px when non-zero)."""
    def scaled(radius_px: int) -> int:
        return max(1, round(radius_px * factor)) if radius_px else 0

    return dataclasses.replace(settings, closing_radius_px=scaled(settings.closing_radius_px),
                               border_width_px=scaled(settings.border_width_px))


#: Passed as ``lesion_threshold``: use the model's calibrated threshold (``moleseg.json``).
MODEL_THRESHOLD: Any = "model"


def clean(segmenter: Segmenter, probabilities: np.ndarray, settings: CleanupSettings | None = None, *,
          lesion_threshold: Any = MODEL_THRESHOLD) -> Segmentation:
    """Labels and cleaned lesion from probabilities already predicted (re-run this when a slider moves).

    ``settings`` are in px of the image. ``lesion_threshold`` (0..1, None for arg-max) defaults to the
    model's calibrated one (see :mod:`moleseg.engine.calibrate`). Images whose longer side exceeds
    :data:`moleseg.core.config.CLEANUP_MAX_SIDE_PX` are cleaned at that working size (radii scaled alike)
    and the lesion is resized back, so a 12-megapixel photo cleans as fast as a 1-megapixel one.
    """
    threshold = model_threshold(segmenter) if lesion_threshold == MODEL_THRESHOLD else lesion_threshold
    labels = labels_from_probabilities(probabilities, threshold)
    height, width = labels.shape
    chosen = cleanup_for_image(segmenter, labels.shape, settings)
    factor = min(1.0, CLEANUP_MAX_SIDE_PX / max(height, width))
    if factor < 1.0:
        small_h, small_w = max(1, round(height * factor)), max(1, round(width * factor))
        small_labels = labels_from_probabilities(resize_probabilities(probabilities, small_h, small_w), threshold)
        small = cleanup(small_labels, segmenter.n_classes, scale_settings(chosen, factor))
        lesion = resize_mask_to(small.lesion, height, width)
        border = resize_mask_to(small.border, height, width) & lesion
        result = CleanupResult(lesion=lesion, border=border, inside=lesion & ~border)
    else:
        result = cleanup(labels, segmenter.n_classes, chosen)
    return Segmentation(labels=labels, probabilities=probabilities, lesion=result.lesion, border=result.border,
                        inside=result.inside, settings=chosen, lesion_threshold=threshold)


def segment(segmenter: Segmenter, image: np.ndarray, settings: CleanupSettings | None = None, *,
            lesion_threshold: Any = MODEL_THRESHOLD) -> Segmentation:
    """Predict and clean one RGB uint8 image."""
    return clean(segmenter, segmenter.predict_probabilities([image])[0], settings, lesion_threshold=lesion_threshold)


def segment_many(segmenter: Segmenter, images: Sequence[np.ndarray], settings: CleanupSettings | None = None, *,
                 lesion_threshold: Any = MODEL_THRESHOLD) -> list[Segmentation]:
    """Predict a batch of images through the network at once, then clean each."""
    return [clean(segmenter, probabilities, settings, lesion_threshold=lesion_threshold)
            for probabilities in segmenter.predict_probabilities(images)]
