"""The app's model picker: the models on offer (shipped files, classical baselines, training runs), the
default one, their descriptions for people, and the device they would run on. Read from the model files'
``moleseg.json`` on each call, without TensorFlow; nothing is cached here (:mod:`moleseg.app.ui` keeps
the loaded segmenters, once per server).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from moleseg.app.identity import find_user_space
from moleseg.core.userspace import UserSpace
from moleseg.core.config import BASELINE_NAME, CLASSICAL_MODELS, DEFAULT_CLASS_COUNT, models_dir
from moleseg.core.modelinfo import ModelInfo
from moleseg.core.report import subject_words, threshold_text


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



@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model picker.

    ``spec`` is what :func:`moleseg.network.loading.load_segmenter` takes; ``stamp`` changes when the file
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


def preparation_key(choice: ModelChoice) -> tuple[str, str]:
    """The key of a model's inference preparation in the app's task registry (a retrained file is another)."""
    return ("prepare inference", choice.key)


def needs_preparation(choice: ModelChoice) -> bool:
    """True for a user's own trained model, its training over, whose inference form this machine has not made
    yet (:func:`moleseg.network.compiled.any_cached`): its first analysis would convert it, for minutes. Shipped
    models carry theirs, the classical baselines need none, and without the inference cache
    (:func:`moleseg.network.compiled.cache_enabled`) TensorFlow predicts and nothing is converted."""
    from moleseg.engine.jobs import ACTIVE_STATUSES

    if choice.kind != "run" or choice.path is None or choice.status in ACTIVE_STATUSES:
        return False
    from moleseg.network import compiled

    return compiled.cache_enabled() and not compiled.any_cached(choice.path)


def preparation_task(choice: ModelChoice) -> Callable[[Callable[[int, int, str], None]], str]:
    """The work of a model's inference preparation for :meth:`moleseg.engine.tasks.TaskRegistry.submit`:
    :func:`moleseg.network.predict.prepare_inference` with the task's progress; returns the runtime that will
    predict (``"onnxruntime"`` or ``"tensorflow"``)."""
    path = choice.path

    def work(progress: Callable[[int, int, str], None]) -> str:
        from moleseg.network.predict import prepare_inference

        return prepare_inference(path, progress)

    return work


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


def validation_text(info: ModelInfo, fm: float | None = None) -> str:
    """A model's validation FM with its number of images and where it comes from, from its ``moleseg.json``:
    e.g. ``"validation FM 0.974 on 1 image (fine-tune)"`` for a model fine-tuned from another ``.keras`` file,
    ``"validation FM 0.945 on 32 images (its training)"`` otherwise; ``fm`` stands in for a run whose model
    file does not say yet. ``""`` when no figure is known."""
    from moleseg.core.words import count_of

    fm = info.validation_fm if isinstance(info.validation_fm, (int, float)) else fm
    if fm is None or fm < 0:
        return ""
    training = info.training or {}
    n = training.get("n_validation")
    source = "fine-tune" if str(training.get("weights", "")).endswith(".keras") else "its training"
    on = f" on {count_of(int(n), 'image')}" if isinstance(n, int) and n > 0 else ""
    return f"validation FM {float(fm):.3f}{on} ({source})"


def shipped_models(models: str | Path | None = None) -> list[Path]:
    """The ``.keras`` files of the models folder, the dermoscopy model first."""
    folder = Path(models or models_dir())
    if not folder.is_dir():
        return []
    files = [p for p in folder.glob("*.keras") if p.is_file() and not p.name.startswith(".")]
    return sorted(files, key=lambda p: (p.stem != "dermoscopy", p.stem != "cells", p.name))


def shipped_choices(models: str | Path | None = None) -> list[ModelChoice]:
    """The shipped models on offer (:func:`shipped_models`), as the picker lists them; no user is needed."""
    choices: list[ModelChoice] = []
    for path in shipped_models(models):
        info = _info(path)
        n_classes = info.n_classes
        details = ["shipped, " + {3: "dermoscopy, 3 classes", 2: "cells, 2 classes"}.get(n_classes, "model")]
        details += [text for text in (validation_text(info),) if text]
        choices.append(ModelChoice(spec=str(path), label=f"{path.stem} ({'; '.join(details)})", kind="shipped",
                                   n_classes=n_classes, stamp=_stamp(path)))
    return choices


def classical_choice(n_classes: int) -> ModelChoice:
    """The classical baseline of ``n_classes`` (2 or 3) as the model picker offers it."""
    return ModelChoice(spec=CLASSICAL_MODELS[n_classes], kind="classical", n_classes=n_classes,
                       label=f"{BASELINE_NAME} ({subject_words(n_classes)['field']}, {n_classes} classes, no network)")


def model_choices(models: str | Path | None = None, runs: str | Path | None = None) -> list[ModelChoice]:
    """Shipped models, then the classical baselines, then the user's own training runs (newest first; ``runs``
    defaults to those of :func:`moleseg.app.identity.find_user_space`, never another user's, and none when no
    user is believed)."""
    from moleseg.engine.finetune import read_base_comparison
    from moleseg.engine.jobs import read_job
    from moleseg.engine.runs import RunFiles, RunRecordError, list_runs, read_state

    choices = shipped_choices(models)
    choices += [classical_choice(3), classical_choice(2)]
    if runs is None:
        space = find_user_space()
        runs = space.runs if isinstance(space, UserSpace) else None
    for run in list_runs(runs) if runs is not None else []:
        files = RunFiles(run)
        model = files.model
        info = _info(model)
        try:
            state = read_state(run)
        except RunRecordError:
            state = None
        status = read_job(run).status
        details = [f"{info.n_classes or '?'} classes"]
        details += [text for text in (validation_text(info, state.best_val_fm if state else None),) if text]
        comparison = read_base_comparison(run)
        if comparison is not None:
            details.append(comparison.text())
        if status and status != "done":
            details.append(str(status))
        choices.append(ModelChoice(spec=str(model), label=f"run {run.name} ({'; '.join(details)})", kind="run",
                                   n_classes=info.n_classes, stamp=_stamp(model), status=status))
    return choices


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
    text = threshold_text(threshold)
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

            info = ClassicalSegmenter(n_classes=choice.n_classes or DEFAULT_CLASS_COUNT).info
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
    if validation_text(info):
        rows.append(("validation FM", validation_text(info)))
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
