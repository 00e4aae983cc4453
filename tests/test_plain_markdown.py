"""Text from model files shown in markdown (:func:`moleseg.app.ui.plain_markdown`) draws no markup."""

from __future__ import annotations

from moleseg.app.ui import plain_markdown


def test_a_time_holds_no_emoji_code():
    assert plain_markdown("2026-11-25T05:12:45") == "2026-11-25T05\\:12\\:45"


def test_links_images_html_maths_and_emphasis_in_a_model_name_are_shown_as_typed():
    name = "![x](https://e.example/t.png) [update](https://e.example) <img src=x> $x$ **b** _i_ `c` ~~s~~ :red[r]"
    assert plain_markdown(name) == ("!\\[x\\](https\\://e.example/t.png) \\[update\\](https\\://e.example) "
                                    "\\<img src=x\\> \\$x\\$ \\*\\*b\\*\\* \\_i\\_ \\`c\\` \\~\\~s\\~\\~ "
                                    "\\:red\\[r\\]")


def test_a_backslash_and_a_line_break_cannot_undo_the_escapes():
    assert plain_markdown("a\\*b\n# heading") == "a\\\\\\*b # heading"
