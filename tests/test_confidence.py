"""Tests of the per-image border confidence (moleseg.engine.segmenter.border_confidence), its calibration
(moleseg.engine.calibrate) and the "check this border" / "may extend beyond the picture" flags of an
analysis (moleseg.engine.pipeline)."""

from __future__ import annotations

import numpy as np
import pytest

from synthetic import RedChannelSegmenter, ThreeClassRed, TruthSegmenter, disk, disk_pairs, two_class
from moleseg.core.cleanup import CleanupSettings
from moleseg.core.modelinfo import ModelInfo
from moleseg.engine.calibrate import calibrate_confidence, confidence_threshold, flag_summary
from moleseg.engine.correction import Corrections, Stroke
from moleseg.engine.pipeline import analyse_images
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
    assert confidence_threshold(values, 1.0) > 0.9                       # every image
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
    corrections.push([Stroke.of([(20, 20), (30, 20), (30, 30)])], add=True)
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
    assert not inside.beyond_picture and inside.edge_outline_share == 0.0 and inside.notes is None


def test_an_unsure_lesion_says_check_this_border_and_its_pdf_is_a_lesion_report(tmp_path):
    from moleseg.core.imageio import read_image

    segmenter = ThreeClassRed({"confidence_threshold": 0.9})
    segmenter.cleanup_defaults = CleanupSettings(rule="grow_inside", closing_radius_px=0, border_width_px=1)
    (unsure,) = analyse_images(segmenter, [read_image(disk_pairs(tmp_path)[3].image)])
    assert unsure.check_border and unsure.warnings[0].startswith("check this border:")
    assert b"Lesion border analysis" in unsure.pdf("mole.png")
