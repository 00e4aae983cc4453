"""A user's share of the server's memory for uploaded files, which the media gate
(:class:`moleseg.app.mediagate.MediaGate`) holds each upload to (:func:`past_share`).

Streamlit keeps every file uploaded into a session in memory (its ``MemoryUploadedFileManager``) until the browser
removes it or the session ends, under whatever file id the upload's URL names (it checks no page asked for it), each
up to ``server.maxUploadSize``: a script uploading file after file into its own sessions filled the server's memory,
and every user's pages ended with the server. The media gate, which remembers the sessions Streamlit gave each
owner and the sessions each owner uploaded into for as long as Streamlit holds their files (:func:`holding_sessions`:
a session forgotten in the bounds of the first, left open and silent, held its files out of the count), refuses
with 413 (:data:`UPLOADS_FULL`) an upload that would take what that owner's sessions hold, with the uploads of
theirs still on their way (each counted for :func:`upload_length`), past
:data:`moleseg.core.config.UPLOAD_BYTES_PER_USER`: counting the files held alone, a script sending its uploads at
once had every one of them pass, as none was held yet.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import Scope

#: The body of the refusal of an upload past its owner's share.
UPLOADS_FULL: bytes = (b"Your open pages hold as many uploaded files as this server keeps for one user: remove some "
                       b"of them, or close a tab, and upload again.\n")


def held_upload_bytes(session_ids: Iterable[str]) -> int:
    """Bytes of the uploaded files Streamlit holds in memory for the sessions ``session_ids`` (0 when no Streamlit
    server runs in this process)."""
    from streamlit import runtime

    if not runtime.exists():
        return 0
    manager = runtime.get_instance().uploaded_file_mgr
    held = 0
    for session_id in session_ids:
        # the session's file ids (a copy of its dict's keys, taken at once), then the files through the manager's
        # public get_files, which reads them under its own lock
        file_ids = list(manager.file_storage.get(session_id, {}))
        held += sum(len(file.data) for file in manager.get_files(session_id, file_ids))
    return held


def holding_sessions(session_ids: Iterable[str]) -> set[str]:
    """Those of ``session_ids`` whose uploaded files Streamlit still holds (none when no Streamlit server runs in
    this process): a session that ended holds none."""
    from streamlit import runtime

    if not runtime.exists():
        return set()
    storage = runtime.get_instance().uploaded_file_mgr.file_storage
    return {session_id for session_id in list(session_ids) if storage.get(session_id)}


def upload_length(scope: Scope) -> int:
    """The most bytes the upload request ``scope`` can add to what Streamlit holds: its body's ``Content-Length``
    (the server reads no more of a body than that), or, without a valid one or beside a ``Transfer-Encoding`` (a
    chunked body), the largest file Streamlit takes (``server.maxUploadSize``, in MB of 2**20 bytes, as Streamlit
    reads it)."""
    headers = Headers(scope=scope)
    try:  # a Transfer-Encoding beside it frames the body instead
        length = -1 if "transfer-encoding" in headers else int(headers.get("content-length") or "")
    except ValueError:
        length = -1
    if length >= 0:
        return length
    from streamlit import config

    return int(config.get_option("server.maxUploadSize")) * 1024 * 1024


def past_share(scope: Scope, session_ids: Iterable[str], share: int, on_the_way: int = 0) -> bool:
    """Whether the upload request ``scope`` (:func:`upload_length`) would take what ``session_ids`` hold
    (:func:`held_upload_bytes`) and ``on_the_way`` bytes of their owner's uploads not yet held (their requests'
    :func:`upload_length`) past ``share`` bytes."""
    return held_upload_bytes(session_ids) + on_the_way + upload_length(scope) > share
