"""The Train page's view of trainings: which one to show (the one holding the training lock, whoever started
it: the app, a terminal or a study; on a shared server only the user's own, another user's training shown by
its progress alone), its status and run state as typed records, starting one from the app or queueing it
(:mod:`moleseg.engine.trainqueue`), and the table of the user's runs. No Streamlit here: the page arranges these
in widgets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moleseg.core.trainconfig import training_name
from moleseg.core.userspace import owning_space
from moleseg.core.words import capitalised
from moleseg.engine import jobs, launch, trainlock, trainqueue
from moleseg.engine.finetune import read_base_comparison
from moleseg.engine.runs import RunFiles, RunRecordError, RunState, read_history, read_state

#: Most of the app's runs listed in the table of trainings.
LISTED_RUNS: int = 50


@dataclass(frozen=True)
class TrainingView:
    """One training as the Train page shows it.

    Attributes
    ----------
    status
        Its ``progress.json`` (:class:`moleseg.engine.jobs.JobStatus`).
    state
        Its ``state.json`` (None before the first epoch, or when damaged: then ``problem`` says so).
    started_by
        Who started it, in words ("the app", "a terminal", "a study"), or ``""`` when not known.
    problem
        The messages of its damaged records (a paragraph each), or ``""``.
    history
        Its ``history.csv`` rows (:func:`moleseg.engine.runs.read_history`; none before the first epoch or when
        damaged: then ``problem`` says so).
    """

    status: jobs.JobStatus
    state: RunState | None
    started_by: str = ""
    problem: str = ""
    history: tuple[dict[str, float], ...] = ()

    @property
    def run_dir(self) -> Path:
        return self.status.run_dir

    @property
    def elapsed_seconds(self) -> float | None:
        """Wall time of the whole job (preparation to test), in seconds: live while it runs, on the one clock of
        its ``progress.json`` (:attr:`moleseg.engine.jobs.JobStatus.elapsed_seconds`), so it never goes back
        when the job ends; a run without one: its ``state.json``'s time."""
        if self.status.started is None and self.state is not None:
            return self.state.job_seconds
        return self.status.elapsed_seconds

    @property
    def heading(self) -> str:
        """E.g. ``"Training run-1 (started by a terminal)"``."""
        return f"Training {self.run_dir.name}" + (f" (started by {self.started_by})" if self.started_by else "")

    def finished_text(self) -> str:
        """The sentence of a finished training: its time, best validation FM and epoch when known."""
        took = f" in {jobs.format_duration(self.elapsed_seconds)}" if self.elapsed_seconds else ""
        fm, epoch = self.status.result.best_val_fm, self.status.result.best_epoch
        comparison = read_base_comparison(self.run_dir)
        beside = f" ({comparison.text()})" if comparison is not None else ""
        if fm is not None:
            return (f"Training finished{took}: best validation FM {fm:.4f} at epoch {epoch}{beside}. Its model is in "
                    "the model picker below and on the Analyse and Evaluate pages.")
        return f"Training finished{took}."


def view(run_dir: str | Path, *, curves: bool = True) -> TrainingView:
    """The training of ``run_dir`` as the page shows it; without its ``history.csv`` (``history`` empty, its damage
    not told) when not ``curves`` (the table of trainings)."""
    status = jobs.read_job(run_dir)
    holder = trainlock.active_training()
    started_by = ""
    if holder is not None and holder.run_dir is not None and holder.run_dir == Path(run_dir).resolve():
        started_by = trainlock.ORIGINS[holder.origin] if holder.origin else ""
    problems: list[str] = []
    try:
        state = read_state(run_dir)
    except RunRecordError as error:
        state = None
        problems.append(str(error))
    try:
        history = read_history(RunFiles(run_dir).history) if curves else []
    except RunRecordError as error:
        history = []
        problems.append(str(error))
    return TrainingView(status=status, state=state, started_by=started_by, problem="\n\n".join(problems),
                        history=tuple(history))


def running() -> trainlock.TrainingHolder | None:
    """The training holding the lock now, whoever started it (None when none runs); collects finished children."""
    launch.reap_children()
    return trainlock.active_training()


def _inside(path: str | Path, own_runs: Path | None) -> bool:
    return own_runs is None or Path(path).resolve().is_relative_to(Path(own_runs).resolve())


def _is_own(holder: trainlock.TrainingHolder, own_runs: Path | None) -> bool:
    return own_runs is None or (holder.run_dir is not None and _inside(holder.run_dir, own_runs))


def other_users_training(own_runs: Path | None) -> trainlock.TrainingHolder | None:
    """The training holding the lock when it is not this user's: its run folder lies outside ``own_runs``
    (the user's runs on a shared server; None, on a personal one, makes every training the user's)."""
    holder = running()
    return holder if holder is not None and not _is_own(holder, own_runs) else None


def other_users_sentence(holder: trainlock.TrainingHolder) -> str:
    """What another user's training shows: its progress only, never its run, folder or user, e.g. ``"A
    training by another user is running (progress 40 %); queue yours: it starts when that one ends."``."""
    status = jobs.read_job(holder.run_dir) if holder.run_dir is not None else None
    progress = f" (progress {round(100 * status.fraction)} %)" if status is not None and status.active else ""
    return f"A training by another user is running{progress}; queue yours: it starts when that one ends."


def busy_sentence(own_runs: Path | None = None) -> str:
    """The one sentence saying which training runs (``""`` when none does); another user's training
    (:func:`other_users_training`) is named by :func:`other_users_sentence` only."""
    holder = running()
    if holder is None:
        return ""
    return capitalised(holder.sentence()) + "." if _is_own(holder, own_runs) else other_users_sentence(holder)


