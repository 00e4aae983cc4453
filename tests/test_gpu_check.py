"""``make gpu-check`` (moleseg.tools.gpu_check): its ``--cpu`` mode trains the recipe's network a few steps,
prints the measurements, and passes; the checks themselves fail on a loss that does not fall or a slow pipeline."""

from __future__ import annotations

import importlib.util

import pytest

from moleseg.tools.gpu_check import PIPELINE_MARGIN, CheckResult, main


@pytest.mark.slow
@pytest.mark.parametrize("backend", [
    "tensorflow",
    pytest.param("jax", marks=pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                                                 reason="jax is not installed (pip install -r requirements.txt)")),
])
def test_the_cpu_mode_trains_the_recipe_and_passes(backend, gpu_check_cpu):
    done = gpu_check_cpu(backend)
    assert done["returncode"] == 0, done["stdout"] + done["stderr"]
    lines = dict(line.split(": ", 1) for line in done["stdout"].splitlines() if ": " in line)
    assert lines["device"] == f"CPU (--cpu, {backend})"
    train_ips = float(lines["training"].split()[0])
    pipeline_ips = float(lines["input pipeline alone"].split()[0])
    assert train_ips > 0 and pipeline_ips >= PIPELINE_MARGIN * train_ips
    losses = [float(v) for v in lines["loss curve"].split(", ")]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert done["stdout"].rstrip().endswith("OK")


def test_the_jax_check_runs_where_tensorflow_cannot_be_imported(without_tensorflow):
    """The JAX run of ``gpu_check_cpu`` has ``without_tensorflow`` first on its path: an import of TensorFlow (or
    segmentation-models) there fails with this message, so the JAX path importing one turns the test above red."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(without_tensorflow)}
    done = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == 1
    assert ("ModuleNotFoundError: No module named 'tensorflow': blocked in this test, as it is absent on the GPU "
            "machine, and this code path must not need it") in done.stderr
    done = subprocess.run([sys.executable, "-c", "import segmentation_models"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert "No module named 'segmentation_models': blocked in this test" in done.stderr


def test_the_device_script_names_each_missing_module_in_one_line(tmp_path, without_tensorflow):
    """moleseg/tools/device_check.sh (``make gpu-check-device``) with Keras' needs namex and optree unimportable
    (their wheels not carried): one line names them and Keras, it exits 3 before the check, and its report file
    holds that line."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHON": sys.executable, "DEVICE_WHEELS": str(tmp_path / "no-wheels"),
           "OUT": str(tmp_path / "out"), "PYTHONPATH": str(without_tensorflow), "BLOCKED_MODULES": "namex,optree",
           "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(["bash", str(root / "moleseg" / "tools" / "device_check.sh")], capture_output=True,
                          text=True, env=env, cwd=root, timeout=120)
    assert done.returncode == 3, done.stdout + done.stderr
    line = done.stdout.splitlines()[-1]
    blocked = "blocked in this test, as it is absent on the GPU machine, and this code path must not need it"
    assert line.startswith(f"device-check: missing for the jax check: namex (No module named 'namex': {blocked}); "
                           f"optree (No module named 'optree': {blocked}); keras (")
    assert line.endswith("(add its wheel to .device-wheels/)")
    assert "gpu_check" not in done.stdout
    assert (tmp_path / "out" / "device-check.txt").read_text(encoding="utf-8") == done.stdout


def test_the_report_names_each_failure():
    result = CheckResult(device="GPU:0", train_images_per_s=100.0, pipeline_images_per_s=90.0,
                         losses=[1.0, 1.1], problems=["the loss did not fall", "the input pipeline starves"])
    text = result.report()
    assert "training: 100.0 images/s" in text and "input pipeline alone: 90.0 images/s (0.90 x training" in text
    assert text.splitlines()[-2:] == ["FAILED: the loss did not fall", "FAILED: the input pipeline starves"]


def test_an_unknown_backend_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--cpu", "--backend", "torch"])
    error = capsys.readouterr().err
    assert "argument --backend: invalid choice: 'torch'" in error and "tensorflow" in error and "jax" in error


def test_a_backend_other_than_the_running_one_is_a_clear_message(capsys, monkeypatch):
    import keras

    monkeypatch.setenv("KERAS_BACKEND", keras.backend.backend())  # main sets it; restored after the test
    other = "jax" if keras.backend.backend() == "tensorflow" else "tensorflow"
    assert main(["--cpu", "--backend", other]) == 2
    assert f"Keras already runs the {keras.backend.backend()} backend, not {other}" in capsys.readouterr().err


def test_a_missing_recipe_is_a_clear_message(tmp_path, capsys):
    assert main(["--cpu", "--recipe", str(tmp_path / "none.json")]) == 2
    assert f"gpu-check could not run: {tmp_path / 'none.json'}: configuration file not found" in capsys.readouterr().err
