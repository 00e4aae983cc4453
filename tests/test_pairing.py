"""moleseg.core.pairing: every naming rule, every problem report, and the real data sets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from moleseg.core.imagewrite import encode_png
from moleseg.core.pairing import (
    RULE_SAME_NAME,
    RULE_SORTED,
    RULE_SUFFIX,
    RULE_TOKEN,
    Pair,
    PairingError,
    PairingReport,
    list_images,
    natural_key,
    pair_folders,
)


def make(folder: Path, *names: str, size: tuple[int, int] = (6, 4)) -> None:
    """Write tiny PNGs (whatever the extension: only headers are read) of ``size`` = (width, height)."""
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    data = encode_png(np.zeros((height, width), np.uint8))
    for name in names:
        (folder / name).write_bytes(data)


def pairs_by_name(report: PairingReport) -> dict[str, tuple[str, str]]:
    return {p.image.name: (p.mask.name, p.rule) for p in report.pairs}


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "images", tmp_path / "masks"


# --------------------------------------------------------------------------------------------------
# Rules


def test_same_name(dirs: tuple[Path, Path]) -> None:
    images, masks = dirs
    make(images, "001.jpg", "002.jpg", "B.JPG")
    make(masks, "001.jpg", "002.png", "b.png")
    report = pair_folders(images, masks)
    assert pairs_by_name(report) == {
        "001.jpg": ("001.jpg", RULE_SAME_NAME),
        "002.jpg": ("002.png", RULE_SAME_NAME),
        "B.JPG": ("b.png", RULE_SAME_NAME),
    }
    assert report.ok and not report.warnings and not report.size_mismatches
    assert all(p.image_size == (6, 4) and p.mask_size == (6, 4) for p in report.pairs)
    assert report.rule_counts == {RULE_SAME_NAME: 3}
    assert report.summary() == "3 pairs (3 by same name).\nNo problems found."


@pytest.mark.parametrize(
    ("image", "mask"),
    [
        ("ISIC_0000001.jpg", "ISIC_0000001_segmentation.png"),
        ("ISIC_0000001.jpg", "ISIC_0000001_Segmentation.png"),
        ("IMD004.jpg", "IMD004_lesion.png"),
        ("x.png", "x_mask.png"),
        ("x.png", "x-MASK.png"),
        ("x.png", "x_gt.png"),
        ("x.png", "x_label.tif"),
        ("x.png", "x_labels.bmp"),
        ("x.png", "x.seg.png"),
        ("x.png", "x ground truth.png"),
        ("x.png", "x_ground_truth.png"),
        ("x.png", "x_lesion_mask.png"),
        ("x.png", "mask_x.png"),
        ("x.png", "GT-x.png"),
        ("x_image.jpg", "x_mask.png"),
        ("img_7.jpg", "7_seg.png"),
    ],
)
def test_mask_suffix(dirs: tuple[Path, Path], image: str, mask: str) -> None:
    images, masks = dirs
    make(images, image, "other.jpg")
    make(masks, mask, "other.png")
    report = pair_folders(images, masks)
    assert pairs_by_name(report)[image] == (mask, RULE_SUFFIX)
    assert report.ok


def test_token_swap_keeps_sequences_apart(dirs: tuple[Path, Path]) -> None:
    images, masks = dirs
    make(images, "b_frame_0_020.tiff", "b_frame_1_020.tiff", "a_frame_0_020.tiff", "img12.png")
    make(masks, "a_gt_0_020.tiff", "b_gt_1_020.tiff", "b_gt_0_020.tiff", "label12.png")
    report = pair_folders(images, masks)
    assert pairs_by_name(report) == {
        "a_frame_0_020.tiff": ("a_gt_0_020.tiff", RULE_TOKEN),
        "b_frame_0_020.tiff": ("b_gt_0_020.tiff", RULE_TOKEN),
        "b_frame_1_020.tiff": ("b_gt_1_020.tiff", RULE_TOKEN),
        "img12.png": ("label12.png", RULE_TOKEN),
    }
    assert report.ok


def test_sorted_order_with_a_warning(dirs: tuple[Path, Path]) -> None:
    images, masks = dirs
    make(images, "photo_alpha.jpg", "photo_beta.jpg", "photo_gamma.jpg")
    make(masks, "m1.png", "m2.png", "m3.png")
    report = pair_folders(images, masks)
    assert pairs_by_name(report) == {
        "photo_alpha.jpg": ("m1.png", RULE_SORTED),
        "photo_beta.jpg": ("m2.png", RULE_SORTED),
        "photo_gamma.jpg": ("m3.png", RULE_SORTED),
    }
    assert len(report.warnings) == 1 and "sorted order" in report.warnings[0]
    assert not report.ok
    assert "3 by sorted order" in report.summary() and "check a few pairs by eye" in report.summary()


def test_sorted_order_is_natural(dirs: tuple[Path, Path]) -> None:
    images, masks = dirs
    make(images, "p2.jpg", "p10.jpg", "p1.jpg")
    make(masks, "q 1.png", "q 10.png", "q 2.png")
    report = pair_folders(images, masks)
    assert pairs_by_name(report) == {
        "p1.jpg": ("q 1.png", RULE_SORTED),
        "p2.jpg": ("q 2.png", RULE_SORTED),
        "p10.jpg": ("q 10.png", RULE_SORTED),
    }
    assert [p.image.name for p in report.pairs] == ["p1.jpg", "p2.jpg", "p10.jpg"]


def test_sorted_order_refused_when_numbers_disagree(dirs: tuple[Path, Path]) -> None:
    images, masks = dirs
    make(images, "a_1.jpg", "a_2.jpg")
    make(masks, "b_2.png", "b_3.png")
    with pytest.raises(PairingError) as excinfo:
        pair_folders(images, masks)
    message = str(excinfo.value)
    assert "no image could be paired" in message and "refused" in message
    assert "a_1.jpg" in message and "b_2.png" in message
    report = excinfo.value.report
    assert report is not None and not report.pairs
    assert [p.name for p in report.unpaired_images] == ["a_1.jpg", "a_2.jpg"]


def test_no_sorted_order_when_counts_differ(dirs: tuple[Path, Path]) -> None:
    images, masks = dirs
    make(images, "alpha.jpg", "beta.jpg")
    make(masks, "one.png")
    with pytest.raises(PairingError, match=r"2 images in .*1 mask in .*counts differ"):
        pair_folders(images, masks)


def test_no_sorted_order_for_leftovers_once_names_matched(dirs: tuple[Path, Path]) -> None:
    images, masks = dirs
    make(images, "a.jpg", "zzz.jpg")
    make(masks, "a.png", "qqq.png")
    report = pair_folders(images, masks)
    assert pairs_by_name(report) == {"a.jpg": ("a.png", RULE_SAME_NAME)}
    assert [p.name for p in report.unpaired_images] == ["zzz.jpg"]
    assert [p.name for p in report.unpaired_masks] == ["qqq.png"]
    summary = report.summary()
    assert "1 unpaired image: zzz.jpg" in summary and "1 unpaired mask: qqq.png" in summary


# --------------------------------------------------------------------------------------------------
# Never silently wrong


def test_mask_claimed_by_two_images_is_a_conflict(dirs: tuple[Path, Path]) -> None:
    images, masks = dirs
    make(images, "a.jpg", "a.png", "b.jpg")
    make(masks, "a_mask.png", "b.png")
    report = pair_folders(images, masks)
    assert pairs_by_name(report) == {"b.jpg": ("b.png", RULE_SAME_NAME)}
    assert len(report.conflicts) == 1
    assert "a.jpg, a.png" in report.conflicts[0] and "a_mask.png" in report.conflicts[0]
    assert [p.name for p in report.unpaired_images] == ["a.jpg", "a.png"]
    assert [p.name for p in report.unpaired_masks] == ["a_mask.png"]
    assert "1 ambiguous name:" in report.summary()
    assert not report.ok


def test_image_with_two_masks_is_a_conflict(dirs: tuple[Path, Path]) -> None:
    images, masks = dirs
    make(images, "a.jpg", "b.jpg")
    make(masks, "a.png", "a.tif", "b.png")
    report = pair_folders(images, masks)
    assert pairs_by_name(report) == {"b.jpg": ("b.png", RULE_SAME_NAME)}
    assert "none paired" in report.conflicts[0]
    assert [p.name for p in report.unpaired_masks] == ["a.png", "a.tif"]


def test_conflicts_alone_raise_with_the_report(dirs: tuple[Path, Path]) -> None:
    images, masks = dirs
    make(images, "x_image.jpg", "x_img.jpg")
    make(masks, "x_mask.png", "y_mask.png")
    with pytest.raises(PairingError, match="x_image.jpg, x_img.jpg") as excinfo:
        pair_folders(images, masks)
    assert excinfo.value.report is not None and excinfo.value.report.conflicts


# --------------------------------------------------------------------------------------------------
# Files, sizes, folders


def test_hidden_and_non_image_files_are_ignored(dirs: tuple[Path, Path]) -> None:
    images, masks = dirs
    make(images, "a.JPG", ".hidden.png", "._a.JPG", "b.jpeg")
    make(masks, "a.png", "._a.png", "b_mask.PNG")
    for folder in (images, masks):
        (folder / "notes.txt").write_text("hello")
        (folder / "Thumbs.db").write_bytes(b"\x00")
        (folder / "sub.png").mkdir()
    assert [p.name for p in list_images(images)] == ["a.JPG", "b.jpeg"]
    report = pair_folders(images, masks)
    assert pairs_by_name(report) == {
        "a.JPG": ("a.png", RULE_SAME_NAME),
        "b.jpeg": ("b_mask.PNG", RULE_SUFFIX),
    }
    assert report.ok


def test_size_mismatch_is_reported_not_fatal(dirs: tuple[Path, Path]) -> None:
    images, masks = dirs
    make(images, "a.png", size=(10, 8))
    make(images, "b.png", size=(5, 5))
    make(masks, "a.png", size=(8, 10))
    make(masks, "b.png", size=(5, 5))
    report = pair_folders(images, masks)
    assert [p.image.name for p in report.size_mismatches] == ["a.png"]
    mismatch = report.size_mismatches[0]
    assert mismatch.image_size == (10, 8) and mismatch.mask_size == (8, 10) and mismatch.size_mismatch
    assert "image a.png is 10 x 8 px, mask a.png is 8 x 10 px" in report.summary()
    assert not report.ok


def test_unreadable_header_is_a_warning(dirs: tuple[Path, Path]) -> None:
    images, masks = dirs
    make(images, "a.png")
    make(masks, "b.png")
    (masks / "a.png").write_bytes(b"not a png")
    report = pair_folders(images, masks)
    pair = report.pairs[0]
    assert pair.mask.name == "a.png" and pair.mask_size is None and not pair.size_mismatch
    assert len(report.warnings) == 1 and report.warnings[0].startswith("cannot read the header of mask a.png:")


def test_a_name_that_is_not_utf8_is_left_out_with_a_warning(dirs: tuple[Path, Path]) -> None:
    # such a name cannot be shown (the app's tables) nor written in a UTF-8 table; it used to be paired
    images, masks = dirs
    make(images, "a.png", "b.png")
    make(masks, "a.png", "b.png")
    for folder in (images, masks):
        make(Path(os.fsdecode(bytes(folder))), os.fsdecode(b"l\xe9sion.png"))
    report = pair_folders(images, masks)
    assert pairs_by_name(report) == {"a.png": ("a.png", RULE_SAME_NAME), "b.png": ("b.png", RULE_SAME_NAME)}
    assert report.unpaired_images == [] and report.unpaired_masks == []
    assert report.warnings == [
        "image l\\xe9sion.png is left out: its path is not UTF-8 text: rename the file (the results name each "
        "image by its path)",
        "mask l\\xe9sion.png is left out: its path is not UTF-8 text: rename the file (the results name each "
        "image by its path)"]
    assert not report.ok
    assert all(text.encode("utf-8") for text in report.warnings)


def test_same_folder_for_images_and_masks(tmp_path: Path) -> None:
    make(tmp_path, "ISIC_1.jpg", "ISIC_1_segmentation.png", "ISIC_2.jpg", "ISIC_2_segmentation.png")
    report = pair_folders(tmp_path, tmp_path)
    assert pairs_by_name(report) == {
        "ISIC_1.jpg": ("ISIC_1_segmentation.png", RULE_SUFFIX),
        "ISIC_2.jpg": ("ISIC_2_segmentation.png", RULE_SUFFIX),
    }


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    make(tmp_path / "images", "a.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(PairingError, match="masks folder not found: .*nope"):
        pair_folders(tmp_path / "images", tmp_path / "nope")
    with pytest.raises(PairingError, match="images folder not found"):
        pair_folders(tmp_path / "nope", tmp_path / "images")
    with pytest.raises(PairingError, match="is not a folder"):
        pair_folders(tmp_path / "file.png", tmp_path / "images")
    with pytest.raises(PairingError, match=r"no mask files in .*empty \(looked for \.jpg"):
        pair_folders(tmp_path / "images", tmp_path / "empty")
    with pytest.raises(PairingError, match="no image files"):
        pair_folders(tmp_path / "empty", tmp_path / "images")
    with pytest.raises(PairingError, match="folder not found"):
        list_images(tmp_path / "nope")
    with pytest.raises(PairingError, match="not a folder"):
        list_images(tmp_path / "file.png")
    assert isinstance(PairingError("x"), ValueError)


def test_dataclasses_and_summary_details() -> None:
    pair = Pair(Path("a.jpg"), Path("a.png"), RULE_SAME_NAME)
    assert pair.image_size is None and not pair.size_mismatch
    assert Pair(Path("a"), Path("b"), "r", (1, 2), (1, 2)).size_mismatch is False
    many = [Path(f"f{i}.png") for i in range(13)]
    report = PairingReport([pair], unpaired_images=many)
    assert "13 unpaired images: f0.png, f1.png" in report.summary()
    assert "... and 3 more" in report.summary()
    assert PairingReport([], [], [], []).summary() == "0 pairs."


def test_natural_key() -> None:
    names = ["img10.png", "img2.png", "IMG1.png", "img1.png", "img01.png", "a.png"]
    assert sorted(names, key=natural_key) == [
        "a.png", "IMG1.png", "img1.png", "img01.png", "img2.png", "img10.png",
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Real data

REAL = {
    "moles/seed/train": 70,
    "moles/seed/test": 30,
    "moles/isic2017": 36,
    "moles/ham10000": 5,
    "moles/ph2": 100,
    "cells/seed": 61,
    "cells/dsb2018_fluo": 100,
    "cells/dsb2018_brightfield": 60,
}


@pytest.mark.parametrize(("subset", "count"), list(REAL.items()))
def test_real_data_pairs(subset: str, count: int, require_shared) -> None:
    root = require_shared(subset)
    report = pair_folders(root / "images", root / "masks")
    assert len(report.pairs) == count
    assert not report.unpaired_images and not report.unpaired_masks
    assert not report.conflicts and not report.warnings
    assert RULE_SORTED not in report.rule_counts
    assert all(p.image_size is not None and p.mask_size is not None for p in report.pairs)
    assert len({p.mask for p in report.pairs}) == count
    expected_mismatches = ["064.jpg"] if subset == "moles/seed/train" else []
    assert [p.image.name for p in report.size_mismatches] == expected_mismatches
    for pair in report.pairs:
        image, mask = pair.image.name, pair.mask.name
        if subset == "cells/seed":
            assert mask == image.replace("frame", "gt")
        elif subset in ("moles/isic2017", "moles/ph2"):
            assert mask == f"{pair.image.stem}_{'segmentation' if 'isic' in subset else 'lesion'}.png"
        else:
            assert pair.mask.stem == pair.image.stem


def test_real_data_seed_064_mismatch_in_summary(require_shared) -> None:
    root = require_shared("moles/seed/train")
    report = pair_folders(root / "images", root / "masks")
    mismatch = report.size_mismatches[0]
    assert mismatch.image_size == (1022, 767) and mismatch.mask_size == (256, 256)
    assert "image 064.jpg is 1022 x 767 px, mask 064.jpg is 256 x 256 px" in report.summary()
