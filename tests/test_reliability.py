"""Reliability cases: every bad input answered with one clear line, nothing lost, nothing
half-written. Each test is one case a careful user found."""

from __future__ import annotations

import csv
import errno
import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from synthetic import lesion_dataset, mole_image

from moleseg.cli import main
from moleseg.cli.common import printable
from moleseg.core.imagewrite import write_png
from moleseg.engine.predictfiles import output_stems


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _read_csv(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


# -- predict: unique outputs, missing inputs, --out a file, full disk, control characters ----------


def test_output_stems_are_unique_and_keep_the_sub_folder(tmp_path):
    paths = [tmp_path / "a" / "IMD004.jpg", tmp_path / "a" / "IMD004.png", tmp_path / "b" / "IMD004.jpg",
             tmp_path / "b" / "other.png", tmp_path / "a" / "imd004.JPG"]
    assert output_stems(paths) == ["a/IMD004_jpg", "a/IMD004_png", "b/IMD004", "other", "a/imd004_jpg_2"]
    assert output_stems([tmp_path / "x.png"]) == ["x"]
    assert output_stems([]) == []


def test_predict_same_stem_in_two_folders_and_two_formats_writes_every_image(tmp_path, capsys):
    images, _ = lesion_dataset(tmp_path / "a", names=["IMD004.png"])
    shutil.copy(images / "IMD004.png", images / "IMD004.bmp")  # same stem, other format (read by content)
    other, _ = lesion_dataset(tmp_path / "b", names=["IMD004.png"])
    out = tmp_path / "out"
    code = main(["predict", "--model", "classical", "--quiet", "--out", str(out),
                 str(images / "IMD004.png"), str(images / "IMD004.bmp"), str(other / "IMD004.png")])
    assert code == 0, capsys.readouterr().err
    assert "3 images written" in capsys.readouterr().out
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*_overlay.png"))
    assert written == ["a/images/IMD004_bmp_overlay.png", "a/images/IMD004_png_overlay.png",
                       "b/images/IMD004_overlay.png"]
    rows = _read_csv(out / "measurements.csv")
    assert [row["source"] for row in rows] == [str(images / "IMD004.png"), str(images / "IMD004.bmp"),
                                               str(other / "IMD004.png")]
    assert [row["output"] for row in rows] == ["a/images/IMD004_png", "a/images/IMD004_bmp", "b/images/IMD004"]


def test_predict_one_missing_path_does_not_abort_the_others(tmp_path, capsys):
    images, _ = lesion_dataset(tmp_path / "set", n=2)
    out = tmp_path / "out"
    code = main(["predict", "--model", "classical", "--quiet", "--out", str(out),
                 str(images / "000.png"), str(tmp_path / "gone.png"), str(images / "001.png")])
    assert code == 2
    captured = capsys.readouterr()
    assert f"skipped {tmp_path / 'gone.png'}: not found" in captured.err
    assert _error_lines(captured.err) == ["error: 1 file could not be processed"]
    assert [row["image"] for row in _read_csv(out / "measurements.csv")] == ["000.png", "001.png"]


def test_predict_out_an_existing_file_is_one_clear_line(tmp_path, capsys):
    images, _ = lesion_dataset(tmp_path / "set", n=1)
    (tmp_path / "taken").write_text("mine")
    code = main(["predict", "--model", "classical", "--out", str(tmp_path / "taken"), str(images)])
    assert code == 2
    err = capsys.readouterr().err
    assert _error_lines(err) == [f"error: --out {tmp_path / 'taken'} is a file, not a folder: choose a folder name"]
    assert "Traceback" not in err
    assert (tmp_path / "taken").read_text() == "mine"


def _disk_full_on_the_second_image(monkeypatch) -> None:
    """``predict``'s fifth file write (the second image's second picture) fails as on a full disk."""
    import moleseg.core.atomic as atomic

    real_write = atomic.atomic_write
    calls = {"n": 0}

    def filling_disk(path, data, **options):
        calls["n"] += 1
        if calls["n"] == 5 and not Path(path).name.startswith("measurements"):  # second image, second file
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, data, **options)

    monkeypatch.setattr(atomic, "atomic_write", filling_disk)


