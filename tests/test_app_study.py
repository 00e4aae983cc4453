"""The Study page opens a study folder: progress, verdicts, the runs' table and the plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app_helpers import app_test
from moleseg.app import ui
from moleseg.app.ui import PAGE_FILES
from moleseg.core.settings import load_settings
from moleseg.engine import runs, studyplan, studyrun, studystats
from synthetic import fake_run, write_study


def test_the_study_page_shows_a_study_folder(app_folders, tmp_path):
    folders = app_folders
    path = write_study(tmp_path / "s.yaml", factors={"solver": ["sgdm"]})
    out = folders["runs"] / "study-s"
    images = [f"i{k}.png" for k in range(8)]
    fake_run(out, "base-seed0", {name: 0.7 + 0.01 * k for k, name in enumerate(images)})
    fake_run(out, "solver=sgdm-seed0", {name: 0.5 + 0.01 * k for k, name in enumerate(images)})
    runs.write_json(out / studyrun.PLAN_JSON, {"study": str(path), "runs": [{}, {}]})
    runs.write_json(out / studyrun.PROGRESS_JSON, {"runs": 2, "done": 2, "status": "finished", "active": []})
    studystats.write_results(studyplan.load_study(path), out)
    at = app_test(PAGE_FILES["study"])
    assert not at.exception
    assert at.text_input(key="study_folder").value == str(out)
    assert any("lowered mean FM" in m.value for m in at.markdown)
    table = at.dataframe[0].value
    assert list(table["setting"]) == ["base", "sgdm"] and np.isclose(table["fm_mean"].iloc[1], 0.535)
    assert len(at.get("plotly_chart")) == 3


def test_the_study_folder_is_named_after_the_study_file_chosen_last(app_folders, monkeypatch):
    """The folder name was filled in from the first study file shown and stayed so when another file was
    chosen: that study's runs went into the first file's folder (study-cells-gpu for cells.yaml)."""
    started, quotas = [], []
    monkeypatch.setattr(studyrun, "start_study", lambda config, out, roots=None, quota=None: (
        started.append((config, out)), quotas.append(quota)))
    at = app_test(PAGE_FILES["study"])
    files = [str(path) for path in studyplan.study_files()]
    at.selectbox(key="study_file").set_value(files[1]).run()
    at.button(key="study_start").click().run()
    assert not at.exception
    assert started[-1] == (files[1], app_folders["runs"] / f"study-{Path(files[1]).stem}")
    at.text_input(key="study_name").input("my study").run()
    at.button(key="study_start").click().run()
    assert started[-1][1] == app_folders["runs"] / "study-my-study"
    assert quotas == [None, None]  # no quota: nothing for the study to check
    monkeypatch.setenv("MOLESEG_USER_QUOTA_GB", "5")  # with one, the study checks it before each run
    load_settings.cache_clear()
    at.button(key="study_start").click().run()
    assert quotas[-1].quota_gb == 5 and app_folders["runs"] in quotas[-1].folders and quotas[-1].owner


def test_a_bad_study_file_is_one_error_on_the_page(app_folders, tmp_path):
    """A study file whose seed is a list raised a TypeError on the page."""
    path = write_study(tmp_path / "s.yaml", seed=[1])
    at = app_test(PAGE_FILES["study"])
    at.selectbox(key="study_file").set_value("other...").run()
    at.text_input(key="study_file_other").input(str(path)).run()
    at.button(key="study_start").click().run()
    assert not at.exception
    assert [error.value for error in at.error] == [ui.plain_markdown(f"{path}: seed must be a whole number >= 0, not a "
                                                                     "list")]
    assert not (app_folders["runs"] / "study-s").exists()


def test_the_shipped_results_open_as_a_read_only_study(app_folders):
    shipped = studyrun.SHIPPED_RESULTS_DIR / "moles"
    assert shipped in studyrun.shipped_results()
    at = app_test(PAGE_FILES["study"])
    at.text_input(key="study_folder").set_value(str(shipped)).run()
    assert not at.exception and not at.warning and not at.error
    assert "results of 12 finished runs (read-only: the run folders are not here)" in [c.value for c in at.caption]
    assert any("solver = sgdm lowered mean FM from 0.7989 (base) to 0.3170" in m.value for m in at.markdown)
    table = at.dataframe[0].value
    assert len(table) == 12 and table["fm_mean"].iloc[0] == 0.8027
    assert len(at.get("vega_lite_chart")) == 1  # mean FM by setting
    means = studyrun.mean_fm_by_setting(studyrun.read_study_folder(shipped).rows)
    assert np.isclose(means["base"], (0.8027 + 0.7950) / 2) and np.isclose(means["solver = sgdm"], (0.4322 + 0.2019) / 2)


def test_the_default_study_file_fits_the_machine(app_folders):
    files = studyplan.study_files()
    cpu, gpu = studyplan.default_study_file(files, gpu=False), studyplan.default_study_file(files, gpu=True)
    assert (cpu.name, gpu.name) == ("moles.yaml", "moles-gpu.yaml")
    at = app_test(PAGE_FILES["study"])  # this machine: no GPU
    assert at.selectbox(key="study_file").value == str(cpu)
