"""Compare: two visits of one lesion aligned, segmented and measured; what changed, as figures and a PDF."""

from __future__ import annotations

import streamlit as st

from moleseg.app import followup, identity, ui
from moleseg.app.analysis import Upload
from moleseg.app.deidentify import COMPARE_WITHOUT_NAMES_HELP, WITHOUT_NAMES_LABEL
from moleseg.app.device_profiles import pixel_size_input
from moleseg.core.config import IMAGE_EXTENSIONS, MIN_NOISE_PASSES
from moleseg.core.errors import first_line
from moleseg.core.imageio import ImageReadError
from moleseg.core.registration import MIN_QUALITY
from moleseg.core.report import DISCLAIMER
from moleseg.engine.compare import compare_records
from moleseg.engine.records import Records

st.title("Compare two visits")
st.caption("The later image is aligned on the earlier one by a rotation and a translation only: a contact "
           "dermatoscope has a fixed magnification. Allow a scale change only when the two were taken at "
           "different magnifications. Descriptive figures only; no diagnosis.")
if "compare_source" not in st.session_state:  # a user with two saved visits of a lesion starts with them
    st.session_state["compare_source"] = followup.first_compare_source(identity.current_user())
source = st.radio("Visits", [followup.COMPARE_UPLOADS, followup.COMPARE_SAVED], horizontal=True,
                  key="compare_source")
one, two = st.columns(2)
with one:
    pixel_size = pixel_size_input("compare", zero_means="pixels only (saved visits: the earlier record's pixel size)")
allow_scale = two.checkbox("The magnification differs (allow a scale change)", key="compare_allow_scale")

if source == followup.COMPARE_SAVED:
    user = identity.require_user()
    try:
        records = Records()
        summaries = records.lesions(user)
    except ValueError as error:
        st.error(first_line(error))
        st.stop()
    unidentified = followup.unidentified_visits(summaries)
    offer_unidentified = unidentified >= 2 and st.checkbox(
        f"Also offer the {unidentified} visits saved without a lesion identifier", key="compare_unidentified",
        help="They may show different lesions: pick two only when you know they show the same one.")
    lesions = followup.comparable_lesions(summaries, unidentified=offer_unidentified)
    if not lesions:
        st.info("No lesion has two saved visits yet: save analyses on the Analyse page with a lesion identifier "
                "(the History page lists them), or upload two images.")
        st.stop()
    lesion = st.selectbox("Lesion", lesions, format_func=followup.lesion_label, key="compare_lesion")
    if not lesion:
        st.warning("These visits were saved without a lesion identifier: make sure Before and After show the "
                   "same lesion.")
    try:
        visits = {record.id: record for record in records.records(user, lesion)}
    except ValueError as error:
        st.error(first_line(error))
        st.stop()
    ids = list(visits)  # newest first
    left, right = st.columns(2)
    before_id = left.selectbox("Before (earlier visit)", ids, index=1, key="compare_before_record",
                               format_func=lambda i: followup.visit_label(visits[i]))
    after_id = right.selectbox("After (later visit)", ids, index=0, key="compare_after_record",
                               format_func=lambda i: followup.visit_label(visits[i]))
    if before_id == after_id:
        st.info("Pick two different visits.")
        st.stop()
    earlier, later, order_note = followup.in_visit_order(visits[before_id], visits[after_id])
    if order_note:
        st.warning(order_note)
    try:
        first_look = st.session_state.get("compare_opened") != (earlier.id, later.id)  # audited once per pair
        saved = records.open(user, earlier.id, audit=first_look), records.open(user, later.id, audit=first_look)
        st.session_state["compare_opened"] = (earlier.id, later.id)
        held_too_much = ui.held_visits_refusal(saved, "compare")  # a shared server: this user's share of its memory
        if held_too_much:
            st.error(held_too_much)
            st.session_state.pop("compare_result", None)
            st.stop()
        with st.spinner("Aligning..."):
            comparison = compare_records(*saved, allow_scale=allow_scale, pixel_size_mm=pixel_size or None)
    except (KeyError, ValueError) as error:
        st.error(ui.plain_markdown(first_line(error)))
        st.stop()
    before_name, after_name = followup.visit_label(earlier), followup.visit_label(later)
