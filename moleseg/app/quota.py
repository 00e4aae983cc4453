"""The per-user disk quota of a shared server (the setting ``user_quota_gb``), checked before anything that grows
a user's files: a training, fine-tune or study start (and each run of a study), a save to "My dataset", a save to
the records and a dataset ZIP unpacked on the Prepare page.

A user's files are their space (:mod:`moleseg.core.userspace`: runs, studies, "My dataset", device profiles and,
in shared mode, the example cache of their trainings),
the pictures of the visits they saved (:meth:`moleseg.engine.records.Records.owned_folders`) and their sessions'
folders (:func:`moleseg.engine.session.owned_session_folders`: the datasets unpacked from their uploads),
measured by :func:`moleseg.core.diskusage.usage_bytes`. Over the quota, :class:`OverQuota` carries one sentence with the
usage, the quota and what to delete, and nothing is started or written.
"""

from __future__ import annotations

from pathlib import Path

from moleseg.core.settings import load_settings
from moleseg.core.userspace import UserSpace
from moleseg.engine.recordtypes import User
from moleseg.engine.userquota import UserQuota

#: What a user over quota can do, in the refusal's words.
WHAT_TO_DELETE: str = ("delete saved visits you no longer need on the History page, close the tabs holding an "
                       "uploaded dataset, or ask the server's operator to remove old runs, studies or images of My "
                       "dataset from {folder}")


class OverQuota(ValueError):
    """A write refused because the user's files reach their quota; the message is one sentence."""


def user_folders(space: UserSpace) -> list[Path]:
    """The folders of ``space``: the user's own folder in shared mode (which holds runs, "My dataset" and device
    profiles), the runs and "My dataset" folders in personal mode."""
    return [space.runs.parent] if space.shared else [space.runs, space.dataset]


def what_to_delete(space: UserSpace) -> str:
    """:data:`WHAT_TO_DELETE` for the user of ``space``."""
    return WHAT_TO_DELETE.format(folder=space.runs.parent if space.shared else space.runs)


def session_quota() -> UserQuota | None:
    """This browser session's user's quota (the server's ``user_quota_gb``) over their files, as the pages check it
    before a write and a study before each run; None without a quota, or without a user or space (the page
    refuses those on its own)."""
    quota_gb = load_settings().user_quota_gb
    if quota_gb <= 0:
        return None
    from moleseg.app.identity import current_user, find_user_space  # Streamlit's: only with a quota to check

    space, user = find_user_space(), current_user()
    if not isinstance(space, UserSpace) or not isinstance(user, User):
        return None
    return UserQuota(quota_gb, tuple(user_folders(space)), what_to_delete(space), user.name)


def check_session_quota() -> None:
    """Refuse a write of this browser session's user once their files reach the server's ``user_quota_gb``
    (:func:`session_quota`; nothing to check without one).

    Raises
    ------
    OverQuota
        When the user's files reach the quota: their usage, the quota and what to delete, in one sentence.
    """
    quota = session_quota()
    refusal = quota.refusal() if quota else None
    if refusal:
        raise OverQuota(refusal)
