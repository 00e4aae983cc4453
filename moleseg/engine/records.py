"""Saved analyses: an SQLite database of lesions and visits, each owned by the user who saved it, with an
append-only audit trail, and the image and mask files beside it.

Layout of the data folder (:func:`moleseg.core.config.data_dir`, ``MOLESEG_DATA_DIR`` overrides it)::

    records.sqlite            the database (WAL journal: records.sqlite-wal, records.sqlite-shm)
    files/<uid>/image.png     the analysed image (lossless)
    files/<uid>/mask.png      the lesion mask (0/255)

Nothing identifies a person unless the user types it: the lesion identifier is free text and optional.

Ownership
---------
Every method that reads or changes a record takes the acting :class:`User`. A user lists, opens, compares,
exports and deletes only the records they own; an admin user reaches all. A record of someone else is
refused with the very message of a missing one, so guessing ids reveals nothing. Records saved before
records had owners have the owner :data:`NO_OWNER`: only admins (and personal mode, whose one user is an
admin) reach them. The ``audit`` table records who saved, opened, exported and deleted which record, and
when; SQLite triggers refuse any change or deletion of its rows.

Safety
------
* A new database is built beside its place and linked there only when complete. An existing file is
  checked whenever a :class:`Records` is made (a file, not empty, our tables, a known schema version) and,
  the first time in a process, page by page (``PRAGMA quick_check``): a damaged, empty (0 bytes), foreign or
  newer file, or a folder in its place, is refused with :class:`RecordsError` naming the file, the cause
  and what to do; it is never reused or overwritten.
* Every ``sqlite3`` error becomes a :class:`RecordsError` naming the database and the cause (disk full,
  read-only, not a database, damaged, ...).
* The schema version is SQLite's ``PRAGMA user_version``; :data:`MIGRATIONS` lists the SQL that takes
  the database from each version to the next, applied in one ``BEGIN IMMEDIATE`` transaction by
  whichever connection finds the database behind (others wait for it).
* WAL journal and a busy timeout of :data:`BUSY_TIMEOUT_S`: several app sessions, threads or processes
  can save at once; each save is one transaction.
* A save writes the two files first (:func:`moleseg.core.atomic.atomic_write`), then inserts the row and
  its audit entry and commits. If anything fails before the commit, the row is rolled back and the files
  are removed, so an interrupted save leaves no half record. A crash of the process between the file
  writes and the commit can at worst leave a ``files/<uid>`` folder that no row refers to; it is never
  listed, and :meth:`Records.remove_orphans` deletes such folders older than :data:`ORPHAN_MIN_AGE_S`
  when the database is first opened in a process and after every failed save.
* Deleting a record deletes its row (committed first, with its audit entry) and then its files.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from moleseg.core.atomic import atomic_write
from moleseg.core.config import RECORDS_DB_NAME, data_dir
from moleseg.core.imageio import read_image, read_mask
from moleseg.core.imagewrite import encode_png
from moleseg.core.measure import Measurement, measurements_row
from moleseg.core.report import AnalysisSettings, Visit, measurements_csv, settings_sidecar, sidecar_name, zip_bundle

__all__ = [
    "AUDIT_ACTIONS",
    "BUSY_TIMEOUT_S",
    "MIGRATIONS",
    "NO_OWNER",
    "NoSuchRecord",
    "ORPHAN_MIN_AGE_S",
    "AuditEntry",
    "LesionSummary",
    "Record",
    "Records",
    "RecordsError",
    "SavedAnalysis",
    "User",
    "describe_sqlite_error",
    "insert_analysis_row",
]

#: Seconds a writer waits for another's transaction before giving up.
BUSY_TIMEOUT_S: float = 30.0
#: A ``files/<uid>`` folder that no record refers to is removed once it is this old, in seconds: a save in
#: progress holds its folder for its file writes plus at most :data:`BUSY_TIMEOUT_S` waiting for the lock.
ORPHAN_MIN_AGE_S: float = 10 * BUSY_TIMEOUT_S
#: Folder (inside the data folder) of the saved files.
FILES_FOLDER: str = "files"
IMAGE_FILE: str = "image.png"
MASK_FILE: str = "mask.png"
#: Owner of the records saved before records had owners (schema 1): reached by admins only.
NO_OWNER: str = ""
#: What the audit trail records: who saved, opened, exported (ZIP or PDF) and deleted a record.
AUDIT_ACTIONS: tuple[str, ...] = ("saved", "opened", "exported", "deleted")
#: A ``files/`` entry named like a record's uid (the only names :meth:`Records.remove_orphans` removes).
_UID = re.compile(r"[0-9a-f]{32}")

#: SQL taking the schema from version ``i`` to ``i + 1`` (``PRAGMA user_version``).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE analyses (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        uid TEXT NOT NULL UNIQUE,
        saved_at TEXT NOT NULL,
        lesion TEXT NOT NULL DEFAULT '',
        visit_date TEXT NOT NULL,
        body_site TEXT NOT NULL DEFAULT '',
        notes TEXT NOT NULL DEFAULT '',
        image_name TEXT NOT NULL DEFAULT '',
        measurements TEXT NOT NULL,
        model_name TEXT NOT NULL DEFAULT '',
        model_version TEXT NOT NULL DEFAULT '',
        cleanup TEXT NOT NULL DEFAULT '{}',
        lesion_threshold REAL,
        pixel_size_mm REAL,
        corrected INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX analyses_lesion ON analyses (lesion, visit_date);
    """,
    """
    ALTER TABLE analyses ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    CREATE INDEX analyses_owner ON analyses (owner, lesion, visit_date);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        user TEXT NOT NULL,
        action TEXT NOT NULL,
        record_id INTEGER NOT NULL,
        record_uid TEXT NOT NULL
    );
    CREATE INDEX audit_record ON audit (record_id, id);
    CREATE TRIGGER audit_rows_are_never_changed BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
    CREATE TRIGGER audit_rows_are_never_deleted BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
    """,
)
#: The tables each schema version has (a file without them is not a records database).
_TABLES: tuple[frozenset[str], ...] = (frozenset(), frozenset({"analyses"}), frozenset({"analyses", "audit"}))

