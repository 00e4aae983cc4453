"""The gate in front of Streamlit's media URLs (moleseg.app.mediagate, reading Streamlit's wire format with
moleseg.app.streamwire), as an ASGI app called directly: a media request passes only when its owner (the proxy's
user, or the browser's key with OIDC sign-in) was sent its URL down a websocket."""

from __future__ import annotations

import ast
import asyncio
import re
import tomllib
from pathlib import Path

import pytest
import streamlit
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from moleseg.app.mediagate import BROWSER_KEY_COOKIE, REFUSED, SESSION_REFUSED, MediaGate, SentMedia
from moleseg.app.streamwire import (
    DEFERRED_FIELD,
    DROPPED_BACKMSGS,
    MEDIA_BEARING,
    MEDIA_FIELDS,
    SESSION_BEARING,
    SESSION_FIELDS,
    media_ids,
    sent_media,
    sent_media_ids,
)
from moleseg.core.config import APP_FILE
from moleseg.core.settings import ServerSettings, SettingsError, load_settings

SECRET = "s3cret-of-the-proxy"
#: Media ids as Streamlit makes them (32 hex digits).
PICTURE, REPORT, OTHER = "0123456789abcdef" * 2, "fedcba9876543210" * 2, "00112233445566778899aabbccddeeff"
#: The placeholder id of a download made on the click, as Streamlit makes it (``uuid.uuid4().hex``).
DEFERRED = "9f1c2b3a4d5e6f708192a3b4c5d6e7f8"


async def _streamlit(scope, receive, send):
    """What Streamlit would serve: a picture over HTTP (once it has read the request's body); over a websocket, the
    scope's ``frames`` (the scope noted in its ``seen``, if any), then each message the browser sends, shown back to
    it (as a page name is, or a typed text)."""
    scope.get("seen", []).append(scope)
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


def _pictures(*urls: str, caption: str = "") -> bytes:
    """A websocket message of ``st.image`` (of a list) as Streamlit sends it: ``urls`` in its media field."""
    message = ForwardMsg()
    for url in urls:
        message.delta.new_element.imgs.imgs.add(url=url, caption=caption)
    return message.SerializeToString()


def _download(url: str, label: str = "Report (PDF)", made_on_click: str = "") -> bytes:
    """A websocket message of ``st.download_button`` of bytes (``url`` in its media field), or of one whose file
    is made on the click (``made_on_click`` its placeholder id, no URL yet)."""
    message = ForwardMsg()
    message.delta.new_element.download_button.url = url
    message.delta.new_element.download_button.label = label
    message.delta.new_element.download_button.deferred_file_id = made_on_click
    return message.SerializeToString()


def _deferred(url: str) -> bytes:
    """The answer to a browser's click on a download button whose file is made on the click."""
    message = ForwardMsg()
    message.backend_operation_response.request_id = "r1"
    message.backend_operation_response.deferred_file.url = url
    return message.SerializeToString()


def _click(file_id: str) -> bytes:
    """A browser's click on the download button whose file is made on the click under ``file_id``."""
    message = BackMsg()
    message.backend_operation_request.request_id = "r1"
    message.backend_operation_request.deferred_file.file_id = file_id
    return message.SerializeToString()


async def _making_on_click(scope, receive, send):
    """Streamlit 1.67 as it answers a click: the scope's ``frames``, then for each click the URL of the file made,
    whichever session's button it names (``MediaFileManager.execute_deferred`` checks no session); over HTTP as
    :func:`_streamlit`."""
    if scope["type"] != "websocket":
        await _streamlit(scope, receive, send)
        return
    await send({"type": "websocket.accept"})
    for frame in scope["frames"]:
        await send({"type": "websocket.send", "bytes": frame})
    while (message := await receive())["type"] == "websocket.receive":
        assert BackMsg.FromString(message["bytes"]).backend_operation_request.deferred_file.file_id == DEFERRED
        await send({"type": "websocket.send", "bytes": _deferred(f"/media/{OTHER}.pdf")})


def _new_session(session_id: str) -> bytes:
    """The websocket message with which Streamlit gives a browser its session (``new_session.initialize``)."""
    message = ForwardMsg()
    message.new_session.initialize.session_id = session_id
    return message.SerializeToString()


def _markdown(text: str) -> bytes:
    """A websocket message of ``st.markdown(text)`` (text only)."""
    message = ForwardMsg()
    message.delta.new_element.markdown.body = text
    return message.SerializeToString()


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


def test_the_urls_a_browser_names_are_read_anywhere_in_its_bytes_and_text():
    # a protobuf string field: its length before it, the next field's tag after it (here "2", a hex digit)
    frame = b"\x0a\x2b/media/" + PICTURE.encode() + b".png2\x08x /media/" + REPORT.encode()
    assert media_ids(frame) == [PICTURE, REPORT]
    assert media_ids(f'{{"url": "/media/{OTHER}.pdf"}}') == [OTHER]
    assert media_ids(b"/media/abc.png /static/" + PICTURE.encode()) == []


