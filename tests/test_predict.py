"""Tests of moleseg.network.predict (resize and tile inference, flips), of the lesion threshold in
moleseg.engine.segmenter and of the decision calibration in moleseg.engine.calibrate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moleseg.engine.calibrate import calibrate, calibrated_info
from moleseg.core.cleanup import CleanupSettings
from moleseg.core.imagewrite import write_png
from moleseg.core.pairing import Pair
from moleseg.core.modelinfo import ModelInfo
from moleseg.engine.segmenter import clean, labels_from_probabilities, model_threshold

# -- lesion threshold (no TensorFlow) --------------------------------------------------------------


def test_labels_without_threshold_are_the_argmax():
    probabilities = np.array([[[0.4, 0.35, 0.25], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3]]], np.float32)
    np.testing.assert_array_equal(labels_from_probabilities(probabilities), [[0, 2, 1]])


def test_three_class_threshold_by_hand():
    # lesion probabilities 1 - P(BACK): 0.6, 0.8, 0.9, 0.3
    probabilities = np.array([[[0.4, 0.35, 0.25], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3], [0.7, 0.1, 0.2]]], np.float32)
    np.testing.assert_array_equal(labels_from_probabilities(probabilities, 0.5), [[1, 2, 1, 0]])
    np.testing.assert_array_equal(labels_from_probabilities(probabilities, 0.85), [[0, 0, 1, 0]])
    np.testing.assert_array_equal(labels_from_probabilities(probabilities, 0.25), [[1, 2, 1, 2]])


def test_two_class_threshold_by_hand():
    foreground = np.array([[0.1, 0.3, 0.45, 0.5, 0.9]], np.float32)
    probabilities = np.stack([1 - foreground, foreground], axis=-1)
    np.testing.assert_array_equal(labels_from_probabilities(probabilities, 0.3), [[0, 1, 1, 1, 1]])
    np.testing.assert_array_equal(labels_from_probabilities(probabilities, 0.5), [[0, 0, 0, 1, 1]])
    with pytest.raises(ValueError, match="0..1"):
        labels_from_probabilities(probabilities, 1.5)


class FixedSegmenter:
    """Two classes, predicting given foreground probabilities; no cleanup beyond filling holes."""

    n_classes = 2
    class_names = ("background", "foreground")
    name = "fixed"

    def __init__(self, foregrounds: list[np.ndarray], info: dict | None = None) -> None:
        self.foregrounds = foregrounds
        self.info = info or {}
        self.cleanup_defaults = CleanupSettings(closing_radius_px=0, fill_holes=False, largest_component=False)
        self.calls = 0

    def predict_probabilities(self, images):
        self.calls += 1
        return [np.stack([1 - f, f], axis=-1).astype(np.float32) for f in self.foregrounds[:len(images)]]


def _ramp_case(tmp_path: Path, n: int = 3) -> tuple[list[Pair], list[np.ndarray]]:
    """Images whose true mask is where a left-to-right probability ramp reaches 0.3."""
    pairs, foregrounds = [], []
    for index in range(n):
        ramp = np.tile(np.linspace(0.0, 1.0, 40, dtype=np.float32), (30, 1))
        mask = ramp >= 0.3
        image_path, mask_path = tmp_path / f"{index}.png", tmp_path / f"{index}_mask.png"
        write_png(image_path, np.full((30, 40, 3), 128, np.uint8))
        write_png(mask_path, mask)
        pairs.append(Pair(image=image_path, mask=mask_path, rule="test", image_size=None, mask_size=None))
        foregrounds.append(ramp)
    return pairs, foregrounds


def test_clean_uses_the_model_threshold_unless_told_otherwise():
    foreground = np.tile(np.linspace(0.0, 1.0, 40, dtype=np.float32), (30, 1))
    segmenter = FixedSegmenter([foreground], {"lesion_threshold": 0.3})
    probabilities = segmenter.predict_probabilities([None])[0]
    assert clean(segmenter, probabilities).lesion.sum() == 30 * np.sum(foreground[0] >= 0.3)
    assert clean(segmenter, probabilities, lesion_threshold=None).lesion.sum() == 30 * np.sum(foreground[0] > 0.5)


class SlottedSegmenter:
    """A segmenter that cannot be weakly referenced."""

    __slots__ = ("info",)

    def __init__(self, info: dict) -> None:
        self.info = info


def test_the_model_record_is_parsed_once_per_info_dictionary(monkeypatch):
    parsed = []
    parse = ModelInfo.from_dict
    monkeypatch.setattr(ModelInfo, "from_dict", classmethod(lambda cls, values: parsed.append(values) or parse(values)))
    segmenter = FixedSegmenter([], {"lesion_threshold": 0.3})
    assert [model_threshold(segmenter) for _ in range(3)] == [0.3, 0.3, 0.3] and len(parsed) == 1
    segmenter.info = {"lesion_threshold": 0.5}  # another record: parsed again
    assert [model_threshold(segmenter) for _ in range(2)] == [0.5, 0.5] and len(parsed) == 2
    slotted = SlottedSegmenter({"lesion_threshold": 0.7})
    assert [model_threshold(slotted) for _ in range(2)] == [0.7, 0.7] and len(parsed) == 4


def test_calibration_finds_the_threshold_of_the_truth(tmp_path):
    pairs, foregrounds = _ramp_case(tmp_path)
    segmenter = FixedSegmenter(foregrounds)
    calibration = calibrate(segmenter, pairs, thresholds=(None, 0.3, 0.5, 0.7))
    assert calibration.lesion_threshold == 0.3
    assert calibration.fm == pytest.approx(1.0)
    # arg-max marks the 20 columns with p > 0.5 (i/39 > 0.5), the truth the 28 with p >= 0.3
    assert calibration.baseline_fm == pytest.approx(2 * 20 / (20 + 28), abs=1e-6)
    assert calibration.test_time_augmentation is False  # this segmenter has no flips to try
    assert segmenter.calls == 1  # one prediction, every threshold applied to it
    assert [row["lesion_threshold"] for row in calibration.table] == [None, 0.3, 0.5, 0.7]
    info = calibrated_info({"name": "m", "lesion_threshold": 0.9}, calibration)
    assert info["name"] == "m" and info["lesion_threshold"] == 0.3 and info["calibration"]["n_images"] == 3


def test_calibration_keeps_argmax_when_the_gain_is_below_min_gain(tmp_path):
    pairs, foregrounds = _ramp_case(tmp_path, n=1)
    calibration = calibrate(FixedSegmenter(foregrounds), pairs, thresholds=(None, 0.3), min_gain=1.0)
    assert calibration.lesion_threshold is None and calibration.fm == calibration.baseline_fm


def test_calibration_needs_pairs():
    with pytest.raises(ValueError, match="at least one"):
        calibrate(FixedSegmenter([]), [])


def test_predict_files_writes_in_input_order_and_reports_progress_up_to_the_end(tmp_path):
    from synthetic import lesion_dataset

    from moleseg.core.atomic import TEMPORARY_PREFIX
    from moleseg.core.classical import ClassicalSegmenter
    from moleseg.engine.predictfiles import predict_files

    images, _ = lesion_dataset(tmp_path / "set", n=7)
    files = sorted(images.iterdir())
    (images / "broken.png").write_bytes(b"not an image")
    files.insert(3, images / "broken.png")
    reported: list[int] = []
    outcome = predict_files(ClassicalSegmenter(), files, tmp_path / "out", batch_size=2, workers=3,
                            progress=reported.append)
    assert [row["image"] for row in outcome.rows] == [path.name for path in files if path.name != "broken.png"]
    assert [name for name, _ in outcome.failures] == ["broken.png"]
    assert reported == sorted(reported) and reported[-1] == len(files) and len(reported) == len(set(reported))
    assert len(list((tmp_path / "out").glob("*_overlay.png"))) == 7
    assert not list((tmp_path / "out").glob(TEMPORARY_PREFIX + "*"))


@pytest.mark.parametrize("n_classes", [3, 2])
def test_measuring_beside_drawing_gives_what_one_after_the_other_gives(tmp_path, n_classes):
    from concurrent.futures import ThreadPoolExecutor

    from synthetic import lesion_dataset

    from moleseg.core.classical import ClassicalSegmenter
    from moleseg.core.imageio import read_image
    from moleseg.engine.pipeline import finish_analysis, measure_and_draw
    from moleseg.engine.segmenter import segment

    images, _ = lesion_dataset(tmp_path / "set", n=1)
    image = read_image(next(images.iterdir()))
    segmenter = ClassicalSegmenter(n_classes=n_classes)
    segmentation = segment(segmenter, image)
    assert segmentation.lesion.any()
    expected = finish_analysis(image, segmentation, segmenter, pixel_size_mm=0.02)
    with ThreadPoolExecutor(max_workers=1) as drawer:
        analysis = measure_and_draw(image, segmentation, segmenter, drawer, pixel_size_mm=0.02)
    assert list(analysis.measurement_row) == list(expected.measurement_row) and analysis.measurement_row
    np.testing.assert_equal(list(analysis.measurement_row.values()), list(expected.measurement_row.values()))
    assert analysis.object_rows("a") == expected.object_rows("a")
    files = analysis.files("a")
    assert files == expected.files("a") and set(files) == {"a_overlay.png", "a_mask.png", "a_classes.png"}


def test_a_file_that_cannot_be_encoded_is_that_images_failure(tmp_path, monkeypatch):
    from synthetic import lesion_dataset

    from moleseg.core.classical import ClassicalSegmenter
    from moleseg.engine import pipeline
    from moleseg.engine.predictfiles import predict_files

    images, _ = lesion_dataset(tmp_path / "set", n=3)
    files = sorted(images.iterdir())
    encode = pipeline.encode_png
    class_maps = 0

    def fails_on_the_second_class_map(array, *args):
        nonlocal class_maps
        if array.dtype == np.uint8 and array.ndim == 2:  # the writer encodes the images in input order
            class_maps += 1
            if class_maps == 2:
                raise MemoryError("no memory left")
        return encode(array, *args)

    monkeypatch.setattr(pipeline, "encode_png", fails_on_the_second_class_map)
    outcome = predict_files(ClassicalSegmenter(), files, tmp_path / "out", batch_size=2, workers=2)
    assert outcome.failures == [(files[1].name, f"{files[1].name}: cannot encode its results (no memory left)")]
    assert [row["image"] for row in outcome.rows] == [files[0].name, files[2].name]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == sorted(
        f"{path.stem}_{kind}.png" for path in (files[0], files[2]) for kind in ("overlay", "mask", "classes"))


# -- Keras inference --------------------------------------------------------------------------------

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from moleseg.network.predict import KerasSegmenter, blend_window, tile_starts  # noqa: E402


@pytest.mark.parametrize("length, tile", [(1000, 256), (256, 256), (300, 256), (1024, 256), (100, 256)])
def test_tile_starts_cover_the_length_with_overlap(length, tile):
    starts = tile_starts(length, tile)
    assert starts[0] == 0
    assert starts[-1] == max(0, length - tile)
    assert all(b - a <= tile * 0.75 for a, b in zip(starts, starts[1:]))  # at least 25 % overlap
    assert starts == sorted(set(starts))


def test_blend_window_is_positive_and_peaks_inside():
    window = blend_window(64)
    assert window.shape == (64, 64) and window.min() > 0
    assert window[32, 32] == pytest.approx(window.max())
    assert window[0, 0] < window[0, 32] < window[32, 32]


def _pixelwise_model(n_classes: int) -> keras.Model:
    """A 1x1 convolution + softmax: each pixel's probabilities depend on that pixel only."""
    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Conv2D(n_classes, 1, activation="softmax", kernel_initializer="glorot_uniform",
                                  bias_initializer="zeros")(inputs / 255.0)
    model = keras.Model(inputs, outputs)
    model.layers[-1].set_weights([np.random.default_rng(0).normal(0, 3, (1, 1, 3, n_classes)).astype(np.float32),
                                  np.zeros(n_classes, np.float32)])
    return model


