"""Tests of moleseg.network (build, backbones, deeplab): every backbone and architecture builds at 64 px, the documented encoder taps,
configuration errors, transfer learning, and save -> load round trips.

Networks are called eagerly (``model(x, training=False)``) rather than through ``model.predict``, which
would trace a graph per model: on a 2-core CPU that tracing costs more than building.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from moleseg.core import backbones as registry  # noqa: E402
from moleseg.core.backbones import BACKBONES  # noqa: E402
from moleseg.core.trainconfig import ModelConfig  # noqa: E402
from moleseg.network import backbones  # noqa: E402
from moleseg.network.build import build_model, count_parameters, transfer_weights  # noqa: E402
from moleseg.network.io import load_keras_model, load_model_and_info, save_model  # noqa: E402
from moleseg.core.modelinfo import ModelFileError, read_model_info  # noqa: E402

SIZE = 64

#: The taps of the registry (moleseg.core.backbones): (layer, channels) at stride 4 and 16.
NAMED_TAPS = {
    "mobilenetv2": (("features_3_out", 24), ("features_17_out", 320)),
    "resnet18": (("conv2_block2_out", 64), ("conv4_block2_out", 256)),
    "resnet50": (("conv2_block3_out", 256), ("conv4_block6_out", 1024)),
}


def _require_segmentation_models() -> None:
    # find_spec, not importorskip: importing segmentation_models before build.py sets
    # SM_FRAMEWORK=tf.keras would bind it to the standalone-Keras API, which Keras 3 lacks.
    if importlib.util.find_spec("segmentation_models") is None:
        pytest.skip("segmentation-models is not installed")


def _images(n: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


def _predict(model, images: np.ndarray) -> np.ndarray:
    return np.asarray(model(images, training=False))


_CACHE: dict[str, keras.Model] = {}


@pytest.fixture(scope="module")
def built():
    """Models built once per module: ``built(backbone)`` (DeepLabV3+, 3 classes, 64 px, random weights)."""

    def get(backbone: str) -> keras.Model:
        if backbone not in _CACHE:
            _CACHE[backbone] = build_model(ModelConfig(backbone=backbone, input_size=SIZE), weights="none")
        return _CACHE[backbone]

    yield get
    _CACHE.clear()


# -- every backbone ------------------------------------------------------------------------------


def test_the_registry_and_the_builders_name_the_same_backbones():
    """A backbone is one registry entry (moleseg.core.backbones) and one builder (moleseg.network.backbones);
    the model.backbone option offers exactly those."""
    from moleseg.core import options

    assert BACKBONES[0] == options.default("model.backbone") == "mobilenetv2"
    assert list(backbones.BUILDERS) == list(BACKBONES) == list(options.option("model.backbone").choices)
    assert {entry.preprocessing for entry in registry.REGISTRY} <= set(backbones.NORMALISATIONS)
    for name, ((low, _), (high, _)) in NAMED_TAPS.items():
        assert (registry.backbone(name).low_tap, registry.backbone(name).high_tap) == (low, high)
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'; choose one of mobilenetv2, resnet18"):
        registry.backbone("vgg16")


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.slow
def test_deeplab_builds_and_predicts_probabilities(built, backbone):
    model = built(backbone)
    assert tuple(model.input_shape) == (None, SIZE, SIZE, 3)
    probabilities = _predict(model, _images())
    assert probabilities.shape == (1, SIZE, SIZE, 3)
    assert probabilities.dtype == np.float32
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-4)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.slow
def test_head_sees_stride_4_and_stride_16_features(built, backbone):
    """Whatever the encoder, the decoder's low-level input is 64/4 = 16 px and ASPP's input 64/16 = 4 px."""
    model = built(backbone)
    assert tuple(model.get_layer("decoder_low_conv").input.shape[1:3]) == (SIZE // 4, SIZE // 4)
    assert tuple(model.get_layer("aspp_pool").input.shape[1:3]) == (SIZE // 16, SIZE // 16)
    assert tuple(model.get_layer("aspp_1x1_conv").input.shape[1:3]) == (SIZE // 16, SIZE // 16)


@pytest.mark.parametrize("backbone", ["mobilenetv2", "resnet18"])
@pytest.mark.slow
def test_documented_taps_of_moleseg_encoders(built, backbone):
    model = built(backbone)
    for (name, channels), stride in zip(NAMED_TAPS[backbone], (4, 16)):
        shape = tuple(model.get_layer(name).output.shape)
        assert shape == (None, SIZE // stride, SIZE // stride, channels), (name, shape)
    # the taps are the very tensors the head reads (no resize in between)
    assert model.get_layer("decoder_low_conv").input is model.get_layer(NAMED_TAPS[backbone][0][0]).output
    assert not any(layer.name in ("low_resize", "high_resize") for layer in model.layers)


def _layer_of(model, tensor) -> keras.Layer:
    """The layer of ``model`` whose output ``tensor`` is."""
    return next(layer for layer in model.layers if layer.output is tensor)


def _encoder(model) -> keras.Model:
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    assert len(inner) == 1, [layer.name for layer in inner]
    return inner[0]


@pytest.mark.slow
def test_documented_taps_of_resnet50(built):
    model = built("resnet50")
    encoder = _encoder(model)
    side = encoder.input.shape[1]  # keras.applications needs >= 80 px: a 64 px input is upsampled first
    assert side % SIZE == 0 and side >= 80
    for (name, channels), stride, output in zip(NAMED_TAPS["resnet50"], (4, 16), encoder.outputs):
        layer = encoder.get_layer(name)
        assert tuple(layer.output.shape) == (None, side // stride, side // stride, channels)
        assert output is layer.output


@pytest.mark.parametrize("backbone", ["xception", "inceptionresnetv2"])
@pytest.mark.slow
def test_taps_found_by_stride(built, backbone):
    """Generated layer names: the taps are the last maps at about 1/4 and 1/16 of the model's input
    (the docstring's ``0.6 <= size / target <= 1.5``), from the deepest layers that have that size."""
    model = built(backbone)
    encoder = _encoder(model)
    scale = encoder.input.shape[1] // SIZE
    low, high = encoder.outputs
    for tensor, stride in ((low, 4), (high, 16)):
        ratio = tensor.shape[1] / (SIZE / stride)
        assert 0.6 <= ratio <= 1.5, (backbone, stride, tensor.shape)
    assert low.shape[1] > high.shape[1]
    # nothing deeper in the encoder has the low tap's size (it is the *last* such layer)
    names = [layer.name for layer in encoder.layers]
    later = encoder.layers[names.index(_layer_of(encoder, low).name) + 1:]
    target = SIZE * scale / (4 * scale)
    for layer in later:
        shape = getattr(getattr(layer, "output", None), "shape", None)
        if shape is not None and len(shape) == 4:
            assert not 0.6 <= shape[1] / target <= 1.5, (layer.name, shape)


def test_xception_taps_at_full_size():
    """At inputs of 80 px or more (no upsampling) the Xception taps are the docstring's named layers."""
    inputs, taps = backbones.build_encoder("xception", 96)
    encoder = _encoder(keras.Model(inputs, [taps["low"], taps["high"]]))
    low, high = encoder.outputs
    assert _layer_of(encoder, low).name == "block3_sepconv2_bn"
    assert _layer_of(encoder, high).name == "block13_sepconv2_bn"
    assert tuple(low.shape[1:3]) == (23, 23)  # "valid" paddings: 96 / 4 = 24 less one
    assert tuple(high.shape[1:3]) == (6, 6)


# -- head options --------------------------------------------------------------------------------


def test_the_head_is_built_with_the_options_defaults():
    from moleseg.core import options

    model = build_model(ModelConfig(input_size=SIZE), weights="none")
    width, rates, momentum, dropout = (options.option(f"model.{name}").default
                                       for name in ("decoder_width", "aspp_rates", "bn_momentum", "dropout"))
    assert (width, rates, momentum, dropout) == (128, [6, 12, 18], 0.99, 0.1)
    assert model.get_layer("decoder_block1_relu").output.shape[-1] == width
    assert [model.get_layer(f"aspp_rate{rate}_depthwise").dilation_rate for rate in rates] == [(r, r) for r in rates]
    assert model.get_layer("decoder_block1_bn").momentum == momentum
    assert model.get_layer("aspp_dropout").rate == dropout


@pytest.mark.slow
def test_separable_and_dense_heads_both_build_and_respect_decoder_width():
    dense = build_model(ModelConfig(input_size=SIZE, separable=False, decoder_width=32), weights="none")
    separable = build_model(ModelConfig(input_size=SIZE, separable=True, decoder_width=24), weights="none")
    assert "decoder_block1_conv" in [layer.name for layer in dense.layers]
    assert not any(isinstance(layer, keras.layers.DepthwiseConv2D) and layer.name.startswith(("aspp", "decoder"))
                   for layer in dense.layers)
    assert isinstance(separable.get_layer("decoder_block1_depthwise"), keras.layers.DepthwiseConv2D)
    assert isinstance(separable.get_layer("aspp_rate6_depthwise"), keras.layers.DepthwiseConv2D)
    for model, width in ((dense, 32), (separable, 24)):
        assert model.get_layer("aspp_project_relu").output.shape[-1] == width
        assert model.get_layer("decoder_block1_relu").output.shape[-1] == width
        assert model.get_layer("decoder_block2_relu").output.shape[-1] == width
        assert model.get_layer("aspp_1x1_conv").output.shape[-1] == width
        probabilities = _predict(model, _images())
        assert probabilities.shape == (1, SIZE, SIZE, 3)
        np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-4)
    assert count_parameters(separable) < count_parameters(dense)


