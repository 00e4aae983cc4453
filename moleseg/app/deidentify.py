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

The exports themselves are made by the same functions either way (:mod:`moleseg.app.results`): only what they
are given changes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping

from moleseg.app.analysis import ImageOutcome, unique_stems
from moleseg.core.dicomexport import NEUTRAL_ID_DIGITS, neutral_name
from moleseg.core.report import Visit

__all__ = ["UNREAD_WORD", "WITHOUT_NAMES_HELP", "neutral_outcomes", "neutral_visit", "neutral_visits"]

#: What an export without names calls a file that could not be read (it has no pixels to name it after).
UNREAD_WORD: str = "unread"
#: What the Analyse page says of its "Exports without names" switch.
WITHOUT_NAMES_HELP: str = (
    "For results leaving the clinic. Every download below (PNGs, PDF, DICOM, outlines, CSV, settings, ZIP) then "
    "calls each image after its pixels (e.g. lesion-1a2b3c4d), not its file's name, and leaves out the visit's "
    "identifier and notes and all of its date but the year; the DICOM export leaves out the DICOM file's patient "
    "and study fields whatever the box above says. The records you save keep the names.")


def _neutral_file_name(outcome: ImageOutcome) -> str:
    """``outcome``'s neutral name with its file's extension (lower case; none when it had none)."""
    suffix = Path(outcome.name.replace("\\", "/")).suffix.lower()
    if outcome.analysis is not None:
        return neutral_name(outcome.analysis.pixel_sha256) + suffix
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
    return Visit(lesion="", visit_date=visit.visit_date[:4], body_site=visit.body_site, notes="")


def neutral_visits(visits: Mapping[str, Visit] | None) -> dict[str, Visit]:
    """:func:`neutral_visit` of each visit, by the same upload key."""
    return {key: neutral_visit(visit) for key, visit in (visits or {}).items()}
