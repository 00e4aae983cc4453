"""The fast paths (measurements, colours, labels, overlay) give the values of the plain
formulas they stand for: pinned on a real PH2 lesion and compared with the reference computations."""

from __future__ import annotations

from concurrent.futures import Executor, Future

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from moleseg.core.cleanup import CleanupSettings, border_band
from moleseg.core.colour import (COLOUR_NAMES, classify_colours, code_classes, lesion_colours, packed_rgb,
                                 unpacked_rgb)
from moleseg.core.imageio import read_image, read_mask
from moleseg.core.bandwidth import border_width, euclidean_distances
from moleseg.core.measure import measure_lesion, measurements_row
from moleseg.core.render import blend, overlay
from moleseg.engine.segmenter import (LABEL_BAND_ROWS, background_cutoff, border_confidence, class_argmax,
                                      labels_from_probabilities)

#: measure_lesion of PH2 IMD004's true mask (border: its 10 px diamond band, 0.01 mm per pixel), as the plain
#: formulas compute it (regionprops / scipy distance transforms / per-row unique colours).
IMD004_ROW: dict[str, float] = {
    "area_px": 85382.0, "area_mm2": 8.5382, "perimeter_px": 1241.7616987549554, "perimeter_mm": 12.417616987549554,
    "equivalent_diameter_px": 329.7146323846997, "equivalent_diameter_mm": 3.2971463238469974,
    "major_axis_px": 347.66581999089016, "major_axis_mm": 3.4766581999089015,
    "minor_axis_px": 320.73221734823034, "minor_axis_mm": 3.2073221734823036,
    "compactness": 1.4371441547985415, "asymmetry_major": 0.20734434214808362,
    "asymmetry_minor": 0.10757228187993839, "fractal_dimension": 1.0006005362691572,
    "border_width_mean_px": 8.743440827128929, "border_width_mean_mm": 0.08743440827128929,
    "border_width_std_px": 1.0410359143238384, "border_width_std_mm": 0.010410359143238384,
    "n_components": 1.0, "colour_white_percent": 3.8111077276240892, "colour_red_percent": 0.06207397343702419,
    "colour_light_brown_percent": 27.045513105806844, "colour_dark_brown_percent": 68.87985758122322,
    "colour_blue_grey_percent": 0.20144761190883323, "colour_black_percent": 0.0, "colour_count": 2.0,
    "colour_variegation": 0.4197303932895798,
}


def test_measurements_of_a_real_lesion_are_unchanged(require_shared):
    folder = require_shared("moles/ph2")
    image = read_image(folder / "images" / "IMD004.jpg")
    lesion = read_mask(folder / "masks" / "IMD004_lesion.png")
    band = border_band(lesion, CleanupSettings(border_width_px=10, shape="diamond"))
    row = measurements_row(measure_lesion(lesion, border=band, image=image, pixel_size_mm=0.01))
    assert row.keys() == IMD004_ROW.keys()
    for column, value in IMD004_ROW.items():
        assert row[column] == pytest.approx(value, rel=1e-12, abs=1e-12), column


def random_blobs(seed: int, shape: tuple[int, int] = (120, 160)) -> np.ndarray:
    """A few overlapping disks with pin holes, some touching the frame."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, bool)
    for _ in range(5):
        centre = rng.integers(0, shape)
        mask |= np.hypot(rows - centre[0], cols - centre[1]) < rng.integers(5, 60)
    mask[rng.random(shape) < 0.01] = False
    return mask


@pytest.mark.parametrize("seed", range(5))
def test_euclidean_distances_equal_scipy_exactly(seed):
    mask = random_blobs(seed)
    np.testing.assert_array_equal(euclidean_distances(mask), ndimage.distance_transform_edt(mask))
    band = mask & ~ndimage.binary_erosion(mask, iterations=3)
    np.testing.assert_array_equal(euclidean_distances(mask, at=band), ndimage.distance_transform_edt(mask)[band])


def test_packed_colours_round_trip():
    pixels = np.random.default_rng(0).integers(0, 256, (500, 3)).astype(np.uint8)
    np.testing.assert_array_equal(unpacked_rgb(packed_rgb(pixels)), pixels)
    assert packed_rgb(np.array([[1, 2, 3]], np.uint8))[0] == 65536 + 2 * 256 + 3


def test_lesion_colours_equal_classifying_every_pixel():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (60, 80, 3)).astype(np.uint8)
    image[:30] = image[0, 0]  # many repeated colours, as in real lesions
    lesion = random_blobs(2, (60, 80))
    counts = np.bincount(classify_colours(image[lesion]), minlength=len(COLOUR_NAMES))
    shares = lesion_colours(image, lesion).shares
    for name, count in zip(COLOUR_NAMES, counts):
        assert shares[name] == pytest.approx(count / lesion.sum(), rel=1e-15, abs=0.0)


def test_remembered_colour_classes_equal_classifying_each_batch():
    codes = np.random.default_rng(7).integers(0, 2**24, 20_000).astype(np.int32)
    # new colours, some seen before, repeated ones, all of them again: each batch as classified alone
    for batch in (codes[:5_000], codes[3_000:12_000], np.repeat(codes[10_000:10_100], 3), codes, codes[:0]):
        np.testing.assert_array_equal(code_classes(batch), classify_colours(unpacked_rgb(batch)))


def test_colours_of_a_real_lesion_equal_classifying_every_pixel_twice(require_shared):
    folder = require_shared("moles/ph2")
    image = read_image(folder / "images" / "IMD004.jpg")
    lesion = read_mask(folder / "masks" / "IMD004_lesion.png")
    counts = np.bincount(classify_colours(image[lesion]), minlength=len(COLOUR_NAMES))
    for _ in range(2):  # the second time every colour is remembered
        shares = lesion_colours(image, lesion).shares
        assert [shares[name] for name in COLOUR_NAMES] == list(counts / counts.sum())


@pytest.mark.parametrize("classes", [2, 3, 4])
def test_labels_equal_numpy_argmax_with_ties(classes):
    rng = np.random.default_rng(classes)
    probabilities = rng.random((40, 50, classes)).astype(np.float32)
    probabilities[::3, ::2, -1] = probabilities[::3, ::2, 0]  # ties go to the first class
    probabilities[1::4, :, 1] = probabilities[1::4, :, -1]
    np.testing.assert_array_equal(class_argmax(probabilities, 0), np.argmax(probabilities, axis=-1))
    np.testing.assert_array_equal(labels_from_probabilities(probabilities), np.argmax(probabilities, axis=-1))
    expected = np.where(1.0 - probabilities[..., 0] >= 0.4, 1 + np.argmax(probabilities[..., 1:], axis=-1), 0)
    np.testing.assert_array_equal(labels_from_probabilities(probabilities, 0.4), expected)


def plain_threshold_labels(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Lesion where ``1 - P(BACK)`` reaches ``threshold``, then the likelier lesion class (the first on a tie)."""
    lesion = (1.0 - probabilities[..., 0]) >= threshold
    return class_argmax(probabilities, 1) * lesion.view(np.uint8)


