"""Splitting an archive's images into N shards (``moleseg predict --shard I/N``) and joining the shards'
measurement tables into one (``moleseg merge``), checking that every input appears exactly once.

The split is deterministic and independent of the order the file system lists files in: the inputs' keys (the
``source`` column of the measurements, i.e. the path as listed from the command line's inputs) are sorted, and
the input of rank ``r`` goes to shard ``r mod N + 1``, so every shard gets ``total / N`` images, give or take
one. Each shard writes ``measurements.shard-I-of-N.csv`` (with its settings sidecar and, for cell models,
``objects.shard-I-of-N.csv``) and, last, its manifest ``shard-I-of-N.json``: the shard, a digest of the
whole input list, and the positions, keys and failures of its inputs. A shard without a manifest did not
finish.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from moleseg.core.atomic import atomic_write, open_own_file
from moleseg.core.errors import parse_failure
from moleseg.core.report import measurements_csv, sidecar_name
from moleseg.core.words import noun_for

__all__ = ["MANIFEST_PATTERN", "MergeOutcome", "Shard", "ShardError", "inputs_digest", "merge_shards",
           "shard_positions", "write_manifest"]

#: File name of a shard's manifest (``shard-2-of-3.json``).
MANIFEST_PATTERN = re.compile(r"shard-(\d+)-of-(\d+)\.json")
_SHARD_TEXT = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
#: The measurements column that names an input (the path as listed), the one a shard's manifest lists.
SOURCE_COLUMN = "source"
#: The measurements column with an image's output stem, the ``image`` column of objects.csv.
OUTPUT_COLUMN = "output"
_MESSAGES_SHOWN = 5


class ShardError(ValueError):
    """A wrong ``--shard`` or shards that cannot be merged; the message says which and why, in one line."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based: ``1/3``, ``2/3``, ``3/3``)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ShardError(f"a shard is I/N with 1 <= I <= N, not {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``"2/3"`` -> ``Shard(2, 3)``; ShardError for anything else."""
        match = _SHARD_TEXT.fullmatch(text)
        if match is None:
            raise ShardError(f"a shard is I/N (e.g. 2/3), not {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def name(self) -> str:
        """``shard-2-of-3``."""
        return f"shard-{self.index}-of-{self.count}"

    @property
    def text(self) -> str:
        """``2/3``."""
        return f"{self.index}/{self.count}"

    def table_name(self, csv_name: str) -> str:
        """This shard's copy of a table: ``measurements.csv`` -> ``measurements.shard-2-of-3.csv``."""
        stem, dot, suffix = csv_name.rpartition(".")
        return f"{stem}.{self.name}.{suffix}" if dot else f"{csv_name}.{self.name}"

    @property
    def manifest_name(self) -> str:
        """``shard-2-of-3.json``."""
        return f"{self.name}.json"


def shard_positions(keys: Sequence[str], shard: Shard) -> list[int]:
    """Positions in ``keys`` (in their order) of the inputs that fall to ``shard``.

    The key of rank ``r`` in sorted order belongs to shard ``r mod count + 1``; so the split does not depend
    on the order of ``keys``, and shard sizes differ by one at most.
    """
    ranked = sorted(range(len(keys)), key=lambda position: keys[position])
    mine = {position for rank, position in enumerate(ranked) if rank % shard.count == shard.index - 1}
    return [position for position in range(len(keys)) if position in mine]


def inputs_digest(keys: Sequence[str]) -> str:
    """SHA-256 of the whole input list (sorted keys, one a line, a path's bytes that are not UTF-8 as they are):
    equal for the shards of one archive."""
    return hashlib.sha256("\n".join(sorted(keys)).encode("utf-8", "surrogateescape")).hexdigest()


def write_manifest(folder: Path, shard: Shard, keys: Sequence[str], positions: Sequence[int],
                   failures: Sequence[tuple[str, str]], csv_name: str, objects_name: str | None) -> Path:
    """Write ``shard-I-of-N.json`` into ``folder`` (last, when the shard's tables are written).

    Parameters
    ----------
    keys
        Every input of the archive (not only this shard's), in the single run's order.
    positions
        The positions in ``keys`` of this shard's inputs (:func:`shard_positions`).
    failures
        ``(key, reason)`` of this shard's inputs that could not be processed.
    csv_name, objects_name
        The file names of this shard's measurements and objects tables (None: no objects table).
    """
    document = {"shard": shard.index, "count": shard.count, "total": len(keys), "digest": inputs_digest(keys),
                "measurements": shard.table_name(csv_name), "objects": objects_name,
                "inputs": [[int(p), keys[p]] for p in positions], "failed": [[k, r] for k, r in failures]}
    path = folder / shard.manifest_name  # ASCII JSON: a path that is not UTF-8 (\udcff) comes back as it was
    atomic_write(path, (json.dumps(document, indent=1) + "\n").encode("ascii"))
    return path


@dataclass
class MergeOutcome:
    """What :func:`merge_shards` wrote: the row count, the shard count, and the inputs that failed in their
    shard (``(key, reason)``, as ``moleseg predict`` reports them)."""

    rows: int
    shards: int
    failures: list[tuple[str, str]] = field(default_factory=list)


def _shard_text(path: Path) -> str:
    """The text of the shard's file ``path``, which must be a file of the shard's folder: not a link (to a file
    of the account that merges, which would be copied into the merged table, written by default into the first
    shard's folder) and not a named pipe (which blocks the merge).

    Raises
    ------
    OSError
        The file is a link, not a regular file, or cannot be read (its ``strerror`` says which;
        :func:`moleseg.core.atomic.open_own_file`).
    UnicodeDecodeError
        It is not UTF-8.
    """
    descriptor = open_own_file(path, os.O_RDONLY, "a shard's files are read from its folder only")
    with os.fdopen(descriptor, "rb") as handle:
        return handle.read().decode("utf-8")


def _read_table(path: Path) -> list[dict[str, str]]:
    """A CSV's rows, without their empty cells (so the merged header comes out as a single run's)."""
    try:
        text = _shard_text(path)
        rows = list(csv.DictReader(io.StringIO(text)))
    except OSError as error:
        raise ShardError(f"{path}: cannot read the shard's table ({error.strerror or error})") from error
    except (UnicodeDecodeError, csv.Error) as error:  # csv.Error: a cell over csv's field limit (128 KiB)
        raise ShardError(f"{path}: cannot read the shard's table ({error})") from error
    return [{k: v for k, v in row.items() if v != "" and k is not None} for row in rows]


def _read_sidecar(path: Path) -> dict[str, Any]:
    """A shard table's settings sidecar (:func:`moleseg.core.report.settings_sidecar`): a JSON object whose
    ``images`` is a list; ShardError naming the file otherwise."""
    try:
        document = json.loads(_shard_text(path))
    except OSError as error:
        raise ShardError(f"{path}: not a readable settings sidecar ({error.strerror or error})") from error
    except (ValueError, RecursionError) as error:
        raise ShardError(f"{path}: not a readable settings sidecar ({parse_failure(error)})") from error
    if not isinstance(document, dict) or not isinstance(document.get("images", []), list):
        raise ShardError(f"{path}: not a settings sidecar (not a JSON object with a list of images)")
    return document


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_plain_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and Path(value).name == value and not value.startswith(".")


def _manifest_problem(path: Path, document: Any) -> str | None:
    """What makes ``document`` (the JSON of the manifest file ``path``) not a manifest as
    :func:`write_manifest` writes it, or None: whole numbers for the shard, the count and the total, the
    shard its file name says, positions within the total, and tables named by plain file names beside it."""
    if not isinstance(document, dict):
        return "not a JSON object"
    for key in ("shard", "count", "total"):
        if not _is_whole(document.get(key)) or document[key] < 0:
            return f"{key} is not a whole number"
    named = MANIFEST_PATTERN.fullmatch(path.name)
    if named is not None and (document["shard"], document["count"]) != (int(named[1]), int(named[2])):
        return f"it says shard {document['shard']}/{document['count']}, its name {named[1]}/{named[2]}"
    if not isinstance(document.get("digest"), str):
        return "digest is not text"
    for key in ("measurements", "objects"):
        if not _is_plain_name(document.get(key)) and not (key == "objects" and document.get(key) is None):
            return f"{key} is not a file name beside it"
    inputs, failed = document.get("inputs"), document.get("failed", [])
    if not isinstance(inputs, list) or not all(
            isinstance(item, list) and len(item) == 2 and _is_whole(item[0]) and 0 <= item[0] < document["total"]
            and isinstance(item[1], str) for item in inputs):
        return "inputs is not a list of [position, name] pairs"
    if not isinstance(failed, list) or not all(
            isinstance(item, list) and len(item) == 2 and all(isinstance(part, str) for part in item)
            for item in failed):
        return "failed is not a list of [name, reason] pairs"
    return None


def _manifests(folders: Sequence[Path]) -> dict[int, tuple[Path, dict[str, Any]]]:
    """The shards' manifests by shard index, checked to belong to one split of one input list."""
    found: dict[int, tuple[Path, dict[str, Any]]] = {}
    for folder in folders:
        if not folder.is_dir():
            raise ShardError(f"{folder}: not a folder")
        for path in sorted(folder.iterdir()):
            if MANIFEST_PATTERN.fullmatch(path.name) is None:
                continue
            try:
                document = json.loads(_shard_text(path))
            except OSError as error:
                raise ShardError(f"{path}: not a readable shard manifest ({error.strerror or error})") from error
            except (ValueError, RecursionError) as error:
                raise ShardError(f"{path}: not a readable shard manifest ({parse_failure(error)})") from error
            problem = _manifest_problem(path, document)
            if problem is not None:
                raise ShardError(f"{path}: not a readable shard manifest ({problem})")
            index = document["shard"]
            if index in found:
                raise ShardError(f"shard {index}/{document.get('count')} appears twice: {found[index][0]} and {path}")
            found[index] = (path, document)
    if not found:
        raise ShardError("no shard manifest (shard-I-of-N.json) in " + ", ".join(str(f) for f in folders)
                         + ": run moleseg predict --shard I/N --out there first")
    first = next(iter(found.values()))[1]
    for path, document in found.values():
        if any(document[key] != first[key] for key in ("count", "digest", "total")):
            raise ShardError(f"{path}: this shard split another input list or shard count than the others "
                             "(the inputs or N differ): merge the shards of one run only")
    count = first["count"]
    if count > len(found):  # the first few missing ones named (the count is the file's: it may be huge)
        missing = [f"{i}/{count}" for i in itertools.islice((i for i in range(1, count + 1) if i not in found),
                                                            _MESSAGES_SHOWN + 1)]
        shown = ", ".join(missing[:_MESSAGES_SHOWN]) + (" and more" if len(missing) > _MESSAGES_SHOWN else "")
        many = f"{count - len(found):,} " if len(missing) > _MESSAGES_SHOWN else ""
        raise ShardError(f"{many}{noun_for(count - len(found), 'shard')} {shown} missing: no finished "
                         f"shard-I-of-{count}.json (did the job fail or is it still running?); run them again, then "
                         "merge")
    return found


def merge_shards(folders: Sequence[Path], out: Path, csv_name: str, objects_name: str) -> MergeOutcome:
    """Join the shards' tables in ``folders`` into ``out/csv_name`` (+ its sidecar and ``objects_name``).

    Rows come in the single run's order; every input must appear exactly once, as a row or as a failure of
    its shard. Nothing is written when a check fails.

    Raises
    ------
    ShardError
        No manifest, a shard missing or given twice, shards of different runs, an input without a row or
        with two rows, a row for an input its shard was not given, two rows of one output name, or cells in
        a shard's objects table of an image that is not among its rows (one shard's folder cannot add rows or
        cells to another's images).
    """
    found = _manifests(folders)
    total = int(next(iter(found.values()))[1]["total"])
    by_position: dict[int, tuple[dict[str, str], Any]] = {}
    objects: dict[str, list[dict[str, str]]] = {}
    sidecar: dict[str, Any] | None = None
    failures: list[tuple[int, str, str]] = []
    problems: list[str] = []
    seen_positions: set[int] = set()
    outputs: dict[str, str] = {}  # each merged row's output name: the input it belongs to
    for index in sorted(found):
        path, document = found[index]
        shard = Shard(index, int(document["count"]))
        positions = {str(key): int(position) for position, key in document["inputs"]}
        if seen_positions & set(positions.values()):
            problems.append(f"shard {shard.text} lists inputs another shard lists too")
        seen_positions |= set(positions.values())
        failed = {str(key): str(reason) for key, reason in document.get("failed", [])}
        rows = _read_table(path.parent / document["measurements"])
        sidecar_path = path.parent / sidecar_name(document["measurements"])
        entries: list[Any] = [None] * len(rows)
        if sidecar_path.is_file():
            part = _read_sidecar(sidecar_path)
            sidecar = sidecar or part
            entries = (part.get("images", []) + entries)[:len(rows)]
        counts: dict[str, int] = {}
        own_outputs: set[str] = set()  # the output names of this shard's rows: its objects table may name no other
        for row, entry in zip(rows, entries):
            key = row.get(SOURCE_COLUMN, "")
            counts[key] = counts.get(key, 0) + 1
            if key not in positions:
                problems.append(f"{key or '(no source)'} is in shard {shard.text}'s table but not among its inputs")
            elif counts[key] == 1:
                by_position[positions[key]] = (row, entry)
                output = row.get(OUTPUT_COLUMN, "")
                if output and output in outputs:
                    problems.append(f"{key} (shard {shard.text}) has the output {output} of {outputs[output]}")
                outputs.setdefault(output, key)
                own_outputs.add(output)
        for key, position in positions.items():
            seen = counts.get(key, 0) + (key in failed)
            if seen == 0:
                problems.append(f"{key} (shard {shard.text}) has no row and no failure")
            elif seen > 1:
                problems.append(f"{key} (shard {shard.text}) appears {seen} times")
            elif key in failed:
                failures.append((position, key, failed[key]))
        if document.get("objects"):
            foreign: dict[str, None] = {}  # another shard's images (their cells are that shard's) or none
            for row in _read_table(path.parent / document["objects"]):
                image = row.get("image", "")
                if image not in own_outputs:
                    foreign[image or "(no image)"] = None
                objects.setdefault(image, []).append(row)
            problems += [f"shard {shard.text}'s objects table has cells of {image}, not an image of its own"
                         for image in foreign]
    if len(seen_positions) != total:  # each within 0..total-1 (_manifest_problem); the total may be huge
        problems.append(f"the shards list {len(seen_positions)} of the {total} inputs")
    if problems:
        shown = "; ".join(problems[:_MESSAGES_SHOWN])
        more = f"; and {len(problems) - _MESSAGES_SHOWN} more" if len(problems) > _MESSAGES_SHOWN else ""
        raise ShardError(f"the shards do not hold every input exactly once: {shown}{more}")
    ordered = [by_position[p][0] for p in sorted(by_position)]
    atomic_write(out / csv_name, measurements_csv(ordered))
    if sidecar is not None:
        sidecar["csv"] = csv_name
        sidecar["created"] = datetime.now().astimezone().isoformat(timespec="seconds")
        sidecar["images"] = [by_position[p][1] for p in sorted(by_position)]
        atomic_write(out / sidecar_name(csv_name),
                     (json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    object_rows = [row for image in ordered for row in objects.get(image.get(OUTPUT_COLUMN, ""), [])]
    if object_rows:
        atomic_write(out / objects_name, measurements_csv(object_rows))
    return MergeOutcome(rows=len(ordered), shards=len(found),
                        failures=[(key, reason) for _, key, reason in sorted(failures)])
