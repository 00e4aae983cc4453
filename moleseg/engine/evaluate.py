"""Evaluate a segmenter (or masks from any tool) against true lesion masks: the article's CM, CR, FM
per image and over the set, plus Jaccard, HD95 and, for three-class models, the border band's FM.

No TensorFlow here: a Keras segmenter brings it along when it is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from moleseg.core.cleanup import CleanupSettings
from moleseg.core.config import BORDER, INFERENCE_BATCH_SIZE
from moleseg.core.resize import resize_mask_to
from moleseg.core.imageio import ImageReadError, mask_problem, read_image, read_mask
from moleseg.core.metrics import scores, summarise
from moleseg.core.pairing import Pair
from moleseg.engine.pipeline import check_image_side
from moleseg.engine.segmenter import Segmentation, Segmenter, segment_many
from moleseg.core.targets import make_targets

#: Keys of a per-image row, in the order of the CSV columns.
ROW_KEYS: tuple[str, ...] = ("image", "fm", "cm", "cr", "jaccard", "hd95", "tp", "fp", "fn")

#: Scores summarised over the images (mean, std, min, max); NaN values (hd95 when skipped) are left out.
SUMMARY_KEYS: tuple[str, ...] = ("fm", "cm", "cr", "jaccard", "hd95")

Progress = Callable[[int, int, str], None]


def read_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """``(RGB uint8 image (H, W, 3), bool mask (H, W))`` of a pair, the mask resized to the image when
    their sizes differ (nearest-area rule).

    Raises
    ------
    moleseg.core.imageio.ImageReadError
        An unreadable image or mask.
    """
    image = read_image(pair.image)
    mask = read_mask(pair.mask, allow_empty=True)
    return image, resize_mask_to(mask, image.shape[0], image.shape[1])


@dataclass
class ImageResult:
    """One evaluated image."""

    image: str
    scores: dict
    border_fm: float | None = None
    segmentation: Segmentation | None = None


@dataclass
class EvaluationFailures:
    """Files that could not be evaluated (``items``), and true masks scored but suspicious (``warnings``:
    empty or full, see :func:`moleseg.core.imageio.mask_problem`), each ``(image name, message)``."""

    items: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    #: File names of the empty and of the full true masks.
    empty: list[str] = field(default_factory=list)
    full: list[str] = field(default_factory=list)

    @property
    def empty_masks(self) -> int:
        return len(self.empty)

    @property
    def full_masks(self) -> int:
        return len(self.full)

    def check_mask(self, image_name: str, mask_name: str, mask: np.ndarray) -> None:
        """Count and warn about ``mask`` (the true mask of ``image_name``) when it is empty or full."""
        problem = mask_problem(mask)
        if problem is None:
            return
        self.warnings.append((image_name, f"{mask_name}: {problem}"))
        (self.full if mask.any() else self.empty).append(mask_name)

    def count_masks(self, summary: dict) -> dict:
        """``summary`` with ``empty_masks`` and ``full_masks``: how many true masks were empty / full."""
        summary["empty_masks"] = self.empty_masks
        summary["full_masks"] = self.full_masks
        return summary


def true_border_band(mask: np.ndarray, border_width_px: int, shape: str) -> np.ndarray:
    """The BORDER band of a true mask, the same width as the predicted one."""
    return make_targets(mask, classes=3, border_width_px=border_width_px, shape=shape) == BORDER


def score_segmentation(segmentation: Segmentation, true_mask: np.ndarray, n_classes: int,
                       image_name: str, with_hd95: bool = True) -> ImageResult:
    """Scores of one cleaned prediction against a true mask of the same size."""
    values = scores(segmentation.lesion, true_mask)
    if not with_hd95:
        values["hd95"] = float("nan")
    border_fm = None
    if n_classes == 3 and segmentation.settings.border_width_px > 0:
        band = true_border_band(true_mask, segmentation.settings.border_width_px, segmentation.settings.shape)
        border_fm = float(scores(segmentation.border, band)["fm"])
    return ImageResult(image=image_name, scores=values, border_fm=border_fm, segmentation=segmentation)


def summarise_results(results: Sequence[ImageResult], n_classes: int) -> dict:
    """The evaluation JSON: ``n``, ``fm``/``cm``/``cr``/``jaccard``/``hd95`` summaries, ``per_image``,
    and ``border_fm`` for three-class models."""
    per_image = [{key: (r.image if key == "image" else r.scores[key]) for key in ROW_KEYS} for r in results]
    for row, result in zip(per_image, results):
        if result.border_fm is not None:
            row["border_fm"] = result.border_fm
    summary: dict = {"n": len(results)}
    for key in SUMMARY_KEYS:
        values = [float(r.scores[key]) for r in results if np.isfinite(r.scores[key])]
        if values:
            summary[key] = summarise(values)
    summary["per_image"] = per_image
    border = [r.border_fm for r in results if r.border_fm is not None]
    if n_classes == 3 and border:
        summary["border_fm"] = summarise(border)
    return summary


def evaluate_pairs(segmenter: Segmenter, pairs: Sequence[Pair], *, settings: CleanupSettings | None = None,
                   batch_size: int = INFERENCE_BATCH_SIZE, progress: Progress | None = None, keep_segmentations: bool = False,
                   with_hd95: bool = True) -> tuple[dict, list[ImageResult], EvaluationFailures]:
    """Predict every pair's image at its own resolution, clean it, and score it against its mask.

    A mask whose size differs from its image is resized to the image (nearest-area rule). Unreadable
    files and images too small to predict (a side under :data:`moleseg.core.config.MIN_IMAGE_SIDE_PX`, as
    ``moleseg predict`` refuses them) are reported in the failures and skipped; the others are still
    evaluated. Empty or full true masks are scored and listed in ``failures.warnings``; the summary counts
    them (``empty_masks``, ``full_masks``).

    Returns
    -------
    (summary JSON, per-image results, failures)

    Raises
    ------
    ValueError
        ``batch_size`` under 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, not {batch_size}")
    failures = EvaluationFailures()
    results: list[ImageResult] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        images, masks, names = [], [], []
        for pair in chunk:
            name = Path(pair.image).name
            try:
                image, mask = read_pair(pair)
                check_image_side(image)
            except ImageReadError as error:
                failures.items.append((name, str(error)))
                continue
            except ValueError as error:
                failures.items.append((name, f"{name}: {error}"))
                continue
            failures.check_mask(name, Path(pair.mask).name, mask)
            images.append(image)
            masks.append(mask)
            names.append(name)
        if images:
            for name, mask, segmentation in zip(names, masks, segment_many(segmenter, images, settings)):
                result = score_segmentation(segmentation, mask, segmenter.n_classes, name, with_hd95)
                if not keep_segmentations:
                    result.segmentation = None
                results.append(result)
        if progress:
            progress(min(start + batch_size, len(pairs)), len(pairs), Path(chunk[-1].image).name)
    return failures.count_masks(summarise_results(results, segmenter.n_classes)), results, failures


