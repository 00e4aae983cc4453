"""DICOM in and out: photographs read by the one image reader (RGB, YBR, compressed), their pixel spacing and
identifiers, one clear message per malformed file, and masks and reports written as a DICOM Segmentation and
an Encapsulated PDF that pydicom and highdicom read back. The DICOM files are made of a real image
(``synthetic.dicom_bytes``)."""

from __future__ import annotations

import csv
import io

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import convert_color_space
from pydicom.uid import CTImageStorage, JPEG2000Lossless, JPEGBaseline8Bit, RLELossless
from synthetic import dicom_bytes

from moleseg.cli import main
from moleseg.core.dataset import image_sha256
from moleseg.core.dicomexport import (encapsulated_pdf, neutral_name, reference_source, secondary_capture,
                                      segmentation, segmentation_files)
from moleseg.core.dicomio import dicom_facts, read_dataset
from moleseg.core.imageio import ImageReadError, image_size, read_image
from moleseg.core.pairing import list_images

IMAGE = "moles/seed/test/images/071.jpg"
#: The test image's crop: 80 x 64 px (W x H).
ROWS, COLUMNS = 64, 80


@pytest.fixture()
def photo(require_shared) -> np.ndarray:
    """A real dermoscopy image's 80 x 64 px crop, RGB."""
    return np.ascontiguousarray(np.asarray(Image.open(require_shared(IMAGE)).convert("RGB"))[:ROWS, :COLUMNS])


# --------------------------------------------------------------------------------------------------
# DICOM in


def test_rgb_photograph_reads_as_its_pixels_with_spacing_and_identifiers(photo):
    data = dicom_bytes(photo)
    assert np.array_equal(read_image(data, name="a.dcm"), photo)
    assert image_size(data) == (COLUMNS, ROWS)
    facts = dicom_facts(data, name="a.dcm")
    assert facts.pixel_size_mm == pytest.approx(0.02)
    assert facts.spacing_note == ""
    assert facts.identifiers == {"PatientName": "Doe^Jane", "PatientID": "P123", "StudyDate": "20260102"}
    assert facts.sop_class == "Dermoscopic Photography Image"


def test_ybr_full_is_converted_to_rgb(photo):
    ybr = convert_color_space(photo, "RGB", "YBR_FULL")
    difference = np.abs(read_image(dicom_bytes(ybr, photometric="YBR_FULL")).astype(int) - photo).max()
    assert difference <= 1  # 8-bit rounding of the two conversions


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_lossless_compressed_photographs_read_exactly(photo, syntax):
    assert np.array_equal(read_image(dicom_bytes(photo, compress=syntax)), photo)


def test_jpeg_baseline_ybr_422_reads_as_the_jpeg_decoded(photo):
    data = dicom_bytes(photo, compress=JPEGBaseline8Bit)
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, "JPEG", quality=95)
    decoded = np.asarray(Image.open(buffer).convert("RGB")).astype(int)
    difference = np.abs(read_image(data).astype(int) - decoded)
    assert difference.max() <= 3 and difference.mean() < 0.5  # two JPEG decoders' chroma upsampling


def test_12_bit_greyscale_is_scaled_and_monochrome1_inverted(photo):
    grey = np.array([[0, 4095], [2048, 1000]], dtype=np.uint16).repeat(20, axis=0).repeat(20, axis=1)
    for photometric, expected in (("MONOCHROME2", [[0, 255], [128, 62]]), ("MONOCHROME1", [[255, 0], [127, 193]])):
        dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(photo)))
        dataset.Rows, dataset.Columns = grey.shape
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, photometric
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
        del dataset.PlanarConfiguration
        dataset.PixelData = grey.tobytes()
        buffer = io.BytesIO()
        dataset.save_as(buffer)
        image = read_image(buffer.getvalue())
        assert image.shape == (40, 40, 3) and np.array_equal(image[..., 0], image[..., 2])
        assert image[::20, ::20, 0].tolist() == expected  # 12 bits: v * 255 / 4095



def test_the_analyse_page_s_dicom_note_shows_the_file_name_and_spacing_as_typed():
    from moleseg.app.analysis import Upload
    from moleseg.app.results import dicom_pixel_size

    data = dicom_bytes(np.zeros((16, 16, 3), np.uint8), spacing=(0.02, 0.04))
    assert dicom_pixel_size([Upload("[x](http://e.x)*a*.png", data)]) == (
        None, "No automatic pixel size: \\[x\\](http\u2060\\://e.x)\\*a\\*.png\\: the pixels are not square "
              "(PixelSpacing 0.02 \\\\ 0.04 mm)")

