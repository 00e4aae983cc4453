"""Tests of moleseg.core.colour on synthetic patches of known colour."""

from __future__ import annotations

import math

import numpy as np
import pytest

from moleseg.core.colour import COLOUR_NAMES, PRESENT_MIN_SHARE, REFERENCE_RGB, classify_colours, lesion_colours
from moleseg.core.measure import measure_lesion, measurements_row

#: Typical dermoscopic shades (RGB 0..255) and the class each must fall in.
SHADES = {
    "white": [(255, 255, 255), (235, 232, 236)],
    "red": [(200, 50, 50), (220, 90, 100)],
    "light brown": [(190, 140, 90), (160, 110, 60)],
    "dark brown": [(80, 40, 25), (60, 25, 15)],
    "blue-grey": [(100, 130, 150), (70, 140, 150)],
    "black": [(10, 10, 10), (25, 20, 22)],
}


def reference_uint8(name: str) -> tuple[int, int, int]:
    return tuple(int(round(255 * v)) for v in REFERENCE_RGB[name])


def striped(colours: list[tuple[int, int, int]], fractions: list[float], size: int = 100) -> np.ndarray:
    """A size x size patch of vertical stripes whose widths are the fractions of ``size``."""
    image = np.zeros((size, size, 3), np.uint8)
    start = 0
    for colour, fraction in zip(colours, fractions):
        width = round(fraction * size)
        image[:, start:start + width] = colour
        start += width
    assert start == size
    return image


@pytest.mark.parametrize("name", COLOUR_NAMES)
def test_reference_colours_classify_as_themselves(name):
    patch = np.full((4, 4, 3), reference_uint8(name), np.uint8)
    result = lesion_colours(patch, np.ones((4, 4), bool))
    assert result.shares[name] == 1.0
    assert result.present == (name,)
    assert result.count == 1
    assert result.variegation == 0.0


@pytest.mark.parametrize("name", COLOUR_NAMES)
def test_typical_shades_fall_in_their_class(name):
    indices = classify_colours(np.array(SHADES[name], np.uint8))
    assert [COLOUR_NAMES[i] for i in indices] == [name] * len(SHADES[name])


def test_shares_of_a_three_colour_patch():
    colours = [SHADES["light brown"][0], SHADES["dark brown"][0], SHADES["blue-grey"][0]]
    image = striped(colours, [0.5, 0.3, 0.2])
    result = lesion_colours(image, np.ones(image.shape[:2], bool))
    assert result.shares["light brown"] == pytest.approx(0.5)
    assert result.shares["dark brown"] == pytest.approx(0.3)
    assert result.shares["blue-grey"] == pytest.approx(0.2)
    assert sum(result.shares.values()) == pytest.approx(1.0)
    assert result.present == ("light brown", "dark brown", "blue-grey")
    expected = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2)) / math.log(6)
    assert result.variegation == pytest.approx(expected)


def test_a_colour_below_the_threshold_is_not_present():
    image = striped([SHADES["light brown"][0], SHADES["black"][0]], [0.97, 0.03])
    result = lesion_colours(image, np.ones(image.shape[:2], bool))
    assert result.shares["black"] == pytest.approx(0.03)
    assert 0.03 < PRESENT_MIN_SHARE
    assert result.present == ("light brown",)


def test_six_equal_parts_give_full_variegation():
    image = striped([reference_uint8(name) for name in COLOUR_NAMES], [1 / 6] * 6, size=120)
    result = lesion_colours(image, np.ones(image.shape[:2], bool))
    assert result.count == 6
    assert result.variegation == pytest.approx(1.0)


def test_only_lesion_pixels_count():
    image = np.full((20, 20, 3), SHADES["white"][0], np.uint8)
    image[5:15, 5:15] = SHADES["dark brown"][0]
    lesion = np.zeros((20, 20), bool)
    lesion[5:15, 5:15] = True
    assert lesion_colours(image, lesion).present == ("dark brown",)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="empty"):
        lesion_colours(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="differ in size"):
        lesion_colours(np.zeros((4, 4, 3), np.uint8), np.ones((5, 4), bool))
    with pytest.raises(ValueError, match=r"^image must be an \(H, W, 3\) uint8 RGB array, got float32 \(4, 4, 3\)$"):
        lesion_colours(np.zeros((4, 4, 3), np.float32), np.ones((4, 4), bool))
    with pytest.raises(ValueError, match=r"^image must be an \(H, W, 3\) uint8 RGB array, got uint8 \(4, 4\)$"):
        lesion_colours(np.zeros((4, 4), np.uint8), np.ones((4, 4), bool))


def test_measure_lesion_reports_colours_with_the_image():
    image = striped([SHADES["light brown"][0], SHADES["dark brown"][0]], [0.6, 0.4])
    lesion = np.zeros(image.shape[:2], bool)
    lesion[10:90, 10:90] = True
    values = measurements_row(measure_lesion(lesion, image=image))
    assert values["colour_light_brown_percent"] == pytest.approx(100 * 50 / 80)
    assert values["colour_dark_brown_percent"] == pytest.approx(100 * 30 / 80)
    assert values["colour_count"] == 2
    assert "colour_count" not in measurements_row(measure_lesion(lesion))
