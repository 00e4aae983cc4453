"""Exports without names beyond the Analyse page (:mod:`moleseg.app.deidentify`): the History page's export of a
saved visit (its ZIP and PDF), the Compare page's JSON and PDF, and ``moleseg predict --without-names``. Each
export is read back whole (the ZIP's members and bytes, the CSV, the sidecar, the record's JSON, the PDFs' drawn
text and metadata, the files on disk) for the file's name, the record number, the note's name and the full date;
the saved records keep their names."""

from __future__ import annotations

import csv
import io
import json

import pytest
from synthetic import mole_image, png_bytes
from test_deidentify import SECRETS, VISIT, said
from test_dicom_names import pdf_words, unzipped

from moleseg.app import followup
from moleseg.app.deidentify import LEFT_OUT_OF_RECORDS, exported_visit, neutral_export
from moleseg.cli import main
from moleseg.cli.common import EXIT_ERROR
from moleseg.core.dataset import image_sha256
from moleseg.core.dicomexport import neutral_name
from moleseg.core.measure import measure_lesion
from moleseg.core.report import SIDECAR_SUFFIX, sidecar_name
from moleseg.engine.compare import compare_records
from moleseg.engine.records import Records
from moleseg.engine.recordtypes import User

NAME = "Mueller_Anna_1961.png"
#: Who saves the visits: a clinician's name is a name too (the note's "Schmidt", one of :data:`SECRETS`).
OWNER = User("schmidt")


def save_visit(records: Records, image, mask, *, name: str = NAME, visit_date: str = VISIT.visit_date) -> int:
    """Save ``image`` and ``mask`` as a visit of :data:`VISIT` named ``name``; its id."""
    return records.save(OWNER, image, mask, measure_lesion(mask, image=image), lesion=VISIT.lesion,
                        visit_date=visit_date, body_site=VISIT.body_site, notes=VISIT.notes, image_name=name,
                        model_name="classical")


def test_a_saved_visit_exported_without_names_names_nothing_after_its_file_visit_record_or_owner(tmp_path):
    records = Records(tmp_path)
    image, mask = mole_image(seed=3)
    record_id = save_visit(records, image, mask)
    saved = records.open(OWNER, record_id)
    stem = neutral_name(image_sha256(image))  # the name the Analyse page's exports give the same picture
    exported = neutral_export(saved)
    assert exported.stem == stem and exported_visit(False) is neutral_export
    files = unzipped(records.export(OWNER, record_id, neutral_export))
    csv_name = f"{stem}_measurements.csv"
    assert sorted(files) == sorted([f"{stem}_image.png", f"{stem}_mask.png", csv_name, sidecar_name(csv_name),
                                    f"{stem}.json"])
    files["report.pdf"] = followup.saved_report(exported.saved)
    text = said(files)
    assert [secret for secret in (*SECRETS, f"record_{record_id}", saved.record.uid) if secret in text] == []
    details = json.loads(files[f"{stem}.json"])
    assert not set(LEFT_OUT_OF_RECORDS) & set(details)
    assert {key: details[key] for key in ("lesion", "visit_date", "notes", "image_name", "body_site", "saved_at")} == {
        "lesion": "", "visit_date": "2026", "notes": "", "image_name": f"{stem}.png", "body_site": "left shoulder",
        "saved_at": saved.record.saved_at[:4]}
    row = next(csv.DictReader(io.StringIO(files[csv_name].decode("utf-8"))))
    assert (row["image"], row["lesion"], row["visit_date"]) == (f"{stem}.png", "", "2026")
    assert json.loads(files[sidecar_name(csv_name)])["images"][0]["visit"]["visit_date"] == "2026"
    assert f"Image: {stem}.png" in pdf_words(files["report.pdf"])[0]
    kept = records.record(OWNER, record_id)  # the record on the server keeps its names
    assert (kept.image_name, kept.lesion, kept.notes, kept.visit_date) == (NAME, VISIT.lesion, VISIT.notes,
                                                                          VISIT.visit_date)
    assert [entry.action for entry in records.audit_trail(OWNER, record_id)][-1] == "exported"


def undated(files: dict[str, bytes]) -> dict[str, bytes]:
    """``files`` with each settings sidecar's ``created`` (the second it was made: two exports a second apart
    differ there alone) taken out."""
    kept = dict(files)
    assert any(name.endswith(SIDECAR_SUFFIX) for name in files)
    for name, data in files.items():
        if name.endswith(SIDECAR_SUFFIX):
            sidecar = json.loads(data)
            assert sidecar.pop("created")
            kept[name] = json.dumps(sidecar, sort_keys=True).encode()
    return kept


def test_a_saved_visit_exported_with_names_is_as_before(tmp_path):
    records = Records(tmp_path)
    image, mask = mole_image(seed=3)
    record_id = save_visit(records, image, mask)
    files = unzipped(records.export(OWNER, record_id))
    assert undated(files) == undated(unzipped(records.export(OWNER, record_id, exported_visit(True))))
    stem = f"record_{record_id}"
    details = json.loads(files[f"{stem}.json"])
    assert (details["id"], details["owner"], details["lesion"], details["image_name"]) == (record_id, "schmidt",
                                                                                            VISIT.lesion, NAME)
    row = next(csv.DictReader(io.StringIO(files[f"{stem}_measurements.csv"].decode("utf-8"))))
    assert (row["image"], row["lesion"], row["visit_date"]) == (NAME, VISIT.lesion, VISIT.visit_date)
    report = "\n".join(pdf_words(followup.saved_report(records.open(OWNER, record_id)))).lower()
    assert "mrn 4711 anna mueller" in report and "2026-03-14" in report and NAME.lower() in report


