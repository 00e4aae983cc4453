"""How an error is told in one sentence: the first line of its message (its type's name when it has none), and
the words every reader uses for a file it cannot open, a folder that is not there or a path that is not text."""

from __future__ import annotations

import os
import sys
import unicodedata

#: Why a path whose bytes are not UTF-8 (a name from another system's encoding) is refused or left out: the
#: results name each image by its path, in UTF-8 tables (measurements.csv, score tables) and in the app's pages.
NOT_TEXT_PATH = "its path is not UTF-8 text: rename the file (the results name each image by its path)"


#: Most characters of a library's reason quoted in a refusal (:func:`short_reason`).
MAX_REASON_CHARACTERS: int = 300


def first_line(error: BaseException) -> str:
    """The first non-blank line of ``str(error)``; the error's class name when the message is empty."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def short_reason(error: BaseException) -> str:
    """``"<type>: <first line>"`` of a library's error, cut to :data:`MAX_REASON_CHARACTERS` (ending ``...``):
    some put a whole untrusted file in their message (Keras: a model's configuration, 100 kB and more)."""
    text = f"{type(error).__name__}: {first_line(error)}"
    return text if len(text) <= MAX_REASON_CHARACTERS else text[:MAX_REASON_CHARACTERS - 3] + "..."


def parse_failure(error: BaseException) -> str:
    """Why a JSON or YAML document could not be parsed, in one phrase: deep nesting (a RecursionError) and a
    number of too many digits (Python's ValueError, whose advice is for programmers) told plainly, any other
    error by its first line."""
    if isinstance(error, RecursionError):
        return "nested too deeply"
    if isinstance(error, ValueError) and "integer string conversion" in str(error):
        return f"a number of more than {sys.get_int_max_str_digits()} digits"
    return first_line(error)


def duplicate_key(key: object, lines: tuple[int, int] | None = None) -> str:
    """The refusal of a mapping that gives ``key`` twice (a parser would keep the last silently), with the two
    lines when known: ``"the key 'epochs' is given twice, on lines 3 and 5"``."""
    where = f", on lines {lines[0]} and {lines[1]}" if lines else ""
    return f"the key {str(key)!r} is given twice{where}"


def open_failure(error: OSError) -> str:
    """Why a file could not be opened, for a reader's message: ``"cannot open the file (Permission denied)"``
    (the system's words, or the error's text when it has none)."""
    return f"cannot open the file ({error.strerror or error})"


def folder_not_found(folder: object) -> str:
    """The refusal of a folder that does not exist: ``"folder not found: /data/moles"``."""
    return f"folder not found: {folder}"


def is_text_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is UTF-8 text: False when it holds bytes :func:`os.fsdecode` kept as lone surrogates."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown_name(text: str) -> str:
    """``text`` (a file name) with each byte that is not UTF-8 (a lone surrogate U+DC80..U+DCFF, as
    :func:`os.fsdecode` keeps it) written ``\\xNN``: text that can be shown and written as UTF-8."""
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in text)


def printable(text: str) -> str:
    """``text`` with control and other non-printable characters escaped (``\\n``, ``\\x1b``, a bidi override
    ``\\u202e``, a line separator ``\\u2028``, ...), a byte of a file name that is not UTF-8 as ``\\xNN``
    (:func:`shown_name`): one line that moves no cursor, for a name in a message. Spaces (Unicode's ``Zs``: a
    no-break space, an ideographic space in a Japanese name, macOS's narrow no-break space before a screenshot's
    AM) and the joiners of :data:`NAME_JOINERS` are kept: they move no cursor, and the name stays the file's."""
    if text.isprintable():
        return text
    text = shown_name(text)
    return "".join(c if c.isprintable() or c in NAME_JOINERS or unicodedata.category(c) == "Zs"
                   else c.encode("unicode_escape").decode("ascii") for c in text)


#: Format characters that :func:`printable` keeps, for they are letters' business, not the terminal's: the
#: zero-width non-joiner of Persian words and the zero-width joiner of Indic conjuncts and emoji sequences.
#: (Direction marks and overrides, the other format characters, are escaped.)
NAME_JOINERS: str = "\u200c\u200d"
