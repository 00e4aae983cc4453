"""The Analyse page's exports of its latest results. The page's results fragment reruns alone when a cleanup,
colour or pixel-size widget moves, while the visit form and the download buttons below it stay as drawn; so the
fragment publishes each run's results in one :class:`LatestResults` per session, and every download reads them
when clicked (a deferred download's data is made then), holding the latest cleanup. The buttons are drawn again
only when what they show changes (:meth:`LatestResults.layout`: another image in view, ...).
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Mapping, Sequence

from moleseg.app.analysis import ImageOutcome, Upload
from moleseg.app.deidentify import neutral_outcomes, neutral_visit, neutral_visits
from moleseg.app.results import (batch_bundle, dicom_bundle, measurements_csv_bytes, measurements_sidecar_bytes,
                                 objects_csv_bytes, outline_downloads, without_dicom_identifiers)
from moleseg.core.report import Visit


@dataclass(frozen=True)
class Shown:
    """One run's results: every outcome, the one in view and its upload, the model's name and version, and
    whether the image in view is shown in full (in a batch, only when asked: then its visit and its own exports
    are drawn too)."""

    outcomes: tuple[ImageOutcome, ...]
    outcome: ImageOutcome
    upload: Upload
    segmenter_name: str
    model_version: str
    in_full: bool = True

    @property
    def has_objects(self) -> bool:
        """True when some analysed image has objects (cells, nuclei): the objects' CSV is offered."""
        return any(o.analysis is not None and bool(o.analysis.objects) for o in self.outcomes)


def without_names(shown: Shown) -> Shown:
    """``shown`` as an export without names has it (:mod:`moleseg.app.deidentify`): every outcome, the one in view
    included, named after its pixels."""
    outcomes = neutral_outcomes(shown.outcomes)
    in_view = next(outcome for outcome in outcomes if outcome.key == shown.outcome.key)
    return dataclasses.replace(shown, outcomes=outcomes, outcome=in_view)


def export_stem(shown: Shown, with_names: bool) -> str:
    """The stem of the image in view's own downloads: its file's, or without names its pixels'."""
    return (shown if with_names else without_names(shown)).outcome.stem


def outline_count(outcome: ImageOutcome) -> int:
    """How many outlines the image in view has, 0, 1 or 2 for several
    (:func:`moleseg.core.outlines.outline_polygons`): what decides its outline files and their names."""
    from moleseg.core.outlines import outline_polygons

    analysis = outcome.analysis
    if analysis is None:
        return 0
    return min(2, len(outline_polygons(analysis.segmentation.lesion, all_objects=analysis.cells)))


def _report(shown: Shown, visit: Visit, image_name: str | None) -> bytes:
    """The one-page PDF report of ``shown``'s image in view with its ``visit``, dated now, naming the image
    ``image_name`` (default: its file's name)."""
    return shown.outcome.analysis.pdf(image_name or shown.outcome.name, model_version=shown.model_version,
                                      created=datetime.now().astimezone(), visit=visit)


def layout_of(shown: Shown | None) -> tuple:
    """What the visit form and the export buttons of ``shown`` are drawn from (the image in view, its name,
    whether it is corrected by hand, its :func:`outline_count`, whether some image has cells, the model), so that
    the page draws them again only when this changes; ``()`` without results."""
    if shown is None:
        return ()
    outcome = shown.outcome
    analysis = outcome.analysis
    return (outcome.key, outcome.name, outcome.stem, analysis is not None and analysis.corrected_by_hand,
            outline_count(outcome), shown.has_objects, shown.segmenter_name, shown.model_version, shown.in_full)


