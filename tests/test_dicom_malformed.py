"""Malformed DICOM files on disk (a shared data root, ``moleseg predict``) whose layout made the reader take the
whole file, or allocate what an element declares, before it refused them: each is now refused, by name and reason,
after reading a bounded number of bytes. The files are small real bytes with huge declared lengths; the bytes read
are counted (test_dicom_frames's counting file) and the memory allocated traced."""

from __future__ import annotations

import io
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import JPEGBaseline8Bit
from synthetic import dicom_bytes
from test_dicom_frames import counted  # noqa: F401 (a fixture)

from moleseg.core.imageio import ImageReadError, image_size, read_image

#: A 12 x 10 px RGB photograph.
PHOTO = np.stack([np.arange(120).reshape(10, 12) * 2, np.full((10, 12), 50), np.arange(120).reshape(10, 12)],
                 axis=2).astype(np.uint8)
#: Real bytes of each malformed part (the whole file is a little more).
PART = 2 * 1024 * 1024
#: Most bytes a refusal may read from such a file (headers, buffered in 512-byte reads).
READ_BOUND = 64 * 1024
GIB = 1024**3


def element(group: int, number: int, vr: str, length: int, value: bytes = b"") -> bytes:
    """An explicit VR little endian element header (and ``value``), of the declared ``length``."""
    if vr in ("OB", "OW", "SQ", "UN", "UT"):
        return struct.pack("<HH2sHI", group, number, vr.encode(), 0, length) + value
    return struct.pack("<HH2sH", group, number, vr.encode(), length) + value


def item(length: int, value: bytes = b"") -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, length) + value


UNDEFINED = 0xFFFFFFFF
DELIMITER = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def parts(data: bytes) -> tuple[bytes, bytes, bytes]:
    """A DICOM file's preamble and meta, its dataset before the Pixel Data element, and that element."""
    fp = io.BytesIO(data)
    read_preamble(fp, False)
    _read_file_meta_info(fp)
    start, pixels = fp.tell(), data.rindex(b"\xe0\x7f\x10\x00")
    return data[:start], data[start:pixels], data[pixels:]


NATIVE = parts(dicom_bytes(PHOTO))
JPEG_FILE = dicom_bytes(PHOTO, compress=JPEGBaseline8Bit)
JPEG = parts(JPEG_FILE)
_TWO = pydicom.dcmread(io.BytesIO(JPEG_FILE))
_TWO.NumberOfFrames = 2
_BUFFER = io.BytesIO()
_TWO.save_as(_BUFFER)
#: The JPEG file's parts with NumberOfFrames 2 (a Basic Offset Table is then read).
JPEG_TWO = parts(_BUFFER.getvalue())
FRAME = next(generate_frames(pydicom.dcmread(io.BytesIO(JPEG_FILE)).PixelData, number_of_frames=1))
ENDS_EARLY = "truncated DICOM file: the data ends early"
CASES = {
    "an attribute declaring 1 GiB": (
        NATIVE[0] + element(0x0009, 0x1011, "OB", GIB) + bytes(PART),
        f"{ENDS_EARLY} (element (0009,1011) ends after {PART} of its {GIB} bytes)"),
    "a sequence never closed": (
        NATIVE[0] + element(0x0009, 0x1010, "SQ", UNDEFINED) + item(UNDEFINED)
        + element(0x0009, 0x1011, "OB", PART, bytes(PART)) + NATIVE[1] + NATIVE[2],
        f"{ENDS_EARLY} (the sequence (0009,1010) of an undefined length has no delimiter before the file ends)"),
    "a compressed file's sequence never closed": (
        JPEG[0] + element(0x0009, 0x1010, "SQ", UNDEFINED) + item(UNDEFINED) + JPEG[1]
        + element(0x7FE0, 0x0010, "OB", UNDEFINED) + item(0) + item(PART, bytes(PART)) + DELIMITER,
        f"{ENDS_EARLY} (the sequence (0009,1010) of an undefined length has no delimiter before the file ends)"),
    "a compressed file's sequence of items of a defined length never closed": (  # the pixel data's delimiter
        JPEG[0] + element(0x0009, 0x1010, "SQ", UNDEFINED) + item(0) + JPEG[1]  # is not the sequence's
        + element(0x7FE0, 0x0010, "OB", UNDEFINED) + item(0) + item(PART, bytes(PART)) + DELIMITER,
        f"{ENDS_EARLY} (the sequence (0009,1010) of an undefined length has no delimiter before the file ends)"),
    "native pixel data of an undefined length": (
        NATIVE[0] + NATIVE[1] + element(0x7FE0, 0x0010, "OB", UNDEFINED) + item(0) + item(PART, bytes(PART)),
        "native pixel data of an undefined length (only compressed pixel data is encapsulated)"),
    "native pixel data of VR UN": (
        NATIVE[0] + NATIVE[1] + element(0x7FE0, 0x0010, "UN", PART, bytes(PART)),
        f"wrong pixel data length: {PART} bytes, expected 360 (12 x 10 px, 3 samples of 8 bits)"),
    "compressed pixel data of a defined length": (
        JPEG[0] + JPEG[1] + element(0x7FE0, 0x0010, "OB", PART, (item(0) + item(len(FRAME), FRAME)).ljust(PART,
                                                                                                        b"\0")),
        "pixel data of a layout read whole (compressed data of a defined length, where encapsulated data has an "
        f"undefined one): {12 + PART:,} bytes to the end of the file, more than one frame may take "
        f"({2 * 360 + 2**20:,} bytes)"),
    "a Basic Offset Table pointing past the end": (
        JPEG_TWO[0] + JPEG_TWO[1] + element(0x7FE0, 0x0010, "OB", UNDEFINED)
        + item(8, struct.pack("<II", 0x7FFFFFF0, 0x7FFFFFF8)) + item(len(FRAME), FRAME) + item(PART, bytes(PART))
        + DELIMITER, "cannot read the size of the compressed frame (JPEG Baseline (Process 1))"),
    "a fragment declaring 1 GiB": (
        JPEG[0] + JPEG[1] + element(0x7FE0, 0x0010, "OB", UNDEFINED) + item(0) + item(GIB, bytes(PART)),
        f"{ENDS_EARLY} (End of file reached before delimiter (FFFE,E0DD) found)"),
}

