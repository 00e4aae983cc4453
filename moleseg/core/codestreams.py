"""What compressed image data from an untrusted file declares or unpacks to, found out before a decoder unpacks it.

A DICOM file's ``Rows`` and ``Columns`` are checked against the pixel budget, but the decoders (libjpeg,
OpenJPEG, pydicom's RLE decoder) decode what the frame itself declares and only compare it with ``Rows`` x
``Columns`` afterwards: a 1 MB DICOM file saying 10 x 10 px whose JPEG frame is 8000 x 8000 px took 0.55 GB of
memory to refuse, and a JPEG may declare up to 65 535 x 65 535 px. :func:`frame_size` reads the size and the
component count a JPEG, JPEG-LS or JPEG 2000 frame declares; :func:`rle_overlong_segment` finds the first RLE
segment that unpacks to more than it should (RLE unpacks up to 64 times its size), stopping as soon as it does;
:func:`unpacks_past` does so for a TIFF strip or tile (Deflate and LZMA unpack a thousand times their size, and
tifffile unpacks each whole, whatever the strip should hold).
"""

from __future__ import annotations

import lzma
import struct
import zlib
from dataclasses import dataclass

__all__ = ["UNPACKERS", "FrameSize", "frame_size", "rle_overlong_segment", "unpacks_past"]

#: JPEG start-of-frame markers (SOF0..SOF15 but DHT C4, JPG C8 and DAC CC) and JPEG-LS's SOF55 (F7).
_SOF_MARKERS = frozenset([*range(0xC0, 0xD0)]) - {0xC4, 0xC8, 0xCC} | {0xF7}
#: JPEG markers that stand alone, without a length: TEM, RST0..7, SOI.
_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD9)])
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
#: Bytes an RLE segment may unpack to beyond ``Rows x Columns`` (a padding byte, at most one more run).
RLE_SLACK_BYTES: int = 128
_RLE_HEADER_BYTES = 64
_RLE_MAX_SEGMENTS = 15


@dataclass(frozen=True)
class FrameSize:
    """What a compressed frame declares: ``width`` x ``height`` px of ``components`` samples each."""

    width: int
    height: int
    components: int


def _jpeg_size(frame: bytes) -> FrameSize | None:
    offset = 2
    while offset + 4 <= len(frame):
        if frame[offset] != 0xFF:
            return None
        marker = frame[offset + 1]
        if marker == 0xFF:  # a fill byte before a marker
            offset += 1
            continue
        if marker in _STANDALONE_MARKERS:
            offset += 2
            continue
        if marker in _SOF_MARKERS:
            if offset + 10 > len(frame):
                return None
            height, width = struct.unpack_from(">HH", frame, offset + 5)
            return FrameSize(width=width, height=height, components=frame[offset + 9])
        if marker == 0xDA:  # the scan starts before any frame header
            return None
        offset += 2 + struct.unpack_from(">H", frame, offset + 2)[0]
    return None


def _j2k_codestream_start(frame: bytes) -> int | None:
    """Where the JPEG 2000 codestream starts in ``frame`` (a bare codestream or a JP2 file's ``jp2c`` box)."""
    if frame.startswith(_J2K_SOC_SIZ):
        return 0
    if not frame.startswith(_JP2_SIGNATURE):
        return None
    offset = len(_JP2_SIGNATURE)
    while offset + 8 <= len(frame):
        length, kind = struct.unpack_from(">I4s", frame, offset)
        header = 8
        if length == 1 and offset + 16 <= len(frame):  # a 64-bit box length follows the type
            length, header = struct.unpack_from(">Q", frame, offset + 8)[0], 16
        if kind == b"jp2c":
            return offset + header
        if length < header:  # 0: the box runs to the end of the file, and no codestream came before
            return None
        offset += length
    return None


def _j2k_size(frame: bytes) -> FrameSize | None:
    start = _j2k_codestream_start(frame)
    if start is None or not frame.startswith(_J2K_SOC_SIZ, start) or start + 42 > len(frame):
        return None
    x_size, y_size, x_origin, y_origin = struct.unpack_from(">IIII", frame, start + 8)
    components = struct.unpack_from(">H", frame, start + 40)[0]
    return FrameSize(width=x_size - x_origin, height=y_size - y_origin, components=components)


def frame_size(frame: bytes) -> FrameSize | None:
    """The size a JPEG (any process), JPEG-LS or JPEG 2000 (codestream or JP2) frame declares in its header;
    None when ``frame`` is none of these or its header cannot be read."""
    frame = bytes(frame[:1 << 20]) if len(frame) > 1 << 20 else bytes(frame)  # headers come first
    if frame.startswith(b"\xff\xd8"):
        return _jpeg_size(frame)
    return _j2k_size(frame)


def _segment_overflows(segment: memoryview, limit: int) -> bool:
    """Whether the RLE ``segment`` unpacks to more than ``limit`` bytes (stops as soon as it does)."""
    produced = 0
    position = 0
    end = len(segment)
    while position < end:
        header = segment[position]
        if header < 128:  # a literal run of header + 1 bytes
            produced += header + 1
            position += header + 2
        elif header > 128:  # one byte repeated 257 - header times
            produced += 257 - header
            position += 2
        else:  # -128: no operation
            position += 1
        if produced > limit:
            return True
    return False


def rle_overlong_segment(frame: bytes, segment_bytes: int) -> int | None:
    """The index of the first segment of the DICOM RLE ``frame`` that unpacks to more than ``segment_bytes``
    (``Rows x Columns``) plus :data:`RLE_SLACK_BYTES`; None when every segment fits or the header cannot be
    read (the decoder refuses that itself)."""
    if len(frame) < _RLE_HEADER_BYTES:
        return None
    count, *offsets = struct.unpack_from("<16I", frame, 0)
    if not 1 <= count <= _RLE_MAX_SEGMENTS:
        return None
    bounds = [*offsets[:count], len(frame)]
    view = memoryview(frame)
    for index in range(count):
        start, stop = bounds[index], max(bounds[index], min(bounds[index + 1], len(frame)))
        if _segment_overflows(view[start:stop], segment_bytes + RLE_SLACK_BYTES):
            return index
    return None


def _inflates_past(data: bytes, limit: int) -> bool:
    try:
        return len(zlib.decompressobj().decompress(data, limit + 1)) > limit
    except zlib.error:
        return False  # the decoder refuses the damaged stream itself


def _lzma_past(data: bytes, limit: int) -> bool:
    try:
        return len(lzma.LZMADecompressor().decompress(data, max_length=limit + 1)) > limit
    except lzma.LZMAError:
        return False


def _packbits_past(data: bytes, limit: int) -> bool:
    return _segment_overflows(memoryview(data), limit)  # PackBits is the same run-length scheme as DICOM's RLE


#: TIFF compression codes whose data :func:`unpacks_past` can measure: Deflate (8, Adobe's 32946, 50013), LZMA
#: (34925) and PackBits (32773), the compressed kinds tifffile decodes without imagecodecs.
UNPACKERS = {8: _inflates_past, 32946: _inflates_past, 50013: _inflates_past, 34925: _lzma_past,
             32773: _packbits_past}


def unpacks_past(data: bytes, compression: int, limit: int) -> bool:
    """Whether the TIFF strip or tile ``data``, compressed with the TIFF ``compression`` code (one of
    :data:`UNPACKERS`), unpacks to more than ``limit`` bytes: unpacked up to ``limit + 1`` bytes at most, never
    further. False for data the unpacker refuses as damaged (tifffile then says so)."""
    return UNPACKERS[compression](data, limit)
