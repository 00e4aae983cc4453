"""Per-session temporary folders and safe extraction of uploaded dataset archives (no Streamlit, no TF).

Everything a user uploads that must live on disk (an extracted dataset ZIP) goes into one folder per
browser session, ``<tmp>/moleseg-session-XXXX``, made by :class:`SessionFolder`. Streamlit has no public
"session ended" hook (a closed tab's session is dropped after ``server.disconnectedSessionTTL``, and only
when another session connects or disconnects), so the folder goes by whichever comes first: its session's
state is garbage-collected or the server exits (``weakref.finalize``), or :class:`FolderSweeper` (a
background thread of the app) finds it untouched for
:data:`~moleseg.core.config.SESSION_IDLE_TIMEOUT_S` -- an open tab touches its folder every
:data:`~moleseg.core.config.SESSION_HEARTBEAT_S`. A folder that a running training still reads is kept
and removed when the training ends.

:func:`extract_zip` guards against zip-slip (absolute paths, ``..``, drive letters, symbolic links),
zip bombs (member count, total size, compression ratio, and sizes counted while extracting rather
than trusted from the headers) and encrypted members.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import tempfile
import threading
import time
import weakref
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable

from moleseg.core.archive import (DATASET_BUDGET, ArchiveError, BudgetTally, ZipBudget, check_directory_entries,
                                  check_member_count)
from moleseg.core.archive import shown_name as _shown
from moleseg.core.atomic import process_lock
from moleseg.core.config import (MAX_DATASETS, MAX_SESSION_DATASETS, SESSION_IDLE_TIMEOUT_S,
                                 SESSION_SWEEP_INTERVAL_S)
from moleseg.core.errors import folder_not_found
from moleseg.core.roots import check_links_inside, resolve_inside_roots
from moleseg.core.settings import temp_root as settings_temp_root
from moleseg.core.words import count_of

#: Prefix of the per-session temporary folders.
SESSION_PREFIX = "moleseg-session-"
#: Marker written into a session folder whose session ended while a training still used it.
ENDED_MARKER = ".session-ended"
#: File of a session folder naming the user of its session (what it holds counts in their quota).
OWNER_FILE = ".session-owner"
#: Sub-folder of a session folder holding the dataset unpacked from its ZIP upload.
DATASET_FOLDER = "dataset"
#: What separates the images folder from the masks folder in a dataset's text (:func:`dataset_text`).
DATASET_SEPARATOR = "|"

#: Longest file or folder name in an archive, in UTF-8 bytes (the usual file-system limit).
MAX_MEMBER_NAME_BYTES: int = 255
#: Deepest folder nesting of an archive member (``a/b/c.png`` is 3 levels).
MAX_MEMBER_DEPTH: int = 32
_CHUNK = 1024 * 1024


def temp_root() -> Path:
    """Where the session folders live (:func:`moleseg.core.settings.temp_root`, read at every call)."""
    return settings_temp_root()


def remove_session_folder(path: str | Path, in_use: Callable[[Path], bool] | None = None) -> bool:
    """Remove a session folder unless a running training uses it (then mark it as ended and keep it).

    Returns True when the folder is gone.
    """
    path = Path(path)
    if not path.exists():
        return True
    try:
        if in_use is not None and in_use(path):
            (path / ENDED_MARKER).touch()
            return False
    except Exception:  # never let a bookkeeping error keep a session's files forever
        pass
    shutil.rmtree(path, ignore_errors=True)
    return not path.exists()


def remove_stale_folders(max_age_s: float = SESSION_IDLE_TIMEOUT_S, root: str | Path | None = None,
                         in_use: Callable[[Path], bool] | None = None) -> list[Path]:
    """Remove session folders untouched for ``max_age_s`` (or ended and no longer used); returns them."""
    root = Path(root) if root else temp_root()
    removed: list[Path] = []
    try:
        candidates = [p for p in root.iterdir() if p.name.startswith(SESSION_PREFIX) and p.is_dir()]
    except OSError:
        return removed
    now = time.time()
    for folder in candidates:
        try:
            old = now - folder.stat().st_mtime > max_age_s
        except OSError:
            continue
        if old or (folder / ENDED_MARKER).exists():
            if remove_session_folder(folder, in_use):
                removed.append(folder)
    return removed


class FolderSweeper:
    """A daemon thread that runs :func:`remove_stale_folders` every ``interval_s`` seconds, removing the
    session folders untouched for ``idle_s`` seconds (kept while ``in_use`` says a training reads them).

    Parameters
    ----------
    idle_s : float
        Idle time after which a folder is removed, seconds (> 0).
    interval_s : float
        Time between two sweeps, seconds (> 0).
    root : str or Path, optional
        Folder holding the session folders (default :func:`temp_root`).
    in_use : callable, optional
        True for a folder that must be kept for now.
    """

    def __init__(self, idle_s: float = SESSION_IDLE_TIMEOUT_S, interval_s: float = SESSION_SWEEP_INTERVAL_S,
                 root: str | Path | None = None, in_use: Callable[[Path], bool] | None = None) -> None:
        if idle_s <= 0 or interval_s <= 0:
            raise ValueError(f"idle_s and interval_s must be > 0, not {idle_s} and {interval_s}")
        self.idle_s, self.interval_s, self.root, self.in_use = idle_s, interval_s, root, in_use
        self.removed_count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="moleseg-session-sweeper", daemon=True)

    def sweep(self) -> list[Path]:
        """One sweep now; returns the folders removed (errors are swallowed: the next sweep retries)."""
        try:
            removed = remove_stale_folders(self.idle_s, self.root, self.in_use)
        except Exception:
            return []
        self.removed_count += len(removed)
        return removed

    def start(self) -> "FolderSweeper":
        """Sweep once now, then every ``interval_s`` in the background."""
        self.sweep()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the background sweeps (waits for a sweep under way)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sweep()


def owned_session_folders(owner: str, root: str | Path | None = None) -> list[Path]:
    """The session folders in ``root`` (default :func:`temp_root`) of the sessions of the user ``owner``
    (their :data:`OWNER_FILE`), sorted: what the datasets unpacked from their uploads take counts in their
    quota. Only the server's own folders (:func:`_private_folder`): any local account may make one named like
    them in a shared temporary folder, naming any user."""
    root = Path(root) if root else temp_root()
    found = []
    try:
        candidates = sorted(p for p in root.iterdir() if p.name.startswith(SESSION_PREFIX))
    except OSError:
        return []
    for folder in candidates:
        try:
            if _private_folder(folder) and (folder / OWNER_FILE).read_text(encoding="utf-8") == owner:
                found.append(folder)
        except (OSError, UnicodeDecodeError):
            continue
    return found


def owning_session_folder(path: str | Path) -> Path | None:
    """The session folder that ``path`` lies in (a folder of :func:`temp_root` named like one), or None: a data
    folder merely named like a session folder is not one, since its cache would be written there and it would be
    removed with its session."""
    sessions = temp_root().resolve()
    for folder in [Path(path).resolve(), *Path(path).resolve().parents]:
        if folder.name.startswith(SESSION_PREFIX) and folder.parent == sessions:
            return folder
    return None


def training_cache_dir(folders: list[str]) -> str | None:
    """Where a training on uploaded data caches its resized examples: inside the session folder of the
    data (so nothing derived from an upload is written elsewhere); None for data on the server."""
    for folder in folders:
        owner = owning_session_folder(folder)
        if owner is not None:
            return str(owner / "example-cache")
    return None


def release_after_training(folders: list[str]) -> None:
    """Remove the session folders of ``folders`` whose session ended while the training used them."""
    for folder in folders:
        owner = owning_session_folder(folder)
        if owner is not None and (owner / ENDED_MARKER).exists():
            shutil.rmtree(owner, ignore_errors=True)


def _private_folder(path: Path) -> bool:
    """Whether ``path`` is a folder itself (not a link) of this process's account, closed to every other."""
    try:
        status = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(status.st_mode) and status.st_uid == os.geteuid() and not status.st_mode & 0o077


