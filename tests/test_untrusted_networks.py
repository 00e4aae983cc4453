"""An untrusted ``.keras`` file chooses no Keras configuration and reads no other file: moleseg builds the network
its ``moleseg.json`` describes (architecture, backbone, classes, input size:
:class:`moleseg.core.trainconfig.ModelConfig`) with its own builder and reads only weights into it, so a forged
``config.json`` changes nothing; a weights file
whose HDF5 links, external storage or virtual datasets point at other files on the server is refused, naming the
file and the link, before Keras or h5py reads a value through it."""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from moleseg.core.modelinfo import ModelFileError, read_model_info, write_model_info
from tests.synthetic import TINY_MODEL_SIZE, tiny_model_file

#: The tiny network's classifier kernel in its weights file (1 x 1 x 8 decoder channels x 3 classes).
CLASSIFIER_KERNEL_SHAPE = (1, 1, 8, 3)


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _rewrite(path: Path, **members: bytes) -> Path:
    """``path`` with the archive entries ``members`` (``config_json`` for ``config.json``...) replaced."""
    changed = {name.replace("_json", ".json").replace("_h5", ".h5").replace("model_weights", "model.weights"): data
               for name, data in members.items()}
    entries = {**_members(path), **changed}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def _classifier_kernel(weights: h5py.File) -> str:
    found = []
    weights.visititems(lambda name, item: found.append(name) if isinstance(item, h5py.Dataset)
                       and item.shape == CLASSIFIER_KERNEL_SHAPE else None)
    assert len(found) == 1, found
    return found[0]


def _image() -> np.ndarray:
    return np.random.default_rng(7).uniform(0, 255, (1, TINY_MODEL_SIZE, TINY_MODEL_SIZE, 3)).astype(np.float32)


def _probabilities(path: Path) -> np.ndarray:
    from moleseg.network.io import load_keras_model

    return np.asarray(load_keras_model(path)(_image(), training=False))


# -- (1) a forged config.json ------------------------------------------------------------------------------

def _forge_normalisation(config: dict) -> None:
    layer = next(item for item in config["config"]["layers"] if item["name"] == "imagenet_normalise")
    layer["config"]["mean"] = [0.0, 0.0, 0.0]
    layer["config"]["variance"] = [1e-4, 1e-4, 1e-4]


def _forge_activation(config: dict) -> None:
    layer = next(item for item in config["config"]["layers"] if item["name"] == "probabilities")
    layer["config"]["activation"] = "sigmoid"


@pytest.mark.parametrize("forge", [_forge_normalisation, _forge_activation], ids=["normalisation", "activation"])
def test_a_forged_config_json_does_not_reach_keras(tmp_path, forge):
    """Every layer and option the guard allows, set otherwise than moleseg's builder sets it (here: the input
    normalisation's constants, the output's softmax), would change every prediction of a file that still
    calls itself the same model; the network loaded is the builder's, with the file's weights."""
    honest = tiny_model_file(tmp_path)
    (tmp_path / "forged").mkdir()
    forged = tiny_model_file(tmp_path / "forged")
    config = json.loads(_members(forged)["config.json"])
    forge(config)
    _rewrite(forged, config_json=json.dumps(config).encode())
    expected = _probabilities(honest)
    np.testing.assert_allclose(expected.sum(axis=-1), 1.0, rtol=1e-5)  # softmax over the 3 classes
    np.testing.assert_array_equal(_probabilities(forged), expected)


def test_a_model_file_that_describes_no_network_is_refused(tmp_path):
    path = tiny_model_file(tmp_path)
    info = read_model_info(path)
    info.pop("model")
    write_model_info(path, info)
    from moleseg.network.io import load_keras_model

    with pytest.raises(ModelFileError) as caught:
        load_keras_model(path)
    assert str(caught.value) == ("tiny0.keras: its moleseg.json describes no network (no \"model\" section): "
                                 "moleseg builds a network only from the architecture, backbone, classes and input "
                                 "size given there")


