"""How large a regular expression becomes once compiled: the ``regex`` package writes out a counted repetition
(``x{m}``, ``x{m,}``, ``x{m,n}``) as ``x`` that many times, so that 13 characters (``a{4294967294}``) or
nested counts (``(?:(?:a{1000}){1000}){1000}``) take all the machine's memory while it compiles them (about
280 bytes per item: 280 MB for a million). Pure Python; used by :mod:`moleseg.engine.studyplan`.
"""

from __future__ import annotations

import re

#: A counted repetition: ``{m}``, ``{m,}``, ``{,n}``, ``{m,n}``.
_COUNT = re.compile(r"\{(\d*)(?:,(\d*))?\}")
#: A POSIX class in a set, and an escape with a name in braces (a Unicode property or character name).
_POSIX, _NAMED = re.compile(r"\[:\^?\w*:\]"), re.compile(r"\\[pPN]\{[^}]*\}")
#: Inline flags this count cannot follow: verbose mode (``#`` comments) and VERSION1 (nested sets).
UNCOUNTED_FLAGS = re.compile(r"\(\?[\w-]*(x|V1)")


def _set_end(text: str, index: int) -> int:
    """The index after the set ``[...]`` that starts at ``index`` (Python's ``re`` syntax: a ``]`` first in it
    is a member, a ``[`` is a member but for the POSIX class ``[:name:]``)."""
    index += 1 + text.startswith("^", index + 1)
    index += text.startswith("]", index)
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        posix = _POSIX.match(text, index)
        if posix:
            index = posix.end()
            continue
        if text[index] == "]":
            return index + 1
        index += 1
    return index


def spelled_out_size(text: str) -> int:
    """An upper bound of the number of items of the pattern ``text`` with each counted repetition written out:
    a character, an escape or a set counts 1, a group the sum of its items (of all its alternatives), a counted
    repetition multiplies its item by its largest count (``*``, ``+`` and ``?`` by 1).

    Raises
    ------
    ValueError
        The pattern turns on verbose mode or VERSION1 (:data:`UNCOUNTED_FLAGS`), whose syntax this does not
        follow.
    """
    flag = UNCOUNTED_FLAGS.search(text)
    if flag:
        raise ValueError(f"the flag {flag.group(1)} is not for split patterns")
    frames: list[list[int]] = [[]]  # the sizes of the items of each group open at this point
    index = 0
    while index < len(text):
        count = _COUNT.match(text, index)
        if count and (count.group(1) or count.group(2)) and frames[-1]:
            frames[-1][-1] *= int(count.group(2) or count.group(1))
            index = count.end()
        elif text.startswith("(?#", index):  # a comment, to the next ")"
            index = text.find(")", index) % (len(text) + 1) + 1
        elif text[index] == "(":
            frames.append([])
            index += 1
        elif text[index] == ")" and len(frames) > 1:
            inner = frames.pop()
            frames[-1].append(sum(inner))
            index += 1
        else:
            named = _NAMED.match(text, index)
            frames[-1].append(1)
            index = (_set_end(text, index) if text[index] == "[" else named.end() if named else
                     index + 2 if text[index] == "\\" else index + 1)
    return sum(sum(items) for items in frames)
