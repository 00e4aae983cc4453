"""``moleseg serve``'s entry point: ``app.py`` as Streamlit's ASGI app, behind :class:`moleseg.app.mediagate.MediaGate`."""

import streamlit as st
from starlette.middleware import Middleware

from moleseg.app.mediagate import MediaGate

app = st.App("app.py", middleware=[Middleware(MediaGate)])
