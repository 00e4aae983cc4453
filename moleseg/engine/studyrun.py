"""Running a study: its folder (``plan.json``, ``progress.json``, one run folder per planned run), its lock, and
the background process the app starts (``python -m moleseg.engine.studyrun``).

Every run is an ordinary run folder ``OUT/runs/<run id>`` trained through
:func:`moleseg.engine.launch.start_training` (origin ``study``), one at a time: each waits for the training lock,
so a study, the app and ``moleseg train`` never train at once, and takes its turn in the queue of the Train page
(:class:`StudyGivingWay`, first come, first served): the trainings queued before a run asked for its turn go first,
those queued later wait for it. A run whose ``evaluation.json`` holds the test
FM is skipped and an interrupted one resumes, so an interrupted study continues where it stopped. Results:
``study.csv`` and ``verdicts.md`` (:mod:`moleseg.engine.studystats`). The records of a study folder are typed
(:class:`StudyPlanRecord`, :class:`StudyProgress`, :class:`StudyFolder`) and read and written here only.
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from filelock import FileLock, Timeout

from moleseg.core import options
from moleseg.core.atomic import open_for_append, path_lock
from moleseg.core.config import (MAX_RUNNING_STUDIES, SHIPPED_MODELS, STUDIES_DIR, STUDY_DATA_ROOT_HELP,
                                 STUDY_LOCK_WAIT_S, STUDY_START_WAIT_S, models_dir)
from moleseg.core.errors import first_line
from moleseg.core.roots import OutsideRootsError, check_links_inside, resolve_inside_roots
from moleseg.core.terminal import terminal_streams
from moleseg.core.words import count_of
from moleseg.engine.childargs import child_arguments, child_command
from moleseg.engine import trainqueue
from moleseg.engine.launch import start_training
from moleseg.engine.runs import (Kind, Record, RecordFields, RunFiles, RunLog, RunRecordError, read_fields,
                                 write_json)
from moleseg.engine.studyplan import (PlannedRun, Study, StudyError, check_study, data_folders, load_study, plan,
                                      resolve_data, with_data)
from moleseg.engine.studystats import RUNS_SUBDIR, STUDY_CSV, VERDICTS_MD, run_finished, write_results
from moleseg.engine.trainlock import TrainingHolder, held, process_flock
from moleseg.engine.userquota import UserQuota

#: Module run as ``python -m STUDY_MODULE --config FILE --out DIR`` for a study started by the app.
STUDY_MODULE = "moleseg.engine.studyrun"
#: Files of a study folder: its plan, its progress, its lock, the background process's log.
PLAN_JSON, PROGRESS_JSON, STUDY_LOCK, STUDY_LOG = "plan.json", "progress.json", "study.lock", "study.log"
#: Values of :attr:`StudyProgress.status`.
STUDY_STATUSES: tuple[str, ...] = ("not started", "running", "finished", "stopped at the quota")


# --------------------------------------------------------------------------------------------------
# the records of a study folder

@dataclass(frozen=True)
class PlanEntry:
    """One planned run as ``plan.json`` keeps it."""

    run_id: str = ""
    factor: str = ""
    setting: str = ""
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyPlanRecord:
    """``plan.json``: which study file planned the folder's runs, and the runs."""

    study: str = ""
    name: str = ""
    runs: list[PlanEntry] = field(default_factory=list)

    def write(self, out: str | Path) -> Path:
        return write_json(Path(out) / PLAN_JSON, asdict(self))

    @classmethod
    def of(cls, study: Study, runs: Sequence[PlannedRun]) -> StudyPlanRecord:
        return cls(study=str(study.path), name=study.name, runs=[
            PlanEntry(run.run_id, run.factor, run.setting, run.seed, dict(run.overrides)) for run in runs])


#: The fields of a planned run in ``plan.json`` and their kinds (:class:`PlanEntry` holds them).
PLAN_ENTRY_FIELDS: dict[str, Kind] = {"run_id": str, "factor": str, "setting": str, "seed": int, "overrides": dict}


