"""Everything the app's pages compute, outside the pages: model choices, the per-session analysis
cache, exports, target previews, evaluation tables. No Streamlit and no TensorFlow at import
(:mod:`moleseg.app.ui` holds the Streamlit glue; a ``.keras`` segmenter brings TensorFlow when loaded).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from moleseg.core.cleanup import CleanupSettings
from moleseg.core.config import class_names, models_dir, runs_dir
from moleseg.core.imageio import ImageReadError, read_image, read_mask
from moleseg.core.modelinfo import ModelInfo
from moleseg.engine.pipeline import Analysis, OverlayStyle, analyse_images
from moleseg.engine.segmenter import MODEL_THRESHOLD, Segmenter

#: Specs of the classical baselines, by number of classes.
CLASSICAL_SPECS: dict[int, str] = {3: "classical", 2: "classical2"}
#: Budget of the per-session analysis cache (images, probabilities, masks), in bytes.
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
    from moleseg.engine.runs import list_runs, read_json

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
        model = run / "model.keras"
        info = _info(model)
        state = read_json(run / "state.json", {}) or {}
        progress = read_json(run / "progress.json", {}) or {}
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
    """A short version text of a model for reports: its version, or its creation date and moleseg's."""
    info = _record(info)
    if info.version:
        return str(info.version)
    parts = []
    if info.created:
        parts.append(str(info.created))
    if info.moleseg_version:
        parts.append(f"moleseg {info.moleseg_version}")
    return ", ".join(parts)


def decision_text(info: ModelInfo | Mapping[str, Any]) -> str:
    """How a model turns probabilities into classes, for people: threshold or arg-max, flips, and the
    validation FM that chose them (from its ``moleseg.json``)."""
    info = _record(info)
    threshold = info.lesion_threshold
    text = "most likely class" if threshold is None else f"lesion where its probability ≥ {float(threshold):.2f}"
    text += ", with flip averaging" if info.test_time_augmentation else ", no flips"
    calibration = info.calibration
    if isinstance(calibration.get("fm"), (int, float)) and isinstance(calibration.get("baseline_fm"), (int, float)):
        text += (f" (chosen on {calibration.get('n_images')} validation images: FM {calibration['fm']:.4f}, "
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


@dataclass
class ImageOutcome:
    """One uploaded file on the Analyse page: its analysis, or why there is none."""

    name: str
    analysis: Analysis | None = None
    error: str | None = None
    stem: str = ""

    @property
    def ok(self) -> bool:
        return self.analysis is not None


@dataclass
class _Entry:
    analysis: Analysis
    params: tuple
    nbytes: int


def _analysis_bytes(analysis: Analysis) -> int:
    seg = analysis.segmentation
    return int(analysis.image.nbytes + seg.probabilities.nbytes + seg.labels.nbytes + seg.lesion.nbytes * 3)


class AnalysisStore:
    """Per-session cache of analyses keyed by (model key, file digest), least recently used evicted
    beyond ``max_bytes``. It holds the network's probabilities, so moving a slider only re-runs the
    cleanup (:meth:`moleseg.engine.pipeline.Analysis.recleaned`)."""

    def __init__(self, max_bytes: int = ANALYSIS_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self.predictions = 0  # number of images sent through the segmenter (tests and diagnostics)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return sum(entry.nbytes for entry in self._entries.values())

    def get(self, key: tuple[str, str]) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: tuple[str, str], analysis: Analysis, params: tuple, keep: Iterable[tuple[str, str]] = ()
            ) -> None:
        self._entries[key] = _Entry(analysis, params, _analysis_bytes(analysis))
        self._entries.move_to_end(key)
        protected = set(keep) | {key}
        total = self.nbytes
        for old in list(self._entries):
            if total <= self.max_bytes:
                break
            if old in protected:
                continue
            total -= self._entries.pop(old).nbytes

    def clear(self) -> None:
        self._entries.clear()


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
                    progress: Callable[[int, int, str], None] | None = None) -> list[ImageOutcome]:
    """Analyse every upload, predicting only those not in ``store`` for this model.

    A file that cannot be read or analysed gets an :class:`ImageOutcome` with ``error`` (the
    :class:`moleseg.core.imageio.ImageReadError` message); the others are still processed. Cached
    predictions whose cleanup, pixel size or style differ are re-cleaned, not re-predicted.
    """
    style = style or OverlayStyle()
    params = _params(settings, pixel_size_mm, style, lesion_threshold)
    stems = unique_stems([u.name for u in uploads])
    outcomes = [ImageOutcome(name=u.name, stem=stem) for u, stem in zip(uploads, stems)]
    keys = [(model_key, u.key) for u in uploads]
    todo: list[tuple[int, np.ndarray]] = []
    for index, (upload, key) in enumerate(zip(uploads, keys)):
        if store.get(key) is not None:
            continue
        try:
            todo.append((index, read_image(upload.data, name=upload.name)))
        except ImageReadError as error:
            outcomes[index].error = _failure(upload.name, error)
        except Exception as error:  # a reader bug must not take the other files down
            outcomes[index].error = _failure(upload.name, error)
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
        store.predictions += len(chunk)
        for (index, _), analysis in zip(chunk, analyses):
            if analysis is not None:
                store.put(keys[index], analysis, params, keep=keys)
        done += len(chunk)
        if progress:
            progress(done, len(todo), uploads[chunk[-1][0]].name)
    for index, key in enumerate(keys):
        if outcomes[index].error:
            continue
        entry = store.get(key)
        if entry is None:  # evicted while this batch was predicted: the budget is too small for it
            outcomes[index].error = f"{uploads[index].name}: not analysed (the app's memory budget is full)"
            continue
        if entry.params != params:
            try:
                analysis = entry.analysis.recleaned(segmenter, settings, pixel_size_mm=pixel_size_mm, style=style,
                                                    lesion_threshold=lesion_threshold)
            except Exception as error:
                outcomes[index].error = _failure(uploads[index].name, error)
                continue
            store.put(key, analysis, params, keep=keys)
            entry = store.get(key)
        outcomes[index].analysis = entry.analysis if entry else None
    return outcomes


