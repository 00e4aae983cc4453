"""The article's study on your own data: which solver, epochs, batch size, learning rate, augmentation or
backbone gives the best F-measure, and whether the difference is more than noise.

A study file (YAML) names the data, a base training configuration, the factors to vary and how::

    name: cells
    data:
      root: ../../shared/data          # relative to the study file (``--data-root`` overrides it)
      images: cells/seed/images
      masks: cells/seed/masks
      split: {by: group, pattern: "^(b_frame_[0-9]+|frame_[0-9]+)_", validation: [b_frame_0], test: [b_frame_1]}
      # or: train: {images: ..., masks: ...}, validation: {...}, test: {...}
    base: {epochs: 4, batch_size: 4, model: {n_classes: 2, input_size: 64}}
    design: one-at-a-time              # or grid
    repeats: 2                         # seeds per setting (seed, seed + 1, ...)
    seed: 0
    factors:
      solver: [sgdm, rmsprop, adam]    # an option and its values
      augmentation:                    # or named settings, each a set of options
        reflection only: {augment: [reflection]}
        all: {augment: [rotation, reflection, translation]}

k-fold cross-validation is a factor like any other: ``base: {validation_split: 0.2}`` and
``factors: {validation_fold: [1, 2, 3, 4]}`` train on five folds (the base is fold 0), and ``study.csv``'s
``best_val_fm`` column gives each fold's validation FM (a grid of a recipe factor by ``validation_fold``
compares recipes fold by fold).

Option names are those of a training's ``config.json`` (``model.backbone`` for the network's options);
they are checked before anything trains. Every run is an ordinary run folder ``OUT/runs/<run id>``
trained by ``moleseg train --config``; a run whose ``evaluation.json`` exists is skipped, so an
interrupted study continues where it stopped. Results: ``study.csv``, ``study.html``, ``verdicts.md``.

No TensorFlow here: trainings run in child processes.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import itertools
import json
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from filelock import FileLock, Timeout

from moleseg.core.atomic import atomic_write
from moleseg.core.config import STUDIES_DIR
from moleseg.core.pairing import Pair, PairingError, pair_folders
from moleseg.core.roots import OutsideRootsError, resolve_inside_roots
from moleseg.core import options
from moleseg.engine.runs import read_history, read_json, write_json

#: Designs a study file may ask for.
DESIGNS: tuple[str, ...] = ("one-at-a-time", "grid")
#: Files written into a study's output folder.
STUDY_CSV, STUDY_HTML, VERDICTS_MD, PLAN_JSON, PROGRESS_JSON = (
    "study.csv", "study.html", "verdicts.md", "plan.json", "progress.json")
#: The lock file of a study folder (:func:`study_lock`).
STUDY_LOCK = "study.lock"
#: Sub-folders of a study's output folder: run folders, and the split's file links.
RUNS_SUBDIR, SPLIT_SUBDIR = "runs", "data"
#: Two-sided significance level of the verdicts (after Holm's correction over all comparisons).
SIGNIFICANCE_LEVEL: float = 0.05
#: Label of the base setting in tables and verdicts.
BASE_LABEL = "base"
#: The option whose values are cross-validation folds: a study that varies it gets a per-recipe summary.
FOLD_OPTION = "validation_fold"
#: Metrics of the test split copied into ``study.csv`` (mean, and for FM also max/min/std).
CSV_METRICS: tuple[str, ...] = ("fm", "cm", "cr", "jaccard")


class StudyError(ValueError):
    """A study file that cannot run; the message names the file and the problem."""


@dataclass(frozen=True)
class PlannedRun:
    """One training of a study: its folder name, the setting it belongs to and its full configuration."""

    run_id: str
    factor: str
    setting: str
    seed: int
    config: dict[str, Any]
    overrides: dict[str, Any]


@dataclass
class Study:
    """A parsed study file (see the module docstring)."""

    name: str
    path: Path
    data: dict[str, Any]
    base: dict[str, Any]
    factors: dict[str, dict[str, dict[str, Any]]]
    design: str = "one-at-a-time"
    repeats: int = 1
    seed: int = 0
    data_root: Path = field(default_factory=Path)


# --------------------------------------------------------------------------------------------------
# reading and checking a study file

def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and not prefix and key == "model":
            flat.update(_flatten(value, "model."))
        else:
            flat[prefix + key] = value
    return flat


def _settings_of(factor: str, values: Any, known: set[str], where: str) -> dict[str, dict[str, Any]]:
    """The named settings of one factor: ``{label: {option: value}}``."""
    if isinstance(values, list):
        if factor not in known:
            raise StudyError(f"{where}: unknown option {factor!r} in factors (known: {', '.join(sorted(known))})")
        return {_label(value): {factor: value} for value in values}
    if isinstance(values, dict):
        settings = {}
        for label, setting_options in values.items():
            if not isinstance(setting_options, dict):
                if factor not in known:
                    raise StudyError(f"{where}: unknown option {factor!r} in factors")
                setting_options = {factor: setting_options}
            flat = _flatten(setting_options)
            unknown = sorted(set(flat) - known)
            if unknown:
                raise StudyError(f"{where}: unknown option(s) {', '.join(map(repr, unknown))} in factor {factor!r}, "
                                 f"setting {label!r}")
            settings[str(label)] = flat
        return settings
    raise StudyError(f"{where}: factor {factor!r} must be a list of values or a mapping of named settings")


def _label(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value)) or "none"
    return str(value)


def load_study(path: str | Path, data_root: str | Path | None = None) -> Study:
    """Read and check a study file (names, designs, option names) without touching any data.

    Raises
    ------
    StudyError
        The file is missing, not YAML, or names an unknown option or design.
    """
    import yaml

    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise StudyError(f"{path}: cannot read the study file ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        raise StudyError(f"{path}: not a valid YAML file ({str(error).splitlines()[0]})") from None
    if not isinstance(document, dict):
        raise StudyError(f"{path}: a study file is a mapping with data, base and factors")
    known = {item.name for item in options.OPTIONS}
    base = _flatten(document.get("base") or {})
    unknown = sorted(set(base) - known)
    if unknown:
        raise StudyError(f"{path}: unknown option(s) {', '.join(map(repr, unknown))} in base")
    design = str(document.get("design", "one-at-a-time"))
    if design not in DESIGNS:
        raise StudyError(f"{path}: design must be one of {', '.join(DESIGNS)}, not {design!r}")
    factors_in = document.get("factors") or {}
    if not isinstance(factors_in, dict) or not factors_in:
        raise StudyError(f"{path}: give at least one factor to vary")
    factors = {str(name): _settings_of(str(name), values, known, str(path)) for name, values in factors_in.items()}
    repeats = document.get("repeats", 1)
    if not isinstance(repeats, int) or repeats < 1:
        raise StudyError(f"{path}: repeats must be a whole number >= 1, not {repeats!r}")
    data = document.get("data") or {}
    if not isinstance(data, dict):
        raise StudyError(f"{path}: data must be a mapping")
    root = Path(data_root) if data_root else (path.parent / str(data.get("root", "."))).resolve()
    return Study(name=str(document.get("name") or path.stem), path=path, data=data, base=base, factors=factors,
                 design=design, repeats=repeats, seed=int(document.get("seed", 0)), data_root=root)


def base_config(study: Study) -> dict[str, Any]:
    """The training defaults with the study's base options applied."""
    config = options.defaults()
    for name, value in study.base.items():
        options.set_value(config, name, value)
    return config


