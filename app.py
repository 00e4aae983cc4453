"""moleseg app: entry point (``streamlit run app.py``). Wires the pages and draws the home page.

No TensorFlow here: it is imported only when a page loads a network.
"""

from __future__ import annotations

import streamlit as st

from moleseg import __version__
from moleseg.app import gate, ui
from moleseg.app.models import default_model_spec, model_choices

st.set_page_config(page_title="moleseg - mole border analysis", page_icon=":material/biotech:", layout="wide")
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
    spec = default_model_spec()
    chosen = st.session_state.get(ui.MODEL_KEY, spec)
    choices = {c.spec: c for c in model_choices()}
    current = choices.get(chosen) or choices.get(spec)
    left, right = st.columns(2)
    left.metric("Model in use", current.label.split(" (")[0] if current else spec,
                help=current.label if current else None)
    device = ui.device_summary()
    right.metric("Device", device.split(" (")[0], help=device)
    st.caption(f"Device: {device}. moleseg {__version__}.")
    ui.no_model_notice()
    st.subheader("Pages")
    st.page_link(ui.PAGE_FILES["analyse"], label="Analyse: upload mole images, see and export their borders",
                 icon=":material/image_search:")
    st.page_link(ui.PAGE_FILES["prepare"], label="Prepare targets: pair images with masks, preview BACK/BORDER/INSIDE",
                 icon=":material/layers:")
    st.page_link(ui.PAGE_FILES["train"], label="Train: train the network on your dataset, with live progress",
                 icon=":material/model_training:")
    st.page_link(ui.PAGE_FILES["evaluate"], label="Evaluate: score models against true masks, compare runs",
                 icon=":material/analytics:")
    st.warning("Research software: **not a medical device**, not for diagnosis.", icon=":material/info:")


navigation = st.navigation([
    st.Page(home, title="Home", icon=":material/home:", default=True),
    st.Page(ui.PAGE_FILES["analyse"], title="Analyse", icon=":material/image_search:"),
    st.Page(ui.PAGE_FILES["prepare"], title="Prepare targets", icon=":material/layers:"),
    st.Page(ui.PAGE_FILES["train"], title="Train", icon=":material/model_training:"),
    st.Page(ui.PAGE_FILES["evaluate"], title="Evaluate", icon=":material/analytics:"),
    st.Page(ui.PAGE_FILES["history"], title="History", icon=":material/history:"),
    st.Page(ui.PAGE_FILES["compare"], title="Compare visits", icon=":material/compare:"),
    st.Page(ui.PAGE_FILES["study"], title="Study", icon=":material/science:"),
])
navigation.run()
