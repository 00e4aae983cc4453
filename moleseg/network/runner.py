"""The training runner: ``python -m moleseg.network.runner RUN_DIR [--ready-fd=N]`` trains the job that
:func:`moleseg.engine.jobs.start_training` wrote into ``RUN_DIR``, reporting to ``progress.json``.

It holds the training lock (:func:`moleseg.engine.jobs.hold_training_lock`) for its whole life and takes it
before importing TensorFlow, so the app's wait for the handover is short."""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence

from moleseg.engine.jobs import (BUSY_EXIT_STATUS, ProgressWriter, TrainingBusy, cancel_requested,
                                 data_folders, hold_training_lock)
from moleseg.core.errors import first_line
from moleseg.engine.runs import RunFiles, read_json
from moleseg.engine.session import release_after_training



def run_job(run_dir: str | Path, ready_fd: int | None = None) -> int:
    """Train the job of ``run_dir`` (its :attr:`moleseg.engine.runs.RunFiles.job`) holding the training lock; returns the exit status
    (0 done or cancelled, :data:`moleseg.engine.jobs.BUSY_EXIT_STATUS` when another training holds the lock).
    ``ready_fd``: the pipe told once the lock is held (:func:`moleseg.engine.jobs.start_training`)."""
    run_dir = Path(run_dir).resolve()
    job = read_json(RunFiles(run_dir).job)
    if not isinstance(job, dict) or "config" not in job:
        print(f"{run_dir}: no {RunFiles.JOB}", file=sys.stderr)
        return 2
    runs = Path(job.get("runs_dir") or run_dir.parent)
    try:
        with hold_training_lock(runs, run_dir, ready_fd):
            try:
                return _train_job(run_dir, job)
            finally:
                release_after_training(data_folders(job["config"]))
    except TrainingBusy as error:
        print(error, file=sys.stderr)
        return BUSY_EXIT_STATUS


def _train_job(run_dir: Path, job: dict[str, Any]) -> int:
    writer = ProgressWriter(run_dir)

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    status = 1
    try:
        writer.write(status="starting", phase="start", message="loading TensorFlow")
        if cancel_requested(run_dir):
            writer.write(status="cancelled", phase="cancelled", message="cancelled before it started")
            return 0
        from moleseg.network.train import TrainConfig, TrainingCancelled, TrainingError, train

        config = TrainConfig.from_dict(job["config"])
        writer.write(status="running", phase="prepare", epochs=config.epochs, message="preparing the data")
        try:
            evaluation = train(config, run_dir, progress=writer, echo=lambda line: print(line, flush=True))
        except TrainingCancelled as error:
            writer.write(status="cancelled", phase="cancelled", message=first_line(error), eta_seconds=None)
            status = 0
        except (TrainingError, ValueError, OSError, RuntimeError) as error:
            traceback.print_exc()
            writer.write(status="failed", phase="failed", error=first_line(error), message="failed",
                         eta_seconds=None)
        else:
            result = {key: evaluation.get(key) for key in ("best_epoch", "best_val_fm", "rule", "n")}
            if isinstance(evaluation.get("fm"), dict):
                result["test_fm_mean"] = evaluation["fm"].get("mean")
            writer.write(status="done", phase="done", message="done", result=result, eta_seconds=0)
            status = 0
    except BaseException as error:  # import errors, SIGTERM, anything unexpected: say so in progress.json
        traceback.print_exc()
        if isinstance(error, (SystemExit, KeyboardInterrupt)):
            reason = "the training process was stopped (signal or interrupt)"
        else:
            reason = f"{type(error).__name__}: {first_line(error)}"
        writer.write(status="failed", phase="failed", error=reason, message="failed", eta_seconds=None)
        status = 1
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moleseg.network.runner",
                                     description="Train the job of a run folder (started by the app).")
    parser.add_argument("run_dir", help=f"the run folder holding {RunFiles.JOB}")
    parser.add_argument("--ready-fd", type=int, default=None,
                        help="file descriptor told once the training lock is held")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return run_job(args.run_dir, args.ready_fd)


if __name__ == "__main__":
    raise SystemExit(main())