def test_two_classes_and_aspp_rates():
    model = build_model(ModelConfig(input_size=SIZE, n_classes=2, aspp_rates=(2, 4, 6), dropout=0.0),
                        weights="none")
    assert model.output_shape == (None, SIZE, SIZE, 2)
    assert model.get_layer("aspp_rate4_depthwise").dilation_rate == (4, 4)
    assert not any(layer.name == "aspp_dropout" for layer in model.layers)


@pytest.mark.parametrize("architecture", ["unet", "fpn", "linknet"])
@pytest.mark.slow
def test_segmentation_models_architectures_build(architecture):
    _require_segmentation_models()
    model = build_model(ModelConfig(architecture=architecture, backbone="mobilenetv2", input_size=SIZE),
                        weights="none")
    assert os.environ["SM_FRAMEWORK"] == "tf.keras"  # set by moleseg.network.build before the import
    probabilities = _predict(model, _images())
    assert probabilities.shape == (1, SIZE, SIZE, 3)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-4)


# -- configuration errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, words",
    [
        (dict(input_size=100), "multiple of 16"),
        (dict(input_size=16), "input size .*32 <= value"),
        (dict(n_classes=4), "n classes must be one of 3, 2, not 4"),
        (dict(backbone="vgg16"), "backbone must be one of .*not 'vgg16'"),
        (dict(architecture="pspnet"), "architecture must be one of .*not 'pspnet'"),
        (dict(bn_momentum=1.0), r"bn momentum must be a number \(0 < value < 1\), not 1.0"),
        (dict(bn_momentum=0.0), r"bn momentum .* not 0.0"),
    ],
)
def test_model_config_validation(options, words):
    with pytest.raises(ValueError, match=words):
        ModelConfig(**options)


