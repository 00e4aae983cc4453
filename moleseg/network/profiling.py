"""Timings and costs of a Keras network on this machine: the median timer, the practical compute peak, FLOPs
and bytes moved per layer (the roofline), per-layer times, and a LiteRT conversion to time beside TensorFlow.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from moleseg.core.trainconfig import ModelConfig
from moleseg.network.build import build_model
from moleseg.network.losses import SegmentationLoss

def backend_name() -> str:
    """The tensor library and its version, e.g. ``"TensorFlow 2.21.0"``."""
    return f"TensorFlow {tf.__version__}"


def median_seconds(function: Callable[[], object], repeats: int, warmup: int) -> float:
    """Median wall seconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def matmul_gflops(size: int, repeats: int, warmup: int) -> float:
    """Dense float32 ``size x size`` matrix product in TensorFlow, GFLOP/s (2 size^3 FLOPs)."""
    rng = np.random.default_rng(0)
    a = tf.constant(rng.standard_normal((size, size), np.float32))
    b = tf.constant(rng.standard_normal((size, size), np.float32))
    product = tf.function(lambda: tf.matmul(a, b))
    seconds = median_seconds(lambda: product().numpy(), repeats, warmup)
    return 2.0 * size**3 / seconds / 1e9


def _elements(shape: Any) -> int:
    return int(np.prod([d for d in tuple(shape)[1:] if d is not None]))


def _shapes(tensors: Any) -> list[tuple]:
    return [tuple(t.shape) for t in (tensors if isinstance(tensors, (list, tuple)) else [tensors])]


