"""What a DICOM file's dataset would cost pydicom, found from its bytes before pydicom reads it.

pydicom makes an object of every element it reads (some 350 bytes each) and inflates a deflated dataset whole,
in memory; a DICOM file is untrusted, and its elements can be 8 bytes each: a 1.9 MB file of 240 000 empty
private elements took 82 MB and 4.6 s to read (a 200 MB upload: some 8 GB), 0.5 MB of deflated zeros took
0.95 GB. :func:`dataset_problem` walks the dataset's element headers (sequences, items and the elements inside
them counted too; values skipped, not kept) and, for a deflated one, inflates it as it goes, stopping as soon as
there are more than :data:`MAX_DICOM_ELEMENTS` elements or more than the inflated budget. It also refuses, from
the headers alone, what pydicom would read whole before refusing it: an element or item whose declared length runs
past the end of the file (pydicom asks the file for all of it: a 2 MB file declaring a 4 GiB element took 4.3 GB),
a sequence or item of an undefined length whose delimiter never comes (pydicom reads to the end of the file), and
native pixel data of an undefined length. Otherwise it never decides what a valid file is: a file it cannot walk
is left to pydicom, which refuses it with its own reason.
"""

from __future__ import annotations

import struct
import zlib
from typing import IO

__all__ = ["ENDS_EARLY", "MAX_DICOM_ELEMENTS", "dataset_problem", "unknown_syntax"]

#: Most data elements (items and delimiters included) a DICOM photograph's dataset may hold; real ones hold a
#: few hundred.
MAX_DICOM_ELEMENTS: int = 50_000
#: Explicit VRs whose length takes 4 bytes after 2 reserved ones (PS3.5 7.1.2).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_ITEM, _ITEM_END, _SEQUENCE_END, _PIXEL_DATA = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD, 0x7FE00010
_ITEM_TAG_BYTES = {"<": struct.pack("<HH", 0xFFFE, 0xE000), ">": struct.pack(">HH", 0xFFFE, 0xE000)}
_UNDEFINED = 0xFFFFFFFF
#: VRs of a value pydicom reads as a sequence when it starts with an item (None: implicit VR, unknown tag).
_MAYBE_SEQUENCE = (None, b"UN")
_CHUNK = 1024 * 1024
#: The start of the refusal of a file whose data ends before what its headers declare.
ENDS_EARLY = "truncated DICOM file: the data ends early"


class _TooLarge(Exception):
    """The inflated dataset passed its budget."""


class _Refused(Exception):
    """A layout pydicom would read whole before refusing it: ``str()`` is the refusal."""


class _Raw:
    """The dataset's bytes as stored: skipping is seeking."""

    def __init__(self, fp: IO[bytes]) -> None:
        self.fp = fp
        position = fp.tell()
        self.size = fp.seek(0, 2)
        fp.seek(position)

    def remaining(self) -> int | None:
        """Bytes from the position to the end of the file."""
        return self.size - self.fp.tell()

    def tell(self) -> int:
        return self.fp.tell()

    def read(self, size: int) -> bytes:
        return self.fp.read(size)

    def peek(self, size: int) -> bytes:
        data = self.fp.read(size)
        self.fp.seek(-len(data), 1)
        return data

    def skip(self, size: int) -> None:
        self.fp.seek(size, 1)

    def drain(self) -> None:
        pass


