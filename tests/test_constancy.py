"""Colour constancy (moleseg.core.constancy): a grey light leaves an image alone, a coloured light's cast is
removed, and the edge cases (black image, bad power or shape, unknown method) are handled."""

from __future__ import annotations

import numpy as np
import pytest

from moleseg.core.constancy import COLOUR_CONSTANCY_METHODS, correct_colour, illuminant, shades_of_grey


def _grey_scene(seed: int = 0) -> np.ndarray:
    """A neutral scene: random grey levels 0..150, the three channels equal."""
    grey = np.random.default_rng(seed).integers(0, 151, (40, 50)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def test_a_grey_light_leaves_the_image_as_it_is():
    scene = _grey_scene()
    np.testing.assert_allclose(illuminant(scene), np.full(3, 1 / np.sqrt(3)), atol=1e-7)
    np.testing.assert_array_equal(shades_of_grey(scene), scene)


def test_a_coloured_light_s_cast_is_removed():
    scene = _grey_scene()
    light = np.array([1.2, 1.0, 0.7])
    cast = np.clip(np.rint(scene * light), 0, 255).astype(np.uint8)
    np.testing.assert_allclose(illuminant(cast), light / np.linalg.norm(light), atol=3e-3)
    corrected = shades_of_grey(cast).astype(int)
    # every channel becomes the grey level times |light| / sqrt(3) = 0.988 (rounding: within 2 levels)
    expected = scene[..., 0] * np.linalg.norm(light) / np.sqrt(3)
    for channel in range(3):
        assert np.abs(corrected[..., channel] - expected).max() <= 2
    assert np.abs(cast[..., 0].astype(int) - cast[..., 2]).max() > 40  # the cast was there


def test_max_rgb_black_images_and_bad_input():
    image = np.zeros((4, 4, 3), np.uint8)
    image[0, 0] = (200, 100, 50)
    np.testing.assert_allclose(illuminant(image, np.inf), np.array([200, 100, 50]) / np.linalg.norm([200, 100, 50]))
    black = np.zeros((8, 8, 3), np.uint8)
    np.testing.assert_array_equal(shades_of_grey(black), black)
    with pytest.raises(ValueError, match="at least 1"):
        illuminant(image, 0.5)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        illuminant(np.zeros((8, 8), np.uint8))


def test_correct_colour_dispatches_by_method():
    scene = np.clip(_grey_scene(1) * np.array([1.0, 0.8, 0.6]), 0, 255).astype(np.uint8)
    assert COLOUR_CONSTANCY_METHODS == ("none", "shades_of_grey")
    assert correct_colour(scene, "none") is scene
    np.testing.assert_array_equal(correct_colour(scene, "shades_of_grey"), shades_of_grey(scene))
    with pytest.raises(ValueError, match="unknown colour constancy 'gray_world'"):
        correct_colour(scene, "gray_world")
