"""History: the user's saved analyses, by lesion and visit; open one exactly as it was (also from a link
``?visit=<id>``), see its audit trail, export or delete it."""

from __future__ import annotations

import streamlit as st

from moleseg.app import followup, identity, ui
from moleseg.app.deidentify import HISTORY_WITHOUT_NAMES_HELP, WITHOUT_NAMES_LABEL, exported_visit
from moleseg.engine.records import Records
from moleseg.engine.recordtypes import NoSuchRecord
from moleseg.core.config import result_file_name
from moleseg.core.errors import first_line
from moleseg.core.report import DISCLAIMER

st.title("History")
st.caption("Analyses saved from the Analyse page, kept in a database on the server (its settings choose the "
           "folder); you see the visits you saved. Nothing identifies a person unless you typed it.")
user = identity.require_user()

try:
    records = Records()
    lesions = records.lesions(user)
    linked = st.query_params.get("visit")
    if linked is not None:  # a link to one visit: shown only to whoever may reach it
        linked_id = followup.linked_record_id(linked)
        try:
            target = None if linked_id is None else records.record(user, linked_id)
        except NoSuchRecord:
            target = None
        if target is None:
            st.error(followup.linked_record_refusal(linked))
            st.stop()
        st.session_state["history_lesion"], st.session_state["history_visit"] = target.lesion, target.id
        del st.query_params["visit"]
except ValueError as error:
    st.error(first_line(error))
    st.stop()
if not lesions:
    st.info("Nothing saved yet: analyse an image on the Analyse page and use **Save to records**.")
    st.stop()

st.subheader("Lesions")
st.dataframe(followup.lesion_rows(lesions), hide_index=True, width="stretch")
identifiers = [summary.lesion for summary in lesions]
lesion = st.selectbox("Lesion", identifiers, format_func=followup.lesion_label, key="history_lesion")
try:
    visits = records.records(user, lesion)
except ValueError as error:
    st.error(first_line(error))
    st.stop()
st.subheader(f"Visits of {ui.plain_markdown(followup.lesion_label(lesion))}")
st.dataframe(followup.visit_rows(visits, owners=identity.sees_everyone(user)), hide_index=True, width="stretch")
by_id = {record.id: record for record in visits}
chosen = st.selectbox("Open visit", list(by_id), format_func=lambda i: followup.visit_label(by_id[i]),
                      key="history_visit")
if chosen is None:
    st.stop()

try:
    first_look = st.session_state.get("history_opened") != chosen  # its trail says 'opened' once per look
    saved = records.open(user, chosen, audit=first_look)
    st.session_state["history_opened"] = chosen
except (KeyError, ValueError) as error:
    st.error(f"Cannot open this record: {first_line(error)}")
    st.stop()
record = saved.record
left, right = st.columns(2)
left.image(followup.saved_overlay(saved), width="stretch",
           caption=f"{ui.plain_markdown(record.image_name or 'image')}: saved border")  # another user's name
right.image(saved.mask.astype("uint8") * 255, caption="Saved lesion mask", width="stretch")
settings = record.settings()
st.markdown(f"**Visit** {ui.plain_markdown(str(record.visit_date))} · **body site** "
            f"{ui.plain_markdown(record.body_site or '—')} · **saved** "
            f"{ui.plain_markdown(followup.moment_text(record.saved_at))}"
            f" by {ui.plain_markdown(followup.owner_label(record.owner))}"
            "  \n" + "  \n".join(f"**{label}** {ui.plain_markdown(text)}" for label, text in settings.lines()))
if record.notes:
    st.markdown(f"**Notes** {ui.plain_markdown(record.notes)}")
flags = followup.saved_notes(saved)
if flags:
    st.warning(ui.sentence(flags))
st.dataframe(followup.measurement_rows(record.measurements), hide_index=True, width="stretch")

leaving = exported_visit(not st.toggle(WITHOUT_NAMES_LABEL, key="history_exports_without_names",
                                      help=HISTORY_WITHOUT_NAMES_HELP))
exported = leaving(saved)

one, two = st.columns(2)
one.download_button("Export this visit (ZIP)", data=lambda: records.export(user, chosen, leaving),
                    file_name=f"{exported.stem}.zip", mime="application/zip", key="history_export",
                    on_click="ignore")
two.download_button("Report (PDF)", key="history_pdf", on_click="ignore", mime="application/pdf",
                    file_name=result_file_name(exported.stem, "report"),
                    data=lambda: followup.exported_report(records, user, chosen, exported.saved))
with st.expander("Audit trail of this visit"):
    try:
        st.dataframe(followup.audit_rows(records.audit_trail(user, chosen)), hide_index=True, width="stretch")
    except (KeyError, ValueError) as error:
        st.error(first_line(error))
with st.expander("Delete this visit"):
    sure = st.checkbox("Yes, delete this visit and its image and mask files",  # asked again for each visit
                       key=f"history_delete_sure_{chosen}")
    if st.button("Delete", key="history_delete", disabled=not sure, type="primary"):
        try:
            records.delete(user, chosen)
        except (KeyError, ValueError) as error:
            st.error(f"Cannot delete this record: {first_line(error)}")
            st.stop()
        st.session_state.pop("history_visit", None)
        st.rerun()
st.caption(DISCLAIMER)
