"""The Analyse page's cleanup, colour, opacity and pixel-size values rerun the results' fragment alone: what such
a run draws is the results (no sidebar widget is run or sent again), from the cached probabilities. The settled
sliders (:mod:`moleseg.app.settled_slider`) are set through the session state here and pressed in a real browser
in tests/test_app_browser.py."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest

from app_helpers import app_test, html_table_rows
from synthetic import mole_image, png_bytes
from moleseg.app import ui
from moleseg.app.results import measurement_table
from moleseg.app.ui import PAGE_FILES

#: What a run of the results draws for one image analysed by the classical model (no confidence caption), as
#: the element tree's leaves: the heading, the overlay, the closed "Predicted classes" expander, the cleanup
#: caption, the measurements (one HTML table) and the closed hand-correction expander.
RESULTS_RUN = ["subheader", "image", "expander", "caption", "html", "expander"]


def leaves(node) -> list[str]:
    """The kinds of the elements (and empty blocks) under ``node`` of an AppTest element tree, in page order."""
    children = getattr(node, "children", None)
    if isinstance(children, dict) and children:
        return [kind for child in children.values() for kind in leaves(child)]
    return [node.type]


@pytest.fixture
def analysed(app_folders):
    """The Analyse page with one synthetic mole analysed by the classical model and the manual cleanup on."""
    at = app_test(PAGE_FILES["analyse"])
    at.selectbox(key="analyse_model").set_value("classical").run()
    at.file_uploader(key="analyse_upload_files").set_value(
        ("mole.png", png_bytes(mole_image()[0]), "image/png")).run()
    at.toggle(key="analyse_manual").set_value(True).run()
    assert not at.exception
    assert at.session_state["analyse_closing"] == 15  # the sidebar is drawn by that run
    return at


@pytest.mark.parametrize("change", [
    lambda at: at.color_picker(key="analyse_fill_color").set_value("#0000ff"),
    lambda at: at.number_input(key="analyse_pixel_size").set_value(0.02),
], ids=["colour", "pixel size"])
def test_a_value_change_reruns_only_the_results(analysed, change):
    store = ui.analysis_store()
    before = analysed.session_state["analyse_outcomes"][0].analysis
    change(analysed).run()
    assert not analysed.exception
    assert leaves(analysed.main) == RESULTS_RUN
    assert leaves(analysed.sidebar) == ["sidebar"]  # not one settings widget run again
    after = analysed.session_state["analyse_outcomes"][0].analysis
    assert after is not before  # the results follow the new value
    assert store.predictions == 1  # from the cached probabilities


class RecordingDrawer(ThreadPoolExecutor):
    """A one-thread pool that records the name of each function handed to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.names: list[str] = []

    def submit(self, fn, /, *args, **kwargs):
        self.names.append(getattr(fn, "__name__", ""))
        return super().submit(fn, *args, **kwargs)


def test_a_new_value_is_analysed_beside_the_drawer_as_in_one_thread(analysed, monkeypatch):
    from moleseg.core.classical import ClassicalSegmenter

    drawer = RecordingDrawer()
    monkeypatch.setattr(ui.analysis_store(), "drawer", drawer)
    before = analysed.session_state["analyse_outcomes"][0].analysis  # closing 15
    analysed.session_state["analyse_closing"] = 3  # a settled slider: set as the browser's value would be
    analysed.run()
    analysis = analysed.session_state["analyse_outcomes"][0].analysis
    # the overlay, its display JPEG (the image is in view) and the colours handed to the drawer
    assert {"_drawn", "_encoded", "colour_measurements"} <= set(drawer.names)
    drawer.shutdown()
    alone = before.recleaned(ClassicalSegmenter(), analysis.segmentation.settings, style=analysis.style)
    assert alone.segmentation.settings.closing_radius_px == 3
    assert analysis.measurements == alone.measurements and len(alone.measurements) > 10
    assert analysis.overlay_jpeg == alone.overlay_jpeg and analysis.overlay.tobytes() == alone.overlay.tobytes()


@pytest.mark.parametrize("n_classes", [2, 3])
def test_recleaned_with_a_drawer_gives_what_one_thread_gives(n_classes):
    from moleseg.core.classical import ClassicalSegmenter
    from moleseg.engine.pipeline import finish_analysis
    from moleseg.engine.segmenter import segment

    image = mole_image(seed=3)[0]
    segmenter = ClassicalSegmenter(n_classes=n_classes)
    analysis = finish_analysis(image, segment(segmenter, image), segmenter, pixel_size_mm=0.02)
    settings = dataclasses.replace(analysis.segmentation.settings, closing_radius_px=2, border_width_px=4)
    alone = analysis.recleaned(segmenter, settings, pixel_size_mm=0.02, lesion_threshold=0.4)
    with ThreadPoolExecutor(max_workers=1) as drawer:
        shared = analysis.recleaned(segmenter, settings, pixel_size_mm=0.02, lesion_threshold=0.4, drawer=drawer,
                                    shown=True)
    np.testing.assert_array_equal(shared.segmentation.lesion, alone.segmentation.lesion)
    assert shared.segmentation.lesion.any() and shared.segmentation.settings.border_width_px == 4
    assert shared.measurements == alone.measurements and shared.objects == alone.objects
    assert "overlay_jpeg" in vars(shared) and shared.overlay_jpeg == alone.overlay_jpeg