def test_a_model_file_describing_another_network_than_its_weights_is_refused_in_one_line(tmp_path):
    path = tiny_model_file(tmp_path)
    info = read_model_info(path)
    write_model_info(path, {**info, "model": {**info["model"], "decoder_width": 16}})
    from moleseg.network.io import load_keras_model

    with warnings.catch_warnings(record=True) as told, pytest.raises(ModelFileError) as caught:
        warnings.simplefilter("always")
        load_keras_model(path)
    # the layer and its shapes, not Keras's "Example error message for object <Conv2D ...>:", and none of Keras's
    # warnings (one per skipped container, 120 for another backbone) that the layers keep their initial weights
    assert str(caught.value) == ("tiny0.keras: its weights do not fit the network its moleseg.json describes (21 "
                                 "layers do not fit, aspp_pool_conv among them: a weight of shape (1, 1, 256, 16) "
                                 "in the network, (1, 1, 256, 8) in the file)")
    assert [str(warning.message) for warning in told] == []


# -- (2) a weights file reaching outside itself ------------------------------------------------------------

SECRET = np.full(CLASSIFIER_KERNEL_SHAPE, 42.0, np.float32)


def _secret_files(tmp_path: Path) -> tuple[Path, Path]:
    """A server file moleseg must never read for a model: HDF5 (``/values``) and raw float32 bytes."""
    secret_h5, secret_raw = tmp_path / "secret.h5", tmp_path / "secret.bin"
    with h5py.File(secret_h5, "w") as handle:
        handle["values"] = SECRET
    secret_raw.write_bytes(SECRET.tobytes())
    return secret_h5, secret_raw


def _reaching_out(path: Path, kind: str, secret_h5: Path, secret_raw: Path) -> str:
    """Replace the classifier kernel of ``path``'s weights file by a link of ``kind``; returns its name."""
    buffer = io.BytesIO(_members(path)["model.weights.h5"])
    with h5py.File(buffer, "r+") as weights:
        name = _classifier_kernel(weights)
        weights.copy(weights[name], name.rsplit("/", 2)[0] + "/moved")
        del weights[name]
        if kind == "external link":
            weights[name] = h5py.ExternalLink(str(secret_h5), "/values")
        elif kind == "external storage":
            weights.create_dataset(name, shape=SECRET.shape, dtype="f4",
                                   external=[(str(secret_raw), 0, SECRET.nbytes)])
        elif kind == "virtual dataset":
            layout = h5py.VirtualLayout(shape=SECRET.shape, dtype="f4")
            layout[...] = h5py.VirtualSource(str(secret_h5), "values", shape=SECRET.shape)
            weights.create_virtual_dataset(name, layout)
        else:  # a soft link to a dataset of the same file: Keras writes none
            weights[name] = h5py.SoftLink("/" + name.rsplit("/", 2)[0] + "/moved")
    _rewrite(path, model_weights_h5=buffer.getvalue())
    return name


@pytest.mark.parametrize(("kind", "told"), [
    ("external link", "links {name!r} to {linked!r}, another file"),
    ("external storage", "stores {name!r} in another file ({secret_raw!r})"),
    ("virtual dataset", "maps {name!r} onto another dataset ({mapped!r})"),
    ("soft link", "links {name!r} to {target!r}, a link Keras does not write"),
])
def test_a_weights_file_reaching_outside_itself_is_refused_before_it_is_read(tmp_path, kind, told):
    """Each of these made Keras (through h5py) read a file of the server as a weight: the classifier's kernel
    came back as the secret's 42s."""
    from moleseg.network.configguard import check_network
    from moleseg.network.io import load_keras_model, load_weights_into

    secret_h5, secret_raw = _secret_files(tmp_path)
    path = tiny_model_file(tmp_path)
    name = _reaching_out(path, kind, secret_h5, secret_raw)
    target = "/" + name.rsplit("/", 2)[0] + "/moved"
    what = told.format(name=name, linked=f"{secret_h5}:/values", secret_raw=str(secret_raw),
                       mapped=f"{secret_h5}:values", target=target)
    expected = f"tiny0.keras: its model.weights.h5 {what}: moleseg reads weights only from the file itself"
    for load in (check_network, load_keras_model, lambda file: load_weights_into(None, file)):  # resume: the same
        with pytest.raises(ModelFileError) as caught:
            load(path)
        assert str(caught.value) == expected


