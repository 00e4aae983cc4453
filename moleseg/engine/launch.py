"""Starting a training: the one way the app, ``moleseg train`` and studies start, resume and wait for one.

:func:`start_training` writes the request (``job.json``, :class:`JobRequest`) into the run folder and starts
``python -m moleseg.network.runner RUN_DIR`` (:data:`RUNNER_MODULE`, the one child entry point; its arguments
in its environment, :mod:`moleseg.engine.childargs`) in its own session. The child takes the training lock,
trains with :func:`moleseg.network.train.train` (resuming when the request says so), writes its progress to ``progress.json`` (:class:`moleseg.engine.jobs.ProgressWriter`) and stops
when ``cancel`` appears (:func:`request_cancel`). With ``wait=True`` the caller follows it to the end (the CLI and
studies); otherwise it returns once the child holds the lock (the app: a browser refresh does not stop it).

The lock (:mod:`moleseg.engine.trainlock`): one per user of the machine, held by the child for its whole
life; whoever finds it taken gets one sentence naming the run, who started it and the pid
(:meth:`moleseg.engine.trainlock.TrainingHolder.sentence`), or waits with ``wait_for_lock``.

The handover, without races: the caller checks the lock (a quick answer for the usual case), then starts the
child with the writing end of a pipe. The child takes the lock (waiting at most
:data:`moleseg.engine.trainlock.RUNNER_LOCK_WAIT_S`),
writes the sidecar and then one byte to the pipe; :func:`start_training` goes on once it has read that byte.
Of two starts at the same moment only one child gets the lock: the other exits with
:data:`moleseg.engine.trainlock.BUSY_EXIT_STATUS` and its caller raises
:class:`moleseg.engine.trainlock.TrainingBusy` (or tries again when it waits for the lock). A child that dies
before taking the lock closes the pipe: its run is reported as died, with its ``job.log``. A child followed
with ``wait=True`` dies with its caller (``PR_SET_PDEATHSIG``), so a killed ``moleseg train`` leaves no training
behind. No TensorFlow here.
"""

from __future__ import annotations

import copy
import ctypes
import os
import re
import select
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

from moleseg.core import options
from moleseg.core.atomic import atomic_write, open_for_append
from moleseg.core.modelinfo import check_keras_file
from moleseg.core.userspace import owning_space
from moleseg.engine.childargs import child_command
from moleseg.engine.jobs import (JobRequest, JobStatus, ProgressWriter, check_config, data_folders, read_job,
                                 read_request)
from moleseg.engine.runs import RunFiles, RunRecordError, read_config, read_state
from moleseg.engine.session import training_cache_dir
from moleseg.engine.trainlock import (BUSY_EXIT_STATUS, READY_BYTE, TrainingBusy, TrainingHolder, active_training,
                                      lasting_holder)

#: Module run as ``python -m RUNNER_MODULE RUN_DIR`` for each training (it imports TensorFlow).
RUNNER_MODULE = "moleseg.network.runner"
#: Longest wait of :func:`start_training` for its child to say it holds the lock, in seconds.
HANDOVER_TIMEOUT_S: float = 60.0
#: Time between two looks at a followed training (progress, log) or at a taken lock, in seconds.
POLL_S: float = 0.5


# --------------------------------------------------------------------------------------------------
# starting, following, cancelling

#: Children started by this process, until :func:`reap_children` has collected their exit status.
_CHILDREN: list[subprocess.Popen] = []


def run_folder_is_a_file(path: str) -> str:
    """The refusal of a run folder ``path`` (as the user gave it) that is a file."""
    return f"{path} is a file, not a folder: choose a folder name for the run"


def reap_children() -> int:
    """Collect the exit status of every finished child this process started (no zombie processes stay
    behind); returns how many are still running. Called whenever the app looks at trainings."""
    for child in list(_CHILDREN):
        if child.poll() is not None:
            _CHILDREN.remove(child)
    return len(_CHILDREN)