@pytest.mark.parametrize("height, width", [(300, 520), (90, 100), (64, 64)])
def test_tiled_inference_of_a_pixelwise_model_equals_the_whole_image(height, width):
    model = _pixelwise_model(2)
    image = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    segmenter = KerasSegmenter(model, {"n_classes": 2, "input_size": 64, "inference": "tiles"}, batch_size=4)
    tiled = segmenter.predict_probabilities([image])[0]
    whole = np.asarray(model(image[None].astype(np.float32)))[0]
    assert tiled.shape == (height, width, 2)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_tile_scale_predicts_the_enlarged_image_and_resizes_back():
    """With ``tile_scale`` 2 a model sees the image at twice its size: a per-pixel model's probabilities,
    resized back, equal those of the image itself away from the interpolated edges between regions."""
    model = _pixelwise_model(2)
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, :30] = (200, 40, 40)
    image[:, 30:] = (30, 60, 220)
    info = {"n_classes": 2, "input_size": 32, "inference": "tiles", "tile_scale": 2.0}
    segmenter = KerasSegmenter(model, info, batch_size=4)
    assert segmenter.tile_scale == 2.0
    seen: list[tuple[int, ...]] = []
    network = segmenter._network
    segmenter._network = lambda batch: (seen.append(batch.shape), network(batch))[1]
    scaled = segmenter.predict_probabilities([image])[0]
    assert scaled.shape == (40, 60, 2)
    # 80 x 120 px at the network: 3 x 5 tiles of 32 px (starts 0, 24, 48 and 0, 24, 48, 72, 88), not 2 x 3
    assert tile_starts(80, 32) == [0, 24, 48] and tile_starts(120, 32) == [0, 24, 48, 72, 88]
    assert sum(shape[0] for shape in seen) == 15
    whole = np.asarray(model(image[None].astype(np.float32)))[0]
    np.testing.assert_allclose(scaled[:, :28], whole[:, :28], atol=1e-5)
    np.testing.assert_allclose(scaled[:, 32:], whole[:, 32:], atol=1e-5)
    with pytest.raises(ValueError, match="tile scale must be a number"):
        KerasSegmenter(model, {**info, "tile_scale": 9.0})


