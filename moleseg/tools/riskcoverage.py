"""The risk-coverage tables of the "check this border" mark, for the model cards and candidate records.

For a set of images the model did not train on (a shipped recipe's out-of-fold images, a shipped model's
validation images, a candidate's folds), each with its FM and border confidence, the table says what a user
can trust when the least confident images are marked: the mean and worst FM of the unmarked ones at each
share marked (:func:`moleseg.engine.calibrate.risk_coverage`), and the smallest share that leaves no
unmarked image under the product's promise
(:data:`moleseg.engine.calibrate.PROMISED_WORST_FM`).

Usage::

    python -m moleseg.tools.riskcoverage models/dermoscopy.json [docs/experiments/NAME.json ...]

prints one Markdown table per file (the cards paste it) and, with ``--json``, the curves as JSON. For
out-of-fold images of two folds or more it adds what each confidence rule marks when every fold is marked by
the threshold chosen on the other folds, and the threshold the rule fixed beforehand gives
(:func:`moleseg.engine.calibrate.out_of_fold_confidence`). ``--score NAME`` ranks the images by another
per-image value of the record than ``confidence`` (a candidate mark's, e.g. ``tta_confidence`` in
``docs/experiments/dermoscopy-flag-tta.json``; lower is less trustworthy), in the tables and the rules alike.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from moleseg.engine.calibrate import (PROMISED_MAX_SHARE, PROMISED_WORST_FM, CoveragePoint, out_of_fold_confidence,
                                      risk_coverage, smallest_share_for_worst_fm)

#: The shares of images marked (0..1) the tables show.
TABLE_SHARES: tuple[float, ...] = (0.0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.40)


def record_images(record: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The out-of-training images of a model or candidate record (``models/<name>.json`` or
    ``docs/experiments/<name>.json``) and what they are: the cross-validation's out-of-fold images when the
    record has them, else the confidence calibration's validation images.

    Raises
    ------
    ValueError
        The record is not a JSON object, holds neither, or its images are not a list of objects.
    """
    if not isinstance(record, dict):
        raise ValueError("the record is not a JSON object")
    crossval = record.get("crossval") if isinstance(record.get("crossval"), dict) else {}
    confidence = record.get("confidence") if isinstance(record.get("confidence"), dict) else {}
    validation = confidence.get("validation") if isinstance(confidence.get("validation"), dict) else {}
    if crossval.get("per_image"):
        what, rows = f"out of fold, {crossval.get('n_folds')} folds", crossval["per_image"]
    elif validation.get("per_image"):
        what, rows = "validation images", validation["per_image"]
    else:
        raise ValueError("the record has neither out-of-fold nor validation images with their confidence")
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"the record's {what} are not a list of objects")
    return what, rows


def scored_by(rows: Sequence[dict[str, Any]], score: str) -> list[dict[str, Any]]:
    """``rows`` with their ``score`` value (lower: less trustworthy) as the ``confidence`` the curve and the
    rules rank by (the rows themselves when ``score`` is ``"confidence"``).

    Raises
    ------
    ValueError
        A row without a finite number under ``score`` or ``"fm"`` (a boolean, NaN or an infinity is none):
        ``"image 3 (IMD004.png) of the record has NaN under 'tta', not a finite number"``.
    """
    for index, row in enumerate(rows):
        for key in (score, "fm"):
            value = row.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                continue
            image = f"image {index + 1}" + (f" ({row['image']})" if isinstance(row.get("image"), str) else "")
            if value is None:
                raise ValueError(f"{image} of the record has no number under {key!r}")
            raise ValueError(f"{image} of the record has {json.dumps(value)} under {key!r}, not a finite number")
    if score == "confidence":
        return list(rows)
    return [{**row, "confidence": float(row[score])} for row in rows]


def curve_of(rows: Sequence[dict[str, Any]]) -> list[CoveragePoint]:
    """:func:`risk_coverage` of per-image rows ``{"fm", "confidence"}``."""
    return risk_coverage([float(row["fm"]) for row in rows], [float(row["confidence"]) for row in rows])


