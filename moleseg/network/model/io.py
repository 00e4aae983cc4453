"""Save and load moleseg models: one ``.keras`` file with the network and its ``moleseg.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras

from moleseg.core.atomic import atomic_output
from moleseg.core.modelinfo import ModelFileError, read_model_info, write_model_info


def save_model(model: keras.Model, path: str | Path, info: dict[str, Any]) -> Path:
    """Write ``model`` and ``info`` to ``path`` atomically (a killed save leaves the old file intact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temporary:
        model.save(str(temporary), zipped=True)
        write_model_info(temporary, info)
    return path


def load_keras_model(path: str | Path) -> keras.Model:
    """Load the network of a ``.keras`` file (for inference: not compiled).

    Raises
    ------
    ModelFileError
        When the file is missing or Keras cannot read it.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a corrupt or foreign file
        raise ModelFileError(f"{path.name}: cannot load this model ({type(error).__name__}: {error})") from error


def load_model_and_info(path: str | Path) -> tuple[keras.Model, dict[str, Any]]:
    """The network and its moleseg metadata."""
    info = read_model_info(path)
    return load_keras_model(path), info
