"""The per-machine cache of inference graphs (moleseg.network.compiled): a second process loads the
cached graph instead of rebuilding the Keras model, with the same probabilities. These tests pin the
TensorFlow runtime (its SavedModel entries); the ONNX entries are tested in test_onnx_runtime.py."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
import zlib
from pathlib import Path

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


@pytest.fixture(scope="module")
def saved_entry(tmp_path_factory) -> Path:
    """The SavedModel entry that a first prediction with :func:`tiny_model_file` (seed 0) writes, written once
    in this module (copied by :func:`cached_model` for the tests whose subject is what happens after it)."""
    folder = tmp_path_factory.mktemp("saved")
    path = tiny_model_file(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOLESEG_CACHE", str(folder / "cache"))
        patch.setenv(compiled.CACHE_ENV, "1")
        patch.setenv(compiled.RUNTIME_ENV, "tensorflow")
        KerasSegmenter.from_file(path).predict_network(np.zeros((1, SIZE, SIZE, 3), np.float32))
        entry = compiled.cached_entry(path)
    assert entry is not None
    return entry


@pytest.fixture
def cached_model(cache, saved_entry, tmp_path) -> Path:
    """:func:`tiny_model_file` (seed 0) in ``tmp_path``, its SavedModel entry in the test's cache folder (a copy
    of :func:`saved_entry`), as a first prediction in an earlier process leaves them."""
    shutil.copytree(saved_entry, cache / saved_entry.name)
    return tiny_model_file(tmp_path)


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


@pytest.mark.parametrize("save", ["save_cached_function", "save_onnx"])
def test_each_writer_refuses_in_one_sentence_while_the_cache_is_off(monkeypatch, tmp_path, save):
    monkeypatch.setenv(compiled.CACHE_ENV, "0")
    arguments = (tmp_path / "model.keras", None, (SIZE, SIZE, 3)) + ((None,) if save == "save_onnx" else ())
    with pytest.raises(OSError) as refused:
        getattr(compiled, save)(*arguments, content="0" * 64)
    assert str(refused.value) == "the inference cache is off (MOLESEG_INFERENCE_CACHE=0)"


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
def test_a_damaged_entry_is_rebuilt_from_the_model_file(cached_model):
    path = cached_model
    batch = np.random.default_rng(1).uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32)
    first = KerasSegmenter.from_file(path)
    expected = first.predict_network(batch)
    assert first._model is None  # from the entry
    entry = compiled.cached_entry(path)
    (entry / "saved_model.pb").write_bytes(b"truncated")
    segmenter = KerasSegmenter.from_file(path)
    with pytest.warns(UserWarning, match="saved_model.pb does not match its recorded SHA-256; rebuilding it"):
        np.testing.assert_allclose(segmenter.predict_network(batch), expected, atol=1e-6)
    assert compiled.cached_entry(path) is not None  # written again
    np.testing.assert_allclose(KerasSegmenter.from_file(path).predict_network(batch), expected, atol=1e-6)


@pytest.mark.slow
def test_each_file_of_an_entry_is_recorded_by_its_sha256(cached_model):
    entry = compiled.cached_entry(cached_model)
    metadata = json.loads((entry / compiled.COMPLETE_MARKER).read_text())
    files = sorted(p.relative_to(entry).as_posix() for p in entry.rglob("*")
                   if p.is_file() and p.name != compiled.COMPLETE_MARKER)
    assert "saved_model.pb" in files and any(name.startswith("variables/") for name in files)
    assert metadata == {"model": "tiny0.keras",
                        "sha256": {name: hashlib.sha256((entry / name).read_bytes()).hexdigest() for name in files}}
    assert compiled.entry_problem(entry) is None
    (entry / "extra.bin").write_bytes(b"x")
    problem = compiled.entry_problem(entry)
    assert problem.startswith("its files (extra.bin, ") and ") are not those recorded (" in problem
    (entry / "extra.bin").unlink()
    (entry / "extra.bin").symlink_to(entry / "saved_model.pb")
    assert compiled.entry_problem(entry) == ("its files cannot be checked (ValueError: extra.bin is not a regular "
                                             "file)")


@pytest.mark.slow
def test_changed_weights_in_a_saved_model_entry_are_detected_and_rebuilt(cached_model):
    path = cached_model
    batch = np.random.default_rng(2).uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32)
    expected = KerasSegmenter.from_file(path).predict_network(batch)
    entry = compiled.cached_entry(path)
    weights = next((entry / "variables").glob("variables.data-*"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte of one weight: same size
    weights.write_bytes(bytes(data))
    segmenter = KerasSegmenter.from_file(path)
    with pytest.warns(UserWarning) as caught:
        np.testing.assert_allclose(segmenter.predict_network(batch), expected, atol=1e-6)
    assert [str(item.message) for item in caught] == segmenter.cache_notes == [
        f"cached inference graph {entry} not used: variables/{weights.name} does not match its recorded SHA-256; "
        "rebuilding it from the model file"]
    assert compiled.entry_problem(entry) is None  # written again


def _mantissa_bits(weights: bytes, count: int) -> list[int]:
    """Bit offsets of the lowest mantissa bit of ``count`` float32 weights in an HDF5 weights file."""
    import h5py

    datasets: list = []
    with h5py.File(io.BytesIO(weights), "r") as handle:
        handle.visititems(lambda _, item: datasets.append(item) if isinstance(item, h5py.Dataset)
                          and item.dtype == np.float32 and item.id.get_offset() is not None else None)
        offsets = [item.id.get_offset() + 4 * index for item in datasets for index in range(item.size)]
    return [offset * 8 for offset in offsets[:count]]


def _with_crc(data: bytes, target: int, bits: list[int]) -> bytes:
    """``data`` with some of ``bits`` flipped so that its CRC-32 is ``target`` (CRC-32 is affine over GF(2))."""
    base = zlib.crc32(data)
    effects = []
    for bit in bits:
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        effects.append(zlib.crc32(flipped) ^ base)
    basis: dict[int, tuple[int, int]] = {}
    for index, effect in enumerate(effects):
        mask = 1 << index
        for pivot in sorted(basis, reverse=True):
            if effect >> pivot & 1:
                effect, mask = effect ^ basis[pivot][0], mask ^ basis[pivot][1]
        if effect:
            basis[effect.bit_length() - 1] = (effect, mask)
    wanted, chosen = base ^ target, 0
    for pivot in sorted(basis, reverse=True):
        if wanted >> pivot & 1:
            wanted, chosen = wanted ^ basis[pivot][0], chosen ^ basis[pivot][1]
    forged = bytearray(data)
    for index, bit in enumerate(bits):
        if chosen >> index & 1:
            forged[bit // 8] ^= 1 << (bit % 8)
    assert zlib.crc32(forged) == target
    return bytes(forged)


def _forged_twin(trusted: Path, other: Path, out: Path) -> Path:
    """``out``: ``other``'s weights (each off by at most one last bit) in a model file whose ZIP directory
    (names, CRC-32, sizes) is ``trusted``'s, as anyone who can read ``trusted`` can make in a second."""
    with zipfile.ZipFile(trusted) as source, zipfile.ZipFile(other) as weights_from:
        weights = weights_from.read("model.weights.h5")
        forged = _with_crc(weights, source.getinfo("model.weights.h5").CRC, _mantissa_bits(weights, 64))
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
            for info in source.infolist():
                archive.writestr(info.filename, forged if info.filename == "model.weights.h5"
                                 else source.read(info.filename))
    return out


