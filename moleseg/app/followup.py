"""Services of the History and Compare pages and of the Analyse page's "Save to records" form: tables
of saved visits and of measurements, formatted for people. No Streamlit calls here."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from moleseg.app.analysis import Upload
from moleseg.app.deidentify import neutral_comparison
from moleseg.app.identity import Refusal
from moleseg.app.ui import plain_markdown
from moleseg.core.cleanup import CleanupSettings, border_band
from moleseg.core.edgecontact import edge_contact_ratio
from moleseg.core.imageio import read_image
from moleseg.core.measure import Measurement
from moleseg.core.render import overlay
from moleseg.core.pdf_report import pdf_report
from moleseg.core.report import display_unit
from moleseg.engine.compare import (AFTER_COLOR_NAME, BEFORE_COLOR_NAME, WITHIN_NOISE, Change, Comparison,
                                    compare_visits)
from moleseg.engine.pipeline import beyond_picture_note
from moleseg.engine.records import AuditEntry, Records
from moleseg.engine.recordtypes import MAX_RECORD_ID, NO_OWNER, LesionSummary, Record, SavedAnalysis, User
from moleseg.engine.segmenter import Segmenter

__all__ = ["COMPARE_SAVED", "COMPARE_UPLOADS", "COMPARE_VIEWS", "NOISE_CAPTION", "NO_IDENTIFIER", "PAGE_NOISE_PASSES",
           "SWIPE_HELP", "UNKNOWN_OWNER", "VIEW_BORDERS", "VIEW_CAPTIONS", "VIEW_SIDE_BY_SIDE", "VIEW_SWIPE",
           "WITHIN_NOISE", "ComparedUploads", "area_change_help",
           "audit_rows", "change_table", "comparable_lesions", "comparison_downloads", "compare_uploads", "first_compare_source",
           "in_visit_order", "lesion_label", "lesion_rows", "measurement_rows", "not_comparable_text", "owner_label",
           "saved_n_classes", "saved_notes", "saved_overlay", "saved_report", "settings_caption",
           "unidentified_visits", "uploaded_images", "visit_label", "visit_rows"]

#: Where the Compare page takes its two visits from.
COMPARE_UPLOADS: str = "two uploaded images"
COMPARE_SAVED: str = "two saved visits (History)"
#: The Compare page's views of the aligned pair.
VIEW_BORDERS: str = "both borders over the aligned after image"
VIEW_SWIPE: str = "swipe"
VIEW_SIDE_BY_SIDE: str = "side by side"
COMPARE_VIEWS: tuple[str, ...] = (VIEW_BORDERS, VIEW_SWIPE, VIEW_SIDE_BY_SIDE)
#: The caption of each view's picture, naming the borders' colours (:data:`moleseg.engine.compare.BEFORE_COLOR`,
#: :data:`~moleseg.engine.compare.AFTER_COLOR`), and the help of the swipe's slider.
VIEW_CAPTIONS: dict[str, str] = {
    VIEW_BORDERS: f"Aligned after image: before border {BEFORE_COLOR_NAME}, after border {AFTER_COLOR_NAME}",
    VIEW_SWIPE: f"Before ({BEFORE_COLOR_NAME} border) left of the line, aligned after image ({AFTER_COLOR_NAME} "
                "border) right of it",
    VIEW_SIDE_BY_SIDE: f"Before ({BEFORE_COLOR_NAME} border) and the aligned after image ({AFTER_COLOR_NAME} border)",
}
SWIPE_HELP: str = (f"Left of the line: the before image and its border ({BEFORE_COLOR_NAME}); right of it: the "
                   f"aligned after image and its border ({AFTER_COLOR_NAME}).")
#: Most simulated second photographs per visit the Compare page offers for a lesion's own noise (fewer than the
#: engine's :data:`moleseg.core.config.MAX_NOISE_PASSES`: the page waits for them).
PAGE_NOISE_PASSES: int = 8
#: Said under the Compare page's table of changes.
NOISE_CAPTION: str = (f"Noise: the smallest change each measurement can detect between two photographs of an "
                      f"unchanged lesion (repeatability coefficient, docs/repeatability.md). Changes "
                      f"{WITHIN_NOISE} are greyed. Colour shares change in percentage points (pp); rotation is "
                      f"counter-clockwise positive.")
#: How analyses saved without a lesion identifier are listed.
NO_IDENTIFIER: str = "(no identifier)"
#: How the owner of an analysis saved before records had owners is listed.
UNKNOWN_OWNER: str = "(saved before owners)"


def lesion_label(lesion: str) -> str:
    """The identifier as listed (``NO_IDENTIFIER`` for '')."""
    return lesion or NO_IDENTIFIER


def unidentified_visits(lesions: Sequence[LesionSummary]) -> int:
    """How many visits were saved without a lesion identifier (:meth:`Records.lesions` gathers them under '')."""
    return sum(summary.visits for summary in lesions if not summary.lesion)


def comparable_lesions(lesions: Sequence[LesionSummary], *, unidentified: bool = False) -> list[str]:
    """Identifiers of the lesions with two saved visits or more, the Compare page's choices. The visits saved
    without an identifier may show different lesions: '' (listed as :data:`NO_IDENTIFIER`) is offered only
    when ``unidentified`` (the user says they show one lesion)."""
    return [summary.lesion for summary in lesions
            if summary.visits >= 2 and (summary.lesion or unidentified)]


def first_compare_source(user: User | Refusal, records_of: Callable[[], Records] = Records) -> str:
    """What the Compare page first offers: :data:`COMPARE_SAVED` when ``user`` has a lesion with two saved
    visits (:func:`comparable_lesions`), else :data:`COMPARE_UPLOADS` (also for a refusal, and when the records
    cannot be read: the saved choice then says why)."""
    if isinstance(user, Refusal):
        return COMPARE_UPLOADS
    try:
        return COMPARE_SAVED if comparable_lesions(records_of().lesions(user)) else COMPARE_UPLOADS
    except (OSError, ValueError):
        return COMPARE_UPLOADS


def in_visit_order(before: Record, after: Record) -> tuple[Record, Record, str | None]:
    """``(earlier, later, note)``: the two visits picked as before and after, the earlier visit date first;
    ``note`` says so when they were picked the other way round (None when in order or on the same date)."""
    if before.visit_date <= after.visit_date:
        return before, after, None
    return after, before, (f"The visit picked as Before ({before.visit_date}) is dated after the one picked as "
                           f"After ({after.visit_date}): they are compared in date order, "
                           f"{after.visit_date} before {before.visit_date}.")


def lesion_rows(lesions: Sequence[LesionSummary]) -> list[dict[str, Any]]:
    """One row per lesion: identifier, number of visits, first and last visit."""
    return [{"lesion": lesion_label(s.lesion), "visits": s.visits, "first visit": s.first_visit,
             "last visit": s.last_visit} for s in lesions]


def _value(record: Record, column: str) -> str:
    found = next((m for m in record.measurements if m.column == column), None)
    return found.text if found else "\u2014"


def moment_text(iso_time: str) -> str:
    """A saved ISO timestamp (``2026-12-07T08:43:33+00:00``, the records' ``saved_at`` and audit times) for
    people: ``2026-12-07 08:43:33 UTC``, or ``UTC+01:00`` for another offset; text that is not such a timestamp
    as it is."""
    try:
        moment = datetime.fromisoformat(iso_time)
    except (TypeError, ValueError):
        return str(iso_time)
    offset = moment.isoformat()[19:]
    zone = "" if not offset else " UTC" if offset in ("+00:00", "Z") else f" UTC{offset}"
    return f"{moment:%Y-%m-%d %H:%M:%S}{zone}"


def owner_label(owner: str) -> str:
    """The owner as listed (:data:`UNKNOWN_OWNER` for :data:`moleseg.engine.recordtypes.NO_OWNER`)."""
    return UNKNOWN_OWNER if owner == NO_OWNER else owner


def visit_rows(records: Sequence[Record], *, owners: bool = False) -> list[dict[str, Any]]:
    """One row per saved visit: id, date, body site, image, model, area (px and mm² when known), notes; and who
    saved it when ``owners`` (an admin who sees every user's visits)."""
    return [{"id": r.id, **({"saved by": owner_label(r.owner)} if owners else {}), "visit date": r.visit_date,
             "body site": r.body_site, "image": r.image_name, "model": r.model_name,
             "area (px²)": _value(r, "area_px"), "area (mm²)": _value(r, "area_mm2"),
             "corrected": "yes" if r.corrected else "no", "notes": r.notes} for r in records]


def audit_rows(entries: Sequence[AuditEntry]) -> list[dict[str, str]]:
    """One row per line of a record's audit trail: when, who, what (oldest first); a hand-over says from whom to
    whom (``adopted from moleseg to Anna``)."""
    return [{"when": moment_text(entry.at), "who": entry.user,
             "what": entry.action if entry.to_owner is None else
             f"{entry.action} from {owner_label(entry.from_owner or NO_OWNER)} to {entry.to_owner}"}
            for entry in entries]


def linked_record_id(text: str) -> int | None:
    """The record id of a ``?visit=<id>`` link's ``text`` (untrusted: anyone may send a link), or None when it
    is not one: ASCII digits only (``str.isdigit`` also takes ``'²'``, which ``int`` refuses), at most
    :data:`~moleseg.engine.recordtypes.MAX_RECORD_ID`."""
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()) or len(digits) > len(str(MAX_RECORD_ID)):
        return None
    return int(digits) if int(digits) <= MAX_RECORD_ID else None


def linked_record_refusal(text: str) -> str:
    """What the History page says of a ``?visit=`` link that names no record ``text`` may open: the link's
    text shown as it is (:func:`moleseg.app.ui.plain_markdown`: a crafted link draws no link or picture)."""
    return f"Cannot open this record: no saved analysis with id {plain_markdown(text)}."


def visit_label(record: Record) -> str:
    """A one-line name of a visit for a select box."""
    parts = [record.visit_date, record.name, record.body_site]
    return " \u00b7 ".join(part for part in parts if part)


def measurement_rows(measurements: Sequence[Measurement]) -> list[dict[str, str]]:
    """Rows ``{"measurement", "value", "unit", "meaning"}``, values rounded per quantity as on the Analyse page
    (:attr:`moleseg.core.measure.Measurement.text`)."""
    return [{"measurement": m.label, "value": m.text, "unit": display_unit(m.key, m.unit),
             "meaning": m.meaning} for m in measurements]


def saved_n_classes(saved: SavedAnalysis) -> int:
    """The number of classes of the model that made a saved visit: 2 (cells) when its measurements count
    objects, 3 (a mole's lesion and border) otherwise."""
    return 2 if any(m.key == "object_count" for m in saved.record.measurements) else 3


def saved_notes(saved: SavedAnalysis) -> str | None:
    """What the saved visit's report says besides its measurements, as the Analyse page's did: the lesion may
    extend beyond the picture (read again from the saved mask; not for cells, cut by the frame as expected)."""
    return None if saved_n_classes(saved) == 2 else beyond_picture_note(edge_contact_ratio(saved.mask))


def saved_overlay(saved: SavedAnalysis):
    """The saved image drawn as the Analyse page drew it: the saved lesion filled and its border band (the
    record's cleanup width and shape) on top, ``(H, W, 3)`` uint8."""
    if not saved.mask.any():
        return saved.image
    lesion = saved.mask.astype(bool)
    return overlay(saved.image, lesion, border_band(lesion, CleanupSettings.from_dict(saved.record.cleanup)))


def saved_report(saved: SavedAnalysis, image_name: str | None = None) -> bytes:
    """The one-page PDF report of a saved visit (:func:`moleseg.core.pdf_report.pdf_report`): its settings, visit,
    notes (:func:`saved_notes`) and a title for its model's task (:func:`saved_n_classes`); ``image_name``
    printed (default: the record's :attr:`~moleseg.engine.recordtypes.Record.name`)."""
    record = saved.record
    return pdf_report(image=saved.image, overlay=saved_overlay(saved), measurements=record.measurements,
                      image_name=image_name or record.name, settings=record.settings(), visit=record.visit(),
                      notes=saved_notes(saved), n_classes=saved_n_classes(saved))


def exported_report(records: Records, user: User, record_id: int, saved: SavedAnalysis) -> bytes:
    """The History page's PDF export of a saved visit (:func:`saved_report`), written to its audit trail as
    ``exported`` as the ZIP export (:meth:`moleseg.engine.records.Records.export`) is."""
    records.log(user, record_id, "exported")
    return saved_report(saved)


def not_comparable_text(comparison: Comparison) -> str:
    """The Compare page's leading warning when the two visits cannot be compared."""
    return (f"{comparison.reason}; no change is reported: the figures would compare different lesions, views or "
            "light")


def area_change_help(area: Change | None) -> str:
    """The help of the Compare page's area figure: its noise and whether the change exceeds it."""
    if area is None or area.beyond_noise is None:
        return "The noise of the area is not known."
    noise = 100.0 * area.noise / area.before if area.before else float("nan")
    reading = "beyond measurement noise" if area.beyond_noise else WITHIN_NOISE
    return f"Noise \u00b1{noise:.1f} %: {reading}."


def settings_caption(comparison: Comparison) -> str:
    """The Compare page's line of what the comparison used: pixel size (the one applied), alignment, noise; markdown,
    the model's name escaped (:func:`moleseg.app.ui.plain_markdown`)."""
    size = (f"{comparison.pixel_size_mm:g} mm per px" if comparison.pixel_size_mm
            else "none (lengths in px only)")
    noise = comparison.noise_source("the published repeatability (docs/repeatability.md)")
    return f"Pixel size used: {size}. Model: {plain_markdown(comparison.model_name)}. Noise from {noise}."


def comparison_downloads(comparison: Comparison, before_name: str, after_name: str,
                         with_names: bool) -> tuple[str, Callable[[], bytes]]:
    """The Compare page's downloads of ``comparison`` of the images named ``before_name`` and ``after_name``: the
    JSON summary (the two names and :meth:`Comparison.to_json`) and what makes the PDF when clicked; without names
    (:func:`moleseg.app.deidentify.neutral_comparison`) unless ``with_names``."""
    if not with_names:
        comparison, before_name, after_name = neutral_comparison(comparison)
    summary = {"before": before_name, "after": after_name, **comparison.to_json()}
    return json.dumps(summary, indent=2), partial(comparison.pdf, before_name, after_name)


def change_table(comparison: Comparison):
    """The table of changes (:meth:`Comparison.table`) as a pandas Styler, the rows within noise in grey."""
    import pandas as pd

    rows = comparison.table()
    frame = pd.DataFrame(rows[1:], columns=rows[0])
    muted = set(index - 1 for index in comparison.within_noise_rows())
    return frame.style.apply(lambda row: ["color: #9a9a9a" if row.name in muted else "" for _ in row], axis=1)


@dataclass(frozen=True)
class ComparedUploads:
    """The Compare page's last comparison of two uploaded images, kept in the session (one user's images, as its
    ``compare_result``): the model's :attr:`~moleseg.app.models.ModelChoice.key`, the uploads' digests
    (:attr:`moleseg.app.analysis.Upload.key`), the settings it was made with and the result."""

    model_key: str
    upload_keys: tuple[str, str]
    settings: tuple[float | None, bool, int]  # pixel size, allow_scale, noise passes
    comparison: Comparison


def uploaded_images(held: ComparedUploads | None, before: Upload, after: Upload):
    """The two uploads' pixels: those of ``held`` when it compared the very same files (nothing decoded again),
    else read (:class:`moleseg.core.imageio.ImageReadError` names a file that cannot be)."""
    if held is not None and held.upload_keys == (before.key, after.key):
        return held.comparison.before_image, held.comparison.after_image
    return read_image(before.data, name=before.name), read_image(after.data, name=after.name)


def compare_uploads(held: ComparedUploads | None, segmenter: Segmenter, model_key: str, before: Upload,
                    after: Upload, images, *, pixel_size_mm: float | None, allow_scale: bool,
                    noise_passes: int) -> ComparedUploads:
    """The comparison of two uploads (``images``: their pixels, :func:`uploaded_images`): ``held`` itself when
    it was made from the same model, files and settings (a rerun for the view, the swipe or a download); with
    the same model and files but other settings its segmentations are taken, and its lesion noise when the
    passes and pixel size are the same (:func:`moleseg.engine.compare.compare_visits` with ``earlier``), so the
    network runs again only for another model, another file or noise to measure anew.

    Raises
    ------
    ValueError
        As :func:`moleseg.engine.compare.compare_visits`.
    """
    files, settings = (before.key, after.key), (pixel_size_mm, allow_scale, noise_passes)
    if held is not None and (held.model_key, held.upload_keys, held.settings) == (model_key, files, settings):
        return held
    same_pair = held is not None and (held.model_key, held.upload_keys) == (model_key, files)
    comparison = compare_visits(segmenter, *images, pixel_size_mm=pixel_size_mm, allow_scale=allow_scale,
                                noise_passes=noise_passes, earlier=held.comparison if same_pair else None)
    return ComparedUploads(model_key, files, settings, comparison)
