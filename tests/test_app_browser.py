"""The app served for real (``streamlit run``) and driven by chromium: every page renders through
app.py's navigation, even when the server's first request opens a page directly; and the Analyse page,
with the project's own models, turns an uploaded dermoscopy image into an overlay and a one-page PDF
report downloaded by the browser (its screenshot is kept in ``test-artifacts/``, and becomes the
README's picture with ``MOLESEG_UPDATE_README_SCREENSHOT=1``)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import time
from pathlib import Path

import pytest
from PIL import Image

from app_helpers import APP, ARTIFACTS, streamlit_server
from synthetic import mole_image, png_bytes
from moleseg.core.config import DATA_DIR_ENV
from moleseg.tools.bench_controls import border_slider, new_overlay, switch_on

pytestmark = pytest.mark.browser

ROOT = APP.parent
#: The README's picture of the Analyse page (rewritten only with MOLESEG_UPDATE_README_SCREENSHOT=1).
README_SCREENSHOT = ROOT / "docs" / "analyse-page.png"
#: The real dermoscopy image of the Analyse test (the synthetic mole stands in when it is absent).
SHARED_IMAGE = "moles/ph2/images/IMD004.jpg"
PAGE_OBJECT = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
IMAGE_XOBJECT = re.compile(rb"<<((?:(?!>>).)*?/Subtype\s*/Image(?:(?!>>).)*?)>>\s*stream\r?\n(.*?)endstream", re.DOTALL)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app with empty models and runs folders (the classical baseline) and its own records folder; one
    server for the tests of this module, as several browser sessions share one server."""
    folder = tmp_path_factory.mktemp("isolated-server")
    env = {**os.environ, "MOLESEG_MODELS_DIR": str(folder), "MOLESEG_RUNS_DIR": str(folder / "runs"),
           "MOLESEG_TMPDIR": str(folder), DATA_DIR_ENV: str(folder / "records")}
    with streamlit_server(env, "streamlit-isolated") as (url, _):
        yield url


@pytest.fixture
def project_server(tmp_path):
    """The app with the project's own models folder (``models/``: the shipped network once trained);
    runs and session files stay in ``tmp_path``."""
    env = {**os.environ, "MOLESEG_RUNS_DIR": str(tmp_path / "runs"), "MOLESEG_TMPDIR": str(tmp_path)}
    env.pop("MOLESEG_MODELS_DIR", None)
    with streamlit_server(env, "streamlit-project") as (url, _):
        yield url


def _wait_for_images(page, count: int, timeout_ms: int = 30_000) -> None:
    """Wait until the page shows ``count`` pictures (``st.image``), all loaded."""
    page.wait_for_function(
        "n => { const images = document.querySelectorAll('[data-testid=stImage] img');"
        " return images.length === n && [...images].every(img => img.complete && img.naturalWidth > 0); }",
        arg=count, timeout=timeout_ms)


def test_pages_render_through_the_navigation_even_when_opened_first(server, browser, tmp_path):
    picture = tmp_path / "mole.png"
    picture.write_bytes(png_bytes(mole_image(160, 200)[0]))
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    elsewhere: list[str] = []  # requests to another host than the server (the tab's icon from Google's fonts...)
    page.on("request", lambda request: None if request.url.startswith((server, "data:", "blob:"))
            else elsewhere.append(request.url))
    page.goto(f"{server}/train", timeout=60_000)  # the server's very first request opens a page
    page.wait_for_selector("text=New training", timeout=60_000)
    navigation = page.locator("[data-testid=stSidebarNav]").inner_text()
    assert "Home" in navigation and "Prepare targets" in navigation  # app.py's st.navigation
    for link, heading in (("Home", "moleseg: mole border analysis"), ("Prepare targets", "Prepare targets"),
                          ("Evaluate", "Evaluate"), ("Analyse", "Analyse mole images")):
        page.locator(f"[data-testid=stSidebarNav] a:has-text('{link}')").click()  # in the same session
        page.wait_for_selector(f"h1:has-text('{heading}')", timeout=60_000)
        assert page.locator("[data-testid=stException]").count() == 0
    page.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(str(picture))
    page.wait_for_selector("text=Export this image", timeout=60_000)
    _wait_for_images(page, 1)  # the overlay can show up a moment after the text below it
    assert page.locator("[data-testid=stException]").count() == 0
    assert elsewhere == []


