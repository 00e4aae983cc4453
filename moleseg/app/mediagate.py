"""The gate in front of Streamlit's media URLs (``/media/<id>``: the pictures and downloads a page shows), and of
the messages a browser sends that act on the whole server.

Streamlit serves them to whoever holds the URL, with no session or user check. On a shared server the gate lets a
media request through only when its *owner* was sent that URL by the app:

* it reads every message Streamlit sends down a websocket (the page's ``/_stcore/stream``, under any base path) as
  :mod:`moleseg.app.streamwire` does (:func:`sent_media`: only the fields that carry a URL Streamlit's media file
  manager made count, never text) and remembers for the websocket's owner (:class:`SentMedia`) the media ids it
  carries; a message that does not parse records nothing, so the pictures it names are refused (fail closed);
* a download made on the click is made only for an owner who was offered it: Streamlit makes the file of any session's
  button whose placeholder id (:data:`moleseg.app.streamwire.DEFERRED_FIELD`) a browser names, and sends that browser
  its URL, so the gate passes a browser's click (:func:`asked_deferred_file`) on to Streamlit only when that id was
  sent to its owner, and drops any other;
* Streamlit acts on a few messages from any browser (``BackMsg`` types, handled in ``AppSession.handle_backmsg`` with
  no check) that only its developer's menu sends, hidden here (``client.toolbarMode = "minimal"``): one clears every
  user's ``st.cache_resource`` (the server's analysis store, its task registry by which each user's share of tasks is
  counted, its loaded models), one tells the browser the names of the app folder's git repository and its changed
  files. The gate drops those (:data:`moleseg.app.streamwire.DROPPED_BACKMSGS`, each with why), from any browser of a
  shared server, whether or not it has an owner;
* a page's session (its ``st.session_state``: the files uploaded into it, the analyses in view, a typed identifier) is
  its owner's. Streamlit gives a websocket whichever session its handshake names (:func:`resumed_session`;
  ``WebsocketSessionManager.connect_session``), even one still open in another browser, when Streamlit's own
  ``user_info`` matches, which with ``proxy-header`` is the same for every user; the id travels in every upload's URL,
  so in a proxy's access log and a browser's saved network log. The gate remembers the session ids Streamlit sent each
  owner (:data:`moleseg.app.streamwire.SESSION_FIELDS`, in the bounds of the media ids) and takes any other out of the
  handshake (:func:`without_resumed_session`), so that Streamlit makes that browser a new session: a refusal would
  leave a browser whose id the gate forgot, or whose websocket has no owner, reconnecting in vain. An upload into a
  session not sent to its owner, or the removal of one (:data:`UPLOAD_ROUTE`), is refused with 403
  (:data:`SESSION_REFUSED`), and one that would take what the owner's sessions hold in memory past their share
  (:data:`moleseg.core.config.UPLOAD_BYTES_PER_USER`; Streamlit keeps any number of files a session is sent), counting
  the owner's uploads still on their way (sent at once, none is held yet) and the sessions they uploaded into while
  those hold files (whether or not the bounds still remember them as given), with 413 (:mod:`moleseg.app.uploads`);
* Streamlit's metrics (:data:`METRICS_ROUTE`: the number of sessions, their connections and time, each cached
  function's name, size and lookups), which it serves to anyone, go only to an administrator the proxy names
  (``admin_users`` with ``proxy-header``; with another identity the gate cannot tell who asks, so to nobody), else 403
  (:data:`METRICS_REFUSED`);
* as defence in depth (should a page ever hand text it was given to a media field, as ``st.set_page_config`` passes a
  page icon it cannot open), the ids the owner's browser named itself in a websocket message (as they are or
  percent-encoded: :func:`named_media_ids`) or a request body it sent (:func:`media_ids` over the raw bytes) are not
  believed for that owner, and a request in a charset that could hide one (:func:`readable_charset`) is refused with
  400;
* with ``identity = "proxy-header"`` the owner is the user :func:`moleseg.app.identity.resolve_user` believes from the
  request's headers and peer (the proxy's secret from a trusted peer), so a user's pictures pass in any of their
  browsers, and a request that does not come through the proxy has no owner and is refused as before; with any other
  identity of a shared server (``streamlit-oidc``) the owner is the browser, named by a random key in the gate's own
  cookie (:data:`BROWSER_KEY_COOKIE`), set on the response to any request that lacks it.

A websocket message from a browser that does not parse as a ``BackMsg`` (or a text one) is passed on as it is, as
for a click: Streamlit then closes that websocket (code 1002, or at once for text) and acts on nothing. Only
Streamlit's media route (``[/<server.baseUrlPath>]/media/``, after ``root_path``) is gated: its own fonts under
``/static/media/`` are not. A media request whose owner was not sent its id is refused with 403
(:data:`REFUSED`), and so is every media request while the server's settings are invalid (the pages say why).
Personal mode (one user) is let through unchecked.
"""

