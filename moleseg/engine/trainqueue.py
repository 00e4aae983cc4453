"""The training queue: on a shared server a training asked for while the training lock is held waits its turn.

A queued request is two files. Its request, ``queued.json`` (:data:`REQUEST_NAME`: the validated configuration)
in a new run folder of the user's own runs, so that it counts in their quota; and its ticket in
``<data folder>/training-queue/`` (:func:`queue_dir`), ``<time ns>-<random>.json`` (:class:`Ticket`: whose runs,
which run folder), so that the tickets' names sort oldest first. Each ticket is owned by its waiter, a small
detached process (``python -m moleseg.engine.trainqueue``, :data:`WAITER_MODULE`, its own session as a training's
runner: a browser refresh does not stop it) that holds the ticket's ``flock`` (``<ticket>.lock``) for its whole
life, so the kernel releases it when the waiter ends, however it ends. A ticket whose lock is free has lost its
waiter: it is dropped (:func:`live_tickets`), never waited for.

The waiter waits for the waiter of the ticket just ahead of its own to end (blocking on that ticket's lock), then
for the training lock to be free; then, holding the queue's lock (:func:`queue_lock`), it starts the training
(:func:`moleseg.engine.launch.start_training`, origin ``app``), removes its ticket once the training holds the
training lock, and exits. Withdrawing removes the ticket (:func:`withdraw`); its waiter sees it gone and ends. At
most one ticket per user (per runs folder).

The queue is first come, first served, for a training whose own process waits for the lock too (a study's next
run, ``moleseg train --wait``): its :class:`Turn` takes a ticket of its own (kind ``study`` or ``terminal``, held by
that process) when it starts waiting, waits only for the tickets older than it, and gives its ticket up once its
training holds the lock; the waiters of later tickets wait behind it as behind any other. A study used to give way
while any ticket was live: users queueing one training after another held it back for ever.
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from filelock import FileLock, Timeout

from moleseg.core.atomic import open_for_append
from moleseg.core.config import data_dir
from moleseg.core.errors import first_line
from moleseg.engine import launch, trainlock
from moleseg.engine.childargs import child_arguments, child_command
from moleseg.engine.jobs import JobRequest, ProgressWriter, check_config
from moleseg.engine.runs import Kind, RunLog, RunRecordError, read_fields, write_json

#: Module run as ``python -m WAITER_MODULE RUN_DIR`` for each queued request.
WAITER_MODULE = "moleseg.engine.trainqueue"
#: The queue's folder in the data folder: one ticket (and its lock) per queued request.
QUEUE_FOLDER_NAME = "training-queue"
#: The request of a queued training in its run folder, and its waiter's log.
REQUEST_NAME, WAITER_LOG_NAME = "queued.json", "queue.log"
#: The names of tickets (``<time ns>-<random>.json``), not the temporaries of their atomic writes.
TICKET_GLOB = "[0-9]*-*.json"
#: Suffix of a ticket's lock (beside the ticket).
TICKET_LOCK_SUFFIX = ".lock"
#: Longest wait for the queue's lock (held for a ticket's registration, withdrawal or a training's start), seconds.
QUEUE_LOCK_WAIT_S: float = 30.0
#: Longest single wait of a waiter on a lock before it looks whether its ticket was withdrawn, in seconds.
WAITER_STEP_S: float = 0.5
#: Exit status of a waiter refused because its user already has a ticket.
ALREADY_QUEUED_STATUS = 3
#: What a user sees when they queue a second training.
ALREADY_QUEUED = "you already have a training in the queue: withdraw it first, or wait for it to start"


class QueueRefused(RuntimeError):
    """A request that cannot be queued (one sentence)."""


@dataclass(frozen=True)
class Ticket:
    """One queued request: ``path`` (its ticket file), ``owner`` (the user's runs folder), ``run_dir``, when it was
    queued, its waiter's process id and its ``kind`` (:data:`TRAINING`, or a :class:`Turn`'s)."""

    path: Path
    owner: Path
    run_dir: Path
    requested: float = 0.0
    pid: int | None = None
    kind: str = "training"

    @property
    def lock_path(self) -> Path:
        return _lock_path(self.path)


#: The fields of a ticket and their kinds (:class:`Ticket` holds them).
TICKET_FIELDS: dict[str, Kind] = {"owner": str, "run_dir": str, "requested": float, "pid": int, "kind": str}
#: The kind of a queued request's ticket (its waiter starts it); a :class:`Turn`'s kind is its process's.
TRAINING = "training"


def queue_dir() -> Path:
    """:data:`QUEUE_FOLDER_NAME` in the data folder (beside the training lock)."""
    return data_dir() / QUEUE_FOLDER_NAME


def queue_lock() -> FileLock:
    """The queue's lock (``flock``): held for a registration, a withdrawal and a queued training's start."""
    queue_dir().mkdir(parents=True, exist_ok=True)
    return trainlock.process_flock(queue_dir() / "queue.lock")


def _ticket_lock(path: Path) -> FileLock:
    return trainlock.process_flock(path)


def _read_ticket(path: Path) -> Ticket | None:
    try:
        values = read_fields(path, lambda fields: fields.given(TICKET_FIELDS))
    except RunRecordError:
        return None
    if not values or not values.get("owner") or not values.get("run_dir"):
        return None
    return Ticket(path, Path(values["owner"]), Path(values["run_dir"]), values.get("requested", 0.0),
                  values.get("pid"), values.get("kind") or TRAINING)


def _lock_path(ticket_path: Path) -> Path:
    """The lock beside the ticket ``ticket_path``."""
    return ticket_path.with_name(ticket_path.name + TICKET_LOCK_SUFFIX)


def _owned(ticket_path: Path) -> bool:
    """Whether the ticket's waiter holds its lock."""
    return trainlock.held(_ticket_lock(_lock_path(ticket_path)))


