"""Switching a server from personal to shared mode (moleseg.engine.adopt, ``moleseg adopt``): the data folder's
runs, studies, "My dataset" and device profiles move into one user's space, each by one rename, or nothing
moves and one sentence says why."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from synthetic import mole_image
from moleseg.cli import main
from moleseg.cli.adopt import OWNERLESS_ALONE, RECORDS_NOTE, STILL_PERSONAL
from moleseg.core.config import data_dir
from moleseg.core.dataset import save_pair
from moleseg.core.devices import DeviceProfile, save_profile
from moleseg.core.userspace import SPACE_MODE, USERS_FOLDER_NAME, folder_name, shared_space
from moleseg.engine import adopt as adoption
from moleseg.engine.records import Records, RecordsError
from moleseg.engine.recordsdb import refusal
from moleseg.engine.recordtypes import NO_OWNER, User, personal_owner
from moleseg.engine.runs import RunFiles
from moleseg.engine.studyrun import PLAN_JSON, STUDY_LOCK, hold_study_lock
from moleseg.engine.trainlock import LOCK_NAME, hold_training_lock

#: Anna's space, relative to the data folder.
HOME = f"{USERS_FOLDER_NAME}/{folder_name('Anna')}"


@pytest.fixture
def personal(monkeypatch) -> Path:
    """The data folder of a personal-mode server (the test's ``MOLESEG_DATA_DIR``) holding a run, a study, a
    one-pair "My dataset" and a device profile."""
    for name in ("MOLESEG_RUNS_DIR", "MOLESEG_CORRECTIONS_DIR"):
        monkeypatch.delenv(name, raising=False)
    data = data_dir()
    RunFiles(data / "runs" / "run-1").model.parent.mkdir(parents=True)
    RunFiles(data / "runs" / "run-1").model.write_bytes(b"PK")
    (data / "runs" / "study-a").mkdir()
    (data / "runs" / "study-a" / PLAN_JSON).write_text("{}")
    image, mask = mole_image(32, 32)
    save_pair(data / "corrections", "lesion", image, mask, {"corrected": True})
    save_profile(data / "devices.json", DeviceProfile("DermLite", 0.01))
    return data


#: The lock files :func:`moleseg.engine.adopt.adopt` leaves (empty; the locks themselves are released).
LOCK_FILES = {LOCK_NAME, f"runs/study-a/{STUDY_LOCK}"}


def _tree(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


PERSONAL_FILES = {"runs", "runs/run-1", f"runs/run-1/{RunFiles.MODEL}", "runs/study-a", f"runs/study-a/{PLAN_JSON}",
                  "corrections", "corrections/images", "corrections/images/lesion.png", "corrections/masks",
                  "corrections/masks/lesion.png", "corrections/provenance", "corrections/provenance/lesion.json",
                  "devices.json"}


def _adopt(capsys, *flags: str) -> tuple[int, str, str]:
    status = main(["adopt", *flags])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_personal_folders_move_into_the_user_s_space(personal, capsys):
    status, out, err = _adopt(capsys, "--user", " Anna ")  # the name as the app takes a header's value
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        f"Moving into Anna's space {HOME}/ of the data folder {personal}:",
        f"  runs/ -> {HOME}/runs/: 1 run, 1 study",
        f"  corrections/ -> {HOME}/corrections/: 1 image pair",
        f"  devices.json -> {HOME}/devices.json: 1 device profile",
        RECORDS_NOTE, STILL_PERSONAL.format(user="Anna")]
    moved = {f"{HOME}/{name}" for name in PERSONAL_FILES} | {f"{HOME}/runs/study-a/{STUDY_LOCK}"}
    assert _tree(personal) == {USERS_FOLDER_NAME, HOME, LOCK_NAME, *moved}
    space = shared_space(personal, "Anna")  # the folders the app opens for Anna
    assert (space.runs / "run-1").is_dir() and space.device_profiles.is_file()
    assert stat.S_IMODE(space.runs.stat().st_mode) == stat.S_IMODE(space.dataset.stat().st_mode) == SPACE_MODE


def test_run_folders_merge_beside_the_user_s_own_when_no_name_clashes(personal, capsys):
    (shared_space(personal, "Anna").runs / "run-0").mkdir()
    shutil.rmtree(personal / "corrections")  # only runs to move
    (personal / "devices.json").unlink()
    status, out, _ = _adopt(capsys, "--user", "Anna")
    assert status == 0
    assert out.splitlines()[1] == f"  runs/* -> {HOME}/runs/ (beside its 1 folder): 1 run, 1 study"
    assert {name for name in _tree(personal / HOME / "runs") if "/" not in name} == {"run-0", "run-1", "study-a"}
    assert not (personal / "runs").exists()


def test_a_clash_moves_nothing_and_names_the_clashing_folders(personal, capsys):
    (shared_space(personal, "Anna").runs / "run-1").mkdir()
    (shared_space(personal, "Anna").runs / "study-a").mkdir()
    before = _tree(personal)
    status, out, err = _adopt(capsys, "--user", "Anna")
    assert (status, out) == (2, "")
    assert err == (f"error: {HOME}/runs and runs both hold folders named run-1, study-a: nothing moved; rename or "
                   "remove one of each pair first\n")
    assert _tree(personal) == before


def test_the_user_s_own_dataset_is_never_merged(personal, capsys):
    (shared_space(personal, "Anna").dataset / "images").mkdir()
    before = _tree(personal)
    status, _, err = _adopt(capsys, "--user", "Anna")
    assert status == 2
    assert err == (f'error: {HOME}/corrections already holds the user\'s own "My dataset": nothing moved; merge the '
                   "two by hand or move one away first\n")
    assert _tree(personal) == before


def test_a_dry_run_prints_the_plan_and_changes_nothing(personal, capsys):
    before = _tree(personal)
    status, out, _ = _adopt(capsys, "--user", "Anna", "--dry-run")
    assert status == 0
    assert out.splitlines()[:2] == [f"Would move into Anna's space {HOME}/ of the data folder {personal}:",
                                    f"  runs/ -> {HOME}/runs/: 1 run, 1 study"]
    assert _tree(personal) == before == PERSONAL_FILES


def test_nothing_to_move_says_so(capsys):
    status, out, _ = _adopt(capsys, "--user", "Anna")
    assert status == 0
    assert out == (f'Nothing to move: the data folder {data_dir()} holds no runs, studies, "My dataset" or device '
                   "profiles of personal mode\n")


def test_a_running_training_refuses(personal, capsys):
    with hold_training_lock(personal / "runs" / "run-1", "terminal"):
        status, _, err = _adopt(capsys, "--user", "Anna")
    assert status == 2
    assert err.startswith(f"error: nothing moved: another training is running in run-1 (started by a terminal, "
                          f"pid {os.getpid()}, since ")
    assert err.endswith("); wait for it or cancel it\n")
    assert not (personal / USERS_FOLDER_NAME).exists()


def test_a_training_started_after_the_plan_still_refuses_before_anything_moves(personal):
    plan = adoption.plan_adoption("Anna")
    with hold_training_lock(personal / "runs" / "run-1", "app"):
        before = _tree(personal)
        with pytest.raises(adoption.AdoptionRefused, match=r"^nothing moved: another training is running in run-1 "
                                                           r"\(started by the app, "):
            adoption.adopt(plan, echo=pytest.fail)
        assert _tree(personal) == before


def test_a_symbolic_link_in_the_user_s_space_refuses(personal, capsys, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (personal / USERS_FOLDER_NAME).mkdir()
    (personal / HOME).symlink_to(elsewhere)
    before = _tree(personal)
    status, out, err = _adopt(capsys, "--user", "Anna")
    assert (status, out) == (2, "")
    assert err == (f"error: {HOME} is a symbolic link, which a move could follow out of the data folder: nothing "
                   "moved; replace it with the folder itself\n")
    assert _tree(personal) == before and not any(elsewhere.iterdir())


def test_a_file_the_user_saved_after_the_plan_is_never_replaced(personal):
    plan = adoption.plan_adoption("Anna")
    theirs = shared_space(personal, "Anna").device_profiles
    theirs.write_text("{}")
    before = _tree(personal)
    with pytest.raises(adoption.AdoptionRefused, match=r"^" + HOME + r"/devices.json received content since the "
                                                        r"plan was made: nothing moved; run the command again$"):
        adoption.adopt(plan, echo=pytest.fail)
    assert _tree(personal) - LOCK_FILES == before and theirs.read_text() == "{}"


def test_a_run_folder_made_after_the_plan_refuses_the_merge(personal):
    (shared_space(personal, "Anna").runs / "run-0").mkdir()
    plan = adoption.plan_adoption("Anna")
    (personal / HOME / "runs" / "run-1").mkdir()
    before = _tree(personal)
    with pytest.raises(adoption.AdoptionRefused, match=r"^" + HOME + r"/runs received a folder named run-1 since "
                                                        r"the plan was made: nothing moved; run the command again$"):
        adoption.adopt(plan, echo=pytest.fail)
    assert _tree(personal) - LOCK_FILES == before


def test_a_running_study_refuses(personal, capsys):
    with hold_study_lock(personal / "runs" / "study-a"):
        status, _, err = _adopt(capsys, "--user", "Anna")
    assert (status, err) == (2, "error: a study is running in runs/study-a: nothing moved; wait for it to finish\n")
    assert not (personal / USERS_FOLDER_NAME).exists()


@pytest.mark.parametrize("name, reason", [
    ("  ", "a user name cannot be empty"),
    ("anna\x1b[2J", "the user name 'anna\\x1b[2J' holds a control character, which no sign-in gives"),
    # typed in a Latin-1 terminal: was "error: 'utf-8' codec can't encode character '\udce9' ..."
    ("ren\udce9e", "the user name 'ren\\xe9e' is not UTF-8 text, which every sign-in gives"),
])
def test_a_name_no_sign_in_gives_refuses(personal, capsys, name, reason):
    status, _, err = _adopt(capsys, "--user", name)
    assert (status, err) == (2, f"error: {reason}: nothing moved\n")
    assert not (personal / USERS_FOLDER_NAME).exists()


def test_a_data_folder_of_another_account_refuses(personal, capsys, monkeypatch):
    me = os.geteuid()
    monkeypatch.setattr(adoption.os, "geteuid", lambda: me + 1)
    status, _, err = _adopt(capsys, "--user", "Anna")
    assert (status, err) == (2, f"error: the data folder {personal} belongs to another account (uid {me}) than this "
                                f"command's (uid {me + 1}): nothing moved; run it as the account that runs the "
                                "server\n")


def test_a_folder_on_another_file_system_refuses(personal, capsys, monkeypatch):
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == personal.stat().st_dev:
        pytest.skip("no second file system (/dev/shm) beside the test's data folder")
    runs = other / f"moleseg-adopt-{os.getpid()}"
    runs.mkdir()
    try:
        (runs / "run-2").mkdir()
        monkeypatch.setenv("MOLESEG_RUNS_DIR", str(runs))
        status, _, err = _adopt(capsys, "--user", "Anna")
        assert (status, err) == (2, f"error: {runs} is on another file system than {HOME}/runs: nothing moved, since "
                                    "a copy could be left half done; move it by hand\n")
        assert (runs / "run-2").is_dir() and not (personal / USERS_FOLDER_NAME).exists()
    finally:
        (runs / "run-2").rmdir()
        runs.rmdir()


# --------------------------------------------------------------------------------------------------
# The saved visits (--records): personal mode's, and with --ownerless those saved before records had owners

ANNA = User("Anna")


@pytest.fixture
def saved_visits(personal) -> dict[str, list[int]]:
    """Two visits saved in personal mode, one saved before records had owners and one of Bob's, in the data
    folder's records; their ids by owner."""
    image, mask = mole_image(24, 24)
    records = Records()
    ids = {owner: [records.save(User(owner, admin=True), image, mask, [], lesion=owner) for _ in range(count)]
           for owner, count in ((personal_owner(), 2), ("ownerless", 1), ("bob", 1))}
    with records.database.transaction() as connection:
        connection.exec_driver_sql(f"UPDATE analyses SET owner = '{NO_OWNER}' WHERE owner = 'ownerless'")
    return ids


def test_with_records_the_personal_visits_go_to_the_user_after_the_folders(saved_visits, capsys):
    owner = personal_owner()
    status, out, _ = _adopt(capsys, "--user", "Anna", "--records", "--dry-run")
    assert status == 0 and out.splitlines()[-2] == f"Would give Anna 2 saved visits of the account {owner}"
    assert Records().records(ANNA) == []
    status, out, err = _adopt(capsys, "--user", " Anna ", "--records")
    assert (status, err) == (0, "")
    assert "without an owner" not in out  # the ownerless visit is not asked for (no --ownerless): not a word of it
    assert out.splitlines()[-2:] == [f"Gave Anna 2 saved visits of the account {owner}",
                                     STILL_PERSONAL.format(user="Anna")]
    assert sorted(record.id for record in Records().records(ANNA)) == saved_visits[owner]
    trail = Records().audit_trail(ANNA, saved_visits[owner][0])
    assert [(entry.user, entry.action, entry.from_owner, entry.to_owner) for entry in trail] == [
        (owner, "saved", None, None), (adoption.operator_account(), "adopted", owner, "Anna")]
    assert Records().owned_count(NO_OWNER) == 1 and Records().owned_count("bob") == 1


def test_with_ownerless_the_visits_saved_before_owners_go_too(saved_visits, capsys):
    status, out, _ = _adopt(capsys, "--user", "Anna", "--records", "--ownerless", "--dry-run")
    assert (status, out.splitlines()[-2]) == (0, f"Would give Anna 2 saved visits of the account {personal_owner()} "
                                                 "and 1 saved visit without an owner")
    status, out, _ = _adopt(capsys, "--user", "Anna", "--records", "--ownerless")
    assert (status, out.splitlines()[-2]) == (0, f"Gave Anna 2 saved visits of the account {personal_owner()} and "
                                                 "1 saved visit without an owner")
    assert len(Records().records(ANNA)) == 3 and Records().owned_count(NO_OWNER) == 0


def test_ownerless_alone_refuses(personal, capsys):
    status, _, err = _adopt(capsys, "--user", "Anna", "--ownerless")
    assert (status, err) == (2, f"error: {OWNERLESS_ALONE}\n")
    assert not (personal / USERS_FOLDER_NAME).exists()


def test_the_personal_account_itself_refuses_and_nothing_moves(saved_visits, capsys):
    owner = personal_owner()
    status, _, err = _adopt(capsys, "--user", owner, "--records")
    assert (status, err) == (2, f"error: {owner} is the account that owns personal mode's saved visits: they are "
                                "theirs already, nothing moved\n")
    assert _tree(data_dir()) >= PERSONAL_FILES and Records().owned_count(owner) == 2


def test_without_a_records_database_none_is_made(capsys):
    status, out, _ = _adopt(capsys, "--user", "Anna", "--records")
    assert (status, out.splitlines()[-1]) == (0, f"Gave Anna 0 saved visits of the account {personal_owner()}")
    assert not Records.database_file().exists()


def test_an_unusable_records_database_refuses_before_anything_moves(personal, capsys):
    Records.database_file().write_bytes(b"not a database" * 100)
    status, _, err = _adopt(capsys, "--user", "Anna", "--records")
    assert status == 2
    assert err.startswith(f"error: The records database {Records.database_file()} ")
    assert err.endswith(": nothing moved\n") and "analysis works" not in err
    assert not (personal / USERS_FOLDER_NAME).exists()


def test_a_database_that_fails_after_the_plan_says_no_visit_was_handed_over(saved_visits, monkeypatch):
    plan = adoption.plan_records("Anna", ownerless=False)

    def full_disk(*args: object) -> None:
        raise RecordsError(refusal(str(plan.records.path), "cannot be used: the disk is full").args[0])

    monkeypatch.setattr(plan.records, "hand_over", full_disk)
    with pytest.raises(adoption.AdoptionRefused) as refused:
        adoption.adopt_records(plan)
    assert str(refused.value) == (f"The records database {plan.records.path} cannot be used: the disk is full: "
                                  f"{adoption.NO_VISIT_HANDED_OVER}")
    assert Records().records(ANNA) == []
