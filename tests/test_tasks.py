"""The app's background task registry (moleseg.engine.tasks): keyed by inputs, joined while running,
results kept, failures kept as errors, old finished tasks forgotten."""

from __future__ import annotations

import sys
import threading

import pytest

from moleseg.engine.tasks import TaskRegistry


@pytest.fixture
def registry():
    tasks = TaskRegistry(workers=2, finished_kept=2)
    yield tasks
    tasks.shutdown()


def test_a_task_reports_progress_and_keeps_its_result(registry):
    gate = threading.Event()

    def work(progress):
        progress(1, 4, "one of four")
        gate.wait(30)
        return 42

    task = registry.submit(("sum", 1), work)
    assert registry.submit(("sum", 1), lambda progress: 0) is task  # running: joined, not started twice
    for _ in range(3000):
        if task.text:
            break
        threading.Event().wait(0.01)
    assert not task.finished and task.fraction == 0.25 and task.text == "one of four" and task.result is None
    gate.set()
    task.wait(30)
    assert task.finished and task.result == 42 and task.error is None
    assert registry.get(("sum", 1)) is task
    assert registry.submit(("sum", 1), lambda progress: 7) is task  # finished, no restart: the same result
    again = registry.submit(("sum", 1), lambda progress: 7, restart=True)
    again.wait(30)
    assert again is not task and again.result == 7 and registry.get(("sum", 1)) is again


def test_a_failing_task_keeps_its_error(registry):
    def work(progress):
        raise ValueError("masks/m1.png: not an image")

    task = registry.submit("bad", work)
    task.wait(30)
    assert task.finished and task.result is None
    assert isinstance(task.error, ValueError) and str(task.error) == "masks/m1.png: not an image"


def test_old_finished_tasks_are_forgotten_running_ones_kept(registry):
    gate = threading.Event()
    running = registry.submit("running", lambda progress: gate.wait(30))
    for index in range(4):
        registry.submit(index, lambda progress, index=index: index).wait(30)
    registry.submit("last", lambda progress: None).wait(30)
    assert registry.get("running") is running and not running.finished
    gate.set()
    assert registry.get(0) is None and registry.get(1) is None  # finished beyond the two kept
    assert [registry.get(index).result for index in (2, 3)] == [2, 3]
    assert registry.get("last").finished and len(registry) == 4


def test_one_user_cannot_queue_more_than_their_share_of_tasks(registry):
    """Before, one user could queue any number of evaluations ahead of everyone else's."""
    from moleseg.core.config import MAX_TASKS_PER_USER
    from moleseg.engine.tasks import TooManyTasks

    gate = threading.Event()
    mine = [registry.submit(("eval", index), lambda progress: gate.wait(30), owner="ann")
            for index in range(MAX_TASKS_PER_USER)]
    assert registry.submit(("eval", 0), lambda progress: 0, owner="ann") is mine[0]  # joining is no new task
    with pytest.raises(TooManyTasks) as refused:
        registry.submit(("eval", "more"), lambda progress: 0, owner="ann")
    assert str(refused.value) == (f"You already have {MAX_TASKS_PER_USER} tasks (evaluations, dataset scans, "
                                  "model preparations) running or waiting, the most one user may have at once: "
                                  "start this one when one of them has finished.")
    assert registry.get(("eval", "more")) is None
    others = registry.submit(("eval", "bob"), lambda progress: 1, owner="bob")  # another user waits no longer
    server = registry.submit(("prepare", "model"), lambda progress: 2)  # the server's own: never refused
    gate.set()
    for task in (*mine, others, server):
        task.wait(30)
    registry.submit(("eval", "more"), lambda progress: 3, owner="ann").wait(30)  # her tasks done: accepted
    assert registry.get(("eval", "more")).result == 3


def test_the_registry_imports_neither_streamlit_nor_tensorflow():
    import subprocess

    code = ("import sys, moleseg.engine.tasks; "
            "print(sorted(m for m in ('streamlit', 'tensorflow', 'keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


def test_one_users_tasks_leave_a_worker_to_the_others(registry):
    """A user's tasks took every worker of the server's registry (two workers, two tasks a user): another user's
    evaluation, dataset scan or model preparation waited for hers to end, hours for an evaluation of a large
    dataset. A user's tasks now run on one worker less than the registry has (at least one), the others wait
    their turn, and another user's task starts at once."""
    gate, started = threading.Event(), {"ann": 0}

    def anns(progress):
        started["ann"] += 1
        gate.wait(30)

    mine = [registry.submit(("eval", index), anns, owner="ann") for index in range(2)]
    for _ in range(1000):  # her first has started
        if started["ann"]:
            break
        threading.Event().wait(0.01)
    bobs = registry.submit(("eval", "bob"), lambda progress: "bob's", owner="bob")
    bobs.wait(10)
    assert bobs.result == "bob's" and started["ann"] == 1 and not any(task.finished for task in mine)
    server = registry.submit(("prepare", "model"), lambda progress: "the server's")  # the server's own: not held
    server.wait(10)
    assert server.result == "the server's" and started["ann"] == 1
    gate.set()
    for task in mine:
        task.wait(30)
    assert started["ann"] == 2 and all(task.finished and task.error is None for task in mine)
