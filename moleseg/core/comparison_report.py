"""A one-page PDF of two visits compared (reportlab): pictures, the alignment, a table of changes.

Built in memory; write it with :func:`moleseg.core.atomic.atomic_write`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from moleseg import __version__
from moleseg.core.pdfparts import ALERT_RED, created_text, draw_disclaimer, pdf_jpeg
from moleseg.core.report import DISCLAIMER

__all__ = ["comparison_pdf"]

#: Longest side (px) of the pictures embedded in the comparison PDF.
PICTURE_MAX_SIDE_PX: int = 1000
#: Font sizes (pt) tried for the table, largest first, until it fits the page.
TABLE_FONT_SIZES_PT: tuple[float, ...] = (8.5, 7.5, 6.5, 5.5)


def _reader(array: np.ndarray, name: str) -> tuple[Any, tuple[int, int]]:
    """A reportlab ImageReader of the picture as :func:`moleseg.core.pdfparts.pdf_jpeg` embeds it (at most
    :data:`PICTURE_MAX_SIDE_PX`), and its ``(width, height)`` in px."""
    from reportlab.lib.utils import ImageReader

    jpeg, size = pdf_jpeg(array, name, PICTURE_MAX_SIDE_PX)
    return ImageReader(jpeg), size


def comparison_pdf(*, before: np.ndarray, after: np.ndarray, header: Sequence[tuple[str, str]],
                   table: Sequence[Sequence[str]], warnings: Sequence[str] = (),
                   created: datetime | None = None, muted_rows: Sequence[int] = ()) -> bytes:
    """A one-page A4 PDF comparing two visits.

    Parameters
    ----------
    before, after : (H, W, 3) uint8
        The two pictures shown side by side (e.g. the before image with its border, the aligned after
        image with both borders).
    header : sequence of (label, text)
        Lines under the title (images, model, alignment, pixel size ...), printed as "label: text".
    table : sequence of rows of str
        The first row is the column heading; the font shrinks (down to 5.5 pt) until the table fits. Empty:
        no table (the warnings say why).
    warnings : sequence of str
        Printed in red above the table (e.g. a failed alignment).
    created : datetime, optional
        Date printed on the page; now by default.
    muted_rows : sequence of int
        Indices of ``table`` rows printed in grey (changes within the measurement's noise).

    Returns
    -------
    bytes
        The PDF (starts with ``%PDF``), always one page.
    """
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.pdfgen.canvas import Canvas
    from reportlab.platypus import Paragraph, Table, TableStyle

    created = created or datetime.now().astimezone()
    page_width, page_height = A4
    margin = 15 * mm
    width = page_width - 2 * margin
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=A4, pageCompression=1)
    canvas.setTitle("moleseg visit comparison")
    canvas.setCreator(f"moleseg {__version__}")

    top = page_height - margin
    canvas.setFont("Helvetica-Bold", 16)
    canvas.drawString(margin, top - 16, "Lesion follow-up: two visits compared")
    lines = [*header, ("Date", created_text(created))]
    meta = Paragraph("<br/>".join(f"<b>{escape(label)}:</b> {escape(text)}" for label, text in lines),
                     ParagraphStyle("meta", fontName="Helvetica", fontSize=8.5, leading=10.5))
    _, meta_height = meta.wrapOn(canvas, width, page_height)
    meta.drawOn(canvas, margin, top - 24 - meta_height)
    cursor = top - 24 - meta_height - 8

    # Pictures side by side, at most a third of the page high.
    gap = 6 * mm
    panel = (width - gap) / 2
    readers = [_reader(before, "before"), _reader(after, "after")]
    picture_height = min(page_height / 3, min(panel * h / w for _, (w, h) in readers))
    for index, (reader, (w, h)) in enumerate(readers):
        draw_width = min(panel, picture_height * w / h)
        canvas.drawImage(reader, margin + index * (panel + gap), cursor - picture_height, draw_width, picture_height)
    cursor -= picture_height + 8

    footer = margin + 30
    draw_disclaimer(canvas, DISCLAIMER + " Descriptive measurements only.", left=margin, bottom=margin, width=width,
                    height=22, font_size=10)

    for warning in warnings:
        note = Paragraph(f"<b>Warning:</b> {escape(warning)}",
                         ParagraphStyle("warn", fontName="Helvetica", fontSize=8.5, leading=10.5,
                                        textColor=colors.HexColor(ALERT_RED)))
        _, note_height = note.wrapOn(canvas, width, page_height)
        note.drawOn(canvas, margin, cursor - note_height)
        cursor -= note_height + 4

    rows = [list(row) for row in table]
    if not rows:
        canvas.showPage()
        canvas.save()
        return buffer.getvalue()
    muted = [("TEXTCOLOR", (0, row), (-1, row), colors.HexColor("#9a9a9a")) for row in muted_rows]
    for size in TABLE_FONT_SIZES_PT:
        grid = Table(rows, repeatRows=1)
        grid.setStyle(TableStyle([
            ("FONT", (0, 0), (-1, -1), "Helvetica", size),
            ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", size),
            ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.black),
            ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f2f2f2")]),
            ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
            ("TOPPADDING", (0, 0), (-1, -1), 1),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
            *muted,
        ]))
        _, table_height = grid.wrapOn(canvas, width, page_height)
        if table_height <= cursor - footer:
            break
    else:
        kept = max(2, int(len(rows) * (cursor - footer) / table_height) - 1)
        grid = Table(rows[:kept] + [[f"... {len(rows) - kept} more rows in the JSON"] + [""] * (len(rows[0]) - 1)])
        grid.setStyle(TableStyle([("FONT", (0, 0), (-1, -1), "Helvetica", TABLE_FONT_SIZES_PT[-1])]))
        _, table_height = grid.wrapOn(canvas, width, page_height)
    grid.drawOn(canvas, margin, cursor - table_height)
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()
