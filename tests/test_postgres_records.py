"""Records on PostgreSQL (moleseg.engine.recordspg): the settings that choose it, its refusals (a newer schema,
foreign tables, lost audit triggers, a wrong password, an unreachable server, a missing database), each one
sentence with the password masked, the migration of a schema-1 database, and two app replicas sharing one
database and one files folder. The records suite itself runs on PostgreSQL too (tests/test_records.py)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from app_helpers import ARTIFACTS, app_test, free_port, streamlit_server, texts
from moleseg.app.ui import PAGE_FILES
from moleseg.core.measure import measure_lesion
from moleseg.core.settings import SettingsError, load_settings, masked_url, read_settings
from moleseg.engine.records import PG_MIGRATIONS, Records, RecordsError
from moleseg.engine.recordsdb import unusable
from moleseg.engine.recordspg import ERASE_LOCK_TIMEOUT_S, VERSION_TABLE
from moleseg.engine.recordtypes import NO_OWNER, User
from test_records import sample

ALICE, BOB, ADMIN = User("alice"), User("bob"), User("admin", admin=True)


def password_of(url: str) -> str:
    return url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]


# --------------------------------------------------------------------------------------------------
# The settings (no server needed)

def test_the_database_url_setting_is_checked_and_its_password_never_shown():
    with pytest.raises(SettingsError) as refused:
        read_settings({"MOLESEG_DATABASE_URL": "mysql://moleseg:hunter2-secret@db/records"})
    assert refused.value.problems == ["database_url must be a PostgreSQL URL such as postgresql://USER:PASSWORD@"
                                      "HOST:PORT/DATABASE, not 'mysql://moleseg:***@db/records'."]
    assert "hunter2" not in str(refused.value)
    settings = read_settings({"MOLESEG_DATABASE_URL": "postgresql://moleseg:hunter2-secret@db:5432/records",
                              "MOLESEG_RECORDS_FILES_DIR": "/mnt/records"})
    assert (settings.database_url, settings.records_files_dir) == (
        "postgresql://moleseg:hunter2-secret@db:5432/records", Path("/mnt/records"))
    assert "hunter2" not in repr(settings)
    assert read_settings({}).database_url == "" and read_settings({}).records_files_dir is None
    with pytest.raises(SettingsError, match="records_files_dir must be an absolute path, not 'files'"):
        read_settings({"MOLESEG_RECORDS_FILES_DIR": "files"})


def test_masked_url_hides_the_password_wherever_the_url_carries_it():
    assert masked_url("postgresql://u:p%40ss@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert masked_url("postgresql://u@h/d?password=p&sslmode=require") == (
        "postgresql://u@h/d?password=***&sslmode=require")
    assert masked_url("postgresql://u:p@ss@h/d") == "postgresql://u:***@h/d"  # an '@' in the password
    assert masked_url("postgresql:///d?host=/run/postgresql") == "postgresql:///d?host=/run/postgresql"
    assert masked_url("postgresql://u:se/cr?et@h/db") == "postgresql://u:***@h/db"  # unescaped '/' and '?'
    assert masked_url("moleseg:hunter2@db/records") == "moleseg:***@db/records"  # the scheme forgotten


@pytest.mark.parametrize("url", [pytest.param("postgresql://u:hunter2@[::1:5432/db", id="unclosed-ipv6"),
                                 "postgresql://u:hunter2@db:port/db",
                                 "postgresql://u:hunter2@db:99999/db"])
def test_a_malformed_host_or_port_is_one_sentence_without_the_password(url):
    with pytest.raises(SettingsError) as refused:
        read_settings({"MOLESEG_DATABASE_URL": url})
    assert refused.value.problems == [f"database_url must be a PostgreSQL URL such as postgresql://USER:PASSWORD@"
                                      f"HOST:PORT/DATABASE, not {url.replace('hunter2', '***')!r}."]


# --------------------------------------------------------------------------------------------------
# Refusals: one sentence naming the database (password masked), the cause and what to do

def refusal(url: str, folder: Path) -> str:
    with pytest.raises(RecordsError) as refused:
        Records(folder, database_url=url)
    message = str(refused.value)
    assert password_of(url) not in message and "\n" not in message
    return message


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


def test_a_newer_schema_and_foreign_tables_are_refused(postgres_url, tmp_path):
    Records(tmp_path, database_url=postgres_url)
    execute(postgres_url, f"UPDATE {VERSION_TABLE} SET version = 7")
    message = refusal(postgres_url, tmp_path)
    assert message == (f"The records database {masked_url(postgres_url)} is from a newer moleseg (schema 7, this one "
                       f"knows {len(PG_MIGRATIONS)}): update moleseg to open it; analysis works, saving is refused "
                       f"until then.")
    execute(postgres_url, f"DROP TABLE {VERSION_TABLE}")
    assert "is not a moleseg records database (it holds analyses, audit)" in refusal(postgres_url, tmp_path)


def test_lost_audit_triggers_are_refused_by_the_first_open_s_check(postgres_url, tmp_path):
    database = Records(tmp_path, database_url=postgres_url).database
    execute(postgres_url, "DROP TRIGGER audit_is_never_emptied ON audit")
    database.create_or_check(integrity=False)  # a later open in the same process does not look again
    with pytest.raises(RecordsError) as refused:
        database.create_or_check(integrity=True)  # the first open in a process does
    assert str(refused.value) == (
        f"The records database {masked_url(postgres_url)} has lost the triggers that keep its audit trail "
        f"append-only (audit_is_never_emptied): restore it from a backup; analysis works, saving is refused until "
        f"then.")


def test_a_wrong_password_a_missing_database_and_no_server_are_named(postgres_server, tmp_path):
    wrong = postgres_server.replace(password_of(postgres_server), "not-the-password")
    assert "cannot be used: the server refused the login: check the user name and password of database_url" in (
        refusal(wrong, tmp_path))
    missing = postgres_server.rsplit("/", 1)[0] + "/no_such_database"
    assert "the database does not exist: create it (createdb)" in refusal(missing, tmp_path)
    nobody_listens = postgres_server.replace(postgres_server.split("@")[1].split("/")[0], f"127.0.0.1:{free_port()}")
    message = refusal(nobody_listens, tmp_path)
    assert message.startswith(f"The records database {masked_url(nobody_listens)} cannot be used: the server "
                              f"cannot be reached: check that PostgreSQL runs at that host and port")


def test_a_host_that_does_not_resolve_is_named_as_unreachable_without_the_password(tmp_path):
    url = "postgresql://moleseg:hunter2-secret@no-such-host.invalid:5432/records"
    message = refusal(url, tmp_path)
    assert message.startswith("The records database postgresql://moleseg:***@no-such-host.invalid:5432/records "
                              "cannot be used: the server cannot be reached: check that PostgreSQL runs at that "
                              "host and port and that this machine may connect (failed to resolve host "
                              "'no-such-host.invalid'")
    assert message.endswith("); analysis works, saving is refused until then.")


def test_an_unknown_cause_is_said_once():
    assert unusable("x.sqlite", "disk I/O error") == "The records database x.sqlite cannot be used: disk I/O error."
    assert unusable("x.sqlite", "it is damaged", "database disk image is malformed") == (
        "The records database x.sqlite cannot be used: it is damaged (database disk image is malformed).")


def test_records_saved_before_owners_go_to_admins_only(postgres_url, tmp_path):
    """A schema-1 PostgreSQL database (no owners) is migrated: its rows get NO_OWNER, reached by admins only."""
    execute(postgres_url, f"CREATE TABLE {VERSION_TABLE} (version INTEGER NOT NULL)",
            f"INSERT INTO {VERSION_TABLE} VALUES (1)", *PG_MIGRATIONS[0],
            "INSERT INTO analyses (uid, saved_at, lesion, visit_date, measurements) VALUES "
            "('0123456789abcdef0123456789abcdef', '2025-01-01T10:00:00', 'old', '2025-01-01', '[]')")
    records = Records(tmp_path, database_url=postgres_url)
    assert records.schema_version == len(PG_MIGRATIONS) == 3
    assert records.records(ALICE) == []
    (old,) = records.records(ADMIN)
    assert (old.owner, old.lesion) == (NO_OWNER, "old")


def test_a_schema_2_database_keeps_its_trail_and_takes_the_owners_of_a_hand_over(postgres_url, tmp_path):
    """A schema-2 PostgreSQL database (no owners in the audit trail) is migrated: its entries read without
    owners, and a hand-over's entries pass the append-only trigger."""
    execute(postgres_url, f"CREATE TABLE {VERSION_TABLE} (version INTEGER NOT NULL)",
            f"INSERT INTO {VERSION_TABLE} VALUES (2)", *PG_MIGRATIONS[0], *PG_MIGRATIONS[1],
            "INSERT INTO analyses (uid, saved_at, owner, lesion, visit_date, measurements) VALUES "
            "('0123456789abcdef0123456789abcdef', '2025-01-01T10:00:00', 'moleseg', 'arm', '2025-01-01', '[]')",
            'INSERT INTO audit (at, "user", action, record_id, record_uid) VALUES '
            "('2025-01-01T10:00:00', 'moleseg', 'saved', 1, '0123456789abcdef0123456789abcdef')")
    records = Records(tmp_path, database_url=postgres_url)
    assert records.schema_version == 3
    assert records.hand_over("root", ["moleseg"], "alice") == {"moleseg": 1}
    assert [(entry.user, entry.action, entry.from_owner, entry.to_owner)
            for entry in records.audit_trail(ALICE, 1)] == [("moleseg", "saved", None, None),
                                                            ("root", "adopted", "moleseg", "alice")]


