"""A training's configuration checks and defaults, its request (``job.json``) and its progress (``progress.json``).

Files of a training started by :func:`moleseg.engine.launch.start_training`, besides those of
:mod:`moleseg.engine.runs` (names: :class:`moleseg.engine.runs.RunFiles`)::

    job.json       what to train: the TrainConfig dictionary, resume or not, who asked and when (JobRequest)
    progress.json  status, phase, epoch/step, loss, metrics, ETA, pid, error (JobStatus, written by ProgressWriter)
    cancel         present: please stop (checked after every training step)
    job.log        the training process's stdout and stderr

Both records are read and written here only; a damaged one is named in the message of
:class:`moleseg.engine.runs.RunRecordError`. A training whose ``progress.json`` says it runs while nobody holds
the training lock (:mod:`moleseg.engine.trainlock`) is reported as died. No TensorFlow at import.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import time
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from moleseg.core import options
from moleseg.core.errors import folder_not_found
from moleseg.core.config import SHIPPED_MODELS, models_dir, runs_dir as default_runs_dir
from moleseg.engine.runs import Kind, RecordFields, RunFiles, RunRecordError, read_fields, write_json
from moleseg.engine.trainlock import ORIGINS, active_training

JOB_FILE = RunFiles.JOB
PROGRESS_FILE = RunFiles.PROGRESS
CANCEL_FILE = RunFiles.CANCEL
LOG_FILE = RunFiles.JOB_LOG
#: Shortest time between two writes of ``progress.json`` within one phase, in seconds.
PROGRESS_INTERVAL_S: float = 0.5

#: Time constant of the exponential smoothing of the shown ETA, in seconds: a new estimate moves the shown
#: one by ``1 - exp(-dt / ETA_SMOOTHING_S)`` of the gap after ``dt`` seconds.
ETA_SMOOTHING_S: float = 10.0
#: Fastest rise of the shown ETA, in seconds per second passed (below 1: the projected end never moves
#: away faster than time passes).
ETA_MAX_RISE: float = 0.5

#: Phases whose progress counts training steps; the others count their own work (:data:`PHASE_UNITS`).
TRAINING_PHASES: tuple[str, ...] = ("train", "epoch")
#: What ``step``/``steps`` count in the other phases.
PHASE_UNITS: dict[str, str] = {"prepare": "pairs", "validate": "images", "calibrate": "image passes",
                               "evaluate": "image passes"}
#: Status values of a job (``progress.json`` and :class:`JobStatus`).
ACTIVE_STATUSES: tuple[str, ...] = ("starting", "running")
FINAL_STATUSES: tuple[str, ...] = ("done", "cancelled", "failed", "died")
#: Status of a run folder that says nothing of its training.
UNKNOWN_STATUS = "unknown"

#: ``moleseg.network.train.TrainConfig`` defaults (``model`` as a dictionary), from :mod:`moleseg.core.options`.
TRAIN_DEFAULTS: dict[str, Any] = options.defaults()
#: ``moleseg.network.build.ModelConfig`` defaults.
MODEL_DEFAULTS: dict[str, Any] = TRAIN_DEFAULTS["model"]


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
    then the files: the weights file exists and is a complete .keras (ZIP) file, every folder exists and the
    training folders hold pairs. No TensorFlow.
    """
    from moleseg.core.modelinfo import ModelFileError, check_keras_file
    from moleseg.core.pairing import PairingError, pair_folders, split_sizes

    problems: list[str] = options.problems(config)
    training_pairs = 0
    weights = str(config.get("weights", "imagenet"))
    if weights not in ("none", "imagenet"):
        if not Path(weights).exists():
            problems.append(f"initial weights file not found: {weights}")
        else:
            try:  # as the training will open it, before its run folder is made
                check_keras_file(weights)
            except ModelFileError as error:
                problems.append(f"initial weights: {error}")
    for images_key, masks_key in options.FOLDER_PAIRS:
        group_images = list(config.get(images_key) or [])
        group_masks = list(config.get(masks_key) or [])
        if len(group_images) != len(group_masks):
            continue  # reported by options.problems
        for image_dir, mask_dir in zip(group_images, group_masks):
            missing = [d for d in (image_dir, mask_dir) if not Path(d).is_dir()]
            if missing:
                problems.extend(folder_not_found(d) for d in missing)
                continue
            if images_key == "images":
                try:
                    training_pairs += len(pair_folders(image_dir, mask_dir).pairs)
                except PairingError as error:
                    problems.append(f"{image_dir}: {error}")
    if not problems and not config.get("validation_images"):
        try:
            split_sizes(training_pairs, float(config.get("validation_split", options.default("validation_split"))),
                        float(config.get("test_split", options.default("test_split"))))
        except ValueError as error:
            problems.append(f"{error}: add images, or lower the validation and test shares")
    return problems


