"""BatchNormalization whose training step runs TensorFlow's fused kernel.

Keras 3 normalises a batch with separate operations (``tf.nn.moments``, then ``tf.nn.batch_normalization``)
and differentiates each of them: on a CPU every one is a pass over the feature map, and in moleseg's
DeepLabV3+ on MobileNetV2 they took more than half of a training step (256², batch 8: 5.1 img/s with
them, 11.7 img/s with the BatchNormalization layers removed, same process). :class:`FusedBatchNormalization`
computes the same thing in training with ``FusedBatchNormV3`` and its fused gradient, and is Keras'
layer everywhere else: inference, masks, renormalisation, synchronised statistics, other backends (JAX),
and training under a strategy with several replicas (GPUs, workers).

Differences from Keras' layer in training, both far below float32 training noise: the fused kernel
clamps ``epsilon`` to at least 1.001e-5 (MobileNetV2 uses 1e-5), and it returns the batch variance with
Bessel's correction, which is undone (``* (n - 1) / n``) before the moving variance is updated, so the
moving statistics follow Keras' formula.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="moleseg")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """:class:`keras.layers.BatchNormalization` (same arguments, weights and inference) with a fused
    training step on the TensorFlow backend for 4-D channels-last inputs."""

    def _fused_applies(self, inputs, training, mask) -> bool:
        if not (bool(training) and self.trainable and mask is None and not self.renorm and not self.synchronized
                and keras.backend.backend() == "tensorflow" and len(inputs.shape) == 4 and self.axis in (-1, 3)):
            return False
        import tensorflow as tf

        # one replica only: under a multi-replica strategy Keras' own layer keeps its tested behaviour
        # (with the fused kernel, two workers' moving statistics drifted away from the batch statistics)
        replica = tf.distribute.get_replica_context()
        return replica is not None and replica.num_replicas_in_sync == 1

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        values = tf.cast(inputs, tf.float32)  # as Keras does: statistics in float32 whatever the policy
        channels = values.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones((channels,), tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros((channels,), tf.float32)
        outputs, mean, corrected_variance = tf.compat.v1.nn.fused_batch_norm(
            values, gamma, beta, epsilon=self.epsilon, is_training=True, data_format="NHWC")
        count = tf.cast(tf.size(values) // channels, tf.float32)
        # one value per channel (a 1x1 pooled map of a one-image batch): the biased variance is 0
        variance = tf.where(count > 1.0, corrected_variance * (count - 1.0) / tf.maximum(count, 1.0),
                            tf.zeros_like(corrected_variance))
        momentum = self.momentum
        self.moving_mean.assign(tf.cast(self.moving_mean, tf.float32) * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(tf.cast(self.moving_variance, tf.float32) * momentum + variance * (1.0 - momentum))
        return tf.cast(outputs, self.compute_dtype)
