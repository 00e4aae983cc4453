"""The media gate in front of Streamlit's real routes: ``streamlit run`` of a page with a picture and two downloads
(one made on the click) as Streamlit's ASGI app behind :class:`moleseg.app.mediagate.MediaGate` (as
``serve_app.py`` runs app.py), spoken to as the proxy would (its secret, the user's header) over HTTP and
Streamlit's websocket protocol; a browser's ``clear_cache`` message that must not reach it; and a session that
another user names (to go on with it, or to upload into it). About 1.5 s a test (mostly the server's start)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import os
import uuid
from http.cookies import SimpleCookie
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import streamlit
import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from app_helpers import streamlit_server
from moleseg.app.mediagate import REFUSED, SESSION_REFUSED
from moleseg.app.streamwire import media_ids, sent_media_ids
from moleseg.app.uploads import UPLOADS_FULL
from moleseg.core.settings import DEFAULT_USER_HEADERS, ServerSettings

SECRET = "s3cret-of-the-proxy"
USER_HEADER = DEFAULT_USER_HEADERS[0]
#: A header whose text the page shows back (as it shows a typed identifier or a DICOM patient ID).
ECHO_HEADER = "X-Shown-Back"
#: A page that shows anyone marks of the server's task registry and analysis store (a new object: a new mark); Alice,
#: and only her, a picture, a download and a download made on the click; and anyone the text of :data:`ECHO_HEADER`
#: in markdown, a text box and an exception's message.
PAGE = f"""import uuid
import numpy as np
import streamlit as st
from moleseg.app import ui
# the server's task registry and analysis store (st.cache_resource), each marked once with a token of its own
marks = [vars(held).setdefault("test_mark", uuid.uuid4().hex) for held in (ui.task_registry(), ui.analysis_store())]
st.text("server objects " + " ".join(marks))
if st.context.headers.get({USER_HEADER!r}) == "alice":
    st.image(np.full((4, 4, 3), 200, dtype=np.uint8))
    st.download_button("CSV", b"a,b\\n1,2\\n", file_name="values.csv", mime="text/csv")
    st.download_button("PDF", lambda: b"%PDF-1.4 report", file_name="report.pdf", mime="application/pdf")
st.session_state.setdefault("typed", st.query_params.get("typed", ""))  # what a user typed, kept by the session
st.text("typed [" + st.session_state.typed + "]")
shown = st.context.headers.get({ECHO_HEADER!r}, "")
if shown:
    st.markdown(f"Visits of {{shown}}")
    st.text_input("Identifier", value=shown)
    st.exception(ValueError(f"no saved analysis with id {{shown}}"))
st.write("done")
"""
SERVE = """import streamlit as st
from starlette.middleware import Middleware
from moleseg.app.mediagate import MediaGate
app = st.App("page.py", middleware=[Middleware(MediaGate)])
"""


def _through_proxy(user: str, **headers: str) -> dict[str, str]:
    return {USER_HEADER: user, ServerSettings.proxy_secret_header: SECRET, **headers}


def _get(url: str, user: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=_through_proxy(user)), timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _run_page(url: str, user: str, shown: str = "", **client_state: str) -> tuple[list[str], list[str]]:
    """One run of the page for ``user``, whose proxy sends ``shown`` in :data:`ECHO_HEADER` and whose browser's
    rerun message holds ``client_state`` (as a hand-made client may fill it), then a click on each download made
    on the click: the media ids of the messages' media fields (what the gate believes) and of their bytes."""
    rerun = BackMsg()
    rerun.rerun_script.query_string = ""
    for name, value in client_state.items():
        setattr(rerun.rerun_script, name, value)
    headers = _through_proxy(user, **({ECHO_HEADER: shown} if shown else {}))

    async def run() -> tuple[list[str], list[str]]:
        sent, in_bytes, deferred, session = [], [], [], ""
        async with websockets.connect(url.replace("http", "ws", 1) + "/_stcore/stream", subprotocols=["streamlit"],
                                      additional_headers=headers) as stream:
            await stream.send(rerun.SerializeToString())
            while True:
                data = await asyncio.wait_for(stream.recv(), 30)
                sent += sent_media_ids(data)
                in_bytes += media_ids(data)
                message = ForwardMsg()
                message.ParseFromString(data)
                session = message.new_session.initialize.session_id or session
                if message.delta.new_element.download_button.deferred_file_id:
                    deferred.append(message.delta.new_element.download_button.deferred_file_id)
                if message.WhichOneof("type") == "script_finished":
                    break
            for number, file_id in enumerate(deferred):
                click = BackMsg()
                click.backend_operation_request.request_id = f"click-{number}"
                click.backend_operation_request.session_id = session
                click.backend_operation_request.deferred_file.file_id = file_id
                await stream.send(click.SerializeToString())
                while (message := ForwardMsg.FromString(await asyncio.wait_for(stream.recv(), 30))).WhichOneof(
                        "type") != "backend_operation_response":
                    pass
                assert message.backend_operation_response.deferred_file.url, message
                sent += sent_media_ids(message.SerializeToString())
        return sent, in_bytes

    return asyncio.run(run())


