"""Saved analyses: an SQLite database of lesions and visits, with the image and mask files beside it.

Layout of the data folder (:func:`moleseg.core.config.data_dir`, ``MOLESEG_DATA_DIR`` overrides it)::

    records.sqlite            the database (WAL journal: records.sqlite-wal, records.sqlite-shm)
    files/<uid>/image.png     the analysed image (lossless)
    files/<uid>/mask.png      the lesion mask (0/255)

Nothing identifies a person unless the user types it: the lesion identifier is free text and optional.

Safety
------
* The schema version is SQLite's ``PRAGMA user_version``; :data:`MIGRATIONS` lists the SQL that takes
  the database from each version to the next, applied in one ``BEGIN IMMEDIATE`` transaction by
  whichever connection finds the database behind (others wait for it).
* WAL journal and a busy timeout of :data:`BUSY_TIMEOUT_S`: several app sessions, threads or processes
  can save at once; each save is one transaction.
* A save writes the two files first (:func:`moleseg.core.atomic.atomic_write`), then inserts the row and
  commits. If anything fails before the commit, the row is rolled back and the files are removed, so
  an interrupted save leaves no half record. A crash of the process between the file writes and the
  commit can at worst leave a ``files/<uid>`` folder that no row refers to; it is never listed, and
  :meth:`Records.remove_orphans` deletes such folders once they are an hour old.
* Deleting a record deletes its row (committed first) and then its files.
"""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import time
import uuid
from contextlib import closing
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
    "BUSY_TIMEOUT_S",
    "MIGRATIONS",
    "LesionSummary",
    "Record",
    "Records",
    "SavedAnalysis",
    "insert_analysis_row",
]

#: Seconds a writer waits for another's transaction before giving up.
BUSY_TIMEOUT_S: float = 30.0
#: Folder (inside the data folder) of the saved files.
FILES_FOLDER: str = "files"
IMAGE_FILE: str = "image.png"
MASK_FILE: str = "mask.png"

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
)

_COLUMNS = ("id", "uid", "saved_at", "lesion", "visit_date", "body_site", "notes", "image_name", "measurements",
            "model_name", "model_version", "cleanup", "lesion_threshold", "pixel_size_mm", "corrected")


@dataclass(frozen=True)
class Record:
    """One saved analysis without its pictures (what the History lists).

    ``lesion`` is the free-text identifier ('' when none was given); ``visit_date`` is ISO
    ``YYYY-MM-DD``; ``saved_at`` an ISO timestamp; ``cleanup`` the cleanup settings as a dict;
    ``lesion_threshold`` 0..1 or None (arg-max); ``pixel_size_mm`` mm per pixel or None;
    ``corrected`` whether the border was corrected by hand.
    """

    id: int
    uid: str
    saved_at: str
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


