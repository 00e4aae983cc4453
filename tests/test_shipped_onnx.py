"""The shipped models' inference-ready ONNX files: recorded with their SHA-256, used without TensorFlow and
without converting, and refused (with the reason) when the file or the model it was converted from changed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from moleseg.core.config import MODELS_DIR
from moleseg.network import compiled

NAMES = ("dermoscopy", "cells")


def _record(name: str) -> dict:
    return json.loads((MODELS_DIR / f"{name}.json").read_text(encoding="utf-8"))[compiled.SHIPPED_ONNX_KEY]


@pytest.fixture
def shipped_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A models folder holding a copy of the shipped dermoscopy model, its ONNX file and its record."""
    if not (MODELS_DIR / "dermoscopy.onnx").is_file():
        pytest.skip("models/dermoscopy.onnx is absent: nothing shipped to check")
    for suffix in (".keras", ".onnx", ".json"):
        shutil.copyfile(MODELS_DIR / f"dermoscopy{suffix}", tmp_path / f"dermoscopy{suffix}")
    monkeypatch.setenv("MOLESEG_MODELS_DIR", str(tmp_path))
    monkeypatch.delenv(compiled.RUNTIME_ENV, raising=False)
    return tmp_path


@pytest.mark.parametrize("name", NAMES)
def test_record_names_the_file_its_hash_and_its_model(name: str) -> None:
    if not (MODELS_DIR / f"{name}.onnx").is_file():
        pytest.skip(f"models/{name}.onnx is absent")
    record = _record(name)
    file = MODELS_DIR / record["file"]
    assert record["file"] == f"{name}.onnx"
    assert record["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert record["network_digest"] == compiled.shipped_network_digest(MODELS_DIR / f"{name}.keras")
    assert record["max_abs_probability_difference"] <= record["tolerance"] == 1e-4
    assert len(record["checked_on"]) == 9  # eight real images and the probe batch
    assert file.stat().st_size < 30 * 2**20


def test_the_shipped_file_is_used_after_its_hash_is_checked(shipped_copy: Path) -> None:
    keras_file = shipped_copy / "dermoscopy.keras"
    assert compiled.shipped_onnx(keras_file) == (shipped_copy / "dermoscopy.onnx", None)
    assert compiled.any_cached(keras_file)  # with the cache off, as in the tests: no Keras model is loaded


def test_a_changed_file_is_refused_with_the_reason(shipped_copy: Path) -> None:
    onnx_file = shipped_copy / "dermoscopy.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:-1] + b"\0")
    assert compiled.shipped_onnx(shipped_copy / "dermoscopy.keras") == (
        None, "dermoscopy.onnx does not match the SHA-256 in dermoscopy.json")
    assert not compiled.any_cached(shipped_copy / "dermoscopy.keras")


def test_a_file_of_another_model_version_is_refused(shipped_copy: Path) -> None:
    record_file = shipped_copy / "dermoscopy.json"
    record = json.loads(record_file.read_text(encoding="utf-8"))
    record[compiled.SHIPPED_ONNX_KEY]["network_digest"] = "0" * 32
    record_file.write_text(json.dumps(record), encoding="utf-8")
    assert compiled.shipped_onnx(shipped_copy / "dermoscopy.keras") == (
        None, "dermoscopy.onnx was converted from another version of dermoscopy.keras")


def test_models_outside_the_shipped_folder_and_the_tensorflow_runtime_ignore_it(
        shipped_copy: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path_factory.mktemp("user-models")
    for suffix in (".keras", ".onnx", ".json"):
        shutil.copyfile(shipped_copy / f"dermoscopy{suffix}", elsewhere / f"dermoscopy{suffix}")
    assert compiled.shipped_onnx(elsewhere / "dermoscopy.keras") == (None, None)
    monkeypatch.setenv(compiled.RUNTIME_ENV, "tensorflow")
    assert compiled.shipped_onnx(shipped_copy / "dermoscopy.keras") == (None, None)


@pytest.mark.slow
def test_a_new_process_segments_with_the_shipped_file_without_tensorflow(shipped_copy: Path, tmp_path: Path) -> None:
    script = ("import sys, numpy as np; from moleseg.network.loading import preload; "
              "from moleseg.engine.segmenter import segment; "
              "segmenter = preload('MODEL'); image = np.full((96, 128, 3), 200, np.uint8); image[30:70, 40:90] = 60; "
              "result = segment(segmenter, image); function = segmenter.inference_function(); "
              "print(result.lesion.shape, function.file.name, 'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script.replace("MODEL", str(shipped_copy / "dermoscopy.keras"))],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MOLESEG_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == "(96, 128) dermoscopy.onnx False"
    assert not (tmp_path / "cache").exists()  # nothing converted, nothing cached


def test_preparing_a_shipped_model_converts_nothing(shipped_copy: Path) -> None:
    from moleseg.network.predict import PREPARE_STEPS, prepare_inference

    steps: list[tuple[int, int, str]] = []
    assert prepare_inference(shipped_copy / "dermoscopy.keras", lambda *step: steps.append(step)) == "onnxruntime"
    assert steps == [(0, 4, PREPARE_STEPS[0]), (4, 4, "ready")]


@pytest.mark.slow
def test_preparing_a_users_model_reports_every_step(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from synthetic import tiny_model_file

    from moleseg.engine.tasks import TaskRegistry
    from moleseg.network.predict import PREPARE_STEPS, prepare_inference

    path = tiny_model_file(tmp_path)
    registry = TaskRegistry(workers=1)
    steps: list[tuple[int, int, str]] = []

    def work(progress):
        return prepare_inference(path, lambda *step: (steps.append(step), progress(*step)))

    task = registry.submit(("prepare", str(path)), work)
    task.wait(120)
    registry.shutdown()
    assert task.error is None and task.result == "tensorflow"  # the tests keep the inference cache off: nothing converted
    assert steps == [(index, 4, text) for index, text in enumerate(PREPARE_STEPS)] + [(4, 4, "ready")]
    assert (task.fraction, task.text) == (1.0, "ready")


def test_a_record_nested_too_deeply_is_a_reason_not_a_crash(shipped_copy: Path) -> None:
    (shipped_copy / "dermoscopy.json").write_text("[" * 100_000, encoding="utf-8")  # 100 kB, within the record's size
    assert compiled.shipped_onnx(shipped_copy / "dermoscopy.keras") == (
        None, "the shipped ONNX file cannot be checked (dermoscopy.json: nested too deeply)")
    assert not compiled.any_cached(shipped_copy / "dermoscopy.keras")
