"""Exports of an analysis: PNG pictures, a measurements CSV and its settings sidecar, a ZIP bundle, and the
records they carry (settings, visit); the one-page PDF is :mod:`moleseg.core.pdf_report`.

Every function builds the file in memory and returns its bytes; :func:`moleseg.core.atomic.atomic_write` puts
bytes on disk without ever leaving a half-written file.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from moleseg import __version__

__all__ = [
    "DISCLAIMER",
    "IMAGE_COLUMNS",
    "MEASUREMENTS_CSV",
    "SIDECAR_SUFFIX",
    "SUBJECT_WORDS",
    "AnalysisSettings",
    "Visit",
    "check_archive_name",
    "cleanup_text",
    "display_unit",
    "measurements_csv",
    "png_bytes",
    "settings_sidecar",
    "sidecar_name",
    "threshold_text",
    "subject_words",
    "zip_bundle",
]

#: The statement every report carries.
DISCLAIMER: str = "Research software \u2014 not a medical device; not for diagnosis."
#: What the app and the exports call the segmented objects, by number of classes (3: moles, 2: cells): the
#: PDF's title (``report``), the low-confidence warning (``check``), what the overlay shows (``drawn``), the
#: hand correction (``correct``), the probability threshold (``threshold``), the visit's identifier
#: (``identifier``) and body site (``site``; empty: not asked, as for microscopy samples), ...
SUBJECT_WORDS: dict[int, dict[str, str]] = {
    3: {"one": "lesion", "many": "lesions", "image": "mole image", "images": "mole images",
        "none": "no lesion found in this image", "corrected": "lesion corrected by hand", "target": "lesion",
        "mask": "Lesion mask", "report": "Lesion border analysis", "check": "check this border",
        "drawn": "lesion and border", "correct": "Correct the border by hand",
        "threshold": "Lesion probability threshold", "identifier": "Patient / lesion identifier",
        "site": "Body site", "field": "dermoscopy"},
    2: {"one": "cell or nucleus", "many": "cells and nuclei", "image": "cell image", "images": "cell images",
        "none": "no cells or nuclei found in this image", "corrected": "cells corrected by hand", "target": "cells",
        "mask": "Cells mask", "report": "Cell segmentation analysis", "check": "check this segmentation",
        "drawn": "cells and nuclei", "correct": "Correct the cells by hand",
        "threshold": "Cell probability threshold", "identifier": "Sample identifier", "site": "",
        "field": "cells"},
}


def subject_words(n_classes: int | None) -> dict[str, str]:
    """How to speak of what a model segments (:data:`SUBJECT_WORDS`; moles unless it has two classes)."""
    return SUBJECT_WORDS[2 if n_classes == 2 else 3]

#: Keys naming the image in a CSV row; the first one present becomes the first column.
IMAGE_COLUMNS: tuple[str, ...] = ("image", "image_name", "name", "file")
#: File name of the measurements CSV that ``moleseg predict`` and the Analyse page write.
MEASUREMENTS_CSV: str = "measurements.csv"
#: File name of the one-row-per-cell CSV written beside it for cell models.
OBJECTS_CSV: str = "objects.csv"
#: What replaces ``.csv`` in the name of a CSV's settings sidecar (``measurements.csv`` ->
#: ``measurements.settings.json``).
SIDECAR_SUFFIX: str = ".settings.json"
#: Characters that make a spreadsheet read a text cell as a formula.
_FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")


def threshold_text(threshold: float | None, target: str = "lesion") -> str:
    """How a lesion threshold (0..1, None: arg-max) turns probabilities into the ``target`` (``"lesion"``, or
    ``subject_words(n_classes)["target"]``), for people."""
    return "most likely class" if threshold is None else f"{target} where its probability \u2265 {float(threshold):.2f}"


def cleanup_text(cleanup: Mapping[str, Any]) -> str:
    """The cleanup settings (:meth:`moleseg.core.cleanup.CleanupSettings.to_dict`, or any part of them) for
    people: ``"rule article, closing 11 px, border 5 px (diamond), fill holes on, largest component only"``;
    ``"\u2014"`` when there are none."""
    if not cleanup:
        return "\u2014"
    parts = [f"rule {cleanup['rule']}"] if "rule" in cleanup else []
    if "closing_radius_px" in cleanup:
        parts.append(f"closing {cleanup['closing_radius_px']} px")
    if "border_width_px" in cleanup:
        shape = f" ({cleanup['shape']})" if "shape" in cleanup else ""
        parts.append(f"border {cleanup['border_width_px']} px{shape}")
    if "fill_holes" in cleanup:
        parts.append(f"fill holes {'on' if cleanup['fill_holes'] else 'off'}")
    if "largest_component" in cleanup:
        parts.append("largest component only" if cleanup["largest_component"] else "every component kept")
    known = {"rule", "closing_radius_px", "border_width_px", "shape", "fill_holes", "largest_component"}
    return ", ".join(parts + [f"{key} {value}" for key, value in cleanup.items() if key not in known])


@dataclass(frozen=True)
class AnalysisSettings:
    """The settings that made an analysis: printed on its PDF, written in its CSV's sidecar, saved with its
    record.

    Attributes
    ----------
    model_name : str
    model_version : str or None
        None or '' when unknown.
    cleanup : dict
        The cleanup settings (:meth:`moleseg.core.cleanup.CleanupSettings.to_dict`), in px of the image.
    lesion_threshold : float or None
        The lesion probability threshold (0..1); None for the most likely class.
    pixel_size_mm : float or None
        Millimetres per pixel; None when unknown (pixels only, no scale bar).
    corrected_by_hand : bool
        Whether the border was corrected by hand after the model drew it.
    """

    model_name: str
    model_version: str | None = None
    cleanup: Mapping[str, Any] = field(default_factory=dict)
    lesion_threshold: float | None = None
    pixel_size_mm: float | None = None
    corrected_by_hand: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the field names as keys)."""
        return {"model_name": self.model_name, "model_version": self.model_version or None,
                "cleanup": dict(self.cleanup),
                "lesion_threshold": None if self.lesion_threshold is None else float(self.lesion_threshold),
                "pixel_size_mm": None if self.pixel_size_mm is None else float(self.pixel_size_mm),
                "corrected_by_hand": bool(self.corrected_by_hand)}

    def lines(self) -> list[tuple[str, str]]:
        """``(label, text)`` pairs for people: model, cleanup, lesion threshold, pixel size, hand correction."""
        version = self.model_version or "unknown version"
        return [
            ("Model", f"{self.model_name} ({version})"),
            ("Cleanup", cleanup_text(self.cleanup)),
            ("Lesion threshold", threshold_text(self.lesion_threshold)),
            ("Pixel size", "unknown (pixels only)" if not self.pixel_size_mm
             else f"{float(self.pixel_size_mm):g} mm per px"),
            ("Corrected by hand", "yes" if self.corrected_by_hand else "no"),
        ]