def files_holding(url: str, text: bytes) -> tuple[set[str], set[str]]:
    """After a checkpoint (every change written to the files): the files of ``analyses`` itself, its TOAST
    table and its indexes (``pg_relation_filepath``) holding ``text``, and every file of the database's folder
    holding it (a rewritten table's old files included)."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CHECKPOINT")
        data = Path(connection.execute("SHOW data_directory").fetchone()[0])
        (folder,) = connection.execute("SELECT pg_relation_filepath('analyses')").fetchone()
        relations = connection.execute(
            "SELECT pg_relation_filepath(oid) FROM pg_class WHERE oid = 'analyses'::regclass "
            "OR oid = (SELECT reltoastrelid FROM pg_class WHERE oid = 'analyses'::regclass) "
            "OR oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'analyses'::regclass)").fetchall()
    table = {path for (path,) in relations
             if any(text in file.read_bytes() for file in data.glob(f"{path}*") if file.is_file())}
    database = {str(file.relative_to(data)) for file in (data / folder).parent.iterdir()
                if file.is_file() and text in file.read_bytes()}
    return table, database


def test_a_deleted_visit_s_text_leaves_the_table_s_files(postgres_url, tmp_path):
    """Deleting a visit erases its lesion identifier and notes from the database's files: PostgreSQL kept the
    deleted row (a dead tuple, in the table and in its indexes) until autovacuum came by, and every backup of the
    files taken meanwhile kept it too."""
    records = Records(tmp_path, database_url=postgres_url)
    lesion, notes = f"Roe-Jane-{uuid.uuid4().hex}", f"Ms Roe fears melanoma {uuid.uuid4().hex}"
    kept = records.save(ALICE, *sample(0), [], lesion=f"kept-{uuid.uuid4().hex}")
    gone = records.save(ALICE, *sample(1), [], lesion=lesion, notes=notes)
    with psycopg.connect(postgres_url) as connection:
        (table,) = connection.execute("SELECT pg_relation_filepath('analyses')").fetchone()
    in_table, in_database = files_holding(postgres_url, lesion.encode())
    assert table in in_table and len(in_table) == 3 == len(in_database)  # the table and its two lesion indexes
    assert files_holding(postgres_url, notes.encode()) == ({table}, {table})
    records.delete(ALICE, gone)
    assert files_holding(postgres_url, lesion.encode()) == (set(), set())
    assert files_holding(postgres_url, notes.encode()) == (set(), set())
    assert len(files_holding(postgres_url, records.record(ALICE, kept).lesion.encode())[0]) == 3


def test_a_rewrite_kept_waiting_leaves_the_deletion_done_and_the_next_deletion_erases_both(postgres_url, tmp_path,
                                                                                           capfd):
    """Another replica's open transaction holds the table's lock past ERASE_LOCK_TIMEOUT_S: the deletion stands,
    one line on stderr says the text stays, and the next deletion's rewrite takes it out."""
    records = Records(tmp_path, database_url=postgres_url)
    first, second = f"Roe-Jane-{uuid.uuid4().hex}", f"Doe-John-{uuid.uuid4().hex}"
    first_id = records.save(ALICE, *sample(0), [], lesion=first)
    second_id = records.save(ALICE, *sample(1), [], lesion=second)
    with psycopg.connect(postgres_url) as other_replica:  # a transaction reading the table, left open
        other_replica.execute("SELECT count(*) FROM analyses").fetchone()
        records.delete(ALICE, first_id)
        assert [record.id for record in records.records(ALICE)] == [second_id]
    assert capfd.readouterr().err == (
        f"moleseg: a deleted visit's text stays in the files of the records database {masked_url(postgres_url)} "
        f"until the next deletion rewrites its table (VACUUM FULL failed: another transaction held the table's lock "
        f"for over {ERASE_LOCK_TIMEOUT_S:g} s)\n")
    assert files_holding(postgres_url, first.encode())[1]
    records.delete(ALICE, second_id)
    assert files_holding(postgres_url, first.encode()) == files_holding(postgres_url, second.encode()) == (set(),
                                                                                                         set())
    assert capfd.readouterr().err == ""


