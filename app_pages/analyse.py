"""Analyse: upload mole (or cell) images, see the lesion (or every cell) and its border, measurements, a
grid and summary of many images, correct by hand, and export them."""

from __future__ import annotations

from functools import partial

import streamlit as st

from moleseg.app import charts, ui
from moleseg.app.analysis import (ImageOutcome, Upload, analyse_uploads, automatic_cleanups, distinct_uploads,
                                  hex_to_rgb, rgb_to_hex, too_many_uploads)
from moleseg.app.cleanup_plan import (CleanupChoice, CleanupPlan, cleanup_slider_limits, cleanup_widget_values,
                                      rule_label, scope_caption, shown_image_key)
from moleseg.app.device_profiles import pixel_size_input, pixel_size_value
from moleseg.app.deidentify import WITHOUT_NAMES_HELP, WITHOUT_NAMES_LABEL
from moleseg.app.exports import LatestResults, Shown, export_stem, outline_buttons, without_names
from moleseg.app.hand_correction import (brush_width_limit, canvas_background, canvas_size, canvas_strokes,
                                         correction_key, dataset_save_message, save_to_dataset, with_corrections)
from moleseg.app.identity import Refusal, find_user_space
from moleseg.app.models import model_lesion_threshold, model_version
from moleseg.app.quota import check_session_quota
from moleseg.app.results import (DICOM_PRIVACY_NOTE, THUMBNAIL_WIDTH_PX, TO_CHECK_HEADING, batch_summary,
                                 batch_table, check_summary, default_visit, dicom_export_stem, dicom_pixel_size,
                                 dicom_visit, grid_caption, kept_with, key_measurements, measurement_html,
                                 object_areas, thumbnail_url, visit_widget_values)
from moleseg.app.settled_slider import settled_slider
from moleseg.core import options
from moleseg.core.cleanup import RULES, CleanupSettings
from moleseg.core.config import DEFAULT_CLASS_COUNT, EARLIEST_VISIT_DATE, IMAGE_EXTENSIONS, result_file_name
from moleseg.core.errors import first_line
from moleseg.engine.correction import Corrections
from moleseg.engine.pipeline import OverlayStyle, subject_words
from moleseg.engine.recordtypes import NOTES_MAX_CHARS, VISIT_FIELD_MAX_CHARS
from moleseg.engine.segmenter import Segmenter
from moleseg.core.render import legend
from moleseg.core.report import (DISCLAIMER, MEASUREMENTS_CSV, OBJECTS_CSV, Visit, cleanup_text, sidecar_name,
                                 threshold_text)
from moleseg.core.imagefile import FORMAT_NAMES
from moleseg.core.targets import SHAPES
from moleseg.core.words import count_of

title = st.empty()  # above the model picker, its words follow the model chosen below it
ui.no_model_notice()
choice = ui.model_picker("analyse_model")
words = subject_words(choice.n_classes)  # cells models speak of cells and nuclei, not moles
title.title(f"Analyse {words['images']}")
ui.show_model_info(choice)
ready = ui.model_prepared(choice)  # a user's own model: its inference form made in the background first

limit = ui.upload_limit_mb()
mode = st.radio("Upload", ["files", "a folder"], horizontal=True, key="analyse_mode",
                help="Choose a folder to upload every image in it (and its sub-folders).")
files = st.file_uploader(
    words["images"].capitalize() if mode == "files" else f"A folder of {words['images']}",
    type=[ext.lstrip(".") for ext in IMAGE_EXTENSIONS],
    accept_multiple_files=True if mode == "files" else "directory",
    key=f"analyse_upload_{'files' if mode == 'files' else 'folder'}",
    help=f"Drag and drop one or many images ({FORMAT_NAMES}), up to {limit} MB per file. "
         "Files stay in this session's memory and are not stored on the server.",
)

too_many = too_many_uploads(len(files or []))
if too_many:
    st.error(too_many)
    files = []  # refused whole: not even the first ones are read
uploads, repeats = distinct_uploads([Upload(name=f.name, data=f.getvalue()) for f in files or []])
held_too_much = ui.held_analyses_refusal(uploads, "analyse")  # a shared server: this user's share of its memory
if held_too_much:
    st.error(held_too_much)
    files, uploads, repeats = [], [], []  # refused whole, before any file is decoded
    st.session_state.pop("analyse_outcomes", None)
