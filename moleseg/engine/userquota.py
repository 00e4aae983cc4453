"""A user's disk quota on a shared server (the setting ``user_quota_gb``) over every file of theirs, the one check
the pages make before a write (:mod:`moleseg.app.quota`) and a study makes before each of its runs
(:func:`moleseg.engine.studyrun.run_study`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from moleseg.core.diskusage import quota_refusal, usage_bytes

__all__ = ["UserQuota"]


@dataclass(frozen=True)
class UserQuota:
    """A user's disk quota (:func:`moleseg.core.diskusage.quota_refusal`), as the app checks it before a write and
    their study before each run (a start alone was checked: a study of up to 1,000 runs, each a model file of up to
    hundreds of MB, then grew their files far past it): ``quota_gb`` GB over their files, which are the ``folders``
    of their space and, for a named ``owner``, the pictures of the visits they saved and their sessions' folders
    (the datasets unpacked from their uploads), and what to delete, in the refusal's words."""

    quota_gb: float
    folders: tuple[Path, ...]
    what_to_delete: str
    owner: str = ""

    def all_folders(self) -> list[Path]:
        """Every folder of the user's files now (records that cannot be read count for nothing: their saves are
        refused by the records themselves)."""
        from moleseg.engine.records import Records, RecordsError
        from moleseg.engine.session import owned_session_folders

        folders = list(self.folders)
        if self.owner:
            try:
                folders += Records().owned_folders(self.owner)
            except (RecordsError, OSError):
                pass
            folders += owned_session_folders(self.owner)
        return folders

    def refusal(self) -> str | None:
        """One sentence when the user's files reach the quota (:func:`moleseg.core.diskusage.usage_bytes`), else
        None."""
        return quota_refusal(usage_bytes(self.all_folders()), self.quota_gb, self.what_to_delete)

    def arguments(self) -> list[str]:
        """The quota as the flags of the background study process (:func:`moleseg.engine.studyrun.main`), each
        ``--flag=value``: a value that starts with '-' (a sign-in name may) is not read as an option."""
        flags = [f"--quota-gb={float(self.quota_gb)!r}", f"--quota-advice={self.what_to_delete}",
                 f"--quota-owner={self.owner}"]
        return flags + [f"--quota-folder={folder}" for folder in self.folders]
