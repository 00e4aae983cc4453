"""The shipped models' recipes: their files in ``models/``, their dataset folders and held-out splits, and the
training configuration and test sets each recipe gives over the shared data.

Each shipped model has a recipe, ``models/<name>.config.json``: a training configuration (the options of
:mod:`moleseg.core.options`, read by ``moleseg train --config``) whose dataset folders are relative to
the shared data folder (:data:`moleseg.tools.SHARED_DATA_DIR`, or ``--data``),
plus a ``recipe`` section that training ignores: ``test`` (folders evaluated after training, never trained
on) and ``holdout`` (a share of a training folder held out, by file with the recipe's seed, as a test set).
Next to it lie the installed model ``models/<name>.keras`` and its record ``models/<name>.json``
(:mod:`moleseg.tools.shipped` writes both).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moleseg.core import options
from moleseg.core.config import CLASSICAL_MODELS, MODELS_DIR, RUNS_FOLDER_NAME
from moleseg.core.configfile import read_config_file
from moleseg.engine.runs import read_json
from moleseg.tools import PROJECT_DIR

if TYPE_CHECKING:
    from moleseg.core.pairing import Pair
    from moleseg.core.trainconfig import TrainConfig

#: The checkout's runs folder, where ``make models`` and ``make crossval`` write the recipes' runs.
RUNS_DIR = PROJECT_DIR / RUNS_FOLDER_NAME
#: A recipe's file name is ``<name>`` + this, in the models folder.
RECIPE_SUFFIX = ".config.json"
#: Training options that may differ between the fold runs of one cross-validation and the model then trained
#: on every pair (the split, where and how the run went); every other option is the recipe's and must agree.
NOT_RECIPE_OPTIONS = ("validation_split", "validation_fold", "run_dir", "calibrate", "cache_dir", "strategy",
                      "mixed_precision")


def recipe_path(name: str) -> Path:
    """``models/<name>.config.json``."""
    return MODELS_DIR / f"{name}{RECIPE_SUFFIX}"


def model_file(name: str) -> Path:
    """``models/<name>.keras``: the installed shipped model."""
    return MODELS_DIR / f"{name}.keras"


def record_file(name: str) -> Path:
    """``models/<name>.json``: the installed model's record (its numbers, quoted by the model card)."""
    return MODELS_DIR / f"{name}.json"


def read_record(name: str) -> dict[str, Any]:
    """The record ``models/<name>.json``; empty when there is none yet."""
    return read_json(record_file(name), {}) or {}


def training_run_dir(name: str) -> Path:
    """``runs/shipped-<name>``: the run ``make models`` trains the recipe in."""
    return RUNS_DIR / f"shipped-{name}"


def holdout_dir(name: str) -> Path:
    """``runs/shipped-<name>-data``: the recipe's held-out splits (:func:`training_root`)."""
    return RUNS_DIR / f"shipped-{name}-data"


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


def recipe_test_folders(name: str) -> list[str]:
    """The recipe's test dataset folders (its ``recipe`` section's ``test``), relative to the data."""
    return read_recipe(name).get("recipe", {}).get("test", [])


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
    from moleseg.network.examples import split_pairs

    split_root = split_root or holdout_dir(name)
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
    holdout = read_recipe(name).get("recipe", {}).get("holdout", {})
    split_root = split_root or holdout_dir(name)
    return [split_root / "test" / folder if folder in holdout else data_dir / folder
            for folder in recipe_test_folders(name)]


def split_folders(name: str, data_dir: Path, split_root: Path | None = None) -> tuple[list[Path], list[Path]]:
    """Training and test dataset folders (each with ``images/`` and ``masks/``) of a recipe, with the
    held-out splits made (see :func:`training_root`)."""
    root = training_root(name, data_dir, split_root)
    return [root / folder for folder in train_folders(name)], evaluation_folders(name, data_dir, split_root)


def evaluation_sets(name: str, data_dir: Path, split_root: Path | None = None) -> list[tuple[str, list[Pair]]]:
    """Each of the recipe's test folders (as the recipe names it) with its image and mask pairs, the
    held-out splits made (see :func:`training_root`)."""
    from moleseg.core.pairing import pair_folders

    _, test_dirs = split_folders(name, data_dir, split_root)
    return [(folder, pair_folders(test_dir / "images", test_dir / "masks").pairs)
            for folder, test_dir in zip(recipe_test_folders(name), test_dirs)]


def recipe_config(name: str, data_dir: Path, epochs: int | None = None,
                  split_root: Path | None = None) -> TrainConfig:
    """The TrainConfig of a shipped model over ``data_dir``: what ``moleseg train --config
    models/<name>.config.json --data-root <training_root>`` trains."""
    from moleseg.core.trainconfig import TrainConfig

    root = training_root(name, data_dir, split_root)
    values = read_config_file(recipe_path(name), root)
    if epochs:
        values["epochs"] = epochs
    return TrainConfig.from_dict(values)


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


def evaluate_shipped(name: str, model_path: Path, data_dir: Path, split_root: Path | None = None) -> dict:
    """Evaluate a shipped model and the classical baseline on its test sets."""
    from moleseg.engine.evaluate import evaluate_pairs
    from moleseg.network.loading import load_segmenter

    model = load_segmenter(model_path)
    baseline = load_segmenter(CLASSICAL_MODELS[model.n_classes])
    results = {}
    for folder, pairs in evaluation_sets(name, data_dir, split_root):
        summary, _, _ = evaluate_pairs(model, pairs)
        base, _, _ = evaluate_pairs(baseline, pairs)
        results[folder] = {"model": summary, "classical": {k: v for k, v in base.items() if k != "per_image"}}
    return results
