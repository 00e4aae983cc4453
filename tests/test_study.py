"""moleseg study: the study file is checked before anything trains, the plan, the verdicts' statistics,
the results files, and an interrupted study that resumes where it stopped."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from moleseg.cli import main
from moleseg.core.config import MAX_RUNNING_STUDIES
from moleseg.core.markup import plain_markdown
from moleseg import studyreport
from moleseg.engine import runs, studyplan, studyrun, studystats
from moleseg.engine.runs import write_json
from moleseg.engine.userquota import UserQuota
from synthetic import fake_run, write_study

ROOT = Path(__file__).resolve().parents[1]


def test_a_bad_factor_name_is_refused_before_anything_trains(tmp_path, capsys):
    path = write_study(tmp_path / "s.yaml", factors={"solverr": ["sgdm"]})
    out = tmp_path / "out"
    assert main(["study", "--config", str(path), "--out", str(out), "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert "unknown option 'solverr'" in error and str(path) in error
    assert not out.exists()


def test_a_bad_value_and_a_bad_option_in_a_setting_are_refused(tmp_path, capsys):
    path = write_study(tmp_path / "s.yaml", factors={"solver": ["sgdm", "newton"]})
    assert main(["study", "--config", str(path), "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    assert "newton" in capsys.readouterr().err
    path = write_study(tmp_path / "s2.yaml", factors={"aug": {"one": {"augmentt": ["reflection"]}}})
    assert main(["study", "--config", str(path), "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    assert "unknown option 'augmentt' in factor 'aug', setting 'one'" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.yaml")), ids=lambda path: path.name)
def test_every_shipped_study_file_names_known_options_and_values(path):
    study = studyplan.load_study(path)
    assert studyplan.check_study(study) == []
    assert len(studyplan.plan(study)) > 1


def test_a_study_value_outside_the_option_choices_is_named(tmp_path):
    study = studyplan.load_study(write_study(tmp_path / "s.yaml", factors={"loss": ["lovasz_ce", "lovasz_xx"]}))
    (problem,) = studyplan.check_study(study)
    assert "lovasz_xx" in problem and "loss must be one of" in problem


def test_dry_run_lists_every_run(tmp_path, capsys):
    for part in ("train", "test"):
        (tmp_path / part / "images").mkdir(parents=True)
        (tmp_path / part / "masks").mkdir(parents=True)
    path = write_study(tmp_path / "s.yaml", repeats=2, factors={"solver": ["sgdm", "adam"],
                                                                   "model.backbone": ["resnet18"]})
    assert main(["study", "--config", str(path), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    # base (adam) x 2 seeds, sgdm x 2, resnet18 x 2: "adam" equals the base and shares its runs
    assert "6 runs, design one-at-a-time, 2 seeds per setting" in text
    assert "base-seed0" in text and "solver=sgdm-seed1" in text and "model.backbone=resnet18-seed0" in text
    assert not (tmp_path / "o").exists()


def test_a_validation_fold_factor_plans_k_fold_cross_validation(tmp_path):
    """validation_split 0.2 in the base and validation_fold 1..4 as a factor: five trainings, one per fold
    (the base is fold 0), each an ordinary run with its fold in its configuration."""
    path = write_study(tmp_path / "s.yaml", base={"epochs": 1, "validation_split": 0.2},
                       factors={"validation_fold": [1, 2, 3, 4]})
    runs = studyplan.plan(studyplan.load_study(path))
    assert [run.run_id for run in runs] == ["base-seed0"] + [f"validation_fold={k}-seed0" for k in range(1, 5)]
    assert [run.config.get("validation_fold", 0) for run in runs] == [0, 1, 2, 3, 4]
    assert {run.config["validation_split"] for run in runs} == {0.2}


def test_cross_validation_summarises_each_recipe_over_its_folds(tmp_path):
    """A grid of two recipes by three folds (fake runs; best validation FM = each run's first image's FM):
    recipe b averages 0.87 over its folds, a 0.82; a is 0.05 lower on every fold (exact Wilcoxon over 3
    folds: p = 0.25), which the summary calls within noise."""
    path = write_study(tmp_path / "s.yaml", design="grid", base={"epochs": 1, "validation_split": 0.3},
                       factors={"recipe": {"a": {"solver": "sgdm"}, "b": {"solver": "rmsprop"}},
                                "validation_fold": [0, 1, 2]})
    study = studyplan.load_study(path)
    out = tmp_path / "out"
    for recipe, values in (("a", (0.80, 0.82, 0.84)), ("b", (0.85, 0.87, 0.89))):
        for fold, value in enumerate(values):
            fake_run(out, f"recipe={recipe}-validation_fold={fold}-seed0", {"i0.png": value, "i1.png": 0.5})
    write_json(out / studyrun.PLAN_JSON, {"runs": []})
    rows = studystats.write_results(study, out)
    summary = studystats.cross_validation(study, rows)
    assert [item["recipe"] for item in summary] == ["recipe=b", "recipe=a"]
    assert summary[0]["val_fm"] == pytest.approx(0.87) and summary[0]["folds"] == 3
    assert summary[1]["val_fm"] == pytest.approx(0.82) and summary[1]["val_fm_min"] == pytest.approx(0.80)
    assert summary[1]["difference"] == pytest.approx(-0.05) and summary[1]["p"] == pytest.approx(0.25)
    assert "within noise" in summary[1]["sentence"] and "3 folds cannot reach p < 0.05" in summary[1]["sentence"]
    assert "over 3 folds (worst 0.8000; " in summary[1]["sentence"]
    assert "fold by fold over 3 folds, Wilcoxon p = 0.25: within noise" in summary[1]["sentence"]
    verdicts = (out / studystats.VERDICTS_MD).read_text()
    assert "## Cross-validation" in verdicts and "6 finished runs; design grid; 1 seed per setting;" in verdicts
    assert studystats.cross_validation(studyplan.load_study(write_study(tmp_path / "t.yaml")), rows) == []


def test_grid_design_runs_every_combination(tmp_path):
    path = write_study(tmp_path / "s.yaml", design="grid", factors={"solver": ["sgdm", "adam"],
                                                                    "batch_size": [2, 4, 8]})
    runs = studyplan.plan(studyplan.load_study(path))
    assert len(runs) == 6
    assert {(r.config["solver"], r.config["batch_size"]) for r in runs} == {
        (s, b) for s in ("sgdm", "adam") for b in (2, 4, 8)}


def test_split_by_group_keeps_each_sequence_in_one_part(tmp_path):
    images, masks = tmp_path / "all" / "images", tmp_path / "all" / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    from PIL import Image
    for sequence, count in (("frame_0", 3), ("b_frame_0", 2), ("b_frame_1", 2)):
        for index in range(count):
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(images / f"{sequence}_{index:03d}.png")
            Image.fromarray(np.full((8, 8), 255, np.uint8)).save(masks / f"{sequence}_{index:03d}.png")
    path = write_study(tmp_path / "s.yaml", data={
        "images": "all/images", "masks": "all/masks",
        "split": {"by": "group", "pattern": "^(b_frame_[0-9]+|frame_[0-9]+)_", "validation": ["b_frame_0"],
                  "test": ["b_frame_1"]}})
    parts = studyplan.resolve_data(studyplan.load_study(path), tmp_path / "out")
    names = {part: sorted(p.name for p in Path(parts[part]["images"]).iterdir()) for part in parts}
    assert names == {"train": ["frame_0_000.png", "frame_0_001.png", "frame_0_002.png"],
                     "validation": ["b_frame_0_000.png", "b_frame_0_001.png"],
                     "test": ["b_frame_1_000.png", "b_frame_1_001.png"]}
    bad = write_study(tmp_path / "b.yaml", data={"images": "all/images", "masks": "all/masks",
                                                  "split": {"by": "group", "pattern": "^(x)", "test": ["x"]}})
    with pytest.raises(studyplan.StudyError, match="does not match"):
        studyplan.resolve_data(studyplan.load_study(bad), None)


def test_verdicts_tell_a_real_difference_from_noise(tmp_path):
    path = write_study(tmp_path / "s.yaml", factors={"solver": ["sgdm", "rmsprop"]})
    study = studyplan.load_study(path)
    out = tmp_path / "out"
    images = [f"i{k}.png" for k in range(12)]
    rng = np.random.default_rng(0)
    base = {name: 0.6 + 0.02 * k for k, name in enumerate(images)}
    fake_run(out, "base-seed0", base)
    fake_run(out, "solver=sgdm-seed0", {name: value + 0.1 for name, value in base.items()})  # every image +0.1
    fake_run(out, "solver=rmsprop-seed0", {name: value + rng.normal(0, 0.01) for name, value in base.items()})
    write_json(out / studyrun.PLAN_JSON, {"runs": []})
    rows = studystats.write_results(study, out)
    studyreport.write_html(study, out, rows)
    assert len(rows) == 3
    found = {v["setting"]: v for v in studystats.verdicts(study, rows)}
    sgdm = found["sgdm"]
    assert sgdm["difference"] == pytest.approx(0.1)
    assert sgdm["p"] == pytest.approx(2 * 0.5 ** 12)  # exact two-sided Wilcoxon: all 12 differences positive
    assert sgdm["significant"] and "raised mean FM from 0.7100 (base) to 0.8100" in sgdm["sentence"]
    assert not found["rmsprop"]["significant"] and "within noise" in found["rmsprop"]["sentence"]
    table = (out / studystats.STUDY_CSV).read_text().splitlines()
    assert table[0].split(",")[:5] == ["run", "factor", "setting", "seed", "solver"]
    assert len(table) == 4
    by_run = {row["run"]: row for row in csv.DictReader(io.StringIO("\n".join(table)))}
    assert float(by_run["solver=sgdm-seed0"]["best_val_fm"]) == pytest.approx(0.7)  # its first image, per fake_run
    html = (out / studyreport.STUDY_HTML).read_text()
    assert html.count("<script") >= 3 and "Plotly.newPlot" in html and "<script src=" not in html  # self-contained
    shown = studyrun.read_study_folder(out)
    assert len(shown.rows) == 3 and "a real difference" in shown.verdicts


def test_names_from_a_study_file_draw_no_markup_in_its_verdicts(tmp_path):
    """A study file is untrusted, and the Study page shows ``verdicts.md`` as markdown: a setting's name drew a
    link, a study's name fetched a picture from another server, and a ``|`` split the table's row."""
    lure, pixel, piped = "[Sign in again](https:evil.example)", "![](https:tracker.example/p.png)", "sgdm|rmsprop"
    path = write_study(tmp_path / "s.yaml", name=pixel,
                       factors={"solver": {lure: {"solver": "sgdm"}, piped: {"solver": "rmsprop"}}})
    study = studyplan.load_study(path)
    out = tmp_path / "out"
    for index, run in enumerate(studyplan.plan(study)):
        fake_run(out, run.run_id, {f"i{k}.png": 0.6 + 0.02 * k + 0.05 * index for k in range(6)})
    studystats.write_results(study, out)
    verdicts = studyrun.read_study_folder(out).verdicts
    assert not re.search(r"(?<!\\)\]\(", verdicts)  # no link, no picture
    assert f"# Study {plain_markdown(pixel)}" in verdicts.splitlines()
    rows = [line for line in verdicts.splitlines() if line.startswith("| solver |")]
    assert len(rows) == 2 and all(len(re.findall(r"(?<!\\)\|", row)) == 9 for row in rows)  # 8 cells each

def test_a_folder_holding_another_studys_runs_is_refused_before_anything_trains(tmp_path):
    """Its finished runs of the same ids (base-seed0, solver=sgdm-seed0) were skipped as this study's and their
    scores reported as this study's results."""
    path = write_study(tmp_path / "s.yaml")
    out = tmp_path / "out"
    write_json(out / studyrun.PLAN_JSON, {"study": "/elsewhere/other.yaml", "name": "other", "runs": []})
    for start in (studyrun.run_study, studyrun.start_study):
        with pytest.raises(studyplan.StudyError, match="holds the runs of study 'other'"):
            start(studyplan.load_study(path) if start is studyrun.run_study else path, out)
    assert not (out / studystats.RUNS_SUBDIR).exists()
    write_json(out / studyrun.PLAN_JSON, {"study": str(path), "name": "t", "runs": []})
    studyrun.check_out_folder(studyplan.load_study(path), out)  # the same study: resumed