_COLUMNS = ("id", "uid", "saved_at", "owner", "lesion", "visit_date", "body_site", "notes", "image_name",
            "measurements", "model_name", "model_version", "cleanup", "lesion_threshold", "pixel_size_mm",
            "corrected")

#: What to say for SQLite's primary result codes (``sqlite3.Error.sqlite_errorcode & 0xFF``).
_CAUSES: dict[int, str] = {
    sqlite3.SQLITE_FULL: "the disk is full: free some space, then save again",
    sqlite3.SQLITE_READONLY: "it is read-only: let the server's user write the file and its folder",
    sqlite3.SQLITE_PERM: "permission denied: let the server's user write the file and its folder",
    sqlite3.SQLITE_CANTOPEN: "it cannot be opened: check that its folder exists and the server's user may "
                             "write it",
    sqlite3.SQLITE_NOTADB: "it is not a database: move it away to start a new one",
    sqlite3.SQLITE_CORRUPT: "it is damaged: restore it from a backup, or move it away to start a new one",
    sqlite3.SQLITE_BUSY: f"another program kept it locked for over {BUSY_TIMEOUT_S:.0f} s: try again",
    sqlite3.SQLITE_LOCKED: "it is locked: try again",
    sqlite3.SQLITE_IOERR: "the disk reported an input/output error: check the disk",
}
#: Databases (resolved paths) that passed the start-up check in this process.
_CHECKED: set[Path] = set()
_CHECKED_LOCK = threading.Lock()


class RecordsError(ValueError):
    """The records database cannot be used; the message names the file, the cause and what to do."""


class NoSuchRecord(KeyError):
    """No record of that id that the acting user may reach (a missing record and someone else's read alike)."""

    def __init__(self, record_id: int) -> None:
        super().__init__(f"no saved analysis with id {record_id}")

    def __str__(self) -> str:
        return str(self.args[0])


