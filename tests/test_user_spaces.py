"""Each user's own space on a shared server (moleseg.core.userspace, moleseg.app.identity.user_space): their
runs, studies and "My dataset" are theirs alone on every page, and another user's training is shown by its
progress only (AppTest with a faked proxy user)."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import numpy as np
import pytest

from app_helpers import analysed_mole, app_test, texts
from synthetic import make_dataset, mole_image
from moleseg.app import identity, trainstatus
from moleseg.app.ui import PAGE_FILES
from moleseg.core.config import data_dir
from moleseg.core.settings import ServerSettings
from moleseg.core.userspace import SPACE_MODE, USERS_FOLDER_NAME, folder_name, shared_space
from moleseg.engine import finetune, jobs, trainlock
from moleseg.engine.finetune import corrections_pairs
from moleseg.engine.recordtypes import User
from moleseg.engine.runs import RunFiles
from moleseg.engine import studyrun
from moleseg.engine.studyrun import PLAN_JSON

SHARED = ServerSettings(mode="shared", address="0.0.0.0", allowed_hosts=("moles.example.org",),
                        identity="proxy-header", trusted_proxies=(ipaddress.ip_network("127.0.0.1"),),
                        admin_users=frozenset({"boss"}), proxy_secret="s" * 24)


@pytest.fixture
def signed_in(app_folders, monkeypatch):
    """Shared mode behind the proxy; ``signed_in("alice")`` makes the next page runs alice's."""
    monkeypatch.setattr(identity, "load_settings", lambda: SHARED)

    def sign_in(name: str) -> None:
        monkeypatch.setattr(identity, "current_user", lambda: User(name, admin=name in SHARED.admin_users))

    return sign_in


def _run_with_model(runs: Path, name: str) -> Path:
    run = runs / name
    run.mkdir(parents=True)
    RunFiles(run).model.write_bytes(b"PK")  # listed by the picker; unreadable metadata reads as defaults
    return run


# --------------------------------------------------------------------------------------------------
# the folders

def test_names_that_slug_alike_get_different_folders_without_separators():
    names = ["Anna", "anna", "an/na", "an na", "../anna", "..", ".", "anna\0"]
    folders = [folder_name(name) for name in names]
    assert len(set(folders)) == len(names)
    assert folders[0].startswith("anna-") and folders[4].startswith("anna-") and folders[5].startswith("user-")
    assert all("/" not in folder and "\0" not in folder and not folder.startswith(".") for folder in folders)


def test_a_space_is_created_on_first_use_for_the_server_s_account_only(tmp_path):
    space = shared_space(tmp_path, "alice@clinic.example")
    home = tmp_path / USERS_FOLDER_NAME / folder_name("alice@clinic.example")
    assert (space.runs, space.dataset, space.shared) == (home / "runs", home / "corrections", True)
    for folder in (tmp_path / USERS_FOLDER_NAME, home, space.runs, space.dataset):
        assert stat.S_IMODE(folder.stat().st_mode) == SPACE_MODE
    assert shared_space(tmp_path, "alice@clinic.example") == space  # the same folders the next time


def test_personal_mode_keeps_the_data_folder_s_own_runs(app_folders):
    space = identity.user_space()
    assert (space.runs, space.shared) == (app_folders["runs"], False)
    assert not (data_dir() / USERS_FOLDER_NAME).exists()


# --------------------------------------------------------------------------------------------------
# the pages

def test_another_user_s_runs_and_studies_are_not_offered(signed_in):
    alice = shared_space(data_dir(), "alice")
    run = _run_with_model(alice.runs, "alice-run")
    (alice.runs / "study-alice").mkdir()
    (alice.runs / "study-alice" / PLAN_JSON).write_text("{}")
    signed_in("alice")
    at = app_test(PAGE_FILES["evaluate"])
    assert "run alice-run (? classes)" in at.selectbox(key="evaluate_model").options
    assert at.multiselect(key="evaluate_runs").options == ["alice-run"]
    at.switch_page(PAGE_FILES["study"]).run()
    assert at.text_input(key="study_folder").value == str(alice.runs / "study-alice")
    signed_in("bob")
    at = app_test(PAGE_FILES["evaluate"])
    assert not at.exception
    assert not any("alice" in option for option in at.selectbox(key="evaluate_model").options)
    assert str(RunFiles(run).model) not in at.session_state["evaluate_model"]
    assert not [box for box in at.multiselect if box.key == "evaluate_runs"]
    at.switch_page(PAGE_FILES["study"]).run()
    shipped = [str(folder) for folder in studyrun.shipped_results()]  # the shipped results, read-only, for all
    assert at.selectbox(key="study_folder_pick").options == [f"choose one of {len(shipped)}...", *shipped]
    assert at.text_input(key="study_folder").value == shipped[0]
    at.text_input(key="study_folder").set_value(str(alice.runs / "study-alice")).run()
    assert texts(at.error) == [f"{alice.runs / 'study-alice'} is not inside the data folders this server offers"]