def read_plan(out: str | Path) -> StudyPlanRecord | None:
    """``plan.json`` of the study folder ``out``; None when there is none (a damaged file: :func:`read_study_record`)."""
    return read_study_record(Path(out) / PLAN_JSON, lambda fields: StudyPlanRecord(
        **fields.given({"study": str, "name": str}),
        runs=[PlanEntry(**entry.given(PLAN_ENTRY_FIELDS)) for entry in fields.objects("runs", "a planned run")]))


def read_study_record(path: Path, build: Callable[[RecordFields], Record]) -> Record | None:
    """:func:`moleseg.engine.runs.read_fields` for a record of a study folder.

    Raises
    ------
    StudyError
        The file is damaged (it is named).
    """
    try:
        return read_fields(path, build)
    except RunRecordError as error:
        raise StudyError(str(error)) from None


@dataclass(frozen=True)
class StudyProgress:
    """``progress.json`` of a study folder: how many runs, how many done, which train now and which failed."""

    runs: int = 0
    done: int = 0
    active: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    started: float | None = None
    updated: float | None = None
    status: str = "not started"
    waiting: str = ""

    def write(self, out: str | Path) -> Path:
        return write_json(Path(out) / PROGRESS_JSON, asdict(self))

    @property
    def fraction(self) -> float:
        """Share of the runs finished, 0..1."""
        return min(1.0, self.done / self.runs) if self.runs else 0.0

    def describe(self) -> str:
        """E.g. ``"2/6 runs finished (running); training: base-seed1; failed: solver=sgdm-seed0"``."""
        text = f"{self.done}/{self.runs} runs finished ({self.status})"
        if self.active:
            text += f"; {'next' if self.waiting else 'training'}: {', '.join(self.active)}"
        if self.waiting:
            text += f"; waiting: {self.waiting}"
        if self.failed:
            text += f"; failed: {', '.join(self.failed)}"
        return text


#: The fields of a study's ``progress.json`` and their kinds (:class:`StudyProgress` holds them).
STUDY_PROGRESS_FIELDS: dict[str, Kind] = {"runs": int, "done": int, "active": list, "failed": list,
                                          "started": float, "updated": float, "status": str, "waiting": str}


def read_progress(out: str | Path) -> StudyProgress:
    """``progress.json`` of the study folder ``out``, ``not started`` when there is none (a damaged file:
    :func:`read_study_record`)."""
    return read_study_record(Path(out) / PROGRESS_JSON, _study_progress_of) or StudyProgress()


def _study_progress_of(fields: RecordFields) -> StudyProgress:
    """The :class:`StudyProgress` of a study's ``progress.json`` (its run names as text)."""
    values = fields.given(STUDY_PROGRESS_FIELDS, {"status": STUDY_STATUSES})
    names = {key: [str(name) for name in values[key]] for key in ("active", "failed") if key in values}
    return StudyProgress(**{**values, **names})


@dataclass(frozen=True)
class StudyFolder:
    """What the app shows of a study folder: its plan, progress, rows (``study.csv``) and verdicts text;
    ``results_only`` for a folder of results alone (``study.csv`` without ``plan.json``, like the shipped
    :func:`shipped_results`), shown read-only."""

    path: Path
    plan: StudyPlanRecord
    progress: StudyProgress
    rows: list[dict[str, str]]
    verdicts: str
    results_only: bool = False

    @property
    def total_runs(self) -> int:
        """Runs of the study (its progress's count, else its plan's)."""
        return self.progress.runs or len(self.plan.runs)

    def describe(self) -> str:
        """The progress in words (:meth:`StudyProgress.describe`; ``"0/N runs finished (not started)"`` before
        the study writes any)."""
        if self.results_only:
            return f"results of {count_of(len(self.rows), 'finished run')} (read-only: the run folders are not here)"
        if self.progress.runs:
            return self.progress.describe()
        return f"0/{self.total_runs} runs finished ({self.progress.status})"


