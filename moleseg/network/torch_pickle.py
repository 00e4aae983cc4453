"""Read PyTorch ``.pth`` state dicts into numpy arrays without importing torch.

Two on-disk formats exist: the zip format (PyTorch >= 1.6: ``archive/data.pkl`` plus one file per
storage) and the legacy format (a sequence of pickles followed by the raw storages). torchvision's
``mobilenet_v2-b0353104.pth`` uses the legacy format. Both are handled here.

A weights file is untrusted: every pickle of either format is read by a restricted unpickler that builds
only plain values, tensors, storages and ``OrderedDict`` (no other global, so no code runs); a ZIP file is
opened within :data:`moleseg.core.archive.MODEL_BUDGET`, a legacy file only up to its ``max_bytes``; a
tensor must lie inside its storage, and the tensors together within ``max_bytes``.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from moleseg.core.archive import MODEL_BUDGET, check_budget, check_directory_entries

_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    def __init__(self, dtype: np.dtype, numel: int | None) -> None:
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _LazyTensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        flat = self.storage.data
        if flat is None:
            raise ValueError("tensor storage was never read")
        self._check_bounds(len(flat))
        if len(self.size) == 0:
            return np.array(flat[self.offset])
        item = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.size, strides=tuple(s * item for s in self.stride)
        )
        return np.array(view)

    def _check_bounds(self, length: int) -> None:
        """Refuse a tensor whose offset, sizes and strides reach outside its storage of ``length`` elements
        (a strided view would read memory beyond it)."""
        numbers = (self.offset, *self.size, *self.stride)
        if not all(isinstance(n, int) and n >= 0 for n in numbers):  # not shown: a nested list's text is huge
            raise ValueError("a tensor whose offset, sizes or strides are not whole numbers >= 0")
        if len(self.size) != len(self.stride):
            raise ValueError(f"a tensor with offset {self.offset}, size {self.size} and stride {self.stride}")
        if 0 in self.size:
            return
        if int(np.prod(self.size, dtype=object)) * self.storage.dtype.itemsize > MODEL_BUDGET.max_bytes:
            raise ValueError(f"a tensor of size {self.size}, more than a weights file may hold")
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if last >= length:
            raise ValueError(f"a tensor reaching element {last} of a storage of {length}")


def _storage_key(key: Any) -> str:
    """A storage's key (a name or a number) as text; ValueError for anything else, before it is made text (the
    text of a list nested by pickle's memo can take exponential time and memory)."""
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise ValueError(f"a storage key that is not a name but a {type(key).__name__}")
    return str(key)


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> _LazyTensor:
    return _LazyTensor(storage, offset, size, stride)


def _rebuild_parameter(tensor: _LazyTensor, *_: Any) -> _LazyTensor:
    return tensor


class _ValueUnpickler(pickle.Unpickler):
    """Builds plain values only (numbers, strings, lists, tuples, dicts): every global and persistent id is
    refused. Reads the legacy format's magic number, protocol version, system information and storage keys."""

    def __init__(self, file: io.BufferedIOBase) -> None:
        super().__init__(file, encoding="utf-8")

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")

    def persistent_load(self, saved_id: Any) -> Any:
        raise pickle.UnpicklingError("unexpected persistent id in a weights file header")


class _Unpickler(_ValueUnpickler):
    """Builds a state dict: plain values, ``OrderedDict``, tensors and their storages (collected in
    ``storages`` by key, read afterwards)."""

    def __init__(self, file: io.BufferedIOBase, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        return super().find_class(module, name)

    def persistent_load(self, saved_id: Any) -> _Storage:
        kind, storage_type, key, _location, numel = saved_id[:5]
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            shown = repr(kind) if isinstance(kind, str) else f"of a {type(kind).__name__}"
            raise pickle.UnpicklingError(f"unexpected persistent id {shown}"[:200])
        key = _storage_key(key)
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype, numel)
        return self.storages[key]


#: Most entries (tensors, values and nested dicts together) a state dict may hold; torchvision's hold hundreds.
MAX_STATE_ENTRIES: int = 100_000


