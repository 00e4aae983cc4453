"""Tests of moleseg.core.render: overlays, outlines, side-by-side panels and class maps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from synthetic import disk
from moleseg.core.cleanup import CleanupSettings, cleanup
from moleseg.core.config import BACK, BORDER, INSIDE
from moleseg.core.render import (
    BACKGROUND_COLOR,
    class_colors,
    class_map,
    contour_overlay,
    legend,
    outline,
    overlay,
    side_by_side,
)
from moleseg.core.targets import make_targets


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)


@pytest.fixture
def lesion_and_border() -> tuple[np.ndarray, np.ndarray]:
    lesion = disk((60, 80), (30, 35), 18)
    result = cleanup(make_targets(lesion, classes=3, border_width_px=3), 3, CleanupSettings(closing_radius_px=0))
    return result.lesion, result.border


def test_overlay_border_fill_and_outside(image, lesion_and_border):
    lesion, border = lesion_and_border
    assert border.any() and (lesion & ~border).any()
    fill_color, border_color = (255, 200, 0), (0, 255, 255)
    result = overlay(image, lesion, border, fill_color=fill_color, border_color=border_color,
                     fill_opacity=0.35, border_opacity=1.0)
    assert result.shape == image.shape and result.dtype == np.uint8
    # border pixels are exactly the border colour
    assert np.all(result[border] == np.array(border_color, dtype=np.uint8))
    # outside the lesion nothing changed
    np.testing.assert_array_equal(result[~lesion], image[~lesion])
    # fill pixels: the blend by hand, pixel by pixel
    rows, cols = np.nonzero(lesion & ~border)
    for row, col in list(zip(rows, cols))[:: max(1, len(rows) // 50)]:
        for channel in range(3):
            expected = round(0.65 * int(image[row, col, channel]) + 0.35 * fill_color[channel])
            assert abs(int(result[row, col, channel]) - expected) <= 0 or (
                # exact halves round to even in numpy; allow that single case
                abs((0.65 * int(image[row, col, channel]) + 0.35 * fill_color[channel]) % 1 - 0.5) < 1e-9
                and abs(int(result[row, col, channel]) - expected) == 1
            )
    # the input is not modified
    assert not np.shares_memory(result, image)


def test_overlay_defaults_are_the_analyses_overlay_style(image, lesion_and_border):
    from moleseg.engine.pipeline import OverlayStyle

    lesion, border = lesion_and_border
    style = OverlayStyle()
    assert (style.fill_color, style.border_color, style.fill_opacity, style.border_opacity) == (
        (255, 200, 0), (0, 255, 255), 0.35, 1.0)
    np.testing.assert_array_equal(
        overlay(image, lesion, border),
        overlay(image, lesion, border, fill_color=style.fill_color, border_color=style.border_color,
                fill_opacity=style.fill_opacity, border_opacity=style.border_opacity))


def test_overlay_opacity_extremes(image, lesion_and_border):
    lesion, border = lesion_and_border
    unchanged = overlay(image, lesion, border, fill_opacity=0.0, border_opacity=0.0)
    np.testing.assert_array_equal(unchanged, image)
    solid = overlay(image, lesion, None, fill_color=(1, 2, 3), fill_opacity=1.0)
    assert np.all(solid[lesion] == (1, 2, 3))


def test_overlay_accepts_grey_images(lesion_and_border):
    lesion, border = lesion_and_border
    grey = np.full((60, 80), 100, dtype=np.uint8)
    result = overlay(grey, lesion, border)
    assert result.shape == (60, 80, 3)
    assert np.all(result[~lesion] == 100)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fill_opacity": 1.5},
        {"border_opacity": -0.1},
        {"fill_color": (256, 0, 0)},
        {"border_color": (0, 0)},
        {"fill_color": (0.5, 0, 0)},
    ],
)
def test_overlay_bad_parameters(image, lesion_and_border, kwargs):
    lesion, border = lesion_and_border
    with pytest.raises(ValueError):
        overlay(image, lesion, border, **kwargs)


def test_shape_mismatch_is_a_clear_error(image):
    with pytest.raises(ValueError, match="image is 60x80"):
        overlay(image, np.zeros((60, 81), bool), None)
    with pytest.raises(ValueError, match="border"):
        overlay(image, np.zeros((60, 80), bool), np.zeros((59, 80), bool))
    with pytest.raises(ValueError):
        contour_overlay(image, np.zeros((60, 80, 3), bool))
    with pytest.raises(ValueError):
        overlay(image.astype(np.float32), np.zeros((60, 80), bool), None)


@pytest.mark.parametrize("thickness", [1, 2, 4])
def test_contour_pixels_sit_on_the_boundary(image, thickness):
    lesion = disk((60, 80), (30, 40), 20)
    color = (255, 0, 255)
    result = contour_overlay(image, lesion, color=color, thickness_px=thickness)
    painted = np.any(result != image, axis=-1)
    drawn = outline(lesion, thickness)
    assert drawn.any()
    assert np.all(result[drawn] == color)
    assert not np.any(painted & ~drawn)
    # every outline pixel lies inside the lesion, within `thickness` px of the background
    distance_to_background = ndimage.distance_transform_edt(lesion)
    assert np.all(lesion[drawn])
    assert distance_to_background[drawn].max() <= thickness + 1e-9
    # and the whole boundary is covered: each lesion pixel next to the background is drawn
    boundary = lesion & ~ndimage.binary_erosion(lesion, border_value=1)
    assert np.all(drawn[boundary])


def test_contour_skips_the_image_frame():
    lesion = np.zeros((40, 40), bool)
    lesion[20:, 10:30] = True  # touches the bottom edge
    drawn = outline(lesion, 2)
    assert not drawn[-1, 14:26].any()
    assert drawn[20, 15] and drawn[30, 10]
    assert not outline(np.zeros((5, 5), bool)).any()
    assert not outline(np.ones((5, 5), bool)).any()
    with pytest.raises(ValueError):
        outline(lesion, 0)


def test_side_by_side_matches_heights_with_white_gap():
    left = np.zeros((40, 30, 3), np.uint8)
    right = np.full((20, 10, 3), 128, np.uint8)
    combined = side_by_side(left, right, gap_px=5)
    assert combined.shape == (40, 30 + 5 + 20, 3)
    assert np.all(combined[:, 30:35] == 255)
    assert np.all(combined[:, :30] == 0)
    assert np.all(combined[:, 35:] == 128)
    assert side_by_side(left, right, gap_px=0).shape == (40, 50, 3)
    with pytest.raises(ValueError):
        side_by_side(left, right, gap_px=-1)


def test_class_map_three_and_two_classes():
    labels = np.array([[BACK, BORDER], [INSIDE, BACK]], dtype=np.uint8)
    picture = class_map(labels, 3)
    colors = class_colors(3)
    assert picture.shape == (2, 2, 3) and picture.dtype == np.uint8
    assert tuple(picture[0, 0]) == BACKGROUND_COLOR == colors[BACK]
    assert tuple(picture[0, 1]) == colors[BORDER]
    assert tuple(picture[1, 0]) == colors[INSIDE]
    assert len({colors[BACK], colors[BORDER], colors[INSIDE]}) == 3
    two = class_map(np.array([[0, 1]]), 2)
    assert tuple(two[0, 0]) == BACKGROUND_COLOR and tuple(two[0, 1]) != BACKGROUND_COLOR
    with pytest.raises(ValueError):
        class_map(np.array([[0, 2]]), 2)
    with pytest.raises(ValueError):
        class_map(np.zeros((2, 2), np.float32), 3)
    with pytest.raises(ValueError):
        class_map(labels, 4)


def test_legend():
    assert [name for name, _ in legend(3)] == ["back", "border", "inside"]
    assert [name for name, _ in legend(2)] == ["background", "foreground"]
    assert legend(3)[1][1] == class_colors(3)[BORDER]


@pytest.mark.parametrize("labels, message", [
    (np.array([[0, 3], [1, 2]], np.uint8), "^labels must lie in 0..2; found values from 0 to 3$"),
    (np.zeros((0, 4), np.uint8), r"^labels must be a non-empty 2-D \(H, W\) array, got shape \(0, 4\)$"),
    (np.zeros((2, 2), np.float32), "^labels must be an integer array of class indices, got dtype float32$"),
])
def test_class_map_and_cleanup_refuse_a_bad_label_image_in_the_same_words(labels, message):
    with pytest.raises(ValueError, match=message):
        class_map(labels, 3)
    with pytest.raises(ValueError, match=message):
        cleanup(labels, n_classes=3)
