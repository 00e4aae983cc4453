"""An upload's name and a file's own text are anyone's text: a refusal that quotes them is shown as text, never
as markdown (an image link in a file name made the browser fetch it from another server)."""

from __future__ import annotations

from app_helpers import app_test
from synthetic import png_bytes

from moleseg.app.ui import PAGE_FILES
from moleseg.core.imagefile import NOT_AN_IMAGE
from moleseg.core.markup import plain_markdown

NAME = "![x](https://evil.example/p.png).png"


def test_the_compare_page_shows_a_refused_upload_s_name_as_text(app_folders, lesion_scene):
    after, _ = lesion_scene()
    at = app_test(PAGE_FILES["compare"])
    at.selectbox(key="compare_model").set_value("classical").run()
    at.file_uploader(key="compare_before").set_value((NAME, b"not an image", "image/png"))
    at.file_uploader(key="compare_after").set_value(("after.png", png_bytes(after), "image/png")).run()
    assert not at.exception
    assert [error.value for error in at.error] == [plain_markdown(f"{NAME}: {NOT_AN_IMAGE}")]


def test_the_whole_dataset_scan_shows_a_shared_file_s_name_as_text(app_folders, tmp_path):
    import shutil

    from app_helpers import run_until, texts
    from synthetic import make_dataset

    name = "z[Sign in again](https:evil.example)"  # sorts after the previewed pair
    dataset = make_dataset(tmp_path / "moles", count=2)
    shutil.copy(dataset / "images" / "m0.png", dataset / "images" / f"{name}.png")
    (dataset / "masks" / f"{name}.png").write_bytes(b"not a picture")
    at = app_test(PAGE_FILES["prepare"])
    at.text_input(key="prepare_folder").set_value(str(dataset)).run()
    at.button(key="prepare_all").click().run()
    run_until(at, lambda at: any("Sign in again" in text for text in texts(at.error)))
    assert not at.exception
    shown = [text for text in texts(at.error) + texts(at.warning) if "Sign in again" in text]
    assert shown and all("Sign in again](" not in text for text in shown), shown
    assert any(plain_markdown(f"{name}.png") in text for text in shown)


def test_the_study_page_shows_a_shared_study_file_s_text_as_text(app_folders, tmp_path):
    path = tmp_path / "s.yaml"  # in the data root: anyone's file
    path.write_text("'[Sign in again](https:evil.example)': 1\nfactors: {solver: [adam]}\n", encoding="utf-8")
    at = app_test(PAGE_FILES["study"])
    at.selectbox(key="study_file").set_value("other...").run()
    at.text_input(key="study_file_other").input(str(path)).run()
    at.button(key="study_start").click().run()
    assert not at.exception
    [error] = [error.value for error in at.error]
    assert "Sign in again" in error and "Sign in again](" not in error
    assert error.startswith(plain_markdown(f"{path}: unknown key '[Sign in again](https:evil.example)'"))