def _remove(ticket: Ticket) -> None:
    ticket.path.unlink(missing_ok=True)
    ticket.lock_path.unlink(missing_ok=True)


def _drop_request(run_dir: Path) -> None:
    """Remove a request that will not be trained: its ``queued.json``, its log and the folder when left empty."""
    for name in (REQUEST_NAME, WAITER_LOG_NAME):
        (run_dir / name).unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:
        pass


def live_tickets() -> list[Ticket]:
    """The queued requests, oldest first, whose waiter runs; a ticket whose waiter is gone is dropped on the way,
    with its request (it never blocks the queue)."""
    folder = queue_dir()
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob(TICKET_GLOB)):  # not an atomic write's temporary (a dot file)
        ticket = _read_ticket(path)
        if _owned(path):
            found += [ticket] if ticket is not None else []
            continue
        path.unlink(missing_ok=True)  # its waiter is gone: drop it
        _lock_path(path).unlink(missing_ok=True)
        if ticket is not None and ticket.kind == TRAINING:  # a turn's process waited itself: nothing to drop
            _drop_request(ticket.run_dir)
    return found


def queued_count() -> int:
    """How many requests (and :class:`Turn`'s) wait in the queue."""
    return len(live_tickets())


def own_ticket(owner: str | Path) -> tuple[Ticket, int] | None:
    """The queued request of the user whose runs folder is ``owner`` and its place in the queue (1: next)."""
    owner = Path(owner).resolve()
    for place, ticket in enumerate(live_tickets(), start=1):
        if ticket.owner == owner and ticket.kind == TRAINING:
            return ticket, place
    return None


def withdraw(owner: str | Path) -> bool:
    """Withdraw the queued request of the user whose runs folder is ``owner`` (its waiter then ends); False when
    there was none (it may just have started).

    Raises
    ------
    QueueRefused
        The queue is busy starting a training for longer than :data:`QUEUE_LOCK_WAIT_S`, or ``owner`` names a
        :class:`Turn` (a study's, a terminal's), which its own process holds until its training starts.
    """
    try:
        with queue_lock().acquire(timeout=QUEUE_LOCK_WAIT_S):
            found = own_ticket(owner)
            if found is None:
                turn = next((ticket for ticket in live_tickets() if ticket.owner == Path(owner).resolve()), None)
                if turn is not None:
                    raise QueueRefused(f"the queue cannot withdraw {turn.run_dir.name}: it is a {turn.kind} run's "
                                       f"turn, held by its own process until its training starts (stop the "
                                       f"{turn.kind} run instead)")
                return False
            ticket = found[0]
            ticket.path.unlink(missing_ok=True)  # the waiter, seeing it gone, ends and lets go of its lock
            (ticket.run_dir / REQUEST_NAME).unlink(missing_ok=True)
            return True
    except Timeout:
        raise QueueRefused("the queue is busy starting a training; try again in a moment") from None


# --------------------------------------------------------------------------------------------------
# queueing (the app) and the waiter process