#: The cases whose dataset before the pixel data is sound.
PIXELS_ONLY = ("native pixel data of VR UN", "compressed pixel data of a defined length",
               "a Basic Offset Table pointing past the end", "a fragment declaring 1 GiB")


def refused_on_disk(tmp_path: Path, data: bytes) -> tuple[Path, ImageReadError, int]:
    """``data`` written as ``odd.dcm``, its refusal by the image reader and the peak of the memory it allocated."""
    path = tmp_path / "odd.dcm"
    path.write_bytes(data)
    read_image(JPEG_FILE)  # the decoders' modules imported before the memory is traced
    tracemalloc.start()
    try:
        with pytest.raises(ImageReadError) as caught:
            read_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return path, caught.value, peak


@pytest.mark.parametrize("case", list(CASES))
def test_a_malformed_file_on_disk_is_refused_after_reading_a_bounded_number_of_bytes(tmp_path, counted, case):
    data, reason = CASES[case]
    path, error, peak = refused_on_disk(tmp_path, data)
    assert (error.filename, error.reason) == ("odd.dcm", reason)
    assert counted() < READ_BOUND < PART < len(data), counted()
    assert peak < 4 * READ_BOUND + 1024 * 1024, peak  # nothing the size of what a part declares or holds
    if case in PIXELS_ONLY:  # the header's size: read without the pixel data, which alone is malformed
        assert image_size(path) == (12, 10)
    else:  # the same refusal
        with pytest.raises(ImageReadError) as caught:
            image_size(path)
        assert caught.value.reason == reason
    assert counted() < 2 * READ_BOUND


def test_the_same_files_from_memory_are_refused_with_the_same_reasons():
    """From memory (an upload) the file is read whole anyway: compressed pixel data of a defined length is then
    pydicom's to refuse, with its own reason."""
    for case, (data, reason) in CASES.items():
        with pytest.raises(ImageReadError) as caught:
            read_image(data, name="odd.dcm")
        if case == "compressed pixel data of a defined length":
            assert caught.value.reason.startswith("corrupt DICOM pixel data (ValueError: Unexpected tag '(0000,0000)'")
        elif case == "a fragment declaring 1 GiB":  # pydicom's words add "in file <no filename>"
            assert caught.value.reason.startswith(reason[:-1]), caught.value.reason
        else:
            assert caught.value.reason == reason, case