def describe_sqlite_error(path: Path, error: sqlite3.Error) -> str:
    """One sentence naming the database and the cause of ``error``."""
    code = getattr(error, "sqlite_errorcode", None)
    cause = _CAUSES.get(code & 0xFF) if isinstance(code, int) else None
    detail = str(error).strip() or type(error).__name__
    return f"The records database {path} cannot be used: {cause or detail} ({detail})."


@dataclass(frozen=True)
class User:
    """Who acts on the records: ``name`` (non-empty, as the identity source gives it) and whether they are an
    admin (reaches every record)."""

    name: str
    admin: bool = False

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("a user needs a name")


@dataclass(frozen=True)
class AuditEntry:
    """One line of a record's audit trail: when (ISO timestamp), who, and which of :data:`AUDIT_ACTIONS`."""

    at: str
    user: str
    action: str


@dataclass(frozen=True)
class Record:
    """One saved analysis without its pictures (what the History lists).

    ``lesion`` is the free-text identifier ('' when none was given); ``visit_date`` is ISO
    ``YYYY-MM-DD``; ``saved_at`` an ISO timestamp; ``cleanup`` the cleanup settings as a dict;
    ``lesion_threshold`` 0..1 or None (arg-max); ``pixel_size_mm`` mm per pixel or None;
    ``corrected`` whether the border was corrected by hand; ``owner`` the name of the user who saved it
    (:data:`NO_OWNER` when saved before records had owners).
    """

    id: int
    uid: str
    saved_at: str
    owner: str
    lesion: str
    visit_date: str
    body_site: str
    notes: str
    image_name: str
    measurements: list[Measurement]
    model_name: str
    model_version: str
    cleanup: dict[str, Any]
    lesion_threshold: float | None
    pixel_size_mm: float | None
    corrected: bool

    def settings(self) -> AnalysisSettings:
        """The settings that made this analysis, for reports and exports."""
        return AnalysisSettings(model_name=self.model_name, model_version=self.model_version or None,
                                cleanup=self.cleanup, lesion_threshold=self.lesion_threshold,
                                pixel_size_mm=self.pixel_size_mm, corrected_by_hand=self.corrected)

    def visit(self) -> Visit:
        """The identifier, visit date, body site and notes saved with this analysis."""
        return Visit(lesion=self.lesion, visit_date=self.visit_date, body_site=self.body_site, notes=self.notes)


@dataclass(frozen=True)
class SavedAnalysis:
    """A record with its image ``(H, W, 3) uint8`` and lesion mask ``(H, W) bool``."""

    record: Record
    image: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class LesionSummary:
    """One lesion identifier with its number of visits and the first and last visit dates."""

    lesion: str
    visits: int
    first_visit: str
    last_visit: str


def _encode_measurements(measurements: list[Measurement]) -> str:
    return json.dumps([{**asdict(m), "value": m.value if math.isfinite(m.value) else None} for m in measurements])


def _decode_measurements(text: str) -> list[Measurement]:
    return [Measurement(**{**item, "value": math.nan if item["value"] is None else float(item["value"])})
            for item in json.loads(text)]


def _record(row: sqlite3.Row) -> Record:
    values = dict(row)
    return Record(**{**values, "measurements": _decode_measurements(values["measurements"]),
                     "cleanup": json.loads(values["cleanup"]), "corrected": bool(values["corrected"])})


def insert_analysis_row(connection: sqlite3.Connection, values: dict[str, Any]) -> int:
    """Insert one row of ``analyses`` (inside the caller's transaction); returns its id."""
    names = [name for name in _COLUMNS if name != "id"]
    cursor = connection.execute(f"INSERT INTO analyses ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                                [values[name] for name in names])
    return int(cursor.lastrowid)


def _clean_text(value: Any, name: str, max_length: int = 2000) -> str:
    text = "" if value is None else str(value).strip()
    if len(text) > max_length:
        raise ValueError(f"{name} is longer than {max_length} characters")
    return text


def _visit_date(value: date | str | None) -> str:
    if value is None:
        return date.today().isoformat()
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    try:
        return date.fromisoformat(str(value).strip()).isoformat()
    except ValueError as error:
        raise ValueError(f"visit date {value!r} is not a date (YYYY-MM-DD)") from error



def _split_statements(script: str) -> list[str]:
    """The SQL statements of ``script`` (a trigger's ``BEGIN ... END`` body stays in one)."""
    statements: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending.strip())
            pending = ""
    return statements