from __future__ import annotations

import codecs
import posixpath
import re
import secrets
from collections import OrderedDict
from collections.abc import Iterable

import streamlit as st
from python_multipart.multipart import parse_options_header
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moleseg.app.identity import LOOPBACK_PEERS, User, resolve_user
from moleseg.app.streamwire import (
    MEDIA_ID_DIGITS,
    MEDIA_SEGMENT,
    asked_deferred_file,
    browser_message,
    dropped_type,
    media_ids,
    named_media_ids,
    sent_media,
)
from moleseg.app.uploads import UPLOADS_FULL, holding_sessions, past_share, upload_length
from moleseg.core.config import MEDIA_IDS_PER_OWNER, MEDIA_OWNERS, UPLOAD_BYTES_PER_USER
from moleseg.core.settings import ServerSettings, SettingsError, load_settings

#: Streamlit's route of a browser's uploads into its session (``[/<server.baseUrlPath>]/_stcore/upload_file/
#: <session id>/<file id>``: ``PUT`` stores a file, or replaces one of the same id; ``DELETE`` removes it).
UPLOAD_ROUTE = "/_stcore/upload_file/"
#: The body of the refusal of an upload into a session that was not sent to its owner.
SESSION_REFUSED = b"This upload is for a page that was not opened by you; open the page again.\n"
#: The header of a websocket handshake whose entries Streamlit reads as the subprotocol, the XSRF token and the
#: session to go on with (``_parse_subprotocols``, ``starlette_websocket.py``).
SUBPROTOCOL_HEADER = b"sec-websocket-protocol"
#: Streamlit's metrics route (``[/<server.baseUrlPath>]/_stcore/metrics``, no sign-in of its own): how many sessions
#: the server has, their connections and time, each cached function's name, size and lookups.
METRICS_ROUTE = "/_stcore/metrics"
#: The body of the refusal of the metrics to anyone but an administrator the proxy names.
METRICS_REFUSED = b"The server's metrics are for the clinic's administrators.\n"
#: The body of a refusal (names no user, file or setting).
REFUSED = (b"This file is served only to a page that showed it to you, through the clinic's sign-in; open that page "
           b"again.\n")
#: Charsets (:func:`codecs.lookup` names) a request's ``Content-Type`` may name on a shared server: Starlette
#: decodes a multipart part's file name in it, and in these a media URL is the bytes :func:`media_ids` reads.
READABLE_CHARSETS = frozenset({"utf-8", "ascii", "iso8859-1"})
#: The body of the refusal of a request in another charset (only a hand-made client sends one).
UNREADABLE_CHARSET = b"This server reads requests in UTF-8 only.\n"
#: The gate's cookie naming a browser (with an identity other than the proxy's header).
BROWSER_KEY_COOKIE = "moleseg_media_key"
#: Random bytes of a browser key (``secrets.token_urlsafe``); a cookie of any other shape is no key.
BROWSER_KEY_BYTES = 32
_BROWSER_KEY_SHAPE = re.compile(r"[A-Za-z0-9_-]{%d}" % len(secrets.token_urlsafe(BROWSER_KEY_BYTES)))


