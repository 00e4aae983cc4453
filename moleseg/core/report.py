"""Exports of an analysis: PNG pictures, a measurements CSV, a one-page PDF report and a ZIP bundle.

Every function builds the file in memory and returns its bytes; :func:`moleseg.core.atomic.atomic_write` puts
bytes on disk without ever leaving a half-written file.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import PurePosixPath
from typing import Any, Protocol
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

from moleseg import __version__
from moleseg.core.render import as_rgb, with_scale_bar

__all__ = [
    "DISCLAIMER",
    "IMAGE_COLUMNS",
    "MEASUREMENTS_CSV",
    "SIDECAR_SUFFIX",
    "SUBJECT_WORDS",
    "AnalysisSettings",
    "MeasurementLine",
    "Visit",
    "check_archive_name",
    "display_unit",
    "measurement_lines",
    "measurements_csv",
    "pdf_report",
    "png_bytes",
    "settings_sidecar",
    "sidecar_name",
    "subject_words",
    "zip_bundle",
]

#: The statement every report carries.
DISCLAIMER: str = "Research software \u2014 not a medical device; not for diagnosis."
#: What the app and the exports call the segmented objects, by number of classes (3: moles, 2: cells): the
#: PDF's title (``report``), the low-confidence warning (``check``), ...
SUBJECT_WORDS: dict[int, dict[str, str]] = {
    3: {"one": "lesion", "many": "lesions", "image": "mole image", "images": "mole images",
        "none": "no lesion found in this image", "corrected": "lesion corrected by hand", "target": "lesion",
        "mask": "Lesion mask", "report": "Lesion border analysis", "check": "check this border"},
    2: {"one": "cell or nucleus", "many": "cells and nuclei", "image": "cell image", "images": "cell images",
        "none": "no cells or nuclei found in this image", "corrected": "cells corrected by hand", "target": "cells",
        "mask": "Cells mask", "report": "Cell segmentation analysis", "check": "check this segmentation"},
}


def subject_words(n_classes: int | None) -> dict[str, str]:
    """How to speak of what a model segments (:data:`SUBJECT_WORDS`; moles unless it has two classes)."""
    return SUBJECT_WORDS[2 if n_classes == 2 else 3]

#: Keys naming the image in a CSV row; the first one present becomes the first column.
IMAGE_COLUMNS: tuple[str, ...] = ("image", "image_name", "name", "file")
#: Longest side, in pixels, of the pictures embedded in the PDF (about 300 dpi at the printed size).
PDF_IMAGE_MAX_SIDE_PX: int = 1200
#: JPEG quality (1-95) of the pictures embedded in the PDF.
PDF_JPEG_QUALITY: int = 92
#: Largest height (pt) of each picture in the PDF before the page content shrinks to fit.
PDF_PICTURE_MAX_HEIGHT_PT: float = 270.0
#: Smallest scale the PDF's content may shrink to (0..1); measurements beyond it are left out (all are in the CSV).
PDF_MIN_SCALE: float = 0.6
#: Longest notes printed in the PDF, in characters (cut with an ellipsis).
PDF_NOTES_MAX_CHARACTERS: int = 900
#: File name of the measurements CSV that ``moleseg predict`` and the Analyse page write.
MEASUREMENTS_CSV: str = "measurements.csv"
#: What replaces ``.csv`` in the name of a CSV's settings sidecar (``measurements.csv`` ->
#: ``measurements.settings.json``).
SIDECAR_SUFFIX: str = ".settings.json"
#: Units of a measurement in physical units; its pixel twin has the same key and unit ``px``.
PHYSICAL_UNITS: tuple[str, ...] = ("mm", "mm2")
#: Characters that make a spreadsheet read a text cell as a formula.
_FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")


class MeasurementLike(Protocol):
    """What the PDF needs of a measurement (:class:`moleseg.core.measure.Measurement` fits); ``text`` is the
    value as the Analyse page and the CSV give it (rounded per quantity)."""

    key: str
    label: str
    value: float
    unit: str
    meaning: str
    text: str


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
        cleanup = self.cleanup
        if cleanup:
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
            parts += [f"{key} {value}" for key, value in cleanup.items() if key not in known]
            cleanup_text = ", ".join(parts)
        else:
            cleanup_text = "\u2014"
        version = self.model_version or "unknown version"
        return [
            ("Model", f"{self.model_name} ({version})"),
            ("Cleanup", cleanup_text),
            ("Lesion threshold", "most likely class per pixel" if self.lesion_threshold is None
             else f"lesion where its probability \u2265 {float(self.lesion_threshold):.2f}"),
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
    """Lossless PNG of an image or mask (see :func:`moleseg.core.imageio.encode_png` for the accepted arrays)."""
    from moleseg.core.imageio import encode_png

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
# PDF


def display_unit(key: str, unit: str) -> str:
    """Unit as printed: ``mm2`` -> ``mm\u00b2``, ``px2`` -> ``px\u00b2``; an area in ``px`` is ``px\u00b2``."""
    if unit in ("mm2", "px2"):
        return unit[:-1] + "\u00b2"
    if key == "area" and unit == "px":
        return "px\u00b2"
    return unit


def _picture(array: np.ndarray, name: str, max_width: float, max_height: float) -> Any:
    """A reportlab Image flowable of the picture as a JPEG no larger than PDF_IMAGE_MAX_SIDE_PX, scaled to
    fit ``max_width`` x ``max_height`` (pt) with its aspect ratio."""
    from reportlab.platypus import Image as image_flowable

    picture = Image.fromarray(np.ascontiguousarray(as_rgb(array, name)))
    if max(picture.size) > PDF_IMAGE_MAX_SIDE_PX:
        picture.thumbnail((PDF_IMAGE_MAX_SIDE_PX, PDF_IMAGE_MAX_SIDE_PX), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=PDF_JPEG_QUALITY, subsampling=0)
    buffer.seek(0)
    width, height = picture.size
    scale = min(max_width / width, max_height / height)
    return image_flowable(buffer, width=width * scale, height=height * scale)


def _shorten(text: str, max_characters: int = 90) -> str:
    """``text`` cut in the middle with an ellipsis when longer than ``max_characters`` (fits one line)."""
    if len(text) <= max_characters:
        return text
    keep = (max_characters - 1) // 2
    return text[:keep] + "\u2026" + text[-keep:]


def _format_created(created: datetime) -> str:
    text = created.strftime("%Y-%m-%d %H:%M")
    zone = created.tzname()
    return f"{text} {zone}" if zone else text


@dataclass(frozen=True)
class MeasurementLine:
    """One row of a report's measurements table: the value in its own unit (``px``, ``%`` or none) and, for
    lengths and areas when the pixel size is known, the same measurement in mm beside it.

    ``unit`` and ``unit_mm`` are as printed (:func:`display_unit`); ``value_mm`` is None when there is no
    physical value. ``text`` and ``text_mm`` are the values as printed (the measurement's own rounding).
    """

    key: str
    label: str
    value: float
    unit: str
    value_mm: float | None
    unit_mm: str
    meaning: str
    text: str = ""
    text_mm: str = ""


def measurement_lines(measurements: Sequence[MeasurementLike]) -> list[MeasurementLine]:
    """The measurements one row per key, the ``mm``/``mm2`` value beside its ``px`` twin (not a second row).

    A physical measurement whose key has no pixel value before it gets a row of its own, in mm.
    """
    lines: list[MeasurementLine] = []
    by_key: dict[str, int] = {}
    for measurement in measurements:
        key, unit = str(measurement.key), str(measurement.unit)
        index = by_key.get(key)
        if unit in PHYSICAL_UNITS and index is not None and lines[index].value_mm is None:
            lines[index] = replace(lines[index], value_mm=float(measurement.value), unit_mm=display_unit(key, unit),
                                   text_mm=str(measurement.text))
            continue
        by_key[key] = len(lines)
        lines.append(MeasurementLine(key=key, label=str(measurement.label), value=float(measurement.value),
                                     unit=display_unit(key, unit), value_mm=None, unit_mm="",
                                     meaning=str(measurement.meaning), text=str(measurement.text)))
    return lines


def pdf_report(
    *,
    image: np.ndarray,
    overlay: np.ndarray,
    measurements: Sequence[MeasurementLike],
    image_name: str,
    settings: AnalysisSettings,
    visit: Visit | None = None,
    created: datetime | None = None,
    notes: str | None = None,
    n_classes: int | None = None,
) -> bytes:
    """A one-page A4 PDF report of one analysed image, fit to be filed.

    The page holds a title (the model's task: ``subject_words(n_classes)["report"]``); the image name, the patient/lesion identifier, visit date and body site when
    given, and the date the report was made; the settings that made the analysis (model and version,
    cleanup, lesion threshold, pixel size, corrected by hand or not: :meth:`AnalysisSettings.lines`); the
    image and its segmentation overlay side by side (embedded as JPEG pictures, at most 1200 px on their
    longer side, scaled to fit), the overlay with a scale bar when the pixel size is known; the
    measurements table, one row per measurement with its pixel value and its mm value side by side
    (:func:`measurement_lines`; the mm column only when some value has one); the notes (the visit's, then
    ``notes``); and the statement that this is research software, not a medical device and not for
    diagnosis. Laid out with reportlab's Platypus; everything under the heading shrinks together
    (``KeepInFrame(mode="shrink")``) to fit the page, down to :data:`PDF_MIN_SCALE`; measurements that
    still do not fit are left out with a line saying how many (they are all in the CSV).

    Parameters
    ----------
    image, overlay : (H, W, 3) uint8 RGB (or (H, W) uint8 grey)
        The analysed image and its overlay (any sizes; each keeps its aspect ratio).
    measurements : sequence of Measurement
        Objects with ``key, label, value, unit, meaning`` (:class:`moleseg.core.measure.Measurement`).
    image_name : str
        Printed as given (names longer than 90 characters are shortened in the middle).
    settings : AnalysisSettings
        What made the analysis; its ``pixel_size_mm`` draws the scale bar.
    visit : Visit, optional
        Identifier, visit date, body site and notes, printed when given.
    created : datetime, optional
        Date printed on the report; now (local time zone) by default.
    notes : str, optional
        Further notes (e.g. "no lesion found"), printed after the visit's notes. Together cut at
        :data:`PDF_NOTES_MAX_CHARACTERS` with an ellipsis.
    n_classes : int, optional
        The model's number of classes: 2 (cells) titles the page "Cell segmentation analysis", any other
        (default: moles) "Lesion border analysis" (:func:`subject_words`).

    Returns
    -------
    bytes
        The PDF file (starts with ``%PDF``).

    Raises
    ------
    ValueError
        An image that is not uint8 RGB or grey.
    """
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import KeepInFrame, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    created = created or datetime.now().astimezone()
    visit = visit or Visit()
    heading = subject_words(n_classes)["report"]
    margin = 18 * mm
    disclaimer_height = 26.0
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer, pagesize=A4, leftMargin=margin, rightMargin=margin, topMargin=margin,
        bottomMargin=margin + disclaimer_height + 4, title=f"moleseg report \u2014 {image_name}", author="moleseg",
        subject=heading, creator=f"moleseg {__version__}", pageCompression=1,
    )
    padding = 6.0  # the frame's own padding on each side (reportlab's default)
    width = document.width - 2 * padding

    def page_furniture(canvas: Any, doc: Any) -> None:
        """The disclaimer box at the foot of the page and the version under it."""
        page_width = A4[0]
        canvas.saveState()
        canvas.setStrokeColor(colors.HexColor("#b00020"))
        canvas.setFillColor(colors.HexColor("#fdecee"))
        canvas.rect(margin, margin, page_width - 2 * margin, disclaimer_height, stroke=1, fill=1)
        canvas.setFillColor(colors.HexColor("#b00020"))
        canvas.setFont("Helvetica-Bold", 10.5)
        canvas.drawCentredString(page_width / 2, margin + 9.5, DISCLAIMER)
        canvas.setFont("Helvetica", 7)
        canvas.setFillColor(colors.grey)
        canvas.drawRightString(page_width - margin, margin - 10, f"moleseg {__version__}")
        canvas.restoreState()

    title = Paragraph(escape(heading), ParagraphStyle("title", fontName="Helvetica-Bold", fontSize=17, leading=21,
                                                      spaceAfter=5))
    identification = [("Image", str(image_name)), *visit.lines(), ("Report made", _format_created(created))]
    meta_style = ParagraphStyle("meta", fontName="Helvetica", fontSize=9, leading=11.5)
    settings_style = ParagraphStyle("settings", parent=meta_style, fontSize=8, leading=10)

    def pairs(lines: Sequence[tuple[str, str]], style: ParagraphStyle) -> Any:
        return Paragraph("<br/>".join(f"<b>{escape(label)}:</b> {escape(_shorten(text, 110))}"
                                      for label, text in lines), style)

    meta = Table([[pairs(identification, meta_style), pairs(settings.lines(), settings_style)]],
                 colWidths=[width * 0.42, width * 0.58], hAlign="LEFT",
                 style=TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                                   ("RIGHTPADDING", (0, 0), (-1, -1), 6), ("BOTTOMPADDING", (0, 0), (-1, -1), 8)]))
    caption = ParagraphStyle("caption", fontName="Helvetica-Bold", fontSize=9, leading=11, alignment=1)
    gap = 12.0
    panel_width = (width - gap) / 2
    shown_overlay = overlay
    overlay_caption = "Segmentation overlay"
    if settings.pixel_size_mm:
        shown_overlay = with_scale_bar(as_rgb(overlay, "overlay"), float(settings.pixel_size_mm))
        overlay_caption += " (scale bar lower left)"
    pictures = Table(
        [[Paragraph("Image", caption), Paragraph(overlay_caption, caption)],
         [_picture(image, "image", panel_width, PDF_PICTURE_MAX_HEIGHT_PT),
          _picture(shown_overlay, "overlay", panel_width, PDF_PICTURE_MAX_HEIGHT_PT)]],
        colWidths=[panel_width + gap / 2] * 2,
        style=TableStyle([("ALIGN", (0, 0), (-1, -1), "CENTER"), ("VALIGN", (0, 0), (-1, -1), "TOP"),
                          ("LEFTPADDING", (0, 0), (-1, -1), 0), ("RIGHTPADDING", (0, 0), (-1, -1), 0)]),
    )
    heading = Paragraph("Measurements", ParagraphStyle("heading", fontName="Helvetica-Bold", fontSize=11,
                                                       leading=13, spaceBefore=12, spaceAfter=3))
    tail: list[Any] = []
    text = "\n".join(part.strip() for part in (visit.notes, notes or "") if part and part.strip())
    if text:
        if len(text) > PDF_NOTES_MAX_CHARACTERS:
            text = text[:PDF_NOTES_MAX_CHARACTERS].rstrip() + "\u2026"
        tail.append(Spacer(1, 8))
        tail.append(Paragraph("<b>Notes:</b> " + escape(text).replace("\n", "<br/>"),
                              ParagraphStyle("notes", fontName="Helvetica", fontSize=8.5, leading=10.5)))
    lines = measurement_lines(measurements)

    def body(count: int) -> list[Any]:
        return [pictures, heading, _measurement_table(lines, count, width), *tail]

    # Everything under the identification shrinks together; below PDF_MIN_SCALE, leave the last rows out.
    room = document.height - 2 * padding - sum(
        flowable.wrap(width, document.height)[1] + flowable.getSpaceAfter() for flowable in (title, meta))
    count = len(lines)
    while count > 0 and _natural_height(body(count), width) * PDF_MIN_SCALE > room:
        count -= 1
    document.build([title, meta, KeepInFrame(width, room, body(count), mode="shrink")],
                   onFirstPage=page_furniture, onLaterPages=page_furniture)
    return buffer.getvalue()


def _natural_height(flowables: Sequence[Any], width: float) -> float:
    """Height (pt) of ``flowables`` stacked at their own size in a column ``width`` pt wide."""
    return sum(f.wrap(width, 1e6)[1] + f.getSpaceBefore() + f.getSpaceAfter() for f in flowables)


def _measurement_table(lines: Sequence[MeasurementLine], count: int, width: float) -> Any:
    """The table of the first ``count`` measurement lines (value and unit, the mm value beside them when any
    line has one), with a line saying how many more are in the CSV."""
    from reportlab.lib import colors
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.platypus import Paragraph, Table, TableStyle

    font_size = 9.0
    body = ParagraphStyle("cell", fontName="Helvetica", fontSize=font_size, leading=font_size * 1.2)
    bold = ParagraphStyle("head", parent=body, fontName="Helvetica-Bold")
    bold_number = ParagraphStyle("head_number", parent=bold, alignment=2)
    small = ParagraphStyle("meaning", parent=body, fontSize=font_size - 1.5, leading=(font_size - 1.5) * 1.2,
                           textColor=colors.HexColor("#444444"))
    number = ParagraphStyle("number", parent=body, alignment=2)
    physical = any(line.value_mm is not None for line in lines)

    def quantity(text: str, unit: str) -> str:
        return escape(text + (f" {unit}" if unit else "")) if text else ""

    head = [Paragraph("Measurement", bold), Paragraph("Value", bold_number)]
    if physical:
        head.append(Paragraph("In mm", bold_number))
    data: list[list[Any]] = [[*head, Paragraph("Meaning", bold)]]
    for line in lines[:count]:
        row = [Paragraph(escape(line.label), body), Paragraph(quantity(line.text, line.unit), number)]
        if physical:
            row.append(Paragraph(quantity(line.text_mm, line.unit_mm), number))
        data.append([*row, Paragraph(escape(line.meaning), small)])
    left_out = len(lines) - count
    if left_out:
        data.append([Paragraph(f"\u2026 {left_out} more measurement(s) in the CSV export.", small)]
                    + [""] * (len(head)))
    commands: list[tuple[Any, ...]] = [
        ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
        ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f2f4f7")]),
    ]
    if left_out:
        commands.append(("SPAN", (0, -1), (-1, -1)))
    shares = [0.26, 0.14, 0.14, 0.46] if physical else [0.26, 0.16, 0.58]
    return Table(data, colWidths=[width * share for share in shares], style=TableStyle(commands), hAlign="LEFT")


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

