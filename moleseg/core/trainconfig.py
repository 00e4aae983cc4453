"""The typed training configuration: :class:`TrainConfig` and its network part :class:`ModelConfig`, whose
attributes are the options of :mod:`moleseg.core.options` (read from the schema when one is made, so a
new option is one schema entry), checked by :func:`moleseg.core.options.problems`. No TensorFlow here.
"""

from __future__ import annotations

import copy
import numbers
from typing import Any, Iterable, Mapping

from moleseg.core import options
from moleseg.core.configfile import EXTRA_KEYS
from moleseg.core.options import Option
from moleseg.core.words import noun_for

#: The section of :class:`ModelConfig`'s options (``model.input_size`` is ``TrainConfig.model.input_size``).
MODEL_SECTION = "model"


def unknown_message(what: str, unknown: Iterable[str], known: Iterable[str]) -> str:
    """One message naming the unknown keys and the known ones."""
    names = sorted(unknown)
    return f"unknown {noun_for(len(names), what)} {', '.join(names)}; known: {', '.join(known)}"


def _typed(item: Option, value: Any) -> Any:
    """``value`` as the option's kind holds it: whole numbers of a ``float`` option as floats, the lists
    of ``ints`` as tuples, augmentation names in their one spelling; anything invalid unchanged (the
    checks name it)."""
    if item.kind in ("float", "auto_float") and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return float(value)
    if item.kind == "ints" and isinstance(value, (list, tuple)):
        return tuple(int(v) if isinstance(v, numbers.Integral) and not isinstance(v, bool) else v for v in value)
    if item.kind == "choices" and isinstance(value, (list, tuple)):
        return options.choice_names(value)
    return copy.deepcopy(value)


def _plain(value: Any) -> Any:
    """A value as JSON holds it (tuples as lists)."""
    return list(value) if isinstance(value, tuple) else copy.deepcopy(value)


class _Options:
    """Attributes from a group of schema options, with equality, ``to_dict`` and a readable repr: the options
    of the section :attr:`SECTION`, or the top-level ones when it is empty."""

    SECTION: str = ""

    def _schema(self) -> tuple[Option, ...]:
        return options.section(self.SECTION) if self.SECTION else options.top_level()

    @staticmethod
    def _key(item: Option) -> str:
        return item.name.rsplit(".", 1)[-1]

    def _fill(self, values: Mapping[str, Any], what: str, sections: tuple[str, ...] = ()) -> None:
        schema = self._schema()
        known = [self._key(item) for item in schema]
        unknown = [key for key in values if key not in known]
        if unknown:
            raise ValueError(unknown_message(what, unknown, [*known, *sections]))
        for item in schema:
            key = self._key(item)
            setattr(self, key, _typed(item, values[key] if key in values else options.default(item.name)))

    def to_dict(self) -> dict[str, Any]:
        """The options as a configuration dictionary (JSON types)."""
        return {self._key(item): _plain(getattr(self, self._key(item))) for item in self._schema()}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"

    def __getattr__(self, name: str) -> Any:
        """Only reached for a name that is no option (each option is an attribute set from the schema)."""
        raise AttributeError(f"{type(self).__name__} has no option {name!r}")


class ModelConfig(_Options):
    """Everything that defines a network's shape: one attribute per ``model.*`` option of
    :mod:`moleseg.core.options` (``architecture``, ``backbone``, ``input_size`` in px, ``n_classes``,
    ``separable``, ``decoder_width`` in channels, ``aspp_rates`` as a tuple, ``bn_momentum``, ``dropout``...),
    with the schema's defaults.

    Raises
    ------
    ValueError
        An unknown keyword (the message names it and the known ones), or a value outside its option's
        kind, choices or range (one message per option, joined by "; ").
    """

    SECTION = MODEL_SECTION

    def __init__(self, **values: Any) -> None:
        self._fill(values, "model option")
        found = [problem for item in self._schema() for problem in item.problems(getattr(self, self._key(item)))]
        if found:
            raise ValueError("; ".join(found))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ModelConfig":
        """The network of a ``model`` dictionary (unknown keys refused)."""
        return cls(**dict(values))


def training_name(config: Mapping[str, Any]) -> str:
    """The name of a training and its model, from its configuration dictionary (:meth:`TrainConfig.to_dict`):
    its ``name`` option, or ``<architecture>-<backbone>`` when that is empty."""
    model = config[MODEL_SECTION]
    return config["name"] or f"{model['architecture']}-{model['backbone']}"


class TrainConfig(_Options):
    """Every option of a training (written to the run's ``config.json``): one attribute per top-level
    option of :mod:`moleseg.core.options` and ``model``, a :class:`ModelConfig` (given as one or as a
    dictionary), with the schema's defaults.

    Folders are given as parallel lists (several datasets can be combined). Fractions are 0..1,
    learning rate is per step; border width and closing radius are px at a ``size_reference_px`` input
    (:attr:`border_width_input_px` and :attr:`closing_radius_input_px` are what they become at the input
    size), the other sizes px of the network input.

    Raises
    ------
    ValueError
        An unknown keyword (the message names it and the known ones), or what
        :func:`moleseg.core.options.problems` finds (joined by "; ").
    """

    def __init__(self, **values: Any) -> None:
        model = values.pop(MODEL_SECTION, None)
        self._fill(values, "option", (MODEL_SECTION,))
        self.model = model if isinstance(model, ModelConfig) else ModelConfig(**dict(model or {}))
        found = options.problems(self.to_dict())
        if found:
            raise ValueError("; ".join(found))

    def to_dict(self) -> dict[str, Any]:
        """Every option as a configuration dictionary, ``model`` options under ``"model"``."""
        values = super().to_dict()
        return {**values, MODEL_SECTION: self.model.to_dict()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """The configuration of a dictionary: keys that name no option are refused (except
        :data:`moleseg.core.configfile.EXTRA_KEYS`, written next to the options); one stored without
        ``size_reference_px`` keeps its meaning (:func:`moleseg.core.options.with_size_reference`)."""
        values = options.with_size_reference({k: v for k, v in values.items() if k not in EXTRA_KEYS})
        model = values.get(MODEL_SECTION)
        if isinstance(model, Mapping):
            values[MODEL_SECTION] = ModelConfig.from_dict(model)
        return cls(**values)

    @property
    def border_width_input_px(self) -> int:
        """The border width in px of the network input (``border_width_px`` scaled to the input size)."""
        return options.scaled_px(self.border_width_px, self.model.input_size, self.size_reference_px)

    @property
    def closing_radius_input_px(self) -> int:
        """The closing radius in px of the network input (``closing_radius_px`` scaled to the input size)."""
        return options.scaled_px(self.closing_radius_px, self.model.input_size, self.size_reference_px)