def _run_id(label: str, seed: int) -> str:
    """A run folder name: the setting's label in safe characters (at most 60) and the seed."""
    text = re.sub(r"[^A-Za-z0-9._=-]+", "-", label).strip("-.")
    return f"{text[:60]}-seed{seed}"


def plan(study: Study) -> list[PlannedRun]:
    """Every run of the study, in order: the base setting first (one-at-a-time), then each factor's other
    settings, each repeated with ``repeats`` seeds. Settings equal to the base share its runs."""
    base = base_config(study)
    seeds = [study.seed + index for index in range(study.repeats)]
    settings: list[tuple[str, str, dict[str, Any]]] = []
    if study.design == "grid":
        names = list(study.factors)
        for combination in itertools.product(*(study.factors[name].items() for name in names)):
            overrides: dict[str, Any] = {}
            for _, setting_options in combination:
                overrides.update(setting_options)
            label = ", ".join(f"{name}={setting}" for name, (setting, _) in zip(names, combination))
            settings.append(("grid", label, overrides))
    else:
        settings.append(("", BASE_LABEL, {}))
        for name, choices in study.factors.items():
            for label, setting_options in choices.items():
                settings.append((name, label, dict(setting_options)))
    runs: list[PlannedRun] = []
    seen: dict[str, str] = {}
    for factor, label, overrides in settings:
        config = copy.deepcopy(base)
        for option, value in overrides.items():
            options.set_value(config, option, value)
        key = json.dumps(config, sort_keys=True, default=str)
        if study.design != "grid" and factor and key in seen:
            continue  # the base setting's own value: its runs are the base runs
        seen[key] = label
        for seed in seeds:
            run_config = {**copy.deepcopy(config), "seed": seed}
            name = label if study.design == "grid" or not factor else f"{factor}={label}"
            runs.append(PlannedRun(run_id=_run_id(name, seed), factor=factor or BASE_LABEL, setting=label, seed=seed,
                                   config=run_config, overrides=overrides))
    return runs


# --------------------------------------------------------------------------------------------------
# the data: folders as given, or a split of one folder by a rule (as links in the output folder)