class LatestResults:
    """The latest results of one browser session's Analyse page (:class:`Shown`, replaced whole by each run of
    its results fragment), and the files the download buttons make of them when clicked. Thread-safe: a
    download runs on the server's request thread while the fragment may be running."""

    def __init__(self) -> None:
        self._shown: Shown | None = None
        self._layout: tuple = ()
        self._lock = threading.Lock()
        self.drawn: tuple = ()  # the layout the page's export buttons were drawn from last

    @property
    def shown(self) -> Shown | None:
        with self._lock:
            return self._shown

    @property
    def layout(self) -> tuple:
        """:func:`layout_of` the latest results."""
        with self._lock:
            return self._layout

    def publish(self, shown: Shown | None) -> None:
        """Take a run's results (None when there are none to show)."""
        layout = layout_of(shown)
        with self._lock:
            self._shown, self._layout = shown, layout

    def _now(self, with_names: bool = True) -> Shown:
        """The latest results, as an export without names has them unless ``with_names``."""
        shown = self.shown
        if shown is None or shown.outcome.analysis is None:
            raise ValueError("no analysed image to export")
        return shown if with_names else without_names(shown)

    def overlay_png(self) -> bytes:
        """The overlay of the image in view, lossless PNG."""
        return self._now().outcome.analysis.overlay_png()

    def mask_png(self) -> bytes:
        """The lesion (or cells) mask of the image in view, PNG, 255 inside."""
        return self._now().outcome.analysis.mask_png()

    def pdf(self, visit: Visit, with_names: bool = True) -> bytes:
        """The one-page PDF report of the image in view with its ``visit``, dated now; without names
        (:mod:`moleseg.app.deidentify`) unless ``with_names``."""
        return _report(self._now(with_names), visit if with_names else neutral_visit(visit), None)

    def dicom(self, visit: Visit, include_identifiers: bool, with_names: bool = True) -> bytes:
        """The DICOM Segmentation and report of the image in view (:func:`moleseg.app.results.dicom_bundle`); the
        report names the image's file only with identifiers, else the export's neutral name, and then prints no
        visit field that holds the DICOM file's own identifiers
        (:func:`moleseg.app.results.without_dicom_identifiers`). Without ``with_names``, never with identifiers,
        and the visit as every export without names prints it (:func:`moleseg.app.deidentify.neutral_visit`)."""
        shown = self._now()
        include_identifiers = include_identifiers and with_names
        if not include_identifiers:
            visit = without_dicom_identifiers(visit if with_names else neutral_visit(visit), shown.upload)

        def report(export_name: str) -> bytes:
            return _report(shown, visit, None if include_identifiers else export_name)

        return dicom_bundle(shown.outcome, shown.upload, shown.model_version, report, include_identifiers)

    def outline(self, file_name: str, with_names: bool = True) -> bytes:
        """The outline file ``file_name`` of the image in view (:func:`moleseg.app.results.outline_downloads`; named
        after its pixels unless ``with_names``)."""
        shown = self._now(with_names)
        for _, name, data, _ in outline_downloads(shown.outcome):
            if name == file_name:
                return data
        raise ValueError(f"{shown.outcome.name}: no outline file {file_name}")

    def measurements_csv(self, visits: Mapping[str, Visit], with_names: bool = True) -> bytes:
        """The measurements of every image as CSV (without names unless ``with_names``)."""
        shown = self._now(with_names)
        return measurements_csv_bytes(shown.outcomes, shown.segmenter_name, _visits(visits, with_names))

    def sidecar(self, visits: Mapping[str, Visit], with_names: bool = True) -> bytes:
        """The JSON settings of the CSV's rows, dated now (without names unless ``with_names``)."""
        shown = self._now(with_names)
        return measurements_sidecar_bytes(shown.outcomes, shown.model_version, _visits(visits, with_names),
                                          datetime.now().astimezone())

    def bundle(self, visits: Mapping[str, Visit], with_names: bool = True) -> bytes:
        """The ZIP of everything (:func:`moleseg.app.results.batch_bundle`), dated now (without names unless
        ``with_names``)."""
        shown = self._now(with_names)
        return batch_bundle(shown.outcomes, shown.segmenter_name, shown.model_version, datetime.now().astimezone(),
                            _visits(visits, with_names))

    def objects_csv(self, with_names: bool = True) -> bytes:
        """Every cell / nucleus of every image as CSV (without names unless ``with_names``)."""
        return objects_csv_bytes(self._now(with_names).outcomes)


def _visits(visits: Mapping[str, Visit], with_names: bool) -> Mapping[str, Visit]:
    """``visits`` as an export has them: as they are, or without names (:func:`moleseg.app.deidentify.neutral_visits`)."""
    return visits if with_names else neutral_visits(visits)


def outline_buttons(outcome: ImageOutcome) -> Sequence[tuple[str, str, str]]:
    """``(label, file name, MIME type)`` of each outline download of an image
    (:func:`moleseg.app.results.outline_downloads`)."""
    return [(label, name, mime) for label, name, _, mime in outline_downloads(outcome)]
