"""Decoding users' image and mask files into numpy arrays (opening them and reading their size from the
header: :mod:`moleseg.core.imagefile`; writing them: :mod:`moleseg.core.imagewrite`).

Every reader takes a file's bytes or its path and returns a fresh, writable, C-contiguous array:

- :func:`read_image` → ``(H, W, 3) uint8`` RGB, whatever the file holds (see below);
- :func:`read_mask` → ``(H, W) bool`` foreground (lesion, cell) mask;
- :func:`image_size` → ``(width, height)`` in pixels, from the file's header only.

Anything that cannot be read becomes an :class:`ImageReadError` (a :class:`ValueError`) whose message is
``"<file name>: <reason>"``; no other exception comes out of the readers for bad file content.

Conversion rules (all documented here once; the tests pin each of them with pixel values)
------------------------------------------------------------------------------------------
- Formats: JPEG (also MPO and CMYK JPEG), PNG, BMP, TIFF, GIF and WebP, through Pillow; DICOM photographs
  through :mod:`moleseg.core.dicomio`. A TIFF that Pillow
  cannot read (e.g. float RGB, planar layouts) is read with ``tifffile`` when it is installed. Multi-frame
  files (GIF, APNG, multi-page TIFF, animated WebP) give their first frame. A TIFF whose tiles are far larger
  than its image, or (read with tifffile) whose strip or tile unpacks to more than it holds, is refused before
  it is unpacked.
- EXIF orientation is applied (``PIL.ImageOps.exif_transpose``): a portrait phone photo stored as a
  landscape bitmap with orientation 6 comes out portrait. A malformed EXIF block is ignored, not fatal.
- Greyscale (``L``, ``1``) is copied to the three channels; ``1`` is 0 → 0, 1 → 255.
- Palette (``P``, ``PA``) is looked up; a palette with transparency is treated as RGBA.
- Transparency (``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa`` / ``La``): images are composited over
  **white** (``(255, 0, 0, 0)`` → ``(255, 255, 255)``); masks over **black** (transparent = not lesion).
- ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``RGBX``: Pillow's conversion to RGB (no ICC colour management).
- Integer greyscale wider than 8 bits (``I;16*``, ``I`` = 32-bit, tifffile's integer arrays): if no value
  is negative, the values are scaled from the smallest usual bit depth that holds the image's maximum,
  one of 8, 10, 12, 14, 16, 24, 32 or 64 bits, to 0..255 (``v * 255 / (2**bits - 1)``, rounded). So a
  full-range 16-bit image maps 65535 → 255 and 32768 → 128, a 12-bit camera image in a 16-bit file maps
  4095 → 255 (instead of coming out almost black), and 8-bit values stored in a 16-bit file stay as they
  are. With negative values the image is stretched linearly from its minimum (→ 0) to its maximum (→ 255).
  16-bit *colour* PNG/TIFF files are reduced to 8 bits by Pillow itself (high byte, ≈ ``v / 257``).
- Float (``F``, tifffile float arrays): finite values in [0, 1] are multiplied by 255; values in
  [0, 255] are kept; any other range is stretched linearly from minimum to maximum. NaN and ±inf → 0.
- Masks: after the conversion to 8 bits (and compositing over black), a colour mask is reduced to the
  per-pixel *maximum* of its channels (so a red-on-black mask works); the foreground is ``value > 127``
  (JPEG masks are lossy: the noise around 0 and 255 falls on the right side). **0/1 masks**: when the
  largest 8-bit value of the whole mask is 1 (a 0/1 label image, as Matlab and many tools write), the
  foreground is ``value == 1``. Label images with more than two values, all at most 127 (``{0, 1, 2}``:
  classes or instance ids), are refused as "not a binary mask", with how to convert them.

Refusals (``ImageReadError``): missing file, folder instead of file, empty file, not an image / not a
supported format, truncated or corrupt data (the whole image is decoded; Pillow's
``LOAD_TRUNCATED_IMAGES`` is never set), zero width or height, more pixels than ``max_pixels`` (checked
from the header *before* decoding), images Pillow's decompression-bomb guard refuses (the guard stays
on), unsupported pixel modes, and, for masks, label images (above), and empty or full masks unless
``allow_empty=True`` (then callers warn with :func:`mask_problem`).
"""

