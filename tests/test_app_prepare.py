"""The Prepare page: pairing report, target preview and class frequencies; safe ZIP datasets; session folders."""

from __future__ import annotations

import io
import os
import shutil
import stat
import threading
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from app_helpers import app_test, run_until, texts
from synthetic import make_dataset, mole_image
from moleseg.app import preparation, ui
from moleseg.app.ui import PAGE_FILES, PAGES
from moleseg.core import options
from moleseg.engine.session import (ArchiveError, SessionFolder, extract_zip, owned_session_folders,
                                    remove_stale_folders)

PAGE = PAGE_FILES["prepare"]


def metrics(at):
    return {metric.label: metric.value for metric in at.metric}


def frequency_frames(at):
    return [frame.value for frame in at.dataframe if "class" in frame.value.columns]


def zip_of(folder, prefix="dataset/"):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*.png")):
            archive.write(path, prefix + path.relative_to(folder).as_posix())
    return buffer.getvalue()


def test_a_dataset_folder_shows_its_pairs_and_class_frequencies(app_folders, tmp_path):
    dataset = make_dataset(tmp_path / "moles", count=6)
    at = app_test(PAGE)
    at.text_input(key="prepare_folder").set_value(str(dataset)).run()
    assert not at.exception and not at.error
    assert metrics(at) == {"Pairs": "6", "Unpaired images": "0", "Unpaired masks": "0", "Size mismatches": "0"}
    pair_table = frequency_frames(at)[0]
    assert list(pair_table["class"]) == ["back", "border", "inside"]
    assert pair_table["fraction"].sum() == pytest.approx(1.0, abs=1e-4)
    assert (pair_table["fraction"] > 0).all()
    assert len(at.get("image")) == 3  # image, mask, class map
    (train_link,) = [link.proto for link in at.get("page_link") if link.proto.label == "Train on this dataset"]
    assert (train_link.page, train_link.icon) == ("train", next(p.icon for p in PAGES if p.key == "train"))
    at.button(key="prepare_all").click().run()
    run_until(at, lambda at: len(frequency_frames(at)) == 2)  # the scan runs in the background
    whole = frequency_frames(at)[-1]
    assert "pixels" not in whole.columns and whole["fraction"].sum() == pytest.approx(1.0, abs=1e-4)
    assert at.slider(key="prepare_width").min == options.option("border_width_px").low  # as moleseg prepare
    # a wider border band takes pixels from INSIDE
    at.slider(key="prepare_width").set_value(10).run()
    wider = frequency_frames(at)[0]
    assert wider["fraction"][1] > pair_table["fraction"][1]
    at.radio(key="prepare_classes").set_value(2).run()
    assert list(frequency_frames(at)[0]["class"]) == ["background", "foreground"]


def test_the_dataset_scan_survives_a_widget_touch_and_a_page_switch(app_folders, tmp_path, monkeypatch):
    dataset = make_dataset(tmp_path / "moles", count=4, size=64)
    gate = threading.Event()  # holds the scan until the page has been touched and left
    scan = preparation.dataset_frequencies
    monkeypatch.setattr(preparation, "dataset_frequencies", lambda *args, **kwargs: gate.wait(30) and scan(*args, **kwargs))
    at = app_test(PAGE)
    at.text_input(key="prepare_folder").set_value(str(dataset)).run()
    at.button(key="prepare_all").click().run()
    assert len(at.get("progress")) == 1 and len(frequency_frames(at)) == 1  # running: a progress bar
    at.selectbox(key="prepare_pair").set_value(2).run()  # a widget touch
    assert len(at.get("progress")) == 1 and not at.exception
    at.switch_page(PAGE_FILES["evaluate"]).run()
    assert not at.get("progress")
    chosen = f"{dataset / 'images'} | {dataset / 'masks'}"
    assert at.text_input(key="evaluate_folder").value == chosen  # the Evaluate page starts with it
    at.switch_page(PAGE).run()  # back: the same dataset, the scan still running
    assert at.text_input(key="prepare_folder").value == chosen
    assert len(at.get("progress")) == 1
    gate.set()
    run_until(at, lambda at: len(frequency_frames(at)) == 2)
    assert not at.get("progress") and not at.exception
    share, read, errors = scan(sorted((dataset / "masks").glob("*.png")))
    whole = frequency_frames(at)[-1]
    assert read == 4 and not errors
    assert list(whole["fraction"]) == [round(float(value), 6) for value in share]