def point_at_share(curve: Sequence[CoveragePoint], share: float) -> CoveragePoint:
    """The curve's point marking ``share`` (0..1) of the images, rounded up to whole images."""
    total = curve[0].n_images
    count = min(total - 1, int(-(-round(share * total, 9) // 1)))
    return curve[count]


def markdown_table(name: str, what: str, curve: Sequence[CoveragePoint]) -> str:
    """The Markdown table a card quotes: FM of the unmarked images at each of :data:`TABLE_SHARES`."""
    lines = [f"**{name}** ({curve[0].n_images} images, {what}):", "",
             "| marked | unmarked mean FM | unmarked worst FM |", "|---|---|---|"]
    for share in TABLE_SHARES:
        point = point_at_share(curve, share)
        lines.append(f"| {point.n_flagged} ({point.flagged_share:.0%}) | {point.unflagged_mean_fm:.4f} | "
                     f"{point.unflagged_worst_fm:.4f} |")
    reach = smallest_share_for_worst_fm(curve, PROMISED_WORST_FM)
    promise = (f"no unmarked image under {PROMISED_WORST_FM:.2f} once {reach.n_flagged} "
               f"({reach.flagged_share:.0%}) are marked" if reach is not None
               else f"some unmarked image stays under {PROMISED_WORST_FM:.2f} at every share")
    met = reach is not None and reach.flagged_share <= PROMISED_MAX_SHARE
    lines += ["", f"{promise}: the promise (worst unmarked FM >= {PROMISED_WORST_FM:.2f} with at most "
                  f"{PROMISED_MAX_SHARE:.0%} marked) is {'met' if met else 'not met'}."]
    return "\n".join(lines)


def folds_of(rows: Sequence[dict[str, Any]]) -> int:
    """How many folds the rows come from (0 for validation rows, which name none)."""
    return len({row["fold"] for row in rows if "fold" in row})


def cross_fitted_table(rows: Sequence[dict[str, Any]]) -> str:
    """The Markdown table of each rule's leave-one-fold-out marks and the threshold a user gets
    (:func:`moleseg.engine.calibrate.out_of_fold_confidence` of ``rows``, of two folds or more)."""
    chosen = out_of_fold_confidence(rows)
    lines = ["| rule | thresholds chosen on the other folds | marked | unmarked mean FM | unmarked worst FM | "
             f"unmarked under {PROMISED_WORST_FM:.2f} | promise |", "|---|---|---|---|---|---|---|"]
    for name, marks in chosen.estimates.items():
        lines.append(f"| {name} | {', '.join(f'{value:.3f}' for value in marks.thresholds.values())} | "
                     f"{marks.n_marked} ({marks.marked_share:.0%}) | {marks.unmarked_mean_fm:.4f} | "
                     f"{marks.unmarked_worst_fm:.4f} | {marks.n_unmarked_under_promise} | "
                     f"{'met' if marks.promise_met else 'not met'} |")
    lines += ["", f"The rule fixed beforehand applies the {chosen.rule} rule to all {len(rows)} images: "
                  f"threshold {chosen.threshold:.3f}."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moleseg.tools.riskcoverage", description=__doc__.split("\n\n")[0])
    parser.add_argument("records", nargs="+", type=Path, help="models/<name>.json or docs/experiments/<name>.json")
    parser.add_argument("--json", action="store_true", help="print the curves as JSON instead of Markdown")
    parser.add_argument("--score", default="confidence",
                        help="the per-image value that ranks the images (default: confidence; lower is less "
                             "trustworthy)")
    args = parser.parse_args(argv)
    out: dict[str, Any] = {}
    for path in args.records:
        try:
            what, found = record_images(json.loads(path.read_text(encoding="utf-8")))
            rows = scored_by(found, args.score)
        except (OSError, ValueError) as error:
            print(f"{path}: {error}", file=sys.stderr)
            return 2
        curve = curve_of(rows)
        if args.json:
            out[str(path)] = {"images": what, "curve": [
                {"n_flagged": p.n_flagged, "flagged_share": p.flagged_share, "unflagged_mean_fm": p.unflagged_mean_fm,
                 "unflagged_worst_fm": p.unflagged_worst_fm} for p in curve]}
            if folds_of(rows) >= 2:
                out[str(path)]["out_of_fold_confidence"] = out_of_fold_confidence(rows).to_dict()
        else:
            name = path.stem if args.score == "confidence" else f"{path.stem}, by {args.score}"
            print(markdown_table(name, what, curve) + "\n")
            if folds_of(rows) >= 2:
                print(cross_fitted_table(rows) + "\n")
    if args.json:
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
