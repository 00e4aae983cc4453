"""The training queue (moleseg.engine.trainqueue): a training asked for while another holds the lock waits its turn
in a real waiting process and starts by itself, oldest first, one per user; a study gives way between two of its
runs; withdrawing, and a killed waiter, never block the queue. The trainings are the fake runner of
test_app_train (a real process holding the real training lock until cancelled)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from app_helpers import app_test, texts
from synthetic import make_dataset
from test_app_train import PAGE, fake_training, wait_ended  # noqa: F401 (a fixture)
from test_user_spaces import signed_in  # noqa: F401 (a fixture)
from moleseg.app import trainstatus
from moleseg.core.config import data_dir
from moleseg.core.userspace import shared_space
from moleseg.engine import jobs, launch, studyrun, trainlock, trainqueue
from moleseg.engine.runs import RunLog, write_json

#: Longest wait for a queued training to start, in seconds (a waiter looks every WAITER_STEP_S).
START_WAIT_S = 30.0


def eventually(predicate, timeout_s: float = START_WAIT_S):
    """``predicate()``'s first true value, looked at every 50 ms; fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s: {predicate}")


def holder_of(run: Path):
    """The lock's holder when it trains ``run``, else None."""
    holder = trainlock.active_training()
    return holder if holder is not None and holder.run_dir == run.resolve() else None


@pytest.fixture
def queue(app_folders, tmp_path, fake_training):  # noqa: F811
    """``queue(runs, name) -> run folder``: :func:`trainstatus.queue` of a valid configuration with the fake runner;
    every waiter and every training started meanwhile is killed afterwards."""
    dataset = make_dataset(tmp_path / "queued-moles", count=2)
    config = {**jobs.train_defaults(), "images": [str(dataset / "images")], "masks": [str(dataset / "masks")]}
    pids: list[int] = []

    def put(runs: Path, name: str) -> Path:
        run = trainstatus.queue(config, runs, name, python=str(fake_training.python))
        found = trainqueue.own_ticket(runs)
        if found is not None:
            pids.append(found[0].pid)
        return run

    put.config = config
    yield put
    holder = trainlock.active_training()
    for pid in pids + ([holder.pid] if holder is not None and holder.pid else []):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def finish(holder: trainlock.TrainingHolder) -> None:
    """Cancel the training holding the lock and wait for its process to end."""
    launch.request_cancel(holder.run_dir)
    wait_ended(holder.pid)


def test_a_queued_training_starts_by_itself_when_the_running_one_ends(app_folders, fake_training, queue,  # noqa: F811
                                                                      monkeypatch):
    runs = app_folders["runs"]
    first, pid = fake_training()
    queued = queue(runs, "next")
    ticket, place = trainqueue.own_ticket(runs)
    assert (ticket.run_dir, place, ticket.owner) == (queued, 1, runs.resolve())
    assert (queued / trainqueue.REQUEST_NAME).is_file() and not (queued / jobs.JOB_FILE).exists()
    assert trainstatus.queue_sentence(runs).startswith(f"Your training {queued.name} waits in the queue (next). The "
                                                       "queue is first come, first served")
    with pytest.raises(trainqueue.QueueRefused, match=f"^{trainqueue.ALREADY_QUEUED}$"):
        queue(runs, "second")
    with monkeypatch.context() as patch:  # two clicks at once both pass the page's look: the waiter refuses one
        patch.setattr(trainqueue, "own_ticket", lambda owner: None)
        with pytest.raises(trainqueue.QueueRefused, match=f"^{trainqueue.ALREADY_QUEUED}$"):
            trainqueue.queue_training(queue.config, runs / "third", runs, python=str(fake_training.python))
    assert sorted(runs.iterdir()) == sorted([first, queued])  # the refused ones' folders are not left behind
    time.sleep(2 * trainqueue.WAITER_STEP_S)
    assert holder_of(first) is not None  # it waits: nothing is cancelled for it
    finish(holder_of(first))
    started = eventually(lambda: holder_of(queued))
    assert started.origin == "app" and jobs.read_job(queued).active
    assert jobs.read_request(queued).config == {**queue.config, "name": queued.name}
    assert eventually(lambda: trainqueue.live_tickets() == [])
    assert not (queued / trainqueue.REQUEST_NAME).exists() and trainstatus.queue_sentence(runs) == ""


