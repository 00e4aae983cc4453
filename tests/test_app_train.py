"""The Train page, moleseg.engine.launch and moleseg.engine.jobs: every option, a background training with
progress, one at a time whoever starts it, stale locks, cancel, and the new run in the model picker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app_helpers import app_test, forged_run, texts
from synthetic import make_dataset
from moleseg.app import trainstatus
from moleseg.app.ui import PAGE_FILES
from moleseg.engine import jobs, launch, trainlock
from moleseg.engine.runs import write_json

PAGE = PAGE_FILES["train"]
#: Seconds between two looks at a real training's status (a read of its small progress file): a short pause,
#: so that a test goes on soon after the child's step it waits for.
POLL_S = 0.25


FAKE_RUNNER = """
import argparse, sys, time
from pathlib import Path
from moleseg.engine import jobs, trainlock
from moleseg.engine.childargs import child_arguments

parser = argparse.ArgumentParser()
parser.add_argument("run_dir")
parser.add_argument("--ready-fd", type=int)
args = parser.parse_args(child_arguments())
run = Path(args.run_dir)
try:
    with trainlock.hold_training_lock(run, jobs.read_request(run).origin, args.ready_fd):
        jobs.ProgressWriter(run).write(status="running", phase="train", message="pretending to train")
        while not jobs.cancel_requested(run):
            time.sleep(0.05)
except trainlock.TrainingBusy:
    sys.exit(trainlock.BUSY_EXIT_STATUS)
