"""``moleseg bench``: how close the machine, the network and the whole prediction path run to its limits.

One process, one run; every timing is the median of ``repeats`` calls after ``warmup`` untimed ones. The
JSON (see :func:`run_bench`) records the load average before and after, the CPU count and the share of
the CPU time other processes took during the run (``others_cpu_share``, from ``/proc/stat``): on a busy
machine every figure is inflated, so compare runs taken at a similar, low load.

What is measured
----------------
* ``matmul_gflops``: a dense float32 matrix product (TensorFlow, 2048 x 2048; quick: 256), the
  practical compute peak of this CPU; ``memory_gbps``: a STREAM-like copy of a 256 MiB float64 array
  with numpy (bytes read + written per second; quick: 8 MiB), the practical memory bandwidth.
* ``network``: the model as ``moleseg predict`` runs it (:meth:`KerasSegmenter.inference_function`:
  BatchNormalization folded, fixed input signature) at batch 1, and the model as loaded (``ms_unfolded``).
  FLOPs and bytes moved are counted per layer from the Keras layer shapes (convolution, depthwise,
  dense: 2 FLOPs per multiply-add; element-wise layers: their few FLOPs per element; bytes: float32
  inputs + outputs + weights). A layer's roofline floor is ``max(FLOPs / matmul peak, bytes / copy
  bandwidth)``; the network's floor is the sum over its layers. Per-layer time: each layer of the
  inference model is called on its real inputs (recorded from one forward pass), eagerly, as a median;
  TF 2.21's profiler needs the TensorBoard plugin to read its trace, and timing ~220 sub-models would
  trace ~220 graphs. An eager call adds ~0.1 ms of Python dispatch per layer, so ``per_layer_sum_ms``
  exceeds ``ms``; the ranking of the top layers is what to read.
* ``runtimes``: the folded network in TensorFlow, ONNX Runtime (what ``moleseg predict`` uses when its
  converted file matched TensorFlow: ``runtime``), and, when installed, OpenVINO (reading the same ONNX
  file), LiteRT (a TFLite conversion at batch 1) and the peer segmentation_models_pytorch
  DeepLabV3Plus(mobilenet_v2) at the same input size and thread count: batch-1 ms, ms per image at batch
  8, the largest probability difference from TensorFlow on the same real images.
* ``end_to_end_ms``: one 765 x 574 image file as ``moleseg predict`` analyses it: decode, resize,
  network, resize back, cleanup, then measurements beside the overlay and its PNGs (two threads), as
  ``stages`` {name: ms}; ``end_to_end.parts``: measurements, overlay and the overlay's PNG, one by one.
* ``predict_images_per_s``: a folder through :func:`moleseg.engine.pipeline.predict_files` (what
  ``moleseg predict`` calls), files written to a temporary folder; model loaded already.
* ``cold_start_s``: ``python -m moleseg.cli predict`` on one image in a new process, from its start to
  its exit after writing the result (quick: with the classical model, which needs no TensorFlow);
  ``cold_start_cached_graph``: whether the model's inference graph was in the per-machine cache (the
  benchmark's own prediction puts it there, as a user's first prediction does).
* ``train_images_per_s``: training steps of the model's architecture (its ``moleseg.json``) at 256 px,
  batch 8 (quick: its own size, batch 2), random weights and a synthetic batch; ``train`` also has the
  input pipeline's own rate on the benchmark's image files (with elliptical masks, the model's recorded
  augmentation), the rate of training fed by it, and the input-bound share of the step time.
* ``peak_rss_mib``: the maximum resident memory of this process (and of the cold-start child).

Without ``--images`` the images are synthetic dermoscopy-like pictures (the JSON says so).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

#: Size of the end-to-end and synthetic images (width, height): a PH2 image.
END_TO_END_SIZE: tuple[int, int] = (765, 574)
#: Layers listed in ``network.per_layer``.
TOP_LAYERS = 15
#: The issue's targets for the shipped dermoscopy model on a 2-core CPU: key -> (comparison, value).
TARGETS: dict[str, tuple[str, float]] = {
    "network.ratio_to_floor": ("<=", 2.0), "end_to_end_ms": ("<=", 45.0), "predict_images_per_s": (">=", 10.0),
    "cold_start_s": ("<=", 4.0), "train_images_per_s": (">=", 12.0),
}


@dataclass
class BenchSettings:
    """Sizes and repeat counts of one benchmark run (``quick()``: seconds, not representative)."""

    repeats: int = 10
    warmup: int = 2
    matmul_size: int = 2048
    copy_mib: int = 256
    train_size: int | None = 256  # None: the model's own input size
    train_batch: int = 8
    train_steps: int = 5
    predict_images: int = 24
    cold_start_model: str | None = None  # None: the benchmarked model
    quick: bool = False

    @classmethod
    def quick_settings(cls) -> "BenchSettings":
        return cls(repeats=2, warmup=1, matmul_size=256, copy_mib=8, train_size=None, train_batch=2, train_steps=2,
                   predict_images=3, cold_start_model="classical", quick=True)


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Maximum resident set size so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(who).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


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


#: Share of the machine's CPU time (0..1) that other processes may take during a run still called idle.
OTHERS_IDLE_SHARE = 0.1


def busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has been busy since boot (``/proc/stat``: all but idle and iowait,
    steal included); None where there is no ``/proc/stat``."""
    try:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds used by this process and its finished children (the cold-start runs)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def conditions() -> dict[str, Any]:
    """Load average (1, 5, 15 min), CPU count, and the CPU-time counters :func:`busy` compares now."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"load_average": [round(v, 2) for v in os.getloadavg()], "cpu_count": os.cpu_count(),
            "usable_cpus": usable, "wall_s": time.monotonic(), "machine_cpu_s": busy_cpu_seconds(),
            "own_cpu_s": own_cpu_seconds()}


def others_cpu_share(result: dict[str, Any]) -> float | None:
    """Share 0..1 of the machine's CPU time between the run's start and end that other processes used (the
    machine's busy time minus the benchmark's own); None when not measurable."""
    before, after = result["before"], result["after"]
    if before.get("machine_cpu_s") is None or after.get("machine_cpu_s") is None:
        return None
    capacity = (after["wall_s"] - before["wall_s"]) * (after["cpu_count"] or 1)
    others = (after["machine_cpu_s"] - before["machine_cpu_s"]) - (after["own_cpu_s"] - before["own_cpu_s"])
    return max(0.0, others / capacity) if capacity > 0 else None


# ------------------------------------------------------------------------------------------------------
# machine limits

def matmul_gflops(size: int, repeats: int, warmup: int) -> float:
    """Dense float32 ``size x size`` matrix product in TensorFlow, GFLOP/s (2 size^3 FLOPs)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = tf.constant(rng.standard_normal((size, size), np.float32))
    b = tf.constant(rng.standard_normal((size, size), np.float32))
    product = tf.function(lambda: tf.matmul(a, b))
    seconds = median_seconds(lambda: product().numpy(), repeats, warmup)
    return 2.0 * size**3 / seconds / 1e9