def read_study_folder(out: str | Path) -> StudyFolder:
    """The study folder ``out``.

    Raises
    ------
    StudyError
        When the folder holds no study, or a damaged record (named).
    """
    out = Path(out)
    plan_record = read_plan(out)
    if plan_record is None and not (out / STUDY_CSV).is_file():
        raise StudyError(f"{out}: not a study folder (no {PLAN_JSON} and no {STUDY_CSV})")
    rows: list[dict[str, str]] = []
    if (out / STUDY_CSV).is_file():
        try:
            rows = list(csv.DictReader(io.StringIO(_study_text(out / STUDY_CSV))))
        except csv.Error as error:
            raise StudyError(f"{out / STUDY_CSV}: cannot be read ({first_line(error)})") from None
    verdict_text = _study_text(out / VERDICTS_MD) if (out / VERDICTS_MD).is_file() else ""
    if plan_record is None:  # results alone: finished, nothing to follow
        return StudyFolder(path=out, plan=StudyPlanRecord(name=out.name), rows=rows, verdicts=verdict_text,
                           progress=StudyProgress(runs=len(rows), done=len(rows), status="finished"),
                           results_only=True)
    return StudyFolder(path=out, plan=plan_record, progress=read_progress(out), rows=rows, verdicts=verdict_text)


def _study_text(path: Path) -> str:
    """The text of a study folder's file ``path`` (``study.csv``, ``verdicts.md``); StudyError naming it and the
    reason when it cannot be read or is not UTF-8 (the folder is the user's)."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise StudyError(f"{path}: cannot be read ({first_line(error)})") from None


#: Results of the studies shipped with a checkout: ``docs/studies/<name>/`` (``study.csv``, ``verdicts.md``).
SHIPPED_RESULTS_DIR: Path = STUDIES_DIR.parent / "docs" / "studies"


def shipped_results(folder: str | Path | None = None) -> list[Path]:
    """The results folders (holding ``study.csv``) in ``folder`` (default :data:`SHIPPED_RESULTS_DIR`), sorted;
    none in an installed package."""
    root = Path(folder) if folder else SHIPPED_RESULTS_DIR
    return sorted(p for p in root.iterdir() if (p / STUDY_CSV).is_file()) if root.is_dir() else []


def mean_fm_by_setting(rows: Sequence[dict[str, str]]) -> dict[str, float]:
    """Mean test FM (0..1) of each setting of ``study.csv``'s rows (its seeds averaged), keyed
    ``"factor = setting"`` (``"base"`` for the base), in the rows' order."""
    values: dict[str, list[float]] = {}
    for row in rows:
        key = "base" if row.get("factor") == "base" else f"{row.get('factor')} = {row.get('setting')}"
        try:
            values.setdefault(key, []).append(float(row["fm_mean"]))
        except (KeyError, TypeError, ValueError):
            continue
    return {key: sum(fms) / len(fms) for key, fms in values.items()}


def study_of_folder(out: str | Path) -> Study | None:
    """The study that planned the folder ``out`` (its plan names the study file); None when it cannot be read."""
    try:
        record = read_plan(out)
        return load_study(record.study) if record is not None and record.study else None
    except StudyError:
        return None


