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


def _moves(items: list[dict], layers: list, theirs: str = "", ours: str = "") -> dict[str, str]:
    """The file's group (under ``theirs``) of each layer of ``layers`` (under ``ours``), the layers of a model's
    ``config.json`` ``items`` paired with them place by place; none when they are not as many, and no layer whose
    class is neither the file's nor a subclass of it."""
    if len(items) != len(layers):
        return {}
    their_names = _numbered([keras_name(item["class_name"]) for item in items])
    our_names = _numbered([keras_name(type(layer).__name__) for layer in layers])
    moves: dict[str, str] = {}
    for item, layer, their_name, our_name in zip(items, layers, their_names, our_names):
        if item["class_name"] not in {kind.__name__ for kind in type(layer).__mro__}:
            continue
        origin, path = f"{theirs}{LAYERS}/{their_name}", f"{ours}{LAYERS}/{our_name}"
        moves[path] = origin
        if isinstance(layer, keras.Model):
            moves.update(_moves(item["config"]["layers"], layer.layers, f"{origin}/", f"{path}/"))
    return moves


def weights_for(model: keras.Model, config: dict, weights: bytes) -> bytes:
    """``weights`` (a ``model.weights.h5`` whose network the ``config.json`` ``config`` lists, as
    :func:`moleseg.network.configguard.check_network` passed it) with each layer's group where ``model`` reads
    it (:func:`_moves`): ``weights`` itself when every layer is there already; a layer not paired is left out
    (Keras then says which weights are missing)."""
    moves = _moves(config["config"]["layers"], model.layers)
    if all(origin == path for path, origin in moves.items()):
        return weights
    moved = io.BytesIO()
    with h5py.File(io.BytesIO(weights), "r") as source, h5py.File(moved, "w") as target:
        for key, value in source.attrs.items():
            target.attrs[key] = value
        for name in source:  # the model's own variables, the solver's...: where they are
            if name != LAYERS:
                source.copy(source[name], target, name=name)
        for path, origin in sorted(moves.items(), key=lambda item: item[0].count("/")):
            if origin not in source:
                continue
            target.require_group(path.rsplit("/", 1)[0])
            group = source[origin]
            if isinstance(group, h5py.Group) and LAYERS in group:  # a nested model: its layers are moved one by one
                for name in group:
                    if name != LAYERS:
                        source.copy(group[name], target.require_group(path), name=name)
            else:
                source.copy(group, target, name=path)
    return moved.getvalue()