def test_a_user_s_example_caches_are_in_their_own_folder_and_count_in_their_quota(signed_in, tmp_path):
    """The Train page's "Example cache name" named a folder of the server's cache folder, shared by every user, and
    an unnamed cache was that folder: the resized pictures a user's trainings made ("My dataset" among them) were
    kept outside their folder, counted in no quota, and stayed when they deleted their pictures."""
    from moleseg.app import quota
    from moleseg.core.config import example_cache_dir
    from moleseg.core.diskusage import BYTES_PER_GB
    from moleseg.engine.launch import example_cache
    from moleseg.engine.userquota import UserQuota

    alice, bob = shared_space(data_dir(), "alice"), shared_space(data_dir(), "bob")
    own = alice.example_cache
    assert own == alice.runs.parent / "examples" and bob.example_cache != own
    signed_in("alice")
    at = app_test(PAGE_FILES["train"])
    at.text_input(key="train_cache_dir").set_value("mine").run()
    assert not at.exception and at.session_state["train_config"]["cache_dir"] == str(own / "mine")
    # what a training in alice's folder uses, whatever its configuration names (a resumed run's, say)
    run = alice.runs / "r1"
    assert example_cache(str(own / "mine"), run) == str(own / "mine")
    assert example_cache(None, run) == example_cache(str(example_cache_dir() / "mine"), run) == str(own)
    assert example_cache(str(bob.example_cache), run) == str(own)
    assert example_cache(str(tmp_path / "c"), tmp_path / "runs" / "r1") == str(tmp_path / "c")  # no user's folder
    assert example_cache(None, bob.runs / "study-s" / "runs" / "base-seed0") == str(bob.example_cache)  # a study's
    (own / "mine").mkdir(parents=True)
    (own / "mine" / "0123.npz").write_bytes(b"x" * 5000)
    refusal = UserQuota(4000 / BYTES_PER_GB, tuple(quota.user_folders(alice)), "delete").refusal()
    assert refusal == "Your files take 0.00 GB of your 4e-06 GB quota on this server: delete, then try again."


def test_another_user_s_model_file_is_refused_like_a_missing_one(signed_in):
    theirs = RunFiles(_run_with_model(shared_space(data_dir(), "alice").runs, "alice-run")).model
    missing = shared_space(data_dir(), "bob").runs / "none" / "model.keras"
    signed_in("bob")
    at = app_test(PAGE_FILES["train"])
    at.radio(key="train_weights").set_value("file").run()
    shown = []
    for path in (theirs, missing):
        at.text_input(key="train_weights_file").set_value(str(path)).run()
        at.button(key="train_start").click().run()
        shown.append(texts(at.error))
    assert not at.exception
    assert shown == [[f"Model file to start from: {path} is not inside the data folders this server offers"]
                     for path in (theirs, missing)]


def test_my_dataset_is_empty_for_another_user_after_one_saved_into_theirs(signed_in):
    signed_in("alice")
    at = analysed_mole(mole_image(seed=4)[0])
    at.button(key="analyse_dataset_save").click().run()
    assert not at.exception and not at.error
    assert corrections_pairs(shared_space(data_dir(), "alice").dataset) == 1
    at.switch_page(PAGE_FILES["evaluate"]).run()
    assert at.button(key="evaluate_use_corrections").label == "Use my corrections dataset (1 image)"
    signed_in("bob")
    at = app_test(PAGE_FILES["evaluate"])
    assert "evaluate_use_corrections" not in [button.key for button in at.button]
    assert corrections_pairs(shared_space(data_dir(), "bob").dataset) == 0
    at.switch_page(PAGE_FILES["train"]).run()
    assert any(text.startswith("No corrected image there yet") for text in texts(at.caption))


class _Step:
    """A training step as the progress writer sees it: epoch 2 of 3, step 2 of 4 (half the steps done)."""
    phase, epoch, epochs, step, steps = "train", 2, 3, 2, 4
    loss, metrics, eta_seconds, message = 0.5, {}, 30.0, ""


