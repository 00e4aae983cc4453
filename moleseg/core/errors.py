"""How an error is told in one sentence: the first line of its message (its type's name when it has none), and
the words every reader uses for a file it cannot open or a folder that is not there."""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The first non-blank line of ``str(error)``; the error's class name when the message is empty."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def open_failure(error: OSError) -> str:
    """Why a file could not be opened, for a reader's message: ``"cannot open the file (Permission denied)"``
    (the system's words, or the error's text when it has none)."""
    return f"cannot open the file ({error.strerror or error})"


def folder_not_found(folder: object) -> str:
    """The refusal of a folder that does not exist: ``"folder not found: /data/moles"``."""
    return f"folder not found: {folder}"
