"""Prediction with ONNX Runtime (moleseg.network.compiled, moleseg.network.onnx_export): the folded network
is converted once per machine, used only when it matches TensorFlow, and a later process predicts with
it without importing TensorFlow."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed (requirements.txt has it)")
pytest.importorskip("tf2onnx", reason="tf2onnx is not installed (requirements.txt has it)")

from moleseg.network import compiled, onnx_export  # noqa: E402
from moleseg.network.predict import KerasSegmenter  # noqa: E402
from synthetic import TINY_MODEL_SIZE as SIZE, tiny_model_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: tf2onnx's conversion as the product calls it (before any test replaces it).
CONVERT = onnx_export.onnx_bytes


@pytest.fixture
def onnx_cache(monkeypatch, tmp_path):
    """The inference cache on, in a temporary folder, with the default runtime (ONNX Runtime)."""
    monkeypatch.setenv("MOLESEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(compiled.CACHE_ENV, "1")
    monkeypatch.delenv(compiled.RUNTIME_ENV, raising=False)
    return tmp_path / "cache" / "inference"


def network_key(model, input_shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """The SHA-256 of a Keras network's weights, and the input shape it is converted at."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.asarray(weight).tobytes())
    return digest.hexdigest(), tuple(input_shape)


@pytest.fixture(scope="module")
def conversions() -> dict[tuple, bytes]:
    """tf2onnx's ONNX bytes of each network converted in this module, by :func:`network_key`."""
    return {}


def converting_once(conversions: dict[tuple, bytes], asked: list[tuple]) -> object:
    """:func:`moleseg.network.onnx_export.onnx_bytes` that converts each network once per module and answers
    a later request for the same network with the same bytes; each request's key is appended to ``asked``."""

    def once(model, input_shape):
        key = network_key(model, input_shape)
        asked.append(key)
        if key not in conversions:
            conversions[key] = CONVERT(model, input_shape)
        return conversions[key]

    return once


@pytest.fixture
def converted_once(conversions, monkeypatch) -> list[tuple]:
    """The product's conversions in this test answered from :func:`conversions` where this module converted the
    network before (for the tests whose subject is what happens around a conversion: a rebuild, a mismatch;
    the conversion itself is test_first_use_converts_and_matches_tensorflow's); the networks asked for."""
    asked: list[tuple] = []
    monkeypatch.setattr(onnx_export, "onnx_bytes", converting_once(conversions, asked))
    return asked


@pytest.fixture(scope="module")
def converted(tmp_path_factory, conversions):
    """``converted(onnx_cache, folder, seed=0, **tiny)``: :func:`tiny_model_file` in ``folder`` with its ONNX
    entry already in the cache folder ``onnx_cache``, copied from one conversion per network in this module
    (for the tests whose subject is what happens after the first conversion)."""
    entries: dict[tuple, Path] = {}

    def convert(seed: int, tiny: dict) -> Path:
        folder = tmp_path_factory.mktemp("converted")
        path = tiny_model_file(folder, seed, **tiny)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MOLESEG_CACHE", str(folder / "cache"))
            patch.setenv(compiled.CACHE_ENV, "1")
            patch.delenv(compiled.RUNTIME_ENV, raising=False)
            patch.setattr(onnx_export, "onnx_bytes", converting_once(conversions, []))
            size = tiny.get("size", SIZE)
            KerasSegmenter.from_file(path).predict_network(np.zeros((1, size, size, 3), np.float32))
            entry = compiled.cached_onnx(path)
        assert entry is not None and compiled.onnx_usable(entry)
        return entry

    def with_entry(onnx_cache: Path, folder: Path, seed: int = 0, **tiny) -> Path:
        key = (seed, *sorted(tiny.items()))
        if key not in entries:
            entries[key] = convert(seed, tiny)
        shutil.copytree(entries[key], onnx_cache / entries[key].name)
        return tiny_model_file(folder, seed, **tiny)

    return with_entry


