"""Recipes of the models shipped in ``models/``: how ``make models`` retrains them from the shared data.

Each recipe is a :class:`moleseg.network.train.TrainConfig` over folders of the shared data set (default
``../shared/data`` next to the project, or ``--data``), with a fixed seed. Running this module trains
the chosen models in run folders under ``runs/shipped-<name>``, copies each best model to
``models/<name>.keras``, evaluates it (and the classical baseline) on the shared test sets and writes
``models/<name>.json`` with those numbers and the wall time; the model cards quote that file.

Usage::

    python -m moleseg.network.shipped [--data DIR] [--only dermoscopy|cells] [--epochs N] [--calibrate-only]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from moleseg.core.config import MODELS_DIR, RUNS_DIR

PROJECT_DIR = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = Path(os.environ.get("MOLESEG_SHARED_DATA", PROJECT_DIR.parent / "shared" / "data"))

#: Training folders (relative to the data folder) and test sets of each shipped model.
#: ``moles/seed/test`` is never used for training or model selection.
RECIPES: dict[str, dict] = {
    "dermoscopy": {
        "train": ["moles/seed/train", "moles/isic2017", "moles/ham10000", "moles/ph2"],
        "test": ["moles/seed/test"],
        "options": dict(
            model=dict(architecture="deeplabv3plus", backbone="mobilenetv2", input_size=320, n_classes=3,
                       separable=True, decoder_width=128, aspp_rates=[4, 8, 12], dropout=0.1),
            weights="imagenet", border_width_px=4, shape="diamond", closing_radius_px=15,
            solver="adam", learning_rate=1e-3, schedule="cosine", epochs=30, batch_size=8,
            loss="dice_ce", class_weighting=False,
            augment=["rotation", "reflection", "translation", "scale", "colour"], rotation_deg=180.0,
            translation_px=20.0, scale_range=0.1, colour=0.5, validation_split=0.15, seed=7,
            name="dermoscopy",
        ),
    },
    "cells": {
        # cells/seed is left out: one tracked cell is labelled per frame and the other cells are
        # background, which teaches the network to ignore cells (see models/cells.md).
        "train": ["cells/dsb2018_brightfield", "cells/dsb2018_fluo"],
        "test": ["cells/dsb2018_brightfield"],
        # a quarter of the brightfield images (seeded, by file) is held out of training as the test set
        "holdout": {"cells/dsb2018_brightfield": 0.25},
        "options": dict(
            model=dict(architecture="deeplabv3plus", backbone="mobilenetv2", input_size=256, n_classes=2,
                       separable=True, decoder_width=128, aspp_rates=[4, 8, 12], dropout=0.1),
            weights="imagenet", border_width_px=2, shape="diamond", closing_radius_px=3,
            solver="adam", learning_rate=1e-3, schedule="cosine", epochs=40, batch_size=8,
            loss="dice_ce", class_weighting=False,
            augment=["rotation", "reflection", "translation", "scale", "colour"], rotation_deg=180.0,
            translation_px=20.0, scale_range=0.15, colour=0.5, validation_split=0.2, test_split=0.0, seed=11,
            inference="tiles", crops_per_image=1, crops_by_area=True,
            name="cells",
        ),
    },
}


def split_folders(name: str, data_dir: Path, split_root: Path | None = None) -> tuple[list[Path], list[Path]]:
    """Training and test dataset folders (each with ``images/`` and ``masks/``) of a recipe.

    Folders named in the recipe's ``holdout`` are split by file with the recipe's seed into two
    folders of symbolic links under ``runs/shipped-<name>-data/`` (``train/<folder>`` and
    ``test/<folder>``), so that the held-out images are never trained on.
    """
    from moleseg.network.data import split_pairs
    from moleseg.core.pairing import pair_folders

    recipe = RECIPES[name]
    holdout = recipe.get("holdout", {})
    split_root = split_root or RUNS_DIR / f"shipped-{name}-data"
    train_dirs, test_dirs = [], []
    for folder in recipe["train"]:
        if folder not in holdout:
            train_dirs.append(data_dir / folder)
            continue
        pairs = pair_folders(data_dir / folder / "images", data_dir / folder / "masks").pairs
        kept, _, held = split_pairs(pairs, validation_fraction=0.0, test_fraction=holdout[folder],
                                    seed=recipe["options"]["seed"])
        for part, chosen in (("train", kept), ("test", held)):
            target = split_root / part / folder
            if target.exists():
                shutil.rmtree(target)
            for sub in ("images", "masks"):
                (target / sub).mkdir(parents=True)
            for pair in chosen:
                (target / "images" / Path(pair.image).name).symlink_to(Path(pair.image).resolve())
                (target / "masks" / Path(pair.mask).name).symlink_to(Path(pair.mask).resolve())
        train_dirs.append(split_root / "train" / folder)
    for folder in recipe["test"]:
        test_dirs.append(split_root / "test" / folder if folder in holdout else data_dir / folder)
    return train_dirs, test_dirs


def recipe_config(name: str, data_dir: Path, epochs: int | None = None):
    """The TrainConfig of a shipped model over ``data_dir``."""
    from moleseg.network.train import TrainConfig

    options = dict(RECIPES[name]["options"])
    if epochs:
        options["epochs"] = epochs
    train_dirs, _ = split_folders(name, data_dir)
    return TrainConfig(images=[str(d / "images") for d in train_dirs], masks=[str(d / "masks") for d in train_dirs],
                       **options)


def evaluate_shipped(name: str, model_path: Path, data_dir: Path, split_root: Path | None = None) -> dict:
    """Evaluate a shipped model and the classical baseline on its test sets."""
    from moleseg.engine.evaluate import evaluate_pairs
    from moleseg.core.pairing import pair_folders
    from moleseg.network.loading import load_segmenter

    model = load_segmenter(model_path)
    baseline = load_segmenter(f"classical{model.n_classes}")
    results = {}
    _, test_dirs = split_folders(name, data_dir, split_root)
    for folder, test_dir in zip(RECIPES[name]["test"], test_dirs):
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
    return install_shipped(name, run_dir, config, time.time() - started, data_dir)


def install_shipped(name: str, run_dir: Path, config, wall_seconds: float, data_dir: Path) -> dict:
    """Copy a finished run's best model to ``models/<name>.keras`` (without optimizer state), evaluate it
    and the classical baseline on the recipe's test sets and write ``models/<name>.json``."""
    from moleseg.engine.runs import RunFiles, write_json

    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    target = MODELS_DIR / f"{name}.keras"
    # the run's best model carries its optimizer state (for resuming); the shipped file needs only the network
    from moleseg.network.model.io import load_model_and_info, save_model

    network, info = load_model_and_info(RunFiles(run_dir).model)
    save_model(network, target, info)
    evaluation = evaluate_shipped(name, target, data_dir)
    record = {
        "name": name,
        "command": f"make models  (python -m moleseg.network.shipped --only {name})",
        "train_folders": RECIPES[name]["train"],
        "test_folders": RECIPES[name]["test"],
        "config": config.to_dict(),
        "wall_seconds": round(wall_seconds, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_version()}",
        "evaluation": evaluation,
        "calibration": {k: info.get(k) for k in ("test_time_augmentation", "lesion_threshold", "calibration")},
        "file_mib": round(target.stat().st_size / 2**20, 2),
    }
    write_json(MODELS_DIR / f"{name}.json", record)
    return record


