"""The models shipped in ``models/``: how ``make models`` retrains them from the shared data.

Each shipped model has a recipe, ``models/<name>.config.json``: a training configuration (the options of
:mod:`moleseg.core.options`, read by ``moleseg train --config``) whose dataset folders are relative to
the shared data folder (:data:`moleseg.tools.SHARED_DATA_DIR`, or ``--data``),
plus a ``recipe`` section that training ignores: ``test`` (folders evaluated after training, never trained
on) and ``holdout`` (a share of a training folder held out, by file with the recipe's seed, as a test set).

``make models`` does, for each recipe::

    python -m moleseg.tools.shipped --only NAME --print-data-root      # prints ROOT (held-out splits)
    moleseg train --config models/NAME.config.json --data-root ROOT --out runs/shipped-NAME
    python -m moleseg.tools.shipped --only NAME --install runs/shipped-NAME --wall-seconds S

The last step copies the best model to ``models/<name>.keras`` (without optimizer state), builds its
inference-ready form ``models/<name>.onnx`` (checked against TensorFlow on real images; shipped with the
package so that no user machine converts a shipped model), evaluates the model and the classical baseline
on the recipe's test sets and writes ``models/<name>.json`` with those numbers, the ONNX file's SHA-256
and the wall time; the model cards quote that file. ``--onnx-only`` builds and records the ONNX files of
the installed models alone. ``--calibrate-only`` chooses the installed models'
flips, lesion threshold and confidence threshold again, ``--confidence-only`` only the confidence threshold
(the "check this border" mark, :func:`moleseg.engine.calibrate.calibrate_confidence`),
``--confidence-from-crossval`` that threshold from the recipe's out-of-fold images
(:func:`confidence_from_crossval`); ``--crossval``
scores the recipe by k-fold cross-validation from finished fold runs (:func:`crossvalidate_shipped`); without ``--install``/``--print-data-root`` the module trains in-process.

Usage::

    python -m moleseg.tools.shipped [--data DIR] [--only NAME] [--epochs N] [--resume]
                                      [--print-data-root | --install RUN_DIR [--wall-seconds S] | --calibrate-only
                                       | --onnx-only
                                       | --confidence-only [--check-share SHARE] | --confidence-from-crossval
                                       | --crossval RUN_DIR [RUN_DIR ...] [--scores-dir DIR]]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moleseg.core import options
from moleseg.core.config import CLASSICAL_MODELS, MODELS_DIR, RUNS_FOLDER_NAME
from moleseg.core.configfile import read_config_file
from moleseg.tools import PROJECT_DIR, SHARED_DATA_DIR

if TYPE_CHECKING:
    from moleseg.engine.crossval import Fold
    from moleseg.engine.segmenter import Segmenter

#: The checkout's runs folder, where ``make models`` and ``make crossval`` write the recipes' runs.
RUNS_DIR = PROJECT_DIR / RUNS_FOLDER_NAME
#: A recipe's file name is ``<name>`` + this, in the models folder.
RECIPE_SUFFIX = ".config.json"
#: Training options that may differ between the fold runs of one cross-validation and the model then trained
#: on every pair (the split, where and how the run went); every other option is the recipe's and must agree.
#: Real images the shipped ONNX file is checked on against TensorFlow (:func:`build_shipped_onnx`).
ONNX_CHECK_IMAGES: int = 8
NOT_RECIPE_OPTIONS = ("validation_split", "validation_fold", "run_dir", "calibrate", "cache_dir", "strategy",
                      "mixed_precision")


def recipe_path(name: str) -> Path:
    """``models/<name>.config.json``."""
    return MODELS_DIR / f"{name}{RECIPE_SUFFIX}"


def recipe_names() -> list[str]:
    """Names of the recipes in the models folder, sorted."""
    return sorted(path.name[: -len(RECIPE_SUFFIX)] for path in MODELS_DIR.glob(f"*{RECIPE_SUFFIX}"))


def read_recipe(name: str) -> dict[str, Any]:
    """The recipe file as written (folders relative to the data folder, with its ``recipe`` section).

    Raises
    ------
    ValueError
        When the file is missing or not JSON (the message names it).
    """
    path = recipe_path(name)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no recipe of a shipped model {name!r}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON ({error})") from None


def train_folders(name: str) -> list[str]:
    """The recipe's training dataset folders (each with ``images/`` and ``masks/``), relative to the data."""
    return [str(Path(images).parent) for images in read_recipe(name).get("images", [])]


