"""Two visits of one lesion compared: align, segment both, and report what changed.

The images are aligned rigidly (:mod:`moleseg.core.registration`; a similarity transform only with
``allow_scale=True``), each is segmented by the same segmenter with the same cleanup, and every
measurement of :func:`moleseg.core.measure.measure_lesion` (shape, border, colours) is reported before,
after, as a difference and as a relative change. With a rigid fit the after image keeps its own pixels
(rotation and translation change no measurement); with a scale the after lesion is measured once drawn
in the before frame, so both are in the before image's pixels. When the alignment failed
(``registration.ok`` is False) the result carries a warning: the change figures then compare two
lesions that may not be the same.

Descriptive only: no diagnosis is made from the changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moleseg.core.cleanup import CleanupSettings, border_band
from moleseg.core.comparison_report import comparison_pdf
from moleseg.core.measure import Measurement, decimals, measure_lesion, value_text
from moleseg.core.registration import Registration, register, warp_image, warp_mask
from moleseg.core.render import contour_overlay, side_by_side, swipe
from moleseg.core.report import display_unit
from moleseg.engine.pipeline import check_image_side
from moleseg.engine.records import SavedAnalysis
from moleseg.engine.segmenter import MODEL_THRESHOLD, Segmentation, Segmenter, segment

__all__ = ["BEFORE_COLOR", "AFTER_COLOR", "Comparison", "LesionMasks", "compare_lesions", "compare_records",
           "compare_visits"]

#: Outline colours (RGB) of the before and after lesions in the comparison pictures.
BEFORE_COLOR: tuple[int, int, int] = (0, 255, 255)
AFTER_COLOR: tuple[int, int, int] = (255, 0, 255)


@dataclass(frozen=True)
class Change:
    """One measurement at both visits.

    ``change`` is ``after - before``; ``change_percent`` is ``100 * change / before`` (NaN when
    ``before`` is 0 or undefined).
    """

    key: str
    label: str
    unit: str
    before: float
    after: float

    @property
    def change(self) -> float:
        return self.after - self.before

    @property
    def change_percent(self) -> float:
        if not math.isfinite(self.before) or self.before == 0:
            return math.nan
        return 100.0 * self.change / abs(self.before)

    def texts(self) -> tuple[str, str, str, str]:
        """Before, after, change and change % for people, rounded per measurement as the Analyse page, the
        CSV and the PDF write it (:func:`moleseg.core.measure.value_text`); the change to the finer of the
        two visits' decimals, the change % as a share (0.1 %)."""
        places = max(decimals(self.key, self.unit, self.before), decimals(self.key, self.unit, self.after))
        return (value_text(self.key, self.unit, self.before), value_text(self.key, self.unit, self.after),
                value_text(self.key, self.unit, self.change, places), value_text("change", "%", self.change_percent))


@dataclass(frozen=True)
class LesionMasks:
    """A lesion given as masks rather than segmented here (a saved record): ``(H, W)`` bool lesion and its
    border band (None when there is none)."""

    lesion: np.ndarray
    border: np.ndarray | None = None


