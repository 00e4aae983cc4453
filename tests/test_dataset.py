"""The user's own dataset: saved pairs are read back by the pairing rules, with their provenance."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moleseg.core.dataset import save_pair
from moleseg.core.imageio import read_image, read_mask
from moleseg.core.pairing import pair_folders


def test_saved_pairs_are_read_back_by_pair_folders(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    lesion = np.zeros((30, 40), bool)
    lesion[5:20, 10:30] = True
    first = save_pair(tmp_path / "mine", "ISIC 1.jpg", image, lesion, {"model": "m", "corrected_by_hand": True})
    second = save_pair(tmp_path / "mine", "ISIC 1.jpg", image, ~lesion, {"model": "m", "corrected_by_hand": False})
    assert (first.image.name, second.image.name) == ("ISIC_1.jpg.png", "ISIC_1.jpg_2.png")  # never overwritten
    report = pair_folders(tmp_path / "mine" / "images", tmp_path / "mine" / "masks")
    assert [(p.image.name, p.mask.name) for p in report.pairs] == [(first.image.name, first.mask.name),
                                                                  (second.image.name, second.mask.name)]
    assert not report.unpaired_images and not report.unpaired_masks
    np.testing.assert_array_equal(read_image(first.image), image)
    np.testing.assert_array_equal(read_mask(first.mask), lesion)
    record = json.loads(first.provenance.read_text())
    assert record["model"] == "m" and record["corrected_by_hand"] is True and record["size"] == [40, 30]
    assert record["mask"] == f"masks/{first.mask.name}" and "saved" in record
    assert not list((tmp_path / "mine").rglob("*.tmp"))


def test_a_mask_of_another_size_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="differ in size"):
        save_pair(tmp_path / "d", "x", np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4), bool), {})
    assert not (tmp_path / "d").exists()
