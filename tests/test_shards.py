"""Archives in shards: ``moleseg predict --shard I/N`` splits the inputs the same way whatever their order,
and ``moleseg merge`` joins three shards into the single run's table, or says in one line which input is
missing or duplicated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthetic import lesion_dataset
from moleseg.cli import main
from moleseg.engine.shards import Shard, ShardError, shard_positions
from moleseg.tools import SHARED_DATA_DIR

#: Small real images (cropped), so that the classical model runs in well under a second each.
IMAGES = ("071", "072", "073", "074", "075", "076", "077")
SIDE_PX = 96


def test_shard_text_and_names():
    shard = Shard.parse(" 2/3 ")
    assert (shard.index, shard.count, shard.text, shard.name) == (2, 3, "2/3", "shard-2-of-3")
    assert shard.table_name("measurements.csv") == "measurements.shard-2-of-3.csv"
    assert shard.manifest_name == "shard-2-of-3.json"
    with pytest.raises(ShardError, match=r"^a shard is I/N with 1 <= I <= N, not 4/3$"):
        Shard.parse("4/3")
    with pytest.raises(ShardError, match=r"^a shard is I/N \(e\.g\. 2/3\), not '2of3'$"):
        Shard.parse("2of3")


def test_the_split_ignores_the_listing_order():
    keys = [f"in/{name}.jpg" for name in "fbdaceg"]
    shards = [Shard(i, 3) for i in (1, 2, 3)]
    chosen = [{keys[p] for p in shard_positions(keys, s)} for s in shards]
    assert chosen == [{"in/a.jpg", "in/d.jpg", "in/g.jpg"}, {"in/b.jpg", "in/e.jpg"}, {"in/c.jpg", "in/f.jpg"}]
    reordered = list(reversed(keys))
    assert [{reordered[p] for p in shard_positions(reordered, s)} for s in shards] == chosen
    assert shard_positions(keys, Shard(2, 3)) == [1, 5]  # b and e, in the given order


def run(*args: str) -> int:
    return main(["predict", "--model", "classical", "--quiet", *args])


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Seven small real images (one name in two folders) and a broken file, run whole and in 3 shards."""
    if not (SHARED_DATA_DIR / "moles").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA_DIR}: real-data tests skipped")
    folder = tmp_path_factory.mktemp("archive")
    (folder / "in" / "sub").mkdir(parents=True)
    for index, name in enumerate(IMAGES):
        image = Image.open(SHARED_DATA_DIR / f"moles/seed/test/images/{name}.jpg").convert("RGB")
        target = folder / "in" / ("sub" if index % 3 == 0 else "") / f"{name}.png"
        image.resize((SIDE_PX, SIDE_PX)).save(target)
    shutil.copy(folder / "in" / "072.png", folder / "in" / "sub" / "072.png")  # same name in two folders
    (folder / "in" / "broken.png").write_bytes(b"not a png")
    inputs = (str(folder / "in"), str(folder / "in" / "sub"))
    assert run("--out", str(folder / "single"), *inputs) == 2  # broken.png is skipped
    for index in (1, 2, 3):
        assert run("--out", str(folder / "shards"), "--shard", f"{index}/3", *inputs) in (0, 2)
    return folder


def test_three_shards_merged_equal_a_single_run(archive, tmp_path, capsys):
    assert main(["merge", str(archive / "shards"), "--out", str(tmp_path)]) == 2  # broken.png failed in its shard
    assert (tmp_path / "measurements.csv").read_bytes() == (archive / "single" / "measurements.csv").read_bytes()
    merged = json.loads((tmp_path / "measurements.settings.json").read_text())
    single = json.loads((archive / "single" / "measurements.settings.json").read_text())
    assert merged["images"] == single["images"] and len(merged["images"]) == len(IMAGES) + 1
    single_files = {p.name for p in (archive / "single").rglob("*.png")}
    assert single_files <= {p.name for p in (archive / "shards").rglob("*.png")}
    for name in single_files:  # the same output names and pixels
        assert np.array_equal(np.asarray(Image.open(next((archive / "single").rglob(name)))),
                              np.asarray(Image.open(next((archive / "shards").rglob(name)))))
    err = capsys.readouterr().err
    assert "broken.png" in err and "1 file could not be processed" in err