@dataclass
class Comparison:
    """Everything the Compare page, ``moleseg compare`` and the comparison PDF show."""

    before_image: np.ndarray
    after_image: np.ndarray
    before: Segmentation | LesionMasks
    after: Segmentation | LesionMasks
    registration: Registration
    changes: list[Change]
    pixel_size_mm: float | None = None
    allow_scale: bool = False
    model_name: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def aligned_after_image(self) -> np.ndarray:
        """The after image drawn in the before image's frame."""
        return warp_image(self.after_image, self.registration, self.before_image.shape)

    @property
    def aligned_after_lesion(self) -> np.ndarray:
        """The after lesion drawn in the before image's frame, bool."""
        return warp_mask(self.after.lesion, self.registration, self.before_image.shape)

    def change(self, key: str, unit: str = "px") -> Change | None:
        """The change of one measurement (``key`` and ``unit`` as in :class:`Measurement`), or None."""
        return next((c for c in self.changes if c.key == key and c.unit == unit), None)

    @property
    def area_change_percent(self) -> float:
        found = self.change("area", "px")
        return found.change_percent if found else math.nan

    def borders_picture(self) -> np.ndarray:
        """The aligned after image with the before border (cyan) and the after border (magenta) drawn."""
        picture = contour_overlay(self.aligned_after_image, self.before.lesion, color=BEFORE_COLOR)
        return contour_overlay(picture, self.aligned_after_lesion, color=AFTER_COLOR)

    def side_by_side_picture(self) -> np.ndarray:
        """Before (its border) and the aligned after image (its border) next to each other."""
        return side_by_side(contour_overlay(self.before_image, self.before.lesion, color=BEFORE_COLOR),
                            contour_overlay(self.aligned_after_image, self.aligned_after_lesion, color=AFTER_COLOR))

    def swipe_picture(self, position: float) -> np.ndarray:
        """A wipe across the aligned pair: the before image with its border (cyan) left of ``position`` (0..1 of
        the width), the aligned after image with its border (magenta) from there on."""
        return swipe(contour_overlay(self.before_image, self.before.lesion, color=BEFORE_COLOR),
                     contour_overlay(self.aligned_after_image, self.aligned_after_lesion, color=AFTER_COLOR),
                     position)

    def table(self) -> list[list[str]]:
        """Rows of text for people: a heading, then one row per measurement with px and mm side by side,
        each value rounded as the Analyse page shows it (:meth:`Change.texts`).

        Columns: measurement, before, after, change, change in % (of the px value).
        """
        rows = [["Measurement", "Before", "After", "Change", "Change %"]]
        keys = list(dict.fromkeys(c.key for c in self.changes))
        for key in keys:
            group = [(c, c.texts()) for c in self.changes if c.key == key]

            def cells(column: int) -> str:
                parts = [f"{texts[column]} {display_unit(c.key, c.unit)}".strip() for c, texts in group]
                return parts[0] + (f" ({', '.join(parts[1:])})" if len(parts) > 1 else "")

            first, first_texts = group[0]
            rows.append([first.label, cells(0), cells(1), cells(2), first_texts[3]])
        return rows

    def header(self, before_name: str = "before", after_name: str = "after") -> list[tuple[str, str]]:
        """The lines that say how this comparison was made (for the PDF and the page)."""
        r = self.registration
        transform = "similarity (scale allowed)" if self.allow_scale else "rigid (rotation + translation)"
        alignment = (f"{transform}; rotation {r.rotation_deg:.2f} deg, translation ({r.translation_px[0]:.1f}, "
                     f"{r.translation_px[1]:.1f}) px, scale {r.scale:.3f}; quality {r.quality:.2f} "
                     f"({'ok' if r.ok else 'FAILED'})")
        size = f"{self.pixel_size_mm:g} mm per pixel" if self.pixel_size_mm else "unknown (lengths in px only)"
        return [("Before", before_name), ("After", after_name), ("Model", self.model_name),
                ("Alignment", alignment), ("Pixel size", size)]

    def pdf(self, before_name: str = "before", after_name: str = "after", created: datetime | None = None) -> bytes:
        """A one-page PDF: the before image with its border, the aligned after image with both borders,
        how they were aligned, the warnings and the table of changes."""
        before_picture = contour_overlay(self.before_image, self.before.lesion, color=BEFORE_COLOR)
        return comparison_pdf(before=before_picture, after=self.borders_picture(),
                              header=self.header(before_name, after_name), table=self.table(),
                              warnings=self.warnings, created=created)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary: the transform, its quality, warnings and every change.

        NaN values become None.
        """
        def number(value: float) -> float | None:
            return float(value) if math.isfinite(value) else None

        r = self.registration
        return {
            "rotation_deg": number(r.rotation_deg),
            "translation_px": [number(r.translation_px[0]), number(r.translation_px[1])],
            "scale": number(r.scale),
            "transform": "similarity" if self.allow_scale else "rigid",
            "registration_quality": number(r.quality),
            "registration_ok": r.ok,
            "registration_inliers": r.inliers,
            "area_change_percent": number(self.area_change_percent),
            "pixel_size_mm": self.pixel_size_mm,
            "model": self.model_name,
            "warnings": list(self.warnings),
            "changes": [
                {"key": c.key, "label": c.label, "unit": c.unit, "before": number(c.before), "after": number(c.after),
                 "change": number(c.change), "change_percent": number(c.change_percent)}
                for c in self.changes
            ],
        }


def _measure(image: np.ndarray, lesion: np.ndarray, border: np.ndarray | None,
             pixel_size_mm: float | None) -> list[Measurement]:
    return measure_lesion(lesion, border=border if border is not None and border.any() else None,
                          pixel_size_mm=pixel_size_mm, image=image)


def compare_visits(segmenter: Segmenter, before_image: np.ndarray, after_image: np.ndarray, *,
                   pixel_size_mm: float | None = None, allow_scale: bool = False,
                   settings: CleanupSettings | None = None, lesion_threshold: Any = MODEL_THRESHOLD) -> Comparison:
    """Align two visits, segment both with ``segmenter`` and report every measurement's change.

    Parameters
    ----------
    segmenter : Segmenter
    before_image, after_image : (H, W, 3) uint8 RGB
        The earlier and the later photograph of the same lesion, same device.
    pixel_size_mm : float, optional
        Millimetres per pixel of the before image (and of the after one: same magnification); adds mm.
    allow_scale : bool
        Fit a scale too (the magnification differs); see :mod:`moleseg.core.registration`.
    settings, lesion_threshold
        As in :func:`moleseg.engine.segmenter.segment`, the same for both images.

    Raises
    ------
    ValueError
        Not RGB uint8 images, an image too small (a side under
        :data:`moleseg.core.config.MIN_IMAGE_SIDE_PX`), or no lesion found in one of them (the message says which).
    """
    for which, image in (("before", before_image), ("after", after_image)):
        try:
            check_image_side(np.asarray(image))
        except ValueError as error:
            raise ValueError(f"the {which} image: {error}") from None
    before = segment(segmenter, before_image, settings, lesion_threshold=lesion_threshold)
    after = segment(segmenter, after_image, settings, lesion_threshold=lesion_threshold)
    return compare_lesions(before_image, before, after_image, after, pixel_size_mm=pixel_size_mm,
                           allow_scale=allow_scale, model_name=segmenter.name)


def compare_lesions(before_image: np.ndarray, before: Segmentation | LesionMasks, after_image: np.ndarray,
                    after: Segmentation | LesionMasks, *, pixel_size_mm: float | None = None,
                    allow_scale: bool = False, model_name: str = "", warnings: Sequence[str] = ()) -> Comparison:
    """Align two visits whose lesions are already drawn and report every measurement's change (see
    :func:`compare_visits`; ``warnings`` are added to the result's).

    Raises
    ------
    ValueError
        Not RGB uint8 images, or an empty lesion (the message says which).
    """
    for name, result in (("before", before), ("after", after)):
        if not result.lesion.any():
            raise ValueError(f"no lesion found in the {name} image: nothing to compare")
    registration = register(before_image, after_image, allow_scale=allow_scale)
    before_measurements = _measure(before_image, before.lesion, before.border, pixel_size_mm)
    if allow_scale:
        aligned_image = warp_image(after_image, registration, before_image.shape)
        after_border = (warp_mask(after.border, registration, before_image.shape) if after.border is not None
                        else None)
        after_measurements = _measure(aligned_image, warp_mask(after.lesion, registration, before_image.shape),
                                      after_border, pixel_size_mm)
    else:
        after_measurements = _measure(after_image, after.lesion, after.border, pixel_size_mm)
    after_by_column = {m.column: m for m in after_measurements}
    changes = [Change(m.key, m.label, m.unit, float(m.value), float(after_by_column[m.column].value))
               for m in before_measurements if m.column in after_by_column]
    notes = list(warnings)
    if not registration.ok:
        notes.append(registration.message + ": the changes below may compare different lesions or views")
    return Comparison(before_image=before_image, after_image=after_image, before=before, after=after,
                      registration=registration, changes=changes, pixel_size_mm=pixel_size_mm,
                      allow_scale=allow_scale, model_name=model_name, warnings=notes)


def _saved_masks(saved: SavedAnalysis) -> LesionMasks:
    """The saved lesion and its border band, drawn with the record's own cleanup settings."""
    settings = CleanupSettings.from_dict(saved.record.cleanup)
    return LesionMasks(lesion=saved.mask, border=border_band(saved.mask, settings))


