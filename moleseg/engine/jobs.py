"""Background trainings for the app: one at a time, each in its own process, surviving a browser refresh.

The app calls :func:`start_training` with a :class:`moleseg.network.train.TrainConfig` dictionary. It creates a
run folder under the runs folder, takes the lock ``<runs>/.training.lock`` and starts
``python -m moleseg.network.runner RUN_DIR`` in a new session (so neither a browser refresh nor the end of the
Streamlit session stops it). The runner trains with :func:`moleseg.network.train.train`, writing its progress
to ``RUN_DIR/progress.json`` (atomically, at most every :data:`PROGRESS_INTERVAL_S` and at every
phase change) and stopping when ``RUN_DIR/cancel`` appears (:func:`request_cancel`).

Files of a job, besides those of :mod:`moleseg.engine.runs`::

    job.json       the TrainConfig dictionary, the runs folder, when it was asked for
    progress.json  status, phase, epoch/step, loss, metrics, ETA, runner pid, error (see JobStatus)
    cancel         present: please stop (checked after every training step)
    job.log        the runner's stdout and stderr

A lock whose process is gone (killed, machine rebooted) is stale and is removed by the next
:func:`active_training`. No TensorFlow at import: only the runner imports :mod:`moleseg.network.train`.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moleseg.core import options
from moleseg.core.config import models_dir, runs_dir as default_runs_dir
from moleseg.engine.runs import read_json, write_json
from moleseg.engine.session import training_cache_dir

#: Module run as ``python -m RUNNER_MODULE RUN_DIR`` for each training (it imports TensorFlow).
RUNNER_MODULE = "moleseg.network.runner"
LOCK_NAME = ".training.lock"
JOB_FILE = "job.json"
PROGRESS_FILE = "progress.json"
CANCEL_FILE = "cancel"
LOG_FILE = "job.log"
#: Shortest time between two writes of ``progress.json`` within one phase, in seconds.
PROGRESS_INTERVAL_S: float = 0.5
#: A lock taken by the app but not yet handed to a runner is stale after this many seconds.
STARTING_LOCK_TIMEOUT_S: float = 120.0

#: Status values of a job (``progress.json`` and :class:`JobStatus`).
ACTIVE_STATUSES: tuple[str, ...] = ("starting", "running")
FINAL_STATUSES: tuple[str, ...] = ("done", "cancelled", "failed", "died")

# Choices of the training options, for the app's widgets: those of moleseg.core.options (the one source).
SOLVERS: tuple[str, ...] = options.SOLVERS
SCHEDULES: tuple[str, ...] = options.SCHEDULES
LOSSES: tuple[str, ...] = options.LOSSES
ARCHITECTURES: tuple[str, ...] = options.ARCHITECTURES
BACKBONES: tuple[str, ...] = options.BACKBONES
AUGMENTATIONS: tuple[str, ...] = options.AUGMENTATIONS
STRATEGIES: tuple[str, ...] = options.STRATEGIES
PRECISIONS: tuple[str, ...] = options.PRECISIONS
#: Shipped model to fine-tune from, by number of classes (in the models folder).
SHIPPED_MODELS: dict[int, str] = {3: "dermoscopy.keras", 2: "cells.keras"}

#: ``moleseg.network.train.TrainConfig`` defaults (``model`` as a dictionary), from :mod:`moleseg.core.options`.
TRAIN_DEFAULTS: dict[str, Any] = options.defaults()
#: ``moleseg.network.model.build.ModelConfig`` defaults.
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


def default_inference(n_classes: int, models: str | Path | None = None) -> str:
    """``"resize"`` or ``"tiles"``: what the installed shipped model of ``n_classes`` uses (its
    ``moleseg.json``), else tiles for two classes (cells) and resize for three (moles)."""
    from moleseg.core.modelinfo import ModelFileError, read_model_info

    shipped = Path(models or models_dir()) / SHIPPED_MODELS.get(int(n_classes), "")
    try:
        value = read_model_info(shipped).get("inference") if shipped.is_file() else None
    except ModelFileError:
        value = None
    if value in INFERENCE_FITS:
        return str(value)
    return "tiles" if int(n_classes) == 2 else "resize"


def check_config(config: dict[str, Any]) -> list[str]:
    """Problems of a training configuration, as messages for people (empty when it can start).

    Checks every option's kind, choice and range (:func:`moleseg.core.options.problems`, what
    :class:`moleseg.network.train.TrainConfig` checks), that the weights file and every folder exist and
    that the training folders hold pairs, without importing TensorFlow.
    """
    from moleseg.core.pairing import PairingError, pair_folders

    problems: list[str] = options.problems(config)
    weights = str(config.get("weights", "imagenet"))
    if weights not in ("none", "imagenet") and not Path(weights).is_file():
        problems.append(f"initial weights file not found: {weights}")

    images = list(config.get("images") or [])
    if not images:
        problems.append("give at least one training dataset (an images folder and a masks folder)")
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
# processes and the lock

def pid_alive(pid: int | None) -> bool:
    """True when process ``pid`` exists and is not a zombie (our own finished children are reaped)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:
        pass  # not our child
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _is_runner(pid: int) -> bool:
    """True when ``pid`` runs ``moleseg.network.runner`` (guards against a reused pid; True without /proc)."""
    try:
        return RUNNER_MODULE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists() and pid_alive(pid)
    except OSError:
        return True


