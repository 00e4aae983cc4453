"""A per-machine cache of the inference graph of a ``.keras`` file, so that a new process starts fast; and the
shipped models' own inference-ready ONNX files, which make that cache unneeded for them.

A shipped model (a ``.keras`` file in :func:`moleseg.core.config.models_dir`) comes with its ONNX file,
converted and checked against TensorFlow on real images when the model was made (:mod:`moleseg.tools.shipped`),
whose SHA-256 and source model's digest its record ``models/<name>.json`` keeps (:data:`SHIPPED_ONNX_KEY`):
:func:`shipped_onnx` checks both before the file is used, so no user machine converts a shipped model. A
file that fails a check is not used (the caller warns) and the per-machine cache below takes over.

Two kinds of entry, one folder each under :func:`inference_cache_root`:

* an **ONNX** file of the folded network (:data:`ONNX_FILE`), run with ONNX Runtime, the default runtime
  for prediction (:data:`RUNTIME_ENV`): a new process then predicts without importing TensorFlow at all
  (importing it alone takes seconds), and the network runs faster on a CPU (``docs/performance.md``). The
  file is converted from the folded Keras model once per machine (``tf2onnx``) and kept only when
  ONNX Runtime's probabilities on a probe batch are within :data:`moleseg.network.onnx_export.ONNX_TOLERANCE`
  of TensorFlow's; otherwise the entry records why (:data:`UNUSABLE_FILE`) and TensorFlow predicts.
* a TensorFlow **SavedModel** of the folded prediction function, used when the runtime is TensorFlow or
  the ONNX file cannot be made or used.

Loading a ``.keras`` file builds its network (:func:`moleseg.network.build.load_keras_model`), and folding its
BatchNormalization (:func:`moleseg.network.inference.fold_batchnorm`) and tracing the prediction function cost as much again:
together most of ``moleseg predict``'s start-up after importing TensorFlow (``docs/performance.md``). The first time a network is predicted with, its folded prediction function
(fixed input signature ``(None, S, S, 3)`` float32) is saved as a TensorFlow SavedModel under
``cache_dir() / "inference"``; later processes load that graph directly (then optimise it on the first
call), without Keras rebuilding the model. The probabilities are the same computation (equal to the last bit
in our runs).

The cache key is a digest of the ``.keras`` archive's entries other than ``moleseg.json`` (their names, sizes
and SHA-256), of the network ``moleseg.json`` describes (:func:`network_content`) and of the TensorFlow version
and :data:`CACHE_FORMAT`: re-training the model or upgrading TensorFlow misses the cache, re-calibrating it
(which rewrites ``moleseg.json`` but not its network) does not. Not the CRC-32 of the ZIP directory: a shared
model file (untrusted) made in a second to carry another model's names, CRC-32 and sizes would file its network
under that model's key, and every user of it would predict with the forged one. The key of an entry is that of the
bytes its network was loaded from (``content`` of the writers, taken around the load by
:class:`moleseg.network.predict.KerasSegmenter`), not of the file at the path when the entry is written, which may
have been replaced meanwhile. Entries are written to a temporary folder and renamed into place, so a killed save
leaves no half entry; only the :data:`KEEP_ENTRIES` most recently used are kept.

The cache folder is untrusted (anything may have changed a file in it): each entry's metadata
(:data:`COMPLETE_MARKER`) records the SHA-256 of every file of the entry, and :func:`entry_problem` compares
them before an entry is loaded -- once per process and entry while its files keep their size and
modification time (hashing the dermoscopy network's ONNX file takes milliseconds, not per image).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import stat
import threading
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any, Callable

from moleseg.core.archive import MODEL_INFO_MAX_BYTES
from moleseg.core.atomic import TEMPORARY_PREFIX, atomic_write
from moleseg.core.config import cache_dir, models_dir
from moleseg.core.errors import parse_failure
from moleseg.core.modelinfo import INFO_ENTRY, described_network

#: Changes whenever what is cached changes (the folding, the signature): old entries are then ignored.
CACHE_FORMAT: str = "folded-savedmodel-3"
#: Cache entries kept (most recently used first); older ones are removed when a new one is written.
KEEP_ENTRIES: int = 8
#: Environment variable that turns the cache off when set to ``0`` (the test suite does, but for the tests
#: of the cache itself).
CACHE_ENV: str = "MOLESEG_INFERENCE_CACHE"
#: The entry's metadata, written last (atomically) into an entry: the model file's name and the SHA-256 of
#: every other file of the entry (JSON). An entry without it is incomplete and ignored.
COMPLETE_MARKER: str = "complete"
#: Largest metadata file read, in bytes (an entry of a few files writes about 300).
MAX_MARKER_BYTES: int = 64 * 1024
#: Changes whenever the ONNX conversion (or the entry's metadata) changes: old ONNX entries are then ignored.
ONNX_FORMAT: str = "folded-onnx-2"
#: The network's file inside an ONNX entry.
ONNX_FILE: str = "network.onnx"
#: Written instead of :data:`ONNX_FILE` when the conversion failed or did not match TensorFlow: its text
#: says why, and TensorFlow predicts this network on this machine without trying again.
UNUSABLE_FILE: str = "unusable.txt"
#: Environment variable choosing the prediction runtime (read at every call): one of :data:`RUNTIMES`.
RUNTIME_ENV: str = "MOLESEG_RUNTIME"
#: Prediction runtimes, the default first. Training always runs in TensorFlow.
RUNTIMES: tuple[str, ...] = ("onnxruntime", "tensorflow")


#: Section of a shipped model's record (``models/<name>.json``) that describes the ONNX file shipped beside
#: its ``.keras`` file: ``file`` (name in the models folder), ``sha256``, ``network_digest``
#: (:func:`shipped_network_digest` of the ``.keras`` file it was converted from) and the check against TensorFlow.
SHIPPED_ONNX_KEY: str = "onnx"
#: Changes whenever the shipped ONNX conversion (or its record) changes: older shipped files are then ignored.
SHIPPED_FORMAT: str = "shipped-onnx-1"
#: Largest shipped model record read, in bytes (the dermoscopy record is about 110 kB).
MAX_RECORD_BYTES: int = 4 * 1024 * 1024


def inference_cache_root() -> Path:
    """The folder of the cached inference graphs: ``cache_dir() / "inference"``."""
    return cache_dir() / "inference"


def cache_enabled() -> bool:
    """False when :data:`CACHE_ENV` is ``0`` now (read at every call)."""
    return os.environ.get(CACHE_ENV, "1") != "0"


def require_cache_enabled() -> None:
    """Nothing when the inference cache is on; an ``OSError`` saying it is off (:data:`CACHE_ENV` is ``0``)
    otherwise, for a writer of cache entries."""
    if not cache_enabled():
        raise OSError(f"the inference cache is off ({CACHE_ENV}=0)")


def inference_runtime() -> str:
    """The prediction runtime :data:`RUNTIME_ENV` names now, else the first of :data:`RUNTIMES`.

    Raises
    ------
    ValueError
        An unknown runtime name (the message lists the known ones).
    """
    value = os.environ.get(RUNTIME_ENV, "").strip().lower() or RUNTIMES[0]
    if value not in RUNTIMES:
        raise ValueError(f"{RUNTIME_ENV}={value!r} is not a prediction runtime; choose one of {', '.join(RUNTIMES)}")
    return value


def onnx_wanted() -> bool:
    """True when networks should be predicted with ONNX Runtime: it is the runtime chosen, it is installed,
    and the cache (where the converted file lives) is on."""
    return (inference_runtime() == "onnxruntime" and cache_enabled()
            and importlib.util.find_spec("onnxruntime") is not None)


def onnx_convertible() -> bool:
    """True when this machine can convert a network to ONNX (``tf2onnx`` and ``onnx`` installed)."""
    return all(importlib.util.find_spec(name) is not None for name in ("tf2onnx", "onnx"))


def _directory_digest(path: str | Path, prefix: str) -> str:
    """Hex digest of ``prefix`` and a ``.keras`` file's network entries as its ZIP directory names them (every
    entry but ``moleseg.json``: name, CRC-32, size). Only for a shipped model (:func:`shipped_network_digest`), a
    file of the operator's models folder checked against the operator's record: it tells a stale ONNX file from
    a current one, not a forged model from a real one (:func:`network_content` does)."""
    digest = hashlib.sha256(prefix.encode())
    with zipfile.ZipFile(path) as archive:
        for entry in sorted(archive.infolist(), key=lambda item: item.filename):
            if entry.filename != INFO_ENTRY:
                digest.update(f"|{entry.filename}:{entry.CRC:08x}:{entry.file_size}".encode())
    return digest.hexdigest()[:32]


#: Most model files whose :func:`network_content` a process remembers (the oldest forgotten first).
CONTENT_MEMORY: int = 64
#: :func:`network_content` of the files hashed in this process, by absolute path, with the file's device,
#: inode, size, modification and change times then.
_contents: dict[str, tuple[tuple[int, ...], str]] = {}


def _file_signature(status: os.stat_result) -> tuple[int, ...]:
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns


def network_content(path: str | Path) -> str:
    """Hex SHA-256 of the network in a ``.keras`` file: the name, size and SHA-256 of every archive entry but
    ``moleseg.json``, and the network ``moleseg.json`` describes (:func:`moleseg.core.modelinfo.described_network`:
    moleseg builds it and reads the weights into it; the same weights fit networks that compute other things,
    other ASPP rates say), not its decision (every byte read: about 40 ms for a 9.6 MB model here). Hashed once
    per process while the file keeps its device, inode, size and modification and change times (a rewrite
    changes the last).

    Raises
    ------
    OSError, zipfile.BadZipFile
        The file cannot be read, is not a ZIP archive, or an entry's bytes do not match its CRC-32.
    """
    key = os.fspath(Path(path).absolute())
    with open(key, "rb") as handle:
        signature = _file_signature(os.fstat(handle.fileno()))
        with _checked_lock:
            known = _contents.get(key)
        if known is not None and known[0] == signature:
            return known[1]
        digest = hashlib.sha256()
        with zipfile.ZipFile(handle) as archive:
            for entry in sorted(archive.infolist(), key=lambda item: item.filename):
                if entry.filename == INFO_ENTRY:  # the network moleseg builds from it, not its decision
                    if entry.file_size > MODEL_INFO_MAX_BYTES:
                        raise ValueError(f"{INFO_ENTRY} of {entry.file_size:,} bytes")
                    network = described_network(json.loads(archive.read(entry)), path).to_dict()
                    digest.update(f"|{INFO_ENTRY}:{json.dumps(network, sort_keys=True)}".encode())
                    continue
                with archive.open(entry) as data:
                    entry_digest = hashlib.file_digest(data, "sha256").hexdigest()
                digest.update(f"|{entry.filename}:{entry.file_size}:{entry_digest}".encode())
        content = digest.hexdigest()
        if _file_signature(os.fstat(handle.fileno())) == signature:  # not written to while hashed
            with _checked_lock:
                _contents.pop(key, None)
                _contents[key] = (signature, content)
                while len(_contents) > CONTENT_MEMORY:
                    _contents.pop(next(iter(_contents)))
    return content


def network_digest(path: str | Path, content: str | None = None) -> str:
    """Key of a ``.keras`` file's SavedModel entry: its network (``content``, else :func:`network_content` of
    ``path``), the TensorFlow version and :data:`CACHE_FORMAT`."""
    import tensorflow as tf

    return _content_key(f"{CACHE_FORMAT}|{tf.__version__}", path, content)


def onnx_digest(path: str | Path, content: str | None = None) -> str:
    """Key of a ``.keras`` file's ONNX entry, computed without TensorFlow: its network (``content``, else
    :func:`network_content` of ``path``), the ONNX Runtime version (which checked the file against TensorFlow)
    and :data:`ONNX_FORMAT`."""
    import onnxruntime

    return _content_key(f"{ONNX_FORMAT}|{onnxruntime.__version__}", path, content)


def _content_key(prefix: str, path: str | Path, content: str | None) -> str:
    """An entry's key: 32 hex digits of the SHA-256 of ``prefix`` (its format and runtime) and the network
    (``content``, else :func:`network_content` of ``path``)."""
    text = f"{prefix}|{content if content is not None else network_content(path)}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def shipped_network_digest(path: str | Path) -> str:
    """Key of a ``.keras`` file's shipped ONNX file, computed without TensorFlow: its network entries and
    :data:`SHIPPED_FORMAT` (no runtime version: the file was checked against TensorFlow when the model was made,
    and ONNX Runtime reads older operator sets)."""
    return _directory_digest(path, SHIPPED_FORMAT)


def shipped_record_path(path: str | Path) -> Path | None:
    """``models/<name>.json`` of a model file in the shipped models folder (:func:`moleseg.core.config.models_dir`),
    or None for a model file anywhere else (a user's own model: converted in the per-machine cache)."""
    path = Path(path)
    try:
        if path.resolve().parent != models_dir().resolve():
            return None
    except OSError:
        return None
    return path.with_suffix(".json")


def shipped_onnx(path: str | Path) -> tuple[Path | None, str | None]:
    """The ONNX file shipped with the model file ``path`` and checked, or why it cannot be used.

    Returns ``(file, None)`` when ONNX Runtime is the runtime (and installed), ``path`` lies in the shipped
    models folder, its record's :data:`SHIPPED_ONNX_KEY` section names a file beside it that was converted from
    this very ``.keras`` file (:func:`shipped_network_digest`) and whose SHA-256 matches the record (hashed once
    per process while the file keeps its size, modification time and inode); ``(None, reason)`` when a
    shipped ONNX file is recorded but fails a check; ``(None, None)`` when none is recorded or wanted.
    """
    record_path = shipped_record_path(path)
    if (record_path is None or inference_runtime() != "onnxruntime"
            or importlib.util.find_spec("onnxruntime") is None):
        return None, None
    try:
        if not record_path.is_file() or record_path.stat().st_size > MAX_RECORD_BYTES:
            return None, None
        try:
            section = json.loads(record_path.read_text(encoding="utf-8")).get(SHIPPED_ONNX_KEY)
        except (ValueError, RecursionError) as error:  # not JSON, nested too deeply, a number of too many digits
            return None, f"the shipped ONNX file cannot be checked ({record_path.name}: {parse_failure(error)})"
        if not isinstance(section, dict):
            return None, None
        file = record_path.parent / Path(str(section.get("file", ""))).name
        if section.get("network_digest") != shipped_network_digest(path):
            return None, f"{file.name} was converted from another version of {Path(path).name}"
        if not file.is_file():
            return None, f"{file.name} is missing"
        signature = _signature({file.name: file})
        with _checked_lock:
            if _checked.get(file) == signature:
                return file, None
        if _sha256(file) != section.get("sha256"):
            return None, f"{file.name} does not match the SHA-256 in {record_path.name}"
    except (OSError, ValueError, AttributeError, zipfile.BadZipFile) as error:
        return None, f"the shipped ONNX file cannot be checked ({type(error).__name__}: {error})"
    with _checked_lock:
        _checked[file] = signature
    return file, None


def _complete(entry: Path) -> Path | None:
    """``entry`` when it is complete (marked most recently used: kept longest), else None."""
    if not (entry / COMPLETE_MARKER).is_file():
        return None
    os.utime(entry / COMPLETE_MARKER)
    return entry


def _cached(path: str | Path, key: Callable[[str | Path], str]) -> Path | None:
    """The complete entry filed under ``key(path)``, or None, also when the network in ``path`` cannot be read
    (:func:`network_content`: a damaged file, whose load then says what is wrong with it)."""
    try:
        digest = key(path)
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    return _complete(inference_cache_root() / digest)


def cached_entry(path: str | Path) -> Path | None:
    """The complete SavedModel entry of the network in ``path``, or None (none yet, the cache is off, or the
    file cannot be read)."""
    if not cache_enabled():
        return None
    return _cached(path, network_digest)


def cached_onnx(path: str | Path) -> Path | None:
    """The complete ONNX entry of the network in ``path`` (usable or not: see :func:`onnx_usable`), or None
    (none yet, ONNX Runtime not wanted or not installed, or the file cannot be read)."""
    if not onnx_wanted():
        return None
    return _cached(path, onnx_digest)


def onnx_usable(entry: Path) -> bool:
    """True when an ONNX entry holds a network that matched TensorFlow (not an :data:`UNUSABLE_FILE`)."""
    return (entry / ONNX_FILE).is_file()


def any_cached(path: str | Path) -> bool:
    """True when a new process can predict the network in ``path`` without rebuilding its Keras model:
    its checked shipped ONNX file or a usable ONNX entry (no TensorFlow then), or a SavedModel entry."""
    if shipped_onnx(path)[0] is not None:
        return True
    onnx_entry = cached_onnx(path)
    if onnx_entry is not None and onnx_usable(onnx_entry):
        return True
    return cached_entry(path) is not None


def _entry_files(entry: Path) -> dict[str, Path]:
    """Every file of an entry but its metadata, by its ``/``-separated path inside the entry.

    Raises
    ------
    ValueError
        A symbolic link or anything but a regular file or folder inside the entry.
    """
    files = {}
    for path in sorted(entry.rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode):
            continue
        name = path.relative_to(entry).as_posix()
        if not stat.S_ISREG(mode):
            raise ValueError(f"{name} is not a regular file")
        if name != COMPLETE_MARKER:
            files[name] = path
    return files


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _signature(files: dict[str, Path]) -> tuple[tuple[str, int, int, int], ...]:
    """Name, size, modification time and inode of each file: what a check once per process relies on."""
    stats = {name: path.stat() for name, path in files.items()}
    return tuple((name, item.st_size, item.st_mtime_ns, item.st_ino) for name, item in stats.items())


#: Entries whose files matched their recorded SHA-256 in this process, with the files' signature then.
_checked: dict[Path, tuple[tuple[str, int, int, int], ...]] = {}
_checked_lock = threading.Lock()


def entry_problem(entry: Path) -> str | None:
    """Why the files of a complete cache entry cannot be trusted, or None when each matches the SHA-256 its
    metadata records (and no file was added or removed). Hashed once per process while the files keep their
    size, modification time and inode."""
    try:
        if entry.is_symlink():
            return "the entry is a symbolic link"
        files = _entry_files(entry)
        signature = _signature(files)
        with _checked_lock:
            if _checked.get(entry) == signature:
                return None
        marker = entry / COMPLETE_MARKER
        if marker.stat().st_size > MAX_MARKER_BYTES:
            return f"its metadata is larger than {MAX_MARKER_BYTES} bytes"
        recorded = json.loads(marker.read_text(encoding="utf-8")).get("sha256")
        if not isinstance(recorded, dict):
            return "its metadata records no SHA-256"
        if sorted(recorded) != sorted(files):
            return (f"its files ({', '.join(sorted(files)) or 'none'}) are not those recorded "
                    f"({', '.join(sorted(map(str, recorded))) or 'none'})")
        for name, path in files.items():
            if _sha256(path) != recorded[name]:
                return f"{name} does not match its recorded SHA-256"
    except (OSError, ValueError, AttributeError, RecursionError) as error:
        return f"its files cannot be checked ({type(error).__name__}: {error})"
    with _checked_lock:
        _checked[entry] = signature
    return None


def load_cached_function(entry: Path) -> Callable[[Any], Any]:
    """The prediction function saved in a cache entry: ``(B, S, S, 3)`` float32 -> ``(B, S, S, C)``; its
    ``entry`` attribute is the entry (check the entry first: :func:`entry_problem`)."""
    import tensorflow as tf

    module = tf.saved_model.load(str(entry))
    function = module.predict
    function.module = module  # keeps the restored variables alive as long as the function
    function.entry = entry
    return function


def save_cached_function(path: str | Path, model: Any, input_shape: tuple[int, ...], *, content: str) -> Path:
    """Save ``model`` (the folded inference model of the network in ``path``, loaded from the bytes whose
    :func:`network_content` is ``content``) as a cache entry with the signature ``(None, *input_shape)``
    float32; returns the entry. Older entries beyond :data:`KEEP_ENTRIES` are removed.

    Raises
    ------
    OSError
        The cache folder cannot be written, or the cache is off.
    Exception
        Whatever TensorFlow raises for a network it cannot save (the caller predicts without the cache).
    """
    import tensorflow as tf

    require_cache_enabled()

    # Only a flat list of the network's variables is saved beside the function, not the Keras model's
    # object graph of ~200 layers, which loads several times slower (``docs/performance.md``).
    module = tf.Module()
    module.network_variables = [weight.value for weight in model.weights]
    module.predict = tf.function(lambda images: model(images, training=False),
                                 input_signature=[tf.TensorSpec((None, *input_shape), tf.float32)])
    return _write_entry(path, network_digest(path, content), lambda folder: tf.saved_model.save(module, str(folder)))


def _write_entry(path: str | Path, digest: str, fill: Callable[[Path], None]) -> Path:
    """Write the cache entry ``digest`` of the network in ``path``: ``fill(folder)`` writes its files into a
    temporary folder, whose metadata (the SHA-256 of each file) is written last and which is then renamed
    into place (a killed write leaves no half entry; when another process wrote the entry meanwhile, the
    first is kept); then older entries are pruned. Returns the entry."""
    root = inference_cache_root()
    root.mkdir(parents=True, exist_ok=True)
    entry = root / digest
    temporary = root / f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}"
    try:
        fill(temporary)
        hashes = {name: _sha256(file) for name, file in _entry_files(temporary).items()}
        metadata = {"model": Path(path).name, "sha256": hashes}
        atomic_write(temporary / COMPLETE_MARKER, json.dumps(metadata, indent=1, sort_keys=True).encode())
        if entry.exists():
            shutil.rmtree(temporary)
        else:
            os.replace(temporary, entry)
            with _checked_lock:  # written by this process: checked
                _checked[entry] = _signature(_entry_files(entry))
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    prune(root)
    return entry


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where there is none), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def onnx_session(file: Path) -> Any:
    """An ONNX Runtime session for the ONNX file ``file``: CUDA when ONNX Runtime's GPU build is installed,
    else the CPU; errors-only logging; one intra-op thread per usable core (:func:`usable_cores`);
    worker threads that sleep instead of spinning between runs (on a 2-core CPU spinning threads took the
    cores the measuring and PNG-encoding threads needed after each network call, ``docs/performance.md``)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: not the optimiser's notes on folded constants
    options.intra_op_num_threads = usable_cores()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    available = onnxruntime.get_available_providers()
    providers = [name for name in ("CUDAExecutionProvider", "CPUExecutionProvider") if name in available]
    return onnxruntime.InferenceSession(str(file), options, providers=providers)


def load_onnx_function(entry: Path) -> Callable[[Any], Any]:
    """ONNX Runtime running an entry's network (:func:`onnx_session`): ``(B, S, S, 3)`` float32 ->
    ``(B, S, S, C)`` numpy; its ``entry`` attribute is the entry (check the entry first:
    :func:`entry_problem`).

    Raises
    ------
    FileNotFoundError
        The entry records an unusable conversion.
    Exception
        Whatever ONNX Runtime raises for a damaged file.
    """
    if not onnx_usable(entry):
        raise FileNotFoundError(f"{entry}: no usable ONNX network ({(entry / UNUSABLE_FILE).read_text().strip()})")
    predict = onnx_function(entry / ONNX_FILE)
    predict.entry = entry
    return predict


def onnx_function(file: Path) -> Callable[[Any], Any]:
    """ONNX Runtime running the ONNX file ``file`` (:func:`onnx_session`): ``(B, S, S, 3)`` float32 ->
    ``(B, S, S, C)`` numpy; its ``session`` attribute is the session, its ``file`` attribute ``file``.

    Raises
    ------
    Exception
        Whatever ONNX Runtime raises for a damaged file.
    """
    session = onnx_session(file)
    input_name = session.get_inputs()[0].name

    def predict(images: Any) -> Any:
        return session.run(None, {input_name: images})[0]

    predict.session = session
    predict.file = file
    return predict


def save_onnx(path: str | Path, model: Any, input_shape: tuple[int, ...],
              reference: Callable[[Any], Any], *, content: str) -> Path:
    """Convert ``model`` (the folded inference model of the network in ``path``, loaded from the bytes whose
    :func:`network_content` is ``content``) to ONNX and store it as
    an ONNX entry if ONNX Runtime's probabilities on a probe batch are within
    :data:`moleseg.network.onnx_export.ONNX_TOLERANCE` of ``reference``'s (TensorFlow's prediction
    function); a failed conversion or a mismatch is stored as :data:`UNUSABLE_FILE` instead. Returns the
    entry (complete either way).

    Raises
    ------
    OSError
        The cache folder cannot be written, or the cache is off.
    """
    from moleseg.network.onnx_export import ONNX_TOLERANCE, largest_difference, onnx_bytes, probe_batch

    require_cache_enabled()

    def fill(folder: Path) -> None:
        folder.mkdir()
        try:
            (folder / ONNX_FILE).write_bytes(onnx_bytes(model, input_shape))
            probe = probe_batch(input_shape)
            difference = largest_difference(load_onnx_function(folder)(probe), reference(probe))
            if not difference <= ONNX_TOLERANCE:
                raise ValueError(f"probabilities differ from TensorFlow's by {difference:.2g} "
                                 f"(more than {ONNX_TOLERANCE:g})")
        except Exception as error:  # noqa: BLE001 -- any conversion failure: TensorFlow predicts instead
            (folder / ONNX_FILE).unlink(missing_ok=True)
            (folder / UNUSABLE_FILE).write_text(f"{type(error).__name__}: {error}\n")

    return _write_entry(path, onnx_digest(path, content), fill)


def discard(entry: Path) -> None:
    """Remove a cache entry (a damaged one), ignoring errors: another process may be removing it too."""
    with _checked_lock:
        _checked.pop(entry, None)
    if entry.is_symlink():
        entry.unlink(missing_ok=True)
    else:
        shutil.rmtree(entry, ignore_errors=True)


def prune(root: Path, keep: int = KEEP_ENTRIES) -> list[Path]:
    """Remove all but the ``keep`` most recently used complete entries under ``root``, and temporary
    folders older than an hour (left by killed saves); the removed paths."""
    removed = []
    entries = []
    for child in root.iterdir() if root.is_dir() else []:
        marker = child / COMPLETE_MARKER
        if marker.is_file():
            entries.append((marker.stat().st_mtime, child))
        elif child.name.startswith(TEMPORARY_PREFIX) and time.time() - child.stat().st_mtime > 3600:
            removed.append(child)
    entries.sort(reverse=True)
    removed.extend(child for _, child in entries[keep:])
    for child in removed:
        shutil.rmtree(child, ignore_errors=True)
    return removed
