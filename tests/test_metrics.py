"""Tests of moleseg.core.metrics: the article's TP/FP/FN, CM, CR, FM, Jaccard, hd95 and summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from synthetic import disk
from moleseg.core.metrics import confusion, contour, hd95, scores, summarise, summarise_scores


def test_hand_worked_4x4_case():
    pred = np.array(
        [
            [1, 1, 0, 0],
            [1, 0, 0, 0],
            [0, 0, 0, 1],
            [0, 0, 0, 0],
        ],
        dtype=bool,
    )
    true = np.array(
        [
            [1, 1, 1, 0],
            [1, 1, 0, 0],
            [0, 0, 0, 0],
            [0, 0, 0, 0],
        ],
        dtype=bool,
    )
    assert confusion(pred, true) == (3, 1, 2)
    result = scores(pred, true)
    assert (result["tp"], result["fp"], result["fn"]) == (3, 1, 2)
    assert result["cm"] == pytest.approx(0.6)
    assert result["cr"] == pytest.approx(0.75)
    assert result["fm"] == pytest.approx(2 / 3)
    assert result["jaccard"] == pytest.approx(0.5)
    assert set(result) == {"tp", "fp", "fn", "cm", "cr", "fm", "jaccard", "hd95"}


def test_both_empty_is_perfect():
    empty = np.zeros((5, 6), bool)
    result = scores(empty, empty)
    assert (result["tp"], result["fp"], result["fn"]) == (0, 0, 0)
    for key in ("cm", "cr", "fm", "jaccard"):
        assert result[key] == 1.0
    assert result["hd95"] == 0.0


def test_empty_prediction_of_a_lesion_scores_zero():
    true = np.zeros((30, 40), bool)
    true[5:10, 5:10] = True
    result = scores(np.zeros_like(true), true)
    assert (result["tp"], result["fp"], result["fn"]) == (0, 0, 25)
    for key in ("cm", "cr", "fm", "jaccard"):
        assert result[key] == 0.0
    assert result["hd95"] == pytest.approx(50.0)  # the image diagonal sqrt(30**2 + 40**2)


def test_lesion_predicted_on_an_empty_truth_scores_zero():
    pred = np.zeros((30, 40), bool)
    pred[5:10, 5:10] = True
    result = scores(pred, np.zeros_like(pred))
    assert (result["tp"], result["fp"], result["fn"]) == (0, 25, 0)
    for key in ("cm", "cr", "fm", "jaccard"):
        assert result[key] == 0.0
    assert result["hd95"] == pytest.approx(50.0)


def test_disjoint_masks_have_zero_fm():
    pred = np.zeros((10, 10), bool)
    true = np.zeros((10, 10), bool)
    pred[0:3, 0:3] = True
    true[6:9, 6:9] = True
    result = scores(pred, true)
    assert result["fm"] == 0.0 and result["cm"] == 0.0 and result["cr"] == 0.0 and result["jaccard"] == 0.0


def test_masks_of_different_sizes_are_rejected():
    with pytest.raises(ValueError, match="differ"):
        scores(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
    with pytest.raises(ValueError):
        confusion(np.zeros((4, 4, 3), bool), np.zeros((4, 4, 3), bool))


@settings(max_examples=100, deadline=None, database=None)
@given(
    pair=st.tuples(st.integers(1, 12), st.integers(1, 12)).flatmap(
        lambda shape: st.tuples(
            arrays(bool, shape, elements=st.booleans()), arrays(bool, shape, elements=st.booleans())
        )
    )
)
def test_scores_follow_the_article_formulas(pair):
    pred, true = pair
    result = scores(pred, true)
    tp, fp, fn = result["tp"], result["fp"], result["fn"]
    assert tp + fn == true.sum() and tp + fp == pred.sum()
    for key in ("cm", "cr", "fm", "jaccard"):
        assert 0.0 <= result[key] <= 1.0
    if tp > 0:
        cm, cr = tp / (tp + fn), tp / (tp + fp)
        assert result["cm"] == pytest.approx(cm)
        assert result["cr"] == pytest.approx(cr)
        assert result["fm"] == pytest.approx(2 * cm * cr / (cm + cr))
        assert result["fm"] == pytest.approx(2 * tp / (2 * tp + fp + fn))  # FM is the Dice score
        assert result["jaccard"] == pytest.approx(tp / (tp + fp + fn))
    assert result["hd95"] >= 0.0
    assert result["hd95"] <= math.hypot(*pred.shape) + 1e-9
    assert hd95(pred, true) == pytest.approx(hd95(true, pred))


# -- hd95 -------------------------------------------------------------------------------------------


def test_contour_is_mask_minus_cross_erosion():
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    expected = mask.copy()
    expected[2, 2] = False
    np.testing.assert_array_equal(contour(mask), expected)
    # Touching the frame: the frame side is part of the contour.
    full = np.ones((4, 4), bool)
    assert contour(full).sum() == 12


def test_hd95_identical_masks_is_zero():
    mask = disk((80, 80), (40, 40), 20)
    assert hd95(mask, mask) == 0.0


def test_hd95_of_single_pixels_is_their_distance():
    a = np.zeros((20, 20), bool)
    b = np.zeros((20, 20), bool)
    a[2, 3] = True
    b[5, 7] = True
    assert hd95(a, b) == pytest.approx(5.0)


def test_hd95_disk_shifted_by_3_px_is_about_3():
    size = (160, 160)
    a = disk(size, (80, 80), 40)
    b = disk(size, (80, 83), 40)
    assert hd95(a, b) == pytest.approx(3.0, abs=0.35)


def test_hd95_concentric_disks_is_the_radius_difference():
    size = (200, 200)
    assert hd95(disk(size, (100, 100), 50), disk(size, (100, 100), 60)) == pytest.approx(10.0, abs=0.6)


def test_hd95_one_empty_is_the_image_diagonal():
    a = np.zeros((60, 80), bool)
    a[10:20, 10:20] = True
    assert hd95(a, np.zeros_like(a)) == pytest.approx(100.0)
    assert hd95(np.zeros_like(a), a) == pytest.approx(100.0)
    assert hd95(np.zeros_like(a), np.zeros_like(a)) == 0.0


# -- summaries --------------------------------------------------------------------------------------


def test_summarise_uses_the_population_std():
    summary = summarise([1.0, 2.0, 3.0, 4.0])
    assert summary == pytest.approx({"mean": 2.5, "std": math.sqrt(1.25), "min": 1.0, "max": 4.0})
    assert summarise([0.7])["std"] == 0.0


def test_summarise_rejects_empty_and_non_finite():
    with pytest.raises(ValueError):
        summarise([])
    with pytest.raises(ValueError):
        summarise([1.0, float("nan")])


def test_summarise_scores():
    truth = disk((50, 50), (25, 25), 10)
    per_image = [scores(truth, truth), scores(np.zeros_like(truth), truth)]
    summary = summarise_scores(per_image)
    assert summary["n"] == 2
    assert set(summary) == {"n", "fm", "cm", "cr", "jaccard", "hd95"}
    assert summary["fm"] == pytest.approx({"mean": 0.5, "std": 0.5, "min": 0.0, "max": 1.0})
    assert summary["hd95"]["max"] == pytest.approx(math.hypot(50, 50))
    with pytest.raises(ValueError):
        summarise_scores([])
    with pytest.raises(ValueError, match="hd95"):
        summarise_scores([{"fm": 1, "cm": 1, "cr": 1, "jaccard": 1}])
