"""What the Analyse page shows and exports of flagged images (grid, table, summary, CSV, ZIP), the hand
correction's filled holes, the overlay's scale bar, the PDF's warnings apart from the notes, a confidence
that no cleanup setting changes, and the batch progress counting every upload."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import numpy as np
import pypdf
import pytest
from PIL import Image

from synthetic import RedChannelSegmenter, ThreeClassRed, disk, png_bytes
from moleseg.app.analysis import AnalysisStore, ImageOutcome, Upload, analyse_uploads
from moleseg.app.results import (FLAG_FRAME_COLOR, TO_CHECK_FILE, batch_bundle, batch_table, check_summary, flags,
                                 grid_caption, measurements_csv_bytes, thumbnail)
from moleseg.core.cleanup import CleanupSettings
from moleseg.core.render import with_scale_bar
from moleseg.core.report import Visit
from moleseg.engine.correction import Corrections, Stroke
from moleseg.engine.batches import analyse_images


def _red(foreground: np.ndarray) -> np.ndarray:
    image = np.zeros((*foreground.shape, 3), np.uint8)
    image[..., 0] = np.round(np.clip(foreground, 0, 1) * 255).astype(np.uint8)
    return image


def _blurred_disk() -> np.ndarray:
    """A disk whose rim is undecided (probabilities between 0.2 and 0.8 over a wide ring)."""
    rows, cols = np.ogrid[:40, :40]
    distance = np.sqrt((rows - 20) ** 2 + (cols - 20) ** 2)
    return np.clip((12 - distance) / 12 + 0.3, 0, 1)


@pytest.fixture
def outcomes() -> list[ImageOutcome]:
    """a.png: a crisp disk (nothing to check); b.png: a blurred disk (unsure: check this border); c.png: the
    whole frame (may extend beyond the picture)."""
    segmenter = ThreeClassRed({"confidence_threshold": 0.9})
    segmenter.cleanup_defaults = CleanupSettings(rule="grow_inside", closing_radius_px=0, border_width_px=1)
    images = [_red(disk((40, 40), (20, 20), 12).astype(float)), _red(_blurred_disk()), _red(np.ones((40, 40)))]
    analyses = analyse_images(segmenter, images)
    return [ImageOutcome(name=f"{stem}.png", analysis=analysis, stem=stem, key=stem)
            for stem, analysis in zip("abc", analyses)]


def test_flagged_images_are_named_in_the_grid_table_summary_csv_and_zip(outcomes):
    assert [flags(o.analysis) for o in outcomes] == [[], ["check this border"], ["may extend beyond the picture"]]
    assert check_summary(outcomes) == ("2 of 3 to check: b.png (check this border), "
                                       "c.png (may extend beyond the picture)")
    assert grid_caption(outcomes[1]).startswith("TO CHECK (check this border): b.png: Area ")
    assert grid_caption(outcomes[0]).startswith("a.png: Area ")
    framed, plain = thumbnail(outcomes[1].analysis), thumbnail(outcomes[0].analysis)
    assert framed.shape == plain.shape == (40, 40, 3)
    assert (framed[0] == FLAG_FRAME_COLOR).all() and (framed[:, -1] == FLAG_FRAME_COLOR).all()  # a red frame
    assert not (plain[0] == FLAG_FRAME_COLOR).all(axis=-1).any()
    table = batch_table(outcomes)
    assert list(table[0])[:2] == ["Image", "To check"]
    assert [row["To check"] for row in table] == ["", "check this border", "may extend beyond the picture"]
    rows = list(csv.DictReader(io.StringIO(measurements_csv_bytes(outcomes).decode())))
    assert [row["to_check"] for row in rows] == ["", "check this border", "may extend beyond the picture"]
    bundle = zipfile.ZipFile(io.BytesIO(batch_bundle(outcomes, "red", "1")))
    assert bundle.read(TO_CHECK_FILE).decode() == ("2 of 3 to check:\nb.png: check this border\n"
                                                   "c.png: may extend beyond the picture\n")
    assert {"a/a_outline.geojson", "a/a_outline.roi", "a/a_outline.svg"} <= set(bundle.namelist())


def test_nothing_flagged_writes_no_list_and_cells_say_check_this_segmentation(outcomes):
    assert check_summary(outcomes[:1]) is None
    assert TO_CHECK_FILE not in zipfile.ZipFile(io.BytesIO(batch_bundle(outcomes[:1]))).namelist()
    (cells,) = analyse_images(RedChannelSegmenter({"confidence_threshold": 0.9}), [_red(_blurred_disk())])
    outcome = ImageOutcome(name="n.png", analysis=cells, stem="n", key="n")
    assert flags(cells) == ["check this segmentation"]  # cells cut by the frame are never "beyond the picture"
    assert check_summary([outcome]) == "1 of 1 to check: n.png (check this segmentation)"


def test_the_confidence_follows_the_probabilities_not_the_cleanup():
    segmenter = ThreeClassRed({"confidence_threshold": 0.9})
    rows, cols = np.ogrid[:40, :40]
    rim = np.clip((12 - np.sqrt((rows - 20) ** 2 + (cols - 20) ** 2)) / 3 + 0.5, 0, 1)  # undecided 1 px each side
    (unsure,) = analyse_images(segmenter, [_red(rim)], settings=CleanupSettings(rule="grow_inside",
                                                                                closing_radius_px=0))
    for border in (1, 3, 6):
        wider = unsure.recleaned(segmenter, CleanupSettings(rule="grow_inside", closing_radius_px=0,
                                                            border_width_px=border))
        assert wider.confidence == unsure.confidence
    assert unsure.recleaned(segmenter, None, lesion_threshold=0.3).confidence == unsure.confidence
    probability = 1 - unsure.segmentation.probabilities[..., 0]
    undecided = np.count_nonzero((probability > 0.2) & (probability < 0.8))
    assert unsure.confidence == pytest.approx(1 - undecided / np.count_nonzero(probability > 0.5))
    assert 0.5 < unsure.confidence < 0.9 and unsure.check_border


def test_the_closing_radius_changes_the_overlay():
    """A BORDER ring with a 3 px gap: unclosed it stays a ring, closed it becomes a filled disk."""

    class Ring(ThreeClassRed):
        def predict_probabilities(self, images):
            rows, cols = np.ogrid[:40, :40]
            distance = np.sqrt((rows - 20) ** 2 + (cols - 20) ** 2)
            ring = ((distance >= 10) & (distance <= 13)).astype(np.float32)
            ring[18:21, 30:] = 0  # the gap
            return [np.stack([1 - ring, ring, np.zeros_like(ring)], axis=-1) for _ in images]

    segmenter = Ring()
    (open_ring,) = analyse_images(segmenter, [np.zeros((40, 40, 3), np.uint8)],
                                  settings=CleanupSettings(closing_radius_px=0))
    closed = open_ring.recleaned(segmenter, CleanupSettings(closing_radius_px=3))
    assert not open_ring.segmentation.lesion[20, 20] and closed.segmentation.lesion[20, 20]
    assert not np.array_equal(open_ring.overlay, closed.overlay)


def test_an_added_polygon_fills_the_hole_at_its_join_when_fill_holes_is_on():
    """A 20 x 10 px lesion and a C-shaped polygon (300 - 100 px) opening onto it: together they enclose a
    10 x 10 px hole, filled only with fill holes on; a hole removed by hand stays."""
    lesion = np.zeros((40, 40), bool)
    lesion[10:30, 10:20] = True
    c_shape = [(20, 10), (35, 10), (35, 30), (20, 30), (20, 25), (30, 25), (30, 15), (20, 15)]  # x, y
    added = Corrections()
    added.push([Stroke.of(np.array(c_shape, float))], add=True, shape=lesion.shape)
    assert added.apply(lesion).sum() == 200 + 200
    filled = added.apply(lesion, fill_holes=True)
    assert filled.sum() == 500 and filled[15:25, 20:30].all()
    removed = Corrections(list(added.edits))
    removed.push([Stroke.of(np.array([(12, 12), (16, 12), (16, 16), (12, 16)], float))], add=False, shape=lesion.shape)
    assert removed.apply(lesion, fill_holes=True).sum() == 500 - 16  # the removed 4 x 4 px stays removed

    segmenter = ThreeClassRed()
    for fill in (True, False):
        segmenter.cleanup_defaults = CleanupSettings(rule="grow_inside", closing_radius_px=0, border_width_px=1,
                                                     fill_holes=fill)
        (analysis,) = analyse_images(segmenter, [_red(lesion.astype(float))])  # grown 1 px: up to column 20
        corrected = analysis.corrected(added).segmentation.lesion
        assert corrected[15:25, 21:30].all() if fill else not corrected[15:25, 21:30].any()


def test_the_overlay_png_has_the_pdf_scale_bar_and_the_pdf_keeps_warnings_apart_from_notes(outcomes):
    segmenter = ThreeClassRed({"confidence_threshold": 0.9})
    analysis = outcomes[1].analysis
    measured = analysis.recleaned(segmenter, analysis.segmentation.settings, pixel_size_mm=0.05)
    png = np.asarray(Image.open(io.BytesIO(measured.overlay_png())))
    np.testing.assert_array_equal(png, with_scale_bar(measured.overlay, 0.05))
    assert not np.array_equal(png, measured.overlay)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(analysis.overlay_png()))), analysis.overlay)
    text = pypdf.PdfReader(io.BytesIO(measured.pdf("b.png", visit=Visit.of(notes="stable since March")))
                           ).pages[0].extract_text()
    assert "Notes: stable since March" in text
    assert "Warnings: check this border: the model is unsure" in text


def test_the_batch_progress_counts_every_upload_with_the_cached_ones_done():
    segmenter = ThreeClassRed()
    store = AnalysisStore()
    images = [_red(disk((40, 40), (20, 20), radius).astype(float)) for radius in (6, 9, 12)]
    uploads = [Upload(name=f"{index}.png", data=png_bytes(image)) for index, image in enumerate(images)]
    analyse_uploads(store, segmenter, "red", uploads[:1])  # the first is cached
    calls: list[tuple[int, int]] = []
    analyse_uploads(store, segmenter, "red", uploads + [Upload(name="bad.png", data=b"not an image")],
                    progress=lambda done, total, name: calls.append((done, total)))
    assert calls[-1] == (4, 4) and calls[0][0] >= 2  # 4 uploads: the cached one and the unreadable one done



def test_history_draws_the_saved_lesion_as_analyse_drew_it(outcomes):
    from moleseg.app.followup import saved_overlay
    from moleseg.app.identity import personal_user
    from moleseg.engine.records import Records

    analysis = outcomes[0].analysis
    records = Records()
    record_id = records.save(personal_user(), analysis.image, analysis.segmentation.lesion, analysis.measurements,
                             image_name="a.png", model_name="red", cleanup=analysis.segmentation.settings.to_dict())
    np.testing.assert_array_equal(saved_overlay(records.open(personal_user(), record_id)), analysis.overlay)


def test_cells_mode_speaks_of_cells_and_the_title_sits_above_the_model_picker(app_folders):
    from app_helpers import app_test
    from moleseg.app.ui import PAGE_FILES

    at = app_test(PAGE_FILES["analyse"])
    first = next(iter(at.main.children.values()))
    assert first.type == "title" and first.value == "Analyse mole images"
    at.selectbox(key="analyse_model").set_value("classical2").run()
    at.toggle(key="analyse_manual").set_value(True).run()
    image = _red(np.zeros((60, 80)))
    image[20:40, 20:40] = 220
    at.file_uploader(key="analyse_upload_files").set_value(("field.png", png_bytes(image), "image/png")).run()
    assert not at.exception
    labels = [widget.label for widget in (*at.radio, *at.checkbox, *at.slider, *at.text_input, *at.expander)]
    labels += [json.loads(element.proto.json)["label"] for element in at.sidebar  # the settled sliders
               if element.type == "bidi_component"]
    assert "Lesion rule" not in labels and "Body site" not in labels and "Patient / lesion identifier" not in labels
    assert {"Sample identifier", "Cell probability threshold", "Correct the cells by hand",
            "Cell probability threshold instead of the most likely class"} <= set(labels)
    assert at.get("image")[0].proto.imgs[0].caption.startswith("field.png: cells and nuclei (")