def test_two_users_queued_start_oldest_first(app_folders, tmp_path, fake_training, queue):  # noqa: F811
    ann, bob = (tmp_path / "users" / name / "runs" for name in ("ann", "bob"))
    first, _ = fake_training()
    ann_run = queue(ann, "ann-run")
    bob_run = queue(bob, "bob-run")
    assert [ticket.run_dir for ticket in trainqueue.live_tickets()] == [ann_run, bob_run]
    assert "(place 2 of 2)" in trainstatus.queue_sentence(bob) and "ann" not in trainstatus.queue_sentence(bob)
    finish(holder_of(first))
    eventually(lambda: holder_of(ann_run))
    assert eventually(lambda: trainqueue.own_ticket(bob)[1] == 1)  # ann's ticket goes once her training runs
    assert not (bob_run / jobs.JOB_FILE).exists()
    finish(holder_of(ann_run))
    eventually(lambda: holder_of(bob_run))
    assert eventually(lambda: trainqueue.queued_count() == 0)
    # bob's waiter waited on the lock of ann's ticket when her waiter removed it: no lock of hers is left behind
    assert eventually(lambda: [path.name for path in trainqueue.queue_dir().iterdir()] == ["queue.lock"], 5)


#: What a study shows while one training queued before its run goes first.
FIRST = "1 training queued before this run goes first (first come, first served)"


def test_a_study_lets_a_queued_training_in_between_two_of_its_runs(app_folders, tmp_path, fake_training,  # noqa: F811
                                                                   queue):
    first, _ = fake_training()
    ann_run = queue(tmp_path / "users" / "ann" / "runs", "ann-run")
    out = tmp_path / "users" / "bob" / "runs" / "study-x"
    study_run = out / "runs" / "base-seed0"
    out.mkdir(parents=True)
    progress = studyrun.StudyProgress(runs=2, done=1, active=["base-seed0"], status="running")
    lines: list[str] = []
    giving_way = studyrun.StudyGivingWay(out, progress, lines.append)
    ended: list[jobs.JobStatus] = []
    study = threading.Thread(target=lambda: ended.append(launch.start_training(
        queue.config, study_run, origin="study", wait=True, wait_for_lock=True, give_way=giving_way,
        python=str(fake_training.python))))
    study.start()
    try:
        shown = eventually(lambda: studyrun.read_progress(out).waiting and studyrun.read_progress(out))
        assert shown.waiting == FIRST
        assert shown.describe() == f"1/2 runs finished (running); next: base-seed0; waiting: {FIRST}"
        with trainqueue.queue_lock():  # the queued training cannot start yet: the lock stays free a while
            finish(holder_of(first))
            time.sleep(4 * launch.POLL_S)
            assert trainlock.active_training() is None and not (study_run / jobs.JOB_FILE).exists()
            assert studyrun.read_progress(out).waiting == FIRST
        eventually(lambda: holder_of(ann_run))
        assert eventually(lambda: studyrun.read_progress(out).waiting == "another training is running")
        assert not (study_run / jobs.JOB_FILE).exists()
        finish(holder_of(ann_run))
        assert eventually(lambda: holder_of(study_run)).origin == "study"
        assert lines == [f"waiting: {FIRST}", "waiting: another training is running"]
        finish(holder_of(study_run))
    finally:
        if (holder := trainlock.active_training()) is not None:
            finish(holder)
        study.join(START_WAIT_S)
    assert [status.run_dir for status in ended] == [study_run.resolve()]  # followed to its end


