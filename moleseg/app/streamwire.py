"""Streamlit's wire format as the media gate (:mod:`moleseg.app.mediagate`) reads it: what a message Streamlit sends
down a websocket gives a browser, and what a browser's message names or asks for. It decides nothing: which owner
may have what is the gate's.

* A message Streamlit sends is parsed with Streamlit's own protobuf class (``ForwardMsg``), and the media ids are
  read, by protobuf reflection (:func:`sent_media`), only from the fields that carry a URL Streamlit's media file
  manager made (:data:`MEDIA_FIELDS`: the pictures, the download buttons and the URLs of the downloads made on a
  click), with the placeholder ids of the downloads made on the click it offers (:data:`DEFERRED_FIELD`) and the
  session ids it gives (:data:`SESSION_FIELDS`). Text (a markdown body, a caption, a label, a widget's value, a
  page name, a query string, an exception's message) never counts, so a page that shows a URL back as text (a
  lesion identifier, a DICOM patient ID copied into it, a file name) does not make it the viewer's, under either
  identity. A message that does not parse, or a field whose value is not a whole media URL
  (:data:`SENT_MEDIA_URL`), gives nothing: the gate then refuses the pictures it names (fail closed). A message of
  ``global.minCachedMessageSize`` (10 kB) or more that the browser's tab holds is sent again as a ``ref_hash``
  alone, which names no field: its ids count from its first sending only (README, "What it will not do").
* A browser's message is parsed as Streamlit parses it (``BackMsg``: :func:`browser_message`), for the download
  made on the click it asks for (:func:`asked_deferred_file`) and for its type when that is one the gate drops
  (:data:`DROPPED_BACKMSGS`, each with why: :func:`dropped_type`); the media URLs anywhere in the bytes a browser
  sends are read as bytes (:data:`MEDIA_URL`: :func:`media_ids`, :func:`named_media_ids`).

``streamlit.proto`` is Streamlit's wire format, pinned with Streamlit (``requirements.txt``): an upgrade must
re-check :data:`MEDIA_FIELDS` against where the new version writes media URLs (``media_file_mgr`` in its
``elements``, ``commands`` and ``runtime``); ``tests/test_mediagate.py`` fails when a listed field is gone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import unquote_to_bytes

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

#: Hex digits of a Streamlit media id.
MEDIA_ID_DIGITS = 32
#: The path segment of Streamlit's media URLs (``[/<server.baseUrlPath>]/media/<id>.<ext>``).
MEDIA_SEGMENT = "/media/"
#: A media URL in the bytes a browser sends (``/media/<id>``, anywhere in them): what :func:`named_media_ids` reads.
MEDIA_URL = re.compile(re.escape(MEDIA_SEGMENT.encode()) + rb"([0-9a-f]{%d})" % MEDIA_ID_DIGITS)
#: The whole value of a :data:`MEDIA_FIELDS` field that Streamlit's media file manager made: ``/media/<id><ext>``
#: (``MemoryMediaFileStorage.get_url``: the id is the file's 16-byte digest in hex, the extension that of its
#: mimetype, or none; the browser adds the base path). Should Streamlit's URLs change shape, no id is remembered
#: and every media request of a shared server is refused (nothing leaks).
SENT_MEDIA_URL = re.compile(re.escape(MEDIA_SEGMENT) + r"([0-9a-f]{%d})(?:\.[A-Za-z0-9]+)?" % MEDIA_ID_DIGITS)
#: The fields of Streamlit's ``ForwardMsg`` (message full name, field name; ``streamlit/proto``) that carry a URL
#: its media file manager made, where the gate reads the media sent to an owner (paths in ``streamlit/``). Audio,
#: video, subtitles, ``st.iframe`` of a file and ``st.pdf`` (a component) are left out: the app shows none, and
#: ``IFrame.src`` also carries text a page gives it.
MEDIA_FIELDS = frozenset({
    ("Image", "url"),  # st.image (one or a list): elements/lib/image_utils.py marshall_images, image_to_url
    ("DownloadButton", "url"),  # st.download_button of bytes: elements/widgets/button.py marshall_file
    # a download made on a click (data=callable): runtime/backend_operation_handler.py DeferredFileHandler
    ("DeferredFileResponsePayload", "url"),
    ("PageConfig", "favicon"),  # st.set_page_config(page_icon=<picture>): commands/page_config.py
    ("Logo", "image"),  # st.logo: commands/logo.py, image_to_url
    ("Logo", "icon_image"),  # st.logo(icon_image=...): commands/logo.py, image_to_url
    ("Block.ChatMessage", "avatar"),  # st.chat_message(avatar=<picture>): elements/widgets/chat.py
})
#: The field of Streamlit's ``ForwardMsg`` where a download button whose file is made on the click gets its
#: placeholder id (``MediaFileManager.add_deferred``: ``uuid4().hex``), which a browser's click names back
#: (:func:`asked_deferred_file`); Streamlit makes the file for whichever session names it
#: (``MediaFileManager.execute_deferred``).
DEFERRED_FIELD = ("DownloadButton", "deferred_file_id")
#: The fields of Streamlit's ``ForwardMsg`` that give a browser the id of its session (``AppSession``'s
#: ``_create_new_session_message``), which the browser names back to go on with that session after a network blip
#: (the third entry of its websocket handshake's ``Sec-WebSocket-Protocol``:
#: :func:`moleseg.app.mediagate.resumed_session`) and in the URLs of its uploads
#: (:data:`moleseg.app.mediagate.UPLOAD_ROUTE`). Streamlit hands that session to whoever names it, when its own
#: ``user_info`` matches: with ``proxy-header`` it is the same for every user.
SESSION_FIELDS = frozenset({("Initialize", "session_id")})
#: The types of a browser's ``BackMsg`` (its ``type`` oneof, ``streamlit/proto/BackMsg_pb2``) that the gate of a
#: shared server drops, each with why (``AppSession.handle_backmsg`` and ``starlette_websocket.py`` of Streamlit
#: 1.67): none is sent by the app's pages, only by Streamlit's developer menu and tests. The others pass: a run of
#: the page (``rerun_script``), its stop (``stop_script``), the URLs of the browser's own uploads
#: (``file_urls_request``), a heartbeat (``app_heartbeat``) and a click on a download made on the click
#: (``backend_operation_request``, when it was offered to the clicker's owner).
DROPPED_BACKMSGS: Mapping[str, str] = MappingProxyType({
    "clear_cache": "clears st.cache_data and st.cache_resource for every user: the server's analysis store (every "
                   "user's predictions), its task registry (running tasks forgotten, each user's share of tasks "
                   "counted again from none), its loaded models, and a second start of the folder sweep",
    "load_git_info": "sends the browser the app folder's git repository, branch and module, and the names of its "
                     "untracked and uncommitted files",
    "set_run_on_save": "a developer's switch: whether the session reruns when the server's source files change",
    "debug_disconnect_websocket": "a test of Streamlit's own (refused unless global.developmentMode or "
                                  "global.e2eTest, which moleseg never sets)",
    "debug_shutdown_runtime": "stops the whole server (refused unless global.developmentMode or global.e2eTest, "
                              "which moleseg never sets)",
})


def _media_bearing(root: Descriptor, fields: frozenset[tuple[str, str]]) -> frozenset[str]:
    """The full names of the message types under ``root`` (itself included) that hold one of ``fields``, directly
    or in a message-typed field (a map's entries aside): the only submessages :func:`sent_media` walks."""
    reachable: dict[str, Descriptor] = {}
    waiting = [root]
    while waiting:
        descriptor = waiting.pop()
        if descriptor.full_name not in reachable and not descriptor.GetOptions().map_entry:
            reachable[descriptor.full_name] = descriptor
            waiting += [field.message_type for field in descriptor.fields if field.message_type is not None]
    bearing = {name for name, descriptor in reachable.items()
               if any((name, field.name) in fields for field in descriptor.fields)}
    grew = True
    while grew:
        grew = False
        for name, descriptor in reachable.items():
            if name not in bearing and any(field.message_type is not None and field.message_type.full_name in bearing
                                           for field in descriptor.fields):
                bearing.add(name)
                grew = True
    return frozenset(bearing)


#: The message types :func:`sent_media` walks into for media (derived from :data:`MEDIA_FIELDS` and
#: :data:`DEFERRED_FIELD`), and for the session ids (derived from :data:`SESSION_FIELDS`).
MEDIA_BEARING = _media_bearing(ForwardMsg.DESCRIPTOR, MEDIA_FIELDS | {DEFERRED_FIELD})
SESSION_BEARING = _media_bearing(ForwardMsg.DESCRIPTOR, SESSION_FIELDS)
_WALKED = MEDIA_BEARING | SESSION_BEARING


def sent_media(payload: bytes | str) -> tuple[list[str], list[str], list[str]]:
    """The ids of the media URLs a websocket message from Streamlit carries in its :data:`MEDIA_FIELDS` (each field
    whose whole value is a :data:`SENT_MEDIA_URL`), the placeholder ids of the downloads made on the click it
    offers (:data:`DEFERRED_FIELD`) and the session ids it gives (:data:`SESSION_FIELDS`), each in order: the
    message parsed as a ``ForwardMsg``. Three empty lists for a text message (Streamlit sends none) or one that does
    not parse."""
    ids: list[str] = []
    offered: list[str] = []
    sessions: list[str] = []
    if isinstance(payload, bytes):
        message = ForwardMsg()
        try:
            message.ParseFromString(payload)
        except DecodeError:
            return ids, offered, sessions
        _collect_media(message, ids, offered, sessions)
    return ids, offered, sessions


def sent_media_ids(payload: bytes | str) -> list[str]:
    """The media ids of :func:`sent_media`."""
    return sent_media(payload)[0]


def _collect_media(message: ProtoMessage, ids: list[str], offered: list[str], sessions: list[str]) -> None:
    """Append to ``ids`` those of the :data:`MEDIA_FIELDS` set in ``message`` and its :data:`MEDIA_BEARING`
    and :data:`SESSION_BEARING` submessages, to ``offered`` their :data:`DEFERRED_FIELD` and to ``sessions`` their
    :data:`SESSION_FIELDS`."""
    name = message.DESCRIPTOR.full_name
    for field, value in message.ListFields():
        values = value if field.is_repeated else (value,)
        if (name, field.name) in MEDIA_FIELDS:
            ids += [match.group(1) for url in values
                    if isinstance(url, str) and (match := SENT_MEDIA_URL.fullmatch(url))]
        elif (name, field.name) == DEFERRED_FIELD:
            offered += [file_id for file_id in values if file_id]
        elif (name, field.name) in SESSION_FIELDS:
            sessions += [session_id for session_id in values if isinstance(session_id, str) and session_id]
        elif field.message_type is not None and field.message_type.full_name in _WALKED:
            for submessage in values:
                _collect_media(submessage, ids, offered, sessions)


def browser_message(payload: bytes | str) -> BackMsg | None:
    """A browser's websocket message parsed as Streamlit parses it (a ``BackMsg``); None for a text message or one
    that does not parse (Streamlit closes the websocket on either and acts on neither)."""
    if not isinstance(payload, bytes):
        return None
    message = BackMsg()
    try:
        message.ParseFromString(payload)
    except DecodeError:
        return None
    return message


def asked_deferred_file(message: BackMsg | None) -> str | None:
    """The placeholder id (:data:`DEFERRED_FIELD`) of the download made on the click that a browser's message
    (:func:`browser_message`) asks Streamlit to make (its ``backend_operation_request.deferred_file``), else
    None."""
    if message is None or message.WhichOneof("type") != "backend_operation_request":
        return None
    request = message.backend_operation_request
    return request.deferred_file.file_id if request.WhichOneof("payload") == "deferred_file" else None


def dropped_type(message: BackMsg | None) -> str | None:
    """The type of a browser's message (:func:`browser_message`) when the gate of a shared server drops it
    (:data:`DROPPED_BACKMSGS`), else None."""
    kind = message.WhichOneof("type") if message is not None else None
    return kind if kind in DROPPED_BACKMSGS else None


def media_ids(payload: bytes | str) -> list[str]:
    """The ids of the media URLs (:data:`MEDIA_URL`) anywhere in the bytes of a message, in order."""
    data = payload.encode() if isinstance(payload, str) else payload
    return [match.group(1).decode() for match in MEDIA_URL.finditer(data)]


def named_media_ids(payload: bytes | str) -> list[str]:
    """The ids of the media URLs a websocket message from a browser names (:func:`media_ids`), also once
    percent-decoded, as Streamlit reads a rerun message's query string (``?visit=%2Fmedia%2F...``)."""
    data = payload.encode() if isinstance(payload, str) else payload
    return media_ids(data) + media_ids(unquote_to_bytes(data))
