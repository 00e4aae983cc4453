"""Untrusted ``.keras`` files (moleseg.core.archive, moleseg.core.modelinfo): a ZIP bomb, too many members or an
oversized ``moleseg.json`` is refused from the ZIP directory, before any member is read, with one message
naming the file, in the package, the command line and the loading of a segmenter; the shipped models fit the
budget with room to spare."""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from moleseg.cli import main
from moleseg.core.archive import (MODEL_BUDGET, MODEL_INFO_MAX_BYTES, ArchiveError, BudgetTally, ZipBudget,
                                  check_budget)
from moleseg.core.modelinfo import ModelFileError, check_keras_file, read_model_info, write_model_info

ROOT = Path(__file__).resolve().parents[1]
#: Uncompressed size of the bomb's weights member: 2 GiB of zeros, deflated to about 2 MB.
BOMB_BYTES = 2 * 1024**3
_CHUNK = 64 * 1024**2


def deflated_zeros(total: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``total`` zero bytes (a multiple of 64 MiB) and its CRC-32, made by compressing
    64 MiB once and repeating that byte-aligned, dictionary-free piece (deflating 2 GiB takes seconds)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = compressor.compress(bytes(_CHUNK)) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(total // _CHUNK):
        crc = zlib.crc32(bytes(_CHUNK), crc)
    return piece * (total // _CHUNK) + compressor.flush(), crc


def write_bomb(path: Path) -> Path:
    """A ``.keras``-looking ZIP of about 2 MB whose ``model.weights.h5`` unpacks to 2 GiB of zeros: written
    stored, then its headers rewritten to say deflated, with the real CRC and size."""
    data, crc = deflated_zeros(BOMB_BYTES)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("moleseg.json", json.dumps({"n_classes": 3, "input_size": 32}))
        archive.writestr("model.weights.h5", data)
    raw = bytearray(buffer.getvalue())
    local = raw.index(b"PK\x03\x04", raw.index(b"PK\x03\x04") + 4)  # the second member's local header
    central = raw.index(b"PK\x01\x02", raw.index(b"PK\x01\x02") + 4)
    for header, method_at in ((local, 8), (central, 10)):
        struct.pack_into("<H", raw, header + method_at, zipfile.ZIP_DEFLATED)
        struct.pack_into("<I", raw, header + method_at + 6, crc)
        struct.pack_into("<I", raw, header + method_at + 14, BOMB_BYTES)  # uncompressed size
    path.write_bytes(bytes(raw))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    path = write_bomb(tmp_path_factory.mktemp("bomb") / "BOMB.keras")
    with zipfile.ZipFile(path) as archive:  # a real bomb: it unpacks (the start of it, here)
        info = archive.getinfo("model.weights.h5")
        assert (info.file_size, info.compress_type) == (BOMB_BYTES, zipfile.ZIP_DEFLATED)
        with archive.open(info) as member:
            assert member.read(1024) == bytes(1024)
    return path


@pytest.fixture
def no_member_read(monkeypatch):
    """Call it to make reading (or writing) any member of any ZIP archive fail the test from then on."""
    def refuse(*args, **kwargs):
        pytest.fail("a member was read")

    def forbid() -> None:
        monkeypatch.setattr(zipfile.ZipFile, "open", refuse)
        monkeypatch.setattr(zipfile.ZipFile, "read", refuse)

    return forbid


def test_the_bomb_is_about_2_mb(bomb):
    assert 1_900_000 < bomb.stat().st_size < 2_300_000


@pytest.mark.parametrize("reader", [check_keras_file, read_model_info], ids=["check", "info"])
def test_a_zip_bomb_is_refused_before_any_member_is_read(bomb, no_member_read, reader):
    with zipfile.ZipFile(bomb) as archive:
        ratio = BOMB_BYTES / archive.getinfo("model.weights.h5").compress_size
    assert 1000 < ratio < 1100
    no_member_read()
    with pytest.raises(ModelFileError) as error:
        reader(bomb)
    assert str(error.value) == f"BOMB.keras: model.weights.h5 is compressed {ratio:.0f} times: refused as a possible zip bomb"


def test_a_zip_bomb_is_refused_when_loading_a_segmenter(bomb, no_member_read):
    from moleseg.network.loading import load_segmenter

    no_member_read()
    with pytest.raises(ModelFileError, match=r"^BOMB\.keras: model\.weights\.h5 is compressed \d+ times"):
        load_segmenter(bomb)


def test_calibration_does_not_rewrite_a_bomb(bomb, no_member_read):
    no_member_read()
    with pytest.raises(ModelFileError, match=r"^BOMB\.keras: .*zip bomb"):
        write_model_info(bomb, {"lesion_threshold": 0.5})


@pytest.mark.parametrize("command", ["info", "predict"])
def test_the_command_line_says_one_line_and_exits_2(bomb, tmp_path, capsys, command):
    from moleseg.core.imagewrite import write_png

    image = tmp_path / "mole.png"
    write_png(image, np.zeros((8, 8, 3), np.uint8))
    argv = {"info": ["info", str(bomb)],
            "predict": ["predict", "--model", str(bomb), "--out", str(tmp_path / "out"), str(image)]}[command]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: BOMB.keras: model.weights.h5 is compressed ")
    assert "Traceback" not in captured.err and captured.out == ""


def _zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_too_many_members_are_refused(tmp_path, no_member_read):
    count = MODEL_BUDGET.max_members + 1
    path = _zip(tmp_path / "many.keras", {f"assets/{index}": b"" for index in range(count)})
    no_member_read()
    with pytest.raises(ModelFileError, match=rf"^many\.keras: the archive holds more than {count - 1} entries; at most "
                                             rf"{MODEL_BUDGET.max_members} are accepted$"):
        read_model_info(path)


def test_an_oversized_moleseg_json_is_not_read(tmp_path, no_member_read):
    padding = b" " * MODEL_INFO_MAX_BYTES
    path = _zip(tmp_path / "padded.keras", {"moleseg.json": b"{}" + padding})
    no_member_read()
    with pytest.raises(ModelFileError, match=rf"^padded\.keras: its moleseg\.json declares "
                                             rf"{MODEL_INFO_MAX_BYTES + 2} bytes; at most {MODEL_INFO_MAX_BYTES} are read$"):
        read_model_info(path)


def test_moleseg_json_that_is_not_an_object_is_corrupt(tmp_path):
    path = _zip(tmp_path / "list.keras", {"moleseg.json": b"[1, 2]"})
    with pytest.raises(ModelFileError, match=r"^list\.keras: its moleseg\.json is corrupt \(a JSON list, not an "
                                             r"object\)$"):
        read_model_info(path)


@pytest.mark.parametrize("name", ["dermoscopy", "cells"])
def test_the_shipped_models_fit_the_budget_a_hundred_times(name):
    path = ROOT / "models" / f"{name}.keras"
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        check_budget(archive, MODEL_BUDGET)
        assert archive.getinfo("moleseg.json").file_size * 50 < MODEL_INFO_MAX_BYTES
    assert len(members) * 50 < MODEL_BUDGET.max_members
    assert sum(info.file_size for info in members) * 100 < MODEL_BUDGET.max_bytes
    assert read_model_info(path)["n_classes"] in (2, 3)


# -- the budget's arithmetic, by hand ---------------------------------------------------------------


def _info(name: str, size: int, compressed: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.file_size, info.compress_size = size, compressed
    return info


def test_a_member_over_the_ratio_is_refused_only_above_one_mib():
    budget = ZipBudget(max_members=10, max_bytes=100 * 1024**2, max_ratio=10.0)
    BudgetTally(budget).add(_info("small", 1024**2, 1))  # 1 MiB: not ratio-checked alone
    tally = BudgetTally(budget)
    tally.add(_info("fine", 2 * 1024**2, 210_000))  # 9.99 times
    assert (tally.declared_bytes, tally.compressed_bytes) == (2 * 1024**2, 210_000)
    with pytest.raises(ArchiveError, match=r"^big is compressed 11 times: refused as a possible zip bomb$"):
        BudgetTally(budget).add(_info("big", 11 * 1024**2, 1024**2))


def test_the_totals_are_checked_after_each_member():
    budget = ZipBudget(max_members=10, max_bytes=3 * 1024**2, max_ratio=10.0)
    tally = BudgetTally(budget)
    for index in range(3):
        tally.add(_info(f"m{index}", 1024**2, 110_000))  # 3 MiB at 9.5 times together
    with pytest.raises(ArchiveError, match=r"^the archive would unpack to more than 3 MB \(at 'm3'\)$"):
        tally.add(_info("m3", 1, 1))
    together = BudgetTally(budget)
    together.add(_info("a", 1024**2, 1))  # alone: not ratio-checked
    with pytest.raises(ArchiveError, match=r"^the archive's members up to 'b' are compressed 262144 times "
                                           r"together \(at most 10\): refused as a possible zip bomb$"):
        together.add(_info("b", 1, 3))  # (1 MiB + 1) / (1 + 3) = 262144.25


@pytest.mark.parametrize("field, value", [("class_names", 5), ("class_names", [1, 2, 3]), ("class_names", {"a": 1}),
                                          ("lesion_threshold", "high"), ("lesion_threshold", [0.5]),
                                          ("lesion_threshold", 5.0), ("confidence_threshold", -0.5)])
def test_a_moleseg_json_field_of_the_wrong_kind_breaks_no_picker(tmp_path, field, value):
    """A shipped-models folder is read for every user's pickers and home page: a model file whose class names are
    not texts, or whose lesion threshold is not a number, is refused naming the field (read_info), and the pickers
    list it with no details (its label from the file name) instead of raising for everyone."""
    from moleseg.app import models
    from moleseg.core.modelinfo import read_info

    path = tmp_path / "dermoscopy.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("moleseg.json", json.dumps({"n_classes": 3, "input_size": 32,
                                                     "model": {"architecture": "deeplabv3plus"}, field: value}))
    with pytest.raises(ModelFileError, match=f"dermoscopy.keras: its moleseg.json field '{field}' must be"):
        read_info(path)
    [choice] = models.shipped_choices(tmp_path)
    assert choice.label == "dermoscopy (shipped, model)"
    rows = {row["property"]: row["value"] for row in models.model_details(choice)}
    assert rows["file"] == str(path) and "classes" not in rows


def test_a_moleseg_json_nested_too_deeply_is_corrupt_in_words(tmp_path):
    path = _zip(tmp_path / "deep.keras", {"moleseg.json": b"[" * 100_000})
    with pytest.raises(ModelFileError) as caught:
        read_model_info(path)
    assert str(caught.value) == "deep.keras: its moleseg.json is corrupt (nested too deeply)"
