"""A DICOM export without identifiers names nothing after the uploaded file (clinicians name files after
patients): not its members, not the report's DocumentTitle, not the embedded PDF's drawn text or metadata; with
identifiers the file's name stays, as before. The app's download and ``moleseg predict --dicom-seg``."""

from __future__ import annotations

import io
import re
import zipfile

import pydicom
import pypdf
import pytest
from synthetic import dicom_bytes, mole_image, png_bytes

from moleseg.app.analysis import ImageOutcome, Upload
from moleseg.app.exports import LatestResults, Shown
from moleseg.app.results import dicom_export_stem, dicom_visit
from moleseg.cli import main
from moleseg.cli.common import EXIT_ERROR
from moleseg.core.classical import ClassicalSegmenter
from moleseg.core.dataset import image_sha256
from moleseg.core.dicomexport import neutral_name
from moleseg.core.imageio import read_image
from moleseg.core.report import Visit
from moleseg.engine.batches import analyse_images

STEM = "mueller_anna_back"
#: What must not leave without identifiers, lower case: the file's stem and the surname alone (the DICOM
#: PatientName's too). Not "anna": four letters may come up in a member's compressed bytes by chance.
SECRETS = ("mueller_anna_back", "mueller")


def pdf_words(pdf: bytes) -> list[str]:
    """What a PDF says: the text its page draws, its metadata (Title, Subject, Keywords, ...) and its
    decompressed content streams."""
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return ([page.extract_text() for page in reader.pages] + [str(v) for v in (reader.metadata or {}).values()]
            + [page.get_contents().get_data().decode("latin-1") for page in reader.pages])


def everything_in(files: dict[str, bytes]) -> str:
    """Every file's name and bytes (latin-1), and what each Encapsulated PDF's document says, lower case."""
    parts: list[str] = []
    for name, data in files.items():
        parts += [name, data.decode("latin-1")]
        dataset = pydicom.dcmread(io.BytesIO(data))
        if "EncapsulatedDocument" in dataset:
            parts += [str(dataset.DocumentTitle),
                      *pdf_words(dataset.EncapsulatedDocument[:dataset.EncapsulatedDocumentLength])]
    return "\n".join(parts).lower()


def unzipped(archive: bytes) -> dict[str, bytes]:
    bundle = zipfile.ZipFile(io.BytesIO(archive))
    return {name: bundle.read(name) for name in bundle.namelist()}


def app_export(name: str, data: bytes, include_identifiers: bool,
               visit: Visit | None = None) -> tuple[str, dict[str, bytes]]:
    """The Analyse page's DICOM download of ``data`` uploaded as ``name`` (the classical model, ``visit``, default
    an empty one): the ZIP's file name and its members."""
    segmenter = ClassicalSegmenter()
    image = read_image(data, name=name)
    analysis = analyse_images(segmenter, [image], pixel_size_mm=0.02, lesion_threshold=None)[0]
    upload = Upload(name, data)
    outcome = ImageOutcome(name=name, analysis=analysis, stem=name.rsplit(".", 1)[0], key=upload.key)
    latest = LatestResults()
    latest.publish(Shown((outcome,), outcome, upload, segmenter.name, "0.1"))
    zip_name = f"{dicom_export_stem(outcome, include_identifiers)}_dicom.zip"
    return zip_name, unzipped(latest.dicom(visit or Visit(), include_identifiers))


@pytest.mark.parametrize("kind", ["png", "dcm"])
def test_the_app_s_dicom_export_without_identifiers_names_nothing_after_the_file(kind):
    image = mole_image(seed=3)[0]
    data = png_bytes(image) if kind == "png" else dicom_bytes(image, patient_name="Mueller^Anna")
    zip_name, files = app_export(f"{STEM}.{kind}", data, include_identifiers=False)
    said = everything_in(files) + zip_name.lower()
    assert [secret for secret in SECRETS if secret in said] == []
    neutral = neutral_name(image_sha256(image))
    assert re.fullmatch(r"lesion-[0-9a-f]{8}", neutral)
    assert zip_name == f"{neutral}_dicom.zip"
    assert sorted(files) == [f"{neutral}_report.dcm", f"{neutral}_seg.dcm"] + (
        [f"{neutral}_source.dcm"] if kind == "png" else [])
    report = pydicom.dcmread(io.BytesIO(files[f"{neutral}_report.dcm"]))
    assert report.DocumentTitle == f"moleseg report: {neutral}"
    pdf = pypdf.PdfReader(io.BytesIO(report.EncapsulatedDocument[:report.EncapsulatedDocumentLength]))
    assert pdf.metadata.title == f"moleseg report \u2014 {neutral}"
    assert f"Image: {neutral}" in pdf.pages[0].extract_text()


