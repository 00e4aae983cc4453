"""Tests of the measurements' noise: simulated second photographs, a grown lesion, the published table, changes
against noise, and visits refused as not comparable."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from moleseg.app.followup import settings_caption
from moleseg.core.classical import ClassicalSegmenter
from moleseg.core.registration import incomparable_reason
from moleseg.core.repeatability import (NoiseEntry, Perturbation, grown_lesion, pooled_noise, published_noise,
                                        random_perturbation, read_noise_table, relative_change_shown, rephotographed,
                                        write_noise_table)
from moleseg.engine.compare import WITHIN_NOISE, Change, LesionMasks, compare_lesions, compare_visits


def disk(size: int, radius: float, centre: tuple[float, float]) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size]
    return (cols - centre[0]) ** 2 + (rows - centre[1]) ** 2 <= radius**2


def test_an_unperturbed_photograph_only_loses_to_jpeg():
    image = np.random.default_rng(0).integers(60, 200, (64, 80, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(image, (0, 0), 2.0)
    again = rephotographed(image, Perturbation(jpeg_quality=95))
    assert again.shape == image.shape and again.dtype == np.uint8
    assert np.abs(again.astype(int) - image).mean() < 2.0


def test_a_brighter_photograph_is_brighter_by_its_gain():
    image = np.full((40, 40, 3), 100, np.uint8)
    again = rephotographed(image, Perturbation(brightness=1.1, white_balance=(1.0, 1.0, 0.9), jpeg_quality=95))
    assert again[20, 20].tolist() == pytest.approx([110, 110, 99], abs=2)


def test_a_rotated_photograph_turns_counter_clockwise():
    image = np.zeros((101, 101, 3), np.uint8)
    image[45:56, 80:95] = 255  # a bright patch right of the centre
    again = rephotographed(image, Perturbation(rotation_deg=90.0, jpeg_quality=95))
    rows, cols = np.nonzero(again[..., 0] > 128)
    assert rows.mean() == pytest.approx(50 - 37, abs=2)  # now above the centre (y down)
    assert cols.mean() == pytest.approx(50, abs=2)


def test_random_perturbations_stay_in_their_ranges():
    rng = np.random.default_rng(1)
    drawn = [random_perturbation(rng) for _ in range(200)]
    assert max(abs(p.rotation_deg) for p in drawn) <= 20.0
    assert all(0.97 <= p.scale <= 1.03 and 0.9 <= p.brightness <= 1.1 and 75 <= p.jpeg_quality <= 95 for p in drawn)
    assert random_perturbation(np.random.default_rng(7)) == random_perturbation(np.random.default_rng(7))


def test_a_grown_lesion_has_its_area_times_the_factor_and_the_skin_far_away_unchanged():
    size = 200
    lesion = disk(size, 30, (100, 100))
    image = np.random.default_rng(2).integers(0, 255, (size, size, 3), dtype=np.uint8)
    grown_image, grown = grown_lesion(image, lesion, 1.15)
    assert grown.sum() / lesion.sum() == pytest.approx(1.15, rel=0.02)
    # Beyond the falloff ring (0.3 x the 60 px diameter past the grown radius 32.2 px) the pixels are the same.
    far = ~disk(size, 32.2 + 18 + 2, (100, 100))
    assert np.array_equal(grown_image[far], image[far])
    # The lesion's centre pixel stays where it was.
    assert grown_image[100, 100].tolist() == image[100, 100].tolist()


def test_the_pooled_noise_is_the_root_mean_square_of_the_within_lesion_sd():
    ratio = pooled_noise("asymmetry_major", "", [[0.1, 0.3], [0.2, 0.2], [0.5]])  # variances 0.02 and 0
    assert ratio.sd == pytest.approx(0.1) and ratio.coefficient == pytest.approx(0.277)
    assert ratio.lesions == 2 and not ratio.relative
    area = pooled_noise("area", "px", [[90.0, 110.0]])  # 90 % and 110 % of the mean: sd 14.14 %
    assert area.relative and area.sd == pytest.approx(math.sqrt(200.0))


def test_published_noise_of_a_size_is_its_share_of_the_before_value(tmp_path):
    table = {"area": NoiseEntry("area", "px", 4.0, 11.08, True, 40),
             "colour_red": NoiseEntry("colour_red", "%", 3.0, 8.31, False, 40)}
    assert published_noise("area", "mm2", 20.0, table) == pytest.approx(2.216)
    assert published_noise("colour_red", "%", 1.6, table) == pytest.approx(8.31)
    assert math.isnan(published_noise("fractal_dimension", "", 1.1, table))
    path = tmp_path / "noise.json"
    path.write_bytes(write_noise_table(list(table.values()), {"images": 40}))
    assert read_noise_table(path) == table
    path.write_text("{}")
    with pytest.raises(ValueError, match=r"noise.json: not a repeatability table"):
        read_noise_table(path)


def test_shares_asymmetry_and_counts_have_no_relative_change():
    assert [relative_change_shown(key, unit) for key, unit in
            [("area", "px"), ("colour_red", "%"), ("asymmetry_major", ""), ("compactness", ""), ("colour_count", "")]
            ] == [True, False, False, True, False]
    share = Change("colour_red", "Colour: red", "%", 1.6, 1.1, noise=8.0)
    assert math.isnan(share.change_percent) and share.change == pytest.approx(-0.5)
    assert share.beyond_noise is False and share.change_unit == "percentage points"
    assert Change("area", "Area", "px", 1000.0, 1200.0, noise=110.0).beyond_noise is True
    assert Change("area", "Area", "px", 1000.0, 1200.0).beyond_noise is None


def test_a_greyscale_copy_is_refused_as_not_comparable(lesion_scene):
    image, lesion = lesion_scene()
    grey = np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    assert incomparable_reason(image, image, lesion, lesion) == ""
    assert incomparable_reason(image, grey, lesion, lesion) == (
        "not comparable: the after image is greyscale and the before image is in colour (borders and colours are "
        "not measured alike)")
    bluish = np.clip(image.astype(np.float32) * [0.7, 1.0, 1.3], 0, 255).astype(np.uint8)
    assert incomparable_reason(image, bluish, lesion, lesion).startswith(
        "not comparable: the skin's white balance differs between the two images by ")
    comparison = compare_lesions(image, LesionMasks(lesion), grey, LesionMasks(lesion))
    summary = comparison.to_json()
    assert summary["registration_ok"] is True and summary["comparable"] is False
    assert summary["reason"].startswith("not comparable: the after image is greyscale")
    assert comparison.warnings[0] == summary["reason"]
    assert comparison.pdf().startswith(b"%PDF")


def test_every_change_in_the_json_has_its_noise_and_the_lesion_shift(lesion_scene):
    image, _ = lesion_scene()
    before, after = disk(320, 40, (160, 160)), disk(320, 46, (170, 154))
    table = {"area": NoiseEntry("area", "px", 4.0, 11.08, True, 40),
             "colour_red": NoiseEntry("colour_red", "%", 3.0, 8.31, False, 40)}
    comparison = compare_lesions(image, LesionMasks(before), image, LesionMasks(after), pixel_size_mm=0.01,
                                 noise_table=table)
    summary = comparison.to_json()
    assert summary["comparable"] is True and summary["reason"] == ""
    assert summary["lesion_shift_px"] == pytest.approx([10.0, -6.0], abs=0.01)
    assert summary["lesion_shift_mm"] == pytest.approx([0.1, -0.06], abs=1e-4)
    assert summary["rotation_convention"].startswith("counter-clockwise positive")
    changes = {(c["key"], c["unit"]): c for c in summary["changes"]}
    area = changes[("area", "px")]
    assert area["noise"] == pytest.approx(0.1108 * before.sum())
    assert area["beyond_noise"] is True  # 46 / 40 px radius: +32 % against 11 %
    assert changes[("area", "mm2")]["noise"] == pytest.approx(0.1108 * before.sum() * 1e-4)
    red = changes[("colour_red", "%")]
    assert red["change_percent"] is None and red["change_unit"] == "percentage points"
    assert red["noise"] == pytest.approx(8.31) and red["beyond_noise"] is False
    assert changes[("perimeter", "px")]["noise"] is None and changes[("perimeter", "px")]["beyond_noise"] is None
    rows = comparison.table()
    assert rows[0][-2:] == ["Noise", "Reading"]
    red_row = next(row for row in rows if row[0] == "Colour: red")
    assert red_row[-1] == WITHIN_NOISE and red_row[4] == "\u2014" and red_row[3].endswith(" pp")
    assert rows.index(red_row) in comparison.within_noise_rows()
    assert ("Noise", "published repeatability") in comparison.header()


def test_the_per_image_noise_is_used_when_larger(lesion_scene):
    before, _ = lesion_scene(seed=4)
    comparison = compare_visits(ClassicalSegmenter(), before, before, noise_passes=2)
    assert comparison.noise_passes == 2 and comparison.noise_seconds > 0
    area = comparison.change("area", "px")
    assert area.change == 0 and area.noise > 0 and area.beyond_noise is False
    source = f"2 simulated second photographs of each visit ({comparison.noise_seconds:.0f} s)"
    assert ("Noise", f"published repeatability and {source}") in comparison.header()
    assert settings_caption(comparison).endswith(
        f"Noise from the published repeatability (docs/repeatability.md) and {source}.")
    with pytest.raises(ValueError, match="^the per-image noise needs at least 2 passes, not 1$"):
        compare_visits(ClassicalSegmenter(), before, before, noise_passes=1)


def test_a_huge_number_of_noise_passes_is_refused_before_any_work(lesion_scene, capsys):
    # moleseg compare --noise-passes 1000000 used to start 2 million segmentations (days, with no word)
    from moleseg.cli import main
    from moleseg.core.config import MAX_NOISE_PASSES

    before, _ = lesion_scene(seed=4)
    with pytest.raises(ValueError, match=f"^the per-image noise takes at most {MAX_NOISE_PASSES} passes, not 1000000$"):
        compare_visits(ClassicalSegmenter(), before, before, noise_passes=1_000_000)
    with pytest.raises(SystemExit) as usage:
        main(["compare", "--model", "classical", "--json", "c.json", "--noise-passes", "1000000", "a.png", "b.png"])
    assert usage.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"moleseg compare: error: argument --noise-passes: must be at most {MAX_NOISE_PASSES}, not 1000000")


# --------------------------------------------------------------------------------------------------
# Real lesions through the shipped model

#: Real lesions the noise is checked on, and the longer side (px) they are reduced to.
REAL_LESIONS: int = 20
REAL_SIDE_PX: int = 384


@pytest.fixture(scope="module")
def real_comparisons(request):
    """For each of :data:`REAL_LESIONS` shared-data lesions wholly in the picture: the comparison with a
    simulated second photograph, and with the lesion grown by 15 % in area."""
    from moleseg.core.config import DERMOSCOPY_MODEL, MODELS_DIR
    from moleseg.tools import SHARED_DATA_DIR
    from moleseg.tools.repeatability import followable_images, lesion_images

    if not (SHARED_DATA_DIR / "moles" / "ph2").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA_DIR}: real-data tests skipped")
    if not (MODELS_DIR / DERMOSCOPY_MODEL).is_file():
        pytest.skip(f"{DERMOSCOPY_MODEL} is not installed")
    from moleseg.network.loading import load_segmenter

    segmenter = load_segmenter(str(MODELS_DIR / DERMOSCOPY_MODEL))
    # Another seed than the published table's sample: these lesions were not used to build it.
    images = followable_images(segmenter, lesion_images(SHARED_DATA_DIR, seed=2026), REAL_LESIONS,
                               side=REAL_SIDE_PX)
    rng = np.random.default_rng(5)
    unchanged, grown = [], []
    for image, lesion in images:
        unchanged.append(compare_visits(segmenter, image, rephotographed(image, random_perturbation(rng))))
        bigger, _ = grown_lesion(image, lesion, 1.15)
        grown.append(compare_visits(segmenter, image, bigger))
    return unchanged, grown


@pytest.mark.slow
def test_an_unchanged_lesion_photographed_again_is_within_noise(real_comparisons):
    unchanged, _ = real_comparisons
    assert all(comparison.comparable for comparison in unchanged)
    pairs = [c.beyond_noise for comparison in unchanged for c in comparison.changes if c.beyond_noise is not None]
    assert len(pairs) >= 20 * REAL_LESIONS
    assert sum(pairs) <= 0.05 * len(pairs), [
        (c.key, round(c.change, 3), round(c.noise, 3)) for comparison in unchanged for c in comparison.changes
        if c.beyond_noise]


#: Share of the lesions grown by 15 % in area whose growth must read beyond noise in area and diameter. The
#: +-3 % scale of a second photograph alone makes the area's repeatability coefficient about 10 % (11 % with the
#: segmentation's own noise, docs/repeatability.md), so a 15 % growth clears it by little (the least of these 20
#: reads +11.8 %).
GROWN_DETECTED_SHARE: float = 0.95


@pytest.mark.slow
def test_a_lesion_grown_by_15_percent_is_beyond_noise_in_area_and_diameter(real_comparisons):
    _, grown = real_comparisons
    assert all(comparison.comparable for comparison in grown)
    for key in ("area", "equivalent_diameter"):
        changes = [comparison.change(key, "px") for comparison in grown]
        assert all(c.change_percent > 0 for c in changes)
        beyond = sum(bool(c.beyond_noise) for c in changes)
        assert beyond >= GROWN_DETECTED_SHARE * len(grown), (
            key, [(round(c.change_percent, 1), round(100 * c.noise / c.before, 1)) for c in changes])


def test_skin_matching_gives_the_after_skin_the_before_skin_colour():
    from moleseg.core.colour import skin_colour, skin_matched

    image = np.full((20, 20, 3), (100, 120, 140), np.uint8)
    lesion = np.zeros((20, 20), bool)
    lesion[5:10, 5:10] = True
    image[lesion] = (50, 40, 30)
    image[0, :] = (5, 5, 5)  # vignette: left out of the skin
    assert skin_colour(image, lesion).tolist() == [100.0, 120.0, 140.0]
    matched = skin_matched(image, lesion, np.array([110.0, 132.0, 126.0]))
    assert matched[15, 15].tolist() == pytest.approx([110, 132, 126], abs=1)
    assert matched[7, 7].tolist() == pytest.approx([50 * 111 / 101, 40 * 133 / 121, 30 * 127 / 141], abs=1)