@pytest.fixture(scope="module")
def tensorflow_probabilities():
    """``tensorflow_probabilities(path, batch)``: TensorFlow's probabilities of the network in ``path`` for
    ``batch`` (the TensorFlow runtime, no cache entry, no shipped ONNX file), from one segmenter per network
    file in this module."""
    segmenters: dict[str, KerasSegmenter] = {}

    def probabilities(path: Path, batch: np.ndarray) -> np.ndarray:
        key = hashlib.sha256(path.read_bytes()).hexdigest()
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(compiled.CACHE_ENV, "0")
            patch.setenv(compiled.RUNTIME_ENV, "tensorflow")
            if key not in segmenters:
                segmenters[key] = KerasSegmenter.from_file(path, test_time_augmentation=False)
            segmenter = segmenters[key]
            result = segmenter.predict_network(batch)
        assert segmenter.runtime() == "tensorflow" and segmenter.cache_notes == []
        return result

    return probabilities


def batch_of(seed: int, count: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, SIZE, SIZE, 3)).astype(np.float32)


def counted_file_digests(monkeypatch, members: list[tuple] | None = None) -> list[tuple]:
    """The arguments of every ``hashlib.file_digest`` call from now on of a cache entry's files (the cache's
    SHA-256 checks); those of a model file's ZIP members (its network's key) go into ``members``."""
    calls: list[tuple] = []
    members = [] if members is None else members
    digest = hashlib.file_digest

    def counted(*args, **kwargs):
        (members if isinstance(args[0], zipfile.ZipExtFile) else calls).append(args)
        return digest(*args, **kwargs)

    monkeypatch.setattr(hashlib, "file_digest", counted)
    return calls


def test_the_runtime_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(compiled.RUNTIME_ENV, raising=False)
    assert compiled.inference_runtime() == "onnxruntime"
    monkeypatch.setenv(compiled.RUNTIME_ENV, " TensorFlow ")
    assert compiled.inference_runtime() == "tensorflow"
    monkeypatch.setenv(compiled.RUNTIME_ENV, "tflite")
    with pytest.raises(ValueError, match="MOLESEG_RUNTIME='tflite'.*onnxruntime, tensorflow"):
        compiled.inference_runtime()


def test_probe_batch_and_difference():
    probe = onnx_export.probe_batch((20, 30, 3))
    assert probe.shape == (2, 20, 30, 3) and probe.dtype == np.float32
    assert 0 <= probe.min() and probe.max() <= 255
    blob = probe[1, ..., 0]
    assert blob[10, 15] == pytest.approx(70.0) and blob[0, 0] == pytest.approx(220.0)  # dark centre, light corner
    assert onnx_export.largest_difference(np.array([0.5, 0.25]), np.array([0.5, 0.75])) == 0.5
    assert onnx_export.largest_difference(np.array([np.nan]), np.array([0.0])) == float("inf")
    assert onnx_export.largest_difference(np.zeros(2), np.zeros(3)) == float("inf")


@pytest.mark.slow
def test_first_use_converts_and_matches_tensorflow(onnx_cache, tensorflow_probabilities, tmp_path, monkeypatch):
    path = tiny_model_file(tmp_path)
    batch = batch_of(0, count=3)
    expected = tensorflow_probabilities(path, batch)
    segmenter = KerasSegmenter.from_file(path, test_time_augmentation=False)
    probabilities = segmenter.predict_network(batch)
    assert hasattr(segmenter.inference_function(), "session")  # ONNX Runtime from now on
    assert probabilities.shape == (3, SIZE, SIZE, 3)
    assert np.abs(probabilities - expected).max() <= onnx_export.ONNX_TOLERANCE
    entry = compiled.cached_onnx(path)
    assert entry is not None and entry.parent == onnx_cache and (entry / compiled.ONNX_FILE).is_file()
    assert compiled.cached_entry(path) is None  # no SavedModel needed beside it
    calls = counted_file_digests(monkeypatch)
    KerasSegmenter.from_file(path, test_time_augmentation=False).predict_network(batch[:1])
    assert calls == []  # written by this process: used without hashing it again


