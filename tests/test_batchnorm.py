"""FusedBatchNormalization (moleseg.network.batchnorm): Keras' BatchNormalization with TensorFlow's fused
kernel in training -- same outputs, gradients and moving statistics, the fused op really used, and
everything else (inference, saving, folding) Keras' own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from moleseg.network.batchnorm import FusedBatchNormalization  # noqa: E402
from moleseg.network.inference import foldable_pairs  # noqa: E402

SHAPE = (4, 9, 7, 5)


def pair_of_layers(epsilon: float):
    """A Keras BatchNormalization and a FusedBatchNormalization with the same (non-trivial) weights."""
    rng = np.random.default_rng(2)
    gamma, beta = rng.uniform(0.5, 1.5, SHAPE[-1]), rng.normal(0, 1, SHAPE[-1])
    layers = (keras.layers.BatchNormalization(momentum=0.9, epsilon=epsilon),
              FusedBatchNormalization(momentum=0.9, epsilon=epsilon))
    for layer in layers:
        layer.build(SHAPE)
        layer.gamma.assign(gamma.astype(np.float32))
        layer.beta.assign(beta.astype(np.float32))
    return layers


def op_types(layer, **kwargs) -> set[str]:
    function = tf.function(lambda x: layer(x, **kwargs)).get_concrete_function(tf.TensorSpec(SHAPE, tf.float32))
    return {operation.type for operation in function.graph.get_operations()}


@pytest.mark.parametrize("epsilon", [1e-3, 1e-5])
def test_training_step_equals_keras(epsilon):
    inputs = tf.constant(np.random.default_rng(0).normal(3.0, 2.0, SHAPE).astype(np.float32))
    upstream = tf.constant(np.random.default_rng(1).normal(0.0, 1.0, SHAPE).astype(np.float32))
    plain, fused = pair_of_layers(epsilon)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(inputs)
        outputs = [layer(inputs, training=True) for layer in (plain, fused)]
        losses = [tf.reduce_sum(output * upstream) for output in outputs]
    np.testing.assert_allclose(outputs[1], outputs[0], atol=5e-6)
    # normalised outputs have mean beta and standard deviation gamma per channel
    np.testing.assert_allclose(tf.reduce_mean(outputs[1], axis=(0, 1, 2)), plain.beta, atol=1e-5)
    np.testing.assert_allclose(tf.math.reduce_std(outputs[1], axis=(0, 1, 2)), plain.gamma, rtol=2e-3)
    for name in ("gamma", "beta"):
        np.testing.assert_allclose(tape.gradient(losses[1], getattr(fused, name)),
                                   tape.gradient(losses[0], getattr(plain, name)), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(tape.gradient(losses[1], inputs), tape.gradient(losses[0], inputs), atol=5e-6)
    # moving statistics: Keras' formula with the biased batch variance (Bessel's correction undone)
    values = inputs.numpy().reshape(-1, SHAPE[-1])
    np.testing.assert_allclose(fused.moving_mean, 0.1 * values.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(fused.moving_variance, 0.9 + 0.1 * values.var(axis=0), rtol=1e-5)
    np.testing.assert_allclose(fused.moving_variance, plain.moving_variance, rtol=1e-6)


def test_one_value_per_channel_keeps_the_moving_statistics_finite():
    # a one-image batch through a 1x1 map (the ASPP's pooled branch)
    inputs = tf.constant(np.random.default_rng(4).normal(0.0, 1.0, (1, 1, 1, 3)).astype(np.float32))
    plain, fused = keras.layers.BatchNormalization(), FusedBatchNormalization()
    for layer in (plain, fused):
        layer(inputs, training=True)
    assert np.isfinite(fused.moving_variance.numpy()).all()
    np.testing.assert_allclose(fused.moving_variance, plain.moving_variance, rtol=1e-6)  # 0.99 * 1 + 0.01 * 0
    np.testing.assert_allclose(fused.moving_mean, plain.moving_mean, rtol=1e-5, atol=1e-7)


REPLICAS_SCRIPT = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from moleseg.network.batchnorm import FusedBatchNormalization
for devices in (["/cpu:0"], ["/cpu:0", "/cpu:1"]):
    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        layer = FusedBatchNormalization()
        layer.build((2, 4, 4, 3))
    step = tf.function(lambda x: strategy.run(lambda y: layer(y, training=True), args=(x,)))
    graph = step.get_concrete_function(tf.TensorSpec((2, 4, 4, 3), tf.float32)).graph
    fused = "FusedBatchNormV3" in {operation.type for operation in graph.get_operations()}
    print(len(devices), "replicas:", "fused" if fused else "keras")
"""


@pytest.mark.slow
def test_several_replicas_use_keras_own_training_step():
    result = subprocess.run([sys.executable, "-c", REPLICAS_SCRIPT], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1], env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[:2] == ["1 replicas: fused", "2 replicas: keras"]


def test_the_fused_kernel_runs_in_training_only():
    _, fused = pair_of_layers(1e-3)
    assert "FusedBatchNormV3" in op_types(fused, training=True)
    assert "FusedBatchNormV3" not in op_types(fused, training=False)
    fused.trainable = False  # frozen (fine-tuning): Keras' inference behaviour
    assert "FusedBatchNormV3" not in op_types(fused, training=True)


def test_inference_saving_and_folding_are_keras_own(tmp_path):
    inputs = keras.Input((6, 6, 3))
    convolved = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inputs)
    model = keras.Model(inputs, FusedBatchNormalization(name="bn")(convolved))
    model.get_layer("bn").set_weights([np.full(4, 2.0), np.full(4, 0.5), np.full(4, 0.1), np.full(4, 4.0)])
    batch = np.random.default_rng(3).uniform(0, 1, (2, 6, 6, 3)).astype(np.float32)
    convolution = model.get_layer("conv")(batch).numpy()
    np.testing.assert_allclose(model(batch, training=False), 2.0 * (convolution - 0.1) / np.sqrt(4.0 + 1e-3) + 0.5,
                               rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded.get_layer("bn")) is FusedBatchNormalization
    np.testing.assert_array_equal(loaded(batch, training=False), model(batch, training=False))
    assert foldable_pairs(loaded) == {"bn": "conv"}
