"""Server folders only inside the data roots: the confinement helper (moleseg.core.roots) and every page that
takes a server path (Prepare, Evaluate, Train, Study, Analyse's "My dataset"), with the same message for a
folder outside the roots, a missing one and an unreadable one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app_helpers import app_test, texts
from synthetic import make_dataset, write_study
from moleseg.app import serverpaths
from moleseg.app.ui import PAGE_FILES, plain_markdown
from moleseg.core.config import SHIPPED_MODELS, STUDIES_DIR, models_dir
from moleseg.core.roots import (MAX_LISTED_FOLDERS, OutsideRootsError, folders_inside, resolve_inside_folder,
                                resolve_inside_roots)
from moleseg.core.settings import load_settings
from moleseg.engine import session, studyplan, studyrun


def refusal(path: object) -> str:
    return f"{path} is not inside the data folders this server offers"


@pytest.fixture
def outside(tmp_path_factory) -> Path:
    """A private (0700) folder outside the data roots holding a dataset, as a server's secret folder would."""
    folder = tmp_path_factory.mktemp("outside")
    make_dataset(folder / "secret", count=2, size=64)
    (folder / "empty").mkdir()
    folder.chmod(0o700)
    return folder


# --------------------------------------------------------------------------------------------------
# the helper


def test_a_folder_inside_a_root_is_resolved_absolute_or_relative(tmp_path):
    (tmp_path / "root" / "derm" / "images").mkdir(parents=True)
    root = tmp_path / "root"
    assert resolve_inside_roots(str(root / "derm"), [root]) == root / "derm"
    assert resolve_inside_roots(" derm/images ", [tmp_path / "other", root]) == root / "derm" / "images"
    assert resolve_inside_roots(root / "derm" / ".." / "derm", [root]) == root / "derm"
    assert resolve_inside_roots(str(root), [root]) == root


def test_missing_unreadable_outside_and_wrong_kind_get_one_message(tmp_path, outside):
    root = tmp_path / "root"
    (root / "a file").parent.mkdir()
    (root / "a file").write_text("x")
    cases = [str(root / "missing"), str(outside / "secret"), str(outside / "empty"), str(outside / "none"),
             str(root / "a file"), str(root / ".." / "root" / ".." / "outside"), "/etc", "/", "", "   ", "a\0b"]
    messages = []
    for text in cases:
        with pytest.raises(OutsideRootsError) as refused:
            resolve_inside_roots(text, [root])
        messages.append(str(refused.value))
    assert messages == [refusal(text.strip() or "(empty)") for text in cases]
    with pytest.raises(OutsideRootsError, match=refusal(root / "sub").replace("/", ".")):
        resolve_inside_roots(root / "sub", [])  # no roots: nothing is offered


