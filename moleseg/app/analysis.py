"""The Analyse page's analyses: uploads keyed by content, the server's analysis cache (one
:class:`AnalysisStore` shared by every session, held by :func:`moleseg.app.ui.analysis_store`), and
:func:`analyse_uploads`, which predicts only what that cache lacks and re-cleans the rest. No Streamlit and no
TensorFlow at import (a ``.keras`` segmenter brings TensorFlow when loaded).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from cachetools import LRUCache

from moleseg.app.cleanup_plan import AutoCleanup, CleanupChoice, CleanupPlan
from moleseg.core.cleanup import CleanupSettings
from moleseg.core.config import MAX_UPLOAD_FILES
from moleseg.core.imageio import read_image
from moleseg.core.measure import Measurement
from moleseg.core.report import display_unit
from moleseg.engine.batches import analyse_batches, failure_reason
from moleseg.engine.pipeline import Analysis, OverlayStyle, check_image_side
from moleseg.engine.segmenter import MODEL_THRESHOLD, Segmenter

#: Budget of the server's one analysis cache (images, probabilities, masks of every session), in bytes.
ANALYSIS_CACHE_BYTES: int = int(os.environ.get("MOLESEG_APP_CACHE_MB", "1024")) * 1024 * 1024
#: Earlier cleanups of one image kept beside its latest (other cleanup settings, threshold or pixel size), so
#: that going back to values shown before (a slider pressed back) costs no cleanup and no measuring.
EARLIER_VARIANTS_KEPT: int = 6


def hex_to_rgb(text: str) -> tuple[int, int, int]:
    """``"#ffc800"`` -> ``(255, 200, 0)``."""
    value = text.strip().lstrip("#")
    if len(value) == 3:
        value = "".join(c * 2 for c in value)
    if not re.fullmatch(r"[0-9a-fA-F]{6}", value):
        raise ValueError(f"not a colour: {text!r}")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def rgb_to_hex(color: Sequence[int]) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in color[:3])



def digest(data: bytes) -> str:
    """SHA-256 of a file's bytes (the cache key of its prediction)."""
    return hashlib.sha256(data).hexdigest()


def too_many_uploads(count: int) -> str | None:
    """The refusal of an upload of ``count`` files when it is more than :data:`MAX_UPLOAD_FILES` (one sentence
    with the count and the limit), else None. The whole upload is refused: not its first files either."""
    if count <= MAX_UPLOAD_FILES:
        return None
    return (f"{count:,} files were uploaded and one analysis takes at most {MAX_UPLOAD_FILES:,}: none was "
            f"analysed; upload them in parts of {MAX_UPLOAD_FILES:,} or fewer.")


@dataclass
class Upload:
    """One uploaded file."""

    name: str
    data: bytes
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            self.key = digest(self.data)


def distinct_uploads(uploads: Sequence[Upload]) -> tuple[list[Upload], list[str]]:
    """The uploads with every repeat of an earlier file's content left out (its analysis, cleanup, visit and
    hand edits are kept by content, :attr:`Upload.key`), and one note per repeat naming the file it repeats."""
    kept: dict[str, Upload] = {}
    notes = []
    for upload in uploads:
        first = kept.setdefault(upload.key, upload)
        if first is not upload:
            notes.append(f"{upload.name} was uploaded twice: analysed once." if upload.name == first.name else
                         f"{upload.name} is the same image as {first.name}: analysed once, as {first.name}.")
    return list(kept.values()), notes


@dataclass
class ImageOutcome:
    """One uploaded file on the Analyse page: its analysis, or why there is none."""

    name: str
    analysis: Analysis | None = None
    error: str | None = None
    stem: str = ""
    key: str = ""  # the upload's digest (:attr:`Upload.key`)

    @property
    def ok(self) -> bool:
        return self.analysis is not None


@dataclass(frozen=True)
class CachedAnalysis:
    """One entry of the :class:`AnalysisStore`: an analysis, the parameters it was cleaned with, its size in
    bytes, and the image's earlier analyses (by their parameters, oldest first) from the same prediction."""

    analysis: Analysis
    params: tuple
    nbytes: int
    earlier: dict[tuple, Analysis] = dataclasses.field(default_factory=dict)

    def variant(self, params: tuple) -> Analysis | None:
        """The analysis cleaned with ``params`` (the latest or an earlier one), or None."""
        return self.analysis if params == self.params else self.earlier.get(params)


