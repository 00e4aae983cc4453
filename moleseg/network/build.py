"""Build, initialise, save and load moleseg segmentation networks.

One entry point, :func:`build_model`, takes a :class:`ModelConfig` and returns a Keras model mapping
``(batch, S, S, 3)`` RGB values in 0..255 to per-pixel class probabilities ``(batch, S, S, C)``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from moleseg.core import options
from moleseg.network import backbones, deeplab, mobilenetv2, vgg16_hed

ARCHITECTURES: tuple[str, ...] = options.ARCHITECTURES
#: segmentation-models backbone names for our backbone names.
_SM_BACKBONES = {"mobilenetv2": "mobilenetv2", "resnet18": "resnet18", "resnet50": "resnet50",
                 "inceptionresnetv2": "inceptionresnetv2", "xception": None, "vgg16_hed": None}


@dataclass
class ModelConfig:
    """Everything that defines a network's shape (the ``model.*`` options of :mod:`moleseg.core.options`,
    whose defaults, choices and ranges these are).

    Attributes
    ----------
    architecture : {"deeplabv3plus", "unet", "fpn", "linknet"}
    backbone : {"mobilenetv2", "resnet18", "resnet50", "xception", "inceptionresnetv2", "vgg16_hed"}
    input_size : int
        Side of the square network input in px, a multiple of 16 (images are resized to it).
    n_classes : {2, 3}
    separable : bool
        Depthwise-separable 3x3 convolutions in ASPP and decoder (DeepLabV3+ only).
    decoder_width : int
        Channels of the ASPP branches and decoder blocks (the paper: 256).
    aspp_rates : tuple of int
        Dilation rates of the three atrous ASPP branches at output stride 16.
    bn_momentum : float
        BatchNormalization momentum (0..1); lower values make moving statistics converge in fewer steps.
    dropout : float
        Dropout after ASPP, 0..1.
    """

    architecture: str = options.default("model.architecture")
    backbone: str = options.default("model.backbone")
    input_size: int = options.default("model.input_size")
    n_classes: int = options.default("model.n_classes")
    separable: bool = options.default("model.separable")
    decoder_width: int = options.default("model.decoder_width")
    aspp_rates: tuple[int, ...] = tuple(options.default("model.aspp_rates"))
    bn_momentum: float = options.default("model.bn_momentum")
    dropout: float = options.default("model.dropout")

    def __post_init__(self) -> None:
        self.aspp_rates = tuple(self.aspp_rates)
        problems = options.problems({"model": self.to_dict()}, [o.name for o in options.section("model")])
        if problems:
            raise ValueError("; ".join(problems))
        self.aspp_rates = tuple(int(rate) for rate in self.aspp_rates)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "aspp_rates": list(self.aspp_rates)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


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

    sm_backbone = _SM_BACKBONES[config.backbone]
    if sm_backbone is None:
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
        from moleseg.core.modelinfo import ModelFileError, check_keras_file, read_model_info
        from moleseg.network.io import load_keras_model

        check_keras_file(source_path)
        try:
            source_classes = read_model_info(source_path).get("n_classes")
        except ModelFileError:  # a Keras model not written by moleseg: transfer by layer names
            source_classes = None
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


def count_parameters(model: keras.Model) -> int:
    """Number of weights in the model (trainable and not)."""
    return int(sum(np.prod(w.shape) for w in model.weights))
