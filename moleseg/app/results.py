"""What the Analyse page shows and exports of its analyses: measurement tables, the batch grid's
thumbnails and summary, visit fields (also from DICOM files, when a user agrees), the pixel size DICOM files
give, and the CSV, sidecar, outline, PDF, DICOM and ZIP downloads. Functions of the analyses and uploads;
what a rerun of the page would make again from the same analysis (its thumbnail, its outline files) is kept
while that analysis lives (:func:`kept_with`; its pictures' JPEGs are the analysis' own,
:attr:`moleseg.engine.pipeline.Analysis.overlay_jpeg` and ``class_jpeg``).
"""

from __future__ import annotations

import html
import threading
import weakref
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

import numpy as np

from moleseg.app.analysis import ImageOutcome, Upload
from moleseg.app.ui import plain_markdown
from moleseg.core.config import result_file_name
from moleseg.core.imagewrite import display_jpeg
from moleseg.core.render import scaled_down
from moleseg.core.report import MEASUREMENTS_CSV, OBJECTS_CSV, Visit
from moleseg.engine.pipeline import Analysis

#: The short words of the "may extend beyond the picture" warning (its full sentence:
#: :data:`moleseg.engine.pipeline.BEYOND_PICTURE_NOTE`).
BEYOND_PICTURE_FLAG: str = "may extend beyond the picture"
#: File of the ZIP that lists the images to check, one per line with the reasons.
TO_CHECK_FILE: str = "TO_CHECK.txt"
#: Heading of the batch table's column of the reasons to check an image, and the CSV's column.
TO_CHECK_HEADING: str = "To check"
TO_CHECK_COLUMN: str = "to_check"
#: Colour (RGB 0..255) and width (px of the thumbnail) of the frame around a thumbnail to check.
FLAG_FRAME_COLOR: tuple[int, int, int] = (230, 0, 0)
FLAG_FRAME_PX: int = 8

Kept = TypeVar("Kept")
_KEPT: dict[tuple[int, str], Any] = {}
_KEPT_LOCK = threading.Lock()


def kept_with(owner: Any, name: str, make: Callable[[], Kept]) -> Kept:
    """``make()``, made once per ``(owner, name)`` and kept as long as ``owner`` lives (an analysis, or a
    read-only picture of one, which never change), so that a rerun of the page that shows the same analysis
    neither draws nor encodes again."""
    key = (id(owner), name)
    with _KEPT_LOCK:
        if key in _KEPT:
            return _KEPT[key]
    value = make()
    with _KEPT_LOCK:
        if key not in _KEPT:
            _KEPT[key] = value
            weakref.finalize(owner, _KEPT.pop, key, None)  # before the id can be reused
        return _KEPT[key]


def flags(analysis: Analysis | None) -> list[str]:
    """The short reasons to check an analysis: the model's "check this border" ("check this segmentation" in
    cells mode) when it is unsure, and :data:`BEYOND_PICTURE_FLAG`; empty when nothing is flagged."""
    if analysis is None or analysis.error:
        return []
    found = [analysis.words["check"]] if analysis.check_border else []
    return found + ([BEYOND_PICTURE_FLAG] if analysis.beyond_picture else [])


def to_check(outcomes: Sequence[ImageOutcome]) -> list[tuple[str, list[str]]]:
    """``(image name, reasons)`` of every analysed image with some :func:`flags`, in upload order."""
    return [(outcome.name, reasons) for outcome in outcomes if (reasons := flags(outcome.analysis))]


def check_summary(outcomes: Sequence[ImageOutcome]) -> str | None:
    """The batch's line of images to check over the analysed ones, e.g. ``"3 of 12 to check: a.jpg (check this
    border), ..."``; None when none is flagged."""
    flagged = to_check(outcomes)
    if not flagged:
        return None
    analysed = sum(outcome.analysis is not None for outcome in outcomes)
    listed = ", ".join(f"{name} ({'; '.join(reasons)})" for name, reasons in flagged)
    return f"{len(flagged)} of {analysed} to check: {listed}"


