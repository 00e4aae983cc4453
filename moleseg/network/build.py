"""Build, initialise, save and load moleseg segmentation networks.

One entry point, :func:`build_model`, takes a :class:`moleseg.core.trainconfig.ModelConfig` and returns a Keras model mapping
``(batch, S, S, 3)`` RGB values in 0..255 to per-pixel class probabilities ``(batch, S, S, C)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from moleseg.core.backbones import backbone
from moleseg.core.trainconfig import ModelConfig
from moleseg.network import backbones, deeplab, mobilenetv2, vgg16_hed

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