# the DICOM files' pixel size and its caption: read once per whole-page run (the uploads change only then), by
# the settings and by every run of the results alone
dicom_size, dicom_note = dicom_pixel_size(uploads)
plan = st.session_state.setdefault("analyse_cleanup_plan", CleanupPlan())


#: The key of the results' fragment (:func:`results_view`), which a change of a cleanup, colour or opacity value
#: reruns alone.
RESULTS_FRAGMENT = "analyse_results"


def rerun_results() -> None:
    """Callback of a widget whose value changes only the results (the overlay and the values): rerun their
    fragment alone, so that the settings' widgets are neither run nor sent again."""
    st.rerun(RESULTS_FRAGMENT)


def manual_cleanup_sidebar(n_classes: int, shown_key: str | None, analysed_before: dict) -> None:
    """The manual cleanup widgets for the image in view (``shown_key``, or for all images), their values set from
    that image's choice in ``plan`` when another image comes into view (:func:`manual_choice` reads them).
    ``analysed_before``: the automatic cleanup of each image analysed in the last run, by key."""
    st.header("Border cleanup")
    manual = st.toggle("Set the cleanup by hand", key="analyse_manual",
                       help="Off: the model's own cleanup, its radii scaled to each image's size. "
                            "On: the values below, in pixels of the image in view (or of every image). "
                            "Changing them re-runs only the cleanup, not the network.")
    if not manual:
        plan.clear()
        st.session_state.pop("analyse_widgets_for", None)
        return
    apply_all = st.checkbox("Apply to all images", key="analyse_apply_all",
                            help="Off: these values change only the image in view; the others keep theirs "
                                 "(the automatic cleanup unless you set one). On: every image gets them.")
    auto = analysed_before.get(shown_key)
    calibrated = model_lesion_threshold(choice)
    threshold_key, use_key = f"analyse_threshold_{choice.key}", f"analyse_use_threshold_{choice.key}"
    target = manual_target(shown_key)
    if st.session_state.get("analyse_widgets_for") != target:  # another image in view: show its values
        values = cleanup_widget_values(plan.for_image(shown_key) if shown_key else None, auto, calibrated)
        for name in ("rule", "closing", "border", "fill", "largest", "shape"):
            st.session_state[f"analyse_{name}"] = values[name]
        st.session_state[use_key] = values["use_threshold"] and choice.kind != "classical"
        st.session_state[threshold_key] = values["threshold"]
        st.session_state["analyse_widgets_for"] = target
    if n_classes == 3:  # two-class models have no rule
        st.radio("Lesion rule", RULES, key="analyse_rule", on_change=rerun_results, format_func=rule_label,
                 help="The named rule is the one the History page, the reports and the CSV name.")
    closing_max, border_max = cleanup_slider_limits(auto)  # big photos get big radii
    settled_slider(f"{options.option('closing_radius_px').title} (px)", 0,
                   max(closing_max, st.session_state["analyse_closing"]), key="analyse_closing", unit="px",
                   on_change=rerun_results,
                   help="Disk that closes gaps in the BORDER band (article rule). 0: no closing.")
    settled_slider(f"{options.option('border_width_px').title} (px)", 0,
                   max(border_max, st.session_state["analyse_border"]), key="analyse_border", unit="px",
                   on_change=rerun_results,
                   help="Width of the border band drawn for the grow_inside rule and two-class models.")
    st.selectbox(options.option("shape").title, SHAPES, key="analyse_shape", on_change=rerun_results)
    st.checkbox("Fill holes", key="analyse_fill", on_change=rerun_results)
    st.checkbox("Keep the largest component only", key="analyse_largest", on_change=rerun_results)
    use_threshold = st.checkbox(f"{words['threshold']} instead of the most likely class",
                                key=use_key, disabled=choice.kind == "classical",
                                help="A pixel is lesion when the network gives it at least this probability. "
                                     "Higher: only the pixels it is surer of (a tighter lesion). Lower: more "
                                     "lesion pixels; with three classes they become BORDER, which the "
                                     "grow_inside rule does not use. The model's own value was chosen on its "
                                     "validation images.")
    settled_slider(words["threshold"], 0.05, 0.95, step=0.05, key=threshold_key, disabled=not use_threshold,
                   on_change=rerun_results)
    shown_name = next((upload.name for upload in uploads if upload.key == shown_key), "")
    st.caption(scope_caption(apply_all, len(uploads), ui.plain_markdown(shown_name)))