def test_the_history_page_names_an_unusable_database_without_its_password(app_folders, monkeypatch,
                                                                            postgres_server):
    wrong = postgres_server.replace(password_of(postgres_server), "not-the-password")
    monkeypatch.setenv("MOLESEG_DATABASE_URL", wrong)
    load_settings.cache_clear()
    at = app_test(PAGE_FILES["history"])
    assert not at.exception
    (message,) = texts(at.error)
    assert message.startswith(f"The records database {masked_url(wrong)} cannot be used: the server refused the "
                              f"login")
    assert "not-the-password" not in message


# --------------------------------------------------------------------------------------------------
# Two app replicas, one database, one files folder

def replica_environment(url: str, files: Path, data: Path) -> dict[str, str]:
    """The settings of one replica: the shared database and files folder, its own data folder."""
    return {"MOLESEG_DATABASE_URL": url, "MOLESEG_RECORDS_FILES_DIR": str(files), "MOLESEG_DATA_DIR": str(data)}


def save_on_replica(environment: dict[str, str], user: User, seeds: list[int], start: Any) -> list[int]:
    """A replica's process: its settings from ``environment``, then one save per seed by ``user``, all at
    once with the other replica (after ``start``)."""
    os.environ.update(environment)
    load_settings.cache_clear()
    records = Records()
    start.wait(timeout=60)
    ids = []
    for seed in seeds:
        image, mask = sample(seed)
        ids.append(records.save(user, image, mask, measure_lesion(mask, image=image), lesion=f"{user.name} mole",
                                visit_date=f"2026-05-{seed + 1:02d}"))
    return ids