THRESHOLDS = [0.0, 1.0, 0.5, 0.65, 0.3, 0.1 + 0.2, 1e-7, 0.9999999, float(np.float32(0.35))]


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_the_background_cutoff_splits_every_half_precision_value_as_the_formula(threshold):
    every = np.arange(2**16, dtype=np.uint16).view(np.float16)  # NaNs and infinities included
    cutoff = background_cutoff(np.dtype(np.float16), threshold)
    np.testing.assert_array_equal(every <= cutoff, (1.0 - every) >= threshold)


@settings(max_examples=60, deadline=None)
@given(threshold=st.floats(0.0, 1.0), dtype=st.sampled_from([np.float16, np.float32, np.float64]))
def test_the_background_cutoff_is_the_last_value_whose_lesion_probability_reaches_any_threshold(threshold, dtype):
    cutoff = background_cutoff(np.dtype(dtype), threshold)
    values = np.array([cutoff, np.nextafter(cutoff, dtype(np.inf))], dtype)
    assert ((1.0 - values) >= threshold).tolist() == [True, False]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("classes", [2, 3, 4])
def test_labels_at_a_threshold_equal_the_formula_at_and_around_the_cutoff(dtype, classes):
    rng = np.random.default_rng(classes)
    for threshold in THRESHOLDS:
        probabilities = rng.random((30, 40, classes)).astype(dtype)
        background = probabilities[..., 0].reshape(-1)
        cutoff = np.array([background_cutoff(np.dtype(dtype), threshold)], dtype)
        near = (cutoff.view(f"i{cutoff.itemsize}") + np.arange(-300, 300)).astype(f"i{cutoff.itemsize}")  # 600 neighbours
        background[:600] = near.view(dtype)
        background[600:605] = [np.nan, np.inf, -np.inf, -0.0, 1.0 - threshold]
        probabilities[::5, ::3, 1:] = probabilities[::5, ::3, -1:]  # ties between the lesion classes
        probabilities[-1, :, 1] = np.nan
        np.testing.assert_array_equal(labels_from_probabilities(probabilities, threshold),
                                      plain_threshold_labels(probabilities, threshold))


@pytest.mark.parametrize("rows", [0, 1, LABEL_BAND_ROWS - 1, LABEL_BAND_ROWS, LABEL_BAND_ROWS + 1,
                                  3 * LABEL_BAND_ROWS + 5])
def test_labels_made_band_by_band_equal_the_formula_on_the_whole_image(rows):
    rng = np.random.default_rng(rows)
    for classes in (2, 3):
        probabilities = rng.dirichlet(np.ones(classes), (rows, 9)).astype(np.float32)
        np.testing.assert_array_equal(labels_from_probabilities(probabilities), np.argmax(probabilities, axis=-1))
        np.testing.assert_array_equal(labels_from_probabilities(probabilities, 0.4),
                                      plain_threshold_labels(probabilities, 0.4))


def test_confidence_counted_band_by_band_equals_the_formula_on_the_whole_image():
    from moleseg.core.classical import ClassicalSegmenter
    from moleseg.core.config import UNDECIDED_PROBABILITY_RANGE
    from moleseg.engine.segmenter import clean

    rng = np.random.default_rng(5)
    probabilities = rng.dirichlet((1.0, 1.0, 1.0), (3 * LABEL_BAND_ROWS + 7, 40)).astype(np.float32)
    probabilities[::7, :, 0] = 0.5  # on the edge of lesion and background: background
    low, high = UNDECIDED_PROBABILITY_RANGE
    lesion_probability = 1.0 - probabilities[..., 0]
    undecided = np.count_nonzero((lesion_probability > low) & (lesion_probability < high))
    likelier = np.count_nonzero(probabilities[..., 0] < 0.5)
    segmentation = clean(ClassicalSegmenter(n_classes=3), probabilities)
    assert segmentation.confidence == max(0.0, 1.0 - undecided / likelier)
    assert border_confidence(probabilities, segmentation.lesion) == max(0.0, 1.0 - undecided /
                                                                      np.count_nonzero(segmentation.lesion))


def bilinear_reference(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(h, w, C)`` values resized to ``(height, width, C)`` by the bilinear formula in float64: pixel centres at
    half-pixel offsets, the edge pixels repeated beyond the frame (OpenCV's ``INTER_LINEAR``)."""
    rows, cols = values.shape[:2]
    y = np.clip((np.arange(height) + 0.5) * rows / height - 0.5, 0, rows - 1)
    x = np.clip((np.arange(width) + 0.5) * cols / width - 0.5, 0, cols - 1)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, rows - 1), np.minimum(x0 + 1, cols - 1)
    fy, fx = (y - y0)[:, None, None], (x - x0)[None, :, None]
    grid = values.astype(np.float64)
    return ((grid[y0][:, x0] * (1 - fx) + grid[y0][:, x1] * fx) * (1 - fy)
            + (grid[y1][:, x0] * (1 - fx) + grid[y1][:, x1] * fx) * fy)


@pytest.mark.parametrize("classes", [1, 2, 3, 4])
def test_probabilities_are_resized_class_by_class_into_contiguous_planes(classes):
    import cv2

    from moleseg.core.resize import resize_probabilities

    rng = np.random.default_rng(classes)
    small = rng.dirichlet(np.ones(classes), (40, 32)).astype(np.float32)
    small[3, 4] = np.nan
    for height, width in [(95, 77), (20, 16), (40, 32), (13, 90)]:
        resized = resize_probabilities(small, height, width)
        assert resized.shape == (height, width, classes) and resized.dtype == np.float32
        for channel in range(classes):
            plane = resized[..., channel]
            assert plane.flags.c_contiguous  # what reads one class reads contiguous memory
            alone = cv2.resize(np.ascontiguousarray(small[..., channel]), (width, height),
                               interpolation=cv2.INTER_LINEAR)
            np.testing.assert_array_equal(plane, alone)  # bit for bit, NaN where the network gave NaN
        # within float32 rounding of the exact bilinear values (OpenCV's resize of two interleaved channels at once
        # errs by up to 1.6e-6)
        finite = np.nan_to_num(small, nan=0.5)
        np.testing.assert_allclose(resize_probabilities(finite, height, width), bilinear_reference(finite, height, width),
                                   rtol=0, atol=2e-7)
        np.testing.assert_array_equal(resize_probabilities(resized, 40, 32),  # its planes read as they are
                                      resize_probabilities(np.ascontiguousarray(resized), 40, 32))
    np.testing.assert_array_equal(resize_probabilities(small[..., 0], 20, 16), resize_probabilities(small[..., :1], 20, 16))


def test_labels_and_confidence_of_planar_probabilities_equal_those_of_the_same_values_interleaved():
    from moleseg.core.resize import resize_probabilities

    rng = np.random.default_rng(11)
    planar = resize_probabilities(rng.dirichlet((1.0, 1.0, 1.0), (30, 20)).astype(np.float32), 3 * LABEL_BAND_ROWS + 5, 47)
    interleaved = np.ascontiguousarray(planar)
    assert not planar.flags.c_contiguous and interleaved.flags.c_contiguous
    for threshold in (None, 0.3, 0.5):
        np.testing.assert_array_equal(labels_from_probabilities(planar, threshold),
                                      labels_from_probabilities(interleaved, threshold))
    lesion = labels_from_probabilities(planar, 0.5) > 0
    assert border_confidence(planar, lesion) == border_confidence(interleaved, lesion)


@pytest.mark.parametrize("dtype", [">f2", ">f4", ">f8", "<f4", np.longdouble])
def test_labels_at_a_threshold_of_any_byte_order_or_float_width_equal_the_formula(dtype):
    probabilities = np.zeros((1, 5, 3), dtype=dtype)
    probabilities[0, :, 0] = [0.4, 0.5, 0.6, np.nan, 0.0]  # background: lesion up to 0.5 at the threshold 0.5
    probabilities[0, :, 2] = [0.6, 0.0, 0.4, 0.5, 1.0]  # a tie with BORDER: BORDER
    np.testing.assert_array_equal(labels_from_probabilities(probabilities, 0.5), [[2, 1, 0, 0, 2]])
    np.testing.assert_array_equal(labels_from_probabilities(probabilities, 0.5),
                                  plain_threshold_labels(probabilities, 0.5))


def reference_blend(image: np.ndarray, where: np.ndarray, color: tuple[int, int, int], opacity: float) -> np.ndarray:
    result = image.copy()
    mixed = (1.0 - opacity) * image[where].astype(np.float64) + opacity * np.asarray(color, np.float64)
    result[where] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return result


@pytest.mark.parametrize("opacity", [0.0, 0.35, 0.5, 0.999, 1.0])
def test_blend_and_overlay_equal_the_per_pixel_formula(opacity):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (120, 160, 3)).astype(np.uint8)
    lesion = random_blobs(4)
    border = lesion & ~ndimage.binary_erosion(lesion, iterations=3)
    np.testing.assert_array_equal(blend(image, lesion, (10, 200, 30), opacity),
                                  reference_blend(image, lesion, (10, 200, 30), opacity))
    from moleseg.core.targets import bounding_box

    for border_opacity in (0.8, 0.999, 1.0):  # translucent, nearly opaque (blended), opaque (set, not blended)
        expected = reference_blend(reference_blend(image, lesion & ~border, (0, 255, 0), opacity), border,
                                   (255, 0, 7), border_opacity)
        for box in (None, bounding_box(lesion)):
            np.testing.assert_array_equal(
                overlay(image, lesion, border, fill_color=(0, 255, 0), fill_opacity=opacity, border_color=(255, 0, 7),
                        border_opacity=border_opacity, box=box),
                expected,
            )