def memory_gbps(mebibytes: int, repeats: int, warmup: int) -> float:
    """STREAM-like copy ``b[:] = a`` of ``mebibytes`` MiB with numpy, GB/s counting bytes read + written."""
    source = np.random.default_rng(0).standard_normal(mebibytes * 2**20 // 8)
    target = np.empty_like(source)
    seconds = median_seconds(lambda: np.copyto(target, source), repeats, warmup)
    return 2.0 * source.nbytes / seconds / 1e9


# ------------------------------------------------------------------------------------------------------
# network: FLOPs and bytes per layer, roofline, per-layer time

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


def per_layer_times(model: Any, image: np.ndarray, repeats: int, warmup: int) -> dict[str, float]:
    """Median ms of each layer of a functional model called eagerly on its real inputs for ``image``."""
    import keras

    recorder = keras.Model(model.inputs, [layer.output for layer in model.layers])
    values = dict(zip((id(layer.output) for layer in model.layers), recorder(image, training=False)))
    times: dict[str, float] = {}
    for layer in model.layers:
        nodes = layer._inbound_nodes  # Keras 3: how the layer was called, its symbolic arguments
        if isinstance(layer, keras.layers.InputLayer) or len(nodes) != 1:
            continue
        args, kwargs = nodes[0].arguments.fill_in(values)
        kwargs = {k: v for k, v in kwargs.items() if k != "mask"}
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
    NCHW, the peer the issue compares against -- its outputs are not ours)."""
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
    difference from TensorFlow (the issue's bar for adopting a runtime: 1e-4). A runtime that is not
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


# ------------------------------------------------------------------------------------------------------
# images, end to end, predict, cold start, training

def synthetic_dermoscopy_image(width: int = END_TO_END_SIZE[0], height: int = END_TO_END_SIZE[1], seed: int = 1
                               ) -> np.ndarray:
    """A dark irregular lesion on pinkish skin with noise and a dark vignette, ``(height, width, 3)`` uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    cy, cx = height * rng.uniform(0.4, 0.6), width * rng.uniform(0.4, 0.6)
    angle = np.arctan2(yy - cy, xx - cx)
    radius = min(height, width) * (rng.uniform(0.2, 0.3) + 0.03 * np.sin(5 * angle + rng.uniform(0, 6)))
    lesion = np.hypot((yy - cy) * 1.1, xx - cx) < radius
    image = np.empty((height, width, 3), np.float32)
    image[:] = (215, 170, 160)
    image[lesion] = (110, 70, 55)
    image[np.hypot((yy - height / 2) / height, (xx - width / 2) / width) > 0.62] *= 0.15
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def image_files(folder: Path | None, count: int, scratch: Path) -> tuple[list[Path], str]:
    """``count`` image files: the first of ``folder`` (sorted), or synthetic 765 x 574 JPEGs written into
    ``scratch``; and a description of them."""
    from moleseg.core.pairing import list_images

    if folder is not None:
        files = list_images(folder)[:count]
        if not files:
            raise ValueError(f"{folder}: no images found")
        return files, f"{len(files)} real image(s) from {folder}"
    import cv2

    scratch.mkdir(parents=True, exist_ok=True)
    files = []
    for index in range(count):
        path = scratch / f"synthetic_{index:03d}.jpg"
        cv2.imwrite(str(path), synthetic_dermoscopy_image(seed=index)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
        files.append(path)
    return files, f"{count} synthetic {END_TO_END_SIZE[0]} x {END_TO_END_SIZE[1]} JPEG(s) (no --images given)"


def bench_end_to_end(segmenter: Any, path: Path, settings: BenchSettings) -> dict[str, Any]:
    """Median ms of each stage of one image file's analysis as ``moleseg predict`` runs it, and of their sum
    (repeat by repeat). After the cleanup, measuring and drawing + encoding the PNGs run side by side
    (:func:`moleseg.engine.pipeline.measure_and_encode`): stage ``measure_and_encode``; ``parts`` gives
    the medians of its parts run one after the other (``measurements``, ``overlay``, ``png_encode``)."""
    from concurrent.futures import ThreadPoolExecutor

    from moleseg.core.imageio import encode_png, read_image
    from moleseg.core.measure import measure_lesion
    from moleseg.core.render import overlay
    from moleseg.core.resize import resize_probabilities
    from moleseg.engine.pipeline import measure_and_encode
    from moleseg.engine.segmenter import clean

    def once(drawer: ThreadPoolExecutor) -> tuple[dict[str, float], dict[str, float]]:
        stages: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str, laps: dict[str, float]) -> None:
            nonlocal clock
            now = time.perf_counter()
            laps[name] = 1000.0 * (now - clock)
            clock = now

        image = read_image(path)
        lap("decode", stages)
        if segmenter.inference == "resize" and not segmenter.test_time_augmentation:
            batch = segmenter.network_input(image)[None].astype(np.float32)
            lap("resize_in", stages)
            small = segmenter.predict_network(batch)[0]
            lap("network", stages)
            probabilities = resize_probabilities(small, image.shape[0], image.shape[1])
            lap("resize_out", stages)
        else:
            probabilities = segmenter.predict_probabilities([image])[0]
            lap("network", stages)
        segmentation = clean(segmenter, probabilities)
        lap("cleanup", stages)
        measure_and_encode(image, segmentation, segmenter, path.stem, drawer)
        lap("measure_and_encode", stages)
        parts: dict[str, float] = {}
        if segmentation.lesion.any():
            measure_lesion(segmentation.lesion, border=segmentation.border, image=image)
        lap("measurements", parts)
        picture = overlay(image, segmentation.lesion, segmentation.border)
        lap("overlay", parts)
        encode_png(picture)
        lap("png_encode", parts)
        return stages, parts

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="moleseg-bench-draw") as drawer:
        for _ in range(settings.warmup):
            once(drawer)
        runs = [once(drawer) for _ in range(max(1, settings.repeats))]
    stages = [stage for stage, _ in runs]
    parts = [part for _, part in runs]
    return {"ms": float(np.median([sum(run.values()) for run in stages])),
            "stages": {name: float(np.median([run[name] for run in stages])) for name in stages[0]},
            "parts": {name: float(np.median([run[name] for run in parts])) for name in parts[0]},
            "image": str(path), "size": list(END_TO_END_SIZE)}


