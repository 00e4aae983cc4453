"""Train: every training option, a background training with live progress, cancel, and the new model."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from moleseg.app import charts, ui
from moleseg.engine import jobs
from moleseg.core.config import runs_dir
from moleseg.engine.runs import read_history, read_json
from moleseg.engine.session import dataset_list
from moleseg.core.targets import SHAPES

RUNS = runs_dir()
defaults = jobs.train_defaults()
model_defaults = defaults["model"]

st.title("Train a network")
st.markdown("Trains DeepLabV3+ on your images and masks in a background process: it goes on when you close "
            "or refresh the page, and one training runs at a time. Each training writes a run folder in "
            f"`{RUNS}`; its best model (by validation FM) appears in the model picker of every page.")


# ---- progress of the running (or last) training ----------------------------------------------------
def progress_panel(run_dir: Path) -> None:
    status = jobs.read_job(run_dir)
    st.subheader(f"Training {run_dir.name}")
    if status.active:
        st.session_state["train_seen_active"] = str(run_dir)
    text = {"starting": "starting (loading TensorFlow)...", "running": f"{status.phase}: {status.message}",
            "done": "done", "cancelled": "cancelled", "failed": "failed", "died": "stopped unexpectedly"}.get(
        status.status, status.status)
    if status.epochs and status.status == "running":
        text = (f"epoch {status.epoch}/{status.epochs}, step {status.step}/{status.steps}"
                f" ({status.phase}); ETA {jobs.format_duration(status.eta_seconds)}")
    st.progress(status.fraction, text=text)
    cells = st.columns(4)
    cells[0].metric("Status", status.status)
    cells[1].metric("Loss", f"{status.loss:.4f}" if isinstance(status.loss, (int, float)) else "\u2014")
    cells[2].metric("Elapsed", jobs.format_duration(status.elapsed_seconds))
    cells[3].metric("Time left", jobs.format_duration(status.eta_seconds) if status.active else "\u2014")
    history = read_history(run_dir / "history.csv")
    if history:
        st.plotly_chart(charts.training_curves(history), key=f"train_curves_{run_dir.name}")
    elif status.active:
        st.caption("The curves appear after the first epoch.")
    if status.active:
        if status.cancel_requested:
            st.info("Cancelling after the current step...")
        else:
            st.button("Cancel training", key="train_cancel", on_click=jobs.request_cancel, args=(run_dir,),
                      help="Stops after the current step; the best model so far is kept.")
    elif status.status == "done":
        fm = status.result.get("best_val_fm")
        st.success(f"Training finished: best validation FM {fm:.4f} at epoch {status.result.get('best_epoch')}. "
                   "Its model is in the model picker below and on the Analyse and Evaluate pages."
                   if isinstance(fm, (int, float)) else "Training finished.")
    elif status.status == "cancelled":
        st.warning("Training cancelled." + (" The best model so far is in the model picker."
                                            if (run_dir / "model.keras").is_file() else ""))
    else:
        st.error(f"Training {status.status}: {status.error or 'see the log'}")
    if not status.active:
        with st.expander("Log"):
            st.code(jobs.log_tail(run_dir), language=None)
        if st.session_state.get("train_seen_active") == str(run_dir):
            st.session_state["train_seen_active"] = None
            st.rerun(scope="app")  # refresh the model picker


holder = jobs.active_training(RUNS)
shown = Path(holder["run_dir"]) if holder and holder.get("run_dir") else None
if shown is None and st.session_state.get("train_run"):
    shown = Path(st.session_state["train_run"])
if shown is None and jobs.list_jobs(RUNS):  # e.g. after a browser refresh: the last training and its outcome
    shown = jobs.list_jobs(RUNS)[0]
if shown is not None and shown.is_dir():
    active = jobs.read_job(shown).active
    st.fragment(run_every=2.0 if active else None)(progress_panel)(shown)

# ---- options ---------------------------------------------------------------------------------------
st.subheader("New training")
prepared = st.session_state.get(ui.DATASET_KEY)
ui.init_state("train_datasets", f"{prepared['images']} | {prepared['masks']}" if prepared else "")
with st.expander("Data", expanded=True):
    datasets_text = st.text_area(
        "Training datasets", key="train_datasets", height=90,
        placeholder="/data/moles (holding images/ and masks/)\n/data/other/images | /data/other/masks",
        help="One dataset per line: a folder holding images/ and masks/, or 'IMAGES_DIR | MASKS_DIR'. "
             "Several datasets are combined. The Prepare page fills in the dataset chosen there.")
    validation_text = st.text_area("Validation datasets (optional)", key="train_validation", height=68,
                                   help="Empty: a random share of the training pairs is held out (below).")
    test_text = st.text_area("Test datasets (optional)", key="train_test", height=68,
                             help="Evaluated once at the end with the best model (and the classical baseline).")
    a, b = st.columns(2)
    validation_split = a.slider("Validation share", 0.0, 0.5, defaults["validation_split"], 0.05,
                                key="train_validation_split", disabled=bool(validation_text.strip()))
    test_split = b.slider("Test share", 0.0, 0.5, defaults["test_split"], 0.05, key="train_test_split")
    a, b, c = st.columns(3)
    border_width = a.number_input("Border width (px of the input)", 0, 50, defaults["border_width_px"],
                                  key="train_border_width", help="Width of the BORDER class of the targets.")
    shape = b.selectbox("Structuring element", SHAPES, index=SHAPES.index(defaults["shape"]), key="train_shape")
    closing = c.number_input("Closing radius (px of the input)", 0, 100, defaults["closing_radius_px"],
                             key="train_closing", help="The model's default cleanup closing (the article: 15).")

with st.expander("Network"):
    a, b, c = st.columns(3)
    n_classes = a.radio("Classes", [3, 2], key="train_classes", horizontal=True,
                        format_func=lambda n: "3: back/border/inside" if n == 3 else "2: cells")
    architecture = b.selectbox("Architecture", jobs.ARCHITECTURES, key="train_architecture")
    backbone = c.selectbox("Backbone (encoder)", jobs.BACKBONES, key="train_backbone")
    a, b, c = st.columns(3)
    sizes = [64, 128, 160, 192, 224, 256, 288, 320, 384, 448, 512]
    input_size = a.selectbox("Input size (px)", sizes, index=sizes.index(model_defaults["input_size"]),
                             key="train_input_size", help="Images are resized to this square for the network.")
    decoder_width = b.selectbox("Decoder width", [64, 128, 256], index=1, key="train_decoder_width")
    dropout = c.slider("Dropout after ASPP", 0.0, 0.5, model_defaults["dropout"], 0.05, key="train_dropout")
    a, b = st.columns(2)
    aspp_text = a.text_input("ASPP dilation rates", ", ".join(map(str, model_defaults["aspp_rates"])),
                             key="train_aspp", help="Three rates at output stride 16 (the paper: 6, 12, 18).")
    separable = b.checkbox("Separable convolutions", model_defaults["separable"], key="train_separable")
    a, b, c = st.columns(3)
    fits = list(jobs.INFERENCE_FITS)
    fit = a.selectbox("Images meet the network", fits, index=fits.index(jobs.default_inference(n_classes)),
                      key=f"train_inference_{n_classes}", format_func=jobs.INFERENCE_FITS.get,
                      help="Resize: the whole image is squeezed to the input (moles). Tiles: random crops at "
                           "the image's own scale for training and overlapping tiles for prediction, so small "
                           "objects such as nuclei keep their size (cells).")
    crops = b.number_input("Crops per image and epoch", 1, 64, 1, key=f"train_crops_{n_classes}",
                           disabled=fit != "tiles", help="With more crops from larger images: per input-sized area.")
    crops_by_area = c.checkbox("More crops from larger images", fit == "tiles", key=f"train_crops_area_{n_classes}",
                               disabled=fit != "tiles",
                               help="One crop per input-sized area (up to 16), so a large field weighs as much "
                                    "as the small fields it holds.")
    shipped = jobs.default_weights(n_classes)
    weight_options = (["shipped"] if shipped != "imagenet" else []) + ["imagenet", "none", "file"]
    weight_labels = {"shipped": f"fine-tune the shipped model ({Path(shipped).name})",
                     "imagenet": "ImageNet encoder", "none": "random (from scratch)", "file": "another .keras model"}
    weights_choice = st.radio("Start from", weight_options, key="train_weights", format_func=weight_labels.get,
                              help="Fine-tuning copies every layer whose name and shape match (same backbone).")
    weights_file = ""
    if weights_choice == "file":
        weights_file = st.text_input("Model file to start from", key="train_weights_file")

with st.expander("Solver"):
    a, b, c = st.columns(3)
    solver = a.selectbox("Solver", jobs.SOLVERS, index=jobs.SOLVERS.index(defaults["solver"]), key="train_solver")
    epochs = b.number_input("Epochs", 1, 1000, defaults["epochs"], key="train_epochs")
    batch_size = c.number_input("Mini-batch size", 1, 256, defaults["batch_size"], key="train_batch")
    a, b, c = st.columns(3)
    learning_rate = a.number_input("Learning rate", 1e-6, 1.0, defaults["learning_rate"], format="%.6f",
                                   step=1e-4, key="train_lr")
    schedule = b.selectbox("Learning-rate schedule", jobs.SCHEDULES, index=jobs.SCHEDULES.index(defaults["schedule"]),
                           key="train_schedule")
    momentum = c.number_input("Momentum (sgdm)", 0.0, 0.999, defaults["momentum"], key="train_momentum",
                              disabled=solver != "sgdm")
    a, b, c = st.columns(3)
    loss = a.selectbox("Loss", jobs.LOSSES, index=jobs.LOSSES.index(defaults["loss"]), key="train_loss")
    class_weighting = b.checkbox("Inverse-frequency class weights", defaults["class_weighting"], key="train_weighting")
    patience = c.number_input("Early stopping (epochs, 0: off)", 0, 1000, defaults["early_stopping_patience"],
                              key="train_patience")

with st.expander("Augmentation"):
    augment = st.multiselect("Random transformations", jobs.AUGMENTATIONS, defaults["augment"], key="train_augment")
    a, b = st.columns(2)
    rotation = a.slider("Rotation range (+- degrees)", 0.0, 180.0, defaults["rotation_deg"], 5.0, key="train_rotation")
    translation = b.number_input("Translation range (+- px)", 0.0, 200.0, defaults["translation_px"],
                                 key="train_translation")
    scale = a.slider("Scale range (+-)", 0.0, 0.5, defaults["scale_range"], 0.05, key="train_scale")
    colour = b.slider("Colour jitter strength", 0.0, 1.0, defaults["colour"], 0.05, key="train_colour")

with st.expander("Advanced"):
    a, b, c = st.columns(3)
    seed = a.number_input("Random seed", 0, 2**31 - 1, defaults["seed"], key="train_seed")
    strategy = b.selectbox("Distribution", jobs.STRATEGIES, key="train_strategy",
                           help="auto: all GPUs when there are several; mirrored: all GPUs or CPUs.")
    precision = c.selectbox("Mixed precision", jobs.PRECISIONS, key="train_precision", help="auto: on with a GPU.")
    a, b, c = st.columns(3)
    auto_bn = a.checkbox("BatchNorm momentum: automatic", True, key="train_bn_auto",
                         help="Chosen so the moving statistics converge within half the training steps.")
    bn_value = b.number_input("BatchNorm momentum", 0.01, 0.999, 0.9, key="train_bn_value", disabled=auto_bn)
    fm_images = c.number_input("Training images scored per epoch", 0, 1000, defaults["train_fm_images"],
                               key="train_fm_images")
    calibrate = st.checkbox("Choose flips and lesion threshold by validation FM after training", True,
                            key="train_calibrate",
                            help="Tries flip test-time augmentation and lesion probability thresholds on the "
                                 "validation images and stores the best in the model (arg-max unless it gains).")
    a, b = st.columns(2)
    run_name = a.text_input("Run name", "", key="train_name", placeholder=f"{architecture}-{backbone}",
                            help="Start of the run folder's name (a date is appended) and the model's name.")
    cache_dir = b.text_input("Example cache folder (optional)", "", key="train_cache",
                             help="Where resized examples are cached between trainings (default ~/.cache/moleseg).")

# ---- start -----------------------------------------------------------------------------------------
problems: list[str] = []
try:
    train_sets = dataset_list(datasets_text)
    validation_sets = dataset_list(validation_text)
    test_sets = dataset_list(test_text)
except ValueError as error:
    problems.append(str(error))
    train_sets, validation_sets, test_sets = [], [], []
try:
    aspp_rates = [int(part) for part in aspp_text.replace(";", ",").split(",") if part.strip()]
except ValueError:
    aspp_rates = []
if len(aspp_rates) != 3 or min(aspp_rates, default=0) < 1:
    problems.append("ASPP dilation rates: give three whole numbers, e.g. 6, 12, 18")

weights = {"shipped": shipped, "imagenet": "imagenet", "none": "none", "file": weights_file.strip()}[weights_choice]
config = {
    **defaults,
    "images": [str(i) for i, _ in train_sets], "masks": [str(m) for _, m in train_sets],
    "validation_images": [str(i) for i, _ in validation_sets], "validation_masks": [str(m) for _, m in validation_sets],
    "test_images": [str(i) for i, _ in test_sets], "test_masks": [str(m) for _, m in test_sets],
    "model": {**model_defaults, "architecture": architecture, "backbone": backbone, "input_size": int(input_size),
              "n_classes": int(n_classes), "separable": bool(separable), "decoder_width": int(decoder_width),
              "aspp_rates": aspp_rates, "dropout": float(dropout)},
    "weights": weights, "border_width_px": int(border_width), "shape": shape, "closing_radius_px": int(closing),
    "solver": solver, "epochs": int(epochs), "batch_size": int(batch_size), "learning_rate": float(learning_rate),
    "schedule": schedule, "momentum": float(momentum), "loss": loss, "class_weighting": bool(class_weighting),
    "augment": list(augment), "rotation_deg": float(rotation), "translation_px": float(translation),
    "scale_range": float(scale), "colour": float(colour),
    "validation_split": 0.0 if validation_sets else float(validation_split), "test_split": float(test_split),
    "seed": int(seed), "early_stopping_patience": int(patience), "bn_momentum": "auto" if auto_bn else float(bn_value),
    "strategy": strategy, "mixed_precision": precision, "train_fm_images": int(fm_images),
    "cache_dir": cache_dir.strip() or None, "name": run_name.strip() or None,
    "inference": fit, "crops_per_image": int(crops), "crops_by_area": bool(crops_by_area and fit == "tiles"),
    "calibrate": bool(calibrate),
}

st.session_state["train_config"] = config  # what Start would train with (shown in tests and below)
with st.expander("Configuration (JSON)"):
    st.json(config, expanded=False)

busy = jobs.active_training(RUNS)
if busy:
    st.info("A training is running; start the next one when it has finished (or cancel it above).")
if st.button("Start training", type="primary", key="train_start", disabled=bool(busy)):
    problems = problems or jobs.check_config(config)
    if problems:
        for problem in problems:
            st.error(problem)
    else:
        try:
            run_dir = jobs.start_training(config, RUNS, name=run_name.strip() or f"{architecture}-{backbone}")
        except (jobs.TrainingBusy, ValueError, OSError) as error:
            st.error(ui.first_line(error) if isinstance(error, OSError) else str(error))
        else:
            st.session_state["train_run"] = str(run_dir)
            st.rerun()

# ---- trained models --------------------------------------------------------------------------------
st.subheader("Trained models")
choice = ui.model_picker("train_model", label="Model picker",
                         help="The same list as on the Analyse and Evaluate pages; your runs are at the end.")
ui.show_model_info(choice)
finished = jobs.list_jobs(RUNS)
if finished:
    rows = []
    for run in finished[:50]:
        status = jobs.read_job(run)
        state = read_json(run / "state.json", {}) or {}
        fm = state.get("best_val_fm")
        rows.append({"run": run.name, "status": status.status,
                     "epochs": f"{state.get('epoch', 0)}/{status.epochs or '?'}",
                     "best validation FM": round(fm, 4) if isinstance(fm, (int, float)) and fm >= 0 else None,
                     "model": "yes" if (run / "model.keras").is_file() else "no"})
    with st.expander(f"Trainings started from the app ({len(finished)})"):
        st.dataframe(rows, hide_index=True, width="stretch")
