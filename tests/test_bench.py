"""``moleseg bench --quick`` on a tiny network built on the fly: every JSON key, values that make sense,
and the cost counting of moleseg.tools.bench_network checked by hand."""

from __future__ import annotations

import contextlib
import io
import json
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import keras  # noqa: E402

from moleseg.cli import main  # noqa: E402
from moleseg.network.build import ModelConfig, build_model  # noqa: E402
from moleseg.network.io import save_model  # noqa: E402
from moleseg.network.onnx_export import ONNX_TOLERANCE  # noqa: E402
from moleseg.network.profiling import layer_cost  # noqa: E402
from moleseg.tools.bench_network import TOP_LAYERS  # noqa: E402

SIZE = 32


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    # ResNet18: half MobileNetV2's layers, so its graphs (folded, ONNX, training step) are traced in half the time
    config = ModelConfig(backbone="resnet18", input_size=SIZE, decoder_width=8, aspp_rates=(1, 2, 3))
    path = tmp_path_factory.mktemp("bench") / "tiny.keras"
    save_model(build_model(config, weights="none"), path,
               {"name": "tiny", "n_classes": 3, "input_size": SIZE, "model": config.to_dict(),
                # cleanup radii are in px of the input size: scaled 24x for a 765 px image, keep them small
                "cleanup": {"closing_radius_px": 0, "border_width_px": 1}})
    return path


@pytest.fixture(scope="module")
def quick_run(tiny_model, tmp_path_factory):
    """One ``moleseg bench --quick`` on four small image files: (JSON result, printed table, image folder)."""
    from moleseg.core.imagewrite import write_png
    from moleseg.tools.synthetic import random_dermoscopy

    folder = tmp_path_factory.mktemp("images")
    for index in range(4):
        write_png(folder / f"{index}.png", random_dermoscopy((72, 96), seed=index)[0])
    report = folder.parent / "bench.json"
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        code = main(["bench", "--quick", "--quiet", "--model", str(tiny_model), "--images", str(folder),
                     "--json", str(report)])
    assert code == 0
    return json.loads(report.read_text()), capture.getvalue(), folder


@pytest.mark.slow
def test_quick_bench_writes_every_key_with_sane_values(quick_run):
    result, out, folder = quick_run
    for key in ("matmul_gflops", "memory_gbps", "end_to_end_ms", "predict_images_per_s", "cold_start_s",
                "train_images_per_s", "peak_rss_mib"):
        assert result[key] > 0, key
    network = result["network"]
    assert 0 < network["roofline_floor_ms"] and network["gflops"] > 0 and network["ms"] > 0
    assert network["ratio_to_floor"] == pytest.approx(network["ms"] / network["roofline_floor_ms"])
    assert len(network["per_layer"]) == TOP_LAYERS
    times = [layer["ms"] for layer in network["per_layer"]]
    assert times == sorted(times, reverse=True)
    assert all(layer["floor_ms"] >= 0 and layer["bound"] in ("compute", "memory") for layer in network["per_layer"])
    # folding BatchNormalization removes its FLOPs: fewer than the model as loaded
    assert network["gflops"] < network["gflops_as_loaded"]
    assert set(result["stages"]) == {"decode", "resize_in", "network", "resize_out", "cleanup", "measure_and_draw",
                                     "encode_files"}
    assert set(result["end_to_end"]["parts"]) == {"measurements", "overlay", "png_encode", "jpeg_encode"}
    assert result["end_to_end"]["around_network_stages"] == ["resize_in", "resize_out", "cleanup", "measure_and_draw"]
    assert set(result["end_to_end"]["cpu_stages"]) == set(result["stages"])
    assert result["end_to_end"]["around_network_cpu_ms"] > 0 and min(result["end_to_end"]["cpu_stages"].values()) >= 0
    # the same network in ONNX Runtime gives TensorFlow's probabilities; the optional runtimes are reported
    rows = result["runtimes"]["rows"]
    assert rows["tensorflow"]["max_abs_difference"] == 0.0
    assert rows["onnxruntime"]["max_abs_difference"] <= ONNX_TOLERANCE and rows["onnxruntime"]["ms_batch1"] > 0
    assert set(rows) == {"tensorflow", "onnxruntime", "openvino", "litert", "smp_pytorch_peer"}
    assert result["runtime"] == "tensorflow"  # the test suite turns the inference cache (and its ONNX files) off
    assert "onnxruntime" in out and "max |difference| from TF" in out
    assert result["end_to_end_ms"] == pytest.approx(result["end_to_end"]["ms"])
    assert result["synthetic_images"] is False and str(folder) in result["images"]
    assert result["predict"]["images"] == 3  # the quick run's count, the first files of the folder
    assert result["train"]["input_size"] == SIZE and result["train"]["batch"] == 2
    # the input pipeline on the three image files (with elliptical masks) and training fed by it
    train = result["train"]
    assert train["pipeline_images"] == 3 and train["input_images_per_s"] > 0 and train["fed_images_per_s"] > 0
    assert 0.0 <= train["input_bound_share"] <= 1.0 and "input-bound share" in out
    assert len(result["load_average"]) == 3 and result["cpu_count"] >= 1 and 0.0 <= result["others_cpu_share"] <= 1.0
    assert set(result["targets"].values()) == {"quick run"}
    assert "network.ratio_to_floor" in out and "top layers by time" in out and "synthetic" not in out