def test_a_saved_analysis_survives_a_reload_and_shows_in_the_history(server, browser, tmp_path):
    """Analyse an image, type its visit, save it to records; reload the browser page (a new session) and
    find the saved visit on the History page, read back from the database."""
    picture = tmp_path / "arm-mole.png"
    picture.write_bytes(png_bytes(mole_image(160, 200, seed=5)[0]))
    page = browser.new_page(viewport={"width": 1300, "height": 1400})
    page.goto(f"{server}/analyse", timeout=60_000)
    page.wait_for_selector("h1:has-text('Analyse mole images')", timeout=60_000)
    page.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(str(picture))
    page.wait_for_selector("text=Export this image", timeout=60_000)
    _wait_until_idle(page)
    note_text = "seen in the browser test"
    notes = page.get_by_role("textbox", name="Notes")
    notes.fill(note_text)
    notes.press("Control+Enter")  # a text area commits on Ctrl+Enter (or when it loses focus)
    _wait_until_idle(page)
    identifier = page.get_by_role("textbox", name="Patient / lesion identifier")
    identifier.fill("browser arm 3")
    identifier.press("Enter")
    _wait_until_idle(page)
    assert notes.input_value() == note_text
    page.get_by_role("button", name="Save arm-mole.png to records", exact=True).click()
    page.wait_for_selector("text=Saved as record", timeout=60_000)
    assert page.locator("[data-testid=stException]").count() == 0

    page.reload(timeout=60_000)  # a new session: nothing of the old one is left in memory
    page.wait_for_selector("h1:has-text('Analyse mole images')", timeout=60_000)
    assert page.locator("text=Export this image").count() == 0
    page.locator("[data-testid=stSidebarNav] a:has-text('History')").click()
    page.wait_for_selector("h1:has-text('History')", timeout=60_000)
    page.wait_for_selector("text=Visits of browser arm 3", timeout=60_000)
    _wait_until_idle(page)
    # the notes, read back in the visit's text (the visits table holds them too, in a grid cell that is never
    # "visible" to the browser: a bare text selector may pick that one first and wait for nothing)
    page.wait_for_selector(f"[data-testid=stMarkdownContainer]:has-text('Notes {note_text}')", timeout=30_000)
    # the saved overlay is drawn before the notes, but the browser may still be fetching its picture or
    # swapping in the rerun's elements: wait for it, then count it
    saved_overlay = page.locator("[data-testid=stImage]:has-text('arm-mole.png: saved border')")
    saved_overlay.wait_for(timeout=30_000)
    assert saved_overlay.count() == 1
    assert page.locator("[data-testid=stException]").count() == 0
    page.close()


# --------------------------------------------------------------------------------------------------
# the Analyse page, end to end, with the project's models

def _pdf_images(pdf: bytes) -> list[Image.Image]:
    """The image XObjects of a reportlab PDF (JPEG, possibly ASCII85-wrapped), decoded."""
    pictures = []
    for header, stream in IMAGE_XOBJECT.findall(pdf):
        data = stream.strip()
        if b"/ASCII85Decode" in header:
            data = base64.a85decode(data[:-2] if data.endswith(b"~>") else data)
        assert b"/DCTDecode" in header, header
        picture = Image.open(io.BytesIO(data))
        picture.load()
        pictures.append(picture)
    return pictures


