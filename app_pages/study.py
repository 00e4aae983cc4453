"""Study: run the article's study (factors x seeds) in the background, and open any study folder: the
sortable table of runs, the verdicts, and the plots."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from moleseg.app import serverpaths, ui
from moleseg.engine.jobs import safe_run_name
from moleseg.core.config import STUDIES_DIR, runs_dir
from moleseg.core.roots import OutsideRootsError, resolve_inside_roots
from moleseg.engine import study as studies

st.title("Study")
st.markdown("Which solver, learning rate, batch size, number of epochs, augmentation or backbone gives the "
            "best **F-measure** on your test images, and is the difference more than noise? A study trains one "
            "run per setting and seed (`moleseg study` on the command line does the same), then compares the "
            "settings image by image with a paired Wilcoxon test.")

with st.expander("Start a study", expanded=False):
    shipped = studies.study_files()
    choice = st.selectbox("Study file", [str(p) for p in shipped] + ["other..."], key="study_file",
                          help="YAML: data, base options, factors, repeats (see the shipped files in studies/).")
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
    parallel = st.number_input("Trainings at once", 1, 8, 1, key="study_parallel",
                               help="The machine's cores are split between them.")
    if st.button("Start the study", type="primary", key="study_start", disabled=not path):
        out = runs_dir() / f"study-{safe_run_name(name)}"
        try:
            studies.start_study(path, out, parallel=int(parallel), roots=serverpaths.dataset_roots())
        except (studies.StudyError, OSError) as error:
            st.error(str(error))
        else:
            st.session_state["study_folder"] = str(out)
            st.success(f"Started: {out}. Progress below; it continues if you close the browser.")

folders = studies.list_study_folders(runs_dir())
ui.init_state("study_folder", str(folders[0]) if folders else "")
serverpaths.path_picker("study_folder", [str(found) for found in folders], label="Studies in the app's runs")
folder_text = st.text_input("Study folder", key="study_folder",
                            help=f"A folder written by moleseg study, inside the app's runs ({runs_dir()}).")
folder = ""
if folder_text.strip():
    try:
        folder = str(resolve_inside_roots(folder_text, (runs_dir(),)))
    except OutsideRootsError as error:
        st.error(str(error))


@st.fragment(run_every=2.0)
def show(folder_text: str) -> None:
    if not folder_text:
        st.info("No study yet: start one above, or give the folder of one run with `moleseg study`.")
        return
    try:
        shown = studies.read_study_folder(folder_text)
    except studies.StudyError as error:
        st.warning(str(error))
        return
    progress = shown["progress"]
    total = int(progress.get("runs") or len(shown["plan"].get("runs", [])) or 1)
    done = int(progress.get("done") or 0)
    status = progress.get("status", "not started")
    st.progress(min(1.0, done / total), text=f"{done}/{total} runs finished ({status})"
                + (f"; training: {', '.join(progress['active'])}" if progress.get("active") else "")
                + (f"; failed: {', '.join(progress['failed'])}" if progress.get("failed") else ""))
    if shown["verdicts"]:
        st.markdown(shown["verdicts"])
    if shown["rows"]:
        st.subheader("Runs")
        st.dataframe(studies.table_for_display(shown["rows"]), hide_index=True, use_container_width=True)
        figures = studies.figures_of_folder(folder_text)
        for figure in figures:
            st.plotly_chart(figure, use_container_width=True)
        if shown["html"].is_file():
            st.download_button("Download study.html", shown["html"].read_bytes(), file_name="study.html",
                               mime="text/html", key="study_html")


show(folder)
