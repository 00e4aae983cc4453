"""DICOM files that declare little and unpack to much: a deflated dataset, a compressed frame larger (or with
more samples) than ``Rows`` x ``Columns`` x ``SamplesPerPixel``, an RLE segment longer than its plane. Each is
refused by name before it is inflated or decoded; honest files of the same kinds still read."""

from __future__ import annotations

import io
import struct

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                         JPEG2000Lossless, JPEGBaseline8Bit, RLELossless)
from synthetic import dicom_bytes

from moleseg.core import dicomio, dicomscan
from moleseg.core.codestreams import FrameSize, frame_size, rle_overlong_segment
from moleseg.core.imageio import ImageReadError, image_size, read_image

#: A 12 x 10 px RGB photograph with distinct pixels.
PHOTO = np.stack([np.arange(120).reshape(10, 12) * 2, np.full((10, 12), 50), np.arange(120).reshape(10, 12)],
                 axis=2).astype(np.uint8)


def _saved(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def _with_frame(frame: bytes, syntax: str, photometric: str = "RGB") -> bytes:
    """The 12 x 10 px RGB photograph's DICOM file with ``frame`` as its encapsulated pixel data."""
    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(PHOTO)))
    dataset.file_meta.TransferSyntaxUID = syntax
    dataset.PhotometricInterpretation = photometric
    dataset.PixelData = encapsulate([frame])
    dataset["PixelData"].VR = "OB"
    return _saved(dataset)


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------
# Deflated datasets


def _deflated(extra_bytes: int) -> bytes:
    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(PHOTO)))
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    if extra_bytes:
        dataset.add_new(0x00091010, "OB", bytes(extra_bytes))  # a private element of zeros: deflates ~1000 : 1
    return _saved(dataset)


def test_a_deflated_photograph_reads_as_its_pixels():
    data = _deflated(0)
    assert np.array_equal(read_image(data, name="d.dcm"), PHOTO)
    assert image_size(data) == (12, 10)


def test_a_deflated_file_that_inflates_past_the_budget_is_refused_before_pydicom_inflates_it(monkeypatch):
    monkeypatch.setattr(dicomio, "max_image_pixels", lambda: 1000)  # a budget of 1000 px: 16 MiB + 12 000 bytes
    limit = 1000 * 12 + 16 * 1024 * 1024
    assert dicomio.max_inflated_bytes() == limit
    data = _deflated(limit + 1)
    assert len(data) < limit // 500
    inflated = []
    monkeypatch.setattr(pydicom.filereader.zlib, "decompress", lambda *a, **k: inflated.append(a) or b"")
    reason = f"a deflated DICOM file that inflates to more than {limit / 1e6:.0f} MB: refused as a possible " \
             "decompression bomb"
    for label, read in (("bomb.dcm", lambda: read_image(data, name="bomb.dcm")),
                        ("image", lambda: image_size(io.BytesIO(data))),
                        ("bomb.dcm", lambda: dicomio.dicom_facts(data, name="bomb.dcm"))):
        with pytest.raises(ValueError) as caught:
            read()
        assert str(caught.value) == f"{label}: {reason}"
    assert inflated == []  # pydicom's whole-file inflation never ran


def test_a_deflated_file_just_within_the_budget_is_read(monkeypatch):
    monkeypatch.setattr(dicomio, "max_image_pixels", lambda: 1000)
    data = _deflated(1000 * 12 + 16 * 1024 * 1024 - 4096)  # the dataset's other attributes fit in 4 kB
    assert np.array_equal(read_image(data, name="d.dcm"), PHOTO)


# --------------------------------------------------------------------------------------------------
# Compressed frames


def test_a_jpeg_frame_larger_than_rows_and_columns_is_refused_before_decoding(monkeypatch):
    data = _with_frame(_encoded(Image.new("RGB", (640, 480)), "JPEG"), JPEGBaseline8Bit, "YBR_FULL_422")
    decoded = []
    monkeypatch.setattr("pydicom.pixels.pixel_array", lambda *a, **k: decoded.append(a))
    with pytest.raises(ImageReadError) as caught:
        read_image(data, name="big.dcm")
    assert str(caught.value) == ("big.dcm: the compressed frame is 640 x 480 px of 3 samples, but the file declares "
                                 "12 x 10 px of 3 samples: refused before decoding")
    assert decoded == []


