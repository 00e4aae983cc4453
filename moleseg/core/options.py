"""Every option of a training, declared once: model, data, augmentation, training, cleanup and run.

Each :class:`Option` names one value of a training configuration (the dictionary of
:class:`moleseg.core.trainconfig.TrainConfig`, ``config.json`` of a run; model options under ``model``),
with its group, kind, allowed values or range, default, unit, help line, command-line flag and widget
hints. Everything else is derived from :data:`OPTIONS`: the typed configuration, the one check of a
configuration (:func:`problems`, every rule between options included), the flags of ``moleseg train``,
study factors and the widgets of the Train page (:mod:`moleseg.app.trainform`). No TensorFlow here
(numpy and the standard library only).
"""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from moleseg.core.backbones import BACKBONES, backbones_for
from moleseg.core.constancy import COLOUR_CONSTANCY_METHODS, SHADES_OF_GREY_POWER
from moleseg.core.config import (DEFAULT_BORDER_WIDTH_PX, DEFAULT_CLASS_COUNT, DEFAULT_CLOSING_RADIUS_PX, DEFAULT_SHAPE,
                                 MAX_BATCH_SIZE, MAX_DATASETS, MAX_EPOCHS, MAX_INPUT_SIZE_PX, SIZE_REFERENCE_PX)
from moleseg.core.targets import SHAPES

GROUPS: tuple[str, ...] = ("model", "data", "augmentation", "training", "cleanup", "run")
#: Kinds of values: ``int``, ``float``, ``bool``, ``choice`` (one of ``choices``), ``choices`` (a list of
#: ``choices``), ``ints`` (a list of ``length`` whole numbers), ``folders`` (a list of folder paths),
#: ``text`` (a string, or None when ``optional``), ``auto_float`` (``"auto"`` or a number).
KINDS: tuple[str, ...] = ("int", "float", "bool", "choice", "choices", "ints", "folders", "text", "auto_float")

SOLVERS: tuple[str, ...] = ("sgdm", "rmsprop", "adam")
SCHEDULES: tuple[str, ...] = ("constant", "cosine", "piecewise")
LOSSES: tuple[str, ...] = ("weighted_ce", "ce", "dice", "focal", "dice_ce", "lovasz", "lovasz_ce")
ARCHITECTURES: tuple[str, ...] = ("deeplabv3plus", "unet", "fpn", "linknet")
#: The augmentations that make a rare hard case common (each drawn with probability ``hard_case_share``).
HARD_CASES: tuple[str, ...] = ("zoom_in", "pink", "vignette", "halo")
AUGMENTATIONS: tuple[str, ...] = ("rotation", "reflection", "translation", "scale", "colour", *HARD_CASES)
STRATEGIES: tuple[str, ...] = ("auto", "default", "mirrored")
PRECISIONS: tuple[str, ...] = ("auto", "on", "off")
INFERENCES: tuple[str, ...] = ("resize", "tiles")
CLASS_COUNTS: tuple[int, ...] = (3, 2)
#: Other spellings of choice names, mapped to the one the schema uses (``--augment color``).
CHOICE_ALIASES: dict[str, str] = {"color": "colour"}
#: Widgets an option can ask for (:attr:`Option.widget`); empty lets the kind choose.
WIDGETS: tuple[str, ...] = ("", "slider", "number", "select", "radio")

