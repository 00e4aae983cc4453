"""Tests of moleseg.core.report: PNG, CSV, one-page PDF, ZIP bundle and atomic writes."""

from __future__ import annotations

import base64
import csv
import io
import math
import os
import re
import zipfile
import zlib
from datetime import datetime, timezone

import numpy as np
import pytest
from PIL import Image

from synthetic import disk
from moleseg.core import atomic
from moleseg.core.atomic import atomic_write
from moleseg.core.measure import Measurement, measure_lesion, measurements_row
from moleseg.core.pdf_report import pdf_report
from moleseg.core.report import (
    DISCLAIMER,
    AnalysisSettings,
    check_archive_name,
    display_unit,
    measurements_csv,
    png_bytes,
    zip_bundle,
)

PAGE_OBJECT = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")


@pytest.fixture
def picture() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)


@pytest.fixture
def measurements() -> list[Measurement]:
    lesion = disk((120, 160), (60, 80), 35)
    return measure_lesion(lesion, pixel_size_mm=0.05)


# --------------------------------------------------------------------------------------------------
# PNG


def test_png_bytes_round_trip(picture):
    data = png_bytes(picture)
    assert data.startswith(b"\x89PNG")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), picture)


# --------------------------------------------------------------------------------------------------
# CSV


def test_csv_parses_back_to_the_same_values():
    rows = [
        {"area_px": 1234.0, "image": "a.jpg", "compactness": 1.0734567891234567},
        {"image": "b ünï,\"quoted\".png", "area_px": 10.5, "extra": 3, "compactness": float("nan")},
    ]
    data = measurements_csv(rows)
    text = data.decode("utf-8")
    parsed = list(csv.DictReader(io.StringIO(text, newline="")))
    assert list(parsed[0].keys()) == ["image", "area_px", "compactness", "extra"]
    assert parsed[0]["image"] == "a.jpg"
    assert float(parsed[0]["area_px"]) == 1234.0
    assert float(parsed[0]["compactness"]) == 1.0734567891234567
    assert parsed[0]["extra"] == ""
    assert parsed[1]["image"] == "b ünï,\"quoted\".png"
    assert float(parsed[1]["area_px"]) == 10.5 and int(parsed[1]["extra"]) == 3
    assert math.isnan(float(parsed[1]["compactness"]))


def test_csv_of_real_measurements(measurements):
    row = {"image": "x.png", **measurements_row(measurements)}
    parsed = list(csv.DictReader(io.StringIO(measurements_csv([row]).decode("utf-8"), newline="")))
    assert len(parsed) == 1
    for key, value in row.items():
        if key == "image":
            assert parsed[0][key] == value
        elif math.isnan(value):
            assert math.isnan(float(parsed[0][key]))
        else:
            assert float(parsed[0][key]) == value


def test_csv_defuses_formulas_but_keeps_negative_numbers():
    parsed = list(csv.reader(io.StringIO(measurements_csv([{"image": "=HYPERLINK(1)", "v": -2.5, "t": "-3"}])
                                         .decode("utf-8"), newline="")))
    assert parsed[1] == ["'=HYPERLINK(1)", "-2.5", "-3"]


def test_csv_edge_cases():
    assert measurements_csv([]) == b"\r\n"
    with pytest.raises(TypeError):
        measurements_csv([["not", "a", "dict"]])  # type: ignore[list-item]


# --------------------------------------------------------------------------------------------------
# PDF


def test_display_units():
    assert display_unit("area", "mm2") == "mm\u00b2"
    assert display_unit("area", "px") == "px\u00b2"
    assert display_unit("perimeter", "px") == "px"


def _page_count(pdf: bytes) -> int:
    return len(PAGE_OBJECT.findall(pdf))


def test_pdf_is_one_page_with_images(picture, measurements):
    pdf = pdf_report(
        image=picture,
        overlay=picture[::-1],
        measurements=measurements,
        image_name="IMD004.jpg",
        settings=AnalysisSettings("classical", "0.1.0"),
        created=datetime(2024, 5, 6, 7, 8, tzinfo=timezone.utc),
        notes="Left forearm <b>&</b> follow-up.",
    )
    assert pdf.startswith(b"%PDF")
    assert pdf.rstrip().endswith(b"%%EOF")
    assert _page_count(pdf) == 1
    assert len(re.findall(rb"/Subtype\s*/Image", pdf)) >= 2
    assert b"/MediaBox [ 0 0 595.2756 841.8898 ]" in pdf  # A4


def _page_text(pdf: bytes) -> bytes:
    """Flate streams of the PDF (reportlab wraps them in ASCII85), inflated: the page's text is there."""
    text = b""
    for stream in re.findall(rb"stream\r?\n(.*?)endstream", pdf, flags=re.DOTALL):
        data = stream.strip()
        if data.endswith(b"~>"):
            try:
                data = base64.a85decode(data[:-2])
            except ValueError:
                continue
        try:
            text += zlib.decompress(data)
        except zlib.error:
            continue
    return text


def test_pdf_text_mentions_model_date_and_disclaimer(picture, measurements):
    pdf = pdf_report(image=picture, overlay=picture, measurements=measurements, image_name="mole-17.jpg",
                     settings=AnalysisSettings("classical", "9.9.1"), created=datetime(2024, 5, 6, 7, 8))
    text = _page_text(pdf)
    for expected in (b"Lesion border analysis", b"mole-17.jpg", b"classical", b"9.9.1", b"2024-05-06 07:08",
                     b"Measurements", b"Compactness index", b"Research software",
                     DISCLAIMER.split("\u2014")[1].strip().encode()):
        assert expected in text, expected


