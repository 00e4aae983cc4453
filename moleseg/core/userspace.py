"""Each user's own folders on a shared server: the safe folder name of a user name and the space it names.

In shared mode every browser user writes and reads their own training runs, studies and "My dataset" in
``<data folder>/users/<safe name>/`` (:func:`shared_space`), created on first use for the server's account
only (mode 0700). In personal mode the one user keeps the data folder's own ``runs/`` and ``corrections/``
(:func:`personal_space`).

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
from dataclasses import dataclass
from pathlib import Path

from moleseg.core.config import CORRECTIONS_FOLDER_NAME, RUNS_FOLDER_NAME, corrections_dir, runs_dir

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


def shared_space(data: Path, user_name: str) -> UserSpace:
    """``user_name``'s space in the data folder ``data`` (``users/<folder_name>/`` with the data folder's
    :data:`~moleseg.core.config.RUNS_FOLDER_NAME` and :data:`~moleseg.core.config.CORRECTIONS_FOLDER_NAME`),
    its folders created with mode :data:`SPACE_MODE` when missing.

    Raises
    ------
    OSError
        When the folders cannot be created.
    """
    users = _private_folder(data / USERS_FOLDER_NAME)
    home = _private_folder(users / folder_name(user_name))
    return UserSpace(runs=_private_folder(home / RUNS_FOLDER_NAME),
                     dataset=_private_folder(home / CORRECTIONS_FOLDER_NAME), shared=True)


def personal_space() -> UserSpace:
    """The one user's space in personal mode: :func:`~moleseg.core.config.runs_dir` and
    :func:`~moleseg.core.config.corrections_dir` (created on use by whatever writes there)."""
    return UserSpace(runs=runs_dir(), dataset=corrections_dir())