def test_the_media_sent_are_read_from_streamlits_media_fields_only():
    assert sent_media_ids(_pictures(f"/media/{PICTURE}.jpg", f"/media/{REPORT}", caption="two")) == [PICTURE, REPORT]
    assert sent_media_ids(_download(f"/media/{REPORT}.pdf")) == [REPORT]
    assert sent_media_ids(_deferred(f"/media/{OTHER}.zip")) == [OTHER]
    icon, logo, avatar = ForwardMsg(), ForwardMsg(), ForwardMsg()
    icon.page_config_changed.favicon = f"/media/{PICTURE}.png"
    logo.logo.image, logo.logo.icon_image = f"/media/{PICTURE}.png", f"/media/{REPORT}.png"
    avatar.delta.add_block.chat_message.avatar = f"/media/{OTHER}.png"
    assert [sent_media_ids(message.SerializeToString()) for message in (icon, logo, avatar)] == [
        [PICTURE], [PICTURE, REPORT], [OTHER]]
    # in a media field, only a whole URL of Streamlit's media file manager is one
    for url in (f"data:image/png;base64,{PICTURE}", f"https://example.org/media/{PICTURE}.png", "",
                f"/media/{PICTURE}.png/x", f"/media/{PICTURE.upper()}.png", f"/app/static/media/{PICTURE}.png"):
        assert sent_media_ids(_pictures(url)) == [] and sent_media_ids(_download(url)) == [], url


def _shown_as_text(url: str) -> list[bytes]:
    """Messages in which a page shows ``url`` back as text, built as Streamlit builds them: a markdown body, a
    picture's caption, a text box's value, an exception's message, a page's name and hash, the page's query
    string, a download button's label and help, a link button's URL."""
    caption = _pictures("data:image/png;base64,AAAA", caption=f"Saved as {url}")
    box, error, pages, query, button, link = (ForwardMsg() for _ in range(6))
    box.delta.new_element.text_input.value = box.delta.new_element.text_input.default = url
    box.delta.new_element.text_input.label = url
    error.delta.new_element.exception.message = f"Cannot open {url}"
    error.delta.new_element.exception.stack_trace.append(url)
    page = pages.new_session.app_pages.add(page_name=url, page_script_hash=url, url_pathname=url)
    pages.navigation.app_pages.append(page)
    query.page_info_changed.query_string = f"visit={url}"
    button.delta.new_element.download_button.label = url
    button.delta.new_element.download_button.help = url
    button.delta.new_element.download_button.deferred_file_id = url
    link.delta.new_element.link_button.url = url
    return [_markdown(f"Visits of {url}"), caption] + [message.SerializeToString()
                                                      for message in (box, error, pages, query, button, link)]


def test_a_media_url_a_page_shows_as_text_is_nobodys(shared_proxy):
    # a lesion identifier, a DICOM patient ID copied into the identifier box, a file name, a page name: Bob, who
    # holds Alice's URL, has a page show it to him without his browser naming it (a file's contents, a header)
    url = f"/media/{PICTURE}.png"
    for message in _shown_as_text(url):
        assert PICTURE in media_ids(message) and sent_media_ids(message) == [], message  # in its bytes, no field
    gate = MediaGate(_streamlit)
    alice, bob = _through_proxy(shared_proxy, "alice"), _through_proxy(shared_proxy, "bob")
    _stream(gate, [_pictures(url)], alice)
    shown = _stream(gate, _shown_as_text(url), bob)
    assert [message["bytes"] for message in shown[1:]] == _shown_as_text(url)  # sent on, as they are
    assert _get(gate, url, bob) == (403, REFUSED)
    assert _get(gate, url, alice) == (200, b"picture")


def test_with_oidc_sign_in_a_url_shown_as_text_under_another_browser_key_is_not_that_keys(shared_oidc):
    # one user, two browser keys: the URL named under one key and shown back as text under the other
    gate = MediaGate(_streamlit)
    url = f"/media/{PICTURE}.png"
    owner, other = ({"Cookie": f"{BROWSER_KEY_COOKIE}={letter * 43}"} for letter in "AB")
    _stream(gate, [_pictures(url)], owner)
    _stream(gate, _shown_as_text(url), other)
    assert _get(gate, url, other) == (403, REFUSED)
    assert _get(gate, url, owner) == (200, b"picture")


def test_a_message_that_does_not_parse_records_nothing(shared_proxy):
    url = f"/media/{PICTURE}.png"
    truncated = _pictures(url)[:-3]
    for frame in (truncated, b"\x0a\xff\xff" + url.encode(), url, url.encode()):
        assert sent_media_ids(frame) == [] and sent_media(frame) == ([], [], []), frame
    gate = MediaGate(_streamlit)
    alice = _through_proxy(shared_proxy, "alice")
    shown = _stream(gate, [truncated, url], alice)
    assert [message.get("bytes") or message.get("text") for message in shown[1:]] == [truncated, url]
    assert _get(gate, url, alice) == (403, REFUSED)  # refused: fail closed


