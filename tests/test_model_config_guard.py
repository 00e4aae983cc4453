"""A ``.keras`` file's network is measured before Keras builds any of it (:mod:`moleseg.network.configguard`):
a forged ``config.json`` declaring a huge layer, a huge input or tensor, a layer class moleseg does not build,
or a layer built for another shape than its graph gives it, and a weights file declaring a dataset larger than
any declared weight, are refused in one line naming the file, before Keras is called."""

from __future__ import annotations

import copy
import io
import json
import zipfile
from pathlib import Path

import h5py
import pytest

from moleseg.core.modelinfo import ModelFileError
from moleseg.network import configguard
from moleseg.network.configguard import MAX_TENSOR_VALUES, MAX_WEIGHTS, WEIGHT_COPIES, check_network

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "dermoscopy.keras"


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _write(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _forged(tmp_path: Path, change) -> Path:
    """A copy of the shipped dermoscopy model with ``change(config)`` applied to its config.json."""
    members = _members(SHIPPED)
    config = json.loads(members["config.json"])
    change(config)
    return _write(tmp_path / "forged.keras", {**members, "config.json": json.dumps(config).encode()})


def _layer(config: dict, name: str) -> dict:
    return next(layer for layer in config["config"]["layers"] if layer["name"] == name)


def _tensor(layer: str, shape: list) -> dict:
    return {"class_name": "__keras_tensor__", "config": {"shape": shape, "dtype": "float32",
                                                           "keras_history": [layer, 0, 0]}}


def _dense_chain(units: int) -> dict:
    """Input 32 x 32 x 3, global average pooling, two Dense(units): units**2 + 4 * units weights."""
    def layer(kind, name, config, source=None, shape=None):
        return {"module": "keras.layers", "class_name": kind, "config": {"name": name, **config},
                "registered_name": None, "name": name, "build_config": {"input_shape": shape} if shape else None,
                "inbound_nodes": [{"args": [_tensor(source, shape)], "kwargs": {}}] if source else []}

    layers = [layer("InputLayer", "image", {"batch_shape": [None, 32, 32, 3], "dtype": "float32"}),
              layer("GlobalAveragePooling2D", "pool", {}, "image", [None, 32, 32, 3]),
              layer("Dense", "wide", {"units": units}, "pool", [None, 3]),
              layer("Dense", "wider", {"units": units}, "wide", [None, units])]
    return {"module": "keras.src.models.functional", "class_name": "Functional", "registered_name": "Functional",
            "config": {"name": "forged", "trainable": True, "layers": layers,
                       "input_layers": [["image", 0, 0]], "output_layers": [["wider", 0, 0]]}}


def _small_keras(path: Path, config: dict) -> Path:
    """A .keras file of ``config`` with metadata.json and an empty (but valid) weights file, under 4 kB."""
    weights = io.BytesIO()
    with h5py.File(weights, "w") as handle:
        handle.create_group("layers")
    return _write(path, {"metadata.json": json.dumps({"keras_version": "3.15.1"}).encode(),
                         "config.json": json.dumps(config).encode(), "model.weights.h5": weights.getvalue()})


def test_the_shipped_model_is_measured_as_keras_saved_it():
    """Its weights file holds each of Keras's weights once: 2,191,155 values, the largest 307,200."""
    with h5py.File(io.BytesIO(_members(SHIPPED)["model.weights.h5"]), "r") as handle:
        sizes = [size for _, size in configguard._datasets(handle)]
    assert len(sizes) == 327 and max(sizes) == 307_200 and sum(sizes) == 2_191_155
    assert check_network(SHIPPED) == 2_191_155


def test_a_dense_20000_chain_is_refused(tmp_path):
    path = _small_keras(tmp_path / "wide.keras", _dense_chain(20_000))
    assert path.stat().st_size < 4_000
    with pytest.raises(ModelFileError) as caught:
        check_network(path)
    assert str(caught.value) == (f"wide.keras: its network declares more than {MAX_WEIGHTS:,} weights (at its layer "
                                 "'wider'), more than moleseg's largest network has")


def test_the_same_chain_narrow_passes_with_its_weights_counted(tmp_path):
    assert check_network(_small_keras(tmp_path / "narrow.keras", _dense_chain(10))) == 3 * 10 + 10 + 10 * 10 + 10


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: _layer(c, "classifier")["config"].update(filters=100_000),
     "its layer 'classifier' makes a tensor of [null, 80, 80, 100000]: 640,000,000 values per image, more than "
     f"the {MAX_TENSOR_VALUES:,} moleseg's largest network stays under"),
    (lambda c: _layer(c, "aspp_project_conv")["config"].update(filters=20_000),
     "its layer 'aspp_project_bn' is built for an input of [null, 20, 20, 128], its graph gives it "
     "[null, 20, 20, 20000]"),
    (lambda c: _layer(c, "aspp_project_bn")["build_config"].update(input_shape=[None, 20, 20, 100_000_000]),
     "its layer 'aspp_project_bn' is built for an input of [null, 20, 20, 100000000], its graph gives it "
     "[null, 20, 20, 128]"),
    (lambda c: _layer(c, "image")["config"].update(batch_shape=[None, 100_000, 100_000, 3]),
     "its input 'image' is of [null, 100000, 100000, 3]: moleseg's networks take at most 1024 px a side and "
     "4 channels"),
    (lambda c: _layer(c, "output_upsample")["config"].update(size=[4000, 4000]),
     "its layer 'output_upsample' makes a tensor of [null, 320000, 320000, 3]: 307,200,000,000 values per image, "
     f"more than the {MAX_TENSOR_VALUES:,} moleseg's largest network stays under"),
    (lambda c: _layer(c, "decoder_block1_depthwise")["config"].update(depth_multiplier=10**9),
     "its layer 'decoder_block1_depthwise' has depth multiplier 1000000000, not a whole number from 1 to "
     f"{MAX_TENSOR_VALUES:,}"),
    (lambda c: _layer(c, "aspp_dropout").update(class_name="Embedding"),
     "its layer 'aspp_dropout' is of class 'Embedding', not a layer moleseg builds"),
    (lambda c: _layer(c, "decoder_concat")["config"].update(axis=1),
     "its layer 'decoder_concat' joins tensors moleseg's networks do not join"),
    (lambda c: _layer(c, "aspp_dropout").update(module="os"),
     "its layer 'aspp_dropout' of class 'Dropout' comes from 'os' (null), not from where moleseg's networks take it"),
    (lambda c: _layer(c, "aspp_dropout").update(registered_name="moleseg>FusedBatchNormalization"),
     "its layer 'aspp_dropout' of class 'Dropout' comes from 'keras.layers' ('moleseg>FusedBatchNormalization'), "
     "not from where moleseg's networks take it"),
    # Keras builds a low-rank adapter beside the kernel of a layer whose config sets lora_rank: this one took
    # 700,000,016 weights and 6.7 GB on a 16-weight convolution while the guard counted 16
    (lambda c: _layer(c, "classifier")["config"].update(lora_rank=100_000_000),
     "its layer 'classifier' declares a LoRA rank (100000000): moleseg's networks have no low-rank adapters"),
    # Keras runs every weight's initializer while it loads: an orthogonal one is a QR decomposition of the whole
    # kernel (52 s and 3.0 GB for the 8944 x 8944 kernel the weight budget allows)
    (lambda c: _layer(c, "classifier")["config"].update(kernel_initializer={
        "module": "keras.initializers", "class_name": "Orthogonal", "config": {"gain": 1.0, "seed": None},
        "registered_name": None}),
     "its layer 'classifier' sets its kernel_initializer to 'Orthogonal', an initializer moleseg's networks do not "
     "use"),
    (lambda c: _layer(c, "decoder_block1_depthwise")["config"].update(depthwise_initializer="orthogonal"),
     "its layer 'decoder_block1_depthwise' sets its depthwise_initializer to 'orthogonal', an initializer moleseg's "
     "networks do not use"),
], ids=["classifier filters", "aspp filters", "build shape", "input shape", "upsampling", "depth multiplier",
        "layer class", "concat axis", "module", "registered name", "lora rank", "orthogonal", "orthogonal by name"])
