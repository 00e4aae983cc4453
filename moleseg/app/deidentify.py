"""Exports without names: what the Analyse page's exports hold when a user leaves names out (to share results
outside the clinic). Clinicians name image files after patients, and the visit's free-text fields may hold a name
or a record number, so such an export

- calls each image :func:`moleseg.core.dicomexport.neutral_name` of its decoded pixels (``lesion-1a2b3c4d``: the
  same picture gets the same name in every export, the DICOM export's included) instead of its file's name, in
  the download's file name, the files inside a ZIP, the CSV's ``image`` column, the settings sidecar, the PDF
  report and the outline files; a file that could not be read, which has no pixels, is called
  :data:`UNREAD_WORD` and the first :data:`moleseg.core.dicomexport.NEUTRAL_ID_DIGITS` hex digits of the digest of
  its bytes, and its error message names it so;
- leaves out the visit's patient / lesion identifier and its notes, and keeps only the year of its date (the
  other elements of a date are identifiers under HIPAA's Safe Harbor rule, 45 CFR 164.514(b)(2)); the body site
  stays.

The History page's export of a saved visit (:func:`neutral_export`: its ZIP and PDF, the record's own number,
who saved it and the year of when left out too) and the Compare page's JSON and PDF (:func:`neutral_comparison`)
follow the same rule with the same switch; ``moleseg predict --without-names`` names its files after the pixels
the same way (:func:`moleseg.core.dicomexport.neutral_file_name`).

The exports themselves are made by the same functions either way (:mod:`moleseg.app.results`,
:meth:`moleseg.engine.records.ExportedVisit.zip`, :meth:`moleseg.engine.compare.Comparison.pdf`): only what they
are given changes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from moleseg.app.analysis import ImageOutcome, unique_stems
from moleseg.core.dataset import image_sha256
from moleseg.core.dicomexport import NEUTRAL_ID_DIGITS, neutral_file_name, neutral_name
from moleseg.core.report import Visit
from moleseg.engine.records import ExportedVisit

if TYPE_CHECKING:
    from moleseg.engine.compare import Comparison
    from moleseg.engine.recordtypes import SavedAnalysis

__all__ = ["COMPARE_WITHOUT_NAMES_HELP", "HISTORY_WITHOUT_NAMES_HELP", "LEFT_OUT_OF_RECORDS", "UNREAD_WORD",
           "WITHOUT_NAMES_HELP", "WITHOUT_NAMES_LABEL", "exported_visit", "neutral_comparison", "neutral_date",
           "neutral_export", "neutral_outcomes", "neutral_visit", "neutral_visits"]

#: What an export without names calls a file that could not be read (it has no pixels to name it after).
UNREAD_WORD: str = "unread"
#: The switch of every page that exports (Analyse, History, Compare).
WITHOUT_NAMES_LABEL: str = "Exports without names"
#: The fields of a saved record that its export without names leaves out of its JSON: the server's number and
#: folder of the record (they lead back to it and its names) and who saved it.
LEFT_OUT_OF_RECORDS: tuple[str, ...] = ("id", "uid", "owner")


def without_names_help(downloads: str, ending: str) -> str:
    """What a page says of its :data:`WITHOUT_NAMES_LABEL` switch: ``downloads`` lists them, ``ending`` ends it."""
    return (f"For results leaving the clinic. Every download below ({downloads}) then calls each image after its "
            "pixels (e.g. lesion-1a2b3c4d), not its file's name, and leaves out the visit's identifier and notes and "
            f"all of its date but the year{ending}")


#: What the Analyse page says of its switch.
WITHOUT_NAMES_HELP: str = without_names_help(
    "PNGs, PDF, DICOM, outlines, CSV, settings, ZIP", "; the DICOM export leaves out the DICOM file's patient and "
    "study fields whatever the box above says. The records you save keep the names.")
#: What the History page says of its switch.
HISTORY_WITHOUT_NAMES_HELP: str = without_names_help(
    "ZIP, PDF", ", and the record's number and who saved it. The record on the server keeps its names.")
#: What the Compare page says of its switch.
COMPARE_WITHOUT_NAMES_HELP: str = without_names_help(
    "JSON, PDF", ". The saved visits keep their names.")


def _neutral_file_name(outcome: ImageOutcome) -> str:
    """``outcome``'s neutral name with its file's extension (lower case; none when it had none)."""
    if outcome.analysis is not None:
        return neutral_file_name(outcome.analysis.pixel_sha256, outcome.name)
    suffix = Path(outcome.name.replace("\\", "/")).suffix.lower()
    return f"{UNREAD_WORD}-{outcome.key[:NEUTRAL_ID_DIGITS]}{suffix}"


def neutral_outcomes(outcomes: tuple[ImageOutcome, ...] | list[ImageOutcome]) -> tuple[ImageOutcome, ...]:
    """``outcomes`` as an export without names has them: each named after its pixels (:func:`_neutral_file_name`),
    its stem unique among them ignoring case (two uploads of the same picture: ``lesion-1a2b3c4d`` and
    ``lesion-1a2b3c4d_2``), an error message naming the file by that name; analyses and keys unchanged."""
    names = [_neutral_file_name(outcome) for outcome in outcomes]
    return tuple(dataclasses.replace(outcome, name=name, stem=stem,
                                     error=outcome.error.replace(outcome.name, name) if outcome.error else outcome.error)
                 for outcome, name, stem in zip(outcomes, names, unique_stems(names)))


def neutral_visit(visit: Visit | None) -> Visit | None:
    """``visit`` without its patient / lesion identifier and notes, its date reduced to the year (None stays None)."""
    if visit is None:
        return None
    return Visit(lesion="", visit_date=neutral_date(visit.visit_date), body_site=visit.body_site, notes="")


def neutral_date(text: str) -> str:
    """An ISO date or time (``2026-03-14``, ``2026-03-14T09:30:00+01:00``) as an export without names has it:
    its year only ('' stays '')."""
    return text[:4]


def neutral_visits(visits: Mapping[str, Visit] | None) -> dict[str, Visit]:
    """:func:`neutral_visit` of each visit, by the same upload key."""
    return {key: neutral_visit(visit) for key, visit in (visits or {}).items()}


def neutral_export(saved: SavedAnalysis) -> ExportedVisit:
    """The History page's export of ``saved`` without names: its files and image named after its pixels, its
    visit as :func:`neutral_visit` has it, when it was saved cut to the year, :data:`LEFT_OUT_OF_RECORDS` left
    out of its JSON. The record itself is not changed."""
    record = saved.record
    digest = image_sha256(saved.image)
    visit = neutral_visit(record.visit())
    neutral = dataclasses.replace(record, lesion=visit.lesion, visit_date=visit.visit_date, notes=visit.notes,
                                  image_name=neutral_file_name(digest, record.image_name),
                                  saved_at=neutral_date(record.saved_at), owner="", uid="")
    details = {key: value for key, value in ExportedVisit.as_saved(dataclasses.replace(saved, record=neutral))
               .details.items() if key not in LEFT_OUT_OF_RECORDS}
    return ExportedVisit(dataclasses.replace(saved, record=neutral), neutral_name(digest), details)


def exported_visit(with_names: bool) -> Callable[[SavedAnalysis], ExportedVisit]:
    """How the History page's exports make a saved visit leave: as saved, or without names
    (:func:`neutral_export`)."""
    return ExportedVisit.as_saved if with_names else neutral_export


def neutral_comparison(comparison: Comparison) -> tuple[Comparison, str, str]:
    """``comparison`` as the Compare page's exports without names have it, with the names of its before and after
    images: no lesion identifier, each visit's date cut to the year, each image named after its pixels
    (:func:`moleseg.core.dicomexport.neutral_name`, as the Analyse page's exports name it)."""
    neutral = dataclasses.replace(comparison, lesion_id="", before_date=neutral_date(comparison.before_date),
                                  after_date=neutral_date(comparison.after_date))
    return (neutral, neutral_name(image_sha256(comparison.before_image)),
            neutral_name(image_sha256(comparison.after_image)))
