"""Tests of moleseg.core.objects (counting and measuring cells / nuclei) and of the rounded measurement values."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from moleseg.core.measure import UNIT_DECIMALS, Measurement, measure_lesion, measurements_row
from moleseg.core.objects import field_measurements, find_objects, object_rows
from moleseg.core.report import measurements_csv

#: (centre row, centre column, radius) of the synthetic nuclei, px (radii of 14 px and more: a digital disk's
#: area is then within 1 % of pi r^2).
DISCS = [(40, 40, 14), (40, 120, 20), (130, 50, 30), (140, 150, 15), (200, 220, 25), (60, 220, 18)]


def _field(discs=DISCS, shape=(260, 280)) -> np.ndarray:
    """Disks of pixels whose centres lie within ``radius`` of the centre."""
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    mask = np.zeros(shape, dtype=bool)
    for row, col, radius in discs:
        mask |= (rows - row) ** 2 + (cols - col) ** 2 <= radius**2
    return mask


def test_n_discs_of_known_radii_give_n_objects_with_their_areas_within_2_percent():
    objects = find_objects(_field())
    assert len(objects) == len(DISCS)
    by_centre = {(round(o.centroid_y_px), round(o.centroid_x_px)): o for o in objects}
    for row, col, radius in DISCS:
        found = by_centre[(row, col)]
        assert found.area_px == pytest.approx(math.pi * radius**2, rel=0.02)
        assert found.equivalent_diameter_px == pytest.approx(2 * radius, rel=0.01)
        assert found.perimeter_px == pytest.approx(2 * math.pi * radius, rel=0.05)


def test_field_measurements_count_cover_and_spread():
    mask = _field()
    objects = find_objects(mask)
    values = measurements_row(field_measurements(objects, mask.size, pixel_size_mm=0.01))
    areas = np.array([o.area_px for o in objects], dtype=float)
    assert values["object_count"] == 6
    assert values["coverage_percent"] == pytest.approx(100 * mask.sum() / mask.size)
    assert values["object_area_mean_px2"] == pytest.approx(areas.mean())
    assert values["object_area_median_px2"] == pytest.approx(np.median(areas))
    assert values["object_area_std_px2"] == pytest.approx(areas.std())
    assert values["object_area_min_px2"] == areas.min() and values["object_area_max_px2"] == areas.max()
    assert values["object_area_mean_mm2"] == pytest.approx(areas.mean() * 1e-4)
    empty = measurements_row(field_measurements([], 100))
    assert empty["object_count"] == 0 and math.isnan(empty["object_area_mean_px2"])


def test_small_objects_can_be_left_out_and_touching_ones_count_once():
    mask = _field([(50, 50, 10), (50, 69, 10), (120, 120, 2)], shape=(160, 160))  # the first two touch
    assert len(find_objects(mask)) == 2
    assert len(find_objects(mask, min_area_px=20)) == 1
    with pytest.raises(ValueError, match="min_area_px"):
        find_objects(mask, min_area_px=0)


def test_object_rows_are_rounded_per_quantity():
    rows = object_rows(find_objects(_field()), image="nuclei.png", pixel_size_mm=0.0123)
    assert len(rows) == 6 and rows[0]["image"] == "nuclei.png" and rows[0]["object"] == 1
    for row in rows:
        assert isinstance(row["area_px2"], int)
        assert row["equivalent_diameter_px"] == round(row["equivalent_diameter_px"], 1)
        assert row["area_mm2"] == round(row["area_mm2"], 6) and row["perimeter_mm"] == round(row["perimeter_mm"], 3)


def test_rounded_measurements_in_the_csv_have_no_long_floats():
    mask = _field([(60, 60, 33)], shape=(130, 130))
    measurements = measure_lesion(mask, pixel_size_mm=0.0377)
    row = measurements_row(measurements, rounded=True)
    assert isinstance(row["area_px"], int) and row["area_px"] == int(mask.sum())
    assert row["perimeter_px"] == round(measurements_row(measurements)["perimeter_px"], 1)
    assert row["compactness"] == round(measurements_row(measurements)["compactness"], 3)
    assert row["n_components"] == 1 and isinstance(row["n_components"], int)
    text = measurements_csv([{"image": "a.png", **row}]).decode()
    parsed = next(csv.DictReader(io.StringIO(text)))
    for column, value in parsed.items():
        if column != "image" and value != "nan":
            decimals = len(value.split(".")[1]) if "." in value else 0
            assert decimals <= max(UNIT_DECIMALS.values()), (column, value)  # a lesion's area: not a small one
    assert "." not in parsed["area_px"]


def test_headings_and_texts_are_for_people():
    area = Measurement("area", "Area", 1234.4, "px", "")
    assert area.heading == "Area (px\u00b2)" and area.text == "1,234" and area.rounded == 1234
    assert Measurement("perimeter", "Perimeter", 12.3456, "mm", "").text == "12.346"
    assert Measurement("compactness", "Compactness index", 1.23456, "", "").heading == "Compactness index"
    assert Measurement("compactness", "Compactness index", float("nan"), "", "").text == "\u2014"


def test_a_nucleus_area_in_mm2_is_not_rounded_away():
    # a nucleus of radius 3 px at 1 µm per pixel: 29 px² = 29 µm² = 0.000029 mm² (written as 0.0 at 0.0001 mm²)
    mask = _field([(20, 20, 3)], shape=(40, 40))
    rows = object_rows(find_objects(mask), image="nuclei.png", pixel_size_mm=0.001)
    area_px2 = int(mask.sum())
    assert rows[0]["area_px2"] == area_px2
    assert rows[0]["area_mm2"] == pytest.approx(area_px2 * 1e-6) and rows[0]["area_mm2"] > 0


def test_a_lesion_area_keeps_four_decimals_and_a_nucleus_six():
    assert Measurement("area", "Area", 42.02204, "mm2", "").text == "42.0220"
    assert Measurement("area", "Area", 0.0000284, "mm2", "").text == "0.000028"
    assert Measurement("area", "Area", 0.0000284, "mm2", "").rounded == 0.000028