def training_root(name: str, data_dir: Path, split_root: Path | None = None) -> Path:
    """The folder the recipe's training folders are relative to: ``data_dir``, or, when the recipe holds
    out a share of a folder, ``runs/shipped-<name>-data/train``: there each held-out folder is split by
    file with the recipe's seed into folders of symbolic links (``train/<folder>`` and ``test/<folder>``,
    so the held-out images are never trained on) and every other folder is a link to ``data_dir``'s."""
    recipe = read_recipe(name)
    holdout = recipe.get("recipe", {}).get("holdout", {})
    if not holdout:
        return data_dir
    from moleseg.core.pairing import pair_folders
    from moleseg.network.data import split_pairs  # TensorFlow, only for a recipe that holds images out

    split_root = split_root or RUNS_DIR / f"shipped-{name}-data"
    for folder in train_folders(name):
        target = split_root / "train" / folder
        if target.is_symlink():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        if folder not in holdout:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to((data_dir / folder).resolve(), target_is_directory=True)
            continue
        pairs = pair_folders(data_dir / folder / "images", data_dir / folder / "masks").pairs
        kept, _, held = split_pairs(pairs, validation_fraction=0.0, test_fraction=holdout[folder],
                                    seed=recipe.get("seed", options.default("seed")))
        for part, chosen in (("train", kept), ("test", held)):
            destination = split_root / part / folder
            if destination.exists():
                shutil.rmtree(destination)
            for sub in ("images", "masks"):
                (destination / sub).mkdir(parents=True)
            for pair in chosen:
                (destination / "images" / Path(pair.image).name).symlink_to(Path(pair.image).resolve())
                (destination / "masks" / Path(pair.mask).name).symlink_to(Path(pair.mask).resolve())
    return split_root / "train"


def evaluation_folders(name: str, data_dir: Path, split_root: Path | None = None) -> list[Path]:
    """The recipe's test dataset folders (held-out shares from :func:`training_root`'s split)."""
    extras = read_recipe(name).get("recipe", {})
    holdout = extras.get("holdout", {})
    split_root = split_root or RUNS_DIR / f"shipped-{name}-data"
    return [split_root / "test" / folder if folder in holdout else data_dir / folder for folder in extras.get("test", [])]


def split_folders(name: str, data_dir: Path, split_root: Path | None = None) -> tuple[list[Path], list[Path]]:
    """Training and test dataset folders (each with ``images/`` and ``masks/``) of a recipe, with the
    held-out splits made (see :func:`training_root`)."""
    root = training_root(name, data_dir, split_root)
    return [root / folder for folder in train_folders(name)], evaluation_folders(name, data_dir, split_root)


def recipe_config(name: str, data_dir: Path, epochs: int | None = None, split_root: Path | None = None):
    """The TrainConfig of a shipped model over ``data_dir``: what ``moleseg train --config
    models/<name>.config.json --data-root <training_root>`` trains."""
    from moleseg.core.trainconfig import TrainConfig

    root = training_root(name, data_dir, split_root)
    values = read_config_file(recipe_path(name), root)
    if epochs:
        values["epochs"] = epochs
    return TrainConfig.from_dict(values)


def evaluate_shipped(name: str, model_path: Path, data_dir: Path, split_root: Path | None = None) -> dict:
    """Evaluate a shipped model and the classical baseline on its test sets."""
    from moleseg.engine.evaluate import evaluate_pairs
    from moleseg.core.pairing import pair_folders
    from moleseg.network.loading import load_segmenter

    model = load_segmenter(model_path)
    baseline = load_segmenter(CLASSICAL_MODELS[model.n_classes])
    results = {}
    _, test_dirs = split_folders(name, data_dir, split_root)
    for folder, test_dir in zip(read_recipe(name).get("recipe", {}).get("test", []), test_dirs):
        pairs = pair_folders(test_dir / "images", test_dir / "masks").pairs
        summary, _, _ = evaluate_pairs(model, pairs)
        base, _, _ = evaluate_pairs(baseline, pairs)
        results[folder] = {"model": summary, "classical": {k: v for k, v in base.items() if k != "per_image"}}
    return results