def test_the_train_page_starts_with_the_dataset_chosen_here(app_folders, tmp_path):
    from moleseg.app.trainform import widget_key

    dataset = make_dataset(tmp_path / "moles", count=2, size=64)
    at = app_test(PAGE)
    at.text_input(key="prepare_folder").set_value(str(dataset)).run()
    at.switch_page(PAGE_FILES["train"]).run()
    assert not at.exception
    assert at.text_area(key=widget_key(options.option("images"))).value == f"{dataset / 'images'} | {dataset / 'masks'}"


def test_the_pairing_report_shows_rules_unpaired_files_and_size_mismatches(app_folders, tmp_path):
    dataset = make_dataset(tmp_path / "isic", count=4, mask_suffix="_segmentation")
    Image.fromarray(mole_image(seed=9)[0]).save(dataset / "images" / "lonely.png")
    Image.fromarray(np.zeros((50, 60), np.uint8)).save(dataset / "masks" / "m0_segmentation.png")  # wrong size
    at = app_test(PAGE)
    at.text_input(key="prepare_folder").set_value(f"{dataset / 'images'} | {dataset / 'masks'}").run()
    assert not at.exception
    assert metrics(at) == {"Pairs": "4", "Unpaired images": "1", "Unpaired masks": "0", "Size mismatches": "1"}
    assert any("mask suffix" in text for text in texts(at.markdown))


def test_a_file_name_that_is_not_utf8_is_left_out_not_a_stack_trace(app_folders, tmp_path):
    # the pairs table could not be sent to the browser: UnicodeEncodeError and a stack trace on the page
    dataset = make_dataset(tmp_path / "moles", count=2)
    for folder in ("images", "masks"):
        shutil.copy(dataset / folder / "m0.png", os.fsdecode(bytes(dataset / folder) + b"/l\xe9sion.png"))
    at = app_test(PAGE)
    at.text_input(key="prepare_folder").set_value(str(dataset)).run()
    assert not at.exception and not at.error
    assert metrics(at) == {"Pairs": "2", "Unpaired images": "0", "Unpaired masks": "0", "Size mismatches": "0"}
    assert texts(at.warning) == [ui.plain_markdown(  # as markdown shows it as it is
        f"{kind} l\\xe9sion.png is left out: its path is not UTF-8 text: rename the file (the results name each "
        "image by its path)") for kind in ("image", "mask")]


def test_a_missing_folder_is_one_clear_error(app_folders, tmp_path):
    at = app_test(PAGE)
    at.text_input(key="prepare_folder").set_value(str(tmp_path / "nowhere")).run()
    assert not at.exception
    assert texts(at.error) == [f"{tmp_path / 'nowhere'} is not inside the data folders this server offers"]


def test_an_uploaded_zip_is_unpacked_into_the_session_folder(app_folders, tmp_path):
    folder = make_dataset(tmp_path / "moles", count=5)
    (folder / "images" / ".thumbnail.png").write_bytes(b"hidden")
    data = zip_of(folder)
    at = app_test(PAGE)
    at.radio(key="prepare_source").set_value("a ZIP upload").run()
    at.file_uploader(key="prepare_zip").set_value(("moles.zip", data, "application/zip")).run()
    assert not at.exception and not at.error
    assert metrics(at)["Pairs"] == "5"
    assert "1 hidden file or link in the archive was skipped." in texts(at.caption)
    images = at.session_state["prepare_zip_dataset"]["images"]
    assert images.startswith(str(app_folders["tmp"] / "moleseg-session-"))


@pytest.mark.parametrize("member", ["../escape.png", "/etc/escape.png", "a/../../escape.png", "C:/escape.png"])
def test_a_zip_slip_archive_is_refused(app_folders, tmp_path, member):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("dataset/images/a.png", b"x")
        archive.writestr(member, b"x")
    at = app_test(PAGE)
    at.radio(key="prepare_source").set_value("a ZIP upload").run()
    at.file_uploader(key="prepare_zip").set_value(("evil.zip", buffer.getvalue(), "application/zip")).run()
    assert not at.exception
    errors = texts(at.error)
    assert len(errors) == 1 and errors[0].startswith("evil.zip: unsafe path")
    assert not list(tmp_path.rglob("escape.png"))


