"""Evaluate says when it is not a test: evaluated images that the model was trained on."""

from __future__ import annotations

import json
import shutil

from synthetic import make_dataset, mole_image, png_bytes
from moleseg import cli
from moleseg.cli import scoring
from moleseg.core.classical import ClassicalSegmenter
from moleseg.engine.overlap import file_sha256, training_overlap


def test_same_path_and_same_content_are_found(tmp_path):
    train = make_dataset(tmp_path / "train", count=4)
    copied = tmp_path / "copies"
    copied.mkdir()
    shutil.copy(train / "images" / "m1.png", copied / "renamed.png")
    new = tmp_path / "new.png"
    new.write_bytes(png_bytes(mole_image(seed=99)[0]))
    info = {"training": {"images": [str(train / "images")]}}
    overlap = training_overlap(info, [train / "images" / "m0.png", copied / "renamed.png", new])
    assert overlap.images == (train / "images" / "m0.png", copied / "renamed.png")
    assert (overlap.count, overlap.total, overlap.known) == (2, 3, True)
    assert overlap.warning().startswith("2 of 3 evaluated images were used to train this model")
    assert training_overlap(info, [new]).count == 0


def test_recorded_hashes_work_without_the_folders(tmp_path):
    train = make_dataset(tmp_path / "train", count=2)
    hashes = [file_sha256(train / "images" / f"m{i}.png") for i in range(2)]
    moved = tmp_path / "moved.png"
    shutil.move(train / "images" / "m0.png", moved)
    info = {"training": {"images": [str(tmp_path / "gone")], "image_sha256": hashes}}
    overlap = training_overlap(info, [moved])
    assert overlap.count == 1 and overlap.known


def test_a_model_without_training_data_is_unknown(tmp_path):
    train = make_dataset(tmp_path / "train", count=1)
    overlap = training_overlap({}, [train / "images" / "m0.png"])
    assert not overlap.known and overlap.count == 0 and overlap.warning() is None


def test_cli_evaluate_warns_and_reports_the_count(tmp_path, monkeypatch, capsys):
    data = make_dataset(tmp_path / "data", count=3)
    segmenter = ClassicalSegmenter()
    segmenter.info = {**segmenter.info, "training": {"images": [str(data / "images")]}}
    monkeypatch.setattr(scoring, "open_model", lambda spec, tta=None: segmenter)
    code = cli.main(["evaluate", "--model", "classical", "--images", str(data / "images"),
                     "--masks", str(data / "masks"), "--json", str(tmp_path / "e.json"), "--quiet"])
    assert code == 0
    captured = capsys.readouterr()
    assert "evaluated images the model was trained on: 3 of 3" in captured.out
    assert captured.err.count("were used to train this model") == 1  # said once, after the scores
    summary = json.loads((tmp_path / "e.json").read_text())
    assert summary["training_overlap"]["count"] == 3
    assert summary["training_overlap"]["total"] == 3