def build_shipped(name: str, data_dir: Path, epochs: int | None = None, resume: bool = False) -> dict:
    """Train one shipped model, install it in ``models/`` and write its numbers next to it."""
    from moleseg.network.train import train

    config = recipe_config(name, data_dir, epochs)
    run_dir = RUNS_DIR / f"shipped-{name}"
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)
    started = time.time()
    train(config, run_dir, resume=resume, echo=lambda line: print(f"[{name}] {line}", flush=True))
    return install_shipped(name, run_dir, time.time() - started, data_dir)


def install_shipped(name: str, run_dir: Path, wall_seconds: float, data_dir: Path) -> dict:
    """Copy a finished run's best model to ``models/<name>.keras`` (without optimizer state), evaluate it
    and the classical baseline on the recipe's test sets and write ``models/<name>.json`` (with the run's
    ``config.json``)."""
    from moleseg.engine.runs import RunFiles, read_json, write_json

    saved = read_json(RunFiles(run_dir).config)
    if saved is None:
        raise ValueError(f"{run_dir}: no finished training to install (no {RunFiles.CONFIG})")

    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    target = MODELS_DIR / f"{name}.keras"
    # the run's best model carries its optimizer state (for resuming); the shipped file needs only the network
    from moleseg.network.io import load_model_and_info, save_model

    network, info = load_model_and_info(RunFiles(run_dir).model)
    crossval = (read_json(MODELS_DIR / f"{name}.json", {}) or {}).get("crossval")
    if crossval and crossval.get("config") != recipe_options(saved):
        crossval = None  # of another recipe: neither applied nor kept
    if not info.get("training", {}).get("n_validation"):
        if crossval:  # trained on every pair (no validation split): the recipe's cross-fitted decision
            info = {**info, **crossval["decision"]}
        else:
            print(f"[{name}] warning: {run_dir} has no validation split and models/{name}.json no cross-validation "
                  "of this recipe (make crossval): installed with the arg-max and no confidence threshold",
                  file=sys.stderr)
    save_model(network, target, info)
    evaluation = evaluate_shipped(name, target, data_dir)
    record = {
        "name": name,
        "command": f"make models  (moleseg train --config {recipe_path(name).name} ...)",
        "train_folders": train_folders(name),
        "test_folders": read_recipe(name).get("recipe", {}).get("test", []),
        "config": {key: value for key, value in saved.items() if key != "run_dir"},
        "wall_seconds": round(wall_seconds, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_version()}",
        "evaluation": evaluation,
        "calibration": {k: info.get(k) for k in ("test_time_augmentation", "lesion_threshold", "calibration")},
        "file_mib": round(target.stat().st_size / 2**20, 2),
    }
    if crossval:
        record["crossval"] = crossval
    from moleseg.network.compiled import SHIPPED_ONNX_KEY

    record[SHIPPED_ONNX_KEY] = build_shipped_onnx(name, data_dir)
    if info.get("confidence_threshold") is not None:  # calibrated at the end of training
        record["confidence"] = confidence_record(name, data_dir, float(info["confidence_threshold"]),
                                                 info.get("confidence_calibration") or {})
    write_json(MODELS_DIR / f"{name}.json", record)
    return record


def check_images(name: str, data_dir: Path, count: int = ONNX_CHECK_IMAGES) -> list[Path]:
    """The first ``count`` image files (sorted) of the recipe's test folders, then its training folders, under
    ``data_dir`` (whole folders: a held-out share is a part of them)."""
    from moleseg.core.pairing import list_images

    extras = read_recipe(name).get("recipe", {})
    files: list[Path] = []
    for folder in [*extras.get("test", []), *train_folders(name)]:
        images = data_dir / folder / "images"
        if images.is_dir():
            files.extend(list_images(images)[: count - len(files)])
        if len(files) >= count:
            break
    if not files:
        raise ValueError(f"no images of the {name} recipe's folders under {data_dir} to check the ONNX file on")
    return files


