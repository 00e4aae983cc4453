"""The second moments behind the ellipse axes and the asymmetry (:mod:`moleseg.core.measure`): OpenCV's exact
sums of a mask's coordinates, the pixel-list path taken past float64's exact integers, and scikit-image's values,
on tiny masks of any shape (one pixel, lines, masks touching the frame, strided views)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.measure import regionprops

from moleseg.core import measure
from moleseg.core.measure import ellipse_axes, measure_lesion

#: The measurements made from the moments.
FROM_MOMENTS = ("major_axis", "minor_axis", "asymmetry_major", "asymmetry_minor")

masks = st.tuples(st.integers(1, 14), st.integers(1, 14)).flatmap(
    lambda shape: arrays(bool, shape, elements=st.booleans())).filter(np.any)


def from_moments(lesion: np.ndarray) -> dict[str, float]:
    return {m.key: m.value for m in measure_lesion(lesion) if m.key in FROM_MOMENTS}


@settings(max_examples=80, deadline=None, database=None)
@given(lesion=masks, step=st.sampled_from([1, 2]))
def test_the_moments_from_opencv_equal_those_of_the_pixel_list_bit_for_bit(lesion, step):
    wide = np.zeros((lesion.shape[0], lesion.shape[1] * step), bool)
    wide[:, ::step] = lesion
    view = wide[:, ::step]  # a strided view: the same mask
    found = from_moments(view)
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(measure, "EXACT_FLOAT64_INTEGER", 0)  # every mask through the pixel list
        assert from_moments(view) == found
    rows, cols = np.nonzero(lesion)
    assert (found["major_axis"], found["minor_axis"]) == ellipse_axes(rows, cols)
    region = regionprops(lesion.astype(np.uint8))[0]
    np.testing.assert_allclose([found["major_axis"], found["minor_axis"]],
                               [region.axis_major_length, region.axis_minor_length], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("rows, cols, major, minor", [
    (slice(3, 4), slice(5, 6), 0.0, 0.0),  # one pixel
    (slice(0, 1), slice(0, 10), 4 * np.sqrt(99 / 12), 0.0),  # a row along the frame: variance (10**2 - 1) / 12
    (slice(0, 10), slice(9, 10), 4 * np.sqrt(99 / 12), 0.0),  # a column along the frame
    (slice(0, 10), slice(0, 10), 4 * np.sqrt(99 / 12), 4 * np.sqrt(99 / 12)),  # the whole frame
])
def test_the_axes_of_a_pixel_a_line_and_the_whole_frame(rows, cols, major, minor):
    lesion = np.zeros((10, 10), bool)
    lesion[rows, cols] = True
    found = from_moments(lesion)
    np.testing.assert_allclose([found["major_axis"], found["minor_axis"]], [major, minor], rtol=1e-12, atol=1e-12)
