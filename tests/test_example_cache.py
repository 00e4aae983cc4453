"""The training example cache is untrusted (anything may have written a file in it): an entry whose arrays are
not what the targets make (a header declaring gigabytes, another shape or type, labels of no class) is never
read into memory or trained on; it is prepared again from the pair."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from moleseg.core.imagewrite import write_png
from moleseg.core.pairing import Pair
from moleseg.network.examples import ExampleCache, TargetConfig, prepare_example


@pytest.fixture
def pair(tmp_path) -> Pair:
    image = np.full((40, 40, 3), 200, np.uint8)
    image[10:30, 10:30] = 40
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    write_png(tmp_path / "a.png", image)
    write_png(tmp_path / "a_mask.png", mask)
    return Pair(image=tmp_path / "a.png", mask=tmp_path / "a_mask.png", rule="same name", image_size=None,
                mask_size=None)


def _npy(shape: tuple[int, ...], descr: str = "|u1", data: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def _entry(cache: ExampleCache, pair: Pair, targets: TargetConfig, members: dict[str, bytes]) -> Path:
    path = cache.folder / f"{cache._key(pair, targets)}.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _arrays(image: np.ndarray, labels: np.ndarray) -> dict[str, bytes]:
    members = {}
    for name, values in (("image", image), ("labels", labels)):
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, values)
        members[f"{name}.npy"] = buffer.getvalue()
    return members


def test_an_entry_declaring_gigabytes_is_not_read_but_prepared_again(pair, tmp_path, monkeypatch):
    cache, targets = ExampleCache(tmp_path / "cache"), TargetConfig(input_size=16)
    path = _entry(cache, pair, targets, {"image.npy": _npy((20_000, 20_000, 3)), "labels.npy": _npy((16, 16))})
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: pytest.fail("an array was read"))
    image, labels = cache.get(pair, targets)
    expected = prepare_example(pair, targets)
    assert np.array_equal(image, expected[0]) and np.array_equal(labels, expected[1])
    monkeypatch.undo()
    with np.load(path) as stored:  # the entry is the pair's example now
        assert np.array_equal(stored["image"], expected[0]) and np.array_equal(stored["labels"], expected[1])


@pytest.mark.parametrize("poison", ["labels of no class", "another size", "float image", "pickled object"])
def test_a_poisoned_entry_is_not_trained_on(pair, tmp_path, poison):
    cache, targets = ExampleCache(tmp_path / "cache"), TargetConfig(input_size=16, n_classes=3)
    image, labels = prepare_example(pair, targets)
    members = {
        "labels of no class": _arrays(image, np.full((16, 16), 7, np.uint8)),
        "another size": _arrays(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)),
        "float image": _arrays(image.astype(np.float32), labels),
        "pickled object": {**_arrays(image, labels), "labels.npy": _npy((16, 16), "|O")},
    }[poison]
    _entry(cache, pair, targets, members)
    got_image, got_labels = cache.get(pair, targets)
    assert np.array_equal(got_image, image) and np.array_equal(got_labels, labels)
    assert got_image.dtype == got_labels.dtype == np.uint8


def test_an_honest_entry_is_read_back(pair, tmp_path, monkeypatch):
    cache = ExampleCache(tmp_path / "cache")
    for targets in (TargetConfig(input_size=16), TargetConfig(input_size=16, fit="crop", scale=0.5)):
        first = cache.get(pair, targets)
        monkeypatch.setattr("moleseg.network.examples.prepare_example", lambda *a: pytest.fail("prepared again"))
        second = cache.get(pair, targets)
        monkeypatch.undo()
        assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert first[0].shape == (20, 20, 3)  # crop at half size: 20 px, at least the input size
