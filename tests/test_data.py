"""Tests of moleseg.network.examples and moleseg.network.data: augmentation settings and alignment, class
frequencies and weights, splits, the lazy tf.data pipeline and the on-disk example cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

tf = pytest.importorskip("tensorflow")

from synthetic import disk  # noqa: E402
from moleseg.network import examples  # noqa: E402
from moleseg.core import options  # noqa: E402
from moleseg.core.config import BACK, BORDER, INSIDE  # noqa: E402
from moleseg.network.data import augment_example, make_dataset  # noqa: E402
from moleseg.network.examples import (AugmentConfig, ExampleCache, TargetConfig, class_frequencies_of,  # noqa: E402
                                      crop_counts, inverse_frequency_weights, pair_repeats, prepare_example,
                                      split_pairs)
from moleseg.core.imagewrite import write_png  # noqa: E402
from moleseg.core.pairing import Pair, pair_folders  # noqa: E402


def _pair(image: Path, mask: Path) -> Pair:
    return Pair(image=Path(image), mask=Path(mask), rule="same name", image_size=None, mask_size=None)


def _write_pairs(folder: Path, masks: list[np.ndarray], seed: int = 0) -> list[Pair]:
    """Write each mask (bool) and a matching RGB image (dark lesion on light skin, some noise)."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    pairs = []
    for index, mask in enumerate(masks):
        image = np.where(mask[..., None], np.array([90, 60, 40]), np.array([210, 180, 170]))
        image = np.clip(image + rng.integers(-8, 9, image.shape), 0, 255).astype(np.uint8)
        image_path, mask_path = folder / "images" / f"{index:03d}.png", folder / "masks" / f"{index:03d}.png"
        write_png(image_path, image)
        write_png(mask_path, mask.astype(bool))
        pairs.append(_pair(image_path, mask_path))
    return pairs


# -- AugmentConfig -------------------------------------------------------------------------------


def test_from_names_enables_the_named_augmentations():
    config = AugmentConfig.from_names(["Rotation", " reflection ", "color", ""], translation_px=5,
                                      rotation_deg=90, scale_range=0.2, colour=0.3)
    assert config.rotation_deg == 90 and config.reflection and config.colour == 0.3
    assert config.translation_px == 0.0 and config.scale_range == 0.0
    assert config.names() == ["rotation", "reflection", "colour"]
    assert config.enabled
    every = AugmentConfig.from_names(options.AUGMENTATIONS)
    assert every.names() == list(options.AUGMENTATIONS)
    assert every.translation_px == 10.0 and every.rotation_deg == 180.0 and every.scale_range == 0.1
    none = AugmentConfig.from_names([])
    assert not none.enabled and none.names() == []
    assert AugmentConfig.from_names(["scale"], fill_mode="constant").to_dict()["fill_mode"] == "constant"


@pytest.mark.parametrize("names", [["rotate"], ["rotation", "shear"], ["flip"]])
def test_from_names_rejects_unknown_names(names):
    with pytest.raises(ValueError, match="unknown augmentation.*choose from rotation"):
        AugmentConfig.from_names(names)


# -- augmentation keeps image and labels aligned -------------------------------------------------

SIZE = 96


def _shape_mask() -> np.ndarray:
    """An asymmetric lesion (off-centre disk with a rectangular arm) so any warp moves it."""
    mask = disk((SIZE, SIZE), (38, 54), 20)
    mask[50:80, 20:34] = True
    return mask