def list_study_folders(root: str | Path) -> list[Path]:
    """Study folders (holding ``plan.json``) directly under ``root``, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if (p / PLAN_JSON).is_file()]
    return sorted(found, key=lambda p: (p / PLAN_JSON).stat().st_mtime, reverse=True)


# --------------------------------------------------------------------------------------------------
# the study lock: one study process per folder

def study_lock(out: str | Path) -> FileLock:
    """The lock of a study folder: an ``flock`` on :data:`STUDY_LOCK`, held by its study process while it
    runs and released by the kernel when that process ends, however it ends."""
    return process_flock(Path(out) / STUDY_LOCK)


def study_running(out: str | Path) -> bool:
    """Whether a study process runs in ``out`` (its lock tried without waiting, let go at once)."""
    return (Path(out) / STUDY_LOCK).exists() and held(study_lock(out))


def _running_error(out: str | Path) -> StudyError:
    return StudyError(f"{out}: a study is already running there; wait for it to finish")


@contextmanager
def hold_study_lock(out: str | Path) -> Iterator[None]:
    """Hold ``out``'s study lock while the body runs.

    Raises
    ------
    StudyError
        Another process holds it: a study is already running in ``out``.
    """
    lock = study_lock(out)
    try:  # waits a moment: study_running (another start's count) holds the lock for an instant
        lock.acquire(timeout=STUDY_LOCK_WAIT_S)
    except Timeout:
        raise _running_error(out) from None
    try:
        yield
    finally:
        lock.release()


def running_studies(root: str | Path) -> list[Path]:
    """The folders directly under ``root`` (a user's runs) whose study process runs, by name."""
    try:
        candidates = sorted(p for p in Path(root).iterdir() if (p / STUDY_LOCK).is_file())
    except OSError:
        return []
    return [folder for folder in candidates if study_running(folder)]


def check_out_folder(study: Study, out: str | Path) -> None:
    """Refuse an ``out`` that is a file, or a folder holding another study's runs (its ``plan.json`` names another
    study): their finished runs of the same ids would be skipped as this study's and reported as its results.

    Raises
    ------
    StudyError
        ``out`` is a file, or holds the runs of a study of another name.
    """
    if Path(out).exists() and not Path(out).is_dir():
        raise StudyError(f"{out} is a file, not a folder: choose a folder name for the study")
    record = read_plan(out)
    if record is not None and record.name and record.name != study.name:
        raise StudyError(f"{out} holds the runs of study {record.name!r} ({record.study}); choose another "
                         f"folder for study {study.name!r}")


def _check_option_paths(run_config: dict[str, Any], roots: Sequence[Path], config: str | Path) -> None:
    """Refuse a planned configuration of a browser user's study (its base options and one setting of each
    factor) whose options name a server path outside ``roots``: a folder (validation or test images, ...), a
    model file to start from other than a shipped one, or any example cache folder (a run in the user's folder
    keeps its examples in theirs, :func:`moleseg.engine.launch.example_cache`)."""
    named = [(item.name, folder) for item in options.OPTIONS if item.kind == "folders"
             for folder in options.get_value(run_config, item.name) or []]
    weights = options.get_value(run_config, "weights")
    shipped = {str((models_dir() / name).resolve()) for name in SHIPPED_MODELS.values()}
    if (isinstance(weights, str) and weights not in ("none", "imagenet")
            and str(Path(weights).resolve()) not in shipped):
        named.append(("weights", weights))
    for name, path in named:
        try:
            resolve_inside_roots(str(path), roots, file=name == "weights")
        except OutsideRootsError as error:
            raise StudyError(f"{config}: {name}: {error}") from None
    cache = options.get_value(run_config, "cache_dir")
    if cache:
        raise StudyError(f"{config}: cache_dir: {cache}: a study started here keeps its examples in your example "
                         "cache; leave cache_dir out")


def checked_study(config: str | Path, data_root: str | Path | None = None,
                  roots: Sequence[Path] | None = None) -> Study:
    """The study file ``config`` read and every planned configuration checked, its data split checked. With
    ``roots`` (a study started by a browser user), every data folder must lie inside them
    (:func:`moleseg.core.roots.resolve_inside_roots`), checked before anything in it is read, and so must
    every server path its options name (:func:`_check_option_paths`).

    Raises
    ------
    StudyError
        The first problem of the file, or every problem of its configurations (one per ``;``).
    """
    study = load_study(config, data_root)
    problems = check_study(study)  # first: the paths below are then lists of text, as the options' rules want
    if problems:
        raise StudyError(f"{config}: " + "; ".join(problems))
    for folder in data_folders(study) if roots is not None else []:
        try:
            check_links_inside(resolve_inside_roots(folder, roots), roots)
        except OutsideRootsError as error:
            raise StudyError(f"{config}: data folder {error}") from None
    for run in plan(study) if roots is not None else []:
        _check_option_paths(run.config, roots, config)
    resolve_data(study, None)
    return study


# --------------------------------------------------------------------------------------------------
# running

def run_study(study: Study, out: str | Path, *, echo: Callable[[str], None] = print,
              quota: UserQuota | None = None) -> list[dict[str, Any]]:
    """Train every unfinished run, one at a time, then write the results; returns the rows. With a ``quota``, a
    run starts only while the user's files are below it; at the quota the study stops (``stopped at the quota``,
    the refusal in the log) and a later start goes on where it stopped.

    Raises
    ------
    StudyError
        A bad study file, data that cannot be split, or a study already running in ``out``.
    """
    out = Path(out).resolve()  # the runs' configurations name absolute folders
    problems = check_study(study)
    if problems:
        raise StudyError(f"{study.path}: " + "; ".join(problems))
    check_out_folder(study, out)
    out.mkdir(parents=True, exist_ok=True)
    with hold_study_lock(out):
        parts = resolve_data(study, out)
        runs = plan(study)
        StudyPlanRecord.of(study, runs).write(out)
        pending = []
        for run in runs:
            if run_finished(out / RUNS_SUBDIR / run.run_id):
                echo(f"{run.run_id}: finished earlier, skipped")
            else:
                pending.append(run)
        started = time.time()
        done, failed, status = len(runs) - len(pending), [], "finished"
        StudyProgress(runs=len(runs), done=done, started=started, updated=time.time(), status="running").write(out)
        for run in pending:
            refusal = quota.refusal() if quota else None
            if refusal:
                echo(f"{run.run_id}: not started: {refusal}")
                status = "stopped at the quota"
                break
            run_dir = out / RUNS_SUBDIR / run.run_id
            progress = StudyProgress(runs=len(runs), done=done, active=[run.run_id], failed=failed,
                                     started=started, updated=time.time(), status="running")
            progress.write(out)
            echo(f"{run.run_id}: training")
            if _train_run(run, run_dir, parts, echo, give_way=StudyGivingWay(out, progress, echo)):
                done += 1
                echo(f"{run.run_id}: done ({done}/{len(runs)})")
            else:
                failed.append(run.run_id)
        rows = write_results(study, out)
        StudyProgress(runs=len(runs), done=done, failed=failed, started=started, updated=time.time(),
                      status=status).write(out)
        return rows


class StudyGivingWay(trainqueue.Turn):
    """A study's ``give_way`` (:func:`moleseg.engine.launch.start_training`): its next run's turn in the training
    queue (:class:`moleseg.engine.trainqueue.Turn`, first come, first served): it waits for the trainings queued
    before it (those queued later wait for it) and for the lock, and its ``progress.json`` says so in neutral words
    (no other user's name or run: the study's owner reads it)."""

    def __init__(self, out: Path, progress: StudyProgress, echo: Callable[[str], None]) -> None:
        super().__init__(out, "study")
        self.out, self.progress, self.echo, self.said = out, progress, echo, ""

    def __call__(self, holder: TrainingHolder | None) -> bool:
        ahead = self.ahead()
        if ahead:
            words = (f"{count_of(ahead, 'training')} queued before this run {'goes' if ahead == 1 else 'go'} first "
                     "(first come, first served)")
        else:
            words = "another training is running" if holder is not None else ""
        if words != self.said:
            self.said = words
            self.progress = replace(self.progress, waiting=words, updated=time.time())
            self.progress.write(self.out)
            if words:
                self.echo(f"waiting: {words}")
        return bool(ahead)


def _train_run(run: PlannedRun, run_dir: Path, parts: dict[str, dict[str, str]], echo: Callable[[str], None],
               give_way: StudyGivingWay | None = None) -> bool:
    """Train (or resume) one run of a study, waiting for the training lock and for its turn in the queue
    (``give_way``, given up once the run holds the lock); True when it finished."""
    resume = RunFiles(run_dir).config.is_file()
    config = {**with_data(run.config, parts), "name": run.run_id}
    try:
        status = start_training(config if not resume else {"epochs": config["epochs"]}, run_dir, resume=resume,
                                wait=True, origin="study", wait_for_lock=True, give_way=give_way,
                                on_start=give_way.release if give_way else None, echo=None)
    except ValueError as error:
        echo(f"{run.run_id}: failed: {first_line(error)}")
        return False
    finally:
        if give_way:
            give_way.release()
    if status.status == "done" and run_finished(run_dir):
        return True
    echo(f"{run.run_id}: {status.status}: {status.error or status.message}; see {RunFiles(run_dir).job_log}")
    return False


def start_study(config: str | Path, out: str | Path, *, data_root: str | Path | None = None,
                python: str | None = None, roots: Sequence[Path] | None = None,
                quota: UserQuota | None = None) -> subprocess.Popen:
    """Run the study in the background (``python -m moleseg.engine.studyrun``, its own session: a browser
    refresh does not stop it), logging to ``OUT/study.log``; progress: :func:`read_study_folder`. ``roots``:
    see :func:`checked_study`; ``quota``: see :func:`run_study`. Returns once the process holds ``out``'s lock (or
    has ended), at most :data:`~moleseg.core.config.STUDY_START_WAIT_S` seconds.

    Raises
    ------
    StudyError
        The study file is bad, a study runs in ``out`` (checked here first, so the app can say so at once), or
        :data:`~moleseg.core.config.MAX_RUNNING_STUDIES` others run in the folder holding ``out`` (the user's
        runs).
    """
    study = checked_study(config, data_root, roots)
    check_out_folder(study, out)
    if study_running(out):
        raise _running_error(out)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # One start at a time in these runs (in this server), each counted once its process holds its lock: two
    # sessions of a user clicking at once cannot both pass the count.
    with path_lock(out.parent):
        others = [folder.name for folder in running_studies(out.parent) if folder != out]
        if len(others) >= MAX_RUNNING_STUDIES:
            raise StudyError(f"{len(others)} of your studies are running ({', '.join(others)}): start another "
                             "when one has finished")
        out.mkdir(exist_ok=True)
        arguments = ["--config", str(config), "--out", str(out)]
        if data_root:
            arguments += ["--data-root", str(data_root)]
        for root in roots or ():  # the process reads the file again: checked again, as it is then
            arguments += ["--root", str(root)]
        arguments += quota.arguments() if quota else []
        command, env = child_command(python, STUDY_MODULE, arguments)  # the user and their folders kept out of ps
        with open_for_append(out / STUDY_LOG) as log:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True, close_fds=True, env=env)
        deadline = time.monotonic() + STUDY_START_WAIT_S
        while process.poll() is None and not study_running(out) and time.monotonic() < deadline:
            time.sleep(0.05)
        return process


