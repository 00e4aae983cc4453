"""An analysis' result files (:class:`moleseg.engine.pipeline.ResultFiles`): encoded once and whole when two
threads ask at once, holding the pictures only (not the image or the probabilities), and made with the settings
of the analysis they belong to (a new pixel size or overlay colour gives new files)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from moleseg.core.classical import ClassicalSegmenter
from moleseg.core.render import with_scale_bar
from moleseg.engine import pipeline
from moleseg.engine.batches import analyse_images
from moleseg.engine.pipeline import OverlayStyle


@pytest.fixture(scope="module")
def analysed() -> pipeline.Analysis:
    """A 40 × 40 px image with a dark 20 px square lesion on light skin, analysed by the classical segmenter."""
    image = np.full((40, 40, 3), 200, np.uint8)
    image[10:30, 10:30] = (90, 60, 40)
    [analysis] = analyse_images(ClassicalSegmenter(n_classes=3), [image])
    assert analysis.segmentation.lesion.sum() == 400
    return analysis


def fresh(analysis: pipeline.Analysis, **changes) -> pipeline.Analysis:
    """The same analysis with nothing drawn or encoded yet (and ``changes`` to its fields)."""
    import dataclasses

    return dataclasses.replace(analysis, **changes)


def test_two_threads_asking_at_once_get_the_same_whole_files(analysed, monkeypatch):
    encode = pipeline.encode_png
    both_inside = threading.Barrier(2, timeout=10)

    def side_by_side(array, *args):  # both threads encode the same file at the same time
        both_inside.wait()
        return encode(array, *args)

    monkeypatch.setattr(pipeline, "encode_png", side_by_side)
    analysis = fresh(analysed, pixel_size_mm=0.05)
    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(lambda _: analysis.files("square"), range(2))
    monkeypatch.setattr(pipeline, "encode_png", encode)
    expected = fresh(analysed, pixel_size_mm=0.05).files("square")
    assert first == second == expected
    assert analysis.result_files is analysis.result_files  # one set of files per analysis
    assert analysis.files("square") == expected  # what is kept is whole
    overlay = cv2.cvtColor(cv2.imdecode(np.frombuffer(first["square_overlay.png"], np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(overlay, with_scale_bar(analysis.overlay, 0.05))  # the scale bar drawn on it
    assert not np.array_equal(overlay, analysis.overlay)


def test_the_files_hold_neither_the_image_nor_the_probabilities(analysed):
    files = fresh(analysed).result_files
    kept = [value for value in vars(files).values() if isinstance(value, np.ndarray)]
    assert len(kept) == 3  # the overlay, the lesion mask and the labels
    for value in kept:
        assert not np.shares_memory(value, analysed.image)
        assert not np.shares_memory(value, analysed.segmentation.probabilities)
    assert sum(value.nbytes for value in kept) == 40 * 40 * (3 + 1 + 1)


def test_another_pixel_size_or_overlay_colour_gives_its_own_files(analysed):
    from moleseg.app.analysis import with_units

    plain = fresh(analysed)
    plain_files = plain.files("a")
    scaled = with_units(plain, 0.05, plain.style)
    assert scaled.files("a")["a_overlay.png"] == fresh(analysed, pixel_size_mm=0.05).overlay_png()
    assert scaled.files("a")["a_overlay.png"] != plain_files["a_overlay.png"]
    assert scaled.files("a")["a_mask.png"] == plain_files["a_mask.png"]
    green = OverlayStyle(fill_color=(0, 255, 0), border_color=(0, 255, 0), fill_opacity=1.0)
    recoloured = with_units(scaled, 0.05, green)
    overlay = cv2.imdecode(np.frombuffer(recoloured.overlay_png(), np.uint8), cv2.IMREAD_COLOR)
    assert tuple(overlay[20, 20]) == (0, 255, 0)  # the lesion drawn green
    assert plain.files("a") == plain_files  # the first analysis' files unchanged
    shown = plain.overlay_jpeg
    assert with_units(plain, 0.05, plain.style).overlay_jpeg is shown  # the same picture: not encoded again
    assert with_units(plain, None, green).overlay_jpeg != shown  # drawn in other colours: encoded anew


def test_the_class_picture_is_encoded_once_and_kept_for_another_pixel_size_or_colour(analysed, monkeypatch):
    from moleseg.app.analysis import with_units

    encode, encodings = pipeline.display_jpeg, []
    monkeypatch.setattr(pipeline, "display_jpeg", lambda picture: (encodings.append(1), encode(picture))[1])
    plain = fresh(analysed)
    shown = plain.class_jpeg
    assert plain.class_jpeg is shown and len(encodings) == 1
    assert cv2.imdecode(np.frombuffer(shown, np.uint8), cv2.IMREAD_COLOR).shape == (40, 40, 3)
    green = OverlayStyle(fill_color=(0, 255, 0))
    assert with_units(plain, 0.05, green).class_jpeg is shown  # the same classes: not encoded again
    assert len(encodings) == 1


def test_the_analysis_cache_counts_the_files_a_download_keeps(analysed):
    from moleseg.app.analysis import AnalysisStore

    analysis = fresh(analysed, pixel_size_mm=0.05)
    store = AnalysisStore()
    store.put(("m", "square"), analysis, ())
    seg = analysis.segmentation
    held = seg.labels.nbytes + seg.lesion.nbytes * 3 + analysis.overlay.nbytes + analysis.class_picture.nbytes
    kept = sum(map(len, analysis.files("square").values()))  # a download or a ZIP keeps them
    assert kept > analysis.overlay.nbytes  # the overlay's PNG is stored uncompressed
    shared = analysis.image.nbytes + seg.probabilities.nbytes
    assert store.nbytes >= shared + held + kept
