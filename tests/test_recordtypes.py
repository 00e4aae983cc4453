"""Tests of moleseg.engine.recordtypes: a record's columns are its fields, its measurements' JSON keeps a value
that is not finite, and the checks of the text and date typed for a visit. No database here (tests/test_records.py
saves and reads them)."""

from __future__ import annotations

import json
import math
from dataclasses import fields
from datetime import date, datetime

import pytest

from moleseg.core.measure import Measurement
from moleseg.engine.recordtypes import RECORD_COLUMNS, Record, clean_text, encode_measurements, visit_date_text


def test_the_columns_of_a_record_are_its_fields_in_order():
    assert RECORD_COLUMNS == tuple(field.name for field in fields(Record))


def test_a_measurement_that_is_not_finite_is_stored_as_null():
    text = encode_measurements([Measurement("area", "Area", math.nan, "mm2", "its size"),
                                Measurement("count", "Count", 2.0, "", "how many")])
    assert json.loads(text) == [{"key": "area", "label": "Area", "value": None, "unit": "mm2", "meaning": "its size"},
                                {"key": "count", "label": "Count", "value": 2.0, "unit": "", "meaning": "how many"}]


def test_typed_text_is_stripped_and_its_length_checked():
    assert (clean_text("  left arm \n", "the body site"), clean_text(None, "the notes")) == ("left arm", "")
    assert clean_text("x" * 5, "the lesion identifier", 5) == "xxxxx"
    with pytest.raises(ValueError, match="^the lesion identifier is longer than 5 characters$"):
        clean_text("x" * 6, "the lesion identifier", 5)


def test_a_visit_date_becomes_iso_text():
    assert visit_date_text(date(2026, 3, 4)) == "2026-03-04"
    assert visit_date_text(datetime(2026, 3, 4, 23, 59)) == "2026-03-04"
    assert visit_date_text(" 2026-03-04 ") == "2026-03-04"
    with pytest.raises(ValueError, match=r"^visit date '4 March' is not a date \(YYYY-MM-DD\)$"):
        visit_date_text("4 March")