def test_a_running_study_lets_queued_trainings_in_between_its_runs(app_folders, tmp_path, fake_training,  # noqa: F811
                                                                   queue, monkeypatch):
    from synthetic import write_study
    from moleseg.engine import studyplan

    make_dataset(tmp_path / "train", count=6, size=48)
    make_dataset(tmp_path / "test", count=2, size=48)
    study = studyplan.load_study(write_study(tmp_path / "s.yaml"))  # two runs: sgdm, adam
    out = tmp_path / "users" / "bob" / "runs" / "study-s"
    real_start = launch.start_training
    monkeypatch.setattr(studyrun, "start_training", lambda *args, **kwargs: real_start(
        *args, **kwargs, python=str(fake_training.python)))
    lines: list[str] = []
    first, _ = fake_training()
    thread = threading.Thread(target=studyrun.run_study, args=(study, out), kwargs={"echo": lines.append})
    thread.start()
    try:
        runs = [out / "runs" / entry.run_id for entry in eventually(lambda: studyrun.read_plan(out)).runs]
        assert eventually(lambda: studyrun.read_progress(out).waiting == "another training is running")
        ann_run = queue(tmp_path / "users" / "ann" / "runs", "ann-run")  # after the study's first run asked
        assert trainqueue.own_ticket(tmp_path / "users" / "ann" / "runs")[1] == 2  # behind the study's turn
        finish(holder_of(first))
        eventually(lambda: holder_of(runs[0]))  # first come, first served: before ann's training
        assert not (ann_run / jobs.JOB_FILE).exists()
        carol_run = queue(tmp_path / "users" / "carol" / "runs", "carol-run")  # queued during the study's run
        finish(holder_of(runs[0]))
        eventually(lambda: holder_of(ann_run))  # both queued before the study's second run asked: they go first
        assert eventually(lambda: studyrun.read_progress(out).waiting == FIRST)  # carol's
        finish(holder_of(ann_run))
        eventually(lambda: holder_of(carol_run))
        assert not (runs[1] / jobs.JOB_FILE).exists()
        shown = eventually(lambda: studyrun.read_progress(out).waiting == "another training is running"
                           and studyrun.read_progress(out))
        assert shown.describe().startswith(f"0/2 runs finished (running); next: {runs[1].name}; waiting: another "
                                           "training is running")
        finish(holder_of(carol_run))
        finish(eventually(lambda: holder_of(runs[1])))
    finally:
        if (holder := trainlock.active_training()) is not None:
            finish(holder)
        thread.join(START_WAIT_S)
    assert not thread.is_alive() and f"waiting: {FIRST}" in lines


def test_a_withdrawn_request_ends_its_waiter_and_leaves_nothing(app_folders, fake_training, queue):  # noqa: F811
    runs = app_folders["runs"]
    first, _ = fake_training()
    queued = queue(runs, "next")
    waiter = trainqueue.own_ticket(runs)[0].pid
    assert trainqueue.withdraw(runs) is True
    wait_ended(waiter)
    assert trainqueue.own_ticket(runs) is None and not queued.exists()
    assert [path.name for path in trainqueue.queue_dir().iterdir()] == ["queue.lock"]
    assert trainqueue.withdraw(runs) is False
    finish(holder_of(first))
    time.sleep(2 * trainqueue.WAITER_STEP_S)
    assert trainlock.active_training() is None and sorted(runs.iterdir()) == [first]


def test_a_request_whose_waiter_was_killed_does_not_block_the_next(app_folders, tmp_path, fake_training,  # noqa: F811
                                                                   queue):
    ann, bob = (tmp_path / "users" / name / "runs" for name in ("ann", "bob"))
    first, _ = fake_training()
    ann_run = queue(ann, "ann-run")
    bob_run = queue(bob, "bob-run")
    waiter = trainqueue.own_ticket(ann)[0].pid
    os.kill(waiter, signal.SIGKILL)
    wait_ended(waiter)
    finish(holder_of(first))
    eventually(lambda: holder_of(bob_run))
    assert trainqueue.own_ticket(ann) is None and not ann_run.exists()  # dropped with its request
    assert eventually(lambda: [path.name for path in trainqueue.queue_dir().iterdir()] == ["queue.lock"])