def test_the_shipped_model_with_one_size_field_changed_is_refused(tmp_path, change, message):
    with pytest.raises(ModelFileError) as caught:
        check_network(_forged(tmp_path, change))
    assert str(caught.value) == f"forged.keras: {message}"


def test_the_shipped_model_copied_unchanged_passes(tmp_path):
    assert check_network(_forged(tmp_path, lambda config: None)) == 2_191_155


def _with_huge_classifier_kernel(path: Path) -> Path:
    """The shipped model with its classifier's kernel (1 x 1 x 128 x 3) declared as 10**9 values, none written
    (a few kB compressed): Keras reads all 4 GB of it before it compares the shapes."""
    weights = io.BytesIO()
    with h5py.File(io.BytesIO(_members(SHIPPED)["model.weights.h5"]), "r") as source, h5py.File(weights, "w") as copy:
        for key in source:
            source.copy(source[key], copy, name=key)
        for key, value in source.attrs.items():
            copy.attrs[key] = value
        del copy["layers/conv2d_43/vars/0"]
        copy.create_dataset("layers/conv2d_43/vars/0", shape=(10**9,), dtype="f4", chunks=(2**20,),
                            compression="gzip")
    return _write(path, {**_members(SHIPPED), "model.weights.h5": weights.getvalue()})


