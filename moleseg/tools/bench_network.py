"""The benchmark's network side: FLOPs and bytes per layer, the roofline floor, per-layer times, and the same
network in other runtimes (see :mod:`moleseg.tools.bench`).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from moleseg.tools.bench_machine import BenchSettings, median_seconds

#: Layers listed in ``network.per_layer``.
TOP_LAYERS = 15


def _elements(shape: Any) -> int:
    return int(np.prod([d for d in tuple(shape)[1:] if d is not None]))


def _shapes(tensors: Any) -> list[tuple]:
    return [tuple(t.shape) for t in (tensors if isinstance(tensors, (list, tuple)) else [tensors])]


def layer_cost(layer: Any) -> tuple[float, float]:
    """``(FLOPs, bytes moved)`` of one call of a Keras layer on one image, from its input/output shapes.

    Convolutions and dense layers: 2 FLOPs per multiply-add, plus one per output for a bias;
    BatchNormalization, Normalization, Rescaling: 2 per element; ReLU: 1 (ReLU6: 2); Add: 1 per extra
    input element; bilinear resizing: 8 per output element; softmax: 5 per element; global pooling: 1 per
    input element; padding, concatenation: copies, no FLOPs. Bytes: float32 inputs + output + weights;
    none for layers that TensorFlow does not run (inputs, identities, dropout in inference).
    """
    import keras

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


def per_layer_times(model: Any, image: np.ndarray, repeats: int, warmup: int) -> dict[str, float]:
    """Median ms of each layer of a functional model called eagerly on its real inputs for ``image`` (each
    layer called once in the model; its arguments read from the model's public configuration)."""
    import keras

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


def bench_network(segmenter: Any, peak_gflops: float, bandwidth_gbps: float, settings: BenchSettings
                  ) -> dict[str, Any]:
    """Network FLOPs, batch-1 ms (folded and as loaded), roofline floor, top layers (see the module doc)."""
    import tensorflow as tf

    from moleseg.network.inference import fold_batchnorm

    size = segmenter.input_size
    image = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype(np.float32)
    compiled = segmenter.inference_function()
    milliseconds = 1000.0 * median_seconds(lambda: np.asarray(compiled(image)), settings.repeats, settings.warmup)
    model = segmenter.model
    as_loaded = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec(image.shape, tf.float32)])
    unfolded_ms = 1000.0 * median_seconds(lambda: as_loaded(image).numpy(), settings.repeats, settings.warmup)

    folded = fold_batchnorm(model)
    times = per_layer_times(folded, image, settings.repeats, settings.warmup)
    layers = []
    for layer in folded.layers:
        flops, moved = layer_cost(layer)
        floor_ms = 1000.0 * max(flops / (peak_gflops * 1e9), moved / (bandwidth_gbps * 1e9))
        layers.append({"name": layer.name, "type": type(layer).__name__, "ms": times.get(layer.name, 0.0),
                       "gflops": flops / 1e9, "mbytes": moved / 1e6, "floor_ms": floor_ms,
                       "bound": "compute" if flops / (peak_gflops * 1e9) >= moved / (bandwidth_gbps * 1e9) else "memory"})
    floor = sum(layer["floor_ms"] for layer in layers)
    ranked = sorted(layers, key=lambda layer: layer["ms"], reverse=True)[:TOP_LAYERS]
    for layer in ranked:
        layer["ratio_to_floor"] = layer["ms"] / layer["floor_ms"] if layer["floor_ms"] else None
    original_flops = sum(layer_cost(layer)[0] for layer in model.layers)
    return {
        "input_size": size, "gflops": sum(layer["gflops"] for layer in layers), "gflops_as_loaded": original_flops / 1e9,
        "mbytes": sum(layer["mbytes"] for layer in layers), "ms": milliseconds, "ms_unfolded": unfolded_ms,
        "roofline_floor_ms": floor, "ratio_to_floor": milliseconds / floor if floor else None,
        "per_layer_sum_ms": sum(times.values()), "per_layer": ranked,
    }


# ------------------------------------------------------------------------------------------------------
# the same network in other runtimes

#: Runtimes :func:`bench_runtimes` tries beside TensorFlow: name -> (modules it imports, how to install
#: them; None: a dependency of moleseg). Only ONNX Runtime is in ``requirements.txt``; the others are
#: optional and measured when installed.
OTHER_RUNTIMES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "onnxruntime": (("onnxruntime",), None),
    "openvino": (("openvino",), "pip install openvino"),
    "litert": (("ai_edge_litert",), "pip install ai-edge-litert"),
    "smp_pytorch_peer": (("segmentation_models_pytorch", "torch"), "pip install torch segmentation-models-pytorch"),
}