def build_shipped_onnx(name: str, data_dir: Path, count: int = ONNX_CHECK_IMAGES) -> dict:
    """Convert the installed ``models/<name>.keras`` to ``models/<name>.onnx`` (BatchNormalization folded,
    :func:`moleseg.network.onnx_export.onnx_bytes`) and check it against TensorFlow: the probabilities of
    :func:`check_images` as the app predicts them (resize or tiles, no flips) and of the probe batch must
    agree within :data:`moleseg.network.onnx_export.ONNX_TOLERANCE`. Returns the record's
    :data:`moleseg.network.compiled.SHIPPED_ONNX_KEY` section (SHA-256, the ``.keras`` file's network digest,
    the largest difference); a file that does not match is removed.

    Raises
    ------
    ValueError
        The conversion does not match TensorFlow, or there are no images to check it on.
    """
    from moleseg.core.atomic import atomic_write
    from moleseg.core.imageio import read_image
    from moleseg.network import compiled
    from moleseg.network.inference import fold_batchnorm
    from moleseg.network.io import load_model_and_info
    from moleseg.network.onnx_export import (ONNX_OPSET, ONNX_TOLERANCE, converter_versions, largest_difference,
                                             onnx_bytes, probe_batch)
    from moleseg.network.predict import KerasSegmenter, prediction_function

    source = MODELS_DIR / f"{name}.keras"
    target = source.with_suffix(".onnx")
    model, info = load_model_and_info(source)
    folded = fold_batchnorm(model)
    tensorflow = prediction_function(folded)
    input_shape = tuple(model.input_shape[1:])
    atomic_write(target, onnx_bytes(folded, input_shape))
    onnx = compiled.onnx_function(target)
    runtimes = [KerasSegmenter(model, info, test_time_augmentation=False, predict_function=function)
                for function in (tensorflow, onnx)]
    files = check_images(name, data_dir, count)
    differences = [largest_difference(*(segmenter.predict_probabilities([image])[0] for segmenter in runtimes))
                   for image in map(read_image, files)]
    probe = probe_batch(input_shape)
    difference = max(*differences, largest_difference(onnx(probe), tensorflow(probe)))
    if not difference <= ONNX_TOLERANCE:
        target.unlink(missing_ok=True)
        raise ValueError(f"{target.name}: probabilities differ from TensorFlow's by {difference:.2g} "
                         f"(more than {ONNX_TOLERANCE:g}); not shipped")
    with target.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return {"file": target.name, "sha256": digest, "network_digest": compiled.shipped_network_digest(source),
            "mib": round(target.stat().st_size / 2**20, 2), "opset": ONNX_OPSET,
            "max_abs_probability_difference": difference, "tolerance": ONNX_TOLERANCE,
            "checked_on": [f"{file.parent.parent.relative_to(data_dir).as_posix()}/{file.name}" for file in files]
            + ["the probe batch (noise, a dark blob)"],
            "versions": converter_versions()}


def install_shipped_onnx(name: str, data_dir: Path) -> dict:
    """Build and check ``models/<name>.onnx`` (:func:`build_shipped_onnx`) and record it in
    ``models/<name>.json``; returns its section."""
    from moleseg.engine.runs import read_json, write_json
    from moleseg.network.compiled import SHIPPED_ONNX_KEY

    record = read_json(MODELS_DIR / f"{name}.json", {}) or {}
    record[SHIPPED_ONNX_KEY] = section = build_shipped_onnx(name, data_dir)
    write_json(MODELS_DIR / f"{name}.json", record)
    return section


def validation_pairs(name: str, data_dir: Path) -> list:
    """The validation split of a shipped model's training run (what it was calibrated on; never its test
    sets): the split of the config saved in ``models/<name>.json`` when its folders exist on this machine,
    else of the recipe over ``data_dir`` (same folders, fraction and seed, re-rooted here)."""
    from moleseg.engine.runs import read_json
    from moleseg.network.train import TrainConfig, split_of

    saved = (read_json(MODELS_DIR / f"{name}.json", {}) or {}).get("config")
    training_root(name, data_dir)  # the held-out symlink folders the config points at
    config = TrainConfig.from_dict(saved) if saved else None
    if config is None or not all(Path(folder).is_dir() for folder in [*config.images, *config.masks]):
        config = recipe_config(name, data_dir)
    _, validation, _ = split_of(config)
    if not validation:
        raise ValueError(f"models/{name}.keras was trained on every pair (no validation split): its decision and "
                         "confidence threshold come from the recipe's cross-validation (make crossval)")
    return validation