def manual_target(shown_key: str | None) -> tuple[str, str | None]:
    """What the manual cleanup widgets' values belong to: the model and the image in view, or ``"all"``."""
    return choice.key, "all" if st.session_state.get("analyse_apply_all") else shown_key


def manual_choice() -> CleanupChoice:
    """The cleanup the manual widgets of :func:`manual_cleanup_sidebar` set now (read from their state, so that
    a rerun of the results alone sees a value moved since the settings were drawn)."""
    state = st.session_state
    # a run of the results alone does not draw the rule's and shape's widgets, which put a browser's text that is
    # none of their options back to the first one (CleanupSettings raised on it)
    rule, shape = state.get("analyse_rule"), state.get("analyse_shape")
    settings = CleanupSettings(rule=rule if rule in RULES else RULES[0], closing_radius_px=state["analyse_closing"],
                               fill_holes=state["analyse_fill"], largest_component=state["analyse_largest"],
                               border_width_px=state["analyse_border"], shape=shape if shape in SHAPES else SHAPES[0])
    use_threshold = state.get(f"analyse_use_threshold_{choice.key}") and choice.kind != "classical"
    return CleanupChoice(settings, float(state[f"analyse_threshold_{choice.key}"]) if use_threshold else None)


def record_manual_cleanup(shown_key: str | None, whole_page: bool) -> None:
    """Record the manual cleanup's values in ``plan`` for the image in view (or all images); nothing when the
    cleanup is automatic. When the widgets still show another image's values (another image came into view in
    a run of the results alone), the whole page runs again first, so that they show this one's."""
    if not st.session_state.get("analyse_manual"):
        return
    if st.session_state.get("analyse_widgets_for") != manual_target(shown_key):
        if not whole_page:
            st.rerun()
        return
    if shown_key:
        plan.record(shown_key, manual_choice(), bool(st.session_state.get("analyse_apply_all")))


def overlay_sidebar() -> None:
    """The overlay's colour and opacity widgets (:func:`overlay_style` reads them)."""
    st.header("Overlay")
    colours = st.container(horizontal=True)  # one block, not three (st.columns): fewer elements per rerun
    colours.color_picker("Lesion", rgb_to_hex(OverlayStyle.fill_color), key="analyse_fill_color",
                         on_change=rerun_results)
    colours.color_picker("Border", rgb_to_hex(OverlayStyle.border_color), key="analyse_border_color",
                         on_change=rerun_results)
    settled_slider("Lesion opacity", 0.0, 1.0, step=0.05, default=OverlayStyle.fill_opacity,
                   key="analyse_fill_opacity", on_change=rerun_results)
    settled_slider("Border opacity", 0.0, 1.0, step=0.05, default=OverlayStyle.border_opacity,
                   key="analyse_border_opacity", on_change=rerun_results)


def overlay_style() -> OverlayStyle:
    """The overlay style the widgets of :func:`overlay_sidebar` set now (read from their state)."""
    state = st.session_state
    return OverlayStyle(fill_color=hex_to_rgb(state["analyse_fill_color"]),
                        border_color=hex_to_rgb(state["analyse_border_color"]),
                        fill_opacity=state["analyse_fill_opacity"], border_opacity=state["analyse_border_opacity"])


