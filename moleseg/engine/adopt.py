"""Handing the personal-mode folders to one user of shared mode: the data folder's runs and studies, "My
dataset" and device profiles (:func:`moleseg.core.userspace.personal_space`) moved into that user's space
(:func:`moleseg.core.userspace.shared_space`, the app's own), each by one rename, once every check has passed.

:func:`plan_adoption` checks and plans without changing anything (``moleseg adopt --dry-run`` prints it);
:func:`adopt` carries a plan out while it holds the training lock and the lock of every study it moves. A
refusal (:class:`AdoptionRefused`) is one sentence naming the folder and the reason, and nothing is moved:

* the user name is not one an identity source gives (:func:`moleseg.core.userspace.signed_in_name`);
* the data folder is missing, or belongs to another account than the one running the command (the server's
  account must own what it later reads);
* a folder of the user's space that would receive one already holds content: run folders are merged only when
  no name clashes, and the clashes are listed; "My dataset" and the device profiles are never merged;
* a folder would cross to another file system (a copy could be left half done; a rename cannot);
* a training or a study is running (:mod:`moleseg.engine.trainlock`, :func:`moleseg.engine.studyrun.study_running`).

Saved visits are not moved: they keep the owner they were saved with (the records' own rules apply).
"""

from __future__ import annotations

import os
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from filelock import Timeout

from moleseg.core.atomic import fsync_folder
from moleseg.core.config import data_dir
from moleseg.core.devices import read_profiles
from moleseg.core.userspace import (UserSpace, personal_space, shared_space, shared_space_folders,
                                    signed_in_name)
from moleseg.core.words import count_of, noun_for
from moleseg.engine.finetune import corrections_pairs
from moleseg.engine.studyplan import StudyError
from moleseg.engine.studyrun import hold_study_lock, list_study_folders, study_running
from moleseg.engine.trainlock import TrainingHolder, active_training, training_lock

__all__ = ["AdoptionPlan", "AdoptionRefused", "Move", "adopt", "plan_adoption", "shown_path"]

#: The words every refusal ends its reason with.
NOTHING_MOVED: str = "nothing moved"


class AdoptionRefused(ValueError):
    """Nothing was moved: the message names the folder and the reason, in one sentence."""


def shown_path(data: Path, path: Path) -> str:
    """``path`` relative to the data folder ``data`` when inside it (``users/anna-.../runs``), else in full."""
    return str(path.relative_to(data)) if path.is_relative_to(data) else str(path)


@dataclass(frozen=True)
class Move:
    """One folder (or file) of the personal space handed over.

    Attributes
    ----------
    source
        The personal-mode folder or file.
    target
        Its place in the user's space.
    contents
        What it holds, counted (``"3 runs, 1 study"``).
    entries
        Empty: ``source`` itself becomes ``target`` (one rename). Otherwise ``target`` already holds other
        folders and each of these names in ``source`` is renamed into it (one rename each).
    """

    source: Path
    target: Path
    contents: str
    entries: tuple[str, ...] = ()


@dataclass(frozen=True)
class AdoptionPlan:
    """What :func:`adopt` moves, checked by :func:`plan_adoption`.

    Attributes
    ----------
    user_name
        The user as the identity source names them.
    data
        The data folder.
    space
        The user's space in it (not created yet when it did not exist).
    moves
        The renames, in order; empty when the personal space holds nothing.
    studies
        The study folders moved (their locks are held during the move).
    """

    user_name: str
    data: Path
    space: UserSpace
    moves: tuple[Move, ...]
    studies: tuple[Path, ...]

    def move_line(self, move: Move) -> str:
        """One line of the plan, e.g. ``"runs/ -> users/anna-.../runs/: 3 runs, 1 study"``; a merge says
        what the target already holds (``"runs/* -> users/anna-.../runs/ (beside its 2 folders): 1 run"``)."""
        slash = "/" if move.source.is_dir() else ""
        source, target = shown_path(self.data, move.source) + slash, shown_path(self.data, move.target) + slash
        if move.entries:
            beside = count_of(len(list(move.target.iterdir())), "folder")
            return f"{source}* -> {target} (beside its {beside}): {move.contents}"
        return f"{source} -> {target}: {move.contents}"

    def headline(self, dry_run: bool) -> str:
        """The line before the moves' lines: into whose space they move (or would, in a ``dry_run``)."""
        if not self.moves:
            return (f"Nothing to move: the data folder {self.data} holds no runs, studies, \"My dataset\" or "
                    f"device profiles of personal mode")
        verb = "Would move" if dry_run else "Moving"
        home = shown_path(self.data, self.space.runs.parent) + "/"
        return f"{verb} into {self.user_name}'s space {home} of the data folder {self.data}:"


def _has_content(path: Path) -> bool:
    if path.is_dir():
        return any(path.iterdir())
    return path.exists() or path.is_symlink()


def _existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _runs_contents(runs: Path, studies: list[Path]) -> str:
    entries = list(runs.iterdir())
    folders = sum(1 for entry in entries if entry.is_dir() and entry not in studies)
    parts = [count_of(folders, "run"), count_of(len(studies), "study", "studies"),
             count_of(len(entries) - folders - len(studies), "other file")]
    return ", ".join(part for part in parts if not part.startswith("0 "))


def _profiles_contents(path: Path) -> str:
    try:
        return count_of(len(read_profiles(path).profiles), "device profile")
    except ValueError:
        return "an unreadable device profiles file"