def test_another_user_s_training_is_shown_by_its_progress_only(signed_in):
    run = shared_space(data_dir(), "alice").runs / "secret-lesion-run"
    run.mkdir()
    with trainlock.hold_training_lock(run, "app"):
        jobs.ProgressWriter(run, interval_s=0.0)(_Step())
        signed_in("bob")
        at = app_test(PAGE_FILES["train"])
        assert not at.exception
        assert ("A training by another user is running (progress 50 %); queue yours: it starts when that one ends."
                in texts(at.info))
        shown = " ".join(texts(at.markdown) + texts(at.info) + texts(at.caption) + [h.value for h in at.subheader])
        assert "secret-lesion-run" not in shown and "alice" not in shown
        keys = [button.key for button in at.button]
        assert "train_cancel" not in keys and "train_cancel_other" not in keys
        assert at.button(key="train_start").disabled
        signed_in("boss")
        at = app_test(PAGE_FILES["train"])
        at.button(key="train_cancel_other").click().run()
        assert jobs.read_job(run).cancel_requested
        signed_in("alice")
        at = app_test(PAGE_FILES["train"])
        assert at.subheader[0].value == "Training secret-lesion-run (started by the app)"
        assert "train_cancel" not in [button.key for button in at.button]  # cancelling already asked


def test_fine_tuning_reads_only_recorded_folders_inside_the_roots(tmp_path, monkeypatch):
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    for folder in (inside, outside):
        (folder / "images").mkdir(parents=True)
        (folder / "masks").mkdir()
    recorded = {"images": [str(inside / "images"), str(outside / "images"), "inside/images"],
                "masks": [str(inside / "masks"), str(outside / "masks"), "inside/masks"]}
    monkeypatch.setattr(finetune, "read_info", lambda model: type("Info", (), {"train_config": recorded})())
    assert finetune.training_folders("model.keras", roots=[inside]) == [(str(inside / "images"),
                                                                         str(inside / "masks"))]
    assert len(finetune.training_folders("model.keras")) == 2  # the command line: every folder on the machine
    (inside / "images" / "theirs.png").symlink_to(outside / "images")  # a recorded folder linking out of the roots
    assert finetune.training_folders("model.keras", roots=[inside]) == []


def test_a_start_refused_by_another_user_s_training_names_none_of_it(app_folders, tmp_path):
    # the page disables Start while another user's training runs, but one that starts between the page's look
    # and the click refuses the start with the training lock's sentence: its run, origin and pid were shown
    alice, bob = (shared_space(data_dir(), name).runs for name in ("alice", "bob"))
    secret = alice / "secret-lesion-run"
    secret.mkdir()
    dataset = make_dataset(tmp_path / "moles", count=2)
    config = {**jobs.train_defaults(), "images": [str(dataset / "images")], "masks": [str(dataset / "masks")]}
    with trainlock.hold_training_lock(secret, "app"):
        with pytest.raises(trainlock.TrainingBusy) as refused:
            trainstatus.start(config, bob, "mine", own_runs=bob)
        assert str(refused.value) == ("A training by another user is running; queue yours: it starts when that one "
                                      "ends.")
        assert list(bob.iterdir()) == []
        with pytest.raises(trainlock.TrainingBusy, match="^another training is running in secret-lesion-run "):
            trainstatus.start(config, alice, "hers", own_runs=alice)  # the user's own training is named


