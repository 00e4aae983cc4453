"""The network a ``.keras`` file declares, measured before Keras builds any of it (no TensorFlow here).

Keras rebuilds a saved network from its ``config.json`` and creates every layer's weights before it reads a
single value from ``model.weights.h5``: a file of a few kB declaring ``Dense(20000)`` on a wide input, a
convolution of 100,000 filters or a layer built for a huge input shape took 7.9 GB and 20 s before Keras
refused it. :func:`check_network` walks the declared graph the way Keras will build it (from the input
layer's shape, layer by layer, each layer's ``build_config`` shape checked against the shape its inputs give
it), refuses any layer class moleseg's builders do not make, and bounds what the graph implies: its weights,
the values of its largest tensor and of all its tensors together (per image), by the budgets below, derived
from the largest network moleseg offers. Then every dataset of the weights file is checked against the
weights the graph declares, from the HDF5 headers (h5py reads shapes without data), and a weights file that
reaches outside itself (an HDF5 external or soft link, a dataset stored in another file or mapped onto one) is
refused, naming the link: h5py would follow it to any file of the server.

``config.json`` is only measured here (and its layers' order and classes say where each layer's weights lie):
moleseg builds the network its ``moleseg.json`` describes with its own builder and reads into it only the
weights :func:`checked_network` returns (:func:`moleseg.network.build.load_keras_model`).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path
from typing import Any

from moleseg.core.config import MAX_INPUT_SIZE_PX
from moleseg.core.modelinfo import ModelFileError

#: Budgets above the largest networks moleseg's options make (tests/test_model_config_guard.py measures them):
#: the most weights, 70,372,587, Xception's DeepLabV3+ at 1024 px, 1024 decoder channels, dense head; the
#: largest tensor, 335,544,320 values per image, and the most values of all tensors, 2,919,235,584, the
#: VGG16-HED U-Net at 1024 px, 1024 decoder channels. Keras creates the weights while it loads (4 bytes each:
#: at most 0.32 GB); the tensors are what one image then takes to segment.
MAX_WEIGHTS: int = 80_000_000
MAX_TENSOR_VALUES: int = 2**29
MAX_ACTIVATION_VALUES: int = 2**32
#: Most layers (InceptionResNetV2's DeepLabV3+ has 836), models nested in one another (moleseg's networks: one
#: encoder in the network) and largest ``config.json`` read (InceptionResNetV2's DeepLabV3+: about 0.8 MB).
MAX_LAYERS: int = 4_000
MAX_NESTING: int = 4
MAX_CONFIG_BYTES: int = 4 * 1024**2
#: Weights file datasets may hold the optimizer's slots beside the weights for a resume: Adam's two per weight, and
#: under mixed precision the loss-scale optimizer's own copies besides its inner optimizer's (a mixed-precision
#: Adam run's file holds over 4 times its weights: tests/test_train.py::test_mixed_precision_on_trains_on_cpu).
WEIGHT_COPIES: int = 8
CONFIG_ENTRY, WEIGHTS_ENTRY = "config.json", "model.weights.h5"

Shape = tuple  # (None, height, width, channels): a batch of tensors, each dimension known but the batch

#: Layers whose output has their (first) input's shape, and the weights they create per channel.
_SAME_SHAPE = {"ReLU": 0, "Activation": 0, "Dropout": 0, "Identity": 0, "Rescaling": 0, "SpatialDropout2D": 0,
               "BatchNormalization": 4, "FusedBatchNormalization": 4, "Normalization": 2, "CustomScaleLayer": 0,
               "Add": 0, "Multiply": 0, "Subtract": 0, "Average": 0, "Maximum": 0, "Minimum": 0}
_CONVOLUTIONS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "MaxPooling2D", "AveragePooling2D")
_OTHERS = ("InputLayer", "ZeroPadding2D", "UpSampling2D", "Resizing", "GlobalAveragePooling2D",
           "GlobalMaxPooling2D", "Concatenate", "Dense", "Functional")
#: Every layer class moleseg's builders make (:mod:`moleseg.network.build` and the backbones it takes).
LAYER_CLASSES: frozenset[str] = frozenset((*_SAME_SHAPE, *_CONVOLUTIONS, *_OTHERS))
#: The registered name Keras finds a class by (its ``registered_name``; None: by its module), for the classes
#: that are not ``keras.layers``'; so that a layer measured as one class cannot be built as another.
_REGISTERED = {"FusedBatchNormalization": "moleseg>FusedBatchNormalization", "CustomScaleLayer": "CustomScaleLayer",
               "Functional": "Functional"}


class _Refusal(Exception):
    """One reason to refuse the network, without the file's name."""


