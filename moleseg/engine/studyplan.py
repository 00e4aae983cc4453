"""A study file: read it (untrusted YAML), check it against the options schema, and plan its runs.

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
``factors: {validation_fold: [1, 2, 3, 4]}`` train on five folds (the base is fold 0).

A study file is untrusted: it is read with YAML aliases refused (no alias bomb) and at most
:data:`MAX_STUDY_FILE_BYTES`; its keys and their kinds are checked (:data:`STUDY_KEYS`, :data:`DATA_KEYS`), its
split pattern compiled, its number of runs counted before any is planned (at most :data:`MAX_PLANNED_RUNS`) and
every planned configuration checked by :func:`moleseg.core.options.problems`. Each problem is one
:class:`StudyError` naming the file. No TensorFlow here; running: :mod:`moleseg.engine.studyrun`.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from moleseg.core import options
from moleseg.core.config import STUDIES_DIR
from moleseg.core.errors import duplicate_key, parse_failure
from moleseg.core.pairing import Pair, PairingError, pair_folders
from moleseg.core.words import count_of, noun_for

#: Designs a study file may ask for.
DESIGNS: tuple[str, ...] = ("one-at-a-time", "grid")
#: Keys of a study file.
STUDY_KEYS: tuple[str, ...] = ("name", "data", "base", "design", "repeats", "seed", "factors")
#: Keys of a study file's ``data``, and of its ``split``.
DATA_KEYS: tuple[str, ...] = ("root", "images", "masks", "split", "train", "validation", "test")
SPLIT_KEYS: tuple[str, ...] = ("by", "pattern", "validation", "test")
#: Most runs a study may plan (settings times seeds), counted before the plan is made.
MAX_PLANNED_RUNS: int = 1000
#: Largest study file read, in bytes: the shipped ones are under 2 kB; PyYAML's pure-Python parser (the only one
#: that can refuse aliases) took 2 s of the server's CPU for 100 kB of small values, 21 s for 1 MB.
MAX_STUDY_FILE_BYTES: int = 64 << 10
#: Longest split pattern, in characters, and most parts of it that match a varying number of characters (each
#: multiplies the time of a name's search by up to its length: 2 keep it within milliseconds for any name).
MAX_PATTERN_CHARS: int = 200
MAX_PATTERN_CHOICES: int = 2
#: Label of the base setting in tables and verdicts.
BASE_LABEL = "base"
#: Sub-folder of a study's output folder holding the split's file links.
SPLIT_SUBDIR = "data"


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
# reading: YAML without aliases

def _yaml_loader() -> type:
    """A ``yaml.SafeLoader`` that refuses aliases (``*name``, ``<<: *name``): a small file cannot expand into a
    huge document (the "billion laughs" alias bomb); and a key given twice in one mapping (YAML keeps the
    last silently: ``repeats: 1`` further up would not count)."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(f"aliases (*name) are not allowed in a study file (line {mark.line + 1})")
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                self.flatten_mapping(node)
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                    try:
                        if key in seen:
                            raise yaml.YAMLError(duplicate_key(key, (seen[key], line)))
                        seen[key] = line
                    except TypeError:  # an unhashable key: the base class refuses it
                        break
            return super().construct_mapping(node, deep=deep)

    return NoAliasLoader


def read_document(path: Path) -> dict[str, Any]:
    """The mapping of the study file ``path``.

    Raises
    ------
    StudyError
        The file is missing, too large, not YAML, holds an alias or is not a mapping.
    """
    import yaml

    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_STUDY_FILE_BYTES + 1)
    except OSError as error:
        raise StudyError(f"{path}: cannot read the study file ({error.strerror or error})") from None
    if len(data) > MAX_STUDY_FILE_BYTES:
        raise StudyError(f"{path}: a study file is at most {MAX_STUDY_FILE_BYTES:,} bytes")
    try:
        loader = _yaml_loader()(data.decode("utf-8"))  # a SafeLoader that refuses aliases
        try:
            document = loader.get_single_data()
        finally:
            loader.dispose()
    except UnicodeDecodeError:
        raise StudyError(f"{path}: not a text file (UTF-8)") from None
    except (yaml.YAMLError, ValueError, RecursionError) as error:  # ValueError: a number of too many digits
        raise StudyError(f"{path}: not a valid study file ({parse_failure(error)})") from None
    if not isinstance(document, dict):
        raise StudyError(f"{path}: a study file is a mapping with data, base and factors")
    return document


# --------------------------------------------------------------------------------------------------
# checking the document

