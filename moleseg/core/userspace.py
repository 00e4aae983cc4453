"""Each user's own folders on a shared server: the safe folder name of a user name and the space it names.

In shared mode every browser user writes and reads their own training runs, studies, "My dataset" and device
profiles in ``<data folder>/users/<safe name>/`` (:func:`shared_space`), created on first use for the server's
account only (mode 0700). In personal mode the one user keeps the data folder's own ``runs/``,
``corrections/`` and device profiles (:func:`personal_space`). The name is the one the identity source gives
(:func:`signed_in_name`).

Examples
--------
>>> folder_name("Dr. Anna Müller")
'dr.-anna-m-ller-512afbd02caf4bea'
>>> folder_name("../root") == folder_name("..root")
False
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from moleseg.core.config import (CORRECTIONS_FOLDER_NAME, EXAMPLES_CACHE_NAME, RUNS_FOLDER_NAME, corrections_dir,
                                 data_dir, example_cache_dir, runs_dir)
from moleseg.core.devices import DEVICE_PROFILES_FILE
from moleseg.core.errors import is_text_path, shown_name

#: Sub-folder of the data folder holding the users' spaces in shared mode.
USERS_FOLDER_NAME: str = "users"
#: Permissions of a user's space and of the folder holding the spaces: the server's account only.
SPACE_MODE: int = 0o700
#: Longest readable part of a folder name, in characters (the hash follows it).
SLUG_MAX_CHARS: int = 32
#: Hexadecimal digits of the SHA-256 of the exact user name that end a folder name (64 bits).
NAME_HASH_DIGITS: int = 16


@dataclass(frozen=True)
class UserSpace:
    """The folders a user's files go to.

    Attributes
    ----------
    runs
        Training runs, fine-tunes and studies.
    dataset
        "My dataset": ``images/`` + ``masks/`` of the lesions corrected or accepted on the Analyse page.
    shared
        Whether other users share the server (a training outside ``runs`` is then someone else's).
    """

    runs: Path
    dataset: Path
    shared: bool = False

    @property
    def device_profiles(self) -> Path:
        """The device profiles file (:mod:`moleseg.core.devices`): beside :attr:`dataset` (the user's own
        folder in shared mode, the data folder in personal mode)."""
        return self.dataset.parent / DEVICE_PROFILES_FILE

    @property
    def example_cache(self) -> Path:
        """Where the user's trainings keep their resized examples (a named cache is a folder in it). In shared
        mode :data:`~moleseg.core.config.EXAMPLES_CACHE_NAME` in the user's own folder: made from the pictures
        they train on ("My dataset" among them), it counts in their quota, reaches no other user and goes with
        their folder. In personal mode the app's cache folder (:func:`~moleseg.core.config.example_cache_dir`)."""
        return self.runs.parent / EXAMPLES_CACHE_NAME if self.shared else example_cache_dir()


def signed_in_name(text: str) -> str:
    """The user name of an identity source's ``text`` (a proxy header's value, a signed-in e-mail, a name the
    operator types): the text without surrounding blanks, as the app takes it.

    Raises
    ------
    ValueError
        When nothing is left, or the name holds a control character (no HTTP header value carries one) or bytes
        that are not UTF-8.
    """
    name = text.strip()
    if not name:
        raise ValueError("a user name cannot be empty")
    if any(unicodedata.category(character) == "Cc" for character in name):
        raise ValueError(f"the user name {name!r} holds a control character, which no sign-in gives")
    if not is_text_path(name):  # bytes of another encoding (an argument typed in a Latin-1 terminal)
        raise ValueError(f"the user name '{shown_name(name)}' is not UTF-8 text, which every sign-in gives")
    return name


def folder_name(user_name: str) -> str:
    """The folder name of ``user_name``'s space: a readable slug (lower case letters, digits, ``.``, ``_`` and
    ``-``; no separator, never ``.`` or ``..``) then ``-`` and :data:`NAME_HASH_DIGITS` hexadecimal digits of
    the SHA-256 of the exact name, so that two names whose slugs agree still get different folders."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", user_name.strip().lower()).strip(".-")[:SLUG_MAX_CHARS] or "user"
    digest = hashlib.sha256(user_name.encode("utf-8")).hexdigest()[:NAME_HASH_DIGITS]
    return f"{slug}-{digest}"


def _private_folder(folder: Path) -> Path:
    folder.mkdir(mode=SPACE_MODE, parents=True, exist_ok=True)
    folder.chmod(SPACE_MODE)
    return folder


def shared_space_folders(data: Path, user_name: str) -> UserSpace:
    """``user_name``'s space in the data folder ``data``, creating nothing: ``users/<folder_name>/`` with the
    data folder's :data:`~moleseg.core.config.RUNS_FOLDER_NAME` and
    :data:`~moleseg.core.config.CORRECTIONS_FOLDER_NAME`."""
    home = data / USERS_FOLDER_NAME / folder_name(user_name)
    return UserSpace(runs=home / RUNS_FOLDER_NAME, dataset=home / CORRECTIONS_FOLDER_NAME, shared=True)


def owning_space(path: str | Path) -> UserSpace | None:
    """The shared-mode space whose user's own folder (``<data folder>/users/<folder name>/``) holds ``path`` (a
    run or study folder), creating nothing; None when ``path`` lies in no user's folder."""
    users = (data_dir() / USERS_FOLDER_NAME).resolve()
    try:
        home = users / Path(path).resolve().relative_to(users).parts[0]
    except (ValueError, IndexError):  # outside, or the users folder itself
        return None
    return UserSpace(runs=home / RUNS_FOLDER_NAME, dataset=home / CORRECTIONS_FOLDER_NAME, shared=True)


def shared_space(data: Path, user_name: str) -> UserSpace:
    """``user_name``'s space in the data folder ``data`` (:func:`shared_space_folders`), its folders created
    with mode :data:`SPACE_MODE` when missing.

    Raises
    ------
    OSError
        When the folders cannot be created.
    """
    space = shared_space_folders(data, user_name)
    for folder in (space.runs.parents[1], space.runs.parent, space.runs, space.dataset):
        _private_folder(folder)
    return space


def personal_space() -> UserSpace:
    """The one user's space in personal mode: :func:`~moleseg.core.config.runs_dir` and
    :func:`~moleseg.core.config.corrections_dir` (created on use by whatever writes there)."""
    return UserSpace(runs=runs_dir(), dataset=corrections_dir())