def check_network(path: str | Path) -> int:
    """Check the network of the ``.keras`` file ``path`` (a ZIP archive within the model budget, as
    :func:`moleseg.core.modelinfo.check_keras_file` checks) before Keras builds it; returns its weights count.

    Raises
    ------
    ModelFileError
        Naming the file and the reason: no or an unreadable ``config.json``; a layer class moleseg does not
        build; a graph Keras cannot build (a layer's declared input shape differs from its graph's); more
        weights, or larger tensors, than moleseg's largest network has; a weights file holding a dataset no
        declared weight has room for.
    """
    return _checked(path)[0]


def checked_network(path: str | Path) -> tuple[dict, bytes]:
    """The ``config.json`` (parsed) and the bytes of the ``model.weights.h5`` of the ``.keras`` file ``path`` that
    passed :func:`check_network`'s checks (read once: the bytes checked are the bytes loaded, whatever happens to
    the file meanwhile).

    Raises
    ------
    ModelFileError
        As :func:`check_network`; also for a file without a weights file.
    """
    _, config, weights = _checked(path)
    return config, weights


def _checked(path: str | Path) -> tuple[int, dict, bytes]:
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            config = _read_config(archive)
            declared = _Graph().model(config, "the network")
            weights = _check_weights_file(archive, declared)
    except _Refusal as refusal:
        raise ModelFileError(f"{path.name}: {refusal}") from None
    except (OSError, zipfile.BadZipFile, EOFError, RuntimeError) as error:
        raise ModelFileError(f"{path.name}: damaged model file ({type(error).__name__})") from None
    return declared.weights, config, weights