def test_a_queued_training_whose_data_went_away_meanwhile_shows_as_failed(app_folders, tmp_path,  # noqa: F811
                                                                          fake_training, queue):
    runs = app_folders["runs"]
    first, _ = fake_training()
    dataset = make_dataset(tmp_path / "going", count=2)
    config = {**queue.config, "images": [str(dataset / "images")], "masks": [str(dataset / "masks")]}
    queued = trainstatus.queue(config, runs, "gone", python=str(fake_training.python))
    waiter = trainqueue.own_ticket(runs)[0].pid
    shutil.rmtree(dataset)
    finish(holder_of(first))
    wait_ended(waiter)
    status = jobs.read_job(queued)
    assert status.status == "failed" and status.error.startswith("not started from the queue: ")
    assert str(dataset) in status.error and jobs.list_jobs(runs)[0] == queued
    assert not (queued / trainqueue.REQUEST_NAME).exists()  # no request left behind that nothing will start
    assert trainlock.active_training() is None and trainqueue.queued_count() == 0


def test_a_ticket_being_written_is_not_taken_for_a_dead_one(app_folders, tmp_path):
    """A study looks at the queue every half second: it took the temporary file of a ticket's atomic write for a
    ticket without a waiter and deleted it, so that the waiter, moving it into place, ended."""
    from moleseg.core.atomic import TEMPORARY_PREFIX

    folder = trainqueue.queue_dir()
    folder.mkdir(parents=True)
    writing = folder / f"{TEMPORARY_PREFIX}0a1b.{time.time_ns():020d}-c0ffee00.json"
    writing.write_text("{")
    request = tmp_path / "runs" / "r"
    request.mkdir(parents=True)
    (request / trainqueue.REQUEST_NAME).write_text("{}")
    dead = folder / f"{time.time_ns():020d}-deadbeef.json"
    dead.write_text(json.dumps({"owner": str(tmp_path / "runs"), "run_dir": str(request)}))
    assert trainqueue.live_tickets() == []
    assert writing.exists() and not dead.exists() and not request.exists()  # the dead one dropped, its request too


def test_the_train_page_queues_behind_a_running_training_and_withdraws(  # noqa: F811 (fixtures)
        app_folders, tmp_path, fake_training, queue, monkeypatch):
    runs = app_folders["runs"]
    first, pid = fake_training()
    real_queue = trainstatus.queue
    monkeypatch.setattr(trainstatus, "queue", lambda *args, **kwargs: real_queue(
        *args, **kwargs, python=str(fake_training.python)))
    at = app_test(PAGE)
    at.text_area(key="train_images").set_value(str(make_dataset(tmp_path / "moles", count=2))).run()
    assert at.button(key="train_start").disabled
    at.button(key="train_queue").click().run()
    assert not at.exception and not at.error
    ticket, _ = trainqueue.own_ticket(runs)
    assert any(text.startswith(f"Your training {ticket.run_dir.name} waits in the queue (next)")
               for text in texts(at.info))
    at.button(key="train_queue").click().run()
    assert texts(at.error) == [trainqueue.ALREADY_QUEUED[0].upper() + trainqueue.ALREADY_QUEUED[1:]]
    at.button(key="train_withdraw").click().run()
    wait_ended(ticket.pid)
    assert trainqueue.own_ticket(runs) is None and not any("waits in the queue" in text for text in texts(at.info))
    assert holder_of(first).pid == pid


def test_on_a_shared_server_the_queue_names_no_other_user(signed_in, queue):  # noqa: F811 (fixtures)
    alice, bob, carol = (shared_space(data_dir(), name).runs for name in ("alice", "bob", "carol"))
    secret = alice / "secret-lesion-run"
    secret.mkdir()
    with trainlock.hold_training_lock(secret, "app"):
        carol_run = queue(carol, "carols-lesions")
        bob_run = queue(bob, "bobs-run")
        signed_in("bob")
        at = app_test(PAGE)
        assert not at.exception
        assert at.button(key="train_start").disabled and not at.button(key="train_queue").disabled
        assert any(text.startswith(f"Your training {bob_run.name} waits in the queue (place 2 of 2).")
                   for text in texts(at.info))
        shown = " ".join(texts(at.markdown) + texts(at.info) + texts(at.caption) + [h.value for h in at.subheader])
        assert not any(word in shown for word in ("carol", "secret", "alice"))
        signed_in("alice")
        at = app_test(PAGE)
        shown = " ".join(texts(at.markdown) + texts(at.info) + texts(at.caption) + [h.value for h in at.subheader])
        assert "waits in the queue" not in shown and "bob" not in shown and "carol" not in shown
        signed_in("boss")  # an admin sees the whole queue, and whose each request is
        at = app_test(PAGE)
        assert [(row["place"], row["user"], row["run"]) for row in at.dataframe[0].value.to_dict("records")] == [
            (1, carol.parent.name, carol_run.name), (2, bob.parent.name, bob_run.name)]
        at.selectbox(key="train_queue_pick").set_value(1).run()
        at.button(key="train_withdraw_other").click().run()
        assert not at.exception and trainqueue.own_ticket(bob) is None and trainqueue.own_ticket(carol)[1] == 1
        assert trainqueue.withdraw(carol) and not trainqueue.withdraw(bob)


