"""Tests of moleseg.engine.records: save, reopen, list, delete, concurrency, crash mid-save, ownership, the
audit trail, and every way the database can be unusable (damaged, truncated, foreign, empty, a folder, newer,
disk full, read-only) with orphan folders swept. The tests taking ``open_records`` run on both backends
(SQLite, and PostgreSQL when installed: tests/conftest.py); tests/test_postgres_records.py has PostgreSQL's
own refusals and the replicas."""

from __future__ import annotations

import contextlib
import io
import math
import multiprocessing
import os
import sqlite3
import time
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moleseg.core.config import DATA_DIR_ENV, RECORDS_DB_NAME
from moleseg.core.measure import measure_lesion
from moleseg.engine import records as records_module
from moleseg.engine.records import MIGRATIONS, Records
from moleseg.engine.recordtypes import MAX_RECORD_ID, NO_OWNER, User

#: The acting user of the tests that are not about ownership.
USER = User("clinician")


def sample(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    mask = np.zeros((40, 50), bool)
    mask[10:30, 12 + seed % 5:35] = True
    return image, mask


def save_sample(records: Records, seed: int = 0, **fields) -> int:
    image, mask = sample(seed)
    return records.save(USER, image, mask, measure_lesion(mask, pixel_size_mm=0.02, image=image), **fields)


def files_of(folder: Path) -> list[Path]:
    return sorted(p for p in (folder / "files").rglob("*") if p.is_file())


def test_save_and_reopen_identical(tmp_path, open_records):
    records = open_records(tmp_path)
    image, mask = sample()
    measurements = measure_lesion(mask, pixel_size_mm=0.02, image=image)
    record_id = records.save(USER, image, mask, measurements, lesion="left shoulder mole", visit_date="2026-03-01",
                             body_site="back", notes="first visit", image_name="a.jpg", model_name="dermoscopy",
                             model_version="1.2", cleanup={"rule": "article", "closing_radius_px": 15},
                             lesion_threshold=0.45, pixel_size_mm=0.02, corrected=True)
    saved = open_records(tmp_path).open(USER, record_id)  # a fresh instance: as after a server restart
    assert np.array_equal(saved.image, image) and saved.image.dtype == np.uint8
    assert np.array_equal(saved.mask, mask) and saved.mask.dtype == bool
    record = saved.record
    assert (record.lesion, record.visit_date, record.body_site, record.notes) == (
        "left shoulder mole", "2026-03-01", "back", "first visit")
    assert (record.model_name, record.model_version, record.lesion_threshold, record.pixel_size_mm) == (
        "dermoscopy", "1.2", 0.45, 0.02)
    assert record.cleanup == {"rule": "article", "closing_radius_px": 15}
    assert record.corrected is True
    assert [(m.key, m.unit, m.label, m.meaning) for m in record.measurements] == [
        (m.key, m.unit, m.label, m.meaning) for m in measurements]
    for got, expected in zip(record.measurements, measurements):
        assert got.value == expected.value or (math.isnan(got.value) and math.isnan(expected.value))


def test_identifier_is_optional_and_lists_group_by_lesion(tmp_path, open_records):
    records = open_records(tmp_path)
    first = save_sample(records, 0, lesion="L1", visit_date="2026-01-10")
    second = save_sample(records, 1, lesion="L1", visit_date="2026-04-10")
    anonymous = save_sample(records, 2)
    lesions = {summary.lesion: summary for summary in records.lesions(USER)}
    assert lesions["L1"].visits == 2
    assert (lesions["L1"].first_visit, lesions["L1"].last_visit) == ("2026-01-10", "2026-04-10")
    assert lesions[""].visits == 1
    assert [r.id for r in records.records(USER, "L1")] == [second, first]
    assert [r.id for r in records.records(USER, "")] == [anonymous]


def test_delete_removes_the_row_and_the_files(tmp_path, open_records):
    records = open_records(tmp_path)
    keep = save_sample(records, 0)
    gone = save_sample(records, 1)
    uid = records.record(USER, gone).uid
    assert (tmp_path / "files" / uid / "image.png").is_file()
    records.delete(USER, gone)
    assert not (tmp_path / "files" / uid).exists()
    assert [r.id for r in records.records(USER)] == [keep]
    with pytest.raises(KeyError):
        records.open(USER, gone)
    assert len(files_of(tmp_path)) == 2


def test_crash_mid_save_leaves_no_half_record(tmp_path, monkeypatch, open_records):
    records = open_records(tmp_path)
    save_sample(records, 0)
    before = files_of(tmp_path)

    def crash(connection, values):
        assert (tmp_path / "files" / values["uid"] / "mask.png").is_file()  # the files were written first
        raise OSError("simulated crash between the file writes and the commit")

    monkeypatch.setattr(records_module, "insert_analysis_row", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_sample(records, 1)
    monkeypatch.undo()
    assert len(records.records(USER)) == 1
    assert files_of(tmp_path) == before
    assert len(list((tmp_path / "files").iterdir())) == 1


def test_failed_insert_rolls_back(tmp_path, monkeypatch, open_records):
    records = open_records(tmp_path)
    real_insert = records_module.insert_analysis_row

    def insert_then_fail(connection, values):
        real_insert(connection, values)
        raise RuntimeError("failure after the insert, before the commit")

    monkeypatch.setattr(records_module, "insert_analysis_row", insert_then_fail)
    with pytest.raises(RuntimeError):
        save_sample(records, 0)
    assert records.records(USER) == []
    assert files_of(tmp_path) == []


def test_concurrent_threads_all_saved(tmp_path, open_records):
    records = open_records(tmp_path)
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(lambda seed: save_sample(records, seed, lesion=f"L{seed % 3}"), range(24)))
    assert len(set(ids)) == 24
    assert sorted(r.id for r in records.records(USER)) == sorted(ids)
    assert len(files_of(tmp_path)) == 48


def _save_in_process(folder: str, start: int, count: int, database_url: str | None = None) -> list[int]:
    records = Records(folder, database_url=database_url)
    return [save_sample(records, seed) for seed in range(start, start + count)]


def test_concurrent_processes_all_saved(tmp_path, open_records):
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:
        results = pool.starmap(_save_in_process, [(str(tmp_path), 10 * k, 5, open_records.url) for k in range(3)])
    ids = [i for chunk in results for i in chunk]
    records = open_records(tmp_path)
    assert sorted(r.id for r in records.records(USER)) == sorted(ids)
    assert len(ids) == 15
    assert len(files_of(tmp_path)) == 30


def test_schema_is_versioned_and_in_wal_mode(tmp_path):
    records = Records(tmp_path)
    assert records.schema_version == len(MIGRATIONS)
    connection = sqlite3.connect(tmp_path / RECORDS_DB_NAME)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.execute("PRAGMA user_version = 99")
    connection.close()
    with pytest.raises(ValueError, match="newer moleseg"):
        Records(tmp_path)


def test_data_folder_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "elsewhere"))
    records = Records()
    assert records.path == tmp_path / "elsewhere" / RECORDS_DB_NAME
    assert records.path.is_file()


