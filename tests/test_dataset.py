"""The user's own dataset: saved pairs are read back by the pairing rules, with their provenance."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from moleseg.core.dataset import image_sha256, pair_paths, read_provenance, save_pair
from moleseg.core.imageio import read_image, read_mask
from moleseg.core.imagewrite import write_png
from moleseg.core.pairing import pair_folders


def test_saved_pairs_are_read_back_by_pair_folders(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    other = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    lesion = np.zeros((30, 40), bool)
    lesion[5:20, 10:30] = True
    first = save_pair(tmp_path / "mine", "ISIC 1.jpg", image, lesion, {"model": "m", "corrected_by_hand": True})
    second = save_pair(tmp_path / "mine", "ISIC 1.jpg", other, ~lesion, {"model": "m", "corrected_by_hand": False})
    # another image under a taken name: a new name, the first pair untouched
    assert (first.image.name, second.image.name) == ("ISIC_1.jpg.png", "ISIC_1.jpg_2.png")
    assert not first.replaced and not second.replaced
    report = pair_folders(tmp_path / "mine" / "images", tmp_path / "mine" / "masks")
    assert [(p.image.name, p.mask.name) for p in report.pairs] == [(first.image.name, first.mask.name),
                                                                  (second.image.name, second.mask.name)]
    assert not report.unpaired_images and not report.unpaired_masks
    np.testing.assert_array_equal(read_image(first.image), image)
    np.testing.assert_array_equal(read_mask(first.mask), lesion)
    record = json.loads(first.provenance.read_text())
    assert record["model"] == "m" and record["corrected_by_hand"] is True and record["size"] == [40, 30]
    assert record["mask"] == f"masks/{first.mask.name}" and "saved" in record
    assert record["image_sha256"] == image_sha256(image)
    np.testing.assert_array_equal(read_image(second.image), other)
    np.testing.assert_array_equal(read_mask(second.mask), ~lesion)
    assert not list((tmp_path / "mine").rglob("*.tmp"))


def test_the_same_image_saved_again_replaces_its_mask_whatever_its_name(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    lesion = np.zeros((30, 40), bool)
    lesion[5:20, 10:30] = True
    first = save_pair(tmp_path / "mine", "IMD010", image, lesion, {"status": "accepted as is"})
    again = save_pair(tmp_path / "mine", "IMD010", image.copy(), ~lesion, {"status": "corrected by hand"})
    renamed = save_pair(tmp_path / "mine", "copy of IMD010", image.copy(), lesion, {"status": "corrected by hand"})
    assert again.replaced and renamed.replaced and not first.replaced
    assert again == renamed.__class__(first.image, first.mask, first.provenance, True) == renamed
    report = pair_folders(tmp_path / "mine" / "images", tmp_path / "mine" / "masks")
    assert [p.image.name for p in report.pairs] == ["IMD010.png"]  # one entry, no conflicting copy
    np.testing.assert_array_equal(read_mask(first.mask), lesion)  # the last save's mask
    assert sorted(p.name for p in (tmp_path / "mine" / "provenance").iterdir()) == ["IMD010.json"]
    assert json.loads(first.provenance.read_text())["status"] == "corrected by hand"
    assert not [p for p in (tmp_path / "mine").rglob("*") if p.name.startswith(".moleseg-tmp")]


def test_an_image_saved_before_hashes_were_recorded_is_recognised_by_its_pixels(tmp_path):
    image = np.random.default_rng(2).integers(0, 256, (20, 25, 3), dtype=np.uint8)
    for sub in ("images", "masks"):
        (tmp_path / "d" / sub).mkdir(parents=True)
    write_png(tmp_path / "d" / "images" / "old.png", image)  # no provenance record, no hash
    write_png(tmp_path / "d" / "masks" / "old.png", np.zeros((20, 25), bool))
    lesion = np.zeros((20, 25), bool)
    lesion[4:9, 5:15] = True
    saved = save_pair(tmp_path / "d", "new name", image, lesion, {})
    assert saved.replaced and saved.mask.name == "old.png"
    np.testing.assert_array_equal(read_mask(saved.mask), lesion)
    assert sorted(p.name for p in (tmp_path / "d" / "images").iterdir()) == ["old.png"]


def test_a_pairs_files_and_its_provenance_record_are_named_and_read_in_one_place(tmp_path):
    image = np.full((6, 8, 3), 50, np.uint8)
    saved = save_pair(tmp_path / "d", "a", image, np.ones((6, 8), bool), {"corrected_by_hand": True})
    folder = tmp_path / "d"
    assert (saved.image, saved.mask, saved.provenance) == pair_paths(folder, "a") == (
        folder / "images" / "a.png", folder / "masks" / "a.png", folder / "provenance" / "a.json")
    record = read_provenance(tmp_path / "d", "a")
    assert record is not None and record["corrected_by_hand"] is True and record["image_sha256"] == image_sha256(image)
    assert read_provenance(tmp_path / "d", "missing") is None
    for stem, text in (("list", "[1, 2]"), ("broken", "{not json")):
        pair_paths(tmp_path / "d", stem)[2].write_text(text)
        assert read_provenance(tmp_path / "d", stem) is None  # not a record: none


def test_a_mask_of_another_size_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="differ in size"):
        save_pair(tmp_path / "d", "x", np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4), bool), {})
    assert not (tmp_path / "d").exists()


def test_two_sessions_saving_two_images_of_one_name_at_once_keep_both(tmp_path, monkeypatch):
    """Two sessions (two tabs of a user) saving different images named alike both found the name free and wrote
    the same files: the second save was lost (or, interleaved, one image got the other's mask), though both said
    they were saved. The second waits for the first now, and takes the next name."""
    from moleseg.core import dataset

    folder = tmp_path / "mine"
    rng = np.random.default_rng(0)
    first, second = (rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in range(2))
    lesion = np.zeros((8, 8), bool)
    lesion[2:6, 2:6] = True
    write = dataset.atomic_write
    other: list[threading.Thread] = []

    def meanwhile(path, data):  # the first save's first write: the other session saves now
        if not other:
            other.append(threading.Thread(target=save_pair, args=(folder, "mole", second, ~lesion, {})))
            other[0].start()
            other[0].join(timeout=1.0)  # finished here before; waits for this save's lock now
        return write(path, data)

    monkeypatch.setattr(dataset, "atomic_write", meanwhile)
    save_pair(folder, "mole", first, lesion, {})
    other[0].join()
    stems = sorted(path.stem for path in (folder / "images").glob("*.png"))
    assert stems == ["mole", "mole_2"]
    saved = {image_sha256(read_image(folder / "images" / f"{stem}.png")): read_mask(folder / "masks" / f"{stem}.png")
             for stem in stems}
    np.testing.assert_array_equal(saved[image_sha256(first)], lesion)
    np.testing.assert_array_equal(saved[image_sha256(second)], ~lesion)