# Ceilings of the other numbers a study file, a config.json or the Train page could otherwise set without end
# (the three costliest, input size, batch size and epochs, are in moleseg.core.config).
#: Widest ASPP and decoder, in channels: 4x the 256 of the DeepLabV3+ paper; the weights grow with its square.
MAX_DECODER_WIDTH: int = 1024
#: Largest ASPP dilation rate: at output stride 16 the largest input's feature map is 64 wide, so a larger rate
#: samples only padding.
MAX_ASPP_RATE: int = MAX_INPUT_SIZE_PX // 16
#: Widest border band and largest closing radius, in px at a SIZE_REFERENCE_PX input: half the reference side
#: (a larger disk covers the whole input; its structuring element's cost grows with the square of the radius).
MAX_REFERENCE_RADIUS_PX: int = SIZE_REFERENCE_PX // 2
#: Largest translation, in px of the input: a shift of the largest input's whole side leaves no image.
MAX_TRANSLATION_PX: float = float(MAX_INPUT_SIZE_PX)
#: Largest learning rate per step: every solver here diverges long before (Adam's usual rate is 0.001).
MAX_LEARNING_RATE: float = 1.0
#: Largest random seed: numpy's and TensorFlow's seeds are 32-bit everywhere.
MAX_SEED: int = 2**32 - 1
#: Most validation folds: a validation share of 1/100 already leaves most datasets a handful of images per fold.
MAX_VALIDATION_FOLD: int = 99
#: Most training images scored after each epoch: each is one more prediction per epoch; 1000 cover any dataset's
#: sample.
MAX_TRAIN_FM_IMAGES: int = 1000
#: Most random crops per image and epoch: 64 crops of an input-sized area cover an 8x8 tiling of the image.
MAX_CROPS_PER_IMAGE: int = 64


def choice_names(values: Iterable[str]) -> list[str]:
    """Names of a ``choices`` option as the schema spells them: trimmed, lower case, aliases
    (:data:`CHOICE_ALIASES`) replaced, empty ones and ``none`` dropped."""
    names = (str(value).strip().lower() for value in values)
    return [CHOICE_ALIASES.get(name, name) for name in names if name and name != "none"]


def not_true_or_false(what: str, value: Any) -> str:
    """The refusal of ``value`` for the on/off setting named ``what``: ``"crops by area must be true or
    false, not 'yes'"``."""
    return f"{what} must be true or false, not {value!r}"


