"""Tests of moleseg.core.classical: the threshold baseline segmenter (synthetic and real images)."""

from __future__ import annotations


import numpy as np
import pytest

from moleseg.tools.synthetic import ellipse, synthetic_dermoscopy
from moleseg.core.classical import (
    ClassicalSegmenter,
    one_hot,
    otsu_threshold,
    segment_foreground,
    segment_lesion,
)
from moleseg.core.config import (
    BACK,
    BORDER,
    CLASS_NAMES_2,
    CLASS_NAMES_3,
    CLASSICAL_MODELS,
    CLASSICAL_NAMES,
    DEFAULT_BORDER_WIDTH_PX,
    INSIDE,
)


def f_measure(pred: np.ndarray, true: np.ndarray) -> float:
    """2 TP / (2 TP + FP + FN), 1.0 when both masks are empty."""
    tp = np.count_nonzero(pred & true)
    fp = np.count_nonzero(pred & ~true)
    fn = np.count_nonzero(~pred & true)
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


# --------------------------------------------------------------------------------------------------
# Synthetic images


def test_otsu_threshold_splits_two_groups():
    values = np.concatenate([np.full(100, 10.0), np.full(50, 200.0)])
    threshold = otsu_threshold(values)
    assert 10.0 <= threshold < 200.0
    assert otsu_threshold(np.full(7, 3.0)) == 3.0
    with pytest.raises(ValueError):
        otsu_threshold(np.array([]))


def test_dark_ellipse_with_vignette_is_found():
    image, truth = synthetic_dermoscopy()
    predicted = segment_lesion(image)
    assert predicted.shape == truth.shape and predicted.dtype == bool
    assert f_measure(predicted, truth) > 0.95


def test_lesion_touching_the_frame_is_kept():
    image, truth = synthetic_dermoscopy(shape=(400, 400), centre=(330, 200), axes=(120, 150))
    image[...] = np.where(truth[..., None], image, np.uint8(215))  # no vignette, lesion leaves the picture
    predicted = segment_lesion(image)
    assert f_measure(predicted, truth) > 0.95


def test_small_and_non_square_images_keep_their_size():
    image, truth = synthetic_dermoscopy(shape=(90, 61), centre=(45, 30), axes=(20, 14))
    predicted = segment_lesion(image)
    assert predicted.shape == (90, 61)
    assert f_measure(predicted, truth) > 0.85


def test_plain_image_gives_an_empty_lesion():
    image = np.full((120, 160, 3), 200, dtype=np.uint8)
    assert not segment_lesion(image).any()


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8),
                                 np.zeros((10, 10, 3), np.float32), np.zeros((0, 10, 3), np.uint8)])
def test_bad_images_are_refused(bad):
    with pytest.raises(ValueError):
        segment_lesion(bad)
    with pytest.raises(ValueError):
        ClassicalSegmenter(3).predict_probabilities([bad])


def test_segmenter_attributes():
    segmenter = ClassicalSegmenter()
    assert segmenter.name == "classical"
    assert segmenter.n_classes == 3
    assert segmenter.class_names == CLASS_NAMES_3 == ("back", "border", "inside")
    settings = segmenter.cleanup_defaults
    assert settings.rule == "article" and settings.largest_component
    assert settings.border_width_px == DEFAULT_BORDER_WIDTH_PX
    for key in ("name", "version", "description", "classes", "border_width_px"):
        assert key in segmenter.info
    two = ClassicalSegmenter(n_classes=2)
    assert two.n_classes == 2 and two.class_names == CLASS_NAMES_2
    assert not two.cleanup_defaults.largest_component
    with pytest.raises(ValueError):
        ClassicalSegmenter(n_classes=4)
    with pytest.raises(ValueError):
        ClassicalSegmenter(parameters={"no_such_parameter": 1})


def test_each_classical_name_loads_the_segmenter_that_carries_it():
    from moleseg.network.loading import load_segmenter

    assert CLASSICAL_MODELS == {3: "classical", 2: "classical2"}
    for n_classes, name in CLASSICAL_MODELS.items():
        segmenter = load_segmenter(name)
        assert (segmenter.name, segmenter.n_classes) == (name, n_classes)
    assert CLASSICAL_NAMES == {"classical": 3, "classical2": 2, "classical3": 3}
    assert load_segmenter("classical3").name == "classical"


