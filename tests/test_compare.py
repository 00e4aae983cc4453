"""Tests of the visit comparison: rigid registration, change figures, the CLI and the PDF."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from moleseg.cli import main
from moleseg.core.classical import ClassicalSegmenter
from moleseg.core.imageio import read_image
from moleseg.core.imagewrite import write_png
from moleseg.core.registration import MIN_QUALITY, register
from moleseg.engine.compare import compare_visits


@pytest.fixture(scope="module")
def segmenter() -> ClassicalSegmenter:
    return ClassicalSegmenter()


@pytest.mark.parametrize("angle_deg, shift_px", [(10.0, (12.0, -7.0)), (-10.0, (-5.0, 9.0))])
def test_rotated_and_shifted_copy_has_no_change(segmenter, lesion_scene, angle_deg, shift_px):
    before, _ = lesion_scene()
    after, _ = lesion_scene(angle_deg=angle_deg, shift_px=shift_px)
    comparison = compare_visits(segmenter, before, after)
    summary = comparison.to_json()
    assert summary["rotation_deg"] == pytest.approx(angle_deg, abs=1.0)
    assert abs(summary["area_change_percent"]) < 3.0
    assert summary["registration_quality"] >= MIN_QUALITY
    assert summary["registration_ok"] is True
    assert summary["warnings"] == []
    assert summary["transform"] == "rigid"
    assert summary["scale"] == pytest.approx(1.0, abs=1e-9)
    # The after lesion drawn back in the before frame lies on the before lesion.
    aligned, first = comparison.aligned_after_lesion, comparison.before.lesion
    assert np.count_nonzero(aligned & first) / np.count_nonzero(aligned | first) > 0.95


def test_grown_lesion_gives_the_known_growth(segmenter, lesion_scene):
    before, true_before = lesion_scene(radius_px=60)
    after, true_after = lesion_scene(radius_px=66, angle_deg=5.0, shift_px=(4.0, 3.0))
    expected = 100.0 * (true_after.sum() / true_before.sum() - 1.0)  # about 21 %
    comparison = compare_visits(segmenter, before, after, pixel_size_mm=0.02)
    assert expected > 15
    assert comparison.area_change_percent == pytest.approx(expected, abs=3.0)
    assert comparison.registration.ok
    diameter = comparison.change("equivalent_diameter", "mm")
    assert diameter.change == pytest.approx(0.02 * (np.sqrt(4 * true_after.sum() / np.pi)
                                                    - np.sqrt(4 * true_before.sum() / np.pi)), rel=0.2)


def test_an_earlier_comparison_s_segmentations_and_noise_are_taken_as_they_are(lesion_scene):
    class Counting(ClassicalSegmenter):
        images = 0

        def predict_probabilities(self, images):
            Counting.images += len(images)
            return super().predict_probabilities(images)

    segmenter = Counting()
    before, _ = lesion_scene(radius_px=60)
    after, _ = lesion_scene(radius_px=66, angle_deg=5.0)
    earlier = compare_visits(segmenter, before, after, noise_passes=2)
    assert Counting.images == 2 + 2 * 2
    again = compare_visits(segmenter, before, after, pixel_size_mm=0.02, allow_scale=True, earlier=earlier)
    fresh = compare_visits(ClassicalSegmenter(), before, after, pixel_size_mm=0.02, allow_scale=True)
    assert Counting.images == 6 and again.before is earlier.before and again.lesion_noise == {}
    assert again.to_json() == fresh.to_json()
    kept = compare_visits(segmenter, before, after, allow_scale=True, noise_passes=2, earlier=earlier)
    assert Counting.images == 6 and kept.lesion_noise == earlier.lesion_noise != {}
    assert kept.noise_seconds == earlier.noise_seconds  # the time it took when it was measured
    compare_visits(segmenter, before, after, pixel_size_mm=0.02, noise_passes=2, earlier=earlier)
    assert Counting.images == 6 + 2 * 2  # measured in mm now: the noise measured anew, not the lesions


def test_unrelated_images_warn(segmenter, lesion_scene):
    before, _ = lesion_scene(seed=0)
    other, _ = lesion_scene(seed=7, radius_px=45)
    comparison = compare_visits(segmenter, before, other)
    assert comparison.registration.quality < MIN_QUALITY
    assert not comparison.registration.ok
    assert comparison.warnings and "alignment failed" in comparison.warnings[0]


def test_plain_images_cannot_be_aligned():
    plain = np.full((64, 64, 3), 200, np.uint8)
    registration = register(plain, plain)
    assert not registration.ok and registration.quality == 0.0
    assert "texture" in registration.message or "matching points" in registration.message


def test_scale_is_fitted_only_when_asked(lesion_scene):
    before, _ = lesion_scene()
    height, width = before.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), 0.0, 1.1)
    zoomed = cv2.warpAffine(before, matrix, (width, height), borderMode=cv2.BORDER_REFLECT101)
    assert register(before, zoomed, allow_scale=True).scale == pytest.approx(1.1, abs=0.01)
    assert register(before, zoomed).scale == pytest.approx(1.0, abs=1e-9)


def test_cli_compare_writes_json_and_pdf(tmp_path, lesion_scene, capsys):
    before, _ = lesion_scene()
    after, _ = lesion_scene(angle_deg=10.0, shift_px=(6.0, 6.0))
    write_png(tmp_path / "before.png", before)
    write_png(tmp_path / "after.png", after)
    code = main(["compare", str(tmp_path / "before.png"), str(tmp_path / "after.png"), "--model", "classical",
                 "--pixel-size-mm", "0.02", "--json", str(tmp_path / "c.json"), "--pdf", str(tmp_path / "c.pdf"),
                 "--noise-passes", "2"])
    assert code == 0
    summary = json.loads((tmp_path / "c.json").read_text())
    assert summary["rotation_deg"] == pytest.approx(10.0, abs=1.0)
    assert len(summary["translation_px"]) == 2
    # The lesion sits at the centre the scene turns about: its centre moved by the shift alone.
    assert summary["lesion_shift_px"] == pytest.approx([6.0, 6.0], abs=1.5)
    assert summary["lesion_shift_mm"] == pytest.approx([0.12, 0.12], abs=0.03)
    assert summary["comparable"] is True and summary["noise_passes"] == 2
    area = next(c for c in summary["changes"] if c["key"] == "area" and c["unit"] == "px")
    assert area["noise"] > abs(area["change"]) and area["beyond_noise"] is False
    assert abs(summary["area_change_percent"]) < 3.0
    assert 0 <= summary["registration_quality"] <= 1
    assert any(c["key"] == "area" and c["unit"] == "mm2" for c in summary["changes"])
    pdf = (tmp_path / "c.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") <= 1
    printed = capsys.readouterr().out
    assert "area change" in printed and "beyond measurement noise: " in printed


def test_cli_compare_names_a_bad_file(tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"not an image")
    code = main(["compare", str(tmp_path / "broken.png"), str(tmp_path / "broken.png"), "--model", "classical",
                 "--json", str(tmp_path / "c.json")])
    assert code == 2
    assert "broken.png" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()


def test_real_image_rotated_copy(segmenter, shared_data):
    images = sorted((shared_data / "moles" / "ph2" / "images").glob("*.jpg"))
    if not images:
        pytest.skip(f"no PH2 images in {shared_data / 'moles' / 'ph2' / 'images'}")
    before = read_image(images[0])
    height, width = before.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), 10.0, 1.0)
    matrix[:, 2] += (15.0, -10.0)
    after = cv2.warpAffine(before, matrix, (width, height), borderMode=cv2.BORDER_REFLECT101)
    comparison = compare_visits(segmenter, before, after)
    assert comparison.registration.ok
    assert comparison.registration.rotation_deg == pytest.approx(10.0, abs=1.0)
    assert abs(comparison.area_change_percent) < 3.0


def test_swipe_shows_before_left_of_the_line_and_after_right(segmenter, lesion_scene):
    from moleseg.core.render import swipe

    before, _ = lesion_scene()
    after, _ = lesion_scene(angle_deg=10.0, shift_px=(8.0, -4.0))
    comparison = compare_visits(segmenter, before, after)
    picture = comparison.swipe_picture(0.5)
    assert picture.shape == before.shape
    left_half = comparison.side_by_side_picture()[:, : before.shape[1] // 2 - 2]
    assert np.array_equal(picture[:, : before.shape[1] // 2 - 2], left_half)  # the before panel, border drawn
    assert np.array_equal(comparison.swipe_picture(0.0)[:, 2:], comparison.side_by_side_picture()[:, -before.shape[1] + 2:])
    a, b = np.zeros((4, 10, 3), np.uint8), np.full((4, 10, 3), 9, np.uint8)
    wiped = swipe(a, b, 0.3, line_color=(200, 200, 200))
    assert (wiped[:, :2] == 0).all() and (wiped[:, 4:] == 9).all() and (wiped[:, 2:4] == 200).all()
    with pytest.raises(ValueError):
        swipe(a, b[:, :5], 0.5)
    with pytest.raises(ValueError):
        swipe(a, b, 1.5)


def test_two_saved_visits_compare_with_their_saved_lesions(tmp_path, segmenter, lesion_scene):
    from moleseg.core.measure import measure_lesion
    from moleseg.engine.compare import compare_records
    from moleseg.engine.records import Records
    from moleseg.engine.recordtypes import User

    user = User("clinician")
    before, true_before = lesion_scene(radius_px=60)
    after, true_after = lesion_scene(radius_px=66, angle_deg=5.0, shift_px=(4.0, 3.0))
    records = Records(tmp_path)
    first = records.save(user, before, true_before, measure_lesion(true_before), lesion="arm",
                         visit_date="2026-01-01", model_name="classical", cleanup={"rule": "article"},
                         pixel_size_mm=0.02, corrected=True)
    second = records.save(user, after, true_after, measure_lesion(true_after), lesion="arm", visit_date="2026-06-01",
                          model_name="classical", cleanup={"rule": "article"}, pixel_size_mm=0.02)
    comparison = compare_records(records.open(user, first), records.open(user, second))
    expected = 100.0 * (true_after.sum() / true_before.sum() - 1.0)
    assert comparison.area_change_percent == pytest.approx(expected, abs=0.01)  # the saved masks, as they were
    assert comparison.registration.ok and comparison.registration.rotation_deg == pytest.approx(5.0, abs=1.0)
    assert comparison.pixel_size_mm == 0.02 and comparison.change("area", "mm2") is not None
    assert comparison.model_name == "saved borders (classical)" and comparison.warnings == []
    third = records.save(user, after, true_after, measure_lesion(true_after), lesion="arm", pixel_size_mm=0.03)
    assert "different pixel sizes" in compare_records(records.open(user, first), records.open(user, third)).warnings[0]


def test_a_thin_strip_or_a_dot_is_too_small_to_compare(segmenter, lesion_scene):
    before, _ = lesion_scene()
    strip = np.ascontiguousarray(before[:20])  # full width, 20 px high: refused as predict refuses it
    with pytest.raises(ValueError, match=r"^the after image: image too small: \d+ x 20 px, at least 32 px"):
        compare_visits(segmenter, before, strip)
    with pytest.raises(ValueError, match=r"^the before image: image too small: 3 x 3 px"):
        compare_visits(segmenter, np.zeros((3, 3, 3), np.uint8), before)


@pytest.mark.parametrize("option", ["--json", "--pdf"])
def test_cli_compare_checks_its_output_files_before_the_work(tmp_path, lesion_scene, capsys, monkeypatch, option):
    import moleseg.engine.compare as compare

    before, _ = lesion_scene()
    write_png(tmp_path / "before.png", before)
    monkeypatch.setattr(compare, "segment", lambda *a, **k: pytest.fail("segmented"))
    outputs = {"--json": str(tmp_path / "c.json"), "--pdf": str(tmp_path / "c.pdf")}
    outputs[option] = str(tmp_path)  # a folder
    code = main(["compare", str(tmp_path / "before.png"), str(tmp_path / "before.png"), "--model", "classical",
                 *(item for pair in outputs.items() for item in pair)])
    assert code == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: {option} {tmp_path} is a folder: give a file name"]
    assert not (tmp_path / "c.json").exists() and not (tmp_path / "c.pdf").exists()


def test_the_changes_are_rounded_per_measurement_as_on_the_analyse_page():
    from moleseg.core.measure import Measurement
    from moleseg.engine.compare import Change

    compactness = Change("compactness", "Compactness index", "", 1.23349, 1.3)
    assert compactness.texts()[:4] == (Measurement("compactness", "", 1.23349, "", "").text, "1.300", "0.067", "5.4")
    assert compactness.texts()[4] == "\u2014"  # no noise known
    assert Change("compactness", "Compactness index", "", 1.2, 1.3, noise=0.0512).texts()[4] == "\u00b10.051"
    assert compactness.texts()[0] == "1.233"  # not 3 significant figures (1.23)
    area = Change("area", "Area", "mm2", 0.004, 0.0125)  # a small area's 6 decimals, as in the CSV and PDF
    assert area.texts()[:3] == ("0.004000", "0.0125", "0.008500")
    assert Change("area", "Area", "px", 12345.0, 12000.0).texts()[:3] == ("12,345", "12,000", "-345")
    assert Change("perimeter", "Perimeter", "mm", 1.0, 1.0).texts()[2] == "0.000"  # never "-0.000"


def test_cli_compare_refuses_a_greyscale_copy_with_the_reason_first(tmp_path, lesion_scene, capsys):
    before, _ = lesion_scene()
    grey = np.repeat(cv2.cvtColor(before, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    write_png(tmp_path / "before.png", before)
    write_png(tmp_path / "grey.png", grey)
    code = main(["compare", str(tmp_path / "before.png"), str(tmp_path / "grey.png"), "--model", "classical",
                 "--json", str(tmp_path / "c.json")])
    assert code == 0
    summary = json.loads((tmp_path / "c.json").read_text())
    assert summary["registration_ok"] is True and summary["comparable"] is False
    printed = capsys.readouterr()
    assert printed.err.startswith("warning: not comparable: the after image is greyscale and the before image is "
                                  "in colour")
    assert printed.out.splitlines()[-1] == "no change is reported: the two visits are not comparable (see the warning)"
    assert "area change" not in printed.out


def test_the_pictures_the_page_shows_are_at_most_the_display_size():
    # drawn again and encoded for the browser at every rerun (each step of the swipe slider): at the uploads' full
    # size two 25-megapixel images were warped, outlined and encoded whole each time
    from synthetic import mole_image
    from moleseg.core.render import DISPLAY_SIDE_PX
    from moleseg.engine.compare import LesionMasks, compare_lesions

    image, lesion = mole_image(90, DISPLAY_SIDE_PX + 300)
    comparison = compare_lesions(image, LesionMasks(lesion), image, LesionMasks(lesion))
    assert comparison.borders_picture().shape == comparison.swipe_picture(0.5).shape == (72, DISPLAY_SIDE_PX, 3)
    assert comparison.side_by_side_picture().shape == (72, 2 * DISPLAY_SIDE_PX + 8, 3)
    assert comparison.pdf().startswith(b"%PDF")
