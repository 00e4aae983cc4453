"""The app in shared mode behind a real reverse proxy (Debian's ``caddy``, basic authentication setting the
user header and the proxy secret), driven by chromium: a user's upload works and her page survives a network
blip (its websocket goes on with her session); a user sees and opens only their own visits, not even another's by
its id in the URL; an admin sees everyone's; a request with a forged user header that does not come through the
proxy is refused."""

from __future__ import annotations

import base64
import contextlib
import gzip
import os
import re
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from app_helpers import ARTIFACTS, free_port, streamlit_server, tail
from synthetic import mole_image, png_bytes
from moleseg.app.mediagate import REFUSED
from moleseg.core.measure import measure_lesion
from moleseg.core.settings import ServerSettings
from moleseg.engine.records import Records
from moleseg.engine.recordtypes import User

pytestmark = pytest.mark.browser

#: The users of the proxy's basic authentication: name -> password.
PASSWORDS = {"alice": "alice-password", "bob": "bob-password", "admin": "admin-password"}
#: The bcrypt hash of each password in :data:`PASSWORDS`, which the proxy checks: bcrypt's lowest cost (4), not
#: the cost 14 of ``caddy hash-password`` (about a second of CPU to make each hash and again to check it).
PASSWORD_HASHES = {"alice": "$2b$04$0L.AvDBU1VXsSR.26l1WzeRNxB164Io6oIODB1.QgwxM6H3mN9.yK",
                   "bob": "$2b$04$qynddd5LeuoOMmZ0bybmxeDjKkoS7Wd9qj40p0gBfpoAg1/nFg/gm",
                   "admin": "$2b$04$Tr4a99hEwKZ2QtA7C1cOL.R7xRmVFFNWktby0WnWTZQQynABj3E.G"}
#: The header the proxy names the user in (one of the settings' default user headers).
USER_HEADER = "X-Forwarded-User"


@contextlib.contextmanager
def caddy_proxy(caddy: str, app_port: int, secret_header: str, secret: str, folder: Path) -> Iterator[str]:
    """Caddy on a free local port in front of the app: basic authentication of :data:`PASSWORDS`, the user's
    name in :data:`USER_HEADER`, the proxy secret added, X-Forwarded-For and the credentials removed, text
    responses compressed (the README's Caddyfile); yields its URL."""
    port = free_port()
    users = "\n".join(f"            {user} {hashed}" for user, hashed in PASSWORD_HASHES.items())
    caddyfile = folder / "Caddyfile"
    caddyfile.write_text(f"""{{
    admin off
    auto_https off
}}
http://127.0.0.1:{port} {{
    basicauth {{
{users}
    }}
    encode zstd gzip
    reverse_proxy 127.0.0.1:{app_port} {{
        header_up {USER_HEADER} {{http.auth.user.id}}
        header_up {secret_header} {secret}
        header_up -X-Forwarded-For
        header_up -Authorization
    }}
}}
""")
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / "caddy.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([caddy, "run", "--config", str(caddyfile), "--adapter", "caddyfile"],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "HOME": str(folder), "XDG_DATA_HOME": str(folder),
                                        "XDG_CONFIG_HOME": str(folder)})
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(url, timeout=2)
                except urllib.error.HTTPError as error:
                    if error.code == 401:  # up, and asking for credentials
                        break
                except OSError:
                    pass
                assert process.poll() is None and time.monotonic() < deadline, (
                    f"caddy did not start; {log_path}:\n{tail(log_path)}")
                time.sleep(0.3)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=20)


