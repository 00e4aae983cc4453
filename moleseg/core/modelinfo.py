"""Read and write the metadata moleseg keeps inside a ``.keras`` file, without TensorFlow.

A ``.keras`` file is a zip archive (Keras writes ``config.json``, ``metadata.json`` and
``model.weights.h5``). moleseg adds one more entry, ``moleseg.json``, with everything needed to
predict and to describe the model: classes, class names, input size, border width, cleanup defaults,
training data summary and metrics. Keras ignores the extra entry when loading.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

from moleseg.core.atomic import atomic_output

INFO_ENTRY = "moleseg.json"


class ModelFileError(ValueError):
    """A model file that is missing, not a ``.keras`` archive, or has no moleseg metadata."""


def read_model_info(path: str | Path) -> dict[str, Any]:
    """Return the ``moleseg.json`` dictionary of a ``.keras`` file.

    Raises
    ------
    ModelFileError
        When the file is missing, not a zip archive, or was not written by moleseg.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        with zipfile.ZipFile(path) as archive:
            if INFO_ENTRY not in archive.namelist():
                raise ModelFileError(f"{path.name}: not a moleseg model (no {INFO_ENTRY} inside)")
            return json.loads(archive.read(INFO_ENTRY).decode("utf-8"))
    except zipfile.BadZipFile as error:
        raise ModelFileError(f"{path.name}: not a .keras model file ({error})") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(f"{path.name}: its {INFO_ENTRY} is corrupt ({error})") from error


def write_model_info(path: str | Path, info: dict[str, Any]) -> None:
    """Add or replace ``moleseg.json`` in an existing ``.keras`` file, atomically."""
    path = Path(path)
    payload = json.dumps(info, indent=2, sort_keys=True, default=_json_default).encode("utf-8")
    with atomic_output(path) as temporary, zipfile.ZipFile(path) as source, \
            zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED) as target:
        for item in source.infolist():
            if item.filename != INFO_ENTRY:
                with source.open(item) as data, target.open(item, "w") as out:
                    shutil.copyfileobj(data, out)
        target.writestr(INFO_ENTRY, payload)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