def copy_shards(archive: Path, tmp_path: Path) -> Path:
    shards = tmp_path / "shards"
    shards.mkdir()
    for path in (archive / "shards").glob("*.*"):
        if path.suffix in (".csv", ".json"):
            shutil.copy(path, shards / path.name)
    return shards


def test_a_missing_shard_is_named(archive, tmp_path, capsys):
    shards = copy_shards(archive, tmp_path)
    (shards / "shard-2-of-3.json").unlink()
    assert main(["merge", str(shards)]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: shard 2/3 missing: no finished shard-I-of-3.json (did the job fail or is it still running?); "
        "run them again, then merge")
    assert not (shards / "measurements.csv").exists()


def test_a_missing_or_duplicated_input_is_named(archive, tmp_path, capsys):
    shards = copy_shards(archive, tmp_path)
    table = shards / "measurements.shard-1-of-3.csv"
    lines = table.read_text(encoding="utf-8").splitlines(keepends=True)
    key = lines[1].split(",")[1]
    table.write_text("".join(lines[:2] + lines[1:2] + lines[3:]), encoding="utf-8")  # row 2 gone, row 1 twice
    gone = lines[2].split(",")[1]
    assert main(["merge", str(shards)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: the shards do not hold every input exactly once: {key} (shard 1/3) appears 2 times; "
        f"{gone} (shard 1/3) has no row and no failure")


def test_shards_of_another_input_list_are_refused(archive, tmp_path, capsys):
    shards = copy_shards(archive, tmp_path)
    manifest = json.loads((shards / "shard-3-of-3.json").read_text())
    manifest["digest"] = "0" * 64
    (shards / "shard-3-of-3.json").write_text(json.dumps(manifest))
    assert main(["merge", str(shards)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {shards / 'shard-3-of-3.json'}: this shard split another input list or shard count than the "
        "others (the inputs or N differ): merge the shards of one run only")


#: A one-shard manifest as ``write_manifest`` writes it (one input, its table beside it).
MANIFEST = {"shard": 1, "count": 1, "total": 1, "digest": "d" * 64, "measurements": "measurements.shard-1-of-1.csv",
            "objects": None, "inputs": [[0, "a.png"]], "failed": []}


@pytest.mark.parametrize(("changed", "reason"), [
    ({"total": None}, "total is not a whole number"),  # a manifest of another version, or edited
    ({"count": 1e400}, "count is not a whole number"),  # JSON's 1e400 reads as infinity
    ({"shard": True}, "shard is not a whole number"),
    ({"count": 2}, "it says shard 1/2, its name 1/1"),
    ({"inputs": [[0]]}, "inputs is not a list of [position, name] pairs"),
    ({"inputs": [[5, "a.png"]]}, "inputs is not a list of [position, name] pairs"),  # beyond the total
    ({"failed": "a.png"}, "failed is not a list of [name, reason] pairs"),
    ({"measurements": "/etc/passwd"}, "measurements is not a file name beside it"),
    ({"objects": "../objects.csv"}, "objects is not a file name beside it"),
])
def test_a_malformed_manifest_is_one_line_naming_it(tmp_path, capsys, changed, reason):
    """A manifest's keys and kinds were trusted: a missing key or an infinite count gave a stack trace, and
    ``measurements`` could name any file on the machine."""
    manifest = tmp_path / "shard-1-of-1.json"
    manifest.write_text(json.dumps({**MANIFEST, **changed}).replace("Infinity", "1e400"))
    (tmp_path / MANIFEST["measurements"]).write_text("source,area_px\na.png,1\n")
    assert main(["merge", str(tmp_path), "--out", str(tmp_path / "merged")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {manifest}: not a readable shard manifest ({reason})"
    assert not (tmp_path / "merged" / "measurements.csv").exists()


def test_a_huge_shard_count_is_told_without_listing_every_missing_shard(tmp_path, capsys):
    count = 10**12  # the missing shards were listed one by one, for hours
    (tmp_path / f"shard-1-of-{count}.json").write_text(json.dumps({**MANIFEST, "count": count}))
    assert main(["merge", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {count - 1:,} shards 2/{count}, 3/{count}, 4/{count}, 5/{count}, 6/{count} and more missing: no "
        f"finished shard-I-of-{count}.json (did the job fail or is it still running?); run them again, then merge")


@pytest.mark.parametrize("damaged, content, reason", [
    ("measurements.shard-1-of-2.settings.json", b"[1, 2]", "not a settings sidecar (not a JSON object with a "
                                                           "list of images)"),
    ("measurements.shard-1-of-2.settings.json", b'{"images": 5}', "not a settings sidecar (not a JSON object "
                                                                  "with a list of images)"),
    ("measurements.shard-1-of-2.settings.json", b"{bad", "not a readable settings sidecar (Expecting property "
                                                         "name enclosed in double quotes: line 1 column 2 (char 1))"),
    ("measurements.shard-1-of-2.settings.json", b"\xff", "not a readable settings sidecar ('utf-8' codec can't "
                                                         "decode byte 0xff in position 0: invalid start byte)"),
    ("measurements.shard-1-of-2.csv", b"image,source\n\xff,x\n", "cannot read the shard's table ('utf-8' codec "
                                                                 "can't decode byte 0xff in position 13: invalid "
                                                                 "start byte)"),
])
def test_a_damaged_table_or_sidecar_of_a_shard_is_one_line_naming_it(tmp_path, capsys, damaged, content, reason):
    # a sidecar that is a JSON list or whose images are not a list was a stack trace; a file that is not UTF-8 or
    # not JSON was "error: <the decoder's words>" naming no file
    images, _ = lesion_dataset(tmp_path / "set", n=2, size=48)
    for index in (1, 2):
        assert run("--out", str(tmp_path / "shards"), "--shard", f"{index}/2", str(images)) == 0
    (tmp_path / "shards" / damaged).write_bytes(content)
    capsys.readouterr()
    assert main(["merge", "--quiet", str(tmp_path / "shards"), "--out", str(tmp_path / "merged")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'shards' / damaged}: {reason}\n"
    assert not (tmp_path / "merged").exists()


def test_a_shard_folder_that_is_missing_or_a_file_is_named_as_such(tmp_path, capsys):
    # merge took the first folder for --out first: "no shard manifest ... in <missing folder>" and "--out <file> is
    # a file, not a folder", an option never typed
    (tmp_path / "notes.txt").write_text("x")
    for given, said in ((tmp_path / "absent", f"folder not found: {tmp_path / 'absent'}"),
                        (tmp_path / "notes.txt", f"{tmp_path / 'notes.txt'} is a file, not a shard folder")):
        assert main(["merge", "--quiet", str(given)]) == 2
        assert capsys.readouterr().err == f"error: {said}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(("text", "reason"), [
    ("[" * 100_000, "nested too deeply"),
    ('{"count": ' + "9" * 5000 + "}", "a number of more than 4300 digits"),
], ids=["nested", "digits"])
def test_a_manifest_json_cannot_parse_says_why_in_words(tmp_path, capsys, text, reason):
    manifest = tmp_path / "shard-1-of-1.json"
    manifest.write_text(text)
    assert main(["merge", str(tmp_path), "--out", str(tmp_path / "merged")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {manifest}: not a readable shard manifest ({reason})"
