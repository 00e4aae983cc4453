"""Reports a clinic can file: the PDF names the settings, the visit and the identifier, draws a scale bar,
puts px and mm side by side; the CSV's JSON sidecar holds each row's settings and visit."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from datetime import date, datetime, timezone

import numpy as np
import pytest

from synthetic import disk, mole_image
from moleseg.app.analysis import ImageOutcome
from moleseg.app.results import batch_bundle
from moleseg.core.cleanup import CleanupSettings
from moleseg.core.measure import measure_lesion
from moleseg.core.pdf_report import measurement_lines, pdf_report
from moleseg.core.render import scale_bar_length_mm, with_scale_bar
from moleseg.core.report import (
    AnalysisSettings,
    Visit,
    settings_sidecar,
    sidecar_name,
)
from moleseg.engine.records import Records
from moleseg.engine.recordtypes import User

pypdf = pytest.importorskip("pypdf")

SETTINGS = AnalysisSettings(model_name="dermoscopy", model_version="1.2.0",
                            cleanup=CleanupSettings(closing_radius_px=11, border_width_px=5).to_dict(),
                            lesion_threshold=0.45, pixel_size_mm=0.05, corrected_by_hand=True)
VISIT = Visit.of("left shoulder 1", date(2026, 5, 6), "back", "stable since March")


def pdf_text(pdf: bytes) -> str:
    pages = pypdf.PdfReader(io.BytesIO(pdf)).pages
    assert len(pages) == 1
    return pages[0].extract_text()


@pytest.fixture
def lesion_and_image() -> tuple[np.ndarray, np.ndarray]:
    return mole_image(seed=4)[::-1]


def test_pdf_names_the_settings_the_visit_and_the_identifier(lesion_and_image):
    lesion, image = lesion_and_image
    measurements = measure_lesion(lesion, pixel_size_mm=SETTINGS.pixel_size_mm, image=image)
    pdf = pdf_report(image=image, overlay=image, measurements=measurements, image_name="IMD004.jpg",
                     settings=SETTINGS, visit=VISIT, created=datetime(2026, 5, 6, 9, 30, tzinfo=timezone.utc),
                     notes="lesion corrected by hand")
    text = pdf_text(pdf)
    for expected in ("Image: IMD004.jpg", "Patient / lesion: left shoulder 1", "Visit date: 2026-05-06",
                     "Body site: back", "Report made: 2026-05-06 09:30 UTC", "Model: dermoscopy (1.2.0)",
                     "rule article", "closing 11 px", "border 5 px (diamond)", "fill holes on",
                     "largest component only", "probability \u2265 0.45", "Pixel size: 0.05 mm per px",
                     "Corrected by hand: yes", "stable since March", "lesion corrected by hand", "scale bar"):
        assert expected in text, expected


def test_pdf_puts_px_and_mm_side_by_side_in_one_row(lesion_and_image):
    lesion, image = lesion_and_image
    measurements = measure_lesion(lesion, pixel_size_mm=0.05)
    area_px = next(m.value for m in measurements if m.key == "area" and m.unit == "px")
    pdf = pdf_report(image=image, overlay=image, measurements=measurements, image_name="a.png", settings=SETTINGS)
    lines = pdf_text(pdf).splitlines()
    assert sum(line.strip() == "Area" for line in lines) == 1  # one row, not one per unit
    row = lines[lines.index("Area") + 1: lines.index("Area") + 3]
    assert [cell.strip() for cell in row] == [f"{int(area_px):,} px\u00b2", f"{area_px * 0.05 ** 2:.4f} mm\u00b2"]
    assert "In mm" in lines[lines.index("Measurements") + 1: lines.index("Area")][2]


def test_pdf_and_history_show_each_value_as_the_analyse_page_and_the_csv_do(lesion_and_image):
    """The PDF and the History table printed values to 3-4 figures (compactness 1.23, a colour share
    0.00164 %) where the Analyse page and the CSV round per quantity (1.233, 0.0 %): the same lesion read
    differently on paper and on screen."""
    from moleseg.app import followup

    lesion, image = lesion_and_image
    measurements = measure_lesion(lesion, pixel_size_mm=0.05, image=image)
    text = pdf_text(pdf_report(image=image, overlay=image, measurements=measurements, image_name="a.png",
                               settings=SETTINGS))
    lines = [line.strip() for line in text.splitlines()]
    assert [row["value"] for row in followup.measurement_rows(measurements)] == [m.text for m in measurements]
    for m in measurements:
        if m.unit in ("mm", "mm2") or m.key in ("compactness", "asymmetry_major", "fractal_dimension"):
            assert any(line.startswith(m.text) for line in lines), (m.label, m.text)


def test_measurement_lines_pair_each_length_with_its_mm_value():
    measurements = measure_lesion(disk((100, 100), (50, 50), 30), pixel_size_mm=0.1)
    lines = measurement_lines(measurements)
    assert len(lines) == len({m.key for m in measurements})  # one line per key
    area = next(line for line in lines if line.key == "area")
    assert (area.unit, area.unit_mm) == ("px\u00b2", "mm\u00b2")
    assert area.value_mm == pytest.approx(area.value * 0.01)
    perimeter = next(line for line in lines if line.key == "perimeter")
    assert perimeter.value_mm == pytest.approx(perimeter.value * 0.1)
    compactness = next(line for line in lines if line.key == "compactness")
    assert compactness.value_mm is None and compactness.unit == ""
    without = measurement_lines(measure_lesion(disk((100, 100), (50, 50), 30)))
    assert all(line.value_mm is None for line in without)


def test_pdf_without_pixel_size_has_no_mm_column_and_no_scale_bar(lesion_and_image):
    lesion, image = lesion_and_image
    pdf = pdf_report(image=image, overlay=image, measurements=measure_lesion(lesion), image_name="a.png",
                     settings=AnalysisSettings("classical"))
    text = pdf_text(pdf)
    assert "In mm" not in text and "scale bar" not in text
    assert "Pixel size: unknown" in text and "Corrected by hand: no" in text and "(unknown version)" in text
    assert "Patient / lesion" not in text  # nothing printed that was not given


def test_scale_bar_is_as_long_as_it_says():
    picture = np.full((300, 500, 3), 100, np.uint8)
    length_mm = scale_bar_length_mm(500, 0.02)
    assert length_mm == 2.0  # a fifth of 10 mm, a nice number
    assert scale_bar_length_mm(768, 0.01) == 1.0 and scale_bar_length_mm(768, 0.015) == 2.0
    drawn = with_scale_bar(picture, 0.02)
    white_rows = (drawn == 255).all(axis=2)
    bar_row = np.argmax(white_rows.sum(axis=1))
    assert white_rows[bar_row].sum() == round(length_mm / 0.02)  # 100 px
    assert (picture == 100).all()  # the input is untouched
    with pytest.raises(ValueError):
        with_scale_bar(picture, 0.0)


def test_sidecar_holds_each_rows_settings_and_visit():
    data = settings_sidecar("measurements.csv", [("a.jpg", SETTINGS, VISIT), ("bad.png", None, None)],
                            created=datetime(2026, 5, 6, 9, 30, tzinfo=timezone.utc))
    document = json.loads(data)
    assert document["csv"] == "measurements.csv" and document["created"] == "2026-05-06T09:30:00+00:00"
    first = document["images"][0]
    assert first["image"] == "a.jpg"
    assert first["settings"] == {"model_name": "dermoscopy", "model_version": "1.2.0",
                                 "cleanup": SETTINGS.cleanup, "lesion_threshold": 0.45, "pixel_size_mm": 0.05,
                                 "corrected_by_hand": True}
    assert first["visit"] == {"lesion": "left shoulder 1", "visit_date": "2026-05-06", "body_site": "back",
                              "notes": "stable since March"}
    assert document["images"][1] == {"image": "bad.png", "settings": None, "visit": None}
    assert sidecar_name("measurements.csv") == "measurements.settings.json"


def test_batch_bundle_has_the_csv_its_sidecar_and_the_visit(lesion_and_image):
    from moleseg.core.classical import ClassicalSegmenter
    from moleseg.engine.batches import analyse_images

    _, image = lesion_and_image
    segmenter = ClassicalSegmenter()
    analysis = analyse_images(segmenter, [image], pixel_size_mm=0.04, lesion_threshold=None)[0]
    outcome = ImageOutcome(name="mole.png", analysis=analysis, stem="mole", key="k1")
    bundle = zipfile.ZipFile(io.BytesIO(batch_bundle([outcome], segmenter.name, "0.3", visits={"k1": VISIT})))
    rows = list(csv.DictReader(io.StringIO(bundle.read("measurements.csv").decode(), newline="")))
    assert rows[0]["lesion"] == "left shoulder 1" and rows[0]["visit_date"] == "2026-05-06"
    sidecar = json.loads(bundle.read("measurements.settings.json"))
    settings = sidecar["images"][0]["settings"]
    assert settings["model_name"] == segmenter.name and settings["model_version"] == "0.3"
    assert settings["pixel_size_mm"] == 0.04 and settings["cleanup"] == analysis.segmentation.settings.to_dict()
    text = pdf_text(bundle.read("mole/mole_report.pdf"))
    assert "Patient / lesion: left shoulder 1" in text and "Pixel size: 0.04 mm per px" in text


def test_history_export_has_a_sidecar_and_its_pdf_the_identifier(tmp_path, lesion_and_image):
    lesion, image = lesion_and_image
    records, user = Records(tmp_path), User("clinician")
    record_id = records.save(user, image, lesion, measure_lesion(lesion, pixel_size_mm=0.05), lesion="arm 2",
                             visit_date="2026-01-02", notes="first visit", image_name="m.png",
                             model_name="classical", model_version="0.1", cleanup={"rule": "article"},
                             lesion_threshold=None, pixel_size_mm=0.05, corrected=True)
    archive = zipfile.ZipFile(io.BytesIO(records.export(user, record_id)))
    sidecar = json.loads(archive.read(f"record_{record_id}_measurements.settings.json"))
    assert sidecar["csv"] == f"record_{record_id}_measurements.csv"
    assert sidecar["images"][0]["settings"]["corrected_by_hand"] is True
    assert sidecar["images"][0]["visit"]["lesion"] == "arm 2"
    record = records.record(user, record_id)
    text = pdf_text(pdf_report(image=image, overlay=image, measurements=record.measurements, image_name="m.png",
                               settings=record.settings(), visit=record.visit()))
    assert "Patient / lesion: arm 2" in text and "Visit date: 2026-01-02" in text and "first visit" in text
    assert "Corrected by hand: yes" in text and "most likely class" in text


def test_the_analyse_page_history_and_pdf_describe_a_cleanup_in_the_same_words():
    from moleseg.core.report import cleanup_text, threshold_text

    settings = CleanupSettings(closing_radius_px=11, border_width_px=5, largest_component=False).to_dict()
    assert cleanup_text(settings) == ("rule article, closing 11 px, border 5 px (diamond), fill holes on, every "
                                      "component kept")
    assert dict(AnalysisSettings(model_name="m", cleanup=settings).lines())["Cleanup"] == cleanup_text(settings)
    assert cleanup_text({}) == "\u2014" and threshold_text(None) == "most likely class"
    assert threshold_text(0.45, "cells") == "cells where its probability \u2265 0.45"
