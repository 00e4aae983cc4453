"""What the two PDFs share (moleseg.core.pdfparts): their pictures encoded one way, the date printed one way."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from moleseg.core.comparison_report import comparison_pdf
from moleseg.core.pdfparts import PDF_JPEG_QUALITY, created_text, pdf_jpeg

CREATED = datetime(2026, 5, 6, 9, 30, tzinfo=timezone.utc)


def test_pdf_jpeg_shrinks_to_the_longer_side_and_keeps_full_colour_resolution():
    picture = np.zeros((40, 60, 3), np.uint8)
    picture[:, 30:] = (0, 255, 255)
    jpeg, size = pdf_jpeg(picture, "before", 30)
    decoded = Image.open(jpeg)
    assert size == decoded.size == (30, 20) and decoded.format == "JPEG"
    assert JpegImagePlugin.get_sampling(decoded) == 0  # 4:4:4: no chroma subsampling
    assert PDF_JPEG_QUALITY == 92
    small, small_size = pdf_jpeg(picture[:, :, 0], "grey", 100)  # grey is repeated to RGB, never enlarged
    assert small_size == (60, 40) and Image.open(small).mode == "RGB"


def test_pdf_jpeg_names_the_picture_it_cannot_embed():
    with pytest.raises(ValueError, match="after"):
        pdf_jpeg(np.zeros((4, 4, 3), np.float32), "after", 10)


def test_the_date_carries_its_time_zone_when_it_has_one():
    assert created_text(CREATED) == "2026-05-06 09:30 UTC"
    assert created_text(datetime(2026, 5, 6, 9, 30)) == "2026-05-06 09:30"


def test_the_comparison_pdf_prints_the_date_as_the_report_does():
    pypdf = pytest.importorskip("pypdf")
    picture = np.full((30, 40, 3), 120, np.uint8)
    pdf = comparison_pdf(before=picture, after=picture, header=[("Images", "a.png, b.png")],
                         table=[["Measurement", "Before", "After"], ["Area", "1", "2"]], created=CREATED)
    text = pypdf.PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert "Date: 2026-05-06 09:30 UTC" in text and "Descriptive measurements only." in text