def _migrate(connection: sqlite3.Connection) -> None:
    """Bring the schema to the last version of :data:`MIGRATIONS` in one transaction."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        for step in range(version, len(MIGRATIONS)):
            for statement in _split_statements(MIGRATIONS[step]):
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


class Records:
    """The records database of one data folder.

    Parameters
    ----------
    folder : path, optional
        The data folder; default :func:`moleseg.core.config.data_dir`. Created when missing.

    Raises
    ------
    RecordsError
        The folder cannot be created, or the database is damaged, empty, foreign, newer than this moleseg,
        a folder, or unreadable (the message names the file and says what to do).

    Every method opens its own connection, so one ``Records`` may be shared by threads.
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else data_dir()
        self.path = self.folder / RECORDS_DB_NAME
        try:
            (self.folder / FILES_FOLDER).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RecordsError(f"The records folder {self.folder} cannot be created: "
                               f"{error.strerror or error}.") from error
        key = self.path.absolute()
        with _CHECKED_LOCK:
            checked = key in _CHECKED
        self._create_or_check(integrity=not checked)
        if not checked:
            self.remove_orphans()
            with _CHECKED_LOCK:
                _CHECKED.add(key)

    # -- connection, creation and checks ------------------------------------------------------------

    def _refuse(self, cause: str) -> RecordsError:
        return RecordsError(f"The records database {self.path} {cause}; analysis works, saving is refused until "
                            f"then.")

    @contextmanager
    def _connection(self, configure: bool = True) -> Iterator[sqlite3.Connection]:
        """A new connection to the existing database (never creates one; autocommit, transactions explicit),
        closed when the ``with`` ends; a ``sqlite3`` error inside becomes a :class:`RecordsError`.
        ``configure`` sets the WAL journal, which writes to the file (False: a file not yet checked)."""
        target = self.path.absolute()
        try:
            connection = sqlite3.connect(f"{target.as_uri()}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_S,
                                         isolation_level=None)
            try:
                connection.row_factory = sqlite3.Row
                connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                if configure:
                    connection.execute("PRAGMA journal_mode = WAL")
                    connection.execute("PRAGMA synchronous = NORMAL")
                yield connection
            finally:
                connection.close()
        except sqlite3.Error as error:
            raise RecordsError(describe_sqlite_error(self.path, error)) from error

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A connection inside ``BEGIN IMMEDIATE``: committed when the ``with`` succeeds, else rolled back
        (when SQLite has not already rolled it back itself, as after a full disk)."""
        with self._connection() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    try:
                        connection.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # the error that stopped the transaction is the one to report
                raise

    def _create_or_check(self, integrity: bool = True) -> None:
        """Create the database when there is none (built beside it, linked in place only when complete), or
        check the one there: a file, not empty, our schema at a known version (migrated when behind), and with
        ``integrity`` its pages (``PRAGMA quick_check``, which reads the whole file)."""
        if not os.path.lexists(self.path):
            self._create(integrity)
            return
        if self.path.is_dir():
            raise self._refuse("is a folder, not a database file: move it away to start a new database")
        try:
            size = self.path.stat().st_size
        except OSError as error:
            raise self._refuse(f"cannot be read ({error.strerror or error})") from None
        if size == 0:
            raise self._refuse("is empty (0 bytes), not a records database: restore it from a backup, or move "
                               "it away to start a new one")
        try:
            with self._connection(configure=False) as connection:  # a foreign file is left exactly as it is
                problems = ([row[0] for row in connection.execute("PRAGMA quick_check").fetchall()] if integrity
                            else ["ok"])
                version = int(connection.execute("PRAGMA user_version").fetchone()[0])
                tables = {row[0] for row in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
            if problems == ["ok"] and 0 < version < len(MIGRATIONS) and _TABLES[version] <= tables:
                with self._connection() as connection:
                    _migrate(connection)
        except RecordsError as error:
            raise RecordsError(f"{str(error).rstrip('.')}; analysis works, saving is refused until then.") from None
        if problems != ["ok"]:
            raise self._refuse(f"is damaged ({problems[0]}): restore it from a backup, or move it away to start "
                               f"a new one")
        if version > len(MIGRATIONS):
            raise self._refuse(f"is from a newer moleseg (schema {version}, this one knows {len(MIGRATIONS)}): "
                               f"update moleseg to open it")
        if version == 0 or not _TABLES[min(version, len(MIGRATIONS))] <= tables:
            found = ", ".join(sorted(tables)) or "no tables"
            raise self._refuse(f"is not a moleseg records database (it holds {found}): move it away to start a "
                               f"new one")

    def _create(self, integrity: bool) -> None:
        """Build a new database beside its place and link it there; when another process linked one first,
        keep theirs."""
        building = self.folder / f".{RECORDS_DB_NAME}.{uuid.uuid4().hex}.new"
        try:
            try:
                connection = sqlite3.connect(building, isolation_level=None)
                try:
                    _migrate(connection)
                    connection.execute("PRAGMA journal_mode = WAL")
                finally:
                    connection.close()
            except sqlite3.Error as error:
                raise RecordsError(describe_sqlite_error(self.path, error)) from error
            try:
                os.link(building, self.path)
            except FileExistsError:
                self._create_or_check(integrity)
            except OSError as error:
                raise self._refuse(f"cannot be created ({error.strerror or error})") from None
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{building}{suffix}").unlink(missing_ok=True)

    @property
    def schema_version(self) -> int:
        with self._connection() as connection:
            return int(connection.execute("PRAGMA user_version").fetchone()[0])

    # -- ownership and audit ------------------------------------------------------------------------

    @staticmethod
    def _reach(user: User) -> tuple[str, list[Any]]:
        """The SQL condition (and its arguments) of the records ``user`` may reach."""
        return ("1", []) if user.admin else ("owner = ?", [user.name])

    def _owned(self, connection: sqlite3.Connection, user: User, record_id: int) -> Record:
        condition, arguments = self._reach(user)
        row = connection.execute(f"SELECT {', '.join(_COLUMNS)} FROM analyses WHERE id = ? AND {condition}",
                                 [int(record_id), *arguments]).fetchone()
        if row is None:  # someone else's record reads as a missing one
            raise NoSuchRecord(record_id)
        return _record(row)

    @staticmethod
    def _audit(connection: sqlite3.Connection, user: User, action: str, record: Record) -> None:
        if action not in AUDIT_ACTIONS:
            raise ValueError(f"unknown audit action {action!r}; known: {', '.join(AUDIT_ACTIONS)}")
        connection.execute("INSERT INTO audit (at, user, action, record_id, record_uid) VALUES (?, ?, ?, ?, ?)",
                           (datetime.now().astimezone().isoformat(timespec="seconds"), user.name, action,
                            record.id, record.uid))

    def log(self, user: User, record_id: int, action: str) -> None:
        """Add ``action`` (one of :data:`AUDIT_ACTIONS`) by ``user`` to a record's audit trail, e.g. a PDF
        report built from an opened record. Raises KeyError when ``user`` may not reach the record."""
        with self._transaction() as connection:
            self._audit(connection, user, action, self._owned(connection, user, record_id))

    def audit_trail(self, user: User, record_id: int) -> list[AuditEntry]:
        """Who saved, opened, exported the record, and when, oldest first (its owner and admins only)."""
        with self._connection() as connection:
            record = self._owned(connection, user, record_id)
            rows = connection.execute("SELECT at, user, action FROM audit WHERE record_uid = ? ORDER BY id",
                                      (record.uid,)).fetchall()
        return [AuditEntry(*row) for row in rows]

    # -- save, list, open, delete -------------------------------------------------------------------

    def save(self, user: User, image: np.ndarray, mask: np.ndarray, measurements: list[Measurement], *,
             lesion: str = "", visit_date: date | str | None = None, body_site: str = "", notes: str = "",
             image_name: str = "", model_name: str = "", model_version: str = "",
             cleanup: dict[str, Any] | None = None, lesion_threshold: float | None = None,
             pixel_size_mm: float | None = None, corrected: bool = False) -> int:
        """Save one analysis owned by ``user``; returns its id.

        Parameters
        ----------
        user : User
            The owner (its save goes to the audit trail).
        image : (H, W, 3) uint8
        mask : (H, W) bool
            The lesion as shown (after any correction by hand).
        measurements : list of Measurement
        lesion : str
            Free-text identifier of the patient/lesion; optional ('' = none).
        visit_date : date or 'YYYY-MM-DD', optional
            Default today.
        body_site, notes, image_name, model_name, model_version : str
        cleanup : dict, optional
            The cleanup settings (e.g. ``dataclasses.asdict(CleanupSettings)``).
        lesion_threshold : float or None
        pixel_size_mm : float or None
        corrected : bool
            Whether the border was corrected by hand.

        Raises
        ------
        ValueError
            Image and mask of different sizes, a bad date, text too long.
        RecordsError
            The database or the disk refused the save (the message says why); nothing of it is kept.
        """
        picture = np.asarray(image)
        lesion_mask = np.asarray(mask).astype(bool)
        if picture.ndim != 3 or picture.shape[2] != 3 or picture.dtype != np.uint8:
            raise ValueError(f"the image must be (H, W, 3) uint8, not {picture.dtype} {picture.shape}")
        if lesion_mask.shape != picture.shape[:2]:
            raise ValueError(f"mask {lesion_mask.shape} and image {picture.shape[:2]} differ in size")
        uid = uuid.uuid4().hex
        values = {
            "uid": uid, "saved_at": datetime.now().astimezone().isoformat(timespec="seconds"), "owner": user.name,
            "lesion": _clean_text(lesion, "the lesion identifier", 200), "visit_date": _visit_date(visit_date),
            "body_site": _clean_text(body_site, "the body site", 200), "notes": _clean_text(notes, "the notes"),
            "image_name": _clean_text(image_name, "the image name", 500),
            "measurements": _encode_measurements(list(measurements)),
            "model_name": _clean_text(model_name, "the model name", 500),
            "model_version": _clean_text(model_version, "the model version", 500),
            "cleanup": json.dumps(cleanup or {}, default=str),
            "lesion_threshold": None if lesion_threshold is None else float(lesion_threshold),
            "pixel_size_mm": None if pixel_size_mm is None else float(pixel_size_mm),
            "corrected": int(bool(corrected)),
        }
        files = self.folder / FILES_FOLDER / uid
        try:
            try:
                files.mkdir()
                atomic_write(files / IMAGE_FILE, encode_png(picture))
                atomic_write(files / MASK_FILE, encode_png(lesion_mask))
            except OSError as error:
                raise RecordsError(f"The records files in {self.folder / FILES_FOLDER} cannot be written: "
                                   f"{error.strerror or error}.") from error
            with self._transaction() as connection:
                row_id = insert_analysis_row(connection, values)
                self._audit(connection, user, "saved", _record(connection.execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM analyses WHERE id = ?", (row_id,)).fetchone()))
        except BaseException:
            shutil.rmtree(files, ignore_errors=True)
            try:
                self.remove_orphans()
            except (OSError, RecordsError):
                pass  # the failed save's own error is the one to report
            raise
        return row_id

    def records(self, user: User, lesion: str | None = None) -> list[Record]:
        """The analyses ``user`` may reach, newest visit first; only those of ``lesion`` when given
        ('' = no identifier)."""
        condition, arguments = self._reach(user)
        query = f"SELECT {', '.join(_COLUMNS)} FROM analyses WHERE {condition}"
        if lesion is not None:
            query += " AND lesion = ?"
            arguments.append(lesion)
        with self._connection() as connection:
            rows = connection.execute(query + " ORDER BY visit_date DESC, id DESC", arguments).fetchall()
        return [_record(row) for row in rows]

    def lesions(self, user: User) -> list[LesionSummary]:
        """Every lesion identifier of the analyses ``user`` may reach ('' gathers those saved without one),
        most recent visit first."""
        condition, arguments = self._reach(user)
        with self._connection() as connection:
            rows = connection.execute(
                f"SELECT lesion, COUNT(*), MIN(visit_date), MAX(visit_date) FROM analyses WHERE {condition} "
                "GROUP BY lesion ORDER BY MAX(visit_date) DESC, lesion", arguments).fetchall()
        return [LesionSummary(row[0], int(row[1]), row[2], row[3]) for row in rows]

    def record(self, user: User, record_id: int) -> Record:
        """One record's metadata. Raises KeyError when there is no such record or ``user`` may not reach it."""
        with self._connection() as connection:
            return self._owned(connection, user, record_id)

    def open(self, user: User, record_id: int, *, audit: bool = True) -> SavedAnalysis:
        """A saved analysis with its image and mask, exactly as saved; ``audit`` adds 'opened' to its trail
        (a page shown again for the same visit passes False).

        Raises
        ------
        KeyError
            No such record, or ``user`` may not reach it.
        ValueError
            Its files are missing or unreadable (the message names the file).
        """
        if audit:
            with self._transaction() as connection:
                record = self._owned(connection, user, record_id)
                self._audit(connection, user, "opened", record)
        else:
            record = self.record(user, record_id)
        files = self.folder / FILES_FOLDER / record.uid
        image = read_image(files / IMAGE_FILE)
        mask = read_mask(files / MASK_FILE, allow_empty=True)
        return SavedAnalysis(record=record, image=image, mask=mask)

    def delete(self, user: User, record_id: int) -> None:
        """Delete a record and its files. Raises KeyError when there is no such record or ``user`` may not
        reach it."""
        with self._transaction() as connection:
            record = self._owned(connection, user, record_id)
            connection.execute("DELETE FROM analyses WHERE id = ?", (record.id,))
            self._audit(connection, user, "deleted", record)
        shutil.rmtree(self.folder / FILES_FOLDER / record.uid, ignore_errors=True)

    def remove_orphans(self, min_age_s: float = ORPHAN_MIN_AGE_S) -> int:
        """Delete the ``files/<uid>`` folders no record refers to (left by a process killed mid-save) and
        older than ``min_age_s`` seconds (younger ones may belong to a save in progress); returns how many."""
        with self._connection() as connection:
            known = {row[0] for row in connection.execute("SELECT uid FROM analyses")}
        removed = 0
        now = time.time()
        for folder in (self.folder / FILES_FOLDER).iterdir():
            if (_UID.fullmatch(folder.name) and folder.name not in known and folder.is_dir()
                    and now - folder.stat().st_mtime >= min_age_s):
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed

    def export(self, user: User, record_id: int) -> bytes:
        """A ZIP of one saved analysis: image, mask, measurements CSV with its settings sidecar
        (:func:`moleseg.core.report.settings_sidecar`) and a JSON of the record; 'exported' goes to its trail."""
        saved = self.open(user, record_id, audit=False)
        self.log(user, record_id, "exported")
        record = saved.record
        stem = f"record_{record.id}"
        details = {key: value for key, value in asdict(record).items() if key != "measurements"}
        row = {"image": record.image_name or stem, "lesion": record.lesion, "visit_date": record.visit_date,
               **measurements_row(record.measurements)}
        csv_name = f"{stem}_measurements.csv"
        return zip_bundle({
            f"{stem}_image.png": encode_png(saved.image),
            f"{stem}_mask.png": encode_png(saved.mask),
            csv_name: measurements_csv([row]),
            sidecar_name(csv_name): settings_sidecar(csv_name, [(row["image"], record.settings(), record.visit())]),
            f"{stem}.json": json.dumps(details, indent=2, default=str).encode(),
        })