def runtime_function(name: str, folded: Any, onnx_path: Path, n_classes: int, size: int
                       ) -> Callable[[np.ndarray], np.ndarray]:
    """A ``(B, S, S, 3)`` float32 -> ``(B, S, S, C)`` function running the folded network in runtime ``name``
    (for ``smp_pytorch_peer``: segmentation_models_pytorch's DeepLabV3Plus(mobilenet_v2), random weights,
    NCHW, the peer the targets compare against -- its outputs are not ours)."""
    threads = os.cpu_count() or 1
    if name == "onnxruntime":  # as moleseg predicts with it
        from moleseg.network.compiled import onnx_session

        session = onnx_session(onnx_path)
        return lambda batch: session.run(None, {session.get_inputs()[0].name: batch})[0]
    if name == "openvino":
        import openvino

        core = openvino.Core()
        network = core.compile_model(core.read_model(str(onnx_path)), "CPU",
                                     {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
        return lambda batch: np.asarray(network(batch)[0])
    if name == "litert":
        import tensorflow as tf
        from ai_edge_litert.interpreter import Interpreter

        single = tf.function(lambda images: folded(images, training=False),
                             input_signature=[tf.TensorSpec((1, size, size, 3), tf.float32)])
        converter = tf.lite.TFLiteConverter.from_concrete_functions([single.get_concrete_function()], folded)
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
    if name == "smp_pytorch_peer":
        import segmentation_models_pytorch
        import torch

        torch.set_num_threads(threads)
        peer = segmentation_models_pytorch.DeepLabV3Plus("mobilenet_v2", encoder_weights=None, classes=n_classes).eval()

        def run_peer(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return peer(torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))).numpy()
        return run_peer
    raise ValueError(f"unknown runtime {name!r}")


def bench_runtimes(segmenter: Any, files: list[Path], scratch: Path, settings: BenchSettings) -> dict[str, Any]:
    """The folded network in TensorFlow and in each of :data:`OTHER_RUNTIMES` on the same real images
    (as the network gets them: :meth:`KerasSegmenter.network_input`): batch-1 median ms, ms per image at batch 8, and the largest probability
    difference from TensorFlow (the bar for adopting a runtime: 1e-4). A runtime that is not
    installed or fails gets ``{"missing": how to install}`` or ``{"error": ...}``."""
    from moleseg.core.imageio import read_image
    from moleseg.network.inference import fold_batchnorm
    from moleseg.network.onnx_export import largest_difference, onnx_bytes
    from moleseg.network.predict import prediction_function

    size = segmenter.input_size
    batch = np.stack([segmenter.network_input(read_image(path)) for path in (files * 8)[:8]]).astype(np.float32)
    folded = fold_batchnorm(segmenter.model)
    functions: dict[str, Callable[[np.ndarray], Any]] = {"tensorflow": prediction_function(folded)}
    rows: dict[str, Any] = {}
    onnx_path = scratch / "network.onnx"
    try:
        onnx_path.write_bytes(onnx_bytes(folded, (size, size, 3)))
    except Exception as error:  # noqa: BLE001 -- reported as the row, the other runtimes still run
        rows["onnxruntime"] = rows["openvino"] = {"error": f"ONNX conversion: {type(error).__name__}: {error}"}
    for name, (modules, install) in OTHER_RUNTIMES.items():
        if name in rows:
            continue
        if any(importlib.util.find_spec(module) is None for module in modules):
            rows[name] = {"missing": install or "reinstall moleseg's requirements"}
            continue
        try:
            functions[name] = runtime_function(name, folded, onnx_path, segmenter.n_classes, size)
        except Exception as error:  # noqa: BLE001 -- a runtime that cannot load this network is a result
            rows[name] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
    reference = np.asarray(functions["tensorflow"](batch))
    for name, function in functions.items():
        try:
            outputs = np.asarray(function(batch))
            single = 1000.0 * median_seconds(lambda: function(batch[:1]), settings.repeats, settings.warmup)
            eight = 1000.0 * median_seconds(lambda: function(batch), max(1, settings.repeats // 4), 1) / len(batch)
        except Exception as error:  # noqa: BLE001
            rows[name] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
            continue
        rows[name] = {"ms_batch1": single, "ms_per_image_batch8": eight,
                      "max_abs_difference": None if name == "smp_pytorch_peer" else largest_difference(outputs, reference)}
    return {"images": len(batch), "input_size": size, "rows": rows}