def queue_training(config: dict[str, Any], run_dir: str | Path, owner: str | Path, *,
                   python: str | None = None) -> Ticket:
    """Queue the training of ``config`` in the new run folder ``run_dir`` for the user whose runs folder is
    ``owner``: writes ``queued.json`` there, starts its waiter and returns once the waiter holds its ticket.

    Raises
    ------
    ValueError
        A bad configuration (every problem, one per line).
    QueueRefused
        The user already has a request in the queue (:data:`ALREADY_QUEUED`), or the waiter could not start.
    """
    problems = check_config(config)
    if problems:
        raise ValueError("\n".join(problems))
    if own_ticket(owner) is not None:
        raise QueueRefused(ALREADY_QUEUED)
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / REQUEST_NAME, {"config": config, "requested": time.time()})
    ready_read, ready_write = os.pipe()
    arguments = [str(run_dir), "--owner", str(Path(owner).resolve()), f"--ready-fd={ready_write}"]
    arguments += ["--runner-python", python] if python else []
    try:
        with open_for_append(run_dir / WAITER_LOG_NAME) as log:
            command, env = child_command(None, WAITER_MODULE, arguments, launch.child_environment())
            waiter = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True, close_fds=True, pass_fds=(ready_write,), env=env)
    except BaseException:
        os.close(ready_read)
        _drop_request(run_dir)
        raise
    finally:
        os.close(ready_write)
    threading.Thread(target=waiter.wait, name=f"reap-{waiter.pid}", daemon=True).start()
    with os.fdopen(ready_read, "rb") as ready:
        answered = select.select([ready], [], [], QUEUE_LOCK_WAIT_S + launch.HANDOVER_TIMEOUT_S)[0]
        answer = ready.read(len(trainlock.READY_BYTE)) if answered else b""
    if answer != trainlock.READY_BYTE:
        if not answered:
            waiter.kill()
        status = waiter.wait()
        said = _last_line(run_dir / WAITER_LOG_NAME)
        _drop_request(run_dir)
        raise QueueRefused(ALREADY_QUEUED if status == ALREADY_QUEUED_STATUS else
                           f"the training could not be queued: its waiting process ended (status {status}"
                           + (f": {said})" if said else ")"))
    found = own_ticket(owner)
    if found is None:  # it started at once: the lock was free
        return Ticket(Path(), Path(owner).resolve(), run_dir, time.time())
    return found[0]


def _last_line(path: Path) -> str:
    """The last line of the waiter's log ``path`` (``""`` when there is none)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def _register(run_dir: Path, owner: Path) -> tuple[Ticket, FileLock] | None:
    """Under the queue's lock: take a new ticket's lock and write the ticket; None when ``owner`` has one."""
    with queue_lock().acquire(timeout=QUEUE_LOCK_WAIT_S):
        if any(ticket.owner == owner and ticket.kind == TRAINING for ticket in live_tickets()):
            return None
        return _new_ticket(owner, run_dir, TRAINING)


def _new_ticket(owner: Path, run_dir: Path, kind: str) -> tuple[Ticket, FileLock]:
    """Under the queue's lock: a new ticket, newest of all, and its lock, held by this process."""
    path = queue_dir() / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
    ticket = Ticket(path, owner, run_dir, time.time(), os.getpid(), kind)
    held = _ticket_lock(ticket.lock_path)
    held.acquire(blocking=False)  # before the ticket exists: a visible ticket is always held or dead
    write_json(path, {"owner": str(owner), "run_dir": str(run_dir), "requested": ticket.requested,
                      "pid": ticket.pid, "kind": kind})
    return ticket, held


class Turn:
    """The place in the queue of a training whose own process waits for the training lock (a study's next run:
    ``kind`` ``study``, ``folder`` the study's; ``moleseg train --wait``: ``terminal``, the run folder), as a
    ``give_way`` of :func:`moleseg.engine.launch.start_training` (True: wait on). Its ticket is taken at its first
    look, so that it waits for the tickets queued before it and those queued later wait for it (first come, first
    served); :meth:`release` (its ``on_start``, and always once it is over) gives it up."""

    def __init__(self, folder: str | Path, kind: str) -> None:
        self.folder, self.kind = Path(folder).resolve(), kind
        self.ticket: Ticket | None = None
        self._held: FileLock | None = None

    def ahead(self) -> int:
        """How many tickets are older than this turn's (taken now when it has none); every live ticket while the
        queue's lock stays busy or its folder cannot be written (it is tried again at the next look)."""
        if self.ticket is None:
            try:
                with queue_lock().acquire(timeout=WAITER_STEP_S):
                    self.ticket, self._held = _new_ticket(self.folder, self.folder, self.kind)
            except (Timeout, OSError):
                return queued_count()
        return sum(other.path.name < self.ticket.path.name for other in live_tickets())

    def __call__(self, holder: trainlock.TrainingHolder | None) -> bool:
        return self.ahead() > 0

    def release(self) -> None:
        """Give the ticket up (nothing when none was taken or it was given up already)."""
        if self.ticket is not None and self._held is not None:
            _remove(self.ticket)
            self._held.release()
        self.ticket = self._held = None