def compare_records(before: SavedAnalysis, after: SavedAnalysis, *, allow_scale: bool = False,
                    pixel_size_mm: float | None = None) -> Comparison:
    """Compare two saved visits (:class:`moleseg.engine.records.Records`) with their lesions exactly as saved
    (hand corrections included; nothing is segmented again).

    ``pixel_size_mm``: default the before record's. When the two records were saved with different pixel
    sizes the result warns (the magnification may differ: consider ``allow_scale``).

    Raises
    ------
    ValueError
        An empty saved lesion.
    """
    first, second = before.record, after.record
    size = pixel_size_mm if pixel_size_mm else first.pixel_size_mm
    warnings = []
    if first.pixel_size_mm and second.pixel_size_mm and not math.isclose(first.pixel_size_mm, second.pixel_size_mm,
                                                                          rel_tol=1e-6):
        warnings.append(f"the two visits were saved with different pixel sizes ({first.pixel_size_mm:g} and "
                        f"{second.pixel_size_mm:g} mm per px): the magnification may differ")
    models = dict.fromkeys(name for name in (first.model_name, second.model_name) if name)
    model_name = "saved borders" + (f" ({' / '.join(models)})" if models else "")
    return compare_lesions(before.image, _saved_masks(before), after.image, _saved_masks(after), pixel_size_mm=size,
                           allow_scale=allow_scale, model_name=model_name, warnings=warnings)
