"""Run folders: one per training, with atomic writes so a killed run leaves no corrupt file.

Layout of a run folder (names: :class:`RunFiles`, the one place for them)::

    config.json       every option of the training
    history.csv       one row per epoch: loss, pixel accuracy, mean FM (train and validation)
    model.keras       the best model by validation FM (moleseg metadata inside)
    last.keras        the model after the last completed epoch, with its optimizer state (for --resume)
    state.json        last completed epoch, best epoch and score, status
    log.txt           human-readable log
    evaluation.json   the test split's evaluation, written at the end
    job.json, progress.json, cancel, job.log   a training started by the app (moleseg.engine.jobs)

No TensorFlow here: the app lists and compares runs without loading a network.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable

from moleseg.core.atomic import atomic_write

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
    except (OSError, ValueError):
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


def read_history(path: str | Path) -> list[dict[str, float]]:
    """Rows of ``history.csv`` as floats (empty cells become None)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as stream:
        for row in csv.DictReader(stream):
            rows.append({key: _parse(value) for key, value in row.items()})
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
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {message}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as stream:
            stream.write(line + "\n")
        if self.echo:
            self.echo(message)


def list_runs(runs_dir: str | Path) -> list[Path]:
    """Run folders under ``runs_dir`` that hold a best model, newest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    found = [p for p in runs_dir.iterdir() if RunFiles(p).model.is_file()]
    return sorted(found, key=lambda p: RunFiles(p).model.stat().st_mtime, reverse=True)


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """One row of the article's comparison table: options against FM statistics and training time
    (``training_minutes``: the wall time of the whole job, ``state.json``'s ``job_seconds``)."""
    run_dir = Path(run_dir)
    files = RunFiles(run_dir)
    config = read_json(files.config, {}) or {}
    state = read_json(files.state, {}) or {}
    evaluation = read_json(files.evaluation, {}) or {}
    model = config.get("model", {})
    fm = evaluation.get("fm") or {}
    # the wall time of the whole job (epochs, validation, calibration, test evaluation); runs written before
    # job_seconds existed have only the epochs' time
    job_seconds = state.get("job_seconds") or state.get("training_seconds")
    return {
        "run": run_dir.name,
        "backbone": model.get("backbone"),
        "architecture": model.get("architecture"),
        "solver": config.get("solver"),
        "epochs": state.get("epoch"),
        "batch_size": config.get("batch_size"),
        "learning_rate": config.get("learning_rate"),
        "augmentation": ",".join(config.get("augment", [])) or "none",
        "loss": config.get("loss"),
        "input_size": model.get("input_size"),
        "best_val_fm": state.get("best_val_fm"),
        "test_fm_mean": fm.get("mean"),
        "test_fm_std": fm.get("std"),
        "test_fm_min": fm.get("min"),
        "test_fm_max": fm.get("max"),
        "training_minutes": round(job_seconds / 60, 1) if job_seconds else None,
        "status": state.get("status"),
    }