def score_pairs(pairs: Sequence[Pair], *, progress: Progress | None = None
                ) -> tuple[dict, list[ImageResult], EvaluationFailures]:
    """Score predicted masks (the pairs' "images") against true masks, with no model (``moleseg score``).

    Empty or full *true* masks are warned about as in :func:`evaluate_pairs` (an empty prediction is not).
    """
    failures = EvaluationFailures()
    results: list[ImageResult] = []
    for index, pair in enumerate(pairs, start=1):
        name = Path(pair.image).name
        try:
            predicted = read_mask(pair.image, allow_empty=True)
            true = read_mask(pair.mask, allow_empty=True)
        except ImageReadError as error:
            failures.items.append((name, str(error)))
            continue
        failures.check_mask(name, Path(pair.mask).name, true)
        true = resize_mask_to(true, predicted.shape[0], predicted.shape[1])
        results.append(ImageResult(image=name, scores=scores(predicted, true)))
        if progress:
            progress(index, len(pairs), name)
    return failures.count_masks(summarise_results(results, 2)), results, failures


def results_table(results: Sequence[ImageResult]) -> list[dict]:
    """Per-image rows for a CSV file or a table."""
    rows = []
    for result in results:
        row = {key: (result.image if key == "image" else result.scores[key]) for key in ROW_KEYS}
        if result.border_fm is not None:
            row["border_fm"] = result.border_fm
        rows.append(row)
    return rows