def confidence_record(name: str, data_dir: Path, threshold: float, validation: dict) -> dict:
    """The ``confidence`` entry of ``models/<name>.json``: the installed model's ``threshold`` with how it
    was calibrated (``validation``, the model's ``confidence_calibration``) and what it marks on each of
    the recipe's test sets (reported, never used to choose it)."""
    from moleseg.core.pairing import pair_folders
    from moleseg.engine.calibrate import confidence_rows, flag_summary
    from moleseg.network.loading import load_segmenter

    model = load_segmenter(MODELS_DIR / f"{name}.keras")
    baseline = load_segmenter(CLASSICAL_MODELS[model.n_classes])
    tests = {}
    _, test_dirs = split_folders(name, data_dir)
    for folder, test_dir in zip(read_recipe(name).get("recipe", {}).get("test", []), test_dirs):
        rows = confidence_rows(model, pair_folders(test_dir / "images", test_dir / "masks").pairs, baseline=baseline)
        tests[folder] = flag_summary(rows, threshold).info_update()["confidence_calibration"]
    return {"threshold": threshold, "validation": validation, "test": tests}


def _threshold_and_validation(result) -> dict:
    info = result.info_update()
    return {"threshold": info["confidence_threshold"], "validation": info["confidence_calibration"]}


def calibrate_shipped(name: str, data_dir: Path) -> dict:
    """Choose an installed shipped model's flips, lesion threshold and confidence threshold again, on its
    own training run's validation split (never the test sets), then re-evaluate it and rewrite
    ``models/<name>.json``."""
    from moleseg.network.loading import calibrate_model_file
    from moleseg.engine.runs import read_json, write_json

    target = MODELS_DIR / f"{name}.keras"
    record_path = MODELS_DIR / f"{name}.json"
    record = read_json(record_path, {}) or {}
    calibration = calibrate_model_file(target, validation_pairs(name, data_dir),
                                       progress=lambda line: print(f"[{name}] {line}", flush=True))
    print(f"[{name}] {calibration.summary()}", flush=True)
    record.update({"name": name, "calibration": calibration.info_update(),
                   "evaluation": evaluate_shipped(name, target, data_dir),
                   "file_mib": round(target.stat().st_size / 2**20, 2)})
    if calibration.confidence is not None:
        record["confidence"] = confidence_record(name, data_dir, **_threshold_and_validation(calibration.confidence))
    write_json(record_path, record)
    return record


def calibrate_confidence_shipped(name: str, data_dir: Path, share: float | None = None) -> dict:
    """Only choose an installed shipped model's confidence threshold again (its decision kept), on its
    validation split, store it in ``models/<name>.keras`` and record it with what it marks on the test sets
    in ``models/<name>.json``."""
    from moleseg.core.config import DEFAULT_CHECK_SHARE
    from moleseg.engine.runs import read_json, write_json
    from moleseg.network.loading import calibrate_confidence_file

    target = MODELS_DIR / f"{name}.keras"
    record_path = MODELS_DIR / f"{name}.json"
    record = read_json(record_path, {}) or {}
    result = calibrate_confidence_file(target, validation_pairs(name, data_dir), share=DEFAULT_CHECK_SHARE if share is None else share,
                                       progress=lambda line: print(f"[{name}] {line}", flush=True))
    print(f"[{name}] {result.summary()}", flush=True)
    record["confidence"] = confidence_record(name, data_dir, **_threshold_and_validation(result))
    write_json(record_path, record)
    return record