class SessionFolder:
    """A temporary folder for one browser session, removed when this object is garbage-collected
    (the session ended) or the server exits, whichever comes first. ``owner``: the session's user, written
    into :data:`OWNER_FILE` (:func:`owned_session_folders`)."""

    def __init__(self, root: str | Path | None = None, in_use: Callable[[Path], bool] | None = None,
                 owner: str = "") -> None:
        self._in_use = in_use
        self.owner = owner
        self._make(Path(root) if root else temp_root())
        self.touch()

    def _make(self, base: Path) -> None:
        """A new folder of a random name in ``base``, for the server's account only (mode 0700), removed with
        this object."""
        base.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=SESSION_PREFIX, dir=base))
        self._finalizer = weakref.finalize(self, remove_session_folder, str(self.path), self._in_use)

    def touch(self) -> Path:
        """Mark the folder as in use (stale-folder removal looks at its modification time); one removed by the
        idle sweep is made anew under a new random name, with its :data:`OWNER_FILE`: never again at its old
        name, which every local account saw in the shared temporary folder and could have taken meanwhile (a
        link or an open folder of theirs there would receive the session's uploads)."""
        if not _private_folder(self.path):
            self._finalizer.detach()  # whatever stands at the old name now is not this session's to remove
            self._make(self.path.parent)
        if not (self.path / OWNER_FILE).is_file():
            (self.path / OWNER_FILE).write_text(self.owner, encoding="utf-8")
        os.utime(self.path)
        return self.path

    def fresh(self, name: str) -> Path:
        """An empty sub-folder ``name`` (an earlier one of that name is removed first)."""
        if not name or PurePosixPath(name).name != name or name in (".", ".."):
            raise ValueError(f"bad sub-folder name {name!r}")
        target = self.touch() / name
        if target.exists():
            shutil.rmtree(target)
        target.mkdir()
        return target

    def fresh_dataset(self, most: int = MAX_SESSION_DATASETS) -> Path:
        """An empty :data:`DATASET_FOLDER` (:meth:`fresh`) for a ZIP upload, unless the owner's other sessions
        already hold ``most`` datasets.

        Raises
        ------
        ArchiveError
            The owner holds ``most`` datasets in their other sessions (nothing removed or made).
        """
        with process_lock((DATASET_FOLDER, self.owner)):  # two sessions of the user unpacking at once
            others = [folder for folder in owned_session_folders(self.owner, self.path.parent)
                      if folder != self.path and (folder / DATASET_FOLDER).is_dir()]
            if len(others) >= most:
                raise ArchiveError(f"you already hold {count_of(len(others), 'dataset')} unpacked from ZIP uploads "
                                   "in other tabs, the most one user may: close one of them (its dataset is removed "
                                   "within minutes) or choose a folder on the server")
            return self.fresh(DATASET_FOLDER)

    def unpack_dataset(self, source: bytes | str | Path | BinaryIO, most: int = MAX_SESSION_DATASETS
                       ) -> tuple[Extraction, tuple[Path, Path]]:
        """The dataset ZIP ``source`` unpacked (:func:`extract_zip`) into :meth:`fresh_dataset`, and its
        ``images`` and ``masks`` folders (:func:`find_dataset`).

        Raises
        ------
        ArchiveError
            A refused archive, one without a dataset, too many datasets of the owner, or a file system that
            failed while unpacking (a full disk, the session's folder removed meanwhile: the sentence is the
            system's, without a path); the folder is removed (it holds no dataset: none of the owner's
            :data:`~moleseg.core.config.MAX_SESSION_DATASETS`).
        """
        try:
            target = self.fresh_dataset(most)
        except OSError as error:
            raise _not_unpacked(error) from error
        try:
            extraction = extract_zip(source, target)
            return extraction, find_dataset(target)
        except ArchiveError:
            shutil.rmtree(target, ignore_errors=True)
            raise
        except OSError as error:
            shutil.rmtree(target, ignore_errors=True)
            raise _not_unpacked(error) from error

    def remove(self) -> None:
        """Remove the folder now."""
        self._finalizer()

    @property
    def removed(self) -> bool:
        return not self._finalizer.alive


