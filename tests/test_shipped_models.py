"""The shipped models: present, small, fast enough, and their cards tell the truth.

The card check runs ``moleseg evaluate`` on the shared test sets and compares the mean FM with the
number written in ``models/<name>.json`` and quoted in ``models/<name>.md`` (within 0.005).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from moleseg.core.config import MODELS_DIR

SHIPPED = ("dermoscopy", "cells")
pytestmark = pytest.mark.slow


def _model(name: str) -> Path:
    path = MODELS_DIR / f"{name}.keras"
    if not path.is_file():
        pytest.fail(f"{path} is missing: the app and the CLI use it by default")
    return path


def _record(name: str) -> dict:
    return json.loads((MODELS_DIR / f"{name}.json").read_text())


@pytest.mark.parametrize("name", SHIPPED)
def test_model_file_is_small_and_self_describing(name: str) -> None:
    from moleseg.core.modelinfo import read_model_info

    path = _model(name)
    assert path.stat().st_size <= 20 * 2**20
    info = read_model_info(path)
    assert info["n_classes"] == (3 if name == "dermoscopy" else 2)
    assert info["input_size"] % 16 == 0
    assert set(info["cleanup"]) >= {"rule", "closing_radius_px", "border_width_px", "largest_component"}
    # the decision was calibrated on validation images, and the chosen row is the best of its table
    calibration = info["calibration"]
    assert calibration["n_images"] > 0 and calibration["fm"] >= calibration["baseline_fm"]
    assert calibration["fm"] == pytest.approx(max(row["fm"] for row in calibration["table"]), abs=0.002)
    assert info["lesion_threshold"] is None or 0.0 < info["lesion_threshold"] < 1.0


@pytest.mark.parametrize("name", SHIPPED)
def test_confidence_threshold_is_stored_recorded_and_quoted(name: str) -> None:
    from moleseg.core.config import DEFAULT_CHECK_SHARE
    from moleseg.core.modelinfo import read_info

    info = read_info(_model(name))
    record = _record(name)["confidence"]
    assert info.confidence_threshold == pytest.approx(record["threshold"])
    validation = record["validation"]
    marked = [row for row in validation["per_image"] if row["check_border"]]
    # the share asked for, rounded up to whole images, and marked by the stored threshold
    assert len(marked) == math.ceil(DEFAULT_CHECK_SHARE * validation["n_images"])
    assert all(row["confidence"] < info.confidence_threshold for row in marked)
    assert validation["n_bad_caught"] == sum(row["fm"] < validation["bad_fm"] for row in marked)
    card = (MODELS_DIR / f"{name}.md").read_text()
    assert f"{record['threshold']:.3f}" in card
    assert f"{validation['n_bad_caught']} of the {validation['n_bad']}" in card or \
        (validation["n_bad_caught"] == validation["n_bad"] == 2 and "**both** images" in card)


@pytest.mark.parametrize("name", SHIPPED)
def test_card_quotes_the_recorded_numbers(name: str) -> None:
    card = (MODELS_DIR / f"{name}.md").read_text()
    record = _record(name)
    for folder, result in record["evaluation"].items():
        mean_fm = result["model"]["fm"]["mean"]
        assert f"{mean_fm:.3f}" in card, f"{name}.md does not quote the mean FM {mean_fm:.3f} on {folder}"
    assert "not a medical device" in card.lower()
    assert re.search(r"make models", card)


@pytest.mark.parametrize("name", SHIPPED)
def test_fresh_evaluation_matches_card(name: str, tmp_path: Path, capsys: pytest.CaptureFixture, require_shared) -> None:
    from moleseg.cli import main
    from moleseg.tools.shipped_recipes import split_folders

    data = require_shared()
    record = _record(name)
    _, test_dirs = split_folders(name, data, split_root=tmp_path / "split")
    for folder, test_dir in zip(record["evaluation"], test_dirs):
        out = tmp_path / f"{name}.json"
        status = main(["evaluate", "--model", str(_model(name)), "--images", str(test_dir / "images"),
                       "--masks", str(test_dir / "masks"), "--json", str(out), "--quiet", "--no-baseline"])
        assert status == 0
        fresh = json.loads(out.read_text())["fm"]["mean"]
        assert fresh == pytest.approx(record["evaluation"][folder]["model"]["fm"]["mean"], abs=0.005)
        printed = capsys.readouterr().out
        assert f"{fresh:.4f}" in printed


def test_dermoscopy_meets_its_target_on_seed_test() -> None:
    record = _record("dermoscopy")
    result = record["evaluation"]["moles/seed/test"]
    assert result["model"]["fm"]["mean"] >= 0.93
    assert result["model"]["fm"]["mean"] > result["classical"]["fm"]["mean"]


def test_shipped_model_draws_a_real_lesion(require_shared) -> None:
    """A real PH2 image at its own size: the lesion is found, with a border band inside it."""
    from moleseg.core.imageio import read_image, read_mask
    from moleseg.core.metrics import scores
    from moleseg.engine.segmenter import segment
    from moleseg.network.loading import load_segmenter

    folder = require_shared("moles/ph2")
    image = read_image(folder / "images" / "IMD004.jpg")
    truth = read_mask(folder / "masks" / "IMD004_lesion.png")
    result = segment(load_segmenter(_model("dermoscopy")), image)
    assert result.lesion.shape == image.shape[:2]
    assert result.border.any() and not (result.border & ~result.lesion).any()
    assert scores(result.lesion, truth)["fm"] > 0.85