def _variant_bytes(analysis: Analysis) -> int:
    """Bytes of what one cleanup of an image adds: its masks, its two pictures (the overlay and the class
    picture, drawn once when first shown) and its result files (:attr:`Analysis.result_files`, kept once
    downloaded: the overlay's PNG stores its 3 bytes a pixel uncompressed, the masks' PNGs of a few smooth
    regions compress to far less; 4 bytes a pixel counted for the three); the image and the probabilities are
    shared by every cleanup."""
    seg = analysis.segmentation
    return int(seg.labels.nbytes + seg.lesion.nbytes * 3 + 2 * seg.labels.size * 3 + 4 * seg.labels.size)


def _analysis_bytes(analysis: Analysis) -> int:
    seg = analysis.segmentation
    return int(analysis.image.nbytes + seg.probabilities.nbytes + _variant_bytes(analysis))


class AnalysisStore:
    """The server's cache of analyses keyed by (model key, file digest), shared by all sessions and
    thread-safe: least recently used entries are evicted so that their bytes stay within ``max_bytes``
    (``cachetools.LRUCache`` sized by bytes). It holds the network's probabilities, so moving a slider
    only re-runs the cleanup (:meth:`moleseg.engine.pipeline.Analysis.recleaned`), which its ``drawer`` (one
    thread shared by every session) shares with the session's own thread."""

    def __init__(self, max_bytes: int = ANALYSIS_CACHE_BYTES) -> None:
        self._entries: LRUCache = LRUCache(maxsize=max_bytes, getsizeof=lambda entry: entry.nbytes)
        self._lock = threading.Lock()
        self.predictions = 0  # number of images sent through a segmenter (tests and diagnostics)
        self.drawer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moleseg-reclean")

    @property
    def max_bytes(self) -> int:
        return int(self._entries.maxsize)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes held now (never above ``max_bytes``)."""
        with self._lock:
            return int(self._entries.currsize)

    def get(self, key: tuple[str, str]) -> CachedAnalysis | None:
        """The entry of ``key`` (now the most recently used), or None."""
        with self._lock:
            return self._entries.get(key)

    def lacks(self, model_key: str, upload_keys: Sequence[str]) -> bool:
        """Whether some of the uploads (:attr:`Upload.key`) has no analysis by this model here (it would be
        predicted); the entries' order of use is left as it is."""
        with self._lock:
            return any((model_key, key) not in self._entries for key in upload_keys)

    def put(self, key: tuple[str, str], analysis: Analysis, params: tuple) -> bool:
        """Keep ``analysis`` under ``key`` (the entry's earlier analyses, and the one it replaces, kept as
        earlier variants, :data:`EARLIER_VARIANTS_KEPT` at most), evicting the least recently used entries
        as needed; False when it alone is larger than the whole budget (then it is not kept)."""
        with self._lock:
            before = self._entries.get(key)
            earlier = {} if before is None else dict(before.earlier)
            if before is not None and before.analysis is not analysis:
                earlier[before.params] = before.analysis
            earlier.pop(params, None)
            size = _analysis_bytes(analysis)
            while earlier and (len(earlier) > EARLIER_VARIANTS_KEPT
                               or size + sum(map(_variant_bytes, earlier.values())) > self.max_bytes):
                del earlier[next(iter(earlier))]  # the oldest first
            entry = CachedAnalysis(analysis, params, size + sum(map(_variant_bytes, earlier.values())), earlier)
            try:
                self._entries[key] = entry
            except ValueError:  # larger than max_bytes
                self._entries.pop(key, None)
                return False
        return True

    def count_predictions(self, images: int) -> None:
        with self._lock:
            self.predictions += images

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.predictions = 0


def _params(settings: CleanupSettings | None, pixel_size_mm: float | None, style: OverlayStyle,
            lesion_threshold: Any) -> tuple:
    return (None if settings is None else tuple(sorted(settings.to_dict().items())), pixel_size_mm,
            (tuple(style.fill_color), tuple(style.border_color), style.fill_opacity, style.border_opacity),
            lesion_threshold)


def _same_cleanup(cleaned_with: tuple, wanted: tuple) -> bool:
    """Whether two :func:`_params` tuples have the same cleanup settings and lesion threshold (the same lesion),
    whatever their pixel size and overlay style."""
    return cleaned_with[0] == wanted[0] and cleaned_with[3] == wanted[3]


