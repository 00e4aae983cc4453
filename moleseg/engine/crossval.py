"""k-fold cross-validation read out of fold models: every image is predicted by the one model that did
not train on it ("out of fold"), at its own size, cleaned through the app's own path
(:func:`moleseg.engine.segmenter.clean`) and scored against its mask and, optionally, a baseline
segmenter (the classical one).

With k folds that cover the pairs once, this scores a *recipe* on every pair instead of one validation
split: the lesion threshold and the "check this border" confidence threshold are then chosen on all the
out-of-fold images together (cross-fitted), so a model trained with the same recipe can carry them. The
figures are slightly optimistic: each fold chose its best epoch and cleanup rule on the images it is then
scored on. No TensorFlow here: the caller loads the fold models.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from moleseg.core.cleanup import CLEANUP_VARIANTS
from moleseg.core.config import BAD_IMAGE_FM, BASELINE_MARGIN, DEFAULT_CHECK_SHARE
from moleseg.core.metrics import scores, summarise
from moleseg.core.pairing import Pair
from moleseg.core.words import count_of
from moleseg.engine.calibrate import (CALIBRATION_BATCH, DEFAULT_MIN_GAIN, DEFAULT_THRESHOLDS, Calibration,
                                      ConfidenceCalibration, confidence_threshold, flag_summary)
from moleseg.engine.evaluate import read_pair
from moleseg.engine.segmenter import Segmenter, clean, cleanup_for_image, segment


@dataclass
class Fold:
    """One fold model and the pairs it did not train on (its validation block)."""

    name: str
    segmenter: Segmenter
    pairs: Sequence[Pair]


@dataclass
class CrossValidation:
    """Out-of-fold figures of a recipe.

    Attributes
    ----------
    lesion_threshold : float or None
        The decision chosen on all out-of-fold images (None: arg-max), 0..1.
    fm : dict
        ``mean, std, min, max`` out-of-fold FM (0..1) of that decision over every image.
    decision_table : list of dict
        ``{"cleanup_variant", "lesion_threshold", "fm", "min_fm"}`` for every candidate decision
        (``cleanup_variant`` None: each fold model's own rule).
    folds : list of dict
        ``{"fold", "n_images", "fm"}`` (``fm`` a :func:`moleseg.core.metrics.summarise` dict) per fold.
    per_image : list of dict
        ``{"image", "fold", "fm", "cm", "cr", "confidence", "check_border"}`` (and ``"baseline_fm"``),
        in fold order.
    confidence : ConfidenceCalibration
        The confidence threshold chosen on all out-of-fold images and what it marks.
    cleanup : dict
        ``{"cleanup", "cleanup_variant"}`` of the chosen variant. ``rules`` lists the rule each fold's
        training chose.
    compared_with : dict
        The decision-table entry the chosen one had to beat by ``min_gain``: the arg-max with the cleanup
        variant most folds chose.
    not_validated : list of str
        Images of ``all_pairs`` that no fold validated (a remainder smaller than a fold's block).
    """

    lesion_threshold: float | None
    fm: dict[str, float]
    decision_table: list[dict[str, Any]]
    folds: list[dict[str, Any]]
    per_image: list[dict[str, Any]]
    confidence: ConfidenceCalibration
    baseline_fm: dict[str, float] | None = None
    n_worse_than_baseline: int | None = None
    baseline_margin: float = BASELINE_MARGIN
    cleanup: dict[str, Any] = field(default_factory=dict)
    rules: list[str | None] = field(default_factory=list)
    not_validated: list[str] = field(default_factory=list)
    compared_with: dict[str, Any] = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return len(self.per_image)

    def decision(self) -> dict[str, Any]:
        """The entries of a model's ``moleseg.json`` that carry this cross-fitted decision (no flips, the
        lesion threshold, the confidence threshold and the chosen cleanup rule, see :attr:`cleanup`): what a
        model trained on every pair with the same recipe, which has no validation split of its own, is
        installed with."""
        calibration = Calibration(
            test_time_augmentation=False, lesion_threshold=self.lesion_threshold, fm=self.fm["mean"],
            baseline_fm=self.compared_with["fm"], n_images=self.n_images, confidence=self.confidence,
            table=[{"test_time_augmentation": False, **entry} for entry in self.decision_table])
        info = calibration.info_update()
        info["calibration"]["method"] = f"{len(self.folds)}-fold cross-validation, out of fold"
        info["confidence_calibration"]["method"] += f" ({len(self.folds)}-fold cross-validation, out of fold)"
        del info["confidence_calibration"]["per_image"]  # kept once, in the record's per_image
        return {**info, **self.cleanup}

    def to_dict(self) -> dict[str, Any]:
        """JSON record (what ``models/<name>.json`` keeps under ``crossval``; ``decision`` is
        :meth:`decision`)."""
        return {"n_folds": len(self.folds), "n_images": self.n_images, "lesion_threshold": self.lesion_threshold,
                "fm": self.fm, "baseline_fm": self.baseline_fm, "n_worse_than_baseline": self.n_worse_than_baseline,
                "baseline_margin": self.baseline_margin, "folds": self.folds, "decision_table": self.decision_table,
                "rules": self.rules, "not_validated": self.not_validated, "compared_with": self.compared_with,
                "confidence": {"threshold": self.confidence.threshold,
                               **{key: value for key, value in self.confidence.info_update()["confidence_calibration"].items()
                                  if key != "per_image"}},
                "per_image": self.per_image, "decision": self.decision()}

    def summary(self) -> str:
        decision = "arg-max" if self.lesion_threshold is None else f"threshold {self.lesion_threshold:.2f}"
        decision += f", {self.cleanup['cleanup_variant']} cleanup"
        folds = ", ".join(f"{fold['fm']['mean']:.4f}" for fold in self.folds)
        text = (f"{len(self.folds)}-fold cross-validation, {count_of(self.n_images, 'image')} out of fold"
                + (f" ({len(self.not_validated)} not validated)" if self.not_validated else "")
                + f" ({decision}): "
                f"FM {self.fm['mean']:.4f} ± {self.fm['std']:.4f} (min {self.fm['min']:.4f}); folds {folds}")
        if self.baseline_fm is not None:
            text += (f"; baseline {self.baseline_fm['mean']:.4f} (min {self.baseline_fm['min']:.4f}), "
                     f"{count_of(self.n_worse_than_baseline, 'image')} more than {self.baseline_margin:.2f} FM below it")
        return f"{text}; {self.confidence.summary()}"


#: The cleanup candidate "each fold model's own rule" (what its training chose) in the decision table.
OWN_RULE = None


def _choose(table: Sequence[dict[str, Any]], variants: Sequence[str], rules: Sequence[str | None],
            min_gain: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(chosen entry, the entry it had to beat)`` of a decision table: the best entry of a named cleanup
    variant (one rule for a new model; each fold's own rule is only a reference), replacing the arg-max
    with the variant most folds chose (the first of ``variants`` on a tie) only when it gains ``min_gain``."""
    usual = max(variants, key=lambda variant: (rules.count(variant), -variants.index(variant)))
    fallback = next(entry for entry in table if entry["cleanup_variant"] == usual and entry["lesion_threshold"] is None)
    best = max((entry for entry in table if entry["cleanup_variant"] is not OWN_RULE), key=lambda entry: entry["fm"])
    return (best if best["fm"] - fallback["fm"] >= min_gain else fallback), fallback


def score_fold(fold: Fold, thresholds: Sequence[float | None] = DEFAULT_THRESHOLDS, *,
               baseline: Segmenter | None = None,
               progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Score one fold model on its validation pairs under every candidate decision: what
    :func:`cross_validate` chooses from, in JSON form (a caller may keep it and pass it back as ``scored``).

    Returns
    -------
    list of dict
        Per pair, in order: ``{"image", "fold", "by", "baseline_fm"}`` (``baseline_fm`` only with a
        ``baseline``), ``by`` a list of ``{"cleanup_variant", "lesion_threshold", "fm", "cm", "cr",
        "confidence"}`` (all 0..1) for every cleanup variant (:data:`OWN_RULE`, the fold's own rule, then
        :data:`moleseg.core.cleanup.CLEANUP_VARIANTS`) and every threshold. Each batch's probabilities are
        dropped once scored (full-size maps are large).
    """
    variants = CLEANUP_VARIANTS[fold.segmenter.n_classes]
    rows = []
    for start in range(0, len(fold.pairs), CALIBRATION_BATCH):
        chunk = fold.pairs[start:start + CALIBRATION_BATCH]
        if progress:
            progress(f"{fold.name}: images {start + 1}-{start + len(chunk)} of {len(fold.pairs)}")
        read = [read_pair(pair) for pair in chunk]
        probabilities = fold.segmenter.predict_probabilities([image for image, _ in read])
        for pair, (image, mask), probability in zip(chunk, read, probabilities):
            row: dict[str, Any] = {"image": Path(pair.image).name, "fold": fold.name, "by": []}
            own = cleanup_for_image(fold.segmenter, mask.shape)
            settings = {OWN_RULE: own, **{name: dataclasses.replace(own, **change) for name, change in variants.items()}}
            for variant, chosen in settings.items():
                for threshold in thresholds:
                    segmentation = clean(fold.segmenter, probability, chosen, lesion_threshold=threshold)
                    values = scores(segmentation.lesion, mask)
                    row["by"].append({"cleanup_variant": variant, "lesion_threshold": threshold,
                                      "fm": float(values["fm"]), "cm": float(values["cm"]),
                                      "cr": float(values["cr"]), "confidence": segmentation.confidence})
            if baseline is not None:
                row["baseline_fm"] = float(scores(segment(baseline, image).lesion, mask)["fm"])
            rows.append(row)
    return rows


#: The keys of each of :func:`score_fold`'s ``by`` entries.
_SCORE_KEYS: frozenset[str] = frozenset({"cleanup_variant", "lesion_threshold", "fm", "cm", "cr", "confidence"})


def _is_score_entry(entry: Any) -> bool:
    """Whether ``entry`` has the form of one of :func:`score_fold`'s ``by`` entries (numbers for its scores)."""
    return (isinstance(entry, dict) and _SCORE_KEYS <= entry.keys()
            and all(isinstance(entry[key], (int, float)) for key in ("fm", "cm", "cr", "confidence")))


def _check_scored(fold: Fold, rows: Sequence[dict[str, Any]], thresholds: Sequence[float | None],
                  with_baseline: bool) -> list[dict[str, Any]]:
    """``rows`` (:func:`score_fold`'s, kept by a caller) when they score exactly ``fold``'s pairs under
    ``thresholds`` (and the baseline when one is asked for).

    Raises
    ------
    ValueError
        Rows of other images, cleanup variants or thresholds, not in :func:`score_fold`'s form, or without the
        baseline's FM.
    """
    names = [Path(pair.image).name for pair in fold.pairs]
    if not all(isinstance(row, dict) for row in rows) or [row.get("image") for row in rows] != names:
        raise ValueError(f"the scores given for {fold.name} are not of its {len(names)} validation images")
    expected = {(variant, threshold) for variant in (OWN_RULE, *CLEANUP_VARIANTS[fold.segmenter.n_classes])
                for threshold in thresholds}
    for row in rows:
        entries = row.get("by")
        if not (isinstance(entries, list) and all(_is_score_entry(entry) for entry in entries)):
            raise ValueError(f"the scores given for {fold.name} ({row['image']}) are not scores of cleanup "
                             f"variants and thresholds")
        if {(entry["cleanup_variant"], entry["lesion_threshold"]) for entry in entries} != expected:
            raise ValueError(f"the scores given for {fold.name} ({row['image']}) are not of the cleanup variants "
                             f"and thresholds asked for")
        if with_baseline and "baseline_fm" not in row:
            raise ValueError(f"the scores given for {fold.name} ({row['image']}) have no baseline FM")
    return [dict(row, fold=fold.name) for row in rows]


def cross_validate(folds: Sequence[Fold], *, thresholds: Sequence[float | None] = DEFAULT_THRESHOLDS,
                   baseline: Segmenter | None = None, share: float = DEFAULT_CHECK_SHARE,
                   bad_fm: float = BAD_IMAGE_FM, baseline_margin: float = BASELINE_MARGIN,
                   min_gain: float = DEFAULT_MIN_GAIN, all_pairs: Sequence[Pair] = (),
                   scored: Mapping[str, Sequence[dict[str, Any]]] | None = None,
                   progress: Callable[[str], None] | None = None) -> CrossValidation:
    """Score every fold model on its own validation pairs and choose the decision on all of them.

    Candidates are every cleanup variant of :data:`moleseg.core.cleanup.CLEANUP_VARIANTS` (one rule for
    all, as a model trained on every pair will apply it; each fold's own rule is scored for reference) with
    every lesion threshold; the best replaces the arg-max with the rule most folds chose only when it gains
    at least ``min_gain`` mean FM over all out-of-fold images (as :func:`moleseg.engine.calibrate.calibrate`
    does on one split); the confidence
    threshold marks the ``share`` (0..1) least confident of them under that decision. ``all_pairs``
    (optional): every pair of the recipe, to name those no fold validated. ``scored`` (optional): by fold
    name, :func:`score_fold`'s rows of that fold, kept from an earlier call, used instead of predicting it
    again.

    Raises
    ------
    ValueError
        With no folds, a fold without pairs, an image in two folds (the folds must not overlap), or
        fold models with different numbers of classes or one without cleanup variants, or ``scored`` rows
        that are not of their fold's images and thresholds.
    """
    if not folds:
        raise ValueError("cross-validation needs at least one fold")
    if len({fold.segmenter.n_classes for fold in folds}) > 1:
        raise ValueError("the fold models have different numbers of classes: not folds of one recipe")
    n_classes = folds[0].segmenter.n_classes
    if n_classes not in CLEANUP_VARIANTS:
        raise ValueError(f"no cleanup variants to compare for {n_classes} classes")
    if any(not fold.pairs for fold in folds):
        raise ValueError(f"fold {next(fold.name for fold in folds if not fold.pairs)} has no validation pairs")
    seen: dict[str, str] = {}
    for fold in folds:
        for pair in fold.pairs:
            key = str(Path(pair.image).resolve())
            if key in seen:
                raise ValueError(f"{Path(pair.image).name} is in both {seen[key]} and {fold.name}: "
                                 "out-of-fold figures need folds that do not overlap")
            seen[key] = fold.name
    if None not in thresholds:
        thresholds = (None, *thresholds)
    scored = scored or {}
    rows = [row for fold in folds for row in (
        _check_scored(fold, scored[fold.name], thresholds, baseline is not None) if fold.name in scored
        else score_fold(fold, thresholds, baseline=baseline, progress=progress))]
    by = [{(entry["cleanup_variant"], entry["lesion_threshold"]): entry for entry in row["by"]} for row in rows]
    table = []
    for variant, threshold in by[0]:
        values = [scores_by[variant, threshold]["fm"] for scores_by in by]
        table.append({"cleanup_variant": variant, "lesion_threshold": threshold, "fm": float(np.mean(values)),
                      "min_fm": float(np.min(values))})
    rules = [fold.segmenter.info.get("cleanup_variant") for fold in folds]
    best, compared_with = _choose(table, list(CLEANUP_VARIANTS[n_classes]), rules, min_gain)
    chosen = best["cleanup_variant"], best["lesion_threshold"]
    per_image = []
    for row, scores_by in zip(rows, by):
        picked = {key: scores_by[chosen][key] for key in ("fm", "cm", "cr", "confidence")}
        entry = {"image": row["image"], "fold": row["fold"], **picked}
        if "baseline_fm" in row:
            entry["baseline_fm"] = row["baseline_fm"]
        per_image.append(entry)
    threshold = confidence_threshold([row["confidence"] for row in per_image], share)
    flags = flag_summary(per_image, threshold, bad_fm=bad_fm, baseline_margin=baseline_margin)
    for entry in per_image:
        entry["check_border"] = entry["confidence"] < threshold
    change = CLEANUP_VARIANTS[n_classes][chosen[0]]
    cleanup = {"cleanup": dataclasses.replace(folds[0].segmenter.cleanup_defaults, **change).to_dict(),
               "cleanup_variant": chosen[0]}
    fold_figures = [{"fold": fold.name, "n_images": len(fold.pairs),
                     "fm": summarise(row["fm"] for row in per_image if row["fold"] == fold.name)} for fold in folds]
    with_baseline = baseline is not None
    return CrossValidation(
        lesion_threshold=chosen[1], fm=summarise(row["fm"] for row in per_image), decision_table=table,
        folds=fold_figures, per_image=per_image, confidence=flags,
        baseline_fm=summarise(row["baseline_fm"] for row in per_image) if with_baseline else None,
        n_worse_than_baseline=flags.n_worse_than_baseline if with_baseline else None,
        baseline_margin=baseline_margin, cleanup=cleanup, rules=rules, compared_with=compared_with,
        not_validated=[Path(pair.image).name for pair in all_pairs if str(Path(pair.image).resolve()) not in seen])