@contextlib.contextmanager
def _served(folder: Path, serve: str, **more_env: str) -> Iterator[str]:
    """The URL of :data:`PAGE` served by ``serve`` (the gated app's entry point) from ``folder``, on a shared server
    behind the proxy of :func:`_through_proxy` (``more_env``: more of the server's environment)."""
    (folder / "page.py").write_text(PAGE)
    (folder / "serve.py").write_text(serve)
    env = {**os.environ, "MOLESEG_MODE": "shared", "MOLESEG_ALLOWED_HOSTS": "moles.example.org",
           "MOLESEG_IDENTITY": "proxy-header", "MOLESEG_TRUSTED_PROXIES": "127.0.0.1", "MOLESEG_PROXY_SECRET": SECRET,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
           **more_env}
    env.pop("MOLESEG_CONFIG", None)
    with streamlit_server(env, "streamlit-mediagate", script=folder / "serve.py") as (url, _):
        yield url


@pytest.fixture(scope="module")
def gated_server(tmp_path_factory: pytest.TempPathFactory):
    """One server of :data:`SERVE` for the module's tests (each starts its own sessions, as its own users)."""
    with _served(tmp_path_factory.mktemp("gated"), SERVE) as url:
        yield url


def test_the_gate_on_streamlits_routes_passes_the_media_sent_and_refuses_a_url_shown_as_text_or_named(gated_server):
    url = gated_server
    font = next((Path(streamlit.__file__).parent / "static" / "static" / "media").glob("*.woff2")).name
    status, body = _get(f"{url}/static/media/{font}", "bob")  # Streamlit's own fonts, for everyone
    assert status == 200 and body[:4] == b"wOF2"
    sent, _ = _run_page(url, "alice")
    [picture, csv, pdf] = sent  # the picture's, the download's and, on the click, the PDF's
    for media_id, extension, start in ((picture, "jpg", b"\xff\xd8\xff"), (csv, "csv", b"a,b"), (pdf, "pdf", b"%PDF")):
        status, body = _get(f"{url}/media/{media_id}.{extension}", "alice")
        assert status == 200 and body.startswith(start), extension
        assert _get(f"{url}/media/{media_id}.{extension}", "bob") == (403, REFUSED)
    media = f"{url}/media/{picture}.jpg"
    # the page shows Bob Alice's URL as text (markdown, a text box, an exception) from a header his browser's
    # messages never name: in the bytes, in no media field, so not his
    sent, in_bytes = _run_page(url, "bob", shown=f"/media/{picture}.jpg")
    assert sent == [] and in_bytes.count(picture) >= 3
    assert _get(media, "bob") == (403, REFUSED)
    # Streamlit sends a browser back the page hash and page name of its rerun message: Bob names it there
    sent, in_bytes = _run_page(url, "bob", page_script_hash=f"/media/{picture}.jpg", page_name=f"/media/{picture}.jpg")
    assert sent == [] and picture in in_bytes
    assert _get(media, "bob") == (403, REFUSED)
    assert _get(f"{url}/MEDIA/{picture.upper()}.JPG", "bob")[1][:3] != b"\xff\xd8\xff"  # no route of Streamlit's