# --------------------------------------------------------------------------------------------------
# the request: job.json

@dataclass(frozen=True)
class JobRequest:
    """``job.json``: what the child trains.

    Attributes
    ----------
    config
        The :class:`moleseg.network.train.TrainConfig` dictionary.
    resume
        Continue the run's interrupted training (:func:`moleseg.network.train.train`'s ``resume``).
    origin
        Who asked: a key of :data:`ORIGINS`.
    requested
        When (seconds since the epoch).
    """

    config: dict[str, Any]
    resume: bool = False
    origin: str = "app"
    requested: float = 0.0

    def __post_init__(self) -> None:
        if self.origin not in ORIGINS:
            raise ValueError(f"origin must be one of {', '.join(ORIGINS)}, not {self.origin!r}")

    def write(self, run_dir: str | Path) -> Path:
        """Write ``job.json`` of ``run_dir`` atomically."""
        return write_json(RunFiles(run_dir).job, asdict(self))


#: The fields of ``job.json`` besides ``config`` and their kinds (:class:`JobRequest` holds them).
REQUEST_FIELDS: dict[str, Kind] = {"resume": bool, "origin": str, "requested": float}


def read_request(run_dir: str | Path) -> JobRequest | None:
    """``job.json`` of ``run_dir``; None when the run was not started by :func:`start_training` (a damaged
    file: :func:`moleseg.engine.runs.read_fields`)."""
    return read_fields(RunFiles(run_dir).job, _request_of)


def _request_of(fields: RecordFields) -> JobRequest:
    """The :class:`JobRequest` of ``job.json``'s checked ``fields``."""
    config = fields.get("config", dict)
    if config is None:
        raise RunRecordError(f"{fields.path}: damaged, no training configuration in it")
    return JobRequest(config=config, **fields.given(REQUEST_FIELDS, {"origin": ORIGINS}))


def data_folders(config: Mapping[str, Any]) -> list[str]:
    """Every dataset folder a training configuration reads (training, validation, test; images and masks)."""
    return [str(folder) for pair in options.FOLDER_PAIRS for key in pair for folder in (config.get(key) or [])]


def cancel_requested(run_dir: str | Path) -> bool:
    """True once :func:`moleseg.engine.launch.request_cancel` asked the training of ``run_dir`` to stop."""
    return RunFiles(run_dir).cancel.exists()


@dataclass(frozen=True)
class JobResult:
    """What a finished training reports in its ``progress.json``: the best model's epoch, validation FM (0..1)
    and cleanup rule, the test images' count and mean FM (0..1), or the worker index of a cluster's worker."""

    best_epoch: int | None = None
    best_val_fm: float | None = None
    rule: str | None = None
    n: int | None = None
    test_fm_mean: float | None = None
    worker: int | None = None


#: Kinds of :class:`JobResult`'s fields.
RESULT_FIELDS: dict[str, Kind] = {"best_epoch": int, "best_val_fm": float, "rule": str, "n": int,
                                  "test_fm_mean": float, "worker": int}


#: The fields of ``progress.json`` and their kinds (:class:`JobStatus` holds them).
PROGRESS_FIELDS: dict[str, Kind] = {
    "status": str, "phase": str, "epoch": int, "epochs": int, "step": int, "steps": int, "loss": float,
    "metrics": dict, "eta_seconds": float, "message": str, "error": str, "started": float, "updated": float,
    "result": dict, "pid": int}


@dataclass
class JobStatus:
    """``progress.json`` of a training (what the app, the CLI and studies show of it), with its run folder and
    whether it was asked to stop. ``status`` is one of :data:`ACTIVE_STATUSES` or :data:`FINAL_STATUSES`."""

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
    result: JobResult = field(default_factory=JobResult)
    pid: int | None = None
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
        """Wall time since the job started (``progress.json``'s ``started``), in seconds: up to now while it
        runs, up to its last word (``updated``) once it has ended, so it never goes backwards."""
        if self.started is None:
            return None
        end = time.time() if self.active else (self.updated or time.time())
        return max(0.0, end - self.started)


def _holds_lock(run_dir: Path) -> bool:
    """True when the training lock is held for ``run_dir``."""
    holder = active_training()
    return bool(holder and holder.run_dir and holder.run_dir.resolve() == run_dir.resolve())


def _progress_of(fields: RecordFields) -> dict[str, Any]:
    """The fields of ``progress.json`` that it gives (:data:`PROGRESS_FIELDS`), checked, with its
    :class:`JobResult`; ``status`` is ``unknown`` when it says none."""
    statuses = ACTIVE_STATUSES + FINAL_STATUSES + (UNKNOWN_STATUS,)
    values = {"status": UNKNOWN_STATUS, **fields.given(PROGRESS_FIELDS, {"status": statuses})}
    values["result"] = JobResult(**fields.inner("result").given(RESULT_FIELDS))
    return values