def test_the_media_fields_are_in_streamlits_wire_format():
    # streamlit.proto is pinned with Streamlit: an upgrade that drops, renames or retypes one fails here
    found = {}
    waiting = [ForwardMsg.DESCRIPTOR]
    while waiting:
        descriptor = waiting.pop()
        if descriptor.full_name not in found:
            found[descriptor.full_name] = descriptor
            waiting += [field.message_type for field in descriptor.fields if field.message_type]
    for name, field_name in MEDIA_FIELDS | {DEFERRED_FIELD}:
        field = found[name].fields_by_name[field_name]
        assert field.type == field.TYPE_STRING and not field.is_repeated, (name, field_name)
        assert name in MEDIA_BEARING, name  # reached without a map, so the gate's walk reaches it
    assert {"ForwardMsg", "Delta", "Element", "ImageList", "BackendOperationResponse"} <= MEDIA_BEARING
    assert not {"Markdown", "TextInput", "Exception", "NewSession", "PageInfo"} & MEDIA_BEARING
    for name, field_name in SESSION_FIELDS:
        field = found[name].fields_by_name[field_name]
        assert field.type == field.TYPE_STRING and not field.is_repeated, (name, field_name)
    assert SESSION_BEARING == {"ForwardMsg", "NewSession", "Initialize"}


def test_a_proxy_user_gets_the_media_sent_to_them_and_nobody_else_does(shared_proxy):
    gate = MediaGate(_streamlit)
    alice, bob = _through_proxy(shared_proxy, "alice"), _through_proxy(shared_proxy, "bob")
    assert _get(gate, f"/media/{PICTURE}.png", alice) == (403, REFUSED)  # not sent yet
    frames = [_pictures(f"/media/{PICTURE}.png"), _download(f"/media/{REPORT}.pdf")]
    assert [message.get("bytes") for message in _stream(gate, frames, alice)[1:]] == frames
    _stream(gate, [_deferred(f"/media/{OTHER}.zip")], bob)
    assert _get(gate, f"/media/{PICTURE}.png", alice) == (200, b"picture")  # from any of Alice's browsers
    assert _get(gate, f"/media/{OTHER}.zip", bob) == (200, b"picture")
    for path in (f"/media/{PICTURE}.png", f"/media/{REPORT}.pdf"):
        assert _get(gate, path, bob) == (403, REFUSED)
    assert _get(gate, f"/media/{OTHER}.zip", alice) == (403, REFUSED)
    assert _get(gate, f"/media/x/{PICTURE}.png", alice)[0] == 403  # a folder: not an id Streamlit has
    # the media of a websocket nobody is believed for are nobody's
    _stream(gate, [_pictures(f"/media/{OTHER}.png")], {shared_proxy.user_headers[0]: "alice"})
    assert _get(gate, f"/media/{OTHER}.png", alice) == (403, REFUSED)


def test_a_download_made_on_a_click_is_made_only_for_an_owner_it_was_offered_to(shared_proxy):
    # Bob learnt the placeholder id of Alice's report button (a browser's network log she sent to support, say) and
    # clicks it from his own page: Streamlit would make her report for his session and send him its URL
    gate = MediaGate(_making_on_click)
    alice, bob = _through_proxy(shared_proxy, "alice"), _through_proxy(shared_proxy, "bob")
    _stream(gate, [_download("", made_on_click=DEFERRED)], alice)
    answered = _stream(gate, [], bob, named=[_click(DEFERRED)])
    assert [message["type"] for message in answered] == ["websocket.accept"]  # Streamlit was not asked
    assert _get(gate, f"/media/{OTHER}.pdf", bob) == (403, REFUSED)
    answered = _stream(gate, [], alice, named=[_click(DEFERRED)])  # from any of her browsers
    assert sent_media_ids(answered[-1]["bytes"]) == [OTHER]
    assert _get(gate, f"/media/{OTHER}.pdf", alice) == (200, b"picture")


#: The types of a browser's ``BackMsg`` in Streamlit 1.67 that the gate passes on, each with why (the others are
#: :data:`DROPPED_BACKMSGS`).
PASSED_BACKMSGS = {
    "rerun_script": "a run of the page: every widget's change",
    "stop_script": "the session's own run stopped",
    "file_urls_request": "the URLs of the session's own uploads",
    "app_heartbeat": "keeps the session's websocket open",
    "backend_operation_request": "a click on a download made on the click (checked by its own rule)",
}


