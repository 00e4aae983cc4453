"""Numbers in words for messages: a count with its noun in the right number, a byte size with a unit that fits."""

from __future__ import annotations

__all__ = ["capitalised", "count_of", "noun_for", "size_text"]

#: Byte units of :func:`size_text`, largest first (binary multiples: 1 KB = 1024 bytes).
BYTE_UNITS: tuple[tuple[str, int], ...] = (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024))


def capitalised(text: str) -> str:
    """``text`` with its first letter in upper case and the rest as it is: ``capitalised("run Moles-v2")`` is
    ``"Run Moles-v2"`` (``str.capitalize`` would lower the name: ``"Run moles-v2"``)."""
    return text[:1].upper() + text[1:]


def noun_for(count: int, noun: str, plural: str | None = None) -> str:
    """``noun``, plural unless the count is 1: ``noun_for(2, "key")`` is ``"keys"``; ``plural`` gives an irregular
    plural (default ``noun + "s"``)."""
    return noun if count == 1 else plural or noun + "s"


def count_of(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, plural unless the count is 1: ``count_of(1, "pair")`` is ``"1 pair"``,
    ``count_of(3, "pair")`` is ``"3 pairs"``; ``plural`` gives an irregular plural (default ``noun + "s"``)."""
    return f"{count} {noun_for(count, noun, plural)}"


def size_text(n_bytes: int | float) -> str:
    """A size in bytes with the largest unit it reaches: ``"1.5 GB"``, ``"1 MB"``, ``"12 KB"``, ``"900 bytes"``
    (at most one decimal, none when it is 0)."""
    for unit, size in BYTE_UNITS:
        if n_bytes >= size:
            value = round(n_bytes / size, 1)
            return f"{value:g} {unit}"
    return count_of(int(n_bytes), "byte")
