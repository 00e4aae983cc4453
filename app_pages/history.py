"""History: the saved analyses, by lesion and visit; open one exactly as it was, export or delete it."""

from __future__ import annotations

import streamlit as st

from moleseg.app import followup, ui
from moleseg.engine.records import Records
from moleseg.core.errors import first_line

st.title("History")
st.caption("Analyses saved from the Analyse page, kept in a database on this computer "
           "(set MOLESEG_DATA_DIR to choose its folder). Nothing identifies a person unless you typed it.")

try:
    records = Records()
except ValueError as error:
    st.error(f"Cannot open the records: {first_line(error)}")
    st.stop()

lesions = records.lesions()
if not lesions:
    st.info("Nothing saved yet: analyse an image on the Analyse page and use **Save to records**.")
    st.stop()

st.subheader("Lesions")
st.dataframe(followup.lesion_rows(lesions), hide_index=True, width="stretch")
identifiers = [summary.lesion for summary in lesions]
lesion = st.selectbox("Lesion", identifiers, format_func=followup.lesion_label, key="history_lesion")
visits = records.records(lesion)
st.subheader(f"Visits of {followup.lesion_label(lesion)}")
st.dataframe(followup.visit_rows(visits), hide_index=True, width="stretch")
by_id = {record.id: record for record in visits}
chosen = st.selectbox("Open visit", list(by_id), format_func=lambda i: followup.visit_label(by_id[i]),
                      key="history_visit")
if chosen is None:
    st.stop()

try:
    saved = records.open(chosen)
except (KeyError, ValueError) as error:
    st.error(f"Cannot open this record: {first_line(error)}")
    st.stop()
record = saved.record
left, right = st.columns(2)
left.image(followup.saved_overlay(saved), caption=f"{record.image_name or 'image'}: saved border", width="stretch")
right.image(saved.mask.astype("uint8") * 255, caption="Saved lesion mask", width="stretch")
settings = record.settings()
st.markdown(f"**Visit** {record.visit_date} · **body site** {record.body_site or '—'} · **saved** {record.saved_at}"
            "  \n" + "  \n".join(f"**{label}** {text}" for label, text in settings.lines()))
if record.notes:
    st.markdown(f"**Notes** {record.notes}")
flags = followup.saved_notes(saved)
if flags:
    st.warning(ui.sentence(flags))
st.dataframe(followup.measurement_rows(record.measurements), hide_index=True, width="stretch")

one, two = st.columns(2)
one.download_button("Export this visit (ZIP)", data=lambda: records.export(chosen),
                    file_name=f"record_{chosen}.zip", mime="application/zip", key="history_export", on_click="ignore")
two.download_button("Report (PDF)", key="history_pdf", on_click="ignore", mime="application/pdf",
                    file_name=f"record_{chosen}_report.pdf",
                    data=lambda: followup.saved_report(saved, record.image_name or f"record {chosen}"))
with st.expander("Delete this visit"):
    sure = st.checkbox("Yes, delete this visit and its image and mask files",  # asked again for each visit
                       key=f"history_delete_sure_{chosen}")
    if st.button("Delete", key="history_delete", disabled=not sure, type="primary"):
        records.delete(chosen)
        st.session_state.pop("history_visit", None)
        st.rerun()
st.caption("Research software: not a medical device, not for diagnosis.")