def test_model_config_round_trip():
    config = ModelConfig(backbone="resnet18", input_size=96, n_classes=2, aspp_rates=[3, 6, 9], decoder_width=64)
    assert config.aspp_rates == (3, 6, 9)
    values = json.loads(json.dumps(config.to_dict()))
    assert ModelConfig.from_dict(values) == config
    with pytest.raises(ValueError, match="^unknown model option unknown_key; known: architecture, backbone, "
                                         "input_size, n_classes, separable, decoder_width, aspp_rates, bn_momentum, "
                                         "dropout$"):
        ModelConfig.from_dict({**values, "unknown_key": 1})


def test_imagenet_weights_for_resnet18_is_a_clear_error():
    with pytest.raises(ValueError, match="no ImageNet weights.*resnet18"):
        build_model(ModelConfig(backbone="resnet18", input_size=SIZE), weights="imagenet")


def test_imagenet_weights_for_segmentation_models_is_a_clear_error():
    _require_segmentation_models()
    with pytest.raises(ValueError, match="internet"):
        build_model(ModelConfig(architecture="unet", input_size=SIZE), weights="imagenet")


def test_xception_has_no_segmentation_models_backbone():
    with pytest.raises(ValueError, match="no xception backbone"):
        build_model(ModelConfig(architecture="fpn", backbone="xception", input_size=SIZE), weights="none")


