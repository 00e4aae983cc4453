"""Save and load moleseg models: one ``.keras`` file with the network and its ``moleseg.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras

from moleseg.core.atomic import atomic_output
from moleseg.core.errors import short_reason
from moleseg.core.modelinfo import ModelFileError, check_keras_file, read_model_info, write_model_info
from moleseg.network.batchnorm import FusedBatchNormalization


def save_model(model: keras.Model, path: str | Path, info: dict[str, Any]) -> Path:
    """Write ``model`` and ``info`` to ``path`` atomically (a killed save leaves the old file intact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temporary:
        model.save(str(temporary), zipped=True)
        write_model_info(temporary, info)
    return path


def load_keras_model(path: str | Path, *, compile: bool = False) -> keras.Model:
    """Load the network of a ``.keras`` file (default for inference: not compiled; ``compile=True`` to
    resume training with the optimizer's state).

    Raises
    ------
    ModelFileError
        When the file is missing, damaged, not a Keras model, or Keras cannot read it.
    """
    path = check_keras_file(path)
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True,
                                       custom_objects={"moleseg>FusedBatchNormalization": FusedBatchNormalization})
    except Exception as error:  # Keras raises many types for a corrupt or foreign file
        raise ModelFileError(f"{path.name}: cannot load this model ({short_reason(error)})") from error


def load_model_and_info(path: str | Path) -> tuple[keras.Model, dict[str, Any]]:
    """The network and its moleseg metadata."""
    info = read_model_info(path)
    return load_keras_model(path), info
