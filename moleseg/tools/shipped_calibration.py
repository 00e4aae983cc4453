"""Choosing an installed shipped model's decision and confidence threshold again: on its training run's
validation pairs (never the test sets), or from its recipe's k-fold cross-validation, whose fold runs are
scored out of fold here. A chosen decision or threshold is stored in ``models/<name>.keras`` and recorded in
``models/<name>.json`` with what it marks on the recipe's test sets; the cross-validation is recorded there
under ``crossval``.

``python -m moleseg.tools.shipped`` runs these steps (``--calibrate-only``, ``--confidence-only``,
``--crossval``, ``--confidence-from-crossval``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moleseg.core.config import CLASSICAL_MODELS, DEFAULT_CHECK_SHARE
from moleseg.engine.runs import RunFiles, read_json, write_json
from moleseg.tools.shipped_recipes import (evaluate_shipped, evaluation_sets, model_file, read_record, recipe_config,
                                           recipe_options, recipe_path, record_file, training_root)

if TYPE_CHECKING:
    from moleseg.core.pairing import Pair
    from moleseg.engine.crossval import Fold
    from moleseg.engine.segmenter import Segmenter


def validation_pairs(name: str, data_dir: Path) -> list[Pair]:
    """The validation split of a shipped model's training run (what it was calibrated on; never its test
    sets): the split of the config saved in ``models/<name>.json`` when its folders exist on this machine,
    else of the recipe over ``data_dir`` (same folders, fraction and seed, re-rooted here)."""
    from moleseg.network.train import TrainConfig, split_of

    saved = read_record(name).get("config")
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
    from moleseg.engine.calibrate import confidence_rows, flag_summary
    from moleseg.network.loading import load_segmenter

    model = load_segmenter(model_file(name))
    baseline = load_segmenter(CLASSICAL_MODELS[model.n_classes])
    tests = {}
    for folder, pairs in evaluation_sets(name, data_dir):
        rows = confidence_rows(model, pairs, baseline=baseline)
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

    target = model_file(name)
    record_path = record_file(name)
    record = read_record(name)
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
    from moleseg.network.loading import calibrate_confidence_file

    target = model_file(name)
    record_path = record_file(name)
    record = read_record(name)
    result = calibrate_confidence_file(target, validation_pairs(name, data_dir),
                                       share=DEFAULT_CHECK_SHARE if share is None else share,
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
    from moleseg.network.loading import load_segmenter

    record_path = record_file(name)
    record = read_record(name)
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
    target = model_file(name)
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


def kept_fold_scores(fold: Fold, model_path: Path, thresholds: tuple[float | None, ...], scores_dir: Path,
                     baseline: Segmenter | None) -> list[dict[str, Any]]:
    """:func:`moleseg.engine.crossval.score_fold`'s rows of one fold, read from ``scores_dir`` when a file
    there was written for this very model file (its SHA-256), these images and these thresholds, else scored
    now and written there. A file that does not match or is not JSON is scored again (the key is in its name
    and checked inside)."""
    from moleseg.engine.crossval import score_fold

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
        :data:`moleseg.tools.shipped_recipes.NOT_RECIPE_OPTIONS` differ from ``models/<name>.config.json``
        over ``data_dir``), or two runs of one fold.
    """
    from moleseg.core.trainconfig import TrainConfig
    from moleseg.engine.calibrate import DEFAULT_THRESHOLDS
    from moleseg.engine.crossval import Fold, cross_validate
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
    record_path = record_file(name)
    record = read_record(name)
    record["crossval"] = {**result.to_dict(), "config": recipe, "runs": [str(Path(run_dir)) for run_dir in run_dirs],
                          "command": f"python -m moleseg.tools.shipped --only {name} --crossval "
                                     + " ".join(str(run_dir) for run_dir in run_dirs)}
    write_json(record_path, record)
    return record