@pytest.mark.slow
def test_a_new_process_predicts_without_tensorflow(onnx_cache, converted, tensorflow_probabilities, tmp_path):
    path = converted(onnx_cache, tmp_path)  # as a user's first prediction in an earlier process left it
    batch = batch_of(1)
    np.save(tmp_path / "batch.npy", batch)
    script = (
        "import sys, json, numpy as np\n"
        "from moleseg.network.loading import load_segmenter\n"
        f"segmenter = load_segmenter({str(path)!r}, test_time_augmentation=False)\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, segmenter.predict_network(np.load({str(tmp_path / 'batch.npy')!r})))\n"
        "print(json.dumps(sorted(name for name in ('tensorflow', 'keras') if name in sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    expected = tensorflow_probabilities(path, batch)
    assert np.abs(np.load(tmp_path / "out.npy") - expected).max() <= onnx_export.ONNX_TOLERANCE


@pytest.mark.slow
def test_a_mismatch_keeps_tensorflow_and_is_not_tried_again(onnx_cache, converted_once, tmp_path, monkeypatch):
    path = tiny_model_file(tmp_path)
    batch = batch_of(2)
    monkeypatch.setattr(onnx_export, "largest_difference", lambda first, second: 0.5)
    with pytest.warns(UserWarning, match="predicting with TensorFlow.*differ from TensorFlow's by 0.5"):
        segmenter = KerasSegmenter.from_file(path, test_time_augmentation=False)
        probabilities = segmenter.predict_network(batch)
    assert not hasattr(segmenter.inference_function(), "session") and len(converted_once) == 1
    entry = compiled.cached_onnx(path)
    assert not compiled.onnx_usable(entry) and "0.5" in (entry / compiled.UNUSABLE_FILE).read_text()
    assert compiled.cached_entry(path) is not None  # the SavedModel serves the next process

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(onnx_export, "onnx_bytes", no_second_conversion)
    again = KerasSegmenter.from_file(path, test_time_augmentation=False)
    np.testing.assert_allclose(again.predict_network(batch), probabilities, atol=1e-6)
    assert again._model is None  # from the SavedModel entry, Keras model not rebuilt


@pytest.mark.slow
def test_a_damaged_onnx_file_is_converted_again(onnx_cache, converted, converted_once, tensorflow_probabilities,
                                                tmp_path):
    path = converted(onnx_cache, tmp_path)
    batch = batch_of(3)
    entry = compiled.cached_onnx(path)
    (entry / compiled.ONNX_FILE).write_bytes(b"truncated")
    segmenter = KerasSegmenter.from_file(path, test_time_augmentation=False)
    with pytest.warns(UserWarning, match="rebuilding it"):
        probabilities = segmenter.predict_network(batch)
    assert hasattr(segmenter.inference_function(), "session") and len(converted_once) == 1
    assert np.abs(probabilities - tensorflow_probabilities(path, batch)).max() <= onnx_export.ONNX_TOLERANCE


@pytest.mark.slow
def test_the_tensorflow_runtime_never_converts(onnx_cache, tmp_path, monkeypatch):
    monkeypatch.setenv(compiled.RUNTIME_ENV, "tensorflow")
    path = tiny_model_file(tmp_path)
    segmenter = KerasSegmenter.from_file(path)
    segmenter.predict_network(batch_of(4, count=1))
    assert not hasattr(segmenter.inference_function(), "session")
    assert compiled.cached_entry(path) is not None
    monkeypatch.delenv(compiled.RUNTIME_ENV)
    assert compiled.cached_onnx(path) is None


@pytest.mark.parametrize("model_name, images", [("dermoscopy", "moles/ph2/images"),
                                                ("cells", "cells/dsb2018_brightfield/images")])
@pytest.mark.slow
def test_shipped_models_match_tensorflow_on_real_images(model_name, images, onnx_cache, require_shared,
                                                        tensorflow_probabilities):
    from moleseg.core.imageio import read_image
    from moleseg.core.resize import resize_image

    path = ROOT / "models" / f"{model_name}.keras"
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    folder = require_shared(images)
    segmenter = KerasSegmenter.from_file(path, test_time_augmentation=False)
    size = segmenter.input_size
    # the first crop of the input size (cells are predicted in tiles at their own scale) or the resized image
    pictures = [read_image(file) for file in sorted(folder.iterdir())[:4]]
    batch = np.stack([picture[:size, :size] if segmenter.inference == "tiles" and min(picture.shape[:2]) >= size
                      else resize_image(picture, size) for picture in pictures]).astype(np.float32)
    probabilities = segmenter.predict_network(batch)
    assert hasattr(segmenter.inference_function(), "session")
    expected = tensorflow_probabilities(path, batch)
    assert np.abs(probabilities - expected).max() <= onnx_export.ONNX_TOLERANCE
    assert (probabilities.argmax(-1) == expected.argmax(-1)).mean() > 0.9999


def lesion_areas(probabilities: np.ndarray) -> list[int]:
    """Pixels of each image whose most likely class is not the background."""
    return [int((image.argmax(-1) > 0).sum()) for image in probabilities]


def change_two_biases(file: Path) -> None:
    """Rewrite the ONNX network ``file`` with the classifier's first bias raised by 20 and its last lowered by 20
    (the background wins everywhere)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(file))
    initializers = {item.name: item for item in proto.graph.initializer}
    biased = [node for node in proto.graph.node if node.op_type == "Conv" and len(node.input) == 3]
    bias = initializers[biased[-1].input[2]]
    values = numpy_helper.to_array(bias).copy()
    assert values.shape == (3,)
    values[0] += 20.0
    values[-1] -= 20.0
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    file.write_bytes(proto.SerializeToString())


@pytest.mark.slow
def test_changed_biases_in_a_cached_network_are_detected_and_rebuilt(onnx_cache, converted, converted_once,
                                                                      tensorflow_probabilities, tmp_path):
    path = converted(onnx_cache, tmp_path, classifier_bias=(-1.0, 0.0, 1.0))
    batch = batch_of(5)
    entry = compiled.cached_onnx(path)
    change_two_biases(entry / compiled.ONNX_FILE)
    expected = tensorflow_probabilities(path, batch)
    assert min(lesion_areas(expected)) > 0
    assert lesion_areas(compiled.load_onnx_function(entry)(batch)) == [0, 0]  # what the changed file says

    segmenter = KerasSegmenter.from_file(path, test_time_augmentation=False)
    with pytest.warns(UserWarning) as caught:
        probabilities = segmenter.predict_network(batch)
    assert [str(item.message) for item in caught] == segmenter.cache_notes == [
        f"cached inference graph {entry} not used: network.onnx does not match its recorded SHA-256; rebuilding it "
        "from the model file"]
    assert lesion_areas(probabilities) == lesion_areas(expected) and len(converted_once) == 1
    assert np.abs(probabilities - expected).max() <= onnx_export.ONNX_TOLERANCE
    recorded = json.loads((entry / compiled.COMPLETE_MARKER).read_text())["sha256"]
    assert recorded == {"network.onnx": hashlib.sha256((entry / compiled.ONNX_FILE).read_bytes()).hexdigest()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt entry is used without a word
        again = KerasSegmenter.from_file(path, test_time_augmentation=False)
        assert lesion_areas(again.predict_network(batch)) == lesion_areas(expected)
    assert hasattr(again.inference_function(), "session") and again.cache_notes == []


def other_network(size: int, n_classes: int) -> bytes:
    """A serialised ONNX network of another input size and class count: ``(B, size, size, 3)`` images to
    ``(B, size, size, n_classes)`` probabilities (a per-pixel linear map and a softmax)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.full((3, n_classes), 0.01, np.float32), "weights")
    graph = helper.make_graph(
        [helper.make_node("MatMul", [onnx_export.INPUT_NAME, "weights"], ["scores"]),
         helper.make_node("Softmax", ["scores"], ["probabilities"], axis=-1)],
        "other", [helper.make_tensor_value_info(onnx_export.INPUT_NAME, TensorProto.FLOAT, [None, size, size, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, size, size, n_classes])],
        initializer=[weights])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", onnx_export.ONNX_OPSET)])
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