def safe_run_name(name: str | None) -> str:
    """A folder name from free text: letters, digits, ``-``, ``_``, ``.`` only (at most 60), or ``run``."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", (name or "").strip()).strip(".-_")
    return text[:60] or "run"


def new_run_dir(runs: str | Path, name: str | None = None) -> Path:
    """A new, empty run folder ``<runs>/<name>-<YYYYmmdd-HHMMSS>`` (suffixed when taken)."""
    runs = Path(runs)
    runs.mkdir(parents=True, exist_ok=True)
    stem = f"{safe_run_name(name)}-{time.strftime('%Y%m%d-%H%M%S')}"
    for index in range(1000):
        candidate = runs / (stem if index == 0 else f"{stem}-{index}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a run folder in {runs}")


def resume_config(run_dir: str | Path, epochs: int | None = None) -> dict[str, Any]:
    """The configuration of ``run_dir``'s interrupted training (its ``config.json``), with ``epochs`` raised
    to ``epochs`` when given (the only option a resumed run may change), once the files the training resumes
    from are checked: ``config.json``, ``state.json`` and, after a completed epoch, ``last.keras``.

    Raises
    ------
    ValueError
        Nothing to resume, or a damaged ``config.json``, ``state.json`` or ``last.keras`` (named, in one line).
    """
    files = RunFiles(run_dir)
    try:
        saved = read_config(run_dir)
        state = read_state(run_dir)
    except RunRecordError as error:
        raise ValueError(f"{error}; the run cannot be resumed") from None
    if saved is None:
        raise ValueError(f"{run_dir}: nothing to resume (no {RunFiles.CONFIG} in it)")
    if state is not None and state.epoch > 0 and files.last.is_file():
        check_keras_file(files.last)
    if epochs:
        before = saved.get("epochs") or 0
        problems = options.option("epochs").problems(before) if before else []
        if problems:  # the file's own value, e.g. 1e999 (JSON's infinity), which int() refused with a stack trace
            raise ValueError(f"{files.config}: {problems[0]}; the run cannot be resumed")
        saved["epochs"] = max(int(epochs), before)
    return saved


def child_environment() -> dict[str, str]:
    """A child's environment (a training's runner, a queued training's waiter): this one, unbuffered, importing
    the same moleseg from any working folder."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))
    return env


