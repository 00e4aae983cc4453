"""Reading DICOM photographs: the pixels for the one image reader (:mod:`moleseg.core.imageio`), and the
pixel spacing and the patient and study identifiers a DICOM file carries.

Accepted: files with the ``DICM`` preamble whose SOP class is a photograph (:data:`PHOTOGRAPHIC_SOP_CLASSES`:
VL Photographic, Dermoscopic Photography, VL Microscopic, Secondary Capture) or that name no SOP class; RGB,
``YBR_FULL``, ``YBR_FULL_422`` (converted to RGB by pydicom) and ``MONOCHROME1/2`` (``MONOCHROME1`` inverted)
pixels; native and compressed transfer syntaxes (JPEG, JPEG-LS, JPEG 2000, RLE through pydicom's decoders
and pylibjpeg). A multi-frame file gives its first frame; from a file on disk only the dataset and that frame's
bytes are read (:mod:`moleseg.core.dicomframes`). Samples wider than 8 bits are scaled to 8 bits as
:func:`moleseg.core.pixels.integer_to_uint8` does for other formats.

DICOM files are untrusted: ``Rows x Columns`` is checked against the image reader's pixel budget before any
pixel is decoded, and a native pixel data element whose length is not ``Rows x Columns x SamplesPerPixel x
BitsAllocated / 8`` (per frame) is refused with both lengths. What would unpack to more than it declares is
refused before it is unpacked: a dataset of more elements than a photograph has or a deflated one inflating past
:func:`max_inflated_bytes` (:mod:`moleseg.core.dicomscan`, which also refuses from the headers a length past the end
of the file and a sequence never closed), pixel data in a layout read whole of more bytes than a frame, a compressed
frame whose own header declares another size or sample count than the file (:mod:`moleseg.core.codestreams`),
an RLE segment longer than its plane, a compressed frame of more than twice its uncompressed size and 1 MiB.
Every refusal is a :class:`DicomReadError` ``"<file name>: <reason>"``, which the image reader passes on as its
own ``ImageReadError``.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Union

import numpy as np

from moleseg.core.codestreams import frame_size, rle_overlong_segment
from moleseg.core.config import max_image_pixels
from moleseg.core.dicomframes import (WHOLE, FrameTooLarge, PixelElement, deflated, first_frame, frame_limit,
                                     hold_first_frame, pixel_element)
from moleseg.core.dicomscan import ENDS_EARLY, dataset_problem, unknown_syntax
from moleseg.core.errors import open_failure
from moleseg.core.pixels import integer_to_uint8
from moleseg.core.words import count_of

#: What the functions accept: the file's bytes, its path, or an open binary file (an upload); the image
#: reader's own ``Source`` type, spelled here because the image reader imports this module.
Source = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", IO[bytes]]

__all__ = [
    "IDENTIFIER_FIELDS",
    "PHOTOGRAPHIC_SOP_CLASSES",
    "DicomFacts",
    "DicomReadError",
    "decode_dicom",
    "dicom_facts",
    "dicom_header_size",
    "dicom_pixel_size",
    "is_dicom",
    "read_dataset",
]

#: Byte offset and value of the DICOM part 10 magic.
_MAGIC_OFFSET = 128
_MAGIC = b"DICM"
#: SOP classes read as photographs (UID: name).
PHOTOGRAPHIC_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.77.1.4": "VL Photographic Image",
    "1.2.840.10008.5.1.4.1.1.77.1.7": "Dermoscopic Photography Image",
    "1.2.840.10008.5.1.4.1.1.77.1.2": "VL Microscopic Image",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image",
}
#: Patient and study attributes a DICOM file may carry (keywords); they fill a record only when a user agrees.
IDENTIFIER_FIELDS: tuple[str, ...] = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                                      "AccessionNumber", "StudyID", "BodyPartExamined")
_PIXEL_DATA_TAG = 0x7FE00010
#: pydicom's words for a transfer syntax no installed decoder handles (not a corrupt file).
_NO_DECODER = ("missing dependencies", "no pixel data decoders", "not supported")
_UNDEFINED_LENGTH = 0xFFFFFFFF
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422")
_GREY = ("MONOCHROME1", "MONOCHROME2")
#: Relative difference under which row and column spacing count as square pixels.
_SQUARE_TOLERANCE = 0.01
#: Bytes of a DICOM file's attributes beside its pixels that a deflated file may inflate to.
_METADATA_BYTES = 16 * 1024 * 1024
#: Largest samples per pixel and bytes per sample of the layouts read (3 samples of 32 bits).
_WIDEST_PIXEL_BYTES = 3 * 4


class DicomReadError(ValueError):
    """A DICOM file that cannot be read: ``str(error)`` is ``"<file name>: <reason>"``, both parts also in
    :attr:`filename` and :attr:`reason`."""

    def __init__(self, filename: str, reason: str) -> None:
        super().__init__(f"{filename}: {reason}")
        self.filename = filename
        self.reason = reason


@dataclass(frozen=True)
class DicomFacts:
    """What a DICOM file says beside its pixels.

    Attributes
    ----------
    pixel_size_mm : float or None
        Millimetres per pixel from ``PixelSpacing`` (or ``ImagerPixelSpacing`` when that is absent); None
        when neither is there or the pixels are not square.
    spacing_note : str
        Why ``pixel_size_mm`` is None ("" when it is set).
    identifiers : dict of str to str
        The :data:`IDENTIFIER_FIELDS` present in the file (keyword: value); never used unless a user agrees.
    sop_class : str
        The SOP class's name ("" when the file names none).
    """

    pixel_size_mm: float | None
    spacing_note: str = ""
    identifiers: dict[str, str] = field(default_factory=dict)
    sop_class: str = ""


def is_dicom(fp: IO[bytes]) -> bool:
    """Whether the seekable binary file starts with a DICOM part 10 preamble (the position is restored to 0)."""
    try:
        fp.seek(_MAGIC_OFFSET)
        magic = fp.read(len(_MAGIC))
        fp.seek(0)
    except (OSError, ValueError):
        return False
    return magic == _MAGIC


def max_inflated_bytes() -> int:
    """Most bytes a deflated DICOM file's dataset may inflate to: a native file of the largest image the reader
    accepts now (:func:`moleseg.core.config.max_image_pixels`, 3 samples of 32 bits) and its attributes."""
    return max_image_pixels() * _WIDEST_PIXEL_BYTES + _METADATA_BYTES


def _check_dataset(fp: IO[bytes], label: str) -> None:
    """Refuse a file whose dataset would cost pydicom too much to read (:func:`moleseg.core.dicomscan.
    dataset_problem`: too many elements, or a deflated one inflating past :func:`max_inflated_bytes`)."""
    problem = dataset_problem(fp, max_inflated_bytes())
    if problem is not None:
        raise DicomReadError(label, problem)


def _check_whole(fp: IO[bytes], start: int, dataset: Any, compressed: bool, label: str) -> None:
    """Refuse pixel data that pydicom would read whole (a layout :func:`moleseg.core.dicomframes.pixel_element`
    does not read frame by frame; its header at ``start``) when more bytes follow it than one frame may take
    (:func:`moleseg.core.dicomframes.frame_limit`)."""
    size, limit = fp.seek(0, os.SEEK_END), frame_limit(_layout(dataset, label).frame_bytes)
    if size - start > limit:
        why = ("compressed data of a defined length, where encapsulated data has an undefined one" if compressed
               else "a VR other than OB, OW or UN")
        raise DicomReadError(label, f"pixel data of a layout read whole ({why}): {size - start:,} bytes to the end "
                                    f"of the file, more than one frame may take ({limit:,} bytes)")


def _read(fp: IO[bytes], label: str, *, pixels: bool, deferred: bool = False) -> tuple[Any, PixelElement | None]:
    """The dataset of ``fp`` (pydicom), refusing unreadable and truncated files and non-photographs, and with
    ``deferred`` (and ``pixels``) the header of its Pixel Data element, read without its value
    (:func:`moleseg.core.dicomframes.pixel_element`; None when there is no such element or the file was read
    whole)."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import UID

    element: PixelElement | str | None = None
    try:
        _check_dataset(fp, label)
        deferred = pixels and deferred and not deflated(fp)
        fp.seek(0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # pydicom's warnings on malformed values: recorded, not shown
            dataset = pydicom.dcmread(fp, stop_before_pixels=not pixels or deferred)
            if deferred:
                syntax = UID(str(dataset.file_meta.get("TransferSyntaxUID", "") or ""))
                start = fp.tell()
                element = pixel_element(fp, dataset, syntax) if syntax.is_transfer_syntax else None
                if element == WHOLE:
                    _check_whole(fp, start, dataset, syntax.is_compressed, label)
                    fp.seek(0)
                    dataset, element = pydicom.dcmread(fp), None
            raw = dataset.get_item(_PIXEL_DATA_TAG) if pixels and element is None else None
            declared = getattr(raw, "length", None)
            if declared is not None and declared != _UNDEFINED_LENGTH and len(raw.value or b"") < declared:
                raise EOFError(f"the pixel data ends after {len(raw.value or b'')} of its {declared} bytes")
            for _ in dataset.iterall():  # converts every element now, so a malformed one fails here
                pass
            syntax = UID(str(dataset.file_meta.get("TransferSyntaxUID", "") or ""))
        ends_early = [str(w.message) for w in caught if "end of file" in str(w.message).lower()]
        if ends_early:
            raise EOFError(ends_early[0])
        if not syntax.is_transfer_syntax:
            raise DicomReadError(label, unknown_syntax(syntax))
        dataset.Rows, dataset.Columns  # noqa: B018 - refuses a file without them
    except DicomReadError:
        raise
    except InvalidDicomError as exc:
        raise DicomReadError(label, f"not a readable DICOM file ({exc})") from exc
    except (EOFError, OSError) as exc:
        raise DicomReadError(label, f"{ENDS_EARLY} ({exc})") from exc
    except AttributeError as exc:
        raise DicomReadError(label, f"a DICOM file without an image (no {exc.name or 'Rows/Columns'})") from exc
    except Exception as exc:  # pydicom raises many types on malformed elements
        raise DicomReadError(label, f"corrupt DICOM file ({type(exc).__name__}: {exc})") from exc
    sop = str(dataset.get("SOPClassUID", ""))
    if sop and sop not in PHOTOGRAPHIC_SOP_CLASSES:
        name = getattr(dataset.SOPClassUID, "name", sop)
        raise DicomReadError(label, f"a DICOM {name} is not a photograph; expected one of "
                                    + ", ".join(PHOTOGRAPHIC_SOP_CLASSES.values()))
    return dataset, element if isinstance(element, PixelElement) else None


@dataclass(frozen=True)
class _Layout:
    """The pixel data's layout: ``rows`` x ``columns`` px, ``samples`` per pixel of ``bits`` bits, ``frames``."""

    rows: int
    columns: int
    samples: int
    bits: int
    frames: int

    @property
    def frame_bytes(self) -> int:
        """Bytes of one native frame (bit-packed for 1-bit samples)."""
        if self.bits == 1:
            return (self.rows * self.columns * self.samples + 7) // 8
        return self.rows * self.columns * self.samples * (self.bits // 8)


def _layout(dataset: Any, label: str) -> _Layout:
    """Rows, Columns, SamplesPerPixel, BitsAllocated and NumberOfFrames as whole numbers, or DicomReadError."""
    try:
        layout = _Layout(rows=int(dataset.Rows), columns=int(dataset.Columns),
                         samples=int(dataset.get("SamplesPerPixel", 1)), bits=int(dataset.get("BitsAllocated", 8)),
                         frames=int(dataset.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError, AttributeError) as exc:
        raise DicomReadError(label, f"malformed DICOM image attributes ({exc})") from exc
    if layout.samples not in (1, 3) or layout.bits not in (1, 8, 16, 32) or layout.frames < 1:
        raise DicomReadError(label, f"unsupported DICOM pixel layout: {count_of(layout.samples, 'sample')} of "
                                    f"{layout.bits} bits, {count_of(layout.frames, 'frame')}")
    return layout


def _check_pixel_data(dataset: Any, layout: _Layout, label: str, element: PixelElement | None) -> None:
    """Refuse a missing pixel data element and native pixel data of the wrong length (the length ``element``
    declares when the value was not read)."""
    if element is None and "PixelData" not in dataset:
        raise DicomReadError(label, "a DICOM file without pixel data")
    if dataset.file_meta.TransferSyntaxUID.is_compressed:
        return
    expected = layout.frame_bytes * layout.frames
    found = element.length if element is not None else len(dataset.PixelData)
    if found not in (expected, expected + 1):  # one padding byte keeps an element's length even
        raise DicomReadError(
            label,
            f"wrong pixel data length: {found} bytes, expected {expected} ({layout.columns} x {layout.rows} px, "
            f"{count_of(layout.samples, 'sample')} of {layout.bits} bits"
            + (f", {layout.frames} frames" if layout.frames > 1 else "") + ")",
        )


def _first_frame(fp: IO[bytes], dataset: Any, layout: _Layout, label: str, element: PixelElement | None) -> bytes:
    """The first frame's bytes: of the pixel data read (compressed only, else b""), or, when its value was not
    read (``element``), from the file (:func:`moleseg.core.dicomframes.first_frame`, with the Extended Offset
    Table as pydicom's decoder takes it)."""
    from pydicom.encaps import get_frame

    compressed = dataset.file_meta.TransferSyntaxUID.is_compressed
    try:
        if element is not None:
            offsets = (dataset.ExtendedOffsetTable, dataset.ExtendedOffsetTableLengths) if (
                compressed and "ExtendedOffsetTable" in dataset and "ExtendedOffsetTableLengths" in dataset) else None
            return first_frame(fp, element, layout.frame_bytes, layout.frames, offsets)
        return get_frame(dataset.PixelData, 0, number_of_frames=layout.frames) if compressed else b""
    except FrameTooLarge:
        raise DicomReadError(label, _frame_too_large(layout)) from None
    except Exception as exc:  # pydicom raises several types on malformed encapsulation
        raise DicomReadError(label, f"corrupt DICOM pixel data ({type(exc).__name__}: {exc})") from exc


def _frame_too_large(layout: _Layout) -> str:
    return (f"the first compressed frame takes more than {frame_limit(layout.frame_bytes):,} bytes (twice what "
            f"{layout.columns} x {layout.rows} px of {count_of(layout.samples, 'sample')} of {layout.bits} bits "
            "take uncompressed, and 1 MiB): refused before decoding")


def _check_first_frame(frame: bytes, dataset: Any, layout: _Layout, label: str) -> None:
    """Refuse a compressed first ``frame`` larger than :func:`moleseg.core.dicomframes.frame_limit` (twice its
    uncompressed size and 1 MiB), one that declares another size or sample count than ``Rows``,
    ``Columns`` and ``SamplesPerPixel`` (the decoders would unpack what the frame declares before comparing),
    an RLE frame with a segment that unpacks to more than a ``Rows x Columns`` plane, and a compressed frame of
    no known kind, all before decoding."""
    from pydicom.uid import RLELossless

    syntax = dataset.file_meta.TransferSyntaxUID
    if not syntax.is_compressed:
        return
    if len(frame) > frame_limit(layout.frame_bytes):
        raise DicomReadError(label, _frame_too_large(layout))
    if syntax == RLELossless:
        overlong = rle_overlong_segment(frame, layout.rows * layout.columns)
        if overlong is not None:
            raise DicomReadError(label, f"corrupt DICOM pixel data: RLE segment {overlong + 1} unpacks to more "
                                        f"than the {layout.columns} x {layout.rows} px the file declares")
        return
    declared = frame_size(frame)
    if declared is None:
        raise DicomReadError(label, f"cannot read the size of the compressed frame ({syntax.name})")
    found = (declared.width, declared.height, declared.components)
    if found != (layout.columns, layout.rows, layout.samples):
        raise DicomReadError(
            label, f"the compressed frame is {declared.width} x {declared.height} px of "
                   f"{count_of(declared.components, 'sample')}, but the file declares {layout.columns} x "
                   f"{layout.rows} px of {count_of(layout.samples, 'sample')}: refused before decoding")


def decode_dicom(fp: IO[bytes], label: str, max_pixels: int,
                 check_size: Callable[[int, int, str, int], None]) -> tuple[np.ndarray, None]:
    """Decode the first frame of a DICOM photograph.

    A file in memory (``io.BytesIO``) is read whole by pydicom; from any other file only the dataset and the
    first frame's bytes are read (:mod:`moleseg.core.dicomframes`).

    Parameters
    ----------
    fp : binary file
        Seekable, at any position.
    label : str
        File name for messages.
    max_pixels : int
        Largest ``Rows x Columns`` accepted, checked before decoding.
    check_size : callable
        ``check_size(width, height, label, max_pixels)`` raises for a zero-sized or too large image (the image
        reader's own check, which raises its own error).

    Returns
    -------
    tuple
        ``(H, W)`` grey or ``(H, W, 3)`` RGB ``uint8`` pixels, and None (DICOM photographs have no alpha).
    """
    from pydicom.pixels import pixel_array

    dataset, element = _read(fp, label, pixels=True, deferred=not isinstance(fp, io.BytesIO))
    layout = _layout(dataset, label)
    check_size(layout.columns, layout.rows, label, max_pixels)
    photometric = str(dataset.get("PhotometricInterpretation", ""))
    if photometric not in _COLOUR + _GREY:
        raise DicomReadError(label, f"unsupported DICOM photometric interpretation {photometric!r}; expected "
                                    + ", ".join(_COLOUR + _GREY))
    _check_pixel_data(dataset, layout, label, element)
    frame = _first_frame(fp, dataset, layout, label, element)
    _check_first_frame(frame, dataset, layout, label)
    if element is not None:
        hold_first_frame(dataset, element, frame)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = pixel_array(dataset, index=0 if layout.frames > 1 and element is None else None)
    except Exception as exc:  # decoders raise many types on corrupt or unsupported data
        text = " ".join(str(exc).split()) or type(exc).__name__  # pydicom's messages span several lines
        if any(cause in text.lower() for cause in _NO_DECODER):
            raise DicomReadError(label, f"cannot decode the DICOM pixel data "
                                        f"({dataset.file_meta.TransferSyntaxUID.name}: {text})") from exc
        raise DicomReadError(label, f"corrupt DICOM pixel data ({type(exc).__name__}: {text})") from exc
    values = np.asarray(values)
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[..., 0]
    if values.dtype == np.bool_:
        values = values.astype(np.uint8) * np.uint8(255)
    if values.dtype != np.uint8:
        values = integer_to_uint8(values)
    if photometric == "MONOCHROME1":
        values = np.uint8(255) - values
    return np.ascontiguousarray(values), None


def dicom_header_size(fp: IO[bytes], label: str) -> tuple[int, int]:
    """``(width, height)`` = ``(Columns, Rows)`` of a DICOM photograph, without reading its pixel data."""
    dataset, _ = _read(fp, label, pixels=False)
    layout = _layout(dataset, label)
    return layout.columns, layout.rows


def _open(source: Source, label: str) -> IO[bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source))
    if isinstance(source, (str, os.PathLike)):
        try:
            return open(source, "rb")  # noqa: SIM115 - closed by the caller
        except OSError as exc:
            raise DicomReadError(label, open_failure(exc)) from exc
    source.seek(0)
    return io.BytesIO(source.read())


def read_dataset(source: Source, *, name: str | None = None) -> Any | None:
    """The pydicom dataset of a DICOM photograph without its pixel data; None when ``source`` is not DICOM.

    Raises
    ------
    DicomReadError
        A DICOM file that cannot be read (truncated, corrupt, not a photograph).
    """
    label = name or (Path(source).name if isinstance(source, (str, os.PathLike)) else
                     Path(str(getattr(source, "name", "") or "image")).name)
    fp = _open(source, label)
    try:
        return _read(fp, label, pixels=False)[0] if is_dicom(fp) else None
    finally:
        fp.close()


def _spacing(dataset: Any) -> tuple[float | None, str]:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = dataset.get(keyword)
        if value is None:
            continue
        try:
            row, column = (float(v) for v in value)
        except (TypeError, ValueError):
            return None, f"{keyword} {value!r} is not two numbers"
        if not (row > 0 and column > 0 and np.isfinite(row) and np.isfinite(column)):
            return None, f"{keyword} {row} \\ {column} mm is not positive"
        if abs(row - column) > _SQUARE_TOLERANCE * max(row, column):
            return None, f"the pixels are not square ({keyword} {row} \\ {column} mm)"
        return (row + column) / 2.0, ""
    return None, "the file has no PixelSpacing or ImagerPixelSpacing: give the pixel size by hand"


def dicom_facts(source: Source, *, name: str | None = None) -> DicomFacts | None:
    """Pixel spacing, identifiers and SOP class of a DICOM photograph; None when ``source`` is not DICOM.

    Raises
    ------
    DicomReadError
        As :func:`read_dataset`.
    """
    dataset = read_dataset(source, name=name)
    if dataset is None:
        return None
    size, note = _spacing(dataset)
    identifiers = {keyword: str(dataset.get(keyword)) for keyword in IDENTIFIER_FIELDS
                   if str(dataset.get(keyword, "") or "").strip()}
    sop = str(dataset.get("SOPClassUID", ""))
    return DicomFacts(pixel_size_mm=size, spacing_note=note, identifiers=identifiers,
                      sop_class=PHOTOGRAPHIC_SOP_CLASSES.get(sop, ""))


def dicom_pixel_size(source: Source) -> float | None:
    """mm per pixel of a DICOM photograph (:attr:`DicomFacts.pixel_size_mm`); None for any other file, a DICOM
    file without (square) pixel spacing, or one that cannot be read."""
    try:
        facts = dicom_facts(source)
    except DicomReadError:
        return None
    return facts.pixel_size_mm if facts is not None else None
