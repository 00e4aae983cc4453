"""A training killed (SIGKILL) at random moments, during checkpoint writes too, resumes with
``moleseg train --resume`` and ends with a complete, consistent run folder and no stray file."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synthetic import lesion_dataset

from moleseg.core.atomic import TEMPORARY_PREFIX
from moleseg.engine.runs import RunFiles

PROJECT = Path(__file__).resolve().parents[1]
EPOCHS = 4


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "moleseg", "train", "--quiet", *args]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(PROJECT)}
    with log.open("ab") as stream:
        return subprocess.Popen(args, cwd=PROJECT, env=env, stdout=stream, stderr=subprocess.STDOUT)


def _temporaries(folder: Path) -> list[str]:
    """Names of the atomic writer's temporary files under ``folder``."""
    try:
        return [entry.name for entry in os.scandir(folder) if entry.name.startswith(TEMPORARY_PREFIX)]
    except FileNotFoundError:
        return []


def _epochs_done(run: Path) -> int:
    try:
        return len(list(csv.DictReader(RunFiles(run).history.open(encoding="utf-8"))))
    except (FileNotFoundError, csv.Error):
        return 0


def _wait_and_kill(process: subprocess.Popen, run: Path, moment: tuple[str, float], rng: random.Random,
                   seconds: float) -> str:
    """SIGKILL ``process`` at ``moment``: ``("temporary", 0)`` as soon as a new temporary file shows,
    ``("checkpoint", 0)`` as soon as the temporary of a new ``.keras`` file shows, ``("epoch", k)`` a random
    0..2 s after the history holds ``k`` rows. Returns what was seen, or "finished" when the training ended
    first."""
    kind, value = moment
    start_rows = _epochs_done(run)
    stale = set(_temporaries(run))  # left by the previous kill: the resume removes them once it starts
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return "finished"
        names = [name for name in _temporaries(run) if name not in stale]
        if kind == "temporary" and names:
            seen = f"temporary {names[0]}"
            break
        if kind == "checkpoint" and any(name.endswith(".keras") for name in names):
            seen = f"checkpoint {names[0]}"
            break
        if kind == "epoch" and _epochs_done(run) >= start_rows + value:
            delay = rng.uniform(0.0, 2.0)
            time.sleep(delay)
            seen = f"{delay:.2f} s after {start_rows + value} epoch(s)"
            break
        time.sleep(0.001)
    else:
        process.kill()
        pytest.fail(f"the moment {moment} never came within {seconds:.0f} s")
    process.send_signal(signal.SIGKILL)
    process.wait()
    return seen


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_training_killed_at_random_points_resumes_to_a_complete_run_with_no_stray_file(tmp_path, time_left):
    pytest.importorskip("tensorflow")
    images, masks = lesion_dataset(tmp_path / "set", n=8, size=64)
    # no calibration after the epochs: every kill falls in the epochs and their writes (the calibration's own
    # atomic rewrite of model.keras is tests/test_train.py's); sgdm: a cheaper step to trace than adam's, and
    # its momenta are optimizer state that the checkpoints carry all the same
    config = {
        "images": [str(images)], "masks": [str(masks)], "epochs": EPOCHS, "batch_size": 4, "weights": "none",
        "augment": [], "validation_split": 0.25, "bn_momentum": 0.01, "train_fm_images": 2, "calibrate": False,
        "solver": "sgdm",
        "cache_dir": str(tmp_path / "cache"), "model": {"backbone": "resnet18", "input_size": 64, "decoder_width": 16},
    }
    config_file = tmp_path / "recipe.json"
    config_file.write_text(json.dumps(config))
    run = tmp_path / "run"
    log = tmp_path / "train.log"
    rng = random.Random(13)
    # in the first checkpoint write, in a later write as soon as its temporary file shows, and at a random
    # moment (the seeded delay) after an epoch
    schedule = [("checkpoint", 0), ("temporary", 0), ("epoch", 1)]
    seen: list[str] = []
    left_behind: list[str] = []
    process = _start(_command("--config", str(config_file), "--out", str(run)), log)
    for moment in schedule:
        outcome = _wait_and_kill(process, run, moment, rng, time_left())
        seen.append(outcome)
        if outcome == "finished":
            break
        left_behind += [name for name in _temporaries(run) if name not in left_behind]
        assert RunFiles(run).config.is_file(), log.read_text()[-3000:]
        process = _start(_command("--out", str(run), "--resume"), log)
    else:
        assert process.wait(timeout=time_left()) == 0, log.read_text()[-3000:]
    assert process.returncode == 0, log.read_text()[-3000:]
    print(f"kills: {seen}; temporaries they left: {left_behind}")
    assert sum(outcome != "finished" for outcome in seen) == len(schedule), seen
    assert left_behind, f"no kill caught a write half-way (kills: {seen})"  # else the test proves nothing

    files = RunFiles(run)
    saved = json.loads(files.config.read_text(encoding="utf-8"))
    assert saved["epochs"] == EPOCHS and saved["model"]["input_size"] == 64
    history = list(csv.DictReader(files.history.open(encoding="utf-8")))
    assert [int(row["epoch"]) for row in history] == list(range(1, EPOCHS + 1))
    state = json.loads(files.state.read_text(encoding="utf-8"))
    assert state["status"] == "done" and state["epoch"] == EPOCHS and 1 <= state["best_epoch"] <= EPOCHS
    assert "resuming after epoch" in files.log.read_text()

    from moleseg.network.io import load_keras_model

    for path in (files.model, files.last):
        model = load_keras_model(path)
        assert model.output_shape[-1] == 3, path

    stray = [str(p.relative_to(run)) for p in run.rglob("*")
             if p.name.startswith(".") or p.name.endswith((".tmp", ".part")) or TEMPORARY_PREFIX in p.name]
    assert stray == [], f"stray files after {len(seen)} kills ({seen}): {stray}"
    cache_stray = [p.name for p in (tmp_path / "cache").rglob(f"{TEMPORARY_PREFIX}*")]
    assert cache_stray == []