from __future__ import annotations

from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from moleseg.core.codestreams import UNPACKERS, unpacks_past
from moleseg.core.config import max_image_pixels
from moleseg.core.imagefile import (
    NOT_AN_IMAGE,
    SUPPORTED_FORMATS,
    ImageReadError,
    Source,
    bomb_error,
    check_size,
    dicom_refusals,
    file_label,
    header_failure,
    image_size,
    import_tifffile,
    is_tiff,
    open_pil,
    opened,
)
from moleseg.core.pixels import float_to_uint8, integer_to_uint8, to_uint8, unpremultiply

#: The readers' names; the error type, the source type, the formats and :func:`image_size` come from
#: :mod:`moleseg.core.imagefile` and are offered here with the readers.
__all__ = [
    "EMPTY_MASK_MEANING",
    "FULL_MASK_MEANING",
    "SUPPORTED_FORMATS",
    "ImageReadError",
    "Source",
    "image_size",
    "mask_problem",
    "read_image",
    "read_mask",
]

#: Largest number of samples per pixel (grey, grey + alpha, RGB, RGBA / CMYK) the tifffile fallback reads.
_MAX_SAMPLES_PER_PIXEL = 4
#: Mask values above this (8-bit) are foreground; masks whose largest value is lower are label images.
_MASK_THRESHOLD = 127
#: Label values listed in the "not a binary mask" message.
_LABELS_SHOWN = 8
#: Pixels a TIFF tile may have whatever the image's size (a 1024 x 1024 px tile over a small image is honest);
#: beyond, at most the image's size rounded up to whole tiles of 16 px (the TIFF tile unit).
_FREE_TILE_PIXELS = 1 << 20
_TILE_UNIT = 16
_TILE_WIDTH_TAG, _TILE_LENGTH_TAG = 322, 323


# --------------------------------------------------------------------------------------------------
# Decoding to (colour, alpha)

#: A decoded file: 8-bit colour ``(H, W)`` grey or ``(H, W, 3)`` RGB, and 8-bit alpha ``(H, W)`` or None.
_Decoded = tuple[np.ndarray, "np.ndarray | None"]


def _pil_to_arrays(img: Image.Image, label: str) -> _Decoded:
    """Convert a loaded Pillow image to 8-bit colour and optional alpha."""
    mode = img.mode
    if mode == "1":
        return np.array(img, dtype=np.bool_).astype(np.uint8) * np.uint8(255), None
    if mode in ("L", "RGB"):
        return np.array(img, dtype=np.uint8), None
    if mode in ("LA", "La"):
        both = np.array(img, dtype=np.uint8)
        grey, alpha = both[..., 0], both[..., 1]
        if mode == "La":
            grey = unpremultiply(grey, alpha)
        return np.ascontiguousarray(grey), np.ascontiguousarray(alpha)
    if mode in ("RGBA", "RGBa"):
        both = np.array(img, dtype=np.uint8)
        rgb, alpha = both[..., :3], both[..., 3]
        if mode == "RGBa":
            rgb = unpremultiply(rgb, alpha)
        return np.ascontiguousarray(rgb), np.ascontiguousarray(alpha)
    if mode in ("P", "PA"):
        if mode == "PA" or "transparency" in img.info:
            return _pil_to_arrays(img.convert("RGBA"), label)
        return np.array(img.convert("RGB"), dtype=np.uint8), None
    if mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return np.array(img.convert("RGB"), dtype=np.uint8), None
    if mode.startswith("I;16") or mode == "I":
        return integer_to_uint8(np.array(img)), None
    if mode == "F":
        return float_to_uint8(np.array(img)), None
    raise ImageReadError(label, f"unsupported pixel mode {mode!r}")


def _tiff_axes_to_hwc(values: np.ndarray, axes: str, label: str) -> np.ndarray:
    """Reorder a tifffile page array to ``(H, W)`` or ``(H, W, C)``."""
    if len(axes) != values.ndim:
        axes = ""
    if axes and "Y" in axes and "X" in axes:
        keep = [axes.index("Y"), axes.index("X")]
        if "S" in axes:
            keep.append(axes.index("S"))
        for axis, letter in enumerate(axes):
            if axis not in keep and values.shape[axis] != 1:
                raise ImageReadError(label, f"unsupported TIFF layout (axes {axes!r})")
        values = values.transpose(keep + [i for i in range(values.ndim) if i not in keep])
        values = values.reshape(values.shape[: len(keep)])
    else:
        values = np.squeeze(values)
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[..., 0]
    if values.ndim not in (2, 3):
        raise ImageReadError(label, f"unsupported TIFF layout (shape {values.shape})")
    return values