def test_missing_weights_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere.keras"
    with pytest.raises(FileNotFoundError, match="nowhere.keras: weights file not found"):
        build_model(ModelConfig(backbone="resnet18", input_size=SIZE), weights=missing)


def test_weights_file_of_another_kind_is_a_clear_error(tmp_path):
    other = tmp_path / "model.h5"
    other.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="expected a .keras model file"):
        build_model(ModelConfig(backbone="resnet18", input_size=SIZE), weights=other)


def test_unknown_backbone_in_build_encoder():
    with pytest.raises(ValueError, match="unknown backbone"):
        backbones.build_encoder("vgg", SIZE)


# -- save, load, transfer ------------------------------------------------------------------------

INFO = {"name": "tiny", "n_classes": 3, "class_names": ["back", "border", "inside"], "input_size": SIZE,
        "cleanup": {"rule": "article", "closing_radius_px": 3}}


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A random resnet18 DeepLabV3+ saved with moleseg metadata: (model, path)."""
    config = ModelConfig(backbone="resnet18", input_size=SIZE, decoder_width=16)
    model = build_model(config, weights="none")
    path = tmp_path_factory.mktemp("saved") / "tiny.keras"
    save_model(model, path, {**INFO, "model": config.to_dict()})
    return model, path


@pytest.mark.slow
def test_save_load_identical_predictions(saved_model):
    model, path = saved_model
    loaded, info = load_model_and_info(path)
    images = _images(2, seed=3)
    np.testing.assert_array_equal(_predict(loaded, images), _predict(model, images))
    assert info["name"] == "tiny" and info["input_size"] == SIZE
    assert info["model"]["backbone"] == "resnet18"
    assert read_model_info(path) == info
    with zipfile.ZipFile(path) as archive:
        assert "moleseg.json" in archive.namelist()
        assert "model.weights.h5" in archive.namelist()
    assert not list(path.parent.glob(".*"))  # the atomic save left no temporary file


@pytest.mark.slow
def test_a_segmenter_given_another_decision_keeps_its_network(saved_model):
    """``with_info`` (calibration's second pass): the same traced prediction function, the new decision's
    flips and lesion threshold, the file's name and path kept."""
    from moleseg.network.predict import KerasSegmenter

    _, path = saved_model
    first = KerasSegmenter.from_file(path, test_time_augmentation=False)
    decided = first.with_info({**read_model_info(path), "test_time_augmentation": True, "lesion_threshold": 0.7})
    assert decided.inference_function() is first.inference_function()
    assert decided.test_time_augmentation and not first.test_time_augmentation
    assert decided.info["lesion_threshold"] == 0.7
    assert (decided.info["name"], decided.info["path"]) == ("tiny", str(path))
    batch = _images(1, seed=5)
    flipped = (first.predict_network(batch) + first.predict_network(batch[:, :, ::-1])[:, :, ::-1]
               + first.predict_network(batch[:, ::-1])[:, ::-1]) / 3.0
    np.testing.assert_allclose(decided.predict_network(batch), flipped, atol=1e-5)


def test_save_replaces_atomically_and_keeps_metadata_current(saved_model, tmp_path):
    model, _ = saved_model
    path = tmp_path / "m.keras"
    save_model(model, path, {"name": "first"})
    save_model(model, path, {"name": "second"})
    assert read_model_info(path)["name"] == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]