def _group_of(pair: Pair, pattern: re.Pattern[str], where: str) -> str:
    match = pattern.search(Path(pair.image).name)
    if not match:
        raise StudyError(f"{where}: split pattern {pattern.pattern!r} does not match {Path(pair.image).name}")
    return match.group(1) if match.groups() else match.group(0)


def _link_pairs(pairs: Sequence[Pair], folder: Path) -> dict[str, str]:
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for pair in pairs:
        for source, sub in ((Path(pair.image), "images"), (Path(pair.mask), "masks")):
            target = folder / sub / source.name
            if not target.exists():
                os.symlink(source.resolve(), target)
    return {"images": str(folder / "images"), "masks": str(folder / "masks")}


def data_folders(study: Study) -> list[Path]:
    """The resolved folders a study reads its images and masks from (``data.images``/``masks``, or those of
    ``data.train``, ``validation`` and ``test``), before anything in them is read."""
    data = study.data
    named = ([data.get("images"), data.get("masks")] if "split" in data else
             [data[part].get(sub) for part in ("train", "validation", "test") if isinstance(data.get(part), dict)
              for sub in ("images", "masks")])
    return [(study.data_root / str(value)).resolve() for value in named if value is not None]


def resolve_data(study: Study, out: Path | None) -> dict[str, dict[str, str]]:
    """``{"train"|"validation"|"test": {"images": dir, "masks": dir}}`` of a study.

    A ``split`` rule groups one folder's pairs by a regular expression over the image names (e.g. the
    sequence a frame belongs to) and links each group's files into ``OUT/data/<part>`` (no copies).
    With ``out=None`` the split is only checked.
    """
    data, root, where = study.data, study.data_root, str(study.path)

    def folder(value: Any) -> str:
        return str((root / str(value)).resolve())

    parts: dict[str, dict[str, str]] = {}
    if "split" not in data:
        for part in ("train", "validation", "test"):
            if isinstance(data.get(part), dict):
                parts[part] = {"images": folder(data[part]["images"]), "masks": folder(data[part]["masks"])}
        if "train" not in parts:
            raise StudyError(f"{where}: data needs train (and test) folders, or images + masks + split")
    else:
        rule = data["split"] or {}
        if rule.get("by") != "group" or "pattern" not in rule:
            raise StudyError(f"{where}: split must be {{by: group, pattern: REGEX, test: [...], validation: [...]}}")
        try:
            pairs = pair_folders(folder(data["images"]), folder(data["masks"])).pairs
        except (PairingError, KeyError) as error:
            raise StudyError(f"{where}: {error}") from None
        pattern = re.compile(str(rule["pattern"]))
        groups = {pair.image: _group_of(pair, pattern, where) for pair in pairs}
        test, validation = set(map(str, rule.get("test") or [])), set(map(str, rule.get("validation") or []))
        found = set(groups.values())
        missing = sorted((test | validation) - found)
        if missing:
            raise StudyError(f"{where}: split group(s) {', '.join(missing)} not found (groups: {', '.join(sorted(found))})")
        chosen = {"test": [p for p in pairs if groups[p.image] in test],
                  "validation": [p for p in pairs if groups[p.image] in validation],
                  "train": [p for p in pairs if groups[p.image] not in test | validation]}
        if not chosen["train"] or not chosen["test"]:
            raise StudyError(f"{where}: the split leaves no training or no test images")
        for part, part_pairs in chosen.items():
            if part_pairs:
                parts[part] = (_link_pairs(part_pairs, out / SPLIT_SUBDIR / part) if out is not None
                               else {"images": "", "masks": ""})
    if "test" not in parts:
        raise StudyError(f"{where}: a study needs a test set (data.test or a split with test groups)")
    return parts


def with_data(config: dict[str, Any], parts: dict[str, dict[str, str]]) -> dict[str, Any]:
    """A run configuration with the study's folders in it."""
    config = copy.deepcopy(config)
    for part, key in (("train", ""), ("validation", "validation_"), ("test", "test_")):
        if part in parts:
            config[f"{key}images"] = [parts[part]["images"]]
            config[f"{key}masks"] = [parts[part]["masks"]]
    if "validation" in parts:
        config["validation_split"] = 0.0
    config["test_split"] = 0.0
    return config


def check_study(study: Study) -> list[str]:
    """Problems of every planned configuration: each option and every rule between options
    (:func:`moleseg.core.options.problems`); the data folders are checked by :func:`resolve_data`."""
    problems: list[str] = []
    for run in plan(study):
        for problem in options.problems(run.config, data=False):
            message = f"{run.setting} ({run.factor}): {problem}"
            if message not in problems:
                problems.append(message)
    return problems


# --------------------------------------------------------------------------------------------------
# running