else:
    choice = ui.model_picker("compare_model")
    ready = ui.model_prepared(choice, "The two visits are compared when it is ready")
    kinds = [ext.lstrip(".") for ext in IMAGE_EXTENSIONS]
    left, right = st.columns(2)
    before_file = left.file_uploader("Before (earlier visit)", type=kinds, key="compare_before")
    after_file = right.file_uploader("After (later visit)", type=kinds, key="compare_after")
    if not (before_file and after_file):
        st.info("Upload the two images of the same lesion to compare them.")
        st.stop()
    before, after = Upload(before_file.name, before_file.getvalue()), Upload(after_file.name, after_file.getvalue())
    held_too_much = ui.held_analyses_refusal([before, after], "compare")
    if held_too_much:  # a shared server: this user's share of its memory, before either file is decoded
        st.error(held_too_much)
        for kept in ("compare_result", "compare_uploaded"):
            st.session_state.pop(kept, None)
        st.stop()
    held = st.session_state.get("compare_uploaded")
    try:
        images = followup.uploaded_images(held, before, after)
    except ImageReadError as error:
        st.error(ui.plain_markdown(str(error)))
        st.stop()
    own_noise = st.toggle("Measure this lesion's own noise too", key="compare_own_noise",
                          help="Off: the published repeatability only (docs/repeatability.md). On: each visit is "
                               "photographed again K times by simulation and measured (2K more segmentations); "
                               "the larger noise is used.")
    noise_passes = st.number_input(
        "K: simulated second photographs per visit", min_value=MIN_NOISE_PASSES,
        max_value=followup.PAGE_NOISE_PASSES, value=MIN_NOISE_PASSES, step=1, key="compare_noise_passes",
        help=f"From {MIN_NOISE_PASSES} (a variance needs two values) to {followup.PAGE_NOISE_PASSES}.",
    ) if own_noise else 0
    segmenter = ui.load_segmenter(choice) if ready else None
    if segmenter is None:
        st.stop()
    try:
        with st.spinner("Aligning and segmenting..."):
            compared = followup.compare_uploads(held, segmenter, choice.key, before, after, images,
                                                pixel_size_mm=pixel_size or None, allow_scale=allow_scale,
                                                noise_passes=int(noise_passes))
    except ValueError as error:
        st.error(ui.plain_markdown(first_line(error)))
        st.stop()
    st.session_state["compare_uploaded"] = compared
    comparison = compared.comparison
    before_name, after_name = before_file.name, after_file.name
st.session_state["compare_result"] = comparison

if not comparison.comparable:
    st.error(ui.sentence(followup.not_comparable_text(comparison)))
for warning in comparison.other_warnings:  # different pixel sizes
    st.warning(ui.sentence(warning))
registration = comparison.registration
columns = st.columns(4 if comparison.comparable else 3)
columns[0].metric("Rotation", f"{registration.rotation_deg:+.1f}°", help="Counter-clockwise positive, from the "
                  "before to the after image.")
columns[1].metric("Lesion centre moved", comparison.shift_text(), help="x right, y down.")
columns[2].metric("Registration quality", f"{registration.quality:.2f}",
                  help=f"0..1; below {MIN_QUALITY:g} the alignment failed.")
if comparison.comparable:
    area = comparison.change("area", "px")
    columns[3].metric("Area change", f"{comparison.area_change_percent:+.1f} %",
                      delta=followup.WITHIN_NOISE if area and area.beyond_noise is False else None,
                      delta_color="off", help=followup.area_change_help(area))
st.caption(followup.settings_caption(comparison))
view = st.radio("View", followup.COMPARE_VIEWS, horizontal=True, key="compare_view")
if view == followup.VIEW_SWIPE:
    position = st.slider("Before ← → after", 0, 100, 50, key="compare_swipe", help=followup.SWIPE_HELP)
    st.image(comparison.swipe_picture(position / 100), width="stretch", caption=followup.VIEW_CAPTIONS[view])
elif view == followup.VIEW_SIDE_BY_SIDE:
    st.image(comparison.side_by_side_picture(), width="stretch", caption=followup.VIEW_CAPTIONS[view])
else:
    st.image(comparison.borders_picture(), width="stretch", caption=followup.VIEW_CAPTIONS[followup.VIEW_BORDERS])
if comparison.comparable:
    st.dataframe(followup.change_table(comparison), hide_index=True, width="stretch")
    st.caption(followup.NOISE_CAPTION)
else:
    with st.expander("The figures, which must not be read as change", expanded=False):
        st.dataframe(followup.change_table(comparison), hide_index=True, width="stretch")
with_names = not st.toggle(WITHOUT_NAMES_LABEL, key="compare_exports_without_names",
                           help=COMPARE_WITHOUT_NAMES_HELP)
summary, pdf = followup.comparison_downloads(comparison, before_name, after_name, with_names)
one, two = st.columns(2)
one.download_button("Comparison (JSON)", data=summary, file_name="comparison.json",
                    mime="application/json", key="compare_json", on_click="ignore")
two.download_button("Comparison (PDF)", data=pdf, file_name="comparison.pdf", mime="application/pdf",
                    key="compare_pdf", on_click="ignore")
st.caption(DISCLAIMER)
