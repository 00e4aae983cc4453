"""A ``multiprocessing`` "spawn" child started after an ``AppTest`` page ran in the test process starts and
answers (tests/conftest.py ``main_module_kept``): Streamlit's script runner leaves the page as the process's
``__main__``, which a spawn child would run as its own main module and die on. The two tests run in this order."""

from __future__ import annotations

import multiprocessing
import sys

from streamlit.testing.v1 import AppTest


def page() -> None:
    import streamlit as st

    st.write("a page")


def test_a_page_run_in_the_test_process_leaves_its_own_main_module_behind_it():
    main = sys.modules["__main__"]
    at = AppTest.from_function(page).run()
    assert not at.exception
    assert sys.modules["__main__"] is not main  # what the fixture puts back after this test


def test_a_spawned_pool_then_starts_and_answers():
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.map(abs, [-3, 4]) == [3, 4]
