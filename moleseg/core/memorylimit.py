"""The memory this process may use: the smaller of the machine's and the limit of its control group.

In a container (docker, Kubernetes) ``/proc/meminfo`` tells the machine's memory, often many times what the
container may take before the kernel kills it: shares of the machine's memory (each user's analyses,
:func:`moleseg.core.config.analysis_bytes_per_user`) and the largest image read
(:func:`moleseg.core.config.max_image_pixels`) let one user get the server killed. :func:`memory_limit_bytes` and
:func:`available_memory_bytes` read the limits of this process's control group (``/proc/self/cgroup``): cgroup v2's
``memory.max`` (``max``: none), cgroup v1's ``memory.limit_in_bytes``, of its own group and of every group above
it in the mounted hierarchy (the smallest counts); every file is read under ``root`` (``/``; a test's fake tree).
Linux only: elsewhere both say None (unknown).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CgroupMemory", "available_memory_bytes", "cgroup_memory", "memory_limit_bytes", "meminfo_bytes"]

#: Where the kernel mounts the control groups: cgroup v2's single hierarchy, cgroup v1's memory controller.
_V2_MOUNT, _V1_MOUNT = "sys/fs/cgroup", "sys/fs/cgroup/memory"
#: A group's limit, its memory in use, and the page cache it could drop (``memory.stat``'s field): v2, then v1.
_V2_FILES = ("memory.max", "memory.current", "inactive_file")
_V1_FILES = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
#: Limits at or above this many bytes mean none (cgroup v1 writes 2**63 rounded down to a page for "no limit").
_NO_LIMIT_BYTES = 1 << 62


@dataclass(frozen=True)
class CgroupMemory:
    """The tightest memory limit of a process's control groups: ``limit`` bytes, of which ``used`` are in use
    beside the page cache the kernel could drop (``available``: what the group can still give)."""

    limit: int
    used: int

    @property
    def available(self) -> int:
        return max(0, self.limit - self.used)


def meminfo_bytes(field: str, root: Path = Path("/")) -> int | None:
    """The ``field`` of ``/proc/meminfo`` (e.g. ``MemTotal``), bytes; None when unknown."""
    try:
        with open(root / "proc" / "meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _number(path: Path) -> int | None:
    """The integer in ``path`` (a cgroup file); None when missing, unreadable, ``max`` or past any real memory."""
    try:
        value = int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    return value if 0 <= value < _NO_LIMIT_BYTES else None


def _stat_field(path: Path, field: str) -> int:
    """The ``field`` of the ``memory.stat`` file ``path``, 0 when absent."""
    try:
        for line in path.read_text(encoding="ascii").splitlines():
            name, _, value = line.partition(" ")
            if name == field:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _groups(root: Path) -> list[tuple[Path, tuple[str, str, str]]]:
    """The folders of this process's memory control groups, with the names of their files: for each hierarchy
    that holds the memory controller (v2's ``0::PATH``, v1's ``N:...memory...:PATH``), the group's folder and
    every folder above it up to the mount point (in a container the group's path names the host's groups, which
    the container's mount shows as its own root; such missing folders are left out, as are those that cannot be
    looked at)."""
    try:
        lines = (root / "proc" / "self" / "cgroup").read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    found = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            mount, files = root / _V2_MOUNT, _V2_FILES
        elif "memory" in controllers.split(","):
            mount, files = root / _V1_MOUNT, _V1_FILES
        else:
            continue
        parts = [part for part in path.split("/") if part]
        found += [(mount.joinpath(*parts[:depth]), files) for depth in range(len(parts), -1, -1)]
    return [(folder, files) for folder, files in found if os.path.isdir(folder)]  # False on any OSError


def cgroup_memory(root: Path = Path("/")) -> CgroupMemory | None:
    """The tightest memory limit of this process's control groups (:class:`CgroupMemory`: the group whose
    ``limit - used`` is smallest); None when no group has one (``max``, no cgroup, not Linux)."""
    tightest: CgroupMemory | None = None
    for folder, (limit_name, used_name, cache_field) in _groups(root):
        limit = _number(folder / limit_name)
        if limit is None:
            continue
        used = max(0, (_number(folder / used_name) or 0) - _stat_field(folder / "memory.stat", cache_field))
        group = CgroupMemory(limit=limit, used=used)
        if tightest is None or group.available < tightest.available:
            tightest = group
    return tightest


def memory_limit_bytes(root: Path = Path("/")) -> int | None:
    """Memory this process may use, bytes: the machine's (``MemTotal``) or its control group's limit, whichever is
    smaller; None when neither is known."""
    known = [value for value in (meminfo_bytes("MemTotal", root), _limit(root)) if value is not None]
    return min(known) if known else None


def _limit(root: Path) -> int | None:
    limits = [limit for folder, (name, _, _) in _groups(root) if (limit := _number(folder / name)) is not None]
    return min(limits) if limits else None


def available_memory_bytes(root: Path = Path("/")) -> int | None:
    """Memory this process can still get, bytes: what the machine can still give (``MemAvailable``) or what its
    tightest control group can (its limit less what it uses beside droppable page cache), whichever is smaller;
    None when neither is known."""
    group = cgroup_memory(root)
    known = [value for value in (meminfo_bytes("MemAvailable", root), group and group.available) if value is not None]
    return min(known) if known else None
