"""A DICOM photograph the readers accept but whose header a Segmentation cannot reference (no Study Instance
UID, a character set no one knows, a spacing that is not a number): its DICOM export was a failed download
("Failed to generate file for download", the reason only in the server's log). The export then references a
Secondary Capture of the image's pixels, as for any other format, and says so by including it."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from synthetic import dicom_bytes

from moleseg.core.dicomexport import segmentation_files

PHOTO = (np.arange(64 * 80 * 3).reshape(64, 80, 3) % 251).astype(np.uint8)
MASK = np.zeros((64, 80), bool)
MASK[10:30, 10:40] = True


def _changed(**values: object) -> bytes:
    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(PHOTO)))
    for keyword, value in values.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("data", [
    _changed(StudyInstanceUID=None),
    _changed(SpecificCharacterSet="ISO_IR 999"),
    dicom_bytes(PHOTO).replace(b"0.02\\0.02", b"abcd\\0.02"),  # PixelSpacing of the test files
], ids=["no study", "unknown character set", "spacing not a number"])
@pytest.mark.parametrize("include_identifiers", [False, True])
def test_an_unreferenceable_dicom_source_is_exported_with_a_secondary_capture(data, include_identifiers):
    files = segmentation_files(data, MASK, "photo", software_version="1", model_name="m", name="photo.dcm",
                               include_identifiers=include_identifiers, pdf=lambda name: b"%PDF-1.4 x\n")
    stem = "photo" if include_identifiers else next(iter(files)).rsplit("_", 1)[0]
    assert sorted(files) == [f"{stem}_report.dcm", f"{stem}_seg.dcm", f"{stem}_source.dcm"]
    source = pydicom.dcmread(io.BytesIO(files[f"{stem}_source.dcm"]))
    assert np.array_equal(source.pixel_array, PHOTO) and str(source.PatientName) == ""
    seg = pydicom.dcmread(io.BytesIO(files[f"{stem}_seg.dcm"]))
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == \
        source.SOPInstanceUID
    report = pydicom.dcmread(io.BytesIO(files[f"{stem}_report.dcm"]))
    assert report.SourceInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_a_referenceable_dicom_source_is_still_referenced_itself():
    data = dicom_bytes(PHOTO)
    files = segmentation_files(data, MASK, "photo", software_version="1", model_name="m", include_identifiers=True)
    assert sorted(files) == ["photo_seg.dcm"]
    seg = pydicom.dcmread(io.BytesIO(files["photo_seg.dcm"]))
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == \
        pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
