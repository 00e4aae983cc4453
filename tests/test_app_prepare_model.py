"""A user's own model is prepared for fast analysis (its inference form made in the background) on the Train
page when its training has finished, and on the Evaluate and Compare pages when it is picked (conversion
stubbed: no TensorFlow)."""

from __future__ import annotations

import json
import threading
import zipfile
from pathlib import Path

import pytest

from app_helpers import app_test, run_until, texts
from synthetic import mole_image, png_bytes
from moleseg.app import models, ui
from moleseg.app.ui import PAGE_FILES
from moleseg.engine.runs import RunFiles, write_json


class Conversion:
    """A stand-in for :func:`moleseg.app.models.preparation_task`: one step of four done, then it waits for
    ``release`` and succeeds; records the model files it was started for."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started: list[str] = []

    def __call__(self, choice: models.ModelChoice):
        def work(progress):
            self.started.append(choice.spec)
            progress(1, 4, "loading the model (TensorFlow)")
            self.release.wait(30)
            return "onnxruntime"

        return work


@pytest.fixture
def conversion(app_folders, monkeypatch) -> Conversion:
    """Every finished run needs preparing (the inference cache is off in tests); the conversion is stubbed."""
    monkeypatch.setattr(models, "needs_preparation", lambda choice: choice.kind == "run" and choice.status == "done")
    stub = Conversion()
    monkeypatch.setattr(models, "preparation_task", stub)
    yield stub
    stub.release.set()


def finished_run(runs: Path, name: str) -> Path:
    """A run folder started from the app whose training is done: its model file holds metadata only."""
    run = runs / name
    run.mkdir()
    files = RunFiles(run)
    with zipfile.ZipFile(files.model, "w") as archive:  # listed without TensorFlow
        archive.writestr("moleseg.json", json.dumps({"name": name, "n_classes": 3, "input_size": 256}))
    write_json(files.job, {"config": {}, "runs": str(runs)})
    write_json(files.progress, {"status": "done", "phase": "done", "started": 1000.0, "updated": 1089.0})
    return run


def preparing(at) -> list[str]:
    return [text for text in texts(at.info) if text.startswith("Preparing run r1")]


def started_once(at, conversion: Conversion, model: Path) -> None:
    """Wait until the page shows the preparation's first step (1 of 4: 25 %), started once for ``model``."""
    run_until(at, lambda at: 25 in [element.proto.value for element in at.get("progress")])
    assert conversion.started == [str(model)]


def test_a_finished_training_prepares_its_model_with_the_same_notice(app_folders, conversion):
    model = RunFiles(finished_run(app_folders["runs"], "r1")).model
    at = app_test(PAGE_FILES["train"])
    started_once(at, conversion, model)
    assert preparing(at) == ["Preparing run r1 (3 classes) for fast analysis: once per model on this server, a few "
                             "minutes. Analyse, Evaluate and Compare use it when it is ready; the other models can "
                             "be used meanwhile."]
    assert [element.proto.value for element in at.get("progress")] == [100, 25]  # the training done, 1 of 4 steps
    conversion.release.set()
    run_until(at, lambda at: not preparing(at))
    assert conversion.started == [str(model)]  # one preparation, however many runs of the page
    assert not at.error and not at.exception


def test_evaluate_waits_for_a_picked_own_model_to_be_prepared(app_folders, conversion):
    model = RunFiles(finished_run(app_folders["runs"], "r1")).model
    at = app_test(PAGE_FILES["evaluate"])
    at.selectbox(key="evaluate_model").set_value(str(model)).run()
    started_once(at, conversion, model)
    assert preparing(at)[0].endswith("Evaluate is enabled when it is ready; the other models can be used meanwhile.")
    assert at.button(key="evaluate_run").disabled
    at.selectbox(key="evaluate_model").set_value("classical").run()  # another model can be used meanwhile
    assert not preparing(at) and not at.button(key="evaluate_run").disabled
    at.selectbox(key="evaluate_model").set_value(str(model)).run()
    conversion.release.set()
    run_until(at, lambda at: not at.button(key="evaluate_run").disabled)
    assert not preparing(at) and conversion.started == [str(model)]
    assert not at.error and not at.exception


def test_compare_does_not_segment_with_an_own_model_until_it_is_prepared(app_folders, conversion, monkeypatch):
    model = RunFiles(finished_run(app_folders["runs"], "r1")).model
    loaded: list[str] = []
    monkeypatch.setattr(ui, "load_segmenter", lambda choice: loaded.append(choice.spec))  # None: the page stops
    at = app_test(PAGE_FILES["compare"])
    at.selectbox(key="compare_model").set_value(str(model)).run()
    started_once(at, conversion, model)
    assert preparing(at)[0].endswith("The two visits are compared when it is ready; the other models can be used "
                                     "meanwhile.")
    picture = png_bytes(mole_image(64, 64)[0])
    at.file_uploader(key="compare_before").set_value(("before.png", picture, "image/png")).run()
    at.file_uploader(key="compare_after").set_value(("after.png", picture, "image/png")).run()
    assert loaded == [] and not at.metric  # nothing segmented meanwhile
    conversion.release.set()
    run_until(at, lambda at: loaded)
    assert loaded == [str(model)] and not preparing(at)
    assert not at.exception


def test_a_user_s_preparations_count_in_their_share_of_the_background_tasks(app_folders, conversion):
    """Before, a preparation was the server's own task, never refused: picking one run after another (a study
    leaves many) queued any number of conversions, minutes each, ahead of everyone's evaluations."""
    from moleseg.core.config import MAX_TASKS_PER_USER

    files = [RunFiles(finished_run(app_folders["runs"], f"r{index}")).model for index in range(MAX_TASKS_PER_USER + 1)]
    at = app_test(PAGE_FILES["evaluate"])
    for model in files:
        at.selectbox(key="evaluate_model").set_value(str(model)).run()
    keys = {choice.spec: models.preparation_key(choice) for choice in models.model_choices()}
    assert [ui.task_registry().get(keys[str(model)]) is not None for model in files] == (
        [True] * MAX_TASKS_PER_USER + [False])
    assert texts(at.warning) == [f"You already have {MAX_TASKS_PER_USER} tasks (evaluations, dataset scans, model "
                                 "preparations) running or waiting, the most one user may have at once: start this "
                                 "one when one of them has finished."]
    assert at.button(key="evaluate_run").disabled and not at.exception
    conversion.release.set()
    for model in files[:MAX_TASKS_PER_USER]:
        ui.task_registry().get(keys[str(model)]).wait(30)
    at.run()
    assert ui.task_registry().get(keys[str(files[-1])]) is not None  # its turn, once one has finished