@dataclass(frozen=True)
class Option:
    """One training option.

    Attributes
    ----------
    name : str
        Its key in the configuration dictionary; ``model.x`` is ``config["model"]["x"]``.
    group : str
        One of :data:`GROUPS`.
    kind : str
        One of :data:`KINDS`.
    default : Any
        The value when nothing is given.
    help : str
        One line for people.
    choices : tuple
        Allowed values (``choice``, ``choices``).
    low, high : float or None
        Numeric range (``int``, ``float``, ``auto_float`` and the items of ``ints``).
    low_open, high_open : bool
        The bound itself is excluded.
    multiple_of : int or None
        The value must be a multiple of this (``int``).
    length : int or None
        Number of items (``ints``).
    optional : bool
        None is allowed (``text``).
    unit : str
        Unit of a number ("px", "degrees", "epochs"...), empty when it has none.
    flag : str or None
        The ``moleseg train`` flag; default ``--`` and the last part of the name with dashes.
    aliases : tuple of str
        Older flags that mean the same (a ``bool``'s aliases switch it off, e.g. ``--dense-head``).
    settable : bool
        False for a value that training itself writes (no flag, no widget).
    words : str
        The option's name in messages when its key reads badly (default: the key with spaces).
    title : str
        The widget's label when the name in words reads badly (default: :attr:`label`, capitalised).
    widget : str
        The Train page's widget, one of :data:`WIDGETS` (empty: number inputs for numbers, select boxes
        for choices, check boxes for yes/no...).
    step : float or None
        Step of a number widget (None: 1 for whole numbers, Streamlit's for others).
    format : str
        printf-style format of a number widget (``"%.6f"``), empty for Streamlit's.
    needs : tuple
        ``(other option, value)``: the option matters only when the other one has that value (its widget is
        greyed out otherwise and the configuration keeps its default).
    """

    name: str
    group: str
    kind: str
    default: Any
    help: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    multiple_of: int | None = None
    length: int | None = None
    optional: bool = False
    unit: str = ""
    flag: str | None = None
    aliases: tuple[str, ...] = ()
    settable: bool = True
    words: str = ""
    title: str = ""
    widget: str = ""
    step: float | None = None
    format: str = ""
    needs: tuple = ()

    @property
    def cli_flag(self) -> str:
        """The ``moleseg train`` flag of this option."""
        return self.flag or "--" + self.name.rsplit(".", 1)[-1].replace("_", "-")

    @property
    def label(self) -> str:
        """The name in words, for messages ("batch size", "input size")."""
        return self.words or self.name.rsplit(".", 1)[-1].replace("_", " ")

    def range_text(self) -> str:
        """The allowed range in words, e.g. ``"0 <= value < 1"``, or ``""``."""
        parts = []
        if self.low is not None:
            parts.append(f"{_number(self.low)} {'<' if self.low_open else '<='} ")
        parts.append("value")
        if self.high is not None:
            parts.append(f" {'<' if self.high_open else '<='} {_number(self.high)}")
        text = "".join(parts)
        if self.multiple_of:
            text += f", a multiple of {self.multiple_of}"
        return "" if text == "value" else text

    def describe(self) -> str:
        """The help line with the allowed values, unit and default (for ``--help`` and widgets)."""
        allowed = ", ".join(map(str, self.choices)) if self.choices else self.range_text()
        if self.kind == "auto_float":
            allowed = f"auto or {allowed}"
        extra = [f"allowed: {allowed}"] if allowed else []
        if self.unit:
            extra.append(f"unit: {self.unit}")
        default = ",".join(map(str, self.default)) if isinstance(self.default, (list, tuple)) else self.default
        extra.append(f"default: {default if default not in ('', None, []) else 'none'}")
        return f"{self.help} ({'; '.join(extra)})"

    def problems(self, value: Any) -> list[str]:
        """What is wrong with ``value`` for this option, in words naming the option (empty when fine)."""
        what = self.label
        if self.kind == "bool":
            return [] if isinstance(value, (bool, np.bool_)) else [not_true_or_false(what, value)]
        if self.kind == "choice":
            if value in self.choices and not isinstance(value, bool):
                return []
            return [f"{what} must be one of {', '.join(map(str, self.choices))}, not {value!r}"]
        if self.kind == "choices":
            if not isinstance(value, (list, tuple)):
                return [f"{what} must be a list of {', '.join(self.choices)}, not {value!r}"]
            unknown = [item for item in value if item not in self.choices]
            return [f"unknown {what} {', '.join(map(str, unknown))}; choose from {', '.join(self.choices)}"] \
                if unknown else []
        if self.kind == "folders":
            if not (isinstance(value, (list, tuple))
                    and all(isinstance(item, str) and item and "\0" not in item for item in value)):
                return [f"{what} must be a list of folder paths, not {value!r}"]  # a NUL: no path holds one
            return [] if len(value) <= MAX_DATASETS else [
                f"{what} lists {len(value)} folders and takes at most {MAX_DATASETS}"]
        if self.kind == "text":
            if value is None and self.optional or isinstance(value, str) and "\0" not in value:
                return []
            return [f"{what} must be text{' without a NUL character' if isinstance(value, str) else ''}, "
                    f"not {value!r}"]
        if self.kind == "ints":
            if not isinstance(value, (list, tuple)) or (self.length and len(value) != self.length):
                count = f"{self.length} " if self.length else ""
                return [f"{what} must be {count}whole numbers, not {value!r}"]
            return [problem for item in value for problem in self._number_problems(item, whole=True)][:1]
        if self.kind == "auto_float":
            return [] if value == "auto" else [p.replace(" must be ", " must be 'auto' or ", 1)
                                               for p in self._number_problems(value, whole=False)]
        return self._number_problems(value, whole=self.kind == "int")

    def _number_problems(self, value: Any, *, whole: bool) -> list[str]:
        what = self.label
        kind = "a whole number" if whole else "a number"
        if (isinstance(value, bool) or not isinstance(value, numbers.Integral if whole else numbers.Real)
                or not (isinstance(value, numbers.Integral) or math.isfinite(value))):  # a huge int: no float
            return [f"{what} must be {kind}, not {value!r}"]
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        off_grid = bool(self.multiple_of) and value % self.multiple_of != 0
        if too_low or too_high or off_grid:
            unit = f", in {self.unit}" if self.unit else ""
            return [f"{what} must be {kind} ({self.range_text()}{unit}), not {value!r}"]
        return []

    def parse(self, text: str) -> Any:
        """The value of a command-line string (lists are comma-separated; ``none`` is an empty list).

        Raises
        ------
        ValueError
            When ``text`` is not a value of this option's kind (the message names the option).
        """
        text = text.strip()
        try:
            if self.kind == "int":
                return int(text)
            if self.kind == "float":
                return float(text)
            if self.kind == "auto_float":
                return "auto" if text.lower() == "auto" else float(text)
            if self.kind == "bool":
                lowered = text.lower()
                if lowered not in ("true", "false", "yes", "no", "on", "off", "1", "0"):
                    raise ValueError(text)
                return lowered in ("true", "yes", "on", "1")
            if self.kind == "ints":
                return [int(part) for part in text.replace(";", ",").split(",") if part.strip()]
            if self.kind == "choices":
                return choice_names(text.split(","))
            if self.kind == "choice" and self.choices and isinstance(self.choices[0], int):
                return int(text)
        except ValueError:
            raise ValueError(f"{self.label}: {text!r} is not {_KIND_WORDS[self.kind]}") from None
        return text