class SentMedia:
    """The media ids sent to each owner, most recent last: at most ``owners`` owners (the one sent media longest
    ago is forgotten first) of at most ``ids_per_owner`` ids each (their oldest forgotten first); and the ids each
    owner's browser named itself (:meth:`note_named`), which a page sending them back does not make theirs; and,
    within the same bounds, the downloads made on the click offered to each owner (:meth:`offer`) and the sessions
    Streamlit gave each owner (:meth:`give_sessions`).

    Only the server's event loop uses it (every ASGI call of the gate and every ``send`` and ``receive`` it wraps
    run there), so it takes no lock.
    """

    def __init__(self, owners: int = MEDIA_OWNERS, ids_per_owner: int = MEDIA_IDS_PER_OWNER) -> None:
        self.owners = owners
        self.ids_per_owner = ids_per_owner
        self._ids: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()
        # None: the owner named more than ids_per_owner ids, and nothing sent to them is believed any more
        self._named: OrderedDict[str, set[str] | None] = OrderedDict()
        self._offered: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()
        self._sessions: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()

    def record(self, owner: str, media_ids: Iterable[str]) -> None:
        """Remember ``media_ids`` (read from the media fields of a message to ``owner``: :func:`sent_media`) as
        sent to ``owner`` (nothing changes when there are none), less those the owner's browser named itself
        (defence in depth: should a page ever put a URL it was given into a media field, that does not make it
        the owner's)."""
        named = self._named.get(owner, set())
        self._remember(self._ids, owner, [media_id for media_id in media_ids
                                          if named is not None and media_id not in named])

    def offer(self, owner: str, file_ids: Iterable[str]) -> None:
        """Remember the placeholder ids of downloads made on the click
        (:data:`moleseg.app.streamwire.DEFERRED_FIELD`) as offered to ``owner``, within the same bounds as the media
        ids."""
        self._remember(self._offered, owner, file_ids)

    def was_offered(self, owner: str, file_id: str) -> bool:
        """Whether the download made on the click under ``file_id`` was offered to ``owner`` and is still
        remembered."""
        return file_id in self._offered.get(owner, ())

    def give_sessions(self, owner: str, session_ids: Iterable[str]) -> None:
        """Remember the session ids Streamlit sent ``owner`` (:data:`moleseg.app.streamwire.SESSION_FIELDS`), within
        the same bounds as the media ids."""
        self._remember(self._sessions, owner, session_ids)

    def was_given_session(self, owner: str, session_id: str) -> bool:
        """Whether the session ``session_id`` was sent to ``owner`` and is still remembered."""
        return session_id in self._sessions.get(owner, ())

    def sessions_given(self, owner: str) -> list[str]:
        """The sessions sent to ``owner`` and still remembered (the only ones they may upload into)."""
        return list(self._sessions.get(owner, ()))

    def _remember(self, kept: OrderedDict[str, OrderedDict[str, None]], owner: str, values: Iterable[str]) -> None:
        """Add ``values`` to ``owner``'s in ``kept``, most recent last, within :attr:`ids_per_owner` and
        :attr:`owners` (the oldest forgotten first); nothing changes when there are none."""
        mine = None
        for value in values:
            if mine is None:
                mine = kept.pop(owner, None) or OrderedDict()
                kept[owner] = mine
            mine[value] = None
            mine.move_to_end(value)
            if len(mine) > self.ids_per_owner:
                mine.popitem(last=False)
        while len(kept) > self.owners:
            kept.popitem(last=False)

    def note_named(self, owner: str, media_ids: Iterable[str]) -> None:
        """Remember ``media_ids`` as named by ``owner``'s browser (in a message or upload it sent; Streamlit's
        own pages never send a media URL to the server), so that :meth:`record` does not believe them for
        ``owner``. An owner who names more than ``ids_per_owner`` is believed for no media sent from then on (so
        that naming many cannot push one out). At most ``owners`` owners are remembered, the latest to name one
        last."""
        media_ids = list(media_ids)
        if not media_ids:
            return
        named = self._named.pop(owner, set())
        if named is not None:
            named.update(media_ids)
            if len(named) > self.ids_per_owner:
                named = None
        self._named[owner] = named
        while len(self._named) > self.owners:
            self._named.popitem(last=False)

    def was_sent(self, owner: str, media_id: str) -> bool:
        """Whether ``media_id`` was sent to ``owner`` and is still remembered."""
        return media_id in self._ids.get(owner, ())




def readable_charset(headers: Headers) -> bool:
    """Whether the charset that a request's ``Content-Type`` names (read as Starlette reads it; none: UTF-8) is
    one of :data:`READABLE_CHARSETS` (a name Python does not know is read as Latin-1, as Starlette does)."""
    charset = parse_options_header(headers.get("content-type", ""))[1].get(b"charset", b"utf-8")
    try:
        return codecs.lookup(charset.decode("latin-1")).name in READABLE_CHARSETS
    except LookupError:
        return True