def _server_objects(url: str, user: str, *before: BackMsg) -> str:
    """The marks of the server's task registry and analysis store that a run of the page shows ``user``, whose
    browser sends ``before`` first (each as it is, over the same websocket)."""
    rerun = BackMsg()
    rerun.rerun_script.query_string = ""

    async def run() -> str:
        shown = ""
        async with websockets.connect(url.replace("http", "ws", 1) + "/_stcore/stream", subprotocols=["streamlit"],
                                      additional_headers=_through_proxy(user)) as stream:
            for message in (*before, rerun):
                await stream.send(message.SerializeToString())
            while (message := ForwardMsg.FromString(await asyncio.wait_for(stream.recv(), 30))).WhichOneof(
                    "type") != "script_finished":
                body = message.delta.new_element.text.body
                shown = body if body.startswith("server objects ") else shown
        return shown

    return asyncio.run(run())


def test_a_browser_cannot_clear_the_servers_caches(gated_server):
    url = gated_server
    held = _server_objects(url, "alice")
    assert len(held.split()) == 4, held
    clear = BackMsg()
    clear.clear_cache = True
    # Bob's hand-made client sends what the app's hidden menu would: Streamlit clears every user's caches
    assert _server_objects(url, "bob", clear) == held
    assert _server_objects(url, "alice") == held


async def _session_run(url: str, user: str, query_string: str = "", resume: str = "",
                       while_open: Callable[[str], object] | None = None) -> tuple[str, str, object, str]:
    """A run of the page for ``user`` whose browser's rerun message has ``query_string`` and whose handshake names
    ``resume`` as the session to go on with (as Streamlit's frontend does after a network blip): the session id
    Streamlit sent and the page's ``typed`` text; then, with ``while_open``, what ``while_open(session id)``
    returns (called in a thread) and the ``typed`` text of a second run over the same websocket."""
    protocols = ["streamlit", "no-xsrf-token", resume] if resume else ["streamlit"]
    async with websockets.connect(url.replace("http", "ws", 1) + "/_stcore/stream", subprotocols=protocols,
                                  additional_headers=_through_proxy(user)) as stream:

        async def run(query_string: str) -> tuple[str, str]:
            rerun = BackMsg()
            rerun.rerun_script.query_string = query_string
            await stream.send(rerun.SerializeToString())
            session, typed = "", ""
            while (message := ForwardMsg.FromString(await asyncio.wait_for(stream.recv(), 30))).WhichOneof(
                    "type") != "script_finished":
                session = message.new_session.initialize.session_id or session
                body = message.delta.new_element.text.body
                typed = body if body.startswith("typed [") else typed
            return session, typed

        session, typed = await run(query_string)
        if while_open is None:
            return session, typed, None, ""
        meanwhile = await asyncio.to_thread(while_open, session)
        return session, typed, meanwhile, (await run(""))[1]


def _upload_form(url: str, user: str, data: bytes) -> tuple[dict[str, str], bytes]:
    """The headers and multipart body of ``user``'s browser's upload of a file of ``data``, with the XSRF cookie
    Streamlit's health check gives the page, and its token, as Streamlit's frontend sends them."""
    request = urllib.request.Request(url + "/_stcore/health", headers=_through_proxy(user))
    with urllib.request.urlopen(request, timeout=10) as health:
        token = SimpleCookie(health.headers["Set-Cookie"])["_streamlit_xsrf"].value
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"mole.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return _through_proxy(user, **{"X-Xsrftoken": token, "Cookie": f"_streamlit_xsrf={token}",
                                   "Content-Type": f"multipart/form-data; boundary={boundary}"}), body


