"""A per-machine cache of the inference graph of a ``.keras`` file, so that a new process starts fast.

Loading a ``.keras`` file rebuilds every Keras layer from its config (about 1 s of CPU for the shipped
dermoscopy model), folding its BatchNormalization (:func:`moleseg.network.inference.fold_batchnorm`)
and tracing the prediction function cost about 1 s more: together most of ``moleseg predict``'s start-up
after importing TensorFlow. The first time a network is predicted with, its folded prediction function
(fixed input signature ``(None, S, S, 3)`` float32) is saved as a TensorFlow SavedModel under
``cache_dir() / "inference"``; later processes load that graph directly (about 0.35 s of CPU, then
0.3 s for the first call's graph optimisation), without Keras rebuilding the model. The probabilities are the same computation (equal to the last bit in our runs).

The cache key is a digest of the ``.keras`` archive's entries other than ``moleseg.json`` (their names, CRC-32
and sizes, read from the ZIP directory, so the 10 MB weights are not read) and of the TensorFlow version and
:data:`CACHE_FORMAT`: re-training the model or upgrading TensorFlow misses the cache, re-calibrating it (which
only rewrites ``moleseg.json``) does not. Entries are written to a temporary folder and renamed into place,
so a killed save leaves no half entry; only the :data:`KEEP_ENTRIES` most recently used are kept.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any, Callable

from moleseg.core.atomic import TEMPORARY_PREFIX
from moleseg.core.config import cache_dir
from moleseg.core.modelinfo import INFO_ENTRY

#: Changes whenever what is cached changes (the folding, the signature): old entries are then ignored.
CACHE_FORMAT: str = "folded-savedmodel-2"
#: Cache entries kept (most recently used first); older ones are removed when a new one is written.
KEEP_ENTRIES: int = 8
#: Environment variable that turns the cache off when set to ``0`` (the test suite does, but for the tests
#: of the cache itself).
CACHE_ENV: str = "MOLESEG_INFERENCE_CACHE"
#: Marker file written last into an entry: an entry without it is incomplete and ignored.
COMPLETE_MARKER: str = "complete"


def inference_cache_root() -> Path:
    """The folder of the cached inference graphs: ``cache_dir() / "inference"``."""
    return cache_dir() / "inference"


def cache_enabled() -> bool:
    """False when :data:`CACHE_ENV` is ``0`` now (read at every call)."""
    return os.environ.get(CACHE_ENV, "1") != "0"


def network_digest(path: str | Path) -> str:
    """Hex digest of a ``.keras`` file's network (every archive entry but ``moleseg.json``: name, CRC-32,
    size) with the TensorFlow version and :data:`CACHE_FORMAT`."""
    import tensorflow as tf

    digest = hashlib.sha256(f"{CACHE_FORMAT}|{tf.__version__}".encode())
    with zipfile.ZipFile(path) as archive:
        for entry in sorted(archive.infolist(), key=lambda item: item.filename):
            if entry.filename != INFO_ENTRY:
                digest.update(f"|{entry.filename}:{entry.CRC:08x}:{entry.file_size}".encode())
    return digest.hexdigest()[:32]


def cached_entry(path: str | Path) -> Path | None:
    """The complete cache entry of the network in ``path``, or None (none yet, or the cache is off)."""
    if not cache_enabled():
        return None
    entry = inference_cache_root() / network_digest(path)
    if not (entry / COMPLETE_MARKER).is_file():
        return None
    os.utime(entry / COMPLETE_MARKER)  # most recently used: kept longest
    return entry


def load_cached_function(entry: Path) -> Callable[[Any], Any]:
    """The prediction function saved in a cache entry: ``(B, S, S, 3)`` float32 -> ``(B, S, S, C)``."""
    import tensorflow as tf

    module = tf.saved_model.load(str(entry))
    function = module.predict
    function.module = module  # keeps the restored variables alive as long as the function
    return function


def save_cached_function(path: str | Path, model: Any, input_shape: tuple[int, ...]) -> Path:
    """Save ``model`` (the folded inference model of the network in ``path``) as a cache entry with the
    signature ``(None, *input_shape)`` float32; returns the entry. Older entries beyond
    :data:`KEEP_ENTRIES` are removed.

    Raises
    ------
    OSError
        The cache folder cannot be written, or the cache is off.
    Exception
        Whatever TensorFlow raises for a network it cannot save (the caller predicts without the cache).
    """
    import tensorflow as tf

    if not cache_enabled():
        raise OSError(f"the inference cache is off ({CACHE_ENV}=0)")

    # Only a flat list of the network's variables is saved beside the function, not the Keras model's
    # object graph of ~200 layers: loading it then takes ~0.35 s of CPU instead of ~0.85 s.
    module = tf.Module()
    module.network_variables = [weight.value for weight in model.weights]
    module.predict = tf.function(lambda images: model(images, training=False),
                                 input_signature=[tf.TensorSpec((None, *input_shape), tf.float32)])
    root = inference_cache_root()
    root.mkdir(parents=True, exist_ok=True)
    entry = root / network_digest(path)
    temporary = root / f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}"
    try:
        tf.saved_model.save(module, str(temporary))
        (temporary / COMPLETE_MARKER).write_text(f"{Path(path).name}\n")
        if entry.exists():  # another process saved the same network meanwhile: keep the first
            shutil.rmtree(temporary)
        else:
            os.replace(temporary, entry)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    prune(root)
    return entry


def discard(entry: Path) -> None:
    """Remove a cache entry (a damaged one), ignoring errors: another process may be removing it too."""
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
