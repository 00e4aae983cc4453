"""Save and load moleseg models: one ``.keras`` file with the network and its ``moleseg.json`` (loaded by
:func:`moleseg.network.build.load_keras_model`, the builder's: it builds the network the file describes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras

from moleseg.core.atomic import atomic_output
from moleseg.core.modelinfo import read_model_info, write_model_info
from moleseg.network.build import load_keras_model, load_weights_into

__all__ = ["load_keras_model", "load_model_and_info", "load_weights_into", "save_model"]


def save_model(model: keras.Model, path: str | Path, info: dict[str, Any]) -> Path:
    """Write ``model`` and ``info`` to ``path`` atomically (a killed save leaves the old file intact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temporary:
        model.save(str(temporary), zipped=True)
        write_model_info(temporary, info)
    return path


def load_model_and_info(path: str | Path) -> tuple[keras.Model, dict[str, Any]]:
    """The network and its moleseg metadata."""
    info = read_model_info(path)
    return load_keras_model(path), info