def _kind(value: Any) -> str:
    """The YAML word for ``value``'s kind, for messages."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "empty"
    return f"{value!r}"


def _mapping(value: Any, what: str, where: str) -> dict[str, Any]:
    """``value`` when it is a mapping (empty when absent), with its keys as text."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise StudyError(f"{where}: {what} must be a mapping, not {_kind(value)}")
    return {str(key): item for key, item in value.items()}


def _whole(value: Any, what: str, low: int, where: str) -> int:
    """``value`` when it is a whole number ``>= low`` (true/false refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise StudyError(f"{where}: {what} must be a whole number >= {low}, not {_kind(value)}")
    return value


def _text(value: Any, what: str, where: str) -> str:
    """``value`` when it is text (without a NUL character, which no path holds) or a number (as text)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or "\0" in str(value):
        raise StudyError(f"{where}: {what} must be text{' without a NUL character' if isinstance(value, str) else ''}, "
                         f"not {_kind(value)}")
    return str(value)


def _refuse_unknown(keys: Sequence[str], known: Sequence[str], what: str, where: str) -> None:
    unknown = [key for key in keys if key not in known]
    if unknown:
        raise StudyError(f"{where}: unknown {noun_for(len(unknown), 'key')} {', '.join(map(repr, unknown))} in {what} "
                         f"(known: {', '.join(known)})")


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and not prefix and str(key) == "model":
            flat.update(_flatten(value, "model."))
        else:
            flat[prefix + str(key)] = value
    return flat


def setting_label(value: Any) -> str:
    """A setting's label from an option value: a list joined with ``+`` (``none`` when empty)."""
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value)) or "none"
    return str(value)


def _settings_of(factor: str, values: Any, known: set[str], where: str) -> dict[str, dict[str, Any]]:
    """The named settings of one factor: ``{label: {option: value}}``."""
    if isinstance(values, list):
        if factor not in known:
            raise StudyError(f"{where}: unknown option {factor!r} in factors (known: {', '.join(sorted(known))})")
        return {setting_label(value): {factor: value} for value in values}
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
                raise StudyError(f"{where}: unknown {noun_for(len(unknown), 'option')} {', '.join(map(repr, unknown))} "
                                 f"in factor {factor!r}, "
                                 f"setting {label!r}")
            settings[str(label)] = flat
        return settings
    raise StudyError(f"{where}: factor {factor!r} must be a list of values or a mapping of named settings")


def _check_data(data: dict[str, Any], where: str) -> None:
    """The kinds of ``data``'s keys, and its split pattern compiled."""
    _refuse_unknown(list(data), DATA_KEYS, "data", where)
    for key in ("root", "images", "masks"):
        if key in data:
            _text(data[key], f"data.{key}", where)
    for part in ("train", "validation", "test"):
        if part in data:
            folders = _mapping(data[part], f"data.{part}", where)
            _refuse_unknown(list(folders), ("images", "masks"), f"data.{part}", where)
            for key in ("images", "masks"):
                _text(folders.get(key), f"data.{part}.{key}", where)
    if "split" in data:
        rule = _mapping(data["split"], "data.split", where)
        _refuse_unknown(list(rule), SPLIT_KEYS, "data.split", where)
        if rule.get("by") != "group" or "pattern" not in rule:
            raise StudyError(f"{where}: split must be {{by: group, pattern: REGEX, test: [...], validation: [...]}}")
        split_pattern(rule, where)
        for key in ("validation", "test"):
            groups = rule.get(key) or []
            if not isinstance(groups, list) or any(isinstance(group, (dict, list)) for group in groups):
                raise StudyError(f"{where}: data.split.{key} must be a list of group names, not {_kind(groups)}")


def _choices(items: Any, repeated: bool) -> int:
    """How many parts of the parsed pattern ``items`` match a varying number of characters (a repetition of
    varying length, a set of alternatives: the larger of its alternatives' counts, plus one), which is the power
    of the name's length that its search may take; ValueError when a part could take exponential time (a part of
    varying length or alternatives inside a repetition, a back-reference). ``repeated``: inside a repetition."""
    from re import _constants as sre

    count = 0
    for operation, argument in items:
        if operation in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            low, high, body = argument
            if repeated and high != low:
                raise ValueError("a repetition inside a repetition")
            count += (high != low) + _choices(body, repeated or high > 1)
        elif operation is sre.BRANCH:
            if repeated:
                raise ValueError("alternatives (|) inside a repetition")
            count += 1 + max(_choices(branch, repeated) for branch in argument[1])
        elif operation in (sre.SUBPATTERN, sre.ASSERT, sre.ASSERT_NOT, sre.ATOMIC_GROUP):
            count += _choices(argument if operation is sre.ATOMIC_GROUP else argument[-1], repeated)
        elif operation in (sre.GROUPREF, sre.GROUPREF_EXISTS):
            raise ValueError("a back-reference")
    return count