def _backmsgs() -> dict[str, bytes]:
    """One message of each ``BackMsg`` type a browser can send, as bytes."""
    messages = {}
    for field in BackMsg.DESCRIPTOR.oneofs_by_name["type"].fields:
        message = BackMsg()
        if field.message_type is None:
            setattr(message, field.name, True)
        else:
            getattr(message, field.name).SetInParent()
        messages[field.name] = message.SerializeToString()
    messages["rerun_script"] = BackMsg(rerun_script={"query_string": "visit=1", "page_name": "history"}
                                       ).SerializeToString()
    messages["file_urls_request"] = BackMsg(file_urls_request={"request_id": "u1", "file_names": ["mole.png"]}
                                            ).SerializeToString()
    messages["backend_operation_request"] = _click(DEFERRED)
    return messages


def test_every_type_of_a_browsers_message_is_either_dropped_or_passed_on_decided():
    # a Streamlit upgrade that adds a type fails here until it is decided
    assert {field.name for field in BackMsg.DESCRIPTOR.oneofs_by_name["type"].fields} == set(DROPPED_BACKMSGS) | set(
        PASSED_BACKMSGS)
    assert not set(DROPPED_BACKMSGS) & set(PASSED_BACKMSGS)
    assert {"clear_cache", "load_git_info", "set_run_on_save", "debug_shutdown_runtime"} <= set(DROPPED_BACKMSGS)


@pytest.mark.parametrize("owned", [True, False])
def test_messages_acting_on_the_whole_server_are_dropped_and_the_others_passed_on_unchanged(shared_proxy, owned):
    gate = MediaGate(_streamlit)
    headers = _through_proxy(shared_proxy, "alice") if owned else {}  # without the proxy: no owner
    _stream(gate, [_download("", made_on_click=DEFERRED)], headers)
    messages = _backmsgs()
    undecodable = b"\xff\xff\xff"  # Streamlit closes the websocket (1002) and acts on nothing
    named = [*messages.values(), undecodable, "text"]
    shown_back = [message.get("bytes") or message.get("text") for message in _stream(gate, [], headers,
                                                                                       named=named)[1:]]
    clicks = [messages["backend_operation_request"]] if owned else []  # nothing is offered to nobody
    assert shown_back == [payload for kind, payload in messages.items() if kind in PASSED_BACKMSGS
                          and kind != "backend_operation_request"] + clicks + [undecodable, "text"]


def test_a_browser_of_a_server_with_invalid_settings_cannot_clear_its_caches(monkeypatch):
    with pytest.raises(SettingsError):
        _settings(monkeypatch, MOLESEG_IDENTITY="none")
    try:
        messages = _backmsgs()
        shown_back = _stream(MediaGate(_streamlit), [], {}, named=[messages["clear_cache"], messages["app_heartbeat"]])
        assert [message.get("bytes") for message in shown_back[1:]] == [messages["app_heartbeat"]]
    finally:
        load_settings.cache_clear()


def test_the_server_never_turns_on_streamlits_debug_messages(shared_proxy):
    # Streamlit acts on debug_disconnect_websocket and debug_shutdown_runtime only with global.developmentMode (on
    # by default only for a Streamlit not installed as a package) or global.e2eTest: moleseg serve sets neither
    config = tomllib.loads((APP_FILE.parent / ".streamlit" / "config.toml").read_text())
    assert config["server"] and "global" not in config
    flags = shared_proxy.streamlit_flags()
    assert flags and not [flag for flag in flags if flag.startswith("--global.")]
    assert streamlit.config.get_option("global.developmentMode") is False
    assert streamlit.config.get_option("global.e2eTest") is False


def test_media_needs_the_proxy_on_a_shared_server(shared_proxy):
    gate = MediaGate(_streamlit)
    user = shared_proxy.user_headers[0]
    through_proxy = _through_proxy(shared_proxy, "alice")
    _stream(gate, [_pictures(f"/media/{PICTURE}.jpg")], through_proxy)
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
    _stream(gate, [_pictures(f"/media/{PICTURE}.jpg")], through_proxy, client="::1")
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
    accepted = _stream(gate, [_pictures(f"/media/{PICTURE}.png")], browser)[0]
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
    cookie = _set_cookie(_stream(gate, [_download(f"/media/{REPORT}.pdf")], {})[0])
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
        clear = _backmsgs()["clear_cache"]  # one user: the menu's own "Clear cache" clears only theirs
        assert _stream(MediaGate(_streamlit), [], {}, named=[clear])[1]["bytes"] == clear
        resume = f"streamlit, xsrf-token, {ALICES_SESSION}"  # Streamlit's own check of its one user's sessions
        assert _handshake(MediaGate(_streamlit), {}, resume)[0] == [resume.encode()]
        assert _get(MediaGate(_streamlit), f"/_stcore/upload_file/{ALICES_SESSION}/f", {}, method="PUT")[0] == 200
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