def test_a_one_frame_file_of_many_small_fragments_is_refused_from_their_headers(tmp_path, counted):
    """20 000 fragments of 200 bytes (4 MB, under the element count's limit): every fragment of a one-frame file is
    its frame, so their sum, walked from the item headers, refuses it before pydicom gathers them (it read the file
    a third time to gather them)."""
    data = (JPEG[0] + JPEG[1] + element(0x7FE0, 0x0010, "OB", UNDEFINED) + item(0)
            + item(200, bytes(200)) * 20_000 + DELIMITER)
    path, error, peak = refused_on_disk(tmp_path, data)
    assert error.reason == (f"the first compressed frame takes more than {2 * 360 + 2**20:,} bytes (twice what 12 "
                            "x 10 px of 3 samples of 8 bits take uncompressed, and 1 MiB): refused before decoding")
    assert counted() < 2 * len(data) + READ_BOUND, counted()  # the element count's walk and the fragments' walk
    assert peak < 256 * 1024, peak


def implicit_element(group: int, number: int, value: bytes) -> bytes:
    """An implicit VR little endian element (a UN value's items are encoded so, PS3.5 6.2.2)."""
    return struct.pack("<HHI", group, number, len(value)) + value


ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
#: An item of implicit VR elements whose second is 16,706 bytes long (0x4142: its length's first bytes are "BA",
#: two capital letters, as an explicit VR header's VR is).
_INNER = implicit_element(0x0029, 0x1011, b"abcd") + implicit_element(0x0029, 0x1012, bytes(0x4142))
VALID_PRIVATE = {
    "of an undefined length": element(0x0029, 0x1010, "UN", UNDEFINED) + item(UNDEFINED, _INNER) + ITEM_END
    + DELIMITER,
    "of a defined length": element(0x0029, 0x1010, "UN", 8 + len(_INNER), item(len(_INNER), _INNER)),
}


@pytest.mark.parametrize("case", list(VALID_PRIVATE))
def test_a_private_sequence_of_vr_un_whose_implicit_item_holds_a_long_element_is_read(tmp_path, case):
    """A valid file: its items' encoding is decided at their first element, as pydicom decides it, not again at
    each element (the second's length read as a VR made the walk refuse the file as truncated)."""
    data = NATIVE[0] + NATIVE[1] + element(0x0029, 0x0010, "LO", 4, b"TEST") + VALID_PRIVATE[case] + NATIVE[2]
    private = pydicom.dcmread(io.BytesIO(data))[0x0029, 0x1010]  # pydicom reads it: UN bytes, or a sequence
    assert (private.VR, len(private.value)) == ("UN", 8 + len(_INNER)) if case == "of a defined length" else (
        private.VR, len(private.value[0][0x0029, 0x1012].value)) == ("SQ", 0x4142)
    (tmp_path / "private.dcm").write_bytes(data)
    assert np.array_equal(read_image(tmp_path / "private.dcm"), PHOTO)
    assert np.array_equal(read_image(data, name="private.dcm"), PHOTO)
    assert image_size(tmp_path / "private.dcm") == (12, 10)


def test_a_compressed_file_with_an_encapsulated_icon_in_a_closed_sequence_is_read(tmp_path):
    """A valid file: the icon's pixel data delimiter closes its fragments, then the item's and the sequence's
    delimiters close those (the walk now tells the pixel data's delimiter from a sequence's)."""
    icon = (element(0x0028, 0x0002, "US", 2, struct.pack("<H", 3)) + element(0x0028, 0x0004, "CS", 12, b"YBR_FULL_422")
            + element(0x0028, 0x0010, "US", 2, struct.pack("<H", 10))
            + element(0x0028, 0x0011, "US", 2, struct.pack("<H", 12))
            + element(0x7FE0, 0x0010, "OB", UNDEFINED) + item(0) + item(len(FRAME), FRAME) + DELIMITER)
    path = tmp_path / "icon.dcm"
    path.write_bytes(JPEG[0] + JPEG[1] + element(0x0088, 0x0200, "SQ", UNDEFINED) + item(UNDEFINED, icon)
                     + ITEM_END + DELIMITER + JPEG[2])
    assert len(pydicom.dcmread(path).IconImageSequence[0].PixelData) == 16 + len(FRAME)
    assert np.array_equal(read_image(path), read_image(JPEG_FILE))
