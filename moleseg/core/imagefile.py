"""Opening a user's image file before any pixel is decoded: the refusal type, the file's name for messages,
its bytes (a path, bytes or an open file), its format (the Pillow plugins :data:`SUPPORTED_FORMATS`, the TIFF
signature), the pixel budget checked from the header, and :func:`image_size` from the header alone. The
readers that decode the pixels are in :mod:`moleseg.core.imageio` (DICOM files: :mod:`moleseg.core.dicomio`).
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator, Union

from PIL import Image

from moleseg.core.errors import NOT_TEXT_PATH, is_text_path, open_failure

__all__ = [
    "EMPTY_FILE",
    "FORMAT_NAMES",
    "NOT_AN_IMAGE",
    "SUPPORTED_FORMATS",
    "ImageReadError",
    "Source",
    "bomb_error",
    "check_size",
    "file_label",
    "header_failure",
    "image_size",
    "import_tifffile",
    "is_tiff",
    "open_pil",
    "opened",
]

#: What the readers accept: the file's bytes, its path, or an open binary file (e.g. a Streamlit upload).
Source = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", IO[bytes]]

#: Pillow format names the readers open; every other format (EPS, PSD, ...) is refused.
SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "MPO", "PNG", "BMP", "DIB", "TIFF", "GIF", "WEBP")
#: The formats the readers open (:data:`SUPPORTED_FORMATS` and DICOM), named for people.
FORMAT_NAMES: str = "JPEG, PNG, BMP, TIFF, GIF, WebP or DICOM"
#: The reason given for a file that no supported format opens.
NOT_AN_IMAGE = f"not an image, or not a supported format (expected {FORMAT_NAMES})"
#: The reason given for a file (or upload) of 0 bytes.
EMPTY_FILE = "empty file (0 bytes)"
_TIFF_MAGIC: tuple[bytes, ...] = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_DEFAULT_NAME = "image"
#: EXIF orientations that swap width and height.
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION_TAG = 0x0112


class ImageReadError(ValueError):
    """A file that cannot be read as an image or a mask.

    ``str(error)`` is ``"<file name>: <reason>"``; the two parts are also in :attr:`filename` and
    :attr:`reason`.
    """

    def __init__(self, filename: str, reason: str | None = None) -> None:
        message = filename if reason is None else f"{filename}: {reason}"
        super().__init__(message)
        self.filename = filename
        self.reason = reason if reason is not None else ""

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.filename, self.reason or None))


# --------------------------------------------------------------------------------------------------
# Opening sources


def file_label(source: Any, name: str | None) -> str:
    """The file name used in error messages: ``name`` when given, else the path's name, the file object's
    ``name``, or ``"image"``."""
    if name:
        return str(name)
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name or str(source)
    source_name = getattr(source, "name", None)
    if isinstance(source_name, str) and source_name:
        return Path(source_name).name
    return _DEFAULT_NAME


def _open_binary(source: Any, label: str) -> IO[bytes]:
    """Open ``source`` as a seekable binary file, refusing missing, folder and empty files and a path that is not
    UTF-8 text."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not is_text_path(path):
            raise ImageReadError(label, NOT_TEXT_PATH)
        try:
            if path.is_dir():
                raise ImageReadError(label, "is a folder, not an image file")
            if not path.exists():
                raise ImageReadError(label, f"file not found in {path.absolute().parent}")
            fp = open(path, "rb")  # noqa: SIM115 - closed by the caller
        except ImageReadError:
            raise
        except OSError as exc:
            raise ImageReadError(label, open_failure(exc)) from exc
        try:
            empty = os.fstat(fp.fileno()).st_size == 0
        except OSError:
            empty = False
        if empty:
            fp.close()
            raise ImageReadError(label, EMPTY_FILE)
        return fp
    elif hasattr(source, "read"):
        try:
            if hasattr(source, "seek"):
                source.seek(0)
            data = source.read()
        except Exception as exc:  # any failure of a foreign file object
            raise ImageReadError(label, f"cannot read the file ({exc})") from exc
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"{label}: the file object must be opened in binary mode")
        data = bytes(data)
    else:
        raise TypeError(
            f"expected image bytes, a path or a binary file, not {type(source).__name__}"
        )
    if not data:
        raise ImageReadError(label, EMPTY_FILE)
    return io.BytesIO(data)


def is_tiff(fp: IO[bytes]) -> bool:
    """Whether the seekable file ``fp`` starts with a TIFF signature (classic or BigTIFF, either byte
    order); the position is left at 0."""
    try:
        fp.seek(0)
        head = fp.read(4)
        fp.seek(0)
    except Exception:  # noqa: BLE001 - a file that cannot be probed is not a TIFF
        return False
    return head in _TIFF_MAGIC


def check_size(width: int, height: int, label: str, max_pixels: int) -> None:
    """Refuse an image of ``width`` x ``height`` px (from its header) that is zero-sized or has more than
    ``max_pixels`` pixels or more than Pillow's decompression-bomb limit.

    Raises
    ------
    ImageReadError
        ``"<label>: zero-sized image ..."`` or ``"<label>: image too large: ..."``.
    """
    if width <= 0 or height <= 0:
        raise ImageReadError(label, f"zero-sized image ({width} x {height} px)")
    pixels = int(width) * int(height)
    if pixels > max_pixels:
        raise ImageReadError(
            label,
            f"image too large: {width} x {height} px = {pixels / 1e6:.1f} megapixels, "
            f"the limit is {max_pixels / 1e6:g} megapixels (less on a machine short of memory); "
            "downscale it first",
        )
    bomb_limit = Image.MAX_IMAGE_PIXELS
    if bomb_limit is not None and pixels > bomb_limit:
        raise ImageReadError(
            label,
            f"image too large: {width} x {height} px is over Pillow's decompression-bomb limit "
            f"of {bomb_limit} pixels",
        )


