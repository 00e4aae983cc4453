"""Train: every training option, a background training with live progress, cancel, and the new model."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from moleseg.app import charts, serverpaths, trainstatus, ui
from moleseg.app.models import model_choices
from moleseg.engine import jobs, launch, trainlock
from moleseg.core.config import FINETUNE_EPOCHS, corrections_dir, example_cache_dir, runs_dir
from moleseg.core.roots import OutsideRootsError, resolve_inside_folder, resolve_inside_roots
from moleseg.engine.finetune import corrections_pairs, finetune_config
from moleseg.engine.runs import RunFiles, read_history
from moleseg.engine.session import dataset_list
from moleseg.core import options
from moleseg.core.targets import SHAPES

#: The widget (its session-state key) of every settable training option of moleseg.core.options; the keys of
#: the network-fit widgets get the number of classes appended. tests/test_options.py walks this mapping.
WIDGETS: dict[str, str] = {
    "images": "train_datasets", "masks": "train_datasets", "validation_images": "train_validation",
    "validation_masks": "train_validation", "test_images": "train_test", "test_masks": "train_test",
    "model.architecture": "train_architecture", "model.backbone": "train_backbone",
    "model.input_size": "train_input_size", "model.n_classes": "train_classes", "model.separable": "train_separable",
    "model.decoder_width": "train_decoder_width", "model.aspp_rates": "train_aspp", "model.dropout": "train_dropout",
    "weights": "train_weights", "border_width_px": "train_border_width", "shape": "train_shape",
    "closing_radius_px": "train_closing", "solver": "train_solver", "epochs": "train_epochs",
    "batch_size": "train_batch", "learning_rate": "train_lr", "schedule": "train_schedule",
    "momentum": "train_momentum", "loss": "train_loss", "class_weighting": "train_weighting",
    "augment": "train_augment", "rotation_deg": "train_rotation", "translation_px": "train_translation",
    "scale_range": "train_scale", "colour": "train_colour", "hard_case_share": "train_hard_cases",
    "validation_split": "train_validation_split", "validation_fold": "train_validation_fold",
    "test_split": "train_test_split", "seed": "train_seed", "early_stopping_patience": "train_patience",
    "bn_momentum": "train_bn_value", "strategy": "train_strategy", "mixed_precision": "train_precision",
    "train_fm_images": "train_fm_images", "inference": "train_inference", "crops_per_image": "train_crops",
    "crops_by_area": "train_crops_area", "tile_scale": "train_tile_scale",
    "colour_constancy": "train_colour_constancy", "calibrate": "train_calibrate", "cache_dir": "train_cache",
    "name": "train_name",
}


def key(name: str) -> str:
    """The widget key of option ``name``."""
    return WIDGETS[name]


def hint(name: str) -> str:
    """The option's help line with its allowed values, unit and default."""
    return options.option(name).describe()


def low(name: str) -> float:
    """The option's lower bound (the widgets' minimum)."""
    value = options.option(name).low
    return type(options.option(name).default)(value or 0)


def high(name: str) -> float:
    """The option's upper bound (the widgets' maximum)."""
    return type(options.option(name).default)(options.option(name).high)


RUNS = runs_dir()
EXAMPLE_CACHES = example_cache_dir()
defaults = jobs.train_defaults()
model_defaults = defaults["model"]

st.title("Train a network")
st.markdown("Trains DeepLabV3+ on your images and masks in a background process: it goes on when you close "
            "or refresh the page, and one training runs at a time. Each training writes a run folder in "
            f"`{RUNS}`; its best model (by validation FM) appears in the model picker of every page.")


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
    history = read_history(RunFiles(run_dir).history)
    if history:
        st.plotly_chart(charts.training_curves(history), key=f"train_curves_{run_dir.name}")
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


shown_run = trainstatus.run_to_show(RUNS, st.session_state.get("train_run"))
if shown_run is not None and shown_run.is_dir():
    active = jobs.read_job(shown_run).active
    st.fragment(run_every=2.0 if active else None)(progress_panel)(shown_run)