def _check_tiff_samples(dtype: Any, label: str) -> None:
    """Refuse a TIFF whose samples are not booleans, integers or floats (``dtype`` None: unknown)."""
    if dtype is None or np.dtype(dtype).kind not in "biuf":
        raise ImageReadError(label, f"unsupported TIFF sample type {dtype}")


def _check_tiff_tile(width: int, height: int, tile_width: Any, tile_length: Any, label: str) -> None:
    """Refuse a TIFF whose tiles are far larger than its image (the decoders allocate a whole tile: a 64 x 64 px
    image in 16384 x 16384 px tiles took 0.77 GB from a 0.78 MB file)."""
    if not tile_width or not tile_length:
        return  # not tiled
    padded = -(-width // _TILE_UNIT) * _TILE_UNIT * (-(-height // _TILE_UNIT) * _TILE_UNIT)
    if int(tile_width) * int(tile_length) > max(padded, _FREE_TILE_PIXELS):
        raise ImageReadError(label, f"a TIFF tile of {tile_width} x {tile_length} px for an image of {width} x "
                                    f"{height} px: refused as a possible decompression bomb")


def _check_tiff_segments(fp: IO[bytes], page: Any, label: str) -> None:
    """Refuse a tifffile page with a compressed strip or tile that unpacks to more than a strip or tile holds
    (tifffile unpacks each whole before comparing: a 64 x 64 px float TIFF whose one strip of 0.78 MB inflated to
    0.8 GB took as much memory to refuse)."""
    compression = int(page.compression)
    if compression not in UNPACKERS:
        return  # uncompressed (read as stored), or a kind tifffile does not decode here
    samples = 1 if int(page.planarconfig) == 2 else int(page.samplesperpixel)  # planar: one sample a segment
    if page.is_tiled:
        rows, columns = int(page.tilelength) * max(1, int(page.tiledepth)), int(page.tilewidth)
    else:
        rows, columns = min(int(page.rowsperstrip) or page.imagelength, page.imagelength), int(page.imagewidth)
    limit = rows * ((columns * samples * int(page.bitspersample) + 7) // 8)
    for offset, count in zip(page.dataoffsets, page.databytecounts):
        fp.seek(offset)
        if unpacks_past(fp.read(count), compression, limit):
            raise ImageReadError(label, f"a TIFF strip or tile unpacks to more than the {limit} bytes it holds: "
                                        "refused as a possible decompression bomb")


def _read_tiff_fallback(fp: IO[bytes], label: str, max_pixels: int, reason: str) -> _Decoded:
    """Read the first page of a TIFF Pillow refused with ``tifffile``; errors keep ``reason``."""
    tifffile = import_tifffile()
    if tifffile is None:
        raise ImageReadError(label, reason)
    try:
        fp.seek(0)
        with tifffile.TiffFile(fp) as tif:
            page = tif.pages[0]
            width, height = int(page.imagewidth), int(page.imagelength)
            check_size(width, height, label, max_pixels)
            _check_tiff_tile(width, height, page.tilewidth, page.tilelength, label)
            elements = int(np.prod(page.shape, dtype=np.int64))
            if elements > _MAX_SAMPLES_PER_PIXEL * width * height:
                raise ImageReadError(
                    label, f"unsupported TIFF layout (shape {tuple(page.shape)}, axes {page.axes})"
                )
            _check_tiff_samples(page.dtype, label)
            _check_tiff_segments(fp, page, label)
            values = page.asarray()
            axes = str(page.axes)
            photometric = int(page.photometric)
    except ImageReadError:
        raise
    except Exception as exc:  # tifffile raises many types on bad files
        raise ImageReadError(label, f"{reason} (tifffile: {exc})") from exc
    values = _tiff_axes_to_hwc(np.asarray(values), axes, label)
    _check_tiff_samples(values.dtype, label)
    values = to_uint8(values)
    if values.ndim == 2:
        return values, None
    channels = values.shape[2]
    if photometric == 5 and channels >= 4:  # SEPARATED (CMYK)
        cmyk = values[..., :4].astype(np.float32) / 255.0
        rgb = 255.0 * (1.0 - cmyk[..., :3]) * (1.0 - cmyk[..., 3:4])
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), None
    if channels == 2:
        return np.ascontiguousarray(values[..., 0]), np.ascontiguousarray(values[..., 1])
    if channels == 3:
        return np.ascontiguousarray(values), None
    return np.ascontiguousarray(values[..., :3]), np.ascontiguousarray(values[..., 3])


def _corrupt_reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return f"truncated file: the image data ends early ({text})"
    return f"corrupt image data ({type(exc).__name__}: {text})"


def _decode(source: Any, name: str | None, max_pixels: int | None) -> _Decoded:
    """Open, check and fully decode ``source``; every failure becomes :class:`ImageReadError`."""
    if max_pixels is None:
        max_pixels = max_image_pixels()
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, not {max_pixels}")
    with opened(source, name) as (fp, label):
        return _decode_open_file(fp, label, max_pixels)


def _decode_open_file(fp: IO[bytes], label: str, max_pixels: int) -> _Decoded:
    from moleseg.core.dicomio import decode_dicom, is_dicom

    if is_dicom(fp):
        with dicom_refusals():
            return decode_dicom(fp, label, max_pixels, check_size)
    tiff = is_tiff(fp)
    try:
        img = open_pil(fp)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise bomb_error(label, exc) from exc
    except Exception as exc:  # Pillow plugins raise many types on bad headers
        if isinstance(exc, UnidentifiedImageError):
            reason = NOT_AN_IMAGE
        else:
            reason = header_failure(exc)
        if tiff:
            return _read_tiff_fallback(fp, label, max_pixels, reason)
        raise ImageReadError(label, reason) from exc
    with img:
        try:
            width, height = img.size
        except Exception as exc:
            raise ImageReadError(label, f"cannot read the image size ({exc})") from exc
        check_size(width, height, label, max_pixels)
        if img.format == "TIFF":
            tags = img.tag_v2
            _check_tiff_tile(width, height, tags.get(_TILE_WIDTH_TAG), tags.get(_TILE_LENGTH_TAG), label)
        try:
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise bomb_error(label, exc) from exc
        except ImageReadError:
            raise
        except Exception as exc:  # truncated / corrupt data, of any type
            reason = _corrupt_reason(exc)
            if tiff:
                return _read_tiff_fallback(fp, label, max_pixels, reason)
            raise ImageReadError(label, reason) from exc
        try:  # turned in place: no copy of an image that needs no turning
            ImageOps.exif_transpose(img, in_place=True)
        except Exception:  # noqa: BLE001 - a malformed EXIF block must not refuse a good image
            pass
        oriented = img
        try:
            colour, alpha = _pil_to_arrays(oriented, label)
        except ImageReadError:
            raise
        except Exception as exc:
            raise ImageReadError(
                label, f"cannot convert pixel mode {oriented.mode!r} ({type(exc).__name__}: {exc})"
            ) from exc
    check_size(colour.shape[1], colour.shape[0], label, max_pixels)  # the decoded size, after EXIF turning
    return colour, alpha


# --------------------------------------------------------------------------------------------------
# Public readers


def read_image(
    source: Source, *, name: str | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Read an image file into an RGB array.

    Parameters
    ----------
    source : bytes or str or os.PathLike or binary file
        The file's content, its path, or an open binary file object (read from its start).
    name : str, optional
        File name used in error messages; default: the path's name, the file object's ``name``, or
        ``"image"``.
    max_pixels : int, optional
        Largest accepted ``width * height`` in pixels, checked from the header before decoding;
        default :func:`moleseg.core.config.max_image_pixels` (25 megapixels, less when the available
        memory could not analyse that many).

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3) uint8`` RGB, values 0..255, after EXIF orientation; transparent pixels composited over
        white; greyscale copied to the three channels; deeper images scaled to 8 bits as described in the
        module docstring.

    Raises
    ------
    ImageReadError
        The file is missing, a folder, empty, not a supported image, truncated or corrupt, zero-sized,
        larger than ``max_pixels`` or in an unsupported pixel mode. The message is
        ``"<file name>: <reason>"``.
    """
    colour, alpha = _decode(source, name, max_pixels)
    if alpha is not None:
        # Over white: out = c * a + 255 * (1 - a) = 255 - (255 - c) * a, with a in 0..255.
        weight = alpha.astype(np.uint16)
        if colour.ndim == 3:
            weight = weight[..., None]
        inverse = (255 - colour.astype(np.uint16)) * weight
        colour = (255 - (inverse + 127) // 255).astype(np.uint8)
    if colour.ndim == 2:
        colour = np.repeat(colour[..., None], 3, axis=2)
    return np.ascontiguousarray(colour, dtype=np.uint8)


def read_mask(
    source: Source,
    *,
    name: str | None = None,
    max_pixels: int | None = None,
    allow_empty: bool = False,
) -> np.ndarray:
    """Read a mask file into a boolean foreground array.

    Parameters
    ----------
    source : bytes or str or os.PathLike or binary file
        The file's content, its path, or an open binary file object.
    name : str, optional
        File name used in error messages (as in :func:`read_image`).
    max_pixels : int, optional
        Largest accepted ``width * height`` in pixels (default as in :func:`read_image`).
    allow_empty : bool, optional
        Accept a degenerate mask: one with no foreground pixel (e.g. healthy skin) or with no background
        pixel. Default False: such masks are refused, since they usually mean a wrong or inverted file.

    Returns
    -------
    numpy.ndarray
        ``(H, W) bool``, True on the foreground. The file is converted to 8 bits as in
        :func:`read_image` (transparency composited over *black*, colour reduced to the maximum of the
        channels), then the foreground is ``value > 127``; a mask whose largest value is 1 (a 0/1 label
        image) has foreground ``value == 1``.

    Raises
    ------
    ImageReadError
        As :func:`read_image`, plus a label image with more than two values, all at most 127 ("not a
        binary mask", with how to convert it), and an empty or full mask when ``allow_empty`` is False.
    """
    colour, alpha = _decode(source, name, max_pixels)
    label = file_label(source, name)
    if alpha is not None:
        weight = alpha.astype(np.uint16)
        if colour.ndim == 3:
            weight = weight[..., None]
        colour = ((colour.astype(np.uint16) * weight + 127) // 255).astype(np.uint8)
    values = colour.max(axis=2) if colour.ndim == 3 else colour
    largest = int(values.max())
    if 1 < largest <= _MASK_THRESHOLD:  # nothing above the threshold: a label image, not a 0/255 mask
        present = np.unique(values)
        if present.size > 2:
            shown = ", ".join(str(int(v)) for v in present[:_LABELS_SHOWN])
            more = ", ..." if present.size > _LABELS_SHOWN else ""
            raise ImageReadError(
                label,
                f"not a binary mask: a label image with values {shown}{more}. Convert it to a 0/255 mask "
                "(255 where the lesion is), e.g. with Pillow: Image.fromarray(((np.asarray(Image.open(f)) == "
                "LABEL) * 255).astype(np.uint8)).save(g)",
            )
    mask = values == 1 if largest == 1 else values > _MASK_THRESHOLD
    if not allow_empty:
        problem = mask_problem(mask)
        if problem is not None and not mask.any():
            problem += f" (no value above {_MASK_THRESHOLD}; the largest value is {largest})"
        if problem is not None:
            raise ImageReadError(label, problem)
    return np.ascontiguousarray(mask)


#: What an empty and a full mask are, for people (:func:`mask_problem`, and the app's counts of them).
EMPTY_MASK_MEANING: str = "no foreground pixel, all black"
FULL_MASK_MEANING: str = "every pixel is foreground, all white: an image, or an inverted mask?"


def mask_problem(mask: np.ndarray) -> str | None:
    """Why a read mask is suspicious, or None: ``"empty mask: ..."`` (:data:`EMPTY_MASK_MEANING`) or
    ``"full mask: ..."`` (:data:`FULL_MASK_MEANING`).

    Callers that accept such masks (``read_mask(..., allow_empty=True)``) warn with this text.
    """
    count = int(np.count_nonzero(mask))
    if count == 0:
        return f"empty mask: {EMPTY_MASK_MEANING}"
    if count == mask.size:
        return f"full mask: {FULL_MASK_MEANING}"
    return None