def test_waiting_behind_a_ticket_that_went_meanwhile_leaves_no_lock_file(app_folders):  # noqa: F811
    """The window a waiter may hit: the ticket ahead removed, with its lock, between the waiter's look at the queue
    and its wait; waiting on the lock makes its file again, which must not stay (a stray lock in the queue)."""
    trainqueue.queue_dir().mkdir(parents=True, exist_ok=True)
    gone = trainqueue.Ticket(trainqueue.queue_dir() / "00000000000000000001-deadbeef.json", app_folders["runs"],
                             app_folders["runs"] / "gone", 0.0, None)
    trainqueue._wait_behind(gone)
    assert sorted(path.name for path in trainqueue.queue_dir().iterdir()) == []


def test_a_look_at_a_lock_that_meets_another_look_finds_no_owner(tmp_path, monkeypatch):
    """held() holds a lock for a moment: another look meeting it must not report an owner (a study's look every
    POLL_S made the Train page, and a test, see a training that was not there); an owner holding it is reported."""
    monkeypatch.setattr(trainlock, "LOOK_GRACE_S", 2.0)  # far above the other look's moment, on a loaded machine too
    path = tmp_path / "training.lock"
    other_look = trainlock.process_flock(path)
    other_look.acquire()
    threading.Timer(0.05, other_look.release).start()
    assert trainlock.held(trainlock.process_flock(path)) is False
    monkeypatch.setattr(trainlock, "LOOK_GRACE_S", 0.05)
    owner = trainlock.process_flock(path)
    owner.acquire()
    try:
        assert trainlock.held(trainlock.process_flock(path)) is True
    finally:
        owner.release()


def test_a_study_waits_only_for_the_trainings_queued_before_it(app_folders, tmp_path, monkeypatch):
    """First come, first served, a study's next run included: users queueing one training after another no longer
    hold a study back for ever (it gave way while any ticket was live). Fake tickets held in this process, no
    training: the waiter's start is recorded."""
    ann, bob = (tmp_path / "users" / name / "runs" for name in ("ann", "bob"))
    ann_ticket, ann_held = trainqueue._register(ann / "ann-run", ann)
    out = tmp_path / "users" / "carol" / "runs" / "study-x"
    out.mkdir(parents=True)
    lines: list[str] = []
    progress = studyrun.StudyProgress(runs=2, done=0, active=["base-seed0"], status="running")
    giving_way = studyrun.StudyGivingWay(out, progress, lines.append)
    assert giving_way(None) is True  # ann queued before the study's run asked for its turn
    words = "1 training queued before this run goes first (first come, first served)"
    assert studyrun.read_progress(out).waiting == words and lines == [f"waiting: {words}"]
    bob_run = bob / "bob-run"
    bob_run.mkdir(parents=True)
    write_json(bob_run / trainqueue.REQUEST_NAME, {"config": {"epochs": 1}})
    bob_ticket, bob_held = trainqueue._register(bob_run.resolve(), bob.resolve())  # queued after the study
    assert [ticket.kind for ticket in trainqueue.live_tickets()] == ["training", "study", "training"]
    assert trainqueue.own_ticket(out) is None and trainqueue.queued_count() == 3
    assert trainstatus.queue_sentence(bob) == (
        "Your training bob-run waits in the queue (place 3 of 3). The queue is first come, first served, a study's "
        "next run taking its place in it as a training does: yours starts by itself when those ahead of it have "
        "ended; you may close this page.")
    ann_held.release()  # ann's waiter ends (her training started): her ticket is dropped
    assert giving_way(None) is False  # bob's ticket is live, but came after: the study's run goes first
    assert giving_way(trainlock.TrainingHolder(pid=1, origin="app")) is False  # only the lock is waited for
    assert studyrun.read_progress(out).waiting == "another training is running"
    started: list[Path] = []
    monkeypatch.setattr(launch, "start_training", lambda config, run_dir, **kwargs: started.append(run_dir))
    log = RunLog(tmp_path / "waiter.log")
    assert trainqueue._try_start(bob_ticket, None, log) is False and started == []  # behind the study's turn
    giving_way.release()  # the study's run holds the training lock
    assert [ticket.kind for ticket in trainqueue.live_tickets()] == ["training"] and out.is_dir()
    assert trainqueue._try_start(bob_ticket, None, log) is True and started == [bob_run.resolve()]
    bob_held.release()
    assert trainqueue.live_tickets() == []
    dead = studyrun.StudyGivingWay(out, progress, lines.append)
    assert dead(None) is False and [ticket.kind for ticket in trainqueue.live_tickets()] == ["study"]
    dead._held.release()  # the study process killed: the kernel lets go of its ticket's lock
    assert trainqueue.live_tickets() == [] and out.is_dir()  # its ticket dropped, nothing of the study's
    assert not dead.ticket.path.exists()