# ---- fine-tuning on the corrections dataset ---------------------------------------------------------
def finetune_section() -> None:
    """Fine-tune a model on the images corrected on the Analyse page (and, optionally, its own data)."""
    st.subheader("Fine-tune on my corrections")
    folder = corrections_dir()
    count = corrections_pairs(folder)
    if not count:
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
    epochs = b.number_input("Epochs", 1, 200, FINETUNE_EPOCHS, key="train_finetune_epochs")
    st.caption(f"{count} corrected image(s) in {folder}. The new model appears in every model picker; compare "
               "it with the old one on the Evaluate page ('Compare with').")
    if st.button("Fine-tune", key="train_finetune_start", disabled=bool(trainstatus.running())):
        try:
            config = finetune_config(spec, folder, with_training_data=with_data, epochs=int(epochs))
            run_dir = trainstatus.start(config, RUNS, config["name"])
        except (trainlock.TrainingBusy, ValueError, OSError) as error:
            st.error(ui.first_line(error) if isinstance(error, OSError) else str(error))
        else:
            st.session_state["train_run"] = str(run_dir)
            st.rerun()


finetune_section()

# ---- options ---------------------------------------------------------------------------------------
st.subheader("New training")
prepared = st.session_state.get(ui.DATASET_KEY)
ui.init_state(key("images"), f"{prepared['images']} | {prepared['masks']}" if prepared else "")
roots = serverpaths.dataset_roots()
with st.expander("Data", expanded=True):
    if not serverpaths.data_roots():
        st.info(serverpaths.NO_ROOTS_NOTICE)
    serverpaths.folder_picker(key("images"), roots, join=True)
    datasets_text = st.text_area(
        "Training datasets", key=key("images"), height=90,
        placeholder="/data/moles (holding images/ and masks/)\n/data/other/images | /data/other/masks",
        help="One dataset per line: a folder holding images/ and masks/, or 'IMAGES_DIR | MASKS_DIR', inside "
             "the folders this server offers (or your own dataset). Several datasets are combined. The Prepare page fills in the dataset chosen there.")
    validation_text = st.text_area("Validation datasets (optional)", key=key("validation_images"), height=68,
                                   help="Empty: a random share of the training pairs is held out (below).")
    test_text = st.text_area("Test datasets (optional)", key=key("test_images"), height=68,
                             help="Evaluated once at the end with the best model (and the classical baseline).")
    a, f, b = st.columns(3)
    validation_split = a.slider("Validation share", low("validation_split"), 0.5, defaults["validation_split"], 0.05,
                                key=key("validation_split"), disabled=bool(validation_text.strip()),
                                help=hint("validation_split"))
    validation_fold = f.number_input("Validation fold", low("validation_fold"), None, defaults["validation_fold"],
                                     key=key("validation_fold"), disabled=bool(validation_text.strip()),
                                     help=hint("validation_fold"))
    test_split = b.slider("Test share", low("test_split"), 0.5, defaults["test_split"], 0.05, key=key("test_split"),
                          help=hint("test_split"))
    a, b, c = st.columns(3)
    reference = defaults["size_reference_px"]
    border_width = a.number_input(f"Border width (px at a {reference} px input)", low("border_width_px"), 50,
                                  defaults["border_width_px"], key=key("border_width_px"), help=hint("border_width_px"))
    shape = b.selectbox("Structuring element", SHAPES, index=SHAPES.index(defaults["shape"]), key=key("shape"),
                        help=hint("shape"))
    closing = c.number_input(f"Closing radius (px at a {reference} px input)", low("closing_radius_px"), 100,
                             defaults["closing_radius_px"], key=key("closing_radius_px"), help=hint("closing_radius_px"))