def test_zip_bombs_and_lying_headers_are_refused(tmp_path):
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("images/zeros.png", bytes(20_000_000))
    with pytest.raises(ArchiveError, match="zip bomb"):
        extract_zip(bomb.getvalue(), tmp_path / "a")
    many = io.BytesIO()
    with zipfile.ZipFile(many, "w") as archive:
        for index in range(30):
            archive.writestr(f"images/{index}.png", b"x")
    with pytest.raises(ArchiveError, match="entries"):
        extract_zip(many.getvalue(), tmp_path / "b", max_members=20)
    with pytest.raises(ArchiveError, match="more than"):
        extract_zip(many.getvalue(), tmp_path / "c", max_bytes=10)
    # a member whose header understates its size: counted while unpacking, and the partial output is removed
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("images/a.png", b"y" * 100)
    liar = bytearray(buffer.getvalue())
    central = liar.rfind(b"PK\x01\x02")
    liar[central + 24:central + 28] = (10).to_bytes(4, "little")  # uncompressed size in the central directory
    with pytest.raises(ArchiveError):
        extract_zip(bytes(liar), tmp_path / "d")
    assert not list((tmp_path / "d").rglob("*.png"))
    with pytest.raises(ArchiveError, match="not a readable ZIP"):
        extract_zip(b"plain text", tmp_path / "e")


def test_session_folders_are_removed_with_the_session_and_when_stale(tmp_path):
    folder = SessionFolder(root=tmp_path)
    path = folder.path
    (folder.fresh("dataset") / "x.png").write_bytes(b"x")
    del folder  # the session's state is dropped
    import gc

    gc.collect()
    assert not path.exists()
    old, fresh = SessionFolder(root=tmp_path), SessionFolder(root=tmp_path)
    day_ago = time.time() - 25 * 3600
    os.utime(old.path, (day_ago, day_ago))
    removed = remove_stale_folders(root=tmp_path)
    assert removed == [old.path] and fresh.path.exists()


def test_a_user_holds_at_most_max_session_datasets_unpacked_at_once(tmp_path):
    """Before, each session unpacked its own dataset ZIP (up to 4 GiB) and a script opens any number of sessions:
    one user could fill the server's temporary folder."""
    from moleseg.core.config import MAX_SESSION_DATASETS

    bobs = [SessionFolder(root=tmp_path, owner="bob") for _ in range(MAX_SESSION_DATASETS + 1)]
    for folder in bobs[:MAX_SESSION_DATASETS]:
        (folder.fresh_dataset() / "a.png").write_bytes(b"x")
    with pytest.raises(ArchiveError) as refused:
        bobs[-1].fresh_dataset()
    assert str(refused.value) == (f"you already hold {MAX_SESSION_DATASETS} datasets unpacked from ZIP uploads in "
                                  "other tabs, the most one user may: close one of them (its dataset is removed "
                                  "within minutes) or choose a folder on the server")
    assert not (bobs[-1].path / "dataset").exists()
    assert list(bobs[0].fresh_dataset().iterdir()) == []  # a session's new upload replaces its own dataset
    SessionFolder(root=tmp_path, owner="alice").fresh_dataset()  # another user's datasets are not bob's
    bobs[1].remove()
    assert bobs[-1].fresh_dataset().is_dir()
    swept = bobs[0]
    shutil.rmtree(swept.path)  # the idle sweep took it (a script that runs no heartbeat)
    swept.fresh_dataset()
    assert swept.path in owned_session_folders("bob", tmp_path)  # made again, still bob's: counted
    with pytest.raises(ArchiveError):
        bobs[-1].unpack_dataset(b"not a zip")
    assert not (bobs[-1].path / "dataset").exists()  # a refused archive holds none of bob's two


@pytest.mark.parametrize("taken", ["link", "open folder"])
def test_a_swept_session_folder_is_never_made_again_at_a_name_another_account_could_take(tmp_path, taken):
    """A session folder's name is every local account's to see in the shared temporary folder. Once the idle
    sweep had removed it, the session made it again at that name, into whatever stood there by then: a link to a
    folder of another account's, or a folder of theirs open to all, received the user's unpacked dataset."""
    folder = SessionFolder(root=tmp_path / "tmp", owner="alice")
    old = folder.path
    shutil.rmtree(old)  # the idle sweep
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    if taken == "link":
        old.symlink_to(theirs)
    else:
        old.mkdir()
        old.chmod(0o777)
    (folder.fresh_dataset() / "a.png").write_bytes(b"a patient's picture")
    assert (list(theirs.iterdir()), list(old.iterdir())) == ([], [])
    assert folder.path.parent == old.parent and stat.S_IMODE(folder.path.lstat().st_mode) == 0o700
    assert owned_session_folders("alice", old.parent) == [folder.path]
    folder.remove()
    assert old.exists() and not folder.path.exists()  # what stood at the old name is not the session's to remove