@pytest.mark.slow
def test_transfer_from_saved_model_copies_every_layer(saved_model):
    model, path = saved_model
    config = ModelConfig(backbone="resnet18", input_size=SIZE, decoder_width=16)
    fresh = build_model(config, weights="none")
    images = _images(1, seed=5)
    assert not np.array_equal(_predict(fresh, images), _predict(model, images))
    copied = build_model(config, weights=path)
    np.testing.assert_array_equal(_predict(copied, images), _predict(model, images))
    assert transfer_weights(fresh, path) == sum(1 for layer in fresh.layers if layer.weights)


def test_transfer_to_other_class_count_skips_only_the_classifier(saved_model):
    model, path = saved_model
    target = build_model(ModelConfig(backbone="resnet18", input_size=SIZE, decoder_width=16, n_classes=2),
                         weights="none")
    with_weights = [layer for layer in target.layers if layer.weights]
    assert transfer_weights(target, path) == len(with_weights) - 1
    for name in ("conv1_conv", "conv4_block2_2_conv", "decoder_block2_bn", "aspp_project_conv"):
        for mine, theirs in zip(target.get_layer(name).get_weights(), model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(mine, theirs)
    assert target.get_layer("classifier").get_weights()[0].shape[-1] == 2


def test_transfer_with_no_matching_layer_is_a_clear_error(tmp_path):
    # a moleseg network whose layer names share nothing with DeepLabV3+'s: segmentation-models' LinkNet
    config = ModelConfig(architecture="linknet", backbone="resnet18", input_size=SIZE)
    path = save_model(build_model(config, weights="none"), tmp_path / "linknet.keras",
                      {"name": "linknet", "model": config.to_dict()})
    with pytest.raises(ValueError, match="^linknet.keras: no layer matches"):
        build_model(ModelConfig(backbone="resnet18", input_size=SIZE, decoder_width=16), weights=path)


def test_transfer_from_a_network_moleseg_does_not_build_is_refused(tmp_path):
    """A Keras model of the user's own (no network described in its moleseg.json) is not loaded: moleseg builds only
    its own networks (tests/test_untrusted_networks.py)."""
    inputs = keras.Input((SIZE, SIZE, 3))
    foreign = keras.Model(inputs, keras.layers.Conv2D(3, 1, name="foreign_conv")(inputs))
    path = save_model(foreign, tmp_path / "foreign.keras", {"name": "foreign"})
    with pytest.raises(ModelFileError, match="^foreign.keras: its moleseg.json describes no network"):
        build_model(ModelConfig(backbone="resnet18", input_size=SIZE, decoder_width=16), weights=path)


def test_loading_a_corrupt_or_foreign_file(tmp_path):
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"this is not a zip")
    with pytest.raises(ModelFileError, match="garbage.keras"):
        load_keras_model(garbage)
    with pytest.raises(ModelFileError, match="not a .keras model file"):
        read_model_info(garbage)
    with pytest.raises(ModelFileError, match="not found"):
        load_keras_model(tmp_path / "missing.keras")
    plain = tmp_path / "plain.keras"
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(ModelFileError, match="not a moleseg model"):
        read_model_info(plain)


def test_numpy_half_does_not_import_tensorflow():
    """The app and CLI read model metadata, evaluate and clean without loading TensorFlow."""
    code = (
        "import sys\n"
        "import moleseg.core.modelinfo, moleseg.engine.segmenter, moleseg.engine.evaluate, moleseg.engine.pipeline, "
        "moleseg.engine.predictfiles, moleseg.cli\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"TensorFlow/Keras imported: {result.stdout.strip()}"


def test_read_model_info_works_without_tensorflow(saved_model):
    _, path = saved_model
    code = (
        "import json, sys\n"
        "from moleseg.core.modelinfo import read_model_info\n"
        f"info = read_model_info({str(path)!r})\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
        "print(json.dumps(info))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["name"] == "tiny"