def confidence_from_crossval(name: str, data_dir: Path) -> dict:
    """Choose an installed shipped model's confidence threshold from its recipe's out-of-fold images (the
    ``crossval`` record of ``models/<name>.json``, :func:`crossvalidate_shipped`) by the rule fixed before
    they were scored (:func:`moleseg.engine.calibrate.out_of_fold_confidence`), store it in
    ``models/<name>.keras`` and record it under ``confidence`` with each rule's leave-one-fold-out estimate,
    what it marks on the model's own validation images and on the test sets (reported only). The model's
    network, decision and ``crossval`` record stay as they are.

    Raises
    ------
    ValueError
        No cross-validation record, or one of another recipe (options both hold differ).
    """
    from moleseg.core.modelinfo import read_model_info, write_model_info
    from moleseg.engine.calibrate import confidence_rows, flag_summary, out_of_fold_confidence
    from moleseg.engine.runs import read_json, write_json
    from moleseg.network.loading import load_segmenter

    record_path = MODELS_DIR / f"{name}.json"
    record = read_json(record_path, {}) or {}
    crossval = record.get("crossval") or {}
    if not crossval.get("per_image"):
        raise ValueError(f"{record_path}: no cross-validation record to choose the confidence threshold from "
                         f"(python -m moleseg.tools.shipped --only {name} --crossval RUN_DIR...)")
    installed, folds = recipe_options(record.get("config") or {}), crossval.get("config") or {}
    differing = sorted(key for key in set(installed) & set(folds) if installed[key] != folds[key])
    if differing:
        raise ValueError(f"{record_path}: the cross-validation is of another recipe than the installed model "
                         f"({', '.join(differing)} differ)")
    rows = crossval["per_image"]
    chosen = out_of_fold_confidence(rows)
    method = (f"undecided area ({crossval.get('n_folds')}-fold cross-validation, out of fold, "
              f"{chosen.rule} rule)")
    validation = {**flag_summary(rows, chosen.threshold).info_update()["confidence_calibration"], "method": method,
                  **chosen.to_dict()}
    target = MODELS_DIR / f"{name}.keras"
    own = confidence_rows(load_segmenter(target), validation_pairs(name, data_dir))
    validation["own_validation"] = flag_summary(own, chosen.threshold).info_update()["confidence_calibration"]
    stored = {key: value for key, value in validation.items() if key not in ("per_image", "own_validation")}
    write_model_info(target, {**read_model_info(target), "confidence_threshold": chosen.threshold,
                              "confidence_calibration": stored})
    print(f"[{name}] {chosen.rule} rule: confidence threshold {chosen.threshold:.3f} from {len(rows)} out-of-fold "
          "images", flush=True)
    record["confidence"] = confidence_record(name, data_dir, chosen.threshold, validation)
    write_json(record_path, record)
    return record


def recipe_options(config: dict[str, Any]) -> dict[str, Any]:
    """A training's options (``config.json``) without :data:`NOT_RECIPE_OPTIONS` and without the BatchNorm
    momentum a training derives from its step count, dataset folders as absolute paths, in JSON form: equal
    for two trainings of one recipe."""
    values = json.loads(json.dumps({key: value for key, value in config.items() if key not in NOT_RECIPE_OPTIONS}))
    if isinstance(values.get("model"), dict):  # set at training time from the option bn_momentum and the steps
        values["model"].pop("bn_momentum", None)
    for key in (name for pair in options.FOLDER_PAIRS for name in pair):
        if isinstance(values.get(key), list):
            values[key] = [str(Path(folder).resolve()) for folder in values[key]]
    return values


def kept_fold_scores(fold: Fold, model_path: Path, thresholds: tuple[float | None, ...], scores_dir: Path,
                     baseline: Segmenter | None) -> list[dict[str, Any]]:
    """:func:`moleseg.engine.crossval.score_fold`'s rows of one fold, read from ``scores_dir`` when a file
    there was written for this very model file (its SHA-256), these images and these thresholds, else scored
    now and written there. A file that does not match or is not JSON is scored again (the key is in its name
    and checked inside)."""
    from moleseg.engine.crossval import score_fold
    from moleseg.engine.runs import read_json, write_json

    key = {"model_sha256": hashlib.sha256(Path(model_path).read_bytes()).hexdigest(),
           "images": [str(Path(pair.image).resolve()) for pair in fold.pairs],
           "thresholds": list(thresholds), "baseline": baseline.name if baseline is not None else None}
    path = scores_dir / f"{fold.name}-{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]}.json"
    kept = read_json(path)
    if isinstance(kept, dict) and kept.get("key") == key and isinstance(kept.get("rows"), list):
        print(f"[{fold.name}] scores read from {path}", flush=True)
        return kept["rows"]
    rows = score_fold(fold, thresholds, baseline=baseline,
                      progress=lambda line: print(f"[{fold.name}] {line}", flush=True))
    scores_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, {"key": key, "rows": rows})
    return rows