@pytest.mark.slow
def test_a_model_file_forged_to_look_like_another_gets_no_entry_for_it(monkeypatch, cache, tmp_path):
    """A shared model file (untrusted) made to carry a trusted model's ZIP directory fills the cache first; the
    trusted model must still predict with its own network, not the forged file's."""
    trusted = tiny_model_file(tmp_path, seed=0)
    forged = _forged_twin(trusted, tiny_model_file(tmp_path, seed=1), tmp_path / "shared.keras")
    with zipfile.ZipFile(trusted) as one, zipfile.ZipFile(forged) as two:
        assert ([(i.filename, i.CRC, i.file_size) for i in one.infolist()]
                == [(i.filename, i.CRC, i.file_size) for i in two.infolist()])
        assert one.read("model.weights.h5") != two.read("model.weights.h5")
    batch = np.random.default_rng(3).uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32)
    monkeypatch.setenv(compiled.CACHE_ENV, "0")
    own = KerasSegmenter.from_file(trusted, test_time_augmentation=False).predict_network(batch)
    monkeypatch.setenv(compiled.CACHE_ENV, "1")
    theirs = KerasSegmenter.from_file(forged, test_time_augmentation=False).predict_network(batch)
    assert np.abs(theirs - own).max() > 0.01  # two different networks
    np.testing.assert_allclose(KerasSegmenter.from_file(trusted, test_time_augmentation=False)
                               .predict_network(batch), own, atol=1e-6)


