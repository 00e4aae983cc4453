"""The engine's one batch pipeline (:func:`moleseg.engine.batches.segment_batches`): images read, predicted,
cleaned and measured in batches across threads, each image's result in input order and a failure kept to the
image at fault, nothing more read once its reader stops; the Analyse page's uploads through it
(:func:`moleseg.engine.batches.analyse_batches`, :func:`moleseg.app.analysis.analyse_uploads`) and
``moleseg predict``'s files (:func:`moleseg.engine.predictfiles.predict_files`). Tiny synthetic images and the
classical segmenter: no network."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import errno
import threading

from synthetic import mole_image, png_bytes
from moleseg.core.classical import ClassicalSegmenter
from moleseg.core.imageio import ImageReadError, read_image
from moleseg.core.imagewrite import write_png
from moleseg.engine.batches import analyse_batches, analyse_images, failure_reason, segment_batches
from moleseg.engine.pipeline import Analysis
from moleseg.engine.predictfiles import WRITES_AHEAD, predict_files

BAD_FILE = "bad.png: not an image, or not a supported format (expected JPEG, PNG, BMP, TIFF, GIF, WebP or DICOM)"


class RefusesDarkImages(ClassicalSegmenter):
    """The classical segmenter, failing any call whose images include an all-black one (a network error that
    only one image causes); it records the size of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def predict_probabilities(self, images):
        self.calls.append(len(images))
        if any(not image.any() for image in images):
            raise RuntimeError("the network cannot take this image")
        return super().predict_probabilities(images)


def test_each_image_gets_its_own_result_in_order_and_a_failure_stays_with_its_image():
    moles = [mole_image(48, 56, seed=seed)[0] for seed in range(4)]
    readers = [functools.partial(np.asarray, moles[0]),
               functools.partial(read_image, b"not an image", name="bad.png"),
               functools.partial(np.asarray, np.zeros((20, 40, 3), np.uint8)),  # under 32 px
               functools.partial(np.asarray, moles[1]),
               functools.partial(np.asarray, np.zeros((40, 40, 3), np.uint8)),  # the network refuses it
               functools.partial(np.asarray, moles[2]),
               functools.partial(np.asarray, moles[3])]
    segmenter = RefusesDarkImages()
    prepared: list[Analysis] = []
    batches = list(analyse_batches(segmenter, readers, batch_size=4, workers=2, prepare=prepared.append))
    assert [len(batch) for batch in batches] == [4, 3]
    results = [result for batch in batches for result in batch]
    assert isinstance(results[1], ImageReadError) and str(results[1]) == BAD_FILE
    assert isinstance(results[2], ValueError)
    assert str(results[2]) == "image too small: 40 x 20 px, at least 32 px per side are needed"
    assert isinstance(results[4], RuntimeError) and str(results[4]) == "the network cannot take this image"
    # the first batch's two readable images in one call; the second batch's three, then each alone
    assert segmenter.calls == [2, 3, 1, 1, 1]
    alone = analyse_images(ClassicalSegmenter(), moles)
    for result, expected in zip([results[0], results[3], results[5], results[6]], alone):
        assert isinstance(result, Analysis)
        assert result.measurement_row == expected.measurement_row
        np.testing.assert_array_equal(result.segmentation.lesion, expected.segmentation.lesion)
    assert sorted(map(id, prepared)) == sorted(id(result) for result in results if isinstance(result, Analysis))
    assert list(analyse_batches(segmenter, [])) == []


def test_an_error_while_preparing_what_is_shown_of_an_image_is_that_images_result():
    def prepare(analysis: Analysis) -> None:
        if analysis.image.shape[0] == 40:
            raise MemoryError("no room for its thumbnail")

    images = [mole_image(height, 56)[0] for height in (48, 40)]
    (batch,) = analyse_batches(ClassicalSegmenter(), [functools.partial(np.asarray, image) for image in images],
                               prepare=prepare)
    assert isinstance(batch[0], Analysis) and isinstance(batch[1], MemoryError)


def test_analyse_images_raises_the_first_images_error_and_refuses_a_small_image_before_predicting():
    segmenter = RefusesDarkImages()
    with pytest.raises(ValueError, match="^image too small: 40 x 20 px"):
        analyse_images(segmenter, [mole_image(48, 56)[0], np.zeros((20, 40, 3), np.uint8)])
    assert segmenter.calls == []
    with pytest.raises(RuntimeError, match="^the network cannot take this image$"):
        analyse_images(segmenter, [mole_image(48, 56)[0], np.zeros((40, 40, 3), np.uint8)])


