"""Two visits of one lesion compared: align, segment both, and report what changed.

The images are aligned rigidly (:mod:`moleseg.core.registration`; a similarity transform only with
``allow_scale=True``), each is segmented by the same segmenter with the same cleanup, and every
measurement of :func:`moleseg.core.measure.measure_lesion` (shape, border, colours) is reported before,
after, as a difference and as a relative change. With a rigid fit the after image keeps its own pixels
(rotation and translation change no measurement); with a scale the after lesion is measured once drawn
in the before frame, so both are in the before image's pixels.

Every change carries its ``noise``, the smallest change the measurement can detect
(:mod:`moleseg.core.repeatability`): the larger of the published repeatability coefficient and, when
``noise_passes`` > 0, the one measured on this lesion from that many simulated second photographs of each
visit. A change is ``beyond_noise`` when it exceeds it. Colour shares change in percentage points; they,
the asymmetries and the counts get no relative change (%). The after image's colours are measured with its
skin matched to the before image's (:func:`moleseg.core.colour.skin_matched`), so a change of light or white
balance between the visits does not read as a change of the lesion's colours.

The result is not ``comparable`` when the alignment failed (``registration.ok`` is False) or when the two
images differ in colour type or light (:func:`moleseg.core.registration.incomparable_reason`): its
``reason`` says why, and the change figures must not be read as change.

Descriptive only: no diagnosis is made from the changes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from moleseg.core.cleanup import CleanupSettings, border_band
from moleseg.core.colour import skin_colour, skin_matched
from moleseg.core.config import MAX_NOISE_PASSES, MIN_NOISE_PASSES
from moleseg.core.comparison_report import comparison_pdf
from moleseg.core.measure import Measurement, decimals, measure_lesion, value_text
from moleseg.core.registration import Registration, incomparable_reason, register, warp_image, warp_mask
from moleseg.core.repeatability import (COEFFICIENT_PER_SD, NoiseEntry, noise_of_change, published_noise,
                                        random_perturbation, read_noise_table, relative_change_shown,
                                        rephotographed)
from moleseg.core.render import contour_overlay, shrunk, side_by_side, swipe
from moleseg.core.report import display_unit
from moleseg.engine.pipeline import check_image_side
from moleseg.engine.recordtypes import SavedAnalysis
from moleseg.engine.segmenter import MODEL_THRESHOLD, Segmentation, Segmenter, segment, segment_many

__all__ = ["BEFORE_COLOR", "AFTER_COLOR", "BEFORE_COLOR_NAME", "AFTER_COLOR_NAME", "ROTATION_CONVENTION",
           "WITHIN_NOISE", "Change", "Comparison", "LesionMasks", "compare_lesions", "compare_records",
           "compare_visits", "per_image_noise", "rephotographed_values"]

#: Outline colours (RGB) of the before and after lesions in the comparison pictures.
BEFORE_COLOR: tuple[int, int, int] = (0, 255, 255)
AFTER_COLOR: tuple[int, int, int] = (255, 0, 255)
#: Their names, for people.
BEFORE_COLOR_NAME: str = "cyan"
AFTER_COLOR_NAME: str = "magenta"
#: How the rotation's sign reads, on the page, in the PDF and in the JSON.
ROTATION_CONVENTION: str = "counter-clockwise positive, as displayed, from the before to the after image"
#: How a change within the measurement's noise is marked in the tables.
WITHIN_NOISE: str = "within measurement noise"
#: Seed of the simulated second photographs of the per-image noise passes.
NOISE_SEED: int = 0


@dataclass(frozen=True)
class Change:
    """One measurement at both visits.

    ``change`` is ``after - before`` in ``unit`` (percentage points for shares in %); ``change_percent`` is
    ``100 * change / before`` (NaN for shares, small ratios and counts,
    :func:`moleseg.core.repeatability.relative_change_shown`, or when ``before`` is 0 or undefined); ``noise`` is
    the smallest change the measurement can detect, in ``unit`` (NaN when unknown).
    """

    key: str
    label: str
    unit: str
    before: float
    after: float
    noise: float = math.nan

    @property
    def change(self) -> float:
        """``after - before``, in ``unit``."""
        return self.after - self.before

    @property
    def change_percent(self) -> float:
        """The change in % of ``|before|``; NaN for shares, asymmetries and counts (no relative change shown)
        and when ``before`` is 0 or undefined."""
        if not relative_change_shown(self.key, self.unit) or not math.isfinite(self.before) or self.before == 0:
            return math.nan
        return 100.0 * self.change / abs(self.before)

    @property
    def beyond_noise(self) -> bool | None:
        """True when ``|change|`` exceeds ``noise``; None when either is undefined."""
        if not (math.isfinite(self.noise) and math.isfinite(self.change)):
            return None
        return abs(self.change) > self.noise

    @property
    def change_unit(self) -> str:
        """The unit of ``change`` and ``noise``: ``unit``, or percentage points for shares."""
        return "percentage points" if self.unit == "%" else self.unit

    def texts(self) -> tuple[str, str, str, str, str]:
        """Before, after, change, change % and noise (as "+- value") for people, rounded per measurement as the
        Analyse page, the CSV and the PDF write it (:func:`moleseg.core.measure.value_text`); the change and the
        noise to the finer of the two visits' decimals, the change % as a share (0.1 %)."""
        places = max(decimals(self.key, self.unit, self.before), decimals(self.key, self.unit, self.after))
        noise = value_text(self.key, self.unit, self.noise, places)
        return (value_text(self.key, self.unit, self.before), value_text(self.key, self.unit, self.after),
                value_text(self.key, self.unit, self.change, places), value_text("change", "%", self.change_percent),
                noise if noise == "\u2014" else "\u00b1" + noise)


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
    incomparable: str = ""
    noise_passes: int = 0
    noise_seconds: float = 0.0
    lesion_noise: dict[tuple[str, str], float] = field(default_factory=dict)  # measured on this lesion
    lesion_id: str = ""
    before_date: str = ""
    after_date: str = ""

    @property
    def comparable(self) -> bool:
        """False when the alignment failed or the images differ in colour type or light (see :attr:`reason`)."""
        return self.registration.ok and not self.incomparable

    @property
    def other_warnings(self) -> list[str]:
        """The warnings besides the one saying why the visits are not comparable (:func:`compare_visits` puts
        that one first), e.g. different pixel sizes."""
        return list(self.warnings) if self.comparable else list(self.warnings[1:])

    @property
    def reason(self) -> str:
        """Why the two visits are not comparable ('' when they are)."""
        return self.incomparable or self.registration.message

    @property
    def lesion_shift_px(self) -> tuple[float, float]:
        """``(dx, dy)`` px from the before lesion's centroid (in the before image) to the after lesion's (in the
        after image): how far the lesion moved in the picture, x right and y down."""
        def centroid(mask: np.ndarray) -> np.ndarray:
            rows, cols = np.nonzero(mask)
            return np.array([cols.mean(), rows.mean()])

        dx, dy = centroid(self.after.lesion) - centroid(self.before.lesion)
        return float(dx), float(dy)

    def shift_text(self) -> str:
        """The lesion centre's shift for people, in px and (with a pixel size) mm."""
        dx, dy = self.lesion_shift_px
        text = f"{dx:+.0f}, {dy:+.0f} px"
        if self.pixel_size_mm:
            text += f" ({dx * self.pixel_size_mm:+.2f}, {dy * self.pixel_size_mm:+.2f} mm)"
        return text

    def noise_source(self, published: str) -> str:
        """Where the noise came from, for people: ``published`` (how the caller names the published table),
        and the simulated second photographs of each visit with their time (s) when there were any."""
        if not self.noise_passes:
            return published
        return (f"{published} and {self.noise_passes} simulated second photographs of each visit "
                f"({self.noise_seconds:.0f} s)")

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
        """The lesion area's change in % of the before area (NaN when the area was not measured)."""
        found = self.change("area", "px")
        return found.change_percent if found else math.nan

    def _both_borders(self) -> np.ndarray:
        picture = contour_overlay(self.aligned_after_image, self.before.lesion, color=BEFORE_COLOR)
        return contour_overlay(picture, self.aligned_after_lesion, color=AFTER_COLOR)

    def borders_picture(self) -> np.ndarray:
        """The aligned after image with the before border (cyan) and the after border (magenta) drawn, at most
        :data:`moleseg.core.render.DISPLAY_SIDE_PX` px on its longer side (shown by the page at each rerun)."""
        return shrunk(self._both_borders())

    @cached_property
    def _panels(self) -> tuple[np.ndarray, np.ndarray]:
        """Before (its border) and the aligned after image (its border), each shrunk for display; made once (the
        swipe slider asks at each step)."""
        return (shrunk(contour_overlay(self.before_image, self.before.lesion, color=BEFORE_COLOR)),
                shrunk(contour_overlay(self.aligned_after_image, self.aligned_after_lesion, color=AFTER_COLOR)))

    def side_by_side_picture(self) -> np.ndarray:
        """Before (its border) and the aligned after image (its border) next to each other, each panel at most
        :data:`moleseg.core.render.DISPLAY_SIDE_PX` px on its longer side."""
        return side_by_side(*self._panels)

    def swipe_picture(self, position: float) -> np.ndarray:
        """A wipe across the aligned pair: the before image with its border (cyan) left of ``position`` (0..1 of
        the width), the aligned after image with its border (magenta) from there on; at most
        :data:`moleseg.core.render.DISPLAY_SIDE_PX` px on its longer side."""
        return swipe(*self._panels, position)

    def table(self) -> list[list[str]]:
        """Rows of text for people: a heading, then one row per measurement with px and mm side by side,
        each value rounded as the Analyse page shows it (:meth:`Change.texts`).

        Columns: measurement, before, after, change (percentage points for shares), change in % (of the px
        value; not for shares, asymmetries and counts), noise (the smallest detectable change) and
        :data:`WITHIN_NOISE` or ''.
        """
        rows = [["Measurement", "Before", "After", "Change", "Change %", "Noise", "Reading"]]
        keys = list(dict.fromkeys(c.key for c in self.changes))
        for key in keys:
            group = [(c, c.texts()) for c in self.changes if c.key == key]

            def cells(column: int) -> str:
                def unit(c: Change) -> str:
                    return "pp" if column in (2, 4) and c.unit == "%" else display_unit(c.key, c.unit)

                parts = [f"{texts[column]} {unit(c)}".strip() if texts[column] != "\u2014" else texts[column]
                         for c, texts in group]
                return parts[0] + (f" ({', '.join(parts[1:])})" if len(parts) > 1 else "")

            first, first_texts = group[0]
            rows.append([first.label, cells(0), cells(1), cells(2), first_texts[3], cells(4),
                         WITHIN_NOISE if first.beyond_noise is False else ""])
        return rows

    def within_noise_rows(self) -> list[int]:
        """Indices (in :meth:`table`, heading = 0) of the rows whose change is within the measurement's noise."""
        return [index for index, row in enumerate(self.table()) if row[-1] == WITHIN_NOISE]

    def header(self, before_name: str = "before", after_name: str = "after") -> list[tuple[str, str]]:
        """The lines that say how this comparison was made (for the PDF and the page)."""
        r = self.registration
        transform = "similarity (scale allowed)" if self.allow_scale else "rigid (rotation + translation)"
        alignment = (f"{transform}; rotation {r.rotation_deg:+.2f} deg ({ROTATION_CONVENTION}), lesion centre "
                     f"moved {self.shift_text()}, scale {r.scale:.3f}; quality {r.quality:.2f} "
                     f"({'ok' if r.ok else 'FAILED'})")
        size = f"{self.pixel_size_mm:g} mm per pixel" if self.pixel_size_mm else "unknown (lengths in px only)"
        noise = self.noise_source("published repeatability")
        lesion = [("Lesion", self.lesion_id)] if self.lesion_id else []
        dates = [(f"{name} visit", date) for name, date in (("Before", self.before_date), ("After", self.after_date))
                 if date]
        return [*lesion, ("Before", before_name), ("After", after_name), *dates, ("Model", self.model_name),
                ("Alignment", alignment), ("Pixel size", size), ("Noise", noise)]

    def pdf(self, before_name: str = "before", after_name: str = "after", created: datetime | None = None) -> bytes:
        """A one-page PDF: the before image with its border, the aligned after image with both borders,
        how they were aligned, the warnings and the table of changes (changes within noise in grey). When the
        visits are not :attr:`comparable` the reason leads and no table is printed."""
        before_picture = contour_overlay(self.before_image, self.before.lesion, color=BEFORE_COLOR)
        table = self.table() if self.comparable else []
        return comparison_pdf(before=before_picture, after=self._both_borders(),
                              header=self.header(before_name, after_name), table=table,
                              warnings=self.warnings, created=created,
                              muted_rows=self.within_noise_rows() if self.comparable else ())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary: whether the visits are comparable and why not, the transform, its quality, the
        lesion centre's shift, warnings and every change with its noise.

        ``rotation_deg`` is counter-clockwise positive as displayed (:data:`ROTATION_CONVENTION`);
        ``lesion_shift_px`` (and ``lesion_shift_mm``) is ``(dx, dy)``, x right and y down, of the lesion's centre;
        ``translation_px`` is the fitted transform's about the image's top-left corner. Each change has ``noise``
        (the smallest detectable change, in ``change_unit``) and ``beyond_noise``; ``change_percent`` is None for
        shares, asymmetries and counts. NaN values become None.
        """
        def number(value: float) -> float | None:
            return float(value) if math.isfinite(value) else None

        r = self.registration
        dx, dy = self.lesion_shift_px
        size = self.pixel_size_mm
        return {
            "comparable": self.comparable,
            "reason": self.reason,
            "rotation_deg": number(r.rotation_deg),
            "rotation_convention": ROTATION_CONVENTION,
            "lesion_shift_px": [dx, dy],
            "lesion_shift_mm": [dx * size, dy * size] if size else None,
            "translation_px": [number(r.translation_px[0]), number(r.translation_px[1])],
            "scale": number(r.scale),
            "transform": "similarity" if self.allow_scale else "rigid",
            "registration_quality": number(r.quality),
            "registration_ok": r.ok,
            "registration_inliers": r.inliers,
            "area_change_percent": number(self.area_change_percent),
            "pixel_size_mm": self.pixel_size_mm,
            "model": self.model_name,
            "lesion": self.lesion_id,
            "before_date": self.before_date,
            "after_date": self.after_date,
            "noise_passes": self.noise_passes,
            "noise_seconds": round(self.noise_seconds, 1),
            "warnings": list(self.warnings),
            "changes": [
                {"key": c.key, "label": c.label, "unit": c.unit, "before": number(c.before), "after": number(c.after),
                 "change": number(c.change), "change_unit": c.change_unit, "change_percent": number(c.change_percent),
                 "noise": number(c.noise), "beyond_noise": c.beyond_noise}
                for c in self.changes
            ],
        }


def _measure(image: np.ndarray, lesion: np.ndarray, border: np.ndarray | None,
             pixel_size_mm: float | None) -> list[Measurement]:
    return measure_lesion(lesion, border=border if border is not None and border.any() else None,
                          pixel_size_mm=pixel_size_mm, image=image)


NoiseByMeasurement = Mapping[tuple[str, str], float]


def rephotographed_values(segmenter: Segmenter, image: np.ndarray, lesion: np.ndarray, passes: int,
                          rng: np.random.Generator, *, settings: CleanupSettings | None = None,
                          lesion_threshold: Any = MODEL_THRESHOLD,
                          pixel_size_mm: float | None = None) -> dict[tuple[str, str], list[float]]:
    """Every measurement's values over ``passes`` simulated second photographs of ``image``
    (:func:`moleseg.core.repeatability.rephotographed`, drawn from ``rng``), segmented in one batch and
    measured, by (key, unit); the colours after matching each photograph's skin to that of ``image`` around
    ``lesion`` (its lesion, bool), as a comparison does. Photographs where no lesion was found are left out."""
    skin = skin_colour(image, lesion)
    images = [rephotographed(image, random_perturbation(rng)) for _ in range(passes)]
    values: dict[tuple[str, str], list[float]] = {}
    for picture, result in zip(images, segment_many(segmenter, images, settings, lesion_threshold=lesion_threshold)):
        if not result.lesion.any():
            continue
        matched = skin_matched(picture, result.lesion, skin)
        for m in _measure(matched, result.lesion, result.border, pixel_size_mm):
            values.setdefault((m.key, m.unit), []).append(float(m.value))
    return values


def check_noise_passes(passes: int) -> None:
    """ValueError unless ``passes`` is in :data:`MIN_NOISE_PASSES` .. :data:`MAX_NOISE_PASSES`."""
    if passes < MIN_NOISE_PASSES:
        raise ValueError(f"the per-image noise needs at least {MIN_NOISE_PASSES} passes, not {passes}")
    if passes > MAX_NOISE_PASSES:
        raise ValueError(f"the per-image noise takes at most {MAX_NOISE_PASSES} passes, not {passes}")


def per_image_noise(segmenter: Segmenter, visits: Sequence[tuple[np.ndarray, np.ndarray]], passes: int, *,
                    settings: CleanupSettings | None = None, lesion_threshold: Any = MODEL_THRESHOLD,
                    pixel_size_mm: float | None = None, seed: int = NOISE_SEED) -> dict[tuple[str, str], float]:
    """The repeatability coefficient of every measurement on these lesions, by (key, unit), in its unit.

    ``visits`` are ``(image, lesion)`` pairs; each image is photographed again ``passes`` times by simulation
    (:func:`rephotographed_values`, drawn from ``seed``), segmented and measured; the within-lesion variances
    are averaged over the images and ``RC = COEFFICIENT_PER_SD * sqrt(variance)``
    (:data:`moleseg.core.repeatability.COEFFICIENT_PER_SD`). Costs ``passes`` segmentations per image.
    Measurements with fewer than two values on every image are left out.
    """
    check_noise_passes(passes)
    rng = np.random.default_rng(seed)
    variances: dict[tuple[str, str], list[float]] = {}
    for image, lesion in visits:
        for name, values in rephotographed_values(segmenter, image, lesion, passes, rng, settings=settings,
                                                  lesion_threshold=lesion_threshold,
                                                  pixel_size_mm=pixel_size_mm).items():
            finite = np.asarray([v for v in values if math.isfinite(v)])
            if finite.size >= 2:
                variances.setdefault(name, []).append(float(finite.var(ddof=1)))
    return {name: COEFFICIENT_PER_SD * math.sqrt(float(np.mean(found))) for name, found in variances.items()}


def compare_visits(segmenter: Segmenter, before_image: np.ndarray, after_image: np.ndarray, *,
                   pixel_size_mm: float | None = None, allow_scale: bool = False,
                   settings: CleanupSettings | None = None, lesion_threshold: Any = MODEL_THRESHOLD,
                   noise_passes: int = 0, earlier: Comparison | None = None) -> Comparison:
    """Align two visits, segment both with ``segmenter`` and report every measurement's change and noise.

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
    noise_passes : int
        0, or 2 to :data:`moleseg.core.config.MAX_NOISE_PASSES`: simulated second photographs of each visit
        measured to estimate this lesion's noise (:func:`per_image_noise`; ``2 * noise_passes`` more
        segmentations); the larger of it and the published noise is used.
    earlier : Comparison, optional
        An earlier result of these two images by this segmenter with these ``settings`` and
        ``lesion_threshold`` (the caller's word: a page's last one): its two segmentations are taken and
        nothing is segmented again, nor is its lesion noise measured again when it was measured with
        ``noise_passes`` at ``pixel_size_mm``.

    Raises
    ------
    ValueError
        ``noise_passes`` out of range, not RGB uint8 images, an image too small (a side under
        :data:`moleseg.core.config.MIN_IMAGE_SIDE_PX`), or no lesion found in one of them (the message says which).
    """
    if noise_passes:
        check_noise_passes(noise_passes)
    for which, image in (("before", before_image), ("after", after_image)):
        try:
            check_image_side(np.asarray(image))
        except ValueError as error:
            raise ValueError(f"the {which} image: {error}") from None
    if earlier is None:
        before = segment(segmenter, before_image, settings, lesion_threshold=lesion_threshold)
        after = segment(segmenter, after_image, settings, lesion_threshold=lesion_threshold)
    else:
        before, after = earlier.before, earlier.after
    noise_known = (earlier is not None and noise_passes > 0
                   and (earlier.noise_passes, earlier.pixel_size_mm) == (noise_passes, pixel_size_mm))
    noise: dict[tuple[str, str], float] = dict(earlier.lesion_noise) if noise_known else {}
    started = time.perf_counter()
    if noise_passes and not noise_known:
        noise = per_image_noise(segmenter, [(before_image, before.lesion), (after_image, after.lesion)],
                                noise_passes, settings=settings,
                                lesion_threshold=lesion_threshold, pixel_size_mm=pixel_size_mm)
    comparison = compare_lesions(before_image, before, after_image, after, pixel_size_mm=pixel_size_mm,
                                 allow_scale=allow_scale, model_name=segmenter.name, per_image=noise)
    comparison.noise_passes, comparison.lesion_noise = noise_passes, noise
    comparison.noise_seconds = (earlier.noise_seconds if noise_known else
                                time.perf_counter() - started if noise_passes else 0.0)
    return comparison


def compare_lesions(before_image: np.ndarray, before: Segmentation | LesionMasks, after_image: np.ndarray,
                    after: Segmentation | LesionMasks, *, pixel_size_mm: float | None = None,
                    allow_scale: bool = False, model_name: str = "", warnings: Sequence[str] = (),
                    per_image: NoiseByMeasurement | None = None,
                    noise_table: Mapping[str, NoiseEntry] | None = None) -> Comparison:
    """Align two visits whose lesions are already drawn and report every measurement's change (see
    :func:`compare_visits`; ``warnings`` are added to the result's). ``per_image``: this lesion's noise by
    (key, unit) (:func:`per_image_noise`); ``noise_table``: default the published one
    (:func:`moleseg.core.repeatability.read_noise_table`).

    Raises
    ------
    ValueError
        Not RGB uint8 images, an empty lesion (the message says which), or an unreadable noise table.
    """
    for name, result in (("before", before), ("after", after)):
        if not result.lesion.any():
            raise ValueError(f"no lesion found in the {name} image: nothing to compare")
    table = read_noise_table() if noise_table is None else noise_table
    per_image = per_image or {}
    registration = register(before_image, after_image, allow_scale=allow_scale)
    before_measurements = _measure(before_image, before.lesion, before.border, pixel_size_mm)
    # The after colours are read with the after skin matched to the before skin (light and white balance).
    matched_after = skin_matched(after_image, after.lesion, skin_colour(before_image, before.lesion))
    if allow_scale:
        aligned_image = warp_image(matched_after, registration, before_image.shape)
        after_border = (warp_mask(after.border, registration, before_image.shape) if after.border is not None
                        else None)
        after_measurements = _measure(aligned_image, warp_mask(after.lesion, registration, before_image.shape),
                                      after_border, pixel_size_mm)
    else:
        after_measurements = _measure(matched_after, after.lesion, after.border, pixel_size_mm)
    after_by_column = {m.column: m for m in after_measurements}
    changes = [Change(m.key, m.label, m.unit, float(m.value), float(after_by_column[m.column].value),
                      noise_of_change(per_image.get((m.key, m.unit), math.nan),
                                      published_noise(m.key, m.unit, float(m.value), table)))
               for m in before_measurements if m.column in after_by_column]
    notes = list(warnings)
    incomparable = incomparable_reason(before_image, after_image, before.lesion, after.lesion)
    if not registration.ok:
        notes.insert(0, registration.message + ": the changes below may compare different lesions or views")
    elif incomparable:
        notes.insert(0, incomparable)
    return Comparison(before_image=before_image, after_image=after_image, before=before, after=after,
                      registration=registration, changes=changes, pixel_size_mm=pixel_size_mm,
                      allow_scale=allow_scale, model_name=model_name, warnings=notes, incomparable=incomparable)


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
    comparison = compare_lesions(before.image, _saved_masks(before), after.image, _saved_masks(after),
                                 pixel_size_mm=size, allow_scale=allow_scale, model_name=model_name, warnings=warnings)
    comparison.lesion_id = first.lesion or second.lesion
    comparison.before_date, comparison.after_date = first.visit_date, second.visit_date
    return comparison
