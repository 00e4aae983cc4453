"""What the two PDFs (an analysis's report, two visits compared) share: a picture embedded as a JPEG, the
disclaimer box at the foot of the page, and the date printed on the page.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import numpy as np
from PIL import Image

from moleseg.core.render import as_rgb

__all__ = ["ALERT_RED", "DISCLAIMER_FILL", "PDF_JPEG_QUALITY", "created_text", "draw_disclaimer", "pdf_jpeg"]

#: JPEG quality (1-95) of the pictures embedded in a PDF; encoded without chroma subsampling (4:4:4), so that
#: the thin coloured borders drawn on a picture stay sharp.
PDF_JPEG_QUALITY: int = 92
#: Colours of the disclaimer box: its frame and text (dark red, also a PDF's warnings) and its fill (pale red).
ALERT_RED: str = "#b00020"
DISCLAIMER_FILL: str = "#fdecee"


def pdf_jpeg(array: np.ndarray, name: str, max_side_px: int) -> tuple[io.BytesIO, tuple[int, int]]:
    """A picture as a PDF embeds it: shrunk (Lanczos) to at most ``max_side_px`` px on its longer side, as a
    JPEG of quality :data:`PDF_JPEG_QUALITY` (4:4:4).

    Parameters
    ----------
    array : (H, W, 3) uint8 RGB or (H, W) uint8 grey
        The picture; ``name`` names it in the error of any other array.
    max_side_px : int
        Longest side of the embedded picture, in px (a smaller picture is not enlarged).

    Returns
    -------
    (io.BytesIO, (int, int))
        The JPEG, read from its start, and its ``(width, height)`` in px.

    Raises
    ------
    ValueError
        Not a uint8 RGB or grey image.
    """
    picture = Image.fromarray(np.ascontiguousarray(as_rgb(array, name)))
    if max(picture.size) > max_side_px:
        picture.thumbnail((max_side_px, max_side_px), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=PDF_JPEG_QUALITY, subsampling=0)
    buffer.seek(0)
    return buffer, picture.size


def draw_disclaimer(canvas: Any, text: str, *, left: float, bottom: float, width: float, height: float,
                    font_size: float) -> None:
    """Draw the disclaimer box on a reportlab canvas: a pale red box with a dark red frame, ``text`` centred
    in it in bold (Helvetica, ``font_size`` pt). ``left``, ``bottom``, ``width`` and ``height`` place the box,
    in pt from the page's lower left corner. The canvas's state is restored afterwards."""
    from reportlab.lib import colors

    canvas.saveState()
    canvas.setStrokeColor(colors.HexColor(ALERT_RED))
    canvas.setFillColor(colors.HexColor(DISCLAIMER_FILL))
    canvas.rect(left, bottom, width, height, stroke=1, fill=1)
    canvas.setFillColor(colors.HexColor(ALERT_RED))
    canvas.setFont("Helvetica-Bold", font_size)
    # Helvetica's capitals are 0.72 em high: their middle on the box's middle.
    canvas.drawCentredString(left + width / 2, bottom + (height - 0.72 * font_size) / 2, text)
    canvas.restoreState()


def created_text(created: datetime) -> str:
    """The date and time a PDF was made, as it prints them: ``"2026-05-06 09:30 UTC"`` (no zone when
    ``created`` has none)."""
    text = created.strftime("%Y-%m-%d %H:%M")
    zone = created.tzname()
    return f"{text} {zone}" if zone else text