def test_the_memory_of_sessions_given_keeps_the_media_bounds():
    sent = SentMedia(owners=2, ids_per_owner=2)
    sent.give_sessions("alice", ["s1", "s2"])
    sent.give_sessions("alice", ["s3"])  # past ids_per_owner: s1 forgotten
    assert [sent.was_given_session("alice", session) for session in ("s1", "s2", "s3")] == [False, True, True]
    sent.give_sessions("bob", ["s4"])
    sent.give_sessions("carol", ["s5"])  # past owners: Alice, given one longest ago, forgotten
    given = [("alice", "s3"), ("bob", "s4"), ("carol", "s5"), ("bob", "s5")]
    assert [sent.was_given_session(*pair) for pair in given] == [False, True, True, False]


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
        _stream(gate, [_pictures(f"/media/{PICTURE}.png")], alice)
        assert _get(gate, f"{base}/media/{PICTURE}.png", alice) == (200, b"picture")
        assert _get(gate, f"{base}/media/{PICTURE}.png", {}) == (403, REFUSED)
        # behind a root_path that the server was told of, Streamlit routes the path less it
        for headers, status in ((alice, 200), ({}, 403)):
            assert _get(gate, f"/clinic{base}/media/{PICTURE}.png", headers, root_path="/clinic")[0] == status
    # under a base path /media/ is no route of Streamlit's (its page answers), and its media route is gated
    gate = MediaGate(_streamlit, base_url_path="moles")
    assert _get(gate, f"/media/{PICTURE}.png", {}) == (200, b"picture")
    assert _get(gate, f"/moles/media/{PICTURE}.png", _through_proxy(shared_proxy, "bob")) == (403, REFUSED)


def test_a_url_the_browser_named_is_not_made_its_own_even_in_a_media_field(shared_proxy):
    # defence in depth: should a page hand a URL it was given to a media field (st.set_page_config passes on a
    # page icon it cannot open), what the owner's browser named first is still not theirs. Streamlit itself sends
    # a browser back the page name and page hash its rerun message gives (new_session): Bob, who holds Alice's
    # URL, names it there (or types it as a lesion identifier, or uploads a file named so)
    gate = MediaGate(_streamlit)
    alice, bob, carol = (_through_proxy(shared_proxy, user) for user in ("alice", "bob", "carol"))
    _stream(gate, [_pictures(f"/media/{PICTURE}.png"), _download(f"/media/{REPORT}.pdf")], alice)
    shown = _stream(gate, [], bob, named=[b"\x12\x2b/media/" + PICTURE.encode() + b".png", f"/media/{REPORT}.pdf"])
    assert [message.get("bytes") or message.get("text") for message in shown[1:]] == [
        b"\x12\x2b/media/" + PICTURE.encode() + b".png", f"/media/{REPORT}.pdf"]
    _stream(gate, [_pictures(f"/media/{PICTURE}.png"), _download(f"/media/{REPORT}.pdf")], bob)  # later
    for media in (f"{PICTURE}.png", f"{REPORT}.pdf"):
        assert _get(gate, f"/media/{media}", bob) == (403, REFUSED)
    # an upload's file name, in a request body whose chunks split the URL
    url = f"/media/{PICTURE}.png".encode()
    chunks = [{"type": "http.request", "body": b"filename=" + url[:20], "more_body": True},
              {"type": "http.request", "body": url[20:], "more_body": False}]
    _stream(gate, [_new_session("s")], carol)  # Carol's page, into whose session she uploads
    _call(gate, {"type": "http", "path": "/_stcore/upload_file/s/f", "method": "PUT"}, carol, "127.0.0.1", chunks)
    _stream(gate, [_pictures(url.decode())], carol)
    assert _get(gate, f"/media/{PICTURE}.png", carol) == (403, REFUSED)
    assert _get(gate, f"/media/{PICTURE}.png", alice) == (200, b"picture")  # sent to Alice: still hers


def test_a_url_the_browser_named_percent_encoded_is_not_made_its_own_either(shared_proxy):
    # a ?visit= link's text, which Streamlit reads from the rerun message's query string percent-decoded: Bob's
    # browser, sent to /history?visit=%2Fmedia%2F<Alice's id>.png, names no "/media/<id>" in its bytes
    gate = MediaGate(_streamlit)
    alice, bob = _through_proxy(shared_proxy, "alice"), _through_proxy(shared_proxy, "bob")
    _stream(gate, [_pictures(f"/media/{PICTURE}.png")], alice)
    named = b"\x0a\x40visit=%2Fmedia%2F%30" + PICTURE[1:].encode() + b".png"
    _stream(gate, [], bob, named=[named])
    _stream(gate, [_pictures(f"/media/{PICTURE}.png")], bob)
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
    _stream(gate, [_new_session("s")], _through_proxy(shared_proxy, "carol"))
    carol = {**_through_proxy(shared_proxy, "carol"), "Content-Type": content_type}
    sent = _call(gate, {"type": "http", "path": "/_stcore/upload_file/s/f", "method": "PUT"}, carol, "127.0.0.1",
                 [{"type": "http.request", "body": body, "more_body": False}])
    assert sent[0]["status"] == 400 and b"picture" not in b"".join(message.get("body", b"") for message in sent)
    for charset in ("utf-8", "UTF-8", "us-ascii", "latin-1"):  # read as bytes are: passes
        plain = {**carol, "Content-Type": f"multipart/form-data; boundary=b; charset={charset}"}
        assert _call(gate, {"type": "http", "path": "/_stcore/upload_file/s/f"}, plain, "127.0.0.1")[0]["status"] == 200


