"""The line counts of docs/architecture.md, kept true: each listed module's ``(lines)``, the module map's rows
(files, lines and largest module per layer) and its sentence naming the largest modules of the runtime package,
checked against the files (:func:`problems`, which ``tests/test_docs_claims.py`` runs) or rewritten from them.

Usage::

    python -m moleseg.tools.doccounts           # rewrite docs/architecture.md's counts, say how many changed
    python -m moleseg.tools.doccounts --check   # print each wrong count; exit status 1 when there is one
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from moleseg.tools import PROJECT_DIR

#: The document whose counts these are.
ARCHITECTURE: Path = PROJECT_DIR / "docs" / "architecture.md"
#: Most lines of a runtime module, as docs/architecture.md promises (the package outside ``moleseg/tools``).
MAX_MODULE_LINES: int = 600
#: A heading naming a folder (``### `moleseg/core` (...)``): its list of modules follows.
HEADING = re.compile(r"#{2,3} (?:`([^`]+)`)?")
#: A listed module, ``- `name` (lines): its job``; ``name`` is ``FOLDER/name.py`` unless it ends in ``.py``.
ENTRY = re.compile(r"^- `([^`]+)` \((\d+)\):")
#: A row of the module map: layer, files, lines, largest module (empty for a one-file layer).
ROW = re.compile(r"^\| `([^`]+)` \| ([\d,]+) \| ([\d,]+) \|(?: (.*?))? \|$", flags=re.M)
#: The sentence naming the largest runtime modules, each as ``path`` (lines).
LARGEST = re.compile(r"(the largest are\s+)((?:`[^`]+` \(\d+\)(?:,\s+|\s+and\s+)?)+)")


def line_count(path: Path) -> int:
    """The lines of a file as ``wc -l`` counts them."""
    return path.read_bytes().count(b"\n")


def _entries(markdown: str, root: Path) -> list[tuple[int, str, str, int]]:
    """``(line index, folder, checkout path, count given)`` of each listed module."""
    found = []
    folder = None
    for index, line in enumerate(markdown.splitlines()):
        heading = HEADING.match(line)
        if heading:
            folder = heading[1] if heading[1] and (root / heading[1]).is_dir() else None
            if folder:
                found.append((index, folder, "", 0))  # the folder has a list, even an empty one
        entry = ENTRY.match(line)
        if entry and folder:
            name = entry[1]
            found.append((index, folder, name if name.endswith(".py") else f"{folder}/{name}.py", int(entry[2])))
    return found


def module_entries(markdown: str, root: Path = PROJECT_DIR) -> dict[str, list[tuple[str, int]]]:
    """The modules listed under each folder's heading, as checkout paths with the line count given."""
    lists: dict[str, list[tuple[str, int]]] = {}
    for _, folder, path, count in _entries(markdown, root):
        lists.setdefault(folder, [])
        if path:
            lists[folder].append((path, count))
    return lists


def layer_row(layer: str, root: Path = PROJECT_DIR) -> tuple[int, int, str]:
    """A module map row's figures: the layer's ``*.py`` files (or the one file it is), their lines, and its
    largest module as ``` `name.py` (lines)``` (empty for one file)."""
    paths = sorted((root / layer).glob("*.py")) if (root / layer).is_dir() else [root / layer]
    top = max(paths, key=line_count)
    return len(paths), sum(map(line_count, paths)), f"`{top.name}` ({line_count(top)})" if len(paths) > 1 else ""


def runtime_modules(root: Path = PROJECT_DIR) -> list[tuple[str, int]]:
    """The package's modules outside ``moleseg/tools`` with their lines, the largest first."""
    paths = [path for path in (root / "moleseg").rglob("*.py") if "tools" not in path.relative_to(root).parts]
    counted = [(str(path.relative_to(root)), line_count(path)) for path in paths]
    return sorted(counted, key=lambda item: (-item[1], item[0]))


def problems(markdown: str, root: Path = PROJECT_DIR) -> list[str]:
    """One sentence for each listed module whose count is not its file's, each module map row that is not what
    the layer's files give, a sentence on the largest modules that names others (or in another order, or with
    other counts), and each runtime module over :data:`MAX_MODULE_LINES`."""
    found = [f"{path}: {count} lines in docs/architecture.md, {line_count(root / path)} in the file"
             for entries in module_entries(markdown, root).values() for path, count in entries
             if (root / path).is_file() and line_count(root / path) != count]
    for layer, files, lines, largest in ROW.findall(markdown):
        measured = layer_row(layer, root)
        if (int(files.replace(",", "")), int(lines.replace(",", "")), largest) != measured:
            found.append(f"module map row {layer}: {files} files, {lines} lines, {largest or 'no largest'} "
                         f"in docs/architecture.md; the files give {measured[0]}, {measured[1]:,}, "
                         f"{measured[2] or 'no largest'}")
    runtime = runtime_modules(root)
    sentence = LARGEST.search(markdown)
    if sentence:
        named = [(path, int(count)) for path, count in re.findall(r"`([^`]+)` \((\d+)\)", sentence[2])]
        if named != runtime[:len(named)]:
            found.append(f"the largest modules: {named} in docs/architecture.md, {runtime[:len(named)]} in the "
                         "package")
    return found + [f"{path}: {count} lines, over the {MAX_MODULE_LINES} docs/architecture.md promises"
                    for path, count in runtime if count > MAX_MODULE_LINES]


def rewritten(markdown: str, root: Path = PROJECT_DIR) -> str:
    """``markdown`` with every count of :func:`problems` made the files' (a listed module that does not exist
    keeps its count; ``tests/test_docs_claims.py`` names it)."""
    lines = markdown.split("\n")
    for index, _, path, _ in _entries(markdown, root):
        if path and (root / path).is_file():
            lines[index] = re.sub(r"\(\d+\):", f"({line_count(root / path)}):", lines[index], count=1)
    text = "\n".join(lines)

    def row(match: re.Match[str]) -> str:
        files, count, largest = layer_row(match[1], root)
        return f"| `{match[1]}` | {files} | {count:,} |" + (f" {largest} |" if largest else " |")

    def largest(match: re.Match[str]) -> str:
        top = runtime_modules(root)[:len(re.findall(r"`[^`]+`", match[2]))]
        names = [f"`{path}` ({count})" for path, count in top]
        return match[1] + ", ".join(names[:-1]) + f" and {names[-1]}"

    return LARGEST.sub(largest, ROW.sub(row, text), count=1)


def main(argv: Sequence[str] | None = None, say: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m moleseg.tools.doccounts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="print each wrong count and change nothing")
    args = parser.parse_args(argv)
    text = ARCHITECTURE.read_text(encoding="utf-8")
    wrong = problems(text)
    if args.check:
        for problem in wrong:
            say(problem)
        return 1 if wrong else 0
    new = rewritten(text)
    if new != text:
        ARCHITECTURE.write_text(new, encoding="utf-8")
    left = problems(new)
    say(f"{ARCHITECTURE.relative_to(PROJECT_DIR)}: {len(wrong) - len(left)} counts rewritten"
        + "".join(f"\n{problem}" for problem in left))
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
