"""The models shipped in ``models/``: how ``make models`` retrains them from the shared data.

Each shipped model is trained from its recipe ``models/<name>.config.json`` (:mod:`moleseg.tools.shipped_recipes`:
its dataset folders, test sets and held-out shares). ``make models`` does, for each recipe::

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
``--confidence-from-crossval`` that threshold from the recipe's out-of-fold images; ``--crossval``
scores the recipe by k-fold cross-validation from finished fold runs (these four:
:mod:`moleseg.tools.shipped_calibration`); without ``--install``/``--print-data-root`` the module trains
in-process.

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

from moleseg.engine.runs import RunFiles, read_json, write_json
from moleseg.tools import SHARED_DATA_DIR
from moleseg.tools.shipped_calibration import (calibrate_confidence_shipped, calibrate_shipped, confidence_from_crossval,
                                               confidence_record, crossvalidate_shipped)
from moleseg.tools.shipped_recipes import (evaluate_shipped, model_file, read_record, recipe_config, recipe_names,
                                           recipe_options, recipe_path, recipe_test_folders, record_file,
                                           train_folders, training_root, training_run_dir)

#: Real images the shipped ONNX file is checked on against TensorFlow (:func:`build_shipped_onnx`).
ONNX_CHECK_IMAGES: int = 8


def build_shipped(name: str, data_dir: Path, epochs: int | None = None, resume: bool = False) -> dict:
    """Train one shipped model, install it in ``models/`` and write its numbers next to it."""
    from moleseg.network.train import train

    config = recipe_config(name, data_dir, epochs)
    run_dir = training_run_dir(name)
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)
    started = time.time()
    train(config, run_dir, resume=resume, echo=lambda line: print(f"[{name}] {line}", flush=True))
    return install_shipped(name, run_dir, time.time() - started, data_dir)


def install_shipped(name: str, run_dir: Path, wall_seconds: float, data_dir: Path) -> dict:
    """Copy a finished run's best model to ``models/<name>.keras`` (without optimizer state), evaluate it
    and the classical baseline on the recipe's test sets and write ``models/<name>.json`` (with the run's
    ``config.json``)."""
    saved = read_json(RunFiles(run_dir).config)
    if saved is None:
        raise ValueError(f"{run_dir}: no finished training to install (no {RunFiles.CONFIG})")

    target = model_file(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    # the run's best model carries its optimizer state (for resuming); the shipped file needs only the network
    from moleseg.network.io import load_model_and_info, save_model

    network, info = load_model_and_info(RunFiles(run_dir).model)
    crossval = read_record(name).get("crossval")
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
        "test_folders": recipe_test_folders(name),
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
    write_json(record_file(name), record)
    return record


def check_images(name: str, data_dir: Path, count: int = ONNX_CHECK_IMAGES) -> list[Path]:
    """The first ``count`` image files (sorted) of the recipe's test folders, then its training folders, under
    ``data_dir`` (whole folders: a held-out share is a part of them)."""
    from moleseg.core.pairing import list_images

    files: list[Path] = []
    for folder in [*recipe_test_folders(name), *train_folders(name)]:
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

    source = model_file(name)
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
    from moleseg.network.compiled import SHIPPED_ONNX_KEY

    record = read_record(name)
    record[SHIPPED_ONNX_KEY] = section = build_shipped_onnx(name, data_dir)
    write_json(record_file(name), record)
    return section


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
