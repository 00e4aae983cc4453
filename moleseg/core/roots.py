"""Server paths a browser user names, confined to the folders the server offers (its data roots).

A path typed in a page is untrusted: it is resolved (symlinks included) and refused unless it lies inside one
of the roots, with one message that does not say whether it exists, so that the server's other folders can be
neither read nor probed; a dataset's folders may hold no link leading out of the roots either. Nothing is
expanded (no ``~``, no environment variables); a relative path is taken inside each root in turn.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from moleseg.core.errors import is_text_path

#: Largest number of folders :func:`folders_inside` lists (a picker stays usable on a large share).
MAX_LISTED_FOLDERS: int = 2000


class OutsideRootsError(ValueError):
    """A path that is not a readable folder (or file) inside the data roots; the message says only that."""

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(f"{text} is not inside the data folders this server offers")


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def _readable(path: Path, file: bool) -> bool:
    if file:
        return path.is_file() and os.access(path, os.R_OK)
    return path.is_dir() and os.access(path, os.R_OK | os.X_OK)


def resolve_inside_roots(text: str | os.PathLike[str], roots: Sequence[Path], *, file: bool = False) -> Path:
    """The resolved path of ``text`` when it is a readable folder (a readable file with ``file=True``) inside
    one of ``roots``.

    Parameters
    ----------
    text
        The path as the user gave it: absolute, or relative to a root (tried in the order of ``roots``).
    roots
        The folders the server offers; none refuses every path.
    file
        Whether a file is wanted instead of a folder.

    Raises
    ------
    OutsideRootsError
        The same message for a path outside the roots, a missing one, an unreadable one and one of the wrong
        kind, inside the roots or not.
    """
    shown = os.fspath(text).strip()
    resolved_roots = [Path(root).resolve() for root in roots]
    given = Path(shown)
    candidates = [given] if given.is_absolute() else [root / given for root in resolved_roots]
    for candidate in candidates if shown else []:
        try:
            resolved = candidate.resolve(strict=False)
            if _inside(resolved, resolved_roots) and _readable(resolved, file):
                return resolved
        except (OSError, ValueError, RuntimeError):
            continue
    raise OutsideRootsError(shown or "(empty)")


def check_links_inside(folder: Path, roots: Sequence[Path]) -> None:
    """Nothing when no entry of ``folder`` (not searched recursively) is a symbolic link leading outside
    ``roots``; a dataset's folders are confined by :func:`resolve_inside_roots`, and this confines their files,
    which anyone who may write into a root could otherwise link to any file the server can read.

    Raises
    ------
    OutsideRootsError
        Naming the first such link (in sorted order).
    """
    resolved_roots = [Path(root).resolve() for root in roots]
    try:
        links = sorted(entry.path for entry in os.scandir(folder) if entry.is_symlink())
    except OSError:
        return  # an unreadable folder is refused by whatever reads it
    for link in links:
        try:
            inside = _inside(Path(link).resolve(), resolved_roots)
        except (OSError, RuntimeError):
            inside = False
        if not inside:
            raise OutsideRootsError(link)


def resolve_inside_folder(name: str, folder: Path) -> Path:
    """``folder / name`` for a plain name (one path component: no separator, not ``.``, ``..`` or hidden),
    the place an untrusted name may write to inside the app's own ``folder``.

    Raises
    ------
    OutsideRootsError
        When ``name`` is not such a name.
    """
    shown = name.strip()
    if not shown or shown.startswith(".") or "/" in shown or "\\" in shown or "\0" in shown:
        raise OutsideRootsError(shown or "(empty)")
    return folder / shown


def folders_inside(roots: Sequence[Path], max_depth: int = 2) -> list[Path]:
    """The roots and their readable sub-folders down to ``max_depth`` levels, in sorted order, hidden folders,
    folders whose name is not UTF-8 text and links leading outside the roots left out, at most
    :data:`MAX_LISTED_FOLDERS`."""
    resolved_roots = [Path(root).resolve() for root in roots]
    found: list[Path] = []
    level = [root for root in resolved_roots if _readable(root, file=False)]
    for depth in range(max_depth + 1):
        found.extend(level)
        if depth == max_depth or len(found) >= MAX_LISTED_FOLDERS:
            break
        following: list[Path] = []
        for folder in level:
            try:
                children = sorted(folder.iterdir())
            except OSError:
                continue
            for child in children:
                if child.name.startswith(".") or not is_text_path(child.name):  # one no page could show nor type
                    continue
                try:
                    resolved = child.resolve()
                except (OSError, RuntimeError):
                    continue
                if _inside(resolved, resolved_roots) and _readable(resolved, file=False):
                    following.append(child)
        level = following
    return found[:MAX_LISTED_FOLDERS]