def _warp(mask: np.ndarray, augment: AugmentConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Warp the mask as an image (0/255 in three channels, bilinear) and as labels (nearest)."""
    image = tf.constant(np.repeat(mask[..., None].astype(np.float32) * 255.0, 3, axis=-1))
    labels = tf.constant(mask.astype(np.uint8))
    warped_image, warped_labels = augment_example(image, labels, augment, tf.constant([seed, seed // 7], tf.int64))
    return warped_image.numpy(), warped_labels.numpy()


GEOMETRIC = {
    "rotation": AugmentConfig(rotation_deg=180.0),
    "reflection": AugmentConfig(reflection=True),
    "translation": AugmentConfig(translation_px=12.0),
    "scale": AugmentConfig(scale_range=0.25),
    "combined": AugmentConfig(rotation_deg=180.0, reflection=True, translation_px=12.0, scale_range=0.25),
    "combined_constant_fill": AugmentConfig(rotation_deg=180.0, reflection=True, translation_px=12.0,
                                            scale_range=0.25, fill_mode="constant"),
}


@pytest.mark.parametrize("name", list(GEOMETRIC))
def test_augmentation_warps_image_and_labels_alike(name):
    mask = _shape_mask()
    changed = 0
    for seed in range(6):
        image, labels = _warp(mask, GEOMETRIC[name], seed)
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.float32
        assert labels.shape == (SIZE, SIZE) and labels.dtype == np.uint8
        assert set(np.unique(labels)) <= {0, 1}
        np.testing.assert_array_equal(image[..., 0], image[..., 1])
        from_image = image[..., 0] > 127
        from_labels = labels == 1
        agreement = np.mean(from_image == from_labels)
        assert agreement >= 0.99, f"{name} seed {seed}: image and labels agree on {agreement:.4f} of the pixels"
        boundary = ndimage.binary_dilation(from_labels) & ~ndimage.binary_erosion(from_labels, border_value=1)
        outside = (from_image != from_labels) & ~boundary
        assert not outside.any(), f"{name} seed {seed}: {outside.sum()} differing pixels away from the boundary"
        # the lesion keeps (about) its area: the transform is a warp, not garbage
        assert 0.5 < from_labels.sum() / mask.sum() < 1.8
        changed += not np.array_equal(from_labels, mask)
    assert changed >= 3, f"{name}: only {changed} of 6 draws changed the labels"


def test_reflection_is_an_exact_mirror():
    mask = _shape_mask()
    outcomes = set()
    for seed in range(12):
        _, labels = _warp(mask, AugmentConfig(reflection=True), seed)
        candidates = {"none": mask, "lr": mask[:, ::-1], "ud": mask[::-1], "both": mask[::-1, ::-1]}
        matches = [key for key, value in candidates.items() if np.array_equal(labels == 1, value)]
        assert len(matches) == 1, f"seed {seed}: the reflected labels are no mirror of the mask"
        outcomes.add(matches[0])
    assert len(outcomes) >= 3


def test_augmentation_is_reproducible_by_seed():
    mask = _shape_mask()
    first = _warp(mask, GEOMETRIC["combined"], 3)
    again = _warp(mask, GEOMETRIC["combined"], 3)
    other = _warp(mask, GEOMETRIC["combined"], 4)
    np.testing.assert_array_equal(first[1], again[1])
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[1], other[1])


def test_identity_config_leaves_the_example_unchanged():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    labels = rng.integers(0, 3, (32, 32)).astype(np.uint8)
    out_image, out_labels = augment_example(tf.constant(image), tf.constant(labels), AugmentConfig(),
                                            tf.constant([1, 2], tf.int64))
    assert out_image.dtype == tf.float32
    np.testing.assert_array_equal(out_image.numpy(), image.astype(np.float32))
    np.testing.assert_array_equal(out_labels.numpy(), labels)


def test_colour_changes_the_image_only():
    rng = np.random.default_rng(2)
    image = rng.integers(30, 220, (32, 32, 3)).astype(np.uint8)
    labels = rng.integers(0, 3, (32, 32)).astype(np.uint8)
    out_image, out_labels = augment_example(tf.constant(image), tf.constant(labels), AugmentConfig(colour=1.0),
                                            tf.constant([5, 0], tf.int64))
    np.testing.assert_array_equal(out_labels.numpy(), labels)
    values = out_image.numpy()
    assert values.min() >= 0.0 and values.max() <= 255.0
    assert not np.allclose(values, image)


# -- class frequencies and weights ---------------------------------------------------------------


def test_inverse_frequency_weights_by_hand():
    # 1 / [0.5, 0.25, 0.25] = [2, 4, 4], scaled to sum to 3 classes: [0.6, 1.2, 1.2]
    np.testing.assert_allclose(inverse_frequency_weights(np.array([0.5, 0.25, 0.25])), [0.6, 1.2, 1.2], rtol=1e-6)
    # 1 / [0.8, 0.2] = [1.25, 5], sum 6.25, scaled to 2: [0.4, 1.6]
    np.testing.assert_allclose(inverse_frequency_weights([0.8, 0.2]), [0.4, 1.6], rtol=1e-6)
    # an absent class gets weight 0; the others share the total
    np.testing.assert_allclose(inverse_frequency_weights([0.5, 0.5, 0.0]), [1.5, 1.5, 0.0], rtol=1e-6)
    assert inverse_frequency_weights([0.9, 0.05, 0.05]).dtype == np.float32


@pytest.fixture
def counted_pairs(tmp_path) -> list[Pair]:
    """Three 16x16 masks whose BACK / BORDER / INSIDE pixels are counted by hand below."""
    first = np.zeros((16, 16), bool)
    first[4:10, 4:10] = True  # 6x6 = 36: eroded by the cross -> 4x4 = 16 INSIDE, 20 BORDER
    second = np.zeros((16, 16), bool)
    second[2:10, 5:13] = True  # 8x8 = 64: 6x6 = 36 INSIDE, 28 BORDER
    corner = np.zeros((16, 16), bool)
    corner[:5, :5] = True  # 25 in the corner: the frame is no border (Matlab's imerode pads with 1)
    #                        -> rows/cols 0..3 = 16 INSIDE, 9 BORDER
    return _write_pairs(tmp_path, [first, second, corner])


def test_class_frequencies_match_hand_counts(counted_pairs, tmp_path):
    targets = TargetConfig(input_size=16, n_classes=3, border_width_px=1, shape="diamond")
    back, border, inside = 3 * 256 - (36 + 64 + 25), 20 + 28 + 9, 16 + 36 + 16
    expected = np.array([back, border, inside]) / 768
    np.testing.assert_allclose(class_frequencies_of(counted_pairs, targets), expected, rtol=1e-12)
    cache = ExampleCache(tmp_path / "cache")
    ticks: list[int] = []  # the prepare phase's progress: pairs done, after each one
    np.testing.assert_allclose(class_frequencies_of(counted_pairs, targets, cache, tick=ticks.append), expected,
                               rtol=1e-12)
    assert ticks == [1, 2, 3]
    _, labels = prepare_example(counted_pairs[0], targets)
    assert [int(np.sum(labels == c)) for c in (BACK, BORDER, INSIDE)] == [220, 20, 16]
    two = TargetConfig(input_size=16, n_classes=2, border_width_px=0)
    np.testing.assert_allclose(class_frequencies_of(counted_pairs, two), [643 / 768, 125 / 768], rtol=1e-12)


def test_a_mask_name_in_the_training_log_is_one_line(tmp_path):
    """An empty training mask is named in the training's log (log.txt and job.log, read with tail -f, whose lines
    are escaped but for their line ends): a mask named with a line end wrote a line of its own there ('error:
    ...'), as no message of the command line may."""
    [pair] = _write_pairs(tmp_path, [np.zeros((16, 16), bool)])
    named = pair.mask.with_name("m\nerror: the training failed.png")
    pair.mask.rename(named)
    warned: list[str] = []
    class_frequencies_of([_pair(pair.image, named)], TargetConfig(input_size=16, n_classes=3), warn=warned.append)
    problem = examples.mask_problem(np.zeros((16, 16), bool))
    assert warned[0] == f"warning: m\\nerror: the training failed.png: {problem}"
    assert all("\n" not in line for line in warned)


def test_the_example_cache_is_the_server_account_s_only(counted_pairs, tmp_path):
    """The cache holds every user's training pictures, resized: a new cache folder gave them to every account of
    the machine (0755 under the usual umask), though each user's own space is 0700."""
    previous = os.umask(0o022)
    try:
        cache = ExampleCache(tmp_path / "cache")
        class_frequencies_of(counted_pairs, TargetConfig(input_size=16), cache)
    finally:
        os.umask(previous)
    assert oct(cache.folder.stat().st_mode & 0o777) == "0o700" and len(list(cache.folder.glob("*.npz"))) == 3

def test_class_frequencies_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no labelled pixels"):
        class_frequencies_of([], TargetConfig(input_size=16))


def test_prepare_example_resizes_image_and_mask(tmp_path):
    image = np.full((40, 60, 3), 200, np.uint8)
    mask = np.zeros((20, 30), bool)  # a mask of another size than its image is resized to it first
    mask[5:15, 10:20] = True
    write_png(tmp_path / "i.png", image)
    write_png(tmp_path / "m.png", mask)
    out_image, labels = prepare_example(_pair(tmp_path / "i.png", tmp_path / "m.png"), TargetConfig(input_size=32))
    assert out_image.shape == (32, 32, 3) and out_image.dtype == np.uint8
    assert labels.shape == (32, 32) and labels.dtype == np.uint8
    assert set(np.unique(labels)) == {BACK, BORDER, INSIDE}


# -- splits --------------------------------------------------------------------------------------


def _fake_pairs(n: int) -> list[Pair]:
    return [_pair(Path(f"img{i:02d}.jpg"), Path(f"mask{i:02d}.png")) for i in range(n)]


def test_split_pairs_is_deterministic_and_disjoint():
    pairs = _fake_pairs(20)
    train, validation, test = split_pairs(pairs, validation_fraction=0.15, test_fraction=0.1, seed=3)
    assert (len(train), len(validation), len(test)) == (15, 3, 2)
    names = [p.image.name for p in train + validation + test]
    assert sorted(names) == sorted(p.image.name for p in pairs)  # disjoint and complete
    again = split_pairs(pairs, validation_fraction=0.15, test_fraction=0.1, seed=3)
    assert [p.image for p in again[1]] == [p.image for p in validation]
    assert [p.image for p in again[2]] == [p.image for p in test]
    assert [p.image for p in again[0]] == [p.image for p in train]
    others = [split_pairs(pairs, validation_fraction=0.15, test_fraction=0.1, seed=s)[1] for s in range(4, 9)]
    assert any({p.image for p in other} != {p.image for p in validation} for other in others)


def test_validation_folds_cover_the_pairs_once_and_keep_the_test_set():
    """k-fold cross-validation: 22 pairs, test 2 (10 %), validation blocks of 4 (20 %): folds 0..4 hold
    disjoint validation sets covering 20 pairs, each fold trains on the other 16, and fold 0 is the split
    of a training without folds (the first 4 pairs after the test set in the seeded shuffle)."""
    pairs = _fake_pairs(22)
    order = np.random.default_rng(3).permutation(22)
    folds = [split_pairs(pairs, validation_fraction=0.2, test_fraction=0.1, seed=3, fold=k) for k in range(5)]
    test_names = [p.image.name for p in folds[0][2]]
    assert test_names == [f"img{i:02d}.jpg" for i in order[:2]]
    assert [p.image.name for p in folds[0][1]] == [f"img{i:02d}.jpg" for i in order[2:6]]
    validated: list[str] = []
    for train, validation, test in folds:
        assert [p.image.name for p in test] == test_names
        assert (len(train), len(validation)) == (16, 4)
        names = {p.image.name for p in train + validation + test}
        assert len(names) == 22
        validated += [p.image.name for p in validation]
    assert len(validated) == len(set(validated)) == 20  # disjoint, and every non-test pair once
    assert set(validated) == {f"img{i:02d}.jpg" for i in order[2:]}
    with pytest.raises(ValueError, match=r"validation fold 5 does not exist: .*folds 0\.\.4"):
        split_pairs(pairs, validation_fraction=0.2, test_fraction=0.1, seed=3, fold=5)
    with pytest.raises(ValueError, match="0 or more"):
        split_pairs(pairs, validation_fraction=0.2, seed=3, fold=-1)


def test_split_pairs_small_fractions_get_one_pair_and_zero_gets_none():
    train, validation, test = split_pairs(_fake_pairs(5), validation_fraction=0.01, seed=0)
    assert (len(train), len(validation), len(test)) == (4, 1, 0)
    train, validation, test = split_pairs(_fake_pairs(5), validation_fraction=0.0, seed=0)
    assert (len(train), len(validation), len(test)) == (5, 0, 0)


@pytest.mark.parametrize("validation, test", [(1.0, 0.0), (-0.1, 0.0), (0.6, 0.5), (0.2, 1.0)])
def test_split_pairs_rejects_bad_fractions(validation, test):
    with pytest.raises(ValueError, match="fractions"):
        split_pairs(_fake_pairs(10), validation_fraction=validation, test_fraction=test)


def test_split_pairs_refuses_too_few_pairs():
    with pytest.raises(ValueError, match="2 pairs are too few"):
        split_pairs(_fake_pairs(2), validation_fraction=0.3, test_fraction=0.3)


# -- make_dataset --------------------------------------------------------------------------------


@pytest.fixture
def five_pairs(tmp_path) -> list[Pair]:
    masks = [disk((40, 40), (12 + 3 * i, 20), 6 + i) for i in range(5)]  # 40 px files, resized to the input
    return _write_pairs(tmp_path / "five", masks, seed=4)


@pytest.fixture
def counting(monkeypatch):
    """Replace moleseg.network.examples.prepare_example by a wrapper recording each file it prepares."""
    calls: list[str] = []
    original = examples.prepare_example

    def wrapper(pair, targets):
        calls.append(Path(pair.image).name)
        return original(pair, targets)

    monkeypatch.setattr(examples, "prepare_example", wrapper)
    return calls


def test_make_dataset_shapes_dtypes_and_one_hot(five_pairs):
    targets = TargetConfig(input_size=32, n_classes=3, border_width_px=2)
    dataset = make_dataset(five_pairs, targets, batch_size=2)
    batches = list(dataset)
    assert [int(images.shape[0]) for images, _ in batches] == [2, 2, 1]
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert images.dtype == np.float32 and labels.dtype == np.float32
    assert images.shape == (5, 32, 32, 3) and labels.shape == (5, 32, 32, 3)
    assert set(np.unique(labels)) == {0.0, 1.0}
    np.testing.assert_array_equal(labels.sum(axis=-1), 1.0)
    for index, pair in enumerate(five_pairs):  # unshuffled: file order; exactly prepare_example's values
        image, expected = prepare_example(pair, targets)
        np.testing.assert_array_equal(images[index], image.astype(np.float32))
        np.testing.assert_array_equal(np.argmax(labels[index], axis=-1), expected)
    assert len(list(make_dataset(five_pairs, targets, batch_size=2, drop_remainder=True))) == 2


def test_make_dataset_two_classes_with_augmentation_and_shuffle(five_pairs):
    targets = TargetConfig(input_size=32, n_classes=2, border_width_px=0)
    augment = AugmentConfig.from_names(["rotation", "reflection", "translation", "scale", "colour"])
    dataset = make_dataset(five_pairs, targets, batch_size=5, augment=augment, shuffle=True, seed=1)
    epoch1 = [(x.numpy(), y.numpy()) for x, y in dataset]
    epoch2 = [(x.numpy(), y.numpy()) for x, y in dataset]
    for images, labels in epoch1 + epoch2:
        assert images.shape == (5, 32, 32, 3) and labels.shape == (5, 32, 32, 2)
        np.testing.assert_array_equal(labels.sum(axis=-1), 1.0)
        assert images.min() >= 0.0 and images.max() <= 255.0
    assert not np.array_equal(epoch1[0][0], epoch2[0][0])  # a fresh draw every epoch


def test_make_dataset_reads_files_lazily(five_pairs, counting):
    targets = TargetConfig(input_size=32)
    dataset = make_dataset(five_pairs, targets, batch_size=2)
    assert counting == [], "files were read while building the pipeline"
    list(dataset)
    assert sorted(counting) == sorted(p.image.name for p in five_pairs)
    list(dataset)  # without a cache every epoch reads again
    assert len(counting) == 10


def test_make_dataset_with_cache_reads_each_file_once(five_pairs, counting, tmp_path):
    cache = ExampleCache(tmp_path / "cache")
    dataset = make_dataset(five_pairs, TargetConfig(input_size=32), batch_size=2, cache=cache)
    assert counting == []
    first = [y.numpy() for _, y in dataset]
    second = [y.numpy() for _, y in dataset]
    assert len(counting) == 5
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 5


def _sized_pairs(folder: Path, sizes: list[tuple[int, int]]) -> list[Pair]:
    """One pair per ``(height, width)``: a dark square lesion at the top left corner."""
    pairs = []
    for index, (height, width) in enumerate(sizes):
        mask = np.zeros((height, width), bool)
        mask[: height // 2, : width // 2] = True
        pairs.extend(_write_pairs(folder / str(index), [mask], seed=index))
    return pairs


def test_crop_counts_follow_the_image_area(tmp_path):
    pairs = _sized_pairs(tmp_path, [(64, 64), (128, 128), (64, 80), (40, 30), (400, 400)])
    assert crop_counts(pairs, 64) == [1, 1, 1, 1, 1]
    assert crop_counts(pairs, 64, crops_per_image=3) == [3, 3, 3, 3, 3]
    # areas in 64 px squares: 1, 4, 1.25, 0.29 (at least 1), 39 (at most 16)
    assert crop_counts(pairs, 64, by_area=True) == [1, 4, 1, 1, 16]
    assert crop_counts(pairs, 64, crops_per_image=2, by_area=True) == [2, 8, 2, 1, 16]
    # enlarged 2x before cropping: four times the area (1 -> 4, 4 -> 16, 1.25 -> 5, 0.29 -> 1.17); halved: a quarter
    assert crop_counts(pairs, 64, by_area=True, scale=2.0) == [4, 16, 5, 1, 16]
    assert crop_counts(pairs, 64, by_area=True, scale=0.5) == [1, 1, 1, 1, 10]
    with pytest.raises(ValueError, match="at least 1"):
        crop_counts(pairs, 64, crops_per_image=0)


def test_colour_constancy_is_applied_to_the_prepared_image_only(tmp_path):
    from moleseg.core.constancy import shades_of_grey
    from moleseg.core.imageio import read_image
    from moleseg.core.resize import resize_image

    pairs = _sized_pairs(tmp_path, [(64, 96)])
    plain = prepare_example(pairs[0], TargetConfig(input_size=32))
    image, labels = prepare_example(pairs[0], TargetConfig(input_size=32, colour_constancy="shades_of_grey"))
    np.testing.assert_array_equal(image, shades_of_grey(resize_image(read_image(pairs[0].image), 32)))
    assert not np.array_equal(image, plain[0])
    np.testing.assert_array_equal(labels, plain[1])
    cropped, _ = prepare_example(pairs[0], TargetConfig(input_size=32, fit="crop", colour_constancy="shades_of_grey"))
    np.testing.assert_array_equal(cropped, shades_of_grey(read_image(pairs[0].image)))  # whole, at its own size


def test_crop_fit_enlarges_image_and_mask_by_the_tile_scale(tmp_path):
    pairs = _sized_pairs(tmp_path, [(64, 96)])
    plain = prepare_example(pairs[0], TargetConfig(input_size=32, n_classes=2, border_width_px=0, fit="crop"))
    image, labels = prepare_example(pairs[0], TargetConfig(input_size=32, n_classes=2, border_width_px=0,
                                                            fit="crop", scale=2.0))
    assert plain[0].shape == (64, 96, 3) and image.shape == (128, 192, 3) and labels.shape == (128, 192)
    # the lesion (top-left quarter, 32 x 48 px) is 64 x 96 px at twice the size, still the top-left quarter
    assert plain[1].sum() == 32 * 48 and labels.sum() == 64 * 96
    assert labels[:64, :96].all() and not labels[64:].any() and not labels[:, 96:].any()
    assert TargetConfig(fit="crop", scale=2.0).key() != TargetConfig(fit="crop").key()  # cached apart


def test_crop_fit_cuts_squares_at_the_image_scale_and_repeats_by_count(tmp_path):
    pairs = _sized_pairs(tmp_path, [(64, 96), (40, 30)])
    targets = TargetConfig(input_size=32, n_classes=2, border_width_px=0, fit="crop")
    image, labels = prepare_example(pairs[1], targets)
    assert image.shape == (40, 32, 3) and labels.shape == (40, 32)  # padded up to one crop, not resized
    dataset = make_dataset(pairs, targets, batch_size=4, shuffle=True, seed=3, crops_per_image=[3, 2])
    batches = [(x.numpy(), y.numpy()) for x, y in dataset]  # one pass: each pass draws new crops
    images = np.concatenate([x for x, _ in batches])
    labels = np.concatenate([y for _, y in batches])
    assert images.shape == (5, 32, 32, 3) and labels.shape == (5, 32, 32, 2)
    # every crop keeps the scale: the lesion is dark (R 90) and labelled 1, the skin light (R 210) and 0
    foreground = labels[..., 1] == 1
    assert foreground.any() and (~foreground).any()
    assert np.abs(images[..., 0][foreground] - 90).max() <= 8
    assert np.abs(images[..., 0][~foreground] - 210).max() <= 8
    with pytest.raises(ValueError, match="one count"):
        make_dataset(pairs, targets, batch_size=2, crops_per_image=[1])


def test_make_dataset_needs_pairs():
    with pytest.raises(ValueError, match="^no image/mask pairs to build a dataset from$"):
        make_dataset([], TargetConfig(input_size=32), batch_size=2)


def test_pair_repeats_are_one_count_per_pair(tmp_path):
    pairs = [_pair(tmp_path / f"{k}.png", tmp_path / f"{k}_mask.png") for k in range(3)]
    assert pair_repeats(pairs, 2) == [2, 2, 2]
    assert pair_repeats(pairs, [1, 4, 2]) == [1, 4, 2]
    for wrong in (0, [1, 1], [1, 0, 1]):
        with pytest.raises(ValueError, match="^crops_per_image needs one count >= 1 per pair$"):
            pair_repeats(pairs, wrong)


# -- ExampleCache --------------------------------------------------------------------------------


def test_example_cache_hit_miss_and_invalidation(five_pairs, counting, tmp_path):
    cache = ExampleCache(tmp_path / "cache")
    targets = TargetConfig(input_size=32)
    pair = five_pairs[0]
    image, labels = cache.get(pair, targets)
    assert len(counting) == 1
    again_image, again_labels = cache.get(pair, targets)
    assert len(counting) == 1, "second get was not a cache hit"
    np.testing.assert_array_equal(again_image, image)
    np.testing.assert_array_equal(again_labels, labels)
    assert len(list(cache.folder.glob("*.npz"))) == 1

    cache.get(pair, TargetConfig(input_size=32, border_width_px=1))  # other options: another entry
    assert len(counting) == 2
    assert len(list(cache.folder.glob("*.npz"))) == 2

    # the mask file changes: the entry is prepared again and reflects the new file
    new_mask = np.zeros((40, 40), bool)
    new_mask[2:30, 2:30] = True
    write_png(pair.mask, new_mask)
    stat = os.stat(pair.mask)
    os.utime(pair.mask, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    _, changed = cache.get(pair, targets)
    assert len(counting) == 3
    assert not np.array_equal(changed, labels)
    np.testing.assert_array_equal(changed, prepare_example(pair, targets)[1])

    # a corrupt entry is dropped and prepared again
    for entry in cache.folder.glob("*.npz"):
        entry.write_bytes(b"garbage")
    _, repaired = cache.get(pair, targets)
    np.testing.assert_array_equal(repaired, changed)
    assert not list(cache.folder.glob("*.tmp"))


# -- real data -----------------------------------------------------------------------------------


def test_shared_seed_pairs_load_through_make_dataset(require_shared):
    root = require_shared("moles/seed/train")
    report = pair_folders(root / "images", root / "masks")
    assert len(report.pairs) == 70
    by_name = {p.image.name: p for p in report.pairs}
    chosen = [by_name["064.jpg"]] + [p for p in report.pairs if p.image.name != "064.jpg"][:3]
    assert by_name["064.jpg"].size_mismatch  # 1022x767 image, 256x256 mask
    targets = TargetConfig(input_size=64, n_classes=3, border_width_px=2)
    images, labels = next(iter(make_dataset(chosen, targets, batch_size=4)))
    assert images.shape == (4, 64, 64, 3) and labels.shape == (4, 64, 64, 3)
    images, labels = images.numpy(), labels.numpy()
    assert 0.0 <= images.min() and images.max() <= 255.0 and images.std() > 10
    np.testing.assert_array_equal(labels.sum(axis=-1), 1.0)
    classes = np.argmax(labels, axis=-1)
    for index in range(4):
        assert set(np.unique(classes[index])) == {BACK, BORDER, INSIDE}, chosen[index].image.name


def test_the_targets_default_to_the_options_defaults():
    from moleseg.core.classical import ClassicalSegmenter
    from moleseg.core.trainconfig import ModelConfig

    targets, model = TargetConfig(), ModelConfig()
    assert (targets.input_size, targets.n_classes) == (model.input_size, model.n_classes) == (256, 3)
    assert (targets.border_width_px, targets.shape) == (options.default("border_width_px"), options.default("shape"))
    assert ClassicalSegmenter().n_classes == 3 and targets.hard_case_labels().shape == targets.shape