def test_cleanup_sizes_follow_the_tile_scale():
    """A tiled model's cleanup defaults are in px of the image as the network saw it (enlarged by the tile
    scale); its probabilities come back at the image's own size, so the radii shrink by that factor. A
    resizing model's defaults scale with the image's longer side over the input size."""
    from moleseg.engine.segmenter import cleanup_for_image, cleanup_scale

    model = _pixelwise_model(3)
    tiled = KerasSegmenter(model, {"n_classes": 3, "input_size": 32, "inference": "tiles", "tile_scale": 2.0,
                                   "cleanup": {"closing_radius_px": 6, "border_width_px": 4}})
    assert cleanup_scale(tiled, (100, 80)) == 0.5
    settings = cleanup_for_image(tiled, (100, 80))
    assert (settings.closing_radius_px, settings.border_width_px) == (3, 2)
    plain = KerasSegmenter(model, {"n_classes": 3, "input_size": 32, "inference": "tiles",
                                   "cleanup": {"closing_radius_px": 6, "border_width_px": 4}})
    assert cleanup_for_image(plain, (100, 80)) is plain.cleanup_defaults
    resizing = KerasSegmenter(model, {"n_classes": 3, "input_size": 32, "cleanup": {"closing_radius_px": 6,
                                                                                  "border_width_px": 4}})
    assert cleanup_scale(resizing, (100, 80)) == 100 / 32
    assert cleanup_for_image(resizing, (100, 80)).closing_radius_px == round(6 * 100 / 32)


