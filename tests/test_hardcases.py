"""Tests of moleseg.core.hardcases (zoom_in, pink, vignette, halo) and of their use in both training feeds."""

from __future__ import annotations

import numpy as np
import pytest

from synthetic import disk
from moleseg.core.config import BACK, BORDER, INSIDE
from moleseg.core.hardcases import (HALO_STRENGTH, MAX_ZOOM, PINK_RGB, HardCaseLabels, halo, hard_cases, pink, vignette,
                                    zoom_in)
from moleseg.core.targets import make_targets

SIDE = 64
HOW = HardCaseLabels(n_classes=3, border_width_px=2, shape="diamond")
SKIN = np.array([200.0, 160.0, 140.0], dtype=np.float32)
BROWN = np.array([80.0, 50.0, 30.0], dtype=np.float32)


def _mole(radius: int, centre: tuple[int, int] = (30, 34)) -> tuple[np.ndarray, np.ndarray]:
    """A brown disk on skin: ``(image float32 (64, 64, 3), labels uint8 (64, 64))``."""
    lesion = disk((SIDE, SIDE), centre, radius)
    image = np.where(lesion[..., None], BROWN, SKIN).astype(np.float32)
    return image, make_targets(lesion, classes=3, border_width_px=2, shape="diamond")


def test_zoom_in_makes_the_lesion_touch_every_side_and_remakes_its_border():
    image, labels = _mole(14)
    zoomed, zoomed_labels = zoom_in(image, labels, HOW, np.random.default_rng(3))
    lesion = zoomed_labels != BACK
    assert lesion[0].any() and lesion[-1].any() and lesion[:, 0].any() and lesion[:, -1].any()
    assert lesion.mean() > 0.6  # a 14 px disk was 15 % of the frame
    # labels made again from the zoomed lesion: the BORDER band keeps its 2 px width
    assert np.array_equal(zoomed_labels, make_targets(lesion, classes=3, border_width_px=2, shape="diamond"))
    assert {BORDER, INSIDE} <= set(np.unique(zoomed_labels))
    # the image follows the labels: brown where the lesion is, skin elsewhere (away from edges)
    assert np.allclose(zoomed[lesion & (zoomed_labels == INSIDE)].mean(axis=0), BROWN, atol=3)


def test_zoom_in_leaves_small_and_frame_filling_lesions_and_empty_masks_alone():
    rng = np.random.default_rng(0)
    for radius in (3, 40):  # needs more than MAX_ZOOM / already fills the frame
        image, labels = _mole(radius, (32, 32))
        box = np.flatnonzero(labels.any(axis=0))
        assert radius != 3 or SIDE / (box[-1] - box[0] + 1) > MAX_ZOOM
        same_image, same_labels = zoom_in(image, labels, HOW, rng)
        assert same_image is image and same_labels is labels
    empty = np.zeros((SIDE, SIDE), np.uint8)
    assert zoom_in(np.zeros((SIDE, SIDE, 3), np.float32), empty, HOW, rng)[1] is empty


def test_pink_turns_the_lesion_pale_pink_and_leaves_the_skin():
    image, labels = _mole(14)
    pale = 0.5 * SKIN + 0.5 * np.asarray(PINK_RGB, dtype=np.float32)
    changed = [pink(image, labels, np.random.default_rng(seed)) for seed in range(6)]
    inside = labels == INSIDE
    far = ~disk((SIDE, SIDE), (30, 34), 22)
    for result in changed:
        assert np.array_equal(result[far], image[far])  # skin away from the lesion is untouched
        before = np.linalg.norm(image[inside] - pale, axis=1).mean()
        after = np.linalg.norm(result[inside] - pale, axis=1).mean()
        assert after < before  # the lesion moved towards the pale pink
    # a part only (a half) on some draws: some lesion pixels stay brown there, none do for the whole lesion
    untouched = [np.isclose(result[inside], BROWN, atol=2).all(axis=1).mean() for result in changed]
    assert max(untouched) > 0.2 and min(untouched) < 0.05


def test_vignette_darkens_the_corners_not_the_centre():
    image = np.full((SIDE, SIDE, 3), 150.0, np.float32)
    for seed in range(5):
        shaded = vignette(image, np.random.default_rng(seed))
        assert np.allclose(shaded[28:36, 28:36], 150.0)
        corners = shaded[[0, 0, -1, -1], [0, -1, 0, -1]].mean()
        assert corners < 0.9 * 150.0