def test_a_cells_report_is_titled_for_cells(picture, measurements):
    pdf = pdf_report(image=picture, overlay=picture, measurements=measurements, image_name="field-3.png",
                     settings=AnalysisSettings("cells", None), n_classes=2)
    text = _page_text(pdf)
    assert b"Cell segmentation analysis" in text and b"Lesion border analysis" not in text
    assert b"Lesion border analysis" in _page_text(pdf_report(image=picture, overlay=picture, measurements=measurements,
                                                              image_name="m.png", settings=AnalysisSettings("m", None),
                                                              n_classes=3))


def test_pdf_stays_on_one_page_when_long(picture, measurements):
    many = measurements * 6
    pdf = pdf_report(
        image=np.zeros((2000, 300, 3), np.uint8),  # very tall picture
        overlay=picture,
        measurements=many,
        image_name="x" * 300,
        settings=AnalysisSettings("m", None),
        notes="a very long note " * 500,
    )
    assert _page_count(pdf) == 1


def test_pdf_shrinks_before_it_leaves_measurements_out(picture, measurements):
    def left_out(pdf: bytes) -> int:
        found = re.search(rb"(\d+) more measurement", _page_text(pdf))
        return int(found.group(1)) if found else 0

    twice = pdf_report(image=picture, overlay=picture, measurements=measurements * 2, image_name="a",
                       settings=AnalysisSettings("m", "1"))
    assert _page_count(twice) == 1 and left_out(twice) == 0  # all rows there
    many = measurements * 6
    crowded = pdf_report(image=np.zeros((2000, 300, 3), np.uint8), overlay=picture, measurements=many,
                         image_name="a", settings=AnalysisSettings("m", "1"), notes="a very long note " * 500)
    assert _page_count(crowded) == 1 and 0 < left_out(crowded) < len(many)


def test_pdf_accepts_grey_and_unicode(measurements):
    grey = np.full((50, 70), 128, np.uint8)
    pdf = pdf_report(image=grey, overlay=grey, measurements=measurements[:2], image_name="läsion 病変.png",
                     settings=AnalysisSettings("classical", "1"))
    assert _page_count(pdf) == 1


def test_pdf_refuses_bad_images(measurements):
    with pytest.raises(ValueError):
        pdf_report(image=np.zeros((10, 10, 3), np.float32), overlay=np.zeros((10, 10, 3), np.uint8),
                   measurements=measurements, image_name="a", settings=AnalysisSettings("m", "1"))


# --------------------------------------------------------------------------------------------------
# ZIP


def test_zip_round_trip():
    files = {"report.pdf": b"%PDF-1.4 fake", "masks/a.png": bytes(range(256)) * 100, "measurements.csv": b"a,b\r\n"}
    data = zip_bundle(files)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == list(files)
        for name, content in files.items():
            assert archive.read(name) == content
            assert archive.getinfo(name).compress_type == zipfile.ZIP_DEFLATED
        assert archive.testzip() is None


@pytest.mark.parametrize(
    "name", ["../evil.txt", "a/../../b", "/etc/passwd", "C:evil", "a\\b.txt", "", "a//b", "./a", "a/\x00b"]
)
def test_zip_refuses_unsafe_names(name):
    with pytest.raises(ValueError):
        zip_bundle({name: b"x"})
    with pytest.raises(ValueError):
        check_archive_name(name)


def test_zip_refuses_colliding_names_and_non_bytes():
    with pytest.raises(ValueError, match="collide"):
        zip_bundle({"A.png": b"1", "a.png": b"2"})
    with pytest.raises(TypeError):
        zip_bundle({"a.txt": "text"})  # type: ignore[dict-item]


# --------------------------------------------------------------------------------------------------
# atomic_write


def _leftovers(folder) -> list[str]:
    return [name for name in os.listdir(folder) if name.startswith(atomic.TEMPORARY_PREFIX)]


def test_atomic_write_writes_and_replaces(tmp_path):
    target = tmp_path / "out.bin"
    assert atomic_write(target, b"first") == target
    assert target.read_bytes() == b"first"
    atomic_write(str(target), bytearray(b"second"))
    assert target.read_bytes() == b"second"
    assert _leftovers(tmp_path) == []


def test_atomic_write_keeps_the_old_file_when_replace_fails(tmp_path, monkeypatch):
    target = tmp_path / "out.csv"
    target.write_bytes(b"old content")

    def failing_replace(source, destination):
        raise OSError("simulated failure")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        atomic_write(target, b"new content")
    assert target.read_bytes() == b"old content"
    assert _leftovers(tmp_path) == []


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "out.csv"
    target.write_bytes(b"old content")
    real_fsync = os.fsync

    def failing_fsync(descriptor):
        real_fsync(descriptor)
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, b"new content that never lands")
    assert target.read_bytes() == b"old content"
    assert _leftovers(tmp_path) == []


def test_atomic_write_refuses_non_bytes(tmp_path):
    target = tmp_path / "out.txt"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        atomic_write(target, "text")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []
    with pytest.raises(OSError):
        atomic_write(tmp_path / "missing" / "x.bin", b"1")


@pytest.mark.parametrize("threshold, words", [(0.65, "lesion where its probability \u2265 0.65"),
                                              (None, "most likely class")])
def test_the_report_and_the_model_s_decision_say_the_lesion_threshold_in_the_same_words(threshold, words):
    from moleseg.app.models import decision_text

    assert dict(AnalysisSettings("m", lesion_threshold=threshold).lines())["Lesion threshold"] == words
    assert decision_text({"lesion_threshold": threshold}) == f"{words}, no flips"
