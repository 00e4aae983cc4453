"""How a trained model decides, chosen by validation FM: flip test-time augmentation on or off, and the
lesion probability threshold instead of the arg-max; and below which border confidence an image is marked
"check this border" (:func:`calibrate_confidence`; from out-of-fold rows, :func:`share_rule`,
:func:`worst_fm_rule` and their leave-one-fold-out estimate :func:`cross_fitted_marks`).

Each validation image is predicted once per augmentation setting; every threshold is then applied to the
same probabilities and cleaned through the app's own path (:func:`moleseg.engine.segmenter.clean`), so the
chosen decision is the one the app will make. A setting replaces plain arg-max only when it gains at
least ``min_gain`` mean FM (a few validation images should not pick noise). No TensorFlow here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from moleseg.core.config import BAD_IMAGE_FM, BASELINE_MARGIN, DEFAULT_CHECK_SHARE, UNDECIDED_PROBABILITY_RANGE
from moleseg.engine.evaluate import read_pair
from moleseg.core.metrics import scores
from moleseg.core.pairing import Pair
from moleseg.engine.segmenter import Segmenter, clean, segment

#: Lesion probability thresholds tried (``None`` is the plain arg-max).
DEFAULT_THRESHOLDS: tuple[float | None, ...] = (None, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)
#: Mean FM a setting must gain over plain arg-max without augmentation to be chosen.
DEFAULT_MIN_GAIN = 0.002
#: Images predicted at a time while calibrating (progress is told after each batch).
CALIBRATION_BATCH = 8
#: The promise to users: an unmarked border scores at least this FM (0..1), with at most
#: :data:`PROMISED_MAX_SHARE` of the images marked "check this border".
PROMISED_WORST_FM: float = 0.90
PROMISED_MAX_SHARE: float = 0.15
#: The confidence threshold that marks every image "check this border": the smallest number above the
#: largest confidence a border can have (1.0), since an image is marked when its confidence is below the
#: threshold. A rule returns it when it would mark every image it was given.
MARK_EVERY_IMAGE: float = math.nextafter(1.0, math.inf)


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
    confidence: "ConfidenceCalibration | None" = None

    def info_update(self) -> dict[str, Any]:
        """The entries of a model's ``moleseg.json`` that carry this decision (and the confidence
        threshold, when it was calibrated too)."""
        values = {
            "test_time_augmentation": self.test_time_augmentation,
            "lesion_threshold": self.lesion_threshold,
            "calibration": {"fm": self.fm, "baseline_fm": self.baseline_fm, "n_images": self.n_images,
                            "table": self.table},
        }
        if self.confidence is not None:
            values.update(self.confidence.info_update())
        return values

    def summary(self) -> str:
        threshold = "arg-max" if self.lesion_threshold is None else f"threshold {self.lesion_threshold:.2f}"
        flips = "with flips" if self.test_time_augmentation else "no flips"
        text = (f"decision: {threshold}, {flips}: validation FM {self.fm:.4f} "
                f"(arg-max, no flips {self.baseline_fm:.4f}, {self.n_images} images)")
        return f"{text}; {self.confidence.summary()}" if self.confidence is not None else text


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


@dataclass
class ConfidenceCalibration:
    """The border confidence below which an image is marked "check this border", and what it catches.

    Attributes
    ----------
    threshold : float
        0..1: images whose :attr:`moleseg.engine.segmenter.Segmentation.confidence` is below it are marked.
    share : float
        Share of the calibration images marked (0..1; the asked share rounded up to whole images).
    n_images, n_bad, n_bad_caught : int
        Calibration images, those with FM below ``bad_fm``, and how many of these are marked.
    bad_fm : float
    n_worse_than_baseline : int or None
        Images whose FM is more than ``baseline_margin`` below the baseline segmenter's (None without one).
    per_image : list of dict
        ``{"image", "fm", "confidence", "check_border"}`` (and ``"baseline_fm"``), least confident first.
    """

    threshold: float
    share: float
    n_images: int
    n_bad: int
    n_bad_caught: int
    bad_fm: float = BAD_IMAGE_FM
    n_worse_than_baseline: int | None = None
    baseline_margin: float = BASELINE_MARGIN
    per_image: list[dict[str, Any]] = field(default_factory=list)

    def info_update(self) -> dict[str, Any]:
        """The entries of a model's ``moleseg.json`` that carry the confidence threshold."""
        return {"confidence_threshold": self.threshold,
                "confidence_calibration": {
                    "method": "undecided area", "undecided_probability_range": list(UNDECIDED_PROBABILITY_RANGE),
                    "share": self.share, "n_images": self.n_images, "bad_fm": self.bad_fm, "n_bad": self.n_bad,
                    "n_bad_caught": self.n_bad_caught, "n_worse_than_baseline": self.n_worse_than_baseline,
                    "baseline_margin": self.baseline_margin, "per_image": self.per_image}}

    def summary(self) -> str:
        return (f"confidence threshold {self.threshold:.3f}: marks {self.share:.0%} of {self.n_images} images, "
                f"{self.n_bad_caught} of the {self.n_bad} with FM < {self.bad_fm:.2f}")


