"""Size budgets of ZIP archives from untrusted hands, checked on the ZIP directory before any member is read.

An uploaded dataset ZIP, a ``.keras`` model file and a PyTorch weights file are all ZIP archives that a
user may have crafted: a 2 MB archive can declare gigabytes of members (a "ZIP bomb"). The headers of the
ZIP directory (``zipfile.ZipFile.infolist``, cheap) give each member's declared and compressed size, and
Python's ``zipfile`` never unpacks more than a member declares, so a budget on the declared sizes bounds
what reading the archive costs. Every limit of such archives lives here, one :class:`ZipBudget` per kind
of archive.
"""

from __future__ import annotations

import os
import struct
import zipfile
from dataclasses import dataclass
from typing import IO, Sequence, Union

from moleseg.core.words import size_text

#: Largest compression ratio (uncompressed / compressed size) of one member larger than
#: :data:`RATIO_CHECK_MIN_BYTES`, and of the members counted so far together.
MAX_COMPRESSION_RATIO: float = 200.0
#: Members (and running totals) at or below this many uncompressed bytes are not ratio-checked.
RATIO_CHECK_MIN_BYTES: int = 1024 * 1024
#: Characters of a member name quoted in a message (longer names are cut with "...").
NAME_SHOWN_CHARACTERS: int = 80


class ArchiveError(ValueError):
    """An archive that is not a ZIP, is unsafe, too large, or does not hold what it should."""


@dataclass(frozen=True)
class ZipBudget:
    """What one kind of archive may declare.

    Attributes
    ----------
    max_members : int
        Entries of the ZIP directory, folders included (>= 1).
    max_bytes : int
        Uncompressed bytes of all members together (>= 1).
    max_ratio : float
        Largest compression ratio of a member, and of the members together, once above
        :data:`RATIO_CHECK_MIN_BYTES` (> 1).
    """

    max_members: int
    max_bytes: int
    max_ratio: float = MAX_COMPRESSION_RATIO

    @property
    def size_text(self) -> str:
        """:attr:`max_bytes` for a message, in the unit that fits (:func:`moleseg.core.words.size_text`)."""
        return size_text(self.max_bytes)


#: An uploaded dataset of images and masks.
DATASET_BUDGET = ZipBudget(max_members=20_000, max_bytes=4 * 1024**3)
#: A ``.keras`` model file or a PyTorch weights file. The shipped models hold 4 members, 9.6 MB together
#: (``model.weights.h5`` 9.3 MB, stored uncompressed), torchvision's MobileNetV2 weights 14 MB; the largest
#: backbone offered (InceptionResNetV2, 56 M parameters) about 0.25 GB.
MODEL_BUDGET = ZipBudget(max_members=256, max_bytes=1024**3)
#: Largest ``moleseg.json`` inside a ``.keras`` file, in bytes (the shipped models' are about 11 kB).
MODEL_INFO_MAX_BYTES: int = 1024**2


def shown_name(name: str) -> str:
    """A member name for a message: quoted, cut to :data:`NAME_SHOWN_CHARACTERS` characters."""
    return repr(name if len(name) <= NAME_SHOWN_CHARACTERS else name[:NAME_SHOWN_CHARACTERS] + "...")


class BudgetTally:
    """Running totals of the members of one archive checked against a :class:`ZipBudget`, one member at a
    time (so a caller that skips some members counts only those it will unpack)."""

    def __init__(self, budget: ZipBudget) -> None:
        self.budget = budget
        self.declared_bytes = 0
        self.compressed_bytes = 0

    def add(self, info: zipfile.ZipInfo) -> None:
        """Count one member.

        Raises
        ------
        ArchiveError
            The member is compressed more than ``max_ratio`` times, or the members so far declare more than
            ``max_bytes`` or are compressed more than ``max_ratio`` times together (the message names the
            member).
        """
        budget = self.budget
        compressed = max(1, info.compress_size)
        if info.file_size > RATIO_CHECK_MIN_BYTES and info.file_size > budget.max_ratio * compressed:
            raise ArchiveError(f"{info.filename} is compressed {info.file_size / compressed:.0f} times: refused "
                               "as a possible zip bomb")
        self.declared_bytes += info.file_size
        self.compressed_bytes += info.compress_size
        if self.declared_bytes > budget.max_bytes:
            raise ArchiveError(f"the archive would unpack to more than {budget.size_text} "
                               f"(at {shown_name(info.filename)})")
        together = self.declared_bytes / max(1, self.compressed_bytes)
        if self.declared_bytes > RATIO_CHECK_MIN_BYTES and together > budget.max_ratio:
            raise ArchiveError(f"the archive's members up to {shown_name(info.filename)} are compressed "
                               f"{together:.0f} times together (at most {budget.max_ratio:g}): refused as a "
                               "possible zip bomb")