@pytest.mark.parametrize("kind", ["png", "dcm"])
def test_the_app_s_dicom_export_with_identifiers_keeps_the_file_s_name(kind):
    image = mole_image(seed=3)[0]
    data = png_bytes(image) if kind == "png" else dicom_bytes(image, patient_name="Mueller^Anna")
    zip_name, files = app_export(f"{STEM}.{kind}", data, include_identifiers=True)
    assert zip_name == f"{STEM}_dicom.zip" and f"{STEM}_seg.dcm" in files
    report = pydicom.dcmread(io.BytesIO(files[f"{STEM}_report.dcm"]))
    assert report.DocumentTitle == f"moleseg report: {STEM}"
    pdf = pypdf.PdfReader(io.BytesIO(report.EncapsulatedDocument[:report.EncapsulatedDocumentLength]))
    assert pdf.metadata.title == f"moleseg report \u2014 {STEM}.{kind}"
    assert f"Image: {STEM}.{kind}" in pdf.pages[0].extract_text()
    if kind == "dcm":
        assert str(pydicom.dcmread(io.BytesIO(files[f"{STEM}_seg.dcm"])).PatientName) == "Mueller^Anna"


def test_the_same_pixels_get_the_same_neutral_name_whatever_the_file():
    image = mole_image(seed=3)[0]
    png = sorted(app_export("a.png", png_bytes(image), include_identifiers=False)[1])
    dicom = sorted(app_export("b.dcm", dicom_bytes(image, patient_name="Mueller^Anna"), include_identifiers=False)[1])
    assert png[0].split("_")[0] == dicom[0].split("_")[0] == neutral_name(image_sha256(image))


@pytest.mark.parametrize("kind", ["png", "dcm"])
def test_predict_s_dicom_files_without_identifiers_name_nothing_after_the_file(kind, tmp_path, capsys):
    image = mole_image(seed=3)[0]
    source = tmp_path / "in" / f"{STEM}.{kind}"
    source.parent.mkdir()
    source.write_bytes(png_bytes(image) if kind == "png" else dicom_bytes(image, patient_name="Mueller^Anna"))
    assert main(["predict", "--model", "classical", "--dicom-seg", "--out", str(tmp_path / "out"),
                 str(source)]) == 0
    files = {path.name: path.read_bytes() for path in (tmp_path / "out").glob("*.dcm")}
    neutral = neutral_name(image_sha256(image))
    assert sorted(files) == [f"{neutral}_seg.dcm"] + ([f"{neutral}_source.dcm"] if kind == "png" else [])
    said = everything_in(files)
    assert [secret for secret in SECRETS if secret in said] == []
    assert f"{STEM}.{kind}: {neutral}_" in capsys.readouterr().err  # the operator learns which image it is
    assert main(["predict", "--model", "classical", "--quiet", "--dicom-seg", "--dicom-identifiers",
                 "--out", str(tmp_path / "kept"), str(source)]) == 0
    assert f"{STEM}_seg.dcm" in {path.name for path in (tmp_path / "kept").glob("*.dcm")}


def test_predict_refuses_to_let_two_inputs_of_the_same_pixels_share_their_dicom_files(tmp_path, capsys):
    image = mole_image(seed=3)[0]
    (tmp_path / "in").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "in" / name).write_bytes(png_bytes(image))
    assert main(["predict", "--model", "classical", "--quiet", "--dicom-seg", "--out", str(tmp_path / "out"),
                 str(tmp_path / "in")]) == EXIT_ERROR
    neutral = neutral_name(image_sha256(image))
    assert sorted(path.name for path in (tmp_path / "out").glob("*.dcm")) == [f"{neutral}_seg.dcm",
                                                                              f"{neutral}_source.dcm"]
    assert ("b.png: no DICOM Segmentation written (its files would replace those of a.png, whose pixels give the "
            "same name; --dicom-identifiers names them after the files)") in capsys.readouterr().err


def report_text(files: dict[str, bytes]) -> str:
    """What the Encapsulated PDF report of a DICOM export draws and its metadata, lower case."""
    report = pydicom.dcmread(io.BytesIO(next(data for name, data in files.items() if name.endswith("_report.dcm"))))
    return "\n".join(pdf_words(report.EncapsulatedDocument[:report.EncapsulatedDocumentLength])).lower()


def test_a_visit_the_dicom_file_filled_prints_none_of_its_identifiers_in_an_export_without_them():
    image = mole_image(seed=3)[0]
    data = dicom_bytes(image, patient_name="Mueller^Anna")
    name = f"{STEM}.dcm"
    filled = dicom_visit(Upload(name, data))  # what ticking "Use the DICOM file's patient and study fields" fills
    assert (filled.lesion, filled.visit_date) == ("P123", "2026-01-02")
    # the box unticked again: the fields still hold the file's identifiers, the body site was typed
    visit = Visit(lesion=filled.lesion, visit_date=filled.visit_date, body_site="left shoulder")
    _, without = app_export(name, data, include_identifiers=False, visit=visit)
    said = report_text(without)
    assert "p123" not in said and "2026-01-02" not in said and "left shoulder" in said
    _, with_them = app_export(name, data, include_identifiers=True, visit=visit)
    said = report_text(with_them)
    assert "p123" in said and "2026-01-02" in said and "left shoulder" in said
