"""Untrusted text shown in markdown (:func:`moleseg.app.ui.plain_markdown`): model names, file names, record
fields draw no markup."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moleseg.app.ui import WORD_JOINER, plain_markdown


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


#: Text a user's model or file could put in a cell: markup, HTML, pipes, backslashes, entities and line breaks.
UNTRUSTED_CELL = "|*_`<>[]()!#$~:\\&;\n\r\u2028 -=+.@aA1mpltw"


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.text(UNTRUSTED_CELL, max_size=12), min_size=4, max_size=4), min_size=1, max_size=3))
def test_every_cell_of_the_measurement_table_is_shown_as_typed(cells):
    from markdown_it import MarkdownIt

    from moleseg.app import results

    rows = [dict(zip(("measurement", "value", "unit", "meaning"), row)) for row in cells]
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(results, "measurement_table", lambda analysis: rows)
        text = results.measurement_markdown(None)
    tokens = MarkdownIt("commonmark").enable(["table", "strikethrough"]).parse(text)
    assert [token.type for token in tokens if token.nesting == 1 and token.level == 0] == ["table_open"]
    shown = [[child for child in token.children] for token in tokens if token.type == "inline"]
    assert all(child.type == "text" for cell in shown for child in cell)  # no link, image, emphasis, code, HTML
    table = [["".join(child.content for child in cell).replace(WORD_JOINER, "") for cell in shown[index:index + 4]]
             for index in range(0, len(shown), 4)]  # as typed, but for the invisible joiners that break bare links
    assert table == [["Measurement", "Value", "Unit", "Meaning"]] + [
        [" ".join(cell.splitlines()).strip() for cell in row] for row in cells]


def test_the_measurement_table_of_an_analysis_keeps_its_units_and_mm_values():
    from moleseg.app.results import measurement_markdown
    from moleseg.core.measure import Measurement

    analysis = SimpleNamespace(measurements=[
        Measurement("area", "Area", 1234.0, "px2", "Pixels inside the lesion."),
        Measurement("area", "Area", 0.4936, "mm2", "Pixels inside the lesion."),
        Measurement("equivalent_diameter", "Equivalent diameter", 39.64, "mm", "Diameter of a disk of that area.")])
    assert measurement_markdown(analysis).splitlines() == [
        "| Measurement | Value | Unit | Meaning |",
        "|---|---|---|---|",
        "| Area | 1,234 | px² | Pixels inside the lesion. |",
        "| Area | 0.4936 | mm² | Pixels inside the lesion. |",
        "| Equivalent diameter | 39.640 | mm | Diameter of a disk of that area. |"]
