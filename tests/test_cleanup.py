"""Tests of moleseg.core.cleanup: the article rule, grow_inside, two classes, settings, invariants."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from synthetic import disk
from moleseg.core.cleanup import (
    CleanupResult,
    CleanupSettings,
    cleanup,
    close_mask,
    fill_holes,
    keep_largest_component,
)
from moleseg.core.config import BACK, BORDER, DEFAULT_BORDER_WIDTH_PX, DEFAULT_CLOSING_RADIUS_PX, INSIDE
from moleseg.core.metrics import hd95
from moleseg.core.targets import dilate, erode, make_targets


def assert_consistent(result: CleanupResult, shape: tuple[int, int]) -> None:
    for mask in (result.lesion, result.border, result.inside):
        assert mask.shape == shape
        assert mask.dtype == bool
    assert not np.any(result.border & ~result.lesion), "border must lie inside the lesion"
    np.testing.assert_array_equal(result.inside, result.lesion & ~result.border)


SIZE = (200, 220)
CENTRE = (100, 110)


@pytest.fixture
def predicted_labels() -> np.ndarray:
    """BACK, a BORDER ring (radius 50..58) around an INSIDE disk (radius 50) with a hole, a notch
    in the ring, and a stray INSIDE blob far away."""
    labels = np.full(SIZE, BACK, np.uint8)
    labels[disk(SIZE, CENTRE, 58)] = BORDER
    labels[disk(SIZE, CENTRE, 50)] = INSIDE
    labels[disk(SIZE, (90, 120), 8)] = BACK  # hole in INSIDE
    labels[40:60, 160:175] = BACK  # notch cut into the ring (10..15 px wide)
    labels[disk(SIZE, (15, 15), 5)] = INSIDE  # stray blob
    return labels


def test_article_rule_recovers_the_filled_disk_and_drops_the_stray_blob(predicted_labels):
    result = cleanup(predicted_labels, 3, CleanupSettings())
    assert_consistent(result, SIZE)
    truth = disk(SIZE, CENTRE, 58)
    assert not result.lesion[5:26, 5:26].any(), "the stray blob must be dropped"
    assert result.lesion[disk(SIZE, (90, 120), 8)].all(), "the hole must be filled"
    assert hd95(result.lesion, truth) <= 2.0
    assert np.count_nonzero(result.lesion ^ truth) < 0.02 * truth.sum()
    # The border is the closed ring: it covers the ring and the closing bridged the notch.
    ring = truth & ~disk(SIZE, CENTRE, 50)
    assert result.border[ring].mean() > 0.97
    assert result.inside[disk(SIZE, CENTRE, 45)].all()


def test_article_rule_without_largest_component_keeps_the_blob(predicted_labels):
    result = cleanup(predicted_labels, 3, CleanupSettings(largest_component=False))
    assert_consistent(result, SIZE)
    assert result.lesion[disk(SIZE, (15, 15), 5)].all()


def test_article_rule_without_hole_filling_keeps_the_hole():
    labels = np.full((80, 80), BACK, np.uint8)
    labels[disk((80, 80), (40, 40), 30)] = INSIDE
    labels[disk((80, 80), (40, 40), 5)] = BACK
    filled = cleanup(labels, 3, CleanupSettings())
    assert filled.lesion[40, 40]
    unfilled = cleanup(labels, 3, CleanupSettings(fill_holes=False))
    assert not unfilled.lesion[40, 40]
    assert_consistent(unfilled, (80, 80))


def test_article_rule_border_only_lesion_is_filled():
    labels = np.full((100, 100), BACK, np.uint8)
    labels[disk((100, 100), (50, 50), 20) & ~disk((100, 100), (50, 50), 16)] = BORDER
    result = cleanup(labels, 3, CleanupSettings())
    np.testing.assert_array_equal(result.lesion, fill_holes(disk((100, 100), (50, 50), 20)))


def test_closing_does_not_bridge_to_the_image_frame():
    """A BORDER blob 5 px from the frame stays 5 px from it after a radius-15 closing."""
    labels = np.full((60, 60), BACK, np.uint8)
    labels[10:50, 5:20] = BORDER
    result = cleanup(labels, 3, CleanupSettings(closing_radius_px=15))
    assert not result.lesion[:, :5].any()
    assert not result.lesion[:10, :].any()
    np.testing.assert_array_equal(result.lesion, labels == BORDER)


def test_close_mask_fills_gaps_and_is_exact_near_the_frame():
    mask = np.zeros((40, 40), bool)
    mask[5:35, 2:10] = True
    mask[5:35, 14:22] = True
    closed = close_mask(mask, 3, "disk")
    assert closed[7:33, 10:14].all(), "a 4 px gap must be closed by a radius-3 disk"
    assert not closed[:, :2].any() and not closed[:5, :].any()
    assert (closed >= mask).all()
    np.testing.assert_array_equal(close_mask(mask, 0), mask)


def test_grow_inside_recovers_a_disk_of_radius_r_plus_w():
    size, centre, r, w = (220, 220), (110, 110), 40, 6
    labels = np.full(size, BACK, np.uint8)
    labels[disk(size, centre, r + 20)] = BORDER  # too thick and too far out
    labels[disk(size, centre, r)] = INSIDE
    labels[disk(size, (100, 105), 4)] = BACK  # hole
    labels[disk(size, (15, 15), 6)] = INSIDE  # stray INSIDE blob
    result = cleanup(labels, 3, CleanupSettings(rule="grow_inside", border_width_px=w, shape="disk"))
    assert_consistent(result, size)
    expected = disk(size, centre, r + w)
    assert hd95(result.lesion, expected) <= 1.0
    assert result.lesion.sum() == pytest.approx(expected.sum(), rel=0.02)
    assert not result.lesion[:30, :30].any()
    # Reported border: the lesion minus its erosion by the same element.
    expected_border = make_targets(result.lesion, border_width_px=w, shape="disk") == BORDER
    np.testing.assert_array_equal(result.border, expected_border)


def test_grow_inside_without_inside_falls_back_to_the_article_rule():
    labels = np.full((60, 60), BACK, np.uint8)
    labels[disk((60, 60), (30, 30), 6)] = BORDER
    grown = cleanup(labels, 3, CleanupSettings(rule="grow_inside"))
    article = cleanup(labels, 3, CleanupSettings(rule="article"))
    np.testing.assert_array_equal(grown.lesion, article.lesion)
    assert grown.lesion.sum() == disk((60, 60), (30, 30), 6).sum()


def test_two_classes_lesion_is_the_filled_largest_foreground_with_a_band():
    size = (120, 120)
    foreground = disk(size, (60, 60), 40) & ~disk(size, (60, 60), 6)
    foreground |= disk(size, (8, 8), 4)
    labels = foreground.astype(np.uint8)
    w = 5
    result = cleanup(labels, 2, CleanupSettings(border_width_px=w, shape="diamond"))
    assert_consistent(result, size)
    np.testing.assert_array_equal(result.lesion, disk(size, (60, 60), 40))
    targets = make_targets(disk(size, (60, 60), 40), border_width_px=w, shape="diamond")
    np.testing.assert_array_equal(result.border, targets == BORDER)
    np.testing.assert_array_equal(result.inside, targets == INSIDE)
    raw = cleanup(labels, 2, CleanupSettings(fill_holes=False, largest_component=False))
    np.testing.assert_array_equal(raw.lesion, foreground)


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("rule", ["article", "grow_inside"])
def test_empty_prediction_gives_empty_masks(n_classes, rule):
    result = cleanup(np.zeros((30, 40), np.uint8), n_classes, CleanupSettings(rule=rule))
    assert_consistent(result, (30, 40))
    assert not result.lesion.any() and not result.border.any() and not result.inside.any()


def test_cleanup_default_settings_and_bad_labels():
    labels = np.zeros((10, 10), np.uint8)
    labels[3:7, 3:7] = INSIDE
    assert cleanup(labels, 3).lesion.sum() == 16
    with pytest.raises(ValueError):
        cleanup(labels, 2)  # label 2 does not exist with two classes
    with pytest.raises(ValueError):
        cleanup(labels, 4)
    with pytest.raises(ValueError):
        cleanup(labels.astype(float), 3)
    with pytest.raises(ValueError):
        cleanup(labels[None], 3)


@pytest.mark.parametrize("labels, found", [
    (np.array([[0, 3], [1, 2]], np.uint8), "0 to 3"),
    (np.array([[0, -1], [1, 2]], np.int16), "-1 to 2"),
    (np.array([[4, 1], [-2, 0]], np.int64), "-2 to 4"),
])
def test_labels_out_of_range_are_refused_with_their_range(labels, found):
    with pytest.raises(ValueError, match=f"^labels must lie in 0..2; found values from {found}$"):
        cleanup(labels, 3)


def test_fill_holes_and_largest_component_helpers():
    mask = np.zeros((12, 12), bool)
    mask[1:6, 1:6] = True
    mask[3, 3] = False  # a hole
    mask[0:4, 9] = True  # touches the frame: the gap between column 9 and the frame is no hole
    filled = fill_holes(mask)
    assert filled[3, 3]
    assert not filled[0:4, 10:].any()
    largest = keep_largest_component(filled)
    assert largest.sum() == 25
    assert not keep_largest_component(np.zeros((4, 4), bool)).any()


# -- settings ---------------------------------------------------------------------------------------


def test_settings_defaults_come_from_config():
    settings_ = CleanupSettings()
    assert settings_.rule == "article"
    assert settings_.closing_radius_px == DEFAULT_CLOSING_RADIUS_PX == 15
    assert settings_.border_width_px == DEFAULT_BORDER_WIDTH_PX
    assert settings_.fill_holes and settings_.largest_component
    assert settings_.shape == "diamond"


def test_settings_round_trip_through_json():
    original = CleanupSettings(
        rule="grow_inside", closing_radius_px=7, fill_holes=False, border_width_px=3, shape="disk"
    )
    data = json.loads(json.dumps(original.to_dict()))
    assert CleanupSettings.from_dict(data) == original
    assert CleanupSettings.from_dict({**data, "unknown_future_key": 1}) == original
    assert CleanupSettings.from_dict({"rule": "grow_inside"}) == CleanupSettings(rule="grow_inside")
    assert CleanupSettings.from_dict({}) == CleanupSettings()
    assert CleanupSettings.from_dict({"closing_radius_px": 12.0}).closing_radius_px == 12


@pytest.mark.parametrize(
    "data, field",
    [
        ({"rule": "magic"}, "rule"),
        ({"closing_radius_px": -1}, "closing_radius_px"),
        ({"closing_radius_px": 2.5}, "closing_radius_px"),
        ({"closing_radius_px": "15"}, "closing_radius_px"),
        ({"border_width_px": 10_000}, "border_width_px"),
        ({"fill_holes": "yes"}, "fill_holes"),
        ({"largest_component": 1}, "largest_component"),
        ({"shape": "hexagon"}, "shape"),
    ],
)
def test_settings_reject_bad_values_with_a_clear_message(data, field):
    with pytest.raises(ValueError, match=field):
        CleanupSettings.from_dict(data)


def test_settings_from_dict_rejects_non_mapping():
    with pytest.raises(ValueError):
        CleanupSettings.from_dict(["article"])


# -- invariants on random predictions ----------------------------------------------------------------


@settings(max_examples=60, deadline=None, database=None)
@given(
    labels=st.tuples(st.integers(1, 30), st.integers(1, 30)).flatmap(
        lambda shape: arrays(np.uint8, shape, elements=st.integers(0, 2))
    ),
    rule=st.sampled_from(["article", "grow_inside"]),
    closing=st.integers(0, 6),
    width=st.integers(0, 4),
    shape=st.sampled_from(["diamond", "disk", "square"]),
    fill=st.booleans(),
    largest=st.booleans(),
    n_classes=st.sampled_from([2, 3]),
)
def test_cleanup_invariants_on_random_predictions(labels, rule, closing, width, shape, fill, largest, n_classes):
    if n_classes == 2:
        labels = (labels > 0).astype(np.uint8)
    options = CleanupSettings(
        rule=rule,
        closing_radius_px=closing,
        border_width_px=width,
        shape=shape,
        fill_holes=fill,
        largest_component=largest,
    )
    result = cleanup(labels, n_classes, options)
    assert_consistent(result, labels.shape)
    if fill:
        np.testing.assert_array_equal(fill_holes(result.lesion), result.lesion)
    if largest:
        np.testing.assert_array_equal(keep_largest_component(result.lesion), result.lesion)


@settings(max_examples=60, deadline=None, database=None)
@given(
    labels=st.tuples(st.integers(1, 16), st.integers(1, 16)).flatmap(
        lambda shape: arrays(np.uint8, shape, elements=st.sampled_from([0, 0, 1, 2, 2]))
    ),
    width=st.integers(0, 4),
    shape=st.sampled_from(["diamond", "disk", "square"]),
    fill=st.booleans(),
    largest=st.booleans(),
)
def test_grow_inside_on_windows_equals_its_steps_on_the_whole_image(labels, width, shape, fill, largest):
    """INSIDE's box and the grown window give the masks of each step made on the whole image, wherever INSIDE
    lies (touching the frame, one pixel, several components)."""
    options = CleanupSettings(rule="grow_inside", border_width_px=width, shape=shape, fill_holes=fill,
                              largest_component=largest)
    inside = labels == INSIDE
    if not inside.any():
        return
    if fill:
        inside = fill_holes(inside)
    if largest:
        inside = keep_largest_component(inside)
    lesion = dilate(inside, width, shape)
    if fill:
        lesion = fill_holes(lesion)
    band = lesion & ~erode(lesion, width, shape)
    result = cleanup(labels, 3, options)
    np.testing.assert_array_equal(result.lesion, lesion)
    np.testing.assert_array_equal(result.border, band)
    np.testing.assert_array_equal(result.inside, lesion & ~band)
