"""Tests of the per-image border confidence (moleseg.engine.segmenter.border_confidence), its calibration
(moleseg.engine.calibrate) and the "check this border" / "may extend beyond the picture" flags of an
analysis (moleseg.engine.pipeline)."""

from __future__ import annotations

import numpy as np
import pytest

from synthetic import RedChannelSegmenter, ThreeClassRed, TruthSegmenter, disk, disk_pairs, two_class
from moleseg.core.cleanup import CleanupSettings
from moleseg.core.modelinfo import ModelInfo
from moleseg.engine.calibrate import (MARK_EVERY_IMAGE, calibrate_confidence, confidence_threshold, cross_fitted_marks,
                                      flag_summary, out_of_fold_confidence, risk_coverage, share_rule,
                                      smallest_share_for_worst_fm, worst_fm_rule)
from moleseg.engine.correction import Corrections, Stroke
from moleseg.engine.batches import analyse_images
from moleseg.engine.segmenter import border_confidence


def test_border_confidence_by_hand():
    foreground = np.zeros((4, 5), np.float32)
    foreground[:2] = 1.0            # 10 sure lesion pixels
    foreground[2, :3] = 0.5         # 3 undecided pixels (0.2 < p < 0.8), not lesion after the arg-max
    foreground[3, 0] = 0.9          # a sure lesion pixel: 11 lesion pixels
    lesion = foreground > 0.5
    assert border_confidence(two_class(foreground), lesion) == pytest.approx(1 - 3 / 11)
    assert border_confidence(two_class(foreground), lesion, undecided=(0.4, 0.95)) == pytest.approx(1 - 4 / 11)


def test_border_confidence_of_an_empty_or_all_undecided_lesion_is_zero():
    foreground = np.full((6, 6), 0.45, np.float32)
    assert border_confidence(two_class(foreground), np.zeros((6, 6), bool)) == 0.0
    lesion = np.zeros((6, 6), bool)
    lesion[0, 0] = True  # 1 px of lesion, 36 undecided
    assert border_confidence(two_class(foreground), lesion) == 0.0


def test_confidence_threshold_marks_the_least_confident_share():
    values = [0.9, 0.1, 0.5, 0.3, 0.7]
    assert confidence_threshold(values, 0.2) == pytest.approx(0.2)       # one image: 0.1
    assert confidence_threshold(values, 0.3) == pytest.approx(0.4)       # 1.5 rounded up to 2: 0.1, 0.3
    assert confidence_threshold(values, 1.0) == MARK_EVERY_IMAGE         # every image
    assert confidence_threshold([0.5] * 32 + [0.9], 0.15) == pytest.approx(0.5)  # ties stay together
    with pytest.raises(ValueError, match="at least one"):
        confidence_threshold([], 0.15)
    with pytest.raises(ValueError, match="share"):
        confidence_threshold(values, 0.0)


def test_calibration_marks_the_blurred_image_and_counts_it(tmp_path):
    result = calibrate_confidence(RedChannelSegmenter(), disk_pairs(tmp_path), share=0.25, baseline=TruthSegmenter())
    assert result.n_images == 4 and result.share == 0.25
    assert result.n_bad == 1 and result.n_bad_caught == 1 and result.n_worse_than_baseline == 1
    first = result.per_image[0]
    assert first["image"] == "3.png" and first["check_border"] and first["fm"] < 0.85
    assert first["confidence"] < result.threshold < 1.0
    assert [row["confidence"] for row in result.per_image[1:]] == [1.0, 1.0, 1.0]
    info = ModelInfo.from_dict({"name": "m", **result.info_update()})
    assert info.confidence_threshold == pytest.approx(result.threshold)
    assert info.confidence_calibration["n_bad_caught"] == 1
    # the same threshold on other images (a test set) only reports
    again = flag_summary(result.per_image[1:], result.threshold)
    assert again.n_images == 3 and again.share == 0.0 and again.n_bad == 0


