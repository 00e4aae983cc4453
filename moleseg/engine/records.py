"""Saved analyses: a database of lesions and visits, each owned by the user who saved it, with an
append-only audit trail (:mod:`moleseg.engine.audit`), and their image and mask files.

The database is the SQLite file ``records.sqlite`` of the data folder (:func:`moleseg.core.config.data_dir`,
``MOLESEG_DATA_DIR`` overrides it) by default, or the PostgreSQL database of the setting ``database_url``
(:mod:`moleseg.engine.recordspg`), which several app replicas share. The queries are SQLAlchemy Core text,
the same for both. Layout of the data folder::

    records.sqlite            the SQLite database (WAL journal: records.sqlite-wal, records.sqlite-shm)
    files/<uid>/image.png     the analysed image (lossless)
    files/<uid>/mask.png      the lesion mask (0/255)

The files folder is the setting ``records_files_dir`` when set (a volume every replica mounts).

Nothing identifies a person unless the user types it: the lesion identifier is free text and optional.

The records as typed values (who acts, a record, its row and the checks of what is typed for a visit) are
:mod:`moleseg.engine.recordtypes`.

Ownership
---------
Every method that reads or changes a record takes the acting :class:`~moleseg.engine.recordtypes.User`. A
user lists, opens, compares, exports and deletes only the records they own; an admin user reaches all. A record
of someone else is refused with the very message of a missing one, so guessing ids reveals nothing. Records
saved before records had owners have the owner :data:`~moleseg.engine.recordtypes.NO_OWNER`: only admins (and
personal mode, whose one user is an admin) reach them. Personal mode saves under the name of the server's
account (:func:`~moleseg.engine.recordtypes.personal_owner`); :meth:`Records.hand_over` gives one owner's
records (and, when asked, the ownerless ones) to a user of shared mode. The ``audit`` table records who saved,
opened, exported, deleted and handed over which record, and when; triggers (SQLite's, or a PostgreSQL trigger
function) refuse any change or deletion of its rows.

Safety
------
* The database is opened, checked, created and migrated by :mod:`moleseg.engine.recordsdb` (SQLite) or
  :mod:`moleseg.engine.recordspg` (PostgreSQL): it is checked whenever a :class:`Records` is made and, the
  first time in a process, page by page (SQLite) or row by row with its audit triggers (PostgreSQL); a
  damaged, empty, foreign or newer database, or a folder in its place, is refused with :class:`RecordsError`
  naming the database (a URL's password masked), the cause and what to do, and every driver error becomes
  one. Each save is one transaction.
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
import os
import re
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
import sqlalchemy

from moleseg.core.atomic import atomic_write
from moleseg.core.config import RECORDS_DB_NAME, data_dir, result_file_name
from moleseg.core.imageio import read_image, read_mask
from moleseg.core.imagewrite import encode_png
from moleseg.core.measure import Measurement, measurements_row
from moleseg.core.report import measurements_csv, settings_sidecar, sidecar_name, zip_bundle
from moleseg.core.settings import load_settings
from moleseg.core.userspace import SPACE_MODE
from moleseg.engine.audit import ADOPTED, AUDIT_ACTIONS, AuditEntry, append_audit, audit_entries
from moleseg.engine.recordsdb import (BUSY_TIMEOUT_S, MIGRATIONS, RecordsDatabase, RecordsError,
                                      describe_sqlite_error)
from moleseg.engine.recordspg import PG_MIGRATIONS, PostgresDatabase, describe_postgres_error
from moleseg.engine.recordtypes import (MAX_RECORD_ID, NOTES_MAX_CHARS, RECORD_COLUMNS, VISIT_FIELD_MAX_CHARS,
                                        LesionSummary, NoSuchRecord, Record, SavedAnalysis, User, clean_text,
                                        encode_measurements, record_from_row, visit_date_text)

__all__ = [
    "AUDIT_ACTIONS",
    "BUSY_TIMEOUT_S",
    "MIGRATIONS",
    "ORPHAN_MIN_AGE_S",
    "PG_MIGRATIONS",
    "AuditEntry",
    "ExportedVisit",
    "Records",
    "RecordsError",
    "describe_postgres_error",
    "describe_sqlite_error",
    "insert_analysis_row",
]

#: A ``files/<uid>`` folder that no record refers to is removed once it is this old, in seconds: a save in
#: progress holds its folder for its file writes plus at most :data:`BUSY_TIMEOUT_S` waiting for the lock.
ORPHAN_MIN_AGE_S: float = 10 * BUSY_TIMEOUT_S
#: Folder (inside the data folder) of the saved files.
FILES_FOLDER: str = "files"
IMAGE_FILE: str = "image.png"
MASK_FILE: str = "mask.png"
#: A ``files/`` entry named like a record's uid (the only names :meth:`Records.remove_orphans` removes).
_UID = re.compile(r"[0-9a-f]{32}")

#: Databases (SQLite paths, PostgreSQL URLs) that passed the start-up check in this process.
_CHECKED: set[str] = set()
_CHECKED_LOCK = threading.Lock()


def insert_analysis_row(connection: sqlalchemy.Connection, values: dict[str, Any]) -> int:
    """Insert one row of ``analyses`` (inside the caller's transaction); returns its id."""
    names = [name for name in RECORD_COLUMNS if name != "id"]
    statement = (f"INSERT INTO analyses ({', '.join(names)}) VALUES ({', '.join(':' + name for name in names)}) "
                 "RETURNING id")
    return int(connection.execute(sqlalchemy.text(statement), {name: values[name] for name in names}).scalar_one())


def _query(connection: sqlalchemy.Connection, statement: str, arguments: dict[str, Any] | None = None
           ) -> list[sqlalchemy.Row]:
    """The rows of ``statement`` (SQL text with ``:name`` arguments)."""
    return list(connection.execute(sqlalchemy.text(statement), arguments or {}).all())



class Records:
    """The records database of one data folder, or of the PostgreSQL database of ``database_url``.

    Parameters
    ----------
    folder : path, optional
        The data folder: the SQLite database's, and the files' unless ``files_dir``; default
        :func:`moleseg.core.config.data_dir`. Created when missing.
    database_url : str, optional
        A PostgreSQL URL (``postgresql://USER:PASSWORD@HOST:PORT/DATABASE``) instead of the SQLite file. With
        neither ``folder`` nor ``database_url``, the settings' ``database_url`` (SQLite when empty).
    files_dir : path, optional
        The folder of the image and mask files; default the settings' ``records_files_dir`` when no
        ``folder`` is given, else ``files`` in the data folder.

    Raises
    ------
    RecordsError
        The folder cannot be created, or the database is unreachable, damaged, empty, foreign, newer than this
        moleseg, a folder, or unreadable (the message names it, a URL's password masked, and says what to do).

    Attributes
    ----------
    folder : Path
        The data folder.
    files : Path
        The folder of the image and mask files (``files/<uid>/``).
    path : Path
        The SQLite database file (where it is, or would be: unused with ``database_url``).
    database : RecordsDatabase or PostgresDatabase
        The database, with its checks and its connections.

    Every method opens its own connection (PostgreSQL: from the process's pool), so one ``Records`` may be
    shared by threads.
    """

    def __init__(self, folder: str | Path | None = None, *, database_url: str | None = None,
                 files_dir: str | Path | None = None) -> None:
        if folder is None and database_url is None:
            settings = load_settings()
            database_url = settings.database_url or None
            files_dir = files_dir if files_dir is not None else settings.records_files_dir
        self.folder = Path(folder) if folder is not None else data_dir()
        self.files = Path(files_dir) if files_dir is not None else self.folder / FILES_FOLDER
        self.path = self.database_file(self.folder)
        self.database: RecordsDatabase | PostgresDatabase = (
            PostgresDatabase(database_url) if database_url else RecordsDatabase(self.path))
        for needed in ([] if database_url else [self.folder]) + [self.files]:
            try:  # made for the server's account only, as the users' spaces (an existing folder is left as it is)
                needed.mkdir(mode=SPACE_MODE, parents=True, exist_ok=True)
            except OSError as error:
                raise RecordsError(f"The records folder {needed} cannot be created: "
                                   f"{error.strerror or error}.") from error
        key = database_url or str(self.path.absolute())
        with _CHECKED_LOCK:
            checked = key in _CHECKED
        self.database.create_or_check(integrity=not checked)
        if not checked:
            self.remove_orphans()
            self._close_to_others()
            with _CHECKED_LOCK:
                _CHECKED.add(key)

    @staticmethod
    def database_file(folder: str | Path | None = None) -> Path:
        """The SQLite database file of the data folder ``folder`` (default :func:`moleseg.core.config.data_dir`),
        whether it exists or not."""
        return (Path(folder) if folder is not None else data_dir()) / RECORDS_DB_NAME

    @property
    def location(self) -> str:
        """Where the records are, for messages: the SQLite file, or the PostgreSQL URL with its password
        masked."""
        return self.database.name

    @property
    def schema_version(self) -> int:
        """The schema version of the database."""
        return self.database.schema_version

    # -- ownership and audit ------------------------------------------------------------------------

    @staticmethod
    def _reach(user: User) -> tuple[str, dict[str, Any]]:
        """The SQL condition (and its arguments) of the records ``user`` may reach."""
        return ("1 = 1", {}) if user.admin else ("owner = :owner", {"owner": user.name})

    def _owned(self, connection: sqlalchemy.Connection, user: User, record_id: int) -> Record:
        if not 0 < int(record_id) <= MAX_RECORD_ID:  # no row has it; the drivers refuse to bind some
            raise NoSuchRecord(record_id)
        condition, arguments = self._reach(user)
        rows = _query(connection, f"SELECT {', '.join(RECORD_COLUMNS)} FROM analyses WHERE id = :id AND {condition}",
                      {"id": int(record_id), **arguments})
        if not rows:  # someone else's record reads as a missing one
            raise NoSuchRecord(record_id)
        return record_from_row(rows[0])

    @staticmethod
    def _audit(connection: sqlalchemy.Connection, user: User, action: str, record: Record) -> None:
        append_audit(connection, user.name, action, record.id, record.uid)

    def log(self, user: User, record_id: int, action: str) -> None:
        """Add ``action`` (one of :data:`AUDIT_ACTIONS`) by ``user`` to a record's audit trail, e.g. a PDF
        report built from an opened record. Raises KeyError when ``user`` may not reach the record."""
        with self.database.transaction() as connection:
            self._audit(connection, user, action, self._owned(connection, user, record_id))

    def audit_trail(self, user: User, record_id: int) -> list[AuditEntry]:
        """Who saved, opened, exported the record, and when, oldest first (its owner and admins only)."""
        with self.database.connection() as connection:
            record = self._owned(connection, user, record_id)
            return audit_entries(connection, record.uid)

    def owned_count(self, owner: str) -> int:
        """How many records ``owner`` owns (:data:`~moleseg.engine.recordtypes.NO_OWNER`: those saved before
        records had owners)."""
        with self.database.connection() as connection:
            return int(connection.execute(sqlalchemy.text("SELECT COUNT(*) FROM analyses WHERE owner = :owner"),
                                          {"owner": owner}).scalar_one())

    def owned_folders(self, owner: str) -> list[Path]:
        """The folders of the image and mask files of every record ``owner`` owns (what their saves take on
        disk, for the per-user quota)."""
        with self.database.connection() as connection:
            uids = connection.execute(sqlalchemy.text("SELECT uid FROM analyses WHERE owner = :owner"),
                                      {"owner": owner}).scalars()
            return [self.files / str(uid) for uid in uids]

    def hand_over(self, operator: str, from_owners: Sequence[str], to_owner: str) -> dict[str, int]:
        """Give every record of each of ``from_owners`` (:data:`~moleseg.engine.recordtypes.NO_OWNER` among
        them: the ownerless ones) to ``to_owner``, in one transaction, with one
        :data:`~moleseg.engine.audit.ADOPTED` entry per record by ``operator`` (the account that runs the
        command) naming its owner before and after.

        Returns
        -------
        dict
            How many records each of ``from_owners`` gave, in their order.

        Raises
        ------
        ValueError
            ``to_owner`` or ``operator`` is blank, or ``to_owner`` is one of ``from_owners`` (nothing changed).
        RecordsError
            The database refused (nothing changed).
        """
        if not to_owner.strip() or not operator.strip():
            raise ValueError("records are handed over by a named operator to a named user")
        if to_owner in from_owners:
            raise ValueError(f"the records of {to_owner!r} cannot be handed to {to_owner!r}")
        given: dict[str, int] = {}
        with self.database.transaction() as connection:
            for owner in dict.fromkeys(from_owners):
                rows = _query(connection, "UPDATE analyses SET owner = :to_owner WHERE owner = :from_owner "
                                          "RETURNING id, uid", {"to_owner": to_owner, "from_owner": owner})
                for record_id, uid in sorted(rows):
                    append_audit(connection, operator, ADOPTED, record_id, uid, (owner, to_owner))
                given[owner] = len(rows)
        return given

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
            "lesion": clean_text(lesion, "the lesion identifier", VISIT_FIELD_MAX_CHARS),
            "visit_date": visit_date_text(visit_date),
            "body_site": clean_text(body_site, "the body site", VISIT_FIELD_MAX_CHARS),
            "notes": clean_text(notes, "the notes", NOTES_MAX_CHARS),
            "image_name": clean_text(image_name, "the image name", 500),
            "measurements": encode_measurements(list(measurements)),
            "model_name": clean_text(model_name, "the model name", 500),
            "model_version": clean_text(model_version, "the model version", 500),
            "cleanup": json.dumps(cleanup or {}, default=str),
            "lesion_threshold": None if lesion_threshold is None else float(lesion_threshold),
            "pixel_size_mm": None if pixel_size_mm is None else float(pixel_size_mm),
            "corrected": int(bool(corrected)),
        }
        files = self.files / uid
        try:
            try:
                files.mkdir(mode=SPACE_MODE)  # the server's account only, whatever the files folder's own mode
                atomic_write(files / IMAGE_FILE, encode_png(picture))
                atomic_write(files / MASK_FILE, encode_png(lesion_mask))
            except OSError as error:
                raise RecordsError(f"The records files in {self.files} cannot be written: "
                                   f"{error.strerror or error}.") from error
            with self.database.transaction() as connection:
                row_id = insert_analysis_row(connection, values)
                self._audit(connection, user, "saved", record_from_row(_query(
                    connection, f"SELECT {', '.join(RECORD_COLUMNS)} FROM analyses WHERE id = :id", {"id": row_id})[0]))
        except BaseException:
            shutil.rmtree(files, ignore_errors=True)
            with suppress(OSError, RecordsError):  # the failed save's own error is the one to report
                self.remove_orphans()
            raise
        return row_id

    def records(self, user: User, lesion: str | None = None) -> list[Record]:
        """The analyses ``user`` may reach, newest visit first; only those of ``lesion`` when given
        ('' = no identifier)."""
        condition, arguments = self._reach(user)
        query = f"SELECT {', '.join(RECORD_COLUMNS)} FROM analyses WHERE {condition}"
        if lesion is not None:
            query += " AND lesion = :lesion"
            arguments["lesion"] = lesion
        with self.database.connection() as connection:
            rows = _query(connection, query + " ORDER BY visit_date DESC, id DESC", arguments)
        return [record_from_row(row) for row in rows]

    def lesions(self, user: User) -> list[LesionSummary]:
        """Every lesion identifier of the analyses ``user`` may reach ('' gathers those saved without one),
        most recent visit first."""
        condition, arguments = self._reach(user)
        with self.database.connection() as connection:
            rows = _query(connection, f"SELECT lesion, COUNT(*), MIN(visit_date), MAX(visit_date) FROM analyses "
                                      f"WHERE {condition} GROUP BY lesion ORDER BY MAX(visit_date) DESC, lesion",
                          arguments)
        return [LesionSummary(row[0], int(row[1]), row[2], row[3]) for row in rows]

    def record(self, user: User, record_id: int) -> Record:
        """One record's metadata. Raises KeyError when there is no such record or ``user`` may not reach it."""
        with self.database.connection() as connection:
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
            with self.database.transaction() as connection:
                record = self._owned(connection, user, record_id)
                self._audit(connection, user, "opened", record)
        else:
            record = self.record(user, record_id)
        files = self.files / record.uid
        image = read_image(files / IMAGE_FILE)
        mask = read_mask(files / MASK_FILE, allow_empty=True)
        return SavedAnalysis(record=record, image=image, mask=mask)

    def delete(self, user: User, record_id: int) -> None:
        """Delete a record and its files. Raises KeyError when there is no such record or ``user`` may not
        reach it."""
        with self.database.transaction() as connection:
            record = self._owned(connection, user, record_id)
            connection.execute(sqlalchemy.text("DELETE FROM analyses WHERE id = :id"), {"id": record.id})
            self._audit(connection, user, "deleted", record)
        shutil.rmtree(self.files / record.uid, ignore_errors=True)
        self.database.erase_deleted()

    def remove_orphans(self, min_age_s: float = ORPHAN_MIN_AGE_S) -> int:
        """Delete the ``files/<uid>`` folders no record refers to (left by a process killed mid-save) and
        older than ``min_age_s`` seconds (younger ones may belong to a save in progress); returns how many."""
        with self.database.connection() as connection:
            known = {row[0] for row in _query(connection, "SELECT uid FROM analyses")}
        removed = 0
        now = time.time()
        for folder in self.files.iterdir():
            if (_UID.fullmatch(folder.name) and folder.name not in known and folder.is_dir()
                    and now - folder.stat().st_mtime >= min_age_s):
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed

    def _close_to_others(self) -> None:
        """Make the records' files an older moleseg left readable to every account of the machine (the SQLite
        database and its journal 0644, each visit's ``files/<uid>`` folder 0755 under the usual umask) the server
        account's only, as new ones are: once per process, with the first check. Links are left alone; a file
        that cannot be changed is left as it is."""
        paths = [] if isinstance(self.database, PostgresDatabase) else [
            Path(f"{self.path}{suffix}") for suffix in ("", "-wal", "-shm")]
        paths += [path for path in self.files.iterdir() if _UID.fullmatch(path.name)]
        for path in paths:
            with suppress(OSError):
                mode = path.lstat().st_mode
                if not stat.S_ISLNK(mode) and mode & 0o077:
                    os.chmod(path, stat.S_IMODE(mode) & 0o700)

    def export(self, user: User, record_id: int,
               leaving: Callable[[SavedAnalysis], ExportedVisit] | None = None) -> bytes:
        """A ZIP of one saved analysis (:meth:`ExportedVisit.zip`): as saved, or as ``leaving`` makes it of the
        saved analysis (e.g. without names, :func:`moleseg.app.deidentify.neutral_export`; the record keeps its
        own); 'exported' goes to its trail."""
        saved = self.open(user, record_id, audit=False)
        self.log(user, record_id, "exported")
        return (ExportedVisit.as_saved if leaving is None else leaving)(saved).zip()