def bench_predict(segmenter: Any, files: list[Path], scratch: Path) -> dict[str, Any]:
    """Images per second of :func:`moleseg.engine.pipeline.predict_files` (one untimed warm-up image)."""
    from moleseg.engine.pipeline import predict_files

    predict_files(segmenter, files[:1], scratch / "warmup")
    started = time.perf_counter()
    outcome = predict_files(segmenter, files, scratch / "predict")
    seconds = time.perf_counter() - started
    if outcome.failures or outcome.stopped:
        raise RuntimeError(f"predict failed on the benchmark images: {outcome.failures or outcome.stopped}")
    return {"images": len(files), "seconds": seconds, "images_per_s": len(files) / seconds}


def cold_start_seconds(model: str, image: Path, scratch: Path) -> float:
    """Wall seconds of ``python -m moleseg.cli predict --model MODEL IMAGE`` in a new process."""
    package_root = str(Path(__file__).resolve().parents[2])
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "moleseg.cli", "predict", "--quiet", "--model", model, "--out",
               str(scratch / "cold"), str(image)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"cold start failed: {result.stderr.strip()[-300:]}")
    return seconds


def runtime_in_use(segmenter: Any) -> str:
    """The runtime ``moleseg predict`` ran the benchmarked network with: ``onnxruntime`` or ``tensorflow``."""
    return "onnxruntime" if hasattr(segmenter.inference_function(), "session") else "tensorflow"


