"""How an error is told in one sentence: the first line of its message, or its type's name when it has none."""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The first non-blank line of ``str(error)``; the error's class name when the message is empty."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
