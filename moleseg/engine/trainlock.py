"""The training lock: one training at a time for each user of the machine, whoever starts it.

``<data folder>/training.lock`` (:func:`lock_path`) is an ``flock`` (:class:`filelock.FileLock`) held by the
training process for its whole life (:func:`hold_training_lock`), so the kernel releases it when that process
ends, however it ends (SIGKILL, reboot): no stale locks, pids or timers. Its sidecar ``training.lock.json``
(:class:`TrainingHolder`) says which run holds it, who started it (the app, a terminal, a study) and the
process id, for the refusal's one sentence and for the Train page. :func:`active_training` tries the lock
without waiting; :func:`lasting_holder` also waits out a holder that is on its way out (:func:`holder_ending`: a
killed ``moleseg train``'s training process has its SIGKILL but has not yet let go of the lock). Starting a
training: :mod:`moleseg.engine.launch`.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from moleseg.core.config import data_dir
from moleseg.engine.runs import Kind, RunRecordError, read_fields, write_json

#: The lock file's name in the data folder (:func:`moleseg.core.config.data_dir`).
LOCK_NAME = "training.lock"
#: The lock's sidecar (:class:`TrainingHolder`): information for messages, not the lock.
LOCK_INFO_NAME = LOCK_NAME + ".json"
#: Longest wait of a new training process for the lock, in seconds (a probe by :func:`active_training` holds it
#: for microseconds; a running training holds it for hours, and then the new process gives up).
RUNNER_LOCK_WAIT_S: float = 2.0
#: How often :func:`lasting_holder` tries the lock again while its holder ends, in seconds.
ENDING_POLL_S: float = 0.05
#: ``PF_EXITING``, the kernel's flag of a process in its exit (``/proc/<pid>/stat``, field 9).
PF_EXITING = 0x4
#: What the training process writes to its ready pipe once it holds the lock.
READY_BYTE = b"L"
#: Exit status of a training process that found the lock taken (``EX_TEMPFAIL``).
BUSY_EXIT_STATUS = 75
#: Who starts trainings, with the words of the busy message.
ORIGINS: dict[str, str] = {"app": "the app", "terminal": "a terminal", "study": "a study"}


class TrainingBusy(RuntimeError):
    """Another training holds the lock; the message says which run, who started it and its pid, and ``holder``
    is who holds it (None when not known), so that a shared server can name it to its own user only."""

    def __init__(self, message: str, holder: TrainingHolder | None = None) -> None:
        super().__init__(message)
        self.holder = holder

    @classmethod
    def of(cls, holder: TrainingHolder | None) -> TrainingBusy:
        """The refusal naming ``holder`` (an unknown one when None: the lock's sidecar not written yet)."""
        holder = holder or TrainingHolder()
        return cls(holder.sentence(), holder)


@dataclass(frozen=True)
class TrainingHolder:
    """Who holds the training lock (the sidecar ``training.lock.json``).

    Attributes
    ----------
    run_dir
        The run folder being trained (None when the sidecar is not written yet or damaged).
    origin
        Who started it: a key of :data:`ORIGINS`, or ``""`` when unknown.
    pid
        The training process.
    started
        When it took the lock (seconds since the epoch).
    """

    run_dir: Path | None = None
    origin: str = ""
    pid: int | None = None
    started: float | None = None

    def sentence(self) -> str:
        """The one sentence of a refusal, e.g. ``"another training is running in run-1 (started by a terminal,
        pid 12; since 2026-01-02 10:00); wait for it or cancel it"``."""
        run = self.run_dir.name if self.run_dir else "a new run"
        details = [f"started by {ORIGINS[self.origin]}"] if self.origin in ORIGINS else []
        if self.pid:
            details.append(f"pid {self.pid}")
        if self.started:
            details.append(f"since {time.strftime('%Y-%m-%d %H:%M', time.localtime(self.started))}")
        where = f" ({', '.join(details)})" if details else ""
        return f"another training is running in {run}{where}; wait for it or cancel it"


#: The fields of the lock's sidecar and their kinds (:class:`TrainingHolder` holds them).
HOLDER_FIELDS: dict[str, Kind] = {"run_dir": str, "origin": str, "pid": int, "started": float}


def _read_holder(path: Path) -> TrainingHolder:
    """The sidecar at ``path``; an empty :class:`TrainingHolder` when missing or damaged (it is only words)."""
    try:
        values = read_fields(path, lambda fields: fields.given(HOLDER_FIELDS)) or {}
    except RunRecordError:
        return TrainingHolder()
    run_dir = values.pop("run_dir", None)
    origin = values.pop("origin", "")
    return TrainingHolder(run_dir=Path(run_dir) if run_dir else None, origin=origin if origin in ORIGINS else "",
                          **values)


def lock_path() -> Path:
    """The training lock of this user: :data:`LOCK_NAME` in :func:`moleseg.core.config.data_dir`."""
    return data_dir() / LOCK_NAME


def lock_info_path() -> Path:
    """The lock's sidecar (:class:`TrainingHolder`)."""
    return data_dir() / LOCK_INFO_NAME


def process_flock(path: str | Path) -> FileLock:
    """An ``flock`` on ``path`` (no soft fallback), released by the kernel when its holder's process ends, however
    it ends; the file itself stays (its content means nothing). The training lock, a study's, a queued request's."""
    return FileLock(path, thread_local=False, preserve_lock_file=True, fallback_to_soft=False)


#: How long :func:`held` tries a lock before it calls it held, in seconds: another look (this function, in another
#: process or thread) holds a lock for microseconds, its owner for its whole life, so a look that met another look
#: does not report an owner that is not there.
LOOK_GRACE_S: float = 0.02


def held(lock: FileLock) -> bool:
    """Whether another holds ``lock`` (tried for at most :data:`LOOK_GRACE_S`, let go at once)."""
    try:
        lock.acquire(timeout=LOOK_GRACE_S, poll_interval=LOOK_GRACE_S / 5)
    except Timeout:
        return True
    lock.release()
    return False


def training_lock() -> FileLock:
    """The training lock: a :func:`process_flock` on :func:`lock_path`."""
    lock_path().parent.mkdir(parents=True, exist_ok=True)
    return process_flock(lock_path())


def active_training() -> TrainingHolder | None:
    """Who holds the training lock, or None when it is free (:func:`held`)."""
    if not lock_path().exists() or not held(training_lock()):
        return None
    return _read_holder(lock_info_path())


def holder_ending(holder: TrainingHolder) -> bool:
    """Whether ``holder``'s process is on its way out, so that the kernel is about to release the lock: gone, a
    zombie, in its exit, or with a SIGKILL pending (a training process whose ``moleseg train`` was killed gets one
    from ``PR_SET_PDEATHSIG``; a large one takes a while to unmap its memory before its files close). Read from
    Linux's ``/proc``; False when the holder's pid is unknown or ``/proc`` is not there."""
    if not holder.pid or not Path("/proc/self/stat").exists():
        return False
    process = Path("/proc") / str(holder.pid)
    try:
        # bytes: the name in parentheses is whatever the process set (PR_SET_NAME), spaces, ")" and non-UTF-8 too
        fields = (process / "stat").read_bytes().rsplit(b")", 1)[1].split()
        status = (process / "status").read_bytes().decode("ascii", "replace")
    except FileNotFoundError:
        return True  # gone
    except OSError:
        return False
    state, flags = fields[0], int(fields[6])
    pending = 0
    for line in status.splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")):
            pending |= int(line.split()[1], 16)
    return state in (b"Z", b"X") or bool(flags & PF_EXITING) or bool(pending & (1 << (signal.SIGKILL - 1)))


def lasting_holder(wait_s: float = RUNNER_LOCK_WAIT_S) -> TrainingHolder | None:
    """Who holds the training lock (:func:`active_training`), None when it is free; a holder on its way out
    (:func:`holder_ending`) is waited for, at most ``wait_s`` seconds (then returned)."""
    deadline = time.monotonic() + wait_s
    while (holder := active_training()) is not None and holder_ending(holder) and time.monotonic() < deadline:
        time.sleep(ENDING_POLL_S)
    return holder


def _signal_ready(ready_fd: int | None, message: bytes) -> None:
    if ready_fd is None:
        return
    try:
        if message:
            os.write(ready_fd, message)
    finally:
        os.close(ready_fd)


@contextmanager
def hold_training_lock(run_dir: str | Path, origin: str, ready_fd: int | None = None) -> Iterator[None]:
    """Hold the training lock for ``run_dir`` while the body runs (the child's whole life).

    Waits at most :data:`RUNNER_LOCK_WAIT_S` for the lock, writes the sidecar, then writes :data:`READY_BYTE`
    to ``ready_fd`` (the pipe of :func:`start_training`) and closes it.

    Raises
    ------
    TrainingBusy
        When another process holds the lock (``ready_fd`` is closed without a word).
    """
    lock = training_lock()
    try:
        lock.acquire(timeout=RUNNER_LOCK_WAIT_S)
    except Timeout:
        _signal_ready(ready_fd, b"")
        raise TrainingBusy.of(active_training()) from None
    try:
        write_json(lock_info_path(), {"run_dir": str(Path(run_dir).resolve()), "origin": origin,
                                      "pid": os.getpid(), "started": time.time()})
        _signal_ready(ready_fd, READY_BYTE)
        yield
    finally:
        lock_info_path().unlink(missing_ok=True)
        lock.release()