@pytest.fixture
def shared_app(tmp_path):
    """``(proxy URL, app URL, data folder)``: the app in shared mode (identity from the proxy's header,
    admin user ``admin``) behind caddy; skipped when caddy is not installed."""
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip("caddy is not installed (.ci/run installs Debian's caddy): the proxy test is skipped")
    secret_header = ServerSettings.proxy_secret_header
    secret = secrets.token_urlsafe(24)
    data = tmp_path / "data"
    env = {**os.environ, "MOLESEG_MODELS_DIR": str(tmp_path), "MOLESEG_RUNS_DIR": str(tmp_path / "runs"),
           "MOLESEG_TMPDIR": str(tmp_path), "MOLESEG_DATA_DIR": str(data), "MOLESEG_MODE": "shared",
           "MOLESEG_ADDRESS": "127.0.0.1", "MOLESEG_ALLOWED_HOSTS": "moles.example.org",
           "MOLESEG_IDENTITY": "proxy-header", "MOLESEG_TRUSTED_PROXIES": "127.0.0.1",
           "MOLESEG_PROXY_SECRET": secret, "MOLESEG_ADMIN_USERS": "admin"}
    env.pop("MOLESEG_CONFIG", None)
    with streamlit_server(env, "streamlit-shared") as (app_url, _):
        port = int(app_url.rsplit(":", 1)[1])
        with caddy_proxy(caddy, port, secret_header, secret, tmp_path) as proxy_url:
            yield proxy_url, app_url, data


def _page(browser, user: str | None, **context):
    credentials = {"http_credentials": {"username": user, "password": PASSWORDS[user]}} if user else {}
    return browser.new_context(viewport={"width": 1300, "height": 1400}, **credentials, **context).new_page()


def _signed_in(user: str) -> dict[str, str]:
    """The headers of a request through the proxy with ``user``'s password (basic authentication)."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()}


def _relayed_websockets(page) -> tuple[list, list[list[bytes]]]:
    """``page``'s websockets (``/_stcore/stream``) from now on: the app's ends, which Playwright relays (to cut one,
    as a network blip would), and for each websocket the page opened the ``script_finished`` messages it got."""
    ends, finished = [], []
    page.route_web_socket(re.compile(r"/_stcore/stream$"), lambda route: ends.append(route.connect_to_server()))

    def watch(websocket) -> None:
        runs = []
        finished.append(runs)

        def received(payload: bytes | str) -> None:
            if isinstance(payload, bytes) and ForwardMsg.FromString(payload).WhichOneof("type") == "script_finished":
                runs.append(payload)

        websocket.on("framereceived", received)

    page.on("websocket", watch)
    return ends, finished


def _idle(page) -> None:
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=60_000)


def _shows(page, heading: str) -> None:
    """Wait until ``page`` shows the page titled ``heading`` and its run has ended."""
    page.wait_for_selector(f"h1:has-text('{heading}')", timeout=60_000)
    _idle(page)


def _open(page, url: str, heading: str) -> None:
    page.goto(url, timeout=60_000)
    _shows(page, heading)


def _pictures_shown(page) -> None:
    """Wait until ``page`` shows a picture (``st.image``) and every one it shows has loaded: through the media gate,
    each was sent to its user in a media field the gate reads (a refused one never loads)."""
    page.wait_for_function("() => { const images = document.querySelectorAll('[data-testid=stImage] img');"
                           " return images.length > 0"
                           " && [...images].every(img => img.complete && img.naturalWidth > 0); }", timeout=30_000)


def _lesion_choices(page) -> list[str]:
    """The History page's lesions, as its Lesion box offers them (the tables are drawn on a canvas)."""
    page.locator("[data-testid=stSelectbox]").filter(has_text="Lesion").locator("input").click()
    options = page.locator("[role=option]")
    options.first.wait_for(timeout=10_000)
    choices = [text.strip() for text in options.all_inner_texts()]
    page.keyboard.press("Escape")
    return choices


