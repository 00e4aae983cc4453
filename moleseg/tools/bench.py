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
  network, resize back, cleanup, measurements beside the overlay (two threads), then the three PNG files, as
  ``stages`` {name: ms}; ``end_to_end.parts``: measurements, overlay and the overlay's PNG, one by one;
  ``around_network_ratio``: every stage but decoding, the network and encoding the files over the network's
  stage; called met only when that stage's network ran within :data:`NETWORK_PHASE_TOLERANCE` of the fastest
  batch-1 time of the network in the run (a slow phase of the host slows the network more than the rest).
* ``predict_images_per_s``: a folder through :func:`moleseg.engine.predictfiles.predict_files` (what
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

import os
import platform
import resource
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from moleseg.core.words import count_of
from moleseg.network.profiling import backend_name, matmul_gflops
from moleseg.tools.bench_machine import BenchSettings, busy, conditions, memory_gbps, others_cpu_share, peak_rss_mib
from moleseg.tools.bench_network import TOP_LAYERS, bench_network, bench_runtimes
from moleseg.tools.bench_pipeline import (bench_end_to_end, bench_predict, bench_training, cached_inference_graph,
                                          cold_start_seconds, image_files, runtime_in_use, training_pairs)

#: The performance targets of the shipped dermoscopy model on a 2-core CPU (docs/performance.md): key -> (comparison, value).
TARGETS: dict[str, tuple[str, float]] = {
    "network.ratio_to_floor": ("<=", 2.0), "end_to_end_ms": ("<=", 45.0), "predict_images_per_s": (">=", 10.0),
    "cold_start_s": ("<=", 4.0), "train_images_per_s": (">=", 12.0), "around_network_ratio": ("<=", 0.5),
}
#: A target's verdict when the run has no figure for it.
NOT_MEASURED: str = "not measured"
#: A target's verdict when other processes took CPU time during the run (its figures are inflated).
NOT_IDLE: str = "not measured on an idle machine"
#: How much slower than the fastest batch-1 time of the network measured in the same run the end-to-end stage's
#: network may run for ``around_network_ratio`` to be called met: the host has phases lasting seconds in which the
#: network, the most memory-bound step, slows by half and the work around it by a tenth, which makes the ratio
#: look small (docs/performance.md, 2026-12-07 12:30).
NETWORK_PHASE_TOLERANCE: float = 1.2
#: The verdict of an ``around_network_ratio`` under its target while the end-to-end stage's network ran more than
#: :data:`NETWORK_PHASE_TOLERANCE` times slower than its fastest of the run (a missed target stays missed).
SLOW_NETWORK_PHASE: str = "not judged: the network ran in a slow phase of the host"
#: A target's verdict in a ``--quick`` run (smaller sizes than the targets assume).
QUICK_RUN: str = "quick run"



def run_bench(model: str | Path, images: Path | None, settings: BenchSettings,
              echo: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Every measurement of ``moleseg bench`` as one JSON-ready dict (keys: see the module doc)."""
    from moleseg.network.loading import load_segmenter

    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "model": str(model),
                              "settings": asdict(settings), "before": conditions()}
    result["machine"] = (f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
                         f"{backend_name()}")
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
        result["around_network_ratio"] = result["end_to_end"]["around_network_ratio"]
        echo(f"predict on {count_of(len(files), 'image')} ...")
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



def verdict(value: float | None, comparison: str, limit: float, *, quick: bool, busy_machine: bool) -> str:
    """One target's verdict: NOT_MEASURED without a ``value``, QUICK_RUN for a quick run, NOT_IDLE on a busy
    machine, else ``"met"`` or ``"missed"`` by ``comparison`` (``"<="`` or ``">="``) against ``limit``."""
    if value is None:
        return NOT_MEASURED
    if quick:
        return QUICK_RUN
    if busy_machine:
        return NOT_IDLE
    return "met" if (value <= limit if comparison == "<=" else value >= limit) else "missed"


def fastest_network_ms(result: dict[str, Any]) -> float | None:
    """The fastest batch-1 time (ms) of the network in the run: its own bench (``network.ms``), each runtime's
    batch-1 time and the end-to-end stage's network; None when none was measured."""
    times = [result.get("network", {}).get("ms"), result.get("end_to_end", {}).get("network_ms")]
    times += [row.get("ms_batch1") for row in result.get("runtimes", {}).get("rows", {}).values()]
    measured = [float(value) for value in times if isinstance(value, (int, float)) and value > 0]
    return min(measured) if measured else None


def slow_network_phase(result: dict[str, Any]) -> bool:
    """True when the end-to-end stage's network ran more than :data:`NETWORK_PHASE_TOLERANCE` times slower than
    :func:`fastest_network_ms`."""
    stage, fastest = result.get("end_to_end", {}).get("network_ms"), fastest_network_ms(result)
    return stage is not None and fastest is not None and stage > NETWORK_PHASE_TOLERANCE * fastest


def target_verdicts(result: dict[str, Any]) -> dict[str, str]:
    """``{key: "met" | "missed" | NOT_MEASURED | QUICK_RUN | NOT_IDLE | SLOW_NETWORK_PHASE}`` for :data:`TARGETS`."""
    quick, busy_machine = result["settings"]["quick"], busy(result)
    verdicts = {key: verdict(_lookup(result, key), comparison, limit, quick=quick, busy_machine=busy_machine)
                for key, (comparison, limit) in TARGETS.items()}
    if verdicts["around_network_ratio"] == "met" and slow_network_phase(result):
        verdicts["around_network_ratio"] = SLOW_NETWORK_PHASE
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
        ("around_network_ratio", f"{result['around_network_ratio']:.2f}", "x",
         f"around the network {result['end_to_end']['around_network_ms']:.1f} ms / network "
         f"{result['end_to_end']['network_ms']:.1f} ms (fastest of this run {fastest_network_ms(result):.1f} ms); "
         f"CPU around it {result['end_to_end']['around_network_cpu_ms']:.1f} ms"),
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
