"""Read and write the metadata moleseg keeps inside a ``.keras`` file, without TensorFlow.

A ``.keras`` file is a zip archive (Keras writes ``config.json``, ``metadata.json`` and
``model.weights.h5``). moleseg adds one more entry, ``moleseg.json``, with everything needed to
predict and to describe the model: classes, class names, input size, border width, cleanup defaults,
training data summary and metrics. Keras ignores the extra entry when loading.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from moleseg.core import options
from moleseg.core.archive import MODEL_BUDGET, MODEL_INFO_MAX_BYTES, ArchiveError, check_budget, check_directory_entries
from moleseg.core.atomic import atomic_output
from moleseg.core.errors import parse_failure, short_reason
from moleseg.core.trainconfig import MODEL_SECTION, ModelConfig

INFO_ENTRY = "moleseg.json"


class ModelFileError(ValueError):
    """A model file that is missing, not a ``.keras`` archive, or has no moleseg metadata."""


def _existing_file(path: str | Path) -> Path:
    """``path`` as a Path if it is a file; ModelFileError for a folder or a missing file."""
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path}: a folder, not a .keras model file")
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    return path


#: What ``zipfile`` raises for a file or a member that is not a complete, readable ZIP archive or entry
#: (RuntimeError: encrypted, or an unsupported compression).
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error, RuntimeError)


def _open_archive(path: Path, unreadable: Callable[[Exception], str]) -> zipfile.ZipFile:
    """The ``.keras`` file ``path`` opened as a ZIP archive whose directory is within
    :data:`moleseg.core.archive.MODEL_BUDGET` (no member read yet).

    Raises
    ------
    ModelFileError
        ``unreadable(error)`` for a file that is not a readable ZIP archive; an archive declaring more entries,
        bytes or compression than a model file has (a possible zip bomb).
    """
    try:
        check_directory_entries(path, MODEL_BUDGET)
    except ArchiveError as error:
        raise ModelFileError(f"{path.name}: {error}") from None
    try:
        archive = zipfile.ZipFile(path)
    except (*_ZIP_ERRORS, ValueError) as error:  # malformed directories raise assorted types
        raise ModelFileError(unreadable(error)) from error
    try:
        check_budget(archive, MODEL_BUDGET)
    except ArchiveError as error:
        archive.close()
        raise ModelFileError(f"{path.name}: {error}") from None
    return archive


def check_keras_file(path: str | Path) -> Path:
    """``path`` if it is an existing, complete ``.keras`` (ZIP) file within the size budget of a model file
    (:data:`moleseg.core.archive.MODEL_BUDGET`, read from the ZIP directory before Keras or h5py sees it).

    Raises
    ------
    ModelFileError
        Missing file; a file that is not a complete ZIP archive: damaged (a truncated copy or an
        interrupted save) or not a moleseg/Keras model at all; an archive declaring more entries, bytes or
        compression than a model file has.
    """
    path = _existing_file(path)
    _open_archive(path, lambda error: f"{path.name}: damaged or not a moleseg/Keras model file (a .keras file "
                  "is a complete ZIP archive; this one is not: truncated, or another kind of file)").close()
    return path


def read_model_info(path: str | Path) -> dict[str, Any]:
    """Return the ``moleseg.json`` dictionary of a ``.keras`` file (within the size budget of a model file, as
    :func:`check_keras_file` checks; its ``moleseg.json`` at most :data:`moleseg.core.archive.MODEL_INFO_MAX_BYTES`).

    Raises
    ------
    ModelFileError
        When the file is missing, not a zip archive, beyond the budget of a model file, or was not written
        by moleseg.
    """
    path = _existing_file(path)

    def unreadable(error: Exception) -> str:
        return f"{path.name}: not a .keras model file ({error})"

    with _open_archive(path, unreadable) as archive:
        try:
            entry = archive.getinfo(INFO_ENTRY)
        except KeyError:
            raise ModelFileError(f"{path.name}: not a moleseg model (no {INFO_ENTRY} inside)") from None
        if entry.file_size > MODEL_INFO_MAX_BYTES:
            raise ModelFileError(f"{path.name}: its {INFO_ENTRY} declares {entry.file_size} bytes; at most "
                                 f"{MODEL_INFO_MAX_BYTES} are read")
        try:
            payload = archive.read(entry)
        except _ZIP_ERRORS as error:
            raise ModelFileError(unreadable(error)) from error
    try:
        values = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError) as error:  # JSON, UTF-8, a number of too many digits, deep nesting
        raise ModelFileError(f"{path.name}: its {INFO_ENTRY} is corrupt ({parse_failure(error)})") from error
    if not isinstance(values, dict):
        raise ModelFileError(f"{path.name}: its {INFO_ENTRY} is corrupt (a JSON {type(values).__name__}, "
                             "not an object)")
    return values


@dataclass(frozen=True)
class ModelInfo:
    """The ``moleseg.json`` of a model as a typed record (older files with missing keys load too).

    Attributes
    ----------
    name : str
    n_classes : int or None
        2 or 3; None when the file does not say (the network's output decides).
    class_names : tuple of str
    input_size : int or None
        Side of the network input in px.
    inference : {"resize", "tiles"}
    tile_scale : float
        With ``"tiles"``: the factor images are resized by before tiling (the ``tile_scale`` option; 1 = their
        own size); the probabilities are resized back.
    colour_constancy : str
        The colour correction applied to images before the network (the ``colour_constancy`` option).
    cleanup : dict
        Default :class:`moleseg.core.cleanup.CleanupSettings` (px of the input), ``cleanup_variant`` its name.
    model : dict
        The ``model.*`` options (architecture, backbone...).
    config : dict
        The training configuration (every option of :mod:`moleseg.core.options`); for files written before
        it was stored, rebuilt from the other keys over the defaults (see :attr:`train_config`).
    training : dict
        Summary of the training data and solver (n_train, n_validation, class frequencies, epoch...).
    validation_fm, lesion_threshold : float or None
    test_time_augmentation : bool
    calibration : dict
    confidence_threshold : float or None
        Images whose border confidence (:func:`moleseg.engine.segmenter.border_confidence`, 0..1) is below
        it are marked "check this border"; None: not calibrated (older files), nothing is marked.
    confidence_calibration : dict
        How that threshold was chosen (validation images, share flagged, bad images caught).
    extra : dict
        Every other key of the file, kept as it is.
    """

    name: str = "model"
    n_classes: int | None = None
    class_names: tuple[str, ...] = ()
    input_size: int | None = None
    border_width_px: int | None = None
    shape: str | None = None
    inference: str = "resize"
    tile_scale: float = options.default("tile_scale")
    colour_constancy: str = options.default("colour_constancy")
    cleanup: dict[str, Any] = field(default_factory=dict)
    cleanup_variant: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    validation_fm: float | None = None
    test_time_augmentation: bool = False
    lesion_threshold: float | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    confidence_threshold: float | None = None
    confidence_calibration: dict[str, Any] = field(default_factory=dict)
    created: str | None = None
    moleseg_version: str | None = None
    version: str | None = None
    description: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "ModelInfo":
        """The record of a ``moleseg.json`` dictionary; missing keys take the defaults, None counts as missing."""
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {key: value for key, value in values.items() if key in names and value is not None}
        if "class_names" in known:
            known["class_names"] = _names("class_names", known["class_names"])
        for key, kind in (("n_classes", int), ("input_size", int), ("confidence_threshold", float),
                          ("tile_scale", float), ("lesion_threshold", float)):
            if key in known:
                known[key] = _number(key, known[key], kind)
        for key in ("confidence_threshold", "lesion_threshold"):  # a probability, a border confidence: 0..1
            if key in known and not 0.0 <= known[key] <= 1.0:
                raise ModelFileError(f"its {INFO_ENTRY} field {key!r} must be between 0 and 1, not {known[key]!r}")
        # options the network's input and output depend on, by their names in the file and in the schema
        for key, name in (("tile_scale", "tile_scale"), ("colour_constancy", "colour_constancy"),
                          ("n_classes", "model.n_classes"), ("input_size", "model.input_size")):
            problems = options.option(name).problems(known[key]) if key in known else []
            if problems:
                raise ModelFileError(f"its {INFO_ENTRY}: {problems[0]}")
        for key in ("cleanup", "model", "config", "training", "calibration", "confidence_calibration"):
            if key in known and not isinstance(known[key], Mapping):
                known.pop(key)
        known["test_time_augmentation"] = bool(known.get("test_time_augmentation", False))
        return cls(**known, extra={key: value for key, value in values.items() if key not in names})

    def to_dict(self) -> dict[str, Any]:
        """The ``moleseg.json`` dictionary (keys without a value left out, other keys kept)."""
        values: dict[str, Any] = dict(self.extra)
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name == "extra" or value is None or (isinstance(value, (dict, tuple)) and not value):
                continue
            values[item.name] = list(value) if isinstance(value, tuple) else value
        return values

    @property
    def version_text(self) -> str:
        """A short version text for reports: the version, else the creation date and moleseg's version
        ('' when the record has none of them)."""
        if self.version:
            return str(self.version)
        parts = [str(self.created)] if self.created else []
        if self.moleseg_version:
            parts.append(f"moleseg {self.moleseg_version}")
        return ", ".join(parts)

    @property
    def train_config(self) -> dict[str, Any]:
        """The training configuration: ``config`` when stored, else rebuilt from ``model``, the target
        options and the ``training`` summary over the defaults of :mod:`moleseg.core.options`."""
        if self.config:
            return options.merged(options.with_size_reference(self.config))
        known = {"model": self.model, "inference": self.inference, "name": self.name, "tile_scale": self.tile_scale,
                 "colour_constancy": self.colour_constancy}
        if self.shape is not None:
            known["shape"] = self.shape
        if self.border_width_px is not None and self.n_classes == 3:
            known["border_width_px"] = self.border_width_px
        if isinstance(self.cleanup.get("closing_radius_px"), int):
            known["closing_radius_px"] = self.cleanup["closing_radius_px"]
        if self.n_classes is not None:
            known["model"] = {**self.model, "n_classes": self.n_classes}
        names = {o.name for o in options.top_level()}
        known.update({key: value for key, value in self.training.items() if key in names})
        return options.merged(options.with_size_reference(known))  # moleseg.json's sizes: px of its input


def _names(key: str, value: Any) -> tuple[str, ...]:
    """``value`` of the ``moleseg.json`` field ``key`` as a tuple of texts (class names).

    Raises
    ------
    ModelFileError
        When it is not a list of texts (the message names the field and the value).
    """
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise ModelFileError(f"its {INFO_ENTRY} field {key!r} must be a list of texts, not {value!r}"[:300])
    return tuple(value)


def _number(key: str, value: Any, kind: type) -> int | float:
    """``value`` of the ``moleseg.json`` field ``key`` as ``kind`` (int or float), finite.

    Raises
    ------
    ModelFileError
        When it is not a number (the message names the field and the value).
    """
    try:
        number = kind(value)
    except (TypeError, ValueError, OverflowError):
        number = None
    if isinstance(value, bool) or number is None or not math.isfinite(number):
        raise ModelFileError(f"its {INFO_ENTRY} field {key!r} must be a number, not {value!r}")
    return number


def read_info(path: str | Path) -> ModelInfo:
    """The :class:`ModelInfo` of a ``.keras`` file (see :func:`read_model_info` for the errors; a field
    that is not a number, or out of its option's range, too)."""
    return file_info(path, read_model_info(path))


def file_info(path: str | Path, values: Mapping[str, Any]) -> ModelInfo:
    """The :class:`ModelInfo` of the ``moleseg.json`` ``values`` read from the ``.keras`` file ``path``.

    Raises
    ------
    ModelFileError
        A field that is not a number, or out of its option's range (the message names the file).
    """
    try:
        return ModelInfo.from_dict(values)
    except ModelFileError as error:
        raise ModelFileError(f"{Path(path).name}: {error}") from None


def described_network(values: Any, path: str | Path) -> ModelConfig:
    """The network the ``moleseg.json`` ``values`` of the ``.keras`` file ``path`` describes: its ``model``
    section (architecture, backbone, classes, input size..., each checked as the option it is), which moleseg
    builds (:func:`moleseg.network.build.load_keras_model`).

    Raises
    ------
    ModelFileError
        Naming the file: no ``model`` section, or one that is not a network moleseg builds.
    """
    network = values.get(MODEL_SECTION) if isinstance(values, dict) else None
    if network is None:
        raise ModelFileError(f"{Path(path).name}: its {INFO_ENTRY} describes no network (no \"{MODEL_SECTION}\" "
                             "section): moleseg builds a network only from the architecture, backbone, classes and "
                             "input size given there")
    try:
        if not isinstance(network, dict):
            raise ValueError(f"its {MODEL_SECTION} section is not a JSON object")
        return ModelConfig.from_dict(network)
    except ValueError as error:
        raise ModelFileError(f"{Path(path).name}: its {INFO_ENTRY} describes no network moleseg builds "
                             f"({short_reason(error)})") from None


def network_contradiction(path: str | Path, info: ModelInfo, input_size: Any, n_classes: Any) -> None:
    """Refuse a ``moleseg.json`` whose input size or class count is not that of the network (``input_size``,
    ``n_classes``: the network's own, None when it does not fix them): each image would be resized to a size
    the network cannot take, or its classes named wrongly (:class:`ModelFileError` naming the file)."""
    for said, taken, what in ((info.input_size, input_size, "an input of {} px"),
                              (info.n_classes, n_classes, "{} classes")):
        if said is not None and isinstance(taken, int) and said != taken:
            raise ModelFileError(f"{Path(path).name}: its {INFO_ENTRY} says {what.format(said)}, its network has "
                                 f"{what.format(taken)}")


def write_model_info(path: str | Path, info: dict[str, Any], *, source: str | Path | None = None) -> None:
    """Add or replace ``moleseg.json`` in an existing ``.keras`` file, atomically (the file is checked as
    :func:`check_keras_file` checks it; see there for the errors). With ``source``: ``path`` becomes a copy of
    the ``.keras`` file ``source`` (the same network) with ``info`` as its ``moleseg.json``."""
    path = Path(path)
    origin = check_keras_file(path if source is None else source)
    payload = json.dumps(info, indent=2, sort_keys=True, default=_json_default).encode("utf-8")
    with atomic_output(path) as temporary, zipfile.ZipFile(origin) as archive, \
            zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED) as target:
        for item in archive.infolist():
            if item.filename != INFO_ENTRY:
                with archive.open(item) as data, target.open(item, "w") as out:
                    shutil.copyfileobj(data, out)
        target.writestr(INFO_ENTRY, payload)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