@dataclass(frozen=True)
class Visit:
    """Who and when: the optional patient/lesion identifier (free text), the visit date, body site and
    notes. Every field may be empty; nothing identifies a person unless the user typed it."""

    lesion: str = ""
    visit_date: str = ""
    body_site: str = ""
    notes: str = ""

    @classmethod
    def of(cls, lesion: str | None = "", visit_date: date | str | None = None, body_site: str | None = "",
           notes: str | None = "") -> "Visit":
        """A visit from form values: ``None`` -> '', a date -> ISO ``YYYY-MM-DD``, text stripped."""
        when = visit_date.isoformat()[:10] if isinstance(visit_date, date) else str(visit_date or "").strip()
        return cls(lesion=str(lesion or "").strip(), visit_date=when, body_site=str(body_site or "").strip(),
                   notes=str(notes or "").strip())

    def to_dict(self) -> dict[str, str]:
        """Plain dict (the field names as keys)."""
        return {"lesion": self.lesion, "visit_date": self.visit_date, "body_site": self.body_site,
                "notes": self.notes}

    def lines(self) -> list[tuple[str, str]]:
        """``(label, text)`` pairs of the fields that are given (identifier, visit date, body site)."""
        pairs = [("Patient / lesion", self.lesion), ("Visit date", self.visit_date), ("Body site", self.body_site)]
        return [(label, text) for label, text in pairs if text]


# --------------------------------------------------------------------------------------------------
# PNG


def png_bytes(array: np.ndarray) -> bytes:
    """Lossless PNG of an image or mask (see :func:`moleseg.core.imagewrite.encode_png` for the accepted arrays)."""
    from moleseg.core.imagewrite import encode_png

    return encode_png(array)


# --------------------------------------------------------------------------------------------------
# CSV


def _csv_cell(value: Any) -> Any:
    """A CSV cell: numbers as they are (``repr`` precision), text defused against spreadsheet formulas."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return value.item() if isinstance(value, np.generic) else value
    text = str(value)
    if text.startswith(_FORMULA_PREFIXES):
        try:
            float(text)  # "-1.5" is a number written as text, not a formula
        except ValueError:
            return "'" + text
    return text


def measurements_csv(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """CSV of measurement rows, one row per image.

    Parameters
    ----------
    rows : sequence of mappings
        Column name -> value (e.g. ``{"image": "a.jpg", **measurements_row(...)}``). Rows may have
        different keys.

    Returns
    -------
    bytes
        UTF-8 CSV (comma-separated, ``\\r\\n`` line ends, quoted when needed). The header is the union
        of the keys in first-seen order, except that the image-name column (the first of
        :data:`IMAGE_COLUMNS` present) comes first. Missing values are empty; floats are written
        with full precision (``nan`` for NaN). Text starting with ``= + - @`` (and not a number) gets
        a leading ``'`` so spreadsheets do not run it as a formula.

    Raises
    ------
    TypeError
        A row that is not a mapping or has a non-string key.
    """
    header: list[str] = []
    seen: set[str] = set()
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"row {index} is a {type(row).__name__}, not a dict")
        for key in row:
            if not isinstance(key, str):
                raise TypeError(f"row {index} has a non-string column name {key!r}")
            if key not in seen:
                seen.add(key)
                header.append(key)
    image_column = next((name for name in IMAGE_COLUMNS if name in seen), None)
    if image_column is not None:
        header.remove(image_column)
        header.insert(0, image_column)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_csv_cell(row.get(key)) for key in header])
    return buffer.getvalue().encode("utf-8")


def sidecar_name(csv_name: str) -> str:
    """The name of a CSV's settings sidecar: ``measurements.csv`` -> ``measurements.settings.json``."""
    stem = csv_name[:-4] if csv_name.lower().endswith(".csv") else csv_name
    return stem + SIDECAR_SUFFIX


