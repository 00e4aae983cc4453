"""TIFF files that declare little and unpack to much: tiles far larger than the image (the decoder allocates a
whole tile), and strips whose Deflate, LZMA or PackBits data unpacks past what a strip holds (tifffile unpacks
each whole). Each is refused by name before it is unpacked; honest tiled and compressed TIFFs still read."""

from __future__ import annotations

import io
import lzma
import struct
import zlib

import numpy as np
import pytest
import tifffile

from moleseg.core.codestreams import unpacks_past
from moleseg.core.imageio import ImageReadError, read_image

#: A 64 x 64 px RGB image with distinct pixels.
RGB = np.stack([*np.meshgrid(np.arange(64) * 4, np.arange(64) * 3, indexing="xy"), np.full((64, 64), 77)],
               axis=2).astype(np.uint8)
_COMPRESSION, _TILE_WIDTH, _TILE_LENGTH, _OFFSETS, _BYTE_COUNTS = 259, 322, 323, (273, 324), (279, 325)


def _tiff(values: np.ndarray, compression: str | None = None, **options: object) -> bytes:
    """A TIFF of ``values`` (RGB, planes first when ``planarconfig="separate"``); PackBits, which tifffile writes
    only with imagecodecs, written here as literal runs of 128 bytes."""
    if options.get("planarconfig") == "separate":
        values = np.ascontiguousarray(values.transpose(2, 0, 1))
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, values, photometric="rgb", compression=None if compression == "packbits" else compression,
                     **options)
    if compression != "packbits":
        return buffer.getvalue()
    buffer.seek(0)
    with tifffile.TiffFile(buffer) as tif:
        page = tif.pages[0]
        segments = [buffer.getvalue()[offset:offset + count]
                    for offset, count in zip(page.dataoffsets, page.databytecounts)]
    packed = [b"".join(bytes([len(piece) - 1]) + piece for piece in (s[i:i + 128] for i in range(0, len(s), 128)))
              for s in segments]
    return _rewritten(buffer.getvalue(), {_COMPRESSION: 32773}, packed)


def _rewritten(data: bytes, tags: dict[int, int], segments: list[bytes] | None = None) -> bytes:
    """``data`` (a little-endian TIFF written by tifffile) with the first page's one-value ``tags`` set and, when
    given, its strips or tiles replaced by ``segments`` (appended; their offsets and byte counts rewritten)."""
    raw = bytearray(data)
    ifd = struct.unpack_from("<I", raw, 4)[0]
    starts = [len(raw) + sum(map(len, segments[:index])) for index in range(len(segments))] if segments else []
    for index in range(struct.unpack_from("<H", raw, ifd)[0]):
        entry = ifd + 2 + 12 * index
        tag, kind, count = struct.unpack_from("<HHI", raw, entry)
        form = "<H" if kind == 3 else "<I"
        values = {**{key: [value] for key, value in tags.items()},
                  **({key: starts for key in _OFFSETS} if segments else {}),
                  **({key: list(map(len, segments)) for key in _BYTE_COUNTS} if segments else {})}.get(tag)
        if values is None:
            continue
        at = entry + 8 if count * struct.calcsize(form) <= 4 else struct.unpack_from("<I", raw, entry + 8)[0]
        for position, value in enumerate(values):
            struct.pack_into(form, raw, at + position * struct.calcsize(form), value)
    return bytes(raw) + b"".join(segments or [])


def test_a_tile_far_larger_than_the_image_is_refused_before_decoding():
    honest = _tiff(RGB, tile=(64, 64), compression="zlib")
    bomb = _rewritten(honest, {_TILE_WIDTH: 2048, _TILE_LENGTH: 2048}, [zlib.compress(bytes(2048 * 2048 * 3), 9)])
    assert len(bomb) < 30_000
    with pytest.raises(ImageReadError) as caught:
        read_image(bomb, name="tiles.tif")
    assert str(caught.value) == ("tiles.tif: a TIFF tile of 2048 x 2048 px for an image of 64 x 64 px: refused as a "
                                 "possible decompression bomb")


def test_tiles_up_to_a_megapixel_or_the_padded_image_still_read():
    assert np.array_equal(read_image(_tiff(RGB, tile=(1024, 1024), compression="zlib")), RGB)  # 1 Mpx over 4 kpx
    big = np.zeros((1040, 1040, 3), np.uint8)
    big[1039, 1039] = (1, 2, 3)
    assert read_image(_tiff(big, tile=(1040, 1040)))[1039, 1039].tolist() == [1, 2, 3]  # the image's own size


@pytest.mark.parametrize(("compression", "bomb"), [
    ("zlib", zlib.compress(bytes(4 * 1024**2), 9)),
    ("lzma", lzma.compress(bytes(4 * 1024**2))),
    ("packbits", b"\x81\x00" * (4 * 1024**2 // 128)),
])
def test_a_strip_that_unpacks_past_its_size_is_refused_before_tifffile_unpacks_it(compression, bomb, monkeypatch):
    honest = _tiff(RGB.astype(np.float32) / 255, compression=compression, rowsperstrip=64)  # Pillow cannot: tifffile
    data = _rewritten(honest, {}, [bomb])
    assert len(bomb) < 70_000
    monkeypatch.setattr(tifffile.TiffPage, "asarray", lambda *a, **k: pytest.fail("tifffile unpacked the strip"))
    with pytest.raises(ImageReadError) as caught:
        read_image(data, name="strip.tif")
    assert str(caught.value) == (f"strip.tif: a TIFF strip or tile unpacks to more than the {64 * 64 * 3 * 4} bytes "
                                 "it holds: refused as a possible decompression bomb")


@pytest.mark.parametrize("compression", ["zlib", "lzma", "packbits", None])
@pytest.mark.parametrize("layout", [{"rowsperstrip": 10}, {"tile": (16, 16)}, {"planarconfig": "separate"}],
                         ids=["strips", "tiles", "planar"])
def test_honest_compressed_float_tiffs_still_read(compression, layout):
    values = RGB.astype(np.float32) / 255
    assert np.array_equal(read_image(_tiff(values, compression=compression, **layout)), RGB)


def test_unpacks_past_stops_at_the_limit_and_leaves_damaged_data_to_the_decoder():
    assert unpacks_past(zlib.compress(bytes(1001)), 8, 1000) and not unpacks_past(zlib.compress(bytes(1000)), 8, 1000)
    assert unpacks_past(lzma.compress(bytes(11)), 34925, 10) and not unpacks_past(lzma.compress(bytes(10)), 34925, 10)
    assert unpacks_past(b"\x81\x00", 32773, 127) and not unpacks_past(b"\x81\x00", 32773, 128)
    assert not unpacks_past(b"not zlib", 8, 10) and not unpacks_past(b"not lzma", 34925, 10)
