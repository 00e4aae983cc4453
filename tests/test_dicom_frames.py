"""A multi-frame DICOM file on disk gives its first frame from reading the dataset and that frame's bytes only
(:mod:`moleseg.core.dicomframes`): the bytes the reader takes from the file are counted, and the pixels, the
refusals of truncated and wrong-length files and the messages are those of the same file read from memory."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless
from synthetic import dicom_bytes

from moleseg.core import imagefile
from moleseg.core.imageio import ImageReadError, read_image

ROWS, COLUMNS, FRAMES = 48, 64, 40
FRAME_BYTES = ROWS * COLUMNS * 3
#: Bytes of the buffer the counted files are read through (each seek and read fills one).
BUFFER = 512


def frames() -> np.ndarray:
    """``FRAMES`` different RGB frames (each a smooth pattern, so RLE packs it)."""
    ramp = np.add.outer(np.arange(ROWS), np.arange(COLUMNS))
    return np.stack([np.stack([(ramp * (k % 5 + 1) + 60 * c + 7 * k) % 256 for c in range(3)], axis=-1)
                     for k in range(FRAMES)]).astype(np.uint8)


def multi_frame(pixels: np.ndarray, compress: str | None = None, syntax: str | None = None) -> bytes:
    """A DICOM file of the frames ``pixels`` (native, or compressed with one fragment per frame and a Basic
    Offset Table; native under ``syntax`` when given)."""
    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(pixels[0])))
    if syntax is not None:
        dataset.file_meta.TransferSyntaxUID = syntax
    dataset.NumberOfFrames = len(pixels)
    dataset.PixelData = pixels.tobytes()
    if compress is not None:
        dataset.compress(compress, encapsulate_ext=False)
        dataset.PixelData = pydicom.encaps.encapsulate(list(pydicom.encaps.generate_frames(
            dataset.PixelData, number_of_frames=len(pixels))), has_bot=True)
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


class CountingRaw(io.FileIO):
    """A file that counts the bytes read from it."""

    taken = 0

    def readinto(self, buffer) -> int:  # noqa: ANN001 - a writable buffer
        count = super().readinto(buffer)
        CountingRaw.taken += count or 0
        return count


@pytest.fixture()
def counted(monkeypatch):
    """The image reader's files opened as :class:`CountingRaw` behind a buffer of :data:`BUFFER` bytes;
    ``counted()`` gives the bytes read so far."""
    CountingRaw.taken = 0
    monkeypatch.setattr(imagefile, "open", lambda path, mode: io.BufferedReader(CountingRaw(path), BUFFER),
                        raising=False)
    return lambda: CountingRaw.taken


@pytest.mark.parametrize("compress", [None, RLELossless])
def test_the_first_frame_of_a_file_on_disk_is_read_without_the_other_frames(tmp_path, counted, compress):
    pixels = frames()
    data = multi_frame(pixels, compress)
    path = tmp_path / "many.dcm"
    path.write_bytes(data)
    image = read_image(path)
    assert np.array_equal(image, pixels[0]) and not np.array_equal(image, pixels[1])
    assert np.array_equal(read_image(data), image)  # the same file from memory: read whole, same pixels
    if compress is None:
        assert len(data) > FRAMES * FRAME_BYTES
    # the dataset (some 800 bytes), the first frame (9,216 bytes native, some more RLE) and, encapsulated, the
    # items' headers, each read twice (the dataset scan, the check that the file holds them all) in a buffer
    assert counted() < 2 * FRAME_BYTES + 2 * FRAMES * BUFFER < len(data) / 4, (counted(), len(data))


def test_a_native_file_cut_short_on_disk_is_refused_as_from_memory(tmp_path):
    data = multi_frame(frames())[:-1000]
    path = tmp_path / "cut.dcm"
    path.write_bytes(data)
    full = FRAMES * FRAME_BYTES
    message = ("cut.dcm: truncated DICOM file: the data ends early (the pixel data ends after "
               f"{full - 1000} of its {full} bytes)")
    for source in (path, data):
        with pytest.raises(ImageReadError) as caught:
            read_image(source, name="cut.dcm")
        assert str(caught.value) == message


def test_an_encapsulated_file_cut_short_on_disk_is_refused_though_its_first_frame_is_whole(tmp_path):
    data = multi_frame(frames(), RLELossless)
    for cut in (8, 9, 300):  # the delimiter, a byte of the last item, the middle of the last frame
        path = tmp_path / "cut.dcm"
        path.write_bytes(data[:-cut])
        with pytest.raises(ImageReadError, match=r"^cut\.dcm: truncated DICOM file: the data ends early \(End of "
                                                 r"file reached before delimiter \(FFFE,E0DD\) found"):
            read_image(path)


def test_a_native_file_of_the_wrong_length_on_disk_is_refused_by_its_declared_length(tmp_path):
    data = multi_frame(frames()[:, :-2])  # two rows short in every frame, Rows says 48
    dataset = pydicom.dcmread(io.BytesIO(data))
    dataset.Rows = ROWS
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    path = tmp_path / "short.dcm"
    path.write_bytes(buffer.getvalue())
    found = (ROWS - 2) * COLUMNS * 3 * FRAMES
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    assert str(caught.value) == (f"short.dcm: wrong pixel data length: {found} bytes, expected {FRAMES * FRAME_BYTES}"
                                 f" ({COLUMNS} x {ROWS} px, 3 samples of 8 bits, {FRAMES} frames)")


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
def test_implicit_vr_and_deflated_files_on_disk_give_their_first_frame(tmp_path, counted, syntax):
    pixels = frames()
    data = multi_frame(pixels, syntax=syntax)
    path = tmp_path / "other.dcm"
    path.write_bytes(data)
    assert np.array_equal(read_image(path), pixels[0])
    if syntax == ImplicitVRLittleEndian:  # its Pixel Data header has no VR: read so, and the first frame only
        assert counted() < 2 * FRAME_BYTES < len(data) / 4
    else:  # deflated: the dataset is inflated whole, as from memory (within the inflated budget)
        assert counted() >= len(data)


def encapsulated(fragments: list[bytes], offsets: list[int] | None) -> bytes:
    """``multi_frame``'s RLE file with the encapsulated ``fragments`` and the Basic Offset Table ``offsets``."""
    dataset = pydicom.dcmread(io.BytesIO(multi_frame(frames(), RLELossless)))
    table = b"".join(offset.to_bytes(4, "little") for offset in offsets or [])
    items = [len(table).to_bytes(4, "little") + table] + [len(f).to_bytes(4, "little") + f for f in fragments]
    dataset.PixelData = b"".join(b"\xfe\xff\x00\xe0" + item for item in items)
    return _saved(dataset)


