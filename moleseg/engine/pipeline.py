"""One image's whole analysis: prediction → cleanup → measurements → pictures → export files.

The app's Analyse page and ``moleseg predict`` both go through :func:`analyse_images` and
:class:`Analysis`; a slider change calls :meth:`Analysis.recleaned` (cleanup only, no network).
No TensorFlow here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from moleseg.core.cleanup import CleanupSettings, border_band
from moleseg.core.imageio import encode_png
from moleseg.core.measure import Measurement, measure_lesion, measurements_row
from moleseg.core.render import class_map, overlay
from moleseg.core.report import AnalysisSettings, Visit
from moleseg.engine.correction import Corrections
from moleseg.engine.segmenter import MODEL_THRESHOLD, Segmentation, Segmenter, clean


#: What every export of a lesion corrected by hand says.
CORRECTED_NOTE = "lesion corrected by hand"


@dataclass
class OverlayStyle:
    """Colours (RGB 0..255) and opacities (0..1) of the overlay."""

    fill_color: tuple[int, int, int] = (255, 200, 0)
    border_color: tuple[int, int, int] = (0, 255, 255)
    fill_opacity: float = 0.35
    border_opacity: float = 1.0


@dataclass
class Analysis:
    """Everything shown and exported for one image."""

    image: np.ndarray
    segmentation: Segmentation
    segmenter_name: str
    n_classes: int
    pixel_size_mm: float | None = None
    style: OverlayStyle = field(default_factory=OverlayStyle)
    measurements: list[Measurement] = field(default_factory=list)
    error: str | None = None
    corrected_by_hand: bool = False

    @property
    def overlay(self) -> np.ndarray:
        """The image with the lesion filled translucently and its border opaque, ``(H, W, 3)`` uint8."""
        s = self.style
        return overlay(self.image, self.segmentation.lesion, self.segmentation.border, fill_color=s.fill_color,
                       border_color=s.border_color, fill_opacity=s.fill_opacity, border_opacity=s.border_opacity)

    @property
    def class_picture(self) -> np.ndarray:
        """The predicted classes as colours, ``(H, W, 3)`` uint8."""
        return class_map(self.segmentation.labels, self.n_classes)

    @property
    def measurement_row(self) -> dict[str, float]:
        return measurements_row(self.measurements) if self.measurements else {}

    def recleaned(self, segmenter: Segmenter, settings: CleanupSettings | None,
                  pixel_size_mm: float | None = None, style: OverlayStyle | None = None, *,
                  lesion_threshold: Any = MODEL_THRESHOLD) -> "Analysis":
        """The same prediction cleaned with other settings or lesion threshold (no network call)."""
        segmentation = clean(segmenter, self.segmentation.probabilities, settings, lesion_threshold=lesion_threshold)
        return _finish(self.image, segmentation, segmenter, pixel_size_mm, style or self.style)

    def corrected(self, corrections: Corrections) -> "Analysis":
        """The analysis of the lesion corrected by hand (:mod:`moleseg.engine.correction`): the border band
        redrawn with this cleanup's width and shape, measurements recomputed, ``corrected_by_hand`` set.
        Without edits, this analysis itself."""
        if not corrections.any:
            return self
        lesion = corrections.apply(self.segmentation.lesion)
        border = border_band(lesion, self.segmentation.settings)
        segmentation = dataclasses.replace(self.segmentation, lesion=lesion, border=border, inside=lesion & ~border)
        analysis = Analysis(image=self.image, segmentation=segmentation, segmenter_name=self.segmenter_name,
                            n_classes=self.n_classes, pixel_size_mm=self.pixel_size_mm, style=self.style,
                            corrected_by_hand=True)
        return _measured(analysis)

    @property
    def notes(self) -> str | None:
        """What the exports say besides the measurements: no lesion found, corrected by hand."""
        parts = [self.error] if self.error else []
        if self.corrected_by_hand:
            parts.append(CORRECTED_NOTE)
        return "; ".join(parts) or None

    def files(self, stem: str) -> dict[str, bytes]:
        """``<stem>_overlay.png``, ``<stem>_mask.png`` (0/255 lesion), ``<stem>_classes.png`` (class values)."""
        return {
            f"{stem}_overlay.png": encode_png(self.overlay),
            f"{stem}_mask.png": encode_png(self.segmentation.lesion.astype(np.uint8) * 255),
            f"{stem}_classes.png": encode_png(self.segmentation.labels.astype(np.uint8)),
        }

    def write_files(self, folder: str | Path, stem: str) -> list[Path]:
        """Write :meth:`files` into ``folder`` atomically; returns the paths."""
        from moleseg.core.atomic import atomic_write

        return [atomic_write(Path(folder) / name, data) for name, data in self.files(stem).items()]

    @property
    def cells(self) -> bool:
        """True for two-class (cells) models: every object is a cell, not one lesion."""
        return self.n_classes == 2

    def outline_files(self, stem: str, formats: Sequence[str]) -> dict[str, bytes]:
        """The lesion's outline (every object's in cells mode) in each of ``formats``
        (:data:`moleseg.core.outlines.OUTLINE_FORMATS`); none when nothing was found."""
        from moleseg.core.outlines import outline_files

        return outline_files(self.segmentation.lesion, stem, formats, all_objects=self.cells,
                             corrected_by_hand=self.corrected_by_hand)

    def write_outlines(self, folder: str | Path, stem: str, formats: Sequence[str]) -> list[Path]:
        """Write :meth:`outline_files` into ``folder`` atomically; returns the paths."""
        from moleseg.core.atomic import atomic_write

        return [atomic_write(Path(folder) / name, data) for name, data in self.outline_files(stem, formats).items()]

    def settings(self, model_version: str | None = None) -> AnalysisSettings:
        """The settings that made this analysis (model, cleanup, lesion threshold, pixel size, corrected by
        hand), for its reports, its CSV's sidecar and its record."""
        segmentation = self.segmentation
        return AnalysisSettings(model_name=self.segmenter_name, model_version=model_version or None,
                                cleanup=segmentation.settings.to_dict(),
                                lesion_threshold=segmentation.lesion_threshold, pixel_size_mm=self.pixel_size_mm,
                                corrected_by_hand=self.corrected_by_hand)

    def pdf(self, image_name: str, model_version: str = "", created: datetime | None = None,
            visit: Visit | None = None) -> bytes:
        """A one-page PDF report of this image with its settings (:meth:`settings`), the visit when given,
        and a scale bar on the overlay when the pixel size is known."""
        from moleseg.core.report import pdf_report

        return pdf_report(image=self.image, overlay=self.overlay, measurements=self.measurements,
                          image_name=image_name, settings=self.settings(model_version), visit=visit,
                          created=created, notes=self.notes)