def test_bad_input_is_refused_without_a_trace(tmp_path, open_records):
    records = open_records(tmp_path)
    image, mask = sample()
    with pytest.raises(ValueError, match="differ in size"):
        records.save(USER, image, mask[:-1], [])
    with pytest.raises(ValueError, match="not a date"):
        records.save(USER, image, mask, [], visit_date="yesterday")
    assert records.records(USER) == [] and files_of(tmp_path) == []


def test_export_holds_the_files_and_the_settings(tmp_path, open_records):
    records = open_records(tmp_path)
    record_id = save_sample(records, 0, lesion="L1", model_name="classical", pixel_size_mm=0.02)
    archive = zipfile.ZipFile(io.BytesIO(records.export(USER, record_id)))
    names = set(archive.namelist())
    assert {f"record_{record_id}_image.png", f"record_{record_id}_mask.png",
            f"record_{record_id}_measurements.csv", f"record_{record_id}.json"} <= names
    assert b"area_mm2" in archive.read(f"record_{record_id}_measurements.csv")
    assert b'"pixel_size_mm": 0.02' in archive.read(f"record_{record_id}.json")
    record = records.record(USER, record_id)
    assert (record.stem, record.name) == (f"record_{record_id}", f"record {record_id}")  # saved without image name
    named = records.record(USER, save_sample(records, 1, image_name="arm.jpg"))
    assert named.name == "arm.jpg" and named.stem == f"record_{named.id}"


