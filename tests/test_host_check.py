"""The Host check against DNS rebinding: ``moleseg serve`` starts Streamlit with the allowed host names, so a
WebSocket upgrade naming another host (with a matching Origin, as a rebinding page sends) is refused before
any session exists; and app.py's gate refuses such a session on a server started without them."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from urllib.parse import urlparse

import pytest

from app_helpers import APP, CHROMIUM_ARGS, SERVE_APP, app_test, streamlit_server, texts
from moleseg.app.gate import HOST_REFUSED
from moleseg.app.identity import NOT_THROUGH_PROXY
from moleseg.app.ui import PAGE_FILES
from moleseg.core.settings import load_settings

REBIND_HOST = "rebind.attacker.example"


def upgrade_status(url: str, host: str, origin: str | None) -> bytes:
    """The status line the server answers to a WebSocket upgrade of Streamlit's stream with these headers."""
    port = urlparse(url).port
    key = base64.b64encode(os.urandom(16)).decode()
    lines = ["GET /_stcore/stream HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"] + ([f"Origin: {origin}"] if origin else [])
    with socket.create_connection(("127.0.0.1", port), timeout=20) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n" not in answer:
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``moleseg serve`` in personal mode (the default settings), empty models and runs folders."""
    tmp_path = tmp_path_factory.mktemp("served")
    env = {key: value for key, value in os.environ.items() if not key.startswith("MOLESEG_")}
    env.update({"MOLESEG_MODELS_DIR": str(tmp_path), "MOLESEG_RUNS_DIR": str(tmp_path / "runs"),
                "MOLESEG_TMPDIR": str(tmp_path), "MOLESEG_DATA_DIR": str(tmp_path / "data"),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(APP.parent), os.environ.get("PYTHONPATH")]))})
    with streamlit_server(env, "streamlit-serve", serve=True) as (url, _):
        yield url


def test_the_served_app_loads_its_pages_modules_once_it_listens(served):
    from app_helpers import ARTIFACTS
    from moleseg.app.server import WARM_UP_WORDS

    log = ARTIFACTS / "streamlit-serve.log"
    for _ in range(600):  # 60 s at most (about 1 s on an idle machine)
        if WARM_UP_WORDS in log.read_text(errors="replace"):
            break
        time.sleep(0.1)
    text = log.read_text(errors="replace")
    assert f"port {urlparse(served).port};" in text, text  # the log of the server these tests talk to
    assert f"moleseg: {WARM_UP_WORDS} (" in text, text


def test_a_websocket_naming_another_host_gets_no_101(served):
    port = urlparse(served).port
    assert upgrade_status(served, f"{REBIND_HOST}:{port}", f"http://{REBIND_HOST}:{port}") == b"HTTP/1.1 403 Forbidden"
    assert upgrade_status(served, f"localhost.{REBIND_HOST}:{port}", None) == b"HTTP/1.1 403 Forbidden"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", pytest.param("[::1]", id="ipv6-loopback")])
def test_a_websocket_naming_an_allowed_host_is_upgraded(served, host):
    port = urlparse(served).port
    assert upgrade_status(served, f"{host}:{port}", f"http://{host}:{port}") == b"HTTP/1.1 101 Switching Protocols"


def test_serve_passes_the_settings_to_streamlit(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("MOLESEG_")}
    env.update({"MOLESEG_MODE": "shared", "MOLESEG_ALLOWED_HOSTS": "moles.clinic.example",
                "MOLESEG_IDENTITY": "proxy-header", "MOLESEG_TRUSTED_PROXIES": "127.0.0.1", "MOLESEG_PORT": "8600",
                "MOLESEG_PROXY_SECRET": "a long random secret value",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(APP.parent), os.environ.get("PYTHONPATH")]))})
    result = subprocess.run([sys.executable, "-m", "moleseg", "serve", "--print-command"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        sys.executable, "-m", "moleseg.app.server", "run", str(SERVE_APP), "--server.address=0.0.0.0",
        "--server.port=8600",
        "--server.allowedHosts=localhost", "--server.allowedHosts=127.0.0.1", "--server.allowedHosts=::1",
        "--server.allowedHosts=moles.clinic.example", "--server.enableXsrfProtection=true",
        "--server.enableCORS=true"]
    env.pop("MOLESEG_IDENTITY")
    env.pop("MOLESEG_PROXY_SECRET")
    result = subprocess.run([sys.executable, "-m", "moleseg", "serve"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == ("error: moleseg settings (the environment): shared mode refuses to start without an "
                             "identity source: set identity to proxy-header or streamlit-oidc.\n")


def test_the_gate_stops_the_app_on_invalid_settings(app_folders, monkeypatch):
    monkeypatch.setenv("MOLESEG_MODE", "shared")
    monkeypatch.setenv("MOLESEG_ALLOWED_HOSTS", "moles.clinic.example")
    load_settings.cache_clear()
    at = app_test()
    assert not at.exception and not at.title  # no page ran
    assert texts(at.error) == ["The server cannot start: moleseg settings (the environment): shared mode refuses to "
                               "start without an identity source: set identity to proxy-header or streamlit-oidc."]


@pytest.mark.parametrize("page", [None, *PAGE_FILES])
def test_in_shared_mode_the_gate_runs_no_page_for_a_request_nobody_is_believed_for(app_folders, monkeypatch,
                                                                                     tmp_path_factory, page):
    """The Analyse and Compare pages (and the home page) ran for a request that came round the proxy: anyone
    reaching the port could upload and analyse on the clinic's server, and fill its analysis cache."""
    settings = {"MODE": "shared", "ALLOWED_HOSTS": "moles.clinic.example", "IDENTITY": "proxy-header",
                "TRUSTED_PROXIES": "10.0.0.5", "PROXY_SECRET": "s" * 24,
                "DATA_DIR": str(tmp_path_factory.mktemp("data"))}  # outside the data root app_folders offers
    for key, value in settings.items():
        monkeypatch.setenv(f"MOLESEG_{key}", value)
    load_settings.cache_clear()
    try:
        at = app_test(PAGE_FILES[page] if page else None)  # AppTest's requests carry no proxy header
    finally:
        load_settings.cache_clear()
    assert not at.exception and not at.title and not at.get("file_uploader")  # no page ran
    assert texts(at.error) == [NOT_THROUGH_PROXY.message]