@pytest.mark.parametrize("seed", range(4))
def test_edge_outline_share_equals_the_scipy_erosion_formula(seed):
    from moleseg.core.edgecontact import edge_outline_share

    rng = np.random.default_rng(seed)
    for _ in range(40):
        mask = rng.random(tuple(rng.integers(1, 30, 2))) < rng.random()
        if not mask.any():
            assert edge_outline_share(mask) == 0.0
            continue
        outline = mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1),
                                                 border_value=0)
        frame = np.zeros_like(mask)
        frame[[0, -1], :] = frame[:, [0, -1]] = True
        assert edge_outline_share(mask) == (outline & frame).sum() / outline.sum()


def full_canvas_asymmetry(lesion: np.ndarray) -> tuple[float, float]:
    """The asymmetry as first written: the lesion's box padded by its reach on all four sides."""
    import cv2

    rows, cols = np.nonzero(lesion)
    crop = lesion[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    rows, cols = np.nonzero(crop)
    points = np.stack([cols, rows], axis=1).astype(np.float64)
    centroid = points.mean(axis=0)
    vectors = np.linalg.eigh((points - centroid).T @ (points - centroid) / len(points))[1]
    pad = int(np.ceil(np.sqrt(((cols - centroid[0]) ** 2 + (rows - centroid[1]) ** 2).max()))) + 2
    canvas = np.pad(crop, pad)
    values = []
    for ux, uy in (vectors[:, 1], vectors[:, 0]):
        reflection = np.array([[ux * ux - uy * uy, 2 * ux * uy], [2 * ux * uy, uy * uy - ux * ux]])
        centre = centroid + pad
        matrix = np.hstack([reflection, (centre - reflection @ centre)[:, None]])
        mirrored = cv2.warpAffine(canvas.astype(np.uint8) * 255, matrix, canvas.shape[::-1],
                                  flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=0) >= 128
        values.append(1.0 - np.count_nonzero(canvas & mirrored) / np.count_nonzero(canvas | mirrored))
    return values[0], values[1]


@pytest.mark.parametrize("seed", range(3))
def test_asymmetry_on_a_trimmed_canvas_equals_the_full_canvas(seed):
    from moleseg.core.measure import asymmetry

    for index in range(15):
        lesion = random_blobs(10 * seed + index, (70, 90))
        assert asymmetry(lesion) == full_canvas_asymmetry(lesion)


@pytest.mark.parametrize("seed", range(3))
def test_moments_from_opencvs_sums_equal_the_plain_formulas_and_the_pixel_list(seed, monkeypatch):
    from moleseg.core import measure

    lesions = [random_blobs(200 + 10 * seed + index, (70, 90)) for index in range(15)]
    for lesion in lesions:
        rows, cols = np.nonzero(lesion)
        crop = lesion[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        moments = measure._moments_of(crop)
        rows, cols = np.nonzero(crop)
        x, y = cols.astype(np.float64), rows.astype(np.float64)
        centroid = np.array([x.mean(), y.mean()])
        np.testing.assert_array_equal(moments.centroid, centroid)  # the same bits
        assert moments.reach == np.sqrt(((x - centroid[0]) ** 2 + (y - centroid[1]) ** 2).max())
        assert moments.count == rows.size
        for value, plain in [(moments.xx, ((x - centroid[0]) ** 2).sum()), (moments.yy, ((y - centroid[1]) ** 2).sum()),
                             (moments.xy, ((x - centroid[0]) * (y - centroid[1])).sum())]:
            assert value == pytest.approx(plain, rel=1e-12, abs=1e-9)
    rows_by_opencv = [measurements_row(measure_lesion(lesion)) for lesion in lesions]
    monkeypatch.setattr(measure, "EXACT_FLOAT64_INTEGER", 1)  # every lesion's sums from its pixel list
    assert [measurements_row(measure_lesion(lesion)) for lesion in lesions] == rows_by_opencv


@pytest.mark.parametrize("seed", range(3))
def test_ellipse_axes_equal_regionprops(seed):
    from skimage.measure import regionprops

    from moleseg.core.measure import ellipse_axes

    for index in range(15):
        lesion = random_blobs(100 + 10 * seed + index, (70, 90))
        region = regionprops(lesion.astype(np.uint8))[0]
        major, minor = ellipse_axes(*np.nonzero(lesion))
        assert major == pytest.approx(region.axis_major_length, rel=1e-12, abs=1e-12)
        assert minor == pytest.approx(region.axis_minor_length, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_crofton_perimeter_equals_scikit_image_exactly(seed):
    from skimage.measure import perimeter_crofton

    from moleseg.core.contourshape import crofton_perimeter

    masks = [random_blobs(20 * seed + index, (70, 90)) for index in range(15)]
    masks += [np.zeros((5, 5), bool), np.ones((4, 7), bool)]
    for mask in masks:
        assert crofton_perimeter(mask) == perimeter_crofton(mask, directions=4)


def test_colour_classes_equal_the_argmin_over_every_reference_exactly():
    from skimage.color import rgb2lab

    from moleseg.core.colour import REFERENCE_RGB

    references = rgb2lab(np.array([list(REFERENCE_RGB.values())], dtype=np.float64))[0]
    pixels = unpacked_rgb(np.arange(0, 2**24, 211, dtype=np.int32))  # 79 510 colours across the cube
    lab = rgb2lab(pixels.reshape(-1, 1, 3).astype(np.float64) / 255.0).reshape(-1, 3)
    plain = np.argmin(((lab[:, None, :] - references[None, :, :]) ** 2).sum(axis=2), axis=1)
    assert np.array_equal(classify_colours(pixels), plain.astype(np.uint8))


class NeverStarts(Executor):
    """An executor whose tasks never start (a drawing pool busy with other images): whoever submitted them
    must do them."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return Future()


@pytest.mark.parametrize("drawer_kind", ["thread", "busy"])
def test_measuring_beside_the_drawing_equals_measuring_in_one_thread(require_shared, drawer_kind):
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    from moleseg.core.classical import ClassicalSegmenter
    from moleseg.engine.batches import analyse_images
    from moleseg.engine.pipeline import measure_and_draw

    image = read_image(require_shared("moles/ph2") / "images" / "IMD004.jpg")
    segmenter = ClassicalSegmenter(n_classes=3)
    [plain] = analyse_images(segmenter, [image])
    with ThreadPoolExecutor(max_workers=1) if drawer_kind == "thread" else NeverStarts() as drawer:
        analysis = measure_and_draw(image, plain.segmentation, segmenter, drawer)
    assert "overlay" in vars(analysis) and "result_files" not in vars(analysis)  # drawn, nothing encoded yet
    assert "overlay_jpeg" not in vars(analysis)  # not shown: not encoded
    np.testing.assert_array_equal(analysis.overlay, plain.overlay)
    row = measurements_row(analysis.measurements)
    assert list(row) == list(measurements_row(plain.measurements)) and "colour_variegation" in row
    np.testing.assert_equal(row, measurements_row(plain.measurements))
    files = analysis.files("IMD004")
    assert files == plain.files("IMD004")
    assert list(files) == ["IMD004_overlay.png", "IMD004_mask.png", "IMD004_classes.png"]
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(files["IMD004_overlay.png"], np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(decoded, plain.overlay)  # lossless
    mask = cv2.imdecode(np.frombuffer(files["IMD004_mask.png"], np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(mask, plain.segmentation.lesion.astype(np.uint8) * 255)


@pytest.mark.parametrize("drawer_kind", ["thread", "busy"])
def test_the_overlay_to_show_is_encoded_beside_the_measurements(drawer_kind, square_lesion):
    from concurrent.futures import ThreadPoolExecutor

    from moleseg.core.imagewrite import encode_jpeg
    from moleseg.engine import pipeline

    image, segmenter, plain = square_lesion
    with ThreadPoolExecutor(max_workers=1) if drawer_kind == "thread" else NeverStarts() as drawer:
        analysis = pipeline.measure_and_draw(image, plain.segmentation, segmenter, drawer, shown=True)
    assert "overlay_jpeg" in vars(analysis)  # made with the overlay, kept for the page
    assert analysis.overlay_jpeg == encode_jpeg(plain.overlay, quality=90)  # 40 px: under the display side
    assert analysis.overlay_jpeg is analysis.overlay_jpeg


def test_a_picture_larger_than_the_display_side_is_shrunk_by_area_before_its_jpeg():
    import cv2

    from moleseg.core.imagewrite import display_jpeg, encode_jpeg

    picture = np.zeros((30, 80, 3), np.uint8)
    picture[:, 40:] = (200, 100, 50)
    halved = cv2.resize(picture, (40, 15), interpolation=cv2.INTER_AREA)
    assert display_jpeg(picture, side_px=40) == encode_jpeg(halved, quality=90)
    assert display_jpeg(picture, side_px=80) == display_jpeg(picture) == encode_jpeg(picture, quality=90)


def test_each_result_file_is_encoded_once(monkeypatch, square_lesion):
    from moleseg.engine import pipeline

    _, _, plain = square_lesion
    encoded: list[tuple[int, ...]] = []

    def counted(array, *args):
        encoded.append(np.shape(array))
        return b"png"

    monkeypatch.setattr(pipeline, "encode_png", counted)
    assert plain.mask_png() == b"png" and plain.files("square") == dict.fromkeys(
        ["square_overlay.png", "square_mask.png", "square_classes.png"], b"png")
    assert plain.overlay_png() == plain.classes_png() == b"png"
    assert encoded == [(40, 40), (40, 40, 3), (40, 40)]  # the mask, then the overlay and the class map


@pytest.fixture
def square_lesion():
    """A 40 × 40 px image with a dark 20 px square lesion on light skin, the classical segmenter and its analysis."""
    from moleseg.core.classical import ClassicalSegmenter
    from moleseg.engine.batches import analyse_images

    image = np.full((40, 40, 3), 200, np.uint8)
    image[10:30, 10:30] = (90, 60, 40)
    segmenter = ClassicalSegmenter(n_classes=3)
    [plain] = analyse_images(segmenter, [image])
    assert plain.segmentation.lesion.any()
    return image, segmenter, plain


def with_inside(segmentation):
    """``segmentation`` with a 3 px border band and an inside (the classical segmenter's band covers the square)."""
    import dataclasses

    border = border_band(segmentation.lesion, CleanupSettings(border_width_px=3))
    return dataclasses.replace(segmentation, border=border, inside=segmentation.lesion & ~border)


class KeepsQueued(NeverStarts):
    """A :class:`NeverStarts` that keeps every task it was given, to see which were cancelled."""

    def __init__(self) -> None:
        self.queued: list[Future] = []

    def submit(self, fn, /, *args, **kwargs) -> Future:
        self.queued.append(Future())
        return self.queued[-1]


def test_a_failed_measurement_leaves_no_task_queued_for_the_drawer(monkeypatch, square_lesion):
    from moleseg.engine import pipeline

    image, segmenter, plain = square_lesion

    def fails(*args, **kwargs):
        raise ValueError("measurement failed")

    monkeypatch.setattr(pipeline, "measure_lesion", fails)
    drawer = KeepsQueued()
    with pytest.raises(ValueError, match="measurement failed"):
        pipeline.measure_and_draw(image, with_inside(plain.segmentation), segmenter, drawer)
    assert len(drawer.queued) == 5  # the overlay, the border width's two distance transforms, colours, confidence
    assert all(job.cancelled() for job in drawer.queued)


@pytest.mark.parametrize("drawer_kind", ["thread", "busy"])
@pytest.mark.parametrize("part, error, shown", [
    ("overlay", MemoryError("no memory left for the overlay"), False),
    ("display_jpeg", OSError("the JPEG encoder failed"), True),
])
def test_a_drawing_or_its_jpeg_that_fails_in_either_thread_reaches_the_caller(monkeypatch, drawer_kind, part, error,
                                                                              shown, square_lesion):
    from concurrent.futures import ThreadPoolExecutor

    from moleseg.engine import pipeline

    image, segmenter, plain = square_lesion

    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr(pipeline, part, fails)
    segmentation = with_inside(plain.segmentation) if shown else plain.segmentation
    with ThreadPoolExecutor(max_workers=1) if drawer_kind == "thread" else NeverStarts() as drawer:
        with pytest.raises(type(error), match=f"^{error}$"):
            pipeline.measure_and_draw(image, segmentation, segmenter, drawer, shown=shown)


@pytest.mark.parametrize("drawer_kind", ["thread", "busy"])
@pytest.mark.parametrize("measurement", ["outer", "to_inside", "colour_measurements"])
def test_a_measurement_handed_to_the_drawer_that_fails_in_either_thread_reaches_the_caller(
        monkeypatch, drawer_kind, measurement, square_lesion):
    from concurrent.futures import ThreadPoolExecutor

    from moleseg.core.bandwidth import BandDistances
    from moleseg.engine import pipeline

    image, segmenter, plain = square_lesion

    def fails(*args, **kwargs):
        raise ValueError(f"{measurement} failed")

    monkeypatch.setattr(pipeline if measurement == "colour_measurements" else BandDistances, measurement, fails)
    with ThreadPoolExecutor(max_workers=1) if drawer_kind == "thread" else NeverStarts() as drawer:
        with pytest.raises(ValueError, match=f"^{measurement} failed$"):
            pipeline.measure_and_draw(image, with_inside(plain.segmentation), segmenter, drawer)


def test_remembered_colour_classes_from_two_threads_equal_classifying_each_batch():
    from concurrent.futures import ThreadPoolExecutor

    batches = [np.random.default_rng(seed).integers(0, 1 << 24, 4000).astype(np.int32) for seed in range(8)]
    shared = np.concatenate(batches)  # every thread classifies the same new colours at once, then its own
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda batch: (code_classes(np.concatenate([shared, batch])), batch), batches))
    for classes, batch in results:
        codes = np.concatenate([shared, batch])
        np.testing.assert_array_equal(classes, classify_colours(unpacked_rgb(codes)))


def plain_structure(shape: str, radius: int) -> np.ndarray:
    """The structuring element from its formula (``|dx| + |dy| <= r``, ``dx² + dy² <= r²``, the square)."""
    dy, dx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return {"diamond": np.abs(dx) + np.abs(dy) <= radius, "disk": dx * dx + dy * dy <= radius * radius,
            "square": np.ones_like(dx, bool)}[shape]


@pytest.mark.parametrize("seed", range(3))
def test_erosion_and_dilation_equal_one_window_of_the_whole_element(seed):
    from moleseg.core.targets import dilate, erode

    rng = np.random.default_rng(seed)
    for index in range(12):
        mask = random_blobs(30 * seed + index, tuple(int(n) for n in rng.integers(8, 50, 2)))
        for shape in ("diamond", "disk", "square"):
            for radius in (1, 2, 5):
                element = plain_structure(shape, radius)
                for frame_is_lesion in (True, False):
                    expected = ndimage.binary_erosion(mask, element, border_value=int(frame_is_lesion))
                    assert np.array_equal(erode(mask, radius, shape, border_at_image_edge=not frame_is_lesion),
                                          expected), (index, shape, radius, frame_is_lesion)
                assert np.array_equal(dilate(mask, radius, shape), ndimage.binary_dilation(mask, element)), (index, shape)


def plain_cleanup(labels: np.ndarray, n_classes: int, settings: CleanupSettings) -> tuple[np.ndarray, np.ndarray]:
    """Lesion and border of the cleanup rules written with scipy on the whole image (the module docstring of
    :mod:`moleseg.core.cleanup`): holes not 4-connected to the frame, 8-connected components, the closing on
    a zero-padded plane, the band eroded with the frame counting as lesion."""
    def filled(mask: np.ndarray) -> np.ndarray:
        return ndimage.binary_fill_holes(mask) if settings.fill_holes else mask

    def largest(mask: np.ndarray) -> np.ndarray:
        components, count = ndimage.label(mask, structure=np.ones((3, 3)))
        if not settings.largest_component or count <= 1:
            return mask
        return components == 1 + int(np.argmax(np.bincount(components.ravel())[1:]))

    element = plain_structure(settings.shape, settings.border_width_px)

    def band_of(lesion: np.ndarray) -> np.ndarray:
        return lesion & ~ndimage.binary_erosion(lesion, element, border_value=1)

    if n_classes == 2:
        lesion = largest(filled(labels == 1))
        return lesion, band_of(lesion)
    inside = labels == 2
    if settings.rule == "grow_inside" and inside.any():
        lesion = filled(ndimage.binary_dilation(largest(filled(inside)), element))
        return lesion, band_of(lesion)
    inside = filled(inside)
    band = (labels == 1) & ~inside
    radius = settings.closing_radius_px
    if radius:
        padded = np.pad(band, radius + 1)
        band = band | ndimage.binary_closing(padded, plain_structure("disk", radius))[radius + 1:-radius - 1,
                                                                                       radius + 1:-radius - 1]
    lesion = largest(filled(inside | band))
    return lesion, band & lesion


def test_cleanup_equals_the_plain_rules_on_a_real_lesion(require_shared):
    from moleseg.core.cleanup import cleanup
    from moleseg.core.targets import make_targets

    lesion = read_mask(require_shared("moles/ph2") / "masks" / "IMD004_lesion.png")
    labels = make_targets(lesion, border_width_px=10, shape="diamond")
    rng = np.random.default_rng(0)
    labels[rng.random(labels.shape) < 0.002] = 0  # pin holes
    labels[150:170, 90:110] = 1  # a stray blob beside the lesion
    on_frame = labels.copy()  # and one on the frame: the box the rules run on then reaches it
    on_frame[:12, -30:] = 2
    inside_only = labels * (labels == 2)  # no border class around: the box is the inside's own, grown only by the rule
    cases = [(3, CleanupSettings(rule="grow_inside", border_width_px=10, shape="diamond")),
             (3, CleanupSettings(rule="article", closing_radius_px=6)),
             (3, CleanupSettings(rule="grow_inside", border_width_px=4, shape="disk", fill_holes=False)),
             (2, CleanupSettings(border_width_px=3, shape="square", largest_component=False))]
    for predicted in (labels, on_frame, inside_only):
        for n_classes, settings in cases:
            classes = np.minimum(predicted, n_classes - 1)
            result = cleanup(classes, n_classes, settings)
            expected_lesion, expected_border = plain_cleanup(classes, n_classes, settings)
            np.testing.assert_array_equal(result.lesion, expected_lesion, err_msg=str(settings))
            np.testing.assert_array_equal(result.border, expected_border, err_msg=str(settings))


def test_packed_colours_of_an_image_equal_the_per_pixel_formula():
    image = np.random.default_rng(5).integers(0, 256, (7, 9, 3)).astype(np.uint8)
    wide = image.astype(np.int64)
    np.testing.assert_array_equal(packed_rgb(image), wide[..., 0] * 65536 + wide[..., 1] * 256 + wide[..., 2])
    np.testing.assert_array_equal(packed_rgb(image[1:5, 2:8]), packed_rgb(image)[1:5, 2:8])  # a window of it
    assert packed_rgb(np.zeros((0, 3), np.uint8)).shape == (0,)


def small_label_images(seed: int, count: int) -> list[tuple[np.ndarray, int]]:
    """``count`` tiny label images (1 to 24 px a side, 2 or 3 classes): empty, one labelled pixel, a block
    running to the frame's bottom-right corner, or scattered labels, in turn."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        height, width = (int(side) for side in rng.integers(1, 25, 2))
        n_classes = int(rng.choice([2, 3]))
        labels = np.zeros((height, width), np.int64)
        if index % 4 == 1:
            labels[rng.integers(height), rng.integers(width)] = rng.integers(1, n_classes)
        elif index % 4 == 2:
            labels[rng.integers(height):, rng.integers(width):] = rng.integers(1, n_classes)
        elif index % 4 == 3:
            labels = rng.integers(0, n_classes, (height, width)) * (rng.random((height, width)) < rng.random())
        images.append((labels, n_classes))
    return images


@pytest.mark.parametrize("seed", range(2))
def test_cleanup_on_the_labelled_box_equals_the_plain_rules_at_the_edges(seed):
    from moleseg.core.cleanup import cleanup

    rng = np.random.default_rng(100 + seed)
    for index, (labels, n_classes) in enumerate(small_label_images(seed, 120)):
        scattered = index % 4 == 3  # several components of equal size: the one kept depends on labelling order
        settings = CleanupSettings(rule=str(rng.choice(["grow_inside", "article"])),
                                   border_width_px=int(rng.integers(1, 5)),
                                   shape=str(rng.choice(["diamond", "disk", "square"])),
                                   closing_radius_px=int(rng.integers(0, 4)), fill_holes=bool(rng.random() < 0.7),
                                   largest_component=not scattered and bool(rng.random() < 0.7))
        result = cleanup(labels, n_classes, settings)
        expected_lesion, expected_border = plain_cleanup(labels, n_classes, settings)
        np.testing.assert_array_equal(result.lesion, expected_lesion, err_msg=f"{labels.tolist()} {settings}")
        np.testing.assert_array_equal(result.border, expected_border, err_msg=f"{labels.tolist()} {settings}")


def test_overlay_of_an_empty_and_a_one_pixel_lesion_equals_the_per_pixel_formula():
    image = np.random.default_rng(6).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    empty = np.zeros((5, 7), bool)
    assert np.array_equal(overlay(image, empty, empty), image)
    for row, col in [(0, 0), (4, 6), (2, 3)]:  # the frame's corners and the middle
        lesion = empty.copy()
        lesion[row, col] = True
        expected = reference_blend(image, lesion, (255, 0, 0), 0.8)
        np.testing.assert_array_equal(overlay(image, lesion, lesion, border_color=(255, 0, 0), border_opacity=0.8),
                                      expected)


def test_a_border_beyond_the_lesion_measures_as_the_border_clipped_to_it():
    rng = np.random.default_rng(7)
    for labels, _ in small_label_images(7, 40):
        lesion = labels > 0
        if not lesion.any():
            continue
        band = rng.random(lesion.shape) < 0.5
        assert (str(measurements_row(measure_lesion(lesion, border=band, pixel_size_mm=0.01)))
                == str(measurements_row(measure_lesion(lesion, border=band & lesion, pixel_size_mm=0.01))))


def plain_fractal_dimension(lesion: np.ndarray) -> float:
    """The box-counting dimension of the module docstring of :mod:`moleseg.core.measure`, each contour pixel's
    box listed: contour = lesion minus its erosion by a 3 x 3 cross (the frame counting as background)."""
    outline = lesion & ~ndimage.binary_erosion(lesion, ndimage.generate_binary_structure(2, 1), border_value=0)
    rows, cols = np.nonzero(outline)
    rows, cols = rows - rows.min(), cols - cols.min()
    extent = int(max(rows.max(), cols.max())) + 1
    sizes = [2**power for power in range(1, 20) if 2**power <= extent / 4]
    if len(sizes) < 2:
        return float("nan")
    counts = [np.unique((rows // size) * (extent // size + 1) + cols // size).size for size in sizes]
    return float(np.polyfit(np.log(1.0 / np.asarray(sizes, dtype=float)), np.log(np.asarray(counts, dtype=float)),
                            1)[0])


@pytest.mark.parametrize("seed", range(3))
def test_fractal_dimension_equals_listing_every_contour_pixels_box(seed):
    from moleseg.core.contourshape import fractal_dimension

    masks = [random_blobs(30 * seed + index, (70 + index, 90 - index)) for index in range(15)]
    masks += [np.ones((9, 15), bool), np.ones((64, 33), bool)]  # frame-filling: odd and even sides
    for mask in masks:
        expected = plain_fractal_dimension(mask)
        assert fractal_dimension(mask) == expected or np.isnan(expected) and np.isnan(fractal_dimension(mask))
    assert np.isnan(fractal_dimension(np.ones((9, 15), bool)))  # extent 15 < 4 * 2 * 2: one box size only
    assert fractal_dimension(np.ones((64, 33), bool)) == pytest.approx(
        np.polyfit(np.log([1 / 2, 1 / 4, 1 / 8, 1 / 16]), np.log([(32 + 17 - 2) * 2, 16 + 9 - 2 + 16 + 9 - 2,
                                                                    8 + 5 - 2 + 8 + 5 - 2, 4 + 3 - 2 + 4 + 3 - 2]),
                   1)[0], rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_hole_filling_and_largest_component_equal_scipy(seed):
    from moleseg.core.cleanup import fill_holes, keep_largest_component

    for index in range(15):
        mask = random_blobs(50 * seed + index, (60, 80))
        mask[rng_rows(seed, index)] = False  # a cut: several components
        np.testing.assert_array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))
        components, count = ndimage.label(mask, structure=np.ones((3, 3)))
        sizes = np.bincount(components.ravel())[1:]
        expected = mask if count <= 1 else components == 1 + int(np.argmax(sizes))
        np.testing.assert_array_equal(keep_largest_component(mask), expected)
    ring = np.zeros((9, 9), bool)
    ring[1:8, 1:8], ring[2:7, 2:7], ring[4, 4] = True, False, True  # an island in a hole: two components
    np.testing.assert_array_equal(keep_largest_component(ring), ring & ~(np.arange(81).reshape(9, 9) == 40))
    np.testing.assert_array_equal(fill_holes(ring), np.pad(np.ones((7, 7), bool), 1))


def rng_rows(seed: int, index: int) -> slice:
    """A band of rows to cut a mask of 60 rows with."""
    start = int(np.random.default_rng(1000 * seed + index).integers(5, 50))
    return slice(start, start + 2)


def layouts(mask: np.ndarray) -> list[np.ndarray]:
    """``mask`` as the fast paths may receive it: row-major, column-major, a strided window of a larger array,
    uint8 0/7 and float32 0/0.5."""
    strided = np.zeros((2 * mask.shape[0], 3 * mask.shape[1]), bool)
    strided[::2, ::3] = mask
    return [mask, np.asfortranarray(mask), strided[::2, ::3], mask.astype(np.uint8) * np.uint8(7),
            mask.astype(np.float32) * np.float32(0.5)]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), height=st.integers(1, 36), width=st.integers(1, 36),
       density=st.floats(0.0, 1.0))
def test_fast_paths_equal_the_plain_formulas_on_any_small_mask_and_layout(seed, height, width, density):
    from skimage.measure import perimeter_crofton

    from moleseg.core.cleanup import fill_holes, keep_largest_component
    from moleseg.core.contourshape import crofton_perimeter, fractal_dimension
    from moleseg.core.measure import ellipse_axes

    rng = np.random.default_rng(seed)
    mask = rng.random((height, width)) < density
    if seed % 2:  # one disk, often cut by the frame, for lesion-like outlines
        rows, cols = np.mgrid[:height, :width]
        centre = rng.integers(0, (height, width))
        mask = np.hypot(rows - centre[0], cols - centre[1]) < rng.integers(1, 30)
    components, count = ndimage.label(mask, structure=np.ones((3, 3)))
    sizes = np.bincount(components.ravel())[1:]
    filled = ndimage.binary_fill_holes(mask)
    plain_dimension = plain_fractal_dimension(mask) if mask.any() else float("nan")
    largest = keep_largest_component(mask)
    for layout in layouts(mask):
        np.testing.assert_array_equal(fill_holes(layout), filled)
        np.testing.assert_array_equal(keep_largest_component(layout), largest)  # ties: the same one, any layout
        assert crofton_perimeter(layout) == perimeter_crofton(mask, directions=4)
        dimension = fractal_dimension(layout)
        assert dimension == plain_dimension or np.isnan(dimension) and np.isnan(plain_dimension)
    if count <= 1:
        np.testing.assert_array_equal(largest, mask)
    else:
        kept = np.unique(components[largest])
        assert kept.size == 1 and kept[0] > 0 and np.array_equal(largest, components == kept[0])
        assert sizes[kept[0] - 1] == sizes.max()
    if mask.any():
        view = mask[::-1].T  # a strided, column-major view
        rows, cols = np.nonzero(view)
        row = measurements_row(measure_lesion(view))  # the pixels listed from the lesion's box, in row order
        assert (row["major_axis_px"], row["minor_axis_px"]) == ellipse_axes(rows - rows.min(), cols - cols.min())


def test_crofton_perimeter_counts_with_numpy_beyond_float32s_exact_counts(monkeypatch):
    from skimage.measure import perimeter_crofton

    from moleseg.core import contourshape

    monkeypatch.setattr(contourshape, "EXACT_FLOAT32_COUNT", 1)  # every mask takes the numpy count
    for mask in [random_blobs(seed, (30, 40)) for seed in range(3)] + [np.ones((3, 5), bool)]:
        assert contourshape.crofton_perimeter(mask) == perimeter_crofton(mask, directions=4)


def test_largest_component_ties_go_to_the_component_opencv_numbers_first():
    from moleseg.core.cleanup import keep_largest_component

    mask = np.zeros((5, 5), bool)
    mask[0, 4] = mask[1, 2] = mask[1, 3] = mask[2, 2] = True  # four pixels, the first in row order
    mask[1:5, 0] = True  # four pixels, numbered first: they start in the first pair of rows, left of the others
    mask[3:5, 4] = True  # two pixels
    expected = np.zeros((5, 5), bool)
    expected[1:5, 0] = True
    np.testing.assert_array_equal(keep_largest_component(mask), expected)


@pytest.mark.parametrize("seed", range(3))
def test_the_border_width_made_apart_equals_measuring_it_with_the_lesion(seed):
    lesion = random_blobs(seed)
    band = border_band(lesion, CleanupSettings(border_width_px=2 + seed, shape="disk"))
    band[::7] |= lesion[::7]  # a ragged band, partly beyond it
    whole = measurements_row(measure_lesion(lesion, border=band, pixel_size_mm=0.02))
    asked = []
    apart = measurements_row(measure_lesion(lesion, pixel_size_mm=0.02,
                                            border_width_px=lambda: asked.append(1) or border_width(lesion, band)))
    assert asked == [1]
    assert list(apart) == list(whole)
    np.testing.assert_equal(apart, whole)
    assert border_width(lesion, np.zeros_like(lesion)) == (0.0, 0.0)
    assert np.isnan(border_width(lesion, lesion)).all()  # no inside: undefined


def test_the_border_width_of_bad_masks_says_why():
    lesion = random_blobs(0)
    with pytest.raises(ValueError, match=r"border and lesion masks differ in size: \(10, 10\) vs \(120, 160\)"):
        border_width(lesion, np.zeros((10, 10), bool))
    with pytest.raises(ValueError, match="lesion mask is empty: the border width is undefined"):
        border_width(np.zeros_like(lesion), lesion)


#: Pixel values at the ends of each channel and beside them (a packed code's bytes at 0 and 255).
EDGE_LEVELS = st.sampled_from([0, 1, 127, 128, 254, 255])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.data())
def test_colours_of_tiny_lesions_of_edge_colours_equal_classifying_every_pixel(height, width, data):
    image = np.array(data.draw(st.lists(st.tuples(EDGE_LEVELS, EDGE_LEVELS, EDGE_LEVELS), min_size=height * width,
                                        max_size=height * width)), np.uint8).reshape(height, width, 3)
    lesion = np.array(data.draw(st.lists(st.booleans(), min_size=height * width, max_size=height * width)),
                      bool).reshape(height, width)
    lesion[data.draw(st.integers(0, height - 1)), data.draw(st.integers(0, width - 1))] = True  # never empty
    counts = np.bincount(classify_colours(image[lesion]), minlength=len(COLOUR_NAMES))
    shares = lesion_colours(image, lesion).shares
    assert [shares[name] for name in COLOUR_NAMES] == list(counts / lesion.sum())
    np.testing.assert_array_equal(unpacked_rgb(packed_rgb(image).reshape(-1)), image.reshape(-1, 3))


def test_an_image_of_one_colour_and_a_lesion_of_one_pixel_have_one_colour():
    white = np.full((5, 4, 3), 255, np.uint8)
    corner = np.zeros((5, 4), bool)
    corner[4, 3] = True
    result = lesion_colours(white, corner)
    assert result.present == ("white",) and result.shares["white"] == 1.0 and result.variegation == 0.0
    assert packed_rgb(white)[4, 3] == 2**24 - 1 and packed_rgb(np.zeros((1, 3), np.uint8))[0] == 0


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.data())
def test_asymmetry_counted_on_the_lesions_box_equals_counting_the_whole_canvas(height, width, data):
    import cv2

    from moleseg.core import measure

    lesion = np.array(data.draw(st.lists(st.booleans(), min_size=height * width, max_size=height * width)),
                      bool).reshape(height, width)
    lesion[data.draw(st.integers(0, height - 1)), data.draw(st.integers(0, width - 1))] = True  # never empty
    mirror_iou = measure._mirror_iou
    windows = []

    def on_both(canvas, area, centroid, direction, window):
        assert cv2.countNonZero(canvas[window]) == cv2.countNonZero(canvas) == area  # the mask is all in the box
        windows.append(window)
        whole = mirror_iou(canvas, area, centroid, direction, np.s_[:, :])
        assert mirror_iou(canvas, area, centroid, direction, window) == whole
        return whole

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(measure, "_mirror_iou", on_both)
        measure.asymmetry(lesion)
    assert len(windows) == 2


@pytest.mark.parametrize("seed", range(3))
def test_measurements_colours_and_overlay_on_the_lesion_box_given_equal_finding_it(seed):
    from moleseg.core.measure import colour_measurements
    from moleseg.core.targets import bounding_box

    image = np.random.default_rng(seed).integers(0, 256, (120, 160, 3)).astype(np.uint8)
    lesion = random_blobs(seed)
    border = lesion & ~ndimage.binary_erosion(lesion, iterations=3)
    box = bounding_box(lesion)
    assert measurements_row(measure_lesion(lesion, border=border, image=image, lesion_box=box)) == \
        measurements_row(measure_lesion(lesion, border=border, image=image))
    assert border_width(lesion, border, lesion_box=box) == border_width(lesion, border)
    assert colour_measurements(image, lesion, lesion_box=box) == colour_measurements(image, lesion)
    np.testing.assert_array_equal(overlay(image, lesion, border, box=box), overlay(image, lesion, border))
    np.testing.assert_array_equal(overlay(image, lesion, border, box=box, fill_opacity=0.0, border_opacity=0.0), image)


def test_growing_the_inside_by_no_width_equals_the_plain_rule():
    from moleseg.core.cleanup import cleanup

    for index, (labels, _) in enumerate(small_label_images(9, 16)):
        settings = CleanupSettings(rule="grow_inside", border_width_px=0, fill_holes=index % 2 == 0)
        result = cleanup(np.minimum(labels, 2), 3, settings)
        expected_lesion, expected_border = plain_cleanup(np.minimum(labels, 2), 3, settings)
        np.testing.assert_array_equal(result.lesion, expected_lesion, err_msg=str(labels.tolist()))
        np.testing.assert_array_equal(result.border, expected_border, err_msg=str(labels.tolist()))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("rows", [1, 2, LABEL_BAND_ROWS + 1])
def test_confidence_by_bands_of_any_float_width_and_few_rows_equals_the_whole_image_formula(dtype, rows):
    from moleseg.core.config import UNDECIDED_PROBABILITY_RANGE
    from moleseg.core.cleanup import CleanupSettings
    from moleseg.engine.segmenter import Segmentation

    rng = np.random.default_rng(rows)
    probabilities = rng.dirichlet((1.0, 1.0, 1.0), (rows, 7)).astype(dtype)
    probabilities[0, :3, 0] = [0.5, 0.25, 0.75]  # on the edge, likelier lesion, likelier background
    low, high = UNDECIDED_PROBABILITY_RANGE
    lesion_probability = 1.0 - probabilities[..., 0]
    undecided = np.count_nonzero((lesion_probability > low) & (lesion_probability < high))
    likelier = np.count_nonzero(probabilities[..., 0] < 0.5)
    labels = labels_from_probabilities(probabilities)
    segmentation = Segmentation(probabilities=probabilities, labels=labels, lesion=labels > 0,
                                border=labels == 1, inside=labels == 2, settings=CleanupSettings())
    assert segmentation.confidence == max(0.0, 1.0 - undecided / likelier)
    assert border_confidence(probabilities, labels > 0) == max(0.0, 1.0 - undecided / np.count_nonzero(labels))


class StartsSome(NeverStarts):
    """A drawer busy with other images' work that gets to some of the tasks only: those whose submission order is
    in ``started``, run at once; the others never start (the caller must take them back)."""

    def __init__(self, started: set[int]) -> None:
        self.started, self.queued = started, []

    def submit(self, fn, /, *args, **kwargs) -> Future:
        job = Future()
        if len(self.queued) in self.started:
            job.set_running_or_notify_cancel()
            job.set_result(fn(*args, **kwargs))
        self.queued.append(job)
        return job


def test_the_analysis_is_the_same_whichever_drawer_jobs_start_and_none_stays_queued(square_lesion):
    import itertools
    from concurrent.futures import ThreadPoolExecutor

    from moleseg.engine import pipeline

    image, segmenter, plain = square_lesion
    segmentation = with_inside(plain.segmentation)
    expected = pipeline.finish_analysis(image, segmentation, segmenter)
    row, jpeg = measurements_row(expected.measurements), expected.overlay_jpeg
    confidence = border_confidence(segmentation.probabilities, segmentation.lesion)
    drawers = [StartsSome(set(chosen)) for size in range(7) for chosen in itertools.combinations(range(6), size)]
    for drawer in [*drawers, ThreadPoolExecutor(max_workers=4)]:
        vars(segmentation).pop("confidence", None)
        with drawer:
            analysis = pipeline.measure_and_draw(image, segmentation, segmenter, drawer, shown=True)
        np.testing.assert_equal(measurements_row(analysis.measurements), row)
        np.testing.assert_array_equal(analysis.overlay, expected.overlay)
        assert analysis.overlay_jpeg == jpeg and "overlay_jpeg" in vars(analysis)
        assert vars(segmentation)["confidence"] == confidence  # made beside the drawing, before anyone asks
        if isinstance(drawer, StartsSome):  # the overlay, its JPEG, two distance transforms, colours, confidence
            assert len(drawer.queued) == 6 and all(job.done() for job in drawer.queued)
            assert [job.cancelled() for job in drawer.queued] == [index not in drawer.started for index in range(6)]