def layer_cost(layer: keras.layers.Layer) -> tuple[float, float]:
    """``(FLOPs, bytes moved)`` of one call of a Keras layer on one image, from its input/output shapes.

    Convolutions and dense layers: 2 FLOPs per multiply-add, plus one per output for a bias;
    BatchNormalization, Normalization, Rescaling: 2 per element; ReLU: 1 (ReLU6: 2); Add: 1 per extra
    input element; bilinear resizing: 8 per output element; softmax: 5 per element; global pooling: 1 per
    input element; padding, concatenation: copies, no FLOPs. Bytes: float32 inputs + output + weights;
    none for layers that TensorFlow does not run (inputs, identities, dropout in inference).
    """
    kind = type(layer).__name__
    if kind in ("InputLayer", "Identity", "Dropout", "PassThrough"):
        return 0.0, 0.0
    inputs = _shapes(layer.input)
    output = _elements(layer.output.shape)
    params = sum(int(np.prod(w.shape)) for w in layer.weights)
    moved = 4.0 * (sum(_elements(s) for s in inputs) + output + params)
    bias = output if getattr(layer, "use_bias", False) else 0
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        flops = 2.0 * output * kh * kw + bias
    elif isinstance(layer, keras.layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        channels = inputs[0][-1]
        flops = 2.0 * _elements(inputs[0]) * kh * kw + 2.0 * output * channels + bias
    elif isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        flops = 2.0 * output * kh * kw * inputs[0][-1] / layer.groups + bias
    elif isinstance(layer, keras.layers.Dense):
        flops = 2.0 * output * inputs[0][-1] + bias
    elif isinstance(layer, (keras.layers.BatchNormalization, keras.layers.Normalization, keras.layers.Rescaling)):
        flops = 2.0 * output
    elif isinstance(layer, keras.layers.ReLU):
        flops = (2.0 if layer.max_value is not None else 1.0) * output
    elif isinstance(layer, keras.layers.Add):
        flops = float(output * (len(inputs) - 1))
    elif isinstance(layer, (keras.layers.UpSampling2D, keras.layers.Resizing)):
        flops = 8.0 * output if layer.interpolation == "bilinear" else 0.0
    elif isinstance(layer, keras.layers.Activation):
        flops = 5.0 * output if "softmax" in str(layer.get_config().get("activation")) else float(output)
    elif isinstance(layer, (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)):
        flops = float(_elements(inputs[0]))
    else:  # padding, concatenation, reshapes: memory only
        flops = 0.0
    return flops, moved


def _filled(value: Any, outputs: dict[str, Any]) -> Any:
    """A serialised call argument (``model.get_config()``) with each Keras tensor in it replaced by the recorded
    output of the layer it comes from (its ``keras_history``: layer name, call, output index)."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            name, _, index = value["config"]["keras_history"]
            output = outputs[name]
            return output[index] if isinstance(output, (list, tuple)) else output
        return {key: _filled(item, outputs) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_filled(item, outputs) for item in value]
    return value


def per_layer_times(model: keras.Model, image: np.ndarray, repeats: int, warmup: int) -> dict[str, float]:
    """Median ms of each layer of a functional model called eagerly on its real inputs for ``image`` (each
    layer called once in the model; its arguments read from the model's public configuration)."""
    recorder = keras.Model(model.inputs, [layer.output for layer in model.layers])
    outputs = dict(zip((layer.name for layer in model.layers), recorder(image, training=False)))
    nodes = {entry["name"]: entry.get("inbound_nodes") or [] for entry in model.get_config()["layers"]}
    times: dict[str, float] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or len(nodes[layer.name]) != 1:
            continue
        node = nodes[layer.name][0]
        args = _filled(node.get("args", []), outputs)
        kwargs = {k: v for k, v in _filled(node.get("kwargs", {}), outputs).items() if k != "mask"}
        if "training" in inspect.signature(layer.call).parameters:
            kwargs["training"] = False
        call = lambda layer=layer, args=args, kwargs=kwargs: layer(*args, **kwargs)  # noqa: E731
        times[layer.name] = 1000.0 * median_seconds(call, repeats, warmup)
    return times


def litert_function(model: keras.Model, size: int, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """A ``(B, S, S, 3)`` float32 -> ``(B, S, S, C)`` function running ``model`` converted to LiteRT (TFLite) for
    batch 1 with ``threads`` threads, one image after another (needs the optional ``ai-edge-litert``)."""
    from ai_edge_litert.interpreter import Interpreter

    single = tf.function(lambda images: model(images, training=False),
                         input_signature=[tf.TensorSpec((1, size, size, 3), tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([single.get_concrete_function()], model)
    interpreter = Interpreter(model_content=converter.convert(), num_threads=threads)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]

    def run_litert(batch: np.ndarray) -> np.ndarray:
        outputs = []
        for image in batch:  # converted for batch 1
            interpreter.set_tensor(source, image[None])
            interpreter.invoke()
            outputs.append(interpreter.get_tensor(target)[0].copy())
        return np.stack(outputs)
    return run_litert


class _StepClock(keras.callbacks.Callback):
    """Wall seconds of each training step of a ``fit``, from its start to its end (``times``)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self.started = 0.0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.times.append(time.perf_counter() - self.started)


def step_seconds(model: keras.Model, images: np.ndarray, labels: np.ndarray, repeats: int, warmup: int) -> float:
    """Median wall seconds of a training step of ``model.fit`` on one in-memory batch (``images`` and
    one-hot ``labels``, float32), ``repeats`` steps timed after ``warmup`` untimed ones (the first traces the
    step). The batch is fed as a ``tf.data`` dataset whose batch dimension is unknown, as
    :func:`moleseg.network.data.make_dataset` yields its batches: a later ``fit`` on such a pipeline runs the
    step traced here instead of tracing it again."""
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(len(images)).cache().repeat()
    clock = _StepClock()
    model.fit(dataset, steps_per_epoch=warmup + max(1, repeats), epochs=1, verbose=0, callbacks=[clock])
    return float(np.median(clock.times[warmup:]))


def step_timing_model(config: ModelConfig, learning_rate: float = 1e-3) -> keras.Model:
    """The network of ``config`` with random weights, compiled with Adam at ``learning_rate`` (per step) and the
    class-weighted cross-entropy (all weights 1): a model whose ``fit`` steps cost what training's do."""
    model = build_model(config, weights="none")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=SegmentationLoss("weighted_ce", [1.0] * config.n_classes))
    return model
