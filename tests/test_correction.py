"""Correcting a lesion by hand: strokes, add/remove, undo/reset, and the analysis that follows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moleseg.core.classical import ClassicalSegmenter
from moleseg.engine.correction import Corrections, Edit, Stroke, apply_edit, replay, stroke_mask
from moleseg.engine.batches import analyse_images
from moleseg.engine.pipeline import CORRECTED_NOTE

SHAPE = (60, 80)


def test_a_polygon_covers_the_pixels_whose_centres_are_inside():
    square = Stroke.of([[10, 10], [30, 10], [30, 30], [10, 30]])  # pixel corners: cols/rows 10..29
    mask = stroke_mask(square, SHAPE)
    expected = np.zeros(SHAPE, bool)
    expected[10:30, 10:30] = True
    np.testing.assert_array_equal(mask, expected)


def test_a_brush_line_covers_its_width_and_points_outside_are_clipped():
    line = Stroke.of([[5.5, 20.5], [200.5, 20.5]], width_px=5)  # along row 20, off the right edge
    mask = stroke_mask(line, SHAPE)
    assert mask[18:23, 10].all() and not mask[16, 10] and not mask[24, 10]
    assert mask[20, SHAPE[1] - 1] and mask.sum() < 6 * SHAPE[1]
    dot = stroke_mask(Stroke.of([[40.5, 40.5]], width_px=6), SHAPE)
    assert dot[40, 40] and 20 <= dot.sum() <= 40


def test_add_remove_undo_reset():
    lesion = np.zeros(SHAPE, bool)
    lesion[20:40, 20:40] = True
    corrections = Corrections()
    assert not corrections.push([Stroke.of([])], add=True, shape=SHAPE)  # an empty drawing records nothing
    assert corrections.push([Stroke.of([[40, 20], [60, 20], [60, 40], [40, 40]])], add=True, shape=SHAPE)
    assert corrections.apply(lesion).sum() == 400 + 400
    assert corrections.push([Stroke.of([[20, 20], [30, 20], [30, 40], [20, 40]])], add=False, shape=SHAPE)
    corrected = corrections.apply(lesion)
    assert corrected.sum() == 800 - 200 and not corrected[25, 25] and corrected[25, 45]
    assert corrections.undo() and corrections.apply(lesion).sum() == 800
    corrections.reset()
    assert not corrections.any and not corrections.undo()
    np.testing.assert_array_equal(corrections.apply(lesion), lesion)
    edit = Edit((Stroke.of([[0, 0], [5, 0], [5, 5]]),), add=True)
    np.testing.assert_array_equal(replay(lesion, [edit]), apply_edit(lesion, edit))


def _mole() -> np.ndarray:
    yy, xx = np.mgrid[:96, :112]
    mask = ((yy - 48) / 25) ** 2 + ((xx - 56) / 30) ** 2 <= 1
    return np.where(mask[..., None], np.array([90, 55, 40]), np.array([224, 172, 150])).astype(np.uint8)


def test_a_corrected_analysis_has_its_own_band_measurements_and_says_so_in_every_export():
    segmenter = ClassicalSegmenter(n_classes=3)
    analysis = analyse_images(segmenter, [_mole()], pixel_size_mm=0.1)[0]
    area = analysis.measurement_row["area_px"]
    corrections = Corrections()
    corner = Stroke.of([[0, 0], [30, 0], [30, 20], [0, 20]])  # a 30 x 20 px corner
    corrections.push([corner], add=True, shape=analysis.image.shape[:2])
    corrected = analysis.corrected(corrections)
    assert corrected.corrected_by_hand and not analysis.corrected_by_hand
    assert corrected.measurement_row["area_px"] == area + 600
    assert corrected.measurement_row["area_mm2"] == pytest.approx((area + 600) * 0.01)
    assert corrected.measurement_row["n_components"] == 2
    seg = corrected.segmentation
    assert seg.border[0:20, 0:30].any() and not seg.border[10, 15]  # the new region has its own band
    np.testing.assert_array_equal(seg.inside, seg.lesion & ~seg.border)
    assert CORRECTED_NOTE in corrected.notes and analysis.notes is None
    assert corrected.pdf("mole.png").startswith(b"%PDF")
    files = corrected.outline_files("mole", ["geojson"])
    assert json.loads(files["mole_outline.geojson"])["features"][0]["properties"]["corrected_by_hand"] is True
    assert analysis.corrected(Corrections()) is analysis


def test_canvas_json_becomes_strokes_in_image_px():
    from moleseg.app.hand_correction import canvas_strokes

    data = {"objects": [
        {"type": "Polygon", "points": [{"x": 10, "y": 10}, {"x": 20, "y": 10}, {"x": 20, "y": 30}]},
        {"type": "path", "strokeWidth": 4, "path": [["M", 1, 2], ["Q", 3, 4, 5, 6], ["L", 7, 8]]},
        {"type": "rect", "left": 2, "top": 3, "width": 4, "height": 5, "scaleX": 1, "scaleY": 2},
        {"type": "circle", "left": 1, "top": 1, "radius": 3},
    ]}
    polygon, brush, rect = canvas_strokes(data, scale=2.0, widest_px=1000)
    assert polygon == Stroke.of([[20, 20], [40, 20], [40, 60]])
    assert brush == Stroke.of([[2, 4], [6, 8], [10, 12], [14, 16]], width_px=8)
    assert rect == Stroke.of([[4, 6], [12, 6], [12, 26], [4, 26]])
    assert canvas_strokes(None, 1.0, 1000) == [] and canvas_strokes({"objects": []}, 1.0, 1000) == []


def test_a_brush_wider_than_the_picture_covers_it_without_a_canvas_of_its_width():
    """The canvas's stroke width comes from the browser: 1e7 px asked for a scratch canvas of 1e7 x 1e7 px
    (MemoryError; 1e5 px, 40 GB, could take the server's memory)."""
    mask = stroke_mask(Stroke.of([[5.5, 5.5], [6.5, 6.5]], width_px=1e7), SHAPE)
    assert mask.all()


def test_canvas_json_from_the_browser_that_is_not_a_drawing_is_skipped():
    """A crafted component message (a browser's to change): wrong kinds, non-finite numbers, an item that
    is no object gave a stack trace, or a NaN point that failed later in the brush."""
    from moleseg.app.hand_correction import canvas_strokes

    good = {"type": "Polygon", "points": [{"x": 10, "y": 10}, {"x": 20, "y": 10}, {"x": 20, "y": 30}]}
    data = {"objects": [
        "junk", {"type": "polygon", "points": [{"x": "a", "y": 1}] * 3}, {"type": "polygon", "points": [7, 8, 9]},
        {"type": "path", "strokeWidth": 4, "path": [["M", float("nan"), 2], ["L", 3, 4]]},
        {"type": "path", "strokeWidth": float("inf"), "path": [["M", 1, 2]]}, {"type": "path", "path": "M 1 2"},
        {"type": "rect", "left": 2, "top": 3, "width": "wide", "height": 5}, good]}
    assert canvas_strokes(data, scale=1.0, widest_px=1000) == [Stroke.of([[10, 10], [20, 10], [20, 30]])]
    assert canvas_strokes({"objects": "all"}, 1.0, 1000) == []
    assert canvas_strokes(["not", "a", "mapping"], 1.0, 1000) == []


@pytest.mark.parametrize(("sent", "expected"), [({"width": 730}, 730), ({"width": float("inf")}, None),
                                                ({"width": float("nan")}, None), ({"width": True}, None),
                                                ({"width": "730"}, None), (None, None)])
def test_the_width_a_browser_reports_for_the_canvas_is_a_finite_number_or_none(monkeypatch, sent, expected):
    """The width comes from the browser (JSON's 1e400 reads as infinity): int(inf) raised OverflowError."""
    from moleseg.app import ui

    monkeypatch.setattr(ui, "_width_probe", lambda **options: sent)
    assert ui.available_width("room") == expected


def test_a_polygon_covers_the_same_pixels_as_skimage_s_centre_test_row_by_row():
    """Polygons are filled by rows (the cost grows with the rows and the corners, not their product with the
    pixels: skimage's test of each pixel against every corner took 24 s for 10 000 corners on 1 Mpx); the pixels
    stay those whose centre skimage's even-odd test puts inside, self-crossing and off-image polygons included."""
    from skimage.draw import polygon as draw_polygon

    rng = np.random.default_rng(7)
    for corners in [3, 4, 9, 30, 200]:
        for _ in range(12):
            points = rng.uniform(-20, 100, (corners, 2))
            expected = np.zeros(SHAPE, bool)
            centres = points - 0.5
            expected[draw_polygon(centres[:, 1], centres[:, 0], SHAPE)] = True
            np.testing.assert_array_equal(stroke_mask(Stroke.of(points), SHAPE), expected)
    far = Stroke.of([[-1e300, -1e300], [1e300, -1e300], [1e300, 1e300], [-1e300, 1e300]])  # the browser's numbers
    assert stroke_mask(far, SHAPE).all()


def test_a_drawing_beyond_the_limits_is_refused_whole():
    """A browser may send any drawing (the canvas's component value): a polygon of 10^6 corners, 10^6 points, or
    strokes whose boxes cover the picture many times over cost minutes of CPU on every run that replays them."""
    from moleseg.engine.correction import MAX_CORRECTION_COVER, MAX_DRAWING_POINTS, MAX_POLYGON_CORNERS

    corrections = Corrections()
    ring = np.linspace(0, 2 * np.pi, MAX_POLYGON_CORNERS + 1, endpoint=False)
    with pytest.raises(ValueError, match=f"more than {MAX_POLYGON_CORNERS} corners"):
        corrections.push([Stroke.of(np.c_[40 + 20 * np.cos(ring), 30 + 20 * np.sin(ring)])], add=True, shape=SHAPE)
    scribble = [Stroke.of([[5.5, 5.5]] * (MAX_DRAWING_POINTS // 2 + 1), width_px=2)] * 2
    with pytest.raises(ValueError, match=f"more than {MAX_DRAWING_POINTS} points"):
        corrections.push(scribble, add=True, shape=SHAPE)
    assert not corrections.any  # nothing of either recorded
    whole = Stroke.of([[0, 0], [80, 0], [80, 60], [0, 60]])  # its box: the picture once
    assert corrections.push([whole] * MAX_CORRECTION_COVER, add=True, shape=SHAPE)
    with pytest.raises(ValueError, match=f"{MAX_CORRECTION_COVER} times"):  # counted over all of an image's edits
        corrections.push([Stroke.of([[0, 0], [2, 0], [2, 2]])], add=False, shape=SHAPE)
    assert len(corrections.edits) == 1
    assert corrections.undo() and corrections.push([whole], add=False, shape=SHAPE)  # undone: its share is free


def test_a_forged_brush_width_is_held_to_the_widest_the_slider_offers():
    """The canvas's strokeWidth is the browser's: 10^12 px on a 2000 px picture made a scratch canvas three times
    the picture's size each way and its distance transform (6 s, 1.9 GB; a 25 Mpx picture, the readers' limit,
    some 11 GB)."""
    from moleseg.app.hand_correction import brush_width_limit, canvas_strokes

    assert brush_width_limit(2000) == 200 and brush_width_limit(8) == 2
    data = {"objects": [{"type": "path", "strokeWidth": 1e12, "path": [["M", 1, 2], ["L", 3, 4]]},
                        {"type": "path", "strokeWidth": 3, "path": [["M", 1, 2], ["L", 3, 4]]}]}
    wide, narrow = canvas_strokes(data, scale=2.0, widest_px=brush_width_limit(2000))
    assert wide.width_px == 200 and narrow.width_px == 6


def test_a_drawing_of_a_million_points_is_read_no_further_than_the_limit_and_refused():
    """25 MB of widget state (Streamlit's limit for a browser's message) holds a million points: each run read them
    all (some 3 s), and a polygon of them took hours to fill."""
    from moleseg.app.hand_correction import canvas_strokes
    from moleseg.engine.correction import MAX_DRAWING_POINTS

    corners = [{"x": float(i % 80), "y": float(i % 60)} for i in range(10**6)]
    strokes = canvas_strokes({"objects": [{"type": "polygon", "points": corners}] * 3}, 1.0, 8)
    assert [len(stroke.points) for stroke in strokes] == [MAX_DRAWING_POINTS + 1]
    assert "more than" in Corrections().refusal(strokes, SHAPE)


def test_a_run_replays_only_the_edits_recorded_since_the_last_one(monkeypatch):
    """Every run that shows an image replays its edits (a pass over the picture each, and filling its holes
    another: 0.7 s each on 25 Mpx): the last result is kept and only what was drawn since is replayed on it."""
    from moleseg.engine import correction

    applied = []
    real = correction.apply_edit
    monkeypatch.setattr(correction, "apply_edit", lambda lesion, edit, fill: applied.append(edit) or real(
        lesion, edit, fill))
    lesion = np.zeros(SHAPE, bool)
    lesion[20:40, 20:40] = True
    corrections = Corrections()
    squares = [Stroke.of([[x, 5], [x + 4, 5], [x + 4, 9], [x, 9]]) for x in (5, 15, 25)]
    for square in squares:
        corrections.push([square], add=True, shape=SHAPE)
    first = corrections.apply(lesion)
    assert len(applied) == 3 and first.sum() == 400 + 3 * 16
    assert np.array_equal(corrections.apply(lesion), first) and len(applied) == 3  # nothing new: nothing replayed
    corrections.push([Stroke.of([[20, 20], [30, 20], [30, 30], [20, 30]])], add=False, shape=SHAPE)
    assert corrections.apply(lesion).sum() == 400 + 3 * 16 - 100 and len(applied) == 4  # the new one alone
    corrections.undo()
    assert np.array_equal(corrections.apply(lesion), first) and len(applied) == 4  # an undo: the result before
    corrections.undo()
    assert corrections.apply(lesion).sum() == 400 + 2 * 16 and len(applied) == 6  # a second one: all again
    assert corrections.apply(lesion, fill_holes=True).sum() == 400 + 2 * 16 and len(applied) == 8
    other = lesion.copy()
    other[0, 0] = True
    assert corrections.apply(other).sum() == 400 + 2 * 16 + 1 and len(applied) == 10  # another lesion: all again
    corrections.apply(other)[:] = False  # what a caller does with its copy stays its own
    assert corrections.apply(other).sum() == 400 + 2 * 16 + 1


def test_a_drawing_of_too_many_strokes_or_an_image_of_too_many_edits_is_refused():
    from moleseg.engine.correction import MAX_DRAWING_STROKES, MAX_EDITS

    dots = [Stroke.of([[5.5, 5.5]], width_px=2)]
    corrections = Corrections()
    with pytest.raises(ValueError, match=f"more than {MAX_DRAWING_STROKES} strokes"):
        corrections.push(dots * (MAX_DRAWING_STROKES + 1), add=True, shape=SHAPE)
    for _ in range(MAX_EDITS):
        assert corrections.push(dots, add=True, shape=SHAPE)
    assert corrections.refusal(dots, SHAPE) == (f"This image has {MAX_EDITS} hand edits, the most it keeps: undo or "
                                                "reset some first.")