def test_nothing_is_expanded(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DATA", str(home / "data"))
    for text in ("~", "~/data", "$HOME/data", "$DATA", "${DATA}"):
        with pytest.raises(OutsideRootsError, match=refusal(text).replace("$", r"\$").replace("{", r"\{")
                           .replace("}", r"\}")):
            resolve_inside_roots(text, [tmp_path])


def test_a_symlink_inside_a_root_leading_outside_is_refused(tmp_path, outside):
    root = tmp_path / "root"
    root.mkdir()
    (root / "escape").symlink_to(outside / "secret")
    (root / "inner").mkdir()
    (root / "alias").symlink_to(root / "inner")
    with pytest.raises(OutsideRootsError, match=refusal(root / "escape")):
        resolve_inside_roots(str(root / "escape"), [root])
    with pytest.raises(OutsideRootsError):
        resolve_inside_roots(str(root / "escape" / "images"), [root])
    assert resolve_inside_roots(str(root / "alias"), [root]) == root / "inner"  # a link that stays inside
    # a root given through a symlink is compared by its real path
    (tmp_path / "root-link").symlink_to(root)
    assert resolve_inside_roots(str(root / "inner"), [tmp_path / "root-link"]) == root / "inner"


def test_files_are_confined_alike(tmp_path, outside):
    root = tmp_path / "root"
    root.mkdir()
    (root / "model.keras").write_bytes(b"PK")
    (outside / "model.keras").write_bytes(b"PK")
    assert resolve_inside_roots("model.keras", [root], file=True) == root / "model.keras"
    for text in (str(outside / "model.keras"), str(root), str(root / "absent.keras")):
        with pytest.raises(OutsideRootsError, match=refusal(text)):
            resolve_inside_roots(text, [root], file=True)


def test_a_name_inside_the_apps_folder_is_one_plain_component(tmp_path):
    assert resolve_inside_folder(" derm-256 ", tmp_path) == tmp_path / "derm-256"
    for name in ("../x", "a/b", "/etc", ".hidden", "..", ".", "", "a\\b"):
        with pytest.raises(OutsideRootsError):
            resolve_inside_folder(name, tmp_path)


def test_the_picker_lists_the_roots_two_levels_deep_without_hidden_folders_or_escapes(tmp_path, outside):
    root = tmp_path / "root"
    for sub in ("a/b/c", "a/.git", "d"):
        (root / sub).mkdir(parents=True)
    (root / "escape").symlink_to(outside)
    (root / "file.png").write_bytes(b"")
    assert folders_inside([root]) == [root, root / "a", root / "d", root / "a" / "b"]
    assert folders_inside([root], max_depth=0) == [root]
    assert folders_inside([tmp_path / "absent"]) == []
    assert MAX_LISTED_FOLDERS == 2000


# --------------------------------------------------------------------------------------------------
# the pages (app_folders offers tmp_path as the one data root)


def test_prepare_refuses_a_folder_outside_the_roots_as_it_refuses_a_missing_one(app_folders, tmp_path, outside):
    at = app_test(PAGE_FILES["prepare"])
    shown = {}
    for text in (str(tmp_path / "nowhere"), str(outside / "secret"), str(outside / "empty"), str(outside),
                 f"{outside / 'secret' / 'images'} | {outside / 'secret' / 'masks'}", "~", "~/.ssh"):
        at.text_input(key="prepare_folder").set_value(text).run()
        assert not at.exception
        shown[text] = texts(at.error)
        assert not at.dataframe  # nothing of the folder is listed
    first = str(outside / "secret" / "images")
    assert shown == {str(tmp_path / "nowhere"): [refusal(tmp_path / "nowhere")],
                     str(outside / "secret"): [refusal(outside / "secret")],
                     str(outside / "empty"): [refusal(outside / "empty")], str(outside): [refusal(outside)],
                     f"{first} | {outside / 'secret' / 'masks'}": [refusal(first)],
                     "~": [refusal("~")], "~/.ssh": [refusal("~/.ssh")]}


def test_prepare_refuses_a_symlink_inside_the_root_that_leads_outside(app_folders, tmp_path, outside):
    (tmp_path / "escape").symlink_to(outside / "secret")
    at = app_test(PAGE_FILES["prepare"])
    at.text_input(key="prepare_folder").set_value(str(tmp_path / "escape")).run()
    assert texts(at.error) == [refusal(tmp_path / "escape")]


def test_prepare_offers_the_folders_of_the_roots_in_a_picker(app_folders, tmp_path):
    dataset = make_dataset(tmp_path / "derm", count=2, size=64)
    at = app_test(PAGE_FILES["prepare"])
    picker = at.selectbox(key="prepare_folder_pick")
    assert str(dataset) in picker.options and str(dataset / "images") in picker.options
    picker.set_value(str(dataset)).run()
    assert not at.exception and not at.error
    assert at.text_input(key="prepare_folder").value == str(dataset)
    assert {metric.label: metric.value for metric in at.metric}["Pairs"] == "2"


def test_a_folder_whose_name_is_not_utf8_is_not_offered_and_breaks_no_page(app_folders, tmp_path):
    # the picker's list could not be sent to the browser: a stack trace instead of the Prepare page
    dataset = make_dataset(tmp_path / "derm", count=2, size=64)
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/visite-\xe9t\xe9"))
    (odd / "images").mkdir(parents=True)
    listed = folders_inside([tmp_path])
    assert dataset in listed and odd not in listed and odd / "images" not in listed
    at = app_test(PAGE_FILES["prepare"])
    assert not at.exception
    assert str(dataset) in at.selectbox(key="prepare_folder_pick").options


def test_without_data_roots_the_pages_say_so_and_take_uploads(app_folders, monkeypatch, tmp_path):
    monkeypatch.setenv("MOLESEG_DATA_ROOTS", "")
    load_settings.cache_clear()
    dataset = make_dataset(tmp_path / "derm", count=2, size=64)
    at = app_test(PAGE_FILES["prepare"])
    assert serverpaths.NO_ROOTS_NOTICE in texts(at.info)
    assert at.text_input(key="prepare_folder").help == serverpaths.DATASET_PATH_HELP
    at.text_input(key="prepare_folder").set_value(str(dataset)).run()
    assert texts(at.error) == [refusal(dataset)]
    at.radio(key="prepare_source").set_value("a ZIP upload").run()
    assert not at.exception and at.get("file_uploader")
    for page in ("evaluate", "train"):
        at = app_test(PAGE_FILES[page])
        assert not at.exception and serverpaths.NO_ROOTS_NOTICE in texts(at.info), page
        if page == "evaluate":  # the same words for a dataset folder as Prepare's
            assert at.text_input(key="evaluate_folder").help == serverpaths.DATASET_PATH_HELP


def test_evaluate_does_not_score_a_folder_outside_the_roots(app_folders, tmp_path, outside):
    at = app_test(PAGE_FILES["evaluate"])
    at.selectbox(key="evaluate_model").set_value("classical").run()
    at.text_input(key="evaluate_folder").set_value(str(outside / "secret")).run()
    at.button(key="evaluate_run").click().run()
    assert not at.exception
    assert texts(at.error) == [plain_markdown(refusal(outside / "secret"))]
    assert "evaluate_task" not in at.session_state and not at.get("imgs")


def test_train_reads_datasets_and_model_files_only_inside_the_roots(app_folders, tmp_path, outside):
    (outside / "model.keras").write_bytes(b"PK")
    (tmp_path / "start.keras").write_bytes(b"PK")
    at = app_test(PAGE_FILES["train"])
    at.text_area(key="train_images").set_value(str(outside / "secret")).run()
    at.radio(key="train_weights").set_value("file").run()
    at.text_input(key="train_weights_file").set_value(str(outside / "model.keras")).run()
    at.button(key="train_start").click().run()
    assert not at.exception
    assert texts(at.error) == [refusal(outside / "secret"),
                               f"Model file to start from: {refusal(outside / 'model.keras')}"]
    at.text_input(key="train_weights_file").set_value("start.keras").run()
    assert at.session_state["train_config"]["weights"] == str(tmp_path / "start.keras")


def test_the_example_cache_is_a_name_inside_the_apps_cache_folder(app_folders, tmp_path, outside):
    at = app_test(PAGE_FILES["train"])
    assert at.session_state["train_config"]["cache_dir"] is None  # the default: the app's examples cache
    at.text_input(key="train_cache_dir").set_value("derm-256").run()
    assert at.session_state["train_config"]["cache_dir"] == str(app_folders["cache"] / "examples" / "derm-256")
    make_dataset(tmp_path / "derm", count=2, size=64)
    at.text_area(key="train_images").set_value(str(tmp_path / "derm"))
    at.text_input(key="train_cache_dir").set_value("~").run()  # nothing expanded: a folder named ~ in the cache
    assert at.session_state["train_config"]["cache_dir"] == str(app_folders["cache"] / "examples" / "~")
    for name in (str(outside), "../../outside", ".hidden"):
        at.text_input(key="train_cache_dir").set_value(name).run()
        assert at.session_state["train_config"]["cache_dir"] is None
        at.button(key="train_start").click().run()
        assert texts(at.error) == [f"Example cache name: {name!r} is not a plain name (no folders, not hidden)"]
    assert not list(outside.glob("*.npz")) and not os.listdir(app_folders["runs"])


def test_study_files_only_from_the_shipped_studies_or_the_roots(app_folders, monkeypatch, tmp_path, outside):
    started = []

    def start(config, out, roots=None, quota=None):  # the page passes the user's quota too
        started.append((config, out, roots))
        out.mkdir()

    monkeypatch.setattr(studyrun, "start_study", start)
    (outside / "evil.yaml").write_text("name: evil\n")
    (tmp_path / "mine.yaml").write_text("name: mine\n")
    at = app_test(PAGE_FILES["study"])
    at.selectbox(key="study_file").set_value("other...").run()
    for text in (str(outside / "evil.yaml"), str(tmp_path / "absent.yaml"), "~/evil.yaml"):
        at.text_input(key="study_file_other").set_value(text).run()
        assert texts(at.error) == [refusal(text)]
        assert at.button(key="study_start").disabled
    at.text_input(key="study_file_other").set_value(str(tmp_path / "mine.yaml")).run()
    at.button(key="study_start").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert started == [(str(tmp_path / "mine.yaml"), app_folders["runs"] / "study-mine",
                        (tmp_path, serverpaths.dataset_roots()[1]))]  # the data roots and My dataset
    shipped = sorted(STUDIES_DIR.glob("*.yaml"))[0]
    at.text_input(key="study_file_other").set_value(str(shipped)).run()
    assert not at.error


def test_the_study_folder_is_read_only_inside_the_apps_runs(app_folders, tmp_path, outside):
    (outside / "plan.json").write_text("{}")
    at = app_test(PAGE_FILES["study"])
    at.text_input(key="study_folder").set_value(str(outside)).run()
    assert not at.exception and texts(at.error) == [refusal(outside)]
    (app_folders["runs"] / "study-x").mkdir()
    at.text_input(key="study_folder").set_value(str(app_folders["runs"] / "study-x")).run()
    assert not at.error and texts(at.warning) == [plain_markdown(
        f"{app_folders['runs'] / 'study-x'}: not a study folder (no plan.json and no study.csv)")]


def test_a_study_started_from_the_app_reads_data_only_inside_the_roots(tmp_path, outside):
    file = tmp_path / "study.yaml"
    file.write_text(f"data:\n  train: {{images: {outside}/secret/images, masks: {outside}/secret/masks}}\n"
                    f"  test: {{images: {outside}/secret/images, masks: {outside}/secret/masks}}\n"
                    "factors:\n  solver: [adam, sgdm]\n")
    with pytest.raises(studyplan.StudyError) as refused:
        studyrun.start_study(file, tmp_path / "out", roots=[tmp_path])
    assert str(refused.value) == f"{file}: data folder {refusal(outside / 'secret' / 'images')}"
    assert not (tmp_path / "out").exists()
    study = studyplan.load_study(file)
    assert studyplan.data_folders(study) == [outside / "secret" / sub for sub in ("images", "masks") * 2]


def test_a_dataset_named_by_its_two_folders_is_read_back_as_written(tmp_path):
    derm = make_dataset(tmp_path / "derm", count=1, size=64)
    text = session.dataset_text(derm / "images", derm / "masks")
    assert text == f"{derm / 'images'} | {derm / 'masks'}" and session.DATASET_PAIR_FORM == "IMAGES_DIR | MASKS_DIR"
    assert session.dataset_folders(text, [tmp_path]) == (derm / "images", derm / "masks")


def test_a_dataset_in_the_roots_holding_links_to_files_outside_them_is_refused(tmp_path, outside):
    """The folders were confined, their files not: anyone who may write into a data root could link a file of
    another user's space there, and the Prepare and Evaluate pages showed it to them."""
    derm = make_dataset(tmp_path / "derm", count=2, size=64)
    (derm / "images" / "m9.png").symlink_to(outside / "secret" / "images" / "m0.png")
    (derm / "masks" / "inside.png").symlink_to(derm / "masks" / "m0.png")  # a link that stays inside is fine
    for text in (str(derm), f"{derm / 'images'} | {derm / 'masks'}"):
        with pytest.raises(OutsideRootsError) as refused:
            session.dataset_folders(text, [tmp_path])
        assert str(refused.value) == refusal(derm / "images" / "m9.png")
    file = write_study(tmp_path / "study.yaml", data={part: {"images": "derm/images", "masks": "derm/masks"}
                                                      for part in ("train", "test")})
    with pytest.raises(studyplan.StudyError) as refused_study:
        studyrun.checked_study(file, roots=[tmp_path])
    assert str(refused_study.value) == f"{file}: data folder {refusal(derm / 'images' / 'm9.png')}"
    (derm / "images" / "m9.png").unlink()
    assert session.dataset_folders(str(derm), [tmp_path]) == (derm / "images", derm / "masks")

@pytest.mark.parametrize(("given", "refused"), [
    ({"validation_images": ["{o}/secret/images"], "validation_masks": ["{o}/secret/masks"]},
     "validation_images: {o}/secret/images"),  # another user's dataset read for validation, say
    ({"test_images": ["{o}/secret/images"], "test_masks": ["{o}/secret/masks"]}, "test_images: {o}/secret/images"),
    ({"weights": "{o}/bob.keras"}, "weights: {o}/bob.keras"),  # another user's model to start from
    ({"cache_dir": "{o}/cache"}, "cache_dir: {o}/cache: a study started here keeps its examples in your example "
                                 "cache; leave cache_dir out"),  # written into
])
def test_a_study_started_from_the_app_names_no_other_server_path_in_its_options(tmp_path, outside, given, refused):
    """A study file is untrusted: its base options (or a factor's setting) named folders and files outside the
    roots that its trainings then read (another user's dataset, their model to start from) or wrote (the example
    cache), though its data section was checked."""
    make_dataset(tmp_path / "derm", count=4, size=64)
    (outside / "bob.keras").write_bytes(b"PK")
    options = {key: [text.format(o=outside) for text in value] if isinstance(value, list) else value.format(o=outside)
               for key, value in given.items()}
    base = {"epochs": 1, "batch_size": 2, "model": {"input_size": 32}}
    data = {part: {"images": "derm/images", "masks": "derm/masks"} for part in ("train", "test")}
    for study in ({"base": {**base, **options}}, {"base": base, "factors": {"start": {"theirs": options}}}):
        file = write_study(tmp_path / "study.yaml", data=data, **study)
        with pytest.raises(studyplan.StudyError) as refusal_of:
            studyrun.start_study(file, tmp_path / "out", roots=[tmp_path], python="/bin/true")
        outside_roots = "" if "cache_dir" in given else " is not inside the data folders this server offers"
        assert str(refusal_of.value) == f"{file}: {refused.format(o=outside)}{outside_roots}"
        assert not (tmp_path / "out").exists()
    file = write_study(tmp_path / "study.yaml", data=data, base={**base, **options})  # changed once checked
    assert studyrun.main(["--config", str(file), "--out", str(tmp_path / "out"), "--root", str(tmp_path)]) == 2
    assert refused.format(o=outside) in (tmp_path / "out" / studyrun.STUDY_LOG).read_text()
    for usual in ("none", "imagenet", str(models_dir() / SHIPPED_MODELS[3])):  # these starts stay open
        file = write_study(tmp_path / "study.yaml", data=data, base={**base, "weights": usual})
        assert studyrun.checked_study(file, roots=[tmp_path]).name == "t"

def test_a_zip_dataset_of_this_session_is_evaluated_but_not_another_sessions(app_folders, tmp_path,
                                                                               tmp_path_factory, monkeypatch):
    import zipfile
    from io import BytesIO

    from moleseg.engine.session import SessionFolder

    sessions = tmp_path_factory.mktemp("sessions")  # the temporary folder, outside the data roots
    monkeypatch.setenv("MOLESEG_TMPDIR", str(sessions))
    dataset = make_dataset(tmp_path_factory.mktemp("upload") / "moles", count=2, size=64)
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(dataset.rglob("*.png")):
            archive.write(path, path.relative_to(dataset.parent).as_posix())
    at = app_test(PAGE_FILES["prepare"])
    at.radio(key="prepare_source").set_value("a ZIP upload").run()
    at.file_uploader(key="prepare_zip").set_value(("moles.zip", buffer.getvalue(), "application/zip")).run()
    assert not at.exception and not at.error
    images = at.session_state["prepare_zip_dataset"]["images"]
    assert images.startswith(str(sessions))
    at.switch_page(PAGE_FILES["evaluate"]).run()
    assert at.text_input(key="evaluate_folder").value.startswith(images)
    at.selectbox(key="evaluate_model").set_value("classical").run()
    at.button(key="evaluate_run").click().run()
    assert not at.exception and not at.error
    other = SessionFolder(root=sessions)
    make_dataset(other.path / "dataset", count=2, size=64)
    at.text_input(key="evaluate_folder").set_value(str(other.path / "dataset")).run()
    at.button(key="evaluate_run").click().run()
    assert texts(at.error) == [plain_markdown(refusal(other.path / "dataset"))]


def test_a_list_of_datasets_longer_than_the_limit_is_refused_before_any_is_read(tmp_path):
    """The Train page resolved, searched and checked every line of its dataset lists on every run (some 2 ms a
    line): a pasted list of 10,000 lines (30 kB) held the server for 14 s a run. More than MAX_DATASETS lines are
    refused with one sentence, before any is read; the same limit holds for a config.json or a study file."""
    from moleseg.core import options
    from moleseg.core.config import MAX_DATASETS

    make_dataset(tmp_path / "derm", count=1, size=64)
    assert len(session.dataset_list("derm\n" * MAX_DATASETS, [tmp_path])) == MAX_DATASETS
    text = "derm\n# a comment\n\n" * (MAX_DATASETS + 1)
    with pytest.raises(ValueError) as refused:
        session.dataset_list(text, [tmp_path])
    assert str(refused.value) == f"{MAX_DATASETS + 1} datasets are listed and a list takes at most {MAX_DATASETS}"
    assert options.option("images").problems(["derm"] * (MAX_DATASETS + 1)) == [
        f"images lists {MAX_DATASETS + 1} folders and takes at most {MAX_DATASETS}"]
    assert options.option("images").problems(["derm"] * MAX_DATASETS) == []
