"""Run folders: one per training, with atomic writes so a killed run leaves no corrupt file.

Layout of a run folder (names: :class:`RunFiles`, the one place for them)::

    config.json       every option of the training
    history.csv       one row per epoch: loss, pixel accuracy, mean FM (train and validation)
    model.keras       the best model by validation FM (moleseg metadata inside)
    last.keras        the model after the last completed epoch, with its optimizer state (for --resume)
    state.json        last completed epoch, best epoch and score, status
    log.txt           human-readable log
    evaluation.json   the test split's evaluation, written at the end
    job.json, progress.json, cancel, job.log   the training's request and progress (moleseg.engine.launch,
                      moleseg.engine.jobs)

The records read back from a run folder are typed: :class:`RunState` (``state.json``, read and written here)
and :class:`Evaluation` (``evaluation.json``, read here); a damaged file raises :class:`RunRecordError`
naming it. No TensorFlow here: the app lists and compares runs without loading a network.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence, TypeVar

from moleseg.core.atomic import atomic_write, open_for_append
from moleseg.core.config import MAX_EPOCHS
from moleseg.core.errors import parse_failure
from moleseg.core.terminal import terminal_text


@dataclass(frozen=True)
class RunFiles:
    """The files of the run folder ``run_dir``, by role: ``RunFiles(run).model`` is ``run / "model.keras"``.

    The class constants are the file names (e.g. ``RunFiles.MODEL``), for code that needs a name alone.
    """

    run_dir: Path

    CONFIG: ClassVar[str] = "config.json"
    HISTORY: ClassVar[str] = "history.csv"
    MODEL: ClassVar[str] = "model.keras"
    LAST: ClassVar[str] = "last.keras"
    STATE: ClassVar[str] = "state.json"
    LOG: ClassVar[str] = "log.txt"
    EVALUATION: ClassVar[str] = "evaluation.json"
    JOB: ClassVar[str] = "job.json"
    PROGRESS: ClassVar[str] = "progress.json"
    CANCEL: ClassVar[str] = "cancel"
    JOB_LOG: ClassVar[str] = "job.log"
    BASE_COMPARISON: ClassVar[str] = "base_comparison.json"

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_dir", Path(self.run_dir))

    @property
    def config(self) -> Path:
        """Every option of the training (JSON)."""
        return self.run_dir / self.CONFIG

    @property
    def history(self) -> Path:
        """One row per epoch (CSV, :data:`HISTORY_COLUMNS`)."""
        return self.run_dir / self.HISTORY

    @property
    def model(self) -> Path:
        """The best model by validation FM."""
        return self.run_dir / self.MODEL

    @property
    def last(self) -> Path:
        """The model after the last completed epoch, with its optimizer state (for resuming)."""
        return self.run_dir / self.LAST

    @property
    def state(self) -> Path:
        """Last completed epoch, best epoch and score, status (JSON)."""
        return self.run_dir / self.STATE

    @property
    def log(self) -> Path:
        """The human-readable training log."""
        return self.run_dir / self.LOG

    @property
    def evaluation(self) -> Path:
        """The test split's evaluation (JSON)."""
        return self.run_dir / self.EVALUATION

    @property
    def job(self) -> Path:
        """The app's job: TrainConfig dictionary, runs folder, request time (JSON)."""
        return self.run_dir / self.JOB

    @property
    def progress(self) -> Path:
        """The background training's progress (JSON, :class:`moleseg.engine.jobs.JobStatus`)."""
        return self.run_dir / self.PROGRESS

    @property
    def cancel(self) -> Path:
        """Present: please stop the background training."""
        return self.run_dir / self.CANCEL

    @property
    def job_log(self) -> Path:
        """The runner's stdout and stderr."""
        return self.run_dir / self.JOB_LOG

    @property
    def base_comparison(self) -> Path:
        """A fine-tune's validation images scored by the model it started from and by the new one (JSON,
        :class:`moleseg.engine.finetune.BaseComparison`)."""
        return self.run_dir / self.BASE_COMPARISON


HISTORY_COLUMNS: tuple[str, ...] = (
    "epoch", "loss", "accuracy", "train_fm", "val_loss", "val_accuracy", "val_fm", "rule", "val_fm_article",
    "val_fm_grow_inside", "val_fm_largest", "val_fm_all_components", "learning_rate", "seconds",
)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """:func:`moleseg.core.atomic.atomic_write`, creating the folder first."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, data)


def write_json(path: str | Path, value: Any) -> Path:
    """Atomically write ``value`` as indented JSON (NaN written as null)."""
    return atomic_write_bytes(path, json.dumps(_finite(value), indent=2, sort_keys=False, default=str).encode())


def _finite(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return _finite(value.item())
    return value


def read_json(path: str | Path, default: Any = None) -> Any:
    """The JSON in ``path``, or ``default`` when the file is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError):
        return default