def test_predict_full_disk_stops_cleanly_and_keeps_the_csv_of_what_was_written(tmp_path, capsys, monkeypatch):
    images, _ = lesion_dataset(tmp_path / "set", n=3)
    _disk_full_on_the_second_image(monkeypatch)
    out = tmp_path / "out"
    code = main(["predict", "--model", "classical", "--quiet", "--batch-size", "1", "--out", str(out), str(images)])
    assert code == 2
    captured = capsys.readouterr()
    assert _error_lines(captured.err) == [
        "error: the disk is full: 001.png and the images after it were not written (No space left on device)"]
    assert "1 image written" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["000_classes.png", "000_mask.png", "000_overlay.png",
                                                     "measurements.csv", "measurements.settings.json"]
    assert [row["image"] for row in _read_csv(out / "measurements.csv")] == ["000.png"]


def test_control_characters_in_file_names_are_printed_escaped(tmp_path, capsys):
    name = "evil\x1b[2J\nname.png"
    (tmp_path / name).write_bytes(b"not an image")
    write_png(tmp_path / "ok.png", np.full((40, 40, 3), 200, np.uint8))
    code = main(["predict", "--model", "classical", "--quiet", "--out", str(tmp_path / "out"), str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "evil\\x1b[2J\\nname.png" in err
    assert printable("café\tx") == "café\\tx"
    assert printable("plain name.png") == "plain name.png"


def test_predict_tiny_image_is_too_small_and_a_blank_one_says_no_lesion(tmp_path, capsys):
    write_png(tmp_path / "dot.png", np.full((1, 1, 3), 120, np.uint8))
    write_png(tmp_path / "skin.png", np.full((40, 40, 3), 200, np.uint8))
    code = main(["predict", "--model", "classical", "--out", str(tmp_path / "out"), str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "skipped dot.png: image too small: 1 x 1 px, at least 32 px per side are needed" in err
    assert "skin.png: no lesion found in this image" in err
    assert not list((tmp_path / "out").glob("dot*"))


def test_predict_csv_row_of_an_image_without_lesion_says_why_in_its_note(tmp_path):
    image, mask = mole_image(96, 112)
    write_png(tmp_path / "mole.png", image)
    write_png(tmp_path / "skin.png", np.full((40, 40, 3), 200, np.uint8))
    assert main(["predict", "--model", "classical", "--quiet", "--out", str(tmp_path / "out"), str(tmp_path)]) == 0
    rows = {row["image"]: row for row in _read_csv(tmp_path / "out" / "measurements.csv")}
    assert rows["skin.png"]["note"] == "no lesion found in this image" and rows["skin.png"]["area_px"] == ""
    assert rows["mole.png"]["note"] == ""
    assert abs(int(rows["mole.png"]["area_px"]) - int(mask.sum())) < 0.1 * mask.sum()


# -- evaluate / score: outputs checked first, summary never lost --------------------------------------


@pytest.mark.parametrize("command", ["evaluate", "score"])
@pytest.mark.parametrize("option", ["--json", "--csv"])
def test_output_file_a_folder_is_refused_before_the_evaluation(tmp_path, capsys, monkeypatch, command,
                                                               option):
    import moleseg.engine.evaluate as evaluate

    images, masks = lesion_dataset(tmp_path / "set", n=1)
    monkeypatch.setattr(evaluate, "segment_many", lambda *a, **k: pytest.fail("evaluation started"))
    monkeypatch.setattr(evaluate, "scores", lambda *a, **k: pytest.fail("scoring started"))
    inputs = (["evaluate", "--model", "classical", "--images", str(images)] if command == "evaluate"
              else ["score", "--pred", str(masks)])
    code = main(inputs + ["--masks", str(masks), option, str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert _error_lines(err) == [f"error: {option} {tmp_path} is a folder: give a file name"]
    code = main(inputs + ["--masks", str(masks), option, str(tmp_path / "no" / "such" / "r.json")])
    assert code == 2
    assert "does not exist" in _error_lines(capsys.readouterr().err)[0]


def test_a_write_failing_at_the_end_still_prints_the_summary(tmp_path, capsys, monkeypatch):
    import moleseg.engine.runs as runs

    _, masks = lesion_dataset(tmp_path / "set", n=2)
    pred = Path(shutil.copytree(masks, tmp_path / "pred"))

    def failing(path, value):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(runs, "write_json", failing)
    code = main(["score", "--pred", str(pred), "--masks", str(masks), "--json", str(tmp_path / "s.json"),
                 "--csv", str(tmp_path / "s.csv")])
    assert code == 2
    captured = capsys.readouterr()
    assert "(n = 2)" in captured.out and "1.0000" in captured.out
    assert _error_lines(captured.err) == [
        f"error: --json {tmp_path / 's.json'} could not be written (Read-only file system); "
        "the summary above is complete"]
    assert len(_read_csv(tmp_path / "s.csv")) == 2
    assert not list(tmp_path.glob(".moleseg-write-check-*"))


# -- masks: empty/full warned and counted, label images refused ---------------------------------------


def _degenerate_set(tmp_path: Path) -> tuple[Path, Path]:
    images, masks = lesion_dataset(tmp_path / "set", n=3)
    write_png(masks / "001.png", np.zeros((64, 64), bool))
    write_png(masks / "002.png", np.ones((64, 64), bool))
    return images, masks


def test_evaluate_warns_about_empty_and_full_masks_and_counts_them(tmp_path, capsys):
    images, masks = _degenerate_set(tmp_path)
    code = main(["evaluate", "--model", "classical", "--images", str(images), "--masks", str(masks),
                 "--json", str(tmp_path / "e.json")])
    assert code == 0
    err = capsys.readouterr().err
    assert "warning: 001.png: empty mask: no foreground pixel, all black (scored anyway: 001.png)" in err
    assert "warning: 002.png: full mask: every pixel is foreground" in err
    assert "warning: 1 empty and 1 full true masks were scored" in err
    import json

    summary = json.loads((tmp_path / "e.json").read_text())
    assert (summary["n"], summary["empty_masks"], summary["full_masks"]) == (3, 1, 1)


def test_score_and_prepare_warn_about_empty_and_full_masks(tmp_path, capsys):
    from moleseg.engine.evaluate import score_pairs
    from moleseg.core.pairing import pair_folders

    _, masks = _degenerate_set(tmp_path)
    pred = Path(shutil.copytree(masks, tmp_path / "pred"))
    summary, _, failures = score_pairs(pair_folders(pred, masks).pairs)
    assert (summary["empty_masks"], summary["full_masks"]) == (1, 1)
    assert [name for name, _ in failures.warnings] == ["001.png", "002.png"]
    code = main(["prepare", "--masks", str(masks), "--out", str(tmp_path / "t"), "--border-width-px", "2"])
    assert code == 0
    err = capsys.readouterr().err
    assert "warning: 001.png: empty mask" in err and "warning: 002.png: full mask" in err
    assert "warning: 1 empty and 1 full masks among them" in err


def test_label_image_masks_are_refused_with_how_to_convert(tmp_path, capsys):
    from moleseg.core.imageio import ImageReadError, read_mask

    labels = np.zeros((40, 40), np.uint8)
    labels[5:20, 5:20] = 1
    labels[22:35, 22:35] = 2
    with pytest.raises(ImageReadError, match=r"^l\.png: not a binary mask: a label image with values 0, 1, 2\. "
                                             r"Convert it to a 0/255 mask"):
        read_mask(_png_bytes(labels), name="l.png")
    assert read_mask(_png_bytes(labels == 1)).sum() == 225  # a 0/1 mask is still a mask
    images, masks = lesion_dataset(tmp_path / "set", n=2)
    write_png(masks / "001.png", labels)
    for command in (["evaluate", "--model", "classical", "--images", str(images), "--masks", str(masks)],
                    ["prepare", "--masks", str(masks), "--out", str(tmp_path / "t"), "--border-width-px", "2"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "skipped 001.png: not a binary mask" in err


def _png_bytes(array: np.ndarray) -> bytes:
    from moleseg.core.imagewrite import encode_png

    return encode_png(array.astype(np.uint8))


def test_training_warns_about_empty_and_full_masks(tmp_path):
    pytest.importorskip("tensorflow")
    from moleseg.core.pairing import pair_folders
    from moleseg.network.examples import TargetConfig, class_frequencies_of

    images, masks = _degenerate_set(tmp_path)
    lines: list[str] = []
    frequencies = class_frequencies_of(pair_folders(images, masks).pairs, TargetConfig(input_size=32),
                                       warn=lines.append)
    assert frequencies.shape == (3,) and abs(frequencies.sum() - 1) < 1e-9
    assert lines == ["warning: 001.png: empty mask: no foreground pixel, all black",
                     "warning: 002.png: full mask: every pixel is foreground, all white: an image, or an "
                     "inverted mask?",
                     "warning: 1 empty training mask and 1 full training mask"]


# -- images: too small, too large for the memory -------------------------------------------------------


def _png_7000_square() -> bytes:
    """A real 7000 x 7000 RGB PNG of one colour (about 150 kB)."""
    import zlib
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    side = 7000
    row = b"\x00" + bytes((215, 185, 175)) * side
    pixels = zlib.compress(row * side, 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def test_a_7000_px_png_is_refused_from_its_header_before_decoding(monkeypatch):
    from PIL import Image

    from moleseg.core.config import DEFAULT_MAX_PIXELS
    from moleseg.core.imageio import ImageReadError, read_image

    data = _png_7000_square()
    assert len(data) < 200_000 and 7000 * 7000 > DEFAULT_MAX_PIXELS
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("the pixels were decoded"))
    with pytest.raises(ImageReadError, match=r"^big\.png: image too large: 7000 x 7000 px = 49\.0 megapixels, "
                                             r"the limit is 25 megapixels"):
        read_image(data, name="big.png")


def test_the_pixel_limit_follows_the_available_memory(monkeypatch):
    import moleseg.core.config as config
    from moleseg.core.imageio import ImageReadError, read_image

    monkeypatch.setattr(config, "available_memory_bytes", lambda: 64 * 64 * config.ANALYSIS_BYTES_PER_PIXEL)
    assert config.max_image_pixels() == 64 * 64
    assert read_image(_png_bytes(np.zeros((64, 64), np.uint8))).shape == (64, 64, 3)
    with pytest.raises(ImageReadError, match="65 x 64 px"):
        read_image(_png_bytes(np.zeros((64, 65), np.uint8)))
    monkeypatch.setattr(config, "available_memory_bytes", lambda: None)
    assert config.max_image_pixels() == config.DEFAULT_MAX_PIXELS
    monkeypatch.setattr(config, "available_memory_bytes", lambda: 10**15)
    assert config.max_image_pixels() == config.DEFAULT_MAX_PIXELS


def test_analyse_images_refuses_a_tiny_image_before_predicting():
    from moleseg.core.config import MIN_IMAGE_SIDE_PX
    from moleseg.engine.batches import analyse_images

    class NoNetwork:
        name, n_classes = "none", 3

        def predict_probabilities(self, images):
            pytest.fail("predicted")

    with pytest.raises(ValueError, match=r"^image too small: 1 x 1 px, at least 32 px per side are needed$"):
        analyse_images(NoNetwork(), [np.zeros((1, 1, 3), np.uint8)])
    with pytest.raises(ValueError, match="image too small"):
        analyse_images(NoNetwork(), [np.zeros((MIN_IMAGE_SIDE_PX, MIN_IMAGE_SIDE_PX - 1, 3), np.uint8)])


# -- ZIP datasets: budgets over all members, odd names; only ArchiveError, naming the member ----------


def _zip(members: dict[str, bytes]) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _extract_refused(data: bytes, folder: Path, *words: str) -> str:
    from moleseg.engine.session import ArchiveError, extract_zip

    with pytest.raises(ArchiveError) as error:
        extract_zip(data, folder)
    message = str(error.value)
    for word in words:
        assert word in message, message
    assert not [p for p in folder.rglob("*") if p.is_file()]
    return message


@pytest.mark.parametrize("member, how", [("../up.png", "leaves the folder"), ("/etc/x.png", "is absolute"),
                                         ("a\x01.png", "has control characters")])
def test_an_unsafe_member_path_is_refused_naming_it_and_how(tmp_path, member, how):
    from moleseg.engine.session import unsafe_member

    message = _extract_refused(_zip({member: b"x"}), tmp_path / "x")
    assert message == str(unsafe_member(member, how)) == f"unsafe path in the archive: {member!r} {how}"


def test_many_small_zero_members_are_refused_by_the_total_ratio(tmp_path):
    data = _zip({f"images/{i:03d}.png": bytes(1024 * 1024) for i in range(300)})
    assert len(data) < 400_000  # a 342 kB upload that would unpack to 315 MB
    message = _extract_refused(data, tmp_path / "x", "compressed", "times together", "refused as a possible zip bomb")
    assert "'images/" in message


def test_the_total_size_budget_counts_every_member(tmp_path):
    from moleseg.engine.session import ArchiveError, extract_zip

    data = _zip({f"m/{i}.bin": bytes(range(256)) * 8 for i in range(5)})  # 5 x 2 kB
    with pytest.raises(ArchiveError, match=r"would unpack to more than .* \(at 'm/2\.bin'\)"):
        extract_zip(data, tmp_path / "w", max_bytes=5000)
    assert not [p for p in (tmp_path / "w").rglob("*") if p.is_file()]
    assert len(extract_zip(data, tmp_path / "ok").files) == 5


def test_invalid_utf8_name_flagged_utf8_is_an_archive_error_naming_it(tmp_path):
    data = _zip({"images/badé.png": b"x"}).replace("badé".encode(), b"bad\xff\xfe")
    assert data.count(b"bad\xff\xfe") == 2
    _extract_refused(data, tmp_path / "x", "images/bad\\\\xff\\\\xfe.png", "not valid UTF-8")


def test_a_300_character_name_is_an_archive_error_naming_it(tmp_path):
    name = "images/" + "n" * 300 + ".png"
    _extract_refused(_zip({name: b"x"}), tmp_path / "x", "'images/nnnn", "a name of 304 bytes; at most 255")


def test_a_2100_level_path_is_an_archive_error_naming_it(tmp_path):
    name = "/".join(["d"] * 2100) + "/x.png"
    _extract_refused(_zip({name: b"x"}), tmp_path / "x", "'d/d/d/d", "nested 2101 folders deep; at most 32")


def test_a_disk_error_while_extracting_is_an_archive_error_and_leaves_nothing(tmp_path, monkeypatch):
    import moleseg.engine.session as session

    data = _zip({"images/a.png": b"a" * 10, "images/b.png": b"b" * 10})
    real_open = session.os.open
    calls = {"n": 0}

    def full_disk(path, flags, mode=0o777):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, flags, mode)

    monkeypatch.setattr(session.os, "open", full_disk)
    _extract_refused(data, tmp_path / "x", "'images/b.png': cannot be written (No space left on device)")


# -- messages that misled -------------------------------------------------------------------------------


def test_resume_with_a_truncated_last_keras_says_it_is_damaged(tmp_path, capsys):
    pytest.importorskip("tensorflow")
    import json

    from moleseg.network.build import ModelConfig
    from moleseg.network.train import TrainConfig

    images, masks = lesion_dataset(tmp_path / "set", n=4, size=48)
    run = tmp_path / "run"
    run.mkdir()
    config = TrainConfig(images=[str(images)], masks=[str(masks)], model=ModelConfig(input_size=32), epochs=2,
                         batch_size=2, weights="none", validation_split=0.5)
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    (run / "state.json").write_text(json.dumps({"epoch": 1, "best_val_fm": 0.5, "best_epoch": 1}))
    whole = _zip({"model.weights.h5": np.random.default_rng(0).bytes(20_000)})
    (run / "last.keras").write_bytes(whole[: len(whole) // 2])  # a copy cut in the middle
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert _error_lines(err) == ["error: last.keras: damaged or not a moleseg/Keras model file (a .keras file is a "
                                 "complete ZIP archive; this one is not: truncated, or another kind of file)"]
    assert "not found" not in err


def test_resume_with_a_corrupt_config_json_names_the_file(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"epochs": 3, "images": [')
    assert main(["train", "--out", str(run), "--resume"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith(f"error: {run / 'config.json'}: damaged, not a readable JSON file")


def test_train_function_resume_with_a_corrupt_config_json_names_the_file(tmp_path):
    pytest.importorskip("tensorflow")
    from moleseg.network.train import TrainConfig, TrainingError, train

    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(TrainingError,
                       match=r"config\.json: damaged, not a readable JSON file .*; the run cannot be resumed$"):
        train(TrainConfig(images=[str(tmp_path)], masks=[str(tmp_path)]), tmp_path, resume=True)


@pytest.mark.slow
def test_weights_that_are_not_a_model_and_a_2_class_model_for_3_classes_are_refused(tmp_path):
    pytest.importorskip("tensorflow")
    import json

    from moleseg.core.modelinfo import ModelFileError
    from moleseg.network.build import ModelConfig, build_model

    (tmp_path / "notmodel.keras").write_text("hello")
    with pytest.raises(ModelFileError, match=r"^notmodel\.keras: damaged or not a moleseg/Keras model file"):
        build_model(ModelConfig(input_size=32), weights=tmp_path / "notmodel.keras")
    two = tmp_path / "cells.keras"
    two.write_bytes(_zip({"moleseg.json": json.dumps({"n_classes": 2}).encode()}))
    with pytest.raises(ValueError, match=r"^cells\.keras is a 2-class model: it cannot start a 3-class training "
                                         r"\(use --classes 2, or --weights imagenet or none\)$"):
        build_model(ModelConfig(input_size=32, n_classes=3), weights=two)


# -- output folders and numeric options checked before any work (review h1) ---------------------------


def _unwritable(monkeypatch, folder: Path) -> None:
    """Make ``folder`` refuse new files as a read-only folder does (even for root, who ignores chmod)."""
    import os

    real = os.open

    def refusing(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and Path(path).resolve().parent == folder.resolve():
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing)


@pytest.mark.parametrize("command", ["predict", "prepare"])
def test_a_read_only_output_folder_is_one_line_before_any_image(tmp_path, capsys, monkeypatch, command):
    images, masks = lesion_dataset(tmp_path / "set", n=3)
    out = tmp_path / "locked"
    out.mkdir()
    _unwritable(monkeypatch, out)
    arguments = (["predict", "--model", "classical", "--out", str(out), str(images)] if command == "predict"
                 else ["prepare", "--masks", str(masks), "--out", str(out), "--border-width-px", "2"])
    code = main(arguments)
    assert code == 2
    err = capsys.readouterr().err
    assert _error_lines(err) == [f"error: --out {out}: cannot write into {out} (Permission denied)"]
    assert "skipped" not in err and ".moleseg-tmp" not in err
    assert list(out.iterdir()) == []


def test_predict_with_a_model_that_cannot_load_leaves_no_output_folder(tmp_path, capsys):
    images, _ = lesion_dataset(tmp_path / "set", n=1)
    code = main(["predict", "--model", str(tmp_path / "absent.keras"), "--out", str(tmp_path / "out"), str(images)])
    assert code == 2
    assert "absent.keras" in _error_lines(capsys.readouterr().err)[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["predict", "prepare", "merge"])
def test_a_command_that_writes_nothing_leaves_no_output_folder(tmp_path, capsys, command):
    """Before, ``--out`` (and its missing parents) was made first and left behind, empty, when every image
    failed or the shards' manifests were refused."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "bad.png").write_bytes(b"not a png")
    (inputs / "shard-1-of-1.json").write_text("{")
    out = tmp_path / "new" / "out"
    arguments = {"predict": ["predict", "--model", "classical", "--out", str(out), str(inputs / "bad.png")],
                 "prepare": ["prepare", "--masks", str(inputs), "--out", str(out), "--border-width-px", "2"],
                 "merge": ["merge", str(inputs), "--out", str(out)]}[command]
    assert main(arguments) == 2
    assert ("shard-1-of-1.json" if command == "merge" else "bad.png") in capsys.readouterr().err  # named
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "arguments, words",
    [
        (["evaluate", "--model", "classical", "--images", "{set}/images", "--masks", "{set}/masks", "--batch-size",
          "-1"], "argument --batch-size: must be at least 1, not -1"),
        (["predict", "--model", "classical", "--out", "{tmp}/out", "--batch-size", "257", "{set}/images"],
         "argument --batch-size: must be at most 256, not 257"),
        (["evaluate", "--model", "classical", "--images", "{set}/images", "--masks", "{set}/masks", "--batch-size",
          "0"], "argument --batch-size: must be at least 1, not 0"),
        (["predict", "--model", "classical", "--out", "{tmp}/out", "--batch-size", "0", "{set}/images"],
         "argument --batch-size: must be at least 1, not 0"),
        (["predict", "--model", "classical", "--out", "{tmp}/out", "--pixel-size-mm", "0", "{set}/images"],
         "argument --pixel-size-mm: the pixel size must be above 0 and at most 10 mm per px, not 0"),
        (["predict", "--model", "classical", "--out", "{tmp}/out", "--pixel-size-mm", "nan", "{set}/images"],
         "argument --pixel-size-mm: the pixel size must be above 0 and at most 10 mm per px, not nan"),
        (["predict", "--model", "classical", "--out", "{tmp}/out", "--pixel-size-mm", "20", "{set}/images"],
         "argument --pixel-size-mm: the pixel size must be above 0 and at most 10 mm per px, not 20"),
        (["prepare", "--masks", "{set}/masks", "--out", "{tmp}/out", "--border-width-px", "-3"],
         "argument --border-width-px: must be at least 1, not -3"),
    ],
)
def test_bad_numbers_are_usage_errors_naming_the_option_and_write_nothing(tmp_path, capsys, arguments, words):
    lesion_dataset(tmp_path / "set", n=2)
    with pytest.raises(SystemExit) as stopped:
        main([a.replace("{tmp}", str(tmp_path)).replace("{set}", str(tmp_path / "set")) for a in arguments])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_evaluate_skips_an_image_too_small_to_predict_as_predict_does(tmp_path, capsys):
    images, masks = lesion_dataset(tmp_path / "set", n=2)
    write_png(images / "strip.png", np.full((20, 400, 3), 200, np.uint8))
    strip = np.zeros((20, 400), bool)
    strip[5:15, 100:300] = True
    write_png(masks / "strip.png", strip)
    code = main(["evaluate", "--model", "classical", "--images", str(images), "--masks", str(masks),
                 "--csv", str(tmp_path / "e.csv")])
    assert code == 2
    captured = capsys.readouterr()
    assert "(n = 2)" in captured.out
    assert "skipped strip.png: image too small: 400 x 20 px, at least 32 px per side are needed" \
        in captured.err
    assert [row["image"] for row in _read_csv(tmp_path / "e.csv")] == ["000.png", "001.png"]


def test_evaluate_pairs_refuses_a_batch_size_under_1(tmp_path):
    from moleseg.core.classical import ClassicalSegmenter
    from moleseg.core.pairing import pair_folders
    from moleseg.engine.evaluate import evaluate_pairs

    images, masks = lesion_dataset(tmp_path / "set", n=2)
    with pytest.raises(ValueError, match="batch size must be at least 1, not -1"):
        evaluate_pairs(ClassicalSegmenter(), pair_folders(images, masks).pairs, batch_size=-1)


def test_predict_out_an_input_folder_is_refused_before_its_results_mix_with_the_images(tmp_path, capsys):
    images, masks = lesion_dataset(tmp_path / "set", n=2)
    shutil.copy(masks / "000.png", images / "000_mask.png")  # a dataset kept in one folder: the true mask
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    code = main(["predict", "--model", "classical", "--quiet", "--out", str(images), str(images)])
    assert code == 2
    assert _error_lines(capsys.readouterr().err) == [
        f"error: --out {images} is also an input folder: its results would mix with the images there (a true "
        "<name>_mask.png replaced, the results read as images by the next run); choose another folder"]
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before


def test_predict_an_image_given_twice_is_segmented_once(tmp_path, capsys):
    images, _ = lesion_dataset(tmp_path / "set", n=2)
    out = tmp_path / "out"
    code = main(["predict", "--model", "classical", "--quiet", "--out", str(out), str(images / "000.png"),
                 str(images / "000.png"), str(images)])  # the file, again, and its folder
    assert code == 0, capsys.readouterr().err
    assert "2 images written" in capsys.readouterr().out
    rows = _read_csv(out / "measurements.csv")
    assert [(row["image"], row["output"]) for row in rows] == [("000.png", "000"), ("001.png", "001")]
    assert sorted(p.name for p in out.glob("*_overlay.png")) == ["000_overlay.png", "001_overlay.png"]


@pytest.mark.parametrize("command", ["info", "predict"])
def test_a_folder_given_as_the_model_is_named_a_folder_not_missing(tmp_path, capsys, command):
    images, _ = lesion_dataset(tmp_path / "set", n=1)
    run = tmp_path / "run"
    run.mkdir()  # e.g. a run folder instead of its model.keras
    arguments = ["info", str(run)] if command == "info" else [
        "predict", "--model", str(run), "--out", str(tmp_path / "out"), str(images)]
    assert main(arguments) == 2
    assert _error_lines(capsys.readouterr().err) == [f"error: {run}: a folder, not a .keras model file"]


def _ctrl_c_on_the_third_image(monkeypatch) -> None:
    """Ctrl-C while the classical segmenter works on the third image of a --batch-size 1 run: the first was
    handed to the writer, the second not yet."""
    from moleseg.core.classical import ClassicalSegmenter

    real_predict = ClassicalSegmenter.predict_probabilities
    calls = {"n": 0}

    def pressing_ctrl_c(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_predict(self, batch)

    monkeypatch.setattr(ClassicalSegmenter, "predict_probabilities", pressing_ctrl_c)


def test_predict_interrupted_keeps_the_table_of_what_was_written(tmp_path, capsys, monkeypatch):
    # Ctrl-C used to leave the pictures of the images done with no measurements.csv (nor its sidecar)
    images, _ = lesion_dataset(tmp_path / "set", n=3, size=48)
    _ctrl_c_on_the_third_image(monkeypatch)
    out = tmp_path / "out"
    code = main(["predict", "--model", "classical", "--quiet", "--batch-size", "1", "--out", str(out), str(images)])
    captured = capsys.readouterr()
    assert code == 130
    assert captured.err.splitlines()[-1] == "interrupted"
    assert "1 image written" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["000_classes.png", "000_mask.png", "000_overlay.png",
                                                     "measurements.csv", "measurements.settings.json"]
    assert [row["image"] for row in _read_csv(out / "measurements.csv")] == ["000.png"]


@pytest.mark.parametrize("stop", ["ctrl-c", "full-disk"])
def test_predict_shard_stopped_early_writes_no_manifest_so_merge_refuses_it(tmp_path, capsys, monkeypatch, stop):
    # Ctrl-C or a full disk on a shard keeps the table of what was written, but not the manifest that says the
    # shard finished: merge took it as a finished shard, its inputs not yet reached listed as failed ("not
    # processed")
    images, _ = lesion_dataset(tmp_path / "set", n=3, size=48)
    (_ctrl_c_on_the_third_image if stop == "ctrl-c" else _disk_full_on_the_second_image)(monkeypatch)
    out = tmp_path / "out"
    code = main(["predict", "--model", "classical", "--quiet", "--batch-size", "1", "--shard", "1/1",
                 "--out", str(out), str(images)])
    assert code == (130 if stop == "ctrl-c" else 2)
    assert "1 image written" in capsys.readouterr().out
    assert [row["image"] for row in _read_csv(out / "measurements.shard-1-of-1.csv")] == ["000.png"]
    assert not (out / "shard-1-of-1.json").exists()
    assert main(["merge", "--out", str(tmp_path / "merged"), str(out)]) == 2
    assert not (tmp_path / "merged" / "measurements.csv").exists()
