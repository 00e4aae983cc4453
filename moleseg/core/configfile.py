"""Reading a configuration file (a run's ``config.json`` or a recipe in ``models/``) into option values.

The options themselves, their defaults and their one check live in :mod:`moleseg.core.options`; this module
turns a JSON file into a dictionary of them, relative folders resolved. Standard library only.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Mapping

from moleseg.core.errors import duplicate_key, parse_failure
from moleseg.core.options import OPTIONS, unknown_keys, with_size_reference
from moleseg.core.words import noun_for


#: Keys a configuration file may hold besides the options: ``run_dir`` (written into a run's
#: ``config.json``) and ``recipe`` (a shipped model's test folders and held-out shares, see
#: :mod:`moleseg.tools.shipped`).
EXTRA_KEYS: tuple[str, ...] = ("run_dir", "recipe")


def resolve_folders(config: Mapping[str, Any], root: str | Path) -> dict[str, Any]:
    """``config`` with every relative folder (the ``folders`` options, and ``weights`` and ``cache_dir``
    when they are relative paths that exist under ``root``) made absolute under ``root``. A value of another kind
    (a number, a path with a NUL character) is left as it is, for :func:`moleseg.core.options.problems` to
    refuse."""
    root = Path(root)
    values = copy.deepcopy(dict(config))
    for item in OPTIONS:
        folders = values.get(item.name)
        if item.kind == "folders" and isinstance(folders, list) and all(map(_is_path, folders)):
            values[item.name] = [str(folder) if Path(folder).is_absolute() else str(root / folder)
                                 for folder in folders]
    for name in ("weights", "cache_dir"):
        value = values.get(name)
        if _is_path(value) and value not in ("none", "imagenet") and not Path(value).is_absolute() \
                and (root / value).exists():
            values[name] = str(root / value)
    return values


def _is_path(value: Any) -> bool:
    """Whether ``value`` is text that can name a file (no NUL character, which the system refuses)."""
    return isinstance(value, str) and "\0" not in value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members as a dict, refusing a key given twice (``json`` keeps the last silently)."""
    values: dict[str, Any] = {}
    for key, value in pairs:
        if key in values:
            raise ValueError(duplicate_key(key))
        values[key] = value
    return values


def read_config_file(path: str | Path, data_root: str | Path | None = None) -> dict[str, Any]:
    """The options of a configuration file (a run's ``config.json`` or a recipe in ``models/``).

    Relative folders are taken under ``data_root``, by default the folder holding the file. Keys in
    :data:`EXTRA_KEYS` are dropped; an older file's px sizes keep their meaning (:func:`moleseg.core.options.with_size_reference`);
    the values are not checked here (see :func:`moleseg.core.options.problems`).

    Raises
    ------
    ValueError
        When the file is missing, not JSON (nested too deeply, a key given twice or a number of too many digits
        included), not an object, or holds keys that name no option (the message names the file and the keys).
    """
    path = Path(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except FileNotFoundError:
        raise ValueError(f"{path}: configuration file not found") from None
    except (OSError, ValueError, RecursionError) as error:  # JSON, UTF-8, duplicates, deep nesting, long numbers
        raise ValueError(f"{path}: not a JSON configuration file ({parse_failure(error)})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a configuration file holds one JSON object of options")
    unknown = unknown_keys(values, EXTRA_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown {noun_for(len(unknown), 'option')} {', '.join(unknown)}")
    values = with_size_reference({key: value for key, value in values.items() if key not in EXTRA_KEYS})
    return resolve_folders(values, data_root if data_root is not None else path.parent)
