"""One real server (``streamlit run``), several browser sessions at once: each session gets the result of
its own image, and the server's peak memory (``VmHWM`` of ``/proc/<pid>/status``) stays bounded while
50 images are analysed."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from app_helpers import ARTIFACTS, streamlit_server
from synthetic import mole_image, png_bytes

pytestmark = pytest.mark.browser
PlaywrightTimeout = pytest.importorskip("playwright.sync_api").TimeoutError

SESSIONS = 5
#: Images each session analyses in the memory part (SESSIONS x this = 50).
BATCH = 10
#: Size of the memory part's images (width, height), px: a typical dermoscopy photograph's scale.
BATCH_SIZE_PX = (1024, 768)
#: The memory part's pictures are drawn at 1/this of their size and enlarged by repeating each pixel (the
#: server gets pictures of the full size all the same; drawing and encoding them costs about a seventh).
BATCH_DRAWN_SCALE = 4
#: Generous bound of the server's peak resident memory over the whole test, bytes (observed about
#: 1.2 GB; see the README).
PEAK_BOUND_BYTES = 2 * 1024**3


def memory_bytes(pid: int) -> dict[str, int]:
    """``VmRSS`` (now) and ``VmHWM`` (peak) of process ``pid``, bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def write_image(folder: Path, name: str, width: int, height: int, seed: int, scale: int = 1) -> Path:
    """``folder/name``: a :func:`mole_image` of ``width`` x ``height`` px drawn at 1/``scale`` of that size and
    enlarged by repeating each pixel ``scale`` x ``scale`` times."""
    drawn = mole_image(height // scale, width // scale, seed=seed)[0]
    path = folder / name
    path.write_bytes(png_bytes(drawn.repeat(scale, axis=0).repeat(scale, axis=1)))
    return path


@pytest.fixture
def served(tmp_path):
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs /proc to read the server's memory")
    env = {**os.environ, "MOLESEG_MODELS_DIR": str(tmp_path / "models"), "MOLESEG_RUNS_DIR": str(tmp_path / "runs"),
           "MOLESEG_TMPDIR": str(tmp_path), "MOLESEG_DATA_DIR": str(tmp_path / "records")}
    (tmp_path / "models").mkdir()
    with streamlit_server(env, "streamlit-concurrency") as (url, process):
        yield url, process


def open_analyse(context, url: str, count: int) -> list:
    """``count`` new tabs of ``context`` on the Analyse page, loading at once: each tab is a Streamlit session
    of its own (its own websocket and session state; the app keeps nothing in cookies), and the tabs of one
    context share the browser's compiled scripts (five pages load in about 12 instead of 19 CPU-s of
    chromium). Returns the tabs once each shows the page's heading."""
    pages = [context.new_page() for _ in range(count)]
    for page in pages:  # every tab asks for the page before any is awaited
        page.goto(f"{url}/analyse", timeout=90_000, wait_until="commit")
    for page in pages:
        page.wait_for_selector("h1:has-text('Analyse mole images')", timeout=90_000)
    return pages


def wait_or_screenshot(page, selector: str, name: str, timeout_ms: int = 120_000):
    """The element ``selector`` once it shows; on a timeout, a full-page screenshot in
    ``test-artifacts/<name>.png`` before the error is raised (what the page showed instead)."""
    try:
        return page.wait_for_selector(selector, timeout=timeout_ms)
    except PlaywrightTimeout:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        raise


def upload(page, paths: list[Path]) -> None:
    page.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files([str(p) for p in paths])


def test_five_sessions_at_once_each_get_their_own_result_and_memory_stays_bounded(served, browser, tmp_path):
    url, server = served
    began = time.monotonic()
    images = tmp_path / "images"
    images.mkdir()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pages = open_analyse(context, url, SESSIONS)
    start = memory_bytes(server.pid)
    own = [write_image(images, f"patient{i}.png", 240 + 40 * i, 200, seed=i) for i in range(SESSIONS)]
    for page, path in zip(pages, own):  # all five uploads are under way before any result is awaited
        upload(page, [path])
    for index, (page, path) in enumerate(zip(pages, own)):
        wait_or_screenshot(page, "text=Export this image", f"concurrency-own-{index}", timeout_ms=180_000)
        page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stImage] img')]"
                               ".some(img => img.complete && img.naturalWidth > 0)", timeout=60_000)
        assert page.locator("[data-testid=stException]").count() == 0
        caption = page.locator("[data-testid=stImage]").first.inner_text()
        assert f"{path.name}: lesion and border" in caption
        text = page.locator("[data-testid=stMain]").inner_text()
        assert [other.name for other in own if other.name in text] == [path.name]
        width = page.evaluate("() => document.querySelector('[data-testid=stImage] img').naturalWidth")
        assert width == 240 + 40 * index  # the overlay of its own image, not another session's

    print(f"{SESSIONS} sessions got their own results after {time.monotonic() - began:.0f} s", flush=True)
    batches = [[write_image(images, f"visit{s}_{j}.png", *BATCH_SIZE_PX, seed=100 + s * BATCH + j,
                            scale=BATCH_DRAWN_SCALE) for j in range(BATCH)] for s in range(SESSIONS)]
    for page, paths in zip(pages, batches):
        upload(page, paths)  # added to the file uploader's list: the session's first image stays in it
    analysed = []
    for index, page in enumerate(pages):
        heading = wait_or_screenshot(page, f"text=/Results \\(\\d+ of {BATCH + 1} images\\)/", f"concurrency-{index}")
        analysed.append(int(re.search(r"\((\d+) of", heading.inner_text()).group(1)) - 1)  # less its first image
        print(f"session {index}: {analysed[-1]} of {BATCH} images analysed after {time.monotonic() - began:.0f} s",
              flush=True)
        assert page.locator("[data-testid=stException]").count() == 0
    assert analysed == [BATCH] * SESSIONS
    memory = memory_bytes(server.pid)
    print(f"server memory: at start {start['VmHWM'] / 1e6:.0f} MB, peak over {SESSIONS} sessions and "
          f"{SESSIONS + SESSIONS * BATCH} images {memory['VmHWM'] / 1e6:.0f} MB, now {memory['VmRSS'] / 1e6:.0f} MB")
    assert memory["VmHWM"] < PEAK_BOUND_BYTES
    assert server.poll() is None
    context.close()


def test_the_memory_figure_of_the_readme_is_the_bound_of_the_test():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    match = re.search(r"server's\s+peak\s+memory\s+of\s+about\s+([\d.]+)\s+GB", readme)
    assert match and float(match.group(1)) * 1e9 < PEAK_BOUND_BYTES