def test_the_analyse_page_reports_a_bad_upload_and_analyses_the_others_in_batches():
    from moleseg.app.analysis import AnalysisStore, Upload, analyse_uploads

    uploads = [Upload(f"{index}.png", png_bytes(mole_image(48, 56, seed=index)[0])) for index in range(5)]
    uploads.insert(2, Upload("bad.png", b"not an image"))
    store, progress = AnalysisStore(), []
    outcomes = analyse_uploads(store, ClassicalSegmenter(), "m", uploads,
                               progress=lambda done, total, name: progress.append((done, total, name)))
    assert [outcome.error for outcome in outcomes] == [None, None, BAD_FILE, None, None, None]
    assert [outcome.ok for outcome in outcomes] == [True, True, False, True, True, True]
    assert progress == [(4, 6, "2.png"), (6, 6, "4.png")]
    assert store.predictions == 5 and len(store) == 5  # the unreadable file was not predicted
    again = analyse_uploads(store, ClassicalSegmenter(), "m", uploads, progress=lambda *args: progress.append(args))
    assert all(new.analysis is old.analysis for new, old in zip(again, outcomes) if old.ok)  # from the cache
    assert progress[2:] == [(6, 6, "bad.png")] and again[2].error == BAD_FILE  # only the bad file is tried again


def test_the_analyse_page_counts_as_predicted_only_the_uploads_that_reached_the_network():
    from moleseg.app.analysis import AnalysisStore, Upload, analyse_uploads

    segmenter = RefusesDarkImages()
    uploads = [Upload("mole.png", png_bytes(mole_image(48, 56)[0])),
               Upload("tiny.png", png_bytes(np.full((20, 40, 3), 200, np.uint8))),  # under 32 px high
               Upload("bad.png", b"not an image")]
    store = AnalysisStore()
    outcomes = analyse_uploads(store, segmenter, "m", uploads)
    assert [outcome.error for outcome in outcomes] == [
        None, "tiny.png: image too small: 40 x 20 px, at least 32 px per side are needed", BAD_FILE]
    assert segmenter.calls == [1] and store.predictions == 1


def test_a_grid_thumbnail_is_encoded_at_the_width_the_grid_shows_it():
    import base64
    import io

    from PIL import Image

    from moleseg.app.results import THUMBNAIL_WIDTH_PX, thumbnail, thumbnail_jpeg, thumbnail_url

    wide, narrow = analyse_images(ClassicalSegmenter(), [mole_image(150, 300)[0], mole_image(120, 160)[0]])
    assert THUMBNAIL_WIDTH_PX == 200 and thumbnail(wide).shape == (100, 200, 3)
    assert thumbnail(narrow).shape == (120, 160, 3)  # never enlarged
    with Image.open(io.BytesIO(thumbnail_jpeg(wide))) as encoded:
        assert encoded.format == "JPEG" and encoded.size == (200, 100)
    assert thumbnail_url(wide) is thumbnail_url(wide)  # encoded once, kept as the grid sends it
    assert thumbnail_jpeg(wide) is not thumbnail_jpeg(wide)  # and not kept twice (its JPEG bytes too)
    assert base64.b64decode(thumbnail_url(wide).split(",")[1]) == thumbnail_jpeg(wide)


def test_a_pipeline_closed_early_reads_no_later_batch_and_leaves_no_thread():
    read: list[int] = []

    def reader(index: int) -> np.ndarray:
        read.append(index)
        return mole_image(40, 40)[0]

    before = set(threading.enumerate())
    batches = segment_batches(ClassicalSegmenter(), [functools.partial(reader, index) for index in range(12)],
                              lambda index, image, segmentation: index, batch_size=2, workers=2)
    assert next(batches) == [0, 1]
    assert [thread.name for thread in set(threading.enumerate()) - before if thread.name.startswith("moleseg-batch")]
    batches.close()
    # handing out batch 0 waits for batch 1's network call; batch 2 was being read meanwhile, never batch 3
    assert set(read) <= set(range(6)) and {0, 1, 2, 3} <= set(read)
    assert not [thread for thread in set(threading.enumerate()) - before if thread.name.startswith("moleseg-batch")]


class DownAtFirst(RefusesDarkImages):
    """:class:`RefusesDarkImages` whose first ``down`` calls all fail (a network failing on every image)."""

    def __init__(self, down: int) -> None:
        super().__init__()
        self.down = down

    def predict_probabilities(self, images):
        if len(self.calls) < self.down:
            self.calls.append(len(images))
            raise RuntimeError("the network is down")
        return super().predict_probabilities(images)