def test_users_see_only_their_own_visits_through_the_proxy_and_a_forged_header_is_refused(shared_app, browser,
                                                                                           tmp_path):
    proxy, app, data = shared_app
    with pytest.raises(urllib.error.HTTPError) as unauthenticated:
        urllib.request.urlopen(f"{proxy}/history", timeout=10)
    assert unauthenticated.value.code == 401
    # Streamlit sends its frontend's scripts uncompressed: the proxy compresses them for the browsers
    signed_in = _signed_in("alice")
    with urllib.request.urlopen(urllib.request.Request(proxy, headers=signed_in), timeout=10) as response:
        script = re.search(r'src="\.?(/static/js/index\.[^"]+\.js)"', response.read().decode()).group(1)
    request = urllib.request.Request(proxy + script, headers={**signed_in, "Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=10) as response, \
            urllib.request.urlopen(app + script, timeout=10) as direct:
        assert response.headers["Content-Encoding"] == "gzip" and "Content-Encoding" not in direct.headers
        assert gzip.decompress(response.read()) == direct.read()

    # Alice analyses an image and saves it
    picture = tmp_path / "alice-mole.png"
    picture.write_bytes(png_bytes(mole_image(160, 200, seed=5)[0]))
    alice = _page(browser, "alice")
    ends, finished = _relayed_websockets(alice)
    _open(alice, f"{proxy}/analyse", "Analyse mole images")
    alice.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(str(picture))
    alice.wait_for_selector("text=Export this image", timeout=60_000)
    _idle(alice)
    _pictures_shown(alice)  # her overlay
    # a network blip: her page's websocket drops and her browser opens another, naming its session to go on with,
    # which the gate lets through; her next run is in it (a new session would have lost her upload and analysis:
    # no Overlay or Save buttons below)
    assert len(ends) == 1
    ends[0].close()
    deadline = time.monotonic() + 30
    while len(ends) < 2:
        assert time.monotonic() < deadline, "the page did not reconnect"
        alice.wait_for_timeout(100)
    identifier = alice.get_by_role("textbox", name="Patient / lesion identifier")
    identifier.fill("alice arm")
    identifier.press("Enter")
    while len(finished) < 2 or not finished[1]:  # that run, over the new websocket, has ended
        assert time.monotonic() < deadline, "no run of the page ended over its new websocket"
        alice.wait_for_timeout(100)
    _idle(alice)
    with alice.expect_download(timeout=60_000) as download:  # a download whose bytes the page sends at once
        alice.get_by_role("button", name="Overlay (PNG)").click(timeout=10_000)
    assert download.value.failure() is None and Path(download.value.path()).read_bytes()[:4] == b"\x89PNG"
    alice.get_by_role("button", name="Save alice-mole.png to records", exact=True).click(timeout=10_000)
    saved = alice.wait_for_selector("text=/Saved as record \\d+/", timeout=60_000).inner_text()
    alice_id = int(re.search(r"Saved as record (\d+)", saved).group(1))
    alice.locator("[data-testid=stSidebarNav] a:has-text('History')").click()  # in the same session
    _shows(alice, "History")
    alice.wait_for_selector("text=Visits of alice arm", timeout=30_000)
    alice.wait_for_selector("[data-testid=stImage]:has-text('alice-mole.png: saved border')", timeout=30_000)
    _pictures_shown(alice)
    # the saved picture's media URL: through the proxy it is Alice's; on the app's port without the proxy's
    # secret (a program on the server's machine) it is refused
    source = alice.locator("[data-testid=stImage]:has-text('alice-mole.png: saved border') img").first.get_attribute("src")
    media = "/media/" + source.split("/media/", 1)[1]
    with urllib.request.urlopen(urllib.request.Request(proxy + media, headers=signed_in), timeout=10) as response:
        assert response.status == 200 and len(response.read()) > 1000
    for headers in ({}, {USER_HEADER: "alice"}, {USER_HEADER: "alice", ServerSettings.proxy_secret_header: "guess"}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(app + media, headers=headers), timeout=10)
        assert refused.value.code == 403, headers
    # her PDF report, made when she clicks (its URL comes down her page's websocket, which the gate reads): hers
    with alice.expect_download(timeout=60_000) as download:
        alice.get_by_role("button", name="Report (PDF)").click()
    assert download.value.failure() is None and Path(download.value.path()).read_bytes()[:5] == b"%PDF-"
    # Bob, signed in, holding Alice's URL (from a page, a history, a log) is refused it: it was not sent to him
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(proxy + media, headers=_signed_in("bob")), timeout=10)
    assert refused.value.code == 403 and refused.value.read() == REFUSED

    # Bob's own visit, saved as the app would
    image, mask = mole_image(120, 160, seed=2)
    bob_id = Records(data).save(User("bob"), image, mask, measure_lesion(mask), lesion="bob leg")

    # Bob sees his visit only, and Alice's neither in the list nor by its id in the URL
    bob = _page(browser, "bob")
    _open(bob, f"{proxy}/history", "History")
    bob.wait_for_selector("text=Visits of bob leg", timeout=30_000)
    assert _lesion_choices(bob) == ["bob leg"]
    assert "alice" not in bob.locator("[data-testid=stMain]").inner_text()
    _open(bob, f"{proxy}/history?visit={alice_id}", "History")
    bob.wait_for_selector(f"text=Cannot open this record: no saved analysis with id {alice_id}.", timeout=30_000)
    assert bob.locator("[data-testid=stImage]").count() == 0
    assert "alice" not in bob.locator("[data-testid=stMain]").inner_text()
    _open(bob, f"{proxy}/history?visit=999999", "History")  # a missing id reads the same
    bob.wait_for_selector("text=Cannot open this record: no saved analysis with id 999999.", timeout=30_000)

    # the admin sees both, with who saved each, and opens Alice's by its link
    admin = _page(browser, "admin")
    _open(admin, f"{proxy}/history?visit={alice_id}", "History")
    admin.wait_for_selector("text=Visits of alice arm", timeout=30_000)
    assert sorted(_lesion_choices(admin)) == ["alice arm", "bob leg"]
    admin.wait_for_selector("[data-testid=stImage]:has-text('alice-mole.png: saved border')", timeout=30_000)
    shown = admin.locator("[data-testid=stImage]:has-text('alice-mole.png: saved border') img").first.get_attribute("src")
    request = urllib.request.Request(proxy + "/media/" + shown.split("/media/", 1)[1], headers=_signed_in("admin"))
    with urllib.request.urlopen(request, timeout=10) as response:  # sent to the admin's page: theirs to fetch
        assert response.status == 200 and len(response.read()) > 1000
    trail = Records(data).audit_trail(User("admin", admin=True), alice_id)
    assert [(entry.user, entry.action) for entry in trail][:2] == [("alice", "saved"), ("alice", "opened")]
    assert ("admin", "opened") in [(entry.user, entry.action) for entry in trail]
    assert "bob" not in {entry.user for entry in trail}
    assert bob_id != alice_id

    # straight to the app's port with a forged user header (and a guessed secret): refused, nothing shown
    forged_headers = ({USER_HEADER: "alice"}, {USER_HEADER: "admin", ServerSettings.proxy_secret_header: "guess"})
    forgeries = [_page(browser, None, extra_http_headers=forged) for forged in forged_headers]
    for mallory in forgeries:  # both ask before either is awaited
        mallory.goto(f"{app}/history", timeout=60_000, wait_until="commit")
    for mallory in forgeries:  # the gate runs no page: the refusal alone
        mallory.wait_for_selector("text=did not come through the clinic's sign-in proxy", timeout=60_000)
        _idle(mallory)
        assert mallory.locator("h1").count() == 0 and mallory.locator("[data-testid=stDataFrame]").count() == 0
        assert "alice arm" not in mallory.locator("[data-testid=stMain]").inner_text()
    for page in (alice, bob, admin):
        assert page.locator("[data-testid=stException]").count() == 0