def _wait_until_idle(page, timeout_ms: int = 60_000) -> None:
    """Wait until the app has finished its run (no 'Running...' widget) and every picture is loaded."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=stStatusWidget]')"
        " && [...document.querySelectorAll('[data-testid=stImage] img')]"
        "      .every(img => img.complete && img.naturalWidth > 0)",
        timeout=timeout_ms)


def _record_whole_page_runs(page) -> list:
    """Start recording the whole-page runs the page asks the server for (``BackMsg`` rerun requests without a
    fragment id); returns the list the recording appends them to."""
    from streamlit.proto.BackMsg_pb2 import BackMsg

    requests: list[BackMsg] = []

    def sent(frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            message = BackMsg.FromString(frame)
            if message.WhichOneof("type") == "rerun_script" and not message.rerun_script.fragment_id:
                requests.append(message)

    page.on("websocket", lambda socket: socket.on("framesent", sent))
    return requests


def _record_elements_received(page) -> list[tuple[str, str]]:
    """Start recording the elements the server sends the page (``ForwardMsg`` deltas of a new element): their
    kind (the element's field, e.g. ``"imgs"``, ``"slider"``) and the fragment whose run sent them ("" for a
    whole-page run); returns the list the recording appends them to."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    elements: list[tuple[str, str]] = []

    def received(frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            message = ForwardMsg.FromString(frame)
            if message.WhichOneof("type") == "delta" and message.delta.WhichOneof("type") == "new_element":
                elements.append((message.delta.new_element.WhichOneof("type"), message.delta.fragment_id))

    page.on("websocket", lambda socket: socket.on("framereceived", received))
    return elements


def _record_runs(page) -> list[tuple[str, str]]:
    """Start recording, in order, the rerun requests the page sends (``("request", fragment id)``, "" for the
    whole page), the runs the server starts for it (``("run", fragment ids)``: each run's ``new_session``
    message, its run identity) and their ends (``("finished", "")``); returns the list the recording appends
    them to."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    events: list[tuple[str, str]] = []

    def sent(frame: str | bytes) -> None:
        if isinstance(frame, bytes) and (message := BackMsg.FromString(frame)).WhichOneof("type") == "rerun_script":
            events.append(("request", message.rerun_script.fragment_id))

    def received(frame: str | bytes) -> None:
        if not isinstance(frame, bytes):
            return
        message = ForwardMsg.FromString(frame)
        if message.WhichOneof("type") == "new_session":
            events.append(("run", ",".join(message.metadata.run.fragment_ids)))
        elif message.WhichOneof("type") == "script_finished":
            events.append(("finished", ""))

    page.on("websocket", lambda socket: (socket.on("framesent", sent), socket.on("framereceived", received)))
    return events


def _wait_for_a_finished_run(page, runs: list[tuple[str, str]], timeout_s: float = 60.0) -> None:
    """Wait until ``runs`` (from :func:`_record_runs`) holds the end of a run the server started."""
    deadline = time.monotonic() + timeout_s
    while not any(what == "finished" for what, _ in runs):
        assert time.monotonic() < deadline, f"no run ended within {timeout_s} s: {runs}"
        page.wait_for_timeout(20)  # lets Playwright deliver the websocket's frames


def _three_steps_in_one_burst(page) -> None:
    """Three one-step moves of the cleanup slider that shapes the border (down, or up near its low end), made in
    one task of the page as three key presses in quick succession would, so that no settle timer can fire between
    them however loaded the machine is; then waits until the caption names the new value and a new overlay is
    shown."""
    thumb, caption = border_slider(page)
    source = page.locator("[data-testid=stImage] img").first.get_attribute("src")
    target = thumb.evaluate("""(input) => {
      const down = Number(input.value) >= 3;
      for (let step = 0; step < 3; step++) {
        if (down) input.stepDown(); else input.stepUp();
        input.dispatchEvent(new Event("input", {bubbles: true}));
      }
      return Number(input.value);
    }""")
    new_overlay(page, f"{caption} {target} px", source, 60_000)


def _content_height(page) -> int:
    """Height of the page's content: Streamlit scrolls its main block, not the document."""
    return int(page.evaluate(
        "() => Math.max(document.documentElement.scrollHeight, ...[...document.querySelectorAll("
        "'[data-testid=stMain], [data-testid=stAppViewContainer], section.main')].map(e => e.scrollHeight))"))


def test_analyse_page_uploads_a_mole_and_downloads_its_pdf_report(project_server, browser, tmp_path, shared_data):
    shared = shared_data / SHARED_IMAGE
    if shared.is_file():
        picture = shared
    else:  # no shared data: a synthetic mole, so the test still runs
        picture = tmp_path / "mole.png"
        picture.write_bytes(png_bytes(mole_image(300, 400, seed=7)[0]))
    with Image.open(picture) as opened:
        size = opened.size
    shipped = (ROOT / "models" / "dermoscopy.keras").is_file()

    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    whole_page_runs = _record_whole_page_runs(page)
    received = _record_elements_received(page)
    runs = _record_runs(page)
    page.goto(f"{project_server}/analyse", timeout=60_000)
    page.wait_for_selector("h1:has-text('Analyse mole images')", timeout=60_000)
    page.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(str(picture))
    page.wait_for_selector("text=Export this image", timeout=80_000)
    runs_with_the_exports = len(whole_page_runs)
    _wait_for_images(page, 1)  # the overlay; the predicted classes are in a closed expander, made when it is opened
    _wait_until_idle(page)
    assert page.locator("[data-testid=stException]").count() == 0
    assert page.locator("[data-testid=stAlert]:has-text('Cannot load')").count() == 0
    images = page.locator("[data-testid=stImage]")
    caption = images.first.inner_text()
    assert f"{picture.name}: lesion and border" in caption
    if shipped:  # the shipped network analysed it, not the classical fallback
        assert "classical" not in caption.lower(), caption
    assert page.locator("table.moleseg-measurements").last.is_visible()  # the measurements table
    overlay_box = images.first.bounding_box()
    assert overlay_box and overlay_box["width"] > 200 and overlay_box["height"] > 100

    # screenshots: the whole page (a viewport as tall as the content), and the README's first screen
    ARTIFACTS.mkdir(exist_ok=True)
    height = min(_content_height(page) + 40, 4000)
    page.set_viewport_size({"width": 1280, "height": height})
    _wait_until_idle(page)
    # the export buttons are drawn (not placeholders) before the screenshot
    page.locator("[data-testid=stDownloadButton] button:has-text('Report (PDF)')").first.wait_for(
        state="visible", timeout=30_000)
    _wait_until_idle(page)
    screenshot = ARTIFACTS / "analyse-page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    table_bottom = page.locator("table.moleseg-measurements").last.bounding_box()
    assert table_bottom is not None
    readme_height = int(table_bottom["y"] + table_bottom["height"] + 24)
    page.set_viewport_size({"width": 1280, "height": 900})
    with Image.open(screenshot) as shot:
        assert shot.width == 1280 and shot.height >= readme_height
        first_screen = shot.convert("RGB").crop((0, 0, shot.width, min(shot.height, readme_height)))
    if os.environ.get("MOLESEG_UPDATE_README_SCREENSHOT") == "1" and picture == shared:
        README_SCREENSHOT.parent.mkdir(exist_ok=True)
        first_screen.save(README_SCREENSHOT, optimize=True)

    # the PDF report, downloaded by the browser
    pdf_button = page.locator("[data-testid=stDownloadButton] button:has-text('Report (PDF)')")
    _wait_until_idle(page)
    with page.expect_download(timeout=60_000) as download_info:
        pdf_button.click()
    download = download_info.value
    # No whole-page run since the exports were drawn: each one gives every deferred download a new id and
    # revokes the old ones when it ends, so a click meanwhile (the drawing component's first message came
    # just after the idle check) failed with "Failed to generate file for download" and no download.
    assert len(whole_page_runs) == runs_with_the_exports
    assert download.suggested_filename == f"{picture.stem}_report.pdf"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    pdf = saved.read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert len(PAGE_OBJECT.findall(pdf)) == 1
    pictures = _pdf_images(pdf)
    assert len(pictures) == 2  # the image and its overlay (a text-only report has none)
    scale = min(1.0, 1200 / max(size))
    expected = (round(size[0] * scale), round(size[1] * scale))
    for embedded in pictures:
        assert abs(embedded.width - expected[0]) <= 1 and abs(embedded.height - expected[1]) <= 1
    assert len(pdf) > 10_000
    # three steps of a cleanup slider in a burst are one value (moleseg.app.settled_slider): one rerun request,
    # whose callback reruns the results' fragment alone, one run of the results with one new overlay, and still
    # no whole-page run; the sidebar, the visit form and the download buttons are not sent again
    runs.clear()
    switch_on(page, "Set the cleanup by hand", 60_000)
    _wait_for_a_finished_run(page, runs)  # the switch's run of the sidebar, whose widgets arrive until it ends
    _wait_until_idle(page)
    received.clear()
    runs.clear()
    _three_steps_in_one_burst(page)
    assert len(whole_page_runs) == runs_with_the_exports
    assert page.locator("[data-testid=stException]").count() == 0
    (_, pressed), *later = [event for event in runs if event[0] == "request"]
    assert pressed and later == [], runs  # one value sent, by the sidebar's fragment
    assert [event for event in runs if event[0] == "run"] == [("run", pressed), ("run", received[0][1])], runs
    assert received[0][1] != pressed  # its callback's run of the results alone, which sent every element
    assert {fragment for _, fragment in received} == {received[0][1]}
    kinds = [kind for kind, _ in received]
    assert kinds.count("imgs") == 1 and "bidi_component" not in kinds  # the new overlay; no slider sent again
    assert not set(kinds) & {"download_button", "text_input", "text_area", "date_input"}, kinds
    # and the exports, drawn before the slider moved, hold its new value
    shown = page.locator("[data-testid=stCaptionContainer]:has-text('Cleanup: rule')").first.inner_text()
    widths = re.search(r"closing (\d+) px, border (\d+) px", shown)
    assert widths, shown
    with page.expect_download(timeout=60_000) as download_info:
        page.get_by_role("button", name="Settings of the CSV (JSON)").click()
    sidecar = json.loads(Path(download_info.value.path()).read_text())
    cleanup = sidecar["images"][0]["settings"]["cleanup"]
    assert [cleanup["closing_radius_px"], cleanup["border_width_px"]] == [int(widths[1]), int(widths[2])]
    assert len(whole_page_runs) == runs_with_the_exports
    context.close()


# --------------------------------------------------------------------------------------------------
# correcting a border by hand on the drawing canvas

def _area_px(page) -> int:
    """The lesion area the hand-correction block shows ("Now: Area 1,234 px² · ...")."""
    text = page.locator("[data-testid=stCaptionContainer]:has-text('Now: Area')").first.inner_text()
    match = re.search(r"Area ([\d,]+) px", text)
    assert match, text
    return int(match.group(1).replace(",", ""))


def _open_hand_correction(browser, server: str, picture, width: int, height: int):
    """A page of ``width`` x ``height`` CSS px on the Analyse page with ``picture`` uploaded and its hand
    correction opened; returns the page and the canvas locator."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(f"{server}/analyse", timeout=60_000)
    page.wait_for_selector("h1:has-text('Analyse mole images')", timeout=60_000)
    page.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(str(picture))
    page.wait_for_selector("text=Export this image", timeout=60_000)
    _wait_until_idle(page)
    page.locator("[data-testid=stExpander] summary:has-text('Correct the border by hand')").click()
    page.wait_for_selector("text=Now: Area", timeout=30_000)
    canvas = page.locator("canvas.upper-canvas").first
    canvas.wait_for(state="visible", timeout=30_000)
    return page, canvas


def test_drawing_a_region_on_the_canvas_adds_it_to_the_lesion_and_the_area_follows(server, browser, tmp_path):
    picture = tmp_path / "mole.png"
    picture.write_bytes(png_bytes(mole_image(160, 200, seed=3)[0]))  # 200 px wide: canvas px = image px
    page, canvas = _open_hand_correction(browser, server, picture, 1300, 1000)
    before = _area_px(page)
    canvas.scroll_into_view_if_needed()
    _wait_until_idle(page)
    page.wait_for_timeout(1000)  # the drawing component attaches its mouse handlers after it is shown
    box = canvas.bounding_box()
    assert box and round(box["width"]) == 200
    corners = [(8, 8), (58, 8), (58, 38), (8, 38), (8, 8)]  # a 50 x 30 px corner, closed on its first vertex
    for x, y in corners:
        page.mouse.click(box["x"] + x, box["y"] + y)
        page.wait_for_timeout(300)
    add = page.locator("button:has-text('Add to the lesion')")
    page.wait_for_function("() => [...document.querySelectorAll('button')].some(b => "
                           "b.innerText.includes('Add to the lesion') && !b.disabled)", timeout=60_000)
    add.click()
    page.wait_for_selector("text=1 hand edit:", timeout=60_000)
    _wait_until_idle(page)
    after = _area_px(page)
    assert after - before == pytest.approx(50 * 30, rel=0.1), (before, after)  # the mole does not reach the corner
    assert page.locator("[data-testid=stImage]").first.inner_text().endswith("corrected by hand)")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "analyse-hand-correction.png"), full_page=True)
    assert page.locator("[data-testid=stException]").count() == 0


@pytest.mark.parametrize("width, height", [(390, 844), (820, 1180)])
def test_phone_and_tablet_see_and_draw_on_the_whole_image_read_the_buttons_and_the_values(server, browser, tmp_path,
                                                                                         width, height):
    """A 400 x 300 px image on a phone (390 x 844) and a tablet (820 x 1180): the correction canvas shows the
    whole image inside the screen and a polygon drawn on it lands at the right image px, the buttons show their
    whole labels, and the measurement table shows the values beside the names, each meaning under its name."""
    picture = tmp_path / "mole.png"
    picture.write_bytes(png_bytes(mole_image(300, 400, seed=3)[0]))
    page, canvas = _open_hand_correction(browser, server, picture, width, height)
    _wait_until_idle(page)
    page.wait_for_timeout(1500)  # the canvas is redrawn once the browser has said how wide its column is
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, box
    assert box["width"] == pytest.approx(box["height"] * 4 / 3, abs=1)  # the whole image, not a cut
    assert canvas.evaluate("c => { const s = c.closest('.dc-scroll'); return !s || s.scrollWidth <= s.clientWidth; }")
    hidden = "bars => bars.length > 0 && bars.every(b => getComputedStyle(b).display === 'none')"
    for _ in range(20):  # the canvas's own toolbar (a second Undo) is hidden once the canvas has filled it
        if page.locator(".dc-toolbar").evaluate_all(hidden):
            break
        page.wait_for_timeout(500)
    assert page.locator(".dc-toolbar").evaluate_all(hidden)
    before = _area_px(page)
    scale = 400 / box["width"]  # image px per screen px
    for x, y in [(8, 8), (48, 8), (48, 38), (8, 38), (8, 8)]:  # a 40 x 30 px corner of the canvas, closed
        page.mouse.click(box["x"] + x, box["y"] + y)
        page.wait_for_timeout(300)
    page.wait_for_function("() => [...document.querySelectorAll('button')].some(b => "
                           "b.innerText.includes('Add to the lesion') && !b.disabled)", timeout=60_000)
    for label in ("Add to the lesion", "Remove from the lesion", "Undo", "Reset to the model's result"):
        button = page.locator(f"button:has-text(\"{label}\")").first
        fits = button.evaluate("b => [b.innerText.trim(), b.scrollWidth <= b.clientWidth, "
                               "b.getBoundingClientRect().right <= window.innerWidth]")
        assert fits == [label, True, True], fits
    page.locator("button:has-text('Add to the lesion')").click()
    page.wait_for_selector("text=1 hand edit:", timeout=60_000)
    _wait_until_idle(page)
    assert _area_px(page) - before == pytest.approx(40 * 30 * scale**2, rel=0.15)
    table = page.locator("table.moleseg-measurements").last
    table.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    assert table.locator("thead th").all_inner_texts() == ["Measurement", "Value", "Unit"]
    area = table.locator("tbody tr:has(th:has-text('Area'))").first
    name, value = area.locator("th").bounding_box(), area.locator("td").first.bounding_box()
    assert name and value and value["x"] + value["width"] <= width, (name, value)  # the value on the screen
    meaning = area.locator("th small").bounding_box()  # the meaning in small type under the name, not beside it
    assert meaning and meaning["x"] + meaning["width"] <= value["x"], (meaning, value)
    assert area.locator("th small").inner_text() == "Surface of the lesion."
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"analyse-{width}x{height}.png"))
    assert page.locator("[data-testid=stException]").count() == 0
