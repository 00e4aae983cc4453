"""Tests of moleseg.network.inference (BatchNormalization folded for prediction) and of the
prediction function of moleseg.network.predict (one trace for every batch size)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import keras  # noqa: E402

from moleseg.network.build import ModelConfig, build_model  # noqa: E402
from moleseg.network.inference import fold_batchnorm, foldable_pairs  # noqa: E402
from moleseg.network.predict import KerasSegmenter  # noqa: E402

SIZE = 64


def _randomised_batchnorm(model: keras.Model, seed: int = 0) -> keras.Model:
    """``model`` with random BatchNormalization statistics and affine weights (fresh ones are 0/1: folding
    them would test nothing)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, channels).astype(np.float32),  # gamma
                               rng.normal(0, 0.3, channels).astype(np.float32),  # beta
                               rng.normal(0, 0.3, channels).astype(np.float32),  # moving mean
                               rng.uniform(0.3, 2.0, channels).astype(np.float32)])  # moving variance
    return model


@pytest.fixture(scope="module")
def network() -> keras.Model:
    # seeded: unseeded initial weights can leave the probabilities within 0.014 of 1/3, which the
    # folding test's "has teeth" check refuses (seed 0: 0.29 from 1/3; seeds 1 and 2: 0.12 and 0.21)
    keras.utils.set_random_seed(0)
    config = ModelConfig(backbone="mobilenetv2", input_size=SIZE, decoder_width=16, aspp_rates=(2, 4, 6))
    return _randomised_batchnorm(build_model(config, weights="none"))


@pytest.mark.slow
def test_folded_model_predicts_the_same_probabilities(network):
    images = np.random.default_rng(1).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
    before = network(images, training=False).numpy()
    folded = fold_batchnorm(network)
    after = folded(images, training=False).numpy()
    np.testing.assert_allclose(after, before, atol=1e-4)
    assert np.abs(before - 1 / 3).max() > 0.05  # the probabilities are not all alike: the check has teeth


def test_every_batchnorm_after_a_convolution_is_folded(network):
    batchnorms = [layer for layer in network.layers if isinstance(layer, keras.layers.BatchNormalization)]
    pairs = foldable_pairs(network)
    # MobileNetV2 and the DeepLabV3+ head put every BatchNormalization right after a convolution
    assert sorted(pairs) == sorted(layer.name for layer in batchnorms)
    folded = fold_batchnorm(network)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    assert all(folded.get_layer(name).use_bias for name in pairs.values())
    assert network.get_layer(next(iter(pairs.values()))).use_bias is False  # the original is unchanged


def test_a_convolution_feeding_two_layers_is_not_folded():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="shared")(inputs)
    y = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, keras.layers.Add()([x, y]))
    assert foldable_pairs(model) == {}
    _randomised_batchnorm(model)
    images = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(fold_batchnorm(model)(images).numpy(), model(images, training=False).numpy(),
                               atol=1e-5)


@pytest.mark.slow
def test_prediction_is_traced_once_for_every_batch_size(network):
    segmenter = KerasSegmenter(network, {"n_classes": 3, "input_size": SIZE}, test_time_augmentation=False)
    rng = np.random.default_rng(3)
    for count in (1, 3, 2):
        batch = rng.uniform(0, 255, (count, SIZE, SIZE, 3)).astype(np.float32)
        np.testing.assert_allclose(segmenter.predict_network(batch), network(batch, training=False).numpy(), atol=1e-4)
    assert segmenter.inference_function().experimental_get_tracing_count() == 1


@pytest.mark.slow
def test_the_live_prediction_function_follows_new_weights_without_a_new_trace():
    """Training's validation passes predict with one function for every epoch: after the weights change it
    gives the model's new probabilities, and it was traced once for all calls and batch sizes."""
    from moleseg.network.predict import prediction_function

    # ResNet18: half MobileNetV2's layers, traced in half the time (folding MobileNetV2 is tested above)
    config = ModelConfig(backbone="resnet18", input_size=32, decoder_width=16, aspp_rates=(2, 4, 6))
    model = build_model(config, weights="none")
    predict = prediction_function(model)
    images = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    first = predict(images).numpy()
    np.testing.assert_allclose(first, model(images, training=False).numpy(), atol=1e-5)
    _randomised_batchnorm(model, seed=3)
    second = predict(images[:1]).numpy()
    np.testing.assert_allclose(second, model(images[:1], training=False).numpy(), atol=1e-5)
    assert np.abs(second - first[:1]).max() > 1e-3  # the new weights changed what it predicts
    assert predict.experimental_get_tracing_count() == 1
