"""The History and Compare pages and the Analyse page's "Save to records" form (AppTest)."""

from __future__ import annotations

import datetime

import numpy as np
import pytest

from app_helpers import app_test, texts
from synthetic import mole_image, png_bytes
from moleseg.app import followup
from moleseg.app.ui import PAGE_FILES
from moleseg.core.measure import measure_lesion
from moleseg.engine.records import Records


@pytest.fixture
def isolated(app_folders):
    return app_folders


def test_history_lists_a_saved_record_and_opens_it(isolated):
    image, mask = mole_image(seed=3)
    records = Records()
    record_id = records.save(image, mask, measure_lesion(mask, image=image), lesion="back mole",
                             visit_date="2026-02-03", body_site="back", notes="routine", image_name="m3.png",
                             model_name="classical")
    at = app_test(PAGE_FILES["history"])
    assert not at.exception
    lesions = at.dataframe[0].value
    assert list(lesions["lesion"]) == ["back mole"] and list(lesions["visits"]) == [1]
    visits = at.dataframe[1].value
    assert list(visits["id"]) == [record_id] and list(visits["image"]) == ["m3.png"]
    assert at.selectbox(key="history_visit").value == record_id
    assert len(at.get("image")) == 2
    measurements = at.dataframe[2].value
    assert "Area" in set(measurements["measurement"])
    assert any("routine" in text for text in texts(at.markdown))


def test_history_says_when_nothing_is_saved(isolated):
    at = app_test(PAGE_FILES["history"])
    assert not at.exception
    assert any("Nothing saved yet" in text for text in texts(at.info))


def test_history_deletes_a_visit(isolated):
    image, mask = mole_image(seed=1)
    record_id = Records().save(image, mask, measure_lesion(mask), lesion="L")
    at = app_test(PAGE_FILES["history"])
    at.checkbox(key=f"history_delete_sure_{record_id}").check().run()
    at.button(key="history_delete").click().run()
    assert not at.exception
    assert Records().records() == []
    assert any("Nothing saved yet" in text for text in texts(at.info))
    assert record_id not in [r.id for r in Records().records()]


def test_the_next_visit_shown_after_a_delete_asks_again_before_it_is_deleted(isolated):
    """The 'Yes, delete' box stayed ticked for the visit shown next (after a delete, or another visit
    chosen): one more click on Delete removed it unasked."""
    image, mask = mole_image(seed=1)
    first, second, third = (Records().save(image, mask, measure_lesion(mask), lesion="L",
                                           visit_date=f"2026-0{month}-01") for month in (1, 2, 3))
    at = app_test(PAGE_FILES["history"])
    assert at.selectbox(key="history_visit").value == third
    at.checkbox(key=f"history_delete_sure_{third}").check().run()
    at.selectbox(key="history_visit").set_value(second).run()
    assert at.button(key="history_delete").disabled
    at.selectbox(key="history_visit").set_value(third).run()
    at.checkbox(key=f"history_delete_sure_{third}").check().run()
    at.button(key="history_delete").click().run()
    assert [r.id for r in Records().records()] == [second, first]
    assert not at.exception and at.button(key="history_delete").disabled  # the next visit: asked again


