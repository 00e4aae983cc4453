"""Train: every training option, a background training with live progress, cancel, and the new model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import streamlit as st

from moleseg.app import charts, serverpaths, trainform, trainstatus, ui
from moleseg.app.identity import require_user, user_space
from moleseg.app.models import model_choices
from moleseg.app.quota import check_session_quota
from moleseg.engine import jobs, launch, trainlock, trainqueue
from moleseg.core.config import FINETUNE_EPOCHS
from moleseg.engine.finetune import finetune_config, finetune_plan
from moleseg.engine.runs import RunFiles
from moleseg.core import options
from moleseg.core.errors import first_line
from moleseg.core.words import capitalised

SPACE = user_space()
RUNS = SPACE.runs
OWN_RUNS = RUNS if SPACE.shared else None  # on a shared server, other users' trainings are anonymous

st.title("Train a network")
st.markdown("Trains DeepLabV3+ on your images and masks in a background process: it goes on when you close "
            "or refresh the page, and one training runs at a time: while one runs, yours waits its turn in the "
            "queue. Each training writes a run folder in "
            f"`{RUNS}`; its best model (by validation FM) appears in the model picker of every page.")


def start_training(make_config: Callable[[], dict[str, Any]], queue: bool = False) -> None:
    """Start (or, with ``queue``, queue) the training ``make_config()`` gives, once the session is within its
    quota, and follow it; or say why not."""
    try:
        check_session_quota()
        if queue:
            run_dir = trainstatus.queue(make_config(), RUNS)
        else:
            run_dir = trainstatus.start(make_config(), RUNS, own_runs=OWN_RUNS)
    except (trainlock.TrainingBusy, trainqueue.QueueRefused, ValueError, OSError) as error:
        message = first_line(error) if isinstance(error, OSError) else str(error)
        st.error(capitalised(message) if isinstance(error, trainqueue.QueueRefused) else message)
    else:
        if not queue:  # a queued one is shown once it runs (it holds the lock)
            st.session_state["train_run"] = str(run_dir)
        st.rerun()


def withdraw(owner: Path | str = RUNS) -> None:
    """Take the training of ``owner`` (the user's runs; another's for an admin) out of the queue (a button's
    callback)."""
    try:
        if not trainqueue.withdraw(owner):
            st.session_state["train_withdrawn"] = "That training had already left the queue (it may have started)."
    except trainqueue.QueueRefused as error:
        st.session_state["train_withdrawn"] = capitalised(str(error)) + "."


# ---- progress of the running (or last) training ----------------------------------------------------
def progress_panel(run_dir: Path) -> None:
    shown = trainstatus.view(run_dir)
    status = shown.status
    st.subheader(shown.heading)
    if status.active:
        st.session_state["train_seen_active"] = str(run_dir)
    if status.status == "starting":
        st.progress(0.0, text="starting (loading TensorFlow)...")
    elif status.active:  # the bar and ETA of the current phase: training steps, validation, calibration, test
        st.progress(status.fraction, text=status.describe())
    elif status.status == "done":
        st.progress(1.0, text="done")
    if shown.problem:
        st.warning(shown.problem)
    cells = st.columns(4)
    cells[0].metric("Status", status.status)
    cells[1].metric("Loss", f"{status.loss:.4f}" if status.loss is not None else "\u2014")
    cells[2].metric("Elapsed", jobs.format_duration(shown.elapsed_seconds),
                    help="Wall time of the whole job: preparation, epochs, validation, calibration and test.")
    cells[3].metric("Time left in this phase", jobs.format_duration(status.eta_seconds) if status.active else "\u2014")
    if shown.history:
        st.plotly_chart(charts.training_curves(list(shown.history)), key=f"train_curves_{run_dir.name}")
    elif status.active:
        st.caption("The curves appear after the first epoch.")
    if status.active:
        if status.cancel_requested:
            st.info("Cancelling after the current step (or batch of images)...")
        else:
            st.button("Cancel training", key="train_cancel", on_click=launch.request_cancel, args=(run_dir,),
                      help="Stops after the current step; the best model so far is kept.")
    elif status.status == "done":
        st.success(shown.finished_text())
    elif status.status == "cancelled":
        st.warning("Training cancelled." + (" The best model so far is in the model picker."
                                            if RunFiles(run_dir).model.is_file() else ""))
    else:
        st.error(f"Training {status.status}: {status.error or 'see the log'}")
    if not status.active:
        with st.expander("Log"):
            st.code(jobs.log_tail(run_dir), language=None)
        if st.session_state.get("train_seen_active") == str(run_dir):
            st.session_state["train_seen_active"] = None
            st.rerun(scope="app")  # refresh the model picker


shown_run = trainstatus.run_to_show(RUNS, st.session_state.get("train_run"), OWN_RUNS)
if shown_run is not None and shown_run.is_dir():
    active = jobs.read_job(shown_run).active
    st.fragment(run_every=2.0 if active else None)(progress_panel)(shown_run)
    new_model = None if active else next((c for c in model_choices() if c.path == RunFiles(shown_run).model), None)
    if new_model is not None:  # a finished training of this user: its model prepared before Analyse needs it
        ui.model_prepared(new_model, "Analyse, Evaluate and Compare use it when it is ready")

# ---- fine-tuning on the corrections dataset ---------------------------------------------------------
def finetune_section() -> None:
    """Fine-tune a model on the images corrected on the Analyse page (and, optionally, its own data)."""
    st.subheader("Fine-tune on my corrections")
    folder = SPACE.dataset
    plan = finetune_plan(folder)
    if not plan.pairs:
        st.caption("No corrected image there yet: correct a border on the Analyse page and save it to your "
                   "dataset, then fine-tune the model on it here.")
        return
    models = [c for c in model_choices() if c.kind != "classical" and c.path and c.path.is_file()]
    if not models:
        st.caption("No network model to fine-tune.")
        return
    specs = [c.spec for c in models]
    current = st.session_state.get(ui.MODEL_KEY)
    spec = st.selectbox("Model to fine-tune", specs, index=specs.index(current) if current in specs else 0,
                        format_func={c.spec: c.label for c in models}.get, key="train_finetune_model",
                        help="Starts from this model's weights and keeps its network, targets and cleanup.")
    a, b = st.columns(2)
    with_data = a.checkbox("Also the data it was trained on", key="train_finetune_with_data",
                           help="Adds the training folders the model file records (those still on this "
                                "machine), so that it does not forget them; slower.")
    epochs_option = options.option("epochs")
    epochs = b.number_input(trainform.title(epochs_option), int(epochs_option.low), int(epochs_option.high),
                            FINETUNE_EPOCHS, key="train_finetune_epochs")
    st.caption(f"{plan.sentence()} The new model appears in every model picker ({folder}).")
    now = trainstatus.may_start_now(trainstatus.busy_sentence(OWN_RUNS))  # else it waits in the queue
    if st.button("Fine-tune" if now else "Queue the fine-tune", key="train_finetune_start", disabled=not plan.ready,
                 help=plan.sentence() if not plan.ready else None if now else "Another training runs: this one "
                      "waits its turn and starts by itself, even with this page closed."):
        start_training(lambda: finetune_config(spec, folder, with_training_data=with_data, epochs=int(epochs),
                                               roots=serverpaths.dataset_roots()), queue=not now)


finetune_section()

# ---- options ---------------------------------------------------------------------------------------
st.subheader("New training")
config, problems = trainform.option_form(ui.prepared_dataset_text())
reference, size = config["size_reference_px"], config["model"]["input_size"]
st.caption(f"At {size} px: border {options.scaled_px(config['border_width_px'], size, reference)} px, closing radius "
           f"{options.scaled_px(config['closing_radius_px'], size, reference)} px (given at {reference} px in Data).")

st.session_state["train_config"] = config  # what Start would train with (shown in tests and below)
with st.expander("Configuration (JSON)"):
    st.json(config, expanded=False)

busy = trainstatus.busy_sentence(OWN_RUNS)
other = trainstatus.other_users_training(OWN_RUNS)
if other is not None:
    st.info(busy)
    if require_user().admin and other.run_dir is not None:
        st.button("Cancel that training", key="train_cancel_other", on_click=launch.request_cancel,
                  args=(other.run_dir,), help="As an admin: stops it after the current step; its best model is kept.")
elif busy:
    st.info(f"{busy} Only one training runs at a time: queue yours, it starts when that one has finished.")
if require_user().admin and SPACE.shared and (waiting := trainstatus.queue_rows()):
    with st.expander(f"Queued trainings ({len(waiting)})"):
        st.dataframe([{key: row[key] for key in ("place", "user", "run", "queued")} for row in waiting],
                     hide_index=True, width="stretch")
        st.selectbox("Queued training", range(len(waiting)), key="train_queue_pick",
                     format_func=lambda index: f"{waiting[index]['place']}: {waiting[index]['run']}")
        st.button("Withdraw it", key="train_withdraw_other", on_click=lambda: withdraw(
            waiting[st.session_state["train_queue_pick"]]["owner"]),
            help="As an admin: takes that training out of the queue.")
if note := st.session_state.pop("train_withdrawn", None):
    st.warning(note)
queued = trainstatus.queue_sentence(RUNS)
if queued:
    st.info(queued)
    st.button("Withdraw from the queue", key="train_withdraw", on_click=withdraw,
              help="Takes your training out of the queue; its options stay in the form.")
start = trainstatus.may_start_now(busy)  # else wait in the queue, oldest first
if st.button("Start training", type="primary", key="train_start", disabled=not start) or (
        not start and st.button("Queue training", type="primary", key="train_queue",
                                help="Waits its turn and starts by itself, even with this page closed.")):
    problems = problems or jobs.check_config(config)
    if problems:
        for problem in problems:
            st.error(problem)
    else:
        start_training(lambda: config, queue=not start)

# ---- trained models --------------------------------------------------------------------------------
st.subheader("Trained models")
choice = ui.model_picker("train_model", label="Model picker",
                         help="The same list as on the Analyse and Evaluate pages; your runs are at the end.")
ui.show_model_info(choice)
finished = trainstatus.runs_table(RUNS)
if finished:
    with st.expander(f"Trainings started from the app ({len(finished)})"):
        st.dataframe(finished, hide_index=True, width="stretch")
