"""The one-page PDF report of an analysis: the picture and its overlay, who and when, the settings that made
it, and its measurements table (pixel and mm values side by side).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol
from xml.sax.saxutils import escape

import numpy as np

from moleseg import __version__
from moleseg.core.pdfparts import created_text, draw_disclaimer, pdf_jpeg
from moleseg.core.render import as_rgb, with_scale_bar
from moleseg.core.report import DISCLAIMER, AnalysisSettings, Visit, display_unit, subject_words
from moleseg.core.words import count_of

#: Longest side, in pixels, of the pictures embedded in the PDF (about 300 dpi at the printed size).
PDF_IMAGE_MAX_SIDE_PX: int = 1200
#: Largest height (pt) of each picture in the PDF before the page content shrinks to fit.
PDF_PICTURE_MAX_HEIGHT_PT: float = 270.0
#: Smallest scale the PDF's content may shrink to (0..1); measurements beyond it are left out (all are in the CSV).
PDF_MIN_SCALE: float = 0.6
#: Longest notes printed in the PDF, in characters (cut with an ellipsis).
PDF_NOTES_MAX_CHARACTERS: int = 900
#: Units of a measurement in physical units; its pixel twin has the same key and unit ``px``.
PHYSICAL_UNITS: tuple[str, ...] = ("mm", "mm2")


class MeasurementLike(Protocol):
    """What the PDF needs of a measurement (:class:`moleseg.core.measure.Measurement` fits); ``text`` is the
    value as the Analyse page and the CSV give it (rounded per quantity)."""

    key: str
    label: str
    value: float
    unit: str
    meaning: str
    text: str


def _picture(array: np.ndarray, name: str, max_width: float, max_height: float) -> Any:
    """A reportlab Image flowable of the picture as :func:`moleseg.core.pdfparts.pdf_jpeg` embeds it (at most
    :data:`PDF_IMAGE_MAX_SIDE_PX`), scaled to fit ``max_width`` x ``max_height`` (pt) with its aspect ratio."""
    from reportlab.platypus import Image as image_flowable

    jpeg, (width, height) = pdf_jpeg(array, name, PDF_IMAGE_MAX_SIDE_PX)
    scale = min(max_width / width, max_height / height)
    return image_flowable(jpeg, width=width * scale, height=height * scale)


def _shorten(text: str, max_characters: int = 90) -> str:
    """``text`` cut in the middle with an ellipsis when longer than ``max_characters`` (fits one line)."""
    if len(text) <= max_characters:
        return text
    keep = (max_characters - 1) // 2
    return text[:keep] + "\u2026" + text[-keep:]


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
    image and its segmentation overlay side by side (embedded as JPEG pictures, at most
    :data:`PDF_IMAGE_MAX_SIDE_PX` on their longer side, scaled to fit), the overlay with a scale bar when the pixel
    size is known; the
    measurements table, one row per measurement with its pixel value and its mm value side by side
    (:func:`measurement_lines`; the mm column only when some value has one); the clinician's notes of the visit
    under "Notes:" and the app's own ``notes`` apart under "Warnings:"; and the statement that this is research software, not a medical device and not for
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
        What the app says of the analysis (e.g. "no lesion found", "check this border: ..."), printed under
        "Warnings:", apart from the visit's notes. Each cut at :data:`PDF_NOTES_MAX_CHARACTERS` with an
        ellipsis.
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
        draw_disclaimer(canvas, DISCLAIMER, left=margin, bottom=margin, width=page_width - 2 * margin,
                        height=disclaimer_height, font_size=10.5)
        canvas.saveState()
        canvas.setFont("Helvetica", 7)
        canvas.setFillColor(colors.grey)
        canvas.drawRightString(page_width - margin, margin - 10, f"moleseg {__version__}")
        canvas.restoreState()

    title = Paragraph(escape(heading), ParagraphStyle("title", fontName="Helvetica-Bold", fontSize=17, leading=21,
                                                      spaceAfter=5))
    identification = [("Image", str(image_name)), *visit.lines(), ("Report made", created_text(created))]
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
    for label, text in (("Notes", (visit.notes or "").strip()), ("Warnings", (notes or "").strip())):
        if not text:
            continue
        if len(text) > PDF_NOTES_MAX_CHARACTERS:
            text = text[:PDF_NOTES_MAX_CHARACTERS].rstrip() + "\u2026"
        tail.append(Spacer(1, 8))
        tail.append(Paragraph(f"<b>{label}:</b> " + escape(text).replace("\n", "<br/>"),
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
        data.append([Paragraph(f"\u2026 {count_of(left_out, 'more measurement')} in the CSV export.", small)]
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