def test_history_says_a_saved_lesion_may_extend_beyond_the_picture_and_its_pdf_too(isolated):
    """The Analyse page and its PDF flag a lesion cut by the frame (its area is a lower bound); the same
    visit reopened on the History page, and the PDF exported there, did not."""
    import io

    import pypdf

    image, _ = mole_image(seed=3)
    mask = np.zeros(image.shape[:2], bool)
    mask[:, : image.shape[1] // 2] = True  # the left half: most of its outline on the frame
    record_id = Records().save(image, mask, measure_lesion(mask, image=image), lesion="edge")
    at = app_test(PAGE_FILES["history"])
    assert not at.exception
    assert any("may extend beyond the picture" in text for text in texts(at.warning))
    saved = Records().open(record_id)
    text = pypdf.PdfReader(io.BytesIO(followup.saved_report(saved, "edge.png"))).pages[0].extract_text()
    assert "may extend beyond the picture" in text and "Lesion border analysis" in text
    inside = np.zeros(image.shape[:2], bool)
    inside[20:60, 30:90] = True
    assert followup.saved_notes(Records().open(Records().save(image, inside, measure_lesion(inside)))) is None


def test_the_pdf_of_a_saved_cells_visit_is_a_cell_segmentation_report(isolated):
    import io

    import pypdf

    from moleseg.core.objects import field_measurements, find_objects

    image, _ = mole_image(seed=4)
    cells = np.zeros(image.shape[:2], bool)
    cells[10:20, 10:20] = cells[40:52, 60:70] = True
    saved = Records().open(Records().save(image, cells, field_measurements(find_objects(cells), cells.size)))
    assert followup.saved_n_classes(saved) == 2
    text = pypdf.PdfReader(io.BytesIO(followup.saved_report(saved, "field.png"))).pages[0].extract_text()
    assert "Cell segmentation analysis" in text and "Lesion border analysis" not in text


def test_analyse_saves_to_records(isolated):
    at = app_test(PAGE_FILES["analyse"])
    at.selectbox(key="analyse_model").set_value("classical").run()
    image, _ = mole_image(seed=2)
    at.file_uploader(key="analyse_upload_files").set_value(("mole.png", png_bytes(image), "image/png")).run()
    at.text_input(key="analyse_save_lesion").input("arm 2")
    at.date_input(key="analyse_save_date").set_value(datetime.date(2026, 5, 6))
    at.text_area(key="analyse_save_notes").input("looks stable")
    at.button[-1].click().run()  # the form's submit button is the page's last button
    assert not at.exception
    saved = Records().records()
    assert len(saved) == 1
    record = saved[0]
    assert (record.lesion, record.visit_date, record.notes, record.image_name) == (
        "arm 2", "2026-05-06", "looks stable", "mole.png")
    assert record.model_name == "classical" and record.cleanup["rule"] == "article"
    assert record.corrected is False and record.pixel_size_mm is None
    opened = Records().open(record.id)
    assert np.array_equal(opened.image, image)
    assert any("Saved as record" in text for text in texts(at.success))
    outcome = at.session_state["analyse_outcomes"][0]
    visit = at.session_state["analyse_visits"][outcome.key]  # what the image's PDF, CSV and sidecar print
    assert (visit.lesion, visit.visit_date, visit.notes) == ("arm 2", "2026-05-06", "looks stable")


def test_compare_page_shows_the_figures(isolated, lesion_scene):
    before, _ = lesion_scene()
    after, _ = lesion_scene(angle_deg=10.0, shift_px=(8.0, -4.0))
    at = app_test(PAGE_FILES["compare"])
    at.selectbox(key="compare_model").set_value("classical").run()
    at.file_uploader(key="compare_before").set_value(("before.png", png_bytes(before), "image/png"))
    at.file_uploader(key="compare_after").set_value(("after.png", png_bytes(after), "image/png")).run()
    assert not at.exception
    assert not at.warning
    metrics = {metric.label: metric.value for metric in at.metric}
    assert float(metrics["Rotation"].rstrip("°")) == pytest.approx(10.0, abs=1.0)
    assert abs(float(metrics["Area change"].split()[0])) < 3.0
    assert len(at.get("image")) == 1
    changes = at.dataframe[0].value
    assert "Area" in set(changes["Measurement"])
    comparison = at.session_state["compare_result"]
    assert comparison.registration.ok


def test_compare_warnings_are_sentences(isolated, lesion_scene):
    before, _ = lesion_scene(seed=0)
    other, _ = lesion_scene(seed=7, radius_px=45)  # unrelated: the alignment fails
    at = app_test(PAGE_FILES["compare"])
    at.selectbox(key="compare_model").set_value("classical").run()
    at.file_uploader(key="compare_before").set_value(("before.png", png_bytes(before), "image/png"))
    at.file_uploader(key="compare_after").set_value(("after.png", png_bytes(other), "image/png")).run()
    assert not at.exception
    (warning,) = texts(at.warning)
    assert warning.startswith("Alignment failed") and warning.endswith(".")


def test_compare_page_compares_two_saved_visits_with_a_swipe(isolated, lesion_scene):
    before, true_before = lesion_scene(radius_px=60)
    after, true_after = lesion_scene(radius_px=66, angle_deg=5.0, shift_px=(4.0, 3.0))
    records = Records()
    january = records.save(before, true_before, measure_lesion(true_before), lesion="arm",
                           visit_date="2026-01-01", image_name="jan.png", model_name="classical")
    june = records.save(after, true_after, measure_lesion(true_after), lesion="arm", visit_date="2026-06-01",
                 image_name="jun.png", model_name="classical")
    records.save(before, true_before, measure_lesion(true_before), lesion="once")  # one visit: not offered
    at = app_test(PAGE_FILES["compare"])
    at.radio(key="compare_source").set_value(followup.COMPARE_SAVED).run()
    assert not at.exception
    assert at.selectbox(key="compare_lesion").options == ["arm"]
    assert at.selectbox(key="compare_before_record").value == january  # the earlier visit first
    assert at.selectbox(key="compare_after_record").value == june
    comparison = at.session_state["compare_result"]
    expected = 100.0 * (true_after.sum() / true_before.sum() - 1.0)
    assert comparison.area_change_percent == pytest.approx(expected, abs=0.01)
    changes = {row["Measurement"]: row for row in at.dataframe[0].value.to_dict("records")}
    saved = {m.label: m.text for m in records.record(january).measurements if m.unit == ""}
    assert changes["Compactness index"]["Before"] == saved["Compactness index"]  # as Analyse and History show it
    at.radio(key="compare_view").set_value(followup.VIEW_SWIPE).run()
    at.slider(key="compare_swipe").set_value(20).run()
    assert not at.exception
    assert len(at.get("image")) == 1
    metrics = {metric.label: metric.value for metric in at.metric}
    assert float(metrics["Area change"].split()[0]) == pytest.approx(expected, abs=0.1)


def test_compare_warns_when_before_is_dated_after_after_and_compares_in_date_order(isolated, lesion_scene):
    before, true_before = lesion_scene(radius_px=60)
    after, true_after = lesion_scene(radius_px=66, angle_deg=5.0, shift_px=(4.0, 3.0))
    records = Records()
    january = records.save(before, true_before, measure_lesion(true_before), lesion="arm",
                           visit_date="2026-01-01", image_name="jan.png")
    june = records.save(after, true_after, measure_lesion(true_after), lesion="arm", visit_date="2026-06-01",
                        image_name="jun.png")
    at = app_test(PAGE_FILES["compare"])
    at.radio(key="compare_source").set_value(followup.COMPARE_SAVED).run()
    assert not at.warning
    at.selectbox(key="compare_before_record").set_value(june).run()
    at.selectbox(key="compare_after_record").set_value(january).run()
    assert not at.exception
    assert any("Before (2026-06-01) is dated after" in text for text in texts(at.warning))
    grown = 100.0 * (true_after.sum() / true_before.sum() - 1.0)  # January to June, not the other way
    assert at.session_state["compare_result"].area_change_percent == pytest.approx(grown, abs=0.01)


def test_compare_does_not_pair_visits_saved_without_an_identifier_unless_asked(isolated, lesion_scene):
    image, lesion = lesion_scene(radius_px=60)
    other, other_lesion = lesion_scene(radius_px=40)
    records = Records()
    records.save(image, lesion, measure_lesion(lesion), visit_date="2026-01-01")  # no identifier
    records.save(other, other_lesion, measure_lesion(other_lesion), visit_date="2026-02-01")  # another mole?
    at = app_test(PAGE_FILES["compare"])
    at.radio(key="compare_source").set_value(followup.COMPARE_SAVED).run()
    assert not at.exception and "compare_result" not in at.session_state
    assert any("No lesion has two saved visits" in text for text in texts(at.info))
    at.checkbox(key="compare_unidentified").check().run()  # the user says they show one lesion
    assert at.selectbox(key="compare_lesion").options == [followup.NO_IDENTIFIER]
    assert any("without a lesion identifier" in text for text in texts(at.warning))
    assert "compare_result" in at.session_state