@pytest.mark.browser
def test_the_gate_refuses_a_rebound_host_on_a_server_started_without_allowed_hosts(tmp_path):
    """A plain ``streamlit run app.py`` (no allowedHosts: Streamlit upgrades any Host) reached under an
    attacker's name that resolves to 127.0.0.1: app.py shows the refusal and no page runs."""
    import shutil

    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed")
    env = {**os.environ, "MOLESEG_MODELS_DIR": str(tmp_path), "MOLESEG_RUNS_DIR": str(tmp_path / "runs"),
           "MOLESEG_TMPDIR": str(tmp_path)}
    with streamlit_server(env, "streamlit-rebind") as (url, _), playwright.sync_playwright() as driver:
        port = urlparse(url).port
        browser = driver.chromium.launch(executable_path=chromium, args=[
            *CHROMIUM_ARGS, f"--host-resolver-rules=MAP {REBIND_HOST} 127.0.0.1"])
        try:
            page = browser.new_page()
            page.goto(f"http://{REBIND_HOST}:{port}/analyse", timeout=60_000)
            page.wait_for_selector(f"text={HOST_REFUSED}", timeout=60_000)
            assert page.locator("h1").count() == 0 and page.locator("[data-testid=stSidebarNav]").count() == 0
            page.goto(f"{url}/analyse", timeout=60_000)  # the allowed name: the page runs
            page.wait_for_selector("h1:has-text('Analyse mole images')", timeout=60_000)
            assert page.locator(f"text={HOST_REFUSED}").count() == 0
        finally:
            browser.close()