def _not_unpacked(error: OSError) -> ArchiveError:
    """The refusal of an archive the file system failed to unpack: the system's sentence, never a path."""
    return ArchiveError(f"could not be unpacked on the server: {error.strerror or 'a file system error'}")


# --------------------------------------------------------------------------------------------------
# archives

@dataclass
class Extraction:
    """Result of :func:`extract_zip`: the files written and the members skipped, with the reason."""

    root: Path
    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def unsafe_member(name: str, reason: str) -> ArchiveError:
    """The refusal of an archive member whose path could write outside the unpacking folder:
    ``"unsafe path in the archive: '../a.png' leaves the folder"`` (``reason`` says how)."""
    return ArchiveError(f"unsafe path in the archive: {_shown(name)} {reason}")


def _check_inside(path: Path, root: Path, name: str) -> None:
    """Nothing when ``path`` resolves inside ``root`` (the resolved unpacking folder); otherwise the refusal
    of the member ``name`` (a link already there could lead out)."""
    if not path.resolve().is_relative_to(root):
        raise unsafe_member(name, "leads outside the folder")


def _member_parts(name: str) -> list[str]:
    """The safe relative path components of an archive member name, or ArchiveError."""
    text = name.replace("\\", "/")
    if text.startswith("/") or (len(text) >= 2 and text[1] == ":"):
        raise unsafe_member(name, "is absolute")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if any(part == ".." for part in parts):
        raise unsafe_member(name, "leaves the folder")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise unsafe_member(name, "has control characters")
    if len(parts) > MAX_MEMBER_DEPTH:
        raise ArchiveError(f"{_shown(name)} is nested {len(parts)} folders deep; at most {MAX_MEMBER_DEPTH} "
                           "are accepted")
    for part in parts:
        try:
            size = len(part.encode("utf-8"))
        except UnicodeEncodeError as error:  # lone surrogates
            raise ArchiveError(f"{_shown(name)} is not a valid file name ({error.reason})") from error
        if size > MAX_MEMBER_NAME_BYTES:
            raise ArchiveError(f"{_shown(name)}: a name of {size} bytes; at most {MAX_MEMBER_NAME_BYTES} "
                               "are accepted")
    return parts


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def extract_zip(source: bytes | str | Path | BinaryIO, destination: str | Path, *,
                max_members: int = DATASET_BUDGET.max_members, max_bytes: int = DATASET_BUDGET.max_bytes,
                max_ratio: float = DATASET_BUDGET.max_ratio) -> Extraction:
    """Extract a ZIP archive into ``destination`` safely.

    Folders, hidden files (``.x``, ``__MACOSX/``) and symbolic links are skipped (listed in
    ``skipped``). Raises :class:`ArchiveError` -- before writing anything when the headers already
    show it, else while extracting (the partial output is removed) -- for: not a ZIP, absolute or
    ``..`` paths, more than ``max_members`` members, more than ``max_bytes`` uncompressed, a member or
    the members together (above 1 MiB) compressed more than ``max_ratio`` times, a member larger than
    its header says, encrypted members, names that are not valid UTF-8 though flagged so, names longer
    than :data:`MAX_MEMBER_NAME_BYTES` or nested deeper than :data:`MAX_MEMBER_DEPTH`, and any other
    failure (disk full, ...). The message names the member; no other exception escapes.
    """
    destination = Path(destination)
    if isinstance(source, (bytes, bytearray, memoryview)):
        stream: BinaryIO | str | Path = io.BytesIO(bytes(source))
    else:
        stream = source
    budget = ZipBudget(max_members, max_bytes, max_ratio)
    check_directory_entries(stream, budget)  # before anything is made
    destination.mkdir(parents=True, exist_ok=True)
    root = destination.resolve()
    try:
        archive = zipfile.ZipFile(stream)
    except UnicodeDecodeError as error:
        name = bytes(error.object).decode("utf-8", "backslashreplace")
        raise ArchiveError(f"{_shown(name)}: the archive marks this name as UTF-8 but it is not valid UTF-8; "
                           "re-create the archive with another tool") from error
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as error:
        raise ArchiveError(f"not a readable ZIP archive ({error})") from error
    except Exception as error:  # zipfile raises assorted types on malformed central directories
        raise ArchiveError(f"not a readable ZIP archive ({type(error).__name__}: {error})") from error
    result = Extraction(root=root)
    current = [""]  # the member being checked or written, for the last guard's message
    try:
        with archive:
            _extract_all(archive, root, result, budget, current)
    except ArchiveError:
        raise
    except Exception as error:  # a last guard: every failure is an ArchiveError naming the member
        where = f"{_shown(current[0])}: " if current[0] else ""
        raise ArchiveError(f"{where}cannot be extracted ({type(error).__name__}: {error})") from error
    return result