def _die_with_parent() -> None:
    """In the child, before it runs: be killed when the process that started it ends (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _spawn(run_dir: Path, python: str | None, follow: bool) -> tuple[subprocess.Popen, bytes]:
    """Start the child of ``run_dir`` and wait for its word: returns it and :data:`READY_BYTE` or ``b""``."""
    ready_read, ready_write = os.pipe()
    try:
        with open_for_append(RunFiles(run_dir).job_log) as log:
            command, env = child_command(python, RUNNER_MODULE, [str(run_dir), f"--ready-fd={ready_write}"],
                                         child_environment())  # the run's folder kept out of ps
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, close_fds=True, pass_fds=(ready_write,),
                                     env=env, preexec_fn=_die_with_parent if follow else None)
    except BaseException:
        os.close(ready_read)
        raise
    finally:
        os.close(ready_write)  # the child holds the only writing end now: its exit means end of file
    _CHILDREN.append(child)
    if not follow:  # nobody waits for it here: a thread collects its exit status (no <defunct> zombie)
        threading.Thread(target=child.wait, name=f"reap-{child.pid}", daemon=True).start()
    with os.fdopen(ready_read, "rb") as ready:
        answered = select.select([ready], [], [], HANDOVER_TIMEOUT_S)[0]
        answer = ready.read(len(READY_BYTE)) if answered else b""
    if answer != READY_BYTE:
        if not answered:  # alive but silent: stop it; read_job reports the run as died, job.log says why
            child.kill()
        try:
            child.wait(timeout=HANDOVER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
    return child, answer


def _forget(run_dir: Path, created: bool) -> None:
    """Remove what a start refused as busy wrote into ``run_dir`` (and the folder, when it made it empty)."""
    for path in (RunFiles(run_dir).job, RunFiles(run_dir).progress, RunFiles(run_dir).job_log):
        path.unlink(missing_ok=True)
    if created:
        try:
            run_dir.rmdir()
        except OSError:
            pass


def _wait_for_lock(say: Callable[[str], None] | None,
                   give_way: Callable[[TrainingHolder | None], bool] | None = None) -> None:
    """Return once the training lock is free (and ``give_way``, asked at each look with the holder, says False),
    saying once who holds it."""
    told = False
    while True:
        holder = active_training()
        waits = give_way(holder) if give_way else False
        if holder is None and not waits:
            return
        if say and not told and holder is not None:
            say(f"waiting: {holder.sentence().split(';')[0]}")
            told = True
        time.sleep(POLL_S)


def example_cache(named: str | None, run_dir: Path) -> str | None:
    """The example cache of a training in ``run_dir`` whose configuration names ``named``: for a run in a user's
    own folder (shared mode, :func:`moleseg.core.userspace.owning_space`) their
    :attr:`~moleseg.core.userspace.UserSpace.example_cache`, or ``named`` when it lies inside it (a named cache),
    so that what it holds counts in their quota; elsewhere ``named`` (None: the app's cache folder)."""
    space = owning_space(run_dir)
    if space is None:
        return named or None
    own = space.example_cache.resolve()
    return named if named and Path(named).resolve().is_relative_to(own) else str(own)


def start_training(config: dict[str, Any] | None, run_dir: str | Path, *, resume: bool = False,
                   wait: bool = False, origin: str = "app", wait_for_lock: bool = False, cluster_worker: bool = False,
                   give_way: Callable[[TrainingHolder | None], bool] | None = None,
                   on_start: Callable[[], None] | None = None,
                   on_progress: Callable[[JobStatus], None] | None = None,
                   echo: Callable[[str], None] | None = None, python: str | None = None) -> JobStatus:
    """Start a training of ``config`` in ``run_dir`` (or resume the one there) in its own process.

    Parameters
    ----------
    config
        A :class:`moleseg.network.train.TrainConfig` dictionary; its ``name`` defaults to the run folder's
        name. None with ``resume``: the run's own ``config.json`` (:func:`resume_config`).
    run_dir
        The run folder: new or empty (e.g. :func:`new_run_dir`), or an interrupted run with ``resume``.
    resume
        Continue the interrupted training of ``run_dir`` after its last completed epoch.
    wait
        Follow the training to its end (progress to ``on_progress``, the child's output lines to ``echo``); an
        interrupt (Ctrl-C) asks it to stop and waits for it. Otherwise return once it holds the lock.
    origin
        Who starts it (a key of :data:`ORIGINS`), shown to whoever finds the lock taken.
    wait_for_lock
        When another training runs, wait for it to end instead of raising :class:`TrainingBusy`.
    give_way
        With ``wait_for_lock``: asked at each look with the lock's holder (None when it is free); True waits on
        even when the lock is free (a study's turn in the queue, :class:`moleseg.engine.trainqueue.Turn`).
    on_start
        Called once the training holds the lock, or once its start failed (e.g. a turn in the queue given up).
    cluster_worker
        A worker of a multi-worker training other than the chief (``TF_CONFIG``): it joins the chief's training
        and takes no lock (the chief holds it).
    python
        Interpreter of the child (default: this one).

    Returns
    -------
    JobStatus
        The training's status: just started, or at its end with ``wait``.

    Raises
    ------
    TrainingBusy
        Another training runs (without ``wait_for_lock``); the message is its one sentence.
    ValueError
        A bad configuration (every problem, one per line), ``run_dir`` already holding a run (without
        ``resume``) or nothing to resume.
    """
    JobRequest(config={}, origin=origin)  # checks the origin
    run_dir = Path(run_dir).resolve()
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(run_folder_is_a_file(str(run_dir)))
    if resume:
        config = resume_config(run_dir, (config or {}).get("epochs"))
    elif RunFiles(run_dir).config.is_file():
        raise ValueError(f"{run_dir} already holds a run: use --resume to continue it or choose another --out")
    config = copy.deepcopy(config or {})
    problems = check_config(config)
    if problems:
        raise ValueError("\n".join(problems))
    config["name"] = config.get("name") or run_dir.name
    # an upload's examples stay in its session folder, whatever cache was named; else the user's own cache
    config["cache_dir"] = training_cache_dir(data_folders(config)) or example_cache(config.get("cache_dir"), run_dir)
    created = not run_dir.exists()
    while True:
        if wait_for_lock and not cluster_worker:
            _wait_for_lock(echo, give_way)
        elif not cluster_worker and (holder := lasting_holder()) is not None:
            raise TrainingBusy.of(holder)
        run_dir.mkdir(parents=True, exist_ok=True)
        JobRequest(config=config, resume=resume, origin=origin, requested=time.time()).write(run_dir)
        RunFiles(run_dir).cancel.unlink(missing_ok=True)
        ProgressWriter(run_dir, fresh=True).write(status="starting", phase="start", message="starting", pid=None)
        child, answer = _spawn(run_dir, python, follow=wait)
        if answer == READY_BYTE or child.returncode != BUSY_EXIT_STATUS:
            if on_start:
                on_start()
            break
        _forget(run_dir, created)  # another start won the race for the lock
        if not wait_for_lock:
            raise TrainingBusy.of(active_training())
    if not wait:
        return read_job(run_dir)
    return follow(run_dir, child, on_progress=on_progress, echo=echo)


def follow(run_dir: Path, child: subprocess.Popen, *, on_progress: Callable[[JobStatus], None] | None = None,
           echo: Callable[[str], None] | None = None) -> JobStatus:
    """Follow the training of ``run_dir`` (its child process ``child``) to its end; returns its last status.

    An interrupt (Ctrl-C) asks it to stop after its current step, waits for it, and is raised again.
    """
    log = RunFiles(run_dir).job_log
    offset = 0

    def tail() -> None:
        nonlocal offset
        if echo is None or not log.is_file():
            return
        with log.open("rb") as stream:
            stream.seek(offset)
            text = stream.read()
        complete = text.rfind(b"\n") + 1
        offset += complete
        for line in text[:complete].decode("utf-8", "replace").splitlines():
            echo(line)

    try:
        while child.poll() is None:
            if on_progress:
                on_progress(read_job(run_dir))
            tail()
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        request_cancel(run_dir)
        try:
            child.wait()
        except KeyboardInterrupt:
            child.kill()
            child.wait()
        raise
    finally:
        reap_children()
    tail()
    return read_job(run_dir)


def request_cancel(run_dir: str | Path) -> None:
    """Ask the training of ``run_dir`` to stop after its current step, or its current batch of images while
    validating, calibrating or evaluating (it keeps its best model)."""
    atomic_write(RunFiles(run_dir).cancel, time.strftime("%Y-%m-%dT%H:%M:%S\n").encode())  # a link there replaced


def folder_in_use(path: str | Path) -> bool:
    """True when the training holding the lock (if any) reads files under ``path`` (a session folder's
    ``in_use`` check: :class:`moleseg.engine.session.SessionFolder`)."""
    holder = active_training()
    if holder is None or holder.run_dir is None:
        return False
    try:
        request = read_request(holder.run_dir)
    except RunRecordError:
        return False
    root = Path(path).resolve()
    return request is not None and any(Path(f).resolve().is_relative_to(root) for f in data_folders(request.config))

