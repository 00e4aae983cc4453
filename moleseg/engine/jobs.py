"""Background trainings for the app: one at a time, each in its own process, surviving a browser refresh.

The app calls :func:`start_training` with a :class:`moleseg.network.train.TrainConfig` dictionary. It creates a
run folder under the runs folder and starts ``python -m moleseg.network.runner RUN_DIR`` in a new session (so
neither a browser refresh nor the end of the Streamlit session stops it). The runner trains with
:func:`moleseg.network.train.train`, writing its progress to ``RUN_DIR/progress.json`` (atomically, at most every
:data:`PROGRESS_INTERVAL_S` and at every phase change) and stopping when ``RUN_DIR/cancel`` appears
(:func:`request_cancel`).

Files of a job, besides those of :mod:`moleseg.engine.runs` (names: :class:`moleseg.engine.runs.RunFiles`)::

    job.json       the TrainConfig dictionary, the runs folder, when it was asked for
    progress.json  status, phase, epoch/step, loss, metrics, ETA, runner pid, error (see JobStatus)
    cancel         present: please stop (checked after every training step)
    job.log        the runner's stdout and stderr

The lock. ``<runs>/.training.lock`` is an ``flock`` (:class:`filelock.FileLock`) held by the runner process for
its whole life; the kernel releases it when that process ends, however it ends (SIGKILL, reboot), so there are
no stale locks, pids or timers. ``<runs>/.training.lock.json`` (the sidecar) says who holds it, for the
"Another training is running" message only. :func:`active_training` tries the lock without waiting.

The handover, without races: the app checks the lock (a quick answer for the usual case), then starts the
runner with the writing end of a pipe. The runner takes the lock itself (:func:`hold_training_lock`, waiting
at most :data:`RUNNER_LOCK_WAIT_S`), writes the sidecar and then one byte to the pipe; :func:`start_training`
returns once it has read that byte, so after it returns the lock is held for the new run. Two apps starting at
the same moment both start a runner, but only one runner gets the lock: the other exits with
:data:`BUSY_EXIT_STATUS` and its app raises :class:`TrainingBusy` and removes the unused run folder. A runner
that dies before taking the lock closes the pipe (end of file): its run is reported as died, with its
``job.log``. No TensorFlow at import: only the runner imports :mod:`moleseg.network.train`, after taking the lock.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import select
import shutil
import subprocess
import sys
import time
import types
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from filelock import FileLock, Timeout

from moleseg.core import options
from moleseg.core.config import models_dir, runs_dir as default_runs_dir
from moleseg.engine.runs import RunFiles, read_json, write_json
from moleseg.engine.session import training_cache_dir

#: Module run as ``python -m RUNNER_MODULE RUN_DIR`` for each training (it imports TensorFlow).
RUNNER_MODULE = "moleseg.network.runner"
LOCK_NAME = ".training.lock"
JOB_FILE = RunFiles.JOB
PROGRESS_FILE = RunFiles.PROGRESS
CANCEL_FILE = RunFiles.CANCEL
LOG_FILE = RunFiles.JOB_LOG
#: Shortest time between two writes of ``progress.json`` within one phase, in seconds.
PROGRESS_INTERVAL_S: float = 0.5
#: The lock's sidecar (pid, run folder, start time of the holder): information for messages, not the lock.
LOCK_INFO_NAME = LOCK_NAME + ".json"
#: Longest wait of a new runner for the lock, in seconds (a probe by :func:`active_training` holds it for
#: microseconds; a running training holds it for hours, and then the new runner gives up).
RUNNER_LOCK_WAIT_S: float = 2.0
#: Longest wait of :func:`start_training` for its runner to say it holds the lock, in seconds.
HANDOVER_TIMEOUT_S: float = 60.0
#: What the runner writes to its ready pipe once it holds the lock.
READY_BYTE = b"L"
#: Exit status of a runner that found the lock taken (``EX_TEMPFAIL``).
BUSY_EXIT_STATUS = 75

#: Phases whose progress counts training steps; the others count their own work (:data:`PHASE_UNITS`).
TRAINING_PHASES: tuple[str, ...] = ("train", "epoch")
#: What ``step``/``steps`` count in the other phases.
PHASE_UNITS: dict[str, str] = {"prepare": "pairs", "validate": "images", "calibrate": "image passes",
                               "evaluate": "image passes"}
#: Status values of a job (``progress.json`` and :class:`JobStatus`).
ACTIVE_STATUSES: tuple[str, ...] = ("starting", "running")
FINAL_STATUSES: tuple[str, ...] = ("done", "cancelled", "failed", "died")

#: Shipped model to fine-tune from, by number of classes (in the models folder).
SHIPPED_MODELS: dict[int, str] = {3: "dermoscopy.keras", 2: "cells.keras"}

#: ``moleseg.network.train.TrainConfig`` defaults (``model`` as a dictionary), from :mod:`moleseg.core.options`.
TRAIN_DEFAULTS: dict[str, Any] = options.defaults()
#: ``moleseg.network.build.ModelConfig`` defaults.
MODEL_DEFAULTS: dict[str, Any] = TRAIN_DEFAULTS["model"]


class TrainingBusy(RuntimeError):
    """Another training holds the lock; the message says which and since when."""


def train_defaults() -> dict[str, Any]:
    """A fresh copy of :data:`TRAIN_DEFAULTS`."""
    return copy.deepcopy(TRAIN_DEFAULTS)


def default_weights(n_classes: int, models: str | Path | None = None) -> str:
    """Where a new training starts: the shipped model of ``n_classes`` (fine-tuning) when it is
    installed, else ``"imagenet"``."""
    shipped = Path(models or models_dir()) / SHIPPED_MODELS.get(int(n_classes), "")
    return str(shipped) if shipped.is_file() and shipped.suffix == ".keras" else "imagenet"


# --------------------------------------------------------------------------------------------------
# checking a configuration without TensorFlow

#: How images meet the network (``TrainConfig.inference``), with the Train page's labels.
INFERENCE_FITS: dict[str, str] = dict(zip(options.INFERENCES, ("resized whole", "crops and tiles at their own scale")))


def _shipped_info(n_classes: int, models: str | Path | None = None) -> dict[str, Any]:
    """The ``moleseg.json`` of the installed shipped model of ``n_classes`` ({} when none can be read;
    read once per version of the file: the Train page asks on every rerun)."""
    shipped = Path(models or models_dir()) / SHIPPED_MODELS.get(int(n_classes), "")
    try:
        return dict(_read_info_once(str(shipped), shipped.stat().st_mtime_ns)) if shipped.is_file() else {}
    except OSError:
        return {}


@functools.lru_cache(maxsize=8)
def _read_info_once(path: str, modified_ns: int) -> Mapping[str, Any]:
    """``moleseg.json`` of the model file at ``path`` as of ``modified_ns`` ({} when unreadable)."""
    from moleseg.core.modelinfo import ModelFileError, read_model_info

    try:
        return types.MappingProxyType(dict(read_model_info(path)))
    except ModelFileError:
        return types.MappingProxyType({})


def default_inference(n_classes: int, models: str | Path | None = None) -> str:
    """``"resize"`` or ``"tiles"``: what the installed shipped model of ``n_classes`` uses (its
    ``moleseg.json``), else tiles for two classes (cells) and resize for three (moles)."""
    value = _shipped_info(n_classes, models).get("inference")
    if value in INFERENCE_FITS:
        return str(value)
    return "tiles" if int(n_classes) == 2 else "resize"


def shipped_default(name: str, n_classes: int, models: str | Path | None = None) -> Any:
    """Option ``name``'s value in the installed shipped model of ``n_classes`` (its ``moleseg.json`` keeps
    ``tile_scale`` and ``colour_constancy`` at the top), so that fine-tuning it keeps how its images are
    prepared; the option's default when the model does not say or says something invalid."""
    item = options.option(name)
    value = _shipped_info(n_classes, models).get(name)
    if isinstance(item.default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if value is None or item.problems(value):
        return item.default
    return value


def check_config(config: dict[str, Any]) -> list[str]:
    """Problems of a training configuration, as messages for people (empty when it can start).

    Every option and every rule between options (:func:`moleseg.core.options.problems`, the one check),
    then the files: the weights file and every folder exist and the training folders hold pairs. No
    TensorFlow.
    """
    from moleseg.core.pairing import PairingError, pair_folders

    problems: list[str] = options.problems(config)
    weights = str(config.get("weights", "imagenet"))
    if weights not in ("none", "imagenet") and not Path(weights).is_file():
        problems.append(f"initial weights file not found: {weights}")
    for images_key, masks_key in options.FOLDER_PAIRS:
        group_images = list(config.get(images_key) or [])
        group_masks = list(config.get(masks_key) or [])
        if len(group_images) != len(group_masks):
            continue  # reported by options.problems
        for image_dir, mask_dir in zip(group_images, group_masks):
            missing = [d for d in (image_dir, mask_dir) if not Path(d).is_dir()]
            if missing:
                problems.extend(f"folder not found: {d}" for d in missing)
                continue
            if images_key == "images":
                try:
                    pair_folders(image_dir, mask_dir)
                except PairingError as error:
                    problems.append(f"{image_dir}: {error}")
    return problems


# --------------------------------------------------------------------------------------------------
# the lock

def lock_path(runs: str | Path | None = None) -> Path:
    """The lock file of the runs folder ``runs`` (default :func:`moleseg.core.config.runs_dir`)."""
    return Path(runs or default_runs_dir()) / LOCK_NAME


def lock_info_path(runs: str | Path | None = None) -> Path:
    """The lock's sidecar: who holds it (``pid``, ``run_dir``, ``started``), for messages only."""
    return Path(runs or default_runs_dir()) / LOCK_INFO_NAME


def training_lock(runs: str | Path | None = None) -> FileLock:
    """The training lock of ``runs``: an ``flock`` on :data:`LOCK_NAME`, released by the kernel when its
    holder's process ends, however it ends. The lock file itself stays (its content means nothing)."""
    return FileLock(lock_path(runs), thread_local=False, preserve_lock_file=True, fallback_to_soft=False)


def active_training(runs: str | Path | None = None) -> dict[str, Any] | None:
    """Who holds the training lock (``pid``, ``run_dir``, ``started`` from its sidecar), or None when it is free.

    Asks the kernel by trying the lock without waiting (and letting it go at once when that succeeds).
    """
    reap_children()
    if not lock_path(runs).exists():
        return None
    lock = training_lock(runs)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        info = read_json(lock_info_path(runs))
        info = info if isinstance(info, dict) else {}
        return {key: info.get(key) for key in ("pid", "run_dir", "started")}
    lock.release()
    return None


def _busy_message(info: dict[str, Any]) -> str:
    run = Path(info["run_dir"]).name if info.get("run_dir") else "a new run"
    details = [f"process {info['pid']}"] if info.get("pid") else []
    if info.get("started"):
        details.append(f"started {time.strftime('%Y-%m-%d %H:%M', time.localtime(float(info['started'])))}")
    where = f" ({', '.join(details)})" if details else ""
    return (f"Another training is running: {run}{where}. Only one training runs at a time; "
            "wait for it to finish or cancel it.")


def _signal_ready(ready_fd: int | None, message: bytes) -> None:
    if ready_fd is None:
        return
    try:
        if message:
            os.write(ready_fd, message)
    finally:
        os.close(ready_fd)


@contextmanager
def hold_training_lock(runs: str | Path, run_dir: str | Path, ready_fd: int | None = None) -> Iterator[None]:
    """Hold the training lock of ``runs`` for ``run_dir`` while the body runs (the runner's whole life).

    Waits at most :data:`RUNNER_LOCK_WAIT_S` for the lock, writes the sidecar, then writes
    :data:`READY_BYTE` to ``ready_fd`` (the pipe of :func:`start_training`) and closes it.

    Raises
    ------
    TrainingBusy
        When another process holds the lock (``ready_fd`` is closed without a word).
    """
    lock = training_lock(runs)
    try:
        lock.acquire(timeout=RUNNER_LOCK_WAIT_S)
    except Timeout:
        _signal_ready(ready_fd, b"")
        raise TrainingBusy(_busy_message(active_training(runs) or {})) from None
    try:
        write_json(lock_info_path(runs), {"pid": os.getpid(), "run_dir": str(run_dir), "started": time.time()})
        _signal_ready(ready_fd, READY_BYTE)
        yield
    finally:
        lock_info_path(runs).unlink(missing_ok=True)
        lock.release()


# --------------------------------------------------------------------------------------------------
# starting, cancelling, reading

#: Runner processes started by this process, until :func:`reap_children` has collected their exit status.
_CHILDREN: list[subprocess.Popen] = []


def reap_children() -> int:
    """Collect the exit status of every finished runner this process started (no zombie processes stay
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


def start_training(config: dict[str, Any], runs: str | Path | None = None, *, name: str | None = None,
                   python: str | None = None) -> Path:
    """Start a training in the background and return its run folder.

    Parameters
    ----------
    config
        A :class:`moleseg.network.train.TrainConfig` dictionary (see :data:`TRAIN_DEFAULTS`); its ``name``
        defaults to the run folder's name.
    runs
        The runs folder (default :func:`moleseg.core.config.runs_dir`).
    name
        Start of the run folder's name (a timestamp is appended).
    python
        Interpreter of the runner (default: this one).

    Raises
    ------
    TrainingBusy
        When another training is running.
    ValueError
        When :func:`check_config` finds a problem (all of them, one per line).
    """
    problems = check_config(config)
    if problems:
        raise ValueError("\n".join(problems))
    runs = Path(runs or default_runs_dir()).resolve()
    holder = active_training(runs)
    if holder is not None:
        raise TrainingBusy(_busy_message(holder))
    run_dir = new_run_dir(runs, name or config.get("name"))
    config = copy.deepcopy(config)
    config["name"] = config.get("name") or run_dir.name
    if not config.get("cache_dir"):
        config["cache_dir"] = training_cache_dir(data_folders(config))
    write_json(RunFiles(run_dir).job, {"config": config, "runs_dir": str(runs), "requested": time.time()})
    write_json(RunFiles(run_dir).progress, {"status": "starting", "phase": "start", "message": "starting",
                                         "pid": None, "started": time.time(), "updated": time.time()})
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    ready_read, ready_write = os.pipe()
    try:
        # the child imports the same moleseg as this process, from any working folder (checkout or wheel)
        package_parent = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))
        with open(RunFiles(run_dir).job_log, "ab") as log:
            child = subprocess.Popen([python or sys.executable, "-m", RUNNER_MODULE, str(run_dir),
                                      f"--ready-fd={ready_write}"],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, close_fds=True, pass_fds=(ready_write,), env=env)
    except BaseException:
        os.close(ready_read)
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        os.close(ready_write)  # the runner holds the only writing end now: its exit means end of file
    _CHILDREN.append(child)
    with os.fdopen(ready_read, "rb") as ready:
        answered = select.select([ready], [], [], HANDOVER_TIMEOUT_S)[0]
        answer = ready.read(len(READY_BYTE)) if answered else b""
    if answer == READY_BYTE:
        return run_dir
    if not answered:  # alive but silent: stop it; read_job reports the run as died, job.log says why
        child.kill()
    try:
        child.wait(timeout=HANDOVER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
    if child.returncode == BUSY_EXIT_STATUS:  # another start won the race for the lock
        shutil.rmtree(run_dir, ignore_errors=True)
        raise TrainingBusy(_busy_message(active_training(runs) or {}))
    return run_dir


def data_folders(config: dict[str, Any]) -> list[str]:
    return [str(f) for key in ("images", "masks", "validation_images", "validation_masks", "test_images",
                               "test_masks") for f in (config.get(key) or [])]

def folder_in_use(path: str | Path) -> bool:
    """True when the training holding the lock (if any) reads files under ``path`` (a session folder's
    ``in_use`` check: :class:`moleseg.engine.session.SessionFolder`)."""
    holder = active_training()
    if not holder or not holder.get("run_dir"):
        return False
    job = read_json(RunFiles(holder["run_dir"]).job, {}) or {}
    root = Path(path).resolve()
    return any(Path(f).resolve().is_relative_to(root) for f in data_folders(job.get("config") or {}))


def request_cancel(run_dir: str | Path) -> None:
    """Ask the training of ``run_dir`` to stop after its current step, or its current batch of images while
    validating, calibrating or evaluating (it keeps its best model)."""
    path = RunFiles(run_dir).cancel
    path.write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))


def cancel_requested(run_dir: str | Path) -> bool:
    return RunFiles(run_dir).cancel.exists()


@dataclass
class JobStatus:
    """What the app shows of one background training (read from its files)."""

    run_dir: Path
    status: str
    phase: str = ""
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    eta_seconds: float | None = None
    message: str = ""
    error: str | None = None
    started: float | None = None
    updated: float | None = None
    result: dict[str, Any] = field(default_factory=dict)
    cancel_requested: bool = False

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def in_training_steps(self) -> bool:
        """True while the progress counts training steps (``train``, ``epoch``); other phases
        (``prepare``, ``validate``, ``calibrate``, ``evaluate``) count their own images."""
        return self.phase in TRAINING_PHASES

    @property
    def fraction(self) -> float:
        """Share of the current phase done, 0..1: of all training steps while training, of the phase's own
        images while validating, calibrating or evaluating (1 when done)."""
        if self.status == "done":
            return 1.0
        if not self.in_training_steps:
            return max(0.0, min(1.0, self.step / self.steps)) if self.steps else 0.0
        if not self.epochs:
            return 0.0
        steps = max(1, self.steps)
        done = max(0, self.epoch - 1) * steps + min(self.step, steps)
        if self.phase == "epoch":
            done = self.epoch * steps
        return max(0.0, min(1.0, done / (self.epochs * steps)))

    def describe(self) -> str:
        """The progress in words: phase, step/total and the phase's ETA, e.g. ``"calibrate: 12/40 image
        passes; ETA 30 s"`` or ``"epoch 2/5, step 3/10 (train); ETA 1 min 05 s"``."""
        eta = f"; ETA {format_duration(self.eta_seconds)}"
        if self.in_training_steps and self.epochs:
            return f"epoch {self.epoch}/{self.epochs}, step {self.step}/{self.steps} ({self.phase}){eta}"
        if self.steps:
            return f"{self.phase}: {self.step}/{self.steps} {PHASE_UNITS.get(self.phase, 'steps')}{eta}"
        return f"{self.phase}: {self.message}"

    @property
    def elapsed_seconds(self) -> float | None:
        if self.started is None:
            return None
        end = time.time() if self.active else (self.updated or time.time())
        return max(0.0, end - self.started)


def _holds_lock(run_dir: Path) -> bool:
    """True when the training lock of ``run_dir``'s runs folder is held for ``run_dir``."""
    job = read_json(RunFiles(run_dir).job, {}) or {}
    holder = active_training(job.get("runs_dir") or run_dir.parent)
    return bool(holder and holder.get("run_dir") and Path(holder["run_dir"]).resolve() == run_dir.resolve())


def read_job(run_dir: str | Path) -> JobStatus:
    """The status of the training in ``run_dir``; a runner that died without saying so is ``died``."""
    run_dir = Path(run_dir)
    progress = read_json(RunFiles(run_dir).progress)
    if not isinstance(progress, dict):
        state = read_json(RunFiles(run_dir).state, {}) or {}
        status = state.get("status") or ("done" if RunFiles(run_dir).model.is_file() else "unknown")
        return JobStatus(run_dir=run_dir, status="done" if status == "running" else status,
                         epoch=int(state.get("epoch") or 0), epochs=int(state.get("epochs") or 0))
    status = str(progress.get("status", "unknown"))
    error = progress.get("error")
    if status in ACTIVE_STATUSES and not _holds_lock(run_dir):
        status = "died"
        error = error or f"the training process ended without a word; see {LOG_FILE} in {run_dir}"
    return JobStatus(
        run_dir=run_dir, status=status, phase=str(progress.get("phase") or ""),
        epoch=int(progress.get("epoch") or 0), epochs=int(progress.get("epochs") or 0),
        step=int(progress.get("step") or 0), steps=int(progress.get("steps") or 0),
        loss=progress.get("loss"), metrics=dict(progress.get("metrics") or {}),
        eta_seconds=progress.get("eta_seconds"), message=str(progress.get("message") or ""),
        error=error, started=progress.get("started"), updated=progress.get("updated"),
        result=dict(progress.get("result") or {}), cancel_requested=cancel_requested(run_dir),
    )


def list_jobs(runs: str | Path | None = None) -> list[Path]:
    """Run folders started by the app (they hold ``job.json``), newest first."""
    runs = Path(runs or default_runs_dir())
    if not runs.is_dir():
        return []
    found = [p for p in runs.iterdir() if RunFiles(p).job.is_file()]
    return sorted(found, key=lambda p: RunFiles(p).job.stat().st_mtime, reverse=True)


def log_tail(run_dir: str | Path, lines: int = 30) -> str:
    """The last ``lines`` lines of the run's ``log.txt`` and ``job.log``."""
    parts = []
    for name in (RunFiles.LOG, RunFiles.JOB_LOG):
        path = Path(run_dir) / name
        if path.is_file():
            with path.open("rb") as stream:
                stream.seek(0, os.SEEK_END)
                size = stream.tell()
                stream.seek(max(0, size - 64 * 1024))
                text = stream.read().decode("utf-8", "replace")
            parts.append(f"--- {name} ---\n" + "\n".join(text.splitlines()[-lines:]))
    return "\n".join(parts)


def format_duration(seconds: float | None) -> str:
    """``"1 h 02 min"``, ``"3 min 05 s"``, ``"42 s"`` or ``"—"``."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "\u2014"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


# --------------------------------------------------------------------------------------------------
# the runner's progress callback (the runner itself: moleseg.network.runner)

class ProgressWriter:
    """The training's progress callback: writes ``progress.json`` and answers True once cancelled."""

    def __init__(self, run_dir: str | Path, interval_s: float = PROGRESS_INTERVAL_S) -> None:
        self.run_dir = Path(run_dir)
        self.interval_s = interval_s
        self.started = time.time()
        previous = read_json(RunFiles(self.run_dir).progress, {}) or {}
        if previous.get("started"):
            self.started = float(previous["started"])
        self.last_write = 0.0
        self.last_phase: str | None = None
        self.state: dict[str, Any] = {}

    def write(self, **values: Any) -> None:
        self.state.update(values)
        self.state.update(pid=os.getpid(), started=self.started, updated=time.time())
        write_json(RunFiles(self.run_dir).progress, self.state)
        self.last_write = time.time()

    def __call__(self, progress: Any) -> bool:
        phase = progress.phase
        now = time.time()
        if phase != self.last_phase or phase in ("epoch", "done") or now - self.last_write >= self.interval_s:
            self.write(status="running", phase=phase, epoch=progress.epoch, epochs=progress.epochs,
                       step=progress.step, steps=progress.steps,
                       loss=progress.loss if progress.loss is not None else self.state.get("loss"),
                       metrics=dict(progress.metrics or {}),
                       eta_seconds=progress.eta_seconds,
                       message=progress.message or phase)
            self.last_phase = phase
        return cancel_requested(self.run_dir)