def test_older_model_files_have_no_confidence_threshold():
    info = ModelInfo.from_dict({"name": "old", "lesion_threshold": 0.5})
    assert info.confidence_threshold is None and info.confidence_calibration == {}
    assert "confidence_threshold" not in info.to_dict()
    assert ModelInfo.from_dict({"confidence_threshold": "0.7"}).confidence_threshold == 0.7
    assert ModelInfo.from_dict({"confidence_calibration": [1, 2]}).confidence_calibration == {}


def _image(foreground: np.ndarray) -> np.ndarray:
    image = np.zeros((*foreground.shape, 3), np.uint8)
    image[..., 0] = np.round(foreground * 255).astype(np.uint8)
    return image


def test_an_unsure_analysis_says_check_this_border(tmp_path):
    pairs = disk_pairs(tmp_path)
    from moleseg.core.imageio import read_image

    crisp, blurred = read_image(pairs[0].image), read_image(pairs[3].image)
    segmenter = RedChannelSegmenter({"confidence_threshold": 0.9})
    sure, unsure = analyse_images(segmenter, [crisp, blurred])
    assert sure.confidence == 1.0 and not sure.check_border and sure.notes is None
    assert unsure.check_border and unsure.confidence < 0.9
    # cells mode speaks of a segmentation, its PDF of cells (the model's task, not the dermoscopy wording)
    assert "check this segmentation" in unsure.notes and unsure.warnings[0].startswith("check this segmentation:")
    assert "border" not in unsure.notes
    pdf = unsure.pdf("cells.png")
    assert b"Cell segmentation analysis" in pdf and b"Lesion border analysis" not in pdf  # the PDF's subject
    assert unsure.flag_row == {"confidence": round(unsure.confidence, 4), "check_border": True}  # cells mode
    # corrected by hand: the user has looked at it
    corrections = Corrections()
    corrections.push([Stroke.of([(20, 20), (30, 20), (30, 30)])], add=True, shape=unsure.image.shape[:2])
    assert not unsure.corrected(corrections).check_border
    # without a calibrated threshold nothing is marked
    assert not analyse_images(RedChannelSegmenter(), [blurred])[0].check_border


def test_a_lesion_filling_the_frame_may_extend_beyond_the_picture():
    segmenter = ThreeClassRed()
    segmenter.cleanup_defaults = CleanupSettings(rule="grow_inside", closing_radius_px=0, border_width_px=1)
    filling, inside = analyse_images(segmenter, [_image(np.ones((40, 40))),
                                                 _image(disk((40, 40), (20, 20), 10).astype(float))])
    assert filling.beyond_picture and filling.edge_outline_share == 1.0
    assert "may extend beyond the picture" in filling.notes and "lower bounds" in filling.notes
    assert filling.flag_row["beyond_picture"] is True and filling.flag_row["edge_outline_share"] == 1.0
    assert filling.flag_row["edge_contact_ratio"] == round(160 / (2 * np.sqrt(1600 / np.pi)), 4)
    assert not inside.beyond_picture and inside.edge_outline_share == 0.0 and inside.notes is None
    assert inside.edge_contact_ratio == 0.0


def test_an_unsure_lesion_says_check_this_border_and_its_pdf_is_a_lesion_report(tmp_path):
    from moleseg.core.imageio import read_image

    segmenter = ThreeClassRed({"confidence_threshold": 0.9})
    segmenter.cleanup_defaults = CleanupSettings(rule="grow_inside", closing_radius_px=0, border_width_px=1)
    (unsure,) = analyse_images(segmenter, [read_image(disk_pairs(tmp_path)[3].image)])
    assert unsure.check_border and unsure.warnings[0].startswith("check this border:")
    assert b"Lesion border analysis" in unsure.pdf("mole.png")


def test_risk_coverage_marks_the_least_confident_first_and_reports_mean_and_worst_of_the_rest() -> None:
    # Four images: the least confident (0.2) is the worst (FM 0.5); a confident one (0.9) still scores 0.8.
    fms = [0.95, 0.5, 0.8, 0.9]
    confidences = [0.7, 0.2, 0.9, 0.4]
    curve = risk_coverage(fms, confidences)
    assert [point.n_flagged for point in curve] == [0, 1, 2, 3]
    # 0 marked: all four; 1 marked (0.5 goes): 0.95, 0.8, 0.9; 2 marked (0.9 goes too): 0.95, 0.8; 3: 0.8 alone.
    assert [round(point.unflagged_mean_fm, 6) for point in curve] == [0.7875, round(2.65 / 3, 6), 0.875, 0.8]
    assert [point.unflagged_worst_fm for point in curve] == [0.5, 0.8, 0.8, 0.8]
    assert curve[1].flagged_share == 0.25
    assert smallest_share_for_worst_fm(curve, 0.8) is curve[1]
    assert smallest_share_for_worst_fm(curve, 0.85) is None  # the confident 0.8 is never marked