def main(argv: Sequence[str] | None = None) -> int:
    """The background study process: run the study, one timestamped line per event in ``OUT/study.log``
    (:class:`moleseg.engine.runs.RunLog`); a problem is one line, exit 2; an error it did not foresee is its
    traceback and one line, exit 1, all escaped as a terminal gets them (:func:`terminal_streams`)."""
    parser = argparse.ArgumentParser(prog=f"python -m {STUDY_MODULE}", description="Run a study (see moleseg study).")
    parser.add_argument("--config", required=True, help="the study file")
    parser.add_argument("--out", required=True, help="the study folder")
    parser.add_argument("--data-root", help=STUDY_DATA_ROOT_HELP)
    parser.add_argument("--root", action="append", type=Path,
                        help="a folder the study's paths must lie in (repeat; the app's data roots)")
    parser.add_argument("--quota-gb", type=float, default=0.0, help="the user's disk quota in GB (0: none)")
    parser.add_argument("--quota-folder", action="append", type=Path, default=[],
                        help="a folder of the user's files counted against the quota (repeat)")
    parser.add_argument("--quota-advice", default="", help="what to delete, in the quota's refusal")
    parser.add_argument("--quota-owner", default="", help="the user whose saved visits and sessions count too")
    args = parser.parse_args(child_arguments(argv))  # from the environment when start_study started it
    log = RunLog(Path(args.out) / STUDY_LOG)
    quota = (UserQuota(args.quota_gb, tuple(args.quota_folder), args.quota_advice, args.quota_owner)
             if args.quota_gb > 0 else None)
    with terminal_streams():  # its output is study.log too: a traceback or a warning escaped, as the runner's
        try:
            rows = run_study(checked_study(args.config, args.data_root, args.root), args.out, echo=log, quota=quota)
        except (StudyError, OSError) as error:
            log(f"error: {first_line(error)}")
            return 2
        except Exception as error:  # a defect: its traceback, and one line saying the study stopped
            traceback.print_exc()
            log(f"error: the study stopped on an unexpected error ({type(error).__name__}: {first_line(error)})")
            return 1
    log(f"{count_of(len(rows), 'run')} finished")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
