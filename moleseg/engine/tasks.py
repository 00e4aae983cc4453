"""Background tasks of the app (an evaluation, a dataset-wide scan): run in worker threads, keyed by
their inputs, kept in one registry per server so that their progress and result outlive the page's
reruns and page changes. No Streamlit and no TensorFlow here (the app holds one :class:`TaskRegistry`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from moleseg.core.config import MAX_TASKS_PER_USER
from moleseg.core.words import noun_for

#: Worker threads of a registry: tasks beyond this wait their turn.
TASK_WORKERS: int = 2
#: Finished tasks a registry keeps, counted when a task is submitted (the oldest finished ones are dropped
#: beyond it; running ones never are).
FINISHED_TASKS_KEPT: int = 32

#: ``progress(done, total, text)``: ``done`` of ``total`` steps, and what is being done.
Progress = Callable[[int, int, str], None]


@dataclass
class Task:
    """One background task: its key, its progress and, once finished, its result or its error."""

    key: Hashable
    owner: str | None = None
    future: Future = field(init=False, repr=False)
    done_steps: int = 0
    total_steps: int = 0
    text: str = ""

    @property
    def finished(self) -> bool:
        return self.future.done()

    @property
    def fraction(self) -> float:
        """Share of the work done, 0..1."""
        return min(1.0, self.done_steps / self.total_steps) if self.total_steps > 0 else 0.0

    @property
    def error(self) -> BaseException | None:
        """The exception the task raised, None while it runs or when it succeeded."""
        return self.future.exception() if self.future.done() else None

    @property
    def result(self) -> Any:
        """What the task returned (None while it runs or when it failed)."""
        return self.future.result() if self.future.done() and self.future.exception() is None else None

    def report(self, done: int, total: int, text: str = "") -> None:
        self.done_steps, self.total_steps, self.text = int(done), int(total), text

    def wait(self, timeout: float | None = None) -> None:
        """Block until the task has finished (or ``timeout`` seconds have passed)."""
        try:
            self.future.result(timeout=timeout)
        except Exception:
            pass


class TooManyTasks(ValueError):
    """A task refused because its owner has :attr:`TaskRegistry.per_owner` tasks unfinished; one sentence."""


class TaskRegistry:
    """Tasks by key, run by a small thread pool. Submitting a key that is running joins that task;
    a finished one is kept (``FINISHED_TASKS_KEPT`` at most) until it is submitted again with
    ``restart=True``. A task submitted with an ``owner`` is refused while that owner has ``per_owner`` tasks
    running or waiting, and an owner's tasks run on :attr:`running_per_owner` workers at most (one less than the
    pool has, at least one), so that another owner's task starts when a worker is free: the others wait their
    turn, oldest first (the server's own, without an owner, are never held back)."""

    def __init__(self, workers: int = TASK_WORKERS, finished_kept: int = FINISHED_TASKS_KEPT,
                 per_owner: int = MAX_TASKS_PER_USER) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="moleseg-task")
        self._tasks: OrderedDict[Hashable, Task] = OrderedDict()
        self._lock = threading.Lock()
        self._waiting: list[tuple[Task, Callable[[Progress], Any]]] = []  # submitted, not started, oldest first
        self._running: dict[str | None, int] = {}  # tasks running, by owner
        self._closed = False
        self.workers = workers
        self.finished_kept = finished_kept
        self.per_owner = per_owner

    @property
    def running_per_owner(self) -> int:
        """Most workers one owner's tasks take at once: one less than the pool has, at least one."""
        return max(1, self.workers - 1)

    def get(self, key: Hashable) -> Task | None:
        with self._lock:
            return self._tasks.get(key)

    def submit(self, key: Hashable, work: Callable[[Progress], Any], *, restart: bool = False,
               owner: str | None = None) -> Task:
        """Run ``work(progress)`` in a worker thread under ``key``, unless a task of that key is
        running (that one is returned) or finished and ``restart`` is false. ``owner``: the user asking
        (None: the server itself, never refused).

        Raises
        ------
        TooManyTasks
            When ``owner`` already has :attr:`per_owner` tasks running or waiting (nothing submitted).
        """
        with self._lock:
            task = self._tasks.get(key)
            if task is not None and (not task.finished or not restart):
                return task
            unfinished = 0 if owner is None else sum(1 for other in self._tasks.values()
                                                     if other.owner == owner and not other.finished)
            if owner is not None and unfinished >= self.per_owner:
                raise TooManyTasks(f"You already have {unfinished} {noun_for(unfinished, 'task')} (evaluations, "
                                   f"dataset scans, model preparations) running or waiting, the most one user may "
                                   f"have at once: start this one when one of them has finished.")
            task = Task(key=key, owner=owner)
            task.future = Future()
            self._tasks[key] = task
            self._tasks.move_to_end(key)
            self._waiting.append((task, work))
            self._start_waiting()
            self._forget_old()
        return task

    def _start_waiting(self) -> None:
        """Start the oldest waiting tasks a free worker may take (their owner below :attr:`running_per_owner`);
        with the lock held."""
        free = self.workers - sum(self._running.values())
        for entry in list(self._waiting):
            task, work = entry
            if free <= 0 or self._closed:
                return
            if task.owner is not None and self._running.get(task.owner, 0) >= self.running_per_owner:
                continue
            self._waiting = [other for other in self._waiting if other is not entry]
            self._running[task.owner] = self._running.get(task.owner, 0) + 1
            free -= 1
            self._pool.submit(self._run, task, work)

    def _run(self, task: Task, work: Callable[[Progress], Any]) -> None:
        """Run one started task in a worker, then let the next waiting one take the worker."""
        task.future.set_running_or_notify_cancel()
        result, error = None, None
        try:
            result = work(task.report)
        except BaseException as raised:  # kept as the task's error, as the pool's future kept it
            error = raised
        with self._lock:
            self._running[task.owner] -= 1
            self._start_waiting()
        if error is None:
            task.future.set_result(result)
        else:
            task.future.set_exception(error)

    def __len__(self) -> int:
        with self._lock:
            return len(self._tasks)

    def shutdown(self) -> None:
        """Stop taking tasks and wait for the running ones; those still waiting fail (never started)."""
        with self._lock:
            self._closed = True
            waiting, self._waiting = self._waiting, []
        for task, _ in waiting:
            task.future.set_exception(RuntimeError("the server stopped before this task started"))
        self._pool.shutdown(wait=True)

    def _forget_old(self) -> None:
        finished = [key for key, task in self._tasks.items() if task.finished]
        for key in finished[:max(0, len(finished) - self.finished_kept)]:
            del self._tasks[key]