def test_without_images_the_bench_writes_synthetic_ones_and_says_so(tmp_path):
    from moleseg.core.imageio import read_image
    from moleseg.tools.bench_pipeline import END_TO_END_SIZE, image_files

    files, described = image_files(None, 2, tmp_path)
    assert "synthetic" in described and len(files) == 2
    image = read_image(files[1])
    assert image.shape == (END_TO_END_SIZE[1], END_TO_END_SIZE[0], 3)
    assert not np.array_equal(image, read_image(files[0]))  # two different pictures


def test_layer_costs_by_hand():
    inputs = keras.Input((10, 10, 4))
    conv = keras.layers.Conv2D(6, 3, padding="same", use_bias=False)
    depthwise = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=True)
    relu = keras.layers.ReLU(6.0)
    keras.Model(inputs, relu(depthwise(conv(inputs))))
    # conv: 10*10*6 outputs x 3*3*4 multiply-adds x 2; bytes: (400 in + 600 out + 216 weights) x 4
    assert layer_cost(conv) == (2.0 * 600 * 36, 4.0 * (400 + 600 + 216))
    # depthwise: 600 outputs x 9 multiply-adds x 2 + 600 bias adds; weights 54 + 6
    assert layer_cost(depthwise) == (2.0 * 600 * 9 + 600, 4.0 * (600 + 600 + 60))
    assert layer_cost(relu) == (2.0 * 600, 4.0 * 1200)


def test_bench_refuses_the_classical_model(capsys):
    assert main(["bench", "--quick", "--model", "classical"]) == 2
    assert "measures a network" in capsys.readouterr().err


def test_help_and_numpy_commands_never_import_tensorflow(tmp_path):
    """``moleseg --help``, ``bench --help`` and ``score`` run without TensorFlow or Keras."""
    import subprocess

    from moleseg.core.imagewrite import write_png

    for folder in ("pred", "masks"):
        (tmp_path / folder).mkdir()
        write_png(tmp_path / folder / "a.png", np.pad(np.full((8, 8), 255, np.uint8), 8))
    code = (
        "import sys\n"
        "from moleseg.cli import main\n"
        "for argv in (['--help'], ['bench', '--help'], ['predict', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"assert main(['score', '--pred', {str(tmp_path / 'pred')!r}, '--masks', {str(tmp_path / 'masks')!r}]) == 0\n"
        "print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout


def test_busy_counts_other_processes_cpu_not_the_benchmarks_own():
    from moleseg.tools.bench_machine import busy, others_cpu_share

    def run(load_before, machine_cpu_s, own_cpu_s, load_after=1.9):
        before = {"load_average": [load_before, 0, 0], "cpu_count": 2, "wall_s": 0.0, "machine_cpu_s": 0.0,
                  "own_cpu_s": 0.0}
        after = {"load_average": [load_after, 0, 0], "cpu_count": 2, "wall_s": 100.0,
                 "machine_cpu_s": machine_cpu_s, "own_cpu_s": own_cpu_s}
        return {"before": before, "after": after}

    quiet = run(0.2, machine_cpu_s=150.0, own_cpu_s=140.0)  # others: 10 of 200 CPU seconds
    assert others_cpu_share(quiet) == pytest.approx(0.05) and not busy(quiet)  # its own load after does not count
    shared = run(0.2, machine_cpu_s=190.0, own_cpu_s=140.0)  # others: 50 of 200
    assert others_cpu_share(shared) == pytest.approx(0.25) and busy(shared)
    assert busy(run(1.5, machine_cpu_s=150.0, own_cpu_s=140.0))  # loaded before the start
    unknown = run(0.2, machine_cpu_s=None, own_cpu_s=140.0)
    assert others_cpu_share(unknown) is None and busy(unknown)  # counters missing: the load-average rule


def test_a_ratio_under_its_target_while_the_network_ran_slow_is_not_judged():
    from moleseg.tools.bench import SLOW_NETWORK_PHASE, fastest_network_ms, target_verdicts

    def run(stage_network_ms: float, around_ms: float) -> dict:
        # 12:42's figures: the network's own bench 12.6 ms, ONNX Runtime's batch-1 time 19.6, the stage's 19.7
        return {"settings": {"quick": False}, "network": {"ms": 12.6},
                "runtimes": {"rows": {"onnxruntime": {"ms_batch1": 19.6}, "openvino": {}}},
                "end_to_end": {"network_ms": stage_network_ms}, "around_network_ratio": around_ms / stage_network_ms,
                "before": {"load_average": [0.3, 0, 0], "cpu_count": 2, "wall_s": 0.0, "machine_cpu_s": 0.0,
                           "own_cpu_s": 0.0},
                "after": {"load_average": [1.2, 0, 0], "cpu_count": 2, "wall_s": 100.0, "machine_cpu_s": 150.0,
                          "own_cpu_s": 150.0}}

    slow = run(19.7, 8.8)  # 0.45 x: under 0.5, but the stage's network ran 19.7 / 12.6 = 1.56 x its fastest
    assert fastest_network_ms(slow) == 12.6
    assert target_verdicts(slow)["around_network_ratio"] == SLOW_NETWORK_PHASE
    assert target_verdicts(run(19.7, 11.0))["around_network_ratio"] == "missed"  # 0.56 x: missed however slow
    assert target_verdicts(run(15.1, 7.0))["around_network_ratio"] == "met"  # 1.198 x its fastest: judged
    assert target_verdicts(run(15.2, 7.0))["around_network_ratio"] == SLOW_NETWORK_PHASE  # 1.206 x
    assert fastest_network_ms({"network": {}, "runtimes": {"rows": {}}, "end_to_end": {}}) is None