def measurement_table(analysis: Analysis) -> list[dict[str, str]]:
    """Rows ``{"measurement", "value", "unit", "meaning"}`` of an analysis, values formatted for people."""
    from moleseg.core.report import display_unit, format_value

    return [{"measurement": m.label, "value": format_value(m.value), "unit": display_unit(m.key, m.unit),
             "meaning": m.meaning} for m in analysis.measurements]


def outcome_rows(outcomes: Sequence[ImageOutcome], model_name: str = "") -> list[dict[str, Any]]:
    """One CSV/table row per image: name, model, note, then every measurement column."""
    rows = []
    for outcome in outcomes:
        row: dict[str, Any] = {"image": outcome.name}
        if model_name:
            row["model"] = model_name
        if outcome.error:
            row["note"] = outcome.error
        elif outcome.analysis is not None:
            if outcome.analysis.error:
                row["note"] = outcome.analysis.error
            row.update(outcome.analysis.measurement_row)
        rows.append(row)
    return rows


def measurements_csv_bytes(outcomes: Sequence[ImageOutcome], model_name: str = "") -> bytes:
    """The measurements of every image as CSV (failed files included with their note)."""
    from moleseg.core.report import measurements_csv

    return measurements_csv(outcome_rows(outcomes, model_name))


def outcome_files(outcome: ImageOutcome, model_version: str = "", created: datetime | None = None,
                  with_pdf: bool = True) -> dict[str, bytes]:
    """``{file name: bytes}`` of one analysed image: overlay, mask and class PNGs and the PDF report."""
    if outcome.analysis is None:
        return {}
    files = dict(outcome.analysis.files(outcome.stem))
    if with_pdf:
        files[f"{outcome.stem}_report.pdf"] = outcome.analysis.pdf(outcome.name, model_version=model_version,
                                                                   created=created)
    return files


def batch_bundle(outcomes: Sequence[ImageOutcome], model_name: str = "", model_version: str = "",
                 created: datetime | None = None) -> bytes:
    """A ZIP of everything: ``<stem>/`` with each image's PNGs and PDF, ``measurements.csv``, and
    ``errors.txt`` when some files failed."""
    from moleseg.core.report import zip_bundle

    created = created or datetime.now().astimezone()
    files: dict[str, bytes] = {"measurements.csv": measurements_csv_bytes(outcomes, model_name)}
    for outcome in outcomes:
        for name, data in outcome_files(outcome, model_version, created).items():
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


def target_preview(image_path: str | Path, mask_path: str | Path, *, classes: int = 3, border_width_px: int = 4,
                   shape: str = "diamond", border_at_image_edge: bool = False) -> TargetPreview:
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


def dataset_frequencies(mask_paths: Sequence[str | Path], *, classes: int = 3, border_width_px: int = 4,
                        shape: str = "diamond", border_at_image_edge: bool = False,
                        progress: Callable[[int, int], None] | None = None
                        ) -> tuple[np.ndarray, int, list[str]]:
    """Class frequencies over all masks (pixel-weighted), the number of masks read, and read errors."""
    from moleseg.core.targets import class_frequencies, make_targets

    totals = np.zeros(classes, dtype=np.float64)
    read, errors = 0, []
    for index, path in enumerate(mask_paths, start=1):
        try:
            mask = read_mask(path, allow_empty=True)
        except ImageReadError as error:
            errors.append(str(error))
            continue
        labels = make_targets(mask, classes=classes, border_width_px=border_width_px, shape=shape,
                              border_at_image_edge=border_at_image_edge)
        totals += class_frequencies(labels, classes) * labels.size
        read += 1
        if progress:
            progress(index, len(mask_paths))
    share = totals / totals.sum() if totals.sum() else totals
    return share, read, errors


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
    "worst" [(image, FM)], "pictures" [(image, overlay)]}``; ``progress(done, total, what)``.
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
            "worst": worst, "pictures": worst_overlays(segmenter, pairs, [name for name, _ in worst])}


def runs_table(run_dirs: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The article's comparison table: one :func:`moleseg.engine.runs.run_summary` row per run."""
    from moleseg.engine.runs import run_summary

    return [run_summary(run) for run in run_dirs]