def rescaled_measurements(measurements: Sequence[Measurement], pixel_size_mm: float | None) -> list[Measurement]:
    """The measurements of a lesion (or a field of cells) for another pixel size, without measuring again: the
    millimetre values dropped, and with ``pixel_size_mm`` (mm per px, > 0) each length or area in pixels
    followed by its value in mm or mm², as :func:`moleseg.core.measure.measure_lesion` and
    :func:`moleseg.core.objects.field_measurements` give them (an area is the one whose unit prints with a
    ², :func:`moleseg.core.report.display_unit`)."""
    result = []
    for item in measurements:
        if item.unit in ("mm", "mm2"):
            continue
        result.append(item)
        if pixel_size_mm is not None and item.unit in ("px", "px2"):
            area = display_unit(item.key, item.unit).endswith("\u00b2")
            result.append(Measurement(item.key, item.label, item.value * pixel_size_mm ** (2 if area else 1),
                                      "mm2" if area else "mm", item.meaning))
    return result


def _drawn_again(before: Analysis, after: Analysis) -> Analysis:
    """``after`` with the pictures of ``before`` it would draw the same (the class picture of equal labels and its
    JPEG, the overlay of the same lesion in the same colours and its JPEG), so that they are neither drawn nor encoded
    again; the pictures are :class:`moleseg.core.cached.cached_value` values, kept in the instance's ``__dict__``."""
    drawn, same = vars(before), before.segmentation.labels is after.segmentation.labels
    if "class_picture" in drawn and (same or np.array_equal(before.segmentation.labels, after.segmentation.labels)):
        vars(after).update({name: drawn[name] for name in ("class_picture", "class_jpeg") if name in drawn})
    if before.segmentation is after.segmentation and before.style == after.style:
        vars(after).update({name: drawn[name] for name in ("overlay", "overlay_jpeg") if name in drawn})
    return after


def with_units(analysis: Analysis, pixel_size_mm: float | None, style: OverlayStyle) -> Analysis:
    """The same lesion and pictures for another pixel size (mm per px, None for pixels only) and overlay
    style: its measurements rescaled (:func:`rescaled_measurements`), no cleanup and no measuring."""
    measurements = (analysis.measurements if pixel_size_mm == analysis.pixel_size_mm
                    else rescaled_measurements(analysis.measurements, pixel_size_mm))
    return _drawn_again(analysis, dataclasses.replace(analysis, pixel_size_mm=pixel_size_mm, style=style,
                                                      measurements=measurements))


def unique_stems(names: Sequence[str]) -> list[str]:
    """File-name stems safe inside a ZIP and unique ignoring case: ``a.jpg``, ``A.png`` -> ``a``, ``A_2``."""
    stems: list[str] = []
    seen: set[str] = set()
    for name in names:
        base = Path(name.replace("\\", "/")).stem or "image"
        base = re.sub(r"[^\w.+-]+", "_", base).strip("._") or "image"
        stem, index = base, 2
        while stem.casefold() in seen:
            stem, index = f"{base}_{index}", index + 1
        seen.add(stem.casefold())
        stems.append(stem)
    return stems