def test_missing_spacing_is_no_error_just_no_size(photo):
    data = dicom_bytes(photo, spacing=None)
    assert np.array_equal(read_image(data), photo)
    facts = dicom_facts(data)
    assert facts.pixel_size_mm is None
    assert facts.spacing_note == "the file has no PixelSpacing or ImagerPixelSpacing: give the pixel size by hand"


def test_imager_pixel_spacing_is_used_and_non_square_pixels_are_not(photo):
    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(photo, spacing=None)))
    dataset.ImagerPixelSpacing = [0.05, 0.05]
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    assert dicom_facts(buffer.getvalue()).pixel_size_mm == pytest.approx(0.05)
    facts = dicom_facts(dicom_bytes(photo, spacing=(0.02, 0.04)))
    assert facts.pixel_size_mm is None
    assert facts.spacing_note == "the pixels are not square (PixelSpacing 0.02 \\ 0.04 mm)"


def test_truncated_file_has_one_clear_message(photo):
    data = dicom_bytes(photo)
    with pytest.raises(ImageReadError) as caught:
        read_image(data[:-1000], name="cut.dcm")
    full = ROWS * COLUMNS * 3
    assert str(caught.value) == ("cut.dcm: truncated DICOM file: the data ends early (the pixel data ends after "
                                 f"{full - 1000} of its {full} bytes)")


def test_wrong_pixel_data_length_has_one_clear_message(photo):
    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(photo)))
    dataset.PixelData = photo[:-2].tobytes()  # two rows short, declared as such: not truncated, wrong
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    with pytest.raises(ImageReadError) as caught:
        read_image(buffer.getvalue(), name="short.dcm")
    assert str(caught.value) == (f"short.dcm: wrong pixel data length: {(ROWS - 2) * COLUMNS * 3} bytes, expected "
                                 f"{ROWS * COLUMNS * 3} ({COLUMNS} x {ROWS} px, 3 samples of 8 bits)")


def test_size_budget_is_checked_before_decoding(photo):
    with pytest.raises(ImageReadError, match=r"^big\.dcm: image too large: 80 x 64 px = 0\.0 megapixels"):
        read_image(dicom_bytes(photo), name="big.dcm", max_pixels=ROWS * COLUMNS - 1)


def test_a_ct_image_is_not_a_photograph(photo):
    with pytest.raises(ImageReadError, match=r"^ct\.dcm: a DICOM CT Image Storage is not a photograph; expected "
                                             r"one of VL Photographic Image, "):
        read_image(dicom_bytes(photo, sop_class=CTImageStorage), name="ct.dcm")


def test_damaged_files_give_an_image_or_one_read_error(photo):
    rng = np.random.default_rng(7)
    original = dicom_bytes(photo, compress=JPEGBaseline8Bit)
    refused = 0
    for attempt in range(60):
        data = bytearray(original)
        for position in rng.integers(132, len(data), size=int(rng.integers(1, 12))):
            data[position] = int(rng.integers(0, 256))
        if attempt % 3 == 0:
            data = data[:int(rng.integers(132, len(data)))]
        try:
            image = read_image(bytes(data), name="d.dcm")
        except ImageReadError as error:
            refused += 1
            assert str(error).startswith("d.dcm: ") and "\n" not in str(error)
        else:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert 0 < refused < 60


def test_folders_list_dicom_files(tmp_path, photo):
    (tmp_path / "a.dcm").write_bytes(dicom_bytes(photo))
    (tmp_path / "b.txt").write_text("no")
    assert list_images(tmp_path) == [tmp_path / "a.dcm"]


# --------------------------------------------------------------------------------------------------
# DICOM out


@pytest.fixture()
def mask() -> np.ndarray:
    lesion = np.zeros((ROWS, COLUMNS), dtype=bool)
    lesion[10:40, 20:60] = True
    return lesion


def read_segment(data: bytes, source_uid: str) -> np.ndarray:
    seg = hd.seg.segread(io.BytesIO(data))
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=[source_uid], segment_numbers=[1],
                                               combine_segments=True)
    return pixels[0] > 0


def test_segmentation_of_a_dicom_image_references_it_without_identifiers(photo, mask):
    dataset = read_dataset(dicom_bytes(photo))
    data = segmentation(mask, reference_source(dataset), software_version="1.0", model_name="m")
    assert np.array_equal(read_segment(data, dataset.SOPInstanceUID), mask)
    seg = pydicom.dcmread(io.BytesIO(data))
    assert seg.SOPClassUID.name == "Segmentation Storage"
    assert seg.StudyInstanceUID == dataset.StudyInstanceUID
    assert (str(seg.PatientName), seg.PatientID, seg.StudyDate) == ("", "", "")
    assert [float(v) for v in seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing] == \
        [0.02, 0.02]
    kept = segmentation(mask, reference_source(dataset, include_identifiers=True), software_version="1.0",
                        model_name="m")
    assert (str(pydicom.dcmread(io.BytesIO(kept)).PatientName), pydicom.dcmread(io.BytesIO(kept)).PatientID) == \
        ("Doe^Jane", "P123")