def read_job(run_dir: str | Path) -> JobStatus:
    """The status of the training in ``run_dir``: ``died`` when its process ended without saying so, ``failed``
    with the reason when its ``progress.json`` is damaged; a run without one has its ``state.json``'s status."""
    from moleseg.engine.runs import read_state

    run_dir = Path(run_dir)
    try:
        values = read_fields(RunFiles(run_dir).progress, _progress_of)
        state = read_state(run_dir) if values is None else None
    except RunRecordError as error:
        return JobStatus(run_dir=run_dir, status="failed", error=str(error), message="failed")
    if values is None:
        status = state.status if state else ("done" if RunFiles(run_dir).model.is_file() else UNKNOWN_STATUS)
        return JobStatus(run_dir=run_dir, status="done" if status == "running" else status,
                         epoch=state.epoch if state else 0, epochs=state.epochs if state else 0)
    status = _status_of(run_dir, values)
    if status.active and not _holds_lock(run_dir):
        # its process writes its last word before it lets the lock go: a word written between the first read and
        # the look at the lock is read now, so that only a process that ended without one is called died
        try:
            last = read_fields(RunFiles(run_dir).progress, _progress_of)
        except RunRecordError as error:
            return JobStatus(run_dir=run_dir, status="failed", error=str(error), message="failed")
        if last is not None and last["status"] not in ACTIVE_STATUSES:
            return _status_of(run_dir, last)
        status.status = "died"
        status.error = status.error or f"the training process ended without a word; see {LOG_FILE} in {run_dir}"
    return status


def _status_of(run_dir: Path, values: dict[str, Any]) -> JobStatus:
    """The :class:`JobStatus` of ``run_dir``'s ``progress.json`` fields ``values`` (:func:`_progress_of`)."""
    return JobStatus(run_dir=run_dir, **{name: value for name, value in values.items() if value is not None},
                     cancel_requested=cancel_requested(run_dir))


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

class SmoothedEta:
    """The ETA shown for one phase: the raw estimates exponentially smoothed in time (:data:`ETA_SMOOTHING_S`),
    counting down with the clock between them, rising at most :data:`ETA_MAX_RISE` seconds per second, never
    below 0. A new phase starts from its first estimate."""

    def __init__(self, time_constant_s: float = ETA_SMOOTHING_S, max_rise: float = ETA_MAX_RISE) -> None:
        self.time_constant_s = time_constant_s
        self.max_rise = max_rise
        self.phase: str | None = None
        self.shown: float | None = None
        self.at = 0.0

    def update(self, phase: str, estimate_s: float | None, now: float) -> float | None:
        """The ETA to show at ``now`` (seconds, monotonic clock) given the raw ``estimate_s`` of ``phase``."""
        if phase != self.phase or self.shown is None:
            self.phase, self.at = phase, now
            self.shown = None if estimate_s is None else max(0.0, float(estimate_s))
            return self.shown
        passed = max(0.0, now - self.at)
        counted_down = max(0.0, self.shown - passed)
        if estimate_s is None:
            return self.shown
        weight = 1.0 - math.exp(-passed / self.time_constant_s)
        smoothed = counted_down + weight * (float(estimate_s) - counted_down)
        self.shown = max(0.0, min(smoothed, self.shown + self.max_rise * passed))
        self.at = now
        return self.shown


class ProgressWriter:
    """The training's progress callback: writes ``progress.json`` and answers True once cancelled."""

    def __init__(self, run_dir: str | Path, interval_s: float = PROGRESS_INTERVAL_S, *, fresh: bool = False) -> None:
        """``fresh``: a new start (the clock starts now); otherwise the start time of the progress file stays."""
        self.run_dir = Path(run_dir)
        self.interval_s = interval_s
        previous = None if fresh else read_job(self.run_dir)
        self.started = previous.started if previous and previous.started else time.time()
        self.last_write = 0.0
        self.last_phase: str | None = None
        self.state: dict[str, Any] = {}
        self.eta = SmoothedEta()

    def write(self, **values: Any) -> None:
        """Write ``progress.json`` with ``values`` (names of :data:`PROGRESS_FIELDS`) over the last ones."""
        unknown = set(values) - set(PROGRESS_FIELDS)
        if unknown:
            raise ValueError(f"not fields of {PROGRESS_FILE}: {', '.join(sorted(unknown))}")
        if isinstance(values.get("result"), JobResult):
            values = {**values, "result": asdict(values["result"])}
        self.state.update({"pid": os.getpid(), **values, "started": self.started, "updated": time.time()})
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
                       eta_seconds=self.eta.update(phase, progress.eta_seconds, time.monotonic()),
                       message=progress.message or phase)
            self.last_phase = phase
        return cancel_requested(self.run_dir)
