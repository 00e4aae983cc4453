"""Saved analyses as typed values: who acts on them (:class:`User`, personal mode's :func:`personal_owner`), a
saved analysis (:class:`Record`, with its pictures :class:`SavedAnalysis`), a lesion's visits
(:class:`LesionSummary`), the refusal of an unreachable record (:class:`NoSuchRecord`), and a record's row of
the ``analyses`` table: its columns (:data:`RECORD_COLUMNS`), its measurements as JSON and the checks of the
values typed for a visit (:func:`clean_text`, :func:`visit_date_text`).

The database that stores them, who may reach which, and the image and mask files are
:mod:`moleseg.engine.records`. No SQL runs here.
"""

from __future__ import annotations

import getpass
import json
import math
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from moleseg.core.measure import Measurement
from moleseg.core.report import AnalysisSettings, Visit

if TYPE_CHECKING:
    import sqlalchemy

__all__ = [
    "FALLBACK_PERSONAL_OWNER",
    "MAX_RECORD_ID",
    "NOTES_MAX_CHARS",
    "NO_OWNER",
    "RECORD_COLUMNS",
    "LesionSummary",
    "NoSuchRecord",
    "Record",
    "SavedAnalysis",
    "User",
    "VISIT_FIELD_MAX_CHARS",
    "clean_text",
    "encode_measurements",
    "personal_owner",
    "record_from_row",
    "visit_date_text",
]

#: Owner of the records saved before records had owners (schema 1): reached by admins only.
NO_OWNER: str = ""
#: Owner of the records saved in personal mode when the server's account has no name.
FALLBACK_PERSONAL_OWNER: str = "local"
#: Largest record id either database stores (PostgreSQL's ``INTEGER`` column; SQLite's holds more): an id above
#: it, e.g. from a crafted ``?visit=`` link, names no record rather than failing in the database driver.
MAX_RECORD_ID: int = 2**31 - 1
#: The columns of the ``analyses`` table that make a :class:`Record`, in the order of its fields.
RECORD_COLUMNS: tuple[str, ...] = (
    "id", "uid", "saved_at", "owner", "lesion", "visit_date", "body_site", "notes", "image_name", "measurements",
    "model_name", "model_version", "cleanup", "lesion_threshold", "pixel_size_mm", "corrected")


def personal_owner() -> str:
    """The owner name personal mode saves records under: the name of the account that runs the server
    (:func:`getpass.getuser`), or :data:`FALLBACK_PERSONAL_OWNER` when it has none."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = ""
    return name or FALLBACK_PERSONAL_OWNER


class NoSuchRecord(KeyError):
    """No record of that id that the acting user may reach (a missing record and someone else's read alike)."""

    def __init__(self, record_id: int) -> None:
        super().__init__(f"no saved analysis with id {record_id}")

    def __str__(self) -> str:
        return str(self.args[0])


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

    @property
    def stem(self) -> str:
        """The stem of this visit's files (its export ZIP and the files in it, its PDF report): ``record_<id>``."""
        return f"record_{self.id}"

    @property
    def name(self) -> str:
        """This visit's name for people: its image's name, or ``record <id>`` when it has none."""
        return self.image_name or f"record {self.id}"

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


def encode_measurements(measurements: list[Measurement]) -> str:
    """``measurements`` as the JSON text of the ``measurements`` column (a value that is not finite as null)."""
    return json.dumps([{**asdict(m), "value": m.value if math.isfinite(m.value) else None} for m in measurements])


def _decode_measurements(text: str) -> list[Measurement]:
    return [Measurement(**{**item, "value": math.nan if item["value"] is None else float(item["value"])})
            for item in json.loads(text)]


def record_from_row(row: sqlalchemy.Row) -> Record:
    """The :class:`Record` of one row of ``analyses`` selected with :data:`RECORD_COLUMNS`."""
    values = dict(row._mapping)
    return Record(**{**values, "measurements": _decode_measurements(values["measurements"]),
                     "cleanup": json.loads(values["cleanup"]), "corrected": bool(values["corrected"])})


#: Longest lesion identifier and body site of a visit, in characters (the Analyse page's fields stop there).
VISIT_FIELD_MAX_CHARS: int = 200
#: Longest notes of a visit, in characters (the Analyse page's field stops there).
NOTES_MAX_CHARS: int = 2000


def clean_text(value: Any, name: str, max_length: int = NOTES_MAX_CHARS) -> str:
    """``value`` as text without surrounding blanks ('' for None). Raises ValueError naming it as ``name`` when it
    is longer than ``max_length`` characters."""
    text = "" if value is None else str(value).strip()
    if len(text) > max_length:
        raise ValueError(f"{name} is longer than {max_length} characters")
    return text


def visit_date_text(value: date | str | None) -> str:
    """A visit date (a date, a datetime, ``'YYYY-MM-DD'``, or None for today) as ISO ``YYYY-MM-DD``. Raises
    ValueError when ``value`` is not a date."""
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