def test_a_study_folder_that_is_a_file_is_refused_in_a_sentence(tmp_path):
    # was "<file>/plan.json: cannot be read (Not a directory)"
    path = write_study(tmp_path / "s.yaml")
    out = tmp_path / "results.csv"
    out.write_text("kept")
    for start in (studyrun.run_study, studyrun.start_study):
        with pytest.raises(studyplan.StudyError) as refused:
            start(studyplan.load_study(path) if start is studyrun.run_study else path, out)
        assert str(refused.value) == f"{out} is a file, not a folder: choose a folder name for the study"
    assert out.read_text() == "kept"


def test_the_background_study_process_writes_its_log_lines_to_the_study_log(tmp_path, capfd):
    path = write_study(tmp_path / "s.yaml", factors={"solverr": ["sgdm"]})
    out = tmp_path / "out"
    assert studyrun.main(["--config", str(path), "--out", str(out)]) == 2
    lines = (out / studyrun.STUDY_LOG).read_text().splitlines()
    assert len(lines) == 1 and f"  error: {path}: " in lines[0] and "unknown option 'solverr'" in lines[0], lines
    assert capfd.readouterr() == ("", "")  # nothing on the terminal: the log is the study's own file


def test_a_second_start_in_a_folder_where_the_study_runs_is_refused(tmp_path):
    """Clicking 'Start the study' twice started two moleseg study processes on one folder, and both trained
    the same run folders at once."""
    path = write_study(tmp_path / "s.yaml")
    out = tmp_path / "out"
    out.mkdir()
    assert not studyrun.study_running(out)
    with studyrun.hold_study_lock(out):  # as the running study process does
        assert studyrun.study_running(out)
        with pytest.raises(studyplan.StudyError, match="already running"):
            studyrun.start_study(path, out)
        with pytest.raises(studyplan.StudyError, match="already running"):
            studyrun.run_study(studyplan.load_study(path), out)
    assert not studyrun.study_running(out)
    assert not (out / studystats.RUNS_SUBDIR).exists()