def test_an_admin_cannot_withdraw_a_study_s_turn_and_is_told_why(signed_in, queue):  # noqa: F811 (fixtures)
    """A study's turn is held by the study's own process until its run starts: withdrawing it did nothing and the
    admin read that it "had already left the queue", while it stayed first. Now the refusal says what it is."""
    carol, bob = (shared_space(data_dir(), name).runs for name in ("carol", "bob"))
    study = carol / "study-x"
    study.mkdir()
    progress = studyrun.StudyProgress(runs=2, done=0, active=["base-seed0"], status="running")
    turn = studyrun.StudyGivingWay(study, progress, lambda line: None)
    alice_run = shared_space(data_dir(), "alice").runs / "alice-run"
    alice_run.mkdir()
    try:
        with trainlock.hold_training_lock(alice_run, "app"):
            assert turn(trainlock.active_training()) is False  # first in the queue, waiting for the lock
            bob_run = queue(bob, "bobs-run")
            signed_in("boss")
            at = app_test(PAGE)
            assert [(row["place"], row["user"], row["run"]) for row in at.dataframe[0].value.to_dict("records")] == [
                (1, carol.parent.name, "study-x (study)"), (2, bob.parent.name, bob_run.name)]
            at.selectbox(key="train_queue_pick").set_value(0).run()
            at.button(key="train_withdraw_other").click().run()
            assert not at.exception and texts(at.warning) == [
                "The queue cannot withdraw study-x: it is a study run's turn, held by its own process until its "
                "training starts (stop the study run instead)."]
            assert [ticket.kind for ticket in trainqueue.live_tickets()] == ["study", "training"]
            with pytest.raises(trainqueue.QueueRefused, match="^the queue cannot withdraw study-x: "):
                trainqueue.withdraw(study)
            assert trainqueue.withdraw(bob) and not trainqueue.withdraw(bob)  # a training's is withdrawn as before
    finally:
        turn.release()
    assert trainqueue.live_tickets() == []


def test_an_admin_s_queue_names_no_user_for_a_turn_outside_the_users_folders(signed_in, tmp_path):  # noqa: F811
    """``moleseg train --wait --out <anywhere>`` takes a terminal's turn whose folder lies in no user's folder: the
    admin's table named its parent folder ("elsewhere") as its user."""
    run = tmp_path / "elsewhere" / "run1"
    run.mkdir(parents=True)
    turn = trainqueue.Turn(run, "terminal")
    study = shared_space(data_dir(), "carol").runs / "study-x"
    study.mkdir()
    carol = trainqueue.Turn(study, "study")
    try:
        assert turn(None) is False and carol(None) is True  # taken in this order: the terminal's first
        assert [(row["place"], row["user"], row["run"]) for row in trainstatus.queue_rows()] == [
            (1, trainstatus.NO_USER, "run1 (terminal)"), (2, study.parent.parent.name, "study-x (study)")]
    finally:
        turn.release()
        carol.release()
