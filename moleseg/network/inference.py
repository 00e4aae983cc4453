"""Inference-only rewrites of a trained network that keep its outputs (within float32 round-off).

:func:`fold_batchnorm` returns a copy of a functional Keras model in which every BatchNormalization that
directly follows a convolution (``Conv2D``, ``DepthwiseConv2D`` or ``Dense``, whose output feeds nothing
else) is merged into that layer's kernel and bias, and ``Dropout`` is dropped. In inference a
BatchNormalization is ``y = gamma * (x - mean) / sqrt(var + eps) + beta``: a per-channel scale and
shift, which equals scaling the convolution's output channels and adding a bias. The folded network
does one pass over each feature map less per convolution: on a CPU these passes are memory-bound.
The copy is for prediction only: it has no BatchNormalization statistics left to train.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

#: Layers whose output channels a following BatchNormalization can be folded into.
FOLDABLE = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


class PassThrough(keras.layers.Layer):
    """Returns its input: stands in for a folded BatchNormalization or a Dropout (accepts their arguments)."""

    def call(self, inputs, training=None, mask=None):  # noqa: ARG002 -- same signature as the replaced layers
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def _histories(value: Any) -> list[str]:
    """The names of the layers whose outputs a serialised call argument holds (its ``keras_history``)."""
    if isinstance(value, dict):
        history = value.get("config", {}).get("keras_history") if value.get("class_name") == "__keras_tensor__" \
            else None
        if history:
            return [str(history[0])]
        return [name for item in value.values() for name in _histories(item)]
    if isinstance(value, (list, tuple)):
        return [name for item in value for name in _histories(item)]
    return []


def call_graph(model: keras.Model) -> tuple[dict[str, list[list[str]]], dict[str, int]]:
    """How the layers of a functional model are wired, read from its public configuration
    (``model.get_config()``): ``calls[name]`` lists each call of the layer with the layers whose outputs it
    takes, and ``consumers[name]`` counts the calls (and model outputs) that take that layer's output."""
    config = model.get_config()
    calls: dict[str, list[list[str]]] = {}
    consumers: dict[str, int] = {}
    for entry in config["layers"]:
        calls[entry["name"]] = [_histories(node) for node in entry.get("inbound_nodes", [])]
        for node in calls[entry["name"]]:
            for name in node:
                consumers[name] = consumers.get(name, 0) + 1
    outputs = config.get("output_layers") or []
    for output in [outputs] if outputs and isinstance(outputs[0], str) else outputs:  # [name, node, index] each
        consumers[output[0]] = consumers.get(output[0], 0) + 1
    return calls, consumers


def foldable_pairs(model: keras.Model) -> dict[str, str]:
    """``{batchnorm layer name: convolution layer name}`` of the pairs :func:`fold_batchnorm` merges.

    A pair qualifies when the BatchNormalization normalises the last axis, is called once with one input,
    the output of a Conv2D / DepthwiseConv2D / Dense layer without activation, called once, whose output
    feeds this BatchNormalization only.
    """
    calls, consumers = call_graph(model)
    pairs: dict[str, str] = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or layer.axis not in (-1, len(layer.input.shape) - 1):
            continue
        if len(calls.get(layer.name, [])) != 1 or len(calls[layer.name][0]) != 1:
            continue
        producer = model.get_layer(calls[layer.name][0][0])
        if (isinstance(producer, FOLDABLE) and len(calls.get(producer.name, [])) == 1
                and consumers.get(producer.name) == 1 and producer.activation is keras.activations.linear):
            pairs[layer.name] = producer.name
    return pairs


def _batchnorm_scale_shift(layer: keras.layers.BatchNormalization) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(scale, shift)`` with ``y = x * scale + shift`` in inference, float64."""
    mean = np.asarray(layer.moving_mean, np.float64)
    variance = np.asarray(layer.moving_variance, np.float64)
    gamma = np.asarray(layer.gamma, np.float64) if layer.scale else np.ones_like(mean)
    beta = np.asarray(layer.beta, np.float64) if layer.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(variance + layer.epsilon)
    return scale, beta - mean * scale


def _folded_weights(conv: keras.layers.Layer, batchnorm: keras.layers.BatchNormalization) -> list[np.ndarray]:
    """``[kernel, bias]`` of ``conv`` followed by ``batchnorm``, as float32."""
    scale, shift = _batchnorm_scale_shift(batchnorm)
    kernel = np.asarray(conv.kernel, np.float64)
    bias = np.asarray(conv.bias, np.float64) if conv.use_bias else np.zeros_like(scale)
    if isinstance(conv, keras.layers.DepthwiseConv2D):
        # kernel (kh, kw, in, multiplier): output channel c = in_channel * multiplier + m
        kh, kw, channels, multiplier = kernel.shape
        kernel = (kernel.reshape(kh, kw, channels * multiplier) * scale).reshape(kh, kw, channels, multiplier)
    else:  # Conv2D (kh, kw, in, out), Dense (in, out): output channels last
        kernel = kernel * scale
    return [kernel.astype(np.float32), (bias * scale + shift).astype(np.float32)]


def fold_batchnorm(model: keras.Model) -> keras.Model:
    """An equivalent inference model with BatchNormalization folded into the preceding convolutions.

    Parameters
    ----------
    model
        A functional Keras model (moleseg's DeepLabV3+; nested models are cloned as they are).

    Returns
    -------
    keras.Model
        Same inputs and outputs (``model(x, training=False)`` within float32 round-off, about 1e-6);
        ``model`` itself is not changed. Without a foldable pair, a copy with the same weights.
    """
    pairs = foldable_pairs(model)
    convolutions = set(pairs.values())

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer.name in pairs or isinstance(layer, keras.layers.Dropout):
            return PassThrough(name=layer.name)
        config = layer.get_config()
        if layer.name in convolutions:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    folded = keras.models.clone_model(model, clone_function=clone)
    batchnorm_of = {conv: bn for bn, conv in pairs.items()}
    for layer in folded.layers:
        if not layer.weights:  # inputs (renamed by the clone), activations, pass-throughs
            continue
        source = model.get_layer(layer.name)
        if layer.name in batchnorm_of:
            layer.set_weights(_folded_weights(source, model.get_layer(batchnorm_of[layer.name])))
        else:
            layer.set_weights(source.get_weights())
    return folded