def test_risk_coverage_refuses_mismatched_or_empty_input() -> None:
    with pytest.raises(ValueError, match="2 FM values but 1 confidences"):
        risk_coverage([0.9, 0.8], [0.5])
    with pytest.raises(ValueError, match="at least one image"):
        risk_coverage([], [])


def test_the_edge_calibration_counts_cut_lesions_marked_and_clear_ones_marked() -> None:
    from moleseg.tools.edge_calibration import recall_and_false_alarms, touches_frame

    mask = np.zeros((10, 10), bool)
    mask[3:6, 3:6] = True
    assert not touches_frame(mask)
    mask[9, 4] = True
    assert touches_frame(mask)
    rows = [{"cut": True, "ratio": 0.2}, {"cut": True, "ratio": 0.01}, {"cut": False, "ratio": 0.06},
            {"cut": False, "ratio": 0.0}]
    assert recall_and_false_alarms(rows, "ratio", 0.05) == {"cut": 2, "cut_marked": 1, "clear": 2, "clear_marked": 1}


def test_the_risk_coverage_table_reads_out_of_fold_images_first_and_says_whether_the_promise_holds() -> None:
    from moleseg.tools.riskcoverage import markdown_table, record_images, curve_of

    rows = [{"fm": 0.95, "confidence": 0.9}, {"fm": 0.5, "confidence": 0.1}] + [{"fm": 0.93, "confidence": 0.8}] * 18
    what, found = record_images({"crossval": {"n_folds": 5, "per_image": rows},
                                 "confidence": {"validation": {"per_image": rows[:1]}}})
    assert what == "out of fold, 5 folds" and found is rows
    assert record_images({"confidence": {"validation": {"per_image": rows[:1]}}})[0] == "validation images"
    with pytest.raises(ValueError, match="neither"):
        record_images({})
    table = markdown_table("demo", what, curve_of(rows))
    assert "| 0 (0%) | 0.9095 | 0.5000 |" in table  # (0.95 + 0.5 + 18 * 0.93) / 20
    assert "| 1 (5%) | 0.9311 | 0.9300 |" in table  # (0.95 + 18 * 0.93) / 19
    assert "once 1 (5%) are marked" in table and "is met" in table


def _rows(table: str) -> list[dict]:
    """Rows ``{"fold", "fm", "confidence"}`` from lines ``fold fm confidence``."""
    return [{"fold": fold, "fm": float(fm), "confidence": float(confidence)}
            for fold, fm, confidence in (line.split() for line in table.strip().splitlines())]


#: Three folds of three images; the failures under 0.90: 0.70 (confidence 0.2), 0.84 (0.8, a confident
#: error) and 0.88 (0.4).
THREE_FOLDS = _rows("""
a 0.95 0.9
a 0.70 0.2
a 0.92 0.6
b 0.84 0.8
b 0.96 0.95
b 0.93 0.5
c 0.97 0.7
c 0.88 0.4
c 0.99 0.86
""")


def test_the_worst_fm_rule_marks_up_to_the_most_confident_failure() -> None:
    # confidences 0.2 0.4 0.5 0.6 0.7 0.8 | 0.86 0.9 0.95: halfway between the failure at 0.8 and 0.86
    assert worst_fm_rule(THREE_FOLDS) == pytest.approx(0.83)
    assert worst_fm_rule(THREE_FOLDS, worst_fm=0.80) == pytest.approx(0.3)     # only 0.70 fails
    good = [row for row in THREE_FOLDS if row["fm"] >= 0.90]
    assert worst_fm_rule(good) == pytest.approx(0.5)                            # none fails: none marked
    assert not any(row["confidence"] < worst_fm_rule(good) for row in good)
    assert worst_fm_rule(good, worst_fm=0.999) == MARK_EVERY_IMAGE              # every row fails: all marked
    tied = _rows("a 0.5 0.3\na 0.99 0.3\na 0.99 0.6")
    assert worst_fm_rule(tied) == pytest.approx(0.45)                           # a tie goes with the failure
    with pytest.raises(ValueError, match="at least one"):
        worst_fm_rule([])