#: Streamlit calls whose media come in fields the gate does not read (refused on a shared server): ``st.audio``,
#: ``st.video`` (and its subtitles), ``st.iframe`` of a file, ``st.pdf``.
UNREAD_MEDIA_CALLS = frozenset({"audio", "video", "iframe", "pdf"})


def _unread_media_calls(source: str) -> list[str]:
    """The calls of ``source`` that may be one of :data:`UNREAD_MEDIA_CALLS` (on ``st`` or a container; ``pdf``
    only on ``st``, as other objects of the app have a ``pdf`` method)."""
    return [node.func.attr for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in UNREAD_MEDIA_CALLS
            and (node.func.attr != "pdf" or isinstance(node.func.value, ast.Name) and node.func.value.id == "st")]


def test_the_app_shows_media_only_by_streamlit_calls_whose_fields_the_gate_reads():
    # a page that starts to use one of them must add its field to MEDIA_FIELDS (its media are refused till then)
    assert _unread_media_calls("st.video(b'x')\ncolumn.audio(b'x')\nst.pdf(b'x')\ncomparison.pdf(a, b)") == [
        "video", "audio", "pdf"]
    root = Path(__file__).resolve().parents[1]
    files = [root / "app.py", *(root / "app_pages").glob("*.py"), *(root / "moleseg" / "app").glob("*.py")]
    assert len(files) > 20
    assert {path.name: calls for path in files if (calls := _unread_media_calls(path.read_text()))} == {}


def test_streamlits_metrics_are_for_an_administrator_the_proxy_names(shared_proxy, monkeypatch):
    from moleseg.app.mediagate import METRICS_REFUSED

    monkeypatch.setenv("MOLESEG_ADMIN_USERS", "carol")
    load_settings.cache_clear()
    settings = load_settings()
    gate = MediaGate(_streamlit)
    bob, carol = _through_proxy(settings, "bob"), _through_proxy(settings, "carol")
    for path in ("/_stcore/metrics", "/_stcore/metrics/", "//_stcore//metrics"):
        assert _get(gate, path, bob) == (403, METRICS_REFUSED), path  # sessions, caches: not a user's to read
        assert _get(gate, path, {}) == (403, METRICS_REFUSED), path  # not through the proxy
        assert _get(gate, path, carol) == (200, b"picture"), path
    assert _get(gate, "/_stcore/health", bob) == (200, b"picture")  # the rest of Streamlit's routes pass
    assert _get(gate, "/_stcore/metricsx", bob) == (200, b"picture")
    # under a base path, and behind a root_path the server was told of, as Streamlit routes them
    based = MediaGate(_streamlit, base_url_path="moles")
    assert _get(based, "/moles/_stcore/metrics", bob) == (403, METRICS_REFUSED)
    assert _get(based, "/clinic/moles/_stcore/metrics", bob, root_path="/clinic") == (403, METRICS_REFUSED)
    assert _get(based, "/moles/_stcore/metrics", carol) == (200, b"picture")


def test_with_oidc_sign_in_and_in_personal_mode_the_metrics_go_to_nobody_and_to_the_one_user(shared_oidc, monkeypatch):
    from moleseg.app.mediagate import METRICS_REFUSED

    gate = MediaGate(_streamlit)
    assert _get(gate, "/_stcore/metrics", {"Cookie": f"{BROWSER_KEY_COOKIE}={'A' * 43}"}) == (403, METRICS_REFUSED)
    monkeypatch.setenv("MOLESEG_MODE", "personal")
    load_settings.cache_clear()
    assert _get(MediaGate(_streamlit), "/_stcore/metrics", {}) == (200, b"picture")