def _saved(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def test_a_first_frame_larger_than_twice_its_pixels_and_1_mib_is_refused_before_it_is_read(tmp_path, counted):
    limit = 2 * FRAME_BYTES + 2**20
    message = (f"^big\\.dcm: the first compressed frame takes more than {limit:,} bytes \\(twice what {COLUMNS} x "
               f"{ROWS} px of 3 samples of 8 bits take uncompressed, and 1 MiB\\): refused before decoding$")
    junk = bytes(2**20)  # 1 MiB fragments: the first frame's, as a Basic Offset Table of two entries says
    for name, data in (("table", encapsulated([junk] * 4, [0, 3 * (len(junk) + 8)])),  # 3 fragments, 3 MiB
                       ("one frame", encapsulated([junk] * 3, None))):  # NumberOfFrames 1: every fragment
        if name == "one frame":
            dataset = pydicom.dcmread(io.BytesIO(data))
            dataset.NumberOfFrames = 1
            data = _saved(dataset)
        path = tmp_path / "big.dcm"
        path.write_bytes(data)
        CountingRaw.taken = 0
        for source in (path, data):
            with pytest.raises(ImageReadError, match=message):
                read_image(source, name="big.dcm")
        assert counted() < limit + 16 * BUFFER < len(data) / 2, (name, counted())


def test_a_first_frame_of_twice_its_pixels_and_1_mib_reads_and_a_byte_more_is_refused(tmp_path):
    pixels = frames()
    buffer = io.BytesIO()
    Image.fromarray(pixels[0]).save(buffer, "JPEG", quality=95)
    jpeg = buffer.getvalue()
    limit = 2 * FRAME_BYTES + 2**20
    app = b"\xff\xef" + (65535).to_bytes(2, "big") + bytes(65533)  # APP15 segments a decoder skips
    count, rest = divmod(limit - len(jpeg), len(app))
    last = b"\xff\xef" + (rest - 2).to_bytes(2, "big") + bytes(rest - 4)
    sos = 2  # the padding goes just before the scan, after the frame header that frame_size reads
    while jpeg[sos:sos + 2] != b"\xff\xda":
        sos += 2 + int.from_bytes(jpeg[sos + 2:sos + 4], "big")
    frame = jpeg[:sos] + app * count + last + jpeg[sos:]
    assert len(frame) == limit
    for extra, refused in ((b"", False), (b"\0\0", True)):  # two bytes after the JPEG's end (items are even)
        dataset = pydicom.dcmread(io.BytesIO(encapsulated([frame + extra, jpeg], [0, len(frame + extra) + 8])))
        dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        dataset.PhotometricInterpretation = "YBR_FULL_422"
        path = tmp_path / "app.dcm"
        path.write_bytes(_saved(dataset))
        for source in (path, path.read_bytes()):
            if refused:
                with pytest.raises(ImageReadError, match="the first compressed frame takes more than"):
                    read_image(source)
            else:
                assert np.array_equal(read_image(source), read_image(jpeg))