def to_check_text(outcomes: Sequence[ImageOutcome]) -> str | None:
    """The content of :data:`TO_CHECK_FILE`: the :func:`check_summary` line, then one line per image to check
    (``name: reason; reason``); None when none is flagged."""
    summary = check_summary(outcomes)
    if summary is None:
        return None
    lines = [summary.split(":", 1)[0] + ":"] + [f"{name}: {'; '.join(reasons)}" for name, reasons in to_check(outcomes)]
    return "\n".join(lines) + "\n"


def measurement_table(analysis: Analysis) -> list[dict[str, str]]:
    """Rows ``{"measurement", "value", "unit", "meaning"}`` of an analysis, values to each quantity's
    decimals (:attr:`moleseg.core.measure.Measurement.text`); the page shows the keys capitalised."""
    from moleseg.core.report import display_unit

    return [{"measurement": m.label, "value": m.text, "unit": display_unit(m.key, m.unit), "meaning": m.meaning}
            for m in analysis.measurements]


#: The look of :func:`measurement_html`'s table (its class ``moleseg-measurements``): the meaning in small type
#: under each name, so that three columns fit a 390 px phone; names and units broken anywhere when they must be (a
#: long unbroken word from a user's model never widens the table); each meaning's text direction kept to itself;
#: values (each row's last cell but one) right-aligned in tabular figures.
MEASUREMENT_TABLE_CSS: str = (
    ".moleseg-measurements{border-collapse:collapse;max-width:100%}"
    ".moleseg-measurements th,.moleseg-measurements td{padding:.3rem .5rem;line-height:1.4;text-align:left;"
    "vertical-align:top;border-bottom:1px solid rgba(49,51,63,.15)}"
    ".moleseg-measurements th,.moleseg-measurements td:last-child{overflow-wrap:anywhere}"
    ".moleseg-measurements thead th{font-weight:600}"
    ".moleseg-measurements tbody th{font-weight:400}"
    ".moleseg-measurements small{display:block;font-size:.8em;opacity:.75;unicode-bidi:isolate}"
    ".moleseg-measurements td:nth-last-child(2){text-align:right;font-variant-numeric:tabular-nums;"
    "white-space:nowrap}")


def measurement_html(analysis: Analysis) -> str:
    """The :func:`measurement_table` of an analysis as one HTML table for ``st.html``: columns Measurement,
    Value and Unit (the keys capitalised), each name a row heading with its meaning under it in small type;
    consecutive rows of the same measurement (its px and mm values) share one heading (``rowspan``). Every cell
    is HTML-escaped, so a name or unit from an untrusted model file is shown as it is; "" without
    measurements. One static element, without the markdown parsing a table of markdown costs the browser."""
    rows = measurement_table(analysis)
    if not rows:
        return ""
    name_key, value_key, unit_key, meaning_key = rows[0]
    headings = "".join(f'<th scope="col">{html.escape(key.capitalize())}</th>'
                       for key in (name_key, value_key, unit_key))
    body = []
    for index, row in enumerate(rows):
        cells = f"<td>{html.escape(row[value_key])}</td><td>{html.escape(row[unit_key])}</td>"
        named = (row[name_key], row[meaning_key])
        if index and named == (rows[index - 1][name_key], rows[index - 1][meaning_key]):
            body.append(f"<tr>{cells}</tr>")  # under the heading of the row above
            continue
        span = 1
        while index + span < len(rows) and (rows[index + span][name_key], rows[index + span][meaning_key]) == named:
            span += 1
        meaning = f"<small>{html.escape(row[meaning_key])}</small>" if row[meaning_key] else ""
        spans = f' rowspan="{span}"' if span > 1 else ""
        body.append(f'<tr><th scope="row"{spans}>{html.escape(row[name_key])}{meaning}</th>{cells}</tr>')
    return (f'<table class="moleseg-measurements"><thead><tr>{headings}</tr></thead><tbody>{"".join(body)}'
            f"</tbody></table><style>{MEASUREMENT_TABLE_CSS}</style>")


