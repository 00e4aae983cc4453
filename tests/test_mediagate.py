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
    """What Streamlit would serve: a picture over HTTP; over a websocket, the scope's ``frames``."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.accept"})
        for frame in scope["frames"]:
            await send({"type": "websocket.send", **({"text": frame} if isinstance(frame, str) else {"bytes": frame})})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"picture"})


def _call(gate: MediaGate, scope: dict, headers: dict[str, str], client: str) -> list[dict]:
    sent = []

    async def receive():
        return {"type": "http.request", "body": b""}

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


def _stream(gate: MediaGate, frames: list[bytes | str], headers: dict[str, str], client: str = "127.0.0.1"
            ) -> list[dict]:
    """The messages the browser gets from a websocket over which Streamlit sends ``frames``."""
    return _call(gate, {"type": "websocket", "path": "/_stcore/stream", "scheme": "ws", "frames": frames}, headers,
                 client)


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
    assert _get(gate, f"/moles/media/{REPORT}.pdf", alice) == (200, b"picture")  # under a server.baseUrlPath
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
        assert _get(gate, f"/moles/media/{PICTURE}.jpg", headers) == (403, REFUSED)
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