_KIND_WORDS = {"int": "a whole number", "float": "a number", "auto_float": "'auto' or a number",
               "bool": "true or false", "ints": "a comma list of whole numbers", "choices": "a comma list",
               "choice": "one of the choices"}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _option(name: str, group: str, kind: str, default: Any, help: str, **more: Any) -> Option:
    return Option(name=name, group=group, kind=kind, default=default, help=help, **more)


#: Every option (model options where ``model`` stands in ``TrainConfig.to_dict()``).
OPTIONS: tuple[Option, ...] = (
    # ---- data
    _option("images", "data", "folders", [], "training image folders (repeat to combine datasets)"),
    _option("masks", "data", "folders", [], "training mask folders, one per images folder"),
    _option("validation_images", "data", "folders", [],
            "validation image folders (none: a share of the training pairs is held out)"),
    _option("validation_masks", "data", "folders", [], "validation mask folders, one per validation images folder"),
    _option("test_images", "data", "folders", [], "test image folders, evaluated once at the end"),
    _option("test_masks", "data", "folders", [], "test mask folders, one per test images folder"),
    # ---- model
    _option("model.architecture", "model", "choice", "deeplabv3plus", "network architecture",
            choices=ARCHITECTURES),
    _option("model.backbone", "model", "choice", BACKBONES[0], "encoder network", choices=BACKBONES),
    _option("model.input_size", "model", "int", 256, "side of the square network input",
            low=32, high=MAX_INPUT_SIZE_PX, multiple_of=16, unit="px", aliases=("--image-size",), step=16),
    _option("model.n_classes", "model", "choice", DEFAULT_CLASS_COUNT,
            "3: back/border/inside (moles); 2: background/foreground (cells)", choices=CLASS_COUNTS, flag="--classes",
            widget="radio", title="Classes"),
    _option("model.separable", "model", "bool", True, "depthwise-separable 3x3 convolutions in ASPP and decoder",
            aliases=("--dense-head",), title="Separable convolutions"),
    _option("model.decoder_width", "model", "int", 128, "channels of the ASPP branches and decoder blocks",
            low=1, high=MAX_DECODER_WIDTH, unit="channels"),
    _option("model.aspp_rates", "model", "ints", [6, 12, 18],
            "dilation rates of the three atrous ASPP branches at output stride 16", low=1, high=MAX_ASPP_RATE, length=3,
            title="ASPP dilation rates"),
    _option("model.bn_momentum", "model", "float", 0.99,
            "BatchNorm momentum stored in the network (training sets it from bn_momentum)",
            low=0.0, high=1.0, low_open=True, high_open=True, settable=False),
    _option("model.dropout", "model", "float", 0.1, "dropout after ASPP", low=0.0, high=1.0, high_open=True,
            widget="slider", step=0.05, title="Dropout after ASPP"),
    _option("weights", "model", "text", "imagenet",
            "encoder start: none (random), imagenet, or a .keras model file to fine-tune", title="Start from"),
    # ---- data (targets)
    _option("border_width_px", "data", "int", DEFAULT_BORDER_WIDTH_PX,
            "width of the BORDER class of three-class targets (scaled to the input size)", low=1,
            high=MAX_REFERENCE_RADIUS_PX,
            unit=f"px at a {SIZE_REFERENCE_PX} px input", title="Border width"),
    _option("shape", "data", "choice", DEFAULT_SHAPE, "structuring element that erodes masks into BORDER/INSIDE",
            choices=SHAPES, title="Structuring element"),
    # ---- cleanup
    _option("closing_radius_px", "cleanup", "int", DEFAULT_CLOSING_RADIUS_PX,
            "the model's default cleanup closing radius (the article: 15; scaled to the input size)", low=0,
            high=MAX_REFERENCE_RADIUS_PX,
            unit=f"px at a {SIZE_REFERENCE_PX} px input", title="Closing radius"),
    _option("size_reference_px", "data", "int", SIZE_REFERENCE_PX,
            "input size at which border_width_px and closing_radius_px are given (a configuration stored "
            "without it gives them in px of its own input)", low=16, high=MAX_INPUT_SIZE_PX, unit="px", settable=False),
    # ---- training
    _option("solver", "training", "choice", "adam", "optimiser", choices=SOLVERS),
    _option("epochs", "training", "int", 30, "passes over the training pairs", low=1, high=MAX_EPOCHS,
            unit="epochs"),
    _option("batch_size", "training", "int", 8, "mini-batch size", low=1, high=MAX_BATCH_SIZE, unit="images",
            title="Mini-batch size"),
    _option("learning_rate", "training", "float", 1e-3, "initial learning rate", low=0.0, low_open=True,
            high=MAX_LEARNING_RATE,
            unit="per step", step=1e-4, format="%.6f"),
    _option("schedule", "training", "choice", "cosine", "learning-rate schedule", choices=SCHEDULES,
            title="Learning-rate schedule"),
    _option("momentum", "training", "float", 0.9, "momentum of the sgdm solver", low=0.0, high=1.0,
            high_open=True, needs=("solver", "sgdm"), title="Momentum (sgdm)"),
    _option("loss", "training", "choice", "weighted_ce",
            "loss function (weighted_ce: cross-entropy weighted per class, the article's; lovasz: Lovász-softmax, "
            "a surrogate of each image's Jaccard index, slower per step as it sorts every pixel's error; "
            "*_ce: plus cross-entropy)",
            choices=LOSSES),
    _option("class_weighting", "training", "bool", True, "inverse-frequency class weights in the loss",
            flag="--class-weights", title="Inverse-frequency class weights"),
    # ---- augmentation
    _option("augment", "augmentation", "choices", ["rotation", "reflection", "translation"],
            "random transformations (comma list, or none)", choices=AUGMENTATIONS, words="augmentation",
            title="Random transformations"),
    _option("rotation_deg", "augmentation", "float", 180.0, "rotation range, +-", low=0.0, high=180.0,
            unit="degrees", widget="slider", step=5.0, title="Rotation range (+-)"),
    _option("translation_px", "augmentation", "float", 10.0, "translation range per axis, +-", low=0.0,
            high=MAX_TRANSLATION_PX, unit="px of the input", title="Translation range (+-)"),
    _option("scale_range", "augmentation", "float", 0.1, "zoom range: factor in 1 +- this", low=0.0, high=1.0,
            high_open=True, widget="slider", step=0.05, title="Scale range (+-)"),
    _option("colour", "augmentation", "float", 0.5, "strength of brightness/contrast/saturation/hue jitter",
            low=0.0, high=1.0, widget="slider", step=0.05, title="Colour jitter strength"),
    _option("hard_case_share", "augmentation", "float", 0.25,
            "probability per example of each hard case named in augment: zoom_in (the lesion fills the frame and "
            "touches it on all sides), pink (part or all of the lesion turned pale pink, amelanotic), vignette "
            "(a dark circular lens vignette), halo (a faint pigmented ring on the skin around the lesion, "
            "labelled skin)", low=0.0, high=1.0, widget="slider", step=0.05, title="Hard-case share"),
    # ---- data (splits)
    _option("validation_split", "data", "float", 0.15, "share of the training pairs held out for validation",
            low=0.0, high=1.0, high_open=True, widget="slider", step=0.05, needs=("validation_images", []),
            title="Validation share"),
    _option("test_split", "data", "float", 0.0, "share of the training pairs held out for the final test",
            low=0.0, high=1.0, high_open=True, widget="slider", step=0.05, title="Test share"),
    _option("validation_fold", "data", "int", 0,
            "which block of the seeded shuffle is the validation set (0: the first); with a validation share of "
            "1/k, folds 0..k-1 validate on k different blocks that cover the pairs once: k-fold cross-validation, "
            "e.g. as a study factor", low=0, high=MAX_VALIDATION_FOLD, needs=("validation_images", [])),
    # ---- training
    _option("seed", "training", "int", 0, "random seed of splits, shuffling and augmentation", low=0, high=MAX_SEED,
            title="Random seed"),
    _option("early_stopping_patience", "training", "int", 0,
            "stop after this many epochs without a better validation FM (0: off)", low=0, high=MAX_EPOCHS,
            unit="epochs",
            aliases=("--early-stopping",), title="Early stopping patience"),
    _option("bn_momentum", "training", "auto_float", "auto",
            "BatchNorm momentum; auto: statistics converge within half the training", low=0.0, high=1.0,
            low_open=True, high_open=True, title="BatchNorm momentum"),
    _option("strategy", "run", "choice", "auto", "distribution: auto (all GPUs when several), default (one "
            "device), mirrored (all GPUs or CPUs)", choices=STRATEGIES, title="Distribution"),
    _option("mixed_precision", "run", "choice", "auto", "float16 compute (auto: on with a GPU)",
            choices=PRECISIONS),
    _option("train_fm_images", "training", "int", 16, "training images scored (FM) after each epoch", low=0,
            high=MAX_TRAIN_FM_IMAGES,
            unit="images", title="Training images scored per epoch"),
    _option("inference", "data", "choice", "resize", "resize whole images to the input (moles), or crops and "
            "tiles at the image's own scale (cells)", choices=INFERENCES, title="Images meet the network"),
    _option("crops_per_image", "data", "int", 1, "random crops per image and epoch (tiles)", low=1,
            high=MAX_CROPS_PER_IMAGE, unit="crops", needs=("inference", "tiles"), title="Crops per image and epoch"),
    _option("crops_by_area", "data", "bool", False,
            "tiles: crops per input-sized area of each image (up to 16), not per image",
            needs=("inference", "tiles"), title="More crops from larger images"),
    _option("colour_constancy", "data", "choice", "none",
            "remove the light's colour cast from every image before the network, in training and prediction "
            f"(shades_of_grey: Finlayson & Trezzi 2004, p = {SHADES_OF_GREY_POWER:g} as Barata et al. 2015 chose for "
            "dermoscopy; applied to the image as the network gets it: resized, or whole before tiling)",
            choices=COLOUR_CONSTANCY_METHODS, title="Colour correction"),
    _option("tile_scale", "data", "float", 1.0,
            "tiles: images enlarged (or shrunk) by this factor before training crops and prediction tiles, and "
            "the probabilities resized back: small objects such as nuclei get more network pixels (x2: 4x the "
            "crops and tiles)", low=0.25, high=4.0, unit="x the image's own size", step=0.25,
            needs=("inference", "tiles"), title="Enlarge images before tiling"),
    _option("calibrate", "training", "bool", True,
            "after training, choose flips and the lesion threshold by validation FM",
            title="Choose flips and lesion threshold after training"),
    _option("cache_dir", "run", "text", None, "folder of cached prepared examples (default ~/.cache/moleseg)",
            optional=True, title="Example cache folder"),
    _option("name", "run", "text", None, "model name stored in the file (default: the run folder's name)",
            optional=True, title="Run name"),
)

