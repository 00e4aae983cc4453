"""Atomic file writes: readers see either the old file or the whole new one, never half of it.

One helper for the whole package. The new content goes to a temporary file in the same folder, named
``TEMPORARY_PREFIX + <random> + "." + <target name>`` (so it keeps the target's suffix, which e.g. Keras
needs); the file is flushed and fsynced, moved over the target with :func:`os.replace`, and the folder is
fsynced so that the rename survives a power cut too (where the system allows it). A killed writer can leave
a temporary behind; :func:`remove_stale_temporaries` removes those when nobody writes in the folder.

(The small PyPI helpers, e.g. ``fsync-replace``, write bytes or an open handle; Keras and :mod:`zipfile` need
a path, which :func:`atomic_output` gives.)
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Hashable, Iterator

#: Start of the name of every temporary file of :func:`atomic_output` (recognisable for cleanup).
TEMPORARY_PREFIX = ".moleseg-tmp."
#: The locks of :func:`process_lock`, by key.
_LOCKS: dict[Hashable, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def process_lock(key: Hashable) -> threading.Lock:
    """The one lock of ``key`` in this process (the same lock for equal keys, made on first use), for work two
    browser sessions may run at once. A second server process is not held."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


def path_lock(path: str | os.PathLike[str]) -> threading.Lock:
    """The one lock of ``path`` (a file or a folder, resolved) in this process (:func:`process_lock`), for a
    read-modify-write of it that two sessions may run at once (an atomic write alone keeps the file whole, not
    both changes). No lock file is left beside it; a second server process sharing the folder is not held."""
    return process_lock(Path(path).resolve())


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; silently skipped where folders cannot be opened (Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@contextmanager
def atomic_output(path: str | os.PathLike[str], *, sync_folder: bool = True) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the body succeeds it replaces ``path`` atomically.

    The body writes the whole file to the yielded path (any writer: bytes, Keras, zipfile). Afterwards it is
    fsynced and moved over ``path``, and the folder is fsynced. On any error the temporary file is removed
    and ``path`` is left as it was. The folder must exist. ``sync_folder=False`` leaves the folder's fsync to
    the caller (:func:`fsync_folder`), who writes several files into it and syncs it once after the last.

    Raises
    ------
    OSError
        The folder is missing or not writable, the disk is full, the body wrote nothing, ...; one that names
        no file (a full disk on a write) or the temporary names ``path``.
    """
    target = Path(path)
    temporary = target.with_name(f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}.{target.name}")
    try:
        yield temporary
        descriptor = os.open(temporary, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, target)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.strerror and error.filename in (None, str(temporary)):
            error.filename, error.filename2 = str(target), None  # the file the user asked for, not our temporary
        raise
    if sync_folder:
        _fsync_folder(target.parent)


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (the renames of :func:`atomic_output` with ``sync_folder=False``) to disk;
    a no-op where folders cannot be fsynced (Windows)."""
    _fsync_folder(Path(folder))


def atomic_write(path: str | os.PathLike[str], data: bytes, *, sync_folder: bool = True) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one
    (:func:`atomic_output`).

    Parameters
    ----------
    path : str or os.PathLike
        Destination; replaced if it exists. Its folder must exist.
    data : bytes-like
    sync_folder : bool
        False: the folder is not fsynced after the rename (see :func:`atomic_output`).

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
    with atomic_output(path, sync_folder=sync_folder) as temporary:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
    return Path(path)


def open_own_file(path: str | os.PathLike[str], flags: int, link_refusal: str) -> int:
    """A descriptor of the regular file ``path`` opened with ``flags`` (``os.O_RDONLY``, or ``os.O_WRONLY |
    os.O_APPEND | os.O_CREAT``, ...), never through a link: a folder that someone else may write (a shared run,
    study or shard folder) can hold a link of the file's name to any file of the account that opens it
    (``job.log -> ~/.ssh/authorized_keys``), or a named pipe that blocks it. Blocking again once open.

    Raises
    ------
    OSError
        ``path`` is a link (``"it is a link: <link_refusal>"``) or not a regular file, its ``filename``
        ``path``; or it cannot be opened.
    """
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(path, flags, 0o666)
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        raise OSError(errno.ELOOP, f"it is a link: {link_refusal}", os.fspath(path)) from None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "it is not a regular file", os.fspath(path))
        os.set_blocking(descriptor, True)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def open_for_append(path: str | os.PathLike[str], text: bool = False) -> IO[Any]:
    """``path`` opened to append to (a log), created when missing; never through a link nor into a named pipe
    (:func:`open_own_file`: OSError)."""
    descriptor = open_own_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, "nothing is written through it")
    return os.fdopen(descriptor, "a" if text else "ab")


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries that killed writers left in ``folder`` and its sub-folders; returns them.

    Call it only while nobody writes there (e.g. when a run folder is resumed).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.rglob(f"{TEMPORARY_PREFIX}*") if p.is_file())
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