def split_pattern(rule: dict[str, Any], where: str) -> re.Pattern[str]:
    """The compiled ``pattern`` of a split rule, which runs on every image name of the data (in the app's server
    too, holding every session up while it runs): refused when it could take more than a moment on some name
    (:func:`_choices`, at most :data:`MAX_PATTERN_CHOICES` parts of varying length, :data:`MAX_PATTERN_CHARS`).

    Raises
    ------
    StudyError
        The pattern is not text, not a valid regular expression, or could take hours on some file names.
    """
    from re import _parser

    text = _text(rule.get("pattern"), "data.split.pattern", where)
    try:
        compiled = re.compile(text)
    except re.error as error:
        raise StudyError(f"{where}: data.split.pattern {text!r} is not a valid regular expression ({error})") from None
    try:
        if len(text) > MAX_PATTERN_CHARS:
            raise ValueError(f"{len(text)} characters, more than {MAX_PATTERN_CHARS}")
        choices = _choices(_parser.parse(text), False)
        if choices > MAX_PATTERN_CHOICES:
            raise ValueError(f"{choices} parts of varying length")
    except ValueError as error:
        raise StudyError(f"{where}: data.split.pattern {text!r} could take hours on some file names ({error}); give "
                         f"at most {MAX_PATTERN_CHOICES} parts of varying length (+, *, ?, {{m,n}}, alternatives |), "
                         "none inside a repetition, and no back-reference") from None
    return compiled


def planned_run_count(factors: dict[str, dict[str, dict[str, Any]]], design: str, repeats: int) -> int:
    """How many runs a study plans at most (settings times seeds), counted without making the plan
    (settings equal to the base, which share its runs, counted too)."""
    sizes = [len(settings) for settings in factors.values()]
    settings = math.prod(sizes) if design == "grid" else 1 + sum(sizes)
    return settings * repeats


def load_study(path: str | Path, data_root: str | Path | None = None) -> Study:
    """Read and check a study file (keys and their kinds, designs, option names, the split pattern, the number
    of runs) without touching any data.

    Raises
    ------
    StudyError
        The first problem found, naming the file.
    """
    path = Path(path)
    where = str(path)
    document = read_document(path)
    _refuse_unknown([str(key) for key in document], STUDY_KEYS, "the study file", where)
    known = {item.name for item in options.OPTIONS}
    base = _flatten(_mapping(document.get("base"), "base", where))
    unknown = sorted(set(base) - known)
    if unknown:
        raise StudyError(f"{where}: unknown {noun_for(len(unknown), 'option')} {', '.join(map(repr, unknown))} in base")
    design = document.get("design", DESIGNS[0])
    if design not in DESIGNS:
        raise StudyError(f"{where}: design must be one of {', '.join(DESIGNS)}, not {_kind(design)}")
    factors_in = _mapping(document.get("factors"), "factors", where)
    if not factors_in:
        raise StudyError(f"{where}: give at least one factor to vary")
    factors = {name: _settings_of(name, values, known, where) for name, values in factors_in.items()}
    repeats = _whole(document.get("repeats", 1), "repeats", 1, where)
    seed = _whole(document.get("seed", 0), "seed", 0, where)
    count = planned_run_count(factors, design, repeats)
    if count > MAX_PLANNED_RUNS:
        raise StudyError(f"{where}: the study plans {count:,} runs, more than the {MAX_PLANNED_RUNS:,} a study may "
                         "run; vary fewer factors or values, or use fewer repeats")
    data = _mapping(document.get("data"), "data", where)
    _check_data(data, where)
    name = _text(document.get("name") or path.stem, "name", where)
    root = Path(data_root) if data_root else (path.parent / str(data.get("root", "."))).resolve()
    return Study(name=name, path=path, data=data, base=base, factors=factors, design=design, repeats=repeats,
                 seed=seed, data_root=root)


# --------------------------------------------------------------------------------------------------
# planning

def base_config(study: Study) -> dict[str, Any]:
    """The training defaults with the study's base options applied."""
    config = options.defaults()
    for name, value in study.base.items():
        options.set_value(config, name, value)
    return config


