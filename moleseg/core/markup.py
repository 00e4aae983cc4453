"""Untrusted text (a model's or a study's names, a file name, a record's fields) inside markdown, shown as it
is: no link, picture, emphasis, maths or emoji code of its own (:func:`plain_markdown`), nor a table cell
split by it (:func:`table_cell`)."""

from __future__ import annotations

import re

#: The characters that start markdown's inline markup as Streamlit reads it: escapes, code, emphasis, links and
#: images, HTML and autolinks, maths, strike-through, emoji codes (``:smile:``), coloured text (``:red[...]``) and
#: character references (``&amp;``).
MARKDOWN_MARKUP: str = "\\`*_[]<>$~:&"
#: An invisible character that joins what it stands between (U+2060 WORD JOINER): :func:`plain_markdown` puts it
#: where a bare address would start a link.
WORD_JOINER: str = "\u2060"
#: Where GitHub's markdown (Streamlit's) makes a link of bare text, even with its markup escaped (it finds them in
#: the text once the escapes are read): ``http:`` and ``https:`` before their colon, ``www.`` before its dot,
#: a mail address before its ``@`` (any case).
BARE_LINK_STARTS: str = r"(?i:(?<=https)(?=:)|(?<=http)(?=:)|(?<=www)(?=\.)|(?=@))"


def plain_markdown(text: str) -> str:
    """``text`` (a model's name or version, a device) for markdown, shown as it is: each character of
    :data:`MARKDOWN_MARKUP` backslash-escaped, a :data:`WORD_JOINER` where a bare address would start a link
    (:data:`BARE_LINK_STARTS`) and line breaks made spaces, so that a name from an untrusted model file draws no
    link, image, emphasis or maths, and nothing in it reads as an emoji code (a time such as ``05:12:45`` holds
    ``:12:``): the browser then neither fetches nor runs its emoji library (about 260 kB of script) before it
    draws the page."""
    joined = re.sub(BARE_LINK_STARTS, WORD_JOINER, " ".join(text.splitlines()))
    return re.sub(f"[{re.escape(MARKDOWN_MARKUP)}]", r"\\\g<0>", joined)


def table_cell(text: str) -> str:
    """``text`` in a cell of a markdown table, shown as it is: :func:`plain_markdown` with ``|`` escaped too."""
    return plain_markdown(text).replace("|", "\\|")
