"""Evaluate: score a model against true masks (FM, CM, CR, Jaccard, HD95), beside the classical
baseline or another model (e.g. the model before and after fine-tuning on the corrections), show the
worst images, and compare training runs side by side."""

from __future__ import annotations

import streamlit as st

from moleseg.app import charts, serverpaths, ui
from moleseg.app.evaluation import (BORDER_FM_TEXT, WORST_CAPTION, WORST_SHOWN, WORST_SHOWN_MAX, baseline_choice,
                                    comparable_models, evaluation_key, evaluation_task, per_image_fm, runs_table,
                                    summary_rows)
from moleseg.app.identity import user_space
from moleseg.app.models import model_choices
from moleseg.core.config import BASELINE_NAME
from moleseg.engine.finetune import corrections_pairs
from moleseg.core.pairing import PairingError, pair_folders
from moleseg.core.words import capitalised, count_of
from moleseg.engine.runs import list_runs
from moleseg.engine.session import dataset_folders
from moleseg.engine.tasks import TooManyTasks

st.title("Evaluate")
st.markdown("Scores a model's cleaned lesions against true masks, image by image at each image's own size: "
            "**FM** (F-measure, Dice), **CM** (completeness), **CR** (correctness), **Jaccard** and **HD95** "
            "(95th-percentile Hausdorff distance, px).")

choice = ui.model_picker("evaluate_model")
ui.show_model_info(choice)
EVALUATED_WHEN_READY = "Evaluate is enabled when it is ready"
ready = ui.model_prepared(choice, EVALUATED_WHEN_READY)  # a user's own model: its inference form made first
ui.init_state("evaluate_folder", ui.prepared_dataset_text())
roots = serverpaths.dataset_picker("evaluate_folder")
folder = st.text_input("Test set", key="evaluate_folder", placeholder="/data/moles/test",
                       help=serverpaths.DATASET_PATH_HELP)
space = user_space()
corrected = corrections_pairs(space.dataset)
if corrected:
    st.button(f"Use my corrections dataset ({count_of(corrected, 'image')})", key="evaluate_use_corrections",
              on_click=lambda: st.session_state.update(evaluate_folder=str(space.dataset)),
              help="The images saved from the Analyse page with their corrected masks.")
others = comparable_models(choice, model_choices())
compare_spec = st.selectbox("Compare with", [""] + list(others), key="evaluate_compare",
                            format_func=lambda spec: others[spec].label if spec else "no other model",
                            help="Score another model of the same kind (dermoscopy or cells) on the same images "
                                 "beside it, e.g. the model before and after fine-tuning on your corrections. It "
                                 "takes the classical baseline's place.")
compare = others.get(compare_spec)
ready = (compare is None or ui.model_prepared(compare, EVALUATED_WHEN_READY)) and ready
a, b, c = st.columns(3)
is_classical = choice.kind == "classical"
with_baseline = a.checkbox("Classical baseline beside it", not is_classical, key="evaluate_baseline",
                           disabled=is_classical or compare is not None)
with_hd95 = b.checkbox("HD95 (slower)", True, key="evaluate_hd95")
worst_count = c.number_input("Worst images shown", 0, WORST_SHOWN_MAX, WORST_SHOWN, key="evaluate_worst")


def show_evaluation(result: dict) -> None:
    summary, baseline = result["summary"], result["baseline"]
    st.subheader(f"{ui.plain_markdown(result['model'])} on {ui.plain_markdown(str(result['folder']))}")
    st.caption(result["pairing"].splitlines()[0])
    if result.get("training_overlap"):
        st.warning(ui.sentence(result["training_overlap"]), icon=":material/warning:")
    for name, reason in result["failures"]:
        st.error(ui.plain_markdown(f"{name}: {reason}" if not reason.startswith(name) else reason))
    for warning in result.get("mask_warnings", []):  # they name masks of a shared dataset: anyone's text
        st.warning(ui.plain_markdown(warning), icon=":material/warning:")
    if not summary.get("n"):
        st.warning("No image could be evaluated.")
        return
    cells = st.columns(3)
    cells[0].metric("Images", summary["n"])
    cells[1].metric("Mean FM", f"{summary['fm']['mean']:.4f}")
    baseline_name = result.get("baseline_name", BASELINE_NAME)
    if baseline and baseline.get("n"):
        cells[2].metric(f"{capitalised(baseline_name)}: mean FM", f"{baseline['fm']['mean']:.4f}",
                        delta=f"{summary['fm']['mean'] - baseline['fm']['mean']:+.4f} for the model")
    st.plotly_chart(charts.fm_per_image(per_image_fm(summary),
                                        per_image_fm(baseline) if baseline else None,
                                        model_name=result["name"], baseline_name=baseline_name),
                    key="evaluate_fm_chart")
    st.dataframe(summary_rows(summary, baseline, model_name=result["name"],
                              baseline_name=baseline_name), hide_index=True, width="stretch")
    if "border_fm" in summary:
        st.caption(BORDER_FM_TEXT)
    with st.expander("Every image"):
        st.dataframe(summary["per_image"], hide_index=True, width="stretch")
    if result["pictures"]:
        st.markdown(WORST_CAPTION)
        columns = st.columns(min(4, len(result["pictures"])))
        fm = dict(result["worst"])
        for index, (name, picture) in enumerate(result["pictures"]):
            caption = f"{ui.plain_markdown(name)}: FM {fm.get(name, float('nan')):.3f}"  # a shared set's file name
            columns[index % len(columns)].image(picture, caption=caption, width="stretch")


if st.button("Evaluate", type="primary", key="evaluate_run", disabled=not ready):
    try:
        images_dir, masks_dir = dataset_folders(folder, roots)
        report = pair_folders(images_dir, masks_dir)
    except (ValueError, PairingError, OSError) as error:
        st.error(ui.plain_markdown(str(error)))  # may name a file of a shared dataset: anyone's text
    else:
        segmenter = ui.load_segmenter(choice)
        if segmenter is not None:
            beside, baseline_name = baseline_choice(choice, segmenter.n_classes, compare=compare,
                                                    with_baseline=with_baseline)
            baseline = ui.load_segmenter(beside) if beside is not None else None
            key = evaluation_key(choice, images_dir, masks_dir, with_baseline=baseline is not None,
                                 with_hd95=with_hd95, worst_count=int(worst_count), compare=compare)
            try:
                ui.submit_task(key, evaluation_task(
                    segmenter, report, baseline=baseline, with_hd95=with_hd95, worst_count=int(worst_count),
                    model=choice.label, folder=folder, baseline_name=baseline_name))
            except TooManyTasks as error:
                st.error(str(error))
            else:
                st.session_state["evaluate_task"] = key

if "evaluate_task" in st.session_state:
    ui.follow_task(st.session_state["evaluate_task"], show_evaluation, failure="The evaluation failed")

st.subheader("Compare training runs")
runs = list_runs(space.runs)
if not runs:
    st.caption("No training run yet: train one on the Train page.")
else:
    names = [run.name for run in runs]
    picked = st.multiselect("Runs", names, names[:10], key="evaluate_runs")
    rows = runs_table([run for run in runs if run.name in picked])
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch")
        st.caption("Test FM comes from each run's own test split (evaluation.json); training time is the wall "
                   "time of the whole job: preparation, epochs, validation, calibration and the test evaluation.")
