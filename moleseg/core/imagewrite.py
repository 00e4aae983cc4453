"""Arrays to image files: lossless PNG (masks, class maps, overlays), JPEG for pictures shown on screen, and
PNG files written atomically.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from moleseg.core.atomic import atomic_write
from moleseg.core.config import PNG_COMPRESSION_LEVEL

__all__ = ["DISPLAY_JPEG_QUALITY", "display_jpeg", "encode_jpeg", "encode_png", "write_png"]

#: JPEG quality (1..100) of the pictures a page shows (:func:`display_jpeg`, a drawing canvas's background).
DISPLAY_JPEG_QUALITY: int = 90


def encode_png(array: np.ndarray, compression_level: int = PNG_COMPRESSION_LEVEL) -> bytes:
    """Encode an array as a lossless PNG.

    Parameters
    ----------
    array : numpy.ndarray
        ``(H, W) bool`` (written as 8-bit grey 0/255), ``(H, W)`` or ``(H, W, 1) uint8`` grey,
        ``(H, W, 2) uint8`` grey + alpha, ``(H, W, 3) uint8`` RGB, ``(H, W, 4) uint8`` RGBA, or
        ``(H, W) uint16`` 16-bit grey. ``H, W >= 1``.
    compression_level : int
        zlib level, 0 (stored: fastest, largest) .. 9.

    Returns
    -------
    bytes
        The PNG file's content.

    Raises
    ------
    ValueError
        Any other dtype or shape (convert floats to uint8 first).
    """
    values = np.asarray(array)
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[..., 0]
    if values.ndim not in (2, 3) or values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"cannot encode an array of shape {values.shape} as PNG")
    if values.dtype == np.bool_:
        if values.ndim != 2:
            raise ValueError(f"a boolean mask must be (H, W), not {values.shape}")
        values = values.view(np.uint8) * np.uint8(255)  # True is stored as 1
    if values.dtype == np.uint16:
        if values.ndim != 2:
            raise ValueError(f"16-bit PNGs are written for (H, W) arrays only, not {values.shape}")
        values = values.astype("<u2")
    elif values.dtype != np.uint8:
        raise ValueError(f"cannot encode dtype {values.dtype} as PNG (use uint8, uint16 or bool)")
    if values.ndim == 3 and values.shape[2] not in (2, 3, 4):
        raise ValueError(f"cannot encode {values.shape[2]} channels as PNG (use 1 to 4)")
    if values.ndim == 2 or values.shape[2] in (3, 4):
        import cv2  # OpenCV's encoder: faster than Pillow's, releases the GIL (encoded in parallel threads)

        if values.ndim == 3:
            values = cv2.cvtColor(values, cv2.COLOR_RGB2BGR if values.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
            # Photographs: the SUB filter and Huffman coding only encode an overlay faster than libpng's
            # adaptive filters with full deflate, for a slightly larger file (docs/performance.md).
            # Stored (level 0): nothing is compressed, so rows go unfiltered with zlib's default strategy (whose
            # stored blocks its Huffman-only strategy does not take): the same file size, about twice as fast.
            tuning = ([cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE] if compression_level == 0 else
                      [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB,
                       cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY])
        else:  # masks and class maps: long runs of equal values; run-length deflate of the unfiltered rows is
            # fast and small (about 4 times faster than libpng's adaptive filters, and smaller)
            tuning = [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE,
                      cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(values),
                                   [cv2.IMWRITE_PNG_COMPRESSION, int(compression_level), *tuning])
        if not ok:
            raise ValueError(f"OpenCV could not encode an array of shape {values.shape} as PNG")
        return encoded.tobytes()
    img = Image.fromarray(np.ascontiguousarray(values))  # grey + alpha: OpenCV writes 1, 3 or 4 channels
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", compress_level=int(compression_level))
    return buffer.getvalue()


def encode_jpeg(image: np.ndarray, quality: int = DISPLAY_JPEG_QUALITY) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 RGB image as a JPEG (lossy: for pictures shown on screen, such as a
    drawing canvas's background, never for masks or exports), ``quality`` 1..100.

    Raises
    ------
    ValueError
        Not an ``(H, W, 3)`` uint8 array, or a quality outside 1..100.
    """
    import cv2

    values = np.asarray(image)
    if values.dtype != np.uint8 or values.ndim != 3 or values.shape[2] != 3 or 0 in values.shape:
        raise ValueError(f"a JPEG is encoded from an (H, W, 3) uint8 RGB image, not {values.dtype} {values.shape}")
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be an integer 1..100, not {quality!r}")
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(values, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"OpenCV could not encode an array of shape {values.shape} as JPEG")
    return encoded.tobytes()


def display_jpeg(picture: np.ndarray, side_px: int | None = None) -> bytes:
    """An ``(H, W, 3)`` uint8 RGB picture as a page shows it: shrunk to at most ``side_px`` px on its longer side
    (default :data:`moleseg.core.render.DISPLAY_SIDE_PX`; :func:`moleseg.core.render.shrunk`) and encoded by
    :func:`encode_jpeg` (:data:`DISPLAY_JPEG_QUALITY`, libjpeg-turbo): several times faster to make and to send than
    the full-size JPEG of quality 100 Streamlit makes of an array; downloads stay lossless PNG."""
    from moleseg.core.render import DISPLAY_SIDE_PX, shrunk

    return encode_jpeg(np.ascontiguousarray(shrunk(picture, side_px or DISPLAY_SIDE_PX)))


def write_png(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write an array as a PNG file atomically.

    The PNG is encoded first (see :func:`encode_png`), written to a temporary file in the same folder,
    flushed to disk, then moved over ``path`` with :func:`os.replace`; readers never see a partial file,
    and the temporary file is removed if anything fails. The folder must exist.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file; replaced if it exists.
    array : numpy.ndarray
        As for :func:`encode_png`.
    """
    atomic_write(path, encode_png(array))
