"""The once-per-session computations that pytest-xdist workers share (``run_once`` in tests/conftest.py): a
worker that waits for another's is bounded, and a failure of the computing worker reaches the waiting ones as
its message instead of a second computation."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from filelock import FileLock

from conftest import run_once


@pytest.fixture
def worker(tmp_path, monkeypatch) -> SimpleNamespace:
    """A pytest-xdist worker's view: its base folder under ``tmp_path`` and a pytest-timeout limit of 1 s."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    return SimpleNamespace(factory=SimpleNamespace(getbasetemp=lambda: tmp_path / "popen-gw1"),
                           config=SimpleNamespace(getini=lambda name: {"timeout": "1"}[name]), shared=tmp_path)


def test_a_result_is_computed_once_and_read_by_the_next_worker(worker):
    calls = []

    def produce() -> dict:
        calls.append(1)
        return {"run": "folder"}

    assert run_once(worker.factory, worker.config, "run", produce) == {"run": "folder"}
    assert run_once(worker.factory, worker.config, "run", produce) == {"run": "folder"}
    assert calls == [1]


def test_a_failure_of_the_computing_worker_is_the_waiting_workers_message(worker):
    def fails() -> dict:
        raise RuntimeError("no images in moles/seed/train")

    with pytest.raises(RuntimeError):
        run_once(worker.factory, worker.config, "run", fails)
    with pytest.raises(pytest.fail.Exception) as failure:
        run_once(worker.factory, worker.config, "run", lambda: {"run": "computed again"})
    assert str(failure.value) == "run: another worker's run of it failed: RuntimeError: no images in moles/seed/train"


def test_a_worker_killed_while_computing_is_reported_not_computed_again(worker):
    (worker.shared / "run.started").touch()  # left by a worker that ended without a result
    with pytest.raises(pytest.fail.Exception) as failure:
        run_once(worker.factory, worker.config, "run", lambda: {"run": "over a half-written folder"})
    assert str(failure.value) == "run: another worker started it and ended without a result (killed?)"


def test_the_wait_for_another_worker_is_bounded_below_the_tests_timeout(worker):
    with FileLock(str(worker.shared / "run.json.lock")):  # another worker computing it
        with pytest.raises(pytest.fail.Exception) as failure:
            run_once(worker.factory, worker.config, "run", lambda: {"run": "folder"})
    assert str(failure.value) == "run: waited 1 s for another worker to compute it"  # 0.9 of the 1 s limit