def test_colour_constancy_corrects_what_the_network_sees():
    from moleseg.core.constancy import shades_of_grey
    from moleseg.core.resize import resize_image

    model = _pixelwise_model(3)
    image = np.random.default_rng(4).integers(0, 200, (50, 70, 3)).astype(np.uint8)
    image[..., 2] //= 2  # a cast towards red and green
    info = {"n_classes": 3, "input_size": 32, "colour_constancy": "shades_of_grey"}
    segmenter = KerasSegmenter(model, info)
    seen = shades_of_grey(resize_image(image, 32))
    np.testing.assert_array_equal(segmenter.network_input(image), seen)
    expected = np.asarray(model(seen[None].astype(np.float32)))[0]
    small = segmenter.predict_network(seen[None].astype(np.float32))[0]
    np.testing.assert_allclose(small, expected, atol=1e-5)
    plain = KerasSegmenter(model, {**info, "colour_constancy": "none"})
    assert not np.allclose(plain.predict_probabilities([image])[0], segmenter.predict_probabilities([image])[0],
                           atol=1e-3)
    tiled = KerasSegmenter(_pixelwise_model(2), {"n_classes": 2, "input_size": 32, "inference": "tiles",
                                                 "colour_constancy": "shades_of_grey"})
    whole = np.asarray(tiled.model(shades_of_grey(image)[None].astype(np.float32)))[0]
    np.testing.assert_allclose(tiled.predict_probabilities([image])[0], whole, atol=1e-5)  # corrected whole
    with pytest.raises(ValueError, match="colour constancy must be one of"):
        KerasSegmenter(model, {**info, "colour_constancy": "sepia"})


