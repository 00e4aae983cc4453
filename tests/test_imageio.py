"""moleseg.core.imageio: every conversion pinned with pixel values, every refusal, a fuzz test, real data."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from moleseg.core import imagefile, imageio, pixels
from moleseg.core.config import DEFAULT_MAX_PIXELS
from moleseg.core.imageio import ImageReadError, image_size, read_image, read_mask
from moleseg.core.imagewrite import encode_png, write_png

tifffile = pytest.importorskip("tifffile")


# --------------------------------------------------------------------------------------------------
# Helpers


def encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def from_array(values: np.ndarray, fmt: str = "PNG", **options: object) -> bytes:
    return encode(Image.fromarray(values), fmt, **options)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, colour_type: int = 2, bit_depth: int = 8) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)


def reason(excinfo: pytest.ExceptionInfo[ImageReadError]) -> str:
    return excinfo.value.reason


# --------------------------------------------------------------------------------------------------
# Colour images


def test_rgb_png_is_read_exactly() -> None:
    values = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    out = read_image(from_array(values))
    assert out.dtype == np.uint8 and out.shape == (7, 5, 3)
    np.testing.assert_array_equal(out, values)
    assert out.flags.c_contiguous and out.flags.writeable


def test_jpeg_rgb_is_close() -> None:
    values = np.full((16, 16, 3), (200, 40, 90), np.uint8)
    out = read_image(from_array(values, "JPEG", quality=95))
    assert np.abs(out.astype(int) - values).max() <= 4


def test_path_and_str_and_file_object_sources(tmp_path: Path) -> None:
    values = np.full((3, 4, 3), 77, np.uint8)
    path = tmp_path / "a.png"
    path.write_bytes(from_array(values))
    for source in (path, str(path), io.BytesIO(path.read_bytes()), bytearray(path.read_bytes())):
        np.testing.assert_array_equal(read_image(source), values)


def test_a_file_name_that_is_not_utf8_is_refused_by_name(tmp_path: Path) -> None:
    # the results (measurements.csv, score tables) name each image by its path, which must be text
    path = Path(os.fsdecode(bytes(tmp_path) + b"/lesion\xe9.png"))
    path.write_bytes(from_array(np.full((3, 4, 3), 77, np.uint8)))
    for read in (read_image, read_mask):
        with pytest.raises(ImageReadError) as refused:
            read(path)
        assert refused.value.filename == "lesion\udce9.png"
        assert refused.value.reason == "its path is not UTF-8 text: rename the file (the results name each image by its path)"


def test_greyscale_is_copied_to_three_channels() -> None:
    grey = np.array([[0, 100, 255]], np.uint8)
    out = read_image(from_array(grey))
    assert out.shape == (1, 3, 3)
    assert out[0].tolist() == [[0, 0, 0], [100, 100, 100], [255, 255, 255]]


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP"])
def test_one_bit_image(fmt: str) -> None:
    bits = np.array([[True, False, True], [False, False, True]])
    img = Image.fromarray(bits)
    assert img.mode == "1"
    data = encode(img, fmt)
    assert Image.open(io.BytesIO(data)).mode == "1"
    out = read_image(data)
    np.testing.assert_array_equal(out[..., 0], np.where(bits, 255, 0))
    np.testing.assert_array_equal(read_mask(data), bits)


def test_one_bit_tiff_group4_compression() -> None:
    bits = np.zeros((20, 30), bool)
    bits[5:12, 3:20] = True
    data = encode(Image.fromarray(bits), "TIFF", compression="group4")
    np.testing.assert_array_equal(read_mask(data), bits)
    assert read_image(data)[6, 4].tolist() == [255, 255, 255]


def test_palette_image_is_looked_up() -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.putdata([0, 1])
    out = read_image(encode(img, "PNG"))
    assert out[0].tolist() == [[255, 0, 0], [0, 255, 0]]


def test_palette_transparency_is_composited_on_white() -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putdata([0, 1])
    out = read_image(encode(img, "PNG", transparency=0))
    assert out[0].tolist() == [[255, 255, 255], [0, 0, 255]]
    gif = read_image(encode(img, "GIF", transparency=0))
    assert gif[0].tolist() == [[255, 255, 255], [0, 0, 255]]


def test_rgba_is_composited_on_white() -> None:
    rgba = np.array([[(255, 0, 0, 0), (255, 0, 0, 255), (0, 0, 0, 128), (10, 20, 30, 255)]], np.uint8)
    out = read_image(from_array(rgba))
    assert out[0].tolist() == [[255, 255, 255], [255, 0, 0], [127, 127, 127], [10, 20, 30]]


def test_la_is_composited_on_white() -> None:
    la = np.array([[(0, 0), (0, 255), (100, 255), (0, 51)]], np.uint8)
    img = Image.frombytes("LA", (4, 1), la.tobytes())
    out = read_image(encode(img, "PNG"))
    # 255 - 255 * 51 / 255 = 204
    assert out[0, :, 0].tolist() == [255, 0, 100, 204]
    assert (out[..., 0] == out[..., 2]).all()


def test_premultiplied_modes_are_unpremultiplied() -> None:
    colour, alpha = imageio._pil_to_arrays(Image.new("RGBa", (1, 1), (50, 0, 0, 100)), "x")
    assert colour[0, 0].tolist() == [128, 0, 0] and alpha[0, 0] == 100
    grey, alpha = imageio._pil_to_arrays(Image.new("La", (1, 1), (0, 0)), "x")
    assert grey[0, 0] == 0 and alpha[0, 0] == 0


def test_cmyk_jpeg_has_roughly_the_right_colour() -> None:
    img = Image.new("CMYK", (16, 8), (0, 255, 255, 0))  # red
    img.paste((255, 255, 0, 0), (8, 0, 16, 8))  # blue
    data = encode(img, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = read_image(data).astype(int)
    assert np.abs(out[4, 2] - (255, 0, 0)).max() <= 12
    assert np.abs(out[4, 13] - (0, 0, 255)).max() <= 12


def test_cmyk_tiff() -> None:
    out = read_image(encode(Image.new("CMYK", (2, 2), (0, 0, 0, 255)), "TIFF"))
    assert out[0, 0].tolist() == [0, 0, 0]


@pytest.mark.parametrize("mode", ["YCbCr", "LAB", "HSV"])
def test_other_colour_spaces_are_converted(mode: str) -> None:
    img = Image.new("RGB", (3, 2), (120, 120, 120)).convert(mode) if mode != "HSV" else Image.new(
        "HSV", (3, 2), (0, 0, 200)
    )
    colour, alpha = imageio._pil_to_arrays(img, "x")
    assert alpha is None and colour.shape == (2, 3, 3)
    expected = 200 if mode == "HSV" else 120
    assert np.abs(colour.astype(int) - expected).max() <= 3


def test_ycbcr_tiff_file() -> None:
    out = read_image(encode(Image.new("RGB", (4, 4), (0, 200, 0)).convert("YCbCr"), "TIFF"))
    assert np.abs(out[0, 0].astype(int) - (0, 200, 0)).max() <= 4


# --------------------------------------------------------------------------------------------------
# Deep images


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_full_range_maps_65535_to_255(fmt: str) -> None:
    values = np.array([[0, 32768, 65535, 257]], np.uint16)
    data = from_array(values, fmt)
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    assert read_image(data)[0, :, 0].tolist() == [0, 128, 255, 1]


def test_sixteen_bit_big_endian_tiff() -> None:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.array([[0, 65535, 65535 // 2]], np.uint16), byteorder=">")
    assert Image.open(io.BytesIO(buffer.getvalue())).mode == "I;16B"
    assert read_image(buffer.getvalue())[0, :, 1].tolist() == [0, 255, 127]


def test_sixteen_bit_twelve_bit_data_uses_the_twelve_bit_range() -> None:
    values = np.array([[0, 2048, 4095]], np.uint16)
    assert read_image(from_array(values))[0, :, 0].tolist() == [0, 128, 255]


def test_sixteen_bit_holding_8_bit_values_keeps_them() -> None:
    values = np.array([[0, 17, 200]], np.uint16)
    assert read_image(from_array(values, "TIFF"))[0, :, 0].tolist() == [0, 17, 200]


def test_sixteen_bit_colour_png_keeps_the_high_byte() -> None:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.array([[[65535, 0, 32896]]], np.uint16), photometric="rgb")
    assert read_image(buffer.getvalue())[0, 0].tolist() == [255, 0, 128]


def test_thirty_two_bit_integer_image() -> None:
    values = np.array([[0, 70000, 2**24 - 1]], np.int32)
    img = Image.fromarray(values)
    assert img.mode == "I"
    assert read_image(encode(img, "TIFF"))[0, :, 0].tolist() == [0, 1, 255]


def test_thirty_two_bit_negative_values_are_stretched() -> None:
    values = np.array([[-100, 0, 300]], np.int32)
    assert read_image(encode(Image.fromarray(values), "TIFF"))[0, :, 0].tolist() == [0, 64, 255]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.0, 0.5, 1.0], [0, 128, 255]),
        ([0.0, 100.0, 255.0], [0, 100, 255]),
        ([-1.0, 0.0, 1.0], [0, 128, 255]),
        ([1000.0, 3000.0, 5000.0], [0, 128, 255]),
        ([float("nan"), 0.25, float("inf")], [0, 64, 0]),
        ([float("nan"), float("nan"), float("nan")], [0, 0, 0]),
        ([7.0, 7.0, 7.0], [7, 7, 7]),
    ],
)
def test_float_images(values: list[float], expected: list[int]) -> None:
    img = Image.fromarray(np.array([values], np.float32))
    assert img.mode == "F"
    assert read_image(encode(img, "TIFF"))[0, :, 0].tolist() == expected


def test_scaling_rules_directly() -> None:
    assert pixels.integer_to_uint8(np.array([0, 1023], np.uint16)).tolist() == [0, 255]
    assert pixels.integer_to_uint8(np.array([0, 2**32 - 1], np.uint32)).tolist() == [0, 255]
    assert pixels.integer_to_uint8(np.array([5, 5], np.int32)).tolist() == [5, 5]
    assert pixels.integer_to_uint8(np.array([-5, -5], np.int32)).tolist() == [0, 0]
    assert pixels.float_to_uint8(np.array([3e38, -3e38], np.float32)).tolist() == [255, 0]
    assert pixels.to_uint8(np.array([True, False])).tolist() == [255, 0]


def test_float_rgb_tiff_is_read_by_the_tifffile_fallback() -> None:
    buffer = io.BytesIO()
    values = np.zeros((2, 3, 3), np.float32)
    values[0, 0] = (1.0, 0.5, 0.0)
    tifffile.imwrite(buffer, values, photometric="rgb")
    with pytest.raises(Exception):  # noqa: B017 - Pillow itself cannot
        Image.open(io.BytesIO(buffer.getvalue())).load()
    out = read_image(buffer.getvalue())
    assert out.shape == (2, 3, 3) and out[0, 0].tolist() == [255, 128, 0]


def test_tifffile_fallback_layouts() -> None:
    colour, alpha = imageio._read_tiff_fallback(
        _tiff(np.array([[[0.0, 1.0]]], np.float32), photometric="minisblack", planarconfig="contig",
              extrasamples=["unassalpha"]),
        "x", DEFAULT_MAX_PIXELS, "r",
    )
    assert colour.tolist() == [[0]] and alpha.tolist() == [[255]]
    rgba = np.array([[[1.0, 0.0, 0.0, 0.0]]], np.float32)
    colour, alpha = imageio._read_tiff_fallback(
        _tiff(rgba, photometric="rgb", extrasamples=["unassalpha"]), "x", DEFAULT_MAX_PIXELS, "r"
    )
    assert colour[0, 0].tolist() == [255, 0, 0] and alpha.tolist() == [[0]]
    cmyk = np.array([[[0.0, 1.0, 1.0, 0.0]]], np.float32)
    colour, _ = imageio._read_tiff_fallback(
        _tiff(cmyk, photometric="separated"), "x", DEFAULT_MAX_PIXELS, "r"
    )
    assert colour[0, 0].tolist() == [255, 0, 0]
    with pytest.raises(ImageReadError, match="too large"):
        imageio._read_tiff_fallback(_tiff(cmyk, photometric="separated"), "x", 0, "r")
    with pytest.raises(ImageReadError, match="original reason"):
        imageio._read_tiff_fallback(io.BytesIO(b"II*\x00garbage"), "x", 10, "original reason")
    volume = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ImageReadError, match="unsupported TIFF layout"):
        imageio._tiff_axes_to_hwc(volume, "ZYX", "x")
    assert imageio._tiff_axes_to_hwc(np.zeros((3, 2, 4)), "SYX", "x").shape == (2, 4, 3)
    assert imageio._tiff_axes_to_hwc(np.zeros((1, 2, 4)), "QYX", "x").shape == (2, 4)


def _tiff(values: np.ndarray, **options: object) -> io.BytesIO:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, values, **options)
    buffer.seek(0)
    return buffer


# --------------------------------------------------------------------------------------------------
# Geometry: EXIF orientation, frames


def _marked_jpeg(orientation: int, fmt: str = "JPEG") -> bytes:
    """40 wide x 20 high, a red 8 x 8 marker at the top-left corner, EXIF ``orientation``."""
    values = np.full((20, 40, 3), 255, np.uint8)
    values[:8, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(values), fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_orientation_6_rotates_clockwise(fmt: str) -> None:
    data = _marked_jpeg(6, fmt)
    out = read_image(data)
    assert out.shape == (40, 20, 3)  # (H, W) = (20, 40) became (40, 20)
    assert image_size(data) == (20, 40)
    # stored top-left ends at the top-right after a quarter turn clockwise
    assert out[2, 17, 1] < 60 and out[2, 2, 1] > 200


def test_exif_orientation_3_rotates_half_a_turn() -> None:
    out = read_image(_marked_jpeg(3))
    assert out.shape == (20, 40, 3)
    assert out[17, 37, 1] < 60 and out[2, 2, 1] > 200


def test_malformed_exif_is_ignored() -> None:
    values = np.full((4, 6, 3), 9, np.uint8)
    data = encode(Image.fromarray(values), "JPEG", exif=b"Exif\x00\x00MM\x00*garbage!")
    out = read_image(data)
    assert out.shape == (4, 6, 3)
    assert image_size(data) == (6, 4)


def test_gif_first_frame() -> None:
    frames = [Image.new("RGB", (4, 3), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    assert read_image(data)[0, 0].tolist() == [255, 0, 0]


def test_multipage_tiff_first_page() -> None:
    pages = [Image.new("L", (5, 2), 30), Image.new("L", (3, 3), 220)]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    out = read_image(data)
    assert out.shape == (2, 5, 3) and out[0, 0].tolist() == [30, 30, 30]


@pytest.mark.parametrize("fmt", ["BMP", "WEBP"])
def test_bmp_and_lossless_webp(fmt: str) -> None:
    values = np.array([[(1, 2, 3), (250, 128, 0)]], np.uint8)
    options = {"lossless": True} if fmt == "WEBP" else {}
    np.testing.assert_array_equal(read_image(from_array(values, fmt, **options)), values)


def test_palette_bmp() -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([9, 8, 7, 200, 100, 50] + [0] * 762)
    img.putdata([1, 0])
    assert read_image(encode(img, "BMP"))[0].tolist() == [[200, 100, 50], [9, 8, 7]]


# --------------------------------------------------------------------------------------------------
# Refusals


def test_not_an_image() -> None:
    with pytest.raises(ImageReadError) as excinfo:
        read_image(b"hello, I am a text file", name="notes.png")
    assert str(excinfo.value).startswith("notes.png: not an image")
    assert isinstance(excinfo.value, ValueError)
    assert excinfo.value.filename == "notes.png"


def test_unsupported_formats_are_refused() -> None:
    ppm = encode(Image.new("RGB", (2, 2)), "PPM")
    with pytest.raises(ImageReadError, match=r"^x\.ppm: not an image"):
        read_image(ppm, name="x.ppm")
    eps_like = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
    with pytest.raises(ImageReadError):
        read_image(eps_like, name="x.eps")


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError) as missing:
        read_image(tmp_path / "nope.png")
    assert str(missing.value) == f"nope.png: file not found in {tmp_path}"  # the file named once, then its folder
    with pytest.raises(ImageReadError, match="is a folder"):
        read_mask(tmp_path)
    with pytest.raises(ImageReadError) as missing:
        image_size(tmp_path / "nope.png")
    assert str(missing.value) == f"nope.png: file not found in {tmp_path}"


def test_a_file_that_cannot_be_opened_has_one_reason_in_both_readers(tmp_path: Path) -> None:
    from moleseg.core.dicomio import DicomReadError, read_dataset
    from moleseg.core.errors import open_failure

    too_long = tmp_path / ("x" * 300 + ".png")  # a name longer than the file system allows: open fails
    with pytest.raises(ImageReadError) as image_error:
        read_image(too_long)
    with pytest.raises(DicomReadError) as dicom_error:
        read_dataset(too_long)
    assert image_error.value.reason == dicom_error.value.reason == "cannot open the file (File name too long)"
    assert open_failure(OSError("no reason given")) == "cannot open the file (no reason given)"


def test_an_unreadable_header_is_told_with_the_readers_error() -> None:
    assert imagefile.header_failure(SyntaxError("broken PNG file")) == \
        "cannot read the image header (SyntaxError: broken PNG file)"


def test_empty_file_and_bytes(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError) as from_path:
        read_image(empty)
    with pytest.raises(ImageReadError) as from_bytes:
        read_image(b"")
    assert (str(from_path.value), str(from_bytes.value)) == ("empty.jpg: empty file (0 bytes)",
                                                             "image: empty file (0 bytes)")
    assert from_path.value.reason == imagefile.EMPTY_FILE


def test_name_comes_from_a_file_object() -> None:
    upload = io.BytesIO(b"garbage")
    upload.name = "/somewhere/upload.jpg"
    with pytest.raises(ImageReadError, match=r"^upload\.jpg: "):
        read_image(upload)


def test_wrong_source_type_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        read_image(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_pixels"):
        read_image(from_array(np.zeros((2, 2), np.uint8)), max_pixels=0)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP"])
def test_truncated_files_are_refused(fmt: str) -> None:
    values = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = from_array(values, fmt)
    with pytest.raises(ImageReadError) as excinfo:
        read_image(data[: len(data) * 2 // 3], name=f"cut.{fmt.lower()}")
    assert str(excinfo.value).startswith(f"cut.{fmt.lower()}: ")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_png_says_truncated() -> None:
    data = from_array(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    with pytest.raises(ImageReadError) as excinfo:
        read_image(data[:-200])
    assert "truncated" in reason(excinfo) or "corrupt" in reason(excinfo)


def test_zero_sized_image() -> None:
    for width, height in ((0, 5), (5, 0)):
        data = png_header(width, height) + png_chunk(b"IEND", b"")
        with pytest.raises(ImageReadError):
            read_image(data, name="zero.png")
    with pytest.raises(ImageReadError, match="zero-sized"):
        imagefile.check_size(0, 4, "zero.png", 100)


def test_pixel_limit_is_checked_from_the_header_before_decoding() -> None:
    # A PNG declaring 8000 x 7000 px with no pixel data at all: refused as too large, not as truncated.
    data = png_header(8000, 7000) + png_chunk(b"IEND", b"")
    with pytest.raises(ImageReadError) as excinfo:
        read_image(data, name="big.png")
    assert reason(excinfo).startswith("image too large: 8000 x 7000 px = 56.0 megapixels")
    assert f"the limit is {DEFAULT_MAX_PIXELS / 1e6:g} megapixels" in reason(excinfo)
    small = from_array(np.zeros((4, 4), np.uint8))
    with pytest.raises(ImageReadError, match="image too large"):
        read_image(small, max_pixels=15)
    assert read_image(small, max_pixels=16).shape == (4, 4, 3)
    with pytest.raises(ImageReadError, match="image too large"):
        read_mask(png_header(8000, 7000) + png_chunk(b"IDAT", b""), name="big.png")


def test_decompression_bomb_guard_stays_on_and_is_an_image_read_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Image.MAX_IMAGE_PIXELS is not None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    warning_size = from_array(np.zeros((12, 12), np.uint8))  # 144 px: Pillow warns
    error_size = from_array(np.zeros((20, 20), np.uint8))  # 400 px > 2 x 100: Pillow raises
    for data in (warning_size, error_size):
        with pytest.raises(ImageReadError, match="too large"):
            read_image(data, max_pixels=10**9)
        with pytest.raises(ImageReadError, match="too large"):
            image_size(data)
    # Pillow's own limit stops a huge header even when the caller allows more than it.
    monkeypatch.undo()
    huge = png_header(20000, 20000) + png_chunk(b"IEND", b"")
    with pytest.raises(ImageReadError, match="decompression-bomb"):
        read_image(huge, max_pixels=10**12)


def test_unsupported_mode_is_refused() -> None:
    class Odd:
        mode = "BGR;15"
        info: ClassVar[dict[str, object]] = {}

    with pytest.raises(ImageReadError, match="unsupported pixel mode"):
        imageio._pil_to_arrays(Odd(), "x")  # type: ignore[arg-type]


def test_error_pickles() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(ImageReadError("a.png", "bad")))
    assert str(error) == "a.png: bad" and error.filename == "a.png" and error.reason == "bad"
    assert str(ImageReadError("whole message")) == "whole message"


# --------------------------------------------------------------------------------------------------
# Masks


def _mask_values() -> np.ndarray:
    mask = np.zeros((32, 40), bool)
    mask[8:24, 10:30] = True
    return mask


def test_mask_0_255_png() -> None:
    mask = _mask_values()
    out = read_mask(from_array(mask.astype(np.uint8) * 255))
    assert out.dtype == np.bool_ and out.shape == (32, 40)
    np.testing.assert_array_equal(out, mask)


def test_mask_lossy_jpeg_is_thresholded_at_127() -> None:
    mask = _mask_values()
    out = read_mask(from_array(mask.astype(np.uint8) * 255, "JPEG", quality=60))
    assert (out == mask).mean() > 0.98
    assert out[12:20, 14:26].all() and not out[:4].any()


def test_mask_threshold_is_strictly_above_127() -> None:
    values = np.array([[127, 128, 0, 255]], np.uint8)
    assert read_mask(from_array(values)).tolist() == [[False, True, False, True]]


def test_mask_0_1_values_are_binary() -> None:
    mask = _mask_values()
    np.testing.assert_array_equal(read_mask(from_array(mask.astype(np.uint8))), mask)
    np.testing.assert_array_equal(read_mask(from_array(mask.astype(np.uint16), "TIFF")), mask)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_mask_16_bit(fmt: str) -> None:
    mask = _mask_values()
    np.testing.assert_array_equal(read_mask(from_array(mask.astype(np.uint16) * 65535, fmt)), mask)
    # 16-bit 0 / 32767 scales to 0 / 127: below the threshold, so an empty mask
    with pytest.raises(ImageReadError, match="empty mask"):
        read_mask(from_array(mask.astype(np.uint16) * 32767, fmt))


def test_mask_colour_uses_the_maximum_channel() -> None:
    mask = _mask_values()
    rgb = np.zeros(mask.shape + (3,), np.uint8)
    rgb[mask] = (255, 0, 0)
    np.testing.assert_array_equal(read_mask(from_array(rgb)), mask)


def test_mask_transparency_is_background() -> None:
    mask = _mask_values()
    rgba = np.full(mask.shape + (4,), 255, np.uint8)
    rgba[..., 3] = np.where(mask, 255, 0)
    np.testing.assert_array_equal(read_mask(from_array(rgba)), mask)
    la = np.stack([np.full(mask.shape, 255, np.uint8), np.where(mask, 255, 0).astype(np.uint8)], -1)
    np.testing.assert_array_equal(read_mask(encode(Image.frombytes("LA", mask.shape[::-1], la.tobytes()), "PNG")), mask)


def test_mask_palette_and_float() -> None:
    mask = _mask_values()
    img = Image.fromarray(mask.astype(np.uint8)).convert("P")
    img.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    np.testing.assert_array_equal(read_mask(encode(img, "PNG")), mask)
    np.testing.assert_array_equal(read_mask(encode(Image.fromarray(mask.astype(np.float32)), "TIFF")), mask)


def test_empty_and_full_masks() -> None:
    empty = from_array(np.zeros((4, 4), np.uint8))
    full = from_array(np.full((4, 4), 255, np.uint8))
    low = from_array(np.array([[0, 100], [0, 0]], np.uint8))
    with pytest.raises(ImageReadError, match=r"^m\.png: empty mask"):
        read_mask(empty, name="m.png")
    with pytest.raises(ImageReadError, match=r"^m\.png: full mask"):
        read_mask(full, name="m.png")
    with pytest.raises(ImageReadError, match="largest value is 100"):
        read_mask(low)
    assert not read_mask(empty, allow_empty=True).any()
    assert read_mask(full, allow_empty=True).all()


# --------------------------------------------------------------------------------------------------
# image_size


def test_image_size_reads_only_the_header() -> None:
    data = from_array(np.random.default_rng(3).integers(0, 256, (30, 50, 3), dtype=np.uint8))
    assert image_size(data) == (50, 30)
    assert image_size(data[:100]) == (50, 30)  # pixels missing: still fine, nothing decoded
    assert image_size(png_header(8000, 7000) + png_chunk(b"IDAT", b"")) == (8000, 7000)  # over max_pixels: still a size
    with pytest.raises(ImageReadError, match="not an image"):
        image_size(b"not an image at all")


def test_image_size_of_paths_and_tifffile_only_tiffs(tmp_path: Path) -> None:
    path = tmp_path / "x.tif"
    buffer = _tiff(np.zeros((3, 7, 3), np.float32), photometric="rgb")
    path.write_bytes(buffer.getvalue())
    assert image_size(path) == (7, 3)
    assert read_image(path).shape == (3, 7, 3)


# --------------------------------------------------------------------------------------------------
# Writing


@pytest.mark.parametrize(
    "values",
    [
        np.arange(12, dtype=np.uint8).reshape(3, 4),
        np.arange(36, dtype=np.uint8).reshape(3, 4, 3),
        np.arange(48, dtype=np.uint8).reshape(3, 4, 4),
        np.arange(24, dtype=np.uint8).reshape(3, 4, 2),
        np.arange(12, dtype=np.uint8).reshape(3, 4, 1),
    ],
)
def test_encode_png_is_lossless(values: np.ndarray) -> None:
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(values))))
    np.testing.assert_array_equal(decoded, values.reshape(decoded.shape))


def test_encode_png_bool_and_uint16() -> None:
    mask = _mask_values()
    data = encode_png(mask)
    img = Image.open(io.BytesIO(data))
    assert img.mode == "L" and set(np.unique(np.asarray(img)).tolist()) == {0, 255}
    np.testing.assert_array_equal(read_mask(data), mask)
    deep = np.array([[0, 1000, 65535]], np.uint16)
    img = Image.open(io.BytesIO(encode_png(deep)))
    assert img.mode == "I;16"
    np.testing.assert_array_equal(np.asarray(img), deep)


@pytest.mark.parametrize(
    "values",
    [
        np.zeros((2, 2), np.float32),
        np.zeros((2, 2, 5), np.uint8),
        np.zeros((0, 3), np.uint8),
        np.zeros((4,), np.uint8),
        np.zeros((2, 2, 3), bool),
        np.zeros((2, 2, 3), np.uint16),
    ],
)
def test_encode_png_refuses_other_arrays(values: np.ndarray) -> None:
    with pytest.raises(ValueError):
        encode_png(values)


def test_write_png_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.png"
    write_png(target, np.full((2, 3, 3), 7, np.uint8))
    assert read_image(target)[0, 0].tolist() == [7, 7, 7]
    write_png(str(target), np.full((2, 3), 9, np.uint8))  # replaces
    assert read_image(target)[0, 0].tolist() == [9, 9, 9]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    before = target.read_bytes()

    def failing_replace(src: object, dst: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk on fire"):
        write_png(target, np.zeros((2, 3), np.uint8))
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # temporary file removed
    monkeypatch.undo()
    with pytest.raises(ValueError):
        write_png(tmp_path / "bad.png", np.zeros((2, 2), np.float64))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_written_files_have_normal_permissions(tmp_path: Path) -> None:
    if os.name != "posix":
        pytest.skip("POSIX permissions only")
    target = tmp_path / "perm.png"
    write_png(target, np.zeros((2, 2), np.uint8))
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


# --------------------------------------------------------------------------------------------------
# Fuzz: only ImageReadError may come out of the readers

_FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fuzz(examples: int) -> settings:
    """Fuzz settings with ``examples`` examples (about 2000 over all the fuzz tests)."""
    return settings(_FUZZ, max_examples=examples)


def _samples() -> dict[str, bytes]:
    rng = np.random.default_rng(4)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    grey = rgb.convert("L")
    bits = grey.convert("1")
    frames = [rgb.convert("P"), Image.new("P", (16, 12), 3)]
    samples = {
        "png": encode(rgb, "PNG"),
        "png_rgba": encode(rgb.convert("RGBA"), "PNG"),
        "png_p": encode(rgb.convert("P"), "PNG"),
        "png_16": from_array((rng.integers(0, 65536, (12, 16))).astype(np.uint16)),
        "png_interlaced": encode(rgb, "PNG", interlace=1),
        "jpeg": encode(rgb, "JPEG"),
        "jpeg_progressive": encode(rgb, "JPEG", progressive=True),
        "jpeg_grey": encode(grey, "JPEG"),
        "jpeg_cmyk": encode(rgb.convert("CMYK"), "JPEG"),
        "jpeg_exif": _marked_jpeg(6),
        "tiff": encode(rgb, "TIFF"),
        "tiff_lzw": encode(rgb, "TIFF", compression="tiff_lzw"),
        "tiff_deflate": encode(rgb, "TIFF", compression="tiff_adobe_deflate"),
        "tiff_packbits": encode(grey, "TIFF", compression="packbits"),
        "tiff_g4": encode(bits, "TIFF", compression="group4"),
        "tiff_16": from_array(rng.integers(0, 65536, (12, 16)).astype(np.uint16), "TIFF"),
        "tiff_float": encode(Image.fromarray(rng.random((12, 16), dtype=np.float32)), "TIFF"),
        "tiff_float_rgb": _tiff(rng.random((12, 16, 3), dtype=np.float32), photometric="rgb").getvalue(),
        "bmp": encode(rgb, "BMP"),
        "bmp_p": encode(rgb.convert("P"), "BMP"),
        "bmp_1": encode(bits, "BMP"),
        "gif": encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "webp": encode(rgb, "WEBP"),
        "webp_lossless": encode(rgb.convert("RGBA"), "WEBP", lossless=True),
    }
    return samples


SAMPLES = _samples()
SAMPLE_NAMES = sorted(SAMPLES)


def _only_image_read_error(data: bytes) -> None:
    for reader in (read_image, read_mask):
        try:
            out = reader(data, name="fuzz.bin")
        except ImageReadError as error:
            assert str(error).startswith("fuzz.bin: ")
        else:
            assert out.dtype == (np.uint8 if reader is read_image else np.bool_)
            assert out.ndim == (3 if reader is read_image else 2)
    try:
        image_size(data)
    except ImageReadError:
        pass


@fuzz(400)
@given(st.binary(max_size=1024))
def test_fuzz_random_bytes(data: bytes) -> None:
    _only_image_read_error(data)


@fuzz(450)
@given(st.sampled_from(SAMPLE_NAMES), st.floats(0.0, 1.0))
def test_fuzz_truncated_valid_files(name: str, fraction: float) -> None:
    data = SAMPLES[name]
    _only_image_read_error(data[: int(len(data) * fraction)])


@fuzz(450)
@given(
    st.sampled_from(SAMPLE_NAMES),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=12),
)
def test_fuzz_corrupted_valid_files(name: str, edits: list[tuple[int, int]]) -> None:
    data = bytearray(SAMPLES[name])
    for position, value in edits:
        data[position % len(data)] = value
    _only_image_read_error(bytes(data))


@fuzz(300)
@given(st.sampled_from(SAMPLE_NAMES), st.integers(1, 200), st.binary(max_size=512))
def test_fuzz_valid_headers_with_garbage(name: str, keep: int, garbage: bytes) -> None:
    _only_image_read_error(SAMPLES[name][:keep] + garbage)


def _declared_size_file(kind: str, width: int, height: int, tail: bytes) -> bytes:
    if kind == "png":
        return png_header(width % 2**32, height % 2**32) + tail
    if kind == "bmp":
        info = struct.pack(
            "<IiiHHIIiiII", 40, width % 2**31 - (2**30 if width % 3 == 0 else 0),
            height % 2**31 - (2**30 if height % 2 == 0 else 0), 1, 24, 0, 0, 0, 0, 0, 0,
        )  # fmt: skip
        return b"BM" + struct.pack("<IHHI", 54 + len(tail), 0, 0, 54) + info + tail
    if kind == "gif":
        return b"GIF89a" + struct.pack("<HHBBB", width % 2**16, height % 2**16, 0xF0, 0, 0) + (
            b"\x00" * 6 + b",\x00\x00\x00\x00" + struct.pack("<HH", width % 2**16, height % 2**16)
            + b"\x00\x02" + tail
        )
    if kind == "jpeg":
        sof = struct.pack(">BHHB", 8, height % 2**16, width % 2**16, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
        return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + tail
    # tiff: little-endian, one IFD with width, length, bits, compression, photometric, strips
    entries = [
        (256, 4, 1, width % 2**32),
        (257, 4, 1, height % 2**32),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 8 + 2 + 12 * 7 + 4),
        (279, 4, 1, len(tail)),
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind_, count, value) for tag, kind_, count, value in entries
    ) + b"\x00\x00\x00\x00"
    return b"II*\x00" + struct.pack("<I", 8) + ifd + tail


@fuzz(250)
@given(
    st.sampled_from(["png", "bmp", "gif", "jpeg", "tiff"]),
    st.one_of(st.integers(0, 2**32), st.integers(0, 100_000), st.just(2**31 - 1)),
    st.one_of(st.integers(0, 2**32), st.integers(0, 100_000), st.just(65535)),
    st.binary(max_size=64),
)
def test_fuzz_huge_declared_sizes(kind: str, width: int, height: int, tail: bytes) -> None:
    _only_image_read_error(_declared_size_file(kind, width, height, tail))


_ODD_COMBOS = [
    ("1", "PNG"), ("1", "TIFF"), ("1", "BMP"), ("1", "GIF"), ("L", "PNG"), ("L", "JPEG"),
    ("L", "TIFF"), ("L", "BMP"), ("L", "GIF"), ("L", "WEBP"), ("P", "PNG"), ("P", "GIF"),
    ("P", "TIFF"), ("P", "BMP"), ("RGB", "PNG"), ("RGB", "JPEG"), ("RGB", "TIFF"), ("RGB", "BMP"),
    ("RGB", "WEBP"), ("RGB", "GIF"), ("RGBA", "PNG"), ("RGBA", "TIFF"), ("RGBA", "WEBP"),
    ("LA", "PNG"), ("LA", "TIFF"), ("I;16", "PNG"), ("I;16", "TIFF"), ("I;16B", "TIFF"),
    ("I", "TIFF"), ("F", "TIFF"), ("CMYK", "JPEG"), ("CMYK", "TIFF"), ("YCbCr", "JPEG"),
    ("YCbCr", "TIFF"), ("LAB", "TIFF"),
]  # fmt: skip


@fuzz(300)
@given(
    st.sampled_from(_ODD_COMBOS),
    st.integers(1, 24),
    st.integers(1, 24),
    st.binary(min_size=24 * 24 * 4, max_size=24 * 24 * 4),
    st.binary(min_size=768, max_size=768),
    st.sampled_from([None, 1, 3, 6, 8, 0, 9, 65535]),
)
def test_fuzz_odd_valid_images_always_read(
    combo: tuple[str, str], height: int, width: int, pixels: bytes, palette: bytes,
    orientation: int | None,
) -> None:  # fmt: skip
    mode, fmt = combo
    size_bytes = len(Image.new(mode, (width, height)).tobytes())
    img = Image.frombytes(mode, (width, height), pixels[:size_bytes])
    options: dict[str, object] = {}
    if mode == "P":
        img.putpalette(palette)
    if orientation is not None and fmt in ("PNG", "JPEG", "WEBP"):
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    data = encode(img, fmt, **options)
    out = read_image(data, name="odd")
    assert out.dtype == np.uint8 and out.shape[2] == 3
    assert sorted(out.shape[:2]) == sorted((height, width))
    assert image_size(data) == (out.shape[1], out.shape[0])
    try:
        mask = read_mask(data, name="odd")
    except ImageReadError as error:
        assert error.reason.startswith(("empty mask", "full mask", "not a binary mask"))
        if error.reason.startswith("not a binary mask"):  # a label image (a few values, all <= 127)
            return
    else:
        assert mask.dtype == np.bool_ and mask.shape == out.shape[:2]
    assert read_mask(data, allow_empty=True).shape == out.shape[:2]


# --------------------------------------------------------------------------------------------------
# Real data: every image and mask of every subset loads

SUBSETS = [
    "moles/seed/train",
    "moles/seed/test",
    "moles/isic2017",
    "moles/ham10000",
    "moles/ph2",
    "cells/seed",
    "cells/dsb2018_fluo",
    "cells/dsb2018_brightfield",
]


@pytest.mark.parametrize("subset", SUBSETS)
def test_real_data_every_image_and_mask_loads(subset: str, require_shared) -> None:
    root = require_shared(subset)
    images = sorted(p for p in (root / "images").iterdir() if not p.name.startswith("."))
    masks = sorted(p for p in (root / "masks").iterdir() if not p.name.startswith("."))
    assert images and masks
    for path in images:
        image = read_image(path)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert image_size(path) == (image.shape[1], image.shape[0])
        assert 0 < image.mean() < 255
    for path in masks:
        mask = read_mask(path)
        assert mask.dtype == np.bool_ and mask.ndim == 2
        assert 0.001 < mask.mean() < 0.999
        assert image_size(path) == (mask.shape[1], mask.shape[0])


def test_real_data_seed_mask_is_jpeg_and_cell_mask_is_one_bit(require_shared) -> None:
    seed = require_shared("moles/seed/train/masks/001.jpg")
    cell = require_shared("cells/seed/masks/gt_0_001.tiff")
    assert Image.open(seed).format == "JPEG"
    assert Image.open(cell).mode == "1"
    mask = read_mask(seed)
    values = np.asarray(Image.open(seed))
    np.testing.assert_array_equal(mask, values > 127)
    np.testing.assert_array_equal(read_mask(cell), np.asarray(Image.open(cell)))


def test_encode_jpeg_is_a_close_lossy_copy_and_refuses_masks():
    from moleseg.core.imagewrite import encode_jpeg

    rows, cols = np.mgrid[:60, :80]
    image = np.stack([rows * 4, cols * 3, (rows + cols) * 2], axis=-1).astype(np.uint8)  # smooth gradients
    data = encode_jpeg(image, quality=90)
    assert data[:3] == b"\xff\xd8\xff"
    decoded = read_image(data, name="x.jpg")
    assert decoded.shape == image.shape and np.abs(decoded.astype(int) - image).mean() < 2
    for bad in (np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32)):
        with pytest.raises(ValueError, match="uint8 RGB"):
            encode_jpeg(bad)
    with pytest.raises(ValueError, match="quality"):
        encode_jpeg(image, quality=0)


def test_the_formats_named_for_people_are_those_of_the_extensions_read():
    from moleseg.core.config import IMAGE_EXTENSIONS

    spelled = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".dcm": "DICOM"}
    named = {name.upper() for name in imagefile.FORMAT_NAMES.replace(" or ", ", ").split(", ")}
    assert named == {spelled.get(ext, ext[1:].upper()) for ext in IMAGE_EXTENSIONS}
    assert imagefile.NOT_AN_IMAGE.endswith("(expected JPEG, PNG, BMP, TIFF, GIF, WebP or DICOM)")