with st.expander("Network"):
    a, b, c = st.columns(3)
    n_classes = a.radio("Classes", list(options.CLASS_COUNTS), key=key("model.n_classes"), horizontal=True,
                        format_func=lambda n: "3: back/border/inside" if n == 3 else "2: cells")
    architecture = b.selectbox("Architecture", jobs.ARCHITECTURES, key=key("model.architecture"),
                               help=hint("model.architecture"))
    backbone = c.selectbox("Backbone (encoder)", jobs.BACKBONES, key=key("model.backbone"), help=hint("model.backbone"))
    a, b, c = st.columns(3)
    sizes = [size for size in (64, 128, 160, 192, 224, 256, 288, 320, 384, 448, 512)
             if not options.option("model.input_size").problems(size)]
    input_size = a.selectbox("Input size (px)", sizes, index=sizes.index(model_defaults["input_size"]),
                             key=key("model.input_size"), help=hint("model.input_size"))
    a.caption(f"At {input_size} px: border {options.scaled_px(int(border_width), int(input_size), reference)} px, "
              f"closing radius {options.scaled_px(int(closing), int(input_size), reference)} px "
              f"(set at {reference} px in Data).")
    widths = [64, 128, 256]
    decoder_width = b.selectbox("Decoder width", widths, index=widths.index(model_defaults["decoder_width"]),
                                key=key("model.decoder_width"), help=hint("model.decoder_width"))
    dropout = c.slider("Dropout after ASPP", low("model.dropout"), 0.5, model_defaults["dropout"], 0.05,
                       key=key("model.dropout"), help=hint("model.dropout"))
    a, b = st.columns(2)
    aspp_text = a.text_input("ASPP dilation rates", ", ".join(map(str, model_defaults["aspp_rates"])),
                             key=key("model.aspp_rates"), help=hint("model.aspp_rates"))
    separable = b.checkbox("Separable convolutions", model_defaults["separable"], key=key("model.separable"),
                           help=hint("model.separable"))
    a, b, c = st.columns(3)
    fits = list(jobs.INFERENCE_FITS)
    fit = a.selectbox("Images meet the network", fits, index=fits.index(jobs.default_inference(n_classes)),
                      key=f"{key('inference')}_{n_classes}", format_func=jobs.INFERENCE_FITS.get,
                      help="Resize: the whole image is squeezed to the input (moles). Tiles: random crops at "
                           "the image's own scale for training and overlapping tiles for prediction, so small "
                           "objects such as nuclei keep their size (cells).")
    crops = b.number_input("Crops per image and epoch", low("crops_per_image"), 64, defaults["crops_per_image"],
                           key=f"{key('crops_per_image')}_{n_classes}", disabled=fit != "tiles",
                           help=hint("crops_per_image"))
    crops_by_area = c.checkbox("More crops from larger images", fit == "tiles",
                               key=f"{key('crops_by_area')}_{n_classes}",
                               disabled=fit != "tiles",
                               help="One crop per input-sized area (up to 16), so a large field weighs as much "
                                    "as the small fields it holds.")
    tile_scale = c.number_input("Enlarge images before tiling (x)", low("tile_scale"), high("tile_scale"),
                                jobs.shipped_default("tile_scale", n_classes), 0.25,
                                key=f"{key('tile_scale')}_{n_classes}", disabled=fit != "tiles",
                                help=hint("tile_scale"))
    constancies = list(options.option("colour_constancy").choices)
    colour_constancy = a.selectbox("Colour correction", constancies,
                                   index=constancies.index(jobs.shipped_default("colour_constancy", n_classes)),
                                   key=f"{key('colour_constancy')}_{n_classes}", help=hint("colour_constancy"))
    shipped = jobs.default_weights(n_classes)
    weight_options = (["shipped"] if shipped != "imagenet" else []) + ["imagenet", "none", "file"]
    weight_labels = {"shipped": f"fine-tune the shipped model ({Path(shipped).name})",
                     "imagenet": "ImageNet encoder", "none": "random (from scratch)", "file": "another .keras model"}
    weights_choice = st.radio("Start from", weight_options, key=key("weights"), format_func=weight_labels.get,
                              help="Fine-tuning copies every layer whose name and shape match (same backbone).")
    weights_file = ""
    if weights_choice == "file":
        weights_file = st.text_input("Model file to start from", key="train_weights_file",
                                     help="A .keras file inside the folders this server offers, or in a run.")

