"""One image's whole analysis once its prediction is cleaned: measurements → pictures → export files.

An :class:`Analysis` per image (:func:`finish_analysis`, :func:`measure_and_draw`); a slider change calls
:meth:`Analysis.recleaned` (cleanup only, no network). The result files are encoded only when asked for
(:class:`ResultFiles`). Images reach it through the network batch by batch in :mod:`moleseg.engine.batches`.
No TensorFlow here.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from datetime import datetime
from concurrent.futures import Executor, Future
from typing import Any, Callable, Sequence

import numpy as np

from moleseg.core.cached import cached_value
from moleseg.core.cleanup import CleanupSettings, border_band
from moleseg.core.config import (EDGE_CONTACT_RATIO, MIN_IMAGE_SIDE_PX,
                                 OVERLAY_PNG_COMPRESSION_LEVEL, result_file_name)
from moleseg.core.edgecontact import edge_contact_ratio, edge_outline_share
from moleseg.core.imagewrite import display_jpeg, encode_png
from moleseg.core.bandwidth import BandDistances, band_distances
from moleseg.core.measure import Measurement, colour_measurements, measure_lesion, measurements_row
from moleseg.core.objects import CellObject, field_measurements, find_objects
from moleseg.core.render import (BORDER_COLOR, BORDER_OPACITY, FILL_COLOR, FILL_OPACITY, class_map, overlay,
                                 with_scale_bar)
from moleseg.core.report import SUBJECT_WORDS, AnalysisSettings, Visit, subject_words
from moleseg.engine.correction import Corrections
from moleseg.engine.segmenter import MODEL_THRESHOLD, Segmentation, Segmenter, clean, model_record

#: What every export of a lesion corrected by hand says.
CORRECTED_NOTE: str = SUBJECT_WORDS[3]["corrected"]
#: What the exports say of an image the model is unsure of (``{check}``: the model's words, "check this border"
#: or "check this segmentation", :data:`moleseg.core.report.SUBJECT_WORDS`; ``{confidence}``, ``{threshold}``: 0..1).
CHECK_BORDER_NOTE = ("{check}: the model is unsure of it (confidence {confidence:.2f}, below its "
                     "calibrated {threshold:.2f})")
#: What the exports say of a lesion reaching the picture's edge.
BEYOND_PICTURE_NOTE = ("the lesion may extend beyond the picture (it reaches the image edge): "
                       "its area and diameters are lower bounds")


def beyond_picture_note(contact_ratio: float | None) -> str | None:
    """:data:`BEYOND_PICTURE_NOTE` for a lesion reaching the image edge along ``contact_ratio`` times its
    equivalent diameter (:func:`moleseg.core.edgecontact.edge_contact_ratio`), when that is at least
    :data:`moleseg.core.config.EDGE_CONTACT_RATIO`; None otherwise or when ``contact_ratio`` is None (cells
    mode: cells cut by the frame are expected)."""
    if contact_ratio is None or contact_ratio < EDGE_CONTACT_RATIO:
        return None
    return BEYOND_PICTURE_NOTE


@dataclass
class OverlayStyle:
    """Colours (RGB 0..255) and opacities (0..1) of the overlay (defaults: :mod:`moleseg.core.render`'s)."""

    fill_color: tuple[int, int, int] = FILL_COLOR
    border_color: tuple[int, int, int] = BORDER_COLOR
    fill_opacity: float = FILL_OPACITY
    border_opacity: float = BORDER_OPACITY


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
    objects: list[CellObject] = field(default_factory=list)
    confidence_threshold: float | None = None

    @property
    def confidence(self) -> float:
        """How sure the model is of this border, 0..1 (:attr:`Segmentation.confidence`)."""
        return self.segmentation.confidence

    @property
    def check_border(self) -> bool:
        """True when the model's confidence is below its calibrated threshold (the model's ``moleseg.json``;
        never without one) and the lesion was not corrected by hand."""
        return (self.confidence_threshold is not None and not self.corrected_by_hand
                and self.confidence < self.confidence_threshold)

    @cached_value
    def pixel_sha256(self) -> str:
        """Hex SHA-256 of the image's pixels (:func:`moleseg.core.dataset.image_sha256`), computed once."""
        from moleseg.core.dataset import image_sha256

        return image_sha256(self.image)

    @cached_value
    def edge_outline_share(self) -> float | None:
        """Share of the lesion's outline on the image edge, 0..1 (None in cells mode, where every object
        is a cell and cells cut by the frame are expected)."""
        return None if self.cells else edge_outline_share(self.segmentation.lesion)

    @cached_value
    def edge_contact_ratio(self) -> float | None:
        """Length of image edge the lesion reaches over its equivalent diameter
        (:func:`moleseg.core.edgecontact.edge_contact_ratio`; None in cells mode)."""
        return None if self.cells else edge_contact_ratio(self.segmentation.lesion)

    @property
    def beyond_picture(self) -> bool:
        """True when the lesion may extend beyond the picture (see
        :func:`moleseg.core.edgecontact.extends_beyond_picture`): its area and diameters are lower bounds."""
        return beyond_picture_note(self.edge_contact_ratio) is not None

    @property
    def warnings(self) -> list[str]:
        """The "check this border" ("check this segmentation" in cells mode) and "may extend beyond the
        picture" texts that apply (the app shows them; :attr:`notes` carries them into the PDF and CSV)."""
        found = []
        if self.check_border and not self.error:
            found.append(CHECK_BORDER_NOTE.format(check=self.words["check"], confidence=self.confidence,
                                                  threshold=self.confidence_threshold))
        beyond = beyond_picture_note(self.edge_contact_ratio)
        return found + ([beyond] if beyond else [])

    @property
    def flag_row(self) -> dict[str, Any]:
        """The CSV columns of the two warnings: ``confidence`` (0..1), ``check_border``, and outside cells
        mode ``edge_outline_share`` (0..1), ``edge_contact_ratio`` (0 and up) and ``beyond_picture``."""
        row: dict[str, Any] = {"confidence": round(self.confidence, 4), "check_border": self.check_border}
        share = self.edge_outline_share
        if share is not None:
            row.update(edge_outline_share=round(share, 4), edge_contact_ratio=round(self.edge_contact_ratio, 4),
                       beyond_picture=self.beyond_picture)
        return row

    @cached_value
    def overlay(self) -> np.ndarray:
        """The image with the lesion filled translucently and its border opaque, ``(H, W, 3)`` uint8, drawn
        once (an app page shows it, its canvas and its exports use it); read-only."""
        s = self.style
        segmentation = self.segmentation
        picture = overlay(self.image, segmentation.lesion, segmentation.border, fill_color=s.fill_color,
                          border_color=s.border_color, fill_opacity=s.fill_opacity, border_opacity=s.border_opacity,
                          box=segmentation.lesion_box)
        picture.setflags(write=False)
        return picture

    @cached_value
    def overlay_jpeg(self) -> bytes:
        """The overlay as a page shows it (:func:`moleseg.core.imagewrite.display_jpeg`: at most
        :data:`moleseg.core.render.DISPLAY_SIDE_PX` px on its longer side, JPEG of quality
        :data:`moleseg.core.imagewrite.DISPLAY_JPEG_QUALITY`), encoded once."""
        return display_jpeg(self.overlay)

    @cached_value
    def class_picture(self) -> np.ndarray:
        """The predicted classes as colours, ``(H, W, 3)`` uint8, drawn once; read-only."""
        picture = class_map(self.segmentation.labels, self.n_classes)
        picture.setflags(write=False)
        return picture

    @cached_value
    def class_jpeg(self) -> bytes:
        """The class picture as a page shows it (as :attr:`overlay_jpeg` the overlay), encoded once."""
        return display_jpeg(self.class_picture)

    @property
    def measurement_row(self) -> dict[str, float]:
        """``{column: value}`` of the measurements, at full precision."""
        return measurements_row(self.measurements) if self.measurements else {}

    @property
    def rounded_row(self) -> dict[str, float]:
        """``{column: value}`` of the measurements rounded as the CSV writes them."""
        return measurements_row(self.measurements, rounded=True) if self.measurements else {}

    def object_rows(self, image_name: str = "") -> list[dict[str, Any]]:
        """One row per cell / nucleus (two-class models; empty otherwise), for ``objects.csv``
        (:func:`moleseg.core.objects.object_rows`)."""
        from moleseg.core.objects import object_rows

        return object_rows(self.objects, image=image_name, pixel_size_mm=self.pixel_size_mm)

    @property
    def words(self) -> dict[str, str]:
        """How this analysis speaks of what it found (:func:`subject_words`)."""
        return subject_words(self.n_classes)

    def recleaned(self, segmenter: Segmenter, settings: CleanupSettings | None,
                  pixel_size_mm: float | None = None, style: OverlayStyle | None = None, *,
                  lesion_threshold: Any = MODEL_THRESHOLD, drawer: Executor | None = None,
                  shown: bool = False) -> "Analysis":
        """The same prediction cleaned with other settings or lesion threshold (no network call). With a
        ``drawer`` thread, the cleaned lesion's analysis is shared with it as :func:`measure_and_draw` shares it
        (the measurements, the overlay and, with ``shown``, its display JPEG; the same values and pictures as
        without); without, everything is made in this thread and the overlay when first asked for. The model's
        confidence, made from the same probabilities, is taken over, not made again."""
        segmentation = clean(segmenter, self.segmentation.probabilities, settings, lesion_threshold=lesion_threshold)
        if "confidence" in vars(self.segmentation):  # a cached_value of the probabilities alone
            vars(segmentation)["confidence"] = self.segmentation.confidence
        if drawer is None:
            return _finish(self.image, segmentation, segmenter, pixel_size_mm, style or self.style)
        return measure_and_draw(self.image, segmentation, segmenter, drawer, pixel_size_mm=pixel_size_mm,
                                style=style or self.style, shown=shown)

    def corrected(self, corrections: Corrections) -> "Analysis":
        """The analysis of the lesion corrected by hand (:mod:`moleseg.engine.correction`; an added region's holes
        filled when this cleanup fills holes): the border band
        redrawn with this cleanup's width and shape, measurements recomputed, ``corrected_by_hand`` set.
        Without edits, this analysis itself."""
        if not corrections.any:
            return self
        lesion = corrections.apply(self.segmentation.lesion, fill_holes=self.segmentation.settings.fill_holes)
        border = border_band(lesion, self.segmentation.settings)
        segmentation = dataclasses.replace(self.segmentation, lesion=lesion, border=border, inside=lesion & ~border)
        analysis = Analysis(image=self.image, segmentation=segmentation, segmenter_name=self.segmenter_name,
                            n_classes=self.n_classes, pixel_size_mm=self.pixel_size_mm, style=self.style,
                            corrected_by_hand=True, confidence_threshold=self.confidence_threshold)
        return _measured(analysis)

    @property
    def notes(self) -> str | None:
        """What the exports say besides the measurements: no lesion found, corrected by hand, check this
        border, may extend beyond the picture."""
        parts = [self.error] if self.error else []
        if self.corrected_by_hand:
            parts.append(self.words["corrected"])
        parts.extend(self.warnings)
        return "; ".join(parts) or None

    @cached_value
    def result_files(self) -> "ResultFiles":
        """The overlay, mask and class-map files, each encoded once when first asked for (:class:`ResultFiles`)."""
        return ResultFiles(overlay=self.overlay, lesion=self.segmentation.lesion, labels=self.segmentation.labels,
                           pixel_size_mm=self.pixel_size_mm)

    def overlay_png(self) -> bytes:
        """The overlay as PNG (:meth:`ResultFiles.overlay_png`), encoded once."""
        return self.result_files.overlay_png()

    def mask_png(self) -> bytes:
        """The lesion (or cells) mask as PNG (:meth:`ResultFiles.mask_png`), encoded once."""
        return self.result_files.mask_png()

    def classes_png(self) -> bytes:
        """The predicted classes as PNG (:meth:`ResultFiles.classes_png`), encoded once."""
        return self.result_files.classes_png()

    def files(self, stem: str) -> dict[str, bytes]:
        """The overlay, the mask and the class map as lossless PNGs (:meth:`ResultFiles.files`), each encoded
        once, named by :func:`moleseg.core.config.result_file_name`."""
        return self.result_files.files(stem)

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
        and a scale bar on the overlay when the pixel size is known; titled for the model's task (moles or
        cells)."""
        from moleseg.core.pdf_report import pdf_report

        return pdf_report(image=self.image, overlay=self.overlay, measurements=self.measurements,
                          image_name=image_name, settings=self.settings(model_version), visit=visit,
                          created=created, notes=self.notes, n_classes=self.n_classes)


@dataclass(frozen=True, eq=False)
class ResultFiles:
    """The lossless result files of one analysis, each encoded once, when first asked for (a download, a ZIP,
    ``moleseg predict``'s writer thread): they hold the pictures, not the image or the probabilities.

    Attributes
    ----------
    overlay : (H, W, 3) uint8
        The drawn overlay (:attr:`Analysis.overlay`).
    lesion : (H, W) bool
        The lesion (or cells) mask.
    labels : (H, W) uint8
        The predicted classes (0, 1, 2).
    pixel_size_mm : float or None
        mm per pixel; when given, the overlay's PNG carries the PDF's scale bar.
    """

    overlay: np.ndarray
    lesion: np.ndarray
    labels: np.ndarray
    pixel_size_mm: float | None = None
    encoded: dict[str, bytes] = field(default_factory=dict, init=False, repr=False, compare=False)

    def _once(self, kind: str, encode: Callable[[], bytes]) -> bytes:
        """``encode()``, made the first time ``kind`` is asked for and kept (two threads asking at once both
        encode the same bytes)."""
        if kind not in self.encoded:
            self.encoded[kind] = encode()
        return self.encoded[kind]

    def overlay_png(self) -> bytes:
        """The overlay as PNG (zlib level :data:`moleseg.core.config.OVERLAY_PNG_COMPRESSION_LEVEL`), with the
        PDF's scale bar (:func:`moleseg.core.render.with_scale_bar`) when the pixel size is known."""
        def encode() -> bytes:
            picture = with_scale_bar(self.overlay, self.pixel_size_mm) if self.pixel_size_mm else self.overlay
            return encode_png(picture, OVERLAY_PNG_COMPRESSION_LEVEL)

        return self._once("overlay", encode)

    def mask_png(self) -> bytes:
        """The lesion (or cells) mask as PNG, 255 inside and 0 outside."""
        return self._once("mask", lambda: encode_png(np.asarray(self.lesion, dtype=bool)))  # bool: 0 / 255

    def classes_png(self) -> bytes:
        """The predicted classes as PNG, each pixel its class value (0, 1, 2)."""
        return self._once("classes", lambda: encode_png(np.asarray(self.labels, dtype=np.uint8)))

    def files(self, stem: str) -> dict[str, bytes]:
        """The overlay (:meth:`overlay_png`), the mask (:meth:`mask_png`) and the class map (:meth:`classes_png`),
        named by :func:`moleseg.core.config.result_file_name`."""
        return {result_file_name(stem, "overlay"): self.overlay_png(), result_file_name(stem, "mask"): self.mask_png(),
                result_file_name(stem, "classes"): self.classes_png()}


def _measured(analysis: Analysis, colours: Callable[[], list[Measurement]] | None = None, *,
              border_width_px: Callable[[], tuple[float, float]] | None = None) -> Analysis:
    """The analysis with its measurements: of the lesion (three classes), or of every object and the
    field (two classes, :mod:`moleseg.core.objects`). ``colours``: returns the lesion's colour measurements
    (:func:`moleseg.core.measure.colour_measurements`), called once the shape is measured; ``border_width_px``:
    returns its border band's width (:func:`moleseg.core.bandwidth.border_width`; only when it has a band), made
    elsewhere; each put where :func:`moleseg.core.measure.measure_lesion` puts them."""
    segmentation = analysis.segmentation
    if analysis.cells:
        analysis.objects = find_objects(segmentation.lesion)
        analysis.measurements = field_measurements(analysis.objects, segmentation.lesion.size,
                                                   pixel_size_mm=analysis.pixel_size_mm)
        if not analysis.objects:
            analysis.error = analysis.words["none"]
    elif segmentation.lesion_box is not None:
        border = segmentation.border if _has_border(segmentation) else None
        analysis.measurements = measure_lesion(segmentation.lesion, border=border,
                                               pixel_size_mm=analysis.pixel_size_mm,
                                               image=analysis.image if colours is None else None,
                                               border_width_px=border_width_px if border is not None else None,
                                               lesion_box=segmentation.lesion_box)
        if colours is not None:
            analysis.measurements += colours()
    else:
        analysis.error = analysis.words["none"]
    return analysis


def _has_border(segmentation: Segmentation) -> bool:
    """True when the lesion of ``segmentation`` has a border band (looked for in the lesion's box, which holds it)."""
    box = segmentation.lesion_box
    return box is not None and bool(segmentation.border[box[0]:box[1], box[2]:box[3]].any())


def _here_unless_started(job: Future, function: Callable[..., Any], *args: Any, **keywords: Any) -> Any:
    """``job``'s result, or ``function(*args, **keywords)`` made in this thread when ``job`` (the same call handed to
    another thread) has not started there, so that this thread never waits for work it could do itself."""
    return function(*args, **keywords) if job.cancel() else job.result()


def check_image_side(image: np.ndarray) -> None:
    """Refuse an image with a side under :data:`moleseg.core.config.MIN_IMAGE_SIDE_PX`.

    Raises
    ------
    ValueError
        ``"image too small: W x H px, at least N px per side are needed"``.
    """
    height, width = image.shape[:2]
    if min(height, width) < MIN_IMAGE_SIDE_PX:
        raise ValueError(f"image too small: {width} x {height} px, at least {MIN_IMAGE_SIDE_PX} px per side "
                         "are needed")


def finish_analysis(image: np.ndarray, segmentation: Segmentation, segmenter: Segmenter,
                    pixel_size_mm: float | None = None, style: OverlayStyle | None = None) -> Analysis:
    """The :class:`Analysis` of an image whose prediction is cleaned already: measurements added."""
    return _finish(image, segmentation, segmenter, pixel_size_mm, style or OverlayStyle())


def _unmeasured(image: np.ndarray, segmentation: Segmentation, segmenter: Segmenter, pixel_size_mm: float | None,
                style: OverlayStyle) -> Analysis:
    return Analysis(image=image, segmentation=segmentation, segmenter_name=segmenter.name,
                    n_classes=segmenter.n_classes, pixel_size_mm=pixel_size_mm, style=style,
                    confidence_threshold=model_record(segmenter).confidence_threshold)


def _finish(image: np.ndarray, segmentation: Segmentation, segmenter: Segmenter, pixel_size_mm: float | None,
            style: OverlayStyle) -> Analysis:
    return _measured(_unmeasured(image, segmentation, segmenter, pixel_size_mm, style))


def measure_and_draw(image: np.ndarray, segmentation: Segmentation, segmenter: Segmenter, drawer: Executor, *,
                     pixel_size_mm: float | None = None, style: OverlayStyle | None = None,
                     shown: bool = False) -> Analysis:
    """The measured :class:`Analysis` of a cleaned image with its overlay drawn (:attr:`Analysis.overlay`): what
    an image needs to be shown, the work shared by this thread and ``drawer`` on two cores (OpenCV and numpy
    release the GIL). ``drawer`` is given, in this order: the overlay, with ``shown`` the overlay's JPEG as a page
    shows it (:attr:`Analysis.overlay_jpeg`), the two distance transforms of the lesion's border widths
    (:class:`moleseg.core.bandwidth.BandDistances`; needed once the shape is measured), the lesion's colours and
    the model's confidence (:attr:`Analysis.confidence`, which every page and ``moleseg predict``'s table show);
    this thread makes the other shape measurements, then takes back what ``drawer`` has not started, the last
    first, so that neither thread waits while the other has work left. The result files are not encoded
    (:attr:`Analysis.result_files` encodes them when asked)."""
    analysis = _unmeasured(image, segmentation, segmenter, pixel_size_mm, style or OverlayStyle())
    box = segmentation.lesion_box
    lesion_found = not analysis.cells and box is not None
    drawing = drawer.submit(_drawn, analysis)
    jobs = [drawing]
    encoding = colours = width = None
    try:
        if shown:
            encoding = drawer.submit(_encoded, analysis)
            jobs.append(encoding)
        if lesion_found and _has_border(segmentation):
            width = _shared_width(band_distances(segmentation.lesion, segmentation.border, lesion_box=box), drawer,
                                  jobs)
        if lesion_found:
            colours = drawer.submit(colour_measurements, image, segmentation.lesion, lesion_box=box)
            jobs.append(colours)
        confidence = drawer.submit(_confidence_of, segmentation)
        jobs.append(confidence)

        def coloured() -> list[Measurement]:
            return _here_unless_started(colours, colour_measurements, image, segmentation.lesion, lesion_box=box)

        _here_unless_started(confidence, _confidence_of, segmentation)
        _measured(analysis, coloured if colours is not None else None, border_width_px=width)
        # the JPEG, queued behind the overlay, is taken back first: either thread encodes it once it is drawn
        encode_here = encoding is not None and encoding.cancel()
        _here_unless_started(drawing, _drawn, analysis)
        if encode_here:
            _encoded(analysis)
        elif encoding is not None:
            encoding.result()
    except BaseException:  # nothing left queued for the drawer
        for job in jobs:
            job.cancel()
        raise
    return analysis


def _shared_width(band: BandDistances, drawer: Executor, jobs: list[Future]) -> Callable[[], tuple[float, float]]:
    """``band``'s width (:meth:`moleseg.core.bandwidth.BandDistances.width`), its two distance transforms handed to
    ``drawer`` (each job added to ``jobs``), each made in this thread when ``drawer`` has not started it."""
    if not band.defined:  # no distances to make
        return band.width
    outer = drawer.submit(band.outer)
    inside = drawer.submit(band.to_inside)
    jobs += [outer, inside]
    return functools.partial(band.width, outer=functools.partial(_here_unless_started, outer, band.outer),
                             inside=functools.partial(_here_unless_started, inside, band.to_inside))


def _confidence_of(segmentation: Segmentation) -> float:
    """``segmentation``'s confidence, made once (:attr:`moleseg.engine.segmenter.Segmentation.confidence`)."""
    return segmentation.confidence


def _drawn(analysis: Analysis) -> np.ndarray:
    """``analysis``' overlay, drawn once (:attr:`Analysis.overlay`)."""
    return analysis.overlay


def _encoded(analysis: Analysis) -> bytes:
    """``analysis``' overlay encoded as a page shows it, once (:attr:`Analysis.overlay_jpeg`)."""
    return analysis.overlay_jpeg