class Records:
    """The records database of one data folder.

    Parameters
    ----------
    folder : path, optional
        The data folder; default :func:`moleseg.core.config.data_dir`. Created when missing.

    Every method opens its own connection, so one ``Records`` may be shared by threads.
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else data_dir()
        self.path = self.folder / RECORDS_DB_NAME
        try:
            (self.folder / FILES_FOLDER).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"{self.folder}: cannot create the records folder ({error.strerror})") from error
        with self._connect() as connection:
            self._migrate(connection)

    # -- connection and schema ----------------------------------------------------------------------

    def _connect(self) -> closing[sqlite3.Connection]:
        """A new connection (autocommit; transactions are explicit), closed when its ``with`` ends."""
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        connection.row_factory = sqlite3.Row
        connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        return closing(connection)

    @staticmethod
    def _migrate(connection: sqlite3.Connection) -> None:
        found = connection.execute("PRAGMA user_version").fetchone()[0]
        if found > len(MIGRATIONS):
            raise ValueError(f"the records database is from a newer moleseg (schema {found}, this one knows "
                             f"{len(MIGRATIONS)}): update moleseg to open it")
        if found == len(MIGRATIONS):
            return
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            for step in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    @property
    def schema_version(self) -> int:
        with self._connect() as connection:
            return int(connection.execute("PRAGMA user_version").fetchone()[0])

    # -- save, list, open, delete -------------------------------------------------------------------

    def save(self, image: np.ndarray, mask: np.ndarray, measurements: list[Measurement], *,
             lesion: str = "", visit_date: date | str | None = None, body_site: str = "", notes: str = "",
             image_name: str = "", model_name: str = "", model_version: str = "",
             cleanup: dict[str, Any] | None = None, lesion_threshold: float | None = None,
             pixel_size_mm: float | None = None, corrected: bool = False) -> int:
        """Save one analysis; returns its id.

        Parameters
        ----------
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
        """
        picture = np.asarray(image)
        lesion_mask = np.asarray(mask).astype(bool)
        if picture.ndim != 3 or picture.shape[2] != 3 or picture.dtype != np.uint8:
            raise ValueError(f"the image must be (H, W, 3) uint8, not {picture.dtype} {picture.shape}")
        if lesion_mask.shape != picture.shape[:2]:
            raise ValueError(f"mask {lesion_mask.shape} and image {picture.shape[:2]} differ in size")
        uid = uuid.uuid4().hex
        values = {
            "uid": uid, "saved_at": datetime.now().astimezone().isoformat(timespec="seconds"),
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
            files.mkdir()
            atomic_write(files / IMAGE_FILE, encode_png(picture))
            atomic_write(files / MASK_FILE, encode_png(lesion_mask))
            with self._connect() as connection:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    row_id = insert_analysis_row(connection, values)
                    connection.execute("COMMIT")
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
        except BaseException:
            shutil.rmtree(files, ignore_errors=True)
            raise
        return row_id

    def records(self, lesion: str | None = None) -> list[Record]:
        """Saved analyses, newest visit first; only those of ``lesion`` when given ('' = no identifier)."""
        query = f"SELECT {', '.join(_COLUMNS)} FROM analyses"
        arguments: list[Any] = []
        if lesion is not None:
            query += " WHERE lesion = ?"
            arguments.append(lesion)
        with self._connect() as connection:
            rows = connection.execute(query + " ORDER BY visit_date DESC, id DESC", arguments).fetchall()
        return [_record(row) for row in rows]

    def lesions(self) -> list[LesionSummary]:
        """Every lesion identifier ('' gathers the analyses saved without one), most recent visit first."""
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT lesion, COUNT(*), MIN(visit_date), MAX(visit_date) FROM analyses GROUP BY lesion "
                "ORDER BY MAX(visit_date) DESC, lesion").fetchall()
        return [LesionSummary(row[0], int(row[1]), row[2], row[3]) for row in rows]

    def record(self, record_id: int) -> Record:
        """One record's metadata. Raises KeyError when there is no such record."""
        with self._connect() as connection:
            row = connection.execute(f"SELECT {', '.join(_COLUMNS)} FROM analyses WHERE id = ?",
                                     (int(record_id),)).fetchone()
        if row is None:
            raise KeyError(f"no saved analysis with id {record_id}")
        return _record(row)

    def open(self, record_id: int) -> SavedAnalysis:
        """A saved analysis with its image and mask, exactly as saved.

        Raises
        ------
        KeyError
            No such record.
        ValueError
            Its files are missing or unreadable (the message names the file).
        """
        record = self.record(record_id)
        files = self.folder / FILES_FOLDER / record.uid
        image = read_image(files / IMAGE_FILE)
        mask = read_mask(files / MASK_FILE, allow_empty=True)
        return SavedAnalysis(record=record, image=image, mask=mask)

    def delete(self, record_id: int) -> None:
        """Delete a record and its files. Raises KeyError when there is no such record."""
        record = self.record(record_id)
        with self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.execute("DELETE FROM analyses WHERE id = ?", (record.id,))
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        shutil.rmtree(self.folder / FILES_FOLDER / record.uid, ignore_errors=True)

    def remove_orphans(self, min_age_s: float = 3600.0) -> int:
        """Delete file folders no record refers to (left by a process killed mid-save) and older than
        ``min_age_s`` seconds (younger ones may belong to a save in progress); returns how many."""
        known = {record.uid for record in self.records()}
        removed = 0
        now = time.time()
        for folder in (self.folder / FILES_FOLDER).iterdir():
            if folder.is_dir() and folder.name not in known and now - folder.stat().st_mtime >= min_age_s:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed

    def export(self, record_id: int) -> bytes:
        """A ZIP of one saved analysis: image, mask, measurements CSV with its settings sidecar
        (:func:`moleseg.core.report.settings_sidecar`) and a JSON of the record."""
        saved = self.open(record_id)
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