def write_history(path: str | Path, rows: Iterable[dict]) -> Path:
    """Atomically rewrite ``history.csv`` from all epoch rows."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(HISTORY_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _format(row.get(key)) for key in HISTORY_COLUMNS})
    return atomic_write_bytes(path, buffer.getvalue().encode())


def _format(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


#: Most bytes of a ``history.csv`` read: a row per epoch, up to :data:`~moleseg.core.config.MAX_EPOCHS`, of at most
#: 4 KiB each (a run's rows are under 300 bytes); a run folder is the user's, so a larger file is refused, not read.
MAX_HISTORY_BYTES: int = (MAX_EPOCHS + 1) * 4096


def read_history(path: str | Path) -> list[dict[str, float]]:
    """Rows of ``history.csv`` as floats (empty cells become None); none when there is no such file.

    Raises
    ------
    RunRecordError
        The file is larger than :data:`MAX_HISTORY_BYTES`, not UTF-8 or not CSV, or an epoch is not a number
        (naming the file and the reason).
    """
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with path.open("rb") as raw:
        data = raw.read(MAX_HISTORY_BYTES + 1)
    if len(data) > MAX_HISTORY_BYTES:
        raise RunRecordError(f"{path}: damaged, larger than a training history may be ({MAX_HISTORY_BYTES // 1024} KiB)")
    try:
        for row in csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")):
            rows.append({key: _parse(value) for key, value in row.items() if key is not None})  # not extra cells
    except (UnicodeDecodeError, csv.Error) as error:
        reason = "not UTF-8 text" if isinstance(error, UnicodeDecodeError) else f"not a readable CSV file ({error})"
        raise RunRecordError(f"{path}: damaged, {reason}") from None
    for number, row in enumerate(rows, 1):  # the curves and a resume count on it (other columns hold text too)
        if isinstance(row.get("epoch"), str):
            raise RunRecordError(f"{path}: damaged, row {number}'s epoch is {row['epoch']!r}, not a number")
    return rows


def _parse(value: str | None) -> float | str | None:
    if value in ("", None):
        return None
    try:
        return float(value)
    except ValueError:
        return value


class RunLog:
    """Appends timestamped lines to ``log.txt`` (and echoes them to an optional callable)."""

    def __init__(self, path: str | Path, echo=None) -> None:
        self.path = Path(path)
        self.echo = echo

    def __call__(self, message: str) -> None:
        message = terminal_text(message)  # the log and the echo (a runner's job.log) are read with tail -f
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open_for_append(self.path, text=True) as stream:  # never through a link of its name
            stream.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {message}\n")
        if self.echo:
            self.echo(message)


def list_runs(runs_dir: str | Path) -> list[Path]:
    """Run folders under ``runs_dir`` that hold a best model, newest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    found = [p for p in runs_dir.iterdir() if RunFiles(p).model.is_file()]
    return sorted(found, key=lambda p: RunFiles(p).model.stat().st_mtime, reverse=True)


class RunRecordError(ValueError):
    """A run record (``state.json``, ``evaluation.json``, ``job.json``, ``progress.json``) that cannot be read:
    the message names the file and the reason."""


#: The reason given for a record that is not JSON at all (after the file's name, before the parser's words).
NOT_JSON_REASON = "damaged, not a readable JSON file"