@pytest.mark.slow
def test_two_replicas_share_one_database_lose_nothing_and_keep_owners_apart(app_folders, monkeypatch, tmp_path,
                                                                          postgres_url):
    files = tmp_path / "shared-files"
    environments = [replica_environment(postgres_url, files, tmp_path / f"replica-{k}") for k in range(2)]
    with contextlib.ExitStack() as servers:  # two real servers start at once against the one database
        starting = [streamlit_server({**os.environ, **environment}, f"replica-{k}", serve=True)
                    for k, environment in enumerate(environments)]
        with ThreadPoolExecutor(len(starting)) as pool:
            started = [pool.submit(server.__enter__) for server in starting]
            for server, future in zip(starting, started):
                if future.exception() is None:
                    servers.push(server)
        for future in started:
            _, process = future.result()
            assert process.poll() is None
        for k in range(len(environments)):
            log = (ARTIFACTS / f"replica-{k}.log").read_text()
            assert f"records: PostgreSQL {masked_url(postgres_url)}" in log
            assert password_of(postgres_url) not in log
        context = multiprocessing.get_context("spawn")
        start = context.Manager().Event()
        with context.Pool(2) as pool:  # the two replicas' saves, at once
            saving = pool.starmap_async(save_on_replica, [(environments[0], ALICE, list(range(6)), start),
                                                          (environments[1], BOB, list(range(6, 12)), start)])
            start.set()
            alice_ids, bob_ids = saving.get(timeout=120)
    assert len(set(alice_ids + bob_ids)) == 12
    for environment in environments:  # every replica sees every save, each user only their own
        for key, value in environment.items():
            monkeypatch.setenv(key, value)
        load_settings.cache_clear()
        records = Records()
        assert sorted(r.id for r in records.records(ALICE)) == sorted(alice_ids)
        assert sorted(r.id for r in records.records(BOB)) == sorted(bob_ids)
        assert sorted(r.id for r in records.records(ADMIN)) == sorted(alice_ids + bob_ids)
        with pytest.raises(KeyError, match=f"no saved analysis with id {alice_ids[0]}"):
            records.open(BOB, alice_ids[0])
        assert records.open(ALICE, alice_ids[0]).image.shape == (40, 50, 3)
    assert sorted(folder.name for folder in files.iterdir()) == sorted(r.uid for r in records.records(ADMIN))
    # the History page of the second replica (personal mode: its one user is an admin) lists the first's visit
    at = app_test(PAGE_FILES["history"])
    assert not at.exception and not at.error
    assert sorted(at.dataframe[0].value["lesion"]) == ["alice mole", "bob mole"]
