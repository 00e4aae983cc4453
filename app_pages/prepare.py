"""Prepare targets: pair images with masks and preview the BACK / BORDER / INSIDE training targets."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from moleseg.app import serverpaths, ui
from moleseg.app.analysis import digest
from moleseg.app.quota import OverQuota, check_session_quota
from moleseg.app.preparation import frequencies_key, frequencies_task, pairing_rows, target_preview
from moleseg.core import options
from moleseg.core.config import DEFAULT_BORDER_WIDTH_PX
from moleseg.core.errors import first_line
from moleseg.core.imageio import ImageReadError
from moleseg.core.pairing import PairingError, pair_folders
from moleseg.core.render import legend
from moleseg.engine.session import ArchiveError, dataset_folders
from moleseg.engine.tasks import TooManyTasks
from moleseg.core.targets import SHAPES
from moleseg.core.words import count_of, noun_for

st.title("Prepare targets")
st.markdown("A dataset is a folder of images and a folder of binary masks (lesion = white). Training turns "
            "each mask into three classes: **BACK**, **BORDER** (a band inside the lesion's edge, as wide as "
            "the structuring element) and **INSIDE**.")

source = st.radio("Dataset", ["a folder on the server", "a ZIP upload"], horizontal=True, key="prepare_source")
images_dir = masks_dir = None
if source == "a folder on the server":
    prepared = ui.prepared_dataset_text(source)
    if prepared:  # back from another page: the same dataset
        ui.init_state("prepare_folder", prepared)
    roots = serverpaths.dataset_picker("prepare_folder")
    text = st.text_input("Dataset folder", key="prepare_folder", placeholder="/path/to/dataset",
                         help=serverpaths.DATASET_PATH_HELP)
    if text.strip():
        try:
            images_dir, masks_dir = dataset_folders(text, roots)
        except ValueError as error:
            st.error(str(error))
else:
    limit = ui.upload_limit_mb()
    archive = st.file_uploader("Dataset ZIP", type=["zip"], key="prepare_zip",
                               help=f"A ZIP holding images/ and masks/ (at any depth), up to {limit} MB. It is "
                                    "unpacked into this session's temporary folder, removed when the session ends.")
    if archive is not None:
        data = archive.getvalue()
        stored = st.session_state.get("prepare_zip_dataset") or {}
        if stored.get("digest") != digest(data) or not Path(stored.get("images", "")).is_dir():
            try:
                check_session_quota()  # what the user's sessions already hold counts (a script opens many)
                extraction, found = ui.session_folder().unpack_dataset(data)
                stored = {"digest": digest(data), "images": str(found[0]), "masks": str(found[1]),
                          "skipped": len(extraction.skipped)}
                st.session_state["prepare_zip_dataset"] = stored
            except (ArchiveError, OverQuota) as error:
                st.session_state.pop("prepare_zip_dataset", None)
                stored = {}
                st.error(f"{ui.plain_markdown(archive.name)}: {ui.plain_markdown(str(error))}")
        if stored:
            images_dir, masks_dir = Path(stored["images"]), Path(stored["masks"])
            if stored.get("skipped"):
                skipped = stored["skipped"]
                st.caption(f"{count_of(skipped, 'hidden file or link', 'hidden files or links')} in the archive "
                           f"{noun_for(skipped, 'was', 'were')} skipped.")

if images_dir is None:
    st.info("Choose a dataset to see how its files pair up.")
    st.stop()

try:
    report = pair_folders(images_dir, masks_dir)
except OSError as error:
    st.error(f"Cannot read the dataset: {first_line(error)}")
    st.stop()
except PairingError as error:
    st.error(ui.plain_markdown(str(error)))  # file names of a shared dataset: anyone's text
    if error.report is not None:
        st.code(error.report.summary(), language=None)
    st.stop()

ui.remember_dataset(images_dir, masks_dir, source)
st.subheader("Pairing")
st.caption(f"images: {images_dir}  \nmasks: {masks_dir}")
counts = st.columns(4)
counts[0].metric("Pairs", len(report.pairs))
counts[1].metric("Unpaired images", len(report.unpaired_images))
counts[2].metric("Unpaired masks", len(report.unpaired_masks))
counts[3].metric("Size mismatches", len(report.size_mismatches))
if report.rule_counts:
    st.write("Paired by: " + ", ".join(f"**{rule}** ({count})" for rule, count in report.rule_counts.items()))
for warning in report.warnings:
    st.warning(ui.plain_markdown(warning))
for conflict in report.conflicts:
    st.warning(f"Ambiguous: {ui.plain_markdown(str(conflict))}")
if report.ok:
    st.success("Every image has its mask and their sizes agree.")
tables = pairing_rows(report)
with st.expander(f"Pairs ({len(tables['pairs'])})"):
    st.dataframe(tables["pairs"], hide_index=True, width="stretch")
if tables["unpaired"]:
    with st.expander(f"Unpaired files ({len(tables['unpaired'])})", expanded=True):
        st.dataframe(tables["unpaired"], hide_index=True, width="stretch")
if tables["mismatches"]:
    with st.expander(f"Size mismatches ({len(tables['mismatches'])})", expanded=True):
        st.caption("Training resizes such masks to their image; check that they really belong together.")
        st.dataframe(tables["mismatches"], hide_index=True, width="stretch")
st.page_link(ui.PAGE_FILES["train"], label="Train on this dataset", icon=ui.PAGE_ICONS["train"])

st.subheader("Targets")
names = [pair.image.name for pair in report.pairs]
left, right = st.columns([2, 1])
with right:
    index = st.selectbox("Pair", range(len(names)), format_func=lambda i: names[i], key="prepare_pair")
    classes = st.radio(options.option("model.n_classes").title, list(options.CLASS_COUNTS), horizontal=True,
                       key="prepare_classes",
                       format_func=lambda n: "3 (moles: back/border/inside)" if n == 3 else "2 (cells)")
    shape = st.selectbox(options.option("shape").title, SHAPES, key="prepare_shape")
    width = st.slider(f"{options.option('border_width_px').title} (px)", int(options.option("border_width_px").low),
                      30, DEFAULT_BORDER_WIDTH_PX, key="prepare_width", disabled=classes == 2,
                      help="Radius of the structuring element that erodes the mask.")
    edge = st.checkbox("Border along the image frame too", key="prepare_edge",
                       help="Off (Matlab's imerode): a lesion leaving the picture has no border at the frame.")
pair = report.pairs[index if index is not None and index < len(report.pairs) else 0]
try:
    preview = target_preview(pair.image, pair.mask, classes=classes, border_width_px=width, shape=shape,
                             border_at_image_edge=edge)
except (ImageReadError, ValueError) as error:
    st.error(ui.plain_markdown(str(error)))  # names a file of a shared dataset: anyone's text
    st.stop()
with left:
    a, b, c = st.columns(3)
    a.image(preview.image, caption=ui.plain_markdown(pair.image.name), width="stretch")
    b.image(preview.mask.astype("uint8") * 255, caption=ui.plain_markdown(pair.mask.name), width="stretch")
    c.image(preview.picture, caption=" / ".join(name.upper() for name, _ in legend(classes)), width="stretch")
if preview.mask_problem:
    st.warning(f"{ui.plain_markdown(pair.mask.name)}: {preview.mask_problem}", icon=":material/warning:")
if preview.resized_mask:
    st.caption("This mask's size differs from its image's; it was resized to the image, as training does.")
st.markdown("**Class frequencies of this pair**")
st.dataframe(preview.frequency_rows(), hide_index=True)


def show_frequencies(scan: dict) -> None:
    st.markdown(f"**Class frequencies of the dataset** ({scan['read']} masks)")
    st.dataframe(scan["rows"], hide_index=True)
    for error in scan["errors"]:  # they name files of a shared dataset: anyone's text
        st.error(ui.plain_markdown(error))
    for warning in scan.get("warnings", []):
        st.warning(ui.plain_markdown(warning), icon=":material/warning:")
    st.caption("Training weights each class by the inverse of its frequency (class weighting), as the article does.")


scan_key = frequencies_key(masks_dir, classes=classes, border_width_px=width, shape=shape,
                           border_at_image_edge=edge)
if st.button("Class frequencies of the whole dataset", key="prepare_all"):
    try:
        ui.submit_task(scan_key, frequencies_task(
            [p.mask for p in report.pairs], classes=classes, border_width_px=width, shape=shape,
            border_at_image_edge=edge))
    except TooManyTasks as error:
        st.error(str(error))
ui.follow_task(scan_key, show_frequencies, failure="The scan failed")