def test_a_jpeg_2000_frame_larger_than_rows_and_columns_is_refused():
    data = _with_frame(_encoded(Image.new("RGB", (300, 200)), "JPEG2000"), JPEG2000Lossless)
    with pytest.raises(ImageReadError, match=r"^j\.dcm: the compressed frame is 300 x 200 px of 3 samples, but the "
                                             r"file declares 12 x 10 px of 3 samples"):
        read_image(data, name="j.dcm")


def test_a_grey_jpeg_in_a_colour_file_is_refused_by_its_sample_count():
    data = _with_frame(_encoded(Image.new("L", (12, 10)), "JPEG"), JPEGBaseline8Bit, "YBR_FULL_422")
    with pytest.raises(ImageReadError, match=r"^g\.dcm: the compressed frame is 12 x 10 px of 1 sample, but the "
                                             r"file declares 12 x 10 px of 3 samples"):
        read_image(data, name="g.dcm")


def test_a_frame_of_no_known_kind_is_refused():
    with pytest.raises(ImageReadError) as caught:
        read_image(_with_frame(b"\x00" * 64, JPEGBaseline8Bit, "YBR_FULL_422"), name="x.dcm")
    assert str(caught.value) == "x.dcm: cannot read the size of the compressed frame (JPEG Baseline (Process 1))"


def test_honest_compressed_frames_still_read():
    jpeg = _with_frame(_encoded(Image.fromarray(PHOTO), "JPEG"), JPEGBaseline8Bit, "YBR_FULL_422")
    assert np.abs(read_image(jpeg).astype(int) - PHOTO).max() < 40  # lossy, 4:2:0 chroma
    j2k = _with_frame(_encoded(Image.fromarray(PHOTO), "JPEG2000"), JPEG2000Lossless)
    assert np.array_equal(read_image(j2k), PHOTO)


def test_frame_size_reads_jpeg_j2k_and_jp2_headers():
    grey = Image.new("L", (321, 123))
    assert frame_size(_encoded(grey, "JPEG")) == FrameSize(321, 123, 1)
    assert frame_size(_encoded(Image.new("RGB", (321, 123)), "JPEG")) == FrameSize(321, 123, 3)
    assert frame_size(_encoded(Image.new("RGB", (77, 5)), "JPEG2000")) == FrameSize(77, 5, 3)
    buffer = io.BytesIO()
    Image.new("RGB", (77, 5)).save(buffer, "JPEG2000", no_jp2=False)
    jp2 = buffer.getvalue()
    assert jp2.startswith(b"\x00\x00\x00\x0cjP  ")
    assert frame_size(jp2) == FrameSize(77, 5, 3)
    assert frame_size(b"") is None and frame_size(b"\xff\xd8\xff\xda") is None and frame_size(b"PNG") is None


# --------------------------------------------------------------------------------------------------
# RLE


def _rle_frame(segments: list[bytes]) -> bytes:
    offsets = []
    position = 64
    for segment in segments:
        offsets.append(position)
        position += len(segment)
    return struct.pack("<16I", len(segments), *offsets, *[0] * (15 - len(segments))) + b"".join(segments)


def _runs(length: int, value: int) -> bytes:
    """An RLE segment of ``length`` bytes of ``value``, in replicate runs of up to 128."""
    out = bytearray()
    while length:
        run = min(128, length)
        out += bytes([257 - run if run > 1 else 0, value])
        length -= run
    return bytes(out)


def test_an_rle_segment_longer_than_its_plane_is_refused_before_decoding():
    plane = 12 * 10
    bomb = _rle_frame([_runs(plane, 1), _runs(plane * 64, 2), _runs(plane, 3)])
    assert rle_overlong_segment(bomb, plane) == 1
    with pytest.raises(ImageReadError) as caught:
        read_image(_with_frame(bomb, RLELossless), name="r.dcm")
    assert str(caught.value) == ("r.dcm: corrupt DICOM pixel data: RLE segment 2 unpacks to more than the 12 x 10 px "
                                 "the file declares")


