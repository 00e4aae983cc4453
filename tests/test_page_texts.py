"""The pages' own words: a plural follows its count (moleseg.core.words) and the disclaimer is the report's one
constant, never written again by hand in a page."""

from __future__ import annotations

import ast

import pytest

from app_helpers import APP

#: app.py and every page file.
PAGE_SOURCES = [APP, *sorted((APP.parent / "app_pages").glob("*.py"))]


def string_parts(path) -> list[str]:
    """Every string literal of ``path``, the constant parts of f-strings included."""
    return [node.value for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


@pytest.mark.parametrize("path", PAGE_SOURCES, ids=lambda path: path.name)
def test_a_page_writes_neither_a_hand_plural_nor_its_own_disclaimer(path):
    parts = string_parts(path)
    assert parts, f"{path} holds no strings"
    assert [part for part in parts if "(s)" in part or "(es)" in part] == []
    assert [part for part in parts if "medical device" in part] == []


#: The Streamlit widgets whose first argument is their label.
LABELLED_WIDGETS = {"slider", "select_slider", "selectbox", "radio", "checkbox", "toggle", "number_input",
                    "text_input", "multiselect"}


def hand_written_labels(path) -> list[str]:
    """The labels of ``path``'s widgets written as plain strings, without a unit in brackets at their end."""
    calls = (node for node in ast.walk(ast.parse(path.read_text(), str(path))) if isinstance(node, ast.Call))
    return [call.args[0].value.split(" (")[0] for call in calls
            if isinstance(call.func, ast.Attribute) and call.func.attr in LABELLED_WIDGETS and call.args
            and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)]


#: The pages and the app's modules that build widgets for them.
WIDGET_SOURCES = [*PAGE_SOURCES, *sorted((APP.parent / "moleseg" / "app").glob("*.py"))]


@pytest.mark.parametrize("path", WIDGET_SOURCES, ids=lambda path: path.name)
def test_a_widget_of_a_schema_option_takes_its_label_from_the_schema(path):
    from moleseg.core.options import OPTIONS

    titles = {(item.title or item.label).casefold() for item in OPTIONS}
    assert {"structuring element", "border width", "closing radius", "classes", "start from"} <= titles
    assert [label for label in hand_written_labels(path) if label.casefold() in titles] == []
