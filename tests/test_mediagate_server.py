"""The media gate in front of Streamlit's real routes: ``streamlit run`` of a one-picture page as Streamlit's ASGI
app behind :class:`moleseg.app.mediagate.MediaGate` (as ``serve_app.py`` runs app.py), spoken to as the proxy
would (its secret, the user's header) over HTTP and Streamlit's websocket protocol. About 3 s (the server's
start)."""

from __future__ import annotations

import asyncio
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import streamlit
import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from app_helpers import streamlit_server
from moleseg.app.mediagate import REFUSED, media_ids
from moleseg.core.settings import DEFAULT_USER_HEADERS, ServerSettings

SECRET = "s3cret-of-the-proxy"
USER_HEADER = DEFAULT_USER_HEADERS[0]
#: A page that shows Alice, and only her, a picture.
PAGE = f"""import numpy as np
import streamlit as st
if st.context.headers.get({USER_HEADER!r}) == "alice":
    st.image(np.full((4, 4, 3), 200, dtype=np.uint8))
st.write("done")
"""
SERVE = """import streamlit as st
from starlette.middleware import Middleware
from moleseg.app.mediagate import MediaGate
app = st.App("page.py", middleware=[Middleware(MediaGate)])
"""


def _through_proxy(user: str) -> dict[str, str]:
    return {USER_HEADER: user, ServerSettings.proxy_secret_header: SECRET}


def _get(url: str, user: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=_through_proxy(user)), timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _run_page(url: str, user: str, **client_state: str) -> list[str]:
    """The media ids of the messages of one run of the page for ``user``, whose browser's rerun message holds
    ``client_state`` (as a hand-made client may fill it)."""
    rerun = BackMsg()
    rerun.rerun_script.query_string = ""
    for name, value in client_state.items():
        setattr(rerun.rerun_script, name, value)

    async def run() -> list[str]:
        ids = []
        async with websockets.connect(url.replace("http", "ws", 1) + "/_stcore/stream", subprotocols=["streamlit"],
                                      additional_headers=_through_proxy(user)) as stream:
            await stream.send(rerun.SerializeToString())
            while True:
                data = await asyncio.wait_for(stream.recv(), 30)
                ids += media_ids(data)
                message = ForwardMsg()
                message.ParseFromString(data)
                if message.WhichOneof("type") == "script_finished":
                    return ids

    return asyncio.run(run())


@pytest.fixture
def gated_server(tmp_path: Path):
    (tmp_path / "page.py").write_text(PAGE)
    (tmp_path / "serve.py").write_text(SERVE)
    env = {**os.environ, "MOLESEG_MODE": "shared", "MOLESEG_ALLOWED_HOSTS": "moles.example.org",
           "MOLESEG_IDENTITY": "proxy-header", "MOLESEG_TRUSTED_PROXIES": "127.0.0.1", "MOLESEG_PROXY_SECRET": SECRET,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    env.pop("MOLESEG_CONFIG", None)
    with streamlit_server(env, "streamlit-mediagate", script=tmp_path / "serve.py") as (url, _):
        yield url


def test_the_gate_on_streamlits_routes_passes_its_fonts_and_refuses_a_url_its_holder_named(gated_server):
    url = gated_server
    font = next((Path(streamlit.__file__).parent / "static" / "static" / "media").glob("*.woff2")).name
    status, body = _get(f"{url}/static/media/{font}", "bob")  # Streamlit's own fonts, for everyone
    assert status == 200 and body[:4] == b"wOF2"
    [picture] = _run_page(url, "alice")
    media = f"{url}/media/{picture}.jpg"
    status, body = _get(media, "alice")
    assert status == 200 and body[:3] == b"\xff\xd8\xff"  # a JPEG
    assert _get(media, "bob") == (403, REFUSED)
    # Streamlit sends a browser back the page hash and page name of its rerun message: Bob, who holds Alice's
    # URL, names it there; the gate does not believe that echo for him
    assert picture in _run_page(url, "bob", page_script_hash=f"/media/{picture}.jpg", page_name=f"/media/{picture}.jpg")
    assert _get(media, "bob") == (403, REFUSED)
    assert _get(f"{url}/MEDIA/{picture.upper()}.JPG", "bob")[1][:3] != b"\xff\xd8\xff"  # no route of Streamlit's