def test_a_weights_file_declaring_a_dataset_larger_than_any_weight_is_refused_unread(tmp_path):
    path = _with_huge_classifier_kernel(tmp_path / "forged.keras")
    assert path.stat().st_size < 10_000_000
    with pytest.raises(ModelFileError) as caught:
        check_network(path)
    assert str(caught.value) == ("forged.keras: its model.weights.h5 holds 'layers/conv2d_43/vars/0' of "
                                 "1,000,000,000 values; its network declares no weight of more than 307,200 (nor "
                                 f"{WEIGHT_COPIES * 2_191_155 + 1024:,} values in all)")


def test_a_weights_file_that_is_not_hdf5_is_refused(tmp_path):
    path = _write(tmp_path / "forged.keras", {**_members(SHIPPED), "model.weights.h5": b"not hdf5" * 100})
    with pytest.raises(ModelFileError) as caught:
        check_network(path)
    assert str(caught.value) == "forged.keras: its model.weights.h5 is not a readable HDF5 file (OSError)"


def test_a_config_that_is_not_json_or_absent_is_refused(tmp_path):
    members = {name: data for name, data in _members(SHIPPED).items() if name != "config.json"}
    with pytest.raises(ModelFileError, match=r"^absent\.keras: no config\.json inside: not a Keras model$"):
        check_network(_write(tmp_path / "absent.keras", members))
    with pytest.raises(ModelFileError, match=r"^broken\.keras: its config\.json is not JSON \(JSONDecodeError\)$"):
        check_network(_write(tmp_path / "broken.keras", {**members, "config.json": b"{"}))


def test_a_layer_taking_a_tensor_no_layer_made_is_refused(tmp_path):
    def rewire(config):
        node = _layer(config, "classifier")["inbound_nodes"][0]
        node["args"][0]["config"]["keras_history"] = ["nowhere", 0, 0]

    with pytest.raises(ModelFileError) as caught:
        check_network(_forged(tmp_path, rewire))
    assert str(caught.value) == ("forged.keras: its layer 'classifier' takes a tensor of 'nowhere' made by no "
                                 "layer before it")


def test_a_layer_in_no_graph_is_refused(tmp_path):
    with pytest.raises(ModelFileError) as caught:
        check_network(_forged(tmp_path, lambda config: _layer(config, "aspp_project_bn").update(inbound_nodes=[])))
    assert str(caught.value) == "forged.keras: its layer 'aspp_project_bn' is in no graph"


def test_every_layer_class_of_the_shipped_model_is_allowed():
    config = json.loads(_members(SHIPPED)["config.json"])
    classes = {layer["class_name"] for layer in config["config"]["layers"]}
    assert classes <= configguard.LAYER_CLASSES and len(classes) == 14


def _measured(options: dict):
    """The built network of ``options`` and the guard's walk of the config Keras would save for it."""
    import keras

    from moleseg.core.trainconfig import ModelConfig
    from moleseg.network.build import build_model

    model = build_model(ModelConfig(**options), weights="none")
    text = json.dumps(keras.saving.serialize_keras_object(model))  # config.json's content
    assert len(text) < configguard.MAX_CONFIG_BYTES
    return model, configguard._Graph().model(json.loads(text), "the network")


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["mobilenetv2", "resnet18", "resnet50", "inceptionresnetv2", "vgg16_hed"])
def test_the_guard_counts_the_weights_keras_creates(backbone):
    from moleseg.network.build import count_parameters

    model, graph = _measured({"backbone": backbone, "input_size": 64})
    assert graph.weights == count_parameters(model)
    assert graph.layers < configguard.MAX_LAYERS


@pytest.mark.slow
@pytest.mark.parametrize(("options", "weights", "tensor", "values"), [
    ({"backbone": "xception", "separable": False}, 70_372_587, 70_254_592, 1_391_310_112),
    ({"architecture": "unet", "backbone": "vgg16_hed"}, 44_442_819, 335_544_320, 2_919_235_584),
], ids=["xception deeplab", "vgg16-hed unet"])
def test_the_largest_networks_the_options_make_fit_the_budgets(options, weights, tensor, values):
    from moleseg.core.config import MAX_INPUT_SIZE_PX
    from moleseg.core.options import MAX_DECODER_WIDTH
    from moleseg.network.build import count_parameters

    model, graph = _measured({**options, "input_size": MAX_INPUT_SIZE_PX, "decoder_width": MAX_DECODER_WIDTH})
    assert (graph.weights, graph.largest_tensor, graph.activations) == (count_parameters(model), tensor, values)
    assert weights == graph.weights
    assert weights < MAX_WEIGHTS and tensor < MAX_TENSOR_VALUES and values < configguard.MAX_ACTIVATION_VALUES