def crossvalidate_shipped(name: str, run_dirs: list[Path], data_dir: Path, share: float | None = None,
                          scores_dir: Path | None = None) -> dict:
    """k-fold cross-validation of a shipped model's recipe from finished fold runs (``moleseg train
    --config models/<name>.config.json --validation-split 1/k --validation-fold i``, i = 0..k-1): every
    shared image predicted by the fold model that did not train on it, at its own size, against the
    classical baseline (:func:`moleseg.engine.crossval.cross_validate`). Recorded under ``crossval`` in
    ``models/<name>.json``; nothing else there changes, nor the installed model. ``scores_dir``: each fold's
    scores are kept there and read back while its model file is unchanged (a fold can be scored as soon as
    it finishes, the others later).

    Raises
    ------
    ValueError
        A folder that is not a finished run, runs of another recipe (options other than
        :data:`NOT_RECIPE_OPTIONS` differ from ``models/<name>.config.json`` over ``data_dir``), or two runs
        of one fold.
    """
    from moleseg.core.config import DEFAULT_CHECK_SHARE
    from moleseg.core.trainconfig import TrainConfig
    from moleseg.engine.calibrate import DEFAULT_THRESHOLDS
    from moleseg.engine.crossval import Fold, cross_validate
    from moleseg.engine.runs import RunFiles, read_json, write_json
    from moleseg.network.loading import load_segmenter

    recipe = recipe_options(recipe_config(name, data_dir).to_dict())
    configs: dict[Path, TrainConfig] = {}
    for run_dir in run_dirs:
        files = RunFiles(run_dir)
        saved = read_json(files.config)
        if saved is None or not files.model.is_file():
            raise ValueError(f"{run_dir}: not a finished training run (no {RunFiles.CONFIG} or {RunFiles.MODEL})")
        options_here = recipe_options(saved)
        differing = sorted(key for key in set(recipe) | set(options_here) if recipe.get(key) != options_here.get(key))
        if differing:
            raise ValueError(f"{run_dir}: not a fold of the {name} recipe ({', '.join(differing)} differ from "
                             f"{recipe_path(name).name})")
        config = TrainConfig.from_dict(saved)
        if any(other.validation_fold == config.validation_fold for other in configs.values()):
            raise ValueError(f"{run_dir}: a second run of validation fold {config.validation_fold}")
        configs[Path(run_dir)] = config
    from moleseg.network.train import split_of  # TensorFlow, once every run is checked

    folds, every_pair = [], []
    for run_dir, config in configs.items():
        train, validation, test = split_of(config)
        every_pair = every_pair or [*train, *validation, *test]
        folds.append(Fold(name=run_dir.name, pairs=validation,
                          segmenter=load_segmenter(RunFiles(run_dir).model, test_time_augmentation=False)))
    baseline = load_segmenter(CLASSICAL_MODELS[folds[0].segmenter.n_classes])
    thresholds = tuple(DEFAULT_THRESHOLDS)
    scored = {} if scores_dir is None else {
        fold.name: kept_fold_scores(fold, RunFiles(run_dir).model, thresholds, scores_dir, baseline)
        for fold, run_dir in zip(folds, configs)}
    result = cross_validate(folds, thresholds=thresholds, baseline=baseline,
                            share=DEFAULT_CHECK_SHARE if share is None else share, all_pairs=every_pair,
                            scored=scored, progress=lambda line: print(f"[{name}] {line}", flush=True))
    print(f"[{name}] {result.summary()}", flush=True)
    record_path = MODELS_DIR / f"{name}.json"
    record = read_json(record_path, {}) or {}
    record["crossval"] = {**result.to_dict(), "config": recipe, "runs": [str(Path(run_dir)) for run_dir in run_dirs],
                          "command": f"python -m moleseg.tools.shipped --only {name} --crossval "
                                     + " ".join(str(run_dir) for run_dir in run_dirs)}
    write_json(record_path, record)
    return record


