"""moleseg app: entry point (``streamlit run app.py``). Wires the pages and draws the home page.

No TensorFlow here: it is imported only when a page loads a network.
"""

from __future__ import annotations

import streamlit as st

from moleseg import __version__
from moleseg.app import gate, ui
from moleseg.core.report import DISCLAIMER

# the tab's icon an emoji, which the browser draws itself: a Material icon there is fetched from fonts.gstatic.com,
# a request outside the server on every page load (refused on an offline machine)
st.set_page_config(page_title="moleseg - mole border analysis", page_icon="🔬", layout="wide")
gate.admit()
ui.startup()
ui.session_heartbeat()


def home() -> None:
    st.title("moleseg: mole border analysis")
    st.markdown(
        "Upload dermoscopy photographs of moles and get the **lesion and its border** drawn over each "
        "image, with **border measurements** (area, perimeter, diameter, asymmetry, compactness, "
        "fractal dimension, border width), ready to export as PNG, CSV, a one-page PDF report per "
        "image, or a ZIP of everything. The network (DeepLabV3+) segments each image into three "
        "classes, BACK / BORDER / INSIDE, and a cleanup step turns them into one lesion. You can "
        "prepare targets from your own masks, train the network on your data, and evaluate models "
        "against true masks. The same engine segments cells in light microscopy (two classes)."
    )
    current = ui.remembered_model()
    name, version = ui.model_in_use(current)
    # markdown, not st.metric: the browser draws it with the script it already has, where a metric first fetches
    # and runs its own (about 70 kB with its number formatting)
    left, right = st.columns(2)
    device = ui.device_summary()
    left.markdown(f"Model in use: **{ui.plain_markdown(name)}**", help=ui.plain_markdown(current.label))
    right.markdown(f"Device: **{ui.plain_markdown(device.split(' (')[0])}**", help=ui.plain_markdown(device))
    st.caption(f"Model: {ui.plain_markdown(name)}" + (f", version {ui.plain_markdown(version)}" if version else "")
               + f". Device: {ui.plain_markdown(device)}. moleseg {__version__}.")
    ui.no_model_notice()
    st.subheader("Pages")
    for page in ui.PAGES:
        st.page_link(ui.PAGE_FILES[page.key], label=f"{page.title}: {page.purpose}", icon=page.icon)
    st.warning(DISCLAIMER, icon=":material/info:")


navigation = st.navigation([st.Page(home, title="Home", icon=":material/home:", default=True)]
                           + [st.Page(ui.PAGE_FILES[page.key], title=page.title, icon=page.icon) for page in ui.PAGES])
navigation.run()