def _tensors(obj: Any) -> list[_LazyTensor]:
    """The tensors of a loaded state dict (at the top, or in its nested dicts), walking at most
    :data:`MAX_STATE_ENTRIES` entries: pickle's memo lets a tiny file nest one dict under many keys, level after
    level (2^40 entries from 40 levels)."""
    found: list[_LazyTensor] = []
    pending, visited = [obj], 0
    while pending:
        item = pending.pop()
        visited += 1
        if visited > MAX_STATE_ENTRIES:
            raise ValueError(f"more than {MAX_STATE_ENTRIES} entries, more than a weights file holds")
        if isinstance(item, _LazyTensor):
            found.append(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
    return found


def _check_total(obj: Any) -> None:
    """Refuse tensors that would take more than a weights file may hold together, before any is made: each is
    bounded by itself, but stride-0 tensors of a one-element storage cost nothing in the file (a 365-byte file
    of three such tensors of 400 MB each took 1.1 GB; a hundred would take 40 GB)."""
    total = 0
    for tensor in _tensors(obj):
        if all(isinstance(n, int) and n >= 0 for n in tensor.size):
            total += int(np.prod(tensor.size, dtype=object)) * tensor.storage.dtype.itemsize
    if total > MODEL_BUDGET.max_bytes:
        raise ValueError(f"tensors of {total} bytes together, more than a weights file may hold "
                         f"({MODEL_BUDGET.size_text})")


def _materialise(obj: Any) -> Any:
    if isinstance(obj, _LazyTensor):
        return obj.to_numpy()
    if isinstance(obj, dict):
        return OrderedDict((k, _materialise(v)) for k, v in obj.items())
    return obj


def _load_legacy(path: Path) -> Any:
    size = path.stat().st_size
    if size > MODEL_BUDGET.max_bytes:
        raise ValueError(f"{size} bytes; at most {MODEL_BUDGET.size_text} are read")
    stream = io.BytesIO(path.read_bytes())
    magic = _ValueUnpickler(stream).load()
    if magic != _LEGACY_MAGIC:
        raise ValueError("bad magic number: not a PyTorch weights file")
    _ValueUnpickler(stream).load()  # protocol version
    _ValueUnpickler(stream).load()  # sys info
    storages: dict[str, _Storage] = {}
    result = _Unpickler(stream, storages).load()
    keys = _ValueUnpickler(stream).load()
    if not isinstance(keys, list):
        raise ValueError("the storage keys are not a list")
    for key in map(_storage_key, keys):
        storage = storages.get(str(key))
        if storage is None:
            raise ValueError(f"storage {key} is listed but no tensor uses it")
        (numel,) = struct.unpack("<q", stream.read(8))
        nbytes = numel * storage.dtype.itemsize
        if numel < 0 or nbytes > size:
            raise ValueError(f"storage {key} declares {numel} elements, more than the file holds")
        storage.data = np.frombuffer(stream.read(nbytes), dtype=storage.dtype, count=numel)
    return result


def _load_zip(path: Path) -> Any:
    check_directory_entries(path, MODEL_BUDGET)
    with zipfile.ZipFile(path) as archive:
        check_budget(archive, MODEL_BUDGET)
        names = archive.namelist()
        pkl = next(n for n in names if n.endswith("data.pkl"))
        prefix = pkl[: -len("data.pkl")]
        storages: dict[str, _Storage] = {}
        result = _Unpickler(io.BytesIO(archive.read(pkl)), storages).load()
        for key, storage in storages.items():
            storage.data = np.frombuffer(archive.read(f"{prefix}data/{key}"), dtype=storage.dtype)
    return result


def load_state_dict(path: str | Path) -> "OrderedDict[str, np.ndarray]":
    """Load a PyTorch state dict as ``{name: numpy array}`` (float32 weights keep their dtype), running no
    code from the file.

    Raises
    ------
    ValueError
        When the file is neither a zip nor a legacy PyTorch file, holds objects other than tensors (any other
        pickle global, in any of its pickles), declares more than a weights file may, or is damaged; the
        message names the file and the reason.
    """
    path = Path(path)
    try:
        result = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
        if isinstance(result, dict) and "state_dict" in result:
            result = result["state_dict"]
        _check_total(result)
        return _materialise(result)
    except Exception as error:  # noqa: BLE001 -- an untrusted file: every failure is one message naming it
        reason = str(error) or type(error).__name__
        raise ValueError(f"{path.name}: cannot read PyTorch weights ({reason})") from error
