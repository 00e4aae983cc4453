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
* a folder the move reads or writes through (the user's space, a source, a target) is a symbolic link;
* a folder would cross to another file system (a copy could be left half done; a rename cannot);
* a training or a study is running (:mod:`moleseg.engine.trainlock`, :func:`moleseg.engine.studyrun.study_running`).

The saved visits (:mod:`moleseg.engine.records`) are handed over when the operator asks
(``moleseg adopt --records``): :func:`plan_records` counts those personal mode saved (owned by the server's
account, :func:`moleseg.engine.recordtypes.personal_owner`) and, with ``ownerless``, those saved before records had
owners; :func:`adopt_records` gives them to the user in one transaction, one "adopted" audit entry per visit
naming the owner before and after and the operator's account (:func:`operator_account`). A refusal is one
sentence and changes nothing: the user name is personal mode's own, or the records database cannot be used.
"""

from __future__ import annotations

import os
import pwd
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from filelock import Timeout

from moleseg.core.atomic import fsync_folder
from moleseg.core.config import data_dir
from moleseg.core.settings import load_settings
from moleseg.core.devices import read_profiles
from moleseg.core.userspace import (UserSpace, personal_space, shared_space, shared_space_folders,
                                    signed_in_name)
from moleseg.core.words import count_of, noun_for
from moleseg.engine.finetune import corrections_pairs
from moleseg.engine.records import Records, RecordsError
from moleseg.engine.recordsdb import REFUSED
from moleseg.engine.recordtypes import NO_OWNER, personal_owner
from moleseg.engine.studyplan import StudyError
from moleseg.engine.studyrun import hold_study_lock, list_study_folders, study_running
from moleseg.engine.trainlock import TrainingHolder, active_training, training_lock

__all__ = ["AdoptionPlan", "AdoptionRefused", "Move", "RecordsPlan", "adopt", "adopt_records", "operator_account",
           "plan_adoption", "plan_records", "shown_path"]

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
    clashes = [name for name in names if os.path.lexists(target / name)]
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


def _check_no_symbolic_link(data: Path, paths: tuple[Path, ...]) -> None:
    for path in paths:
        if path.is_symlink():
            raise AdoptionRefused(f"{shown_path(data, path)} is a symbolic link, which a move could follow out of "
                                  f"the data folder: {NOTHING_MOVED}; replace it with the folder itself")


def _check_targets_free(data: Path, move: Move) -> None:
    if not move.entries:
        if _has_content(move.target):
            raise AdoptionRefused(f"{shown_path(data, move.target)} received content since the plan was made: "
                                  f"{NOTHING_MOVED}; run the command again")
        return
    taken = [name for name in move.entries if os.path.lexists(move.target / name)]
    if taken:
        raise AdoptionRefused(f"{shown_path(data, move.target)} received "
                              f"{noun_for(len(taken), 'a folder named', 'folders named')} {', '.join(taken)} since "
                              f"the plan was made: {NOTHING_MOVED}; run the command again")


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


def _linked_paths(data: Path, user_name: str, moves: tuple[Move, ...]) -> tuple[Path, ...]:
    """The paths a move reads or writes through: the user's space, its folders and each move's source and
    target; none may be a symbolic link."""
    space = shared_space_folders(data, user_name)
    return (space.runs.parents[1], space.runs.parent, space.runs, space.dataset, space.device_profiles,
            *(path for move in moves for path in (move.source, move.target)))


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
    _check_no_symbolic_link(data, _linked_paths(data, name, tuple(moves)))
    for move in moves:
        _check_same_file_system(data, move)
    _check_nothing_running(data, tuple(studies))
    return AdoptionPlan(name, data, theirs, tuple(moves), tuple(studies))


def _rename(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target`` without ever replacing a file there: a file is linked then unlinked
    (the link fails when ``target`` exists); a folder's rename fails on anything but an empty folder."""
    if source.is_dir():
        os.rename(source, target)
    else:
        os.link(source, target, follow_symlinks=False)
        os.unlink(source)
    fsync_folder(source.parent)
    fsync_folder(target.parent)


def adopt(plan: AdoptionPlan, echo: Callable[[str], None] = print) -> None:
    """Carry out ``plan`` (:func:`plan_adoption`): hold the training lock and the moved studies' locks, create
    the user's space (:func:`moleseg.core.userspace.shared_space`) and rename each move's folder into it,
    calling ``echo`` with :meth:`AdoptionPlan.move_line` after each.

    Raises
    ------
    AdoptionRefused
        A training or a study started since the plan was made, a target received content or a path became a
        symbolic link (nothing moved).
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
        _check_no_symbolic_link(plan.data, _linked_paths(plan.data, plan.user_name, plan.moves))
        for move in plan.moves:
            _check_targets_free(plan.data, move)
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


def operator_account() -> str:
    """The name of the account that runs this command (its effective user id), as the audit trail names the
    operator; the number when the account has no name."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@dataclass(frozen=True)
class RecordsPlan:
    """The saved visits :func:`adopt_records` hands to the user, counted by :func:`plan_records`.

    Attributes
    ----------
    user_name
        The user who receives them.
    counts
        How many visits each owner gives: personal mode's (:func:`moleseg.engine.recordtypes.personal_owner`),
        then, when asked, :data:`moleseg.engine.recordtypes.NO_OWNER` (those saved before records had owners).
    records
        The records of the server's settings; None when there is no records database yet.
    """

    user_name: str
    counts: dict[str, int]
    records: Records | None

    def line(self, dry_run: bool, given: dict[str, int] | None = None) -> str:
        """What is (``given``: was) handed over, e.g. ``"Would give Anna 3 saved visits of the account moleseg
        and 1 saved visit without an owner"``."""
        counts = self.counts if given is None else given
        parts = [count_of(count, "saved visit") + (" without an owner" if owner == NO_OWNER else
                                                    f" of the account {owner}")
                 for owner, count in counts.items()]
        verb = "Would give" if dry_run else "Gave"
        return f"{verb} {self.user_name} {' and '.join(parts)}"


#: The words ending the refusal of the records database once the folders have moved.
NO_VISIT_HANDED_OVER: str = "no saved visit was handed over"


def _records_refusal(error: RecordsError, ending: str) -> AdoptionRefused:
    return AdoptionRefused(f"{str(error).removesuffix(REFUSED).rstrip('.')}: {ending}")


def plan_records(user_name: str, ownerless: bool) -> RecordsPlan:
    """Count the saved visits :func:`adopt_records` would give to ``user_name`` (checked as by
    :func:`plan_adoption`): personal mode's and, with ``ownerless``, those saved before records had owners, in
    the records of the server's settings (its ``database_url``, else the data folder's SQLite file; none is
    created). Changes nothing.

    Raises
    ------
    AdoptionRefused
        The name is not one a sign-in gives, or is personal mode's own, or the records database cannot be used.
    """
    try:
        name = signed_in_name(user_name)
    except ValueError as error:
        raise AdoptionRefused(f"{error}: {NOTHING_MOVED}") from None
    owners = [personal_owner(), *([NO_OWNER] if ownerless else [])]
    if name == owners[0]:
        raise AdoptionRefused(f"{name} is the account that owns personal mode's saved visits: they are theirs "
                              f"already, {NOTHING_MOVED}")
    if not (load_settings().database_url or Records.database_file().exists()):
        return RecordsPlan(name, dict.fromkeys(owners, 0), None)
    try:
        records = Records()
        return RecordsPlan(name, {owner: records.owned_count(owner) for owner in owners}, records)
    except RecordsError as error:
        raise _records_refusal(error, NOTHING_MOVED) from None


def adopt_records(plan: RecordsPlan) -> dict[str, int]:
    """Carry out ``plan`` (:func:`plan_records`): give the counted owners' saved visits (those saved since the
    plan included) to its user, in one transaction, one "adopted" audit entry per visit by
    :func:`operator_account`; returns how many each owner gave.

    Raises
    ------
    AdoptionRefused
        The records database refused (nothing handed over: :data:`NO_VISIT_HANDED_OVER`).
    """
    if plan.records is None:
        return dict(plan.counts)
    try:
        return plan.records.hand_over(operator_account(), tuple(plan.counts), plan.user_name)
    except RecordsError as error:
        raise _records_refusal(error, NO_VISIT_HANDED_OVER) from None
