"""moleseg.core.atomic: the one atomic writer (temporary beside the target, fsync, replace) and the cleanup of
temporaries left by killed writers."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from moleseg.core.atomic import TEMPORARY_PREFIX, atomic_output, atomic_write, remove_stale_temporaries


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write(target, b"old")
    assert atomic_write(target, b"new") == target
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    with pytest.raises(TypeError, match="needs bytes"):
        atomic_write(target, "text")  # type: ignore[arg-type]
    assert target.read_bytes() == b"new"


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path: Path) -> None:
    target = tmp_path / "model.keras"
    target.write_bytes(b"old")
    seen: list[Path] = []
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_output(target) as temporary:
            seen.append(temporary)
            temporary.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.keras"]
    # the temporary is recognisable and keeps the target's suffix (Keras and zipfile write to it by name)
    assert seen[0].parent == tmp_path and seen[0].name.startswith(TEMPORARY_PREFIX)
    assert seen[0].name.endswith(".model.keras")


def test_a_path_writer_such_as_zipfile_writes_through_atomic_output(tmp_path: Path) -> None:
    target = tmp_path / "a.zip"
    with atomic_output(target) as temporary, zipfile.ZipFile(temporary, "w") as archive:
        archive.writestr("x.txt", "42")
    with zipfile.ZipFile(target) as archive:
        assert archive.read("x.txt") == b"42"


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    stale = [tmp_path / f"{TEMPORARY_PREFIX}abc.last.keras", tmp_path / "sub" / f"{TEMPORARY_PREFIX}d.state.json"]
    kept = [tmp_path / "last.keras", tmp_path / "sub" / "state.json", tmp_path / ".hidden"]
    for path in stale + kept:
        path.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_the_folder_is_fsynced_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    directories: list[int] = []
    real_open = os.open

    def recording_open(path, flags, *args):
        fd = real_open(path, flags, *args)
        if Path(path) == tmp_path:
            directories.append(fd)
        return fd

    monkeypatch.setattr(os, "open", recording_open)
    atomic_write(tmp_path / "f.bin", b"1")
    assert len(synced) == 2 and synced[-1] == directories[0]  # the file, then its folder


def test_a_write_failing_without_a_file_name_names_the_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a full disk shows on the write or the close of the temporary: the OSError names no file; the error then
    # names the target (not the temporary), so that the command line can say which file was not written
    import errno

    def full_disk(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    target = tmp_path / "labels" / "a.png"
    target.parent.mkdir()
    with pytest.raises(OSError) as raised:
        atomic_write(target, b"png")
    assert (raised.value.errno, raised.value.filename, raised.value.strerror) == (
        errno.ENOSPC, str(target), "No space left on device")
    assert list(target.parent.iterdir()) == []