#: Options in px at ``size_reference_px``, scaled to the network input by :func:`scaled_px`.
SCALED_SIZES: tuple[str, ...] = ("border_width_px", "closing_radius_px")


def scaled_px(value: int, input_size: int, reference: int = SIZE_REFERENCE_PX) -> int:
    """A size given in px at a ``reference`` px input, in px of an ``input_size`` px input (rounded; at
    least 1 px when non-zero). ``scaled_px(4, 64) == 1``, ``scaled_px(15, 64) == 4``."""
    return max(1, round(value * input_size / reference)) if value else 0


def with_size_reference(config: Mapping[str, Any]) -> dict[str, Any]:
    """A stored configuration with ``size_reference_px`` made explicit: a configuration written before it
    existed gave :data:`SCALED_SIZES` in px of its own input, so its reference is its input size (it
    means what it meant). Configurations that hold it, or no size, are returned unchanged (a copy)."""
    values = copy.deepcopy(dict(config))
    if "size_reference_px" not in values and any(name in values for name in SCALED_SIZES):
        values["size_reference_px"] = get_value(values, "model.input_size", default("model.input_size"))
    return values
#: Folder options given in pairs: (images, masks).
FOLDER_PAIRS: tuple[tuple[str, str], ...] = (("images", "masks"), ("validation_images", "validation_masks"),
                                             ("test_images", "test_masks"))