def cached_inference_graph(model: str) -> bool:
    """True when ``model`` is a ``.keras`` file whose inference graph is in the per-machine cache
    (:mod:`moleseg.network.compiled`): its cold start then skips rebuilding the Keras model."""
    from moleseg.network.compiled import any_cached

    return Path(model).suffix == ".keras" and Path(model).is_file() and any_cached(model)


def training_pairs(files: list[Path], scratch: Path) -> list[Any]:
    """The benchmark's image files as training pairs, each with an elliptical lesion mask (PNG) written to
    ``scratch``: the input pipeline's cost does not depend on where the lesion is."""
    import cv2

    from moleseg.core.imageio import read_image, write_png
    from moleseg.core.pairing import Pair

    scratch.mkdir(parents=True, exist_ok=True)
    pairs = []
    for path in files:
        height, width = read_image(path).shape[:2]
        mask = np.zeros((height, width), np.uint8)
        cv2.ellipse(mask, (width // 2, height // 2), (width // 4, height // 3), 20.0, 0.0, 360.0, 255, -1)
        write_png(scratch / f"{path.stem}.png", mask)
        pairs.append(Pair(image=path, mask=scratch / f"{path.stem}.png", rule="same name"))
    return pairs


def bench_training(info: dict[str, Any], settings: BenchSettings, pairs: list[Any] | None = None) -> dict[str, Any]:
    """Training images/s of the model's architecture on a synthetic in-memory batch (median step after
    warm-up), and with ``pairs``: the input pipeline alone (``make_dataset`` as training builds it: lazy
    decoding, the augmentations the model records, at the default ranges) and training fed by it (``fit`` steps). The pipeline
    runs in parallel with the steps (prefetch), so ``input_bound_share`` = 1 - fed rate / in-memory rate
    is the share of step time lost to the input."""
    import keras

    from moleseg.network.build import ModelConfig, build_model
    from moleseg.core import options
    from moleseg.network.data import AugmentConfig, TargetConfig, make_dataset
    from moleseg.network.losses import SegmentationLoss

    config = ModelConfig.from_dict({**info.get("model", {}), "input_size": settings.train_size or info["input_size"]})
    model = build_model(config, weights="none")
    weights = [1.0] * config.n_classes
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=SegmentationLoss("weighted_ce", weights))
    rng = np.random.default_rng(0)
    size, batch = config.input_size, settings.train_batch
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    labels = np.eye(config.n_classes, dtype=np.float32)[rng.integers(0, config.n_classes, (batch, size, size))]
    seconds = median_seconds(lambda: model.train_on_batch(images, labels), settings.train_steps, settings.warmup)
    result = {"input_size": size, "batch": batch, "architecture": f"{config.architecture} {config.backbone}",
              "step_ms": 1000.0 * seconds, "images_per_s": batch / seconds}
    if not pairs:
        return result
    augment_names = info.get("training", {}).get("augment") or options.default("augment")
    augment = AugmentConfig.from_names(augment_names)
    targets = TargetConfig(input_size=size, n_classes=config.n_classes)
    steps = max(2, 2 * settings.train_steps)
    examples = steps * batch

    def feed() -> Any:
        return make_dataset(pairs, targets, batch_size=batch, augment=augment, shuffle=True, seed=1).repeat()

    iterator = iter(feed())
    next(iterator)  # warm-up: the pipeline's threads and first reads
    started = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    input_rate = examples / (time.perf_counter() - started)
    dataset = feed()
    model.fit(dataset, steps_per_epoch=settings.warmup + 1, epochs=1, verbose=0)
    started = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    fed_rate = examples / (time.perf_counter() - started)
    result.update(input_images_per_s=input_rate, fed_images_per_s=fed_rate,
                  input_bound_share=max(0.0, 1.0 - fed_rate / result["images_per_s"]),
                  augment=list(augment_names), pipeline_images=len(pairs))
    return result


# ------------------------------------------------------------------------------------------------------
# the whole run

def run_bench(model: str | Path, images: Path | None, settings: BenchSettings,
              echo: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Every measurement of ``moleseg bench`` as one JSON-ready dict (keys: see the module doc)."""
    import tensorflow as tf

    from moleseg.network.loading import load_segmenter

    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "model": str(model),
                              "settings": asdict(settings), "before": conditions()}
    result["machine"] = (f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
                         f"TensorFlow {tf.__version__}")
    echo("machine limits ...")
    result["matmul_gflops"] = matmul_gflops(settings.matmul_size, settings.repeats, settings.warmup)
    result["memory_gbps"] = memory_gbps(settings.copy_mib, settings.repeats, settings.warmup)
    echo("loading the model ...")
    segmenter = load_segmenter(model, test_time_augmentation=False)
    if not hasattr(segmenter, "inference_function"):
        raise ValueError(f"{model}: moleseg bench measures a .keras network, not {segmenter.name}")
    echo("network ...")
    result["network"] = bench_network(segmenter, result["matmul_gflops"], result["memory_gbps"], settings)
    with tempfile.TemporaryDirectory(prefix="moleseg-bench-") as folder:
        scratch = Path(folder)
        files, described = image_files(images, settings.predict_images, scratch / "images")
        result["images"] = described
        result["synthetic_images"] = images is None
        echo("runtimes ...")
        result["runtimes"] = bench_runtimes(segmenter, files, scratch, settings)
        result["runtime"] = runtime_in_use(segmenter)
        echo("end to end ...")
        result["end_to_end"] = bench_end_to_end(segmenter, files[0], settings)
        result["end_to_end_ms"] = result["end_to_end"]["ms"]
        result["stages"] = result["end_to_end"]["stages"]
        echo(f"predict on {len(files)} image(s) ...")
        result["predict"] = bench_predict(segmenter, files, scratch)
        result["predict_images_per_s"] = result["predict"]["images_per_s"]
        cold_model = settings.cold_start_model or str(model)
        echo(f"cold start ({Path(cold_model).name}) ...")
        result["cold_start_s"] = cold_start_seconds(cold_model, files[0], scratch)
        result["cold_start_model"] = cold_model
        result["cold_start_cached_graph"] = cached_inference_graph(cold_model)
        echo("training ...")
        result["train"] = bench_training(segmenter.info, settings, training_pairs(files, scratch / "masks"))
    result["train_images_per_s"] = result["train"]["images_per_s"]
    result["peak_rss_mib"] = peak_rss_mib()
    result["cold_start_peak_rss_mib"] = peak_rss_mib(resource.RUSAGE_CHILDREN)
    result["after"] = conditions()
    result["others_cpu_share"] = others_cpu_share(result)
    result["load_average"] = result["after"]["load_average"]
    result["cpu_count"] = result["after"]["cpu_count"]
    result["targets"] = target_verdicts(result)
    return result


def _lookup(result: dict[str, Any], key: str) -> Any:
    value: Any = result
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def busy(result: dict[str, Any]) -> bool:
    """True when timings are inflated by other work: the 1-minute load average before the run exceeded half
    the CPUs, or other processes took more than :data:`OTHERS_IDLE_SHARE` of the CPU time during it (the
    load average after the run counts the benchmark itself, so it is used only when the CPU counters
    are missing)."""
    cpus = result["after"]["cpu_count"] or 1
    others = others_cpu_share(result)
    if others is None:
        return max(result["before"]["load_average"][0], result["after"]["load_average"][0]) > 0.5 * cpus
    return result["before"]["load_average"][0] > 0.5 * cpus or others > OTHERS_IDLE_SHARE


def target_verdicts(result: dict[str, Any]) -> dict[str, str]:
    """``{key: "met" | "missed" | "not measured on an idle machine"}`` for :data:`TARGETS`."""
    verdicts = {}
    for key, (comparison, limit) in TARGETS.items():
        value = _lookup(result, key)
        if value is None:
            verdicts[key] = "not measured"
        elif busy(result) or result["settings"]["quick"]:
            verdicts[key] = "not measured on an idle machine" if not result["settings"]["quick"] else "quick run"
        else:
            verdicts[key] = "met" if (value <= limit if comparison == "<=" else value >= limit) else "missed"
    return verdicts


def format_report(result: dict[str, Any]) -> str:
    """The table ``moleseg bench`` prints."""
    network = result["network"]
    rows = [
        ("matmul_gflops", f"{result['matmul_gflops']:.1f}", "GFLOP/s", f"float32 {result['settings']['matmul_size']}²"),
        ("memory_gbps", f"{result['memory_gbps']:.1f}", "GB/s", "numpy copy, read + write"),
        ("network.gflops", f"{network['gflops']:.2f}", "GFLOP", f"per image at {network['input_size']}²"),
        ("network.ms", f"{network['ms']:.1f}", "ms", f"batch 1; as loaded (BN not folded) {network['ms_unfolded']:.1f}"),
        ("network.roofline_floor_ms", f"{network['roofline_floor_ms']:.1f}", "ms", "sum of per-layer floors"),
        ("network.ratio_to_floor", f"{network['ratio_to_floor']:.2f}", "x", ""),
        ("end_to_end_ms", f"{result['end_to_end_ms']:.1f}", "ms",
         ", ".join(f"{k} {v:.1f}" for k, v in result["stages"].items())
         + " (one by one: " + ", ".join(f"{k} {v:.1f}" for k, v in result["end_to_end"]["parts"].items()) + ")"),
        ("predict_images_per_s", f"{result['predict_images_per_s']:.2f}", "img/s", result["images"]),
        ("cold_start_s", f"{result['cold_start_s']:.2f}", "s", f"predict one image, {Path(result['cold_start_model']).name}"
         + (", cached inference graph" if result.get("cold_start_cached_graph") else "")),
        ("train_images_per_s", f"{result['train_images_per_s']:.2f}", "img/s",
         f"{result['train']['architecture']} {result['train']['input_size']}² batch {result['train']['batch']}"
         + (f"; input pipeline alone {result['train']['input_images_per_s']:.1f} img/s, training fed by it "
            f"{result['train']['fed_images_per_s']:.2f} img/s (input-bound share "
            f"{100 * result['train']['input_bound_share']:.0f} %)" if "input_images_per_s" in result["train"] else "")),
        ("peak_rss_mib", f"{result['peak_rss_mib']:.0f}", "MiB", f"cold-start child {result['cold_start_peak_rss_mib']:.0f}"),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"moleseg bench {result['date']}: {result['model']} on {result['machine']}",
             f"load average {result['before']['load_average']} before, {result['after']['load_average']} after, "
             f"{result['cpu_count']} CPUs; other processes took "
             + ("an unknown share" if result.get("others_cpu_share") is None else f"{100 * result['others_cpu_share']:.0f} %")
             + " of the CPU time" + ("  -- BUSY MACHINE: timings inflated" if busy(result) else "")]
    for name, value, unit, note in rows:
        verdict = result["targets"].get(name, "")
        target = TARGETS.get(name)
        goal = f"[target {target[0]} {target[1]:g}: {verdict}] " if target else ""
        lines.append(f"{name.ljust(widths[0])}  {value.rjust(widths[1])} {unit.ljust(widths[2])}  {goal}{note}")
    lines.append(f"runtimes (same {result['runtimes']['images']} images at {result['runtimes']['input_size']}²; "
                 f"predict uses {result['runtime']}): batch-1 ms, ms/image at batch 8, max |difference| from TF")
    for name, row in result["runtimes"]["rows"].items():
        if "ms_batch1" in row:
            difference = "-" if row["max_abs_difference"] is None else f"{row['max_abs_difference']:.1e}"
            lines.append(f"  {name:18s} {row['ms_batch1']:7.1f} {row['ms_per_image_batch8']:7.1f}  {difference}")
        else:
            lines.append(f"  {name:18s} {row.get('missing') and 'not installed: ' + row['missing'] or row.get('error')}")
    lines.append("top layers by time (ms, floor ms, bound):")
    for layer in network["per_layer"][:TOP_LAYERS]:
        lines.append(f"  {layer['name']:32s} {layer['type']:22s} {layer['ms']:7.2f} {layer['floor_ms']:7.3f} "
                     f"{layer['bound']}")
    if result["synthetic_images"]:
        lines.append("images: synthetic (no --images given)")
    return "\n".join(lines)