def _measured(analysis: Analysis) -> Analysis:
    segmentation = analysis.segmentation
    if segmentation.lesion.any():
        border = segmentation.border if segmentation.border.any() else None
        analysis.measurements = measure_lesion(segmentation.lesion, border=border,
                                               pixel_size_mm=analysis.pixel_size_mm, image=analysis.image)
    else:
        analysis.error = "no lesion found in this image"
    return analysis


def _finish(image: np.ndarray, segmentation: Segmentation, segmenter: Segmenter, pixel_size_mm: float | None,
            style: OverlayStyle) -> Analysis:
    return _measured(Analysis(image=image, segmentation=segmentation, segmenter_name=segmenter.name,
                              n_classes=segmenter.n_classes, pixel_size_mm=pixel_size_mm, style=style))


def analyse_images(segmenter: Segmenter, images: Sequence[np.ndarray], *, settings: CleanupSettings | None = None,
                   pixel_size_mm: float | None = None, style: OverlayStyle | None = None,
                   lesion_threshold: Any = MODEL_THRESHOLD) -> list[Analysis]:
    """Predict a batch of RGB uint8 images at once, then clean, measure and draw each.

    ``lesion_threshold``: 0..1, None for the arg-max, default the model's own (see :mod:`moleseg.engine.calibrate`).
    """
    if not images:
        return []
    probabilities = segmenter.predict_probabilities(list(images))
    return [_finish(image, clean(segmenter, p, settings, lesion_threshold=lesion_threshold), segmenter,
                    pixel_size_mm, style or OverlayStyle())
            for image, p in zip(images, probabilities)]