@pytest.mark.parametrize("with_metadata", [False, True], ids=["file", "file-and-metadata"])
@pytest.mark.slow
def test_another_networks_onnx_in_the_entry_is_rebuilt(onnx_cache, converted, converted_once,
                                                       tensorflow_probabilities, tmp_path, with_metadata):
    path = converted(onnx_cache, tmp_path)
    batch = batch_of(6)
    entry = compiled.cached_onnx(path)
    other = other_network(2 * SIZE, n_classes=2)
    (entry / compiled.ONNX_FILE).write_bytes(other)
    if with_metadata:  # its hash recorded too: ONNX Runtime refuses the 32 px batch at run time
        (entry / compiled.COMPLETE_MARKER).write_text(json.dumps(
            {"model": "other.keras", "sha256": {compiled.ONNX_FILE: hashlib.sha256(other).hexdigest()}}))
    expected = tensorflow_probabilities(path, batch)

    segmenter = KerasSegmenter.from_file(path, test_time_augmentation=False)
    with pytest.warns(UserWarning) as caught:
        probabilities = segmenter.predict_network(batch)
    notes = segmenter.cache_notes
    assert [str(item.message) for item in caught] == notes and len(notes) == 1
    if with_metadata:
        assert notes[0] == (f"cached inference graph {entry} failed (InvalidArgument); predicting with TensorFlow "
                            "and rebuilding it from the model file")
        np.testing.assert_allclose(probabilities, expected, atol=1e-6)  # TensorFlow's own
    else:
        assert notes[0].endswith("not used: network.onnx does not match its recorded SHA-256; rebuilding it from "
                                 "the model file")
        assert np.abs(probabilities - expected).max() <= onnx_export.ONNX_TOLERANCE
    assert json.loads((entry / compiled.COMPLETE_MARKER).read_text())["model"] == "tiny0.keras"  # rebuilt
    assert len(converted_once) == 1
    assert compiled.entry_problem(entry) is None
    again = KerasSegmenter.from_file(path, test_time_augmentation=False)
    assert np.abs(again.predict_network(batch) - expected).max() <= onnx_export.ONNX_TOLERANCE
    assert hasattr(again.inference_function(), "session") and again.cache_notes == []


