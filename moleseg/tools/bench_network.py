"""The benchmark's network side: the roofline floor and the slowest layers of the network (costs and times from
:mod:`moleseg.network.profiling`), and the same network in other runtimes (see :mod:`moleseg.tools.bench`).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from moleseg.network.profiling import layer_cost, litert_function, median_seconds, per_layer_times
from moleseg.tools.bench_machine import BenchSettings

#: Layers listed in ``network.per_layer``.
TOP_LAYERS = 15


def bench_network(segmenter: Any, peak_gflops: float, bandwidth_gbps: float, settings: BenchSettings
                  ) -> dict[str, Any]:
    """Network FLOPs, batch-1 ms (folded and as loaded), roofline floor, top layers (see the module doc)."""
    from moleseg.network.inference import fold_batchnorm
    from moleseg.network.predict import prediction_function

    size = segmenter.input_size
    image = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype(np.float32)
    compiled = segmenter.inference_function()
    milliseconds = 1000.0 * median_seconds(lambda: np.asarray(compiled(image)), settings.repeats, settings.warmup)
    model = segmenter.model
    as_loaded = prediction_function(model)
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
        return litert_function(folded, size, threads)
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