#: Patient and study facts beyond the identifier fields a DICOM photograph may carry (Patient, Patient Study,
#: Clinical Trial and equipment modules, a private tag, a nested sequence): none may leave without consent.
PATIENT_FACTS = {"OtherPatientNames": "Roe^Janet", "PatientBirthTime": "101500", "IssuerOfPatientID": "StMaryHosp",
                 "PatientComments": "HIVpositive", "AdditionalPatientHistory": "melanoma2019",
                 "ClinicalTrialSubjectID": "SUBJ-0017", "ClinicalTrialSponsorName": "AcmePharma",
                 "PhysiciansOfRecord": "House^Greg", "ResponsiblePerson": "Roe^Johnny", "Occupation": "astronaut",
                 "PatientWeight": "71.5", "MedicalAlerts": "pacemaker", "InstitutionAddress": "3ElmStreet",
                 "StationName": "DERMCAM-WARD7", "OperatorsName": "Nurse^Ratched"}


def test_an_export_without_identifiers_carries_no_patient_fact_of_its_source(photo, mask):
    dataset = read_dataset(dicom_bytes(photo))
    for keyword, value in PATIENT_FACTS.items():
        setattr(dataset, keyword, value)
    dataset.add_new(0x00090010, "LO", "ACME")  # a private creator and its patient note
    dataset.add_new(0x00091001, "LO", "PrivateNoteDoe")
    other = Dataset()
    other.PatientID = "OLD-P999"
    dataset.OtherPatientIDsSequence = [other]
    secrets = [*PATIENT_FACTS.values(), "PrivateNoteDoe", "OLD-P999", "Doe^Jane", "P123"]
    source = reference_source(dataset)
    data = segmentation(mask, source, software_version="1.0", model_name="m")
    report = encapsulated_pdf(b"%PDF-1.4 x\n", source, title="moleseg report: a")
    assert [secret for secret in secrets if secret.encode() in data + report] == []
    assert np.array_equal(read_segment(data, dataset.SOPInstanceUID), mask)  # the reference still resolves
    assert pydicom.dcmread(io.BytesIO(data)).StudyInstanceUID == dataset.StudyInstanceUID
    kept = segmentation(mask, reference_source(dataset, include_identifiers=True), software_version="1.0",
                        model_name="m")
    assert str(pydicom.dcmread(io.BytesIO(kept)).OtherPatientNames) == "Roe^Janet"  # asked for: copied


def test_a_mask_of_another_size_is_refused(photo, mask):
    source = reference_source(read_dataset(dicom_bytes(photo)))
    with pytest.raises(ValueError, match=r"^the mask is 79 x 64 px but its source image is 80 x 64 px$"):
        segmentation(mask[:, 1:], source, software_version="1.0", model_name="m")


def test_a_png_gets_a_secondary_capture_to_reference(photo, mask, tmp_path):
    png = tmp_path / "a.png"
    Image.fromarray(photo).save(png)
    files = segmentation_files(png, mask, "a", software_version="1.0", model_name="m", pixel_size_mm=0.03,
                               pdf=lambda name: f"%PDF-1.4 report of {name}\n".encode(), include_identifiers=True)
    assert sorted(files) == ["a_report.dcm", "a_seg.dcm", "a_source.dcm"]
    capture = pydicom.dcmread(io.BytesIO(files["a_source.dcm"]))
    assert capture.SOPClassUID.name == "Secondary Capture Image Storage"
    assert np.array_equal(read_image(files["a_source.dcm"]), photo)  # the one reader reads it back
    assert dicom_facts(files["a_source.dcm"]).pixel_size_mm == pytest.approx(0.03)
    assert np.array_equal(read_segment(files["a_seg.dcm"], capture.SOPInstanceUID), mask)
    report = pydicom.dcmread(io.BytesIO(files["a_report.dcm"]))
    assert report.EncapsulatedDocument.startswith(b"%PDF-1.4 report of a\n")
    assert report.SOPClassUID.name == "Encapsulated PDF Storage"
    assert report.SourceInstanceSequence[0].ReferencedSOPInstanceUID == capture.SOPInstanceUID


def test_encapsulated_pdf_holds_the_report(photo):
    source = reference_source(read_dataset(dicom_bytes(photo)))
    pdf = b"%PDF-1.4 odd length"
    document = pydicom.dcmread(io.BytesIO(encapsulated_pdf(pdf, source, title="moleseg report: a")))
    assert document.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert document.EncapsulatedDocument[:document.EncapsulatedDocumentLength] == pdf
    assert (document.Modality, document.DocumentTitle) == ("DOC", "moleseg report: a")
    assert document.StudyInstanceUID == source.StudyInstanceUID
    assert (str(document.PatientName), document.PatientID) == ("", "")


