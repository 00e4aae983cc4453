"""Everything the app's pages compute, outside the pages: model choices, the per-session analysis
cache, exports, target previews, evaluation tables. No Streamlit and no TensorFlow at import
(:mod:`moleseg.app.ui` holds the Streamlit glue; a ``.keras`` segmenter brings TensorFlow when loaded).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from cachetools import LRUCache

from moleseg.core.cleanup import CleanupSettings
from moleseg.core.config import (DEFAULT_BORDER_WIDTH_PX, DEFAULT_CLASS_COUNT, DEFAULT_SHAPE, class_names, models_dir,
                                  runs_dir)
from moleseg.core.dataset import SavedPair, save_pair
from moleseg.core.imageio import ImageReadError, mask_problem, read_image, read_mask
from moleseg.core.modelinfo import ModelInfo
from moleseg.core.report import MEASUREMENTS_CSV, Visit
from moleseg.engine.correction import Corrections, Stroke
from moleseg.engine.pipeline import Analysis, OverlayStyle, analyse_images
from moleseg.engine.overlap import training_overlap
from moleseg.engine.segmenter import MODEL_THRESHOLD, Segmenter
from moleseg.engine.tasks import Progress

#: Specs of the classical baselines, by number of classes.
CLASSICAL_SPECS: dict[int, str] = {3: "classical", 2: "classical2"}
#: Budget of the server's one analysis cache (images, probabilities, masks of every session), in bytes.
ANALYSIS_CACHE_BYTES: int = int(os.environ.get("MOLESEG_APP_CACHE_MB", "1024")) * 1024 * 1024
#: Images predicted per network call on the Analyse page.
PREDICT_BATCH: int = 4


# --------------------------------------------------------------------------------------------------
# device

def device_summary() -> str:
    """``"GPU (NVIDIA ...)"`` when an NVIDIA driver is present, else ``"CPU (N cores)"`` -- without
    importing TensorFlow (TensorFlow itself decides later; this is what the machine offers)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    names: list[str] = []
    if gpus.is_dir():
        for folder in sorted(gpus.iterdir()):
            try:
                text = (folder / "information").read_text()
            except OSError:
                continue
            match = re.search(r"^Model:\s*(.+)$", text, re.MULTILINE)
            names.append(match.group(1).strip() if match else folder.name)
    if not names and shutil.which("nvidia-smi"):
        import subprocess

        try:
            output = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=5, check=False).stdout
            names = [line.strip() for line in output.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            names = []
    if names:
        return f"GPU ({', '.join(names)})"
    return f"CPU ({os.cpu_count() or 1} cores)"


# --------------------------------------------------------------------------------------------------
# models

@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model picker.

    ``spec`` is what :func:`moleseg.engine.segmenter.load_segmenter` takes; ``stamp`` changes when the file
    changes (so caches keyed by ``key`` see a retrained model).
    """

    spec: str
    label: str
    kind: str  # "shipped", "classical" or "run"
    n_classes: int | None = None
    stamp: int = 0
    status: str | None = None

    @property
    def key(self) -> str:
        return f"{self.spec}@{self.stamp}"

    @property
    def path(self) -> Path | None:
        return None if self.kind == "classical" else Path(self.spec)


def model_lesion_threshold(choice: ModelChoice) -> float | None:
    """The lesion probability threshold a model file was calibrated with (0..1), None for the arg-max
    or when it cannot be read (read from its ``moleseg.json``, no TensorFlow)."""
    value = _info(choice.path).lesion_threshold if choice.path is not None else None
    return None if value is None else float(value)


def _stamp(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _info(path: Path) -> ModelInfo:
    """The model file's metadata; empty (the defaults) when it cannot be read."""
    from moleseg.core.modelinfo import ModelFileError, read_info

    try:
        return read_info(path)
    except ModelFileError:
        return ModelInfo()


def shipped_models(models: str | Path | None = None) -> list[Path]:
    """The ``.keras`` files of the models folder, the dermoscopy model first."""
    folder = Path(models or models_dir())
    if not folder.is_dir():
        return []
    files = [p for p in folder.glob("*.keras") if p.is_file() and not p.name.startswith(".")]
    return sorted(files, key=lambda p: (p.stem != "dermoscopy", p.stem != "cells", p.name))


def model_choices(models: str | Path | None = None, runs: str | Path | None = None) -> list[ModelChoice]:
    """Shipped models, then the classical baselines, then the user's training runs (newest first)."""
    from moleseg.engine.runs import RunFiles, list_runs, read_json

    choices: list[ModelChoice] = []
    for path in shipped_models(models):
        n_classes = _info(path).n_classes
        kind_text = {3: "dermoscopy, 3 classes", 2: "cells, 2 classes"}.get(n_classes, "model")
        choices.append(ModelChoice(spec=str(path), label=f"{path.stem} (shipped, {kind_text})", kind="shipped",
                                   n_classes=n_classes, stamp=_stamp(path)))
    choices.append(ModelChoice(spec=CLASSICAL_SPECS[3], label="classical baseline (dermoscopy, 3 classes, no network)",
                               kind="classical", n_classes=3))
    choices.append(ModelChoice(spec=CLASSICAL_SPECS[2], label="classical baseline (cells, 2 classes, no network)",
                               kind="classical", n_classes=2))
    for run in list_runs(runs or runs_dir()):
        files = RunFiles(run)
        model = files.model
        info = _info(model)
        state = read_json(files.state, {}) or {}
        progress = read_json(files.progress, {}) or {}
        status = progress.get("status") or state.get("status")
        fm = state.get("best_val_fm")
        details = [f"{info.n_classes or '?'} classes"]
        if isinstance(fm, (int, float)) and fm >= 0:
            details.append(f"validation FM {fm:.3f}")
        if status and status != "done":
            details.append(str(status))
        choices.append(ModelChoice(spec=str(model), label=f"run {run.name} ({', '.join(details)})", kind="run",
                                   n_classes=info.n_classes, stamp=_stamp(model), status=status))
    return choices


#: File name of the shipped mole model, the app's default.
DERMOSCOPY_MODEL = "dermoscopy.keras"


def dermoscopy_model(models: str | Path | None = None) -> Path | None:
    """The shipped dermoscopy model, when it is installed."""
    path = Path(models or models_dir()) / DERMOSCOPY_MODEL
    return path if path.is_file() else None


def default_model_spec(models: str | Path | None = None) -> str:
    """The shipped dermoscopy model when it is installed, else the classical baseline (a shipped cells
    model is never the default of a mole app)."""
    shipped = dermoscopy_model(models)
    return str(shipped) if shipped else CLASSICAL_SPECS[3]


def _record(info: ModelInfo | Mapping[str, Any]) -> ModelInfo:
    return info if isinstance(info, ModelInfo) else ModelInfo.from_dict(info)


def model_version(info: ModelInfo | Mapping[str, Any]) -> str:
    """A short version text of a model for reports (:attr:`ModelInfo.version_text`)."""
    return _record(info).version_text


def decision_text(info: ModelInfo | Mapping[str, Any]) -> str:
    """How a model turns probabilities into classes, for people: threshold or arg-max, flips, and the
    validation FM that chose them (from its ``moleseg.json``)."""
    info = _record(info)
    threshold = info.lesion_threshold
    text = "most likely class" if threshold is None else f"lesion where its probability ≥ {float(threshold):.2f}"
    text += ", with flip averaging" if info.test_time_augmentation else ", no flips"
    calibration = info.calibration
    if isinstance(calibration.get("fm"), (int, float)) and isinstance(calibration.get("baseline_fm"), (int, float)):
        method = calibration.get("method")  # e.g. "5-fold cross-validation, out of fold"
        images = f"{calibration.get('n_images')} validation images" + (f" ({method})" if method else "")
        text += (f" (chosen on {images}: FM {calibration['fm']:.4f}, "
                 f"arg-max without flips {calibration['baseline_fm']:.4f})")
    return text


def model_details(choice: ModelChoice, info: ModelInfo | Mapping[str, Any] | None = None) -> list[dict[str, str]]:
    """Rows ``{"property", "value"}`` describing a model (read without TensorFlow)."""
    if info is None:
        if choice.kind == "classical":
            from moleseg.core.classical import ClassicalSegmenter

            info = ClassicalSegmenter(n_classes=choice.n_classes or 3).info
        else:
            info = _info(Path(choice.spec))
    info = _record(info)
    rows: list[tuple[str, Any]] = [("name", info.name),
                                   ("file", choice.spec if choice.kind != "classical" else "")]
    rows.append(("classes", ", ".join(info.class_names)))
    if info.description:
        rows.append(("method", info.description))
    model = info.model
    if model:
        rows.append(("network", f"{model.get('architecture')} / {model.get('backbone')}, "
                                f"{info.input_size} px input"))
    if info.inference == "tiles":
        scale = "at their own size" if info.tile_scale == 1.0 else f"enlarged {info.tile_scale:g}x"
        rows.append(("images", f"cut into {info.input_size} px tiles {scale}"))
    rows.append(("version", model_version(info)))
    training = info.training
    if training:
        rows.append(("trained on", f"{training.get('n_train')} images ({training.get('n_validation')} for "
                                   f"validation), {training.get('epoch')} epochs, {training.get('solver')}, "
                                   f"batch {training.get('batch_size')}, "
                                   f"learning rate {training.get('learning_rate')}"))
    if isinstance(info.validation_fm, (int, float)):
        rows.append(("validation FM", f"{info.validation_fm:.4f}"))
    if info.cleanup:
        cleanup = info.cleanup
        rows.append(("cleanup defaults", f"rule {cleanup.get('rule')}, closing {cleanup.get('closing_radius_px')} px, "
                                         f"border {cleanup.get('border_width_px')} px ({cleanup.get('shape')}), "
                                         f"px of the {info.input_size} px input"))
    if model:
        rows.append(("decision", decision_text(info)))
    if choice.status:
        rows.append(("training status", choice.status))
    return [{"property": key, "value": str(value)} for key, value in rows if value not in ("", None)]


# --------------------------------------------------------------------------------------------------
# colours

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


# --------------------------------------------------------------------------------------------------
# the Analyse page

def digest(data: bytes) -> str:
    """SHA-256 of a file's bytes (the cache key of its prediction)."""
    return hashlib.sha256(data).hexdigest()


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
    """One entry of the :class:`AnalysisStore`: an analysis, the parameters it was cleaned with, its size."""

    analysis: Analysis
    params: tuple
    nbytes: int


def _analysis_bytes(analysis: Analysis) -> int:
    seg = analysis.segmentation
    pictures = 2 * seg.labels.size * 3  # the overlay and the class picture, drawn once when first shown
    return int(analysis.image.nbytes + seg.probabilities.nbytes + seg.labels.nbytes + seg.lesion.nbytes * 3 + pictures)


class AnalysisStore:
    """The server's cache of analyses keyed by (model key, file digest), shared by all sessions and
    thread-safe: least recently used entries are evicted so that their bytes stay within ``max_bytes``
    (``cachetools.LRUCache`` sized by bytes). It holds the network's probabilities, so moving a slider
    only re-runs the cleanup (:meth:`moleseg.engine.pipeline.Analysis.recleaned`)."""

    def __init__(self, max_bytes: int = ANALYSIS_CACHE_BYTES) -> None:
        self._entries: LRUCache = LRUCache(maxsize=max_bytes, getsizeof=lambda entry: entry.nbytes)
        self._lock = threading.Lock()
        self.predictions = 0  # number of images sent through a segmenter (tests and diagnostics)

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

    def put(self, key: tuple[str, str], analysis: Analysis, params: tuple) -> bool:
        """Keep ``analysis`` under ``key``, evicting the least recently used entries as needed; False
        when it alone is larger than the whole budget (then it is not kept)."""
        entry = CachedAnalysis(analysis, params, _analysis_bytes(analysis))
        with self._lock:
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


def _failure(name: str, error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if isinstance(error, ImageReadError) else f"{name}: could not be analysed ({text})"


def analyse_uploads(store: AnalysisStore, segmenter: Segmenter, model_key: str, uploads: Sequence[Upload], *,
                    settings: CleanupSettings | None = None, pixel_size_mm: float | None = None,
                    style: OverlayStyle | None = None, lesion_threshold: Any = MODEL_THRESHOLD,
                    plan: "CleanupPlan | None" = None,
                    progress: Callable[[int, int, str], None] | None = None) -> list[ImageOutcome]:
    """Analyse every upload, predicting only those not in ``store`` for this model.

    A file that cannot be read or analysed gets an :class:`ImageOutcome` with ``error`` (the
    :class:`moleseg.core.imageio.ImageReadError` message); the others are still processed. Cached
    predictions whose cleanup, pixel size or style differ are re-cleaned, not re-predicted.
    ``plan``: per-image cleanup (:class:`CleanupPlan`); an image it has no choice for gets ``settings``
    and ``lesion_threshold``.
    """
    style = style or OverlayStyle()
    default = CleanupChoice(settings, lesion_threshold)
    choices = [(plan.for_image(u.key) if plan else None) or default for u in uploads]
    image_params = [_params(c.settings, pixel_size_mm, style, c.lesion_threshold) for c in choices]
    default_params = _params(settings, pixel_size_mm, style, lesion_threshold)
    stems = unique_stems([u.name for u in uploads])
    outcomes = [ImageOutcome(name=u.name, stem=stem, key=u.key) for u, stem in zip(uploads, stems)]
    keys = [(model_key, u.key) for u in uploads]
    todo: list[tuple[int, np.ndarray]] = []
    cached: dict[int, CachedAnalysis] = {}  # held here: another session may evict them from the store
    for index, (upload, key) in enumerate(zip(uploads, keys)):
        entry = store.get(key)
        if entry is not None:
            cached[index] = entry
            continue
        try:
            todo.append((index, read_image(upload.data, name=upload.name)))
        except ImageReadError as error:
            outcomes[index].error = _failure(upload.name, error)
        except Exception as error:  # a reader bug must not take the other files down
            outcomes[index].error = _failure(upload.name, error)
    fresh: dict[int, Analysis] = {}  # predicted now: used even when the store cannot keep them
    done = 0
    for start in range(0, len(todo), PREDICT_BATCH):
        chunk = todo[start:start + PREDICT_BATCH]
        try:
            analyses = analyse_images(segmenter, [image for _, image in chunk], settings=settings,
                                      pixel_size_mm=pixel_size_mm, style=style, lesion_threshold=lesion_threshold)
        except Exception:
            analyses = []
            for index, image in chunk:  # find the file that fails
                try:
                    analyses.append(analyse_images(segmenter, [image], settings=settings, pixel_size_mm=pixel_size_mm,
                                                   style=style, lesion_threshold=lesion_threshold)[0])
                except Exception as error:
                    outcomes[index].error = _failure(uploads[index].name, error)
                    analyses.append(None)
        store.count_predictions(len(chunk))
        for (index, _), analysis in zip(chunk, analyses):
            if analysis is not None:
                fresh[index] = analysis
                store.put(keys[index], analysis, default_params)
        done += len(chunk)
        if progress:
            progress(done, len(todo), uploads[chunk[-1][0]].name)
    for index, key in enumerate(keys):
        if outcomes[index].error:
            continue
        if index in fresh:
            analysis, cleaned_with = fresh[index], default_params
        else:
            analysis, cleaned_with = cached[index].analysis, cached[index].params
        if cleaned_with != image_params[index]:  # this image's own cleanup (or new settings): re-clean only
            choice = choices[index]
            try:
                analysis = analysis.recleaned(segmenter, choice.settings, pixel_size_mm=pixel_size_mm,
                                              style=style, lesion_threshold=choice.lesion_threshold)
            except Exception as error:
                outcomes[index].error = _failure(uploads[index].name, error)
                continue
            store.put(key, analysis, image_params[index])
        outcomes[index].analysis = analysis
    return outcomes


# --------------------------------------------------------------------------------------------------
# per-image cleanup

@dataclass(frozen=True)
class CleanupChoice:
    """One image's cleanup: ``settings`` in px of that image (None: the model's automatic cleanup)
    and the lesion threshold (0..1, None for the arg-max, :data:`MODEL_THRESHOLD` for the model's)."""

    settings: CleanupSettings | None = None
    lesion_threshold: Any = MODEL_THRESHOLD


class CleanupPlan:
    """Which cleanup each image of the Analyse page gets, by upload key: its own manual choice,
    the choice applied to all images, or (neither) the automatic one.

    Manual settings apply to the image in view only, unless applied to all: then every image takes
    them and earlier per-image choices are dropped. Unticking "apply to all" returns the other
    images to the automatic cleanup.
    """

    def __init__(self) -> None:
        self.by_image: dict[str, CleanupChoice] = {}
        self.for_all: CleanupChoice | None = None

    def record(self, image_key: str, choice: CleanupChoice, apply_to_all: bool = False) -> None:
        """The user set ``choice`` while viewing ``image_key``."""
        if apply_to_all:
            self.for_all = choice
            self.by_image = {}
        else:
            self.for_all = None
            self.by_image[image_key] = choice

    def for_image(self, image_key: str) -> CleanupChoice | None:
        """The image's choice; None for the automatic cleanup."""
        return self.for_all if self.for_all is not None else self.by_image.get(image_key)

    def clear(self) -> None:
        """Every image back to the automatic cleanup."""
        self.by_image = {}
        self.for_all = None


@dataclass(frozen=True)
class AutoCleanup:
    """The automatic cleanup of one image (its radii scaled to the image) and the image's size (px)."""

    settings: CleanupSettings
    height: int
    width: int


def automatic_cleanups(segmenter: Segmenter, outcomes: Sequence[ImageOutcome]) -> dict[str, AutoCleanup]:
    """The automatic cleanup of each analysed image, by upload key (what the manual sliders start from)."""
    from moleseg.engine.segmenter import cleanup_for_image

    result = {}
    for outcome in outcomes:
        if outcome.analysis is not None:
            height, width = outcome.analysis.image.shape[:2]
            result[outcome.key] = AutoCleanup(cleanup_for_image(segmenter, (height, width)), height, width)
    return result


#: Smallest maxima of the closing-radius and border-width sliders (px).
CLOSING_SLIDER_MIN_MAX_PX: int = 80
BORDER_SLIDER_MIN_MAX_PX: int = 40


def cleanup_slider_limits(auto: AutoCleanup | None) -> tuple[int, int]:
    """Maxima (px) of the closing-radius and border-width sliders for an image: twice its automatic value,
    at least a tenth (closing) and a fiftieth (border) of its longer side, at least 80 and 40 px, at most
    the cleanup's own limit (1000 px)."""
    from moleseg.core.cleanup import MAX_RADIUS_PX

    if auto is None:
        return CLOSING_SLIDER_MIN_MAX_PX, BORDER_SLIDER_MIN_MAX_PX
    side = max(auto.height, auto.width)
    closing = max(CLOSING_SLIDER_MIN_MAX_PX, 2 * auto.settings.closing_radius_px, side // 10)
    border = max(BORDER_SLIDER_MIN_MAX_PX, 2 * auto.settings.border_width_px, side // 50)
    return min(closing, MAX_RADIUS_PX), min(border, MAX_RADIUS_PX)


def shown_image_key(upload_keys: Sequence[str], selected: str | None, analysed_keys: Iterable[str] = ()
                    ) -> str | None:
    """The upload key of the image in view: the selected one when it is still uploaded, else the first
    analysed upload of the last run, else the first upload (None without uploads)."""
    if selected in upload_keys:
        return selected
    analysed = set(analysed_keys)
    return next((key for key in upload_keys if key in analysed), upload_keys[0] if upload_keys else None)


def cleanup_widget_values(choice: CleanupChoice | None, auto: AutoCleanup | None,
                          calibrated_threshold: float | None) -> dict[str, Any]:
    """Starting values of the manual cleanup widgets for an image: its recorded choice, else its automatic
    cleanup. Keys: ``rule, closing, border, fill, largest, shape, use_threshold, threshold``."""
    settings = (choice.settings if choice is not None and choice.settings is not None else
                auto.settings if auto is not None else CleanupSettings())
    threshold = choice.lesion_threshold if choice is not None else MODEL_THRESHOLD
    if threshold == MODEL_THRESHOLD:
        threshold = calibrated_threshold
    return {"rule": settings.rule, "closing": settings.closing_radius_px, "border": settings.border_width_px,
            "fill": settings.fill_holes, "largest": settings.largest_component, "shape": settings.shape,
            "use_threshold": threshold is not None, "threshold": 0.5 if threshold is None else float(threshold)}


# --------------------------------------------------------------------------------------------------
# correcting a lesion by hand

def correction_key(model_key: str, upload_key: str) -> str:
    """Key of one image's hand corrections: they belong to the model's result they were drawn on."""
    return f"{model_key}|{upload_key}"


def with_corrections(outcomes: Sequence[ImageOutcome], corrections: Mapping[str, Corrections], model_key: str
                     ) -> list[ImageOutcome]:
    """The outcomes with each image's hand corrections applied (:meth:`Analysis.corrected`)."""
    result = []
    for outcome in outcomes:
        edits = corrections.get(correction_key(model_key, outcome.key))
        if outcome.analysis is not None and edits is not None and edits.any:
            outcome = dataclasses.replace(outcome, analysis=outcome.analysis.corrected(edits))
        result.append(outcome)
    return result


def _path_points(path: Sequence[Sequence[Any]]) -> list[tuple[float, float]]:
    points = []
    for command in path:
        numbers = [float(value) for value in command[1:] if isinstance(value, (int, float))]
        points.extend(zip(numbers[0::2], numbers[1::2]))
    return points


def canvas_strokes(json_data: Mapping[str, Any] | None, scale: float) -> list[Stroke]:
    """The strokes drawn on a ``streamlit-drawable-canvas`` (its ``json_data``), in image px.

    ``scale``: image px per canvas px. Polygons (``points``) become filled polygons; free drawings
    (``path``) become brush lines of their stroke width; rectangles become polygons. Other objects
    are ignored.
    """
    strokes: list[Stroke] = []
    for item in (json_data or {}).get("objects", []):
        kind = str(item.get("type", "")).lower()
        if kind in ("polygon", "polyline") and item.get("points"):
            points = [(float(p["x"]), float(p["y"])) for p in item["points"]]
            strokes.append(Stroke.of(np.array(points) * scale))
        elif kind == "path" and item.get("path"):
            points = _path_points(item["path"])
            if points:
                strokes.append(Stroke.of(np.array(points) * scale, float(item.get("strokeWidth", 1)) * scale))
        elif kind == "rect":
            left, top = float(item.get("left", 0)), float(item.get("top", 0))
            width = float(item.get("width", 0)) * float(item.get("scaleX", 1))
            height = float(item.get("height", 0)) * float(item.get("scaleY", 1))
            corners = [(left, top), (left + width, top), (left + width, top + height), (left, top + height)]
            strokes.append(Stroke.of(np.array(corners) * scale))
    return strokes


def save_to_dataset(outcome: ImageOutcome, folder: str | Path, model_name: str, model_key: str = ""
                    ) -> SavedPair:
    """Save the image in view and its lesion (corrected or as the model drew it) into the user's dataset
    (:func:`moleseg.core.dataset.save_pair`), with the model, the cleanup and whether it was corrected.
    An image already there (same pixels) keeps its entry, whose mask is replaced (``replaced``)."""
    analysis = outcome.analysis
    if analysis is None:
        raise ValueError(f"{outcome.name}: nothing to save (not analysed)")
    segmentation = analysis.segmentation
    provenance = {"source": outcome.name, "model": model_name, "model_key": model_key,
                  "status": "corrected by hand" if analysis.corrected_by_hand else "accepted as is",
                  "corrected_by_hand": analysis.corrected_by_hand,
                  "cleanup": segmentation.settings.to_dict(), "lesion_threshold": segmentation.lesion_threshold}
    return save_pair(folder, outcome.stem or Path(outcome.name).stem, analysis.image, segmentation.lesion,
                     provenance)


def dataset_save_message(name: str, saved: SavedPair, folder: str | Path) -> str:
    """What the page says after :func:`save_to_dataset` saved the image ``name`` as ``saved``
    (:class:`moleseg.core.dataset.SavedPair`) in ``folder``: a new pair, or the mask of the same image
    already in the dataset replaced (with the entry's file name when it differs from ``name``)."""
    if saved.replaced:
        entry = "" if saved.image.name == name else f" (as {saved.image.name})"
        return f"{name} was already in your dataset{entry}: its mask was replaced in {folder}."
    return f"Saved {saved.image.name} and its mask in {folder}."


def measurement_table(analysis: Analysis) -> list[dict[str, str]]:
    """Rows ``{"measurement", "value", "unit", "meaning"}`` of an analysis, values to each quantity's
    decimals (:attr:`moleseg.core.measure.Measurement.text`); the page shows the keys capitalised."""
    from moleseg.core.report import display_unit

    return [{"measurement": m.label, "value": m.text, "unit": display_unit(m.key, m.unit), "meaning": m.meaning}
            for m in analysis.measurements]


def outcome_rows(outcomes: Sequence[ImageOutcome], model_name: str = "",
                 visits: Mapping[str, Visit] | None = None) -> list[dict[str, Any]]:
    """One CSV/table row per image: name, model, the patient/lesion identifier and visit date when
    ``visits`` (by :attr:`ImageOutcome.key`) gives them, note, the confidence and edge flags
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
            row.update(outcome.analysis.flag_row)
            row.update(outcome.analysis.rounded_row)
        rows.append(row)
    return rows


#: What the app's tables show for a value that is missing or undefined.
MISSING_TEXT = "\u2014"


def batch_table(outcomes: Sequence[ImageOutcome]) -> list[dict[str, str]]:
    """The Analyse page's table of many images: one row per image, readable headings with units
    (``"Area (px\u00b2)"``), values to each quantity's decimals, :data:`MISSING_TEXT` where an image has
    no value; a ``Note`` column when some image has a note (no lesion found, corrected by hand, error)."""
    headings: dict[str, None] = {"Image": None}
    rows = []
    for outcome in outcomes:
        row = {"Image": outcome.name}
        analysis = outcome.analysis
        note = outcome.error or (analysis.notes if analysis is not None else None)
        if note:
            row["Note"] = note
        for measurement in analysis.measurements if analysis is not None else []:
            row[measurement.heading] = measurement.text
        headings.update(dict.fromkeys(row))
        rows.append(row)
    if any("Note" in row for row in rows):
        headings = {"Image": None, "Note": None, **headings}
    return [{heading: row.get(heading, MISSING_TEXT) for heading in headings} for row in rows]


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
#: Longest side of a batch-grid thumbnail, in px.
THUMBNAIL_SIDE_PX: int = 360
#: Thumbnails per row of the batch grid.
GRID_COLUMNS: int = 4


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


def thumbnail(analysis: Analysis, side_px: int = THUMBNAIL_SIDE_PX) -> np.ndarray:
    """The overlay shrunk so that its longer side is at most ``side_px`` (area averaging), uint8 RGB."""
    import cv2

    picture = analysis.overlay
    height, width = picture.shape[:2]
    scale = side_px / max(height, width)
    if scale >= 1:
        return picture
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(picture, size, interpolation=cv2.INTER_AREA)


def canvas_background(analysis: Analysis, width: int, height: int) -> bytes:
    """The overlay resized to the drawing canvas (``width`` x ``height`` screen px, area averaging) as JPEG
    bytes: the canvas sends its background to the browser as a data URL on every rerun, and a JPEG is
    encoded ~50x faster than the PNG it would make of a picture (and is ~5x smaller)."""
    import cv2

    from moleseg.core.imageio import encode_jpeg

    picture = analysis.overlay
    if picture.shape[:2] != (height, width):
        picture = cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA)
    return encode_jpeg(picture)


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

    if outcome.analysis is None:
        return []
    downloads = []
    for fmt in OUTLINE_FORMATS:
        for name, data in outcome.analysis.outline_files(outcome.stem, [fmt]).items():
            downloads.append((OUTLINE_LABELS[fmt], name, data, OUTLINE_MIME[Path(name).suffix]))
    return downloads


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
        files[f"{outcome.stem}_report.pdf"] = outcome.analysis.pdf(outcome.name, model_version=model_version,
                                                                   created=created, visit=visit)
    return files


def batch_bundle(outcomes: Sequence[ImageOutcome], model_name: str = "", model_version: str = "",
                 created: datetime | None = None, visits: Mapping[str, Visit] | None = None) -> bytes:
    """A ZIP of everything: ``<stem>/`` with each image's PNGs and PDF, ``measurements.csv`` and its
    settings sidecar, ``objects.csv`` (cells models: one row per cell / nucleus) and ``errors.txt``
    when some files failed. ``visits``: by :attr:`ImageOutcome.key`."""
    from moleseg.core.report import sidecar_name, zip_bundle

    created = created or datetime.now().astimezone()
    visits = visits or {}
    files: dict[str, bytes] = {
        MEASUREMENTS_CSV: measurements_csv_bytes(outcomes, model_name, visits),
        sidecar_name(MEASUREMENTS_CSV): measurements_sidecar_bytes(outcomes, model_version, visits, created),
    }
    objects = objects_csv_bytes(outcomes)
    if objects:
        files["objects.csv"] = objects
    for outcome in outcomes:
        for name, data in outcome_files(outcome, model_version, created, visit=visits.get(outcome.key)).items():
            files[f"{outcome.stem}/{name}"] = data
    errors = [outcome.error for outcome in outcomes if outcome.error]
    if errors:
        files["errors.txt"] = ("\n".join(errors) + "\n").encode("utf-8")
    return zip_bundle(files)


# --------------------------------------------------------------------------------------------------
# the Prepare page

@dataclass
class TargetPreview:
    """One pair's image, mask, BACK/BORDER/INSIDE labels and their colours and frequencies."""

    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    picture: np.ndarray
    frequencies: np.ndarray
    n_classes: int
    resized_mask: bool = False

    @property
    def mask_problem(self) -> str | None:
        """Why the mask is suspicious (empty or full, :func:`moleseg.core.imageio.mask_problem`), or None."""
        return mask_problem(self.mask)

    def frequency_rows(self) -> list[dict[str, Any]]:
        return frequency_rows(self.frequencies, self.n_classes, self.labels.size)


def frequency_rows(frequencies: np.ndarray, n_classes: int, pixels: int | None = None) -> list[dict[str, Any]]:
    """Rows ``{"class", "fraction", "percent"[, "pixels"]}``."""
    rows = []
    for name, value in zip(class_names(n_classes), frequencies):
        row: dict[str, Any] = {"class": name, "fraction": round(float(value), 6),
                               "percent": f"{100 * float(value):.2f} %"}
        if pixels:
            row["pixels"] = int(round(float(value) * pixels))
        rows.append(row)
    return rows


def target_preview(image_path: str | Path, mask_path: str | Path, *, classes: int = DEFAULT_CLASS_COUNT,
                   border_width_px: int = DEFAULT_BORDER_WIDTH_PX, shape: str = DEFAULT_SHAPE,
                   border_at_image_edge: bool = False) -> TargetPreview:
    """Targets of one pair as training would make them (the mask resized to the image when they differ).

    Raises
    ------
    moleseg.core.imageio.ImageReadError
        An unreadable image or mask.
    """
    from moleseg.core.resize import resize_mask_to
    from moleseg.core.render import class_map
    from moleseg.core.targets import class_frequencies, make_targets

    image = read_image(image_path)
    mask = read_mask(mask_path, allow_empty=True)
    resized = mask.shape != image.shape[:2]
    if resized:
        mask = resize_mask_to(mask, image.shape[0], image.shape[1])
    labels = make_targets(mask, classes=classes, border_width_px=border_width_px, shape=shape,
                          border_at_image_edge=border_at_image_edge)
    return TargetPreview(image=image, mask=mask, labels=labels, picture=class_map(labels, classes),
                         frequencies=class_frequencies(labels, classes), n_classes=classes, resized_mask=resized)


#: Mask names listed in one empty/full warning; more are counted ("and N more").
MASK_NAMES_SHOWN = 10


def degenerate_mask_warnings(empty: Sequence[str], full: Sequence[str]) -> list[str]:
    """The app's warnings about empty and full masks (:func:`moleseg.core.imageio.mask_problem`):
    ``"N empty mask(s) (...): a.png, b.png"`` and the same for full ones; none when both lists are empty."""
    def names(items: Sequence[str]) -> str:
        shown = ", ".join(items[:MASK_NAMES_SHOWN])
        return shown + (f" and {len(items) - MASK_NAMES_SHOWN} more" if len(items) > MASK_NAMES_SHOWN else "")

    lines = []
    if empty:
        lines.append(f"{len(empty)} empty mask(s) (no foreground pixel, all black; scored and trained as "
                     f"'no lesion'): {names(empty)}")
    if full:
        lines.append(f"{len(full)} full mask(s) (every pixel foreground, all white: an image, or an inverted "
                     f"mask?): {names(full)}")
    return lines


def dataset_frequencies(mask_paths: Sequence[str | Path], *, classes: int = DEFAULT_CLASS_COUNT,
                        border_width_px: int = DEFAULT_BORDER_WIDTH_PX, shape: str = DEFAULT_SHAPE,
                        border_at_image_edge: bool = False,
                        progress: Callable[[int, int], None] | None = None,
                        degenerate: dict[str, list[str]] | None = None
                        ) -> tuple[np.ndarray, int, list[str]]:
    """Class frequencies over all masks (pixel-weighted), the number of masks read, and read errors.
    The names of empty and full masks are appended to ``degenerate["empty"]`` / ``degenerate["full"]``
    when given."""
    from moleseg.core.targets import class_frequencies, make_targets

    totals = np.zeros(classes, dtype=np.float64)
    read, errors = 0, []
    for index, path in enumerate(mask_paths, start=1):
        try:
            mask = read_mask(path, allow_empty=True)
        except ImageReadError as error:
            errors.append(str(error))
            continue
        if degenerate is not None and mask_problem(mask) is not None:
            degenerate.setdefault("full" if mask.any() else "empty", []).append(Path(path).name)
        labels = make_targets(mask, classes=classes, border_width_px=border_width_px, shape=shape,
                              border_at_image_edge=border_at_image_edge)
        totals += class_frequencies(labels, classes) * labels.size
        read += 1
        if progress:
            progress(index, len(mask_paths))
    share = totals / totals.sum() if totals.sum() else totals
    return share, read, errors


def frequencies_key(masks_dir: str | Path, *, classes: int, border_width_px: int, shape: str,
                    border_at_image_edge: bool) -> tuple:
    """The key of a dataset-wide class-frequency scan in the app's task registry."""
    return ("frequencies", str(Path(masks_dir).resolve()), int(classes), int(border_width_px), str(shape),
            bool(border_at_image_edge))


def frequencies_task(mask_paths: Sequence[str | Path], *, classes: int, border_width_px: int, shape: str,
                     border_at_image_edge: bool) -> Callable[[Progress], dict[str, Any]]:
    """The work of a dataset-wide scan for :meth:`moleseg.engine.tasks.TaskRegistry.submit`:
    ``{"rows" (frequency_rows), "read" (masks read), "errors" (read errors), "warnings" (empty and full
    masks, :func:`degenerate_mask_warnings`)}``."""
    paths = list(mask_paths)

    def work(progress: Progress) -> dict[str, Any]:
        degenerate: dict[str, list[str]] = {}
        share, read, errors = dataset_frequencies(
            paths, classes=classes, border_width_px=border_width_px, shape=shape,
            border_at_image_edge=border_at_image_edge, degenerate=degenerate,
            progress=lambda done, total: progress(done, total, f"{done}/{total} masks"))
        return {"rows": frequency_rows(share, classes), "read": read, "errors": errors,
                "warnings": degenerate_mask_warnings(degenerate.get("empty", []), degenerate.get("full", []))}

    return work


def pairing_rows(report: Any) -> dict[str, list[dict[str, Any]]]:
    """Tables of a :class:`moleseg.core.pairing.PairingReport`: ``pairs`` (with rule and sizes), ``unpaired``,
    ``mismatches``."""
    def size(value: Any) -> str:
        return "unreadable" if value is None else f"{value[0]} x {value[1]}"

    pairs = [{"image": p.image.name, "mask": p.mask.name, "rule": p.rule, "image size": size(p.image_size),
              "mask size": size(p.mask_size), "sizes differ": p.size_mismatch} for p in report.pairs]
    unpaired = ([{"kind": "image", "file": p.name} for p in report.unpaired_images]
                + [{"kind": "mask", "file": p.name} for p in report.unpaired_masks])
    mismatches = [{"image": p.image.name, "image size": size(p.image_size), "mask": p.mask.name,
                   "mask size": size(p.mask_size)} for p in report.size_mismatches]
    return {"pairs": pairs, "unpaired": unpaired, "mismatches": mismatches}


# --------------------------------------------------------------------------------------------------
# the Evaluate page

METRIC_LABELS: dict[str, str] = {"fm": "FM (F-measure, Dice)", "cm": "CM (completeness, recall)",
                                 "cr": "CR (correctness, precision)", "jaccard": "Jaccard (IoU)",
                                 "hd95": "HD95 (px)", "border_fm": "border band FM"}


def summary_rows(summary: dict, baseline: dict | None = None, model_name: str = "model",
                 baseline_name: str = "classical") -> list[dict[str, Any]]:
    """Rows ``metric, mean, std, min, max`` of an evaluation summary, with the baseline's mean/min/max beside."""
    rows = []
    for key, label in METRIC_LABELS.items():
        values = summary.get(key)
        if not isinstance(values, dict):
            continue
        row: dict[str, Any] = {"metric": label}
        for stat in ("mean", "std", "min", "max"):
            row[f"{model_name} {stat}"] = values.get(stat)
        if baseline and isinstance(baseline.get(key), dict):
            for stat in ("mean", "std", "min", "max"):
                row[f"{baseline_name} {stat}"] = baseline[key].get(stat)
        rows.append(row)
    return rows


def per_image_fm(summary: dict) -> list[tuple[str, float]]:
    """``(image, FM)`` of every evaluated image, in evaluation order."""
    return [(row["image"], float(row["fm"])) for row in summary.get("per_image", [])]


def worst_images(summary: dict, count: int = 4) -> list[tuple[str, float]]:
    """The ``count`` images with the lowest FM, worst first."""
    return sorted(per_image_fm(summary), key=lambda item: item[1])[:count]


def worst_overlays(segmenter: Segmenter, pairs: Sequence[Any], names: Sequence[str]
                   ) -> list[tuple[str, np.ndarray]]:
    """For each named pair: the image with the predicted lesion and border overlaid and the true
    lesion's outline in magenta (the pairs are predicted again: only a few)."""
    from moleseg.core.resize import resize_mask_to
    from moleseg.core.render import contour_overlay, overlay
    from moleseg.engine.segmenter import segment

    by_name = {Path(p.image).name: p for p in pairs}
    pictures = []
    for name in names:
        pair = by_name.get(name)
        if pair is None:
            continue
        try:
            image = read_image(pair.image)
            truth = read_mask(pair.mask, allow_empty=True)
        except ImageReadError:
            continue
        truth = resize_mask_to(truth, image.shape[0], image.shape[1])
        segmentation = segment(segmenter, image)
        picture = overlay(image, segmentation.lesion, segmentation.border)
        thickness = max(1, round(max(image.shape[:2]) / 300))
        pictures.append((name, contour_overlay(picture, truth, color=(255, 0, 255), thickness_px=thickness)))
    return pictures


def evaluate_with_baseline(segmenter: Segmenter, pairs: Sequence[Any], *, baseline: Segmenter | None = None,
                           with_hd95: bool = True, worst_count: int = 4,
                           progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Evaluate ``segmenter`` (and ``baseline`` on the same pairs) and draw its worst images.

    Returns ``{"name", "summary", "baseline" (summary or None), "failures" [(file, reason)],
    "mask_warnings" (empty and full true masks, :func:`degenerate_mask_warnings`), "worst" [(image, FM)], "pictures" [(image, overlay)]}``; ``progress(done, total, what)``.
    """
    from moleseg.engine.evaluate import evaluate_pairs

    def report(what: str) -> Callable[[int, int, str], None] | None:
        return (lambda done, total, name: progress(done, total, what)) if progress else None

    summary, _, failures = evaluate_pairs(segmenter, pairs, with_hd95=with_hd95, progress=report(segmenter.name))
    baseline_summary = None
    if baseline is not None:
        baseline_summary, _, _ = evaluate_pairs(baseline, pairs, with_hd95=with_hd95,
                                                progress=report(f"baseline {baseline.name}"))
    worst = worst_images(summary, worst_count) if summary.get("n") and worst_count > 0 else []
    return {"name": segmenter.name, "summary": summary, "baseline": baseline_summary, "failures": failures.items,
            "mask_warnings": degenerate_mask_warnings(failures.empty, failures.full), "worst": worst, "pictures": worst_overlays(segmenter, pairs, [name for name, _ in worst])}


def evaluation_key(choice: ModelChoice, images_dir: str | Path, masks_dir: str | Path, *, with_baseline: bool,
                   with_hd95: bool, worst_count: int, compare: ModelChoice | None = None) -> tuple:
    """The key of an evaluation in the app's task registry: everything its result depends on (``compare``:
    the model scored beside it instead of the classical baseline)."""
    return ("evaluate", choice.key, str(Path(images_dir).resolve()), str(Path(masks_dir).resolve()),
            bool(with_baseline), bool(with_hd95), int(worst_count), compare.key if compare else None)


def evaluation_task(segmenter: Segmenter, report: Any, *, baseline: Segmenter | None, with_hd95: bool,
                    worst_count: int, model: str, folder: str, baseline_name: str = "classical baseline"
                    ) -> Callable[[Progress], dict[str, Any]]:
    """The work of an evaluation for :meth:`moleseg.engine.tasks.TaskRegistry.submit`: the
    :func:`evaluate_with_baseline` result of ``report``'s pairs (a :class:`moleseg.core.pairing.PairingReport`)
    with ``model``, ``folder``, ``baseline_name`` (the classical baseline, or the model compared with)
    and the pairing summary added."""
    def work(progress: Progress) -> dict[str, Any]:
        result = evaluate_with_baseline(segmenter, report.pairs, baseline=baseline, with_hd95=with_hd95,
                                        worst_count=worst_count,
                                        progress=lambda done, total, what: progress(done, total,
                                                                                    f"{what}: {done}/{total}"))
        overlap = training_overlap(segmenter.info, [pair.image for pair in report.pairs])
        return {**result, "model": model, "folder": folder, "baseline_name": baseline_name, "pairing": report.summary(),
                "training_overlap": overlap.warning()}

    return work


def runs_table(run_dirs: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The article's comparison table: one :func:`moleseg.engine.runs.run_summary` row per run; the status
    of a run started by the app is its job's (:func:`moleseg.engine.jobs.read_job`: ``failed`` or ``died``,
    not the ``running`` a killed process leaves in ``state.json``)."""
    from moleseg.engine.jobs import read_job
    from moleseg.engine.runs import RunFiles, run_summary

    rows = []
    for run in run_dirs:
        row = run_summary(run)
        if RunFiles(Path(run)).job.is_file():
            row["status"] = read_job(run).status
        rows.append(row)
    return rows
