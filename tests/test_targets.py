"""Tests of moleseg.core.targets: structuring elements, erosion, three- and two-class targets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from moleseg.core.config import BACK, BORDER, DEFAULT_BORDER_WIDTH_PX, INSIDE
from moleseg.core.targets import SHAPES, class_frequencies, dilate, erode, make_targets, structuring_element


@st.composite
def random_masks(draw, max_side: int = 24) -> np.ndarray:
    """Random boolean masks; half of them blobby (noise dilated by a 3x3 square) so that
    erosion keeps an interior."""
    shape = draw(st.tuples(st.integers(1, max_side), st.integers(1, max_side)))
    mask = draw(arrays(bool, shape, elements=st.booleans()))
    if draw(st.booleans()):
        mask = ndimage.binary_dilation(mask, structure=np.ones((3, 3), bool))
    return mask


# -- structuring elements ------------------------------------------------------------------------


def test_diamond_equals_matlab_strel_diamond_2():
    expected = np.array(
        [
            [0, 0, 1, 0, 0],
            [0, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
            [0, 1, 1, 1, 0],
            [0, 0, 1, 0, 0],
        ],
        dtype=np.uint8,
    )
    element = structuring_element("diamond", 2)
    assert element.dtype == np.uint8
    np.testing.assert_array_equal(element, expected)


def test_disk_3_is_the_euclidean_disk():
    expected = np.array(
        [
            [0, 0, 0, 1, 0, 0, 0],
            [0, 1, 1, 1, 1, 1, 0],
            [0, 1, 1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1, 1, 1],
            [0, 1, 1, 1, 1, 1, 0],
            [0, 1, 1, 1, 1, 1, 0],
            [0, 0, 0, 1, 0, 0, 0],
        ],
        dtype=np.uint8,
    )
    np.testing.assert_array_equal(structuring_element("disk", 3), expected)


def test_square_and_radius_zero():
    np.testing.assert_array_equal(structuring_element("square", 1), np.ones((3, 3), np.uint8))
    for shape in SHAPES:
        np.testing.assert_array_equal(structuring_element(shape, 0), np.ones((1, 1), np.uint8))


@pytest.mark.parametrize("radius", range(0, 40, 3))
def test_structuring_elements_equal_scikit_images_footprints(radius):
    from skimage.morphology import diamond, disk, footprint_rectangle

    side = 2 * radius + 1
    for shape, footprint in (("diamond", diamond(radius)), ("disk", disk(radius)),
                             ("square", footprint_rectangle((side, side)))):
        element = structuring_element(shape, radius)
        assert element.dtype == np.uint8
        np.testing.assert_array_equal(element, footprint.astype(np.uint8), err_msg=f"{shape} {radius}")


@pytest.mark.parametrize("shape, radius", [("triangle", 2), ("diamond", -1), ("disk", 1.5), ("square", True)])
def test_structuring_element_rejects_bad_arguments(shape, radius):
    with pytest.raises(ValueError):
        structuring_element(shape, radius)


# -- hand-checked erosion -----------------------------------------------------------------------


def test_diamond_erosion_hand_checked():
    mask = np.array(
        [
            [0, 0, 0, 0, 0, 0],
            [0, 1, 1, 1, 1, 0],
            [0, 1, 1, 1, 1, 0],
            [0, 1, 1, 1, 0, 0],
            [0, 0, 0, 0, 0, 0],
        ],
        dtype=bool,
    )
    expected_labels = np.array(
        [
            [0, 0, 0, 0, 0, 0],
            [0, 1, 1, 1, 1, 0],
            [0, 1, 2, 2, 1, 0],
            [0, 1, 1, 1, 0, 0],
            [0, 0, 0, 0, 0, 0],
        ],
        dtype=np.uint8,
    )
    labels = make_targets(mask, border_width_px=1, shape="diamond")
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, expected_labels)


def test_diamond_2_erodes_a_7x7_square_to_3x3():
    mask = np.zeros((9, 9), bool)
    mask[1:8, 1:8] = True
    inside = erode(mask, 2, "diamond")
    expected = np.zeros((9, 9), bool)
    expected[3:6, 3:6] = True
    np.testing.assert_array_equal(inside, expected)


# -- image edge ----------------------------------------------------------------------------------


def test_matlab_edge_convention_no_border_along_the_frame():
    mask = np.ones((4, 4), bool)
    np.testing.assert_array_equal(make_targets(mask, border_width_px=1), np.full((4, 4), INSIDE))
    framed = make_targets(mask, border_width_px=1, border_at_image_edge=True)
    expected = np.full((4, 4), BORDER, np.uint8)
    expected[1:3, 1:3] = INSIDE
    np.testing.assert_array_equal(framed, expected)


def test_lesion_touching_left_edge():
    mask = np.zeros((7, 6), bool)
    mask[1:6, 0:4] = True
    labels = make_targets(mask, border_width_px=1, shape="square")
    # Column 0 is on the frame: INSIDE there under the Matlab convention (rows 2..4).
    assert list(labels[1:6, 0]) == [BORDER, INSIDE, INSIDE, INSIDE, BORDER]
    assert list(labels[3, :5]) == [INSIDE, INSIDE, INSIDE, BORDER, BACK]
    framed = make_targets(mask, border_width_px=1, shape="square", border_at_image_edge=True)
    assert list(framed[1:6, 0]) == [BORDER] * 5


def test_zero_width_gives_no_border_and_two_classes_is_the_mask():
    mask = np.zeros((10, 10), bool)
    mask[2:8, 3:9] = True
    labels = make_targets(mask, border_width_px=0)
    assert not np.any(labels == BORDER)
    np.testing.assert_array_equal(labels == INSIDE, mask)
    two = make_targets(mask, classes=2)
    np.testing.assert_array_equal(two, mask.astype(np.uint8))
    assert two.dtype == np.uint8


def test_default_width_and_numeric_masks():
    mask = np.zeros((40, 40), np.uint8)
    mask[5:35, 5:35] = 255
    labels = make_targets(mask)
    inside = labels == INSIDE
    # Diamond of radius 4 erodes a square by 4 pixels on each side.
    assert inside.sum() == (30 - 2 * DEFAULT_BORDER_WIDTH_PX) ** 2


def test_empty_mask_gives_all_back():
    labels = make_targets(np.zeros((5, 7), bool))
    assert labels.shape == (5, 7)
    assert not labels.any()


@pytest.mark.parametrize(
    "mask, kwargs",
    [
        (np.zeros((3, 3, 3), bool), {}),
        (np.zeros((0, 4), bool), {}),
        (np.zeros((4, 4), bool), {"classes": 4}),
        (np.zeros((4, 4), bool), {"border_width_px": -2}),
        (np.zeros((4, 4), bool), {"shape": "hexagon"}),
    ],
)
def test_make_targets_rejects_bad_input(mask, kwargs):
    with pytest.raises(ValueError):
        make_targets(mask, **kwargs)


# -- guarantees on random masks -------------------------------------------------------------------


@settings(max_examples=150, deadline=None, database=None)
@given(
    mask=random_masks(),
    width=st.integers(0, 5),
    shape=st.sampled_from(SHAPES),
    edge=st.booleans(),
)
def test_target_guarantees_on_random_masks(mask, width, shape, edge):
    labels = make_targets(mask, border_width_px=width, shape=shape, border_at_image_edge=edge)
    border, inside = labels == BORDER, labels == INSIDE
    # Reference erosion: scipy, padding with 1 (Matlab) or 0 outside the frame.
    expected_inside = ndimage.binary_erosion(
        mask, structure=structuring_element(shape, width).astype(bool), border_value=0 if edge else 1
    ) if width > 0 else mask
    assert set(np.unique(labels)) <= {BACK, BORDER, INSIDE}
    np.testing.assert_array_equal(border | inside, mask)
    assert not np.any(border & inside)
    np.testing.assert_array_equal(inside, expected_inside)
    np.testing.assert_array_equal(border, mask & ~expected_inside)
    if width == 0:
        assert not border.any()


@settings(max_examples=80, deadline=None, database=None)
@given(mask=random_masks(), width=st.integers(0, 4), shape=st.sampled_from(SHAPES))
def test_dilate_matches_scipy(mask, width, shape):
    expected = (
        ndimage.binary_dilation(mask, structure=structuring_element(shape, width).astype(bool))
        if width > 0
        else mask
    )
    np.testing.assert_array_equal(dilate(mask, width, shape), expected)


# -- class frequencies ------------------------------------------------------------------------------


def test_class_frequencies():
    labels = np.array([[0, 0, 1, 2], [2, 2, 2, 0]], dtype=np.uint8)
    np.testing.assert_allclose(class_frequencies(labels, 3), [3 / 8, 1 / 8, 4 / 8])
    np.testing.assert_allclose(class_frequencies(np.zeros((2, 2), int), 3), [1.0, 0.0, 0.0])
    stack = np.stack([labels, labels])
    assert class_frequencies(stack, 3).sum() == pytest.approx(1.0)


def test_class_frequencies_rejects_bad_labels():
    with pytest.raises(ValueError):
        class_frequencies(np.array([[0, 3]]), 3)
    with pytest.raises(ValueError):
        class_frequencies(np.array([[-1, 0]]), 2)
    with pytest.raises(ValueError):
        class_frequencies(np.zeros((0,), int), 2)
    with pytest.raises(ValueError):
        class_frequencies(np.zeros((2, 2), float), 2)
