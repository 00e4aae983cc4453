"""``moleseg serve``'s entry point: ``app.py`` as Streamlit's ASGI app, behind :class:`moleseg.app.mediagate.MediaGate`.
A bare ``streamlit run serve_app.py`` (without ``moleseg serve``) runs under the same file mode creation mask
(:func:`moleseg.app.server.restrict_file_modes`), whatever the mode."""

import streamlit as st
from starlette.middleware import Middleware

from moleseg.app.mediagate import MediaGate
from moleseg.app.server import restrict_file_modes

restrict_file_modes()
app = st.App("app.py", middleware=[Middleware(MediaGate)])
