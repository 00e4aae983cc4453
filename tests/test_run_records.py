"""The typed records of a run folder and a study folder: each read and written in one module, and a damaged
file is one message naming it (no fallback of each reader's own)."""

from __future__ import annotations

import math

import pytest

from moleseg.cli import main
from moleseg.engine import jobs, launch, studyrun
from moleseg.engine.runs import (MetricSummary, RunFiles, RunRecordError, RunState, read_evaluation, read_state,
                                 run_summary, write_json)
from moleseg.engine.studyplan import StudyError


def test_run_state_is_written_and_read_back(tmp_path):
    state = RunState(epoch=3, epochs=5, best_epoch=2, best_val_fm=0.81, best_rule="largest", status="cancelled",
                     training_seconds=12.0, job_seconds=90.0)
    state.write(tmp_path)
    assert read_state(tmp_path) == state and state.minutes == 1.5
    assert read_state(tmp_path / "absent") is None


@pytest.mark.parametrize(("text", "reason"), [
    ("{not json", "damaged, not a readable JSON file"),
    ("[1, 2]", "damaged, not a JSON object"),
    ('{"epoch": "three"}', "damaged, epoch is 'three', not a whole number"),
    ('{"epoch": true}', "damaged, epoch is True, not a whole number"),
    ('{"status": "sleeping"}', "damaged, status 'sleeping' is not one of running, done, cancelled, failed"),
])
def test_a_damaged_state_json_is_one_message_naming_it(tmp_path, text, reason):
    RunFiles(tmp_path).state.write_text(text)
    with pytest.raises(RunRecordError) as raised:
        read_state(tmp_path)
    assert str(raised.value).startswith(f"{RunFiles(tmp_path).state}: {reason}")


def test_an_evaluation_is_read_with_its_metrics_per_image_and_baseline(tmp_path):
    write_json(RunFiles(tmp_path).evaluation, {
        "best_epoch": 4, "best_val_fm": 0.9, "n": 2, "fm": {"mean": 0.8, "max": 0.9, "min": 0.7, "std": 0.1},
        "cm": {"mean": 0.95}, "per_image": [{"image": "a.png", "fm": 0.7}, {"image": "b.png", "fm": 0.9}],
        "baseline": {"fm": {"mean": 0.6, "max": 0.7, "min": 0.5, "std": 0.1}}})
    evaluation = read_evaluation(tmp_path)
    assert evaluation.tested and evaluation.n == 2 and evaluation.best_epoch == 4
    assert evaluation.metric("fm") == MetricSummary(0.8, 0.9, 0.7, 0.1)
    assert evaluation.metric("cm").mean == 0.95 and math.isnan(evaluation.metric("cm").std)
    assert math.isnan(evaluation.metric("jaccard").mean)
    assert evaluation.per_image_fm == {"a.png": 0.7, "b.png": 0.9}
    assert evaluation.baseline_fm == MetricSummary(0.6, 0.7, 0.5, 0.1)
    write_json(RunFiles(tmp_path).evaluation, {"fm": [0.8]})
    with pytest.raises(RunRecordError, match="evaluation.json: damaged, fm is \\[0.8\\], not a mapping"):
        read_evaluation(tmp_path)
    with pytest.raises(RunRecordError, match="evaluation.json: damaged"):
        run_summary(tmp_path)


def test_a_damaged_progress_json_makes_the_job_failed_with_the_reason(tmp_path):
    write_json(RunFiles(tmp_path).progress, {"status": "running", "epoch": "2"})
    status = jobs.read_job(tmp_path)
    assert status.status == "failed"
    assert status.error == f"{RunFiles(tmp_path).progress}: damaged, epoch is '2', not a whole number"


def test_a_damaged_job_json_is_named(tmp_path):
    write_json(RunFiles(tmp_path).job, {"config": {}, "origin": "cron"})
    with pytest.raises(RunRecordError, match="job.json: damaged, origin 'cron' is not one of app, terminal, study"):
        jobs.read_request(tmp_path)
    jobs.JobRequest(config={"epochs": 2}, resume=True, origin="study", requested=5.0).write(tmp_path)
    assert jobs.read_request(tmp_path) == jobs.JobRequest(config={"epochs": 2}, resume=True, origin="study",
                                                          requested=5.0)