def _extract_all(archive: zipfile.ZipFile, root: Path, result: Extraction, budget: ZipBudget,
                 current: list[str]) -> None:
    """Check every member's header, then extract them into ``root`` (the body of :func:`extract_zip`);
    ``current[0]`` is the member at hand."""
    members = archive.infolist()
    check_member_count(members, budget)
    planned: list[tuple[zipfile.ZipInfo, Path]] = []
    tally = BudgetTally(budget)
    for info in members:
        current[0] = info.filename
        parts = _member_parts(info.filename)
        if info.is_dir() or not parts:
            continue
        if _is_symlink(info):
            result.skipped.append((info.filename, "symbolic link"))
            continue
        if any(part.startswith(".") or part == "__MACOSX" for part in parts):
            result.skipped.append((info.filename, "hidden file"))
            continue
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{info.filename} is encrypted; upload an archive without a password")
        tally.add(info)
        target = root.joinpath(*parts)
        _check_inside(target, root, info.filename)
        planned.append((info, target))
    created: list[Path] = []
    try:
        _extract_planned(archive, planned, root, created, budget.max_bytes, current)
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        raise
    result.files = created


def _extract_planned(archive: zipfile.ZipFile, planned: list[tuple[zipfile.ZipInfo, Path]], root: Path,
                     created: list[Path], max_bytes: int, current: list[str]) -> None:
    """Write the planned members, counting the bytes really unpacked; every file made is in ``created``."""
    written = 0
    try:
        for info, target in planned:
            current[0] = info.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            _check_inside(target.parent, root, info.filename)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            handle = os.open(target, flags, 0o644)
            created.append(target)
            member_bytes = 0
            with os.fdopen(handle, "wb") as out, archive.open(info) as data:
                while chunk := data.read(_CHUNK):
                    member_bytes += len(chunk)
                    written += len(chunk)
                    if member_bytes > info.file_size or written > max_bytes:
                        raise ArchiveError(f"{info.filename} unpacks to more than its header says: refused")
                    out.write(chunk)
    except FileExistsError as error:
        raise ArchiveError(f"the archive holds {Path(error.filename).name} twice "
                           "(names differing only in letter case?)") from error
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise ArchiveError(f"the archive is corrupt ({error})") from error
    except RuntimeError as error:  # zipfile signals an unsupported compression method with a RuntimeError subclass
        raise ArchiveError(f"the archive uses an unsupported compression ({error})") from error
    except OSError as error:
        raise ArchiveError(f"{_shown(current[0])}: cannot be written ({error.strerror or error})") from error