with st.expander("Solver"):
    a, b, c = st.columns(3)
    solver = a.selectbox("Solver", jobs.SOLVERS, index=jobs.SOLVERS.index(defaults["solver"]), key=key("solver"),
                         help=hint("solver"))
    epochs = b.number_input("Epochs", low("epochs"), 1000, defaults["epochs"], key=key("epochs"), help=hint("epochs"))
    batch_size = c.number_input("Mini-batch size", low("batch_size"), 256, defaults["batch_size"], key=key("batch_size"),
                                 help=hint("batch_size"))
    a, b, c = st.columns(3)
    learning_rate = a.number_input("Learning rate", 1e-6, 1.0, defaults["learning_rate"], format="%.6f",
                                   step=1e-4, key=key("learning_rate"), help=hint("learning_rate"))
    schedule = b.selectbox("Learning-rate schedule", jobs.SCHEDULES, index=jobs.SCHEDULES.index(defaults["schedule"]),
                           key=key("schedule"), help=hint("schedule"))
    momentum = c.number_input("Momentum (sgdm)", low("momentum"), 0.999, defaults["momentum"], key=key("momentum"),
                              disabled=solver != "sgdm", help=hint("momentum"))
    a, b, c = st.columns(3)
    loss = a.selectbox("Loss", jobs.LOSSES, index=jobs.LOSSES.index(defaults["loss"]), key=key("loss"), help=hint("loss"))
    class_weighting = b.checkbox("Inverse-frequency class weights", defaults["class_weighting"],
                                 key=key("class_weighting"), help=hint("class_weighting"))
    patience = c.number_input("Early stopping (epochs, 0: off)", low("early_stopping_patience"), 1000,
                              defaults["early_stopping_patience"], key=key("early_stopping_patience"),
                              help=hint("early_stopping_patience"))

with st.expander("Augmentation"):
    augment = st.multiselect("Random transformations", jobs.AUGMENTATIONS, defaults["augment"], key=key("augment"),
                             help=hint("augment"))
    a, b = st.columns(2)
    rotation = a.slider("Rotation range (+- degrees)", low("rotation_deg"), float(options.option("rotation_deg").high),
                        defaults["rotation_deg"], 5.0, key=key("rotation_deg"), help=hint("rotation_deg"))
    translation = b.number_input("Translation range (+- px)", low("translation_px"), 200.0, defaults["translation_px"],
                                 key=key("translation_px"), help=hint("translation_px"))
    scale = a.slider("Scale range (+-)", low("scale_range"), 0.5, defaults["scale_range"], 0.05, key=key("scale_range"),
                     help=hint("scale_range"))
    colour = b.slider("Colour jitter strength", low("colour"), float(options.option("colour").high), defaults["colour"],
                      0.05, key=key("colour"), help=hint("colour"))
    hard_cases = a.slider(f"Hard-case share ({', '.join(options.HARD_CASES)})", low("hard_case_share"),
                          float(options.option("hard_case_share").high), defaults["hard_case_share"], 0.05,
                          key=key("hard_case_share"), help=hint("hard_case_share"))

with st.expander("Advanced"):
    a, b, c = st.columns(3)
    seed = a.number_input("Random seed", low("seed"), 2**31 - 1, defaults["seed"], key=key("seed"), help=hint("seed"))
    strategy = b.selectbox("Distribution", jobs.STRATEGIES, key=key("strategy"), help=hint("strategy"))
    precision = c.selectbox("Mixed precision", jobs.PRECISIONS, key=key("mixed_precision"), help=hint("mixed_precision"))
    a, b, c = st.columns(3)
    auto_bn = a.checkbox("BatchNorm momentum: automatic", True, key="train_bn_auto",
                         help="Chosen so the moving statistics converge within half the training steps.")
    bn_value = b.number_input("BatchNorm momentum", 0.01, 0.999, 0.9, key=key("bn_momentum"), disabled=auto_bn,
                              help=hint("bn_momentum"))
    fm_images = c.number_input("Training images scored per epoch", low("train_fm_images"), 1000,
                               defaults["train_fm_images"], key=key("train_fm_images"), help=hint("train_fm_images"))
    calibrate = st.checkbox("Choose flips and lesion threshold by validation FM after training", defaults["calibrate"],
                            key=key("calibrate"),
                            help="Tries flip test-time augmentation and lesion probability thresholds on the "
                                 "validation images and stores the best in the model (arg-max unless it gains).")
    a, b = st.columns(2)
    run_name = a.text_input("Run name", "", key=key("name"), placeholder=f"{architecture}-{backbone}",
                            help="Start of the run folder's name (a date is appended) and the model's name.")
    cache_name = b.text_input("Example cache name (optional)", "", key=key("cache_dir"),
                              help="A name for the resized examples cached between trainings, kept in the app's "
                                   f"cache folder ({EXAMPLE_CACHES}); empty: the shared cache there.")

