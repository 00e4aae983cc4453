"""The first frame of a DICOM file on disk, read without the rest of its pixel data.

pydicom reads a Pixel Data element whole; a multi-frame file in a shared data root can hold gigabytes of frames
of which the image reader shows one. For a file (not bytes already in memory) :mod:`moleseg.core.dicomio` reads
the dataset up to the pixel data (``stop_before_pixels``), then :func:`pixel_element` reads the element's header
where pydicom stopped and checks against the file's size, without reading the value, that the value is all
there: a native value as long as the element declares, an encapsulated one whose fragment items (8-byte headers,
values skipped) reach their sequence delimiter before the file ends. :func:`first_frame` reads the first frame's
bytes only (native: ``Rows x Columns x SamplesPerPixel x BitsAllocated / 8``; encapsulated: pydicom's
``get_frame`` on the file, which reads the Basic Offset Table and the first frame's fragments), and
:func:`hold_first_frame` gives pydicom the dataset holding that frame alone, decoded as the whole file would have been.

Layouts read so only: native pixel data of a defined length (VR OB, OW, or UN read as an implicit VR one) and
encapsulated pixel data of an undefined length in a dataset that is not :func:`deflated`; a deflated file is read
whole as before, and for any other (malformed) layout :func:`pixel_element` says :data:`WHOLE` and the caller reads
the file whole only when no more bytes follow than one frame may take (:func:`frame_limit`).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, replace
from typing import IO, Any

__all__ = ["WHOLE", "FrameTooLarge", "PixelElement", "deflated", "first_frame", "frame_limit", "hold_first_frame",
           "pixel_element"]

_PIXEL_DATA, _ITEM, _SEQUENCE_END = 0x7FE00010, 0xFFFEE000, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
#: Explicit VRs a Pixel Data element is read with here (4-byte length after 2 reserved bytes); UN is given as
#: an implicit VR one is.
_PIXEL_VRS = ("OB", "OW", "UN")
#: What :func:`pixel_element` returns for a file to be read whole (see the module's text).
WHOLE = "whole"
#: Bytes a compressed frame may take beyond twice its native size (markers, tables, an ICC profile).
_FRAME_ALLOWANCE = 1 << 20


class FrameTooLarge(ValueError):
    """Reading the first compressed frame took more than :func:`frame_limit` allows."""


def frame_limit(frame_bytes: int) -> int:
    """Most bytes a compressed frame of ``frame_bytes`` native bytes may take: twice as many and 1 MiB (a JPEG
    of noise at quality 100 without subsampling takes 1.4 times, RLE at most 1.01 times)."""
    return 2 * frame_bytes + _FRAME_ALLOWANCE


@dataclass(frozen=True)
class PixelElement:
    """A Pixel Data element's header: its ``vr``, declared ``length`` (``0xFFFFFFFF``: encapsulated), the
    ``offset`` of its value in the file, the file's byte ``order`` (``"<"`` or ``">"``) and, encapsulated, the
    number of ``items`` (the Basic Offset Table and the fragments) and the bytes of the fragments."""

    vr: str
    length: int
    offset: int
    order: str
    items: int = 0
    fragment_bytes: int = 0

    @property
    def encapsulated(self) -> bool:
        """Whether the value is encapsulated (fragment items of an undefined length)."""
        return self.length == _UNDEFINED


def _size(fp: IO[bytes]) -> int:
    position = fp.tell()
    size = fp.seek(0, os.SEEK_END)
    fp.seek(position)
    return size


def _check_fragments(fp: IO[bytes], element: PixelElement, size: int) -> PixelElement:
    """``element`` with the number of items of the encapsulated value and the bytes of its fragments (the items
    after the Basic Offset Table); EOFError when the file ends before its sequence
    delimiter: the item headers are read (8 bytes each; the dataset scan has bounded their number), their values
    skipped. An item of an undefined length or an unexpected tag stops the walk: pydicom's ``get_frame`` refuses
    those."""
    position, items, fragment_bytes = element.offset, 0, 0
    while True:
        fp.seek(position)
        head = fp.read(8)
        if len(head) < 8:
            raise EOFError("End of file reached before delimiter (FFFE,E0DD) found")
        group, number, length = struct.unpack(element.order + "HHI", head)
        tag = group << 16 | number
        if tag == _SEQUENCE_END or tag != _ITEM or length == _UNDEFINED:
            return replace(element, items=items, fragment_bytes=fragment_bytes)
        fragment_bytes += length if items else 0
        items += 1
        position += 8 + length
        if position > size:
            raise EOFError("End of file reached before delimiter (FFFE,E0DD) found")


def deflated(fp: IO[bytes]) -> bool:
    """Whether the DICOM file ``fp``'s meta names the deflated transfer syntax (its dataset then is read whole,
    within :mod:`moleseg.core.dicomscan`'s inflated budget); False when the meta cannot be read (pydicom then
    says why). The position is left at 0."""
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    try:
        fp.seek(0)
        read_preamble(fp, False)
        return str(_read_file_meta_info(fp).get("TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian
    except Exception:  # noqa: BLE001 - pydicom's own reading refuses a malformed file meta with its reason
        return False
    finally:
        fp.seek(0)


def pixel_element(fp: IO[bytes], dataset: Any, syntax: Any) -> PixelElement | str | None:
    """The Pixel Data element whose header starts at ``fp``'s position (where pydicom's ``stop_before_pixels``
    left it in a file that is not :func:`deflated`, ``dataset`` read so, ``syntax`` its transfer syntax); None
    when no Pixel Data element is there, :data:`WHOLE` for a layout this module does not read (see the module's
    text).

    Raises
    ------
    EOFError
        The file ends before the value does (reading none of it).
    """
    implicit, little = dataset.original_encoding
    order = "<" if little else ">"
    start = fp.tell()
    head = fp.read(8)
    if len(head) < 8:
        return None if not head else WHOLE  # a part of a header: pydicom says what is wrong with it
    group, number = struct.unpack(order + "HH", head[:4])
    if group << 16 | number != _PIXEL_DATA:
        return None  # Float or Double Float Pixel Data: no Pixel Data, as when pydicom reads them
    if implicit:
        length = struct.unpack(order + "I", head[4:])[0]
    else:
        vr = head[4:6].decode("latin-1")
        if vr not in _PIXEL_VRS:
            return WHOLE
        raw = fp.read(4)
        if len(raw) < 4:
            return WHOLE
        length = struct.unpack(order + "I", raw)[0]
    if implicit or vr == "UN":
        vr = "OB" if length == _UNDEFINED else "OW"  # as pydicom gives an implicit VR Pixel Data element
    element = PixelElement(vr=vr, length=length, offset=fp.tell(), order=order)
    if element.encapsulated != bool(syntax.is_compressed):
        return WHOLE  # native data of an undefined length or compressed data of a defined one
    size = _size(fp)
    if element.encapsulated:
        element = _check_fragments(fp, element, size)
    elif size - element.offset < length:
        raise EOFError(f"the pixel data ends after {size - element.offset} of its {length} bytes")
    fp.seek(start)
    return element


class _Capped:
    """``fp`` for pydicom's ``get_frame``: reads that take more than ``limit`` bytes in all raise
    :class:`FrameTooLarge` before they are made."""

    def __init__(self, fp: IO[bytes], limit: int) -> None:
        self.fp, self.limit, self.taken = fp, limit, 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or self.taken + size > self.limit:
            raise FrameTooLarge(f"the first frame takes more than {self.limit} bytes to read")
        data = self.fp.read(size)
        self.taken += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.fp.seek(offset, whence)

    def tell(self) -> int:
        return self.fp.tell()


def first_frame(fp: IO[bytes], element: PixelElement, frame_bytes: int, frames: int,
                extended_offsets: tuple[bytes, bytes] | None = None) -> bytes:
    """The first frame's bytes: native, the first ``frame_bytes`` of the value; encapsulated, the frame pydicom's
    decoder takes (``get_frame`` with ``number_of_frames=frames`` and the Extended Offset Table when given),
    reading at most :func:`frame_limit` bytes for the frame, 4 for each item of the Basic Offset Table and 8 for
    each item's header (nothing when the file has one frame, whose fragments take more than that).

    Raises
    ------
    FrameTooLarge
        The frame (or the offset table) would take more than that.
    ValueError, EOFError, struct.error
        Malformed encapsulation (pydicom's own errors).
    """
    from pydicom.encaps import get_frame

    fp.seek(element.offset)
    if not element.encapsulated:
        return fp.read(min(frame_bytes, element.length))
    if frames == 1 and element.fragment_bytes > frame_limit(frame_bytes):  # every fragment is the frame's
        raise FrameTooLarge(f"the one frame takes {element.fragment_bytes} bytes")
    capped = _Capped(fp, frame_limit(frame_bytes) + 12 * (element.items + 1))
    return get_frame(capped, 0, number_of_frames=frames, extended_offsets=extended_offsets,
                     endianness=element.order)


def hold_first_frame(dataset: Any, element: PixelElement, frame: bytes) -> None:
    """Make ``dataset`` (the reader's own, read without its pixel data) hold ``frame`` as its pixel data,
    encapsulated again if it was, as a dataset of one frame without an Extended Offset Table."""
    from pydicom.encaps import encapsulate

    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in dataset:
            delattr(dataset, keyword)
    if "NumberOfFrames" in dataset:
        dataset.NumberOfFrames = 1
    dataset.add_new(_PIXEL_DATA, element.vr, encapsulate([frame]) if element.encapsulated else frame)