def test_secondary_capture_has_no_identifiers(photo):
    capture = secondary_capture(photo)
    assert "PatientName" in capture and not capture.PatientName and not capture.PatientID


def test_predict_reads_dicom_spacing_and_writes_a_segmentation(photo, tmp_path):
    source = tmp_path / "in" / "d.dcm"
    source.parent.mkdir()
    source.write_bytes(dicom_bytes(photo))
    assert main(["predict", "--model", "classical", "--quiet", "--dicom-seg", "--out", str(tmp_path / "out"),
                 str(source)]) == 0
    row = next(csv.DictReader(io.StringIO((tmp_path / "out" / "measurements.csv").read_text(encoding="utf-8"))))
    assert float(row["area_mm2"]) == pytest.approx(float(row["area_px"]) * 0.02 ** 2, rel=1e-3)
    seg_name = f"{neutral_name(image_sha256(photo))}_seg.dcm"  # named after the pixels, not d.dcm
    assert sorted(p.name for p in (tmp_path / "out").glob("*.dcm")) == [seg_name]
    mask = read_image(tmp_path / "out" / "d_mask.png")[..., 0] > 127
    uid = read_dataset(source).SOPInstanceUID
    assert np.array_equal(read_segment((tmp_path / "out" / seg_name).read_bytes(), uid), mask)
    assert str(pydicom.dcmread(tmp_path / "out" / seg_name).PatientName) == ""


# --------------------------------------------------------------------------------------------------
# The Analyse page


def test_the_analyse_page_takes_the_spacing_and_asks_before_using_identifiers(app_folders, photo):
    import zipfile

    from app_helpers import app_test, texts
    from moleseg.app.analysis import Upload
    from moleseg.app.results import DICOM_PRIVACY_NOTE, dicom_bundle
    from moleseg.app.ui import PAGE_FILES

    data = dicom_bytes(photo)
    at = app_test(PAGE_FILES["analyse"])
    at.selectbox(key="analyse_model").set_value("classical").run()
    at.file_uploader(key="analyse_upload_files").set_value(("a.dcm", data, "application/dicom")).run()
    assert not at.exception and not at.error
    outcome = at.session_state["analyse_outcomes"][0]
    assert outcome.analysis.pixel_size_mm == pytest.approx(0.02)
    assert "0.0200 mm per px from the DICOM file" in texts(at.caption)
    assert DICOM_PRIVACY_NOTE in texts(at.caption)
    assert at.session_state["analyse_save_lesion"] == ""  # nothing from the file before the box is ticked
    assert "Segmentation and report (DICOM, ZIP)" in {button.label for button in at.get("download_button")}
    bundle = zipfile.ZipFile(io.BytesIO(dicom_bundle(outcome, Upload("a.dcm", data), "0.1.0",
                                                     lambda name: b"%PDF-1.4 r\n", include_identifiers=False)))
    neutral = neutral_name(image_sha256(photo))
    assert sorted(bundle.namelist()) == [f"{neutral}_report.dcm", f"{neutral}_seg.dcm"]
    assert pydicom.dcmread(io.BytesIO(bundle.read(f"{neutral}_seg.dcm"))).PatientID == ""
    at.checkbox(key=f"analyse_dicom_identifiers_{outcome.key}").check().run()
    assert (at.session_state["analyse_save_lesion"], str(at.session_state["analyse_save_date"])) == \
        ("P123", "2026-01-02")


def test_evaluate_pairs_dicom_images_with_their_masks(require_shared, tmp_path):
    import json

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for name in ("071", "072"):
        image = np.asarray(Image.open(require_shared(f"moles/seed/test/images/{name}.jpg")).convert("RGB"))
        (tmp_path / "images" / f"{name}.dcm").write_bytes(dicom_bytes(np.ascontiguousarray(image)))
        Image.open(require_shared(f"moles/seed/test/masks/{name}.jpg")).save(tmp_path / "masks" / f"{name}.png")
    assert main(["evaluate", "--model", "classical", "--no-baseline", "--images", str(tmp_path / "images"),
                 "--masks", str(tmp_path / "masks"), "--json", str(tmp_path / "e.json")]) == 0
    summary = json.loads((tmp_path / "e.json").read_text())
    assert [row["image"] for row in summary["per_image"]] == ["071.dcm", "072.dcm"]
    assert summary["n"] == 2 and summary["fm"]["min"] > 0.8  # the classical model finds these two lesions