def outcome_rows(outcomes: Sequence[ImageOutcome], model_name: str = "",
                 visits: Mapping[str, Visit] | None = None) -> list[dict[str, Any]]:
    """One CSV/table row per image: name, model, the patient/lesion identifier and visit date when
    ``visits`` (by :attr:`ImageOutcome.key`) gives them, note, ``to_check`` (the :func:`flags` joined by
    ``"; "``, empty when none), the confidence and edge flags
    (:attr:`moleseg.engine.pipeline.Analysis.flag_row`), then every measurement column."""
    rows = []
    for outcome in outcomes:
        row: dict[str, Any] = {"image": outcome.name}
        if model_name:
            row["model"] = model_name
        visit = (visits or {}).get(outcome.key)
        if visit is not None and visit.lesion:
            row["lesion"] = visit.lesion
        if visit is not None and visit.visit_date:
            row["visit_date"] = visit.visit_date
        if outcome.error:
            row["note"] = outcome.error
        elif outcome.analysis is not None:
            if outcome.analysis.notes:
                row["note"] = outcome.analysis.notes
            row[TO_CHECK_COLUMN] = "; ".join(flags(outcome.analysis))
            row.update(outcome.analysis.flag_row)
            row.update(outcome.analysis.rounded_row)
        rows.append(row)
    return rows


#: What the app's tables show for a value that is missing or undefined.
MISSING_TEXT = "\u2014"


def batch_table(outcomes: Sequence[ImageOutcome]) -> list[dict[str, str]]:
    """The Analyse page's table of many images: one row per image, readable headings with units
    (``"Area (px\u00b2)"``), values to each quantity's decimals, :data:`MISSING_TEXT` where an image has
    no value; a :data:`TO_CHECK_HEADING` column (the :func:`flags` in words, empty when none) when some image is
    flagged, and a ``Note`` column when some image has a note (no lesion found, corrected by hand, error)."""
    headings: dict[str, None] = {"Image": None}
    rows = []
    for outcome in outcomes:
        row = {"Image": outcome.name}
        analysis = outcome.analysis
        reasons = flags(analysis)
        if reasons:
            row[TO_CHECK_HEADING] = "; ".join(reasons)
        note = outcome.error or (analysis.notes if analysis is not None else None)
        if note:
            row["Note"] = note
        for measurement in analysis.measurements if analysis is not None else []:
            row[measurement.heading] = measurement.text
        headings.update(dict.fromkeys(row))
        rows.append(row)
    first = ["Image"] + [heading for heading in (TO_CHECK_HEADING, "Note") if any(heading in row for row in rows)]
    headings = {**dict.fromkeys(first), **headings}
    empty = {TO_CHECK_HEADING: ""}
    return [{heading: row.get(heading, empty.get(heading, MISSING_TEXT)) for heading in headings} for row in rows]


def batch_summary(outcomes: Sequence[ImageOutcome]) -> list[dict[str, Any]]:
    """Rows ``{"measurement", "images", "mean", "sd", "min", "median", "max"}`` over the analysed images:
    every measurement (with its unit in the heading), the number of images where it is defined, and its
    mean, population standard deviation, smallest, median and largest value, as text to the
    measurement's decimals (one more for the mean and SD)."""
    from moleseg.core.measure import Measurement

    values: dict[tuple[str, str], list[float]] = {}
    first: dict[tuple[str, str], Measurement] = {}
    for outcome in outcomes:
        if outcome.analysis is None:
            continue
        for measurement in outcome.analysis.measurements:
            slot = (measurement.key, measurement.unit)
            first.setdefault(slot, measurement)
            if np.isfinite(measurement.value):
                values.setdefault(slot, []).append(float(measurement.value))
    rows = []
    for slot, measurement in first.items():
        found = np.asarray(values.get(slot, []), dtype=np.float64)
        places = measurement.decimals

        def text(value: float, extra: int = 0) -> str:
            return f"{value:,.{places + extra}f}" if found.size else MISSING_TEXT

        rows.append({"measurement": measurement.heading, "images": int(found.size),
                     "mean": text(found.mean() if found.size else 0.0, 1),
                     "sd": text(found.std(ddof=0) if found.size else 0.0, 1),
                     "min": text(found.min() if found.size else 0.0),
                     "median": text(float(np.median(found)) if found.size else 0.0),
                     "max": text(found.max() if found.size else 0.0)})
    return rows