def _handshake(gate: MediaGate, headers: dict[str, str], protocols: str, frames: list[bytes] = ()
               ) -> tuple[list[bytes], list[str]]:
    """The ``Sec-WebSocket-Protocol`` headers and ``subprotocols`` that Streamlit (:func:`_streamlit`, which notes
    the scope it gets in the scope's ``seen``) gets for a websocket whose browser offered ``protocols`` (split by
    the ASGI server as uvicorn splits them), over which it sends ``frames``."""
    seen = []
    scope = {"type": "websocket", "path": "/_stcore/stream", "scheme": "ws", "frames": list(frames), "seen": seen,
             "subprotocols": [entry.strip() for entry in protocols.split(",")]}
    _call(gate, scope, {**headers, "Sec-WebSocket-Protocol": protocols}, "127.0.0.1")
    [scope] = seen
    return [value for name, value in scope["headers"] if name == b"sec-websocket-protocol"], scope["subprotocols"]


ALICES_SESSION, BOBS_SESSION = "7ff0623d-45db-448d-a1fd-f5a3fa3a9a9a", "559101a7-7333-4db1-aa53-74f3ad71f716"


def test_a_websocket_naming_a_session_not_sent_to_its_owner_goes_on_without_it(shared_proxy):
    # Bob read the id of Alice's session (an upload's URL in a proxy's access log, a browser's saved network log):
    # Streamlit would hand it to him, as the user_info it compares is everybody's with proxy-header
    gate = MediaGate(_streamlit)
    alice, bob = _through_proxy(shared_proxy, "alice"), _through_proxy(shared_proxy, "bob")
    assert _handshake(gate, alice, "streamlit", [_new_session(ALICES_SESSION)]) == ([b"streamlit"], ["streamlit"])
    _handshake(gate, bob, "streamlit", [_new_session(BOBS_SESSION)])
    for protocols, kept in ((f"streamlit, xsrf-token, {ALICES_SESSION}", b"streamlit, xsrf-token"),
                            (f"streamlit,  , {ALICES_SESSION},more", b"streamlit,  "),
                            (f"streamlit,,{ALICES_SESSION}", b"streamlit,")):
        assert _handshake(gate, bob, protocols) == ([kept], ["streamlit", kept.split(b",")[1].strip().decode()])
        assert _handshake(gate, {}, protocols)[0] == [kept]  # not through the proxy: nobody's session
        # Alice's browser after a network blip, and Bob's naming his own: as they were
        assert _handshake(gate, alice, protocols)[0] == [protocols.encode()]
    own = f"streamlit, xsrf-token, {BOBS_SESSION}"
    assert _handshake(gate, bob, own) == ([own.encode()], ["streamlit", "xsrf-token", BOBS_SESSION])
    for protocols in ("streamlit", "streamlit, xsrf-token", "streamlit, xsrf-token, "):  # names no session
        assert _handshake(gate, bob, protocols)[0] == [protocols.encode()]


def test_an_upload_into_a_session_not_sent_to_its_owner_is_refused(shared_proxy):
    # Bob stores a file into Alice's session, or replaces one she uploaded under its id, or deletes it
    gate, based = MediaGate(_streamlit), MediaGate(_streamlit, base_url_path="moles")
    alice, bob = _through_proxy(shared_proxy, "alice"), _through_proxy(shared_proxy, "bob")
    for each in (gate, based):
        _stream(each, [_new_session(ALICES_SESSION)], alice)

    def upload(gate: MediaGate, path: str, headers: dict[str, str], method: str = "PUT", **scope) -> tuple[int, bytes]:
        return _get(gate, path, headers, method=method, **scope)

    route = f"/_stcore/upload_file/{ALICES_SESSION}/f1"
    for method in ("PUT", "DELETE"):
        assert upload(gate, route, alice, method) == (200, b"picture")
        for path in (route, "/" + route.replace("/", "//"), route + "/"):
            assert upload(gate, path, bob, method) == (403, SESSION_REFUSED), (method, path)
            assert upload(gate, path, {}, method) == (403, SESSION_REFUSED), (method, path)
    assert upload(gate, route, bob, "OPTIONS") == (200, b"picture")  # acts on no session
    assert upload(gate, route.replace("upload_file", "upload_files"), bob) == (200, b"picture")  # not the route
    # under a base path, and behind a root_path the server was told of, as Streamlit routes them
    assert upload(based, "/moles" + route, bob) == (403, SESSION_REFUSED)
    assert upload(based, "/clinic/moles" + route, bob, root_path="/clinic") == (403, SESSION_REFUSED)
    assert upload(based, "/clinic/moles" + route, alice, root_path="/clinic") == (200, b"picture")
    assert upload(based, "/moles" + route, alice) == (200, b"picture")


def test_with_oidc_sign_in_a_session_and_its_uploads_are_the_browsers_it_was_sent_to(shared_oidc):
    gate = MediaGate(_streamlit)
    mine, other = ({"Cookie": f"{BROWSER_KEY_COOKIE}={letter * 43}"} for letter in "AB")
    _handshake(gate, mine, "streamlit", [_new_session(ALICES_SESSION)])
    resume = f"streamlit, xsrf-token, {ALICES_SESSION}"
    assert _handshake(gate, mine, resume)[0] == [resume.encode()]
    assert _handshake(gate, other, resume)[0] == [b"streamlit, xsrf-token"]
    route = f"/_stcore/upload_file/{ALICES_SESSION}/f1"
    assert _get(gate, route, mine, method="PUT") == (200, b"picture")
    assert _get(gate, route, other, method="PUT") == (403, SESSION_REFUSED)


