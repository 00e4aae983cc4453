"""How much disk a user's files take, for the per-user quota of a shared server (``user_quota_gb`` of
:mod:`moleseg.core.settings`): a walk of their folders with :func:`os.scandir` (no symbolic link followed),
believed for :data:`~moleseg.core.config.USER_USAGE_CACHE_S`, and the one sentence of a refusal. Standard
library only.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Iterable

from moleseg.core.config import USER_USAGE_CACHE_S

#: Bytes in one GB of ``user_quota_gb`` (decimal, as disks are sold and ``df -H`` counts).
BYTES_PER_GB: int = 1_000_000_000

_cache: dict[tuple[str, ...], tuple[float, int]] = {}
_cache_lock = threading.Lock()


def folder_bytes(folder: str | Path) -> int:
    """Bytes of the files under ``folder``, sub-folders included (sizes as ``lstat`` gives them: a symbolic
    link counts as itself, never what it points to); 0 when it does not exist. Entries that vanish or cannot
    be read while it is walked are skipped."""
    total = 0
    pending = [os.fspath(folder)]
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(entry.path)
                        else:
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def usage_bytes(folders: Iterable[str | Path], *, now: float | None = None) -> int:
    """Bytes under ``folders`` together (:func:`folder_bytes` of each), measured again only when the last
    measure of the same folders is older than :data:`~moleseg.core.config.USER_USAGE_CACHE_S` seconds
    (``now``: the monotonic clock, for tests)."""
    key = tuple(sorted(os.fspath(folder) for folder in folders))
    now = time.monotonic() if now is None else now
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None and now - cached[0] < USER_USAGE_CACHE_S:
        return cached[1]
    total = sum(folder_bytes(folder) for folder in key)
    with _cache_lock:  # a measure past its time is never used again: forgotten (a user's folders change often)
        for stale in [other for other, (measured, _) in _cache.items() if now - measured >= USER_USAGE_CACHE_S]:
            del _cache[stale]
        _cache[key] = (now, total)
    return total


def quota_refusal(usage: int, quota_gb: float, what_to_delete: str) -> str | None:
    """The refusal of a write that would grow a user's files, once ``usage`` bytes reach ``quota_gb`` GB (one
    sentence: the usage, the quota and ``what_to_delete``); None below it, or with no quota (``quota_gb`` 0)."""
    if quota_gb <= 0 or usage < quota_gb * BYTES_PER_GB:
        return None
    return (f"Your files take {usage / BYTES_PER_GB:.2f} GB of your {quota_gb:g} GB quota on this server: "
            f"{what_to_delete}, then try again.")