class _Inflating:
    """A deflated dataset's bytes, inflated as they are read (at most a chunk kept beyond what is read); raises
    :class:`_TooLarge` past ``limit`` inflated bytes."""

    def __init__(self, fp: IO[bytes], limit: int) -> None:
        self.fp, self.limit, self.inflated = fp, limit, 0
        self.inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self.buffer, self.position, self.consumed = bytearray(), 0, 0

    def _fill(self, size: int) -> None:
        if self.position > _CHUNK:  # drop what was read
            del self.buffer[:self.position]
            self.position = 0
        while len(self.buffer) - self.position < size and not self.inflater.eof:
            data = self.inflater.unconsumed_tail or self.fp.read(_CHUNK)
            if not data:
                return
            more = self.inflater.decompress(data, _CHUNK)
            self.inflated += len(more)
            if self.inflated > self.limit:
                raise _TooLarge
            self.buffer += more

    def peek(self, size: int) -> bytes:
        self._fill(size)
        return bytes(self.buffer[self.position:self.position + size])

    def read(self, size: int) -> bytes:
        data = self.peek(size)
        self.position += len(data)
        self.consumed += len(data)
        return data

    def skip(self, size: int) -> None:
        while size > 0:
            self._fill(min(size, _CHUNK))
            step = min(size, len(self.buffer) - self.position)
            if step <= 0:
                return
            self.position += step
            self.consumed += step
            size -= step

    def drain(self) -> None:
        self.skip(1 << 62)

    def remaining(self) -> int | None:
        """Unknown before the data is inflated (the inflated budget bounds it)."""
        return None

    def tell(self) -> int:
        """Inflated bytes read or skipped."""
        return self.consumed


def _implicit_vr(tag: int) -> bytes | None:
    from pydicom.datadict import dictionary_VR

    try:
        return dictionary_VR(tag).encode("ascii")
    except (KeyError, UnicodeEncodeError):
        return None


def _looks_explicit(head: bytes) -> bool:
    """Whether an element header's bytes 4 and 5 are a VR (two capital letters), as pydicom decides whether a
    dataset, or an item of an explicit VR one, is encoded with explicit or implicit VRs."""
    return len(head) >= 6 and 0x40 < head[4] < 0x5B and 0x40 < head[5] < 0x5B


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _check_length(stream: _Raw | _Inflating, tag: int, length: int) -> None:
    """Refuse a defined ``length`` of the element or item ``tag`` running past the end of the file."""
    remaining = stream.remaining()
    if length != _UNDEFINED and remaining is not None and length > remaining:
        what = "the pixel data" if tag == _PIXEL_DATA else ("item" if tag == _ITEM else "element") + " " + \
            _tag_text(tag)
        raise _Refused(f"{ENDS_EARLY} ({what} ends after {remaining} of its {length} bytes)")


