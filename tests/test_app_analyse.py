"""The Analyse page: upload, overlay, measurements, cleanup sliders without re-prediction, bad files, exports."""

from __future__ import annotations

import csv
import json
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from app_helpers import app_test, forged_run, html_table_rows, texts
from synthetic import mole_image, png_bytes
from moleseg.app import ui
from moleseg.app.analysis import ANALYSIS_CACHE_BYTES
from moleseg.app.ui import PAGE_FILES
from moleseg.engine.pipeline import BEYOND_PICTURE_NOTE

PAGE = PAGE_FILES["analyse"]


@pytest.fixture
def at(app_folders, monkeypatch, tmp_path):
    test = app_test(PAGE)
    assert not test.exception
    test.selectbox(key="analyse_model").set_value("classical").run()
    return test


def upload(at, files, key="analyse_upload_files"):
    at.file_uploader(key=key).set_value(files).run()
    assert not at.exception
    return at.session_state["analyse_outcomes"]


def redrawn(at):
    """The whole page run again: a cleanup, colour or opacity change reruns the results' fragment alone, and
    AppTest then holds only what that run drew (not the sidebar's widgets)."""
    return at.run()


def measurement_frames(at):
    """The measurement tables the page shows (each one HTML table) as data frames, columns
    ``measurement, value, unit, meaning``."""
    import pandas as pd

    tables = (html_table_rows(element.value) for element in at.get("html"))
    return [pd.DataFrame(rows) for rows in tables if rows and "measurement" in rows[0]]


def test_an_uploaded_mole_gets_an_overlay_a_class_map_and_measurements(at):
    image, truth = mole_image()
    outcomes = upload(at, ("mole.png", png_bytes(image), "image/png"))
    assert not at.error
    assert [image.proto.imgs[0].caption for image in at.get("image")] == [
        "mole.png: lesion and border (classical)"]  # the overlay alone: the class map's expander is closed
    analysis = outcomes[0].analysis
    assert analysis.overlay.shape == image.shape and not np.array_equal(analysis.overlay, image)
    assert "overlay_jpeg" in vars(analysis)  # the JPEG shown is the analysis' own, kept for the next run
    lesion = analysis.segmentation.lesion
    assert 2 * (lesion & truth).sum() / (lesion.sum() + truth.sum()) > 0.9  # the ellipse is found
    table = measurement_frames(at)[0]
    assert list(table.columns) == ["measurement", "value", "unit", "meaning"]
    assert "Area" in set(table["measurement"])
    assert {button.label for button in at.get("download_button")} >= {
        "Overlay (PNG)", "Lesion mask (PNG)", "Report (PDF)", "Measurements of all images (CSV)"}
    at.session_state["analyse_classes_open"] = True  # its expander opened: the class map below the overlay
    at.run()
    assert [image.proto.imgs[0].caption for image in at.get("image")] == [
        "mole.png: lesion and border (classical)", "Predicted classes: back, border, inside"]


def test_moving_a_cleanup_slider_changes_the_border_without_predicting_again(at):
    outcomes = upload(at, ("mole.png", png_bytes(mole_image()[0]), "image/png"))
    store = ui.analysis_store()
    assert store.predictions == 1
    before = outcomes[0].analysis.segmentation.border.copy()
    at.toggle(key="analyse_manual").set_value(True).run()
    assert at.session_state["analyse_closing"] == 15  # starts from the automatic settings
    at.session_state["analyse_closing"] = 1  # a settled slider (moleseg.app.settled_slider): set as its value
    at.run()
    after_closing = at.session_state["analyse_outcomes"][0].analysis.segmentation
    assert after_closing.settings.closing_radius_px == 1
    assert not np.array_equal(after_closing.border, before)
    assert at.radio(key="analyse_rule").options[1].startswith("grow_inside: INSIDE grown outward")  # in words
    redrawn(at.radio(key="analyse_rule").set_value("grow_inside").run())
    at.session_state["analyse_border"] = 12
    at.run()
    after_width = at.session_state["analyse_outcomes"][0].analysis.segmentation
    assert after_width.border.sum() > 2 * before.sum()  # a 12 px band instead of 4 px
    assert store.predictions == 1  # only the cleanup ran again
    assert not at.exception


def test_a_colour_change_redraws_the_overlay_from_the_same_lesion_and_measurements(at):
    upload(at, ("mole.png", png_bytes(mole_image()[0]), "image/png"))
    before = at.session_state["analyse_outcomes"][0].analysis
    at.color_picker(key="analyse_fill_color").set_value("#0000ff").run()
    after = at.session_state["analyse_outcomes"][0].analysis
    assert after.style.fill_color == (0, 0, 255) and before.style.fill_color == (255, 200, 0)
    assert after.segmentation is before.segmentation and after.measurements is before.measurements  # not re-cleaned
    lesion = after.segmentation.lesion & ~after.segmentation.border
    assert after.overlay[lesion][:, 2].mean() > before.overlay[lesion][:, 2].mean() + 50  # bluer inside
    assert ui.analysis_store().predictions == 1


