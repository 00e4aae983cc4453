"""Loss values against hand-computed figures, and a Lovász-trained toy model whose loss falls."""

from __future__ import annotations

import os

os.environ.setdefault("SM_FRAMEWORK", "tf.keras")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from moleseg.core.options import LOSSES  # noqa: E402
from moleseg.network.losses import SegmentationLoss  # noqa: E402


def _one_image(classes: list[int], probabilities: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """A 1 x N image: one-hot targets and the given per-pixel probabilities, both ``(1, 1, N, C)``."""
    n_classes = len(probabilities[0])
    target = np.eye(n_classes, dtype=np.float32)[classes][None, None]
    return target, np.asarray(probabilities, dtype=np.float32)[None, None]


def _value(kind: str, target: np.ndarray, probabilities: np.ndarray, weights=None) -> np.ndarray:
    return np.asarray(SegmentationLoss(kind, weights).call(target, probabilities))


def test_lovasz_softmax_matches_the_hand_computed_extension():
    # two pixels, lesion then skin; P(lesion) 0.8 and 0.3.
    # lesion class: errors 0.2 (lesion px), 0.3 (skin px); sorted 0.3 (not lesion), 0.2 (lesion):
    #   Jaccard loss along that order 1 - 1/2 = 0.5, then 1 - 0/2 = 1 -> gradient 0.5, 0.5 -> 0.25
    # skin class: the same errors, sorted 0.3 (skin), 0.2 (not skin): Jaccard loss 1 - 0/1 = 1, then
    #   1 - 0/2 = 1 -> gradient 1, 0 -> 0.3; mean over the two classes present: 0.275
    target, probabilities = _one_image([1, 0], [[0.2, 0.8], [0.7, 0.3]])
    np.testing.assert_allclose(_value("lovasz", target, probabilities), [0.275], atol=1e-6)


def test_lovasz_is_zero_when_right_and_one_when_entirely_wrong():
    target, _ = _one_image([0, 1, 2, 2], [[1, 0, 0]] * 4)
    np.testing.assert_allclose(_value("lovasz", target, target), [0.0], atol=1e-7)
    wrong = target[..., [1, 2, 0]]  # every pixel one-hot on another class
    np.testing.assert_allclose(_value("lovasz", target, wrong), [1.0], atol=1e-6)


def test_lovasz_averages_only_the_classes_present_and_each_image_alone():
    # image 1 has no class 2: its loss is the mean over classes 0 and 1 only
    first, p_first = _one_image([1, 0], [[0.2, 0.8, 0.0], [0.7, 0.3, 0.0]])
    second, p_second = _one_image([2, 2], [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    values = _value("lovasz", np.concatenate([first, second]), np.concatenate([p_first, p_second]))
    np.testing.assert_allclose(values, [0.275, 0.0], atol=1e-6)


def test_lovasz_ce_adds_the_cross_entropy():
    target, probabilities = _one_image([1, 0], [[0.2, 0.8], [0.7, 0.3]])
    cross_entropy = -(np.log(0.8) + np.log(0.7)) / 2
    np.testing.assert_allclose(_value("ce", target, probabilities), [cross_entropy], rtol=1e-5)
    np.testing.assert_allclose(_value("lovasz_ce", target, probabilities), [0.275 + cross_entropy], rtol=1e-5)
    # with class weights 1 (skin) and 3 (lesion) the cross-entropy part is weighted per pixel
    weighted = -(3 * np.log(0.8) + np.log(0.7)) / 2
    np.testing.assert_allclose(_value("lovasz_ce", target, probabilities, [1.0, 3.0]), [0.275 + weighted], rtol=1e-5)


def test_dice_matches_the_hand_computed_value():
    target, probabilities = _one_image([1, 0], [[0.2, 0.8], [0.7, 0.3]])
    # skin: (2 * 0.7 + 1) / (1 + 0.9 + 1) = 2.4 / 2.9; lesion: (2 * 0.8 + 1) / (1 + 1.1 + 1) = 2.6 / 3.1
    expected = 1 - (2.4 / 2.9 + 2.6 / 3.1) / 2
    np.testing.assert_allclose(_value("dice", target, probabilities), [expected], rtol=1e-5)


def test_every_kind_is_named_and_an_unknown_one_is_refused():
    assert {"lovasz", "lovasz_ce"} <= set(LOSSES)
    with pytest.raises(ValueError, match="unknown loss 'iou'"):
        SegmentationLoss("iou")


@pytest.mark.slow
def test_a_toy_model_trained_with_lovasz_learns_the_lesion():
    # a 1x1 convolution on a 16 x 16 image whose bright pixels are the lesion: the loss falls and the
    # arg-max marks the bright square (seeded: the same start on every run)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    image = rng.uniform(0.0, 0.3, (4, 16, 16, 1)).astype(np.float32)
    image[:, 4:12, 4:12] += 0.6
    target = np.eye(2, dtype=np.float32)[(image[..., 0] > 0.45).astype(int)]
    inputs = keras.Input((16, 16, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, activation="softmax")(inputs))
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss=SegmentationLoss("lovasz"))
    history = model.fit(image, target, epochs=60, batch_size=4, verbose=0).history["loss"]
    assert history[-1] < 0.3 * history[0], history
    predicted = model.predict(image, verbose=0).argmax(-1)
    np.testing.assert_array_equal(predicted, target.argmax(-1))
