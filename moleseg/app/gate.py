"""The app's gate, run before any page: the server's settings must be valid and the browser's ``Host`` allowed.

Streamlit refuses a WebSocket connection naming another host when it was started with ``server.allowedHosts``
(``moleseg serve`` passes them); this gate refuses the session again from the headers of the request that
opened it, so that a server started some other way is protected too.
"""

from __future__ import annotations

import streamlit as st

from moleseg.core.settings import ServerSettings, SettingsError, load_settings

#: Shown to a request whose Host is not one of the allowed names (the name is not echoed back).
HOST_REFUSED: str = ("This server does not answer to the host name in your browser's address bar. Use the "
                     "address the server's operator gave you.")


def admit() -> ServerSettings:
    """The server's settings, once the session is admitted; otherwise one error on the page and the run stops
    (invalid settings: the operator's message; a Host that is not allowed: :data:`HOST_REFUSED`).

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
    return settings
