"""DeepLabV3+ (Chen et al. 2018) in Keras 3: ASPP on the stride-16 map and a decoder at stride 4.

ASPP: image pooling, a 1x1 branch and three atrous 3x3 branches (rates 6/12/18 at output stride 16,
as in the paper; smaller inputs may want smaller rates). Decoder: a 48-channel 1x1 projection of the
stride-4 features, concatenated with the 4x-upsampled ASPP output, two 3x3 blocks of
``decoder_width`` channels, a 1x1 classifier and bilinear upsampling to the input size. With
``separable=True`` the atrous and decoder 3x3 convolutions are depthwise-separable (the paper's
"atrous separable convolution"), which cuts the head's cost several-fold.
"""

from __future__ import annotations

import keras
from keras import layers

from moleseg.network.batchnorm import FusedBatchNormalization


def _conv_block(x, filters: int, kernel: int, name: str, *, bn_momentum: float, rate: int = 1,
                separable: bool = False):
    if separable and kernel > 1:
        x = layers.DepthwiseConv2D(kernel, padding="same", dilation_rate=rate, use_bias=False,
                                   name=f"{name}_depthwise")(x)
        x = FusedBatchNormalization(momentum=bn_momentum, name=f"{name}_depthwise_bn")(x)
        x = layers.ReLU(name=f"{name}_depthwise_relu")(x)
        x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pointwise")(x)
    else:
        x = layers.Conv2D(filters, kernel, padding="same", dilation_rate=rate, use_bias=False, name=f"{name}_conv")(x)
    x = FusedBatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _resize_to(x, height: int, width: int, name: str):
    if x.shape[1] == height and x.shape[2] == width:
        return x
    return layers.Resizing(height, width, interpolation="bilinear", name=name)(x)


def aspp(x, *, width: int, rates: tuple[int, ...], separable: bool, bn_momentum: float, dropout: float):
    """Atrous spatial pyramid pooling on a ``(batch, h, w, c)`` feature map; returns ``width`` channels."""
    height, width_px = x.shape[1], x.shape[2]
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool")(x)
    pooled = layers.Conv2D(width, 1, use_bias=False, name="aspp_pool_conv")(pooled)
    pooled = FusedBatchNormalization(momentum=bn_momentum, name="aspp_pool_bn")(pooled)
    pooled = layers.ReLU(name="aspp_pool_relu")(pooled)
    pooled = layers.UpSampling2D((height, width_px), interpolation="nearest", name="aspp_pool_upsample")(pooled)
    branches = [pooled, _conv_block(x, width, 1, "aspp_1x1", bn_momentum=bn_momentum)]
    for rate in rates:
        branches.append(_conv_block(x, width, 3, f"aspp_rate{rate}", rate=rate, separable=separable,
                                    bn_momentum=bn_momentum))
    y = layers.Concatenate(name="aspp_concat")(branches)
    y = _conv_block(y, width, 1, "aspp_project", bn_momentum=bn_momentum)
    if dropout > 0:
        y = layers.Dropout(dropout, name="aspp_dropout")(y)
    return y


def deeplabv3plus_head(inputs, low, high, *, n_classes: int, decoder_width: int, aspp_rates: tuple[int, ...],
                       separable: bool, bn_momentum: float, dropout: float):
    """Attach ASPP + decoder to encoder taps; returns softmax probabilities at the input size (float32).
    ``decoder_width`` (channels), ``aspp_rates``, ``separable``, ``bn_momentum`` and ``dropout`` are the network
    options of :class:`moleseg.core.trainconfig.ModelConfig`, whose defaults are the options' own."""
    input_h, input_w = inputs.shape[1], inputs.shape[2]
    high = _resize_to(high, input_h // 16, input_w // 16, "high_resize")
    low = _resize_to(low, input_h // 4, input_w // 4, "low_resize")
    y = aspp(high, width=decoder_width, rates=tuple(aspp_rates), separable=separable,
             bn_momentum=bn_momentum, dropout=dropout)
    y = layers.UpSampling2D(4, interpolation="bilinear", name="decoder_upsample")(y)
    low = layers.Conv2D(48, 1, use_bias=False, name="decoder_low_conv")(low)
    low = FusedBatchNormalization(momentum=bn_momentum, name="decoder_low_bn")(low)
    low = layers.ReLU(name="decoder_low_relu")(low)
    y = layers.Concatenate(name="decoder_concat")([y, low])
    y = _conv_block(y, decoder_width, 3, "decoder_block1", separable=separable, bn_momentum=bn_momentum)
    y = _conv_block(y, decoder_width, 3, "decoder_block2", separable=separable, bn_momentum=bn_momentum)
    y = layers.Conv2D(n_classes, 1, name="classifier")(y)
    y = layers.UpSampling2D(4, interpolation="bilinear", name="output_upsample")(y)
    return layers.Activation("softmax", dtype="float32", name="probabilities")(y)


def build_deeplabv3plus(encoder_inputs, taps: dict, *, n_classes: int, **head_options) -> keras.Model:
    """A DeepLabV3+ ``keras.Model`` from an encoder's input and taps (see :mod:`moleseg.network.backbones`)."""
    outputs = deeplabv3plus_head(encoder_inputs, taps["low"], taps["high"], n_classes=n_classes, **head_options)
    return keras.Model(encoder_inputs, outputs, name="deeplabv3plus")