def test_a_user_s_studies_running_at_once_are_limited(tmp_path):
    """Each 'Start the study' with a new folder name started one more background process (some 60 MB each,
    waiting its turn for the training lock): one user could fill the server's memory. Their runs folder holds
    at most MAX_RUNNING_STUDIES running studies; a finished one frees its place."""
    path = write_study(tmp_path / "s.yaml")
    runs_folder = tmp_path / "runs"
    running = [runs_folder / f"study-{index}" for index in range(MAX_RUNNING_STUDIES)]
    with contextlib.ExitStack() as held:
        for folder in running:
            folder.mkdir(parents=True)
            held.enter_context(studyrun.hold_study_lock(folder))  # as each running study process does
        with pytest.raises(studyplan.StudyError) as refused:
            studyrun.start_study(path, runs_folder / "study-next", python="/bin/true")
        assert str(refused.value) == (f"{MAX_RUNNING_STUDIES} of your studies are running (study-0, study-1): "
                                      "start another when one has finished")
        assert not (runs_folder / "study-next").exists()
    started = studyrun.start_study(path, runs_folder / "study-next", python="/bin/true")  # their places freed
    assert started.wait(timeout=30) == 0


def test_holm_correction_by_hand():
    assert studystats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


@pytest.mark.slow
@pytest.mark.timeout(450)
def test_an_interrupted_study_resumes_where_it_stopped(tmp_path, time_left):
    from synthetic import make_dataset

    make_dataset(tmp_path / "train", count=6, size=48)
    make_dataset(tmp_path / "test", count=2, size=48)
    path = write_study(tmp_path / "s.yaml", base={
        "epochs": 1, "batch_size": 2, "weights": "none", "calibrate": False, "validation_split": 0.34, "solver": "sgdm",
        "model": {"backbone": "resnet18", "input_size": 32, "decoder_width": 16}},
        factors={"momentum": [0.9, 0.5]})  # sgdm in both runs: a cheaper step to trace than adam's
    out = tmp_path / "out"
    command = [sys.executable, "-m", "moleseg", "study", "--config", str(path), "--out", str(out)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    first = out / studystats.RUNS_SUBDIR / "base-seed0" / "evaluation.json"
    process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + time_left()
        while not first.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first.exists(), "the first run did not finish"
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the study and its training child, between/inside runs
        process.wait()
    stamp = first.stat().st_mtime_ns
    second = out / studystats.RUNS_SUBDIR / "momentum=0.5-seed0"
    assert not studystats.run_finished(second)
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=time_left())
    assert result.returncode == 0, result.stderr[-3000:]
    assert "base-seed0: finished earlier, skipped" in result.stdout + result.stderr
    assert first.stat().st_mtime_ns == stamp
    assert studystats.run_finished(second)
    rows = (out / studystats.STUDY_CSV).read_text().splitlines()
    assert len(rows) == 3
    progress = json.loads((out / studyrun.PROGRESS_JSON).read_text())
    assert progress["status"] == "finished" and progress["done"] == 2


