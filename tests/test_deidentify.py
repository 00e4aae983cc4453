"""Exports without names (:mod:`moleseg.app.deidentify`): with the Analyse page's switch on, no download names an
image after its file or prints the visit's identifier, notes or full date (clinicians name files after patients);
with it off every export is as before. Each export is read back whole: the ZIP's members and bytes, the CSV, the
sidecar, the PDF's drawn text and metadata, the outline files."""

from __future__ import annotations

import csv
import io
import json
import zipfile

from synthetic import mole_image, png_bytes
from test_dicom_names import pdf_words, unzipped

from moleseg.app.analysis import ImageOutcome, Upload
from moleseg.app.deidentify import UNREAD_WORD, neutral_outcomes, neutral_visit, neutral_visits
from moleseg.app.exports import LatestResults, Shown, export_stem, outline_buttons, without_names
from moleseg.core.classical import ClassicalSegmenter
from moleseg.core.dataset import image_sha256
from moleseg.core.dicomexport import neutral_name
from moleseg.core.report import Visit
from moleseg.engine.batches import analyse_images

NAME = "Mueller_Anna_1961.png"
VISIT = Visit(lesion="MRN 4711 Anna Mueller", visit_date="2026-03-14", body_site="left shoulder",
              notes="seen by Dr Schmidt")
#: What must not leave without names (lower case): the file's stem, the surname, the record number, the note's name,
#: the visit's month and day.
SECRETS = ("mueller", "4711", "schmidt", "2026-03-14", "03-14")


def published(names: tuple[str, ...], *, failed: str | None = None) -> tuple[LatestResults, list[ImageOutcome]]:
    """The Analyse page's latest results of mole pictures uploaded as ``names`` (the classical model), the first in
    view, and with ``failed`` a file that could not be read."""
    segmenter = ClassicalSegmenter()
    outcomes, uploads = [], []
    for seed, name in enumerate(names):
        image = mole_image(seed=seed)[0]
        upload = Upload(name, png_bytes(image))
        analysis = analyse_images(segmenter, [image], pixel_size_mm=0.02, lesion_threshold=None)[0]
        outcomes.append(ImageOutcome(name=name, analysis=analysis, stem=name.rsplit(".", 1)[0], key=upload.key))
        uploads.append(upload)
    if failed is not None:
        upload = Upload(failed, b"not an image")
        outcomes.append(ImageOutcome(name=failed, error=f"{failed}: cannot read it (not an image)", stem="x",
                                     key=upload.key))
    latest = LatestResults()
    latest.publish(Shown(tuple(outcomes), outcomes[0], uploads[0], segmenter.name, "0.1"))
    return latest, outcomes


def said(files: dict[str, bytes]) -> str:
    """Every member's name and bytes (latin-1) and what each PDF says, lower case."""
    parts: list[str] = []
    for name, data in files.items():
        parts += [name, data.decode("latin-1")]
        if name.endswith(".pdf"):
            parts += pdf_words(data)
    return "\n".join(parts).lower()


def test_neutral_outcomes_name_each_image_after_its_pixels_and_keep_stems_apart():
    latest, outcomes = published(("a.PNG", "b.png"), failed="Mueller.jpg")
    twin = ImageOutcome(name="copy of a.png", analysis=outcomes[0].analysis, stem="copy_of_a", key="k")
    neutral = neutral_outcomes([*outcomes, twin])
    first = neutral_name(image_sha256(outcomes[0].analysis.image))
    assert [o.name for o in neutral] == [f"{first}.png", f"{neutral_name(image_sha256(outcomes[1].analysis.image))}.png",
                                         f"{UNREAD_WORD}-{outcomes[2].key[:8]}.jpg", f"{first}.png"]
    assert [o.stem for o in neutral] == [first, neutral[1].name[:-4], neutral[2].name[:-4], f"{first}_2"]
    assert neutral[2].error == f"{UNREAD_WORD}-{outcomes[2].key[:8]}.jpg: cannot read it (not an image)"
    assert [o.analysis for o in neutral] == [*(o.analysis for o in outcomes), twin.analysis]
    assert [o.key for o in neutral] == [*(o.key for o in outcomes), "k"]


def test_neutral_visit_keeps_the_site_and_the_year_only():
    assert neutral_visit(VISIT) == Visit(lesion="", visit_date="2026", body_site="left shoulder", notes="")
    assert neutral_visit(None) is None
    assert neutral_visits({"k": VISIT}) == {"k": neutral_visit(VISIT)}
    assert neutral_visit(Visit()) == Visit()


def test_every_export_without_names_names_nothing_after_the_file_or_the_visit():
    latest, outcomes = published((NAME, "Mueller_Anna_1961_back.png"), failed="Mueller_Anna_scan.jpg")
    visits = {outcome.key: VISIT for outcome in outcomes}
    shown = latest.shown
    stem = export_stem(shown, with_names=False)
    assert stem == neutral_name(outcomes[0].analysis.pixel_sha256)
    outline_names = [name for _, name, _ in outline_buttons(without_names(shown).outcome)]
    assert outline_names and all(name.startswith(stem) for name in outline_names)
    files = {**unzipped(latest.bundle(visits, with_names=False)),
             "measurements.csv": latest.measurements_csv(visits, with_names=False),
             "settings.json": latest.sidecar(visits, with_names=False),
             "report.pdf": latest.pdf(VISIT, with_names=False),
             **{name: latest.outline(name, with_names=False) for name in outline_names},
             **unzipped(latest.dicom(VISIT, include_identifiers=True, with_names=False))}
    text = said(files)
    assert [secret for secret in SECRETS if secret in text] == []
    rows = list(csv.DictReader(io.StringIO(files["measurements.csv"].decode("utf-8"))))
    assert [row["image"] for row in rows] == [o.name for o in neutral_outcomes(outcomes)]
    assert {row.get("lesion", "") for row in rows} == {""} and {row["visit_date"] for row in rows[:2]} == {"2026"}
    assert "left shoulder" in text  # the body site is no identifier: it stays
    assert json.loads(files["settings.json"])  # a sidecar was made, its names checked above


def test_with_names_every_export_is_as_before():
    latest, outcomes = published((NAME,))
    visits = {outcomes[0].key: VISIT}
    assert export_stem(latest.shown, with_names=True) == "Mueller_Anna_1961"
    bundle = zipfile.ZipFile(io.BytesIO(latest.bundle(visits)))
    assert "Mueller_Anna_1961/Mueller_Anna_1961_report.pdf" in bundle.namelist()
    report = "\n".join(pdf_words(latest.pdf(VISIT))).lower()
    assert "mrn 4711 anna mueller" in report and "mueller_anna_1961.png" in report
    rows = list(csv.DictReader(io.StringIO(latest.measurements_csv(visits).decode("utf-8"))))
    assert (rows[0]["image"], rows[0]["lesion"], rows[0]["visit_date"]) == (NAME, VISIT.lesion, VISIT.visit_date)


def test_the_overlay_and_mask_pngs_carry_no_name():
    latest, _ = published((NAME,))
    assert b"mueller" not in latest.overlay_png().lower() and b"mueller" not in latest.mask_png().lower()