def resumed_session(scope: Scope) -> str | None:
    """The session id a websocket handshake names to go on with, as Streamlit reads it (the third entry of the
    first ``Sec-WebSocket-Protocol`` header, stripped; None when it is empty or missing)."""
    entries = [entry.strip() for entry in Headers(scope=scope).get(SUBPROTOCOL_HEADER.decode(), "").split(",")]
    return entries[2] if len(entries) >= 3 and entries[2] else None


def without_resumed_session(scope: Scope) -> Scope:
    """``scope`` whose ``Sec-WebSocket-Protocol`` headers (and ``subprotocols``, as the ASGI server split them)
    keep only their first two entries, the subprotocol and the XSRF token, exactly as they were: Streamlit then
    makes the browser a new session."""
    headers = [(name, b",".join(value.split(b",")[:2]) if name.lower() == SUBPROTOCOL_HEADER else value)
               for name, value in scope.get("headers", [])]
    return {**scope, "headers": headers, "subprotocols": list(scope.get("subprotocols", []))[:2]}


def uploaded_session(scope: Scope, prefix: str) -> str | None:
    """The session id a request to Streamlit's upload route (``prefix``: :data:`UPLOAD_ROUTE` under the base
    path) names, as Streamlit's router reads it (:func:`routed_path`; an ``OPTIONS`` request, which acts on no
    session, aside); None for any other request."""
    path = routed_path(scope) + "/"
    if scope.get("method") == "OPTIONS" or not path.startswith(prefix):
        return None
    return path[len(prefix):].split("/")[0]


def base_path(base_url_path: str) -> str:
    """The app's path under ``server.baseUrlPath`` (``/`` or ``/<base>``), as Streamlit makes its routes'."""
    return "/" + base_url_path.strip("/")


def routed_path(scope: Scope) -> str:
    """A request's path as Streamlit's router matches it: less ``root_path`` as Starlette strips it, each run of
    slashes one slash, no slash at its end."""
    path, root_path = scope["path"], scope.get("root_path", "")
    routed = path[len(root_path):] if root_path and path.startswith(root_path + "/") else path
    return re.sub("/+", "/", routed).rstrip("/") or "/"


def requested_media_id(scope: Scope, prefix: str) -> str | None:
    """The media id a request asks for, as Streamlit's router and media storage read it: None when the request is
    not for the media route (its path, less ``root_path`` as Starlette strips it, does not start with ``prefix``, as
    Streamlit's own ``/static/media/`` fonts do not); else the file name after ``prefix``, less its extension; ""
    when the rest holds a folder (no id of Streamlit's has one) or when only the path before stripping starts with
    ``prefix`` (refused, to be safe)."""
    path, root_path = scope["path"], scope.get("root_path", "")
    route_path = path[len(root_path):] if root_path and path.startswith(root_path + "/") else path
    if not route_path.startswith(prefix):
        return "" if path.startswith(prefix) else None
    name = route_path[len(prefix):]
    return "" if "/" in name else posixpath.splitext(name)[0]