def test_an_honest_rle_frame_reads_and_a_padded_segment_is_tolerated():
    plane = 12 * 10
    frame = _rle_frame([_runs(plane, 10), _runs(plane, 20), _runs(plane + 1, 30)])  # one padding byte
    assert rle_overlong_segment(frame, plane) is None
    assert rle_overlong_segment(_rle_frame([_runs(plane + 129, 0)]), plane) == 0
    image = read_image(_with_frame(frame, RLELossless), name="r.dcm")
    assert image.shape == (10, 12, 3) and image[0, 0].tolist() == [10, 20, 30] and image[9, 11].tolist() == [10, 20, 30]


# --------------------------------------------------------------------------------------------------
# Datasets of many elements


def _crowded(syntax: str, count: int, nested: bool) -> bytes:
    """The photograph's DICOM file in ``syntax`` with ``count`` empty private elements, at the top level or inside
    one item of a private sequence."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(PHOTO)))
    dataset.file_meta.TransferSyntaxUID = syntax
    holder = Dataset() if nested else dataset
    for index in range(count):
        holder.add_new(0x00091100 + index, "LO", "")
    if nested:
        dataset.add_new(0x00091010, "SQ", Sequence([holder]))
    return _saved(dataset)


@pytest.mark.parametrize(("syntax", "nested"), [
    (ExplicitVRLittleEndian, False), (ImplicitVRLittleEndian, True), (ExplicitVRLittleEndian, True),
    (DeflatedExplicitVRLittleEndian, False)],
                         ids=["explicit", "implicit-nested", "explicit-nested", "deflated"])
def test_a_dataset_of_more_elements_than_a_photograph_has_is_refused_before_pydicom_reads_it(syntax, nested,
                                                                                              monkeypatch):
    assert dicomscan.MAX_DICOM_ELEMENTS == 50_000
    monkeypatch.setattr(dicomscan, "MAX_DICOM_ELEMENTS", 500)  # the same walk, a hundredth of the file to make
    data = _crowded(syntax, 501, nested)
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: pytest.fail("pydicom read the dataset"))
    for read in (lambda: read_image(data, name="many.dcm"), lambda: image_size(data)):
        with pytest.raises(ImageReadError) as caught:
            read()
        assert caught.value.reason == "more than 500 data elements (a photograph has a few hundred)"
    assert caught.value.filename == "image"


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
def test_a_dataset_of_many_elements_within_the_limit_still_reads(syntax, monkeypatch):
    monkeypatch.setattr(dicomscan, "MAX_DICOM_ELEMENTS", 500)
    data = _crowded(syntax, 420, nested=syntax == ImplicitVRLittleEndian)  # and the photograph's own 40 or so
    assert np.array_equal(read_image(data, name="many.dcm"), PHOTO)


def _with_dataset_bytes(meta_syntax: str | None, dataset: bytes) -> bytes:
    """A DICOM file whose file meta names ``meta_syntax`` (none when None) followed by the raw ``dataset``."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.4"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    if meta_syntax is not None:
        meta.TransferSyntaxUID = meta_syntax
    buffer = io.BytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=False)
    return buffer.getvalue() + dataset


def _implicit_elements(count: int) -> bytes:
    """``count`` private elements in implicit VR, each of a 4-byte value (read with explicit VRs, the value's
    bytes would be taken for the next header)."""
    return b"".join(struct.pack("<HHI", 0x0009, 0x1100 + index, 4) + b"\xff\xff\xff\x7f" for index in range(count))


def test_implicit_vr_elements_under_an_explicit_syntax_are_counted_as_pydicom_reads_them(monkeypatch):
    monkeypatch.setattr(dicomscan, "MAX_DICOM_ELEMENTS", 500)  # pydicom reads them as implicit VR, with a warning
    data = _with_dataset_bytes(ExplicitVRLittleEndian, _implicit_elements(501))
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: pytest.fail("pydicom read the dataset"))
    with pytest.raises(ImageReadError, match=r"^x\.dcm: more than 500 data elements"):
        read_image(data, name="x.dcm")


def test_a_file_naming_no_transfer_syntax_is_refused_before_pydicom_reads_its_dataset(monkeypatch):
    data = _with_dataset_bytes(None, _implicit_elements(10))
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: pytest.fail("pydicom read the dataset"))
    with pytest.raises(ImageReadError) as caught:
        read_image(data, name="x.dcm")
    assert str(caught.value) == "x.dcm: unknown DICOM transfer syntax '(none)'"