def test_a_rule_that_marks_every_image_marks_even_a_border_more_confident_than_those_it_saw() -> None:
    assert 1.0 < MARK_EVERY_IMAGE < 1.0 + 1e-15
    rows = _rows("a 0.5 0.3\na 0.6 0.4")                # both under the promise: every row marked
    threshold = worst_fm_rule(rows)
    assert threshold == MARK_EVERY_IMAGE
    assert all(confidence < threshold for confidence in (0.3, 0.4, 0.99, 1.0))  # a held-out 1.0 too
    assert share_rule(rows, share=1.0) == MARK_EVERY_IMAGE


def test_the_share_rule_marks_fifteen_percent_rounded_up() -> None:
    assert share_rule(THREE_FOLDS) == pytest.approx(0.45)  # 1.35 of 9 rounded up to 2: 0.2 and 0.4


def test_each_fold_is_marked_by_the_threshold_the_other_folds_chose() -> None:
    share = cross_fitted_marks(THREE_FOLDS, "share")
    # without a: 0.4 0.5 ... (6 rows, 1 marked) -> 0.45; without b: 0.2 0.4 -> 0.3; without c: 0.2 0.5 -> 0.35
    assert share.thresholds == pytest.approx({"a": 0.45, "b": 0.3, "c": 0.35})
    assert share.n_marked == 1 and share.n_images == 9  # a's 0.2 only
    assert share.unmarked_worst_fm == pytest.approx(0.84)
    assert share.unmarked_mean_fm == pytest.approx((0.95 + 0.92 + 0.84 + 0.96 + 0.93 + 0.97 + 0.88 + 0.99) / 8)
    assert (share.n_unmarked_under_promise, share.n_unmarked_bad) == (2, 1)
    assert not share.promise_met
    worst = cross_fitted_marks(THREE_FOLDS, "worst_fm")
    # without a: failures at 0.8, 0.4 -> 0.83; without b: 0.2, 0.4 -> 0.5; without c: 0.2, 0.8 -> 0.85
    assert worst.thresholds == pytest.approx({"a": 0.83, "b": 0.5, "c": 0.85})
    assert worst.n_marked == 4                          # a's 0.2 and 0.6, c's 0.7 and 0.4; b's 0.84 slips through
    assert worst.unmarked_worst_fm == pytest.approx(0.84)
    assert worst.unmarked_mean_fm == pytest.approx((0.95 + 0.84 + 0.96 + 0.93 + 0.99) / 5)
    assert worst.to_dict()["marked_share"] == pytest.approx(4 / 9) and worst.to_dict()["promise_met"] is False
    with pytest.raises(ValueError, match="unknown confidence rule 'best'"):
        cross_fitted_marks(THREE_FOLDS, "best")
    with pytest.raises(ValueError, match="two folds"):
        cross_fitted_marks(THREE_FOLDS[:3], "share")


def test_the_out_of_fold_threshold_follows_the_rule_fixed_beforehand() -> None:
    # a confident error somewhere: the worst-FM rule breaks the promise out of fold, so the share rule applies
    chosen = out_of_fold_confidence(THREE_FOLDS)
    assert chosen.rule == "share" and chosen.threshold == pytest.approx(0.45)
    assert set(chosen.to_dict()["estimates"]) == {"share", "worst_fm"}
    # each fold's one failure is its least confident image: the worst-FM rule marks 2 of 20 and keeps the promise
    clean_folds = [{"fold": fold, "fm": 0.6 if index == 0 else 0.95, "confidence": 0.05 * index + (0.1 if index else 0.0)
                    + (0.01 if fold == "b" else 0.0)} for fold in ("a", "b") for index in range(10)]
    chosen = out_of_fold_confidence(clean_folds)
    assert chosen.estimates["worst_fm"].n_marked == 2 and chosen.estimates["worst_fm"].promise_met
    assert chosen.rule == "worst_fm"
    assert chosen.threshold == pytest.approx((0.01 + 0.15) / 2)  # b's failure at 0.01, a's next image at 0.15