# -- an untrusted study file: one message naming the file, no traceback --------------------------------------

ALIAS_BOMB = """name: bomb
a: &a [x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
base: {augment: *i}
factors: {solver: [sgdm]}
"""

#: Seven factors of ten values each: a grid of 10^7 runs.
HUGE_GRID = {name: list(range(1, 11)) for name in
             ("epochs", "batch_size", "translation_px", "seed", "crops_per_image", "train_fm_images",
              "early_stopping_patience")}


@pytest.mark.parametrize(("fields", "words"), [
    ({"base": [1, 2]}, "base must be a mapping, not a list"),
    ({"seed": [1]}, "seed must be a whole number >= 0, not a list"),
    ({"repeats": True}, "repeats must be a whole number >= 1, not true/false"),
    ({"repeats": 0}, "repeats must be a whole number >= 1, not 0"),
    ({"factors": {"solver": ["sgdm"]}, "factor": {"solver": ["adam"]}},
     "unknown key 'factor' in the study file (known: name, data, base, design, repeats, seed, factors)"),
    ({"data": {"images": "all/images", "masks": "all/masks",
               "split": {"by": "group", "pattern": "(unclosed", "test": ["x"]}}},
     "data.split.pattern '(unclosed' is not a valid regular expression (missing ), unterminated subpattern"),
    ({"data": {"train": {"images": "a", "masks": "b"}, "tests": {"images": "c", "masks": "d"}}},
     "unknown key 'tests' in data (known: root, images, masks, split, train, validation, test)"),
    ({"data": {"train": {"images": ["a"], "masks": "b"}}}, "data.train.images must be text, not a list"),
    ({"design": "grid", "factors": HUGE_GRID},
     "the study plans 10,000,000 runs, more than the 1,000 a study may run"),
    ({"base": {"epochs": 5000}}, "epochs must be a whole number (1 <= value <= 1000, in epochs), not 5000"),
    ({"factors": {"batch_size": [8, 512]}},
     "batch size must be a whole number (1 <= value <= 256, in images), not 512"),
    ({"base": {"validation_images": ["somewhere"]}},
     "give validation image and mask folders in pairs (validation_images and validation_masks)"),
])
def test_a_bad_study_file_gets_one_line_naming_the_file(tmp_path, capsys, fields, words):
    """Each was an exception (AttributeError, TypeError, re.error, MemoryError), ran as "True seed(s)", or was
    ignored (an unknown key; a cross-option rule that the study's check skipped)."""
    path = write_study(tmp_path / "s.yaml", **fields)
    assert main(["study", "--config", str(path), "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: {path}: ") and words in lines[0], lines[0]
    assert not (tmp_path / "o").exists()


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path, capsys):
    """A 1 kB file whose aliases expand to 9^9 items (augment: *i) never finished loading (1.5 GB after 30 s)."""
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    with pytest.raises(studyplan.StudyError, match="aliases \\(\\*name\\) are not allowed in a study file \\(line 3\\)"):
        studyplan.load_study(path)
    assert main(["study", "--config", str(path), "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    assert capsys.readouterr().err == (f"error: {path}: not a valid study file (aliases (*name) are not allowed in "
                                       "a study file (line 3))\n")


def test_a_study_file_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    path = write_study(tmp_path / "s.yaml")
    monkeypatch.setattr(studyplan, "MAX_STUDY_FILE_BYTES", 64)
    with pytest.raises(studyplan.StudyError, match=f"{path}: a study file is at most 64 bytes"):
        studyplan.load_study(path)


def test_the_run_count_is_known_before_the_plan_is_made(tmp_path):
    """A grid multiplies its factors' sizes, one-at-a-time adds them (and the base); both times the seeds."""
    factors = {"solver": {"a": {}, "b": {}, "c": {}}, "epochs": {"1": {}, "2": {}}}
    assert studyplan.planned_run_count(factors, "grid", 2) == 12
    assert studyplan.planned_run_count(factors, "one-at-a-time", 2) == 12  # (1 + 3 + 2) x 2
    assert studyplan.planned_run_count(factors, "one-at-a-time", 1) == 6
    path = write_study(tmp_path / "s.yaml", design="grid", repeats=10,
                       factors={"epochs": list(range(1, 11)), "batch_size": list(range(1, 11))})
    assert len(studyplan.plan(studyplan.load_study(path))) == studyplan.MAX_PLANNED_RUNS  # the cap itself runs


def test_a_study_stops_once_its_users_files_reach_their_quota(tmp_path, monkeypatch):
    """Only its start was checked: a study of up to 1,000 runs, each a model file of up to hundreds of MB, started
    just under its user's quota grew their files far past it. A run starts only while they are below it."""
    from moleseg.core import diskusage
    from moleseg.core.diskusage import BYTES_PER_GB
    from synthetic import make_dataset

    make_dataset(tmp_path / "train", count=6, size=48)
    make_dataset(tmp_path / "test", count=2, size=48)
    path = write_study(tmp_path / "s.yaml", factors={"momentum": [0.9, 0.5, 0.1]})  # three runs
    space = tmp_path / "space"
    out = space / "runs" / "study-s"
    trained: list[str] = []

    def train(run, run_dir, parts, echo, give_way=None):  # a run's files, without training: 3,000 bytes of model
        trained.append(run.run_id)
        fake_run(out, run.run_id, {"a.png": 0.9, "b.png": 0.8})
        (run_dir / "model.keras").write_bytes(b"x" * 3000)
        return True

    monkeypatch.setattr(studyrun, "_train_run", train)
    monkeypatch.setattr(diskusage, "USER_USAGE_CACHE_S", 0.0)  # runs minutes apart: each measured afresh
    lines: list[str] = []
    quota = UserQuota(5000 / BYTES_PER_GB, (space,), "delete old runs")  # room for one run, not two
    rows = studyrun.run_study(studyplan.load_study(path), out, echo=lines.append, quota=quota)
    assert trained == ["base-seed0", "momentum=0.5-seed0"] and len(rows) == 2
    assert lines[-1] == ("momentum=0.1-seed0: not started: Your files take 0.00 GB of your 5e-06 GB quota on this "
                         "server: delete old runs, then try again.")
    progress = studyrun.read_progress(out)
    assert (progress.status, progress.done, progress.runs) == ("stopped at the quota", 2, 3)
    # the background process that the app starts (start_study) gets the same quota in its flags
    given: list[object] = []
    monkeypatch.setattr(studyrun, "run_study", lambda study, out, echo, quota: given.append(quota) or [])
    assert studyrun.main(["--config", str(path), "--out", str(tmp_path / "other"), *quota.arguments()]) == 0
    assert given == [quota]


def test_a_study_process_s_command_line_names_neither_its_user_nor_their_folders(tmp_path, monkeypatch):
    """Every local account reads a process's command line (ps, /proc/PID/cmdline; its environment is the
    server's account's only): the study process started from the app showed its user's sign-in name
    (--quota-owner), their space's folder (users/<name>-<hash>/) and their study's name to all of them."""
    from moleseg.core.diskusage import BYTES_PER_GB

    path = write_study(tmp_path / "s.yaml")
    out = tmp_path / "users" / "alice-0123" / "runs" / "study-Roe-Jane-follow-up"
    quota = UserQuota(5.0, (out.parent,), "delete old runs", "alice@clinic.example")
    python = tmp_path / "fake-python"  # records what the process is given, as /proc shows it, and ends
    python.write_text(f"#!/bin/sh\nprintf '%s\\0' \"$@\" > '{tmp_path}/argv'\nenv -0 > '{tmp_path}/environ'\n")
    python.chmod(0o700)
    assert studyrun.start_study(path, out, python=str(python), quota=quota).wait(timeout=30) == 0
    argv = (tmp_path / "argv").read_text().split("\0")[:-1]
    assert argv[:2] == ["-m", studyrun.STUDY_MODULE]
    assert [part for part in argv if "alice" in part or "Roe-Jane" in part] == []
    # and the process gets them all the same
    for pair in (tmp_path / "environ").read_text().split("\0")[:-1]:
        monkeypatch.setenv(*pair.split("=", 1))
    monkeypatch.setattr(sys, "argv", ["studyrun", *argv[2:]])
    given: list[tuple[object, object]] = []
    monkeypatch.setattr(studyrun, "run_study", lambda study, out, echo, quota: given.append((out, quota)) or [])
    assert studyrun.main() == 0
    assert given == [(str(out), quota)] and quota.quota_gb * BYTES_PER_GB == 5e9



def test_a_study_quota_of_a_user_whose_name_starts_with_a_hyphen_reaches_the_study_process(tmp_path, monkeypatch):
    """A sign-in name may start with '-' (signed_in_name takes it): given as a separate argument after
    --quota-owner, the study process's parser took it for an option and the study ended at its start
    ('expected one argument')."""
    path = write_study(tmp_path / "s.yaml")
    quota = UserQuota(5.0, (tmp_path / "space",), "-delete old runs", "-bob")
    given: list[object] = []
    monkeypatch.setattr(studyrun, "run_study", lambda study, out, echo, quota: given.append(quota) or [])
    assert studyrun.main(["--config", str(path), "--out", str(tmp_path / "out"), *quota.arguments()]) == 0
    assert given == [quota]


def test_a_damaged_history_leaves_its_curve_out_of_the_report_naming_the_file(tmp_path):
    """A run's history.csv (the study folder is the user's) that is not UTF-8 made read_history raise: the Study
    page's report (studyreport.folder_report) failed with a stack trace and moleseg study ended without study.html,
    after every run had trained; the Train page shows the same file as a damaged record."""
    path = write_study(tmp_path / "s.yaml", factors={"solver": ["sgdm", "rmsprop"]})
    study = studyplan.load_study(path)
    out = tmp_path / "out"
    for index, run_id in enumerate(("base-seed0", "solver=sgdm-seed0", "solver=rmsprop-seed0")):
        fake_run(out, run_id, {f"i{k}.png": 0.6 + 0.02 * k + 0.05 * index for k in range(6)})
    damaged = out / studystats.RUNS_SUBDIR / "solver=sgdm-seed0" / "history.csv"
    damaged.write_bytes(b"epoch,val_fm\n1,\xff\n")
    write_json(out / studyrun.PLAN_JSON, {"runs": []})
    rows = studystats.write_results(study, out)
    curves = studyreport.study_figures(study, out, rows)[2]
    assert [trace.name for trace in curves.data] == ["base-seed0", "solver=rmsprop-seed0"]
    assert curves.layout.title.text == (f"Validation FM per epoch (every run)<br><sub>not shown: {damaged}: damaged, "
                                        "not UTF-8 text</sub>")
    studyreport.write_html(study, out, rows)
    shown = str(damaged).replace("/", "\\u002f")  # as plotly writes it in the page's script
    assert f"not shown: {shown}: damaged, not UTF-8 text" in (out / studyreport.STUDY_HTML).read_text()
