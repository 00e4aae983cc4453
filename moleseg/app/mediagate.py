"""The gate in front of Streamlit's media URLs (``/media/<id>``: the pictures and downloads a page shows).

Streamlit serves them with no session or user check. On a shared server whose users are named by the reverse
proxy (``identity = "proxy-header"``), a request for one that does not come through that proxy (its secret
header, from a trusted peer: :func:`moleseg.app.identity.resolve_user`) is refused with 403, so a program on the
server's machine cannot fetch another user's pictures and reports from the app's port. Personal mode and OIDC
sign-in are let through unchanged."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from moleseg.app.identity import LOOPBACK_PEERS, User, resolve_user
from moleseg.core.settings import load_settings

#: The path segment of Streamlit's media URLs (``[/<server.baseUrlPath>]/media/<id>``).
MEDIA_SEGMENT = "/media/"
#: The body of a refusal (names no user, file or setting).
REFUSED = b"This file is served only through the clinic's sign-in proxy.\n"


class MediaGate:
    """ASGI middleware: a request whose path holds :data:`MEDIA_SEGMENT` (under any base path) passes only when
    :func:`resolve_user` believes a user."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and MEDIA_SEGMENT in scope["path"] and not _believed(scope):
            await PlainTextResponse(REFUSED, status_code=403)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _believed(scope: Scope) -> bool:
    settings = load_settings()
    if not settings.shared or settings.identity != "proxy-header":
        return True
    client = scope.get("client")
    peer = client[0] if client else None
    # as st.context.ip_address reports it to the pages: None for a loopback peer (either address), whose meaning
    # resolve_user knows
    ip_address = None if peer in LOOPBACK_PEERS else peer
    return isinstance(resolve_user(settings, Headers(scope=scope), ip_address), User)