def _indices(segmenter, images, batch_size):
    readers = [functools.partial(np.asarray, image) for image in images]
    return [result if isinstance(result, int) else str(result) for batch in segment_batches(
        segmenter, readers, lambda index, image, segmentation: index, batch_size=batch_size, workers=2)
        for result in batch]


def test_a_network_failing_on_every_image_is_called_twice_per_batch_not_once_per_image():
    moles = [mole_image(40, 40, seed=seed)[0] for seed in range(12)]
    segmenter = DownAtFirst(down=10**6)
    assert _indices(segmenter, moles, 4) == ["the network is down"] * 12
    # the first batch, then each image alone; then each batch and its first image alone
    assert segmenter.calls == [4, 1, 1, 1, 1, 4, 1, 4, 1]


def test_a_network_back_after_failing_on_a_batch_predicts_the_next_batches_image_by_image():
    moles = [mole_image(40, 40, seed=seed)[0] for seed in range(12)]
    moles[9] = np.zeros((40, 40, 3), np.uint8)  # the network refuses it
    segmenter = DownAtFirst(down=6)  # the first batch, its four images alone and the second batch
    down, refused = "the network is down", "the network cannot take this image"
    assert _indices(segmenter, moles, 4) == [down] * 4 + [4, 5, 6, 7, 8, refused, 10, 11]
    assert segmenter.calls == [4, 1, 1, 1, 1, 4, 1, 1, 1, 1, 4, 1, 1, 1, 1]


def test_the_app_and_the_cli_give_one_reason_for_an_image_without_result():
    unreadable = ImageReadError("bad.png", "not an image")
    assert failure_reason("bad.png", unreadable) == "bad.png: not an image"
    too_small = ValueError("image too small: 1 x 1 px\nmore")
    assert failure_reason("dot.png", too_small) == "dot.png: image too small: 1 x 1 px"
    assert failure_reason("big.png", MemoryError()) == "big.png: could not be analysed (MemoryError)"


def _mole_files(folder, names):
    folder.mkdir()
    for seed, name in enumerate(names):
        write_png(folder / name, np.zeros((40, 40, 3), np.uint8) if name.startswith("dark")
                  else mole_image(40, 48, seed=seed)[0])
    return [folder / name for name in names]


def test_predict_files_keeps_a_network_error_with_its_image_and_writes_the_others(tmp_path):
    files = _mole_files(tmp_path / "in", ["a.png", "dark.png", "b.png", "c.png"])
    segmenter = RefusesDarkImages()
    outcome = predict_files(segmenter, files, tmp_path / "out", batch_size=4, workers=2)
    assert outcome.failures == [("dark.png", "dark.png: could not be analysed (the network cannot take this image)")]
    assert [row["image"] for row in outcome.rows] == ["a.png", "b.png", "c.png"]
    assert segmenter.calls == [4, 1, 1, 1, 1]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == sorted(
        f"{stem}_{kind}.png" for stem in "abc" for kind in ("overlay", "mask", "classes"))


def test_predict_files_on_a_full_disk_says_so_once_and_stops_reading(tmp_path, monkeypatch):
    import moleseg.core.atomic as atomic
    import moleseg.core.imageio as imageio

    files = _mole_files(tmp_path / "in", [f"{index:02d}.png" for index in range(20)])
    read, real_read, real_write = [], imageio.read_image, atomic.atomic_write

    def reading(path, *args, **options):
        read.append(path.name)
        return real_read(path, *args, **options)

    def filling_disk(path, data, **options):
        if path.name.startswith("02_"):  # the first image of the second batch
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, data, **options)

    monkeypatch.setattr(imageio, "read_image", reading)
    monkeypatch.setattr(atomic, "atomic_write", filling_disk)
    reported: list[int] = []
    outcome = predict_files(ClassicalSegmenter(), files, tmp_path / "out", batch_size=2, workers=2,
                            progress=reported.append)
    assert outcome.stopped == ("the disk is full: 02.png and the images after it were not written "
                               "(No space left on device)")
    assert [row["image"] for row in outcome.rows] == ["00.png", "01.png"] and outcome.failures == []
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == sorted(
        f"0{index}_{kind}.png" for index in (0, 1) for kind in ("overlay", "mask", "classes"))
    # the writer is at most WRITES_AHEAD batches behind: batch WRITES_AHEAD + 1 (3) handed out at the latest,
    # while the next was predicted and the one after read; no later one (12 of the 20 files)
    assert len(read) <= 2 * (WRITES_AHEAD + 4) and reported and max(reported) < 20