def _run_id(label: str, seed: int, taken: set[str]) -> str:
    """A run folder name: the setting's label in safe characters (at most 60) and the seed; when that names a run
    already in ``taken`` (compared case-insensitively; labels ``a b`` and ``a-b``, or two long ones alike in their
    first 60 characters), the label's digest too, so that no run takes another's folder (and its results). The
    name is added to ``taken``."""
    text = re.sub(r"[^A-Za-z0-9._=-]+", "-", label).strip("-.")[:60]
    run_id = f"{text}-seed{seed}"
    if run_id.casefold() in taken:
        run_id = f"{text}-{hashlib.sha256(label.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}-seed{seed}"
    taken.add(run_id.casefold())
    return run_id


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
    taken: set[str] = set()  # the run folder names given (case folded)
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
            runs.append(PlannedRun(run_id=_run_id(name, seed, taken), factor=factor or BASE_LABEL, setting=label,
                                   seed=seed, config=run_config, overrides=overrides))
    return runs


def varied_options(study: Study) -> list[str]:
    """The options some planned run sets beyond the base, sorted."""
    return sorted({option for run in plan(study) for option in run.overrides})


def check_study(study: Study) -> list[str]:
    """Problems of every planned configuration, as a run trains it (its test share 0: the study's test set is
    given apart), by the one rule function :func:`moleseg.core.options.problems`; the data folders are checked
    by :func:`resolve_data`."""
    problems: list[str] = []
    for run in plan(study):
        for problem in options.problems(with_data(run.config, {}), data=False):  # its folders come later
            message = f"{run.setting} ({run.factor}): {problem}"
            if message not in problems:
                problems.append(message)
    return problems


def config_digest(config: dict[str, Any]) -> str:
    """A short digest of a configuration (to tell settings apart in logs)."""
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]


def describe_plan(study: Study) -> str:
    """The ``--dry-run`` listing: every run and the options it sets beyond the base."""
    runs = plan(study)
    lines = [f"study {study.name}: {count_of(len(runs), 'run')}, design {study.design}, "
             f"{count_of(study.repeats, 'seed')} per setting",
             "base: " + ", ".join(f"{k}={v}" for k, v in sorted(study.base.items()))]
    for run in runs:
        extra = ", ".join(f"{k}={v}" for k, v in run.overrides.items()) or "(base)"
        lines.append(f"  {run.run_id}: seed {run.seed}; {extra} [{config_digest(run.config)}]")
    return "\n".join(lines)


def study_files(folder: str | Path | None = None) -> list[Path]:
    """The ``*.yaml`` study files of ``folder`` (default :data:`moleseg.core.config.STUDIES_DIR`), sorted."""
    folder = Path(folder) if folder else STUDIES_DIR
    return sorted(folder.glob("*.yaml")) if folder.is_dir() else []


#: The stem ending of a study file sized for a GPU machine (``moles-gpu.yaml``); the others fit a CPU.
GPU_STUDY_SUFFIX = "-gpu"


def default_study_file(files: Sequence[Path], gpu: bool) -> Path | None:
    """The study file to offer first: the first of ``files`` sized for the machine (a ``*-gpu`` one when it has
    a GPU, another on a CPU machine), dermoscopy (``moles``) before cells; the first file when none fits."""
    fitting = [path for path in files if path.stem.endswith(GPU_STUDY_SUFFIX) == gpu]
    ranked = sorted(fitting, key=lambda path: (not path.stem.startswith("moles"), len(path.stem), path.name))
    return ranked[0] if ranked else (files[0] if files else None)


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
        rule = data["split"]
        try:
            pairs = pair_folders(folder(data["images"]), folder(data["masks"])).pairs
        except (PairingError, KeyError) as error:
            raise StudyError(f"{where}: {error}") from None
        pattern = split_pattern(rule, where)
        groups = {pair.image: _group_of(pair, pattern, where) for pair in pairs}
        test, validation = set(map(str, rule.get("test") or [])), set(map(str, rule.get("validation") or []))
        found = set(groups.values())
        missing = sorted((test | validation) - found)
        if missing:
            raise StudyError(f"{where}: split {noun_for(len(missing), 'group')} {', '.join(missing)} not found (groups: {', '.join(sorted(found))})")
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
    """A run configuration with the study's folders in it (the test share 0: the test set is given apart)."""
    config = copy.deepcopy(config)
    for part, key in (("train", ""), ("validation", "validation_"), ("test", "test_")):
        if part in parts:
            config[f"{key}images"] = [parts[part]["images"]]
            config[f"{key}masks"] = [parts[part]["masks"]]
    if "validation" in parts:
        config["validation_split"] = 0.0
    config["test_split"] = 0.0
    return config