# --------------------------------------------------------------------------------------------------
# Ownership and the audit trail

ALICE, BOB, ADMIN = User("alice"), User("bob"), User("root-admin", admin=True)


@contextlib.contextmanager
def direct_connection(open_records, folder: Path) -> Iterator[tuple[Any, type[Exception]]]:
    """A driver connection to the test's records database, bypassing moleseg (autocommit), and the error its
    driver raises when a trigger refuses a statement."""
    if open_records.backend == "sqlite":
        connection = sqlite3.connect(folder / RECORDS_DB_NAME, isolation_level=None)
        refused: type[Exception] = sqlite3.IntegrityError
    else:
        import psycopg

        connection, refused = psycopg.connect(open_records.url, autocommit=True), psycopg.errors.RaiseException
    try:
        yield connection, refused
    finally:
        connection.close()


def test_a_user_reaches_only_their_own_records_and_others_read_as_missing(tmp_path, open_records):
    records = open_records(tmp_path)
    mine = records.save(ALICE, *sample(0), [], lesion="arm", visit_date="2026-01-02")
    records.save(BOB, *sample(1), [], lesion="leg", visit_date="2026-01-03")
    assert [r.owner for r in records.records(ALICE)] == ["alice"]
    assert [s.lesion for s in records.lesions(BOB)] == ["leg"]
    assert records.records(BOB, "arm") == []
    assert [s.lesion for s in records.lesions(ADMIN)] == ["leg", "arm"]  # an admin sees everyone's
    missing = 10_000
    with pytest.raises(KeyError) as refused_missing:
        records.record(BOB, missing)
    assert str(refused_missing.value) == f"no saved analysis with id {missing}"
    for attempt in (records.record, records.open, records.export, records.delete, records.audit_trail):
        with pytest.raises(KeyError) as refused:
            attempt(BOB, mine)
        assert str(refused.value) == f"no saved analysis with id {mine}"  # the very message of a missing id
    with pytest.raises(KeyError):
        records.log(BOB, mine, "exported")
    assert records.open(ADMIN, mine).record.owner == "alice"
    assert [r.id for r in records.records(ALICE)] == [mine]  # nothing of Bob's attempts changed it


def test_the_saved_pictures_and_the_database_are_the_server_account_s_only(tmp_path):
    """The users' own spaces are 0700, but a new records folder gave every account of the machine the saved
    photographs (files/, 0755 and 0644 under the usual umask) and the database of lesion identifiers and notes
    (0644)."""
    previous = os.umask(0o022)
    try:
        records = Records(tmp_path / "data")
        records.save(ALICE, *sample(0), [], lesion="arm", notes="Ms Example's left arm")
    finally:
        os.umask(previous)
    with records.database.connection():  # the WAL files exist while a connection is open
        modes = {path.name: oct(path.stat().st_mode & 0o777) for path in [records.files, *tmp_path.glob("data/*")]}
    assert modes == {"files": "0o700", RECORDS_DB_NAME: "0o600", f"{RECORDS_DB_NAME}-wal": "0o600",
                     f"{RECORDS_DB_NAME}-shm": "0o600"}

def test_a_visit_s_pictures_are_the_server_account_s_only_in_a_files_folder_others_may_read(tmp_path):
    """records_files_dir is a volume every replica mounts, made by the operator (0755, as mkdir makes it): each
    visit's folder in it was 0755 too, so every account of the machine could list it and read the photograph
    and the mask of every saved visit."""
    shared = tmp_path / "volume"
    shared.mkdir(mode=0o755)
    previous = os.umask(0o022)
    try:
        records = Records(tmp_path / "data", files_dir=shared)
        uid = records.record(ALICE, records.save(ALICE, *sample(0), [], lesion="arm")).uid
    finally:
        os.umask(previous)
    assert oct((shared / uid).stat().st_mode & 0o777) == "0o700"
    assert oct(shared.stat().st_mode & 0o777) == "0o755"  # the operator's folder is left as it is


