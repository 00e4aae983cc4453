"""Build, initialise, save and load moleseg segmentation networks.

One entry point, :func:`build_model`, takes a :class:`moleseg.core.trainconfig.ModelConfig` and returns a Keras model mapping
``(batch, S, S, 3)`` RGB values in 0..255 to per-pixel class probabilities ``(batch, S, S, C)``. A model file is
loaded by building the network it describes (:func:`load_keras_model`): Keras never deserializes a file's config.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path

import keras
import numpy as np

from moleseg.core.backbones import backbone
from moleseg.core.errors import MAX_REASON_CHARACTERS, first_line, short_reason
from moleseg.core.modelinfo import INFO_ENTRY, ModelFileError, check_keras_file, described_network, read_model_info
from moleseg.core.trainconfig import ModelConfig
from moleseg.core.words import count_of
from moleseg.network import backbones, deeplab, mobilenetv2, vgg16_hed
from moleseg.network.configguard import WEIGHTS_ENTRY, checked_network
from moleseg.network.weightpaths import weights_for

def build_model(config: ModelConfig, *, weights: str | Path = "none") -> keras.Model:
    """Build the network of ``config`` and initialise its encoder.

    Parameters
    ----------
    config
        The network's shape.
    weights
        ``"none"`` (random), ``"imagenet"`` (MobileNetV2: offline torchvision weights; others: Keras'
        download, which needs internet) or a path to a ``.keras`` file whose layers are copied by name
        and shape (transfer learning from a moleseg model).
    """
    weights = str(weights)
    pretrained = weights == "imagenet"
    if config.architecture == "deeplabv3plus":
        inputs, taps = backbones.build_encoder(config.backbone, config.input_size, pretrained=pretrained,
                                               bn_momentum=config.bn_momentum)
        model = deeplab.build_deeplabv3plus(
            inputs, taps, n_classes=config.n_classes, decoder_width=config.decoder_width,
            aspp_rates=config.aspp_rates, separable=config.separable, bn_momentum=config.bn_momentum,
            dropout=config.dropout,
        )
        if pretrained and config.backbone == "mobilenetv2":
            mobilenetv2.load_imagenet_weights(model)
    elif config.architecture == "unet" and config.backbone == "vgg16_hed":
        model = vgg16_hed.build_unet(config.input_size, n_classes=config.n_classes, decoder_width=config.decoder_width,
                                     pretrained=pretrained, bn_momentum=config.bn_momentum)
    else:
        model = _build_sm_model(config, pretrained)
    if weights not in ("none", "imagenet"):
        copied = transfer_weights(model, weights, n_classes=config.n_classes)
        if copied == 0:
            raise ValueError(f"{Path(weights).name}: no layer matches this network (different backbone?)")
    return model


def _build_sm_model(config: ModelConfig, pretrained: bool) -> keras.Model:
    os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
    import segmentation_models as sm

    sm_backbone = backbone(config.backbone).smp_name
    if not sm_backbone:
        raise ValueError(f"segmentation-models has no {config.backbone} backbone for {config.architecture}")
    if pretrained:
        raise ValueError("segmentation-models downloads ImageNet weights from the internet; use --weights none here")
    builder = {"unet": sm.Unet, "fpn": sm.FPN, "linknet": sm.Linknet}[config.architecture]
    inner = builder(sm_backbone, input_shape=(config.input_size, config.input_size, 3), classes=config.n_classes,
                    activation="softmax", encoder_weights=None)
    inputs = keras.Input((config.input_size, config.input_size, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="input_scale")(inputs)
    outputs = keras.layers.Activation("linear", dtype="float32", name="probabilities")(inner(x))
    return keras.Model(inputs, outputs, name=config.architecture)


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(_all_layers(layer))
        else:
            found.append(layer)
    return found


def transfer_weights(target: keras.Model, source_path: str | Path, *, n_classes: int | None = None) -> int:
    """Copy weights from a saved model into ``target`` for layers with the same name and shapes.

    Returns the number of layers copied. The classifier is skipped when the class count differs, unless
    ``n_classes`` is given: then a moleseg model of another class count is refused (ValueError) before
    loading it, since fine-tuning it would silently start the classifier from scratch.
    """
    source_path = Path(source_path)
    if not source_path.is_file():
        raise FileNotFoundError(f"{source_path}: weights file not found")
    if source_path.suffix == ".keras":
        check_keras_file(source_path)
        source_classes = read_model_info(source_path).get("n_classes")  # a moleseg model's (ModelFileError else)
        if n_classes is not None and source_classes is not None and int(source_classes) != n_classes:
            raise ValueError(f"{source_path.name} is a {source_classes}-class model: it cannot start a "
                             f"{n_classes}-class training (use --classes {source_classes}, or --weights "
                             "imagenet or none)")

        source = load_keras_model(source_path)
    else:
        raise ValueError(f"{source_path.name}: expected a .keras model file")
    source_layers = {layer.name: layer for layer in _all_layers(source)}
    copied = 0
    for layer in _all_layers(target):
        other = source_layers.get(layer.name)
        if other is None or not layer.weights:
            continue
        values = other.get_weights()
        if [v.shape for v in values] == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(values)
            copied += 1
    return copied


def load_keras_model(path: str | Path) -> keras.Model:
    """The network of a moleseg ``.keras`` file, built by :func:`build_model` as its ``moleseg.json`` describes it
    (:func:`moleseg.core.modelinfo.described_network`), with the file's weights read into it (as
    :func:`load_weights_into` reads them). Keras never sees the file's
    ``config.json``: an untrusted file chooses no layer, option or constant, only the values of the weights
    moleseg's network has.

    Every load goes through here (the app, ``moleseg predict``, evaluation, calibration, fine-tuning from a
    model, the ONNX conversion) or, for a resumed training, whose network is built as the run's own, through
    :func:`load_weights_into`.

    Raises
    ------
    ModelFileError
        When the file is missing, damaged, not a moleseg model, describes no network moleseg builds, declares one
        larger than moleseg's largest, reaches outside itself, or holds weights that do not fit the network.
    """
    path = check_keras_file(path)
    config, weights = checked_network(path)
    network = described_network(read_model_info(path), path)
    try:
        model = build_model(network, weights="none")
    except ValueError as error:  # a combination of options the builder refuses
        raise ModelFileError(f"{path.name}: its {INFO_ENTRY} describes a network moleseg cannot build "
                             f"({short_reason(error)})") from None
    _read_weights(model, path, config, weights)
    return model


def load_weights_into(model: keras.Model, path: str | Path) -> keras.Model:
    """Read the weights of the ``.keras`` file ``path`` into ``model``, and its solver's state when ``model`` is
    compiled with its solver's variables created (a resumed training); returns ``model``. The file's ``config.json`` and weights file
    are measured first (:func:`moleseg.network.configguard.check_network`: within moleseg's largest network, no
    HDF5 link or storage outside the weights file); the weights read are the bytes checked
    (:func:`moleseg.network.configguard.checked_network`).

    Raises
    ------
    ModelFileError
        As :func:`load_keras_model`; weights (or a solver state) that do not fit ``model``.
    """
    path = check_keras_file(path)
    _read_weights(model, path, *checked_network(path))
    return model


def _read_weights(model: keras.Model, path: Path, config: dict, weights: bytes) -> None:
    """The checked ``weights`` of the file ``path`` (whose ``config.json`` is ``config``) read into ``model``, each
    layer's found at its place (:func:`moleseg.network.weightpaths.weights_for`)."""
    with tempfile.TemporaryDirectory(prefix="moleseg-weights-") as folder:
        file = Path(folder) / WEIGHTS_ENTRY  # Keras reads weights alone from a file of this name
        told: list[warnings.WarningMessage] = []
        try:
            file.write_bytes(weights_for(model, config, weights))
            with warnings.catch_warnings(record=True) as told:  # Keras warns for each layer it then refuses
                warnings.simplefilter("always")
                model.load_weights(file)
        except Exception as error:  # Keras raises many types for weights of another network
            raise ModelFileError(f"{path.name}: its weights do not fit the network its {INFO_ENTRY} describes "
                                 f"({_misfit(error)})") from error
    for warning in told:  # a load that succeeded: what Keras said, as it said it
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