@dataclass(frozen=True)
class ExportedVisit:
    """What leaves in a saved visit's export: the analysis with the record its files print (:attr:`saved`), the
    stem of its files and the record's fields its JSON holds (:attr:`details`)."""

    saved: SavedAnalysis
    stem: str
    details: dict[str, Any]

    @classmethod
    def as_saved(cls, saved: SavedAnalysis) -> ExportedVisit:
        """The export of ``saved`` as it was saved: its files named ``record_<id>``, every field but the
        measurements (which are the CSV) in its JSON."""
        record = saved.record
        return cls(saved, record.stem, {key: value for key, value in asdict(record).items() if key != "measurements"})

    def zip(self) -> bytes:
        """The ZIP: image, mask, measurements CSV with its settings sidecar
        (:func:`moleseg.core.report.settings_sidecar`) and a JSON of :attr:`details`."""
        record, stem = self.saved.record, self.stem
        row = {"image": record.image_name or stem, "lesion": record.lesion, "visit_date": record.visit_date,
               **measurements_row(record.measurements)}
        csv_name = f"{stem}_measurements.csv"
        return zip_bundle({
            f"{stem}_image.png": encode_png(self.saved.image),
            result_file_name(stem, "mask"): encode_png(self.saved.mask),
            csv_name: measurements_csv([row]),
            sidecar_name(csv_name): settings_sidecar(csv_name, [(row["image"], record.settings(), record.visit())]),
            f"{stem}.json": json.dumps(self.details, indent=2, default=str).encode(),
        })