@pytest.mark.slow
def test_a_model_file_replaced_while_its_network_is_converted_gets_no_entry_for_the_new_one(monkeypatch, cache,
                                                                                            tmp_path):
    """A file loaded, then replaced by a copy of a trusted model before its graph is cached (the conversion
    takes seconds to minutes): the entry must not be filed under the trusted model's key."""
    trusted = tiny_model_file(tmp_path, seed=0)
    shared = tmp_path / "shared.keras"
    shutil.copyfile(tiny_model_file(tmp_path, seed=1), shared)
    batch = np.random.default_rng(4).uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32)
    monkeypatch.setenv(compiled.CACHE_ENV, "0")
    own = KerasSegmenter.from_file(trusted, test_time_augmentation=False).predict_network(batch)
    monkeypatch.setenv(compiled.CACHE_ENV, "1")
    loaded = KerasSegmenter.from_file(shared, test_time_augmentation=False)
    assert loaded._model is not None
    shutil.copyfile(trusted, shared)  # after the load, before the network is converted and cached
    theirs = loaded.predict_network(batch)
    assert np.abs(theirs - own).max() > 0.01
    np.testing.assert_allclose(KerasSegmenter.from_file(trusted, test_time_augmentation=False)
                               .predict_network(batch), own, atol=1e-6)


@pytest.mark.slow
def test_a_model_file_replaced_during_its_load_is_not_cached(monkeypatch, cache, tmp_path):
    """Replaced by a copy of a trusted model while Keras reads it: which bytes made the network is unknown, so
    nothing is cached (one warning), and the trusted model's key holds no entry."""
    from moleseg.network import io as network_io

    trusted = tiny_model_file(tmp_path, seed=0)
    shared = tmp_path / "shared.keras"
    shutil.copyfile(tiny_model_file(tmp_path, seed=1), shared)
    real_load = network_io.load_keras_model

    def load_then_replace(path, **kwargs):
        model = real_load(path, **kwargs)
        shutil.copyfile(trusted, shared)
        return model

    monkeypatch.setattr(network_io, "load_keras_model", load_then_replace)
    with pytest.warns(UserWarning, match="^shared.keras changed while it was loaded; its network is not cached$"):
        segmenter = KerasSegmenter.from_file(shared, test_time_augmentation=False)
    segmenter.predict_network(np.zeros((1, SIZE, SIZE, 3), np.float32))
    assert compiled.cached_entry(trusted) is None and not (cache.is_dir() and any(cache.iterdir()))


def _with_damaged_weights(path: Path) -> Path:
    """``path`` with one byte of its weights entry's data flipped (stored, not compressed): its ZIP directory
    intact, so that only reading the entry finds the damage (a CRC-32 mismatch)."""
    with zipfile.ZipFile(path) as archive:
        entry = archive.getinfo("model.weights.h5")
    assert entry.compress_type == zipfile.ZIP_STORED
    data = bytearray(path.read_bytes())
    header = data[entry.header_offset:entry.header_offset + 30]
    start = entry.header_offset + 30 + int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little")
    data[start + entry.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def test_a_model_file_with_damaged_weights_is_refused_naming_it_not_a_stack_trace(cache, tmp_path, capsys):
    """The cache's key reads every byte of the network (network_content): a file whose weights fail their CRC-32
    (a damaged copy whose ZIP directory is intact) raised BadZipFile from the cache lookup, through predict."""
    from moleseg.cli import main
    from moleseg.core.imagewrite import write_png

    model = _with_damaged_weights(tiny_model_file(tmp_path))
    assert compiled.cached_entry(model) is None  # no entry is that of a file whose network cannot be read
    image = tmp_path / "mole.png"
    write_png(image, np.full((SIZE, SIZE, 3), 128, np.uint8))
    assert main(["predict", "--model", str(model), "--quiet", "--out", str(tmp_path / "out"), str(image)]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"error: {model.name}: ")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("changes", "said", "taken"), [
    ({"input_size": 2 * SIZE}, f"an input of {2 * SIZE} px", f"an input of {SIZE} px"),
    ({"n_classes": 2}, "2 classes", "3 classes"),
], ids=["input size", "classes"])
def test_a_moleseg_json_contradicting_its_cached_network_is_refused_when_opened(cached_model, changes, said, taken):
    """Its network's input size and classes are those its "model" section describes: a file whose other fields
    say otherwise is refused naming the file when it is opened, as without a cache entry, not image by image
    ("Can not cast TensorSpec(shape=(1, 64, 64, 3)...) to TensorSpec(shape=(None, 32, 32, 3)...)")."""
    from moleseg.core.modelinfo import ModelFileError

    write_model_info(cached_model, {**read_model_info(cached_model), **changes})
    assert compiled.any_cached(cached_model)  # the same network (its description too): its entry is found
    with pytest.raises(ModelFileError) as caught:
        KerasSegmenter.from_file(cached_model)
    assert str(caught.value) == f"tiny0.keras: its moleseg.json says {said}, its network has {taken}"