def test_records_an_older_moleseg_left_open_to_others_are_closed_when_first_opened(tmp_path, monkeypatch):
    """Databases and visits saved before the records were made the server account's only stayed as they were: the
    database (lesion identifiers, notes) 0644 and each visit's photograph in a 0755 folder, for every account of the
    machine to read, however new saves were made."""
    records = Records(tmp_path / "data")
    uid = records.record(ALICE, records.save(ALICE, *sample(0), [], lesion="arm")).uid
    os.chmod(records.path, 0o644)
    os.chmod(records.files / uid, 0o755)
    (records.files / ("0" * 32)).symlink_to(tmp_path)  # a link is left alone (chmod would change what it points to)
    os.chmod(tmp_path, 0o755)
    monkeypatch.setattr(records_module, "_CHECKED", set())  # a new process
    Records(tmp_path / "data")
    modes = [oct(path.stat().st_mode & 0o777) for path in (records.path, records.files / uid, tmp_path)]
    assert modes == ["0o600", "0o700", "0o755"]


def test_a_deleted_visit_s_identifier_and_notes_leave_the_database_file(tmp_path, monkeypatch):
    """Deleting a visit erases its text from records.sqlite (and its journal), not only from the table: SQLite
    builds that keep SQLite's own default, secure_delete off (Debian's turns it on), left a deleted
    row's lesion identifier and notes in a free page of the file and of every backup taken of it."""
    from moleseg.engine import recordsdb

    connect = sqlite3.connect

    def build_without_secure_delete(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = connect(*args, **kwargs)
        connection.execute("PRAGMA secure_delete = OFF")
        return connection

    monkeypatch.setattr(recordsdb.sqlite3, "connect", build_without_secure_delete)
    records = Records(tmp_path)
    save_sample(records, 0, lesion="kept-lesion")
    gone = save_sample(records, 1, lesion="Roe-Jane-left-shoulder", notes="Ms Roe fears melanoma")
    records.delete(USER, gone)
    left = b"".join(path.read_bytes() for path in tmp_path.glob(f"{RECORDS_DB_NAME}*"))
    assert (b"Roe-Jane" in left, b"fears melanoma" in left, b"kept-lesion" in left) == (False, False, True)


def test_a_deleted_visit_s_text_leaves_the_write_ahead_log_while_other_connections_stay_open(tmp_path):
    """On a server other sessions hold connections to the database while one deletes a visit: SQLite then keeps
    the -wal file, whose frames still held the deleted text (written when the visit was saved) until the last
    connection closed; a backup copying the folder meanwhile kept it."""
    records = Records(tmp_path)
    save_sample(records, 0, lesion="kept-lesion")
    gone = save_sample(records, 1, lesion="Roe-Jane-left-shoulder", notes="Ms Roe fears melanoma")
    other_session = sqlite3.connect(tmp_path / RECORDS_DB_NAME)
    try:
        other_session.execute("SELECT count(*) FROM analyses").fetchone()
        records.delete(USER, gone)
        left = b"".join(path.read_bytes() for path in tmp_path.glob(f"{RECORDS_DB_NAME}*"))
        assert (b"Roe-Jane" in left, b"fears melanoma" in left, b"kept-lesion" in left) == (False, False, True)
    finally:
        other_session.close()


@pytest.mark.parametrize("record_id", [0, -1, MAX_RECORD_ID + 1, 2**63, 10**20])
def test_an_id_no_database_holds_reads_as_missing_in_every_backend(tmp_path, open_records, record_id):
    """Ids beyond the drivers' integers (a crafted ``?visit=`` link) are refused like a missing one, not with the
    driver's OverflowError (SQLite) or an 'integer out of range' error told as a broken database (PostgreSQL)."""
    records = open_records(tmp_path)
    records.save(ALICE, *sample(0), [], lesion="arm")
    for attempt in (records.record, records.open, records.export, records.delete, records.audit_trail):
        with pytest.raises(KeyError) as refused:
            attempt(ADMIN, record_id)
        assert str(refused.value) == f"no saved analysis with id {record_id}"
    assert len(records.records(ADMIN)) == 1

def test_the_audit_trail_says_who_did_what_and_cannot_be_changed(tmp_path, open_records):
    records = open_records(tmp_path)
    record_id = records.save(ALICE, *sample(0), [], lesion="arm")
    records.open(ALICE, record_id)
    records.open(ALICE, record_id, audit=False)  # the same visit shown again: not a new line
    records.export(ALICE, record_id)
    records.open(ADMIN, record_id)
    with pytest.raises(KeyError):
        records.open(BOB, record_id)
    trail = records.audit_trail(ALICE, record_id)
    assert [(entry.user, entry.action) for entry in trail] == [
        ("alice", "saved"), ("alice", "opened"), ("alice", "exported"), ("root-admin", "opened")]
    assert all(entry.at[:4].isdigit() and "T" in entry.at for entry in trail)
    with pytest.raises(ValueError, match="unknown audit action 'edited'"):
        records.log(ALICE, record_id, "edited")
    records.delete(ALICE, record_id)
    with direct_connection(open_records, tmp_path) as (connection, refused):
        rows = connection.execute(f'SELECT "user", action FROM audit WHERE record_id = {record_id} ORDER BY id')
        assert rows.fetchall()[-1] == ("alice", "deleted")  # the trail outlives the record
        statements = ['UPDATE audit SET "user" = \'mallory\'', "DELETE FROM audit"]
        for statement in statements + (["TRUNCATE audit"] if open_records.backend == "postgresql" else []):
            with pytest.raises(refused, match="append-only"):
                connection.execute(statement)
        assert len(connection.execute("SELECT id FROM audit").fetchall()) == 5


def test_records_saved_before_owners_go_to_admins_only(tmp_path):
    """A schema-1 database (no owners) is migrated: its rows get NO_OWNER, reached by admins only."""
    connection = sqlite3.connect(tmp_path / RECORDS_DB_NAME)
    connection.executescript(MIGRATIONS[0])
    connection.execute("INSERT INTO analyses (uid, saved_at, lesion, visit_date, measurements) "
                       "VALUES ('0123456789abcdef0123456789abcdef', '2025-01-01T10:00:00', 'old', '2025-01-01', '[]')")
    connection.execute("PRAGMA user_version = 1")
    connection.commit()
    connection.close()
    records = Records(tmp_path)
    assert records.schema_version == len(MIGRATIONS) == 3
    assert records.records(ALICE) == []
    (old,) = records.records(ADMIN)
    assert (old.owner, old.lesion) == (NO_OWNER, "old")


def test_a_schema_2_database_keeps_its_trail_and_takes_the_owners_of_a_hand_over(tmp_path):
    """A schema-2 database (no owners in the audit trail) is migrated: its entries read without owners, and a
    hand-over's entries, which name them, pass the append-only triggers."""
    connection = sqlite3.connect(tmp_path / RECORDS_DB_NAME)
    for script in MIGRATIONS[:2]:
        connection.executescript(script)
    connection.execute("INSERT INTO analyses (uid, saved_at, owner, lesion, visit_date, measurements) VALUES "
                       "('0123456789abcdef0123456789abcdef', '2025-01-01T10:00:00', 'moleseg', 'arm', '2025-01-01', "
                       "'[]')")
    connection.execute('INSERT INTO audit (at, "user", action, record_id, record_uid) VALUES '
                       "('2025-01-01T10:00:00', 'moleseg', 'saved', 1, '0123456789abcdef0123456789abcdef')")
    connection.execute("PRAGMA user_version = 2")
    connection.commit()
    connection.close()
    records = Records(tmp_path)
    assert records.schema_version == 3
    assert records.hand_over("root", ["moleseg"], "alice") == {"moleseg": 1}
    assert [(entry.at, entry.user, entry.action, entry.from_owner, entry.to_owner)
            for entry in records.audit_trail(ALICE, 1)][0] == ("2025-01-01T10:00:00", "moleseg", "saved", None, None)
    assert [(entry.user, entry.action, entry.from_owner, entry.to_owner)
            for entry in records.audit_trail(ALICE, 1)][1:] == [("root", "adopted", "moleseg", "alice")]


def owners_trail(records: Records, user: User, record_id: int) -> list[tuple[str, str, str | None, str | None]]:
    """Who did what to the record, with the owners before and after a hand-over."""
    return [(entry.user, entry.action, entry.from_owner, entry.to_owner)
            for entry in records.audit_trail(user, record_id)]


def test_a_hand_over_gives_the_owners_records_with_one_audit_entry_each(tmp_path, open_records):
    records = open_records(tmp_path)
    personal = User("server-account", admin=True)
    first = records.save(personal, *sample(0), [], lesion="arm", visit_date="2026-01-02")
    second = records.save(personal, *sample(1), [], lesion="leg", visit_date="2026-01-03")
    bobs = records.save(BOB, *sample(2), [], lesion="back")
    old = records.save(BOB, *sample(3), [], lesion="old")
    with direct_connection(open_records, tmp_path) as (connection, _):
        connection.execute(f"UPDATE analyses SET owner = '' WHERE id = {old}")  # as saved before owners
    assert records.hand_over("root", ["server-account"], "alice") == {"server-account": 2}
    assert [record.id for record in records.records(ALICE)] == [second, first]
    assert (records.owned_count("server-account"), records.owned_count(NO_OWNER)) == (0, 1)
    assert owners_trail(records, ALICE, first) == [("server-account", "saved", None, None),
                                                   ("root", "adopted", "server-account", "alice")]
    assert records.hand_over("root", ["server-account", NO_OWNER], "alice") == {
        "server-account": 0, NO_OWNER: 1}
    assert owners_trail(records, ALICE, old) == [("bob", "saved", None, None), ("root", "adopted", "", "alice")]
    assert [record.id for record in records.records(BOB)] == [bobs]  # another user's stay theirs
    with pytest.raises(ValueError, match="the records of 'alice' cannot be handed to 'alice'"):
        records.hand_over("root", ["server-account", "alice"], "alice")
    with pytest.raises(ValueError, match="by a named operator to a named user"):
        records.hand_over(" ", ["bob"], "alice")


def test_a_hand_over_that_fails_midway_changes_no_owner(tmp_path, open_records, monkeypatch):
    records = open_records(tmp_path)
    personal = User("server-account", admin=True)
    saved = [records.save(personal, *sample(seed), []) for seed in range(3)]
    written = []

    def failing_append(*args: Any) -> None:
        written.append(args)
        if len(written) == 2:
            raise records_module.RecordsError("The records database cannot be used: the disk is full.")
        append_audit(*args)

    append_audit = records_module.append_audit
    monkeypatch.setattr(records_module, "append_audit", failing_append)
    with pytest.raises(records_module.RecordsError, match="the disk is full"):
        records.hand_over("root", ["server-account"], "alice")
    assert records.owned_count("server-account") == 3 and records.records(ALICE) == []
    assert [owners_trail(records, ADMIN, record_id) for record_id in saved] == [
        [("server-account", "saved", None, None)]] * 3


# --------------------------------------------------------------------------------------------------
# A records database that cannot be used: one message naming the file and the cause, never reused

def made_database(tmp_path: Path, saves: int = 0) -> Path:
    """A records database with ``saves`` records (long notes: several pages), closed; its file."""
    records = Records(tmp_path / "made")
    for seed in range(saves):
        save_sample(records, seed, notes="n" * 2000)
    return records.path


def refusal(folder: Path) -> str:
    with pytest.raises(records_module.RecordsError) as refused:
        Records(folder)
    return str(refused.value)


def test_a_database_damaged_in_the_middle_is_refused_at_start_up(tmp_path):
    made = made_database(tmp_path, saves=12)
    data = bytearray(made.read_bytes())
    page = 4096
    assert len(data) >= 6 * page
    data[3 * page:5 * page] = bytes(range(256)) * (2 * page // 256)  # two pages in the middle overwritten
    folder = tmp_path / "damaged"
    folder.mkdir()
    (folder / RECORDS_DB_NAME).write_bytes(bytes(data))
    message = refusal(folder)
    assert message.startswith(f"The records database {folder / RECORDS_DB_NAME} ")
    assert "damaged" in message and "restore it from a backup" in message and "saving is refused" in message


def test_a_truncated_database_is_refused(tmp_path):
    made = made_database(tmp_path, saves=12)
    folder = tmp_path / "truncated"
    folder.mkdir()
    (folder / RECORDS_DB_NAME).write_bytes(made.read_bytes()[: made.stat().st_size // 2])
    message = refusal(folder)
    assert str(folder / RECORDS_DB_NAME) in message and "damaged" in message


def test_a_foreign_database_is_refused_and_left_as_it_was(tmp_path):
    path = tmp_path / RECORDS_DB_NAME
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE patients (name TEXT)")
    connection.commit()
    connection.close()
    before = path.read_bytes()
    message = refusal(tmp_path)
    assert f"{path} is not a moleseg records database (it holds patients)" in message
    assert path.read_bytes() == before


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    (tmp_path / RECORDS_DB_NAME).write_bytes(b"these are my notes, not a database\n" * 200)
    message = refusal(tmp_path)
    assert str(tmp_path / RECORDS_DB_NAME) in message and "it is not a database" in message


def test_a_zero_length_file_is_refused_never_reused(tmp_path):
    path = tmp_path / RECORDS_DB_NAME
    path.touch()
    message = refusal(tmp_path)
    assert f"{path} is empty (0 bytes)" in message
    assert path.stat().st_size == 0


def test_a_folder_in_the_database_s_place_is_refused(tmp_path):
    (tmp_path / RECORDS_DB_NAME).mkdir()
    assert f"{tmp_path / RECORDS_DB_NAME} is a folder" in refusal(tmp_path)


def test_a_newer_schema_is_refused_with_the_file_named(tmp_path):
    made = made_database(tmp_path)
    connection = sqlite3.connect(made)
    connection.execute("PRAGMA user_version = 7")
    connection.close()
    message = refusal(made.parent)
    assert f"{made} is from a newer moleseg (schema 7, this one knows {len(MIGRATIONS)})" in message


def _connect_with(monkeypatch, setup) -> None:
    """Every connection the records open goes through ``setup(connection, path)`` first."""
    real_connect = sqlite3.connect

    def connect(database, *args, **kwargs):
        connection = real_connect(database, *args, **kwargs)
        setup(connection, str(database))
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect)


def test_a_full_disk_is_named_as_the_cause_and_leaves_nothing_behind(tmp_path, monkeypatch):
    """The disk fills up (SQLite's max_page_count stands in for a full disk): the message says so, not
    'cannot rollback - no transaction is active', and no half record or file is left."""
    records = Records(tmp_path)
    kept = save_sample(records, 0)
    pages = sqlite3.connect(records.path).execute("PRAGMA page_count").fetchone()[0]
    _connect_with(monkeypatch, lambda connection, _: connection.execute(f"PRAGMA max_page_count = {pages}"))
    with pytest.raises(records_module.RecordsError) as refused:
        for seed in range(1, 6):
            save_sample(records, seed, notes="n" * 2000)
    message = str(refused.value)
    assert message.startswith(f"The records database {records.path} cannot be used: the disk is full")
    assert "rollback" not in message
    monkeypatch.undo()
    uids = {r.uid for r in records.records(USER)}
    assert {folder.name for folder in (tmp_path / "files").iterdir()} == uids
    assert kept in {r.id for r in records.records(USER)}


def test_a_read_only_database_is_named_as_the_cause(tmp_path, monkeypatch):
    """The database can be read but not written (as in a read-only folder; root writes anyway, so the
    connection is opened read-only): saving and deleting say it is read-only; listing still works."""
    records = Records(tmp_path)
    record_id = save_sample(records, 0)
    real_connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect",
                        lambda database, *a, **k: real_connect(str(database).replace("mode=rw", "mode=ro"), *a, **k))
    for attempt in (lambda: save_sample(records, 1), lambda: records.delete(USER, record_id)):
        with pytest.raises(records_module.RecordsError, match="it is read-only") as refused:
            attempt()
        assert str(records.path) in str(refused.value)
    assert [r.id for r in records.records(USER)] == [record_id]
    assert len(list((tmp_path / "files").iterdir())) == 1  # the failed save removed its files


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders: the simulated case above "
                                                "covers it")
def test_a_read_only_folder_is_named_as_the_cause(tmp_path):
    records = Records(tmp_path)
    save_sample(records, 0)
    for path in (tmp_path / "files", tmp_path):
        path.chmod(0o555)
    (tmp_path / RECORDS_DB_NAME).chmod(0o444)
    try:
        with pytest.raises(ValueError) as refused:
            save_sample(Records(tmp_path), 1)
        assert str(tmp_path) in str(refused.value)
    finally:
        for path in (tmp_path, tmp_path / "files"):
            path.chmod(0o755)


def test_orphan_folders_are_swept_at_start_up_and_after_a_failed_save(tmp_path, monkeypatch, open_records):
    """A process killed between its file writes and its commit leaves files/<uid>; the first open of the
    database in a process removes those older than ORPHAN_MIN_AGE_S, and so does every failed save."""
    files = tmp_path / "files"

    def orphan(age_s: float) -> Path:
        folder = files / uuid.uuid4().hex
        folder.mkdir(parents=True)
        (folder / "image.png").write_bytes(b"half a save")
        stamp = time.time() - age_s
        os.utime(folder, (stamp, stamp))
        return folder

    old, young = orphan(records_module.ORPHAN_MIN_AGE_S + 60), orphan(5)
    unrelated = files / "kept-by-hand"
    unrelated.mkdir()
    records = open_records(tmp_path)
    assert not old.exists() and young.exists() and unrelated.exists()
    kept = save_sample(records, 0)
    later = orphan(records_module.ORPHAN_MIN_AGE_S + 60)  # a crash in another process, since start-up
    monkeypatch.setattr(records_module, "insert_analysis_row",
                        lambda connection, values: (_ for _ in ()).throw(OSError("simulated crash")))
    with pytest.raises(OSError):
        save_sample(records, 1)
    monkeypatch.undo()
    assert not later.exists() and young.exists()
    assert {f.name for f in files.iterdir()} == {young.name, unrelated.name, records.record(USER, kept).uid}


def _save_until_killed(folder: str, database_url: str | None, inserted: str) -> None:
    """A process that saves one analysis and stops for good after its row is inserted, before the commit
    (the parent kills it there): ``inserted`` is the file it creates at that moment."""
    real_insert = records_module.insert_analysis_row

    def insert_then_wait(connection, values):
        row_id = real_insert(connection, values)
        Path(inserted).write_text(values["uid"])
        time.sleep(600)
        return row_id

    records_module.insert_analysis_row = insert_then_wait
    save_sample(Records(folder, database_url=database_url), 0)


def test_a_process_killed_mid_save_leaves_no_record_and_its_files_are_swept(tmp_path, open_records, time_left):
    """SIGKILL between the file writes and the commit: the database rolls the row back (SQLite's journal,
    PostgreSQL's dropped connection), the other processes save on, and the orphan folder goes at the sweep."""
    records = open_records(tmp_path)
    kept = save_sample(records, 1)
    inserted = tmp_path / "inserted"
    process = multiprocessing.get_context("spawn").Process(
        target=_save_until_killed, args=(str(tmp_path), open_records.url, str(inserted)))
    process.start()
    try:
        deadline = time.monotonic() + time_left()
        while not inserted.exists():
            assert process.is_alive() and time.monotonic() < deadline, "the saving process never inserted its row"
            time.sleep(0.05)
        uid = inserted.read_text()
        assert (tmp_path / "files" / uid / "mask.png").is_file()
    finally:
        process.kill()
        process.join(timeout=30)
    assert process.exitcode == -9
    after = save_sample(records, 2)  # the killed transaction holds no lock any more
    assert sorted(r.id for r in records.records(USER)) == sorted([kept, after])
    assert records.remove_orphans() == 0  # too young: it might belong to a save in progress
    stamp = time.time() - records_module.ORPHAN_MIN_AGE_S - 1
    os.utime(tmp_path / "files" / uid, (stamp, stamp))
    assert records.remove_orphans() == 1
    assert {folder.name for folder in (tmp_path / "files").iterdir()} == {r.uid for r in records.records(USER)}
