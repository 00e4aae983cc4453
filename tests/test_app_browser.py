"""The app served for real (``streamlit run``) and driven by chromium: every page renders through
app.py's navigation, even when the server's first request opens a page directly."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from app_helpers import APP, mole_image, png_bytes

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    env = {**os.environ, "MOLESEG_MODELS_DIR": str(tmp_path), "MOLESEG_RUNS_DIR": str(tmp_path / "runs"),
           "MOLESEG_TMPDIR": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
                                "--server.headless", "true"], cwd=APP.parent, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read() == b"ok":
                        break
            except OSError:
                if time.time() > deadline or process.poll() is not None:
                    raise RuntimeError("streamlit did not start") from None
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_pages_render_through_the_navigation_even_when_opened_first(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed")
    picture = tmp_path / "mole.png"
    picture.write_bytes(png_bytes(mole_image(160, 200)[0]))
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(f"{server}/train", timeout=60_000)  # the server's very first request opens a page
        page.wait_for_selector("text=New training", timeout=60_000)
        navigation = page.locator("[data-testid=stSidebarNav]").inner_text()
        assert "Home" in navigation and "Prepare targets" in navigation  # app.py's st.navigation, not pages/
        for path, heading in (("", "moleseg: mole border analysis"), ("prepare", "Prepare targets"),
                              ("evaluate", "Evaluate"), ("analyse", "Analyse mole images")):
            page.goto(f"{server}/{path}", timeout=60_000)
            page.wait_for_selector(f"h1:has-text('{heading}')", timeout=60_000)
            assert page.locator("[data-testid=stException]").count() == 0
        page.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(str(picture))
        page.wait_for_selector("text=Export this image", timeout=60_000)
        assert page.locator("[data-testid=stImage]").count() == 2
        assert page.locator("[data-testid=stException]").count() == 0
        browser.close()