class BlockedDrawer(ThreadPoolExecutor):
    """The store's one-thread drawer held by another session's job until :attr:`release` is set; it keeps every
    job handed to it after that one."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.release = threading.Event()
        super().submit(self.release.wait)
        self.jobs: list[Future] = []

    def submit(self, fn, /, *args, **kwargs) -> Future:
        self.jobs.append(super().submit(fn, *args, **kwargs))
        return self.jobs[-1]


def test_two_sessions_behind_a_busy_drawer_take_their_jobs_back_and_get_one_threads_values():
    from moleseg.core.classical import ClassicalSegmenter
    from moleseg.engine.pipeline import finish_analysis
    from moleseg.engine.segmenter import segment

    segmenter = ClassicalSegmenter()
    analyses = [finish_analysis(image, segment(segmenter, image), segmenter)
                for image in (mole_image(seed=5)[0], mole_image(seed=6)[0])]
    settings = [dataclasses.replace(analysis.segmentation.settings, closing_radius_px=2, border_width_px=3)
                for analysis in analyses]
    alone = [analysis.recleaned(segmenter, chosen) for analysis, chosen in zip(analyses, settings)]
    drawer = BlockedDrawer()
    shared: dict[int, object] = {}

    def press(session: int) -> None:
        shared[session] = analyses[session].recleaned(segmenter, settings[session], drawer=drawer, shown=True)

    sessions = [threading.Thread(target=press, args=(session,)) for session in (0, 1)]
    try:
        for session in sessions:
            session.start()
        for session in sessions:
            session.join(timeout=120)  # a session waiting for the held drawer would never end
        assert not any(session.is_alive() for session in sessions)
    finally:
        drawer.release.set()
        drawer.shutdown()
    # each session's overlay, JPEG, two distance transforms, colours and confidence: all taken back, none left queued
    assert len(drawer.jobs) == 12 and all(job.cancelled() for job in drawer.jobs)
    for session in (0, 1):
        assert shared[session].measurements == alone[session].measurements
        assert shared[session].overlay_jpeg == alone[session].overlay_jpeg
    assert shared[0].measurements != shared[1].measurements  # each session got its own image's values


def test_recleaned_takes_the_confidence_over():
    from moleseg.core.classical import ClassicalSegmenter
    from moleseg.engine.pipeline import finish_analysis
    from moleseg.engine.segmenter import border_confidence, segment

    image = mole_image(seed=4)[0]
    segmenter = ClassicalSegmenter()
    analysis = finish_analysis(image, segment(segmenter, image), segmenter)
    settings = dataclasses.replace(analysis.segmentation.settings, closing_radius_px=1)
    assert "confidence" not in vars(analysis.recleaned(segmenter, settings).segmentation)  # none made yet
    made = analysis.confidence
    again = analysis.recleaned(segmenter, settings, lesion_threshold=0.3)
    assert vars(again.segmentation)["confidence"] == made  # taken over, not made again
    probabilities = again.segmentation.probabilities
    assert made == border_confidence(probabilities, probabilities[..., 0] < 0.5) and 0 < made <= 1


def test_the_results_run_uses_the_new_cleanup_value(analysed):
    analysed.session_state["analyse_closing"] = 3  # a settled slider: set as the browser's value would be
    analysed.run()
    settings = analysed.session_state["analyse_outcomes"][0].analysis.segmentation.settings
    assert settings.closing_radius_px == 3
    assert "closing 3 px" in analysed.caption[0].value


def test_switching_the_manual_cleanup_off_runs_the_settings_too(analysed):
    analysed.session_state["analyse_closing"] = 3  # a settled slider: set as the browser's value would be
    analysed.run()
    assert "analyse_closing_settled" in [getattr(widget, "key", None) for widget in analysed.sidebar]
    analysed.toggle(key="analyse_manual").set_value(False).run()
    assert "analyse_closing_settled" not in [getattr(widget, "key", None) for widget in analysed.sidebar]
    assert analysed.session_state["analyse_outcomes"][0].analysis.segmentation.settings.closing_radius_px == 15


def test_the_measurements_are_one_html_table_of_every_value_and_unit(analysed):
    analysed.number_input(key="analyse_pixel_size").set_value(0.02).run()
    analysis = analysed.session_state["analyse_outcomes"][0].analysis
    tables = [rows for rows in (html_table_rows(element.value) for element in analysed.get("html")) if rows]
    assert tables == [measurement_table(analysis)]  # every row, its value, unit and meaning as they are
    assert not analysed.dataframe  # no data grid for the browser to redraw on each run
    area = {row["unit"]: row["value"] for row in tables[0] if row["measurement"] == "Area"}
    assert set(area) == {"px²", "mm²"}
    assert float(area["mm²"].replace(",", "")) == pytest.approx(
        float(area["px²"].replace(",", "")) * 0.02**2, rel=1e-2)


@pytest.mark.parametrize(("sent", "low", "high", "step", "expected"), [
    (7, 0, 20, 1, 7), (7.4, 0, 20, 1, 7), (-3, 0, 20, 1, 0), (99, 0, 20, 1, 20),
    (0.37, 0.05, 0.95, 0.05, 0.35), (0.98, 0.0, 1.0, 0.05, 1.0), (0.0, 0.05, 0.95, 0.05, 0.05),
    ("7", 0, 20, 1, None), (None, 0, 20, 1, None), (float("nan"), 0, 20, 1, None), (float("inf"), 0, 20, 1, None),
    (True, 0, 20, 1, None), ([7], 0, 20, 1, None),
    (10**400, 0, 20, 1, 20), (-(10**400), 0.05, 0.95, 0.05, 0.05),  # JSON's integers have no size limit
    (0.15000000000000002, 0.0, 1.0, 0.05, 0.15), (0.1 + 0.2, 0.05, 0.95, 0.05, 0.3),
])
def test_a_value_from_the_browser_is_put_on_the_sliders_steps_or_refused(sent, low, high, step, expected):
    from moleseg.app.settled_slider import settled_value

    value = settled_value(sent, low, high, step)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(("sent", "expected"), [
    ({"value": 7, "revision": 3}, 7), ({"value": 99, "revision": 3}, 20),
    ({"value": 7, "revision": 2}, None),  # moved from a value the page has replaced since
    ({"value": 7, "revision": True}, None), ({"value": 7}, None), (7, None), ({"value": "7", "revision": 3}, None),
])
def test_a_browser_message_is_taken_only_for_the_revision_shown(sent, expected):
    from moleseg.app.settled_slider import accepted_value

    assert accepted_value(sent, 3, 0, 20, 1) == expected


def settled_page():
    import streamlit as st

    from moleseg.app.settled_slider import settled_slider

    if st.button("another image", key="switch"):
        st.session_state["radius"] = 12  # the page sets the value: the widget shows it
    settled_slider("Closing radius (px)", 0, 20, key="radius", unit="px", default=5, help="A disk.")
    settled_slider("Lesion opacity", 0.0, 1.0, step=0.05, key="opacity", disabled=True)


def test_the_settled_slider_sends_its_value_and_a_new_revision_when_the_page_sets_one():
    import json

    from streamlit.testing.v1 import AppTest

    from moleseg.app.settled_slider import SETTLE_MS

    at = AppTest.from_function(settled_page).run()
    assert not at.exception
    sent = {element.key: json.loads(element.proto.json) for element in at.main if element.type == "bidi_component"}
    assert sent["radius_settled"] == {"label": "Closing radius (px)", "min": 0, "max": 20, "step": 1, "value": 5,
                                      "unit": "px", "decimals": 0, "help": "A disk.", "disabled": False,
                                      "revision": 1, "settle_ms": SETTLE_MS}
    assert sent["opacity_settled"]["revision"] == 2  # numbered across the session's sliders
    assert sent["opacity_settled"]["value"] == 0.0 and sent["opacity_settled"]["decimals"] == 2
    assert sent["opacity_settled"]["disabled"] is True
    assert at.session_state["radius"] == 5 and at.session_state["opacity"] == 0.0

    def radius() -> dict:
        return json.loads(next(e for e in at.main if getattr(e, "key", None) == "radius_settled").proto.json)

    at.run()
    assert radius()["revision"] == 1  # the same value: the browser keeps what it shows
    at.button(key="switch").click().run()
    assert (radius()["value"], radius()["revision"]) == (12, 3)  # set by the page: shown over the browser's


def off_steps_page():
    import streamlit as st

    from moleseg.app.settled_slider import settled_slider

    st.session_state.setdefault("threshold", 0.37)  # a model file's calibrated value, off the slider's steps
    st.session_state.setdefault("radius", 99)  # above the slider's range
    settled_slider("Lesion probability threshold", 0.05, 0.95, step=0.05, key="threshold")
    settled_slider("Closing radius (px)", 0, 20, key="radius")


def test_a_value_the_page_set_off_the_steps_is_the_one_the_browser_shows():
    import json

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(off_steps_page).run()
    assert not at.exception
    sent = {element.key: json.loads(element.proto.json) for element in at.main if element.type == "bidi_component"}
    assert (sent["threshold_settled"]["value"], at.session_state["threshold"]) == (0.35, 0.35)
    assert (sent["radius_settled"]["value"], at.session_state["radius"]) == (20, 20)