def run_to_show(runs: str | Path, remembered: str | None, own_runs: Path | None = None) -> Path | None:
    """The training the page shows: the one running (from the app, a terminal or a study; only the user's own
    when ``own_runs`` is given, as in :func:`other_users_training`), else the one this browser session started
    last, else the newest run in ``runs``."""
    holder = running()
    if holder is not None and holder.run_dir is not None and _is_own(holder, own_runs):
        return holder.run_dir
    if remembered and Path(remembered).is_dir() and _inside(remembered, own_runs):
        return Path(remembered)
    started = jobs.list_jobs(runs)
    return started[0] if started else None


def start(config: dict[str, Any], runs: str | Path, name: str | None = None, own_runs: Path | None = None) -> Path:
    """Start ``config`` from the app in a new run folder ``<runs>/<name>-<time>``; returns the folder.
    ``name``: by default the training's own (:func:`moleseg.core.trainconfig.training_name`). ``own_runs``: the
    user's runs on a shared server, as in :func:`other_users_training`.

    Raises
    ------
    moleseg.engine.trainlock.TrainingBusy
        Another training runs (the message is its one sentence; another user's, one that started after the
        page looked, is named by :func:`other_users_sentence` only).
    ValueError
        Every problem of the configuration, one per line.
    """
    run_dir = launch.new_run_dir(runs, name or training_name(config))
    try:
        return launch.start_training(config, run_dir, origin="app").run_dir
    except trainlock.TrainingBusy as busy:
        _remove_if_empty(run_dir)
        holder = busy.holder or trainlock.TrainingHolder()
        if not _is_own(holder, own_runs):
            raise trainlock.TrainingBusy(other_users_sentence(holder), holder) from None
        raise
    except ValueError:
        _remove_if_empty(run_dir)
        raise


def queue(config: dict[str, Any], runs: str | Path, name: str | None = None, python: str | None = None) -> Path:
    """Queue ``config`` (:mod:`moleseg.engine.trainqueue`) in a new run folder ``<runs>/<name>-<time>`` of the user
    whose runs are ``runs``; returns the folder. It starts when the trainings ahead of it have ended, oldest first
    (at once when nothing runs). ``python``: the training's interpreter (default this one).

    Raises
    ------
    moleseg.engine.trainqueue.QueueRefused
        The user already has a training in the queue (one at a time).
    ValueError
        Every problem of the configuration, one per line.
    """
    run_dir = launch.new_run_dir(runs, name or training_name(config))
    try:
        return trainqueue.queue_training(config, run_dir, runs, python=python).run_dir
    except (trainqueue.QueueRefused, ValueError, OSError):
        _remove_if_empty(run_dir)
        raise


def may_start_now(busy: str) -> bool:
    """Whether a new training starts at once (no training runs: ``busy``, :func:`busy_sentence`, is ``""``, and
    none waits in the queue), rather than being queued behind the others."""
    return busy == "" and trainqueue.queued_count() == 0


def queue_sentence(runs: str | Path) -> str:
    """What the user's queued training shows (``""`` when they have none), e.g. ``"Your training adam-lr0.001
    waits in the queue: 2nd of 3. It starts when the trainings ahead of it have ended."``; the others in the queue
    are counted, never named."""
    found = trainqueue.own_ticket(runs)
    if found is None:
        return ""
    ticket, place = found
    total = trainqueue.queued_count()
    where = "next" if place == 1 else f"place {place} of {max(total, place)}"
    return (f"Your training {ticket.run_dir.name} waits in the queue ({where}). The queue is first come, first "
            "served, a study's next run taking its place in it as a training does: yours starts by itself when "
            "those ahead of it have ended; you may close this page.")


def queue_rows() -> list[dict[str, Any]]:
    """The whole queue, oldest first, for an admin: place, whose (the user's folder), run and when it was queued."""
    return [{"place": place, "user": _user_of(ticket), "run": ticket.run_dir.name
             + ("" if ticket.kind == trainqueue.TRAINING else f" ({ticket.kind})"),
             "queued": time.strftime("%Y-%m-%d %H:%M", time.localtime(ticket.requested)), "owner": str(ticket.owner)}
            for place, ticket in enumerate(trainqueue.live_tickets(), start=1)]


#: The "user" of a queue row whose folder lies in no user's folder (``moleseg train --wait --out`` elsewhere).
NO_USER = "(in no user's folder)"


def _user_of(ticket: trainqueue.Ticket) -> str:
    """The name of the user's folder whose ticket it is (a queued training's runs folder, a study's folder), or
    :data:`NO_USER`."""
    space = owning_space(ticket.owner)
    return space.runs.parent.name if space else NO_USER


def _remove_if_empty(run_dir: Path) -> None:
    try:
        run_dir.rmdir()
    except OSError:
        pass


def runs_table(runs: str | Path) -> list[dict[str, Any]]:
    """The app's trainings in ``runs``, newest first (at most :data:`LISTED_RUNS`): status, epochs, best
    validation FM, time and whether a model was saved."""
    rows = []
    for run in jobs.list_jobs(runs)[:LISTED_RUNS]:
        shown = view(run, curves=False)  # up to LISTED_RUNS histories of up to 4 MB each, at each rerun
        state = shown.state or RunState()
        rows.append({"run": run.name, "status": shown.status.status,
                     "epochs": f"{state.epoch}/{shown.status.epochs or '?'}",
                     "best validation FM": round(state.best_val_fm, 4) if state.best_val_fm >= 0 else None,
                     "time": jobs.format_duration(state.job_seconds),
                     "model": "yes" if RunFiles(run).model.is_file() else "no"})
    return rows