def test_the_risk_coverage_tool_adds_the_rules_estimates_for_out_of_fold_images(tmp_path, capsys) -> None:
    import json

    from moleseg.tools.riskcoverage import main

    record = tmp_path / "demo.json"
    record.write_text(json.dumps({"crossval": {"n_folds": 3, "per_image": THREE_FOLDS}}))
    assert main([str(record)]) == 0
    printed = capsys.readouterr().out
    assert "| share | 0.450, 0.300, 0.350 | 1 (11%) | 0.9300 | 0.8400 | 2 | not met |" in printed
    assert "| worst_fm | 0.830, 0.500, 0.850 | 4 (44%) | 0.9340 | 0.8400 | 1 | not met |" in printed
    assert "applies the share rule to all 9 images: threshold 0.450." in printed
    assert main([str(record), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[str(record)]["out_of_fold_confidence"]["rule"] == "share"


def test_the_risk_coverage_tool_ranks_by_another_score_when_asked(tmp_path, capsys) -> None:
    import json

    from moleseg.tools.riskcoverage import main

    oracle = [dict(row, tta=row["fm"]) for row in THREE_FOLDS]  # a score that ranks FM perfectly
    record = tmp_path / "demo.json"
    record.write_text(json.dumps({"crossval": {"n_folds": 3, "per_image": oracle}}))
    assert main([str(record), "--score", "tta"]) == 0
    printed = capsys.readouterr().out
    assert "**demo, by tta** (9 images" in printed
    assert "| 2 (22%) | 0.9429 | 0.8800 |" in printed  # 0.70 and 0.84 marked: 6.60 / 7 left, worst 0.88
    assert main([str(record)]) == 0
    assert "| 2 (22%) | 0.9371 | 0.8400 |" in capsys.readouterr().out  # by confidence: 0.70 and 0.88 marked
    assert main([str(record), "--score", "nope"]) == 2
    assert capsys.readouterr().err.strip() == f"{record}: image 1 of the record has no number under 'nope'"


@pytest.mark.parametrize(("score", "value", "shown"), [("tta", float("nan"), "NaN"), ("tta", True, "true"),
                                                        ("tta", "0.5", '"0.5"'), ("confidence", False, "false")])
def test_the_risk_coverage_tool_refuses_a_score_that_is_not_a_finite_number(tmp_path, capsys, score, value,
                                                                              shown) -> None:
    import json

    from moleseg.tools.riskcoverage import main

    rows = [dict(row, image=f"i{number}.png", tta=row["fm"]) for number, row in enumerate(THREE_FOLDS)]
    rows[2][score] = value
    record = tmp_path / "demo.json"
    record.write_text(json.dumps({"crossval": {"n_folds": 3, "per_image": rows}}))  # NaN written as JSON's NaN
    assert main([str(record), "--score", score]) == 2
    assert capsys.readouterr().err.strip() == (f"{record}: image 3 (i2.png) of the record has {shown} under "
                                               f"{score!r}, not a finite number")


@pytest.mark.parametrize(("text", "reason"), [
    ("[]", "the record is not a JSON object"),
    ('{"crossval": {"n_folds": 2, "per_image": [1, 2]}}', "the record's out of fold, 2 folds are not a list of objects"),
    ('{"confidence": {"validation": {"per_image": [{"confidence": 0.5}]}}}',
     "image 1 of the record has no number under 'fm'")])
def test_the_risk_coverage_tool_names_the_record_and_the_reason_it_cannot_read_it(tmp_path, capsys, text,
                                                                                  reason) -> None:
    from moleseg.tools.riskcoverage import main

    record = tmp_path / "demo.json"
    record.write_text(text)
    assert main([str(record)]) == 2
    assert capsys.readouterr().err.strip() == f"{record}: {reason}"