def _wait_for(lock: FileLock) -> None:
    """Wait at most :data:`WAITER_STEP_S` for ``lock`` to be free (taken and let go at once)."""
    try:
        lock.acquire(timeout=WAITER_STEP_S)
    except Timeout:
        return
    lock.release()


def _try_start(ticket: Ticket, python: str | None, log: RunLog) -> bool:
    """Start the ticket's training when it is first in the queue and the training lock is free; True when the
    waiter's work is over (started, withdrawn or failed), False to wait on."""
    with queue_lock().acquire(timeout=QUEUE_LOCK_WAIT_S):
        if not ticket.path.exists():
            log("withdrawn")
            _remove(ticket)
            _drop_request(ticket.run_dir)
            return True
        ahead = [other for other in live_tickets() if other.path.name < ticket.path.name]
        if ahead or trainlock.active_training() is not None:
            return False
        try:
            request = read_fields(ticket.run_dir / REQUEST_NAME, lambda fields: fields.get("config", dict))
            launch.start_training(request, ticket.run_dir, origin="app", python=python)
        except trainlock.TrainingBusy:
            return False  # another start took the lock a moment ago: wait for it to end
        except (ValueError, RunRecordError, OSError) as error:  # e.g. its data deleted while it waited
            log(f"not started: {first_line(error)}")
            _record_failure(ticket.run_dir, f"not started from the queue: {first_line(error)}")
        else:
            log("started")
        (ticket.run_dir / REQUEST_NAME).unlink(missing_ok=True)  # started or failed: nothing waits on it
        _remove(ticket)
        return True


def _record_failure(run_dir: Path, error: str) -> None:
    """Make the run of a request that could not start show as failed, with ``error``, among the user's trainings."""
    try:
        JobRequest(config={}, origin="app", requested=time.time()).write(run_dir)
        ProgressWriter(run_dir, fresh=True).write(status="failed", phase="start", message="failed", error=error)
    except OSError:
        pass


def _turn_over(ticket: Ticket, python: str | None, log: RunLog) -> bool:
    """:func:`_try_start`; False (wait on) while another holds the queue's lock too long."""
    try:
        return _try_start(ticket, python, log)
    except Timeout:
        return False


def wait_and_start(ticket: Ticket, python: str | None, log: RunLog) -> None:
    """The waiter's life: wait for the ticket just ahead to go and for the training lock to be free, then start
    (:func:`_try_start`); ends when the ticket is withdrawn."""
    while not _turn_over(ticket, python, log):
        ahead = [other for other in live_tickets() if other.path.name < ticket.path.name]
        if ahead:
            _wait_behind(ahead[-1])
        else:
            _wait_for(trainlock.training_lock())


def _wait_behind(ahead: Ticket) -> None:
    """:func:`_wait_for` the lock of the ticket ``ahead``; when that ticket went meanwhile (its waiter removed it
    with its lock), the lock file that waiting made again is removed too: no ticket is ever written under it again
    (a new ticket has a new name), so nothing else waits on it."""
    _wait_for(_ticket_lock(ahead.lock_path))
    if not ahead.path.exists():
        ahead.lock_path.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    """The waiter of one queued request (started by :func:`queue_training`)."""
    parser = argparse.ArgumentParser(prog=f"python -m {WAITER_MODULE}", description="Wait for a training's turn.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--owner", type=Path, required=True, help="the user's runs folder")
    parser.add_argument("--ready-fd", type=int, help="written once the ticket is held")
    parser.add_argument("--runner-python", help="interpreter of the training (default: this one)")
    args = parser.parse_args(child_arguments(argv))
    log = RunLog(args.run_dir / WAITER_LOG_NAME)
    try:
        registered = _register(args.run_dir.resolve(), args.owner.resolve())
    except Timeout:
        log("not queued: the queue stayed busy")
        return 1
    if registered is None:
        log("not queued: " + ALREADY_QUEUED)
        return ALREADY_QUEUED_STATUS
    ticket, held = registered
    log(f"queued ({ticket.path.name})")
    if args.ready_fd is not None:
        os.write(args.ready_fd, trainlock.READY_BYTE)
        os.close(args.ready_fd)
    try:
        wait_and_start(ticket, args.runner_python, log)
    finally:
        held.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