def option(name: str) -> Option:
    """The option called ``name`` (``"solver"``, ``"model.input_size"``).

    Raises
    ------
    KeyError
        When there is no such option (the message lists none, the name is in it).
    """
    for item in OPTIONS:  # read at each call: the schema is the one list
        if item.name == name:
            return item
    raise KeyError(f"no training option {name!r}")


def default(name: str) -> Any:
    """A fresh copy of an option's default (lists are new lists)."""
    return copy.deepcopy(option(name).default)


def section(prefix: str) -> tuple[Option, ...]:
    """The options inside ``prefix`` (``"model"``): their names start with ``prefix.``."""
    return tuple(o for o in OPTIONS if o.name.startswith(prefix + "."))


def top_level() -> tuple[Option, ...]:
    """The options that are not inside a section."""
    return tuple(o for o in OPTIONS if "." not in o.name)


def defaults() -> dict[str, Any]:
    """Every default as a configuration dictionary (model options under ``"model"``)."""
    values: dict[str, Any] = {}
    for item in OPTIONS:
        set_value(values, item.name, copy.deepcopy(item.default))
    return values


def get_value(config: Mapping[str, Any], name: str, fallback: Any = None) -> Any:
    """``config``'s value of the option ``name`` (dotted names look inside sections)."""
    node: Any = config
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return fallback
        node = node[part]
    return node