def test_a_legacy_h5_model_is_refused_before_keras_or_h5py_opens_it(tmp_path):
    """Keras would open a ``.h5`` file as a legacy HDF5 model (its own loader, its config in an attribute);
    moleseg takes only ``.keras`` archives, whatever the name."""
    from moleseg.network.io import load_keras_model
    from moleseg.network.loading import load_segmenter

    for name in ("legacy.h5", "legacy.keras"):
        path = tmp_path / name
        with h5py.File(path, "w") as handle:
            handle.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"layers": []}})
        for load, told in ((load_keras_model, "damaged or not a moleseg/Keras model file"),
                           (load_segmenter, "not a .keras model file")):
            with pytest.raises(ModelFileError) as caught:
                load(path)
            assert str(caught.value).startswith(f"{name}: {told} (")


# -- the networks moleseg loads: the shipped models, a resumed training's --------------------------------------

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "dermoscopy.keras"


@pytest.mark.slow
def test_the_shipped_model_saved_with_keras_batchnorm_loads_into_the_builder_s_network():
    """The shipped models were saved when the builder made Keras's BatchNormalization, filed in their weights
    file under other paths than the FusedBatchNormalization the builder makes now reads: each layer's weights
    are found by its name, and the network predicts what Keras's own reading of the file predicts."""
    import keras

    from moleseg.network.io import load_keras_model

    config = json.loads(_members(SHIPPED)["config.json"])
    assert {layer["class_name"] for layer in config["config"]["layers"]} >= {"BatchNormalization"}
    built = load_keras_model(SHIPPED)
    assert sum(type(layer).__name__ == "FusedBatchNormalization" for layer in built.layers) == 65
    kerass = keras.saving.load_model(SHIPPED, safe_mode=True)  # the operator's own file: trusted here
    for layer in kerass.layers:
        for mine, theirs in zip(built.get_layer(layer.name).get_weights(), layer.get_weights(), strict=True):
            np.testing.assert_array_equal(mine, theirs)
    image = np.random.default_rng(3).uniform(0, 255, (1, 320, 320, 3)).astype(np.float32)
    np.testing.assert_array_equal(built(image, training=False), kerass(image, training=False))


@pytest.mark.slow
def test_a_resumed_training_reads_its_solver_state_through_the_checked_path(tmp_path):
    """A compiled network (its solver's variables created, as a resumed training's) gets the weights and the
    solver state of the file: Adam's step count and moments as they were saved."""
    import keras

    from moleseg.core.trainconfig import ModelConfig
    from moleseg.network.build import build_model
    from moleseg.network.io import load_weights_into, save_model

    config = ModelConfig(backbone="resnet18", input_size=TINY_MODEL_SIZE, decoder_width=8, aspp_rates=(1, 2, 3))

    def compiled() -> keras.Model:
        model = build_model(config, weights="none")
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
        model.optimizer.build(model.trainable_variables)
        return model

    trained = compiled()
    labels = np.eye(3, dtype=np.float32)[np.zeros((1, TINY_MODEL_SIZE, TINY_MODEL_SIZE), int)]
    trained.train_on_batch(_image(), labels)
    trained.train_on_batch(_image(), labels)
    path = save_model(trained, tmp_path / "last.keras", {"name": "last", "model": config.to_dict()})
    resumed = compiled()
    load_weights_into(resumed, path)
    assert int(resumed.optimizer.iterations.numpy()) == 2
    for mine, theirs in zip(resumed.optimizer.variables, trained.optimizer.variables, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    for mine, theirs in zip(resumed.weights, trained.weights, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


# -- the inference cache: keyed by the network that is built -----------------------------------------------

def test_the_cache_key_covers_the_network_description_not_the_decision(tmp_path):
    """Two files with the same weights and config.json, one describing other ASPP rates (the same weights load
    into both networks, which compute different things), are not one network; a re-calibrated file is."""
    from moleseg.network.compiled import network_content

    path = tiny_model_file(tmp_path)
    before = network_content(path)
    info = read_model_info(path)
    write_model_info(path, {**info, "lesion_threshold": 0.7})
    assert network_content(path) == before
    write_model_info(path, {**info, "model": {**info["model"], "aspp_rates": [2, 4, 6]}})
    assert network_content(path) != before
