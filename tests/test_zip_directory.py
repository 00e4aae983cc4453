"""A ZIP whose central directory alone is the attack: millions of tiny entries cost ``zipfile.ZipFile`` some
400 bytes each to list before any budget could count them. The entries are counted from the directory's bytes
first, in every reader of untrusted ZIPs (dataset uploads, ``.keras`` files, PyTorch weights)."""

from __future__ import annotations

import io
import struct
import zipfile

import pytest

from moleseg.core.archive import ArchiveError, ZipBudget, check_directory_entries
from moleseg.core.modelinfo import ModelFileError, check_keras_file, read_model_info
from moleseg.engine.session import extract_zip


def directory_only(entries: int) -> bytes:
    """A ZIP of ``entries`` central directory entries (one-to-six-letter names) and no member data at all."""
    directory = bytearray()
    for index in range(entries):
        name = b"%x" % index
        directory += struct.pack("<4s4H2H3I5H2I", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0,
                                 0, 0, 0) + name
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, entries & 0xFFFF, entries & 0xFFFF, len(directory), 0, 0)
    return bytes(directory) + end


def real_zip(entries: int, prefix: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    buffer.write(prefix)
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(entries):
            archive.writestr(f"images/{index}.png", b"x")
    return buffer.getvalue()


@pytest.fixture
def no_directory_listed(monkeypatch):
    """Listing any ZIP directory with zipfile fails the test."""
    def refuse(self):
        pytest.fail("zipfile listed the directory")

    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", refuse)


def test_the_directory_is_what_zipfile_lists():
    data = directory_only(300)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert len(archive.infolist()) == 300  # the end record says 300 too, but zipfile does not read that count


@pytest.mark.parametrize("prefix", [b"", b"#!/bin/sh\nexit 0\n" * 10], ids=["plain", "prepended"])
def test_entries_are_counted_exactly(prefix):
    data = real_zip(20, prefix)
    check_directory_entries(io.BytesIO(data), ZipBudget(max_members=20, max_bytes=10**6))
    with pytest.raises(ArchiveError) as caught:
        check_directory_entries(io.BytesIO(data), ZipBudget(max_members=19, max_bytes=10**6))
    assert str(caught.value) == "the archive holds more than 19 entries; at most 19 are accepted"


def test_the_count_ignores_a_lying_end_record(tmp_path, no_directory_listed):
    data = bytearray(directory_only(70_000))  # the end record's 16-bit count says 70 000 & 0xFFFF = 4 464
    assert struct.unpack_from("<H", data, len(data) - 12)[0] == 4464
    with pytest.raises(ArchiveError, match=r"^the archive holds more than 20000 entries"):
        extract_zip(bytes(data), tmp_path / "never-made")
    assert not (tmp_path / "never-made").exists()  # a refused archive makes no folder


def test_an_uploaded_directory_bomb_is_refused_before_zipfile_lists_it(tmp_path, no_directory_listed):
    data = directory_only(25_000)
    stream = io.BytesIO(data)
    stream.seek(7)
    for source in (data, stream, tmp_path / "bomb.zip"):
        (tmp_path / "bomb.zip").write_bytes(data)
        with pytest.raises(ArchiveError) as caught:
            extract_zip(source, tmp_path / "out")
        assert str(caught.value) == "the archive holds more than 20000 entries; at most 20000 are accepted"
    assert stream.tell() == 7  # an open file's position is restored
    assert not (tmp_path / "out").exists()


def _state_dict(path):
    from moleseg.network.torch_pickle import load_state_dict

    return load_state_dict(path)


TOO_MANY = "the archive holds more than 256 entries; at most 256 are accepted"


@pytest.mark.parametrize(("reader", "name", "message"), [
    (check_keras_file, "many.keras", f"many.keras: {TOO_MANY}"),
    (read_model_info, "many.keras", f"many.keras: {TOO_MANY}"),
    (_state_dict, "many.pth", f"many.pth: cannot read PyTorch weights ({TOO_MANY})"),
], ids=["check", "info", "weights"])
def test_a_model_file_directory_bomb_is_refused_before_zipfile_lists_it(tmp_path, no_directory_listed, reader, name,
                                                                        message):
    path = tmp_path / name
    path.write_bytes(directory_only(300))
    with pytest.raises(ValueError) as caught:  # ModelFileError for .keras files
        reader(path)
    assert str(caught.value) == message
    assert isinstance(caught.value, ModelFileError) == name.endswith(".keras")


def test_an_archive_whose_directory_cannot_be_found_is_left_to_zipfile(tmp_path):
    check_directory_entries(io.BytesIO(b"plain text"), ZipBudget(max_members=1, max_bytes=1))
    with pytest.raises(ArchiveError, match="not a readable ZIP"):
        extract_zip(b"plain text", tmp_path / "e")
    broken = bytearray(real_zip(3))
    broken[broken.index(b"PK\x01\x02")] = ord("X")  # the directory's first signature spoiled
    check_directory_entries(io.BytesIO(bytes(broken)), ZipBudget(max_members=1, max_bytes=1))
    with pytest.raises(ArchiveError, match="not a readable ZIP"):
        extract_zip(bytes(broken), tmp_path / "f")