def _reader_warning_filters() -> None:
    """Inside ``warnings.catch_warnings()``: bomb warnings become errors, Pillow's chatter is muted.

    Pillow warns about malformed metadata ("Corrupt EXIF data", "Tag data larger than file", ...) of
    files it then reads or refuses; the readers report refusals as :class:`ImageReadError` instead.
    """
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def header_failure(exc: BaseException) -> str:
    """Why an image's header could not be read, with the reader's error: ``"cannot read the image header
    (SyntaxError: broken PNG file)"``."""
    return f"cannot read the image header ({type(exc).__name__}: {exc})"


def bomb_error(label: str, exc: BaseException) -> ImageReadError:
    """The refusal of ``label`` for Pillow's decompression-bomb error or warning ``exc``."""
    return ImageReadError(
        label, f"image too large: refused by Pillow's decompression-bomb guard ({exc})"
    )


def open_pil(fp: IO[bytes]) -> Image.Image:
    """``Image.open`` of ``fp`` restricted to the :data:`SUPPORTED_FORMATS` Pillow has plugins for (the
    header is parsed, the pixels are not decoded; Pillow's exceptions pass through)."""
    Image.init()  # registers every plugin once (Image.open alone registers only a few, not MPO)
    formats = [f for f in SUPPORTED_FORMATS if f in Image.OPEN]
    return Image.open(fp, formats=formats)


@contextmanager
def opened(source: Source, name: str | None = None) -> Iterator[tuple[IO[bytes], str]]:
    """``with opened(source, name) as (fp, label)``: the file as a seekable binary file and its name for
    messages (see :func:`file_label`), with Pillow's decompression-bomb warnings raised as errors and its
    metadata chatter muted inside the block; the file is closed after it.

    Raises
    ------
    ImageReadError
        A missing file, a folder or an empty file.
    """
    label = file_label(source, name)
    fp = _open_binary(source, label)
    try:
        with warnings.catch_warnings():
            _reader_warning_filters()
            yield fp, label
    finally:
        fp.close()


def import_tifffile() -> Any:
    """The ``tifffile`` module, or None when it is not installed.

    tifffile logs every malformed tag it meets at ERROR level; a NullHandler on its logger keeps these
    messages out of stderr when the application has not configured logging (they still reach any
    handler the application installs).
    """
    try:
        import tifffile
    except ImportError:
        return None
    logger = logging.getLogger("tifffile")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return tifffile


@contextmanager
def dicom_refusals() -> Iterator[None]:
    """Inside the block, a :class:`moleseg.core.dicomio.DicomReadError` is raised as the
    :class:`ImageReadError` every image reader raises (same file name and reason)."""
    from moleseg.core.dicomio import DicomReadError

    try:
        yield
    except DicomReadError as exc:
        raise ImageReadError(exc.filename, exc.reason) from exc


# --------------------------------------------------------------------------------------------------
# The header alone


def _header_size(fp: IO[bytes], label: str) -> tuple[int, int]:
    """``(width, height)`` of the open file ``fp`` after EXIF orientation, from its header."""
    from moleseg.core.dicomio import dicom_header_size, is_dicom

    if is_dicom(fp):
        with dicom_refusals():
            return dicom_header_size(fp, label)
    tiff = is_tiff(fp)
    try:
        img = open_pil(fp)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise bomb_error(label, exc) from exc
    except Exception as exc:
        size = _tiff_header_size(fp) if tiff else None
        if size is None:
            raise ImageReadError(label, NOT_AN_IMAGE) from exc
        return size
    with img:
        try:
            width, height = (int(v) for v in img.size)
            orientation = _header_orientation(img)
        except Exception as exc:
            raise ImageReadError(label, header_failure(exc)) from exc
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return width, height


def _tiff_header_size(fp: IO[bytes]) -> tuple[int, int] | None:
    """``(width, height)`` of a TIFF's first page read by tifffile; None when it cannot."""
    tifffile = import_tifffile()
    if tifffile is None:
        return None
    try:
        fp.seek(0)
        with tifffile.TiffFile(fp) as tif:
            page = tif.pages[0]
            return int(page.imagewidth), int(page.imagelength)
    except Exception:  # noqa: BLE001 - tifffile raises many types on bad files
        return None


def _header_orientation(img: Image.Image) -> int:
    """EXIF orientation (1..8) from data already parsed with the header; 1 when absent or unreadable."""
    if img.format == "PNG" and "exif" not in img.info:
        return 1  # PNG's getexif() would decode the whole image to look for a late eXIf chunk
    try:
        value = img.getexif().get(_EXIF_ORIENTATION_TAG, 1)
        return int(value)
    except Exception:  # noqa: BLE001 - unreadable EXIF: no orientation
        return 1


def image_size(path: Source) -> tuple[int, int]:
    """Width and height of an image, from its header only (the pixels are not decoded).

    Parameters
    ----------
    path : str or os.PathLike or bytes or binary file
        The image file (bytes and file objects are accepted too).

    Returns
    -------
    tuple of int
        ``(width, height)`` in pixels, *after* EXIF orientation, i.e. the size :func:`read_image` returns
        as ``(W, H)``.

    Raises
    ------
    ImageReadError
        Missing file, folder, empty file or not a supported image (header unreadable).
    """
    with opened(path) as (fp, label):
        return _header_size(fp, label)