def test_a_folder_another_account_names_after_a_user_is_not_that_user_s(tmp_path):
    """Any local account may make a folder named like a session folder in the shared temporary folder, with an
    owner file naming a user: it counted as that user's, in their quota (a sparse file of any size) and in their
    MAX_SESSION_DATASETS, refusing their own ZIP uploads."""
    from moleseg.core.config import MAX_SESSION_DATASETS
    from moleseg.engine.session import OWNER_FILE, SESSION_PREFIX

    mine = SessionFolder(root=tmp_path, owner="alice")
    for index in range(MAX_SESSION_DATASETS):
        forged = tmp_path / f"{SESSION_PREFIX}forged{index}"
        (forged / "dataset").mkdir(parents=True)
        (forged / OWNER_FILE).write_text("alice", encoding="utf-8")
        forged.chmod(0o755)  # readable by the server's account: made by another one
    assert owned_session_folders("alice", tmp_path) == [mine.path]
    assert mine.fresh_dataset().is_dir()


def test_a_zip_the_file_system_fails_to_unpack_is_refused_in_a_sentence_and_leaves_no_folder(tmp_path, monkeypatch):
    # a full disk (or the session folder swept away meanwhile) while unpacking: the Prepare page shows the
    # refusal as it shows a bad archive's, with the system's words and no path, and nothing half-written stays
    import errno

    import moleseg.engine.session as session_module

    def disk_full(source, target):
        (target / "images").mkdir()
        raise OSError(errno.ENOSPC, "No space left on device", str(target / "images" / "a.png"))

    folder = SessionFolder(root=tmp_path, owner="bob")
    monkeypatch.setattr(session_module, "extract_zip", disk_full)
    with pytest.raises(ArchiveError) as refused:
        folder.unpack_dataset(b"PK")
    assert str(refused.value) == "could not be unpacked on the server: No space left on device"
    assert not (folder.path / "dataset").exists()


def test_file_names_in_a_shared_dataset_draw_no_link_in_the_preview(app_folders, tmp_path):
    # a data root is shared: a file name there is anyone's text, and st.image's caption and st.error read markdown
    name = "0[Sign in again](https:evil.example)"
    dataset = make_dataset(tmp_path / "moles", count=2)
    for folder in ("images", "masks"):
        shutil.copy(dataset / folder / "m0.png", dataset / folder / f"{name}.png")
    at = app_test(PAGE)
    at.text_input(key="prepare_folder").set_value(str(dataset)).run()
    assert not at.exception and not at.error
    captions = [image.caption for element in at.get("image") for image in element.proto.imgs]
    assert captions[:2] == [ui.plain_markdown(f"{name}.png")] * 2, captions
    (dataset / "images" / f"{name}.png").write_bytes(b"not a picture")
    at.run()
    [error] = at.error
    assert error.value == ui.plain_markdown(f"{name}.png: not an image, or not a supported format (expected JPEG, PNG, "
                                            "BMP, TIFF, GIF, WebP or DICOM)")


def test_file_names_in_the_pairing_warnings_and_refusal_draw_no_link(app_folders, tmp_path):
    # the pairing's warnings and its refusal name files of a shared dataset; st.warning and st.error read markdown
    name = "[Sign in again](https:evil.example).png"
    dataset = make_dataset(tmp_path / "moles", count=2)
    (dataset / "images" / name).write_bytes(b"not a picture")
    (dataset / "masks" / name).write_bytes(b"not a picture")
    at = app_test(PAGE)
    at.text_input(key="prepare_folder").set_value(str(dataset)).run()
    assert not at.exception
    shown = texts(at.warning) + texts(at.error)
    assert shown and all("Sign in again](" not in text for text in shown)
    assert any(ui.plain_markdown(name) in text for text in shown)
    for path in (dataset / "masks").iterdir():
        path.rename(path.with_name("z" + path.name))  # no name matches, and the counts differ: refused
    (dataset / "masks" / "extra.png").write_bytes((dataset / "masks" / "zm0.png").read_bytes())
    at.run()
    assert not at.exception and any(ui.plain_markdown(name) in text for text in texts(at.error))
    assert all("Sign in again](" not in text for text in texts(at.error) + texts(at.warning))