#: Keras's refusal of weights that do not fit (keras.src.saving.saving_lib): how many layers, the first one's name
_MISFITS = re.compile(r"A total of (\d+) objects could not be loaded\. Example error message for object "
                      r"<\w+ name=([\w.-]+)")
#: ... and its weight's shapes, the network's and the file's
_SHAPES = re.compile(r"variable\.shape=(\([\d, ]*\)), Received: value\.shape=(\([\d, ]*\))")


def _misfit(error: Exception) -> str:
    """Why weights do not fit, in one line: how many layers, the first one and its shapes, from Keras's message
    (whose first line ends before the reason); a library's first line when it says otherwise."""
    text = str(error)
    counted, shapes = _MISFITS.match(text), _SHAPES.search(text)
    if counted is None:
        return short_reason(error)
    first = f"{count_of(int(counted[1]), 'layer')} do not fit, {counted[2]} among them"
    if shapes is None:
        return f"{first}: {first_line(text.partition(':')[2].strip() or text)}"[:MAX_REASON_CHARACTERS]
    return f"{first}: a weight of shape {shapes[1]} in the network, {shapes[2]} in the file"


def count_parameters(model: keras.Model) -> int:
    """Number of weights in the model (trainable and not)."""
    return int(sum(np.prod(w.shape) for w in model.weights))