# ---- start -----------------------------------------------------------------------------------------
problems: list[str] = []
try:
    train_sets = dataset_list(datasets_text, roots)
    validation_sets = dataset_list(validation_text, roots)
    test_sets = dataset_list(test_text, roots)
except ValueError as error:
    problems.append(str(error))
    train_sets, validation_sets, test_sets = [], [], []
try:
    aspp_rates = [int(part) for part in aspp_text.replace(";", ",").split(",") if part.strip()]
except ValueError:
    aspp_rates = []
if len(aspp_rates) != 3 or min(aspp_rates, default=0) < 1:
    problems.append("ASPP dilation rates: give three whole numbers, e.g. 6, 12, 18")

weights = {"shipped": shipped, "imagenet": "imagenet", "none": "none", "file": ""}[weights_choice]
if weights_choice == "file":
    try:
        weights = str(resolve_inside_roots(weights_file, serverpaths.model_file_roots(), file=True))
    except OutsideRootsError as error:
        problems.append(f"Model file to start from: {error}")
cache_folder = None
if cache_name.strip():
    try:
        cache_folder = str(resolve_inside_folder(cache_name, EXAMPLE_CACHES))
    except OutsideRootsError:
        problems.append(f"Example cache name: {cache_name.strip()!r} is not a plain name (no folders, not hidden)")
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
    "scale_range": float(scale), "colour": float(colour), "hard_case_share": float(hard_cases),
    "validation_split": 0.0 if validation_sets else float(validation_split), "test_split": float(test_split),
    "validation_fold": defaults["validation_fold"] if validation_sets else int(validation_fold),
    "seed": int(seed), "early_stopping_patience": int(patience), "bn_momentum": "auto" if auto_bn else float(bn_value),
    "strategy": strategy, "mixed_precision": precision, "train_fm_images": int(fm_images),
    "cache_dir": cache_folder, "name": run_name.strip() or None,
    "inference": fit, "crops_per_image": int(crops), "crops_by_area": bool(crops_by_area and fit == "tiles"),
    "tile_scale": float(tile_scale) if fit == "tiles" else defaults["tile_scale"],
    "colour_constancy": colour_constancy,
    "calibrate": bool(calibrate),
}

st.session_state["train_config"] = config  # what Start would train with (shown in tests and below)
with st.expander("Configuration (JSON)"):
    st.json(config, expanded=False)

busy = trainstatus.busy_sentence()
if busy:
    st.info(f"{busy} Only one training runs at a time: start the next one when it has finished.")
if st.button("Start training", type="primary", key="train_start", disabled=bool(busy)):
    problems = problems or jobs.check_config(config)
    if problems:
        for problem in problems:
            st.error(problem)
    else:
        try:
            run_dir = trainstatus.start(config, RUNS, run_name.strip() or f"{architecture}-{backbone}")
        except (trainlock.TrainingBusy, ValueError, OSError) as error:
            st.error(ui.first_line(error) if isinstance(error, OSError) else str(error))
        else:
            st.session_state["train_run"] = str(run_dir)
            st.rerun()

# ---- trained models --------------------------------------------------------------------------------
st.subheader("Trained models")
choice = ui.model_picker("train_model", label="Model picker",
                         help="The same list as on the Analyse and Evaluate pages; your runs are at the end.")
ui.show_model_info(choice)
finished = trainstatus.runs_table(RUNS)
if finished:
    with st.expander(f"Trainings started from the app ({len(finished)})"):
        st.dataframe(finished, hide_index=True, width="stretch")
