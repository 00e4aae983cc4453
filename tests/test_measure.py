"""Tests of moleseg.core.measure: shape and border measurements of a lesion mask."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from moleseg.tools.synthetic import ellipse
from synthetic import disk
from moleseg.core.config import BORDER, EDGE_CONTACT_RATIO
from moleseg.core.edgecontact import edge_contact_ratio, edge_outline_share, extends_beyond_picture
from moleseg.core.contourshape import fractal_dimension
from moleseg.core.measure import Measurement, asymmetry, measure_lesion, measurements_row
from moleseg.core.targets import make_targets


def radial_polygon(radii: np.ndarray, mean_radius: float = 100.0) -> np.ndarray:
    """Filled polygon with vertices at evenly spaced angles and the given relative radii."""
    size = int(2 * mean_radius * radii.max()) + 20
    angles = np.linspace(0, 2 * np.pi, len(radii), endpoint=False)
    centre = size / 2
    points = np.stack([centre + mean_radius * radii * np.cos(angles), centre + mean_radius * radii * np.sin(angles)], 1)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 1, shift=4)
    return mask.astype(bool)


def noisy_blob(seed: int = 0) -> np.ndarray:
    """A ragged lesion: a circle with random radial jitter at 360 vertices."""
    rng = np.random.default_rng(seed)
    return radial_polygon(np.clip(1 + 0.12 * rng.standard_normal(360), 0.6, 1.4))


def row(lesion: np.ndarray, **kwargs) -> dict[str, float]:
    return measurements_row(measure_lesion(lesion, **kwargs))


@pytest.mark.parametrize("radius", [20, 50, 100, 200])
def test_disk_compactness_is_one(radius):
    mask = disk((2 * radius + 11, 2 * radius + 11), (radius + 5, radius + 5), radius)
    values = row(mask)
    assert values["compactness"] == pytest.approx(1.0, abs=0.05)
    assert values["perimeter_px"] == pytest.approx(2 * math.pi * radius, rel=0.03)
    assert values["area_px"] == mask.sum()
    assert values["equivalent_diameter_px"] == pytest.approx(2 * radius, rel=0.01)
    assert values["fractal_dimension"] == pytest.approx(1.0, abs=0.08)
    assert values["n_components"] == 1


def test_irregular_blob_is_less_compact_and_more_fractal_than_a_disk():
    smooth = row(disk((221, 221), (110, 110), 100))
    star = row(radial_polygon(1 + 0.35 * np.sin(8 * np.linspace(0, 2 * np.pi, 720, endpoint=False))))
    ragged = row(noisy_blob())
    assert star["compactness"] > 1.3
    assert ragged["compactness"] > 1.3
    assert ragged["fractal_dimension"] > smooth["fractal_dimension"] + 0.15
    assert star["fractal_dimension"] > smooth["fractal_dimension"]


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0])
def test_ellipse_axes_match_its_diameters(angle):
    values = row(ellipse((260, 260), (130, 130), (90, 40), angle))
    assert values["major_axis_px"] == pytest.approx(180, rel=0.02)
    assert values["minor_axis_px"] == pytest.approx(80, rel=0.02)


def test_symmetric_ellipse_vs_l_shape_asymmetry():
    about_major, about_minor = asymmetry(ellipse((260, 260), (130, 130), (90, 40), 30.0))
    assert about_major < 0.03 and about_minor < 0.03
    l_shape = np.zeros((120, 120), bool)
    l_shape[10:110, 10:35] = True  # long vertical arm
    l_shape[85:110, 10:60] = True  # short horizontal foot
    l_major, l_minor = asymmetry(l_shape)
    assert min(l_major, l_minor) > 0.2
    values = row(l_shape)
    assert (values["asymmetry_major"], values["asymmetry_minor"]) == pytest.approx((l_major, l_minor))


def test_pixel_size_scales_area_by_s_squared_and_lengths_by_s():
    mask = ellipse((200, 200), (100, 100), (70, 40), 20.0)
    band = make_targets(mask, border_width_px=4, shape="disk") == BORDER
    s = 0.02
    values = row(mask, border=band, pixel_size_mm=s)
    assert values["area_mm2"] == pytest.approx(values["area_px"] * s * s)
    lengths = ("perimeter", "equivalent_diameter", "major_axis", "minor_axis", "border_width_mean", "border_width_std")
    for key in lengths:
        assert values[f"{key}_mm"] == pytest.approx(values[f"{key}_px"] * s)
    assert values["compactness"] == pytest.approx(row(mask)["compactness"])


def test_row_columns_and_measurement_fields():
    mask = disk((100, 100), (50, 50), 30)
    measurements = measure_lesion(mask, border=make_targets(mask) == BORDER, pixel_size_mm=0.05)
    assert all(isinstance(m, Measurement) for m in measurements)
    for measurement in measurements:
        assert measurement.key and measurement.label and measurement.meaning
        assert "\n" not in measurement.meaning
        assert measurement.unit in ("px", "mm", "mm2", "")
    values = measurements_row(measurements)
    assert list(values) == [
        "area_px",
        "area_mm2",
        "perimeter_px",
        "perimeter_mm",
        "equivalent_diameter_px",
        "equivalent_diameter_mm",
        "major_axis_px",
        "major_axis_mm",
        "minor_axis_px",
        "minor_axis_mm",
        "compactness",
        "asymmetry_major",
        "asymmetry_minor",
        "fractal_dimension",
        "border_width_mean_px",
        "border_width_mean_mm",
        "border_width_std_px",
        "border_width_std_mm",
        "n_components",
    ]
    assert all(isinstance(value, float) for value in values.values())
    without = row(mask)
    assert "area_mm2" not in without and "border_width_mean_px" not in without


@pytest.mark.parametrize("width", [3, 6, 10])
def test_border_width_of_a_uniform_band(width):
    mask = disk((241, 241), (120, 120), 100)
    band = make_targets(mask, border_width_px=width, shape="disk") == BORDER
    values = row(mask, border=band)
    # A disk-eroded band is w px thick along the axes and ~0.3 px thinner along the diagonals;
    # the estimator reads about 0.45 px under w.
    assert values["border_width_mean_px"] == pytest.approx(width - 0.45, abs=0.3)
    assert values["border_width_std_px"] < 0.5


def test_border_width_of_a_straight_band_is_exact():
    mask = np.zeros((60, 80), bool)
    mask[10:50, :] = True  # runs off the left and right frame: bands only at the top and bottom
    band = make_targets(mask, border_width_px=5, shape="square") == BORDER
    assert band[10:15].all() and band[45:50].all() and band.sum() == 2 * 5 * 80
    values = row(mask, border=band)
    assert values["border_width_mean_px"] == pytest.approx(5.0)
    assert values["border_width_std_px"] == pytest.approx(0.0)


def test_border_width_spread_of_an_uneven_band():
    size = (241, 241)
    mask = disk(size, (120, 120), 80)
    inner = disk(size, (120, 125), 70)  # band 5 px thick on one side, 15 px on the other
    values = row(mask, border=mask & ~inner)
    assert values["border_width_mean_px"] == pytest.approx(10.0, abs=1.0)
    assert values["border_width_std_px"] > 2.5


def test_border_width_edge_cases():
    mask = disk((60, 60), (30, 30), 20)
    assert row(mask, border=np.zeros_like(mask))["border_width_mean_px"] == 0.0
    assert math.isnan(row(mask, border=mask)["border_width_mean_px"])  # all band, no inside
    full = np.ones((30, 30), bool)
    band = np.zeros_like(full)
    band[10:12, 10:12] = True
    assert math.isnan(row(full, border=band)["border_width_mean_px"])  # no outer edge
    with pytest.raises(ValueError, match="differ"):
        measure_lesion(mask, border=np.zeros((5, 5), bool))


def test_components_are_counted():
    mask = disk((100, 200), (50, 50), 30) | disk((100, 200), (50, 150), 20)
    assert row(mask)["n_components"] == 2


def test_tiny_lesion_has_nan_fractal_dimension():
    mask = np.zeros((20, 20), bool)
    mask[5:9, 5:9] = True
    assert math.isnan(fractal_dimension(mask))
    assert math.isnan(row(mask)["fractal_dimension"])


def test_empty_lesion_and_bad_pixel_size_raise():
    with pytest.raises(ValueError, match="empty"):
        measure_lesion(np.zeros((10, 10), bool))
    mask = disk((40, 40), (20, 20), 10)
    for bad in (0.0, -1.0, float("nan"), "0.1", True):
        with pytest.raises(ValueError, match="pixel_size_mm"):
            measure_lesion(mask, pixel_size_mm=bad)


def test_lesion_touching_the_frame_is_measured_as_cut_by_it():
    mask = np.zeros((50, 50), bool)
    mask[0:20, 0:30] = True
    values = row(mask)
    assert values["area_px"] == 600
    # The frame sides count; Crofton reads straight axis-aligned edges about 5 % short.
    assert values["perimeter_px"] == pytest.approx(100.0, rel=0.07)


def test_measurements_row_rejects_duplicate_columns():
    duplicate = [Measurement("area", "Area", 1.0, "px", "x"), Measurement("area", "Area", 2.0, "px", "x")]
    with pytest.raises(ValueError):
        measurements_row(duplicate)


def test_edge_outline_share_of_a_disk_inside_the_picture_is_zero():
    lesion = disk((64, 64), (32, 32), 20)
    assert edge_outline_share(lesion) == 0.0
    assert edge_contact_ratio(lesion) == 0.0  # rows and columns 12..52, clear of the 2 px band (3 % of 64)
    assert not extends_beyond_picture(lesion)


def test_a_mask_filling_the_frame_lies_wholly_on_the_edge():
    lesion = np.ones((40, 60), bool)
    assert edge_outline_share(lesion) == 1.0
    # every position of the four sides (60 + 60 + 40 + 40) over the diameter of a disk of 2,400 px
    assert edge_contact_ratio(lesion) == pytest.approx(200 / (2 * np.sqrt(2400 / np.pi)))
    assert extends_beyond_picture(lesion)


def test_edge_outline_share_counts_outline_pixels_on_the_frame():
    lesion = np.zeros((20, 20), bool)
    lesion[:10] = True  # the top half: outline = row 0, row 9 and both side columns of rows 1..8
    # 56 outline pixels, of which row 0 (20), the side columns of rows 1..8 (16) and the two ends of row 9
    assert edge_outline_share(lesion) == pytest.approx(38 / 56)
    # band 1 px: the top side (20 columns) and rows 0..9 of the left and right sides (10 + 10)
    assert edge_contact_ratio(lesion) == pytest.approx(40 / (2 * np.sqrt(200 / np.pi)))
    assert extends_beyond_picture(lesion)
    assert not extends_beyond_picture(lesion, ratio=2.6)


def test_a_disk_cut_by_one_edge_may_extend_beyond_the_picture():
    lesion = disk((64, 64), (0, 32), 20)  # half a disk against the top edge: its outline is mostly inside
    assert edge_outline_share(lesion) < 0.5
    chord = int(lesion[:2].any(axis=0).sum())  # the columns it reaches within the 2 px band
    assert chord >= 39
    assert edge_contact_ratio(lesion) == pytest.approx(chord / (2 * np.sqrt(lesion.sum() / np.pi)))
    assert extends_beyond_picture(lesion)


def test_a_lesion_a_pixel_short_of_the_frame_still_reaches_it():
    lesion = np.zeros((100, 100), bool)
    lesion[2:60, 20:80] = True  # 2 px below the top edge, inside the 3 px band (3 % of 100)
    assert edge_outline_share(lesion) == 0.0
    assert edge_contact_ratio(lesion) == pytest.approx(60 / (2 * np.sqrt(58 * 60 / np.pi)))
    assert extends_beyond_picture(lesion)


def test_a_disk_grazing_the_edge_is_not_flagged():
    lesion = disk((64, 64), (22, 32), 20)  # its top in row 2, just below the 2 px band (3 % of 64)
    lesion[:2] = False
    lesion[1, 32] = True  # one pixel put into the band: 1 px of edge over a diameter of about 40 px
    assert 0.0 < edge_contact_ratio(lesion) < EDGE_CONTACT_RATIO
    assert not extends_beyond_picture(lesion)


def test_edge_outline_share_of_an_empty_mask_is_zero():
    assert edge_outline_share(np.zeros((8, 8), bool)) == 0.0