def _upload(url: str, user: str, session: str, data: bytes = b"not a picture", file_id: str = "",
            method: str = "PUT") -> tuple[int, bytes]:
    """``user``'s browser uploads a file of ``data`` into ``session`` (``PUT /_stcore/upload_file/<session>/<file
    id>``, a new id unless ``file_id`` is given: :func:`_upload_form`), or removes it (``method="DELETE"``)."""
    headers, body = _upload_form(url, user, data)
    request = urllib.request.Request(f"{url}/_stcore/upload_file/{session}/{file_id or uuid.uuid4()}",
                                     data=body if method == "PUT" else None, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_a_session_is_resumed_and_uploaded_into_only_by_its_owner(gated_server):
    url = gated_server

    def meanwhile(alice: str) -> list[object]:
        # while Alice's page is open, Bob (who read her session id from a proxy's access log, or a saved network
        # log) uploads into her session and names it to go on with (Streamlit would take it from her), then she
        # uploads into it
        return [_upload(url, "bob", alice), asyncio.run(_session_run(url, "bob", resume=alice))[:2],
                _upload(url, "alice", alice)]

    async def run() -> None:
        alice, typed, [bobs_upload, (bob, bobs_typed), alices_upload], typed_after = await _session_run(
            url, "alice", "typed=alice-secret", while_open=meanwhile)
        assert alice and typed == "typed [alice-secret]"
        assert bobs_upload == (403, SESSION_REFUSED) and alices_upload == (204, b"")
        assert bob and bob != alice and bobs_typed == "typed []"  # a session of his own
        assert typed_after == "typed [alice-secret]"  # her websocket still has her session
        # after she left, Bob names it: his own again
        bob, bobs_typed, _, _ = await _session_run(url, "bob", resume=alice)
        assert bob and bob != alice and bobs_typed == "typed []", bobs_typed
        # Alice's browser after a network blip names her own: her session, her value
        assert (await _session_run(url, "alice", resume=alice))[:2] == (alice, "typed [alice-secret]")

    asyncio.run(run())


#: The gate of :data:`SERVE` with a share of 25 kB of uploads held in memory per user.
SERVE_SMALL_SHARE = """import streamlit as st
from starlette.middleware import Middleware
from moleseg.app.mediagate import MediaGate
class Gate(MediaGate):
    def __init__(self, app):
        super().__init__(app)
        self.upload_bytes = 25_000
app = st.App("page.py", middleware=[Middleware(Gate)])
"""


@pytest.fixture
def small_share_server(tmp_path: Path):
    with _served(tmp_path, SERVE_SMALL_SHARE) as url:
        yield url


def test_a_users_uploads_held_in_memory_stay_within_their_share(small_share_server):
    """Streamlit keeps every file uploaded into a session in memory, under any file id the URL names, until the
    session ends: a script uploading file after file (200 MB each) into its own sessions filled the server's memory.
    A user's sessions hold at most their share; another user's uploads and a removal still pass."""
    url = small_share_server
    picture = b"x" * 10_000

    def meanwhile(alice: str) -> list[object]:
        kept = str(uuid.uuid4())
        return [_upload(url, "alice", alice, picture, kept), _upload(url, "alice", alice, picture),
                _upload(url, "alice", alice, picture),  # 30 kB: past her share
                asyncio.run(_session_run(url, "alice", while_open=lambda other: _upload(url, "alice", other,
                                                                                         picture)))[2],
                asyncio.run(_session_run(url, "bob", while_open=lambda bob: _upload(url, "bob", bob, picture)))[2],
                _upload(url, "alice", alice, file_id=kept, method="DELETE"), _upload(url, "alice", alice, picture)]

    results = asyncio.run(_session_run(url, "alice", while_open=meanwhile))[2]
    full = (413, UPLOADS_FULL)
    assert results == [(204, b""), (204, b""), full, full, (204, b""), (204, b""), (204, b"")]


def _held_back_upload(url: str, user: str, session: str, data: bytes, *, chunked: bool = False
                      ) -> tuple[socket.socket, bytes]:
    """``user``'s upload of ``data`` into ``session`` (as :func:`_upload`) over a socket of its own, sent but for its
    last bytes, which :func:`_finish_upload` sends: the gate sees the request while its body is still on its way (a
    large file on a slow line), as it sees each of several uploads a script sends at once. ``chunked``: without a
    ``Content-Length``, its body in HTTP/1.1 chunks (as a hand-made client may send it)."""
    headers, body = _upload_form(url, user, data)
    headers.update(Host="127.0.0.1", Connection="close")
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
        body = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    else:
        headers["Content-Length"] = str(len(body))
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=10)
    head = f"PUT /_stcore/upload_file/{session}/{uuid.uuid4()} HTTP/1.1\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    connection.sendall(head.encode() + body[:-8])
    return connection, body[-8:]