def test_halo_paints_a_fading_pigmented_ring_on_the_skin_only():
    image, labels = _mole(12)
    ringed = halo(image, labels, np.random.default_rng(5))
    lesion = labels != BACK
    assert np.array_equal(ringed[lesion], image[lesion])  # the lesion is untouched (labels are not changed)
    distance = np.hypot(*np.mgrid[0:SIDE, 0:SIDE] - np.array([30, 34])[:, None, None])
    just_outside = (distance > 13) & (distance < 14)
    far = distance > 12 * (1 + 0.45) + 3  # beyond the widest ring (0.45 of the 12 px radius)
    # next to the lesion the skin moved towards half skin, half brown, by at most HALO_STRENGTH[1]
    step = (image[just_outside] - ringed[just_outside]).mean(axis=0) / ((SKIN - BROWN) / 2)
    assert np.all(step > 0.1) and np.all(step <= HALO_STRENGTH[1] + 1e-6)
    assert np.array_equal(ringed[far], image[far])
    assert np.array_equal(halo(image, np.zeros_like(labels), np.random.default_rng(5)), image)


def test_halo_does_not_change_what_the_other_cases_draw():
    image, labels = _mole(14)
    shares = dict(zoom_in_share=1.0, pink_share=0.0, vignette_share=0.0, how=HOW)
    plain = hard_cases(image, labels, **shares, rng=np.random.default_rng(9))
    with_halo = hard_cases(image, labels, **shares, halo_share=1.0, rng=np.random.default_rng(9))
    assert np.array_equal(with_halo[1], plain[1])  # the same zoom, the same labels
    assert not np.array_equal(with_halo[0], plain[0])  # and a halo painted on its skin


def test_hard_cases_at_share_zero_change_nothing_and_are_reproducible():
    image, labels = _mole(14)
    same_image, same_labels = hard_cases(image, labels, zoom_in_share=0, pink_share=0, vignette_share=0, how=HOW,
                                         rng=np.random.default_rng(1))
    assert np.array_equal(same_image, image) and np.array_equal(same_labels, labels)
    runs = [hard_cases(image, labels, zoom_in_share=1, pink_share=1, vignette_share=1, how=HOW,
                       rng=np.random.default_rng(5)) for _ in range(2)]
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])
    assert not np.array_equal(runs[0][1], labels)  # zoomed


def test_both_feeds_apply_the_same_hard_cases():
    tf = pytest.importorskip("tensorflow")
    from moleseg.network.data import augment_example
    from moleseg.network.examples import AugmentConfig, TargetConfig, hard_case_rng

    image, labels = _mole(14)
    augment = AugmentConfig.from_names(["zoom_in", "pink", "vignette"], hard_case_share=1.0)
    assert augment.names() == ["zoom_in", "pink", "vignette"] and augment.enabled
    targets = TargetConfig(input_size=SIDE, n_classes=3, border_width_px=2, shape="diamond")
    seed = np.array([11, 4], dtype=np.int64)
    tf_image, tf_labels = augment_example(tf.constant(image), tf.constant(labels), augment, tf.constant(seed),
                                          targets)
    np_image, np_labels = hard_cases(image, labels, zoom_in_share=1, pink_share=1, vignette_share=1,
                                     how=targets.hard_case_labels(), rng=hard_case_rng(seed))
    assert tf_labels.dtype == tf.uint8 and tf_labels.shape == (SIDE, SIDE)
    assert np.array_equal(tf_labels.numpy(), np_labels)
    assert np.allclose(tf_image.numpy(), np_image)


def test_with_colour_constancy_a_hard_case_is_corrected_on_its_own_in_both_feeds():
    """With shades of grey, the picture a hard case makes (here a zoom_in close-up of a mole on reddish skin)
    is corrected on its own statistics, as prediction corrects a real close-up; both feeds call
    ``apply_hard_cases``."""
    tf = pytest.importorskip("tensorflow")
    from moleseg.core.constancy import shades_of_grey
    from moleseg.network.data import augment_example
    from moleseg.network.examples import AugmentConfig, TargetConfig, apply_hard_cases, hard_case_rng

    image, labels = _mole(14)
    augment = AugmentConfig.from_names(["zoom_in"], hard_case_share=1.0)
    targets = TargetConfig(input_size=SIDE, n_classes=3, border_width_px=2, shape="diamond",
                           colour_constancy="shades_of_grey")
    seed = np.array([3, 9], dtype=np.int64)
    plain, plain_labels = hard_cases(image, labels, zoom_in_share=1, pink_share=0, vignette_share=0,
                          how=targets.hard_case_labels(), rng=hard_case_rng(seed))
    corrected, corrected_labels = apply_hard_cases(image, labels, augment, targets, hard_case_rng(seed))
    np.testing.assert_array_equal(corrected, shades_of_grey(np.clip(np.rint(plain), 0, 255).astype(np.uint8)))
    np.testing.assert_array_equal(corrected_labels, plain_labels)
    assert np.abs(corrected - plain).max() > 20  # the reddish cast is removed
    tf_image, tf_labels = augment_example(tf.constant(image), tf.constant(labels), augment, tf.constant(seed), targets)
    np.testing.assert_array_equal(tf_image.numpy(), corrected)
    np.testing.assert_array_equal(tf_labels.numpy(), corrected_labels)