def _count(stream: _Raw | _Inflating, implicit: bool, order: str, most: int, native: bool = False) -> int:
    """Element headers in ``stream`` up to ``most + 1``: a sequence, an item, an undefined length or a value
    that starts with an item is stepped into, every other value skipped; the fragments of encapsulated pixel
    data are skipped whole. The encoding of the VRs is taken from the first element, as pydicom takes it, and in
    an explicit VR dataset an element without a VR is read as implicit; an item's, from its first element (as
    pydicom's ``_is_implicit_vr``: implicit inside an implicit one; a VR UN sequence's items are implicit, PS3.5
    6.2.2), kept for all its elements (an implicit element's length may look like a VR); a value of
    a defined length and another VR than SQ or UN (or an unknown one) is skipped as pydicom reads it, as bytes. Raises
    :class:`_Refused` for a defined length past the end of the file (but a fragment's: the pixel data's reader
    refuses those without reading them), a sequence or item of an undefined length left open at the end, and,
    in a ``native`` transfer syntax, pixel data of an undefined length."""
    count, fragments, open_tags = 0, False, []  # the sequences and items of an undefined length not closed yet
    items: list[tuple[int | None, bool]] = []  # the items stepped into: where each ends (None: at its delimiter)
    implicit = not _looks_explicit(stream.peek(6)) if len(stream.peek(6)) == 6 else implicit
    while count <= most:
        while items and items[-1][0] is not None and stream.tell() >= items[-1][0]:
            del items[-1]  # an item of a defined length read to its end
        head = stream.read(8)
        if len(head) < 8:
            if open_tags and count <= most:
                raise _Refused(f"{ENDS_EARLY} (the sequence {_tag_text(open_tags[0])} of an undefined length has "
                               "no delimiter before the file ends)")
            break
        group, element = struct.unpack(order + "HH", head[:4])
        tag = group << 16 | element
        count += 1
        if group == 0xFFFE:  # an item or a delimiter: a 4-byte length, no VR
            length = struct.unpack(order + "I", head[4:])[0]
            if tag == _SEQUENCE_END and fragments:
                fragments = False  # the pixel data's own delimiter: it closes no sequence of open_tags
            elif tag in (_SEQUENCE_END, _ITEM_END):
                del open_tags[-1:]
                if tag == _ITEM_END and items and items[-1][0] is None:
                    del items[-1]
            elif tag == _ITEM and fragments and length != _UNDEFINED:
                stream.skip(length)
            elif tag == _ITEM:
                _check_length(stream, tag, length)
                open_tags += [open_tags[-1] if open_tags else tag] if length == _UNDEFINED else []
                outer = items[-1][1] if items else implicit
                items.append((None if length == _UNDEFINED else stream.tell() + length,
                              outer or not _looks_explicit(stream.peek(6))))
            continue
        if items[-1][1] if items else (implicit or not _looks_explicit(head)):
            vr, length = _implicit_vr(tag), struct.unpack(order + "I", head[4:])[0]
        else:
            vr = head[4:6]
            length = (struct.unpack(order + "I", stream.read(4) or b"\0\0\0\0")[0] if vr in _LONG_VRS
                      else struct.unpack(order + "H", head[6:])[0])
        _check_length(stream, tag, length)
        if tag == _PIXEL_DATA and length == _UNDEFINED:
            if native:
                raise _Refused("native pixel data of an undefined length (only compressed pixel data is "
                               "encapsulated)")
            fragments = True  # its items: the pixel data's reader refuses a missing delimiter without reading
        elif length == _UNDEFINED:
            open_tags.append(tag)
        elif not (vr == b"SQ" or vr in _MAYBE_SEQUENCE and stream.peek(4) == _ITEM_TAG_BYTES[order]):
            stream.skip(length)
    return count


def unknown_syntax(syntax: object) -> str:
    """The refusal of a file whose transfer syntax is none pydicom knows (or missing)."""
    return f"unknown DICOM transfer syntax {str(syntax) or '(none)'!r}"


def dataset_problem(fp: IO[bytes], inflated_limit: int) -> str | None:
    """Why pydicom should not read the DICOM file ``fp`` (seekable, with the ``DICM`` preamble): more than
    :data:`MAX_DICOM_ELEMENTS` elements, a deflated dataset inflating past ``inflated_limit`` bytes, or a transfer
    syntax that is none (:func:`unknown_syntax`); None when none of these, or when the file meta cannot be read
    (pydicom then says why). The position is left anywhere."""
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.uid import UID

    try:
        fp.seek(0)
        read_preamble(fp, False)
        syntax = UID(str(_read_file_meta_info(fp).get("TransferSyntaxUID", "") or ""))
    except Exception:  # noqa: BLE001 - pydicom's own reading refuses a malformed file meta with its reason
        return None
    if not syntax.is_transfer_syntax:  # pydicom would read the whole dataset before it is refused for this
        return unknown_syntax(syntax)
    implicit, order = syntax.is_implicit_VR, "<" if syntax.is_little_endian else ">"
    stream = _Inflating(fp, inflated_limit) if syntax.is_deflated else _Raw(fp)
    try:
        if _count(stream, implicit, order, MAX_DICOM_ELEMENTS, not syntax.is_compressed) > MAX_DICOM_ELEMENTS:
            return f"more than {MAX_DICOM_ELEMENTS:,} data elements (a photograph has a few hundred)"
        stream.drain()
    except _Refused as refused:
        return str(refused)
    except _TooLarge:
        return (f"a deflated DICOM file that inflates to more than {inflated_limit / 1e6:.0f} MB: refused as a "
                "possible decompression bomb")
    except (zlib.error, struct.error, OSError, ValueError):
        return None  # pydicom refuses the damaged data with its reason
    return None