class MediaGate:
    """ASGI middleware: on a shared server a request for Streamlit's media route (:func:`requested_media_id`)
    passes only when its owner was sent that id down a websocket and did not name it first, and a browser's message
    that acts on the whole server (:func:`dropped_type`) does not reach Streamlit (the module's docstring)."""

    def __init__(self, app: ASGIApp, base_url_path: str | None = None) -> None:
        """``base_url_path``: Streamlit's ``server.baseUrlPath`` (None: the server's option, read here as
        Streamlit reads it when it builds its routes)."""
        self.app = app
        self.sent = SentMedia()
        if base_url_path is None:
            base_url_path = str(st.get_option("server.baseUrlPath") or "")
        self.base_path = base_path(base_url_path)
        self.media_prefix = self.base_path.rstrip("/") + MEDIA_SEGMENT
        # read as a request's path is (routed_path: a base path's "//", which Streamlit's routes keep, made one)
        self.metrics_path = routed_path({"path": self.base_path.rstrip("/") + METRICS_ROUTE})
        self.upload_prefix = routed_path({"path": self.base_path.rstrip("/") + UPLOAD_ROUTE}) + "/"
        self.upload_bytes = UPLOAD_BYTES_PER_USER  # each owner's share of memory for uploaded files
        self.uploading: dict[str, int] = {}  # each owner's bytes of uploads on their way (upload_length), not held yet
        # the owner of each session an upload went into, while Streamlit holds its files (holding_sessions): counted
        # in their share even when self.sent, in its bounds, has forgotten that it was given to them
        self.uploaded_into: dict[str, str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            settings = load_settings()
        except SettingsError:  # the pages say why; no media is anyone's
            settings = None
        if scope["type"] not in ("http", "websocket") or (settings and not settings.shared):
            await self.app(scope, receive, send)
            return
        owner, new_key = _owner(scope, settings) if settings else (None, None)
        if new_key:
            send = _setting_cookie(send, _browser_key_cookie(new_key, scope, self.base_path))
        given: list[str] = []  # the session Streamlit last gave over this websocket
        receive = self._noting(receive, owner, given)
        if scope["type"] == "websocket":
            session_id = resumed_session(scope)
            if session_id and not (owner and self.sent.was_given_session(owner, session_id)):
                scope = without_resumed_session(scope)
            elif session_id:  # the owner's own, which Streamlit goes on with
                given.append(session_id)
            if owner:
                send = self._recording(send, owner, given)
        else:
            refusal = self._refusal(scope, owner, settings)
            if refusal is not None:
                status, body = refusal
                await PlainTextResponse(body, status_code=status)(scope, receive, send)
                return
            session_id = uploaded_session(scope, self.upload_prefix)
            if owner and session_id is not None and scope.get("method") == "PUT":
                await self._uploading(owner, session_id, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _uploading(self, owner: str, session_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass ``owner``'s upload into ``session_id`` on to Streamlit, counted in their share of memory
        (:meth:`_refusal`) for its :func:`upload_length` until Streamlit holds it (or refused it, or the browser went
        away), then by what the session holds (:attr:`uploaded_into`)."""
        length = upload_length(scope)
        self.uploading[owner] = self.uploading.get(owner, 0) + length
        try:
            await self.app(scope, receive, send)
        finally:
            self.uploaded_into[session_id] = owner
            left = self.uploading.pop(owner) - length
            if left > 0:
                self.uploading[owner] = left

    def _upload_sessions(self, owner: str) -> set[str]:
        """The sessions whose uploads count in ``owner``'s share: those given to them that the gate remembers, and
        those they uploaded into that still hold files (the others forgotten here)."""
        holding = holding_sessions(self.uploaded_into)
        self.uploaded_into = {session: held_by for session, held_by in self.uploaded_into.items() if session in holding}
        return {*self.sent.sessions_given(owner), *(session for session, held_by in self.uploaded_into.items()
                                                    if held_by == owner)}

    def _refusal(self, scope: Scope, owner: str | None, settings: ServerSettings | None) -> tuple[int, bytes] | None:
        """The status and body refusing an HTTP request of a shared server (None: it passes): a charset hiding a URL
        from :meth:`_noting`; media not sent to ``owner``; metrics but to an admin; an upload into another's session,
        or past its owner's share of memory with their uploads on their way (:mod:`moleseg.app.uploads`)."""
        if owner and not readable_charset(Headers(scope=scope)):
            return 400, UNREADABLE_CHARSET
        media_id = requested_media_id(scope, self.media_prefix)
        if media_id is not None and not (owner and self.sent.was_sent(owner, media_id)):
            return 403, REFUSED
        if routed_path(scope) == self.metrics_path and not (settings and _named_admin(scope, settings)):
            return 403, METRICS_REFUSED
        session_id = uploaded_session(scope, self.upload_prefix)
        if session_id is not None and not (owner and self.sent.was_given_session(owner, session_id)):
            return 403, SESSION_REFUSED
        if session_id is not None and scope.get("method") == "PUT" and past_share(
                scope, self._upload_sessions(owner or ""), self.upload_bytes, self.uploading.get(owner or "", 0)):
            return 413, UPLOADS_FULL
        return None

    def _recording(self, send: Send, owner: str, given: list[str]) -> Send:
        """``send`` that first remembers for ``owner`` the media ids each websocket message carries in its media
        fields, the downloads made on the click it offers and the session it gives (:func:`sent_media`; the last
        kept in ``given``)."""

        async def recording_send(message: Message) -> None:
            if message["type"] == "websocket.send" and message.get("bytes"):
                ids, offered, sessions = sent_media(message["bytes"])
                self.sent.record(owner, ids)
                self.sent.offer(owner, offered)
                self.sent.give_sessions(owner, sessions)
                given[:] = sessions[-1:] or given  # the last only
            await send(message)

        return recording_send

    def _noting(self, receive: Receive, owner: str | None, given: list[str]) -> Receive:
        """``receive`` that first notes the media ids that ``owner``'s browser names (:meth:`SentMedia.note_named`)
        in each websocket message or request body it sends (a body's chunks read as one), and drops a websocket
        message of a type that acts on the whole server (:func:`dropped_type`) or asking for a download made on the
        click that was not offered to ``owner`` (:func:`asked_deferred_file`; the browser's request times out;
        without an owner, every such click). Each such message gives ``owner`` again the session Streamlit last gave
        this websocket (``given``), which the bounds may have forgotten while the page was idle: a page asks for
        its upload's URL (``file_urls_request``) before it uploads."""
        carried = b""

        async def noting_receive() -> Message:
            nonlocal carried
            message = await receive()
            while message["type"] == "websocket.receive":
                payload = message.get("bytes") or message.get("text") or b""
                if owner:
                    self.sent.note_named(owner, named_media_ids(payload))
                    self.sent.give_sessions(owner, given)
                parsed = browser_message(payload)
                file_id = asked_deferred_file(parsed)
                if dropped_type(parsed) is None and (
                        file_id is None or (owner is not None and self.sent.was_offered(owner, file_id))):
                    return message
                message = await receive()
            if owner and message["type"] == "http.request" and message.get("body"):
                body = carried + message["body"]
                self.sent.note_named(owner, media_ids(body))  # Starlette percent-decodes no multipart file name
                carried = body[-(len(MEDIA_SEGMENT) + MEDIA_ID_DIGITS - 1):]  # a URL split between chunks
            return message

        return noting_receive


def _owner(scope: Scope, settings: ServerSettings) -> tuple[str | None, str | None]:
    """The owner of a request of a shared server (None: nobody is believed) and, for a browser without a key, the
    new key the response gives it."""
    if settings.identity == "proxy-header":
        user = _believed_user(scope, settings)
        return (f"user:{user.name}" if user else None), None
    key = HTTPConnection(scope).cookies.get(BROWSER_KEY_COOKIE, "")
    if _BROWSER_KEY_SHAPE.fullmatch(key):
        return f"browser:{key}", None
    key = secrets.token_urlsafe(BROWSER_KEY_BYTES)
    return f"browser:{key}", key


def _named_admin(scope: Scope, settings: ServerSettings) -> bool:
    """Whether the request comes from an administrator (``admin_users``) the proxy names (``proxy-header``; with
    another identity the gate cannot tell who a browser is)."""
    user = _believed_user(scope, settings) if settings.identity == "proxy-header" else None
    return bool(user and user.admin)


def _believed_user(scope: Scope, settings: ServerSettings) -> User | None:
    client = scope.get("client")
    peer = client[0] if client else None
    # as st.context.ip_address reports it to the pages: None for a loopback peer (either address), whose meaning
    # resolve_user knows
    ip_address = None if peer in LOOPBACK_PEERS else peer
    user = resolve_user(settings, Headers(scope=scope), ip_address)
    return user if isinstance(user, User) else None


def _browser_key_cookie(key: str, scope: Scope, path: str) -> str:
    """The ``Set-Cookie`` value giving a browser ``key``: for the app's ``path`` (:func:`base_path`) only, out of
    the page's scripts' reach, with the browser's own requests to the app (``SameSite=Lax``: also when a link on
    another site, or the sign-in's return from the identity provider, opens the app, which ``Strict`` would not
    send it with, so that the gate would give that browser a new key and the pictures of its other open tabs would
    be refused), and over HTTPS only when the request came that way (``X-Forwarded-Proto`` of a TLS proxy: a
    forged one can only keep the forger's own browser from sending the key over plain HTTP)."""
    forwarded = Headers(scope=scope).get("x-forwarded-proto", "").split(",")[0].strip().lower()
    secure = scope.get("scheme") in ("https", "wss") or forwarded == "https"
    return f"{BROWSER_KEY_COOKIE}={key}; Path={path}; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")


def _setting_cookie(send: Send, cookie: str) -> Send:
    """``send`` that adds ``Set-Cookie: cookie`` to the response's head (an HTTP response's or a websocket's
    acceptance)."""

    async def cookie_send(message: Message) -> None:
        if message["type"] in ("http.response.start", "websocket.accept"):
            message.setdefault("headers", [])
            MutableHeaders(scope=message).append("set-cookie", cookie)
        await send(message)

    return cookie_send
