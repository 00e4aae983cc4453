"""Untrusted text shown in markdown (:func:`moleseg.app.ui.plain_markdown`): model names, file names, record
fields draw no markup."""

from __future__ import annotations

from types import SimpleNamespace

from moleseg.app.ui import plain_markdown


def test_a_time_holds_no_emoji_code():
    assert plain_markdown("2026-11-25T05:12:45") == "2026-11-25T05\\:12\\:45"


def test_links_images_html_maths_and_emphasis_in_a_model_name_are_shown_as_typed():
    name = "![x](https://e.example/t.png) [update](https://e.example) <img src=x> $x$ **b** _i_ `c` ~~s~~ :red[r]"
    assert plain_markdown(name) == ("!\\[x\\](https\u2060\\://e.example/t.png) \\[update\\](https\u2060\\://e.example) "
                                    "\\<img src=x\\> \\$x\\$ \\*\\*b\\*\\* \\_i\\_ \\`c\\` \\~\\~s\\~\\~ "
                                    "\\:red\\[r\\]")


def test_a_bare_web_or_mail_address_draws_no_link():
    # Streamlit's markdown links them from the text once its escapes are read: a word joiner breaks each start
    assert plain_markdown("https://e.example HTTP://e.example www.e.example WWW.e.example me@e.example") == (
        "https\u2060\\://e.example HTTP\u2060\\://e.example www\u2060.e.example WWW\u2060.e.example "
        "me\u2060@e.example")


def test_a_character_reference_is_shown_as_typed():
    assert plain_markdown("R&amp;D &#124; &lt;b&gt;") == "R\\&amp;D \\&#124; \\&lt;b\\&gt;"


def test_a_backslash_and_a_line_break_cannot_undo_the_escapes():
    assert plain_markdown("a\\*b\n# heading") == "a\\\\\\*b # heading"


def test_the_compare_caption_shows_a_model_name_as_typed():
    from moleseg.app.followup import settings_caption

    comparison = SimpleNamespace(pixel_size_mm=None, model_name="[x](http://e.x)*a*", noise_source=lambda text: text)
    assert settings_caption(comparison) == ("Pixel size used: none (lengths in px only). Model: "
                                            "\\[x\\](http\u2060\\://e.x)\\*a\\*. Noise from the published repeatability "
                                            "(docs/repeatability.md).")


def test_mask_warnings_show_the_mask_names_as_typed():
    from moleseg.app.preparation import degenerate_mask_warnings

    assert degenerate_mask_warnings(["[x](http://e.x)*a*.png"], []) == [
        "1 empty mask (no foreground pixel, all black; scored and trained as 'no lesion'): "
        "\\[x\\](http\u2060\\://e.x)\\*a\\*.png"]
