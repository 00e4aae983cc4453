"""The app's gate, run before any page: the server's settings must be valid, the browser's ``Host`` allowed and,
on a shared server, the user believed (:func:`moleseg.app.identity.require_user`).

Streamlit refuses a WebSocket connection naming another host when it was started with ``server.allowedHosts``
(``moleseg serve`` passes them); this gate refuses the session again from the headers of the request that
opened it, so that a server started some other way is protected too. A request that did not come through the
sign-in proxy (or without a sign-in) runs no page at all, not even those that keep nothing of a user's.
"""

from __future__ import annotations

import streamlit as st

from moleseg.app.identity import require_user
from moleseg.core.settings import ServerSettings, SettingsError, load_settings

#: Shown to a request whose Host is not one of the allowed names (the name is not echoed back).
HOST_REFUSED: str = ("This server does not answer to the host name in your browser's address bar. Use the "
                     "address the server's operator gave you.")


def admit() -> ServerSettings:
    """The server's settings, once the session is admitted; otherwise one error on the page and the run stops
    (invalid settings: the operator's message; a Host that is not allowed: :data:`HOST_REFUSED`; on a shared
    server, nobody believed: :func:`moleseg.app.identity.require_user`'s sentence and log-in button).

    A session without any request headers was not opened by a browser (Streamlit's AppTest); a browser's
    WebSocket request always carries a Host."""
    try:
        settings = load_settings()
    except SettingsError as error:
        st.error(f"The server cannot start: {error}", icon=":material/error:")
        st.stop()
    headers = st.context.headers
    if len(headers) and not settings.host_allowed(headers.get("Host")):
        st.error(HOST_REFUSED, icon=":material/block:")
        st.stop()
    if settings.shared:
        require_user()
    return settings