def _finish_upload(upload: tuple[socket.socket, bytes]) -> int:
    """The rest of a :func:`_held_back_upload`'s body (its socket and the bytes held back), sent; the status of the
    answer (a refusal may have come already)."""
    connection, rest = upload
    with connection:
        with contextlib.suppress(OSError):  # a refusal comes before the body is read, and closes the connection
            connection.sendall(rest)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while b"\r\n" not in answer and (chunk := connection.recv(4096)):
                answer += chunk
    return int(answer.split()[1])


#: The gate of :data:`SERVE` with a share of 2.5 MB of uploads held in memory per user, before a server taking files of
#: 1 MB (2**20 bytes) at most.
SERVE_MB_SHARE = SERVE_SMALL_SHARE.replace("25_000", "2_500_000")


@pytest.fixture
def one_mb_uploads_server(tmp_path: Path):
    with _served(tmp_path, SERVE_MB_SHARE, STREAMLIT_SERVER_MAX_UPLOAD_SIZE="1") as url:
        yield url


def test_uploads_sent_at_once_stay_within_the_users_share(one_mb_uploads_server):
    """The share was checked against the files a user's sessions held, not those on their way: a script sending
    its uploads at once (each up to 200 MB) had every one of them pass, the share many times over; and an upload
    without a Content-Length counted for nothing. Each upload on its way now counts for its length (one without,
    for the largest file Streamlit takes: 1 MB here), so of three 1 MB uploads and one without a length sent at once
    into a 2.5 MB share two pass (three did, had the unsized one counted for nothing); Bob's share is his own."""
    url = one_mb_uploads_server
    picture = b"x" * 1_000_000

    def meanwhile(alice: str) -> list[int]:
        at_once = [_held_back_upload(url, "alice", alice, picture) for _ in range(3)]
        unsized = _held_back_upload(url, "alice", alice, picture, chunked=True)
        statuses = [_finish_upload(upload) for upload in (*at_once, unsized)]
        bobs = asyncio.run(_session_run(url, "bob", while_open=lambda bob: _finish_upload(
            _held_back_upload(url, "bob", bob, picture, chunked=True))))[2]
        return [sorted(statuses), bobs]  # in whatever order the server took them: two fit, the unsized counted

    assert asyncio.run(_session_run(url, "alice", while_open=meanwhile))[2] == [[204, 204, 413, 413], 204]


#: The gate of :data:`SERVE_SMALL_SHARE` remembering two sessions per owner (a real server: 1,000).
SERVE_FEW_SESSIONS = SERVE_SMALL_SHARE.replace(
    "        self.upload_bytes = 25_000",
    "        self.upload_bytes = 25_000\n        self.sent = SentMedia(ids_per_owner=2)",
).replace("from moleseg.app.mediagate import MediaGate", "from moleseg.app.mediagate import MediaGate, SentMedia")


@pytest.fixture
def few_sessions_server(tmp_path: Path):
    with _served(tmp_path, SERVE_FEW_SESSIONS) as url:
        yield url


def test_uploads_held_by_a_session_the_gate_forgot_still_count_in_the_share(few_sessions_server):
    """The share counted the uploads of the sessions the gate remembered as given to the user, at most so many (1,000)
    of the latest: a script that filled its share in one session, kept that session's websocket open and silent and
    opened that many more sessions had the first forgotten, and a new share to fill, again and again. A session
    uploaded into counts for as long as Streamlit holds its files, remembered or not."""
    url = few_sessions_server
    picture = b"x" * 10_000

    def in_third(third: str) -> tuple[int, bytes]:  # the first session is no longer remembered as hers
        return _upload(url, "alice", third, picture)

    def in_second(second: str) -> object:
        return asyncio.run(_session_run(url, "alice", while_open=in_third))[2]

    def in_first(first: str) -> list[object]:
        held = [_upload(url, "alice", first, picture), _upload(url, "alice", first, picture)]  # 20 kB of her 25 kB
        return [*held, asyncio.run(_session_run(url, "alice", while_open=in_second))[2]]

    assert asyncio.run(_session_run(url, "alice", while_open=in_first))[2] == [(204, b""), (204, b""),
                                                                               (413, UPLOADS_FULL)]
