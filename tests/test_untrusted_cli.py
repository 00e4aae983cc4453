"""The command line against what users write: file names that are terminal escapes, output folders with links
planted in them, shard folders of another user, study files that take forever. Each test is one hole the
fourth red team found, with what an attacker did in its comment."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from synthetic import lesion_dataset

from moleseg.cli import main
from moleseg.core.imagewrite import write_png

#: A file name that, printed raw, retitles the terminal window, clears the screen and writes a line of its own.
ESCAPE_NAME = "e\x1b]0;owned\x07\x1b[2J\nerror: all is well"
ESCAPED_NAME = "e\\x1b]0;owned\\x07\\x1b[2J\\nerror: all is well"


def test_file_names_in_the_pairing_summary_reach_the_terminal_escaped(tmp_path, capsys):
    # a user named an image in a shared folder like ESCAPE_NAME: moleseg evaluate (and score) printed the pairing
    # summary's "unpaired image" raw: the operator's terminal ran the escapes and showed a line of the user's
    images, masks = lesion_dataset(tmp_path / "set", n=2, size=48)
    write_png(images / f"{ESCAPE_NAME}.png", np.zeros((48, 48, 3), np.uint8))
    assert main(["evaluate", "--model", "classical", "--no-baseline", "--images", str(images),
                 "--masks", str(masks)]) == 0
    captured = capsys.readouterr()
    said = captured.out + captured.err
    assert "\x1b" not in said and "\x07" not in said
    assert f"1 unpaired image: {ESCAPED_NAME}.png\n" in captured.err


def test_a_study_files_name_and_labels_reach_the_terminal_escaped(tmp_path, capsys):
    # a study file in a shared data root named its study with escapes: moleseg study --dry-run printed them raw
    images, masks = lesion_dataset(tmp_path / "set", n=2, size=48, names=["x0.png", "y0.png"])
    study = tmp_path / "study.yaml"
    study.write_text(json.dumps({"name": "e\x1b]0;owned\x07\x1b[2J", "factors": {"epochs": {"\x1b[31mred": 2}},
                                 "data": {"images": str(images), "masks": str(masks),
                                          "split": {"by": "group", "pattern": "^(x|y)", "test": ["x"]}}}))
    assert main(["study", "--config", str(study), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert out.splitlines()[0] == "study e\\x1b]0;owned\\x07\\x1b[2J: 2 runs, design one-at-a-time, 1 seed per setting"


def test_predict_writes_nothing_through_a_link_planted_in_its_output_folder(tmp_path, capsys):
    # two input folders with the same image name give outputs a/IMD004_*.png and b/IMD004_*.png; a user who can
    # write the output folder put a link "a" to the operator's folder there: predict wrote three PNGs into it
    victim = tmp_path / "operator"
    victim.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "a").symlink_to(victim)
    for folder in ("a", "b"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        write_png(tmp_path / "in" / folder / "IMD004.png", np.full((40, 40, 3), 200, np.uint8))
    code = main(["predict", "--model", "classical", "--quiet", "--out", str(out),
                 str(tmp_path / "in" / "a"), str(tmp_path / "in" / "b")])
    assert code == 2
    assert list(victim.iterdir()) == []
    assert sorted(p.name for p in (out / "b").iterdir()) == ["IMD004_classes.png", "IMD004_mask.png",
                                                             "IMD004_overlay.png"]
    assert f"skipped IMD004.png: cannot write its results ({out / 'a'} is a link, not a folder of this run: " \
           "nothing is written through it)" in capsys.readouterr().err


def test_logs_and_the_cancel_request_are_never_written_through_a_link_and_log_no_escape(tmp_path):
    # a user who can write a shared run folder put links named like its log and its cancel request there, to a
    # file of the operator's account (~/.ssh/authorized_keys, ~/.bashrc): the training appended its log lines to
    # it (file names of the user's data among them), and Cancel replaced it with a time stamp
    from moleseg.core.atomic import open_for_append
    from moleseg.engine.launch import request_cancel
    from moleseg.engine.runs import RunFiles, RunLog

    victim = tmp_path / "authorized_keys"
    victim.write_text("ssh-ed25519 AAAA operator\n")
    run = tmp_path / "run"
    run.mkdir()
    for name in ("log.txt", "job.log", "cancel"):
        (run / name).symlink_to(victim)
    with pytest.raises(OSError) as raised:
        RunLog(run / "log.txt")("skipped x.png")
    assert str(raised.value) == f"[Errno {raised.value.errno}] it is a link: nothing is written through it: " \
                                f"'{run / 'log.txt'}'"
    with pytest.raises(OSError, match="it is a link"):
        open_for_append(RunFiles(run).job_log)
    request_cancel(run)
    assert victim.read_text() == "ssh-ed25519 AAAA operator\n"
    assert not (run / "cancel").is_symlink() and RunFiles(run).cancel.read_text().startswith("20")
    os.mkfifo(run / "pipe.log")  # opened to write, a named pipe without reader blocked the training for good
    with pytest.raises(OSError) as raised:
        open_for_append(run / "pipe.log")
    assert raised.value.errno == errno.ENXIO  # no reader: refused at once
    echoed: list[str] = []  # a training runner's echo goes to job.log
    RunLog(run / "new.log", echoed.append)("skipped e\x1b]0;owned\x07\x1b[2J.png")  # read with tail -f
    assert (run / "new.log").read_text().endswith("  skipped e\\x1b]0;owned\\x07\\x1b[2J.png\n")
    assert echoed == ["skipped e\\x1b]0;owned\\x07\\x1b[2J.png"]


def _two_shards(folder: Path, second_rows: str, second_cells: str) -> tuple[Path, Path]:
    """Two finished shards of a cells archive of a.png and b.png, each in its own folder (two users' jobs): the
    first as moleseg predict wrote it, the second with the tables given."""
    shards = []
    first_rows, first_cells = "image,source,output,cells\na.png,a.png,a,2\n", "image,cell,area_px\na,1,10\na,2,12\n"
    for index, rows, cells in ((1, first_rows, first_cells), (2, second_rows, second_cells)):
        shard = folder / f"user{index}"
        shard.mkdir()
        manifest = {"shard": index, "count": 2, "total": 2, "digest": "d" * 64,
                    "measurements": f"measurements.shard-{index}-of-2.csv",
                    "objects": f"objects.shard-{index}-of-2.csv",
                    "inputs": [[index - 1, f"{'ab'[index - 1]}.png"]], "failed": []}
        (shard / manifest["measurements"]).write_text(rows)
        (shard / manifest["objects"]).write_text(cells)
        (shard / f"shard-{index}-of-2.json").write_text(json.dumps(manifest))
        shards.append(shard)
    return shards[0], shards[1]


@pytest.mark.parametrize(("rows", "cells", "said"), [
    # the second shard's objects table added a cell to a.png, an image of the first shard (another user's job):
    # the merged objects.csv gave a.png three cells, its measurements two
    ("image,source,output,cells\nb.png,b.png,b,1\n", "image,cell,area_px\nb,1,9\na,3,999\n",
     "shard 2/2's objects table has cells of a, not an image of its own"),
    # its row for b.png gave the output name of a.png: a.png's cells were listed under both rows
    ("image,source,output,cells\nb.png,b.png,a,1\n", "image,cell,area_px\na,3,999\n",
     "b.png (shard 2/2) has the output a of a.png"),
])
def test_a_shard_cannot_add_rows_or_cells_to_another_shards_images(tmp_path, capsys, rows, cells, said):
    first, second = _two_shards(tmp_path, rows, cells)
    assert main(["merge", str(first), str(second), "--out", str(tmp_path / "merged")]) == 2
    assert capsys.readouterr().err == f"error: the shards do not hold every input exactly once: {said}\n"
    assert not (tmp_path / "merged").exists()


def test_merge_of_two_honest_shards_keeps_each_images_cells(tmp_path, capsys):
    first, second = _two_shards(tmp_path, "image,source,output,cells\nb.png,b.png,b,1\n", "image,cell,area_px\nb,1,9\n")
    assert main(["merge", "--quiet", str(first), str(second), "--out", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "objects.csv").read_text().splitlines() == [
        "image,cell,area_px", "a,1,10", "a,2,12", "b,1,9"]


def test_a_manifests_huge_total_is_refused_without_counting_to_it(tmp_path, capsys):
    # a shard manifest said "total": 10**12 for its one input: merge built the set of every position up to it,
    # took all the memory of the machine and died with a MemoryError's stack trace
    (tmp_path / "shard-1-of-1.json").write_text(json.dumps({
        "shard": 1, "count": 1, "total": 10**12, "digest": "d" * 64, "measurements": "measurements.shard-1-of-1.csv",
        "objects": None, "inputs": [[0, "a.png"]], "failed": []}))
    (tmp_path / "measurements.shard-1-of-1.csv").write_text("source,area_px\na.png,1\n")
    assert main(["merge", str(tmp_path), "--out", str(tmp_path / "merged")]) == 2
    assert capsys.readouterr().err == ("error: the shards do not hold every input exactly once: the shards list 1 of "
                                       "the 1000000000000 inputs\n")


@pytest.mark.parametrize(("pattern", "reason"), [
    (r"^((a|aa)+)$", "alternatives (|) inside a repetition"),  # 2^(length / 2) ways to fail on a name
    (r"^(\w+)+_", "a repetition inside a repetition"),
    (r"\w*\w*\w*\w*_", "4 parts of varying length"),  # its search: the length to the 5th power, 2 minutes a name
    (r"^(x)\1", "a back-reference"),
])
def test_a_split_pattern_that_could_run_for_hours_is_refused_before_any_name_is_searched(tmp_path, capsys, pattern,
                                                                                        reason):
    # a study file in a shared data root split its images by ^((a|aa)+)$, beside an image named a * 60 + "!.png":
    # checking the study (moleseg study, or the Study page in the app's server, where it holds the whole server
    # up) searched that name for longer than the age of the universe
    images, masks = lesion_dataset(tmp_path / "set", n=2, size=48, names=["a" * 60 + "!.png", "x0.png"])
    study = tmp_path / "study.yaml"
    study.write_text(json.dumps({"factors": {"epochs": [1, 2]}, "data": {
        "images": str(images), "masks": str(masks),
        "split": {"by": "group", "pattern": pattern, "test": ["x"]}}}))
    assert main(["study", "--config", str(study), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    assert capsys.readouterr().err == (
        f"error: {study}: data.split.pattern {pattern!r} could take hours on some file names ({reason}); give at "
        "most 2 parts of varying length (+, *, ?, {m,n}, alternatives |), none inside a repetition, and no "
        "back-reference\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("linked", ["measurements.shard-2-of-2.csv", "shard-2-of-2.json",
                                    "measurements.shard-2-of-2.settings.json"])
def test_a_shard_file_that_is_a_link_is_refused(tmp_path, capsys, linked):
    # the second shard's user replaced its table by a link to a CSV of the operator's (another study's
    # measurements): merge, run by the operator, copied its rows into the merged table, written by default into
    # the first shard's folder; a link for the manifest or the sidecar was read the same way
    first, second = _two_shards(tmp_path, "image,source,output,cells\nb.png,b.png,b,1\n", "image,cell,area_px\nb,1,9\n")
    (second / "measurements.shard-2-of-2.settings.json").write_text('{"images": [null]}')
    private = tmp_path / "operator" / linked
    private.parent.mkdir()
    (second / linked).rename(private)
    (second / linked).symlink_to(private)
    assert main(["merge", str(first), str(second), "--out", str(tmp_path / "merged")]) == 2
    what = ("cannot read the shard's table" if linked.endswith(".csv") else
            "not a readable shard manifest" if linked.startswith("shard") else "not a readable settings sidecar")
    assert capsys.readouterr().err == (f"error: {second / linked}: {what} (it is a link: a shard's files are read "
                                       "from its folder only)\n")
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize("option", ["learning_rate", "tile_scale", "validation_split"])
def test_a_study_value_of_400_digits_is_refused_in_one_line(tmp_path, capsys, option):
    # a study file gave learning_rate a whole number of 400 digits (a config.json can too): the check of the option's
    # value turned it into a float, and the command ended in an OverflowError's stack trace; tile_scale and
    # validation_split passed their own check and then the rules between options (a tile scale needs tiles, the
    # held-out shares leave 10 %) took them as floats
    from moleseg.core import options

    images, masks = lesion_dataset(tmp_path / "set", n=2, size=48, names=["x0.png", "y0.png"])
    huge = 10**400
    study = tmp_path / "study.yaml"
    study.write_text(json.dumps({"factors": {option: [huge]}, "data": {
        "images": str(images), "masks": str(masks), "split": {"by": "group", "pattern": "^(x|y)", "test": ["x"]}}}))
    assert main(["study", "--config", str(study), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {study}: {huge} ({option}): {options.option(option).label} must be a number (")
    assert err.endswith(f"), not {huge}\n") and err.count("\n") == 1


def test_a_study_file_of_100_kb_is_refused_before_it_is_parsed(tmp_path, capsys):
    # a study file of 1 MiB (the limit then) of small YAML values was parsed by PyYAML's pure-Python parser for
    # about 20 s of the server's CPU, at every click on "Start the study"; the shipped ones are under 2 kB
    from moleseg.engine.studyplan import MAX_STUDY_FILE_BYTES

    images, masks = lesion_dataset(tmp_path / "set", n=2, size=48, names=["x0.png", "y0.png"])
    study = tmp_path / "study.yaml"
    study.write_text(json.dumps({"factors": {"epochs": [1] * 50_000}, "data": {
        "images": str(images), "masks": str(masks), "split": {"by": "group", "pattern": "^(x|y)", "test": ["x"]}}}))
    assert 100_000 < study.stat().st_size
    assert main(["study", "--config", str(study), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    assert capsys.readouterr().err == f"error: {study}: a study file is at most {MAX_STUDY_FILE_BYTES:,} bytes\n"


def test_a_shard_table_with_a_cell_over_csvs_field_limit_is_one_line_naming_it(tmp_path, capsys):
    # a shard's table had a cell of 200,000 characters: csv's "field larger than field limit" error was not one
    # merge expected, and the merge ended in a stack trace
    first, second = _two_shards(tmp_path, f"image,source,output,cells\nb.png,b.png,b,{'9' * 200_000}\n",
                                "image,cell,area_px\nb,1,9\n")
    assert main(["merge", str(first), str(second), "--out", str(tmp_path / "merged")]) == 2
    assert capsys.readouterr().err == (f"error: {second / 'measurements.shard-2-of-2.csv'}: cannot read the shard's "
                                       "table (field larger than field limit (131072))\n")


@pytest.mark.parametrize(("epochs", "said"), [
    ("1e999", "epochs must be a whole number, not inf"),  # JSON's 1e999 reads as infinity
    ('"x"', "epochs must be a whole number, not 'x'"),
])
def test_resuming_a_run_whose_config_has_a_wrong_epochs_is_one_line_naming_the_file(tmp_path, capsys, epochs, said):
    # a run folder's config.json (someone else's folder, or a damaged one) said "epochs": 1e999: moleseg train
    # --resume --epochs 3 ended in an OverflowError's stack trace ("x": int()'s words, naming no file)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(f'{{"epochs": {epochs}}}')
    assert main(["train", "--resume", "--out", str(run), "--epochs", "3"]) == 2
    assert capsys.readouterr().err == f"error: {run / 'config.json'}: {said}; the run cannot be resumed\n"


def test_settings_whose_labels_read_alike_get_run_folders_of_their_own(tmp_path, capsys):
    # settings "a b", "a-b" and "a/b" (or two long labels alike in their first 60 characters) were given the one run
    # folder epochs=a-b-seed0: the second run found it finished and was skipped, and the first run's test FM was
    # reported for all three settings
    images, masks = lesion_dataset(tmp_path / "set", n=2, size=48, names=["x0.png", "y0.png"])
    study = tmp_path / "study.yaml"
    study.write_text(json.dumps({"factors": {"epochs": {"a b": 1, "a-b": 2, "A/b": 3}}, "data": {
        "images": str(images), "masks": str(masks), "split": {"by": "group", "pattern": "^(x|y)", "test": ["x"]}}}))
    assert main(["study", "--config", str(study), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    listed = [line.split(":")[0].strip() for line in capsys.readouterr().out.splitlines()[2:]]
    digest = {label: hashlib.sha256(f"epochs={label}".encode()).hexdigest()[:8] for label in ("a-b", "A/b")}
    assert listed == ["base-seed0", "epochs=a-b-seed0", f"epochs=a-b-{digest['a-b']}-seed0",
                      f"epochs=A-b-{digest['A/b']}-seed0"]  # A-b: the same folder as a-b where case is not told


@pytest.mark.parametrize(("options", "said"), [
    ({"images": 5, "masks": ["m"]}, "images must be a list of folder paths, not 5"),  # was a TypeError's trace
    ({"images": ["a\0b"], "masks": ["m"]}, "images must be a list of folder paths, not ['a\\x00b']"),
    ({"images": ["a"], "masks": ["m"], "weights": "x\0"}, "weights must be text without a NUL character, not 'x\\x00'"),
])
def test_a_config_files_folder_of_the_wrong_kind_is_one_line_naming_the_file(tmp_path, capsys, options, said):
    # a configuration file (a run's config.json, someone's recipe) gave images as 5: resolving its relative
    # folders iterated over it and moleseg train ended in a TypeError's stack trace; a path with a NUL character
    # ended in "error: embedded null byte", naming neither the file nor the option
    config = tmp_path / "config.json"
    config.write_text(json.dumps(options))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == f"error: {config}: {said}\n"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("text", "said"), [
    ("base: {images: 5, masks: [m]}", "base (base): images must be a list of folder paths, not 5"),
    ('data: {images: "a\\0", masks: b, split: {by: group, pattern: "(x)", test: [x]}}',
     "data.images must be text without a NUL character, not 'a\\x00'"),
])
def test_a_browser_users_study_file_with_a_wrong_kind_of_folder_is_refused_in_words(tmp_path, text, said):
    # a study file in a data root gave base images as 5 (or a folder with a NUL character): checking a browser
    # user's study looked at its folders before their kinds, and the Study page showed a TypeError's (a
    # ValueError's) stack trace
    from moleseg.engine.studyplan import StudyError
    from moleseg.engine.studyrun import checked_study

    images, masks = lesion_dataset(tmp_path / "set", n=2, size=48, names=["x0.png", "y0.png"])
    study = tmp_path / "study.yaml"
    data = f'data: {{images: {images}, masks: {masks}, split: {{by: group, pattern: "^(x|y)", test: [x]}}}}\n'
    study.write_text((text + "\n" if text.startswith("data") else data + text + "\n") + "factors: {epochs: [1, 2]}\n")
    with pytest.raises(StudyError) as refused:
        checked_study(study, roots=[tmp_path])
    assert str(refused.value).startswith(f"{study}: {said}")


def test_an_input_that_is_a_link_loop_is_named_as_such(tmp_path, capsys):
    # an input folder that was a link to itself (directly or through another link) was reported "not found",
    # although its name was right there in the folder
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert main(["predict", "--model", "classical", "--out", str(tmp_path / "out"), str(tmp_path / "loop")]) == 2
    assert capsys.readouterr().err == (
        f"skipped {tmp_path / 'loop'}: a link that leads to no file or folder (a loop, or its target is missing)\n"
        f"error: no image files to process ({tmp_path / 'loop'}: a link that leads to no file or folder (a loop, or "
        "its target is missing))\n")
    assert not (tmp_path / "out").exists()


def test_terminal_text_keeps_lines_and_tabs_and_escapes_every_other_control(capsys):
    from moleseg.core.terminal import TerminalText, terminal_streams

    raw = io.StringIO()
    stream = TerminalText(raw)
    assert stream.write("a\tb\nc\rd\x1b[2J\u202ee\udcff\n") == 15  # the characters given
    assert raw.getvalue() == "a\tb\nc\\rd\\x1b[2J\\u202ee\\xff\n"  # a bidi override and a byte that is not UTF-8
    assert stream.getvalue() == raw.getvalue()  # the rest is the stream's own
    with terminal_streams():  # as moleseg's commands and its training runner (job.log) write
        print("x\x07y")
    assert capsys.readouterr().out == "x\\x07y\n"


@pytest.mark.skipif(os.uname().sysname == "Darwin", reason="macOS file names are always UTF-8")
def test_a_shard_with_an_input_whose_name_is_not_utf8_finishes_and_merges(tmp_path, capsys):
    # a user's folder held a file whose name is not UTF-8 (b"\xffbad.png"): predict --shard skipped it as without
    # --shard, then could not write its manifest ("'utf-8' codec can't encode character '\udcff'", naming no file):
    # the shard never finished and merge refused the archive as unfinished
    images, _ = lesion_dataset(tmp_path / "set", n=1, size=48)
    os.rename(images / "000.png", os.fsencode(images) + b"/\xffbad.png")
    lesion_dataset(tmp_path / "set", n=1, size=48, names=["ok.png"])
    assert main(["predict", "--model", "classical", "--quiet", "--out", str(tmp_path / "out"), "--shard", "1/1",
                 str(images)]) == 2
    assert (tmp_path / "out" / "shard-1-of-1.json").is_file()
    capsys.readouterr()
    assert main(["merge", "--quiet", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"skipped {images}/\\xffbad.png: ") and err.endswith("error: 1 file could not be processed\n")
    assert [line.split(",")[0] for line in (tmp_path / "out" / "measurements.csv").read_text().splitlines()] == [
        "image", "ok.png"]


def test_file_names_that_argparse_refuses_reach_the_terminal_escaped(tmp_path, capsys):
    # moleseg info *.keras in a downloaded folder: the second file's name, an unrecognized argument, was printed by
    # argparse before the streams were wrapped: raw, clearing the screen
    names = [str(tmp_path / "a.keras"), str(tmp_path / "b\x1b[2J\x1b]0;x\a.keras")]
    with pytest.raises(SystemExit) as stopped:
        main(["info", *names])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "\x1b" not in error and "\a" not in error
    assert error.endswith(f"error: unrecognized arguments: {tmp_path}/b\\x1b[2J\\x1b]0;x\\x07.keras\n")


@pytest.mark.parametrize(("names", "escaped", "shown"), [
    # a Japanese user's photograph named with an ideographic space (U+3000), a macOS screenshot's narrow no-break
    # space before AM (U+202F), a no-break space (U+00A0): spaces that move no cursor, printed as \u3000, \u202f,
    # \xa0, so that the name in a message was not the file's any more; line separators are still escaped
    (["写真\u3000001.png", "Screenshot 2024-01-01 at 10.00.00\u202fAM.png", "grain\xa0de beauté.png"],
     "a\u2028b\u2029c\u3000d", "a\\u2028b\\u2029c\u3000d"),
    # "moles" in Persian with its zero-width non-joiner (U+200C), a Malayalam conjunct's and an emoji sequence's
    # zero-width joiner (U+200D), printed as \u200c, \u200d; direction marks and overrides are still escaped
    (["\u062e\u0627\u0644\u200c\u0647\u0627.png", "\u0d28\u0d4d\u200d.png", "\U0001f469\u200d\u2695\ufe0f.png"],
     "a\u200eb\u202ec\u2066d\u200ce", "a\\u200eb\\u202ec\\u2066d\u200ce"),
])
def test_file_names_in_other_scripts_are_printed_as_they_are(tmp_path, capsys, names, escaped, shown):
    from moleseg.core.terminal import terminal_text

    assert main(["predict", "--model", "classical", "--quiet", "--out", str(tmp_path / "out"),
                 *(str(tmp_path / name) for name in names)]) == 2
    assert capsys.readouterr().err.endswith(
        "error: no image files to process (" + "; ".join(f"{tmp_path / name}: not found" for name in names) + ")\n")
    assert terminal_text(escaped) == shown