#: The measurements shown under each thumbnail of the batch grid, by number of classes (mm when known).
KEY_MEASUREMENTS: dict[int, tuple[str, ...]] = {3: ("area", "equivalent_diameter", "asymmetry_major"),
                                                2: ("object_count", "object_area_mean", "coverage")}
#: Width of a batch-grid thumbnail, in px: its pixels and the CSS px the grid shows it at (encoded at that size,
#: so that Streamlit neither resizes nor encodes it again); four to a row beside the sidebar on a 1300 px wide
#: window, more on wider ones.
THUMBNAIL_WIDTH_PX: int = 200


def key_measurements(analysis: Analysis) -> str:
    """A short line of the image's key measurements (:data:`KEY_MEASUREMENTS`), e.g.
    ``"Area 12.5 mm\u00b2 \u00b7 Equivalent diameter 4.0 mm \u00b7 Asymmetry (major axis) 0.120"``;
    in millimetres when the pixel size is known; the note (e.g. no lesion found) when there is none."""
    from moleseg.core.report import display_unit

    keys = KEY_MEASUREMENTS[2 if analysis.cells else 3]
    chosen: dict[str, Any] = {}
    for measurement in analysis.measurements:
        if measurement.key in keys and (measurement.key not in chosen or measurement.unit.startswith("mm")):
            chosen[measurement.key] = measurement
    parts = [f"{m.label} {m.text} {display_unit(m.key, m.unit)}".strip() for key in keys
             if (m := chosen.get(key)) is not None]
    return " \u00b7 ".join(parts) or (analysis.notes or MISSING_TEXT)