@pytest.mark.slow
def test_an_entry_is_hashed_once_per_process(onnx_cache, converted, tmp_path, monkeypatch):
    path = converted(onnx_cache, tmp_path)
    batch = batch_of(7, count=1)
    members: list[tuple] = []
    calls = counted_file_digests(monkeypatch, members)
    KerasSegmenter.from_file(path).predict_network(batch)  # the entry's first use in this process checks it
    assert len(calls) == 1
    for _ in range(3):
        segmenter = KerasSegmenter.from_file(path, test_time_augmentation=False)
        for _ in range(2):
            segmenter.predict_network(batch)
    assert len(calls) == 1
    with zipfile.ZipFile(path) as archive:  # the model file's network too: each entry but moleseg.json, once
        assert len(members) == len(archive.namelist()) - 1
    entry = compiled.cached_onnx(path)
    (entry / compiled.ONNX_FILE).touch()  # another modification time: checked again, once
    for _ in range(3):
        KerasSegmenter.from_file(path, test_time_augmentation=False).predict_network(batch)
    assert len(calls) == 2


@pytest.mark.slow
def test_the_cli_prints_a_rebuilt_cache_entry_as_one_warning_line(onnx_cache, converted, converted_once, tmp_path,
                                                                  capsys):
    from moleseg.cli import main
    from moleseg.core.imagewrite import write_png

    path = converted(onnx_cache, tmp_path, classifier_bias=(-1.0, 0.0, 1.0))
    entry = compiled.cached_onnx(path)
    change_two_biases(entry / compiled.ONNX_FILE)
    write_png(tmp_path / "mole.png", batch_of(9, count=1)[0].astype(np.uint8))
    capsys.readouterr()
    assert main(["predict", "--model", str(path), "--out", str(tmp_path / "out"), str(tmp_path / "mole.png")]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "warning" in line.lower()] == [
        f"warning: cached inference graph {entry} not used: network.onnx does not match its recorded SHA-256; "
        "rebuilding it from the model file"]
    assert "UserWarning" not in err and "warnings.warn" not in err
    assert len(converted_once) == 1 and compiled.entry_problem(entry) is None  # rebuilt