def lock_path(runs: str | Path | None = None) -> Path:
    return Path(runs or default_runs_dir()) / LOCK_NAME


def active_training(runs: str | Path | None = None) -> dict[str, Any] | None:
    """The lock of the running training (``pid``, ``run_dir``, ``started``), or None.

    A stale lock (its process is gone, or it was taken by an app that never started the runner) is
    removed.
    """
    path = lock_path(runs)
    if not path.exists():
        return None
    info = read_json(path)
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        return None
    if not isinstance(info, dict):
        if age < 10.0:  # being written
            return {"pid": None, "run_dir": None, "role": "starting", "started": None}
        alive = False
    elif info.get("role") == "starting":
        alive = pid_alive(info.get("pid")) and age < STARTING_LOCK_TIMEOUT_S
    else:
        alive = pid_alive(info.get("pid")) and _is_runner(int(info["pid"]))
    if not alive:
        path.unlink(missing_ok=True)
        return None
    return info


def _busy_message(info: dict[str, Any]) -> str:
    run = Path(info["run_dir"]).name if info.get("run_dir") else "a new run"
    details = [f"process {info['pid']}"] if info.get("pid") else []
    if info.get("started"):
        details.append(f"started {time.strftime('%Y-%m-%d %H:%M', time.localtime(float(info['started'])))}")
    where = f" ({', '.join(details)})" if details else ""
    return (f"Another training is running: {run}{where}. Only one training runs at a time; "
            "wait for it to finish or cancel it.")


def _take_lock(runs: Path, run_dir: Path) -> Path:
    path = lock_path(runs)
    runs.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = active_training(runs)
            if holder is not None:
                raise TrainingBusy(_busy_message(holder)) from None
            continue
        with os.fdopen(handle, "w") as stream:
            json.dump({"pid": os.getpid(), "role": "starting", "run_dir": str(run_dir), "started": time.time()},
                      stream)
        return path
    raise TrainingBusy("could not take the training lock; try again")


def release_lock(runs: str | Path, pid: int, run_dir: str | Path | None = None) -> None:
    """Remove the lock if ``pid`` holds it (or it is the app's ``starting`` lock of ``run_dir``)."""
    path = lock_path(runs)
    info = read_json(path)
    if not isinstance(info, dict):
        return
    ours = info.get("pid") == pid
    starting = (info.get("role") == "starting" and run_dir is not None
                and Path(str(info.get("run_dir"))) == Path(run_dir))
    if ours or starting:
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# starting, cancelling, reading

_CHILDREN: list[subprocess.Popen] = []


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
    try:
        lock = _take_lock(runs, run_dir)
    except BaseException:
        run_dir.rmdir()
        raise
    try:
        config = copy.deepcopy(config)
        config["name"] = config.get("name") or run_dir.name
        if not config.get("cache_dir"):
            config["cache_dir"] = training_cache_dir(data_folders(config))
        write_json(run_dir / JOB_FILE, {"config": config, "runs_dir": str(runs), "requested": time.time()})
        write_json(run_dir / PROGRESS_FILE, {"status": "starting", "phase": "start", "message": "starting",
                                             "pid": None, "started": time.time(), "updated": time.time()})
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        with open(run_dir / LOG_FILE, "ab") as log:
            child = subprocess.Popen([python or sys.executable, "-m", RUNNER_MODULE, str(run_dir)],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, close_fds=True, env=env,
                                     cwd=str(Path(__file__).resolve().parents[2]))
        _CHILDREN.append(child)
        write_json(lock, {"pid": child.pid, "role": "trainer", "run_dir": str(run_dir), "started": time.time()})
    except BaseException:
        release_lock(runs, os.getpid(), run_dir)
        raise
    return run_dir


