"""The training process: ``python -m moleseg.network.runner RUN_DIR [--ready-fd=N]`` trains the request
(``job.json``) that :func:`moleseg.engine.launch.start_training` wrote into ``RUN_DIR``, reporting to
``progress.json``; the one child of every training, whoever starts it (the app, ``moleseg train``, a study).

It holds the training lock (:func:`moleseg.engine.trainlock.hold_training_lock`) for its whole life and takes
it before importing TensorFlow, so the wait for the handover is short. A worker of a multi-worker training
other than the chief takes no lock: it joins the chief's training."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Sequence

from moleseg.engine.childargs import child_arguments
from moleseg.engine.finetune import BaseComparison
from moleseg.engine.jobs import JobRequest, JobResult, ProgressWriter, cancel_requested, data_folders, read_request
from moleseg.core.errors import first_line
from moleseg.core.terminal import show_warning_line, terminal_streams
from moleseg.engine.runs import RunFiles, RunRecordError
from moleseg.engine.segmenter import Segmenter
from moleseg.engine.session import release_after_training
from moleseg.engine.trainlock import BUSY_EXIT_STATUS, READY_BYTE, TrainingBusy, hold_training_lock
from moleseg.network.cluster import current_role



def run_job(run_dir: str | Path, ready_fd: int | None = None) -> int:
    """Train the request of ``run_dir`` (its :attr:`moleseg.engine.runs.RunFiles.job`) holding the training lock;
    returns the exit status (0 done or cancelled, :data:`moleseg.engine.trainlock.BUSY_EXIT_STATUS` when another
    training holds the lock). ``ready_fd``: the pipe told once the lock is held."""
    run_dir = Path(run_dir).resolve()
    try:
        job = read_request(run_dir)
    except RunRecordError as error:
        print(error, file=sys.stderr)
        return 2
    if job is None:
        print(f"{run_dir}: no {RunFiles.JOB}", file=sys.stderr)
        return 2
    lock = hold_training_lock(run_dir, job.origin, ready_fd) if current_role().chief else nullcontext()
    try:
        with lock:
            if not current_role().chief and ready_fd is not None:
                os.write(ready_fd, READY_BYTE)
                os.close(ready_fd)
            try:
                return _train_job(run_dir, job)
            finally:
                release_after_training(data_folders(job.config))
    except TrainingBusy as error:
        print(error, file=sys.stderr)
        return BUSY_EXIT_STATUS


def compare_with_base(config: dict[str, Any], run_dir: Path,
                      load: Callable[[str], Segmenter] | None = None) -> BaseComparison | None:
    """For a fine-tune (``weights`` a ``.keras`` file) that saved a model: its validation images scored by the
    model it started from and by the new one, written to the run folder; None otherwise. ``load`` turns a
    model spec into a segmenter (default :func:`moleseg.network.loading.load_segmenter`)."""
    weights = str(config.get("weights") or "")
    if not weights.endswith(".keras") or not RunFiles(run_dir).model.is_file():
        return None
    from moleseg.core.trainconfig import TrainConfig
    from moleseg.engine.evaluate import evaluate_pairs
    from moleseg.network.trainsetup import split_of

    if load is None:
        from moleseg.network.loading import load_segmenter as load
    _, validation, _ = split_of(TrainConfig.from_dict(config))
    if not validation:
        return None
    base, _, _ = evaluate_pairs(load(weights), validation, with_hd95=False)
    new, _, _ = evaluate_pairs(load(str(RunFiles(run_dir).model)), validation, with_hd95=False)
    if not base.get("n") or not new.get("n"):
        return None
    comparison = BaseComparison(base_model=weights, n=int(new["n"]), base_fm=float(base["fm"]["mean"]),
                                fm=float(new["fm"]["mean"]))
    comparison.write(run_dir)
    return comparison


def _train_job(run_dir: Path, job: JobRequest) -> int:
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

        config = TrainConfig.from_dict(job.config)
        writer.write(status="running", phase="prepare", epochs=config.epochs, message="preparing the data")
        try:
            evaluation = train(config, run_dir, resume=job.resume, progress=writer,
                               echo=lambda line: print(line, flush=True))
        except TrainingCancelled as error:
            writer.write(status="cancelled", phase="cancelled", message=first_line(error), eta_seconds=None)
            status = 0
        except (TrainingError, ValueError) as error:  # refused by a check: one sentence, no traceback
            print(f"error: {first_line(error)}", flush=True)
            writer.write(status="failed", phase="failed", error=first_line(error), message="failed",
                         eta_seconds=None)
        except (OSError, RuntimeError) as error:
            traceback.print_exc()
            writer.write(status="failed", phase="failed", error=first_line(error), message="failed",
                         eta_seconds=None)
        else:
            writer.write(status="running", phase="compare", message="scoring the model it started from")
            try:
                compare_with_base(job.config, run_dir)
            except (ValueError, OSError, RuntimeError) as error:  # the training stands without the comparison
                print(f"warning: the model it started from could not be scored: {first_line(error)}", flush=True)
            result = JobResult(**{key: evaluation[key] for key in ("best_epoch", "best_val_fm", "rule", "n", "worker")
                                  if key in evaluation},
                               test_fm_mean=evaluation["fm"]["mean"] if "fm" in evaluation else None)
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
                                     description="Train the request of a run folder (see moleseg.engine.launch).")
    parser.add_argument("run_dir", help=f"the run folder holding {RunFiles.JOB}")
    parser.add_argument("--ready-fd", type=int, default=None,
                        help="file descriptor told once the training lock is held")
    args = parser.parse_args(child_arguments(argv))  # from the environment when launch started it
    with warnings.catch_warnings(), terminal_streams():  # its output is job.log, read with tail -f and followed
        warnings.showwarning = show_warning_line  # by moleseg train: one line each, as the command line's
        return run_job(args.run_dir, args.ready_fd)


if __name__ == "__main__":
    raise SystemExit(main())
