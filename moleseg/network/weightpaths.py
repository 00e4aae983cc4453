"""Where each layer's weights lie in a ``.keras`` file's ``model.weights.h5``, so that they are read into the layer
at the same place of the network moleseg builds (:func:`moleseg.network.io.load_keras_model`).

Keras files a layer's weights under its class and its place among the layers of that class (``layers/conv2d_3``,
``layers/batch_normalization_12``), not under its name (segmentation-models' names are numbered anew at each
build). moleseg's builder has changed a layer's class without changing its weights: models saved before
2026-12-01, the shipped ones among them, have Keras's ``BatchNormalization`` where the builder now makes
:class:`moleseg.network.batchnorm.FusedBatchNormalization` (a subclass: the same weights and inference), so their
weights file files them under other paths than the builder's network reads. :func:`weights_for` pairs the layers
the file's ``config.json`` lists (in the order Keras saved them) with the built network's, place by place, a
layer with one of the file's class or a subclass of it, and files each one's weights where the built network
reads them; the file's config chooses nothing else.
"""

from __future__ import annotations

import io
import re

import h5py
import keras

#: The group of the layers of a model in a weights file, as Keras names it.
LAYERS = "layers"


def keras_name(class_name: str) -> str:
    """The snake-case name Keras files an object of class ``class_name`` under (``ReLU`` -> ``re_lu``)."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _numbered(names: list[str]) -> list[str]:
    """Keras's names for the objects of a container, from their snake-case class names: the first of a class
    as it is, the next ``_1``, ``_2``..."""
    used: dict[str, int] = {}
    out = []
    for name in names:
        if name in used:
            used[name] += 1
            out.append(f"{name}_{used[name]}")
        else:
            used[name] = 0
            out.append(name)
    return out


#: Where a model's layer groups wait while they are given the built network's names.
_STAGED = "moleseg_staged_layers"


def _same_kind(item: dict, layer: keras.Layer) -> bool:
    """Whether the layer ``item`` of a ``config.json`` may be read into ``layer``: its class, or a subclass of it."""
    return item["class_name"] in {kind.__name__ for kind in type(layer).__mro__}


def _pairs(items: list[dict], layers: list) -> list[tuple[str, str, list | None]] | None:
    """The layers of a model's ``config.json`` ``items`` paired with ``layers`` place by place: the file's group
    name, the built network's, and a nested model's own pairs (None for a layer); None when they are not as many.
    A layer whose class is neither the file's nor a subclass of it is not paired."""
    if len(items) != len(layers):
        return None
    their_names = _numbered([keras_name(item["class_name"]) for item in items])
    our_names = _numbered([keras_name(type(layer).__name__) for layer in layers])
    pairs: list[tuple[str, str, list | None]] = []
    for item, layer, their_name, our_name in zip(items, layers, their_names, our_names):
        if _same_kind(item, layer):
            nested = _pairs(item["config"]["layers"], layer.layers) if isinstance(layer, keras.Model) else None
            pairs.append((their_name, our_name, nested))
    return pairs


def _moved(pairs: list | None) -> bool:
    return pairs is not None and any(theirs != ours or _moved(nested) for theirs, ours, nested in pairs)


def _rename(group: h5py.Group, pairs: list) -> None:
    """Give the layer groups of ``group`` the built network's names (links renamed: no value copied); a layer
    not paired is dropped."""
    if LAYERS not in group:
        return
    group.move(LAYERS, _STAGED)
    group.create_group(LAYERS)
    for theirs, ours, nested in pairs:
        if theirs in group[_STAGED]:
            group.move(f"{_STAGED}/{theirs}", f"{LAYERS}/{ours}")
            if nested is not None and isinstance(group[f"{LAYERS}/{ours}"], h5py.Group):
                _rename(group[f"{LAYERS}/{ours}"], nested)
    del group[_STAGED]


def weights_for(model: keras.Model, config: dict, weights: bytes) -> bytes:
    """``weights`` (a ``model.weights.h5`` whose network the ``config.json`` ``config`` lists, as
    :func:`moleseg.network.configguard.check_network` passed it) with each layer's group where ``model`` reads
    it (:func:`_pairs`): ``weights`` itself when every layer is there already; a layer not paired is left out
    (Keras then says which weights are missing)."""
    pairs = _pairs(config["config"]["layers"], model.layers)
    if not _moved(pairs):
        return weights
    buffer = io.BytesIO(weights)
    with h5py.File(buffer, "r+") as file:
        _rename(file, pairs)
    return buffer.getvalue()


def _paired_layers(items: list[dict], layers: list) -> list[tuple[dict, keras.Layer]]:
    """The layers of a model's ``config.json`` ``items`` and ``layers`` paired place by place as :func:`_pairs` pairs
    them (nested models' layers too); none when they are not as many."""
    if len(items) != len(layers):
        return []
    found: list[tuple[dict, keras.Layer]] = []
    for item, layer in zip(items, layers):
        if _same_kind(item, layer):
            found.append((item, layer))
            if isinstance(layer, keras.Model):
                found.extend(_paired_layers(item["config"]["layers"], layer.layers))
    return found


def freeze_as_saved(model: keras.Model, config: dict) -> int:
    """Freeze each BatchNormalization layer of ``model`` that the file whose ``config.json`` is ``config`` saved
    frozen (a resumed training's own checkpoint: the layers its start froze, :func:`moleseg.network.bnrescue.
    freeze_loaded_batchnorm`, before its solver's variables are made for the others). Returns how many."""
    frozen = 0
    for item, layer in _paired_layers(config["config"]["layers"], model.layers):
        if isinstance(layer, keras.layers.BatchNormalization) and item["config"].get("trainable") is False:
            layer.trainable = False
            frozen += 1
    return frozen