def settings_sidecar(csv_name: str, images: Sequence[tuple[str, AnalysisSettings | None, Visit | None]], *,
                     created: datetime | None = None) -> bytes:
    """The JSON sidecar of a measurements CSV: the settings (and visit) that made each of its rows.

    Parameters
    ----------
    csv_name : str
        The CSV's file name, recorded in the sidecar (``"measurements.csv"``).
    images : sequence of (image name, AnalysisSettings or None, Visit or None)
        One entry per CSV row, in the CSV's order (None: not analysed, e.g. an unreadable file).
    created : datetime, optional
        When the files were made; now (local time zone) by default.

    Returns
    -------
    bytes
        UTF-8 JSON, indented::

            {"csv": "measurements.csv", "created": "2026-05-06T07:08:09+02:00", "moleseg_version": "...",
             "disclaimer": "...", "images": [{"image": "a.jpg", "settings": {model_name, model_version, cleanup,
             lesion_threshold, pixel_size_mm, corrected_by_hand} | null, "visit": {lesion, visit_date,
             body_site, notes} | null}, ...]}
    """
    created = created or datetime.now().astimezone()
    document = {
        "csv": csv_name, "created": created.isoformat(timespec="seconds"), "moleseg_version": __version__,
        "disclaimer": DISCLAIMER,
        "images": [{"image": name, "settings": settings.to_dict() if settings is not None else None,
                    "visit": visit.to_dict() if visit is not None else None} for name, settings, visit in images],
    }
    return (json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


# --------------------------------------------------------------------------------------------------
# units


def display_unit(key: str, unit: str) -> str:
    """Unit as printed: ``mm2`` -> ``mm\u00b2``, ``px2`` -> ``px\u00b2``; an area in ``px`` is ``px\u00b2``."""
    if unit in ("mm2", "px2"):
        return unit[:-1] + "\u00b2"
    if key == "area" and unit == "px":
        return "px\u00b2"
    return unit


# --------------------------------------------------------------------------------------------------
# ZIP


def check_archive_name(name: str) -> str:
    """A safe relative archive path, or ValueError.

    Refused: empty names, absolute paths (``/x``, ``C:x``), backslashes, ``.`` / ``..`` / empty
    path components (``a//b``), control characters. The returned name uses ``/`` separators.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"archive member names must be non-empty strings, got {name!r}")
    if any(ord(character) < 32 or ord(character) == 127 for character in name):
        raise ValueError(f"archive member name {name!r} contains control characters")
    if "\\" in name:
        raise ValueError(f"archive member name {name!r} contains a backslash")
    if name.startswith("/") or (len(name) >= 2 and name[1] == ":"):
        raise ValueError(f"archive member name {name!r} is an absolute path")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"archive member name {name!r} has an empty, '.' or '..' component")
    return str(PurePosixPath(*parts))


def zip_bundle(files: Mapping[str, bytes]) -> bytes:
    """A deflated ZIP archive of ``{archive path: content}``.

    Parameters
    ----------
    files : mapping of str to bytes
        Relative paths inside the archive (``"masks/a.png"``), checked by :func:`check_archive_name`,
        to the file contents. Names must also differ other than by letter case (they would overwrite
        each other when extracted on Windows or macOS).

    Returns
    -------
    bytes
        The ZIP file; members are in the mapping's order, dated now.

    Raises
    ------
    ValueError
        An unsafe or duplicate name.
    TypeError
        A content that is not bytes-like.
    """
    checked: list[tuple[str, bytes]] = []
    seen: dict[str, str] = {}
    for name, content in files.items():
        safe = check_archive_name(name)
        folded = safe.casefold()
        if folded in seen:
            raise ValueError(f"archive member names {seen[folded]!r} and {name!r} collide")
        seen[folded] = name
        if not isinstance(content, (bytes, bytearray, memoryview)):
            raise TypeError(f"content of {name!r} must be bytes, not {type(content).__name__}")
        checked.append((safe, bytes(content)))
    stamp = datetime.now().timetuple()[:6]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for name, content in checked:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, content)
    return buffer.getvalue()