def _position_model() -> keras.Model:
    """A 5x5 convolution: its output changes when the image is flipped."""
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Conv2D(3, 5, padding="same", activation="softmax")(inputs / 255.0)
    model = keras.Model(inputs, outputs)
    kernel = np.random.default_rng(2).normal(0, 2, (5, 5, 3, 3)).astype(np.float32)
    model.layers[-1].set_weights([kernel, np.zeros(3, np.float32)])
    return model


def test_flips_average_the_image_and_its_two_mirrors():
    model = _position_model()
    batch = np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3)).astype(np.float32)
    segmenter = KerasSegmenter(model, {"n_classes": 3, "input_size": 32}, test_time_augmentation=True)

    def run(x):
        return np.asarray(model(x))

    expected = (run(batch) + run(batch[:, :, ::-1])[:, :, ::-1] + run(batch[:, ::-1])[:, ::-1]) / 3.0
    flipped = segmenter.predict_network(batch)
    np.testing.assert_allclose(flipped, expected, atol=1e-5)
    assert not np.allclose(flipped, run(batch), atol=1e-3)  # the flips do change this model's answer
    np.testing.assert_allclose(flipped.sum(-1), 1.0, atol=1e-5)


def test_model_info_switches_flips_on_and_the_caller_can_override():
    model = _position_model()
    assert KerasSegmenter(model, {"n_classes": 3, "test_time_augmentation": True}).test_time_augmentation
    assert not KerasSegmenter(model, {"n_classes": 3, "test_time_augmentation": True},
                              test_time_augmentation=False).test_time_augmentation
    with pytest.raises(ValueError, match="inference mode"):
        KerasSegmenter(model, {"n_classes": 3, "inference": "mosaic"})


def test_decision_text_says_threshold_flips_and_where_they_came_from():
    from moleseg.app.models import decision_text

    assert decision_text({}) == "most likely class, no flips"
    info = {"lesion_threshold": 0.65, "test_time_augmentation": True,
            "calibration": {"fm": 0.94671, "baseline_fm": 0.94454, "n_images": 32}}
    assert decision_text(info) == ("lesion where its probability ≥ 0.65, with flip averaging (chosen on 32 "
                                   "validation images: FM 0.9467, arg-max without flips 0.9445)")
    crossval = {"lesion_threshold": None, "calibration": {"fm": 0.95, "baseline_fm": 0.95, "n_images": 210,
                                                          "method": "5-fold cross-validation, out of fold"}}
    assert decision_text(crossval) == ("most likely class, no flips (chosen on 210 validation images (5-fold "
                                       "cross-validation, out of fold): FM 0.9500, arg-max without flips 0.9500)")


def test_model_details_say_how_images_meet_the_network():
    from moleseg.app.models import ModelChoice, model_details

    choice = ModelChoice(spec="cells.keras", label="cells", kind="shipped", n_classes=2)
    base = {"name": "cells", "n_classes": 2, "input_size": 256, "model": {"architecture": "deeplabv3plus",
                                                                          "backbone": "mobilenetv2"}}

    def images_row(info: dict) -> list[str]:
        return [row["value"] for row in model_details(choice, info) if row["property"] == "images"]

    assert images_row({**base, "inference": "tiles", "tile_scale": 2.0}) == ["cut into 256 px tiles enlarged 2x"]
    assert images_row({**base, "inference": "tiles"}) == ["cut into 256 px tiles at their own size"]
    assert images_row({**base, "inference": "resize"}) == []