def set_value(config: dict[str, Any], name: str, value: Any) -> None:
    """Set the option ``name`` in ``config`` (creating sections as needed)."""
    *sections, last = name.split(".")
    node = config
    for part in sections:
        node = node.setdefault(part, {})
    node[last] = value


def merged(*configs: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults overridden by each configuration in turn (only known options; sections merged)."""
    values = defaults()
    for config in configs:
        for item in OPTIONS:
            marker = object()
            value = get_value(config, item.name, marker)
            if value is not marker:
                set_value(values, item.name, copy.deepcopy(value))
    return values


#: Largest sum of the validation and test shares: at least 10 % of the pairs stay for training.
MAX_HELD_OUT_SHARE: float = 0.9


def problems(config: Mapping[str, Any], *, data: bool = True) -> list[str]:
    """What is wrong with a training configuration dictionary, one message per broken rule, each naming
    the option(s). The one check of a configuration: the CLI, the Train page, studies, stored runs and
    :class:`moleseg.core.trainconfig.TrainConfig` all call it. No file system access.

    Parameters
    ----------
    config
        A configuration dictionary (``model`` options under ``"model"``); a missing option counts as
        its default, keys that name no option are not looked at (see :func:`unknown_keys`).
    data
        Whether training folders must be given; False for a configuration whose folders come later
        (a study's planned run).

    Returns
    -------
    list of str
        Each option's kind, choices and range (:meth:`Option.problems`), then the rules between options:
        image and mask folders in pairs, at least one training images folder (with ``data``), an architecture on a
        backbone it is built on (:func:`moleseg.core.backbones.backbones_for`), the
        validation and test shares leaving 10 % for training, a tile scale only with tiles. Empty when
        the configuration is valid.
    """
    found: list[str] = []
    wrong: set[str] = set()  # options with a problem of their own: the rules between options skip them
    for item in OPTIONS:
        own = item.problems(get_value(config, item.name, item.default))
        found.extend(own)
        wrong.update([item.name] if own else [])
    for images, masks in FOLDER_PAIRS:
        if not {images, masks} & wrong and len(get_value(config, images, []) or []) != len(
                get_value(config, masks, []) or []):
            group = images.replace("images", "").replace("_", " ")
            found.append(f"give {group}image and mask folders in pairs ({images} and {masks})")
    if data and not get_value(config, "images", []):
        found.append("give at least one training dataset (an images folder and a masks folder)")
    splits = [get_value(config, name, default(name)) for name in ("validation_split", "test_split")]
    if not {"validation_split", "test_split"} & wrong and sum(splits) >= MAX_HELD_OUT_SHARE:
        found.append(f"validation_split and test_split must leave at least {1 - MAX_HELD_OUT_SHARE:.0%} of the "
                     "pairs for training")
    architecture, backbone = (get_value(config, f"model.{key}", default(f"model.{key}")) for key in ("architecture",
                                                                                                     "backbone"))
    if architecture in ARCHITECTURES and backbone in BACKBONES and backbone not in backbones_for(architecture):
        found.append(f"model.architecture {architecture} is not built on {backbone}; its backbones: "
                     + ", ".join(backbones_for(architecture)))
    scale = get_value(config, "tile_scale", default("tile_scale"))
    inference = get_value(config, "inference", default("inference"))
    if "tile_scale" not in wrong and scale != 1.0 and inference != "tiles":
        found.append(f"tile scale {scale:g} needs inference 'tiles' (with '{inference}' every image is resized "
                     "to the input size)")
    return found


def needed(item: Option, config: Mapping[str, Any]) -> bool:
    """Whether ``item`` matters in ``config``: the option its :attr:`Option.needs` names has that value."""
    if not item.needs:
        return True
    other, value = item.needs
    return get_value(config, other, default(other)) == value


def unknown_keys(config: Mapping[str, Any], ignore: Iterable[str] = ("run_dir", "recipe")) -> list[str]:
    """Keys of ``config`` that name no option (``ignore``: keys written next to the options)."""
    known = {o.name.split(".", 1)[0] for o in OPTIONS} | set(ignore)
    found = [key for key in config if key not in known]
    for prefix in {o.name.split(".", 1)[0] for o in OPTIONS if "." in o.name}:
        inner = config.get(prefix)
        if isinstance(inner, Mapping):
            names = {o.name.split(".", 1)[1] for o in section(prefix)}
            found.extend(f"{prefix}.{key}" for key in inner if key not in names)
    return found
