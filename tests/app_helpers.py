"""Helpers of the app tests (tests/test_app_*.py): an AppTest of app.py and its texts (synthetic moles are in
tests/synthetic.py, the isolated app folders are the ``app_folders`` fixture of tests/conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

APP = Path(__file__).resolve().parents[1] / "app.py"


def app_test(page: str | None = None, timeout: float = 60, empty_cache: bool = True):
    """An AppTest of app.py, run once, switched to ``page`` (a ``moleseg.app.ui.PAGE_FILES`` value) and run.
    The server's analysis cache is emptied first unless ``empty_cache`` is false (the tests of one process
    share it, as the sessions of a server do)."""
    from streamlit.testing.v1 import AppTest

    from moleseg.app import ui

    if empty_cache:
        ui.analysis_store().clear()
    at = AppTest.from_file(str(APP), default_timeout=timeout).run()
    if page:
        at.switch_page(page).run()
    return at


def run_until(at, condition: Callable[[Any], bool], timeout: float = 60, pause: float = 0.2):
    """Run ``at`` again (as the page's polling fragment would) until ``condition(at)`` holds; fails after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition(at):
        assert time.monotonic() < deadline, f"not reached within {timeout} s"
        time.sleep(pause)
        at.run()
    return at


def texts(elements) -> list[str]:
    """The values of Streamlit elements, as strings."""
    return [str(element.value) for element in elements]