def run_finished(run_dir: Path) -> bool:
    """True when the run folder holds a test evaluation (the study skips it)."""
    evaluation = read_json(run_dir / "evaluation.json")
    return isinstance(evaluation, dict) and isinstance(evaluation.get("fm"), dict)


def train_command(run_dir: Path, python: str | None = None) -> list[str]:
    """The ``moleseg train`` command of one run (resuming when the folder holds an interrupted run)."""
    command = [python or sys.executable, "-m", "moleseg", "train", "--config", str(run_dir / "request.json"),
               "--out", str(run_dir), "--quiet"]
    if (run_dir / "config.json").is_file():
        command.append("--resume")
    return command


def thread_environment(parallel: int) -> dict[str, str]:
    """Environment of one of ``parallel`` concurrent trainings: the machine's cores split between them."""
    cores = max(1, (os.cpu_count() or 1) // max(1, parallel))
    return {**os.environ, "TF_NUM_INTRAOP_THREADS": str(cores), "TF_NUM_INTEROP_THREADS": "1",
            "OMP_NUM_THREADS": str(cores), "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
            "PYTHONUNBUFFERED": "1"}


def study_lock(out: str | Path) -> FileLock:
    """The lock of a study folder: an ``flock`` on :data:`STUDY_LOCK`, held by its ``moleseg study`` process
    while it runs and released by the kernel when that process ends, however it ends."""
    return FileLock(Path(out) / STUDY_LOCK, thread_local=False, preserve_lock_file=True, fallback_to_soft=False)


def study_running(out: str | Path) -> bool:
    """Whether a ``moleseg study`` process runs in ``out`` (its lock tried without waiting, let go at once)."""
    if not (Path(out) / STUDY_LOCK).exists():
        return False
    lock = study_lock(out)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        return True
    lock.release()
    return False


def _running_error(out: str | Path) -> StudyError:
    return StudyError(f"{out}: a study is already running there; wait for it to finish")


@contextmanager
def hold_study_lock(out: str | Path) -> Iterator[None]:
    """Hold ``out``'s study lock while the body runs.

    Raises
    ------
    StudyError
        Another process holds it: a study is already running in ``out``.
    """
    lock = study_lock(out)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise _running_error(out) from None
    try:
        yield
    finally:
        lock.release()


def check_out_folder(study: Study, out: str | Path) -> None:
    """Refuse an ``out`` folder holding another study's runs (its ``plan.json`` names another study): their
    finished runs of the same ids would be skipped as this study's and reported as its results.

    Raises
    ------
    StudyError
        ``out`` holds the runs of a study of another name.
    """
    plan_info = read_json(Path(out) / PLAN_JSON, {}) or {}
    other = plan_info.get("name")
    if other is not None and other != study.name:
        raise StudyError(f"{out} holds the runs of study {other!r} ({plan_info.get('study')}); choose another "
                         f"folder for study {study.name!r}")


def run_study(study: Study, out: str | Path, *, parallel: int = 1, echo: Callable[[str], None] = print,
              python: str | None = None) -> list[dict[str, Any]]:
    """Train every unfinished run (``parallel`` at a time), then write the results; returns the rows.

    Raises
    ------
    StudyError
        A bad study file, data that cannot be split, or a study already running in ``out``.
    """
    out = Path(out).resolve()  # the runs' request files name absolute folders
    problems = check_study(study)
    if problems:
        raise StudyError(f"{study.path}: " + "; ".join(problems))
    check_out_folder(study, out)
    out.mkdir(parents=True, exist_ok=True)
    with hold_study_lock(out):
        parts = resolve_data(study, out)
        runs = plan(study)
        write_json(out / PLAN_JSON, {"study": str(study.path), "name": study.name, "runs": [
            {"run_id": r.run_id, "factor": r.factor, "setting": r.setting, "seed": r.seed, "overrides": r.overrides}
            for r in runs]})
        pending = []
        for run in runs:
            run_dir = out / RUNS_SUBDIR / run.run_id
            if run_finished(run_dir):
                echo(f"{run.run_id}: finished earlier, skipped")
                continue
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(run_dir / "request.json", {**with_data(run.config, parts), "name": run.run_id})
            pending.append(run_dir)
        done = len(runs) - len(pending)
        _progress(out, runs, done, [], started=time.time())
        started = time.time()
        active: list[tuple[Path, subprocess.Popen]] = []
        queue = list(pending)
        failed: list[str] = []
        env = thread_environment(parallel)
        while queue or active:
            while queue and len(active) < max(1, parallel):
                run_dir = queue.pop(0)
                echo(f"{run_dir.name}: training")
                with open(run_dir / "study-train.log", "ab") as log:
                    active.append((run_dir, subprocess.Popen(train_command(run_dir, python), stdout=log,
                                                             stderr=subprocess.STDOUT, env=env)))
            time.sleep(0.5)
            for item in list(active):
                run_dir, process = item
                if process.poll() is None:
                    continue
                active.remove(item)
                if process.returncode == 0 and run_finished(run_dir):
                    done += 1
                    echo(f"{run_dir.name}: done ({done}/{len(runs)})")
                else:
                    failed.append(run_dir.name)
                    echo(f"{run_dir.name}: failed (exit {process.returncode}); see {run_dir / 'study-train.log'}")
            _progress(out, runs, done, [r.name for r, _ in active], started=started, failed=failed)
        rows = write_results(study, out)
        _progress(out, runs, done, [], started=started, failed=failed, finished=True)
        return rows


def _progress(out: Path, runs: Sequence[PlannedRun], done: int, active: list[str], *, started: float,
              failed: Sequence[str] = (), finished: bool = False) -> None:
    write_json(out / PROGRESS_JSON, {"runs": len(runs), "done": done, "active": active, "failed": list(failed),
                                     "started": started, "updated": time.time(),
                                     "status": "finished" if finished else "running"})


# --------------------------------------------------------------------------------------------------
# results

def collect(study: Study, out: str | Path) -> list[dict[str, Any]]:
    """One row per finished run: the varied options, seed, time, epochs, best validation FM, test
    FM/CM/CR/Jaccard, per-image FM."""
    out = Path(out)
    varied = sorted({option for run in plan(study) for option in run.overrides})
    rows = []
    for run in plan(study):
        run_dir = out / RUNS_SUBDIR / run.run_id
        evaluation = read_json(run_dir / "evaluation.json")
        if not run_finished(run_dir):
            continue
        state = read_json(run_dir / "state.json", {}) or {}
        flat = _flatten(run.config)
        row: dict[str, Any] = {"run": run.run_id, "factor": run.factor, "setting": run.setting, "seed": run.seed}
        row.update({option: _label(flat.get(option)) if isinstance(flat.get(option), list) else flat.get(option)
                    for option in varied})
        row["training_s"] = state.get("job_seconds", state.get("training_seconds"))
        row["epochs_run"] = state.get("epoch")
        row["best_val_fm"] = evaluation.get("best_val_fm")  # what k-fold cross-validation compares
        for metric in CSV_METRICS:
            summary = evaluation.get(metric) or {}
            row[f"{metric}_mean"] = summary.get("mean")
            if metric == "fm":
                row.update(fm_max=summary.get("max"), fm_min=summary.get("min"), fm_std=summary.get("std"))
        row["per_image_fm"] = {item["image"]: item["fm"] for item in evaluation.get("per_image", [])}
        rows.append(row)
    return rows


def _holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order)."""
    order = np.argsort(p_values)
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def setting_means(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, float]]:
    """Per (factor, setting): FM per test image averaged over the seeds."""
    grouped: dict[tuple[str, str], dict[str, list[float]]] = {}
    for row in rows:
        per = grouped.setdefault((row["factor"], row["setting"]), {})
        for image, value in row["per_image_fm"].items():
            per.setdefault(image, []).append(float(value))
    return {key: {image: float(np.mean(v)) for image, v in per.items()} for key, per in grouped.items()}


def verdicts(study: Study, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each factor's setting against the base setting: mean FM of both, the difference, and a paired
    Wilcoxon signed-rank test over the test images (FM averaged over the seeds), Holm-corrected.
    On a grid, every setting is compared with the best one."""
    from scipy.stats import wilcoxon

    means = setting_means(rows)
    if study.design == "grid":
        ranked = sorted(means, key=lambda key: -np.mean(list(means[key].values())))
        reference = ranked[0] if ranked else None
        comparisons = [(key, reference) for key in ranked[1:]]
    else:
        reference = (BASE_LABEL, BASE_LABEL)
        comparisons = [(key, reference) for key in means if key != reference and reference in means]
    results = []
    for key, ref in comparisons:
        images = sorted(set(means[key]) & set(means[ref]))
        a = np.array([means[key][i] for i in images])
        b = np.array([means[ref][i] for i in images])
        differences = a - b
        if len(images) < 2 or not np.any(differences):
            p = 1.0
        else:
            p = float(wilcoxon(a, b, zero_method="zsplit").pvalue)
        seeds_a = [r["fm_mean"] for r in rows if (r["factor"], r["setting"]) == key]
        seeds_b = [r["fm_mean"] for r in rows if (r["factor"], r["setting"]) == ref]
        results.append({"factor": key[0], "setting": key[1], "reference": ref[1], "n_images": len(images),
                        "fm": float(a.mean()) if len(a) else float("nan"),
                        "reference_fm": float(b.mean()) if len(b) else float("nan"),
                        "difference": float(differences.mean()) if len(differences) else float("nan"),
                        "p": p, "seeds": len(seeds_a), "seed_spread": float(np.std(seeds_a)) if seeds_a else None,
                        "reference_seed_spread": float(np.std(seeds_b)) if seeds_b else None})
    for result, adjusted in zip(results, _holm([r["p"] for r in results])):
        result["p_holm"] = adjusted
        result["significant"] = adjusted < SIGNIFICANCE_LEVEL
        direction = "raised" if result["difference"] > 0 else "lowered"
        what = f"{result['factor']} = {result['setting']}" if study.design != "grid" else result["setting"]
        result["sentence"] = (
            f"{what} {direction} mean FM from {result['reference_fm']:.4f} ({result['reference']}) to "
            f"{result['fm']:.4f} over {result['n_images']} test images, Wilcoxon p = {result['p']:.3g} "
            f"(Holm {result['p_holm']:.3g}); " + ("a real difference" if result["significant"] else "within noise"))
    return results


