"""A user's share of the server's memory for uploaded files, which the media gate holds each upload to.

Streamlit keeps every file uploaded into a session in memory (its ``MemoryUploadedFileManager``) until the browser
removes it or the session ends, under whatever file id the upload's URL names (it checks no page asked for it), each
up to ``server.maxUploadSize``: a script uploading file after file into its own sessions filled the server's memory,
and every user's pages ended with the server. The media gate (:class:`moleseg.app.mediagate.MediaGate`), which
remembers the sessions Streamlit gave each owner, refuses with 413 (:data:`UPLOADS_FULL`) an upload that would take
what that owner's sessions hold past :data:`moleseg.core.config.UPLOAD_BYTES_PER_USER`.
"""

from __future__ import annotations

#: The body of the refusal of an upload past its owner's share.
UPLOADS_FULL: bytes = (b"Your open pages hold as many uploaded files as this server keeps for one user: remove some "
                       b"of them, or close a tab, and upload again.\n")