def calibrate_shipped(name: str, data_dir: Path) -> dict:
    """Choose an installed shipped model's flips and lesion threshold again, on its own training run's
    validation split (never the test sets), then re-evaluate it and rewrite ``models/<name>.json``."""
    from moleseg.network.loading import calibrate_model_file
    from moleseg.engine.runs import read_json, write_json
    from moleseg.network.train import TrainConfig, split_of

    target = MODELS_DIR / f"{name}.keras"
    record_path = MODELS_DIR / f"{name}.json"
    record = read_json(record_path, {}) or {}
    saved = record.get("config")
    config = TrainConfig.from_dict(saved) if saved else recipe_config(name, data_dir)
    split_folders(name, data_dir)  # the held-out symlink folders the config points at
    _, validation, _ = split_of(config)
    calibration = calibrate_model_file(target, validation, progress=lambda line: print(f"[{name}] {line}", flush=True))
    print(f"[{name}] {calibration.summary()}", flush=True)
    record.update({"name": name, "calibration": calibration.info_update(),
                   "evaluation": evaluate_shipped(name, target, data_dir),
                   "file_mib": round(target.stat().st_size / 2**20, 2)})
    write_json(record_path, record)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moleseg.network.shipped", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="shared data folder")
    parser.add_argument("--only", choices=sorted(RECIPES), action="append", help="train only this model")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs (for a quick check)")
    parser.add_argument("--resume", action="store_true", help="continue interrupted runs")
    parser.add_argument("--calibrate-only", action="store_true",
                        help="no training: choose the installed models' flips and threshold again and re-evaluate")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"error: shared data folder {args.data} not found (use --data)", file=sys.stderr)
        return 2
    for name in args.only or list(RECIPES):
        if args.calibrate_only:
            record = calibrate_shipped(name, args.data)
        else:
            record = build_shipped(name, args.data, args.epochs, args.resume)
        print(json.dumps({"name": name, "wall_seconds": record.get("wall_seconds"),
                          "fm": {k: v["model"]["fm"]["mean"] for k, v in record["evaluation"].items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