def _recipe_label(study: Study, row: dict[str, Any]) -> str:
    """A run's setting without its fold: ``recipe=plain`` of the grid cell ``recipe=plain, validation_fold=2``;
    the base for the base and the fold factor's own runs of a one-at-a-time study."""
    if study.design == "grid":
        parts = [part for part in row["setting"].split(", ") if not part.startswith(f"{FOLD_OPTION}=")]
        return ", ".join(parts) or BASE_LABEL
    return BASE_LABEL if row["factor"] in (BASE_LABEL, FOLD_OPTION) else f"{row['factor']}={row['setting']}"


def cross_validation(study: Study, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per recipe (the varied options other than :data:`FOLD_OPTION`), the best validation FM over its folds
    (and seeds), best recipe first, each compared with the best one fold by fold (mean difference and a
    paired Wilcoxon signed-rank test over the folds). Empty when the study does not vary the fold.

    Returns
    -------
    list of dict
        ``recipe``, ``folds`` (runs), ``val_fm`` / ``val_fm_std`` / ``val_fm_min`` (0..1), ``test_fm`` (mean
        FM of the test set, 0..1), and against the best recipe ``difference``, ``p`` and ``sentence``.
    """
    from scipy.stats import wilcoxon

    varied = sorted({option for run in plan(study) for option in run.overrides})
    if FOLD_OPTION not in varied:
        return []
    default_fold = options.option(FOLD_OPTION).default
    recipes: dict[str, dict[tuple[Any, Any], dict[str, Any]]] = {}
    for row in rows:
        if row.get("best_val_fm") is None:
            continue
        label = _recipe_label(study, row)
        fold = row.get(FOLD_OPTION)
        recipes.setdefault(label, {})[(default_fold if fold is None else fold, row["seed"])] = row
    summaries = []
    for label, runs in recipes.items():
        values = [float(run["best_val_fm"]) for run in runs.values()]
        summaries.append({"recipe": label, "folds": len(values), "val_fm": float(np.mean(values)),
                          "val_fm_std": float(np.std(values)), "val_fm_min": float(np.min(values)),
                          "test_fm": float(np.mean([run["fm_mean"] for run in runs.values()]))})
    summaries.sort(key=lambda item: -item["val_fm"])
    best = summaries[0] if summaries else None
    for summary in summaries:
        keys = sorted(set(recipes[summary["recipe"]]) & set(recipes[best["recipe"]]), key=str)
        a = np.array([float(recipes[summary["recipe"]][key]["best_val_fm"]) for key in keys])
        b = np.array([float(recipes[best["recipe"]][key]["best_val_fm"]) for key in keys])
        summary["difference"] = float((a - b).mean()) if len(keys) else float("nan")
        summary["p"] = (float(wilcoxon(a, b, zero_method="zsplit").pvalue) if len(keys) >= 2 and np.any(a - b)
                        else 1.0)
        text = (f"{summary['recipe']}: validation FM {summary['val_fm']:.4f} ± {summary['val_fm_std']:.4f} over "
                f"{summary['folds']} fold(s) (worst {summary['val_fm_min']:.4f}; test FM {summary['test_fm']:.4f})")
        if summary is not best:
            verdict = "a real difference" if summary["p"] < SIGNIFICANCE_LEVEL else "within noise"
            text += (f", {summary['difference']:+.4f} against {best['recipe']} fold by fold over {len(keys)} "
                     f"fold(s), Wilcoxon p = {summary['p']:.3g}: {verdict}")
            if 2 * 0.5 ** len(keys) >= SIGNIFICANCE_LEVEL:  # the exact test's smallest two-sided p
                text += f" ({len(keys)} folds cannot reach p < {SIGNIFICANCE_LEVEL} with this test)"
        summary["sentence"] = text
    return summaries


def write_results(study: Study, out: str | Path) -> list[dict[str, Any]]:
    """Write ``study.csv``, ``verdicts.md`` and ``study.html`` from the finished runs; returns the rows."""
    out = Path(out)
    rows = collect(study, out)
    columns = [key for key in (rows[0] if rows else {}) if key != "per_image_fm"]
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: (f"{value:.4f}" if isinstance(value, float) else value) for key, value in row.items()
                         if key in columns})
    atomic_write(out / STUDY_CSV, stream.getvalue().encode())
    found = verdicts(study, rows)
    atomic_write(out / VERDICTS_MD, verdicts_markdown(study, rows, found).encode())
    atomic_write(out / STUDY_HTML, study_html(study, out, rows, found).encode())
    return rows


def verdicts_markdown(study: Study, rows: Sequence[dict[str, Any]], found: Sequence[dict[str, Any]]) -> str:
    """A Markdown page: the table of settings (mean/max/min/std FM, time) and one sentence per comparison."""
    lines = [f"# Study {study.name}", "", f"{len(rows)} finished run(s); design {study.design}; "
             f"{study.repeats} seed(s) per setting; significance level {SIGNIFICANCE_LEVEL} after Holm's correction.",
             "", "| factor | setting | runs | mean FM | max FM | min FM | std FM | training s |", "|---|---|---|---|---|---|---|---|"]
    for (factor, setting), group in _groups(rows).items():
        fm = [r["fm_mean"] for r in group]
        lines.append(f"| {factor} | {setting} | {len(group)} | {np.mean(fm):.4f} | "
                     f"{np.mean([r['fm_max'] for r in group]):.4f} | {np.mean([r['fm_min'] for r in group]):.4f} | "
                     f"{np.mean([r['fm_std'] for r in group]):.4f} | "
                     f"{np.mean([r['training_s'] or 0 for r in group]):.0f} |")
    lines += ["", "## Verdicts", ""] + [f"- {v['sentence']}" for v in found]
    folds = cross_validation(study, rows)
    if folds:
        lines += ["", "## Cross-validation (best validation FM per fold; choose the recipe here, not on the test set)",
                  ""] + [f"- {summary['sentence']}" for summary in folds]
    if rows:
        best = max(_groups(rows).items(), key=lambda item: np.mean([r["fm_mean"] for r in item[1]]))
        lines += ["", f"Highest mean FM: {best[0][0]} = {best[0][1]} "
                      f"({np.mean([r['fm_mean'] for r in best[1]]):.4f})."]
    return "\n".join(lines) + "\n"


def _groups(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["factor"], row["setting"]), []).append(row)
    return groups


def study_figures(study: Study, out: str | Path, rows: Sequence[dict[str, Any]]) -> list[Any]:
    """Plotly figures: FM distribution per setting, FM per test image per setting, validation FM curves."""
    import plotly.graph_objects as go

    out = Path(out)
    groups = _groups(rows)
    distribution = go.Figure()
    for (factor, setting), group in groups.items():
        values = [v for row in group for v in row["per_image_fm"].values()]
        distribution.add_trace(go.Box(y=values, name=f"{factor}: {setting}", boxmean=True))
    distribution.update_layout(title="FM per test image, by setting (all seeds)", yaxis_title="FM",
                               showlegend=False)
    per_image = go.Figure()
    means = setting_means(rows)
    for (factor, setting), values in means.items():
        images = sorted(values)
        per_image.add_trace(go.Scatter(x=images, y=[values[i] for i in images], mode="lines+markers",
                                       name=f"{factor}: {setting}"))
    per_image.update_layout(title="FM of each test image (mean over seeds)", xaxis_title="test image",
                            yaxis_title="FM")
    curves = go.Figure()
    for row in rows:
        history = read_history(out / RUNS_SUBDIR / row["run"] / "history.csv")
        curves.add_trace(go.Scatter(x=[h.get("epoch") for h in history], y=[h.get("val_fm") for h in history],
                                    mode="lines", name=row["run"]))
    curves.update_layout(title="Validation FM per epoch (every run)", xaxis_title="epoch", yaxis_title="FM")
    return [distribution, per_image, curves]


def study_html(study: Study, out: str | Path, rows: Sequence[dict[str, Any]], found: Sequence[dict[str, Any]]) -> str:
    """One self-contained HTML file: the verdicts, the table and the three figures (plotly.js inlined once)."""
    import html

    parts = [f"<html><head><meta charset='utf-8'><title>Study {html.escape(study.name)}</title></head><body>",
             f"<h1>Study {html.escape(study.name)}</h1><ul>"]
    parts += [f"<li>{html.escape(v['sentence'])}</li>" for v in found]
    parts.append("</ul>")
    folds = cross_validation(study, rows)
    if folds:
        parts.append("<h2>Cross-validation</h2><ul>")
        parts += [f"<li>{html.escape(summary['sentence'])}</li>" for summary in folds]
        parts.append("</ul>")
    for index, figure in enumerate(study_figures(study, out, rows)):
        parts.append(figure.to_html(full_html=False, include_plotlyjs=index == 0))
    parts.append("</body></html>")
    return "\n".join(parts)


def read_study_folder(out: str | Path) -> dict[str, Any]:
    """What the app shows of a study folder: its plan, progress, rows (``study.csv``) and verdicts text.

    Raises
    ------
    StudyError
        When the folder holds no study.
    """
    out = Path(out)
    plan_info = read_json(out / PLAN_JSON)
    if not isinstance(plan_info, dict):
        raise StudyError(f"{out}: not a study folder (no {PLAN_JSON})")
    rows: list[dict[str, str]] = []
    if (out / STUDY_CSV).is_file():
        rows = list(csv.DictReader(io.StringIO((out / STUDY_CSV).read_text(encoding="utf-8"))))
    verdict_text = (out / VERDICTS_MD).read_text(encoding="utf-8") if (out / VERDICTS_MD).is_file() else ""
    return {"plan": plan_info, "progress": read_json(out / PROGRESS_JSON, {}) or {}, "rows": rows,
            "verdicts": verdict_text, "html": out / STUDY_HTML}


def config_digest(config: dict[str, Any]) -> str:
    """A short digest of a configuration (to tell settings apart in logs)."""
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]


def describe_plan(study: Study) -> str:
    """The ``--dry-run`` listing: every run and the options it sets beyond the base."""
    runs = plan(study)
    lines = [f"study {study.name}: {len(runs)} run(s), design {study.design}, {study.repeats} seed(s) per setting",
             "base: " + ", ".join(f"{k}={v}" for k, v in sorted(study.base.items()))]
    for run in runs:
        extra = ", ".join(f"{k}={v}" for k, v in run.overrides.items()) or "(base)"
        lines.append(f"  {run.run_id}: seed {run.seed}; {extra} [{config_digest(run.config)}]")
    return "\n".join(lines)


def start_study(config: str | Path, out: str | Path, *, parallel: int = 1, data_root: str | Path | None = None,
                python: str | None = None, roots: Sequence[Path] | None = None) -> subprocess.Popen:
    """Run ``moleseg study`` in the background (its own session: a browser refresh does not stop it),
    logging to ``OUT/study.log``; progress is in ``OUT/progress.json`` (:func:`read_study_folder`). With
    ``roots`` (a study started by a browser user), every data folder must lie inside them
    (:func:`moleseg.core.roots.resolve_inside_roots`), checked before anything in it is read.

    Raises
    ------
    StudyError
        The study file is bad (checked here first, so the app can say so at once).
    """
    study = load_study(config, data_root)
    for folder in data_folders(study) if roots is not None else []:
        try:
            resolve_inside_roots(folder, roots)
        except OutsideRootsError as error:
            raise StudyError(f"{config}: data folder {error}") from None
    problems = check_study(study)
    if problems:
        raise StudyError(f"{config}: " + "; ".join(problems))
    check_out_folder(study, out)
    if study_running(out):
        raise _running_error(out)
    resolve_data(study, None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    command = [python or sys.executable, "-m", "moleseg", "study", "--config", str(config), "--out", str(out),
               "--parallel", str(parallel), "--quiet"]
    if data_root:
        command += ["--data-root", str(data_root)]
    with open(out / "study.log", "ab") as log:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)


def study_files(folder: str | Path | None = None) -> list[Path]:
    """The ``*.yaml`` study files of ``folder`` (default :data:`moleseg.core.config.STUDIES_DIR`), sorted."""
    folder = Path(folder) if folder else STUDIES_DIR
    return sorted(folder.glob("*.yaml")) if folder.is_dir() else []


def list_study_folders(root: str | Path) -> list[Path]:
    """Study folders (holding ``plan.json``) directly under ``root``, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if (p / PLAN_JSON).is_file()]
    return sorted(found, key=lambda p: (p / PLAN_JSON).stat().st_mtime, reverse=True)


def table_for_display(rows: Sequence[dict[str, str]]) -> list[dict[str, Any]]:
    """``study.csv`` rows with numbers as numbers (so the app's table sorts them as numbers)."""
    def number(text: Any) -> Any:
        try:
            return float(text) if text not in ("", None) else None
        except (TypeError, ValueError):
            return text
    return [{key: (value if key in ("run", "factor", "setting") else number(value)) for key, value in row.items()}
            for row in rows]


def figures_of_folder(out: str | Path) -> list[Any]:
    """The study's figures, read back from its folder (its plan names the study file)."""
    out = Path(out)
    plan_info = read_json(out / PLAN_JSON, {}) or {}
    try:
        study = load_study(plan_info.get("study", ""))
    except StudyError:
        return []
    return study_figures(study, out, collect(study, out))
