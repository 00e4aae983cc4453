"""The gate in front of Streamlit's media URLs (moleseg.app.mediagate), as an ASGI app called directly: a media
request passes only when its owner (the proxy's user, or the browser's key with OIDC sign-in) was sent its URL
down a websocket."""

from __future__ import annotations

import asyncio
import re

import pytest

from moleseg.app.mediagate import BROWSER_KEY_COOKIE, REFUSED, MediaGate, SentMedia, media_ids
from moleseg.core.settings import ServerSettings, SettingsError, load_settings

SECRET = "s3cret-of-the-proxy"
#: Media ids as Streamlit makes them (32 hex digits).
PICTURE, REPORT, OTHER = "0123456789abcdef" * 2, "fedcba9876543210" * 2, "00112233445566778899aabbccddeeff"


async def _streamlit(scope, receive, send):
    """What Streamlit would serve: a picture over HTTP (once it has read the request's body); over a websocket, the
    scope's ``frames``, then each message the browser sends, shown back to it (as a page name is, or a typed text)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.accept"})
        for frame in scope["frames"]:
            await send({"type": "websocket.send", **({"text": frame} if isinstance(frame, str) else {"bytes": frame})})
        while (message := await receive())["type"] == "websocket.receive":
            await send({**message, "type": "websocket.send"})
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"picture"})


def _call(gate: MediaGate, scope: dict, headers: dict[str, str], client: str, incoming: list[dict] = ()
          ) -> list[dict]:
    """The messages ``gate`` sends for a request from ``client``, whose browser sends ``incoming`` (then nothing
    more)."""
    sent, incoming = [], list(incoming)

    async def receive():
        if incoming:
            return incoming.pop(0)
        return {"type": "websocket.disconnect" if scope["type"] == "websocket" else "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    scope = {"path": "/", "scheme": "http", **scope, "client": (client, 50000),
             "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()]}
    asyncio.run(gate(scope, receive, send))
    return sent


def _get(gate: MediaGate, path: str, headers: dict[str, str], client: str = "127.0.0.1",
         **scope) -> tuple[int, bytes]:
    sent = _call(gate, {"type": "http", "path": path, **scope}, headers, client)
    return sent[0]["status"], b"".join(message.get("body", b"") for message in sent[1:])


def _stream(gate: MediaGate, frames: list[bytes | str], headers: dict[str, str], client: str = "127.0.0.1",
            named: list[bytes | str] = ()) -> list[dict]:
    """The messages the browser gets from a websocket over which Streamlit sends ``frames``, then shows back what
    the browser sends (``named``)."""
    incoming = [{"type": "websocket.receive", **({"text": text} if isinstance(text, str) else {"bytes": text})}
                for text in named]
    return _call(gate, {"type": "websocket", "path": "/_stcore/stream", "scheme": "ws", "frames": frames}, headers,
                 client, incoming)


def _set_cookie(message: dict) -> str | None:
    values = [value.decode() for name, value in message.get("headers", []) if name == b"set-cookie"]
    assert len(values) <= 1
    return values[0] if values else None


def _settings(monkeypatch, **environment: str) -> ServerSettings:
    for name, value in {"MOLESEG_MODE": "shared", "MOLESEG_ALLOWED_HOSTS": "moles.example.org",
                        **environment}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MOLESEG_CONFIG", raising=False)
    load_settings.cache_clear()
    return load_settings()


@pytest.fixture
def shared_proxy(monkeypatch):
    yield _settings(monkeypatch, MOLESEG_IDENTITY="proxy-header", MOLESEG_PROXY_SECRET=SECRET,
                    MOLESEG_TRUSTED_PROXIES="127.0.0.1")
    load_settings.cache_clear()


@pytest.fixture
def shared_oidc(monkeypatch):
    monkeypatch.delenv("MOLESEG_PROXY_SECRET", raising=False)
    yield _settings(monkeypatch, MOLESEG_IDENTITY="streamlit-oidc")
    load_settings.cache_clear()


def _through_proxy(settings: ServerSettings, user: str) -> dict[str, str]:
    return {settings.user_headers[0]: user, ServerSettings.proxy_secret_header: SECRET}


def test_the_ids_of_streamlits_media_urls_are_read_from_bytes_and_text():
    # a protobuf string field: its length before it, the next field's tag after it (here "2", a hex digit)
    frame = b"\x0a\x2b/media/" + PICTURE.encode() + b".png2\x08x /media/" + REPORT.encode()
    assert media_ids(frame) == [PICTURE, REPORT]
    assert media_ids(f'{{"url": "/media/{OTHER}.pdf"}}') == [OTHER]
    assert media_ids(b"/media/abc.png /static/" + PICTURE.encode()) == []


def test_a_proxy_user_gets_the_media_sent_to_them_and_nobody_else_does(shared_proxy):
    gate = MediaGate(_streamlit)
    alice, bob = _through_proxy(shared_proxy, "alice"), _through_proxy(shared_proxy, "bob")
    assert _get(gate, f"/media/{PICTURE}.png", alice) == (403, REFUSED)  # not sent yet
    frames = [b"\x0a\x2b/media/" + PICTURE.encode() + b".png\x12", f"/media/{REPORT}.pdf"]
    assert [message.get("bytes") or message.get("text") for message in _stream(gate, frames, alice)[1:]] == frames
    _stream(gate, [f"/media/{OTHER}.zip"], bob)
    assert _get(gate, f"/media/{PICTURE}.png", alice) == (200, b"picture")  # from any of Alice's browsers
    assert _get(gate, f"/media/{OTHER}.zip", bob) == (200, b"picture")
    for path in (f"/media/{PICTURE}.png", f"/media/{REPORT}.pdf"):
        assert _get(gate, path, bob) == (403, REFUSED)
    assert _get(gate, f"/media/{OTHER}.zip", alice) == (403, REFUSED)
    assert _get(gate, f"/media/x/{PICTURE}.png", alice)[0] == 403  # a folder: not an id Streamlit has
    # the media of a websocket nobody is believed for are nobody's
    _stream(gate, [f"/media/{OTHER}.png"], {shared_proxy.user_headers[0]: "alice"})
    assert _get(gate, f"/media/{OTHER}.png", alice) == (403, REFUSED)


def test_media_needs_the_proxy_on_a_shared_server(shared_proxy):
    gate = MediaGate(_streamlit)
    user = shared_proxy.user_headers[0]
    through_proxy = _through_proxy(shared_proxy, "alice")
    _stream(gate, [f"/media/{PICTURE}.jpg"], through_proxy)
    assert _get(gate, f"/media/{PICTURE}.jpg", through_proxy) == (200, b"picture")
    for headers in ({}, {user: "alice"}, {user: "alice", ServerSettings.proxy_secret_header: "guess"}):
        assert _get(gate, f"/media/{PICTURE}.jpg", headers) == (403, REFUSED)
    assert _get(gate, f"/media/{PICTURE}.jpg", through_proxy, client="10.0.0.9")[0] == 403  # an untrusted peer
    assert _get(gate, "/_stcore/health", {}) == (200, b"picture")  # only media URLs are gated here; pages have the gate


def test_media_believes_a_loopback_proxy_as_the_pages_do(shared_proxy):
    # The pages get the peer from st.context.ip_address, None for either loopback address, which
    # identity.resolve_user reads as "127.0.0.1" or "::1": a proxy that reaches the app over ::1 (proxy_pass to
    # localhost) while trusted_proxies names 127.0.0.1 is believed there, so its pictures must pass here too.
    gate = MediaGate(_streamlit)
    through_proxy = _through_proxy(shared_proxy, "alice")
    _stream(gate, [f"/media/{PICTURE}.jpg"], through_proxy, client="::1")
    assert _get(gate, f"/media/{PICTURE}.jpg", through_proxy, client="::1") == (200, b"picture")
    assert _get(gate, f"/media/{PICTURE}.jpg", {}, client="::1") == (403, REFUSED)
    assert _get(gate, f"/media/{PICTURE}.jpg", through_proxy, client="::2")[0] == 403


def test_with_oidc_sign_in_a_browser_gets_a_key_and_only_its_own_media(shared_oidc):
    gate = MediaGate(_streamlit)
    first = _call(gate, {"type": "http", "path": "/"}, {}, "127.0.0.1")[0]
    cookie = _set_cookie(first)
    match = re.fullmatch(rf"{BROWSER_KEY_COOKIE}=([A-Za-z0-9_-]{{43}}); Path=/; HttpOnly; SameSite=Lax", cookie)
    assert match, cookie
    browser = {"Cookie": f"{BROWSER_KEY_COOKIE}={match.group(1)}"}
    assert _set_cookie(_call(gate, {"type": "http", "path": "/"}, browser, "127.0.0.1")[0]) is None  # kept
    accepted = _stream(gate, [f"/media/{PICTURE}.png"], browser)[0]
    assert accepted["type"] == "websocket.accept" and _set_cookie(accepted) is None
    assert _get(gate, f"/media/{PICTURE}.png", browser) == (200, b"picture")
    other_key = "A" * 43
    for headers in ({}, {"Cookie": f"{BROWSER_KEY_COOKIE}={other_key}"}, {"Cookie": f"{BROWSER_KEY_COOKIE}=x"},
                    {"Cookie": f"other={match.group(1)}"}):
        assert _get(gate, f"/media/{PICTURE}.png", headers) == (403, REFUSED)
    # a refusal gives a browser without a key one, a new one each time
    refusals = [_call(gate, {"type": "http", "path": f"/media/{PICTURE}.png"}, {}, "127.0.0.1")[0] for _ in "ab"]
    assert len({_set_cookie(refusal) for refusal in refusals}) == 2


def test_a_websocket_without_a_key_gets_one_with_its_acceptance_and_its_media_are_that_keys(shared_oidc):
    gate = MediaGate(_streamlit)
    cookie = _set_cookie(_stream(gate, [f"/media/{REPORT}.pdf"], {})[0])
    key = re.match(rf"{BROWSER_KEY_COOKIE}=([^;]+);", cookie).group(1)
    assert _get(gate, f"/media/{REPORT}.pdf", {"Cookie": f"{BROWSER_KEY_COOKIE}={key}"}) == (200, b"picture")


@pytest.mark.parametrize("scope, headers", [({"scheme": "https"}, {}),
                                            ({}, {"X-Forwarded-Proto": "https"}),
                                            ({"scheme": "wss", "type": "websocket", "frames": []}, {})])
def test_the_key_is_sent_over_https_only_when_the_request_came_that_way(shared_oidc, scope, headers):
    message = _call(MediaGate(_streamlit), {"type": "http", **scope}, headers, "127.0.0.1")[0]
    assert _set_cookie(message).endswith("; HttpOnly; SameSite=Lax; Secure")


def test_personal_mode_lets_media_through(monkeypatch):
    monkeypatch.delenv("MOLESEG_CONFIG", raising=False)
    for name in ("MOLESEG_MODE", "MOLESEG_IDENTITY", "MOLESEG_PROXY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    load_settings.cache_clear()
    try:
        assert not load_settings().shared
        assert _get(MediaGate(_streamlit), "/media/abc.jpg", {}) == (200, b"picture")
        assert _set_cookie(_call(MediaGate(_streamlit), {"type": "http"}, {}, "127.0.0.1")[0]) is None
    finally:
        load_settings.cache_clear()


def test_with_invalid_settings_no_media_passes_and_the_pages_say_why(monkeypatch):
    with pytest.raises(SettingsError):  # shared mode needs an identity source
        _settings(monkeypatch, MOLESEG_IDENTITY="none")
    try:
        gate = MediaGate(_streamlit)
        assert _get(gate, f"/media/{PICTURE}.png", {}) == (403, REFUSED)
        assert _get(gate, "/history", {}) == (200, b"picture")  # the page shows the settings' error
    finally:
        load_settings.cache_clear()


def test_the_memory_of_sent_media_forgets_the_oldest_first():
    sent = SentMedia(owners=2, ids_per_owner=2)
    sent.record("alice", ["a1", "a2"])
    sent.record("alice", ["a1", "a3"])  # a1 sent again: a2 is now the oldest
    assert [sent.was_sent("alice", media) for media in ("a1", "a2", "a3")] == [True, False, True]
    sent.record("bob", ["b1"])
    sent.record("carol", [])  # no media: no owner to remember
    sent.record("alice", ["a3"])  # Alice sent media more recently than Bob
    sent.record("dave", ["d1"])
    assert [sent.was_sent(*pair) for pair in (("alice", "a3"), ("bob", "b1"), ("dave", "d1"))] == [True, False, True]


def test_what_an_owner_named_is_not_believed_for_them_and_naming_many_stops_belief():
    sent = SentMedia(owners=2, ids_per_owner=2)
    sent.note_named("bob", ["a1"])
    sent.record("bob", ["a1", "b1"])
    assert [sent.was_sent("bob", media) for media in ("a1", "b1")] == [False, True]
    sent.record("alice", ["a1"])  # named by Bob, not by Alice
    assert sent.was_sent("alice", "a1")
    sent.note_named("bob", ["x1", "x2"])  # past ids_per_owner: a1 is not pushed out, nothing more is believed
    sent.record("bob", ["a1", "b2"])
    assert [sent.was_sent("bob", media) for media in ("a1", "b1", "b2")] == [False, True, False]


def test_only_streamlits_media_route_is_gated_under_any_base_path_not_its_fonts_under_static_media(shared_proxy):
    alice = _through_proxy(shared_proxy, "alice")
    for base_url_path, base in (("", ""), ("/moles/", "/moles")):
        gate = MediaGate(_streamlit, base_url_path=base_url_path)
        for path in ("/static/media/SourceSansVF-Upright.ttf.BsWL4Kly.woff2", "/component/x/static/media/a.png",
                     "/app/static/media/a.png"):  # Streamlit's fonts, a component's and the app's own files
            assert _get(gate, base + path, {}) == (200, b"picture"), base + path
        _stream(gate, [f"/media/{PICTURE}.png"], alice)
        assert _get(gate, f"{base}/media/{PICTURE}.png", alice) == (200, b"picture")
        assert _get(gate, f"{base}/media/{PICTURE}.png", {}) == (403, REFUSED)
        # behind a root_path that the server was told of, Streamlit routes the path less it
        for headers, status in ((alice, 200), ({}, 403)):
            assert _get(gate, f"/clinic{base}/media/{PICTURE}.png", headers, root_path="/clinic")[0] == status
    # under a base path /media/ is no route of Streamlit's (its page answers), and its media route is gated
    gate = MediaGate(_streamlit, base_url_path="moles")
    assert _get(gate, f"/media/{PICTURE}.png", {}) == (200, b"picture")
    assert _get(gate, f"/moles/media/{PICTURE}.png", _through_proxy(shared_proxy, "bob")) == (403, REFUSED)


def test_a_url_the_browser_named_is_not_made_its_own_by_a_page_that_shows_it_back(shared_proxy):
    # Streamlit itself sends a browser back the page name and page hash its rerun message gives (new_session):
    # Bob, who holds Alice's URL, names it there (or types it as a lesion identifier, or uploads a file named so)
    gate = MediaGate(_streamlit)
    alice, bob, carol = (_through_proxy(shared_proxy, user) for user in ("alice", "bob", "carol"))
    _stream(gate, [f"/media/{PICTURE}.png", f"/media/{REPORT}.pdf"], alice)
    shown = _stream(gate, [], bob, named=[b"\x12\x2b/media/" + PICTURE.encode() + b".png", f"/media/{REPORT}.pdf"])
    assert [message.get("bytes") or message.get("text") for message in shown[1:]] == [
        b"\x12\x2b/media/" + PICTURE.encode() + b".png", f"/media/{REPORT}.pdf"]
    for media in (f"{PICTURE}.png", f"{REPORT}.pdf"):
        assert _get(gate, f"/media/{media}", bob) == (403, REFUSED)
    _stream(gate, [f"Visits of /media/{PICTURE}.png"], bob)  # later, from his saved records: still not his
    assert _get(gate, f"/media/{PICTURE}.png", bob) == (403, REFUSED)
    # an upload's file name, in a request body whose chunks split the URL
    url = f"/media/{PICTURE}.png".encode()
    chunks = [{"type": "http.request", "body": b"filename=" + url[:20], "more_body": True},
              {"type": "http.request", "body": url[20:], "more_body": False}]
    _call(gate, {"type": "http", "path": "/_stcore/upload_file/s/f", "method": "PUT"}, carol, "127.0.0.1", chunks)
    _stream(gate, [f"Save {url.decode()} to records"], carol)
    assert _get(gate, f"/media/{PICTURE}.png", carol) == (403, REFUSED)
    assert _get(gate, f"/media/{PICTURE}.png", alice) == (200, b"picture")  # sent to Alice: still hers


def test_a_url_the_browser_named_percent_encoded_is_not_made_its_own_either(shared_proxy):
    # the History page shows back a ?visit= link's text, which Streamlit reads from the rerun message's query
    # string percent-decoded: Bob's browser, sent to /history?visit=%2Fmedia%2F<Alice's id>.png, names no
    # "/media/<id>" in its bytes, yet the page then sends him that URL
    gate = MediaGate(_streamlit)
    alice, bob = _through_proxy(shared_proxy, "alice"), _through_proxy(shared_proxy, "bob")
    _stream(gate, [f"/media/{PICTURE}.png"], alice)
    named = b"\x0a\x40visit=%2Fmedia%2F%30" + PICTURE[1:].encode() + b".png"
    _stream(gate, [], bob, named=[named])
    _stream(gate, [f"Cannot open this record: no saved analysis with id /media/{PICTURE}.png."], bob)
    assert _get(gate, f"/media/{PICTURE}.png", bob) == (403, REFUSED)
    assert _get(gate, f"/media/{PICTURE}.png", alice) == (200, b"picture")


def test_a_request_body_in_a_charset_that_hides_a_named_url_is_refused(shared_proxy):
    # Starlette decodes a multipart part's file name in the charset its Content-Type names: in UTF-16 an upload's
    # name holds no "/media/<id>" in the body's bytes, yet Streamlit stores (and a page shows back) that URL
    from starlette.datastructures import Headers
    from starlette.formparsers import MultiPartParser

    url = f"/media/{PICTURE}.png"
    body = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="' + url.encode("utf-16-le")
            + b'"\r\nContent-Type: image/png\r\n\r\nx\r\n--b--\r\n')
    content_type = "multipart/form-data; boundary=b; charset=utf-16-le"

    async def stream():
        yield body

    form = asyncio.run(MultiPartParser(Headers({"content-type": content_type}), stream()).parse())
    assert [upload.filename for upload in form.values()] == [url] and media_ids(body) == []
    gate = MediaGate(_streamlit)
    carol = {**_through_proxy(shared_proxy, "carol"), "Content-Type": content_type}
    sent = _call(gate, {"type": "http", "path": "/_stcore/upload_file/s/f", "method": "PUT"}, carol, "127.0.0.1",
                 [{"type": "http.request", "body": body, "more_body": False}])
    assert sent[0]["status"] == 400 and b"picture" not in b"".join(message.get("body", b"") for message in sent)
    for charset in ("utf-8", "UTF-8", "us-ascii", "latin-1"):  # read as bytes are: passes
        plain = {**carol, "Content-Type": f"multipart/form-data; boundary=b; charset={charset}"}
        assert _call(gate, {"type": "http", "path": "/_stcore/upload_file/s/f"}, plain, "127.0.0.1")[0]["status"] == 200