def test_a_users_open_pages_hold_at_most_their_share_of_the_servers_memory(signed_in, monkeypatch):
    """An analysis holds some 29 bytes a pixel while its page shows it, however small its file: the uploads' share
    counted the files, so 200 small PNGs of large images, in as many tabs as a script opens, took the machine's
    memory and every other user's images were refused as too large for what was left. A user's open pages now
    hold at most their share; an upload past it is refused whole, before any file is decoded; another user's
    share is their own, and a closed tab's analyses count no more."""
    import gc

    from synthetic import png_bytes

    from moleseg.app import heldmemory, ui

    monkeypatch.setattr(ui, "load_settings", lambda: SHARED)
    image, _ = mole_image()
    held = image.shape[0] * image.shape[1] * heldmemory.HELD_BYTES_PER_PIXEL
    assert image.shape[:2] == (96, 112) and held == 311_808
    monkeypatch.setattr(ui.held_analyses(), "per_user", int(1.5 * held))  # one picture, not two

    def analysing(user: str, brightness: int):
        signed_in(user)
        page = app_test(PAGE_FILES["analyse"])
        page.selectbox(key="analyse_model").set_value("classical").run()
        page.file_uploader(key="analyse_upload_files").set_value(
            (f"{user}.png", png_bytes(np.clip(image.astype(int) + brightness, 0, 255).astype(np.uint8)),
             "image/png")).run()
        assert not page.exception
        return page

    first = analysing("alice", 0)
    assert not first.error and len(first.session_state["analyse_outcomes"]) == 1
    second = analysing("alice", 10)  # her second tab
    assert [error.value for error in second.error] == [
        "1 image would hold 304.5 KB of the server's memory while the page shows them, and your open pages may "
        "hold 456.8 KB of analyses together (304.5 KB in your other tabs): none was analysed; upload fewer or "
        "smaller images, or close another tab."]
    assert "analyse_outcomes" not in second.session_state
    comparing = app_test(PAGE_FILES["compare"])  # two uploaded visits are two analyses held too
    comparing.radio(key="compare_source").set_value("two uploaded images").run()
    comparing.file_uploader(key="compare_before").set_value(("before.png", png_bytes(image), "image/png"))
    comparing.file_uploader(key="compare_after").set_value(("after.png", png_bytes(image[::-1]), "image/png")).run()
    assert not comparing.exception and [error.value for error in comparing.error] == [
        "2 images would hold 609 KB of the server's memory while the page shows them, and your open pages may "
        "hold 456.8 KB of analyses together (304.5 KB in your other tabs): none was analysed; upload fewer or "
        "smaller images, or close another tab."]
    bobs = analysing("bob", 20)
    assert not bobs.error and len(bobs.session_state["analyse_outcomes"]) == 1
    del first  # her first tab closed: its session and what it held are gone
    gc.collect()
    third = analysing("alice", 10)
    assert not third.error and len(third.session_state["analyse_outcomes"]) == 1


def test_two_saved_visits_compared_count_in_the_users_share_of_memory(signed_in, monkeypatch):
    """The Compare page's two saved visits (their pictures opened from the records, aligned and measured) are held
    by the page as two uploaded ones are: a script comparing saved visits in as many tabs as it opens took the
    memory the share of Analyse and Compare uploads left. They count in the user's share alike."""
    from moleseg.app import heldmemory, ui
    from moleseg.core.measure import measure_lesion
    from moleseg.engine.records import Records

    monkeypatch.setattr(ui, "load_settings", lambda: SHARED)
    image, mask = mole_image()
    for date in ("2026-01-01", "2026-06-01"):
        Records().save(User("alice"), image, mask, measure_lesion(mask), lesion="arm", visit_date=date)
    held = 2 * image.shape[0] * image.shape[1] * heldmemory.HELD_BYTES_PER_PIXEL
    signed_in("alice")

    def comparing():
        page = app_test(PAGE_FILES["compare"])
        page.radio(key="compare_source").set_value("two saved visits (History)").run()
        assert not page.exception
        return page

    monkeypatch.setattr(ui.held_analyses(), "per_user", int(1.5 * held))  # one pair, not two
    first = comparing()
    assert not first.error and first.session_state["compare_result"].comparable
    second = comparing()
    assert [error.value for error in second.error] == [
        "2 images would hold 609 KB of the server's memory while the page shows them, and your open pages may "
        "hold 913.5 KB of analyses together (609 KB in your other tabs): none was analysed; upload fewer or "
        "smaller images, or close another tab."]
    assert "compare_result" not in second.session_state



def test_two_tabs_of_one_user_asking_at_once_cannot_both_pass_their_share(monkeypatch):
    """The check of a user's share and the recording of what the tab now holds are one step: a second tab asking
    between the first's count of the others and its recording (a script opening tabs at once) waits for it, then
    is refused, rather than both being let through on the same stale total (each 60 % of the share: 120 % held)."""
    import threading

    from moleseg.app.heldmemory import HeldAnalyses

    held = HeldAnalyses(per_user=1000)
    first, second = held.holding("ann"), held.holding("ann")
    answers: dict[str, object] = {}
    counted = held.held

    def counted_then_second_tab(owner, besides=None):
        total = counted(owner, besides)
        if "thread" not in answers:  # the first tab's count: the second tab asks now
            other = threading.Thread(target=lambda: answers.update(second=held.refusal_of(second, ("b",), 600)))
            answers["thread"] = other
            other.start()
            other.join(timeout=1.0)  # done at once while the check is two steps; else it waits for the first
        return total

    monkeypatch.setattr(held, "held", counted_then_second_tab)
    answers["first"] = held.refusal_of(first, ("a",), 600)
    answers["thread"].join(timeout=5.0)
    assert answers["first"] is None and first.nbytes == 600
    assert isinstance(answers["second"], str) and "(600 bytes in your other tabs)" in answers["second"]
    assert second.nbytes == 0 and counted("ann") == 600