def thumbnail(analysis: Analysis, width_px: int = THUMBNAIL_WIDTH_PX) -> np.ndarray:
    """The overlay shrunk to ``width_px`` wide (area averaging; as it is when narrower), uint8 RGB; framed
    :data:`FLAG_FRAME_PX` wide in :data:`FLAG_FRAME_COLOR` when the image is to check (:func:`flags`)."""
    picture = scaled_down(analysis.overlay, width_px / analysis.overlay.shape[1])
    if flags(analysis):
        picture = picture.copy()
        frame = min(FLAG_FRAME_PX, max(1, min(picture.shape[:2]) // 8))
        for edge in (np.s_[:frame], np.s_[-frame:]):
            picture[edge] = FLAG_FRAME_COLOR
            picture[:, edge] = FLAG_FRAME_COLOR
    return picture


def grid_caption(outcome: ImageOutcome) -> str:
    """The caption of an image in the batch grid: ``"TO CHECK (check this border): a.jpg: Area ..."`` when it is
    flagged (:func:`flags`), else ``"a.jpg: Area ..."`` (:func:`key_measurements`)."""
    reasons = flags(outcome.analysis)
    measured = key_measurements(outcome.analysis) if outcome.analysis is not None else MISSING_TEXT
    flagged = f"TO CHECK ({'; '.join(reasons)}): " if reasons else ""
    return f"{flagged}{outcome.name}: {measured}"


def thumbnail_jpeg(analysis: Analysis, width_px: int = THUMBNAIL_WIDTH_PX) -> bytes:
    """The :func:`thumbnail` of an analysis as the grid shows it, a JPEG as
    :func:`moleseg.core.imagewrite.display_jpeg` encodes it (encoded anew on each call: the grid keeps
    :func:`thumbnail_url`)."""
    picture = thumbnail(analysis, width_px)
    return display_jpeg(picture, max(picture.shape[:2]))


def thumbnail_url(analysis: Analysis, width_px: int = THUMBNAIL_WIDTH_PX) -> str:
    """The :func:`thumbnail_jpeg` of an analysis as a ``data:`` URL (9–15 KB for a PH2 image), made once per
    analysis and kept alone (not its JPEG too): the grid's element then carries its pictures, which the browser
    shows as it draws the grid, instead of fetching each from the server once the run's last message is
    handled."""
    import base64

    return kept_with(analysis, f"thumbnail url {width_px}",
                     lambda: "data:image/jpeg;base64," + base64.b64encode(thumbnail_jpeg(analysis, width_px)).decode())


def object_areas(analysis: Analysis) -> list[float]:
    """Areas of the cells / nuclei of a two-class analysis (mm\u00b2 when the pixel size is known, else px\u00b2)."""
    scale = analysis.pixel_size_mm
    return [item.area_px * (scale**2 if scale else 1.0) for item in analysis.objects]


def objects_csv_bytes(outcomes: Sequence[ImageOutcome]) -> bytes:
    """Every cell / nucleus of every image as CSV, one row per object (empty bytes without any)."""
    from moleseg.core.report import measurements_csv

    rows = [row for outcome in outcomes if outcome.analysis is not None
            for row in outcome.analysis.object_rows(outcome.name)]
    return measurements_csv(rows) if rows else b""


#: MIME type of each outline file, by its suffix.
OUTLINE_MIME: dict[str, str] = {".geojson": "application/geo+json", ".roi": "application/octet-stream",
                                ".zip": "application/zip", ".svg": "image/svg+xml"}
#: Download-button label of each outline format (:data:`moleseg.core.outlines.OUTLINE_FORMATS`).
OUTLINE_LABELS: dict[str, str] = {"geojson": "Outline (GeoJSON, QuPath)", "imagej": "Outline (ImageJ ROI, Fiji)",
                                  "svg": "Outline (SVG)"}


def outline_downloads(outcome: ImageOutcome) -> list[tuple[str, str, bytes, str]]:
    """``(label, file name, bytes, MIME type)`` of each outline file of an analysed image
    (:meth:`moleseg.engine.pipeline.Analysis.outline_files`); none without a lesion."""
    from moleseg.core.outlines import OUTLINE_FORMATS

    analysis, stem = outcome.analysis, outcome.stem
    if analysis is None:
        return []

    def downloads() -> list[tuple[str, str, bytes, str]]:
        return [(OUTLINE_LABELS[fmt], name, data, OUTLINE_MIME[Path(name).suffix]) for fmt in OUTLINE_FORMATS
                for name, data in analysis.outline_files(stem, [fmt]).items()]

    return list(kept_with(analysis, f"outlines {stem}", downloads))


def default_visit() -> Visit:
    """The visit of an image nothing was typed for: today's date, as its visit fields show it."""
    from datetime import date

    return Visit.of(visit_date=date.today())


def visit_widget_values(visit: Visit | None) -> dict[str, Any]:
    """The Analyse page's visit widgets (``analyse_save_<name>``) for an image's visit: ``lesion``, ``date``
    (a ``datetime.date``; today when none was given, :func:`default_visit`), ``site``, ``notes``."""
    from datetime import date

    visit = visit or Visit()
    when = date.fromisoformat(visit.visit_date or default_visit().visit_date)
    return {"lesion": visit.lesion, "date": when, "site": visit.body_site, "notes": visit.notes}


def measurements_csv_bytes(outcomes: Sequence[ImageOutcome], model_name: str = "",
                           visits: Mapping[str, Visit] | None = None) -> bytes:
    """The measurements of every image as CSV (failed files included with their note)."""
    from moleseg.core.report import measurements_csv

    return measurements_csv(outcome_rows(outcomes, model_name, visits))


def measurements_sidecar_bytes(outcomes: Sequence[ImageOutcome], model_version: str = "",
                               visits: Mapping[str, Visit] | None = None, created: datetime | None = None,
                               csv_name: str = MEASUREMENTS_CSV) -> bytes:
    """The JSON sidecar of :func:`measurements_csv_bytes`: each row's settings and visit
    (:func:`moleseg.core.report.settings_sidecar`)."""
    from moleseg.core.report import settings_sidecar

    entries = [(outcome.name, outcome.analysis.settings(model_version) if outcome.analysis is not None else None,
                (visits or {}).get(outcome.key)) for outcome in outcomes]
    return settings_sidecar(csv_name, entries, created=created)


def outcome_files(outcome: ImageOutcome, model_version: str = "", created: datetime | None = None,
                  with_pdf: bool = True, visit: Visit | None = None) -> dict[str, bytes]:
    """``{file name: bytes}`` of one analysed image: overlay, mask and class PNGs and the PDF report."""
    if outcome.analysis is None:
        return {}
    files = dict(outcome.analysis.files(outcome.stem))
    if with_pdf:
        files[result_file_name(outcome.stem, "report")] = outcome.analysis.pdf(
            outcome.name, model_version=model_version, created=created, visit=visit)
    return files


def batch_bundle(outcomes: Sequence[ImageOutcome], model_name: str = "", model_version: str = "",
                 created: datetime | None = None, visits: Mapping[str, Visit] | None = None) -> bytes:
    """A ZIP of everything: ``<stem>/`` with each image's PNGs, outlines and PDF, ``measurements.csv`` and its
    settings sidecar, ``objects.csv`` (cells models: one row per cell / nucleus), :data:`TO_CHECK_FILE` when
    some images are flagged (:func:`to_check_text`) and ``errors.txt`` when some files failed. ``visits``: by
    :attr:`ImageOutcome.key`."""
    from moleseg.core.report import sidecar_name, zip_bundle

    created = created or datetime.now().astimezone()
    visits = visits or {}
    files: dict[str, bytes] = {
        MEASUREMENTS_CSV: measurements_csv_bytes(outcomes, model_name, visits),
        sidecar_name(MEASUREMENTS_CSV): measurements_sidecar_bytes(outcomes, model_version, visits, created),
    }
    objects = objects_csv_bytes(outcomes)
    if objects:
        files[OBJECTS_CSV] = objects
    for outcome in outcomes:
        for name, data in outcome_files(outcome, model_version, created, visit=visits.get(outcome.key)).items():
            files[f"{outcome.stem}/{name}"] = data
        for _, name, data, _ in outline_downloads(outcome):
            files[f"{outcome.stem}/{name}"] = data
    checks = to_check_text(outcomes)
    if checks:
        files[TO_CHECK_FILE] = checks.encode("utf-8")
    errors = [outcome.error for outcome in outcomes if outcome.error]
    if errors:
        files["errors.txt"] = ("\n".join(errors) + "\n").encode("utf-8")
    return zip_bundle(files)


#: What the Analyse page says of the identifiers in DICOM files, beside the box that lets them in.
DICOM_PRIVACY_NOTE = ("A DICOM file carries the patient's name and ID and the study's fields. They stay out of "
                      "the visit, the record and every export unless you tick this box; then the patient ID (or "
                      "name), the study date and the body part fill this image's visit, and the DICOM download "
                      "keeps them and is named after the file (unticked, it is named after the image's pixels).")


def dicom_pixel_size(uploads: Sequence[Upload]) -> tuple[float | None, str]:
    """The pixel size the DICOM files among ``uploads`` give, and what the page says of it.

    Returns
    -------
    tuple
        ``(mm per pixel, caption)``: the size when every upload is a DICOM file with the same pixel spacing
        (None otherwise), and ``"0.0200 mm per px from the DICOM file"`` or why there is no automatic size
        ("" when no upload is DICOM), as markdown (a file's name and its spacing escaped,
        :func:`moleseg.app.ui.plain_markdown`).
    """
    from moleseg.core.dicomio import DicomReadError, dicom_facts

    sizes, notes, others = set(), [], 0
    for upload in uploads:
        try:
            facts = dicom_facts(upload.data, name=upload.name)
        except DicomReadError:
            facts = None  # the analysis reports the file
        if facts is None:
            others += 1
        elif facts.pixel_size_mm is None:
            notes.append(plain_markdown(f"{upload.name}: {facts.spacing_note}"))  # both from the file
        else:
            sizes.add(round(facts.pixel_size_mm, 9))
    if not sizes and not notes:
        return None, ""
    if notes:
        return None, "No automatic pixel size: " + "; ".join(notes)
    if len(sizes) > 1:
        return None, "No automatic pixel size: the DICOM files have different pixel spacings; analyse them apart"
    if others:
        return None, "No automatic pixel size: some images are not DICOM files; analyse them apart"
    size = sizes.pop()
    return size, f"{size:.4f} mm per px from the DICOM file"


def dicom_identifiers(upload: Upload) -> dict[str, str]:
    """The patient and study identifiers a DICOM upload carries (:attr:`moleseg.core.dicomio.DicomFacts.identifiers`:
    keyword -> text); empty for a file that is not DICOM or cannot be read as one."""
    from moleseg.core.dicomio import DicomReadError, dicom_facts

    try:
        facts = dicom_facts(upload.data, name=upload.name)
    except DicomReadError:
        return {}
    return {} if facts is None else dict(facts.identifiers)


def _visit_date(dicom_date: str) -> str:
    """A DICOM date (``YYYYMMDD``) as a visit's ``YYYY-MM-DD``; '' for anything else."""
    if len(dicom_date) != 8 or not dicom_date.isdigit():
        return ""
    return f"{dicom_date[:4]}-{dicom_date[4:6]}-{dicom_date[6:8]}"


def dicom_visit(upload: Upload) -> Visit | None:
    """The visit fields a DICOM upload's identifiers give (patient ID or name, study date, body part); None for
    a file that is not DICOM or names none of them."""
    found = dicom_identifiers(upload)
    visit = Visit.of(lesion=found.get("PatientID") or found.get("PatientName", ""),
                     visit_date=_visit_date(found.get("StudyDate", "")), body_site=found.get("BodyPartExamined", ""))
    return visit if visit != Visit() else None


def without_dicom_identifiers(visit: Visit, upload: Upload) -> Visit:
    """``visit`` as an export without identifiers prints it: each field that holds one of the patient and study
    identifiers the DICOM upload ``upload`` carries (:func:`dicom_identifiers`, compared without case or
    surrounding spaces; its study date also in the visit's ``YYYY-MM-DD``) emptied, so that ticking "Use the DICOM
    file's patient and study fields" and unticking it again leaves none of them in that export; a field the user
    typed otherwise stays. ``visit`` itself for a file that is not DICOM."""
    found = dicom_identifiers(upload)
    held = {value.strip().casefold() for value in (*found.values(), _visit_date(found.get("StudyDate", "")))
            if value.strip()}
    return Visit(**{name: "" if value.strip().casefold() in held else value
                    for name, value in visit.to_dict().items()})


def dicom_export_stem(outcome: ImageOutcome, include_identifiers: bool) -> str:
    """What the DICOM export of an analysed image calls it, in its files, its ZIP's name and its report
    (:func:`moleseg.core.dicomexport.export_stem`): the file's stem with identifiers, else a neutral name made
    from its pixels."""
    from moleseg.core.dicomexport import export_stem

    if outcome.analysis is None:
        raise ValueError(f"{outcome.name}: not analysed, nothing to export")
    return export_stem(outcome.stem, outcome.analysis.pixel_sha256, include_identifiers=include_identifiers)


def dicom_bundle(outcome: ImageOutcome, upload: Upload, model_version: str, pdf: Callable[[str], bytes],
                 include_identifiers: bool) -> bytes:
    """A ZIP of the DICOM files of an analysed image (:func:`moleseg.core.dicomexport.segmentation_files`):
    the mask as a Segmentation, the report as an Encapsulated PDF (``pdf`` makes it for the image name it is
    given: :func:`dicom_export_stem`) and, for an image that is not DICOM, the Secondary Capture both reference.
    ``include_identifiers``: keep a DICOM file's patient and study fields and the file's name (the user ticked
    the box of :data:`DICOM_PRIVACY_NOTE`)."""
    from moleseg import __version__
    from moleseg.core.dicomexport import segmentation_files
    from moleseg.core.report import zip_bundle

    if outcome.analysis is None:
        raise ValueError(f"{outcome.name}: not analysed, nothing to export")
    analysis = outcome.analysis
    return zip_bundle(segmentation_files(upload.data, analysis.segmentation.lesion, outcome.stem,
                              software_version=f"moleseg {__version__} {model_version}".strip(),
                              model_name=analysis.segmenter_name, pixel_size_mm=analysis.pixel_size_mm,
                              include_identifiers=include_identifiers, pdf=pdf, name=upload.name,
                              pixel_sha256=None if include_identifiers else analysis.pixel_sha256))
