"""The training runner: ``python -m moleseg.network.runner RUN_DIR`` trains the job that
:func:`moleseg.engine.jobs.start_training` wrote into ``RUN_DIR``, reporting to ``progress.json``."""

from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence

from moleseg.engine.jobs import JOB_FILE, ProgressWriter, data_folders, cancel_requested, release_lock
from moleseg.engine.runs import read_json
from moleseg.engine.session import release_after_training
from moleseg.network.train import TrainConfig, TrainingCancelled, TrainingError, train


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def run_job(run_dir: str | Path) -> int:
    """Train the job of ``run_dir`` (its ``job.json``); returns the exit status (0 done or cancelled)."""
    run_dir = Path(run_dir).resolve()
    job = read_json(run_dir / JOB_FILE)
    if not isinstance(job, dict) or "config" not in job:
        print(f"{run_dir}: no {JOB_FILE}", file=sys.stderr)
        return 2
    runs = Path(job.get("runs_dir") or run_dir.parent)
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
        config = TrainConfig.from_dict(job["config"])
        writer.write(status="running", phase="prepare", epochs=config.epochs, message="preparing the data")
        try:
            evaluation = train(config, run_dir, progress=writer, echo=lambda line: print(line, flush=True))
        except TrainingCancelled as error:
            writer.write(status="cancelled", phase="cancelled", message=_first_line(error), eta_seconds=None)
            status = 0
        except (TrainingError, ValueError, OSError, RuntimeError) as error:
            traceback.print_exc()
            writer.write(status="failed", phase="failed", error=_first_line(error), message="failed",
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
            reason = f"{type(error).__name__}: {_first_line(error)}"
        writer.write(status="failed", phase="failed", error=reason, message="failed", eta_seconds=None)
        status = 1
    finally:
        release_lock(runs, os.getpid(), run_dir)
        release_after_training(data_folders(job["config"]))
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m moleseg.network.runner RUN_DIR", file=sys.stderr)
        return 2
    return run_job(args[0])


if __name__ == "__main__":
    raise SystemExit(main())