def _step(args: argparse.Namespace, name: str) -> None:
    """One step of :func:`main` for one recipe; prints its one-line JSON result."""
    if args.print_data_root:
        print(training_root(name, args.data))
        return
    if args.confidence_only:
        record = calibrate_confidence_shipped(name, args.data, args.check_share)
        print(json.dumps({"name": name, "confidence": {k: v for k, v in record["confidence"].items()
                                                       if k == "threshold"}}))
        return
    if args.confidence_from_crossval:
        record = confidence_from_crossval(name, args.data)
        print(json.dumps({"name": name, "confidence": {k: record["confidence"]["validation"][k]
                                                       for k in ("rule", "threshold")}}))
        return
    if args.crossval:
        crossval = crossvalidate_shipped(name, args.crossval, args.data, args.check_share, args.scores_dir)["crossval"]
        print(json.dumps({"name": name, "crossval": {k: crossval[k] for k in ("n_folds", "n_images", "fm")}}))
        return
    if args.onnx_only:
        section = install_shipped_onnx(name, args.data)
        print(json.dumps({"name": name, "onnx": {k: section[k] for k in ("file", "mib", "max_abs_probability_difference")}}))
        return
    if args.calibrate_only:
        record = calibrate_shipped(name, args.data)
    elif args.install:
        record = install_shipped(name, args.install, args.wall_seconds, args.data)
    else:
        record = build_shipped(name, args.data, args.epochs, args.resume)
    print(json.dumps({"name": name, "wall_seconds": record.get("wall_seconds"),
                      "fm": {k: v["model"]["fm"]["mean"] for k, v in record["evaluation"].items()}}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moleseg.tools.shipped", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA_DIR, help="shared data folder")
    parser.add_argument("--only", choices=recipe_names(), action="append", help="only this model (repeatable)")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs (for a quick check)")
    parser.add_argument("--resume", action="store_true", help="continue interrupted runs")
    steps = parser.add_mutually_exclusive_group()
    steps.add_argument("--print-data-root", action="store_true",
                       help="only prepare the held-out splits and print the folder to give moleseg train --data-root")
    steps.add_argument("--install", type=Path, metavar="RUN_DIR",
                       help="no training: install, evaluate and record the finished run RUN_DIR")
    steps.add_argument("--calibrate-only", action="store_true",
                       help="no training: choose the installed models' flips, lesion and confidence thresholds "
                            "again and re-evaluate")
    steps.add_argument("--onnx-only", action="store_true",
                       help="no training: build the installed models' ONNX files (models/NAME.onnx), check them "
                            "against TensorFlow on real images and record them in models/NAME.json")
    steps.add_argument("--confidence-only", action="store_true",
                       help="no training: choose only the installed models' confidence threshold again (the "
                            "share of validation images marked 'check this border': --check-share)")
    steps.add_argument("--confidence-from-crossval", action="store_true",
                       help="no training: choose the installed models' confidence threshold from the recipe's "
                            "out-of-fold images recorded by --crossval (the rule fixed beforehand: "
                            "docs/experiments/dermoscopy-flag-calibration.md)")
    steps.add_argument("--crossval", type=Path, nargs="+", metavar="RUN_DIR",
                       help="no training: k-fold cross-validation from the finished fold runs RUN_DIR... (out-of-fold "
                            "FM, lesion and confidence thresholds chosen on every image, images losing to the "
                            "classical baseline), recorded under 'crossval' in models/NAME.json")
    parser.add_argument("--scores-dir", type=Path, default=None, metavar="DIR",
                        help="with --crossval: keep each fold's scores in DIR and read them back while its model file "
                             "is unchanged (score each fold as soon as it finishes)")
    parser.add_argument("--check-share", type=float, default=None, metavar="SHARE",
                        help="with --confidence-only or --crossval: share (0..1) of the validation images to mark; "
                             "default moleseg.core.config.DEFAULT_CHECK_SHARE")
    parser.add_argument("--wall-seconds", type=float, default=0.0, help="with --install: the training's wall time")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"error: shared data folder {args.data} not found (use --data)", file=sys.stderr)
        return 2
    names = args.only or recipe_names()
    if (args.install or args.crossval) and len(names) != 1:
        print(f"error: {'--install' if args.install else '--crossval'} needs one --only NAME", file=sys.stderr)
        return 2
    for name in names:
        try:
            _step(args, name)
        except ValueError as error:  # a wrong folder, file or recipe (ModelFileError, PairingError too)
            print(f"error: {error}", file=sys.stderr)
            return 2
        except RuntimeError as error:
            from moleseg.network.train import TrainingError

            if not isinstance(error, TrainingError):
                raise
            print(f"error: {error}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