def read_record(path: str | Path) -> dict[str, Any] | None:
    """The JSON object of the record ``path``; None when the file does not exist.

    Raises
    ------
    RunRecordError
        The file cannot be read, is not JSON or not a JSON object.
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except OSError as error:
        raise RunRecordError(f"{path}: cannot be read ({error.strerror or error})") from None
    except (ValueError, RecursionError) as error:  # RecursionError: nested too deeply
        raise RunRecordError(f"{path}: {NOT_JSON_REASON} ({parse_failure(error)})") from None
    if not isinstance(value, dict):
        raise RunRecordError(f"{path}: damaged, not a JSON object")
    return value


#: The words of a record field's kind, for messages.
KIND_WORDS: dict[type, str] = {int: "a whole number", float: "a number", str: "text", bool: "true or false",
                               dict: "a mapping", list: "a list"}

#: A field's kind: one type, or several (ints are taken as floats where float is one).
Kind = type | tuple[type, ...]

Record = TypeVar("Record")


@dataclass(frozen=True)
class RecordFields:
    """The fields ``values`` of the record file ``path``, each checked as it is taken: a field of another kind,
    or a word outside its choices, raises :class:`RunRecordError` naming the file, the field and the reason."""

    values: Mapping[str, Any]
    path: Path

    def get(self, name: str, kind: Kind, default: Any = None) -> Any:
        """``values[name]`` checked to be of ``kind``; ``default`` when absent or null."""
        value = self.values.get(name)
        if value is None:
            return default
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            raise RunRecordError(f"{self.path}: damaged, {name} is {value!r}, not "
                                 f"{' or '.join(KIND_WORDS[k] for k in kinds)}")
        return value

    def given(self, kinds: Mapping[str, Kind], choices: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
        """The fields named in ``kinds`` that the record gives, each checked to be of its kind and, where
        ``choices`` names it, one of its words; absent and null fields are left out (the record's dataclass
        has their defaults)."""
        found = {}
        for name, kind in kinds.items():
            value = self.get(name, kind)
            allowed = (choices or {}).get(name)
            if value is not None and allowed is not None and value not in allowed:
                raise RunRecordError(f"{self.path}: damaged, {name} {value!r} is not one of {', '.join(allowed)}")
            if value is not None:
                found[name] = value
        return found

    def inner(self, name: str) -> RecordFields:
        """The fields of the object ``values[name]`` (none when it is absent)."""
        return RecordFields(self.get(name, dict, {}), self.path)

    def objects(self, name: str, what: str) -> list[RecordFields]:
        """The fields of each object of the list ``values[name]``; ``what`` names one entry in the message
        of an entry that is not an object."""
        entries = []
        for entry in self.get(name, list, []):
            if not isinstance(entry, dict):
                raise RunRecordError(f"{self.path}: damaged, {what} is not an object")
            entries.append(RecordFields(entry, self.path))
        return entries


def read_fields(path: str | Path, build: Callable[[RecordFields], Record]) -> Record | None:
    """The record in ``path`` made by ``build`` from its checked fields; None when the file does not exist.

    Raises
    ------
    RunRecordError
        The file cannot be read, is not a JSON object, or a field is of another kind (named).
    """
    record = read_record(path)
    return None if record is None else build(RecordFields(record, Path(path)))


#: Values of :attr:`RunState.status`.
RUN_STATUSES: tuple[str, ...] = ("running", "done", "cancelled", "failed")


@dataclass(frozen=True)
class RunState:
    """``state.json``: where a training stands after its last completed epoch.

    Attributes
    ----------
    epoch, epochs
        Last completed epoch (0 before the first) and epochs asked for.
    best_epoch, best_val_fm, best_rule
        The epoch of the best model, its validation FM (0..1; -1 before any) and cleanup rule.
    status
        One of :data:`RUN_STATUSES`.
    training_seconds, job_seconds
        Wall time of the epochs, and of the whole job (preparation to test evaluation), in seconds.
    """

    epoch: int = 0
    epochs: int = 0
    best_epoch: int = 0
    best_val_fm: float = -1.0
    best_rule: str | None = None
    status: str = "running"
    training_seconds: float = 0.0
    job_seconds: float | None = None

    def write(self, run_dir: str | Path) -> Path:
        """Write ``state.json`` of ``run_dir`` atomically."""
        return write_json(RunFiles(run_dir).state, asdict(self))

    @property
    def minutes(self) -> float | None:
        """Wall time of the whole job in minutes (one decimal), None when unknown."""
        seconds = self.job_seconds or self.training_seconds
        return round(seconds / 60, 1) if seconds else None


#: The fields of ``state.json`` and their kinds (:class:`RunState` holds them).
STATE_FIELDS: dict[str, Kind] = {"epoch": int, "epochs": int, "best_epoch": int, "best_val_fm": float,
                                 "best_rule": str, "status": str, "training_seconds": float, "job_seconds": float}


def read_state(run_dir: str | Path) -> RunState | None:
    """``state.json`` of ``run_dir``; None when the run has none yet (a damaged file: :func:`read_fields`)."""
    return read_fields(RunFiles(run_dir).state,
                       lambda fields: RunState(**fields.given(STATE_FIELDS, {"status": RUN_STATUSES})))


@dataclass(frozen=True)
class MetricSummary:
    """A metric over the test images: mean, max, min and standard deviation (0..1; NaN when not given)."""

    mean: float = math.nan
    max: float = math.nan
    min: float = math.nan
    std: float = math.nan


#: Metrics an evaluation summarises (:attr:`Evaluation.metrics`).
EVALUATION_METRICS: tuple[str, ...] = ("fm", "cm", "cr", "jaccard")


@dataclass(frozen=True)
class Evaluation:
    """``evaluation.json``: the best model's choice and its test split's scores.

    Attributes
    ----------
    best_epoch, best_val_fm
        The epoch of the best model and its validation FM (0..1), None when not recorded.
    metrics
        :data:`EVALUATION_METRICS` present in the file, each a :class:`MetricSummary`.
    per_image_fm
        FM of each test image by name (0..1).
    n
        Number of test images (0 without a test split).
    baseline_fm
        The classical baseline's FM on the same test images, when measured.
    """

    best_epoch: int | None = None
    best_val_fm: float | None = None
    metrics: dict[str, MetricSummary] = field(default_factory=dict)
    per_image_fm: dict[str, float] = field(default_factory=dict)
    n: int = 0
    baseline_fm: MetricSummary | None = None

    @property
    def tested(self) -> bool:
        """True when the file holds the test split's FM (a finished run of a study)."""
        return "fm" in self.metrics

    def metric(self, name: str) -> MetricSummary:
        """The summary of metric ``name`` (all NaN when absent)."""
        return self.metrics.get(name, MetricSummary())


