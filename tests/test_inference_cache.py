"""The per-machine cache of inference graphs (moleseg.network.compiled): a second process loads the
cached graph instead of rebuilding the Keras model, with the same probabilities. These tests pin the
TensorFlow runtime (its SavedModel entries); the ONNX entries are tested in test_onnx_runtime.py."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from synthetic import TINY_MODEL_SIZE, tiny_model_file  # noqa: E402
from moleseg.core.modelinfo import read_model_info, write_model_info  # noqa: E402
from moleseg.network import compiled  # noqa: E402
from moleseg.network.predict import KerasSegmenter  # noqa: E402

SIZE = TINY_MODEL_SIZE


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """The inference cache turned on, in a temporary folder, with the TensorFlow runtime."""
    monkeypatch.setenv("MOLESEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(compiled.CACHE_ENV, "1")
    monkeypatch.setenv(compiled.RUNTIME_ENV, "tensorflow")
    return tmp_path / "cache" / "inference"


@pytest.mark.slow
def test_second_load_uses_the_cached_graph_without_keras(cache, tmp_path):
    path = tiny_model_file(tmp_path)
    batch = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    first = KerasSegmenter.from_file(path, test_time_augmentation=False)
    assert first._model is not None and compiled.cached_entry(path) is None
    expected = first.predict_network(batch)
    entry = compiled.cached_entry(path)
    assert entry is not None and entry.parent == cache

    second = KerasSegmenter.from_file(path, test_time_augmentation=False)
    assert second._model is None  # the Keras model is not rebuilt
    np.testing.assert_allclose(second.predict_network(batch), expected, atol=1e-6)
    assert second._model is None
    assert second.model.output_shape[-1] == 3  # still there when asked for


@pytest.mark.slow
def test_the_key_ignores_moleseg_json_but_not_the_weights(cache, tmp_path):
    path = tiny_model_file(tmp_path, seed=0)
    digest = compiled.network_digest(path)
    write_model_info(path, {**read_model_info(path), "lesion_threshold": 0.4})  # as calibration does
    assert compiled.network_digest(path) == digest
    assert compiled.network_digest(tiny_model_file(tmp_path, seed=1)) != digest


@pytest.mark.slow
def test_turned_off_nothing_is_written(monkeypatch, tmp_path):
    monkeypatch.setenv("MOLESEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(compiled.CACHE_ENV, "0")
    path = tiny_model_file(tmp_path)
    KerasSegmenter.from_file(path).predict_network(np.zeros((1, SIZE, SIZE, 3), np.float32))
    assert not (tmp_path / "cache").exists()


def test_prune_keeps_the_most_recently_used(tmp_path):
    for index in range(5):
        entry = tmp_path / f"entry{index}"
        entry.mkdir()
        (entry / compiled.COMPLETE_MARKER).write_text("x")
        os.utime(entry / compiled.COMPLETE_MARKER, (1000 + index, 1000 + index))
    (tmp_path / "not-an-entry").mkdir()
    removed = compiled.prune(tmp_path, keep=2)
    assert sorted(path.name for path in removed) == ["entry0", "entry1", "entry2"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["entry3", "entry4", "not-an-entry"]


@pytest.mark.slow
def test_a_damaged_entry_is_rebuilt_from_the_model_file(cache, tmp_path):
    path = tiny_model_file(tmp_path)
    batch = np.random.default_rng(1).uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32)
    expected = KerasSegmenter.from_file(path).predict_network(batch)
    entry = compiled.cached_entry(path)
    (entry / "saved_model.pb").write_bytes(b"truncated")
    segmenter = KerasSegmenter.from_file(path)
    with pytest.warns(UserWarning, match="rebuilding it"):
        np.testing.assert_allclose(segmenter.predict_network(batch), expected, atol=1e-6)
    assert compiled.cached_entry(path) is not None  # written again
    np.testing.assert_allclose(KerasSegmenter.from_file(path).predict_network(batch), expected, atol=1e-6)