def analyse_uploads(store: AnalysisStore, segmenter: Segmenter, model_key: str, uploads: Sequence[Upload], *,
                    settings: CleanupSettings | None = None, pixel_size_mm: float | None = None,
                    style: OverlayStyle | None = None, lesion_threshold: Any = MODEL_THRESHOLD,
                    plan: "CleanupPlan | None" = None,
                    progress: Callable[[int, int, str], None] | None = None,
                    prepare: Callable[[Analysis], Any] | None = None, shown: str | None = None) -> list[ImageOutcome]:
    """Analyse every upload, predicting only those not in ``store`` for this model.

    A file that cannot be read or analysed gets an :class:`ImageOutcome` with ``error``
    (:func:`moleseg.engine.batches.failure_reason`); the others are still processed. A cached
    prediction is never predicted again: settings it was shown with before (:data:`EARLIER_VARIANTS_KEPT`) are
    taken as they were; another pixel size or overlay style alone rescales its measurements and redraws its
    overlay (:func:`with_units`); another cleanup or lesion threshold re-cleans it.
    ``plan``: per-image cleanup (:class:`CleanupPlan`); an image it has no choice for gets ``settings``
    and ``lesion_threshold``. ``progress(done, total, name)``: after each batch analysed
    (:func:`moleseg.engine.batches.analyse_batches`: the next batch is read and the last one measured while
    the network runs), ``total`` the number of uploads and ``done`` counting those that needed no prediction
    (cached). ``prepare``: called on each new analysis while the network runs on the next batch (what the page
    shows of every image, e.g. its grid thumbnail). ``shown``: the upload key of the image the page shows in
    full, whose overlay's display JPEG a re-cleaning makes beside its measurements (every re-cleaning draws its
    overlay so, in the store's ``drawer`` thread).

    Raises
    ------
    ValueError
        With :func:`too_many_uploads`'s sentence when there are more than :data:`MAX_UPLOAD_FILES` uploads
        (nothing analysed).
    """
    refusal = too_many_uploads(len(uploads))
    if refusal:
        raise ValueError(refusal)
    style = style or OverlayStyle()
    default = CleanupChoice(settings, lesion_threshold)
    choices = [(plan.for_image(u.key) if plan else None) or default for u in uploads]
    image_params = [_params(c.settings, pixel_size_mm, style, c.lesion_threshold) for c in choices]
    default_params = _params(settings, pixel_size_mm, style, lesion_threshold)
    stems = unique_stems([u.name for u in uploads])
    outcomes = [ImageOutcome(name=u.name, stem=stem, key=u.key) for u, stem in zip(uploads, stems)]
    keys = [(model_key, u.key) for u in uploads]
    todo: list[int] = []
    cached: dict[int, CachedAnalysis] = {}  # held here: another session may evict them from the store
    for index, key in enumerate(keys):
        entry = store.get(key)
        if entry is None:
            todo.append(index)
        else:
            cached[index] = entry
    fresh: dict[int, Analysis] = {}  # predicted now: used even when the store cannot keep them
    done = len(uploads) - len(todo)  # cached: nothing left to do for them
    refused: set[int] = set()  # uploads that never reach the network: unreadable, or too small

    def reader(index: int) -> np.ndarray:
        try:
            image = read_image(uploads[index].data, name=uploads[index].name)
            check_image_side(image)
        except Exception:
            refused.add(index)
            raise
        return image

    readers = [functools.partial(reader, index) for index in todo]
    for batch in analyse_batches(segmenter, readers, settings=settings, pixel_size_mm=pixel_size_mm, style=style,
                                 lesion_threshold=lesion_threshold, prepare=prepare):
        chunk, todo = todo[:len(batch)], todo[len(batch):]
        store.count_predictions(sum(index not in refused for index in chunk))
        for index, analysis in zip(chunk, batch):
            if isinstance(analysis, Exception):
                outcomes[index].error = failure_reason(uploads[index].name, analysis)
            else:
                fresh[index] = analysis
                store.put(keys[index], analysis, default_params)
        done += len(chunk)
        if progress:
            progress(done, len(uploads), uploads[chunk[-1]].name)
    for index, key in enumerate(keys):
        if outcomes[index].error:
            continue
        if index in fresh:
            analysis, cleaned_with = fresh[index], default_params
        else:
            analysis, cleaned_with = cached[index].analysis, cached[index].params
        wanted = image_params[index]
        shown_before = None if index in fresh else cached[index].variant(wanted)
        if cleaned_with != wanted and shown_before is not None:  # shown before: nothing to compute
            analysis = shown_before
        elif cleaned_with != wanted and _same_cleanup(cleaned_with, wanted):  # other units or colours
            analysis = with_units(analysis, pixel_size_mm, style)  # a new overlay is drawn when shown
        elif cleaned_with != wanted:  # this image's own cleanup (or new settings): re-clean only
            choice = choices[index]
            try:
                analysis = _drawn_again(analysis, analysis.recleaned(
                    segmenter, choice.settings, pixel_size_mm=pixel_size_mm, style=style,
                    lesion_threshold=choice.lesion_threshold, drawer=store.drawer, shown=uploads[index].key == shown))
            except Exception as error:
                outcomes[index].error = failure_reason(uploads[index].name, error)
                continue
        if cleaned_with != wanted:
            store.put(key, analysis, wanted)
        outcomes[index].analysis = analysis
    return outcomes


def automatic_cleanups(segmenter: Segmenter, outcomes: Sequence[ImageOutcome]) -> dict[str, AutoCleanup]:
    """The automatic cleanup of each analysed image, by upload key (what the manual sliders start from)."""
    from moleseg.engine.segmenter import cleanup_for_image

    result = {}
    for outcome in outcomes:
        if outcome.analysis is not None:
            height, width = outcome.analysis.image.shape[:2]
            result[outcome.key] = AutoCleanup(cleanup_for_image(segmenter, (height, width)), height, width)
    return result