def find_dataset(root: str | Path, max_depth: int = 3) -> tuple[Path, Path]:
    """The ``images`` and ``masks`` folders of a dataset under ``root`` (names compared case-insensitively;
    the shallowest folder holding both wins).

    Raises
    ------
    ArchiveError
        When no folder holds both.
    """
    root = Path(root)
    level = [root]
    for _ in range(max_depth + 1):
        following: list[Path] = []
        for folder in level:
            try:
                children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
            except OSError:
                continue
            names = {child.name.lower(): child for child in children}
            if "images" in names and "masks" in names:
                return names["images"], names["masks"]
            following.extend(c for c in children if not c.name.startswith(".") and c.name != "__MACOSX")
        level = following
        if not level:
            break
    raise ArchiveError("no folder holding both images/ and masks/ was found")


def dataset_text(images: str | Path, masks: str | Path) -> str:
    """The text that names a dataset by its two folders, ``"IMAGES_DIR | MASKS_DIR"``, as a page's dataset box
    starts with it and :func:`dataset_folders` reads it back."""
    return f"{images} {DATASET_SEPARATOR} {masks}"


#: The form of a dataset named by its two folders, for messages and help texts.
DATASET_PAIR_FORM: str = dataset_text("IMAGES_DIR", "MASKS_DIR")


def dataset_folders(text: str, roots: Sequence[Path] | None = None) -> tuple[Path, Path]:
    """``(images, masks)`` of a dataset given as a folder holding ``images/`` and ``masks/``, or as
    ``IMAGES_DIR | MASKS_DIR``.

    With ``roots`` (a path typed by a browser user), each folder must lie inside one of them
    (:func:`moleseg.core.roots.resolve_inside_roots`: nothing expanded, symlinks resolved) and hold no link
    leading out of them (:func:`moleseg.core.roots.check_links_inside`); without (the operator's command
    line), ``~`` is expanded.

    Raises
    ------
    ValueError
        A missing folder (or one outside ``roots``: :class:`~moleseg.core.roots.OutsideRootsError`), or a
        folder without ``images/`` and ``masks/``.
    """

    def folder_of(part: str) -> Path:
        if roots is not None:
            return resolve_inside_roots(part, roots)
        folder = Path(part).expanduser()
        if not part or not folder.is_dir():
            raise ValueError(folder_not_found(part or "(empty)"))
        return folder

    text = text.strip().strip('"').strip("'")
    if DATASET_SEPARATOR in text:
        first, second = (part.strip().strip('"').strip("'") for part in text.split(DATASET_SEPARATOR, 1))
        found = folder_of(first), folder_of(second)
    else:
        folder = folder_of(text)
        try:
            found = find_dataset(folder, max_depth=0)
        except ArchiveError:
            raise ValueError(f"{folder} holds no images/ and masks/ folders; give '{DATASET_PAIR_FORM}' to name "
                             "them") from None
    for folder in found if roots is not None else ():
        check_links_inside(folder, roots)
    return found


def dataset_list(text: str, roots: Sequence[Path] | None = None) -> list[tuple[Path, Path]]:
    """One :func:`dataset_folders` per non-empty line (lines starting with ``#`` are comments).

    Raises
    ------
    ValueError
        Also for more than :data:`~moleseg.core.config.MAX_DATASETS` lines (none read)."""
    lines = [line for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if len(lines) > MAX_DATASETS:
        raise ValueError(f"{len(lines)} datasets are listed and a list takes at most {MAX_DATASETS}")
    return [dataset_folders(line, roots) for line in lines]