def compared_visits(tmp_path, lesion_scene):
    """Two saved visits of one lesion (named after the patient, :data:`VISIT`'s identifier, March and June)
    compared as the Compare page compares them; the comparison, the names the page gives the two, the images."""
    before, true_before = lesion_scene(radius_px=60)
    after, true_after = lesion_scene(radius_px=66, angle_deg=5.0, shift_px=(4.0, 3.0))
    records = Records(tmp_path)
    first = records.open(OWNER, save_visit(records, before, true_before, name="Mueller_Anna_march.png"))
    second = records.open(OWNER, save_visit(records, after, true_after, name="Mueller_Anna_june.png",
                                            visit_date="2026-06-21"))
    comparison = compare_records(first, second)
    return comparison, followup.visit_label(first.record), followup.visit_label(second.record), (before, after)


def test_the_comparison_without_names_names_neither_image_nor_the_lesion_nor_the_days(tmp_path, lesion_scene):
    comparison, before_name, after_name, (before, after) = compared_visits(tmp_path, lesion_scene)
    summary, pdf = followup.comparison_downloads(comparison, before_name, after_name, with_names=False)
    text = "\n".join([summary, *pdf_words(pdf())]).lower()
    assert [secret for secret in (*SECRETS, "06-21") if secret in text] == []
    fields = json.loads(summary)
    assert (fields["before"], fields["after"], fields["lesion"], fields["before_date"], fields["after_date"]) == (
        neutral_name(image_sha256(before)), neutral_name(image_sha256(after)), "", "2026", "2026")
    assert fields["area_change_percent"] == pytest.approx(comparison.area_change_percent)  # the figures stay
    assert comparison.lesion_id == VISIT.lesion  # the page's comparison is not changed


def test_the_comparison_with_names_is_as_before(tmp_path, lesion_scene):
    comparison, before_name, after_name, _ = compared_visits(tmp_path, lesion_scene)
    summary, pdf = followup.comparison_downloads(comparison, before_name, after_name, with_names=True)
    fields = json.loads(summary)
    assert (fields["before"], fields["lesion"], fields["after_date"]) == (before_name, VISIT.lesion, "2026-06-21")
    assert "mueller_anna_march.png" in before_name.lower() and "mueller_anna_june" in "\n".join(pdf_words(pdf())).lower()


def predict_inputs(tmp_path):
    """A folder of three pictures named after the patient, two of them the same picture; the pixels' names."""
    folder = tmp_path / "in"
    folder.mkdir()
    first, other = mole_image(seed=3)[0], mole_image(seed=4)[0]
    for name, image in (("Mueller_Anna_1961.png", first), ("Mueller_Anna_back.png", other),
                        ("Mueller_Anna_copy.png", first)):
        (folder / name).write_bytes(png_bytes(image))
    return folder, neutral_name(image_sha256(first)), neutral_name(image_sha256(other))


def test_predict_without_names_names_every_file_after_the_pixels_and_replaces_none(tmp_path, capsys):
    folder, first, other = predict_inputs(tmp_path)
    out = tmp_path / "out"
    assert main(["predict", "--model", "classical", "--without-names", "--outlines", "geojson,imagej,svg",
                 "--dicom-seg", "--out", str(out), str(folder)]) == EXIT_ERROR  # the copy is not written
    files = {path.name: path.read_bytes() for path in out.iterdir()}
    each = ("_overlay.png", "_mask.png", "_classes.png", "_outline.geojson", "_outline.roi", "_outline.svg",
            "_seg.dcm", "_source.dcm")
    assert sorted(files) == sorted([*(stem + end for stem in (first, other) for end in each), "measurements.csv",
                                    "measurements.settings.json"])
    assert "mueller" not in said(files)
    rows = list(csv.DictReader(io.StringIO(files["measurements.csv"].decode("utf-8"))))
    assert [(row["image"], row["output"]) for row in rows] == [(f"{first}.png", first), (f"{other}.png", other)]
    assert "source" not in rows[0]
    assert [entry["image"] for entry in json.loads(files["measurements.settings.json"])["images"]] == [
        f"{first}.png", f"{other}.png"]
    err = capsys.readouterr().err
    assert f"Mueller_Anna_1961.png: {first}\n" in err and f"Mueller_Anna_back.png: {other}\n" in err
    assert (f"Mueller_Anna_copy.png: its files would replace those of Mueller_Anna_1961.png, whose pixels give the "
            f"same name ({first}); without --without-names they are named after the files") in err


def test_predict_with_names_names_the_files_as_before(tmp_path):
    folder, _, _ = predict_inputs(tmp_path)
    assert main(["predict", "--model", "classical", "--quiet", "--out", str(tmp_path / "out"), str(folder)]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "measurements.csv").read_text("utf-8"))))
    assert [row["image"] for row in rows] == ["Mueller_Anna_1961.png", "Mueller_Anna_back.png", "Mueller_Anna_copy.png"]
    assert (tmp_path / "out" / "Mueller_Anna_copy_mask.png").is_file()


@pytest.mark.parametrize("flags, reason", [
    (["--dicom-seg", "--dicom-identifiers"], "--dicom-identifiers contradict each other"),
    (["--shard", "1/2"], "--shard cannot be used together")])
def test_predict_refuses_without_names_with_a_flag_that_keeps_them(flags, reason, tmp_path, capsys):
    folder, _, _ = predict_inputs(tmp_path)
    assert main(["predict", "--model", "classical", "--without-names", *flags, "--out", str(tmp_path / "out"),
                 str(folder)]) == EXIT_ERROR
    assert f"--without-names and {reason}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