def _checked_data_folder(data: Path) -> Path:
    if not data.is_dir():
        raise AdoptionRefused(f"the data folder {data} does not exist: {NOTHING_MOVED}; run this with the server's "
                              f"settings (MOLESEG_CONFIG, MOLESEG_DATA_DIR)")
    owner, me = data.stat().st_uid, os.geteuid()
    if owner != me:
        raise AdoptionRefused(f"the data folder {data} belongs to another account (uid {owner}) than this command's "
                              f"(uid {me}): {NOTHING_MOVED}; run it as the account that runs the server")
    return data


def _runs_move(data: Path, source: Path, target: Path, studies: list[Path]) -> Move:
    contents = _runs_contents(source, studies)
    if not _has_content(target):
        return Move(source, target, contents)
    names = sorted(entry.name for entry in source.iterdir())
    clashes = [name for name in names if (target / name).exists() or (target / name).is_symlink()]
    if clashes:
        raise AdoptionRefused(f"{shown_path(data, target)} and {shown_path(data, source)} both hold "
                              f"{noun_for(len(clashes), 'a folder named', 'folders named')} {', '.join(clashes)}: "
                              f"{NOTHING_MOVED}; rename or remove one of each pair first")
    return Move(source, target, contents, tuple(names))


def _whole_move(data: Path, source: Path, target: Path, what: str, contents: str) -> Move:
    if _has_content(target):
        raise AdoptionRefused(f"{shown_path(data, target)} already holds the user's own {what}: {NOTHING_MOVED}; "
                              f"merge the two by hand or move one away first")
    return Move(source, target, contents)


def _check_same_file_system(data: Path, move: Move) -> None:
    if move.source.lstat().st_dev != _existing_ancestor(move.target).stat().st_dev:
        raise AdoptionRefused(f"{shown_path(data, move.source)} is on another file system than "
                              f"{shown_path(data, move.target)}: {NOTHING_MOVED}, since a copy could be left half "
                              f"done; move it by hand")


def _training_refusal(holder: TrainingHolder) -> AdoptionRefused:
    return AdoptionRefused(f"{NOTHING_MOVED}: {holder.sentence()}")


def _study_refusal(data: Path, study: Path) -> AdoptionRefused:
    return AdoptionRefused(f"a study is running in {shown_path(data, study)}: {NOTHING_MOVED}; wait for it to "
                           f"finish")


def _check_nothing_running(data: Path, studies: tuple[Path, ...]) -> None:
    holder = active_training()
    if holder is not None:
        raise _training_refusal(holder)
    for study in studies:
        if study_running(study):
            raise _study_refusal(data, study)


def plan_adoption(user_name: str) -> AdoptionPlan:
    """Check that the personal space can be handed to ``user_name`` and plan the moves; changes nothing.

    Parameters
    ----------
    user_name : str
        The user as the identity source names them (a proxy header's value, an e-mail); the folders are those
        of the server's data folder (:func:`moleseg.core.config.data_dir`).

    Raises
    ------
    AdoptionRefused
        One sentence naming the folder and the reason (see the module's docstring).
    """
    try:
        name = signed_in_name(user_name)
    except ValueError as error:
        raise AdoptionRefused(f"{error}: {NOTHING_MOVED}") from None
    data = _checked_data_folder(data_dir())
    mine, theirs = personal_space(), shared_space_folders(data, name)
    studies = list_study_folders(mine.runs)
    moves = []
    if _has_content(mine.runs):
        moves.append(_runs_move(data, mine.runs, theirs.runs, studies))
    if _has_content(mine.dataset):
        pairs = count_of(corrections_pairs(mine.dataset), "image pair")
        moves.append(_whole_move(data, mine.dataset, theirs.dataset, '"My dataset"', pairs))
    if _has_content(mine.device_profiles):
        moves.append(_whole_move(data, mine.device_profiles, theirs.device_profiles, "device profiles",
                                 _profiles_contents(mine.device_profiles)))
    for move in moves:
        _check_same_file_system(data, move)
    _check_nothing_running(data, tuple(studies))
    return AdoptionPlan(name, data, theirs, tuple(moves), tuple(studies))


def _rename(source: Path, target: Path) -> None:
    os.replace(source, target)
    fsync_folder(source.parent)
    fsync_folder(target.parent)


def adopt(plan: AdoptionPlan, echo: Callable[[str], None] = print) -> None:
    """Carry out ``plan`` (:func:`plan_adoption`): hold the training lock and the moved studies' locks, create
    the user's space (:func:`moleseg.core.userspace.shared_space`) and rename each move's folder into it,
    calling ``echo`` with :meth:`AdoptionPlan.move_line` after each.

    Raises
    ------
    AdoptionRefused
        A training or a study started since the plan was made (nothing moved).
    OSError
        A rename failed (the moves before it are done and were echoed; that folder stays where it was).
    """
    with ExitStack() as held:
        lock = training_lock()
        try:
            lock.acquire(blocking=False)
        except Timeout:
            raise _training_refusal(active_training() or TrainingHolder()) from None
        held.callback(lock.release)
        for study in plan.studies:
            try:
                held.enter_context(hold_study_lock(study))
            except StudyError:
                raise _study_refusal(plan.data, study) from None
        shared_space(plan.data, plan.user_name)
        for move in plan.moves:
            line = plan.move_line(move)
            if move.entries:
                for entry in move.entries:
                    _rename(move.source / entry, move.target / entry)
                with suppress(OSError):  # a file that appeared since the plan stays where it is
                    move.source.rmdir()
            else:
                _rename(move.source, move.target)
            echo(line)
        shared_space(plan.data, plan.user_name)  # the moved folders get the space's permissions
