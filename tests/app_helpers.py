"""Helpers of the app tests (tests/test_app_*.py): an AppTest of app.py and its texts (synthetic moles are in
tests/synthetic.py, the isolated app folders are the ``app_folders`` fixture of tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app.py"


def app_test(page: str | None = None, timeout: float = 60):
    """An AppTest of app.py, run once, switched to ``page`` (e.g. ``"pages/analyse.py"``) and run."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=timeout).run()
    if page:
        at.switch_page(page).run()
    return at


def texts(elements) -> list[str]:
    """The values of Streamlit elements, as strings."""
    return [str(element.value) for element in elements]