def test_resuming_a_run_with_a_damaged_config_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    RunFiles(run).config.write_text("{broken")
    assert main(["train", "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {RunFiles(run).config}: damaged, not a readable JSON file")
    assert len(err.splitlines()) == 1
    assert err.rstrip().endswith("; the run cannot be resumed")
    write_json(RunFiles(run).config, {"epochs": 3, "run_dir": str(run)})
    assert launch.resume_config(run, epochs=5)["epochs"] == 5 and "run_dir" not in launch.resume_config(run)
    assert launch.resume_config(run, epochs=2)["epochs"] == 3  # epochs may only grow


def test_a_damaged_study_folder_record_is_named(tmp_path):
    write_json(tmp_path / studyrun.PLAN_JSON, {"study": "s.yaml", "name": "s", "runs": [{"run_id": "a", "seed": 0}]})
    write_json(tmp_path / studyrun.PROGRESS_JSON, {"runs": 1, "done": "one"})
    with pytest.raises(StudyError, match="progress.json: damaged, done is 'one', not a whole number"):
        studyrun.read_study_folder(tmp_path)
    studyrun.StudyProgress(runs=2, done=1, active=["a"], failed=["b"], status="running").write(tmp_path)
    shown = studyrun.read_study_folder(tmp_path)
    assert shown.plan.runs[0].run_id == "a" and shown.total_runs == 2
    assert shown.progress.describe() == "1/2 runs finished (running); training: a; failed: b"
    assert shown.progress.fraction == 0.5
    # its verdicts.md (the study folder is the user's) that is not UTF-8 ended the Study page in a stack trace
    # (UnicodeDecodeError), as its study.csv no longer did
    (tmp_path / studyrun.VERDICTS_MD).write_bytes(b"# Study \xff\n")
    with pytest.raises(StudyError) as raised:
        studyrun.read_study_folder(tmp_path)
    assert str(raised.value).startswith(f"{tmp_path / studyrun.VERDICTS_MD}: cannot be read ('utf-8' codec can't ")


def test_a_history_is_read_back_and_a_damaged_one_is_one_message_naming_it(tmp_path):
    """history.csv lies in the user's run folder: read back as numbers; a file that is not UTF-8, not CSV or larger
    than a 1000-epoch history may be is one RunRecordError naming it (the Train page shows it beside the run, with
    no curves), not a stack trace or a whole file read; cells past the header are left out."""
    from moleseg.app import trainstatus
    from moleseg.engine.runs import MAX_HISTORY_BYTES, read_history, write_history

    history = RunFiles(tmp_path).history
    assert read_history(history) == []
    write_history(history, [{"epoch": 1, "loss": 0.5, "val_fm": ""}, {"epoch": 2, "loss": 0.25, "val_fm": 0.75}])
    assert [{name: row[name] for name in ("epoch", "loss", "val_fm")} for row in read_history(history)] == [
        {"epoch": 1.0, "loss": 0.5, "val_fm": None}, {"epoch": 2.0, "loss": 0.25, "val_fm": 0.75}]
    history.write_text("epoch,loss\n1,0.5,extra,cells\n")
    assert read_history(history) == [{"epoch": 1.0, "loss": 0.5}]
    for content, reason in [(b"epoch,loss\n1,\xff\xfe\n", "damaged, not UTF-8 text"),
                            (b'epoch,loss\n1,"' + b"x" * 200_000 + b'"\n',
                             "damaged, not a readable CSV file (field larger than field limit (131072))"),
                            (b"epoch\n" + b"1\n" * (MAX_HISTORY_BYTES // 2 + 1),
                             "damaged, larger than a training history may be (4004 KiB)")]:
        history.write_bytes(content)
        with pytest.raises(RunRecordError) as raised:
            read_history(history)
        assert str(raised.value) == f"{history}: {reason}"
    RunFiles(tmp_path).state.write_text("[1, 2]")
    shown = trainstatus.view(tmp_path)
    assert shown.history == () and shown.state is None
    assert shown.problem == (f"{RunFiles(tmp_path).state}: damaged, not a JSON object\n\n"
                             f"{history}: damaged, larger than a training history may be (4004 KiB)")


def test_a_history_whose_epoch_is_not_a_number_is_named_as_damaged(tmp_path):
    """An epoch cell that is text ('abc') was read back as text: the Train page's curves ended in a stack trace
    (float('abc') in charts), and a resume in a TypeError naming no file ('<=' between str and int)."""
    from moleseg.app import charts, trainstatus
    from moleseg.engine.runs import read_history

    history = RunFiles(tmp_path).history
    history.write_text("epoch,loss,rule\n1,0.5,largest\nabc,0.4,largest\n")
    with pytest.raises(RunRecordError) as raised:
        read_history(history)
    assert str(raised.value) == f"{history}: damaged, row 2's epoch is 'abc', not a number"
    assert trainstatus.view(tmp_path).problem == str(raised.value)
    history.write_text("epoch,loss,rule\n1,0.5,largest\n2,,largest\n")  # text in other columns is the run's own
    rows = read_history(history)
    assert rows == [{"epoch": 1.0, "loss": 0.5, "rule": "largest"}, {"epoch": 2.0, "loss": None, "rule": "largest"}]
    assert len(charts.training_curves(rows).data) == 1  # the training loss


def test_the_table_of_trainings_reads_no_history(tmp_path, monkeypatch):
    """The Train page's table of a user's trainings (up to LISTED_RUNS = 50, at each rerun of the page) read and
    parsed every run's history.csv, which it does not show, since TrainingView carries the curves: up to 50 files
    of 4 MB, 1.4 s each, that a user's runs folder may hold."""
    from moleseg.app import trainstatus

    run = tmp_path / "run1"
    jobs.JobRequest(config={"epochs": 2}, origin="app", requested=5.0).write(run)
    RunState(epoch=1, best_val_fm=0.5).write(run)
    RunFiles(run).history.write_text("epoch,loss\n1,0.5\n")
    monkeypatch.setattr(trainstatus, "read_history", lambda path: pytest.fail(f"{path} was read"))
    rows = trainstatus.runs_table(tmp_path)
    assert [(row["run"], row["epochs"], row["best validation FM"]) for row in rows] == [("run1", "1/?", 0.5)]


def test_the_study_processs_unforeseen_error_reaches_study_log_escaped_with_one_line(tmp_path, monkeypatch, capsys):
    """The background study process's output is study.log (read with tail -f): an error it did not foresee left
    main before its streams were escaped, and Python printed its traceback raw there (a data file's name with
    terminal escapes), with no line of the log saying the study stopped."""
    def broken(*args, **kwargs):
        raise LookupError("e\x1b]0;owned\x07\x1b[2J.png")

    monkeypatch.setattr(studyrun, "checked_study", broken)
    out = tmp_path / "out"
    assert studyrun.main(["--config", str(tmp_path / "s.yaml"), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out + captured.err
    assert captured.err.startswith("Traceback (most recent call last):")
    assert captured.err.rstrip().endswith("LookupError: e\\x1b]0;owned\\x07\\x1b[2J.png")
    assert (out / studyrun.STUDY_LOG).read_text().endswith(
        "  error: the study stopped on an unexpected error (LookupError: e\\x1b]0;owned\\x07\\x1b[2J.png)\n")


def test_the_training_runners_warnings_are_one_line_each(tmp_path, monkeypatch, capsys):
    """The training runner's output is job.log, whose lines keep their line ends: a warning naming a model file
    ('m.keras changed while it was loaded') came out in Python's form, its source line and a name with a line end
    making lines of their own ('error: ...'), where the command line prints one line 'warning: ...' (the first
    line of its text)."""
    import warnings

    from moleseg.network import runner

    def warn(run_dir, ready_fd):
        warnings.warn("m\nerror: the training failed.keras changed while it was loaded", UserWarning)
        return 0

    monkeypatch.setattr(runner, "run_job", warn)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert runner.main([str(tmp_path)]) == 0
    assert capsys.readouterr().err == "warning: m\n"  # the first line of its text, as the command line prints it


def test_a_training_that_says_done_while_its_status_is_read_is_done_not_died(tmp_path, monkeypatch):
    """The runner writes its last progress.json, then lets the lock go; a reader that read 'running' before that word
    and looks at the lock after it must read the word again (the Train page called a finished training 'died', and
    a fresh-clone CI failed on it); a process that ended without a word is still 'died'."""
    progress = RunFiles(tmp_path).progress
    write_json(progress, {"status": "running", "epoch": 1, "epochs": 2})

    def finishes_meanwhile(run_dir):
        write_json(progress, {"status": "done", "epoch": 2, "epochs": 2})
        return False

    monkeypatch.setattr(jobs, "_holds_lock", finishes_meanwhile)
    status = jobs.read_job(tmp_path)
    assert (status.status, status.epoch, status.error) == ("done", 2, None)
    write_json(progress, {"status": "running", "epoch": 1, "epochs": 2})
    monkeypatch.setattr(jobs, "_holds_lock", lambda run_dir: False)
    status = jobs.read_job(tmp_path)
    assert status.status == "died" and status.error.startswith("the training process ended without a word")