#: The statistics of a :class:`MetricSummary` and their kind.
SUMMARY_FIELDS: dict[str, Kind] = {"mean": float, "max": float, "min": float, "std": float}


def read_evaluation(run_dir: str | Path) -> Evaluation | None:
    """``evaluation.json`` of ``run_dir``; None when the run has none, not finished (a damaged file:
    :func:`read_fields`)."""
    return read_fields(RunFiles(run_dir).evaluation, _evaluation_of)


def _evaluation_of(fields: RecordFields) -> Evaluation:
    """The :class:`Evaluation` of ``evaluation.json``'s checked ``fields``."""
    metrics = {name: _summary_of(fields.inner(name)) for name in EVALUATION_METRICS if fields.values.get(name) is not None}
    baseline = fields.inner("baseline")
    per_image = {str(item.get("image", str, "")): item.get("fm", float, math.nan)
                 for item in fields.objects("per_image", "a per_image entry")}
    return Evaluation(**fields.given({"best_epoch": int, "best_val_fm": float}), metrics=metrics,
                      per_image_fm=per_image, n=fields.get("n", int, len(per_image)),
                      baseline_fm=_summary_of(baseline.inner("fm")) if baseline.values.get("fm") is not None else None)


def _summary_of(fields: RecordFields) -> MetricSummary:
    """A :class:`MetricSummary` from the checked ``fields`` of one metric (a missing statistic is NaN)."""
    return MetricSummary(**fields.given(SUMMARY_FIELDS))


def read_config(run_dir: str | Path) -> dict[str, Any] | None:
    """``config.json`` of ``run_dir`` (every option of the training, without the run folder it names);
    None when the run has none.

    Raises
    ------
    RunRecordError
        The file is damaged (it is named).
    """
    record = read_record(RunFiles(run_dir).config)
    if record is not None:
        record.pop("run_dir", None)
    return record


def _number(value: Any) -> float | None:
    """``value`` for a table: None for NaN."""
    return None if value is None or value != value else value


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """One row of the article's comparison table: options against FM statistics and training time
    (``training_minutes``: the wall time of the whole job, ``state.json``'s ``job_seconds``).

    Raises
    ------
    RunRecordError
        A record of the run is damaged (it is named).
    """
    from moleseg.core import options

    run_dir = Path(run_dir)
    config = options.merged(read_config(run_dir) or {})
    state = read_state(run_dir)
    evaluation = read_evaluation(run_dir) or Evaluation()
    fm = evaluation.metric("fm")
    return {
        "run": run_dir.name,
        "backbone": config["model"]["backbone"],
        "architecture": config["model"]["architecture"],
        "solver": config["solver"],
        "epochs": state.epoch if state else None,
        "batch_size": config["batch_size"],
        "learning_rate": config["learning_rate"],
        "augmentation": ",".join(config["augment"]) or "none",
        "loss": config["loss"],
        "input_size": config["model"]["input_size"],
        "best_val_fm": state.best_val_fm if state else None,
        "test_fm_mean": _number(fm.mean),
        "test_fm_std": _number(fm.std),
        "test_fm_min": _number(fm.min),
        "test_fm_max": _number(fm.max),
        "training_minutes": state.minutes if state else None,
        "status": state.status if state else None,
    }