def test_the_baseline_is_named_alike_on_the_chart_the_table_and_the_model_list(tmp_path):
    from moleseg.app import charts, evaluation, models

    figure = charts.fm_per_image([("a", 0.9)], baseline=[("a", 0.7)], model_name="net")
    assert [trace.name for trace in figure.data] == ["net", "classical baseline"]
    summary = {"fm": {"mean": 0.9, "std": 0.1, "min": 0.8, "max": 1.0}}
    assert "classical baseline mean" in evaluation.summary_rows(summary, summary)[0]
    labels = {choice.spec: choice.label for choice in models.model_choices(tmp_path, tmp_path)
              if choice.kind == "classical"}
    assert labels == {"classical": "classical baseline (dermoscopy, 3 classes, no network)",
                      "classical2": "classical baseline (cells, 2 classes, no network)"}


def test_predict_probabilities_shape_and_sum():
    first, _ = synthetic_dermoscopy()
    second, _ = synthetic_dermoscopy(shape=(200, 300), centre=(100, 150), axes=(50, 70), seed=1)
    segmenter = ClassicalSegmenter()
    probabilities = segmenter.predict_probabilities([first, second])
    assert [p.shape for p in probabilities] == [(480, 640, 3), (200, 300, 3)]
    for p in probabilities:
        assert p.dtype == np.float32
        np.testing.assert_allclose(p.sum(axis=-1), 1.0)
    labels = probabilities[0].argmax(-1)
    assert {BACK, BORDER, INSIDE} <= set(np.unique(labels).tolist())


def test_standard_cleanup_gives_the_lesion_back():
    from moleseg.core.cleanup import cleanup

    image, _ = synthetic_dermoscopy()
    segmenter = ClassicalSegmenter()
    lesion = segment_lesion(image)
    labels = segmenter.predict_probabilities([image])[0].argmax(-1).astype(np.uint8)
    cleaned = cleanup(labels, 3, segmenter.cleanup_defaults)
    assert f_measure(cleaned.lesion, lesion) > 0.99


def test_two_class_finds_minority_objects_of_either_polarity():
    truth = np.zeros((200, 240), dtype=bool)
    for centre in [(50, 50), (60, 170), (150, 90), (140, 190)]:
        truth |= ellipse(truth.shape, centre, (22, 18))
    rng = np.random.default_rng(3)
    dark_on_light = np.where(truth, 60.0, 200.0) + rng.normal(0, 8, truth.shape)
    for grey in (dark_on_light, 255 - dark_on_light):
        image = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        predicted = segment_foreground(image)
        assert f_measure(predicted, truth) > 0.95
    probabilities = ClassicalSegmenter(n_classes=2).predict_probabilities([image])[0]
    assert probabilities.shape == (200, 240, 2)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0)


def test_one_hot():
    labels = np.array([[0, 1], [2, 1]])
    encoded = one_hot(labels, 3)
    assert encoded.shape == (2, 2, 3) and encoded.dtype == np.float32
    np.testing.assert_array_equal(encoded.argmax(-1), labels)
    with pytest.raises(ValueError):
        one_hot(labels, 2)


# --------------------------------------------------------------------------------------------------
# Real data


def _mean_f_measure(images_dir, masks_dir, mask_name) -> tuple[float, int]:
    from moleseg.core.imageio import read_image, read_mask

    values = []
    for image_path in sorted(images_dir.iterdir()):
        image = read_image(image_path)
        truth = read_mask(masks_dir / mask_name(image_path))
        predicted = segment_lesion(image)
        assert predicted.shape == truth.shape
        values.append(f_measure(predicted, truth))
    return float(np.mean(values)), len(values)


def test_seed_test_mean_f_measure(require_shared):
    root = require_shared("moles/seed/test")
    mean, count = _mean_f_measure(root / "images", root / "masks", lambda path: path.name)
    assert count == 30
    assert mean >= 0.90, f"mean FM {mean:.4f} on moles/seed/test"


def test_ph2_mean_f_measure(require_shared):
    root = require_shared("moles/ph2")
    mean, count = _mean_f_measure(root / "images", root / "masks", lambda path: f"{path.stem}_lesion.png")
    assert count == 100
    assert mean >= 0.88, f"mean FM {mean:.4f} on moles/ph2"


def test_the_default_model_is_the_shipped_dermoscopy_model_else_the_baseline(tmp_path):
    from moleseg.core.config import CELLS_MODEL, DERMOSCOPY_MODEL, default_model_spec

    (tmp_path / CELLS_MODEL).write_bytes(b"PK")  # a shipped cells model is never a mole tool's default
    assert default_model_spec(tmp_path) == "classical"
    (tmp_path / DERMOSCOPY_MODEL).write_bytes(b"PK")
    assert default_model_spec(tmp_path) == str(tmp_path / "dermoscopy.keras")