def data_folders(config: dict[str, Any]) -> list[str]:
    return [str(f) for key in ("images", "masks", "validation_images", "validation_masks", "test_images",
                               "test_masks") for f in (config.get(key) or [])]

def folder_in_use(path: str | Path) -> bool:
    """True when the running training (if any) reads files under ``path`` (a session folder's
    ``in_use`` check: :class:`moleseg.engine.session.SessionFolder`)."""
    holder = active_training()
    if not holder or not holder.get("run_dir"):
        return False
    job = read_json(Path(holder["run_dir"]) / JOB_FILE, {}) or {}
    root = Path(path).resolve()
    return any(Path(f).resolve().is_relative_to(root) for f in data_folders(job.get("config") or {}))


def request_cancel(run_dir: str | Path) -> None:
    """Ask the training of ``run_dir`` to stop after its current step (it keeps its best model)."""
    path = Path(run_dir) / CANCEL_FILE
    path.write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))


def cancel_requested(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CANCEL_FILE).exists()


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
    def fraction(self) -> float:
        """Share of the training steps done, 0..1 (1 when done)."""
        if self.status == "done":
            return 1.0
        if not self.epochs:
            return 0.0
        steps = max(1, self.steps)
        done = max(0, self.epoch - 1) * steps + min(self.step, steps)
        if self.phase in ("validate", "epoch", "calibrate", "evaluate"):
            done = self.epoch * steps
        return max(0.0, min(1.0, done / (self.epochs * steps)))

    @property
    def elapsed_seconds(self) -> float | None:
        if self.started is None:
            return None
        end = time.time() if self.active else (self.updated or time.time())
        return max(0.0, end - self.started)


def read_job(run_dir: str | Path) -> JobStatus:
    """The status of the training in ``run_dir``; a runner that died without saying so is ``died``."""
    run_dir = Path(run_dir)
    progress = read_json(run_dir / PROGRESS_FILE)
    if not isinstance(progress, dict):
        state = read_json(run_dir / "state.json", {}) or {}
        status = state.get("status") or ("done" if (run_dir / "model.keras").is_file() else "unknown")
        return JobStatus(run_dir=run_dir, status="done" if status == "running" else status,
                         epoch=int(state.get("epoch") or 0), epochs=int(state.get("epochs") or 0))
    status = str(progress.get("status", "unknown"))
    error = progress.get("error")
    if status in ACTIVE_STATUSES:
        pid = progress.get("pid")
        if pid is None:
            lock = read_json(lock_path(run_dir.parent))
            if isinstance(lock, dict) and Path(str(lock.get("run_dir"))) == run_dir and lock.get("role") == "trainer":
                pid = lock.get("pid")
        started = float(progress.get("started") or 0)
        if pid is None:
            dead = time.time() - started > STARTING_LOCK_TIMEOUT_S
        else:
            dead = not pid_alive(int(pid))
        if dead:
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
    found = [p for p in runs.iterdir() if (p / JOB_FILE).is_file()]
    return sorted(found, key=lambda p: (p / JOB_FILE).stat().st_mtime, reverse=True)


def log_tail(run_dir: str | Path, lines: int = 30) -> str:
    """The last ``lines`` lines of the run's ``log.txt`` and ``job.log``."""
    parts = []
    for name in ("log.txt", LOG_FILE):
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
        previous = read_json(self.run_dir / PROGRESS_FILE, {}) or {}
        if previous.get("started"):
            self.started = float(previous["started"])
        self.last_write = 0.0
        self.last_phase: str | None = None
        self.state: dict[str, Any] = {}

    def write(self, **values: Any) -> None:
        self.state.update(values)
        self.state.update(pid=os.getpid(), started=self.started, updated=time.time())
        write_json(self.run_dir / PROGRESS_FILE, self.state)
        self.last_write = time.time()

    def __call__(self, progress: Any) -> bool:
        phase = progress.phase
        now = time.time()
        if phase != self.last_phase or phase in ("epoch", "done") or now - self.last_write >= self.interval_s:
            self.write(status="running", phase=phase, epoch=progress.epoch, epochs=progress.epochs,
                       step=progress.step, steps=progress.steps,
                       loss=progress.loss if progress.loss is not None else self.state.get("loss"),
                       metrics=dict(progress.metrics or {}),
                       eta_seconds=progress.eta_seconds if phase == "train" else self.state.get("eta_seconds"),
                       message=progress.message or phase)
            self.last_phase = phase
        return cancel_requested(self.run_dir)
