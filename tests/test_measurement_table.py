"""The Analyse page's measurement table (:func:`moleseg.app.results.measurement_html`): three columns that fit a
phone, the meaning in small type under each name, every cell shown as typed."""

from __future__ import annotations

from html.parser import HTMLParser
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app_helpers import html_table_rows
from moleseg.app import results
from moleseg.core.measure import Measurement

#: Text a user's model or file could put in a cell: markup, HTML, entities, quotes, pipes and line breaks.
UNTRUSTED_CELL = "|*_`<>[]()!#$~:\\&;'\"\n\r\u2028 -=+/.@aA1mpltw"
#: The elements the table may hold, and so the only tags a cell could not add.
TABLE_TAGS = {"table", "thead", "tbody", "tr", "th", "td", "small", "style"}


class Tags(HTMLParser):
    """Every start tag of an HTML text, with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))


def tags_of(text: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(text)
    return parser.found


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.text(UNTRUSTED_CELL, max_size=12), min_size=4, max_size=4), min_size=1, max_size=3))
def test_every_cell_of_the_measurement_table_is_shown_as_typed(cells):
    rows = [dict(zip(("measurement", "value", "unit", "meaning"), row)) for row in cells]
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(results, "measurement_table", lambda analysis: rows)
        text = results.measurement_html(None)
    assert {tag for tag, _ in tags_of(text)} <= TABLE_TAGS  # no link, image, script or form from a cell
    assert {name for _, attributes in tags_of(text) for name in attributes} <= {"class", "scope", "rowspan"}
    assert html_table_rows(text) == rows  # each cell as typed, in its row and column


def test_the_table_of_an_analysis_keeps_its_units_and_mm_values_under_one_name():
    analysis = SimpleNamespace(measurements=[
        Measurement("area", "Area", 1234.0, "px2", "Pixels inside the lesion."),
        Measurement("area", "Area", 0.4936, "mm2", "Pixels inside the lesion."),
        Measurement("equivalent_diameter", "Equivalent diameter", 39.64, "mm", "Diameter of a disk of that area.")])
    text = results.measurement_html(analysis)
    assert text == (
        '<table class="moleseg-measurements"><thead><tr><th scope="col">Measurement</th><th scope="col">Value</th>'
        '<th scope="col">Unit</th></tr></thead><tbody>'
        '<tr><th scope="row" rowspan="2">Area<small>Pixels inside the lesion.</small></th>'
        '<td>1,234</td><td>px²</td></tr>'
        '<tr><td>0.4936</td><td>mm²</td></tr>'
        '<tr><th scope="row">Equivalent diameter<small>Diameter of a disk of that area.</small></th>'
        '<td>39.640</td><td>mm</td></tr>'
        f"</tbody></table><style>{results.MEASUREMENT_TABLE_CSS}</style>")
    assert html_table_rows(text) == results.measurement_table(analysis)


def test_no_measurements_no_table():
    assert results.measurement_html(SimpleNamespace(measurements=[])) == ""


@pytest.mark.parametrize("name", ["<script>alert(1)</script>", '<img src=x onerror="alert(1)">', "a\"b'c&amp;d",
                                  "line\nbreak", "\u202eevil\u202c", "</td></tr></table><b>out</b>",
                                  "<style>*{}</style>"])
def test_a_name_or_unit_from_a_users_model_cannot_add_markup(name):
    analysis = SimpleNamespace(measurements=[Measurement("area", name, 5.0, "px2", name),
                                             Measurement("area", name, 0.5, name, name)])
    text = results.measurement_html(analysis)
    assert [tag for tag, _ in tags_of(text)] == ["table", "thead", "tr", "th", "th", "th", "tbody", "tr", "th", "small",
                                                 "td", "td", "tr", "td", "td", "style"]
    shown = html_table_rows(text)
    assert shown == results.measurement_table(analysis)
    assert [(row["measurement"], row["unit"], row["meaning"]) for row in shown] == [(name, "px²", name),
                                                                                    (name, name, name)]


def test_a_long_name_or_unit_wraps_and_a_meanings_direction_stays_its_own():
    rules = dict(rule.split("{") for rule in results.MEASUREMENT_TABLE_CSS.rstrip("}").split("}"))
    wrapping = [selector for selector, declarations in rules.items() if "overflow-wrap:anywhere" in declarations]
    assert wrapping == [".moleseg-measurements th,.moleseg-measurements td:last-child"]  # names, units
    assert "unicode-bidi:isolate" in rules[".moleseg-measurements small"].split(";")  # the meaning
