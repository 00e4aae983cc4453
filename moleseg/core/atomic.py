"""Atomic file writes: readers see either the old file or the whole new one, never half of it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    The bytes go to a temporary file in the same folder (``.<name>.<random>.tmp``), which is flushed
    to disk and then moved over ``path`` with :func:`os.replace`. On any error the temporary file is
    removed and ``path`` is left as it was. The folder must exist.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; replaced if it exists.
    data : bytes-like

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    TypeError
        ``data`` is not bytes-like (checked before anything is written).
    OSError
        The folder is missing or not writable, the disk is full, ...
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write needs bytes, not {type(data).__name__}")
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    descriptor = os.open(temporary, flags, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    return target
