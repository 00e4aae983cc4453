"""The gate in front of Streamlit's media URLs (moleseg.app.mediagate), as an ASGI app called directly."""

from __future__ import annotations

import asyncio

import pytest

from moleseg.app.mediagate import REFUSED, MediaGate
from moleseg.core.settings import ServerSettings, load_settings

SECRET = "s3cret-of-the-proxy"


async def _inner(scope, receive, send):  # what Streamlit would serve
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"picture"})


def _get(path: str, headers: dict[str, str], client: str = "127.0.0.1") -> tuple[int, bytes]:
    sent = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": path, "client": (client, 50000),
             "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()]}
    asyncio.run(MediaGate(_inner)(scope, receive, send))
    return sent[0]["status"], b"".join(message.get("body", b"") for message in sent[1:])


@pytest.fixture
def shared_proxy(monkeypatch):
    for name, value in {"MOLESEG_MODE": "shared", "MOLESEG_IDENTITY": "proxy-header", "MOLESEG_PROXY_SECRET": SECRET,
                        "MOLESEG_TRUSTED_PROXIES": "127.0.0.1", "MOLESEG_ALLOWED_HOSTS": "moles.example.org"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MOLESEG_CONFIG", raising=False)
    load_settings.cache_clear()
    yield load_settings()
    load_settings.cache_clear()


def test_media_needs_the_proxy_on_a_shared_server(shared_proxy):
    user = shared_proxy.user_headers[0]
    through_proxy = {user: "alice", ServerSettings.proxy_secret_header: SECRET}
    assert _get("/media/abc.jpg", through_proxy) == (200, b"picture")
    for headers in ({}, {user: "alice"}, {user: "alice", ServerSettings.proxy_secret_header: "guess"}):
        assert _get("/media/abc.jpg", headers) == (403, REFUSED)
        assert _get("/moles/media/abc.jpg", headers) == (403, REFUSED)  # under a server.baseUrlPath
    assert _get("/media/abc.jpg", through_proxy, client="10.0.0.9")[0] == 403  # the secret from an untrusted peer
    assert _get("/_stcore/health", {}) == (200, b"picture")  # only media URLs are gated here; pages have the gate


def test_personal_mode_lets_media_through(monkeypatch):
    monkeypatch.delenv("MOLESEG_CONFIG", raising=False)
    for name in ("MOLESEG_MODE", "MOLESEG_IDENTITY", "MOLESEG_PROXY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    load_settings.cache_clear()
    try:
        assert not load_settings().shared
        assert _get("/media/abc.jpg", {}) == (200, b"picture")
    finally:
        load_settings.cache_clear()


def test_media_believes_a_loopback_proxy_as_the_pages_do(shared_proxy):
    # The pages get the peer from st.context.ip_address, None for either loopback address, which
    # identity.resolve_user reads as "127.0.0.1" or "::1": a proxy that reaches the app over ::1 (proxy_pass to
    # localhost) while trusted_proxies names 127.0.0.1 is believed there, so its pictures must pass here too.
    through_proxy = {shared_proxy.user_headers[0]: "alice", ServerSettings.proxy_secret_header: SECRET}
    assert _get("/media/abc.jpg", through_proxy, client="::1") == (200, b"picture")
    assert _get("/media/abc.jpg", {}, client="::1") == (403, REFUSED)
    assert _get("/media/abc.jpg", through_proxy, client="::2")[0] == 403
