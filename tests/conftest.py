"""Shared test fixtures. Synthetic images and datasets are in tests/synthetic.py, the AppTest helpers in
tests/app_helpers.py; append new fixtures below and keep each section small."""

from __future__ import annotations

import collections
import gc
import os

# Parallel runs (pytest-xdist: ``-n 2`` in the Makefile): each worker process, and every process it starts,
# runs TensorFlow's and the BLAS's kernels on one thread, so that two workers share two cores instead of
# fighting over them. Set before anything imports TensorFlow or numpy's BLAS.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_name, "1")

import time  # noqa: E402
from pathlib import Path
from typing import Callable, Iterator

import pytest
from hypothesis import settings

from moleseg.network.compiled import CACHE_ENV
from moleseg.tools import SHARED_DATA_DIR

# Tests load many small throw-away models: none of them is written to the per-machine inference cache
# (tests/test_inference_cache.py turns it on for itself, in a temporary folder).
os.environ[CACHE_ENV] = "0"

# Property tests draw the same examples on every run (a failure found once is found again, and CI is not
# flaky); MOLESEG_FUZZ_EXAMPLES raises the example counts of tests/test_fuzz.py for long runs.
settings.register_profile("moleseg", derandomize=True, print_blob=True)
settings.load_profile("moleseg")

# --------------------------------------------------------------------------------------------------
# Real data (:data:`moleseg.tools.SHARED_DATA_DIR`)

SHARED_DATA: Path = SHARED_DATA_DIR


@pytest.fixture
def shared_data() -> Path:
    """Root of the real data (it may be absent: see ``require_shared``)."""
    return SHARED_DATA


@pytest.fixture
def require_shared(shared_data: Path) -> Callable[..., Path]:
    """``require_shared(subpath="")``: the path ``shared_data / subpath``, or skip the test when it does not
    exist."""

    def require(subpath: str | os.PathLike[str] = "") -> Path:
        path = shared_data / subpath
        if not path.exists():
            pytest.skip(f"shared data not found at {path}: real-data tests skipped")
        return path

    return require


# --------------------------------------------------------------------------------------------------
# The app's folders


@pytest.fixture
def app_folders(monkeypatch, tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Point the app at empty models/runs folders and a private temporary folder (no shipped model: the app
    falls back to the classical baseline, whatever is installed in the project), and offer ``tmp_path`` as the
    server's one data root; the folders by name."""
    from moleseg.core.settings import load_settings

    folders = {name: tmp_path / name for name in ("models", "runs", "tmp", "cache")}
    for folder in folders.values():
        folder.mkdir(exist_ok=True)
    monkeypatch.setenv("MOLESEG_MODELS_DIR", str(folders["models"]))
    monkeypatch.setenv("MOLESEG_RUNS_DIR", str(folders["runs"]))
    monkeypatch.setenv("MOLESEG_TMPDIR", str(folders["tmp"]))
    monkeypatch.setenv("MOLESEG_CACHE", str(folders["cache"]))
    monkeypatch.setenv("MOLESEG_DATA_ROOTS", str(tmp_path))
    load_settings.cache_clear()
    yield folders
    monkeypatch.undo()
    load_settings.cache_clear()


# --------------------------------------------------------------------------------------------------
# Synthetic dermoscopy scenes (textured skin with a lesion), for registration and comparison tests

@pytest.fixture
def lesion_scene():
    """Factory of synthetic lesion images: ``lesion_scene(radius_px=, angle_deg=, shift_px=, seed=)``."""
    from synthetic import lesion_scene as make

    return make


# --------------------------------------------------------------------------------------------------
# Saved records: every test gets its own data folder, never the user's

@pytest.fixture(autouse=True)
def records_data_dir(tmp_path_factory, monkeypatch) -> Path:
    """A fresh ``MOLESEG_DATA_DIR`` for each test (the records database and files go there)."""
    from moleseg.core.config import DATA_DIR_ENV

    folder = tmp_path_factory.mktemp("moleseg-data")
    monkeypatch.setenv(DATA_DIR_ENV, str(folder))
    return folder


# --------------------------------------------------------------------------------------------------
# A real chromium for the tests that drive the served app (marked ``browser``)

@pytest.fixture
def browser():
    """A headless chromium (playwright); the test is skipped when playwright or chromium is missing."""
    import shutil

    from app_helpers import CHROMIUM_ARGS

    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed")
    with playwright.sync_playwright() as driver:
        instance = driver.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


# --------------------------------------------------------------------------------------------------
# The time budget: pytest-timeout fails a test after its limit (``timeout`` in pyproject.toml, or the
# test's @pytest.mark.timeout(seconds)); a test that waits for a process waits until shortly before then

#: Seconds kept back from a test's limit for its own failure message and the cleanup of its processes.
TIMEOUT_MARGIN_S = 20.0


def timeout_of(request: pytest.FixtureRequest) -> float:
    """The limit of the running test in seconds (pytest-timeout's: the marker, ``--timeout`` or the ini)."""
    marker = request.node.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(request.config.getoption("timeout", None) or request.config.getini("timeout") or 0)


@pytest.fixture
def time_left(request: pytest.FixtureRequest) -> Callable[[], float]:
    """``time_left()``: seconds a wait inside the test may still take, that is until its pytest-timeout less
    :data:`TIMEOUT_MARGIN_S` (at least 1 s; an hour when no limit is set)."""
    limit = timeout_of(request)
    end = time.monotonic() + (limit - TIMEOUT_MARGIN_S if limit > 0 else 3600.0)
    return lambda: max(1.0, end - time.monotonic())


#: A test whose call takes longer than this (seconds) without the ``slow`` or ``browser`` marker is named at
#: the end of the run, to be marked or made faster (``make test-fast`` stays within its 2 minutes).
UNMARKED_SLOW_S = 15.0
_unmarked_slow: list[tuple[float, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if (report.when == "call" and report.duration > UNMARKED_SLOW_S
            and "slow" not in report.keywords and "browser" not in report.keywords):
        _unmarked_slow.append((report.duration, report.nodeid))


def pytest_terminal_summary(terminalreporter) -> None:
    if _unmarked_slow:
        terminalreporter.section("slower than the fast selection allows, but not marked slow or browser")
        for duration, nodeid in sorted(_unmarked_slow, reverse=True):
            terminalreporter.write_line(f"{duration:.1f} s  {nodeid}")


# --------------------------------------------------------------------------------------------------
# Garbage collection: what the test modules import while they are collected (TensorFlow and Keras among it,
# several hundred thousand objects) lives until the end; frozen out of the collector's reach, it is not walked
# again by every full collection during the tests (an AppTest of a page takes about a fifth of the CPU time).


def pytest_collection_finish(session: pytest.Session) -> None:
    gc.collect()
    gc.freeze()


# --------------------------------------------------------------------------------------------------
# The order of the run: the modules with the most tests that train, run a network or drive a browser first,
# the others after them in their usual order. A parallel run (``--dist loadscope``) hands out whole modules
# (each module's fixtures are made once) in this order, so the long modules start at once and the last ones
# to end are short.


def _heavy(item: pytest.Item) -> bool:
    return item.get_closest_marker("slow") is not None or item.get_closest_marker("browser") is not None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    heavy = collections.Counter(item.path for item in items if _heavy(item))
    items.sort(key=lambda item: -heavy[item.path])  # stable: each module keeps its order