def confidence_rows(segmenter: Segmenter, pairs: Sequence[Pair], *, baseline: Segmenter | None = None,
                    progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """``{"image", "fm", "confidence"}`` (and ``"baseline_fm"``) of each pair, as the app segments it
    (the model's own flips and lesion threshold)."""
    rows = []
    for index, pair in enumerate(pairs):
        if progress:
            progress(f"confidence: image {index + 1} of {len(pairs)}")
        image, mask = read_pair(pair)
        segmentation = segment(segmenter, image)
        row: dict[str, Any] = {"image": Path(pair.image).name, "fm": float(scores(segmentation.lesion, mask)["fm"]),
                               "confidence": segmentation.confidence}
        if baseline is not None:
            row["baseline_fm"] = float(scores(segment(baseline, image).lesion, mask)["fm"])
        rows.append(row)
    return rows


def flag_summary(rows: Sequence[dict[str, Any]], threshold: float, *, bad_fm: float = BAD_IMAGE_FM,
                 baseline_margin: float = BASELINE_MARGIN) -> ConfidenceCalibration:
    """What ``threshold`` marks among :func:`confidence_rows` (e.g. on a test set, after calibration)."""
    marked = [dict(row, check_border=row["confidence"] < threshold)
              for row in sorted(rows, key=lambda row: row["confidence"])]
    bad = [row for row in marked if row["fm"] < bad_fm]
    worse = (sum(row["baseline_fm"] - row["fm"] > baseline_margin for row in marked)
             if marked and all("baseline_fm" in row for row in marked) else None)
    return ConfidenceCalibration(threshold=threshold, share=sum(row["check_border"] for row in marked) / len(marked),
                                 n_images=len(marked), n_bad=len(bad),
                                 n_bad_caught=sum(row["check_border"] for row in bad), bad_fm=bad_fm,
                                 n_worse_than_baseline=worse, baseline_margin=baseline_margin, per_image=marked)


@dataclass(frozen=True)
class CoveragePoint:
    """What a user trusts when the ``n_flagged`` least confident of ``n_images`` images are marked "check
    this border": the FM (0..1) of the unmarked ones, their mean and their worst."""

    n_flagged: int
    n_images: int
    unflagged_mean_fm: float
    unflagged_worst_fm: float

    @property
    def flagged_share(self) -> float:
        """Share of the images marked, 0..1."""
        return self.n_flagged / self.n_images


def risk_coverage(fms: Sequence[float], confidences: Sequence[float]) -> list[CoveragePoint]:
    """The risk-coverage curve of the "check this border" mark: for every number of marked images, from none
    to all but one, the mean and worst FM of the images left unmarked when the least confident are marked.

    Parameters
    ----------
    fms, confidences : sequence of float
        Each image's FM against its true mask and its border confidence (both 0..1), images the model did not
        train on (out of fold or validation).

    Returns
    -------
    list of CoveragePoint
        ``len(fms)`` points, ``n_flagged`` = 0, 1, ..., ``len(fms) - 1``; ties in confidence are marked in
        the order of their FM, worst first, as no threshold can part them.

    Raises
    ------
    ValueError
        No images, or the two sequences differ in length.
    """
    if len(fms) != len(confidences):
        raise ValueError(f"{len(fms)} FM values but {len(confidences)} confidences")
    if not fms:
        raise ValueError("the risk-coverage curve needs at least one image")
    order = np.lexsort((np.asarray(fms, dtype=float), np.asarray(confidences, dtype=float)))
    ordered_fm = np.asarray(fms, dtype=float)[order]
    total = len(ordered_fm)
    # Unmarked images after k marks are ordered_fm[k:]: suffix means and minima in one pass each.
    suffix_sum = np.cumsum(ordered_fm[::-1])[::-1]
    suffix_min = np.minimum.accumulate(ordered_fm[::-1])[::-1]
    return [CoveragePoint(n_flagged=k, n_images=total, unflagged_mean_fm=float(suffix_sum[k] / (total - k)),
                          unflagged_worst_fm=float(suffix_min[k])) for k in range(total)]


def smallest_share_for_worst_fm(curve: Sequence[CoveragePoint], worst_fm: float) -> CoveragePoint | None:
    """The first point of :func:`risk_coverage`'s ``curve`` whose unmarked images all score at least
    ``worst_fm`` (0..1), or None when no share short of marking every image reaches it."""
    return next((point for point in curve if point.unflagged_worst_fm >= worst_fm), None)


def confidence_threshold(confidences: Sequence[float], share: float = DEFAULT_CHECK_SHARE) -> float:
    """The threshold that marks the ``share`` (0..1) least confident of ``confidences``, rounded up to
    whole images: halfway between the last marked and the first unmarked value (:data:`MARK_EVERY_IMAGE`
    when all are marked).

    Raises
    ------
    ValueError
        With no values, or ``share`` outside 0..1.
    """
    if not confidences:
        raise ValueError("the confidence threshold needs at least one validation image")
    if not 0.0 < share <= 1.0:
        raise ValueError(f"the share of images to mark must be in (0, 1], not {share}")
    ordered = sorted(float(value) for value in confidences)
    count = max(1, math.ceil(share * len(ordered) - 1e-9))
    if count >= len(ordered):
        return MARK_EVERY_IMAGE
    return (ordered[count - 1] + ordered[count]) / 2.0


def calibrate_confidence(segmenter: Segmenter, pairs: Sequence[Pair], *, share: float = DEFAULT_CHECK_SHARE,
                         bad_fm: float = BAD_IMAGE_FM, baseline: Segmenter | None = None,
                         progress: Callable[[str], None] | None = None) -> ConfidenceCalibration:
    """Choose the confidence threshold that marks the ``share`` least confident of ``pairs`` (validation
    images the model did not train on) and count the images with FM below ``bad_fm`` it marks.

    Raises
    ------
    ValueError
        With no pairs.
    """
    if not pairs:
        raise ValueError("the confidence threshold needs at least one validation image")
    rows = confidence_rows(segmenter, pairs, baseline=baseline, progress=progress)
    threshold = confidence_threshold([row["confidence"] for row in rows], share)
    return flag_summary(rows, threshold, bad_fm=bad_fm)


def share_rule(rows: Sequence[dict[str, Any]], share: float = DEFAULT_CHECK_SHARE) -> float:
    """The confidence threshold that marks the ``share`` (0..1) least confident of ``rows``
    (``{"confidence"}``, images the model did not train on): :func:`confidence_threshold`."""
    return confidence_threshold([float(row["confidence"]) for row in rows], share)


def worst_fm_rule(rows: Sequence[dict[str, Any]], worst_fm: float = PROMISED_WORST_FM) -> float:
    """The lowest confidence threshold under which every unmarked row of ``rows`` (``{"fm", "confidence"}``,
    0..1) scores FM ≥ ``worst_fm``: halfway between the highest confidence of a row under ``worst_fm`` and
    the next higher confidence; :data:`MARK_EVERY_IMAGE` when the most confident row is under it (every row
    marked); the smallest confidence when no row is under it (none marked).

    Raises
    ------
    ValueError
        With no rows.
    """
    if not rows:
        raise ValueError("the confidence threshold needs at least one image")
    ordered = sorted(float(row["confidence"]) for row in rows)
    failing = [float(row["confidence"]) for row in rows if float(row["fm"]) < worst_fm]
    if not failing:
        return ordered[0]
    count = sum(value <= max(failing) for value in ordered)  # ties with the failure are marked with it
    if count >= len(ordered):
        return MARK_EVERY_IMAGE
    return (ordered[count - 1] + ordered[count]) / 2.0


#: The rules that choose a confidence threshold from calibration rows, by name (see
#: ``docs/experiments/dermoscopy-flag-calibration.md``).
CONFIDENCE_RULES: dict[str, Callable[[Sequence[dict[str, Any]]], float]] = {"share": share_rule,
                                                                          "worst_fm": worst_fm_rule}


@dataclass(frozen=True)
class CrossFittedMarks:
    """What a confidence rule marks on images it did not choose its threshold on: each fold's images marked
    by the threshold the rule chose on the other folds' images, pooled.

    Attributes
    ----------
    rule : str
        The rule's name in :data:`CONFIDENCE_RULES`.
    thresholds : dict of str to float
        The threshold (0..1) each fold's images were marked with, by fold name.
    n_images, n_marked : int
    unmarked_mean_fm, unmarked_worst_fm : float
        FM (0..1) of the images left unmarked (NaN when every image is marked).
    n_unmarked_under_promise, n_unmarked_bad : int
        Unmarked images with FM under :data:`PROMISED_WORST_FM` and under :data:`BAD_IMAGE_FM`.
    """

    rule: str
    thresholds: dict[str, float]
    n_images: int
    n_marked: int
    unmarked_mean_fm: float
    unmarked_worst_fm: float
    n_unmarked_under_promise: int
    n_unmarked_bad: int

    @property
    def marked_share(self) -> float:
        """Share of the images marked, 0..1."""
        return self.n_marked / self.n_images

    @property
    def promise_met(self) -> bool:
        """At most :data:`PROMISED_MAX_SHARE` marked and no unmarked image under :data:`PROMISED_WORST_FM`."""
        return self.marked_share <= PROMISED_MAX_SHARE and self.n_unmarked_under_promise == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON form, with :attr:`marked_share` and :attr:`promise_met`."""
        return {"rule": self.rule, "thresholds": self.thresholds, "n_images": self.n_images,
                "n_marked": self.n_marked, "marked_share": self.marked_share,
                "unmarked_mean_fm": self.unmarked_mean_fm, "unmarked_worst_fm": self.unmarked_worst_fm,
                "n_unmarked_under_promise": self.n_unmarked_under_promise, "n_unmarked_bad": self.n_unmarked_bad,
                "promise_met": self.promise_met}


def cross_fitted_marks(rows: Sequence[dict[str, Any]], rule: str) -> CrossFittedMarks:
    """Leave one fold out: for each fold of ``rows`` (``{"fold", "fm", "confidence"}``, out-of-fold images),
    the threshold :data:`CONFIDENCE_RULES` ``[rule]`` chooses on the other folds' rows marks that fold's
    rows (confidence below it); the marks are pooled.

    Raises
    ------
    ValueError
        An unknown rule, or fewer than two folds.
    """
    if rule not in CONFIDENCE_RULES:
        raise ValueError(f"unknown confidence rule {rule!r} (known: {', '.join(CONFIDENCE_RULES)})")
    folds = list(dict.fromkeys(row["fold"] for row in rows))
    if len(folds) < 2:
        raise ValueError("leaving one fold out needs rows of at least two folds")
    thresholds = {fold: CONFIDENCE_RULES[rule]([row for row in rows if row["fold"] != fold]) for fold in folds}
    unmarked = [float(row["fm"]) for row in rows if float(row["confidence"]) >= thresholds[row["fold"]]]
    return CrossFittedMarks(
        rule=rule, thresholds=thresholds, n_images=len(rows), n_marked=len(rows) - len(unmarked),
        unmarked_mean_fm=float(np.mean(unmarked)) if unmarked else math.nan,
        unmarked_worst_fm=min(unmarked) if unmarked else math.nan,
        n_unmarked_under_promise=sum(value < PROMISED_WORST_FM for value in unmarked),
        n_unmarked_bad=sum(value < BAD_IMAGE_FM for value in unmarked))


@dataclass(frozen=True)
class OutOfFoldConfidence:
    """The confidence threshold chosen from out-of-fold rows by the rule fixed before they were seen
    (``docs/experiments/dermoscopy-flag-calibration.md``), with each rule's leave-one-fold-out estimate.

    Attributes
    ----------
    rule : str
        The rule applied (a name in :data:`CONFIDENCE_RULES`).
    threshold : float
        That rule applied to every row, 0..1.
    estimates : dict of str to CrossFittedMarks
        :func:`cross_fitted_marks` of every rule, by name.
    """

    rule: str
    threshold: float
    estimates: dict[str, CrossFittedMarks]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"rule": self.rule, "threshold": self.threshold,
                "estimates": {name: marks.to_dict() for name, marks in self.estimates.items()}}


def out_of_fold_confidence(rows: Sequence[dict[str, Any]]) -> OutOfFoldConfidence:
    """Choose the confidence threshold from out-of-fold ``rows`` (``{"fold", "fm", "confidence"}``): the
    worst-FM rule (:func:`worst_fm_rule`) when its leave-one-fold-out estimate keeps the promise
    (:attr:`CrossFittedMarks.promise_met`), else the share rule (:func:`share_rule`), applied to every row.

    Raises
    ------
    ValueError
        Rows of fewer than two folds.
    """
    estimates = {name: cross_fitted_marks(rows, name) for name in CONFIDENCE_RULES}
    rule = "worst_fm" if estimates["worst_fm"].promise_met else "share"
    return OutOfFoldConfidence(rule=rule, threshold=CONFIDENCE_RULES[rule](rows), estimates=estimates)