"""


def wait_ended(pid: int, timeout_s: float = 30.0) -> None:
    """Return once the child ``pid`` has ended and been reaped (by launch's reaper thread or here)."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # already collected by the thread that start_training left to reap it
        pass
    deadline = time.monotonic() + timeout_s
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not Path(f"/proc/{pid}").exists()


@pytest.fixture
def fake_training(app_folders, tmp_path):
    """``start(config=None, origin="app", run_dir=None) -> (run_dir, pid)``: :func:`launch.start_training` with an
    interpreter that runs a child holding the real training lock (no TensorFlow) until cancelled; its processes
    are killed afterwards."""
    script = tmp_path / "fake_runner.py"
    script.write_text(FAKE_RUNNER)
    python = tmp_path / "fake-python"
    root = Path(__file__).resolve().parents[1]
    python.write_text(f'#!/bin/sh\nshift 2  # -m moleseg.network.runner\nPYTHONPATH="{root}" exec "{sys.executable}" '
                      f'"{script}" "$@"\n')
    python.chmod(0o755)
    started: list[int] = []
    dataset = make_dataset(tmp_path / "fake-moles", count=2)

    def start(config=None, origin="app", run_dir=None):
        config = config or {**jobs.train_defaults(), "images": [str(dataset / "images")],
                            "masks": [str(dataset / "masks")]}
        run_dir = run_dir or launch.new_run_dir(app_folders["runs"], "fake")
        run = launch.start_training(config, run_dir, origin=origin, python=str(python)).run_dir
        pid = trainlock.active_training().pid
        started.append(pid)
        return run, pid

    start.python = python
    yield start
    for pid in started:
        try:
            os.kill(pid, signal.SIGKILL)
            wait_ended(pid)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_every_training_option_has_a_widget_with_the_training_defaults(app_folders, tmp_path):
    dataset = make_dataset(tmp_path / "moles", count=3)
    at = app_test(PAGE)
    at.text_area(key="train_images").set_value(str(dataset)).run()
    assert not at.exception and not at.error
    config = at.session_state["train_config"]
    assert set(config) == set(jobs.TRAIN_DEFAULTS)
    assert set(config["model"]) == set(jobs.MODEL_DEFAULTS)
    expected = {**jobs.train_defaults(), "images": [str(dataset / "images")], "masks": [str(dataset / "masks")]}
    assert config == expected  # the widgets start at TrainConfig's defaults (no shipped model: imagenet)
    assert {expander.label for expander in at.expander} >= {"Data", "Network", "Solver", "Augmentation", "Advanced"}
    assert jobs.check_config(config) == []


def test_a_new_training_fine_tunes_the_shipped_model_when_there_is_one(app_folders, tmp_path):
    shipped = app_folders["models"] / "dermoscopy.keras"
    with zipfile.ZipFile(shipped, "w") as archive:
        archive.writestr("moleseg.json", json.dumps({"name": "dermoscopy", "n_classes": 3}))
    at = app_test(PAGE)
    assert at.session_state["train_config"]["weights"] == str(shipped)
    at.radio(key="train_n_classes").set_value(2).run()  # no shipped cells model: ImageNet
    assert at.session_state["train_config"]["weights"] == "imagenet"


@pytest.mark.parametrize("sent", ["/etc", "999999", ""])
def test_a_class_count_a_browser_forges_is_the_default_one(app_folders, sent):
    """The form reads the class count before it draws its radio, and Streamlit puts a radio's value back to one of
    its options only as it draws it: a browser's message holding any other text made int() fail in the page (an
    error in place of the page) or keyed every widget of the form with it."""
    at = app_test(PAGE)
    forged_run(at, "train_n_classes", string_value=sent)
    assert not at.exception
    assert at.session_state["train_config"]["model"]["n_classes"] == jobs.MODEL_DEFAULTS["n_classes"]
    assert at.radio(key="train_n_classes").value == jobs.MODEL_DEFAULTS["n_classes"]


def test_bad_options_are_reported_before_anything_starts(app_folders, tmp_path):
    at = app_test(PAGE)
    at.text_area(key="train_images").set_value(str(tmp_path / "missing")).run()
    at.button(key="train_start").click().run()
    assert not at.exception
    assert texts(at.error)[0] == f"{tmp_path / 'missing'} is not inside the data folders this server offers"
    assert not jobs.list_jobs(app_folders["runs"])
    problems = jobs.check_config({**jobs.train_defaults(), "model": {**jobs.MODEL_DEFAULTS, "input_size": 100},
                                  "solver": "lbfgs", "epochs": 0})
    assert any("input size" in p for p in problems) and any("solver" in p for p in problems)
    assert any("epochs" in p for p in problems) and any("training dataset" in p for p in problems)


def test_only_one_training_runs_at_a_time(app_folders, tmp_path, fake_training):
    runs = app_folders["runs"]
    run, pid = fake_training()
    assert trainlock.active_training().run_dir == run and jobs.read_job(run).active
    dataset = make_dataset(tmp_path / "moles", count=3)
    config = {**jobs.train_defaults(), "images": [str(dataset / "images")], "masks": [str(dataset / "masks")]}
    with pytest.raises(trainlock.TrainingBusy, match=f"^another training is running in {run.name} \\(started by "
                                                      f"the app, pid {pid}, since .*\\); wait for it or cancel it$"):
        trainstatus.start(config, runs, "second")
    assert jobs.list_jobs(runs) == [run] and sorted(runs.iterdir()) == [run]
    at = app_test(PAGE)
    assert at.button(key="train_start").disabled
    assert any(text.startswith(f"Another training is running in {run.name} (started by the app, pid {pid}")
               for text in texts(at.info))
    launch.request_cancel(run)
    wait_ended(pid)
    assert trainlock.active_training() is None  # the child ended: the kernel released its lock


def test_a_training_s_command_line_does_not_name_its_run(app_folders, fake_training):
    """Every local account reads a process's command line (ps, /proc/PID/cmdline): the training process showed
    its run folder, the user's space (users/<name>-<hash>/) and the run's name as the user typed it."""
    run, pid = fake_training(run_dir=launch.new_run_dir(app_folders["runs"], "Roe-Jane-lesions"))
    command_line = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    assert [part for part in command_line if "Roe-Jane" in part or str(app_folders["runs"]) in part] == []
    assert jobs.read_job(run).active  # the runner found its run all the same
    launch.request_cancel(run)
    wait_ended(pid)


def test_a_killed_training_releases_the_lock_and_the_next_one_starts(app_folders, fake_training):
    runs = app_folders["runs"]
    first, pid = fake_training()
    os.kill(pid, signal.SIGKILL)
    wait_ended(pid)
    assert trainlock.active_training() is None
    status = jobs.read_job(first)
    assert status.status == "died" and jobs.LOG_FILE in status.error
    second, second_pid = fake_training()
    assert second != first and second_pid != pid
    assert trainlock.active_training().run_dir == second
    assert jobs.read_job(second).active


def test_a_holder_on_its_way_out_is_waited_for_and_a_living_one_is_not(app_folders, fake_training,
                                                                           monkeypatch):
    assert not trainlock.holder_ending(trainlock.TrainingHolder(pid=os.getpid()))
    assert not trainlock.holder_ending(trainlock.TrainingHolder())  # pid unknown: nothing to wait for
    child = subprocess.Popen(["sleep", "60"])
    os.kill(child.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the killed child never became a zombie"
        time.sleep(0.01)
    assert trainlock.holder_ending(trainlock.TrainingHolder(pid=child.pid))  # a zombie: its files are closed
    child.wait()
    assert trainlock.holder_ending(trainlock.TrainingHolder(pid=child.pid))  # gone
    run, pid = fake_training()
    ending = trainlock.holder_ending
    seen = []
    with monkeypatch.context() as patch:
        patch.setattr(trainlock, "holder_ending", lambda holder: seen.append(ending(holder)) or seen[-1])
        assert trainlock.lasting_holder().run_dir == run  # a living holder: refused at once, never waited for
    assert seen == [False]  # looked at once, not polled
    os.kill(pid, signal.SIGKILL)  # as a killed `moleseg train` does to its training process
    assert trainlock.lasting_holder() is None  # the next start finds the lock free instead of refusing


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux's /proc")
def test_a_holder_pid_reused_by_a_process_with_any_name_is_read_as_living():
    # A stale sidecar pid may now be any local program's, and a program may name itself any 15 bytes
    # (PR_SET_NAME): not UTF-8, with spaces and parentheses that mimic a zombie's fields.
    named = ("import ctypes, sys, time; ctypes.CDLL(None).prctl(15, b'\\xff) Z 1 (x', 0, 0, 0); "
             "print(flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", named], stdout=subprocess.PIPE)
    try:
        child.stdout.readline()  # named
        assert Path(f"/proc/{child.pid}/stat").read_bytes().startswith(f"{child.pid} (\xff) Z 1 (x)".encode("latin-1"))
        assert not trainlock.holder_ending(trainlock.TrainingHolder(pid=child.pid))
    finally:
        child.kill()
        child.wait()


def test_a_start_that_loses_the_race_for_the_lock_is_busy_and_leaves_no_run(app_folders, fake_training, monkeypatch):
    run, pid = fake_training()
    checks = []

    def not_yet():  # the other start took the lock between this start's check and its child
        checks.append(1)
        return None if len(checks) == 1 else trainlock.active_training()

    monkeypatch.setattr(launch, "lasting_holder", not_yet)
    with pytest.raises(trainlock.TrainingBusy, match=f"another training is running in {run.name} \\(started by the "
                                                      f"app, pid {pid}"):
        fake_training()
    assert jobs.list_jobs(app_folders["runs"]) == [run]
    assert trainlock.active_training().run_dir == run


class _Event:
    def __init__(self, phase, epoch=1, step=1, loss=0.5):
        self.phase, self.epoch, self.epochs, self.step, self.steps = phase, epoch, 3, step, 4
        self.loss, self.metrics, self.eta_seconds, self.message = loss, {"accuracy": 0.8}, 30.0, ""


def test_progress_is_written_and_a_cancel_file_stops_the_training(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with trainlock.hold_training_lock(run, "app"):  # as the child does
        writer = jobs.ProgressWriter(run, interval_s=0.0)
        assert writer(_Event("train", epoch=2, step=2)) is False
        status = jobs.read_job(run)
        assert (status.status, status.epoch, status.step, status.loss) == ("running", 2, 2, 0.5)
        assert status.fraction == pytest.approx((1 * 4 + 2) / 12)
        assert writer(_Event("validate", loss=None)) is False
        assert jobs.read_job(run).loss == 0.5  # the last loss stays on screen while validating
        launch.request_cancel(run)
        assert writer(_Event("train", epoch=2, step=3)) is True
        assert jobs.read_job(run).cancel_requested
    assert jobs.read_job(run).status == "died"  # still 'running' in progress.json, but nobody holds the lock


def test_a_runner_that_died_silently_is_reported(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_json(run / jobs.PROGRESS_FILE, {"status": "running", "pid": dead.pid, "started": time.time()})
    status = jobs.read_job(run)
    assert status.status == "died" and "job.log" in status.error


def test_the_typed_configuration_s_defaults_are_the_schema_s():
    from moleseg.core.trainconfig import ModelConfig, TrainConfig

    defaults = TrainConfig(images=["a"], masks=["b"]).to_dict()
    assert {**defaults, "images": [], "masks": []} == jobs.train_defaults()
    assert ModelConfig().to_dict() == jobs.MODEL_DEFAULTS


def test_the_page_starts_a_training_with_the_options_set_in_its_widgets(app_folders, tmp_path, fake_training,
                                                                       monkeypatch):
    dataset = make_dataset(tmp_path / "moles", count=8, size=64)
    real_start = launch.start_training
    monkeypatch.setattr(launch, "start_training",
                        lambda *args, **kwargs: real_start(*args, **kwargs, python=str(fake_training.python)))
    at = app_test(PAGE)
    at.text_area(key="train_images").set_value(str(dataset))
    at.number_input(key="train_input_size").set_value(64)
    at.selectbox(key="train_backbone").set_value("mobilenetv2")
    at.number_input(key="train_epochs").set_value(2)
    at.number_input(key="train_batch_size").set_value(4)
    at.radio(key="train_weights").set_value("none")
    at.multiselect(key="train_augment").set_value([])
    at.checkbox(key="train_bn_momentum_auto").uncheck()
    at.run()
    at.number_input(key="train_bn_momentum").set_value(0.1).run()
    at.button(key="train_start").click().run()
    assert not at.exception and not at.error
    run = Path(at.session_state["train_run"])
    assert run.parent == app_folders["runs"] and (run / jobs.JOB_FILE).is_file()
    active = trainlock.active_training()
    assert active.run_dir == run
    config = jobs.read_request(run).config
    assert (config["model"]["input_size"], config["model"]["backbone"], config["epochs"], config["batch_size"],
            config["weights"], config["augment"], config["bn_momentum"]) == (64, "mobilenetv2", 2, 4, "none", [], 0.1)
    assert config["images"] == [str(dataset / "images")] and config["masks"] == [str(dataset / "masks")]
    launch.request_cancel(run)
    wait_ended(active.pid)
    assert trainlock.active_training() is None


def test_uploaded_data_stays_in_its_session_folder_while_a_training_reads_it(app_folders, fake_training):
    from moleseg.engine.session import (ENDED_MARKER, SessionFolder, release_after_training, remove_session_folder,
                                 training_cache_dir)

    session = SessionFolder(root=app_folders["tmp"])
    dataset = make_dataset(session.fresh("dataset"), count=2)
    images = str(dataset / "images")
    assert training_cache_dir([images]) == str(session.path / "example-cache")  # derived data stays inside
    assert training_cache_dir([str(app_folders["models"])]) is None
    run, pid = fake_training({**jobs.train_defaults(), "images": [images], "masks": [str(dataset / "masks")]})
    assert launch.folder_in_use(session.path) and not launch.folder_in_use(app_folders["models"])
    assert remove_session_folder(session.path, launch.folder_in_use) is False  # the session ended, the training still reads
    assert (session.path / ENDED_MARKER).exists() and (dataset / "images").is_dir()
    os.kill(pid, signal.SIGKILL)
    wait_ended(pid)
    assert not launch.folder_in_use(session.path)
    release_after_training([images])  # what the runner does when it stops
    assert not session.path.exists()


def test_a_named_example_cache_does_not_take_uploaded_data_out_of_its_session_folder(app_folders, fake_training):
    # the Train page's "Example cache name" was a folder of the shared cache: an uploaded dataset's resized examples
    # (patient pictures) were written there, outside the session folder, kept after it, counted in no quota
    from moleseg.core.config import example_cache_dir
    from moleseg.engine.session import SessionFolder

    session = SessionFolder(root=app_folders["tmp"])
    dataset = make_dataset(session.fresh("dataset"), count=2)
    run, pid = fake_training({**jobs.train_defaults(), "images": [str(dataset / "images")],
                              "masks": [str(dataset / "masks")], "cache_dir": str(example_cache_dir() / "mine")})
    assert jobs.read_request(run).config["cache_dir"] == str(session.path / "example-cache")
    launch.request_cancel(run)
    wait_ended(pid)


def test_a_training_in_a_user_s_folder_caches_its_examples_there(app_folders, fake_training):
    # a shared server's training named a folder of the server's cache folder: the user's pictures, resized, went
    # out of their folder and into no quota (the cases of launch.example_cache: tests/test_user_spaces.py)
    from moleseg.core.config import data_dir, example_cache_dir
    from moleseg.core.userspace import shared_space

    space = shared_space(data_dir(), "anna")
    dataset = make_dataset(app_folders["runs"] / "moles", count=2)
    run, pid = fake_training({**jobs.train_defaults(), "images": [str(dataset / "images")],
                              "masks": [str(dataset / "masks")], "cache_dir": str(example_cache_dir() / "mine")},
                             run_dir=launch.new_run_dir(space.runs, "fake"))
    assert jobs.read_request(run).config["cache_dir"] == str(space.example_cache.resolve())
    launch.request_cancel(run)
    wait_ended(pid)


def test_a_data_folder_named_like_a_session_folder_is_neither_written_nor_removed(app_folders, tmp_path):
    """Any folder whose name started like a session folder's was taken for one: a data root's
    ``moleseg-session-x/`` got the training's example cache written into it, and, holding a file named like the
    ended-session marker (anyone who may write into the root can make both), was removed whole when the training
    ended."""
    from moleseg.engine.session import ENDED_MARKER, SESSION_PREFIX, release_after_training, training_cache_dir

    dataset = make_dataset(tmp_path / "share" / f"{SESSION_PREFIX}x" / "derm", count=2)
    (dataset.parent / ENDED_MARKER).touch()
    images = str(dataset / "images")
    assert training_cache_dir([images]) is None  # the shared example cache, not the data folder
    release_after_training([images])
    assert (dataset / "images").is_dir() and (dataset.parent / ENDED_MARKER).exists()

def test_the_sweep_removes_an_idle_session_folder_and_keeps_a_fresh_one_and_one_a_training_reads(
        app_folders, fake_training, monkeypatch):
    from moleseg.core.config import SESSION_IDLE_TIMEOUT_S
    from moleseg.engine.session import ENDED_MARKER, FolderSweeper, SessionFolder, release_after_training

    root = app_folders["tmp"] / "swept"  # not the app's own folder, which the server's sweep may visit
    idle, fresh, training = (SessionFolder(root=root) for _ in range(3))
    (idle.fresh("dataset") / "patient.png").write_bytes(b"private")
    dataset = make_dataset(training.fresh("dataset"), count=2)
    fake_training({**jobs.train_defaults(), "images": [str(dataset / "images")], "masks": [str(dataset / "masks")]})
    long_ago = time.time() - SESSION_IDLE_TIMEOUT_S - 1
    for folder in (idle, training):  # their tabs were closed longer ago than the idle timeout
        os.utime(folder.path, (long_ago, long_ago))
    os.utime(fresh.path, (time.time() - SESSION_IDLE_TIMEOUT_S + 30,) * 2)  # touched by its heartbeat

    sweeper = FolderSweeper(root=root, in_use=launch.folder_in_use, interval_s=0.05)
    try:
        assert sweeper.start().running and sweeper.removed_count == 1  # the first sweep runs at once
        assert not idle.path.exists() and fresh.path.is_dir() and (dataset / "images").is_dir()
        assert (training.path / ENDED_MARKER).exists()  # removed when the training stops
    finally:
        sweeper.stop()
    assert not sweeper.running
    launch.request_cancel(trainlock.active_training().run_dir)
    monkeypatch.setenv("MOLESEG_TMPDIR", str(root))  # the runner's temporary folder, where its sessions are
    release_after_training([str(dataset / "images")])
    assert not training.path.exists()


def test_the_app_starts_one_sweep_and_an_open_tab_keeps_its_folder(app_folders):
    from moleseg.app import ui
    from moleseg.core.config import SESSION_HEARTBEAT_S, SESSION_IDLE_TIMEOUT_S
    from moleseg.engine.session import SessionFolder

    assert SESSION_HEARTBEAT_S * 3 <= SESSION_IDLE_TIMEOUT_S  # a few missed beats do not lose an open tab's upload
    at = app_test(PAGE_FILES["prepare"])
    assert not at.exception and ui.SESSION_FOLDER_KEY not in at.session_state  # no upload, no folder
    sweeper = ui.startup()
    assert sweeper.running and sweeper.idle_s == SESSION_IDLE_TIMEOUT_S and ui.startup() is sweeper
    folder = SessionFolder(root=app_folders["tmp"])
    at.session_state[ui.SESSION_FOLDER_KEY] = folder
    long_ago = time.time() - SESSION_IDLE_TIMEOUT_S - 1
    os.utime(folder.path, (long_ago, long_ago))
    at.run()  # the tab is still open: its heartbeat fragment touches the folder
    assert not at.exception and folder.path.stat().st_mtime > long_ago + SESSION_IDLE_TIMEOUT_S
    assert sweeper.sweep() == [] and folder.path.is_dir()


@pytest.mark.slow
def test_a_running_training_blocks_a_second_one_and_the_cancel_button_stops_it(app_folders, tmp_path, time_left):
    dataset = make_dataset(tmp_path / "moles", count=8, size=64)
    config = {**jobs.train_defaults(), "images": [str(dataset / "images")], "masks": [str(dataset / "masks")],
              # ResNet18: its first training step is traced in half MobileNetV2's time
              "model": {**jobs.MODEL_DEFAULTS, "input_size": 64, "backbone": "resnet18"}, "weights": "none",
              "epochs": 200, "batch_size": 2, "augment": []}
    run = trainstatus.start(config, app_folders["runs"], "long")
    with pytest.raises(trainlock.TrainingBusy, match="another training is running in long-"):
        trainstatus.start(config, app_folders["runs"], "second")
    at = app_test(PAGE)
    deadline = time.time() + time_left()
    while time.time() < deadline and jobs.read_job(run).phase != "train":
        time.sleep(POLL_S)
    at.run()
    assert at.button(key="train_start").disabled
    at.button(key="train_cancel").click().run()
    assert (run / jobs.CANCEL_FILE).exists()
    while time.time() < deadline and jobs.read_job(run).active:
        time.sleep(POLL_S)
    status = jobs.read_job(run)
    assert status.status == "cancelled", jobs.log_tail(run)
    # the child writes its last status while it still holds the lock, then lets go as it exits
    while time.time() < deadline and trainlock.active_training() is not None:
        time.sleep(0.2)
    assert trainlock.active_training() is None
    at.run()
    assert not at.exception and any("cancelled" in text.lower() for text in texts(at.warning))


def test_the_train_page_offers_to_fine_tune_a_model_on_the_corrections(app_folders, monkeypatch, tmp_path):
    import numpy as np

    from moleseg.core.dataset import save_pair

    corrections = tmp_path / "corrections"
    monkeypatch.setenv("MOLESEG_CORRECTIONS_DIR", str(corrections))
    at = app_test(PAGE_FILES["train"])
    assert not at.exception
    assert any("No corrected image there yet" in text for text in texts(at.caption))
    mask = np.zeros((40, 50), bool)
    mask[10:30, 10:40] = True
    save_pair(corrections, "mole", np.full((40, 50, 3), 180, np.uint8), mask,
              {"status": "corrected by hand", "corrected_by_hand": True})
    with zipfile.ZipFile(app_folders["models"] / "dermoscopy.keras", "w") as archive:
        archive.writestr("moleseg.json", json.dumps({"name": "dermoscopy", "n_classes": 3, "input_size": 64,
                                                     "model": {"input_size": 64, "n_classes": 3}}))
    at.run()
    assert not at.exception
    picker = at.selectbox(key="train_finetune_model")
    assert picker.value == str(app_folders["models"] / "dermoscopy.keras")
    needs = ("Fine-tuning needs at least 2 saved images (one to train on and one held back to validate the new "
             "model); 1 image in your dataset (1 corrected by hand, 0 accepted as the model drew them).")
    assert any(text.startswith(needs) for text in texts(at.caption))
    assert at.button(key="train_finetune_start").label == "Fine-tune" and at.button(key="train_finetune_start").disabled
    for index in range(4):  # four more, accepted as the model drew them
        save_pair(corrections, f"ok{index}", np.full((40, 50, 3), 100 + index, np.uint8), mask,
                  {"status": "accepted as is", "corrected_by_hand": False})
    at.run()
    plan = ("5 images in your dataset (1 corrected by hand, 4 accepted as the model drew them): 4 train the model "
            "and 1 image is held back to validate it. Its validation FM will come from that 1 image only")
    assert any(text.startswith(plan) for text in texts(at.caption)), texts(at.caption)
    assert not at.button(key="train_finetune_start").disabled
    from moleseg.app import trainstatus

    started = []
    monkeypatch.setattr(trainstatus, "start", lambda config, runs, name=None, own_runs=None:
                        started.append(config) or Path(runs) / "dermoscopy-corrections-1")
    at.button(key="train_finetune_start").click().run()
    assert not at.exception and [config["name"] for config in started] == ["dermoscopy-corrections"]
    assert at.session_state["train_run"] == str(app_folders["runs"] / "dermoscopy-corrections-1")
    queued = []  # while another training runs, the fine-tune waits its turn in the queue
    monkeypatch.setattr(trainstatus, "queue", lambda config, runs: queued.append(config) or Path(runs) / "q")
    with trainlock.hold_training_lock(app_folders["runs"] / "terminal-run", "terminal"):
        at.run()
        assert at.button(key="train_finetune_start").label == "Queue the fine-tune"
        at.button(key="train_finetune_start").click().run()
    assert not at.exception and [config["name"] for config in queued] == ["dermoscopy-corrections"]


# -- honest progress: phases, whole-job time, failed runs, no zombies ------------------------------------------


class _PhaseEvent:
    def __init__(self, phase, step, steps, eta):
        self.phase, self.epoch, self.epochs, self.step, self.steps = phase, 3, 3, step, steps
        self.loss, self.metrics, self.eta_seconds, self.message = None, {}, eta, phase


def test_calibration_and_test_evaluation_have_their_own_progress_and_eta(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with trainlock.hold_training_lock(run, "app"):
        writer = jobs.ProgressWriter(run, interval_s=0.0)
        writer(_Event("train", epoch=3, step=4))
        writer(_PhaseEvent("calibrate", 11, 44, 90.0))
        status = jobs.read_job(run)
        assert (status.phase, status.step, status.steps, status.eta_seconds) == ("calibrate", 11, 44, 90.0)
        assert status.fraction == pytest.approx(0.25)  # of the calibration, not "all epochs done"
        assert status.describe() == "calibrate: 11/44 image passes; ETA 1 min 30 s"
        writer(_PhaseEvent("evaluate", 3, 4, 5.0))
        status = jobs.read_job(run)
        assert status.fraction == pytest.approx(0.75) and status.describe() == "evaluate: 3/4 image passes; ETA 5 s"
        writer(_Event("train", epoch=2, step=2))
        assert jobs.read_job(run).describe() == "epoch 2/3, step 2/4 (train); ETA 30 s"


def _job_run(runs: Path, name: str, progress: dict, state: dict) -> Path:
    run = runs / name
    run.mkdir()
    with zipfile.ZipFile(run / "model.keras", "w") as archive:  # metadata only: listed without TensorFlow
        archive.writestr("moleseg.json", json.dumps({"name": name, "n_classes": 3, "input_size": 64}))
    write_json(run / jobs.JOB_FILE, {"config": jobs.train_defaults(), "runs_dir": str(runs), "requested": 1.0})
    write_json(run / jobs.PROGRESS_FILE, {"started": 100.0, "updated": 160.0, "epochs": 3, "epoch": 3, "step": 4,
                                          "steps": 4, **progress})
    write_json(run / "state.json", {"epoch": 2, "epochs": 3, "best_val_fm": 0.8, "training_seconds": 30.0,
                                    "job_seconds": 600.0, **state})
    write_json(run / "config.json", {"solver": "adam", "model": {"input_size": 64}})
    return run


def test_failed_and_died_runs_say_so_on_the_train_and_evaluate_pages(app_folders):
    runs = app_folders["runs"]
    failed = _job_run(runs, "failed-run", {"status": "failed", "phase": "failed", "error": "out of memory"},
                      {"status": "failed"})
    _job_run(runs, "killed-run", {"status": "running", "phase": "train"}, {"status": "running"})
    at = app_test(PAGE)
    at.session_state["train_run"] = str(failed)
    at.run()
    assert not at.exception
    assert not at.get("progress")  # no bar for a failed run, full or red
    assert texts(at.error) == ["Training failed: out of memory"]
    table = next(frame.value for frame in at.dataframe if "status" in frame.value.columns)
    assert dict(zip(table["run"], table["status"])) == {"failed-run": "failed", "killed-run": "died"}
    assert set(table["time"]) == {"10 min 00 s"}

    at = app_test(PAGE_FILES["evaluate"])
    assert not at.exception
    table = next(frame.value for frame in at.dataframe if "solver" in frame.value.columns)
    assert dict(zip(table["run"], table["status"])) == {"failed-run": "failed", "killed-run": "died"}
    assert set(table["training_minutes"]) == {10.0}  # the whole job's wall time, not the epochs' 0.5 min


def test_the_reported_training_time_is_the_whole_job_s(tmp_path):
    from moleseg.engine.runs import run_summary

    run = tmp_path / "run"
    run.mkdir()
    write_json(run / "state.json", {"epoch": 2, "training_seconds": 60.0, "job_seconds": 810.0})
    assert run_summary(run)["training_minutes"] == 13.5
    write_json(run / "state.json", {"epoch": 2, "training_seconds": 60.0})  # a run from before job_seconds
    assert run_summary(run)["training_minutes"] == 1.0


def test_a_cancelled_runner_is_reaped_without_anyone_looking(app_folders, fake_training):
    run, pid = fake_training()
    launch.request_cancel(run)
    deadline = time.time() + 30
    while time.time() < deadline and Path(f"/proc/{pid}").exists():  # no reap_children() call here
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()  # a <defunct> zombie would keep its /proc entry


def test_the_eta_is_smoothed_counts_down_with_the_clock_and_never_rises_faster_than_time_passes():
    eta = jobs.SmoothedEta(time_constant_s=10.0, max_rise=0.5)
    assert eta.update("prepare", None, 0.0) is None  # no estimate yet: "ETA —"
    assert eta.update("train", 420.0, 100.0) == 420.0  # a new phase starts from its first estimate
    # 2 s later the raw estimate jumps to 269 s: shown 418 + (1 - e^-0.2) (269 - 418) = 391.0, not 269
    assert eta.update("train", 269.0, 102.0) == pytest.approx(418 - (1 - np.exp(-0.2)) * 149, abs=1e-9)
    shown = eta.shown
    assert eta.update("train", 100_000.0, 104.0) == pytest.approx(shown + 1.0)  # rises by 0.5 s per s at most
    assert eta.update("train", None, 110.0) == pytest.approx(shown + 1.0)  # no estimate: the last one stays
    assert eta.update("calibrate", 90.0, 111.0) == 90.0
    assert eta.update("calibrate", 0.0, 1000.0) == 0.0  # never below 0


def test_elapsed_time_is_one_clock_and_does_not_go_back_when_the_job_ends(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_json(run / jobs.PROGRESS_FILE, {"status": "done", "phase": "done", "started": 1000.0, "updated": 1089.0})
    write_json(run / "state.json", {"epoch": 2, "epochs": 2, "job_seconds": 85.0})  # the child's own, shorter
    shown = trainstatus.view(run)
    assert shown.elapsed_seconds == 89.0 and jobs.format_duration(shown.elapsed_seconds) == "1 min 29 s"
    assert shown.finished_text() == "Training finished in 1 min 29 s."


def test_finished_runners_are_reaped_not_left_as_zombies(app_folders, fake_training):
    run, pid = fake_training()
    launch.request_cancel(run)
    deadline = time.time() + 30
    while time.time() < deadline and launch.reap_children():  # what every look at the trainings does
        time.sleep(0.05)
    with pytest.raises(ProcessLookupError):  # a zombie would still have its process id
        os.kill(pid, 0)
    assert jobs.read_job(run).status == "died"  # the fake runner wrote no final status


def test_the_page_shows_the_border_and_closing_radius_at_the_chosen_input_size(app_folders):
    at = app_test(PAGE)
    assert any(text.startswith("At 256 px: border 4 px, closing radius 15 px") for text in texts(at.caption))
    at.number_input(key="train_input_size").set_value(64).run()
    assert any(text.startswith("At 64 px: border 1 px, closing radius 4 px") for text in texts(at.caption))
    config = at.session_state["train_config"]
    assert (config["border_width_px"], config["closing_radius_px"], config["size_reference_px"]) == (4, 15, 256)


@pytest.mark.slow
def test_a_ten_pair_training_from_the_page_finishes_with_a_model_in_the_picker(app_folders, tmp_path, time_left):
    """A clinician's handful of images with the page's defaults (ImageNet encoder, automatic BatchNorm
    momentum): 10 pairs, 2 epochs at 64 px end with a usable model, not a failure after the run; while it runs
    it blocks a second training, and once done it is in the model picker with its curves."""
    dataset = make_dataset(tmp_path / "moles", count=10, size=64)
    at = app_test(PAGE)
    at.text_area(key="train_images").set_value(str(dataset))
    at.number_input(key="train_input_size").set_value(64)
    at.number_input(key="train_epochs").set_value(2)
    at.run()
    at.button(key="train_start").click().run()
    assert not at.exception and not at.error
    run = Path(at.session_state["train_run"])
    assert run.parent == app_folders["runs"] and (run / jobs.JOB_FILE).is_file()
    assert trainlock.active_training().run_dir == run
    with pytest.raises(trainlock.TrainingBusy, match=f"another training is running in {run.name}"):
        trainstatus.start(at.session_state["train_config"], app_folders["runs"], "second")
    assert jobs.list_jobs(app_folders["runs"]) == [run]
    at.run()  # the page while the training runs: no second start
    assert not at.exception and at.button(key="train_start").disabled
    seen: set[str] = set()
    deadline = time.time() + time_left()
    status = jobs.read_job(run)
    while time.time() < deadline:
        status = jobs.read_job(run)
        seen.add(status.status)
        if not status.active:
            break
        time.sleep(POLL_S)
    assert status.status == "done", jobs.log_tail(run)
    assert "running" in seen or "starting" in seen
    at.run()
    assert not at.exception and not at.error
    assert any("Training finished in " in text for text in texts(at.success))
    assert any(label.startswith(f"run {run.name}") for label in at.selectbox(key="train_model").options)
    assert len(at.get("plotly_chart")) == 1  # the loss / accuracy / FM curves
    assert (run / "model.keras").is_file() and status.result.best_epoch in (1, 2)
    assert trainlock.active_training() is None
    from moleseg.core.modelinfo import read_model_info

    info = read_model_info(run / "model.keras")
    assert info["input_size"] == 64 and info["border_width_px"] == 1  # 4 px at 256 px, at 64 px
    assert info["training"]["n_train"] + info["training"]["n_validation"] == 10
    assert "BatchNorm layers keep the statistics loaded" in (run / "log.txt").read_text()


def test_new_trainings_default_to_the_shipped_model_s_image_preparation(tmp_path):
    from moleseg.core.modelinfo import INFO_ENTRY

    def shipped(name: str, info: dict) -> None:
        with zipfile.ZipFile(tmp_path / name, "w") as archive:
            archive.writestr(INFO_ENTRY, json.dumps(info))

    def defaults(n_classes: int, models: Path = tmp_path) -> tuple:
        return (jobs.default_inference(n_classes, models), jobs.shipped_default("tile_scale", n_classes, models),
                jobs.shipped_default("colour_constancy", n_classes, models))

    shipped("cells.keras", {"n_classes": 2, "inference": "tiles", "tile_scale": 2})
    shipped("dermoscopy.keras", {"n_classes": 3, "inference": "resize", "tile_scale": "big",
                                 "colour_constancy": "shades_of_grey"})
    assert defaults(2) == ("tiles", 2.0, "none")
    assert defaults(3) == ("resize", 1.0, "shades_of_grey")
    (tmp_path / "cells.keras").write_bytes(b"not a zip")  # damaged: the options' defaults, no error
    assert defaults(2) == ("tiles", 1.0, "none")
    assert defaults(2, tmp_path / "nowhere") == ("tiles", 1.0, "none")


# -- one lock for the app, a terminal and a study ----------------------------------------------------------------


@pytest.mark.parametrize(("origin", "words"), [("terminal", "a terminal"), ("study", "a study")])
def test_a_terminal_s_or_a_study_s_training_shows_on_the_train_page_which_refuses_a_second(
        app_folders, tmp_path, fake_training, origin, words):
    """``moleseg train`` in a terminal and a study's trainings took no lock the app could see: the page offered
    to start a second training beside them."""
    run, pid = fake_training(origin=origin, run_dir=tmp_path / "elsewhere" / "their-run")
    at = app_test(PAGE)
    assert not at.exception
    assert [header.value for header in at.subheader][0] == f"Training their-run (started by {words})"
    assert at.button(key="train_start").disabled and at.button(key="train_cancel")
    assert any(text.startswith(f"Another training is running in their-run (started by {words}, pid {pid}")
               for text in texts(at.info))
    launch.request_cancel(run)
    wait_ended(pid)


def test_moleseg_train_refuses_in_one_sentence_while_another_training_holds_the_lock(app_folders, tmp_path, capsys):
    from moleseg.cli import main

    dataset = make_dataset(tmp_path / "moles", count=2)
    held = tmp_path / "runs" / "app-run"
    with trainlock.hold_training_lock(held, "app"):  # as the app's training does
        code = main(["train", "--images", str(dataset / "images"), "--masks", str(dataset / "masks"),
                     "--out", str(tmp_path / "mine"), "--quiet"])
        err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"error: another training is running in app-run (started by the app, pid {os.getpid()}, "
                          "since ")
    assert err.endswith("); wait for it or cancel it (or give --wait to start when it ends)\n")
    assert len(err.splitlines()) == 1 and not (tmp_path / "mine").exists()


def test_a_waiting_start_begins_when_the_other_training_ends(app_folders, tmp_path, fake_training):
    """What ``moleseg train --wait`` and every run of a study do: wait for the lock, then start."""
    import threading

    first, pid = fake_training()
    said: list[str] = []
    dataset = make_dataset(tmp_path / "moles", count=2)
    config = {**jobs.train_defaults(), "images": [str(dataset / "images")], "masks": [str(dataset / "masks")]}
    script = Path(str(tmp_path / "fake-python"))
    result: list = []
    waiting = threading.Thread(target=lambda: result.append(launch.start_training(
        config, tmp_path / "study-run", origin="study", wait_for_lock=True, echo=said.append, python=str(script))))
    waiting.start()
    deadline = time.time() + 30
    while time.time() < deadline and not said:
        time.sleep(0.05)
    assert said == [f"waiting: another training is running in {first.name} (started by the app, pid {pid}, since "
                    + said[0].split(", since ")[1]]
    assert not (tmp_path / "study-run" / jobs.JOB_FILE).exists()
    launch.request_cancel(first)
    wait_ended(pid)
    waiting.join(timeout=30)
    holder = trainlock.active_training()
    assert result[0].run_dir == tmp_path / "study-run" and holder.run_dir == tmp_path / "study-run"
    assert holder.origin == "study"
    launch.request_cancel(holder.run_dir)
    os.kill(holder.pid, signal.SIGKILL)


def test_a_killed_terminal_leaves_no_training_behind(app_folders, tmp_path, fake_training):
    """``moleseg train`` (a followed start) killed with SIGKILL: its training process dies with it and the lock
    is free for the next one (the training would otherwise go on, unseen, holding the lock)."""
    dataset = make_dataset(tmp_path / "moles", count=2)
    config = {**jobs.train_defaults(), "images": [str(dataset / "images")], "masks": [str(dataset / "masks")]}
    parent = subprocess.Popen([sys.executable, "-c", (
        "import sys; from moleseg.engine import launch; launch.start_training("
        f"{config!r}, {str(tmp_path / 'run')!r}, origin='terminal', wait=True, python={str(fake_training.python)!r})")],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    deadline = time.time() + 60
    while time.time() < deadline and (trainlock.active_training() or trainlock.TrainingHolder()).run_dir is None:
        time.sleep(0.05)  # the lock taken, its sidecar written
    holder = trainlock.active_training()
    assert holder.run_dir == tmp_path / "run" and holder.origin == "terminal" and holder.pid != parent.pid
    parent.kill()
    parent.wait()
    while time.time() < deadline and trainlock.active_training() is not None:
        time.sleep(0.05)
    assert trainlock.active_training() is None
    assert jobs.read_job(tmp_path / "run").status == "died"


def test_the_busy_sentence_keeps_the_run_s_name_as_it_is(monkeypatch, tmp_path):
    from moleseg.app import trainstatus
    from moleseg.engine.trainlock import TrainingHolder

    holder = TrainingHolder(run_dir=tmp_path / "Moles-V2-20260102", origin="app", pid=12)
    monkeypatch.setattr(trainstatus, "running", lambda: holder)
    said = trainstatus.busy_sentence()
    assert said.startswith("Another training is running in Moles-V2-20260102 (started by the app")
