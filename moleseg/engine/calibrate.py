"""How a trained model decides, chosen by validation FM: flip test-time augmentation on or off, and the
lesion probability threshold instead of the arg-max.

Each validation image is predicted once per augmentation setting; every threshold is then applied to the
same probabilities and cleaned through the app's own path (:func:`moleseg.engine.segmenter.clean`), so the
chosen decision is the one the app will make. A setting replaces plain arg-max only when it gains at
least ``min_gain`` mean FM (a few validation images should not pick noise). No TensorFlow here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from moleseg.engine.evaluate import read_pair
from moleseg.core.metrics import scores
from moleseg.core.pairing import Pair
from moleseg.engine.segmenter import Segmenter, clean

#: Lesion probability thresholds tried (``None`` is the plain arg-max).
DEFAULT_THRESHOLDS: tuple[float | None, ...] = (None, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)
#: Mean FM a setting must gain over plain arg-max without augmentation to be chosen.
DEFAULT_MIN_GAIN = 0.002
#: Images predicted at a time while calibrating (progress is told after each batch).
CALIBRATION_BATCH = 8


@dataclass
class Calibration:
    """The chosen decision and what every candidate scored.

    Attributes
    ----------
    test_time_augmentation : bool
        Average the image with its flips (3x the network time).
    lesion_threshold : float or None
        A pixel is lesion when ``1 - P(BACK) >= lesion_threshold`` (0..1); None: arg-max.
    fm : float
        Mean validation FM of the chosen decision, 0..1.
    baseline_fm : float
        Mean validation FM of arg-max without augmentation, 0..1.
    n_images : int
    table : list of dict
        ``{"test_time_augmentation", "lesion_threshold", "fm"}`` for every candidate.
    """

    test_time_augmentation: bool
    lesion_threshold: float | None
    fm: float
    baseline_fm: float
    n_images: int
    table: list[dict[str, Any]] = field(default_factory=list)

    def info_update(self) -> dict[str, Any]:
        """The entries of a model's ``moleseg.json`` that carry this decision."""
        return {
            "test_time_augmentation": self.test_time_augmentation,
            "lesion_threshold": self.lesion_threshold,
            "calibration": {"fm": self.fm, "baseline_fm": self.baseline_fm, "n_images": self.n_images,
                            "table": self.table},
        }

    def summary(self) -> str:
        threshold = "arg-max" if self.lesion_threshold is None else f"threshold {self.lesion_threshold:.2f}"
        flips = "with flips" if self.test_time_augmentation else "no flips"
        return (f"decision: {threshold}, {flips}: validation FM {self.fm:.4f} "
                f"(arg-max, no flips {self.baseline_fm:.4f}, {self.n_images} images)")


def _mean_fm(segmenter: Segmenter, probabilities: Sequence[np.ndarray], masks: Sequence[np.ndarray],
             threshold: float | None) -> float:
    values = []
    for probability, mask in zip(probabilities, masks):
        lesion = clean(segmenter, probability, lesion_threshold=threshold).lesion
        values.append(float(scores(lesion, mask)["fm"]))
    return float(np.mean(values))


def calibrate(segmenter: Segmenter, pairs: Sequence[Pair], *,
              thresholds: Sequence[float | None] = DEFAULT_THRESHOLDS, try_flips: bool = True,
              min_gain: float = DEFAULT_MIN_GAIN, progress: Callable[[str], None] | None = None,
              step: Callable[[int, int], None] | None = None) -> Calibration:
    """Choose flips and lesion threshold by mean FM over ``pairs`` (images the model did not train on).

    ``progress(message)`` is told what is predicted; ``step(done, total)`` counts image passes (each
    image predicted once per flip setting, then cleaned once per threshold), after every batch of
    :data:`CALIBRATION_BATCH` images; an exception it raises (cancel) stops the calibration.

    ``segmenter`` must have a ``test_time_augmentation`` attribute when ``try_flips`` (Keras models);
    it is left as it was found.

    Raises
    ------
    ValueError
        With no pairs.
    """
    if not pairs:
        raise ValueError("calibration needs at least one validation image")
    read = [read_pair(pair) for pair in pairs]
    images, masks = [image for image, _ in read], [mask for _, mask in read]
    can_flip = hasattr(segmenter, "test_time_augmentation")
    original = getattr(segmenter, "test_time_augmentation", False)
    table: list[dict[str, Any]] = []
    settings = [False, True] if try_flips and can_flip else [False]
    total = len(settings) * len(images) * (1 + len(thresholds))
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if step is not None:
            step(done, total)

    try:
        for flips in settings:
            if can_flip:
                segmenter.test_time_augmentation = flips
            if progress:
                progress(f"calibration: predicting {len(images)} images ({'with' if flips else 'without'} flips)")
            probabilities: list[np.ndarray] = []
            for start in range(0, len(images), CALIBRATION_BATCH):
                probabilities.extend(segmenter.predict_probabilities(images[start:start + CALIBRATION_BATCH]))
                advance(len(images[start:start + CALIBRATION_BATCH]))
            for threshold in thresholds:
                table.append({"test_time_augmentation": flips, "lesion_threshold": threshold,
                              "fm": _mean_fm(segmenter, probabilities, masks, threshold)})
                advance(len(images))
    finally:
        if can_flip:
            segmenter.test_time_augmentation = original
    baseline = next(row for row in table if not row["test_time_augmentation"] and row["lesion_threshold"] is None)
    best = max(table, key=lambda row: row["fm"])
    if best["fm"] - baseline["fm"] < min_gain:
        best = baseline
    return Calibration(test_time_augmentation=best["test_time_augmentation"],
                       lesion_threshold=best["lesion_threshold"], fm=best["fm"], baseline_fm=baseline["fm"],
                       n_images=len(pairs), table=table)


def calibrated_info(info: dict[str, Any], calibration: Calibration) -> dict[str, Any]:
    """A copy of a model's ``moleseg.json`` with the calibration's decision in it."""
    return {**info, **calibration.info_update()}