def test_metrics_and_uploads_are_gated_under_a_base_path_with_a_doubled_slash(shared_proxy, monkeypatch):
    # server.baseUrlPath "clinic//moles": Streamlit keeps the inner "//" in its routes (url_util.make_url_path), and
    # the gate reads a request's path with each run of slashes made one, so its own routes must be read alike
    from moleseg.app.mediagate import METRICS_REFUSED
    from streamlit.url_util import make_url_path

    monkeypatch.setenv("MOLESEG_ADMIN_USERS", "carol")
    load_settings.cache_clear()
    settings = load_settings()
    gate = MediaGate(_streamlit, base_url_path="clinic//moles")
    alice, bob, carol = (_through_proxy(settings, user) for user in ("alice", "bob", "carol"))
    _stream(gate, [_new_session(ALICES_SESSION)], alice)
    metrics = make_url_path("clinic//moles", "_stcore/metrics")
    upload = make_url_path("clinic//moles", f"_stcore/upload_file/{ALICES_SESSION}/f1")
    assert "//" in metrics and "//" in upload  # as Streamlit routes them
    assert _get(gate, metrics, bob) == (403, METRICS_REFUSED)
    assert _get(gate, metrics, carol) == (200, b"picture")
    assert _get(gate, upload, bob, method="PUT") == (403, SESSION_REFUSED)
    assert _get(gate, upload, alice, method="PUT") == (200, b"picture")



def test_an_open_page_whose_session_the_bounds_forgot_can_upload_again_after_its_next_message(shared_oidc):
    # with streamlit-oidc anyone can make the gate new owners (a websocket without the gate's cookie): MEDIA_OWNERS
    # of them push out the session of Alice's page, open but idle; choosing a file, her page first asks Streamlit
    # for its upload's URL over that websocket (file_urls_request), then PUTs the file into her session
    gate = MediaGate(_streamlit)
    gate.sent = SentMedia(owners=1)
    alice = {"Cookie": f"{BROWSER_KEY_COOKIE}={'A' * 43}"}
    route = f"/_stcore/upload_file/{ALICES_SESSION}/f1"
    forgotten = []

    async def streamlit(scope, receive, send):
        await send({"type": "websocket.accept"})
        for frame in scope["frames"]:
            await send({"type": "websocket.send", "bytes": frame})
        gate.sent.give_sessions("browser:" + "M" * 43, [BOBS_SESSION])  # someone else's new page
        forgotten.append(not gate.sent.was_given_session("browser:" + "A" * 43, ALICES_SESSION))
        while (await receive())["type"] == "websocket.receive":
            pass

    asking = BackMsg(file_urls_request={"request_id": "u1", "file_names": ["mole.png"]}).SerializeToString()

    def page(headers: dict[str, str], frames: list[bytes]) -> None:
        gate.app = streamlit
        _call(gate, {"type": "websocket", "path": "/_stcore/stream", "scheme": "ws", "frames": frames}, headers,
              "127.0.0.1", [{"type": "websocket.receive", "bytes": asking}])
        gate.app = _streamlit

    page(alice, [_new_session(ALICES_SESSION)])
    assert _get(gate, route, alice, method="PUT") == (200, b"picture")
    # after a network blip her page goes on with her session (no new one sent), then idles and asks again
    page({**alice, "Sec-WebSocket-Protocol": f"streamlit, xsrf-token, {ALICES_SESSION}"}, [])
    assert forgotten == [True, True]
    assert _get(gate, route, alice, method="PUT") == (200, b"picture")
    assert _get(gate, route, {"Cookie": f"{BROWSER_KEY_COOKIE}={'B' * 43}"}, method="PUT")[0] == 403


def test_an_upload_counts_for_its_content_length_or_else_for_the_largest_file_streamlit_takes():
    from moleseg.app.uploads import upload_length

    def scope(*headers: tuple[bytes, bytes]) -> dict:
        return {"type": "http", "method": "PUT", "path": "/_stcore/upload_file/s/f", "headers": list(headers)}

    largest = streamlit.config.get_option("server.maxUploadSize") * 1024 * 1024
    assert upload_length(scope((b"content-length", b"12345"))) == 12345
    assert upload_length(scope()) == largest  # a chunked body: any length up to Streamlit's cap
    assert upload_length(scope((b"content-length", b"12"), (b"transfer-encoding", b"chunked"))) == largest
    assert upload_length(scope((b"content-length", b"-5"))) == largest
    assert upload_length(scope((b"content-length", b"lots"))) == largest