def test_pictures_are_shown_as_jpegs_no_larger_than_their_place_on_the_page():
    from moleseg.core.imagewrite import display_jpeg
    from moleseg.core.render import DISPLAY_SIDE_PX

    wide = np.zeros((DISPLAY_SIDE_PX, 2 * DISPLAY_SIDE_PX, 3), np.uint8)
    wide[:, DISPLAY_SIDE_PX:] = 200
    shown = Image.open(io.BytesIO(display_jpeg(wide)))
    assert shown.format == "JPEG" and shown.size == (DISPLAY_SIDE_PX, DISPLAY_SIDE_PX // 2)
    assert abs(int(np.asarray(shown)[10, -10, 0]) - 200) <= 2
    small = Image.open(io.BytesIO(display_jpeg(wide[:50, :80], side_px=56)))
    assert small.size == (56, 35)  # 80 x 50 shrunk to 56 on its longer side
    assert Image.open(io.BytesIO(display_jpeg(wide[:50, :80]))).size == (80, 50)  # small enough already


def test_overlay_colours_and_pixel_size_apply(at):
    upload(at, ("mole.png", png_bytes(mole_image()[0]), "image/png"))
    redrawn(at.color_picker(key="analyse_border_color").set_value("#ff0000").run())
    at.number_input(key="analyse_pixel_size").set_value(0.05).run()
    analysis = at.session_state["analyse_outcomes"][0].analysis
    border = analysis.segmentation.border
    assert (analysis.overlay[border] == [255, 0, 0]).all()
    units = set(measurement_frames(at)[0]["unit"])
    assert "mm" in units and "mm\u00b2" in units
    from moleseg.core.report import cleanup_text

    said = f"Cleanup: {cleanup_text(analysis.segmentation.settings.to_dict())}; most likely class."
    assert said in texts(at.caption)  # in the words of the PDF and the History page


def test_bad_uploads_get_one_error_each_and_the_good_file_is_still_analysed(at):
    good = png_bytes(mole_image()[0])
    jpeg = io.BytesIO()
    Image.fromarray(mole_image()[0]).save(jpeg, format="JPEG")
    huge = io.BytesIO()
    Image.new("1", (8000, 7000)).save(huge, format="PNG")  # 56 megapixels in 7 kB
    files = [("notes.png", b"these are not pixels", "image/png"),
             ("half.jpg", jpeg.getvalue()[: len(jpeg.getvalue()) // 2], "image/jpeg"),
             ("huge.png", huge.getvalue(), "image/png"),
             ("empty.png", b"", "image/png"),
             ("mole.png", good, "image/png")]
    outcomes = upload(at, files)
    errors = texts(at.error)
    assert len(errors) == 4
    for name, error in zip(("notes.png", "half.jpg", "huge.png", "empty.png"), errors):
        assert error.startswith(name)
    assert "Traceback" not in " ".join(errors)
    assert [o.ok for o in outcomes] == [False, False, False, False, True]
    assert len(at.get("image")) == 1  # the good file's overlay


def test_exports_of_a_batch(at):
    files = [("a.png", png_bytes(mole_image(seed=1)[0]), "image/png"),
             ("b.png", png_bytes(mole_image(80, 80, seed=2)[0]), "image/png"),
             ("bad.png", b"nope", "image/png")]
    outcomes = upload(at, files)
    assert at.selectbox(key="analyse_shown").options == ["a.png", "b.png"]
    from moleseg.app.results import batch_bundle

    bundle = zipfile.ZipFile(io.BytesIO(batch_bundle(outcomes, "classical", "0.1.0")))
    names = set(bundle.namelist())
    assert {"measurements.csv", "errors.txt", "a/a_overlay.png", "a/a_mask.png", "a/a_report.pdf",
            "b/b_overlay.png"} <= names
    assert bundle.read("a/a_report.pdf").startswith(b"%PDF")
    rows = list(csv.DictReader(io.StringIO(bundle.read("measurements.csv").decode())))
    assert [row["image"] for row in rows] == ["a.png", "b.png", "bad.png"]
    assert float(rows[0]["area_px"]) > 0 and rows[2]["note"].startswith("bad.png")


def test_the_same_image_uploaded_twice_is_analysed_once_with_a_note(at):
    """Dropping one photo twice (or a copy under another name) gave two grid buttons with one key
    (StreamlitDuplicateElementKey); the repeat is now left out and named."""
    image = png_bytes(mole_image(seed=1)[0])
    outcomes = upload(at, [("a.png", image, "image/png"), ("b.png", png_bytes(mole_image(seed=2)[0]), "image/png"),
                           ("a copy.png", image, "image/png")])
    assert [o.name for o in outcomes] == ["a.png", "b.png"]
    assert any(text.startswith("a copy.png is the same image as a.png") for text in texts(at.info))
    upload(at, [("a.png", image, "image/png"), ("a.png", image, "image/png")])
    assert "a.png was uploaded twice\\: analysed once." in texts(at.info)  # markdown: the colon escaped



def test_a_file_name_is_drawn_as_typed_not_as_markdown(at):
    """An upload's name is untrusted: its link and emphasis reach the page's markdown escaped."""
    name = "[x](http://e.x)*a*.png"
    upload(at, [(name, png_bytes(mole_image(64, 64, seed=1)[0]), "image/png"), ("*b*.png", b"nope", "image/png")])
    shown = "\\[x\\](http\u2060\\://e.x)\\*a\\*.png"
    assert ui.plain_markdown(name) == shown
    assert [text[:9] for text in texts(at.error)] == ["\\*b\\*.png"]
    assert f"**Visit of {shown}** (optional: printed on its report and in the CSV, saved with its record)" in texts(
        at.markdown)
    labels = [button.label for button in at.button]
    assert f"Save {shown} to records" in labels and not any("[x](" in label for label in labels)

def test_every_image_of_a_batch_gets_the_visit_date_its_fields_show(at):
    """The visit date field shows today for every image, but only the images once in view had it in the
    CSV, the sidecar and the ZIP's reports: the rows of one batch differed by what the user had looked at."""
    import datetime

    from moleseg.app.results import measurements_csv_bytes

    outcomes = upload(at, [("a.png", png_bytes(mole_image(seed=1)[0]), "image/png"),
                           ("b.png", png_bytes(mole_image(seed=2)[0]), "image/png")])
    rows = list(csv.DictReader(io.StringIO(measurements_csv_bytes(
        outcomes, "classical", at.session_state["analyse_visits"]).decode())))
    assert [row["visit_date"] for row in rows] == [datetime.date.today().isoformat()] * 2  # no field drawn yet
    at.toggle(key="analyse_batch_details").set_value(True).run()  # a.png in full, its visit fields with it
    assert at.date_input(key="analyse_save_date").value == datetime.date.today()
    rows = list(csv.DictReader(io.StringIO(measurements_csv_bytes(
        outcomes, "classical", at.session_state["analyse_visits"]).decode())))
    assert [row["visit_date"] for row in rows] == [datetime.date.today().isoformat()] * 2


def test_a_visit_date_of_an_old_photograph_can_be_given(at):
    """The date field took only the ten years before today (Streamlit's default range): the visit of a
    2012 archive photograph could not be dated."""
    import datetime

    upload(at, ("a.png", png_bytes(mole_image(seed=1)[0]), "image/png"))
    at.date_input(key="analyse_save_date").set_value(datetime.date(2012, 5, 1)).run()
    outcome = at.session_state["analyse_outcomes"][0]
    assert at.session_state["analyse_visits"][outcome.key].visit_date == "2012-05-01"


def test_a_folder_can_be_uploaded(at):
    at.radio(key="analyse_mode").set_value("a folder").run()
    uploader = at.file_uploader(key="analyse_upload_folder")
    assert uploader.accept_directory
    assert "200 MB" in uploader.help
    outcomes = upload(at, [("moles/a.png", png_bytes(mole_image(seed=3)[0]), "image/png"),
                           ("moles/b.png", png_bytes(mole_image(seed=4)[0]), "image/png")],
                      key="analyse_upload_folder")
    assert all(o.ok for o in outcomes) and len(outcomes) == 2


def test_a_real_dermoscopy_image(at, require_shared):
    folder = require_shared("moles/ph2/images")
    path = sorted(folder.glob("*.jpg"))[0]
    outcomes = upload(at, (path.name, path.read_bytes(), "image/jpeg"))
    assert not at.error
    analysis = outcomes[0].analysis
    assert analysis.overlay.shape[:2] == analysis.segmentation.lesion.shape
    assert analysis.segmentation.lesion.any() and analysis.measurements


@pytest.mark.slow
def test_the_lesion_threshold_slider_reshapes_the_lesion_without_predicting_again(app_folders, monkeypatch, tmp_path):
    import shutil
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[1] / "models" / "dermoscopy.keras"
    if not shipped.is_file():
        pytest.skip("models/dermoscopy.keras is not installed")
    installed = app_folders["models"] / "dermoscopy.keras"
    shutil.copy(shipped, installed)
    at = app_test(PAGE, timeout=120)
    at.selectbox(key="analyse_model").set_value(str(installed)).run()
    # a mole whose edge fades into the skin over ~20 px: the network is unsure there
    from scipy import ndimage

    sharp = mole_image(160, 192)[0].astype(np.float64)
    soft = np.stack([ndimage.gaussian_filter(sharp[..., c], 8) for c in range(3)], axis=-1)
    outcomes = upload(at, ("mole.png", png_bytes(np.clip(soft, 0, 255).astype(np.uint8)), "image/png"))
    store = ui.analysis_store()
    model_area = outcomes[0].analysis.segmentation.lesion.sum()
    assert store.predictions == 1 and model_area > 0
    at.toggle(key="analyse_manual").set_value(True).run()
    key = next(widget.key.removesuffix("_settled") for widget in at.sidebar
               if (getattr(widget, "key", None) or "").startswith("analyse_threshold_"))
    calibrated = at.session_state["analyse_outcomes"][0].analysis.segmentation.lesion_threshold
    assert at.session_state[key] == pytest.approx(calibrated)  # the model's calibrated threshold
    areas = {}
    for value in (0.05, 0.95):
        at.session_state[key] = value
        at.run()
        segmentation = at.session_state["analyse_outcomes"][0].analysis.segmentation
        assert segmentation.lesion_threshold == pytest.approx(value)
        areas[value] = segmentation.lesion.sum()
    # higher: a tighter lesion; lower adds BORDER pixels, which this model's grow_inside rule does not use
    assert areas[0.05] >= model_area > areas[0.95]
    assert any("≥ 0.95" in caption for caption in texts(at.caption))
    at.checkbox(key="analyse_use_" + key.removeprefix("analyse_")).set_value(False).run()
    assert at.session_state["analyse_outcomes"][0].analysis.segmentation.lesion_threshold is None
    assert store.predictions == 1  # every change re-ran the cleanup only
    assert not at.exception


def test_the_analysis_cache_keeps_within_its_byte_bound_evicting_the_oldest():
    from moleseg.app.analysis import AnalysisStore
    from moleseg.core.classical import ClassicalSegmenter
    from moleseg.engine.batches import analyse_images

    analyses = analyse_images(ClassicalSegmenter(), [mole_image(48, 56, seed=seed)[0] for seed in range(4)])
    probe = AnalysisStore()
    probe.put(("m", "probe"), analyses[0], ())
    size = probe.nbytes  # every analysis of these images has this size
    assert size > 48 * 56 * 3
    store = AnalysisStore(max_bytes=int(2.5 * size))  # room for two
    for index, analysis in enumerate(analyses[:3]):
        assert store.put(("m", str(index)), analysis, ())
    assert len(store) == 2 and store.nbytes == 2 * size <= store.max_bytes
    assert store.get(("m", "0")) is None  # the oldest went first
    assert store.get(("m", "1")) is not None  # used now: "2" is the least recently used
    store.put(("m", "3"), analyses[3], ())
    assert store.get(("m", "2")) is None and store.get(("m", "1")) is not None
    assert store.nbytes <= store.max_bytes
    assert not AnalysisStore(max_bytes=size - 1).put(("m", "big"), analyses[0], ())  # alone over the bound


def test_sessions_share_the_servers_analysis_cache(at):
    picture = ("mole.png", png_bytes(mole_image(seed=3)[0]), "image/png")
    upload(at, picture)
    other = app_test(PAGE, empty_cache=False)  # a second browser session of the same server
    other.selectbox(key="analyse_model").set_value("classical").run()
    outcomes = upload(other, picture)
    assert outcomes[0].analysis is not None and ui.analysis_store().predictions == 1
    assert ui.analysis_store() is ui.analysis_store() and ui.analysis_store().max_bytes == ANALYSIS_CACHE_BYTES


def test_manual_cleanup_changes_only_the_image_in_view_unless_applied_to_all(at):
    files = [("a.png", png_bytes(mole_image(seed=1)[0]), "image/png"),
             ("b.png", png_bytes(mole_image(seed=2)[0]), "image/png")]
    outcomes = upload(at, files)
    before = {o.name: o.analysis.segmentation.lesion.copy() for o in outcomes}
    assert at.selectbox(key="analyse_shown").value == outcomes[0].key  # a.png in view
    at.toggle(key="analyse_manual").set_value(True).run()
    assert at.radio(key="analyse_rule").options[1].startswith("grow_inside: INSIDE grown outward")  # in words
    redrawn(at.radio(key="analyse_rule").set_value("grow_inside").run())
    at.session_state["analyse_border"] = 12
    at.run()
    assert not at.exception
    after = {o.name: o.analysis.segmentation for o in at.session_state["analyse_outcomes"]}
    assert after["a.png"].settings.border_width_px == 12 and after["a.png"].settings.rule == "grow_inside"
    assert after["a.png"].lesion.sum() > before["a.png"].sum() + 100  # grown by 12 px
    assert after["b.png"].settings.rule == "article"  # the other image keeps its automatic cleanup
    scope = "Applies to {} only (the image under Show image); tick Apply to all images to change all 2."
    assert scope.format("a.png") in [caption.value for caption in at.sidebar.caption]  # names the image it changes
    np.testing.assert_array_equal(after["b.png"].lesion, before["b.png"])

    at.selectbox(key="analyse_shown").set_value(outcomes[1].key).run()  # b.png in view: its own values
    assert at.radio(key="analyse_rule").value == "article"
    assert scope.format("b.png") in [caption.value for caption in at.sidebar.caption]
    assert at.session_state["analyse_border"] == outcomes[1].analysis.segmentation.settings.border_width_px
    np.testing.assert_array_equal(at.session_state["analyse_outcomes"][1].analysis.segmentation.lesion,
                                  before["b.png"])
    at.selectbox(key="analyse_shown").set_value(outcomes[0].key).run()  # back to a.png: its manual values
    assert at.session_state["analyse_border"] == 12 and at.radio(key="analyse_rule").value == "grow_inside"

    at.checkbox(key="analyse_apply_all").check().run()
    both = [o.analysis.segmentation for o in at.session_state["analyse_outcomes"]]
    assert [s.settings.border_width_px for s in both] == [12, 12]
    assert "Applies to every image." in [caption.value for caption in at.sidebar.caption]
    assert both[1].lesion.sum() > before["b.png"].sum() + 100

    at.toggle(key="analyse_manual").set_value(False).run()  # off: every image back to automatic
    for outcome in at.session_state["analyse_outcomes"]:
        np.testing.assert_array_equal(outcome.analysis.segmentation.lesion, before[outcome.name])


def test_a_hand_correction_changes_the_area_and_the_exports_say_so(at):
    from moleseg.app.results import measurements_csv_bytes
    from moleseg.engine.correction import Stroke

    outcomes = upload(at, [("a.png", png_bytes(mole_image(seed=1)[0]), "image/png")])
    area = outcomes[0].analysis.measurement_row["area_px"]
    (edits,) = at.session_state["analyse_corrections"].values()  # the image in view's, made by the page
    edits.push([Stroke.of([[0, 0], [20, 0], [20, 10], [0, 10]])], add=True, shape=(96, 112))  # 200 px in a corner
    at.session_state["analyse_correct_open"] = True  # drawn in the opened block
    at.run()
    corrected = at.session_state["analyse_outcomes"][0].analysis
    assert corrected.corrected_by_hand and corrected.measurement_row["area_px"] == area + 200
    assert any(caption.startswith("1 hand edit:") for caption in texts(at.caption))
    rows = list(csv.DictReader(io.StringIO(measurements_csv_bytes(at.session_state["analyse_outcomes"])
                                           .decode())))
    # the corner patch reaches the image's edge, so the note also says the lesion may extend beyond the picture
    assert rows[0]["note"].split("; ") == ["lesion corrected by hand", BEYOND_PICTURE_NOTE]
    assert float(rows[0]["area_px"]) == area + 200
    edits.undo()
    at.run()
    assert at.session_state["analyse_outcomes"][0].analysis.measurement_row["area_px"] == area


def test_save_to_my_dataset_stores_the_corrected_pair(at, tmp_path, monkeypatch):
    from moleseg.core.pairing import pair_folders
    from moleseg.engine.correction import Stroke

    upload(at, [("a.png", png_bytes(mole_image(seed=1)[0]), "image/png")])
    (edits,) = at.session_state["analyse_corrections"].values()
    edits.push([Stroke.of([[0, 0], [20, 0], [20, 10], [0, 10]])], add=True, shape=(96, 112))
    at.run()
    monkeypatch.setenv("MOLESEG_CORRECTIONS_DIR", str(tmp_path / "mine"))  # My dataset
    at.button(key="analyse_dataset_save").click().run()
    assert not at.exception and any("Saved a.png" in text for text in texts(at.success))
    (pair,) = pair_folders(tmp_path / "mine" / "images", tmp_path / "mine" / "masks").pairs
    saved = np.asarray(Image.open(pair.mask)) > 0
    np.testing.assert_array_equal(saved, at.session_state["analyse_outcomes"][0].analysis.segmentation.lesion)
    assert saved[:10, :20].all()
    record = json.loads((tmp_path / "mine" / "provenance" / "a.json").read_text())
    assert record["status"] == "corrected by hand" and record["model"] == "classical"


def test_saving_the_same_image_again_replaces_its_mask_and_says_so(at, tmp_path, monkeypatch):
    from moleseg.core.pairing import pair_folders
    from moleseg.engine.correction import Stroke

    upload(at, [("a.png", png_bytes(mole_image(seed=1)[0]), "image/png")])
    monkeypatch.setenv("MOLESEG_CORRECTIONS_DIR", str(tmp_path / "mine"))  # My dataset
    at.button(key="analyse_dataset_save").click().run()  # as the model drew it
    (edits,) = at.session_state["analyse_corrections"].values()
    edits.push([Stroke.of([[0, 0], [20, 0], [20, 10], [0, 10]])], add=True, shape=(96, 112))
    at.run()
    at.button(key="analyse_dataset_save").click().run()  # the corrected border of the same image
    assert not at.exception
    assert "a.png was already in your dataset: its mask was replaced" in " ".join(texts(at.success))
    (pair,) = pair_folders(tmp_path / "mine" / "images", tmp_path / "mine" / "masks").pairs  # no a_2.png
    saved = np.asarray(Image.open(pair.mask)) > 0
    np.testing.assert_array_equal(saved, at.session_state["analyse_outcomes"][0].analysis.segmentation.lesion)
    assert saved[:10, :20].all()
    assert json.loads((tmp_path / "mine" / "provenance" / "a.json").read_text())["status"] == "corrected by hand"


def test_a_batch_shows_a_grid_readable_tables_a_summary_and_outline_downloads(at):
    from moleseg.app.results import batch_summary, batch_table, grid_caption, key_measurements, outline_downloads
    from moleseg.core.render import shrunk

    files = [(f"{name}.png", png_bytes(mole_image(seed=seed)[0]), "image/png")
             for name, seed in (("a", 1), ("b", 2), ("c", 5))]
    outcomes = upload(at, files)
    assert not at.exception
    grid = at.get("image")[0].proto  # the grid: one element of three pictures, each with its caption
    assert [picture.caption for picture in grid.imgs] == [grid_caption(outcome) for outcome in outcomes]
    assert [tab.label for tab in at.tabs][:3] == ["Grid", "All measurements", "Batch summary"]
    # the model's details alone: the batch's tables are closed, the image in view is not shown in full
    assert [list(frame.value.columns)[0] for frame in at.dataframe] == ["property"]
    at.session_state["analyse_batch_tab"] = "All measurements"
    at.run()
    assert not at.get("image")  # the grid is not made meanwhile
    assert list(at.dataframe[1].value.columns)[:2] == ["Image", "Area (px\u00b2)"]
    assert key_measurements(outcomes[0].analysis).startswith("Area ")
    assert shrunk(outcomes[0].analysis.overlay, 56).shape[:2] == (48, 56)  # 96 x 112 halved
    table = batch_table(outcomes)
    headings = list(table[0])
    assert headings[0] == "Image" and "Area (px\u00b2)" in headings and "Compactness index" in headings
    assert not any("_" in heading for heading in headings)  # no machine keys shown
    assert all(value not in ("None", "nan") for row in table for value in row.values())
    summary = {row["measurement"]: row for row in batch_summary(outcomes)}
    areas = [o.analysis.measurement_row["area_px"] for o in outcomes]
    assert summary["Area (px\u00b2)"]["images"] == 3
    assert float(summary["Area (px\u00b2)"]["mean"].replace(",", "")) == pytest.approx(np.mean(areas), abs=0.05)
    assert float(summary["Area (px\u00b2)"]["sd"].replace(",", "")) == pytest.approx(np.std(areas), abs=0.05)
    at.selectbox(key="analyse_shown").select(outcomes[1].key).run()
    at.toggle(key="analyse_batch_details").set_value(True).run()  # the image in view in full
    assert at.get("image")[0].proto.imgs[0].caption.startswith("b.png: ")  # its overlay in view below
    downloads = outline_downloads(outcomes[1])
    assert [name for _, name, _, _ in downloads] == ["b_outline.geojson", "b_outline.roi", "b_outline.svg"]
    assert json.loads(downloads[0][2])["type"] == "FeatureCollection"


def results_after_the_grid(at) -> list[str]:
    """The kinds of the elements the results draw after the batch's tabs, in order."""
    def blocks(node):
        yield node
        for child in getattr(node, "children", {}).values():
            yield from blocks(child)

    results = next(block for block in blocks(at.main) if any(
        getattr(child, "type", "") == "subheader" for child in getattr(block, "children", {}).values()))
    kinds = [child.type for child in results.children.values()]
    return kinds[kinds.index("tab_container") + 1:]


def test_a_batch_sends_its_grid_with_the_pictures_in_it_and_the_image_in_view_in_full_only_when_asked(at):
    import base64

    from moleseg.app.results import thumbnail_jpeg

    outcomes = upload(at, [(f"{name}.png", png_bytes(mole_image(seed=seed)[0]), "image/png")
                           for name, seed in (("a", 1), ("b", 2))])
    (grid,) = at.get("image")  # the grid alone: the image in view's overlay is not made
    urls = [picture.url for picture in grid.proto.imgs]
    assert [url.split(",")[0] for url in urls] == ["data:image/jpeg;base64"] * 2  # no request per picture
    assert [base64.b64decode(url.split(",")[1]) for url in urls] == [thumbnail_jpeg(o.analysis) for o in outcomes]
    assert results_after_the_grid(at) == ["selectbox", "toggle"]  # nothing else of the image in view is sent
    assert not measurement_frames(at) and not [e for e in at.expander if e.label == "Correct the border by hand"]
    assert [button.label for button in at.get("download_button")] == [  # the exports of all images stay
        "Measurements of all images (CSV)", "Settings of the CSV (JSON)",
        "Everything (ZIP: PNGs, PDF reports, CSV, settings)"]
    assert not at.date_input and not at.text_input

    at.toggle(key="analyse_batch_details").set_value(True).run()
    overlay = at.get("image")[1].proto.imgs[0]
    assert overlay.caption.startswith("a.png: ") and overlay.url.startswith("/mock/media/")
    assert len(measurement_frames(at)) == 1 and [e for e in at.expander if e.label == "Correct the border by hand"]
    labels = [button.label for button in at.get("download_button")]
    assert labels[0] == "Overlay (PNG)" and labels[-3:] == ["Measurements of all images (CSV)",
                                                            "Settings of the CSV (JSON)",
                                                            "Everything (ZIP: PNGs, PDF reports, CSV, settings)"]
    assert at.date_input(key="analyse_save_date") and at.button(key="analyse_save").label == "Save a.png to records"


def test_cells_mode_counts_and_measures_every_object(at):
    from moleseg.app.analysis import ImageOutcome
    from moleseg.app.results import batch_bundle, key_measurements, objects_csv_bytes
    from moleseg.core.classical import ClassicalSegmenter
    from moleseg.engine.batches import analyse_images

    rows, cols = np.mgrid[:160, :200]
    image = np.full((160, 200, 3), 30, np.uint8)  # dark field, bright nuclei
    for row, col, radius in ((40, 40, 15), (50, 130, 20), (120, 70, 18), (115, 160, 14)):
        image[(rows - row) ** 2 + (cols - col) ** 2 <= radius**2] = 220
    analysis = analyse_images(ClassicalSegmenter(n_classes=2), [image])[0]
    assert analysis.cells and len(analysis.objects) == 4
    assert analysis.measurement_row["object_count"] == 4
    assert "lesion" not in " ".join(m.label + m.meaning for m in analysis.measurements).lower()
    outcome = ImageOutcome(name="nuclei.png", analysis=analysis, stem="nuclei", key="k")
    objects = list(csv.DictReader(io.StringIO(objects_csv_bytes([outcome]).decode())))
    assert [row["object"] for row in objects] == ["1", "2", "3", "4"]
    assert "Cells / nuclei counted 4" in key_measurements(analysis)
    bundle = zipfile.ZipFile(io.BytesIO(batch_bundle([outcome], "classical2")))
    assert "objects.csv" in bundle.namelist()
    at.selectbox(key="analyse_model").set_value("classical2").run()
    assert "cell images" in at.title[0].value
    at.file_uploader(key="analyse_upload_files").set_value(("nuclei.png", png_bytes(image), "image/png")).run()
    assert not at.exception
    assert "Correct the cells by hand" in [expander.label for expander in at.expander]
    at.session_state["analyse_correct_open"] = True  # opened: its buttons speak of cells
    at.run()
    assert "Remove from the cells" in [button.label for button in at.button]


class CountingSegmenter:
    """The classical segmenter, counting its network calls (``predict_probabilities``) and images."""

    def __init__(self) -> None:
        from moleseg.core.classical import ClassicalSegmenter

        self.inner = ClassicalSegmenter()
        self.calls = self.images = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict_probabilities(self, images):
        self.calls += 1
        self.images += len(images)
        return self.inner.predict_probabilities(images)


def test_a_cleanup_change_reuses_the_cached_probabilities_without_calling_the_network():
    from moleseg.app.analysis import AnalysisStore, Upload, analyse_uploads
    from moleseg.app.cleanup_plan import CleanupChoice, CleanupPlan
    from moleseg.core.cleanup import CleanupSettings

    segmenter = CountingSegmenter()
    store = AnalysisStore()
    uploads = [Upload("a.png", png_bytes(mole_image(seed=1)[0])), Upload("b.png", png_bytes(mole_image(seed=2)[0]))]
    first = analyse_uploads(store, segmenter, "m", uploads)
    assert (segmenter.calls, segmenter.images) == (1, 2)  # one batch of two images
    plan = CleanupPlan()
    for closing, rule, threshold in ((1, "article", None), (9, "grow_inside", None), (9, "grow_inside", 0.3)):
        plan.record(uploads[0].key, CleanupChoice(CleanupSettings(rule=rule, closing_radius_px=closing,
                                                                  border_width_px=7), threshold))
        outcomes = analyse_uploads(store, segmenter, "m", uploads, plan=plan)
        segmentation = outcomes[0].analysis.segmentation
        assert segmentation.settings.closing_radius_px == closing and segmentation.settings.rule == rule
        assert segmentation.lesion_threshold == threshold
        assert segmentation.probabilities is first[0].analysis.segmentation.probabilities  # the cached ones
        assert outcomes[1].analysis is first[1].analysis  # the other image is untouched
    assert not np.array_equal(outcomes[0].analysis.segmentation.border, first[0].analysis.segmentation.border)
    assert (segmenter.calls, segmenter.images) == (1, 2)  # the network never ran again


def test_the_canvas_background_is_the_overlay_at_the_canvas_size_as_jpeg():
    from moleseg.app.hand_correction import canvas_background
    from moleseg.core.classical import ClassicalSegmenter
    from moleseg.core.imageio import read_image
    from moleseg.engine.batches import analyse_images

    analysis = analyse_images(ClassicalSegmenter(), [mole_image(96, 112)[0]])[0]
    assert analysis.overlay is analysis.overlay and not analysis.overlay.flags.writeable  # drawn once
    background = read_image(canvas_background(analysis, 56, 48), name="canvas.jpg")
    assert background.shape == (48, 56, 3)
    def shrunk(picture):
        return picture.reshape(48, 2, 56, 2, 3).mean(axis=(1, 3))

    assert np.abs(background - shrunk(analysis.overlay)).mean() < 10
    lesion = shrunk(np.repeat(analysis.segmentation.lesion[..., None], 3, axis=2)).min(axis=2) == 1
    error = np.abs(background - shrunk(analysis.overlay))[lesion].mean()
    assert error < 0.5 * np.abs(background - shrunk(analysis.image))[lesion].mean()  # the overlay, not the photo


def test_inference_cache_notes_are_shown_once_as_warnings():
    from streamlit.testing.v1 import AppTest

    from moleseg.app import ui

    def page():
        import types

        import streamlit as st

        from moleseg.app import ui

        segmenter = st.session_state.setdefault("segmenter", types.SimpleNamespace(cache_notes=[
            "cached inference graph E not used: network.onnx does not match its recorded SHA-256; rebuilding it "
            "from the model file"]))
        ui.show_cache_notes(segmenter)

    app = AppTest.from_function(page).run()
    assert [warning.value for warning in app.warning] == [ui.CACHE_REBUILT_WARNING]
    assert "network.onnx" not in ui.CACHE_REBUILT_WARNING
    app.run()
    assert list(app.warning) == [] and app.session_state["segmenter"].cache_notes == []


def counted(monkeypatch, module, name: str) -> list:
    """Count the calls of ``module.name`` (still called through)."""
    calls = []
    inner = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *args, **kwargs: (calls.append(1), inner(*args, **kwargs))[1])
    return calls


def test_a_pixel_size_change_rescales_the_measurements_without_cleaning_or_measuring_again(monkeypatch):
    from moleseg.app.analysis import AnalysisStore, Upload, analyse_uploads
    from moleseg.core.measure import measure_lesion
    from moleseg.engine import pipeline

    segmenter, store = CountingSegmenter(), AnalysisStore()
    uploads = [Upload("a.png", png_bytes(mole_image(seed=1)[0]))]
    first = analyse_uploads(store, segmenter, "m", uploads)[0].analysis
    cleanups, measurings = counted(monkeypatch, pipeline, "clean"), counted(monkeypatch, pipeline, "measure_lesion")
    in_mm = analyse_uploads(store, segmenter, "m", uploads, pixel_size_mm=0.02)[0].analysis
    again_px = analyse_uploads(store, segmenter, "m", uploads, pixel_size_mm=None)[0].analysis
    in_other_mm = analyse_uploads(store, segmenter, "m", uploads, pixel_size_mm=0.5)[0].analysis
    assert (cleanups, measurings, segmenter.calls) == ([], [], 1)  # neither cleanup nor measuring ran again
    assert in_mm.segmentation is first.segmentation and in_mm.pixel_size_mm == 0.02
    lesion, border = first.segmentation.lesion, first.segmentation.border
    for analysis, size in ((in_mm, 0.02), (in_other_mm, 0.5)):
        fresh = measure_lesion(lesion, border=border, pixel_size_mm=size, image=first.image)
        assert [(m.key, m.unit) for m in analysis.measurements] == [(m.key, m.unit) for m in fresh]
        assert [m.value for m in analysis.measurements] == pytest.approx([m.value for m in fresh], rel=1e-12,
                                                                         nan_ok=True)
    area = {m.unit: m.value for m in in_mm.measurements if m.key == "area"}
    assert area["mm2"] == pytest.approx(area["px"] * 0.0004)  # 0.02 mm per px: 0.0004 mm² per pixel
    assert again_px.measurements == first.measurements and {m.unit for m in again_px.measurements} >= {"px"}
    assert not {"mm", "mm2"} & {m.unit for m in again_px.measurements}


def test_rescaled_cell_measurements_match_measuring_them_at_that_pixel_size():
    from moleseg.app.analysis import rescaled_measurements
    from moleseg.core.objects import field_measurements, find_objects
    from synthetic import disk

    mask = disk((64, 64), (20, 20), 6) | disk((64, 64), (44, 40), 9)
    objects = find_objects(mask)
    in_px = field_measurements(objects, mask.size)
    fresh = field_measurements(objects, mask.size, pixel_size_mm=0.004)
    rescaled = rescaled_measurements(in_px, 0.004)
    assert [(m.key, m.unit, m.value) for m in rescaled] == [(m.key, m.unit, m.value) for m in fresh]
    assert rescaled_measurements(fresh, None) == in_px


def test_going_back_to_a_cleanup_shown_before_takes_it_from_the_cache(monkeypatch):
    from moleseg.app.analysis import EARLIER_VARIANTS_KEPT, AnalysisStore, Upload, analyse_uploads
    from moleseg.app.cleanup_plan import CleanupChoice, CleanupPlan
    from moleseg.core.cleanup import CleanupSettings
    from moleseg.engine import pipeline

    segmenter, store, plan = CountingSegmenter(), AnalysisStore(), CleanupPlan()
    uploads = [Upload("a.png", png_bytes(mole_image(seed=3)[0]))]
    analyse_uploads(store, segmenter, "m", uploads)
    cleanups = counted(monkeypatch, pipeline, "clean")
    shown = {}
    for closing in (1, 2, 3, 2, 1):
        plan.record(uploads[0].key, CleanupChoice(CleanupSettings(closing_radius_px=closing), None))
        analysis = analyse_uploads(store, segmenter, "m", uploads, plan=plan)[0].analysis
        assert analysis.segmentation.settings.closing_radius_px == closing
        assert shown.setdefault(closing, analysis) is analysis  # the same analysis when shown again
    assert len(cleanups) == 3  # closing 1, 2 and 3 once each
    entry = store.get(("m", uploads[0].key))
    assert len(entry.earlier) == 3  # the automatic cleanup, 3 and 2 beside the latest (1)
    assert entry.nbytes > store.get(("m", uploads[0].key)).analysis.image.nbytes
    for closing in range(4, 6 + EARLIER_VARIANTS_KEPT):
        plan.record(uploads[0].key, CleanupChoice(CleanupSettings(closing_radius_px=closing), None))
        analyse_uploads(store, segmenter, "m", uploads, plan=plan)
    assert len(store.get(("m", uploads[0].key)).earlier) == EARLIER_VARIANTS_KEPT
    assert segmenter.calls == 1


def test_what_is_kept_with_an_analysis_is_forgotten_with_it():
    from moleseg.app.results import kept_with

    class Owner:
        pass

    for value in range(50):  # a new owner often gets a dead one's id (freed at once by its count): its own value
        owner = Owner()
        assert kept_with(owner, "value", lambda: value) == value
        assert kept_with(owner, "value", lambda: -1) == value  # made once per owner
        del owner


def test_a_users_own_model_is_prepared_in_the_background_with_progress_and_a_failure_is_one_sentence(
        app_folders, monkeypatch, tmp_path):
    import threading

    from app_helpers import run_until
    from moleseg.app import models

    run = models.ModelChoice(spec=str(tmp_path / "runs" / "r1" / "model.keras"), label="run r1 (3 classes)",
                             kind="run", n_classes=3, stamp=7, status="done")
    offered = models.model_choices()
    monkeypatch.setattr(models, "model_choices", lambda *args, **kwargs: offered + [run])
    monkeypatch.setattr(models, "needs_preparation", lambda choice: choice.kind == "run")  # the cache is off here
    release, started = threading.Event(), []

    def conversion(choice):
        def work(progress):
            started.append(choice.spec)
            progress(1, 4, "loading the model (TensorFlow)")
            release.wait(30)
            raise RuntimeError("tf2onnx: unsupported op FancyConv")

        return work

    monkeypatch.setattr(models, "preparation_task", conversion)
    at = app_test(PAGE)
    at.selectbox(key="analyse_model").set_value(run.spec).run()
    run_until(at, lambda at: 25 in [element.proto.value for element in at.get("progress")])  # shown: 1 of 4
    assert started == [run.spec]
    assert any(text.startswith("Preparing run r1 (3 classes) for fast analysis") for text in texts(at.info))
    progress = [element for element in at.get("progress")]
    assert len(progress) == 1 and progress[0].proto.text == "loading the model (TensorFlow)"
    assert progress[0].proto.value == 25  # 1 of 4 steps
    at.file_uploader(key="analyse_upload_files").set_value(("mole.png", png_bytes(mole_image()[0]), "image/png")).run()
    assert ui.analysis_store().predictions == 0 and not at.get("image")  # nothing analysed meanwhile,
    assert not at.error and not at.exception  # the model not even loaded
    at.file_uploader(key="analyse_upload_files").set_value([]).run()
    at.selectbox(key="analyse_model").set_value("classical").run()  # another model can be used meanwhile
    assert not any(text.startswith("Preparing") for text in texts(at.info))
    at.selectbox(key="analyse_model").set_value(run.spec).run()
    release.set()
    run_until(at, lambda at: at.error)
    assert texts(at.error) == ["Could not prepare run r1 (3 classes) for fast analysis, so TensorFlow analyses its "
                               "images, more slowly: tf2onnx: unsupported op FancyConv"]
    assert started == [run.spec]  # one preparation, however many runs of the page
    assert not at.exception


def test_only_a_users_finished_model_without_an_inference_form_needs_preparing(monkeypatch, tmp_path):
    from moleseg.app import models
    from moleseg.network import compiled

    cached: set[str] = set()
    monkeypatch.setattr(compiled, "cache_enabled", lambda: True)
    monkeypatch.setattr(compiled, "any_cached", lambda path: str(path) in cached)
    run = models.ModelChoice(spec=str(tmp_path / "model.keras"), label="run r1", kind="run", status="done")
    assert models.needs_preparation(run)
    assert not models.needs_preparation(models.ModelChoice(run.spec, "run r1", "run", status="running"))
    assert not models.needs_preparation(models.ModelChoice(run.spec, "dermoscopy", "shipped"))
    assert not models.needs_preparation(models.ModelChoice("classical", "classical baseline", "classical"))
    cached.add(run.spec)
    assert not models.needs_preparation(run)  # converted before (by this server or another process)
    cached.clear()
    monkeypatch.setattr(compiled, "cache_enabled", lambda: False)
    assert not models.needs_preparation(run)  # no inference cache: TensorFlow predicts, nothing to convert


def test_the_drawing_canvas_is_not_made_while_its_expander_is_closed(at, monkeypatch):
    from moleseg.app import hand_correction

    backgrounds = counted(monkeypatch, hand_correction, "canvas_background")
    upload(at, ("mole.png", png_bytes(mole_image()[0]), "image/png"))
    at.session_state["analyse_fill_opacity"] = 0.5
    at.run()
    assert backgrounds == []  # neither the first run nor a slider change made the canvas
    assert "Correct the border by hand" in [expander.label for expander in at.expander]  # the block is there,
    assert "Add to the lesion" not in [button.label for button in at.button]  # closed, nothing inside it sent
    at.session_state["analyse_correct_open"] = True  # opened
    at.run()
    assert len(backgrounds) == 1 and "Add to the lesion" in [button.label for button in at.button]


def test_an_upload_of_more_files_than_the_limit_is_refused_whole(at, monkeypatch):
    """Before, every file of any upload was read into memory and analysed (1,000 files: 1,000 analyses)."""
    from moleseg.app import analysis
    from moleseg.core.config import MAX_UPLOAD_FILES

    assert analysis.too_many_uploads(MAX_UPLOAD_FILES) is None
    assert analysis.too_many_uploads(MAX_UPLOAD_FILES + 1) == (
        f"{MAX_UPLOAD_FILES + 1:,} files were uploaded and one analysis takes at most {MAX_UPLOAD_FILES:,}: none "
        f"was analysed; upload them in parts of {MAX_UPLOAD_FILES:,} or fewer.")
    with pytest.raises(ValueError, match=f"{MAX_UPLOAD_FILES + 1:,} files were uploaded"):
        analysis.analyse_uploads(None, None, "m", [analysis.Upload("x.png", b"")] * (MAX_UPLOAD_FILES + 1))
    monkeypatch.setattr(analysis, "MAX_UPLOAD_FILES", 2)  # three tiny files stand for one more than the limit
    small = png_bytes(np.full((40, 40, 3), 200, np.uint8))
    at.file_uploader(key="analyse_upload_files").set_value(
        [(f"{name}.png", small, "image/png") for name in "abc"]).run()
    assert not at.exception
    assert [e.value for e in at.error] == ["3 files were uploaded and one analysis takes at most 2: none was "
                                           "analysed; upload them in parts of 2 or fewer."]
    assert "analyse_outcomes" not in at.session_state  # nothing analysed, not even the first two


def test_a_model_s_name_from_its_file_draws_no_link_under_the_overlay(app_folders, monkeypatch):
    # a model file's moleseg.json names the model (Segmenter.name): a shipped model is every user's, and st.image's
    # caption reads markdown
    from moleseg.app import ui
    from moleseg.core.classical import ClassicalSegmenter

    named = ClassicalSegmenter()
    named.name = "[Sign in again](https:evil.example)"
    monkeypatch.setattr(ui, "load_segmenter", lambda choice: named)
    test = app_test(PAGE)
    test.selectbox(key="analyse_model").set_value("classical").run()
    image, _ = mole_image()
    upload(test, ("[x](www.a.example).png", png_bytes(image), "image/png"))
    assert not test.exception and not test.error
    assert [element.proto.imgs[0].caption for element in test.get("image")] == [
        f"{ui.plain_markdown('[x](www.a.example).png')}: lesion and border ({ui.plain_markdown(named.name)})"]


def test_what_an_analysis_holds_a_pixel_is_what_the_memory_share_counts():
    """The share of memory of a user's open pages (moleseg.app.heldmemory) counts HELD_BYTES_PER_PIXEL a pixel of
    each upload, from its header: what an analysis of a three-class model holds (the analysis store's count), for a
    PNG of 16 kB of a 2000 x 2000 image, 116 MB."""
    from moleseg.app.analysis import AnalysisStore, Upload, _analysis_bytes, analyse_uploads
    from moleseg.app.heldmemory import HELD_BYTES_PER_PIXEL, held_bytes
    from moleseg.core.classical import ClassicalSegmenter

    picture = np.full((2000, 2000, 3), 200, np.uint8)
    picture[700:1300, 700:1300] = 60
    data = png_bytes(picture)
    assert len(data) < 20_000
    [outcome] = analyse_uploads(AnalysisStore(), ClassicalSegmenter(), "classical", [Upload("big.png", data)])
    assert _analysis_bytes(outcome.analysis) == HELD_BYTES_PER_PIXEL * 2000 * 2000 == 116_000_000
    assert held_bytes([Upload("big.png", data), Upload("not.png", b"not an image")]) == 116_000_000


def test_exports_without_names_switch_names_every_download_after_the_pixels(at, monkeypatch):
    """The switch renames every download of the page (its file names recorded as the page draws each button) and
    hands each export the choice; off again, the file's names are back."""
    import streamlit as st
    from streamlit.delta_generator import DeltaGenerator

    from moleseg.core.dicomexport import neutral_name

    drawn: dict[str, tuple[str, tuple]] = {}
    original = DeltaGenerator.download_button

    def recording(self, label, data, file_name=None, *args, **kwargs):
        drawn[kwargs["key"]] = (file_name, getattr(data, "args", ()))
        return original(self, label, data, file_name, *args, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "download_button", recording)
    on_the_page = st.download_button  # the main area's button: a method of its own DeltaGenerator
    monkeypatch.setattr(st, "download_button", lambda label, data, file_name=None, *args, **kwargs: recording(
        on_the_page.__self__, label, data, file_name, *args, **kwargs))
    outcomes = upload(at, ("Mueller_Anna.png", png_bytes(mole_image()[0]), "image/png"))
    assert drawn["analyse_dl_pdf"][0] == "Mueller_Anna_report.pdf"
    assert drawn["analyse_dl_zip"][1][-1] is True  # the ZIP is made with names
    drawn.clear()
    at.toggle(key="analyse_exports_without_names").set_value(True).run()
    stem = neutral_name(outcomes[0].analysis.pixel_sha256)
    assert {key: name for key, (name, _) in drawn.items() if "outline" not in key} == {
        "analyse_dl_overlay": f"{stem}_overlay.png", "analyse_dl_mask": f"{stem}_mask.png",
        "analyse_dl_pdf": f"{stem}_report.pdf", "analyse_dl_dicom": f"{stem}_dicom.zip",
        "analyse_dl_csv": "measurements.csv", "analyse_dl_sidecar": "measurements.settings.json",
        "analyse_dl_zip": "moleseg_results.zip"}
    assert [name for key, (name, _) in drawn.items() if "outline" in key] == [
        f"{stem}_outline.geojson", f"{stem}_outline.roi", f"{stem}_outline.svg"]
    assert {key: args[-1] for key, (_, args) in drawn.items() if args} == {  # each export told: without names
        key: False for key, (_, args) in drawn.items() if args}
    at.toggle(key="analyse_exports_without_names").set_value(False).run()
    assert drawn["analyse_dl_overlay"][0] == "Mueller_Anna_overlay.png"


def test_a_forged_drawing_is_refused_with_a_warning_and_a_forged_brush_is_held_to_the_slider(at):
    """What the canvas sends is the browser's (its component's value): a polygon of 5 000 corners (filled by
    testing each pixel against every corner, 24 s for 10 000 of them on 1 Mpx, on every run), a click on the
    disabled Add button, a brush 10^12 px wide (a scratch canvas three times the picture each way: 1.9 GB for
    2000 px), and values the canvas's own page never writes (its package raised on them)."""
    from moleseg.app.hand_correction import brush_width_limit
    from moleseg.engine.correction import MAX_POLYGON_CORNERS

    outcomes = upload(at, ("mole.png", png_bytes(mole_image()[0]), "image/png"))
    width = outcomes[0].analysis.image.shape[1]
    at.session_state["analyse_correct_open"] = True
    at.run()

    def canvas() -> str:  # a new one after each edit
        (key,) = [node.key for node in at._tree if str(getattr(node, "key", "")).startswith("analyse_canvas_")
                  and node.key != "analyse_canvas_room"]
        return key

    def drawn(*objects):
        return forged_run(at, canvas(), json_value=json.dumps({"drawing": {"raw": {"objects": list(objects)}}}))

    drawn({"type": "polygon", "points": [{"x": 10 + i % 7, "y": 10 + i % 5} for i in range(5_000)]})
    assert f"The drawing has a polygon of more than {MAX_POLYGON_CORNERS} corners: draw it with fewer." in texts(
        at.warning)
    assert at.button(key="analyse_draw_add").disabled
    forged_run(at, "analyse_draw_add", trigger_value=True)  # a click on the disabled button: Streamlit drops it
    (edits,) = at.session_state["analyse_corrections"].values()
    assert not at.exception and not edits.any
    drawn({"type": "path", "strokeWidth": 1e12, "path": [["M", 5, 5], ["L", 9, 9]]})
    at.button(key="analyse_draw_add").click().run()
    assert [stroke.width_px for edit in edits.edits for stroke in edit.strokes] == [brush_width_limit(width)]
    for sent in [{"drawing": 5}, {"backgroundFit": {"scaleX": 1}}, [1, 2], {"drawing": {"raw": "x"}}]:
        forged_run(at, canvas(), json_value=json.dumps(sent))
        assert not at.exception, sent


def test_the_visit_fields_stop_at_what_a_record_keeps_and_a_longer_forged_text_is_cut_there(at, app_folders):
    """The records refuse a longer identifier, body site or notes; the fields let one be typed (the save then
    failed) and a browser's message may hold 25 MB. Each field's max_chars is the records' own limit, and
    Streamlit cuts a longer value there."""
    from moleseg.engine.recordtypes import NOTES_MAX_CHARS, VISIT_FIELD_MAX_CHARS

    upload(at, ("mole.png", png_bytes(mole_image()[0]), "image/png"))
    assert at.text_input(key="analyse_save_lesion").proto.max_chars == VISIT_FIELD_MAX_CHARS
    assert at.text_area(key="analyse_save_notes").proto.max_chars == NOTES_MAX_CHARS
    forged_run(at, "analyse_save_notes", string_value="n" * 3_000_000)
    at.button(key="analyse_save").click().run()
    assert not at.exception and not at.error
    from moleseg.app.identity import personal_user
    from moleseg.engine.records import Records

    (record,) = Records().records(personal_user())
    assert record.notes == "n" * NOTES_MAX_CHARS


@pytest.mark.parametrize(("key", "sent", "kept"), [
    ("analyse_pixel_size", {"double_value": 1e9}, 0.0), ("analyse_pixel_size", {"double_value": float("nan")}, 0.0),
    ("analyse_mode", {"string_value": "../../etc"}, "files"),
    ("analyse_fill_color", {"string_value": "url(javascript:1)"}, None),
    ("analyse_save_date", {"string_array_value": ["9999-12-31"]}, None),
    ("analyse_save_date", {"string_array_value": ["0001-01-01"]}, None)])
def test_a_value_no_widget_offers_is_put_back_where_the_page_allows(at, key, sent, kept):
    """What Streamlit (pinned) checks itself of a browser's forged widget values, which the page relies on: a
    number outside its range, a choice that is none of the options, a colour that is none, a date before the
    earliest visit date or after the widget's last day. An upgrade that stops it fails here."""
    import datetime

    from moleseg.core.config import EARLIEST_VISIT_DATE

    upload(at, ("mole.png", png_bytes(mole_image()[0]), "image/png"))
    before = at.session_state[key]
    forged_run(at, key, **sent)
    assert not at.exception
    now = at.session_state[key]
    assert now == (before if kept is None else kept)
    if key == "analyse_save_date":
        assert EARLIEST_VISIT_DATE <= now <= datetime.date.today()
