"""moleseg.network.feed: the backend-neutral PyDataset agrees with the tf.data pipeline (same warp and colour
jitter for the same draws, same examples without augmentation), is reproducible from its seed, and trains
a model under KERAS_BACKEND=jax (the session's gpu_check --cpu run on JAX: a separate process, as Keras picks
its backend at import)."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from scipy import ndimage

tf = pytest.importorskip("tensorflow")

from moleseg.tools.synthetic import ellipse  # noqa: E402
from synthetic import lesion_dataset  # noqa: E402
from moleseg.core.pairing import pair_folders  # noqa: E402
from moleseg.core.targets import make_targets  # noqa: E402
from moleseg.network.data import make_dataset, warp  # noqa: E402
from moleseg.network.examples import AugmentConfig, TargetConfig  # noqa: E402
from moleseg.network.feed import AffineDraw, ColourDraw, PairFeed, jitter_colour, warp_pair  # noqa: E402

SIZE = 40
DRAWS = [AffineDraw(angle=math.radians(30), scale=1.2, flip_x=-1.0, shift_x=3.3, shift_y=-2.1),
         AffineDraw(angle=math.radians(-170), scale=0.8, flip_y=-1.0, shift_x=-5.5, shift_y=4.2),
         AffineDraw(angle=math.radians(90))]


@pytest.fixture(scope="module")
def tiny_pair() -> tuple[np.ndarray, np.ndarray]:
    """A 40 px dark blurred ellipse on noisy skin and its BACK/BORDER/INSIDE labels."""
    mask = ellipse((SIZE, SIZE), (17, 22), (12, 8), 20)
    image = np.where(mask[..., None], np.array([80, 60, 50]), np.array([200, 160, 140])).astype(np.float32)
    image = ndimage.gaussian_filter(image, (1, 1, 0)) + np.random.default_rng(0).normal(0, 3, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), make_targets(mask, classes=3, border_width_px=3).astype(np.uint8)


def tf_warp(image: np.ndarray, labels: np.ndarray, draw: AffineDraw, fill_mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The tf.data pipeline's warp (moleseg.network.data.warp, as augment_example calls it) for ``draw``."""
    transform = tf.constant([*draw.inverse_map(image.shape[0]).ravel(), 0.0, 0.0], tf.float32)
    warped = warp(tf.constant(image, tf.float32), transform, interpolation="bilinear", fill_mode=fill_mode)
    warped_labels = warp(tf.constant(labels[..., None], tf.float32), transform, interpolation="nearest",
                         fill_mode=fill_mode)
    return warped.numpy(), np.round(warped_labels.numpy()[..., 0]).astype(np.uint8)


@pytest.mark.parametrize("fill_mode", ["reflect", "constant", "nearest"])
@pytest.mark.parametrize("draw", DRAWS, ids=["rot30-zoom-flipx", "rot-170-shrink-flipy", "rot90"])
def test_the_warp_equals_the_tf_data_one(tiny_pair, draw, fill_mode):
    image, labels = tiny_pair
    expected_image, expected_labels = tf_warp(image, labels, draw, fill_mode)
    warped_image, warped_labels = warp_pair(image, labels, draw, fill_mode)
    assert warped_image.dtype == np.float32 and warped_labels.dtype == np.uint8
    assert np.abs(warped_image - expected_image).max() <= 1.0  # grey levels (interpolation round-off)
    # labels: equal except on a 1 px band around the class boundaries (ties of nearest-neighbour rounding)
    boundary = ndimage.maximum_filter(expected_labels, 3) != ndimage.minimum_filter(expected_labels, 3)
    assert np.array_equal(warped_labels[~boundary], expected_labels[~boundary])
    assert (warped_labels != expected_labels).mean() < 0.01
    assert not np.array_equal(warped_labels, labels)  # the warp moved something


@pytest.mark.parametrize("draw", [ColourDraw(0.1, 1.2, 0.7, 0.03), ColourDraw(-0.12, 0.8, 1.3, -0.04)])
def test_the_colour_jitter_equals_tf_image_adjust(tiny_pair, draw):
    image = tiny_pair[0].astype(np.float32)
    unit = tf.constant(image) / 255.0
    unit = tf.image.adjust_brightness(unit, draw.brightness)
    unit = tf.image.adjust_contrast(unit, draw.contrast)
    unit = tf.image.adjust_saturation(unit, draw.saturation)
    unit = tf.image.adjust_hue(unit, draw.hue)
    expected = (tf.clip_by_value(unit, 0.0, 1.0) * 255.0).numpy()
    jittered = jitter_colour(image, draw)
    assert np.abs(jittered - expected).max() <= 1.0
    assert np.abs(jittered - image).mean() > 5  # it changed the colours


