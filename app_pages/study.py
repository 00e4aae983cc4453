"""Study: run the article's study (factors x seeds) in the background, and open any study folder: the
sortable table of runs, the verdicts, and the plots."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from moleseg import studyreport
from moleseg.app import serverpaths, ui
from moleseg.app.identity import user_space
from moleseg.app.quota import OverQuota, check_session_quota, session_quota
from moleseg.core.config import STUDIES_DIR
from moleseg.core.roots import OutsideRootsError, resolve_inside_roots
from moleseg.engine import studyrun
from moleseg.engine.launch import safe_run_name
from moleseg.engine.studyplan import GPU_STUDY_SUFFIX, StudyError, default_study_file, study_files
from moleseg.engine.studystats import table_for_display

st.title("Study")
st.markdown("Which solver, learning rate, batch size, number of epochs, augmentation or backbone gives the "
            "best **F-measure** on your test images, and is the difference more than noise? A study trains one "
            "run per setting and seed (`moleseg study` on the command line does the same), then compares the "
            "settings image by image with a paired Wilcoxon test.")

runs = user_space().runs
with st.expander("Start a study", expanded=False):
    shipped = study_files()
    fitting = default_study_file(shipped, gpu=ui.device_summary().startswith("GPU"))
    ui.init_state("study_file", str(fitting) if fitting else "other...")
    choice = st.selectbox("Study file", [str(p) for p in shipped] + ["other..."], key="study_file",
                          help=f"YAML: data, base options, factors, repeats (see the shipped files in studies/). "
                               f"Files ending in '{GPU_STUDY_SUFFIX}' are sized for a GPU; this machine: "
                               f"{ui.device_summary()}.")
    path = choice
    if choice == "other...":
        typed = st.text_input("Path of the study file", key="study_file_other",
                              help="A YAML file inside the shipped studies folder or the folders this server offers.")
        try:
            path = str(resolve_inside_roots(typed, serverpaths.study_file_roots(STUDIES_DIR), file=True))
        except OutsideRootsError as error:
            path = ""
            if typed.strip():
                st.error(str(error))
    file_stem = Path(path or "study").stem
    name = st.text_input("Study folder name", key="study_name", placeholder=file_stem,
                         help="Empty: the study file's name.").strip() or file_stem
    if st.button("Start the study", type="primary", key="study_start", disabled=not path):
        out = runs / f"study-{safe_run_name(name)}"
        try:
            check_session_quota()
            studyrun.start_study(path, out, roots=serverpaths.dataset_roots(), quota=session_quota())
        except (StudyError, OverQuota, OSError) as error:
            st.error(ui.plain_markdown(str(error)))  # quotes the study file, which may be anyone's in a data root
        else:
            st.session_state["study_folder"] = str(out)
            st.success(f"Started: {out}. Progress below; it continues if you close the browser. Its runs train "
                       "one at a time, after any training already running.")

folders = studyrun.list_study_folders(runs)
results = studyrun.shipped_results()
ui.init_state("study_folder", str((folders or results or [""])[0]))
serverpaths.path_picker("study_folder", [str(found) for found in folders + results],
                        label="Studies in your runs and the shipped results")
folder_text = st.text_input("Study folder", key="study_folder",
                            help=f"A folder written by moleseg study, inside your runs ({runs}), or the shipped "
                                 f"results ({studyrun.SHIPPED_RESULTS_DIR}).")
folder = ""
if folder_text.strip():
    try:
        folder = str(resolve_inside_roots(folder_text, (runs, studyrun.SHIPPED_RESULTS_DIR)))
    except OutsideRootsError as error:
        st.error(str(error))


@st.fragment(run_every=2.0)
def show(folder_text: str) -> None:
    if not folder_text:
        st.info("No study yet: start one above, or give the folder of one run with `moleseg study`.")
        return
    try:
        shown = studyrun.read_study_folder(folder_text)
    except StudyError as error:
        st.warning(ui.plain_markdown(str(error)))  # quotes the folder's files
        return
    if shown.results_only:
        st.caption(shown.describe())
    else:
        st.progress(shown.progress.fraction, text=shown.describe())
    if shown.verdicts:
        st.markdown(shown.verdicts)
    if shown.rows:
        st.subheader("Runs")
        st.dataframe(table_for_display(shown.rows), hide_index=True, use_container_width=True)
        figures, page = studyreport.folder_report(folder_text)
        for figure in figures:
            st.plotly_chart(figure, use_container_width=True)
        if not figures:
            st.markdown("**Mean test FM by setting** (seeds averaged)")
            st.bar_chart(studyrun.mean_fm_by_setting(shown.rows), horizontal=True, x_label="mean FM")
        if page:
            st.download_button("Download study.html", page.encode(), file_name=studyreport.STUDY_HTML,
                               mime="text/html", key="study_html")


show(folder)