@st.fragment
def hand_correction_block(outcome: ImageOutcome, corrections: dict[str, Corrections]) -> None:
    """Draw on the image in view to add to or remove from its lesion (cells); undo; reset to the model's result.

    A fragment: the drawing component sends its drawing when it is mounted and after every stroke, and that
    reruns only this block. A whole-page run would give every deferred download button below a new file id
    and drop the old ids once it ends, so a download clicked meanwhile (holding an old id) failed with
    "Failed to generate file for download". Only an edit (add, remove, undo, reset) reruns the whole page,
    since the overlay, the measurements and the exports follow it."""
    from streamlit_drawable_canvas import st_canvas

    key = correction_key(choice.key, outcome.key)
    edits = corrections.setdefault(key, Corrections())
    # what is in the expander (the drawing canvas, its background picture, the buttons) only while it is open:
    # Streamlit's lazy expander
    box = st.expander(words["correct"], expanded=edits.any, key="analyse_correct_open", on_change="rerun")
    generation = st.session_state.get("analyse_canvas_generation", 0)
    if not box.open:  # closed: nothing inside it is made or sent
        return
    with box:
        tool = st.radio("Drawing tool", ["polygon", "brush"], horizontal=True, key="analyse_draw_tool",
                        help="polygon: click the corners, then click the first corner again to close it. "
                             "brush: paint over the pixels.")
        width = outcome.analysis.image.shape[1]
        canvas_width, canvas_height, scale = canvas_size(outcome.analysis.image.shape,
                                                         ui.available_width("analyse_canvas_room"))
        brush_px = (st.slider("Brush width (px of the image)", 1, brush_width_limit(width), max(1, width // 50),
                              key="analyse_brush_width") if tool == "brush" else 1)
        background = kept_with(outcome.analysis, f"canvas {canvas_width}x{canvas_height}",
                               lambda: canvas_background(outcome.analysis, canvas_width, canvas_height))
        try:
            drawn = st_canvas(fill_color="rgba(255, 0, 255, 0.3)", stroke_color="#ff00ff",
                              stroke_width=max(1, round(brush_px / scale)), background_image=background,
                              height=canvas_height, width=canvas_width,
                              drawing_mode="polygon" if tool == "polygon" else "freedraw",
                              key=f"analyse_canvas_{generation}_{canvas_width}")
        except (AttributeError, KeyError, TypeError):  # it reads the browser's value as its own page writes it
            drawn = None
        strokes = canvas_strokes(drawn.json_data if drawn is not None else None, scale, brush_width_limit(width))
        shape = outcome.analysis.image.shape[:2]
        refusal = edits.refusal(strokes, shape) if strokes else None
        if refusal:
            st.warning(refusal)
        row = st.container(horizontal=True)  # the buttons wrap onto more lines on a narrow screen
        action = None
        add = row.button(f"Add to the {words['target']}", disabled=not strokes or bool(refusal),
                         key="analyse_draw_add")
        remove = row.button(f"Remove from the {words['target']}", disabled=not strokes or bool(refusal),
                            key="analyse_draw_remove")
        if add or remove:
            try:
                action = edits.push(strokes, add=add, shape=shape)
            except ValueError as error:  # refused above, its buttons disabled: Streamlit drops such a click
                st.warning(str(error))
        if row.button("Undo", disabled=not edits.any, key="analyse_draw_undo"):
            action = edits.undo()
        if row.button("Reset to the model's result", disabled=not edits.any, key="analyse_draw_reset"):
            edits.reset()
            action = True
        if action:
            st.session_state["analyse_canvas_generation"] = generation + 1  # a fresh, empty canvas
            st.rerun()
        st.caption(f"Now: {key_measurements(outcome.analysis)}")
        st.caption(f"{count_of(len(edits.edits), 'hand edit')}: the border band, the measurements and every export "
                   f"follow the corrected {words['target']} and say so." if edits.any else
                   f"Draw a region, then add it to the {words['target']} or remove it. Nothing changes until you "
                   "click.")


def save_to_dataset_block(outcome: ImageOutcome, segmenter_name: str) -> None:
    """Store the image in view and its lesion (corrected or accepted) in the user's own dataset."""
    with st.expander("Save to my dataset"):
        space = find_user_space()
        if isinstance(space, Refusal):
            st.caption(space.message)
            return
        folder = space.dataset
        st.caption(f"Saved into {folder}: images/ and masks/ (same file names) plus provenance/ records, the "
                   "dataset the Train and Evaluate pages offer as yours.")
        status = "corrected by hand" if outcome.analysis.corrected_by_hand else "accepted as the model drew it"
        if st.button(f"Save {ui.plain_markdown(outcome.name)} ({status})", key="analyse_dataset_save"):
            try:
                check_session_quota()
                saved = save_to_dataset(outcome, folder, segmenter_name, choice.key)
            except (OSError, ValueError) as error:
                st.error(f"Could not save to {folder}: {first_line(error)}")
            else:
                st.success(dataset_save_message(outcome.name, saved, folder))


def batch_view(good: list[ImageOutcome]) -> None:
    """Many images at once: the grid of thumbnails (their overlays, framed when to check) with their key
    measurements, the table of every measurement and the batch summary. The grid is one element; each table is
    made only while its tab is open."""
    grid, table, summary = st.tabs(["Grid", "All measurements", "Batch summary"], key="analyse_batch_tab",
                                   on_change="rerun")
    if grid.open:
        grid.image([thumbnail_url(item.analysis) for item in good], caption=[grid_caption(item) for item in good],
                   width=THUMBNAIL_WIDTH_PX)
    if table.open:
        table.dataframe(batch_table(good), hide_index=True, width="stretch", row_height=30,
                        column_config={TO_CHECK_HEADING: st.column_config.TextColumn(TO_CHECK_HEADING,
                                                                                      width="large")})
    if summary.open:
        summary.caption(f"{len(good)} images analysed: mean, spread (SD) and range of each measurement over the "
                        "images where it is defined.")
        summary.dataframe(batch_summary(good), hide_index=True, width="stretch",
                          column_config={"measurement": st.column_config.TextColumn("Measurement", width="large"),
                                         "images": st.column_config.NumberColumn("Images", width="small"),
                                         "mean": "Mean", "sd": "SD", "min": "Min", "median": "Median",
                                         "max": "Max"})


def pictures(outcome: ImageOutcome, segmenter_name: str) -> None:
    """The overlay of the image in view and, in a closed expander below it, its predicted classes. The class
    picture is made and sent only while the expander is open (Streamlit's lazy expander): a slider run sends
    one picture and one empty block, lighter for the browser to redraw than tabs."""
    analysis = outcome.analysis
    st.image(analysis.overlay_jpeg, width="stretch",
             caption=f"{ui.plain_markdown(outcome.name)}: {words['drawn']} ({ui.plain_markdown(str(segmenter_name))}"
                     + (", corrected by hand)" if analysis.corrected_by_hand else ")"))
    classes = st.expander("Predicted classes", key="analyse_classes_open", on_change="rerun")
    if classes.open:
        classes.image(analysis.class_jpeg, width="stretch",
                      caption="Predicted classes: " + ", ".join(name for name, _ in legend(analysis.n_classes)))


def image_in_view() -> str | None:
    """The upload key of the image in view (:func:`shown_image_key`), None without uploads."""
    return shown_image_key([u.key for u in uploads], st.session_state.get("analyse_shown"),
                           st.session_state.get("analyse_auto_by_key") or {})


@st.fragment
def analysis_view() -> None:
    """The sidebar's cleanup, overlay and unit widgets and the results they change: a fragment, so that a change
    of its settings reruns only this part (the results from the server's cached probabilities, never the
    network); the uploader and the model picker above it rerun the whole page. A cleanup, colour or opacity
    value reruns the results alone (:func:`rerun_results`)."""
    with st.sidebar:
        manual_cleanup_sidebar(choice.n_classes or DEFAULT_CLASS_COUNT, image_in_view(),
                               st.session_state.get("analyse_auto_by_key") or {})
        overlay_sidebar()
        st.header("Physical units")
        pixel_size = pixel_size_input("analyse", on_change=None if dicom_note else rerun_results)
        if dicom_note:  # the note says the size given: a new size reruns the settings too
            st.caption(dicom_note if pixel_size == 0 else f"{pixel_size:.4f} mm per px as given (the DICOM files "
                                                              "say: " + dicom_note + ")")
    results_view()


@st.fragment(key=RESULTS_FRAGMENT)
def results_view() -> None:
    """The results (pictures, measurements) of the settings drawn by :func:`analysis_view`, which it reads from
    their widgets' state: a fragment of its own, which a cleanup, colour or opacity value reruns alone. It
    publishes each run's results in ``latest``, which the exports below read when clicked; when what they show
    changes (another image in view, ...) the whole page runs again."""
    whole_page, page_run["whole"] = page_run["whole"], False
    latest.publish(analysed_results(whole_page))
    if not whole_page and latest.layout != latest.drawn:  # the exports below show another image: redraw them
        st.rerun()


def analysed_results(whole_page: bool) -> Shown | None:
    """The body of :func:`results_view`: the analyses and what is shown of them; the results to export, or None
    when there are none. ``whole_page``: this is a run of the whole page."""
    shown_key = image_in_view()
    record_manual_cleanup(shown_key, whole_page)
    style = overlay_style()
    pixel_size = pixel_size_value("analyse")
    if pixel_size == 0 and dicom_size is not None:
        pixel_size = dicom_size

    if not files:
        st.info(f"Drop one or more {words['images']} above to analyse them.")
        return None
    if not ready:
        return None

    segmenter = ui.load_segmenter(choice)
    if segmenter is None:
        return None

    store = ui.analysis_store()
    # the progress bar while some image is predicted (nothing is drawn for a run of the cleanup alone)
    status = st.empty() if store.lacks(choice.key, [u.key for u in uploads]) else None
    if status is not None:
        status.progress(0.0, text="Analysing...")
    outcomes = analyse_uploads(
        store, segmenter, choice.key, uploads, plan=plan,
        pixel_size_mm=pixel_size if pixel_size > 0 else None, style=style,
        progress=None if status is None else
        lambda done, total, name: status.progress(done / max(1, total), text=f"Analysed {ui.plain_markdown(name)} ({done}/{total})"),
        prepare=thumbnail_url if len(uploads) > 1 else None,  # the grid's, made while the network runs
        shown=shown_key,
    )
    if status is not None:
        status.empty()
    ui.show_cache_notes(segmenter)
    corrections = st.session_state.setdefault("analyse_corrections", {})  # hand edits, by correction_key
    outcomes = with_corrections(outcomes, corrections, choice.key)
    st.session_state["analyse_outcomes"] = outcomes
    good = [o for o in outcomes if o.ok]
    st.session_state["analyse_auto_by_key"] = automatic_cleanups(segmenter, good)

    for outcome in outcomes:
        if outcome.error:
            st.error(ui.plain_markdown(outcome.error))
    for repeat in repeats:
        st.info(ui.plain_markdown(repeat))
    if not good:
        return None

    # ---- results --------------------------------------------------------------------------------------
    st.subheader(f"Results ({len(good)} of {len(outcomes)} image{'s' if len(outcomes) != 1 else ''})")

    if len(good) > 1:
        if checks := check_summary(good):
            st.warning(checks, icon=":material/warning:")
        batch_view(good)
        names = {o.key: o.name for o in good}
        if st.session_state.get("analyse_shown") not in names:
            st.session_state["analyse_shown"] = shown_key if shown_key in names else good[0].key
        shown = st.selectbox("Show image", list(names), format_func=names.get, key="analyse_shown")
        outcome = next(o for o in good if o.key == shown)
        # the image in view in full only when asked: the grid then reaches the browser with fewer elements after
        # it (its large picture, its measurement table and its hand-correction box are neither made nor sent)
        if not st.toggle("Show it in full: overlay, classes, measurements, hand correction, visit, exports",
                         key="analyse_batch_details",
                         help="The grid above shows every image's overlay and key measurements; the exports of "
                              "all images are below either way."):
            return shown_results(outcomes, outcome, segmenter, in_full=False)
    else:
        outcome = good[0]

    analysis = outcome.analysis
    if analysis.error:
        st.warning(f"{ui.plain_markdown(outcome.name)}: {analysis.error}. Try another model or the cleanup settings in the sidebar.")
    picture, facts = st.columns(2)
    with picture:
        pictures(outcome, segmenter.name)
    with facts:
        for warning in analysis.warnings:  # "check this border" (or segmentation), "may extend beyond the picture"
            st.warning(ui.sentence(warning))
        if analysis.confidence_threshold is not None and not analysis.error:
            st.caption(f"Confidence {analysis.confidence:.2f} (images below {analysis.confidence_threshold:.2f}, "
                       f"the model's least confident share on its validation images, are marked "
                       f"\"{analysis.words['check']}\").")
        st.caption(f"Cleanup: {cleanup_text(analysis.segmentation.settings.to_dict())}; "
                   f"{threshold_text(analysis.segmentation.lesion_threshold, words['target'])}.")
    if analysis.measurements:
        st.html(measurement_html(analysis))
    hand_correction_block(outcome, corrections)
    if analysis.cells and analysis.objects:
        area_unit = "mm²" if analysis.pixel_size_mm else "px²"
        st.plotly_chart(charts.size_histogram(object_areas(analysis), area_unit,
                                              f"Size distribution of the {len(analysis.objects)} cells / nuclei"),
                        key="analyse_size_histogram")
    return shown_results(outcomes, outcome, segmenter)


def shown_results(outcomes: list[ImageOutcome], outcome: ImageOutcome, segmenter: Segmenter,
                  in_full: bool = True) -> Shown:
    """The results to export: every outcome and ``outcome``, the image in view, with its upload; ``in_full``:
    the image in view is shown in full (its visit and its own exports are drawn)."""
    upload = next(u for u in uploads if u.key == outcome.key)
    return Shown(tuple(outcomes), outcome, upload, segmenter.name, model_version(segmenter.info), in_full)


@st.fragment
def exports_view() -> None:
    """Saving the image in view to the user's dataset, its visit, the exports and saving to records: a fragment
    of its own, so that typing a visit reruns only this part, and a cleanup change does not rerun it (the
    downloads read ``latest`` when clicked)."""
    latest.drawn = latest.layout
    now = latest.shown
    if now is None:
        return
    outcome, upload, analysis = now.outcome, now.upload, now.outcome.analysis
    visits = st.session_state.setdefault("analyse_visits", {})  # Visit by upload key
    for other in now.outcomes:  # the images not yet in view: the visit their fields would show (today's date)
        if other.ok:
            visits.setdefault(other.key, default_visit())
    with_names = not st.toggle(WITHOUT_NAMES_LABEL, key="analyse_exports_without_names", help=WITHOUT_NAMES_HELP)
    if not now.in_full:  # a batch, its image in view not shown in full: the exports of all images alone
        all_images_exports(now, visits, with_names)
        return
    save_to_dataset_block(outcome, now.segmenter_name)

    # ---- the visit: printed on the reports, saved with the record ---------------------------------------
    if st.session_state.get("analyse_visit_for") != outcome.key:  # another image in view: show its visit
        for name, value in visit_widget_values(visits.get(outcome.key)).items():
            st.session_state[f"analyse_save_{name}"] = value
        st.session_state["analyse_visit_for"] = outcome.key
    from_dicom = dicom_visit(upload)
    use_identifiers = from_dicom is not None and st.checkbox(
        "Use the DICOM file's patient and study fields", key=f"analyse_dicom_identifiers_{outcome.key}")
    if from_dicom is not None:
        st.caption(DICOM_PRIVACY_NOTE)
    filled = st.session_state.setdefault("analyse_dicom_filled", set())  # uploads whose visit the DICOM file filled
    if use_identifiers and outcome.key not in filled:
        for name, value in visit_widget_values(from_dicom).items():
            st.session_state[f"analyse_save_{name}"] = value
        filled.add(outcome.key)
    st.markdown(f"**Visit of {ui.plain_markdown(outcome.name)}** (optional: printed on its report and in the CSV, "
                "saved with its record)")
    first, second = st.columns(2)
    visit_lesion = first.text_input(words["identifier"], key="analyse_save_lesion", max_chars=VISIT_FIELD_MAX_CHARS,
                                    help="Free text, e.g. 'left shoulder 1'. Type nothing that identifies a "
                                         "person unless you mean to store it.")
    visit_date = second.date_input("Visit date", key="analyse_save_date", min_value=EARLIEST_VISIT_DATE)
    visit_site = first.text_input(words["site"], key="analyse_save_site", max_chars=VISIT_FIELD_MAX_CHARS) \
        if words["site"] else ""
    visit_notes = second.text_area("Notes", key="analyse_save_notes", height=68, max_chars=NOTES_MAX_CHARS)
    visit = Visit.of(visit_lesion, visit_date, visit_site, visit_notes)
    visits[outcome.key] = visit

    # ---- save to records (History page) ---------------------------------------------------------------
    if st.button(f"Save {ui.plain_markdown(outcome.name)} to records", key="analyse_save",
                 help="The History page lists and reopens it, with the visit above."):
        from moleseg.app.identity import current_user
        from moleseg.app.saving import save_once

        answer = save_once(current_user(), analysis, outcome.name, visit, now.segmenter_name, now.model_version,
                           st.session_state.setdefault("analyse_saved", {}), before_write=check_session_quota)
        if answer.kind == "info":  # names the uploaded file: shown as it is
            st.info(ui.plain_markdown(answer.message))
        else:
            {"success": st.success, "error": st.error}[answer.kind](answer.message)

    # ---- downloads: made when clicked, from the latest results ------------------------------------------
    st.markdown("**Export this image**")
    stem = export_stem(now, with_names)
    one, two, three = st.columns(3)
    one.download_button("Overlay (PNG)", data=latest.overlay_png, file_name=result_file_name(stem, "overlay"),
                        mime="image/png", key="analyse_dl_overlay", on_click="ignore")
    two.download_button(f"{words['mask']} (PNG)", data=latest.mask_png, file_name=result_file_name(stem, "mask"),
                        mime="image/png", key="analyse_dl_mask", on_click="ignore")
    three.download_button("Report (PDF)", data=partial(latest.pdf, visit, with_names),
                          file_name=result_file_name(stem, "report"), mime="application/pdf", key="analyse_dl_pdf",
                          on_click="ignore")
    dicom_names = use_identifiers and with_names
    st.download_button(
        "Segmentation and report (DICOM, ZIP)", on_click="ignore", key="analyse_dl_dicom", mime="application/zip",
        data=partial(latest.dicom, visit, use_identifiers, with_names),
        file_name=result_file_name(dicom_export_stem(outcome, dicom_names), "dicom"),
        help="The mask as a DICOM Segmentation and the report as an Encapsulated PDF, both referencing the "
             "image: the DICOM file itself, or, for another format, a Secondary Capture of it (included). "
             "Patient and study fields are left empty, and the files and the report are named after the "
             "image's pixels, not its file name, unless the box above is ticked (and exports keep names).")
    outlines = outline_buttons(outcome if with_names else without_names(now).outcome)
    for column, (label, file_name, mime) in zip(st.columns(max(1, len(outlines))), outlines):
        column.download_button(label, data=partial(latest.outline, file_name, with_names), file_name=file_name,
                               mime=mime, on_click="ignore", key=f"analyse_dl_outline_{file_name.rsplit('.', 1)[-1]}",
                               help="The outline as polygons in px of the image: GeoJSON opens in QuPath, the ROI "
                                    "in ImageJ / Fiji, the SVG in any drawing program.")

    all_images_exports(now, visits, with_names)


def all_images_exports(now: Shown, visits: dict[str, Visit], with_names: bool) -> None:
    """The downloads of every image's results (made when clicked, from the latest results; without names unless
    ``with_names``) and the disclaimer."""
    st.markdown("**Export all images**")
    one, two, three, *rest = st.columns(4 if now.has_objects else 3)
    one.download_button("Measurements of all images (CSV)", data=partial(latest.measurements_csv, visits, with_names),
                        file_name=MEASUREMENTS_CSV, mime="text/csv", key="analyse_dl_csv", on_click="ignore")
    two.download_button("Settings of the CSV (JSON)", data=partial(latest.sidecar, visits, with_names),
                        file_name=sidecar_name(MEASUREMENTS_CSV), mime="application/json",
                        key="analyse_dl_sidecar", on_click="ignore",
                        help="Model and version, cleanup, lesion threshold, pixel size, corrected by hand, and the "
                             "visit, for each row of the CSV.")
    three.download_button("Everything (ZIP: PNGs, PDF reports, CSV, settings)",
                          data=partial(latest.bundle, visits, with_names), file_name="moleseg_results.zip",
                          mime="application/zip", key="analyse_dl_zip", on_click="ignore")
    if now.has_objects:
        rest[0].download_button("Every cell / nucleus (CSV)", data=partial(latest.objects_csv, with_names),
                                file_name=OBJECTS_CSV, mime="text/csv", key="analyse_dl_objects", on_click="ignore")
    st.caption(DISCLAIMER)


latest: LatestResults = st.session_state.setdefault("analyse_latest", LatestResults())
page_run = {"whole": True}  # this run of the page script: a whole-page run until the results fragment has run
analysis_view()
exports_view()