def test_the_draws_stay_in_the_configured_ranges():
    augment = AugmentConfig(rotation_deg=20, reflection=True, translation_px=4, scale_range=0.1, colour=0.5)
    rng = np.random.default_rng(3)
    draws = [AffineDraw.draw(augment, rng) for _ in range(200)]
    assert max(abs(d.angle) for d in draws) <= math.radians(20) and max(abs(d.angle) for d in draws) > math.radians(15)
    assert all(0.9 <= d.scale <= 1.1 and abs(d.shift_x) <= 4 and abs(d.shift_y) <= 4 for d in draws)
    assert {d.flip_x for d in draws} == {-1.0, 1.0} == {d.flip_y for d in draws}
    assert AffineDraw.draw(AugmentConfig(), rng) == AffineDraw()
    colours = [ColourDraw.draw(0.5, rng) for _ in range(200)]
    assert all(abs(c.brightness) <= 0.075 and abs(c.contrast - 1) <= 0.15 and abs(c.hue) <= 0.025 for c in colours)


@pytest.fixture(scope="module")
def lesion_pairs(tmp_path_factory) -> list:
    images, masks = lesion_dataset(tmp_path_factory.mktemp("feed"), n=5, size=48, vary=True)
    return pair_folders(images, masks).pairs


def test_without_augmentation_the_batches_equal_the_tf_data_ones(lesion_pairs):
    targets = TargetConfig(input_size=32, n_classes=3, border_width_px=2)
    feed = PairFeed(lesion_pairs, targets, batch_size=2)
    expected = list(make_dataset(lesion_pairs, targets, batch_size=2).as_numpy_iterator())
    assert len(feed) == len(expected) == 3
    for index, (images, labels) in enumerate(expected):
        fed_images, fed_labels = feed[index]
        assert fed_images.dtype == np.float32 and fed_labels.dtype == np.float32
        assert np.array_equal(fed_images, images) and np.array_equal(fed_labels, labels)


def test_a_seed_fixes_the_epochs_and_each_epoch_differs(lesion_pairs):
    targets = TargetConfig(input_size=32, n_classes=3, border_width_px=2)
    augment = AugmentConfig.from_names(["rotation", "reflection", "translation", "scale", "colour"])
    make = lambda seed: PairFeed(lesion_pairs, targets, batch_size=2, augment=augment, shuffle=True, seed=seed,
                                 drop_remainder=True, crops_per_image=2)
    first, again, other = make(0), make(0), make(1)
    assert len(first) == 5  # 10 examples, 2 per batch
    epoch0 = [first[i] for i in range(len(first))]
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(epoch0, [again[i] for i in range(5)]))
    assert not np.array_equal(epoch0[0][0], other[0][0])
    first.on_epoch_end()
    assert not np.array_equal(epoch0[0][0], first[0][0])
    for images, labels in epoch0:
        assert images.shape == (2, 32, 32, 3) and 0 <= images.min() and images.max() <= 255
        assert labels.shape == (2, 32, 32, 3) and np.array_equal(labels.sum(-1), np.ones((2, 32, 32)))


def test_crops_cut_input_size_squares(lesion_pairs):
    targets = TargetConfig(input_size=24, n_classes=2, border_width_px=0, fit="crop")
    feed = PairFeed(lesion_pairs, targets, batch_size=5, seed=2)
    images, labels = feed[0]
    assert images.shape == (5, 24, 24, 3) and labels.shape == (5, 24, 24, 2)
    full, _ = PairFeed(lesion_pairs, TargetConfig(input_size=48, n_classes=2, border_width_px=0, fit="crop"),
                       batch_size=5)[0]
    found = [any(np.array_equal(images[k], full[k][top:top + 24, left:left + 24])
                 for top in range(25) for left in range(25)) for k in range(5)]
    assert all(found)


def test_bad_arguments_are_clear_messages(lesion_pairs):
    targets = TargetConfig(input_size=32)
    with pytest.raises(ValueError, match="^no image/mask pairs to build a dataset from$"):
        PairFeed([], targets, batch_size=2)
    with pytest.raises(ValueError, match="^crops_per_image needs one count >= 1 per pair$"):
        PairFeed(lesion_pairs, targets, batch_size=2, crops_per_image=[1] * (len(lesion_pairs) + 1))
    with pytest.raises(ValueError, match="fewer than one batch of 8"):
        PairFeed(lesion_pairs, targets, batch_size=8, drop_remainder=True)
    with pytest.raises(ValueError, match="unknown fill mode 'mirror'"):
        warp_pair(np.zeros((4, 4, 3)), np.zeros((4, 4), np.uint8), AffineDraw(), "mirror")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed (pip install -r requirements.txt)")
def test_a_tiny_model_trains_under_the_jax_backend(gpu_check_cpu):
    """The recipe's network at 64 px, fed by the PairFeed (the recipe's augmentation, one thread per core), trained
    by Keras on JAX: the session's ``gpu_check --cpu --backend jax`` run (tests/conftest.py), whose report
    tests/test_gpu_check.py checks as a whole."""
    done = gpu_check_cpu("jax")
    assert done["returncode"] == 0, done["stdout"] + done["stderr"]
    lines = dict(line.split(": ", 1) for line in done["stdout"].splitlines() if ": " in line)
    assert lines["device"] == "CPU (--cpu, jax)"
    losses = [float(value) for value in lines["loss curve"].split(", ")]
    assert len(losses) == 6 and losses[-1] < 0.9 * losses[0], losses