def _read_config(archive: zipfile.ZipFile) -> dict:
    try:
        entry = archive.getinfo(CONFIG_ENTRY)
    except KeyError:
        raise _Refusal(f"no {CONFIG_ENTRY} inside: not a Keras model") from None
    if entry.file_size > MAX_CONFIG_BYTES:
        raise _Refusal(f"its {CONFIG_ENTRY} declares {entry.file_size:,} bytes; at most {MAX_CONFIG_BYTES:,} are read")
    try:
        config = json.loads(archive.read(entry).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise _Refusal(f"its {CONFIG_ENTRY} is not JSON ({type(error).__name__})") from None
    if not isinstance(config, dict):
        raise _Refusal(f"its {CONFIG_ENTRY} holds no model")
    return config


class _Graph:
    """The declared graph's running totals: weights (total and the largest single tensor of them), layers,
    the activation values per image."""

    def __init__(self) -> None:
        self.weights = 0
        self.largest_weight = 0
        self.layers = 0
        self.activations = 0
        self.largest_tensor = 0
        self.depth = 0

    def model(self, layer: dict, name: str) -> "_Graph":
        """Walk a ``Functional`` model's layers; returns self with the totals."""
        self.outputs_of(layer, name, None)
        return self

    # -- one model ---------------------------------------------------------------------------------------
    def outputs_of(self, layer: dict, name: str, given: list[Shape] | None) -> list[Shape]:
        """Output shapes of the model ``layer`` called on ``given`` (None: its own input layers' shapes)."""
        if _get(layer, "class_name", str, name) != "Functional":
            raise _Refusal(f"{name} is of class {_shown(layer.get('class_name'))}, not a functional Keras model")
        _check_origin(layer, "Functional", name)
        config = _get(layer, "config", dict, name)
        layers = _get(config, "layers", list, name)
        produced: dict[tuple[str, int], list[Shape]] = {}
        by_name: dict[str, dict] = {}
        for item in layers:
            item_name = _get(_dict(item, name), "name", str, name)
            if item_name in by_name:
                raise _Refusal(f"{name} has two layers named {_shown(item_name)}")
            by_name[item_name] = item
        for item in layers:  # Keras's order: each layer after the layers it takes tensors from
            self.layer(item, produced)
        # Keras builds a nested model from its own input layers, then calls it on its graph's tensors
        own = [_tensor(produced, history, name) for history in _history_list(config.get("input_layers"), name)]
        if given is not None and _plain(own) != _plain(given):
            raise _Refusal(f"{name} is built for inputs of {_text(own)}, its graph gives it {_text(given)}")
        return [_tensor(produced, history, name) for history in _history_list(config.get("output_layers"), name)]

    def layer(self, item: dict, produced: dict[tuple[str, int], list[Shape]]) -> None:
        name = item["name"]
        kind = _get(item, "class_name", str, name)
        if kind not in LAYER_CLASSES:
            raise _Refusal(f"its layer {_shown(name)} is of class {_shown(kind)}, not a layer moleseg builds")
        _check_origin(item, kind, name)
        self.layers += 1
        if self.layers > MAX_LAYERS:
            raise _Refusal(f"its network has more than {MAX_LAYERS:,} layers")
        if kind == "InputLayer":
            shape = _shape(_get(_get(item, "config", dict, name), "batch_shape", list, name), name)
            produced[(name, 0)] = [shape]
            self.count_tensor(shape, name)
            return
        nodes = _get(item, "inbound_nodes", list, name)
        if not nodes:  # Keras would build it from its build_config all the same
            raise _Refusal(f"its layer {_shown(name)} is in no graph")
        for index, node in enumerate(nodes):
            inputs = [_tensor(produced, history, name) for history in _node_histories(node, name)]
            if not inputs:
                raise _Refusal(f"its layer {_shown(name)} is called on nothing")
            if kind == "Functional":  # its layers' tensors are counted inside it
                self.depth += 1
                if self.depth > MAX_NESTING:
                    raise _Refusal(f"its network nests more than {MAX_NESTING} models")
                outputs = self.outputs_of(item, f"its layer {_shown(name)}", inputs)
                self.depth -= 1
            else:
                outputs = [self.apply(kind, _get(item, "config", dict, name), inputs, name, index == 0 and item)]
                self.count_tensor(outputs[0], name)
            produced[(name, index)] = outputs

    def count_tensor(self, shape: Shape, name: str) -> None:
        values = math.prod(shape[1:])
        if values > MAX_TENSOR_VALUES:
            raise _Refusal(f"its layer {_shown(name)} makes a tensor of {_text(shape)}: {values:,} values per "
                           f"image, more than the {MAX_TENSOR_VALUES:,} moleseg's largest network stays under")
        self.activations += values
        self.largest_tensor = max(self.largest_tensor, values)
        if self.activations > MAX_ACTIVATION_VALUES:
            raise _Refusal(f"its network makes more than {MAX_ACTIVATION_VALUES:,} values per image, more than "
                           "moleseg's largest network")

    def add_weights(self, name: str, *counts: int) -> None:
        for count in counts:
            self.weights += count
            self.largest_weight = max(self.largest_weight, count)
        if self.weights > MAX_WEIGHTS:
            raise _Refusal(f"its network declares more than {MAX_WEIGHTS:,} weights (at its layer {_shown(name)}), "
                           f"more than moleseg's largest network has")

    # -- one layer ---------------------------------------------------------------------------------------
    def apply(self, kind: str, config: dict, inputs: list[Shape], name: str, item: dict | bool) -> Shape:
        """The output shape of a layer of class ``kind`` on ``inputs``; its weights counted once (on the first
        call: ``item`` is then the layer, whose ``build_config`` must be the shape its graph gives it)."""
        if item:
            build = item.get("build_config")
            declared = build.get("input_shape") if isinstance(build, dict) else None
            actual = inputs[0] if len(inputs) == 1 else inputs
            if declared is not None and _plain(declared) != _plain(actual):
                raise _Refusal(f"its layer {_shown(name)} is built for an input of {_text(declared)}, its graph "
                               f"gives it {_text(actual)}")
        if config.get("lora_rank"):  # Keras would build an adapter of that rank beside the kernel (uncounted here)
            raise _Refusal(f"its layer {_shown(name)} declares a LoRA rank ({_shown(config['lora_rank'])}): "
                           "moleseg's networks have no low-rank adapters")
        for key, value in config.items():  # Keras runs them as it loads: an orthogonal one is a QR of the kernel
            chosen = value.get("class_name") if isinstance(value, dict) else value
            if key.endswith("_initializer") and isinstance(chosen, str) and "orthogonal" in chosen.lower():
                raise _Refusal(f"its layer {_shown(name)} sets its {key} to {_shown(chosen)}, an initializer "
                               "moleseg's networks do not use")
        if config.get("data_format", "channels_last") != "channels_last":
            raise _Refusal(f"its layer {_shown(name)} is not channels-last, as moleseg's networks are")
        first = inputs[0]
        channels = first[-1]
        if kind in _SAME_SHAPE:
            if kind in ("BatchNormalization", "FusedBatchNormalization", "Normalization"):
                axis = config.get("axis", -1)
                if axis not in (-1, len(first) - 1, [-1], [len(first) - 1]):
                    raise _Refusal(f"its layer {_shown(name)} normalises axis {_shown(axis)}, not the channels")
            if item:
                self.add_weights(name, *[channels] * _per_channel(kind, config))
            return first
        if kind in _CONVOLUTIONS:
            return self.convolution(kind, config, first, name, bool(item))
        if kind == "ZeroPadding2D":
            (top, bottom), (left, right) = _pairs(config.get("padding"), name)
            return (None, first[1] + top + bottom, first[2] + left + right, channels)
        if kind == "UpSampling2D":
            rows, columns = _pair(config.get("size"), "size", name)
            return (None, first[1] * rows, first[2] * columns, channels)
        if kind == "Resizing":
            return (None, _positive(config.get("height"), "height", name),
                    _positive(config.get("width"), "width", name), channels)
        if kind in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
            return (None, 1, 1, channels) if config.get("keepdims") else (None, channels)
        if kind == "Concatenate":
            axis = config.get("axis", -1)
            if axis not in (-1, len(first) - 1) or any(len(shape) != len(first) or shape[:-1] != first[:-1]
                                                       for shape in inputs):
                raise _Refusal(f"its layer {_shown(name)} joins tensors moleseg's networks do not join")
            return (*first[:-1], sum(shape[-1] for shape in inputs))
        # Dense
        units = _positive(config.get("units"), "units", name)
        if item:
            self.add_weights(name, channels * units, units)
        return (*first[:-1], units)

    def convolution(self, kind: str, config: dict, shape: Shape, name: str, first_call: bool) -> Shape:
        if len(shape) != 4:
            raise _Refusal(f"its layer {_shown(name)} takes a tensor of {_text(shape)}, not an image")
        pooling = kind.endswith("Pooling2D")
        kernel = _pair(config.get("pool_size" if pooling else "kernel_size"), "kernel size", name)
        strides = _pair(config.get("strides") or kernel, "strides", name)
        dilation = (1, 1) if pooling else _pair(config.get("dilation_rate", 1), "dilation rate", name)
        padding = config.get("padding", "valid")
        if padding not in ("valid", "same"):
            raise _Refusal(f"its layer {_shown(name)} pads {_shown(padding)}, not as moleseg's networks do")
        sides = []
        for size, k, s, d in zip(shape[1:3], kernel, strides, dilation):
            side = -(-size // s) if padding == "same" else (size - (k - 1) * d - 1) // s + 1
            if side < 1:
                raise _Refusal(f"its layer {_shown(name)} leaves nothing of a {_text(shape)} input")
            sides.append(side)
        channels, area = shape[3], kernel[0] * kernel[1]
        bias = config.get("use_bias", True) is not False
        if kind == "Conv2D":
            filters = _positive(config.get("filters"), "filters", name)
            groups = _positive(config.get("groups", 1), "groups", name)
            if channels % groups:
                raise _Refusal(f"its layer {_shown(name)} splits {channels} channels into {groups} groups")
            counts, out = (area * channels // groups * filters, filters * bias), filters
        elif kind == "DepthwiseConv2D":
            out = channels * _positive(config.get("depth_multiplier", 1), "depth multiplier", name)
            counts = (area * out, out * bias)
        elif kind == "SeparableConv2D":
            depth = channels * _positive(config.get("depth_multiplier", 1), "depth multiplier", name)
            out = _positive(config.get("filters"), "filters", name)
            counts = (area * depth, depth * out, out * bias)
        else:
            counts, out = (), channels
        if first_call:
            self.add_weights(name, *counts)
        return (None, *sides, out)


def _per_channel(kind: str, config: dict) -> int:
    """Weights per channel a layer of class ``kind`` (one of :data:`_SAME_SHAPE`) creates."""
    if kind == "Normalization":  # a mean and a variance given in its config are constants, not weights
        return 0 if config.get("mean") is not None and config.get("variance") is not None else _SAME_SHAPE[kind]
    if kind in ("BatchNormalization", "FusedBatchNormalization"):  # moving mean and variance, then beta, gamma
        return 2 + (config.get("center", True) is not False) + (config.get("scale", True) is not False)
    return _SAME_SHAPE[kind]


def _check_origin(item: dict, kind: str, name: str) -> None:
    """A layer of class ``kind`` must come from where Keras finds that class: ``keras.layers`` (or Keras's
    own modules), or the registered name of :data:`_REGISTERED`."""
    module, registered = item.get("module"), item.get("registered_name")
    expected = _REGISTERED.get(kind)
    keras_module = module == "keras" or (isinstance(module, str) and module.startswith(("keras.layers", "keras.src.")))
    if registered != expected or (kind != "FusedBatchNormalization" and not keras_module):
        raise _Refusal(f"its layer {_shown(name)} of class {_shown(kind)} comes from {_shown(module)} "
                       f"({_shown(registered)}), not from where moleseg's networks take it")


# -- the weights file ------------------------------------------------------------------------------------
def _check_weights_file(archive: zipfile.ZipFile, declared: _Graph) -> bytes:
    """Every dataset of ``model.weights.h5`` at most the largest weight the graph declares, and all of them at
    most :data:`WEIGHT_COPIES` times its weights, read from the HDF5 headers (no dataset read); every link a
    hard link and every dataset stored in the file itself (:func:`_outside`). Returns the file's bytes."""
    try:
        entry = archive.getinfo(WEIGHTS_ENTRY)
    except KeyError:
        raise _Refusal(f"no {WEIGHTS_ENTRY} inside: a model file holds its weights") from None
    largest, total_limit, total = max(declared.largest_weight, 1), WEIGHT_COPIES * declared.weights + 1024, 0
    if entry.file_size > 8 * total_limit + 2**20:  # 8 bytes a value at most, and HDF5's headers
        raise _Refusal(f"its {WEIGHTS_ENTRY} declares {entry.file_size:,} bytes, more than the "
                       f"{declared.weights:,} weights of its network take")
    import h5py

    data = archive.read(entry)
    try:
        with h5py.File(io.BytesIO(data), "r") as weights:
            for dataset_name, size in _datasets(weights):
                total += size
                if size > largest or total > total_limit:
                    raise _Refusal(f"its {WEIGHTS_ENTRY} holds {_shown(dataset_name)} of {size:,} values; its "
                                   f"network declares no weight of more than {largest:,} (nor {total_limit:,} "
                                   "values in all)")
    except (OSError, ValueError, KeyError, TypeError) as error:  # h5py raises these for a damaged file
        raise _Refusal(f"its {WEIGHTS_ENTRY} is not a readable HDF5 file ({type(error).__name__})") from None
    return data


def _datasets(weights: Any) -> list[tuple[str, int]]:
    """Name and size (in 4-byte values) of every dataset of the open HDF5 file ``weights``, from its headers
    (h5py's low-level visits: its object-level one takes 0.15 s for the shipped models' 327 datasets), after
    every link is found to be a hard one (:func:`_outside`)."""
    import h5py

    found: list[tuple[str, int]] = []
    outside = ": moleseg reads weights only from the file itself"

    def link(name: bytes, info: Any) -> str | None:
        if info.type == h5py.h5l.TYPE_HARD:
            return None
        return f"its {WEIGHTS_ENTRY} {_outside(weights, name, info.type)}{outside}"

    def dataset(name: bytes, info: Any) -> str | None:
        if info.type != h5py.h5o.TYPE_DATASET:
            return None
        opened = h5py.h5d.open(weights.id, name)
        storage = opened.get_create_plist()
        if storage.get_layout() == h5py.h5d.VIRTUAL:
            source = f"{_text_of(storage.get_virtual_filename(0))}:{_text_of(storage.get_virtual_dsetname(0))}"
            return (f"its {WEIGHTS_ENTRY} maps {_shown(_text_of(name))} onto another dataset "
                    f"({_shown(source, 200)}){outside}")
        if storage.get_external_count():
            return (f"its {WEIGHTS_ENTRY} stores {_shown(_text_of(name))} in another file "
                    f"({_shown(_text_of(storage.get_external(0)[0]), 200)}){outside}")
        found.append((_text_of(name), math.prod(opened.shape or ()) * max(1, opened.get_type().get_size() // 4)))
        return None

    def stopping(check: Any) -> Any:
        """``check`` as h5py's visits call it: a value stops the visit, and is returned (an exception raised
        through h5py's C visit would come out as a SystemError)."""
        def call(name: bytes, info: Any) -> str | None:
            try:
                return check(name, info)
            except Exception as error:  # noqa: BLE001 -- h5py raises assorted types for a damaged file
                return f"its {WEIGHTS_ENTRY} is not a readable HDF5 file ({type(error).__name__})"
        return call

    refusal = (weights.id.links.visit(stopping(link), info=True)
               or h5py.h5o.visit(weights.id, stopping(dataset), info=True))
    if refusal:
        raise _Refusal(refusal)
    return found


def _outside(weights: Any, name: bytes, kind: int) -> str:
    """What the link ``name`` of kind ``kind`` (not a hard link) of the open HDF5 file ``weights`` is, for a
    refusal: an external link reaches another file of the server, a soft link another name (Keras writes
    neither)."""
    import h5py

    shown = _shown(_text_of(name))
    if kind == h5py.h5l.TYPE_EXTERNAL:
        file, target = weights.id.links.get_val(name)
        return f"links {shown} to {_shown(f'{_text_of(file)}:{_text_of(target)}', 200)}, another file"
    if kind == h5py.h5l.TYPE_SOFT:
        return f"links {shown} to {_shown(_text_of(weights.id.links.get_val(name)))}, a link Keras does not write"
    return f"links {shown} by a link of type {kind}, a link Keras does not write"


def _text_of(name: bytes | str) -> str:
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else name


# -- reading the config ----------------------------------------------------------------------------------
def _dict(value: Any, name: str) -> dict:
    if not isinstance(value, dict):
        raise _Refusal(f"{name} holds a layer that is not a JSON object")
    return value


def _get(container: dict, key: str, kind: type, name: str) -> Any:
    value = container.get(key)
    if not isinstance(value, kind):
        raise _Refusal(f"{_shown(name)} has no {key} of the form Keras writes")
    return value


def _history_list(value: Any, name: str) -> list[tuple[str, int, int]]:
    """``input_layers``/``output_layers``: one ``[layer, node, tensor]`` or a list of them."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _Refusal(f"{name} names no inputs or outputs")
    return [_history(item, name) for item in value]


def _history(value: Any, name: str) -> tuple[str, int, int]:
    if (isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value[1:])):
        return value[0], value[1], value[2]
    raise _Refusal(f"{_shown(name)} refers to a tensor in a form Keras does not write")


def _node_histories(node: Any, name: str) -> list[tuple[str, int, int]]:
    """The tensors a call takes: every ``__keras_tensor__`` of its arguments, in order."""
    found: list[tuple[str, int, int]] = []

    def walk(value: Any, depth: int) -> None:
        if depth > 16:
            raise _Refusal(f"its layer {_shown(name)} is called on arguments nested too deep")
        if isinstance(value, dict):
            if value.get("class_name") == "__keras_tensor__":
                found.append(_history(_dict(value.get("config"), name).get("keras_history"), name))
            else:
                for item in value.values():
                    walk(item, depth + 1)
        elif isinstance(value, list):
            for item in value:
                walk(item, depth + 1)

    walk(node, 0)
    return found


def _tensor(produced: dict[tuple[str, int], list[Shape]], history: tuple[str, int, int], name: str) -> Shape:
    layer, node, index = history
    outputs = produced.get((layer, node))
    if outputs is None or index >= len(outputs):
        raise _Refusal(f"its layer {_shown(name)} takes a tensor of {_shown(layer)} made by no layer before it")
    return outputs[index]


def _shape(value: list, name: str) -> Shape:
    if len(value) != 4 or value[0] is not None:
        raise _Refusal(f"its input {_shown(name)} is of {_text(value)}, not a batch of images")
    height, width, channels = (_positive(v, "input shape", name) for v in value[1:])
    if max(height, width) > MAX_INPUT_SIZE_PX or channels > 4:
        raise _Refusal(f"its input {_shown(name)} is of {_text(value)}: moleseg's networks take at most "
                       f"{MAX_INPUT_SIZE_PX} px a side and 4 channels")
    return (None, height, width, channels)


def _positive(value: Any, field: str, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_TENSOR_VALUES:
        return value
    raise _Refusal(f"its layer {_shown(name)} has {field} {_shown(value)}, not a whole number from 1 to "
                   f"{MAX_TENSOR_VALUES:,}")


def _pair(value: Any, field: str, name: str) -> tuple[int, int]:
    if isinstance(value, list) and len(value) == 2:
        return _positive(value[0], field, name), _positive(value[1], field, name)
    number = _positive(value, field, name)
    return number, number


def _pairs(value: Any, name: str) -> tuple[tuple[int, int], tuple[int, int]]:
    def count(item: Any) -> int:
        return 0 if item == 0 and not isinstance(item, bool) else _positive(item, "padding", name)

    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, list) and len(v) == 2 for v in value):
        return (count(value[0][0]), count(value[0][1])), (count(value[1][0]), count(value[1][1]))
    if isinstance(value, list) and len(value) == 2:
        return (count(value[0]),) * 2, (count(value[1]),) * 2
    return (count(value),) * 2, (count(value),) * 2


def _plain(value: Any) -> Any:
    """A shape or list of shapes as JSON lists, to compare a declared shape with a walked one."""
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _text(value: Any) -> str:
    """A shape for a message (at most 60 characters)."""
    text = json.dumps(_plain(value), default=str)
    return text if len(text) <= 60 else text[:60] + "..."


def _shown(value: Any, limit: int = 60) -> str:
    """A name (quoted) or a value from the file for a message, cut to ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = text if len(text) <= limit else text[:limit] + "..."
    return repr(text) if isinstance(value, str) else text