def _too_many(count: str, budget: ZipBudget) -> ArchiveError:
    return ArchiveError(f"the archive holds {count} entries; at most {budget.max_members} are accepted")


def check_member_count(members: Sequence[zipfile.ZipInfo], budget: ZipBudget) -> None:
    """Refuse a ZIP directory with more than ``budget.max_members`` entries (:class:`ArchiveError`)."""
    if len(members) > budget.max_members:
        raise _too_many(str(len(members)), budget)


#: A ZIP archive as :func:`check_directory_entries` takes it: its path, or an open seekable binary file.
ZipSource = Union[str, "os.PathLike[str]", IO[bytes]]
_ENTRY = struct.Struct("<4s42x")  # a central directory entry's fixed part: signature ... (46 bytes)
_ENTRY_LENGTHS = struct.Struct("<HHH")  # its name, extra field and comment lengths, at byte 28


def _directory_entries(fp: IO[bytes], most: int) -> int | None:
    """Entries of the ZIP central directory of ``fp``, counted up to ``most + 1``; None when the directory cannot
    be found or read (``zipfile`` then refuses the file with its reason). Reads the directory's bytes, makes no
    object per entry (``zipfile.ZipFile`` makes one of some 400 bytes for each)."""
    end = zipfile._EndRecData(fp)  # the end record, ZIP64 included, found as zipfile finds it
    if not end:
        return None
    size, offset = end[zipfile._ECD_SIZE], end[zipfile._ECD_OFFSET]
    start = end[zipfile._ECD_LOCATION] - size
    if end[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:
        start -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator
    if start < 0 or offset < 0:
        return None
    fp.seek(start)
    directory = fp.read(size)
    count = position = 0
    while position + _ENTRY.size <= len(directory) and count <= most:
        if _ENTRY.unpack_from(directory, position)[0] != zipfile.stringCentralDir:
            return None
        name, extra, comment = _ENTRY_LENGTHS.unpack_from(directory, position + 28)
        position += _ENTRY.size + name + extra + comment
        count += 1
    return count


def check_directory_entries(source: ZipSource, budget: ZipBudget) -> None:
    """Refuse a ZIP archive whose central directory lists more than ``budget.max_members`` entries, counted from
    its bytes before ``zipfile.ZipFile`` reads it: a 51 MB directory of a million one-letter entries took 0.4 GB
    and 6 s to open, and a 200 MB upload holds four million (:class:`ArchiveError`). A file whose directory
    cannot be read passes (``zipfile.ZipFile`` refuses it with its reason); the position of an open file is
    restored."""
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as fp:
                count = _directory_entries(fp, budget.max_members)
        else:
            position = source.tell()
            try:
                count = _directory_entries(source, budget.max_members)
            finally:
                source.seek(position)
    except (OSError, ValueError, struct.error):
        return  # unreadable: zipfile.ZipFile says why
    if count is not None and count > budget.max_members:
        raise _too_many(f"more than {budget.max_members}", budget)


def check_budget(archive: zipfile.ZipFile, budget: ZipBudget) -> None:
    """Refuse an open ZIP archive whose directory exceeds ``budget`` (every member counted), before any
    member is read.

    Raises
    ------
    ArchiveError
        Too many entries, too many bytes declared, or a compression ratio above the budget's (the message
        names the member where the budget ran out).
    """
    members = archive.infolist()
    check_member_count(members, budget)
    tally = BudgetTally(budget)
    for info in members:
        tally.add(info)
