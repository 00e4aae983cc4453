"""The Train page's option widgets, generated from the options schema (:mod:`moleseg.core.options`): one widget
per settable option with the schema's range, default, step, choices, unit and help, grouped in expanders by
the option's group, and the configuration dictionary they make. A new option is one schema entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from moleseg.app import serverpaths
from moleseg.app.identity import user_space
from moleseg.core import options
from moleseg.core.config import class_names
from moleseg.core.options import Option
from moleseg.core.words import capitalised
from moleseg.core.roots import OutsideRootsError, resolve_inside_folder, resolve_inside_roots
from moleseg.engine import jobs
from moleseg.engine.session import DATASET_PAIR_FORM, dataset_list

#: The expander of each option group, in page order (the first is open).
GROUP_TITLES: dict[str, str] = {"data": "Data", "model": "Network", "training": "Solver",
                                "augmentation": "Augmentation", "cleanup": "Cleanup", "run": "Advanced"}
#: Start of every option widget's key: the key is this and the last part of the option's name.
KEY_PREFIX = "train_"
#: Options whose widgets start at what the installed shipped model of the chosen class count uses
#: (how its images are prepared); their keys end with the class count, so a new count starts them afresh.
SHIPPED_PREPARATION: tuple[str, ...] = ("inference", "crops_per_image", "crops_by_area", "tile_scale",
                                        "colour_constancy")
#: What a datasets text area shows while empty.
DATASET_PLACEHOLDER = "/data/moles (holding images/ and masks/)\n/data/other/images | /data/other/masks"
#: Widgets per row in an expander.
COLUMNS = 3
#: How the weights option's choices are offered (a shipped model to fine-tune, ImageNet, random, a file).
WEIGHT_LABELS: dict[str, str] = {"imagenet": "ImageNet encoder", "none": "random (from scratch)",
                                 "file": "another .keras model"}


def widget_key(item: Option, n_classes: int | None = None) -> str:
    """The session-state key of ``item``'s widget (``train_input_size``); options of
    :data:`SHIPPED_PREPARATION` end with ``_<n_classes>``."""
    key = KEY_PREFIX + item.name.rsplit(".", 1)[-1]
    return f"{key}_{n_classes}" if n_classes is not None and item.name in SHIPPED_PREPARATION else key


def title(item: Option) -> str:
    """The widget's label: the option's title (or name in words, capitalised), with its unit unless the
    words already name it ("Epochs", not "Epochs (epochs)")."""
    words = item.title or capitalised(item.label)
    return f"{words} ({item.unit})" if item.unit and item.unit not in words.lower() else words


def starting_values(n_classes: int) -> dict[str, Any]:
    """The widgets' starting configuration for ``n_classes``: the schema's defaults, the installed shipped
    model's weights (fine-tuning it) and image preparation (:data:`SHIPPED_PREPARATION`)."""
    values = options.defaults()
    values["model"]["n_classes"] = n_classes
    values["weights"] = jobs.default_weights(n_classes)
    values["inference"] = jobs.default_inference(n_classes)
    for name in ("tile_scale", "colour_constancy"):
        values[name] = jobs.shipped_default(name, n_classes)
    values["crops_by_area"] = values["inference"] == "tiles"
    return values


def _number_bounds(item: Option, cast: type) -> tuple[Any, Any]:
    """The widget's (min, max): the schema's closed bounds; an open bound is left to the checks, except on a
    slider, which stops one step inside it."""
    step = item.step or 0
    low = None if item.low is None or (item.low_open and item.widget != "slider") else \
        cast(item.low + step if item.low_open else item.low)
    high = None if item.high is None or (item.high_open and item.widget != "slider") else \
        cast(item.high - step if item.high_open else item.high)
    return low, high


def _number_widget(item: Option, place: Any, start: Any, key: str, disabled: bool) -> Any:
    cast = int if item.kind == "int" else float
    low, high = _number_bounds(item, cast)
    step = cast(item.step) if item.step else (1 if cast is int else None)
    if item.widget == "slider":
        return place.slider(title(item), low, high, cast(start), step, key=key, disabled=disabled,
                            help=item.describe())
    return place.number_input(title(item), low, high, cast(start), step, format=item.format or None, key=key,
                              disabled=disabled, help=item.describe())


def _choice_widget(item: Option, place: Any, start: Any, key: str, disabled: bool) -> Any:
    choices = list(item.choices)
    words = {n: f"{n}: {'/'.join(class_names(n))}" for n in options.CLASS_COUNTS} \
        if item.name == "model.n_classes" else jobs.INFERENCE_FITS if item.name == "inference" else {}
    if item.widget == "radio":
        return place.radio(title(item), choices, index=choices.index(start), key=key, horizontal=True,
                           format_func=lambda value: words.get(value, str(value)), disabled=disabled,
                           help=item.describe())
    return place.selectbox(title(item), choices, index=choices.index(start), key=key, disabled=disabled,
                           format_func=lambda value: words.get(value, str(value)), help=item.describe())


def _auto_widget(item: Option, place: Any, start: Any, key: str, disabled: bool) -> Any:
    """``auto`` (a check box) or a number (its input, greyed out while automatic)."""
    automatic = place.checkbox(f"{title(item)}: automatic", start == "auto", key=f"{key}_auto", disabled=disabled,
                               help=item.help)
    middle = (item.low + item.high) / 2 if item.low is not None and item.high is not None else 0.0
    value = place.number_input(title(item), item.low if not item.low_open else None,
                               item.high if not item.high_open else None,
                               float(middle if start == "auto" else start), item.step, key=key,
                               disabled=disabled or automatic, help=item.describe())
    return "auto" if automatic else float(value)


def _weights_widget(item: Option, start: str, key: str, found: list[str]) -> str:
    """Where the network starts: the shipped model (when installed), ImageNet, random or a model file inside
    the folders this server offers (a browser user names no other file)."""
    labels = dict(WEIGHT_LABELS)
    if start not in ("imagenet", "none"):
        labels = {start: f"fine-tune the shipped model ({Path(start).name})", **labels}
    choice = st.radio(title(item), list(labels), key=key, format_func=labels.get,
                      help=f"{item.describe()}. Fine-tuning copies every layer whose name and shape match "
                           "(same backbone).")
    if choice != "file":
        return choice
    text = st.text_input("Model file to start from", key=f"{key}_file",
                         help="A .keras file inside the folders this server offers, or in a run.")
    try:
        return str(resolve_inside_roots(text, serverpaths.model_file_roots(), file=True))
    except OutsideRootsError as error:
        found.append(f"Model file to start from: {error}")
        return ""


def _cache_widget(place: Any, key: str, found: list[str]) -> str | None:
    """The example cache: a plain name of a folder in the user's example cache
    (:attr:`moleseg.core.userspace.UserSpace.example_cache`: their own folder on a shared server, counted in their
    quota; the app's cache folder in personal mode); empty: that cache itself."""
    folder = user_space().example_cache
    name = place.text_input("Example cache name (optional)", "", key=key,
                            help=f"A name for the resized examples cached between trainings, kept in your example "
                                 f"cache ({folder}); empty: that cache itself. An uploaded dataset's examples stay "
                                 "in its session folder.").strip()
    if not name:
        return None
    try:
        return str(resolve_inside_folder(name, folder))
    except OutsideRootsError:
        found.append(f"Example cache name: {name!r} is not a plain name (no folders, not hidden)")
        return None


def option_widget(item: Option, place: Any, start: Any, key: str, disabled: bool = False) -> tuple[Any, list[str]]:
    """One widget for ``item`` in ``place`` (a column or the page), starting at ``start``; returns its value
    in the option's kind and what is wrong with the text typed into it (for ``ints`` and ``folders``)."""
    if item.kind == "bool":
        return bool(place.checkbox(title(item), bool(start), key=key, disabled=disabled, help=item.describe())), []
    if item.kind == "choice":
        return _choice_widget(item, place, start, key, disabled), []
    if item.kind == "choices":
        return list(place.multiselect(title(item), list(item.choices), start, key=key, disabled=disabled,
                                      help=item.describe())), []
    if item.kind in ("int", "float"):
        return _number_widget(item, place, start, key, disabled), []
    if item.kind == "auto_float":
        return _auto_widget(item, place, start, key, disabled), []
    if item.kind == "ints":
        text = place.text_input(title(item), ", ".join(map(str, start)), key=key, disabled=disabled,
                                help=item.describe())
        try:
            return item.parse(text), []
        except ValueError as error:
            return start, [str(error)]
    text = place.text_input(title(item), start or "", key=key, disabled=disabled, help=item.describe())
    return (text.strip() or None) if item.optional else text.strip(), []


def _dataset_widgets(config: dict[str, Any], found: list[str]) -> None:
    """One text area per folder pair of the schema (training, validation, test): a dataset per line, inside
    the folders this server offers (a picker fills in the training datasets)."""
    roots = serverpaths.dataset_roots()
    if not serverpaths.data_roots():
        st.info(serverpaths.NO_ROOTS_NOTICE)
    for images, masks in options.FOLDER_PAIRS:
        item = options.option(images)
        part = images.removesuffix("images").replace("_", " ").strip()
        label = f"{part.capitalize()} datasets (optional)" if part else "Training datasets"
        if not part:
            serverpaths.folder_picker(widget_key(item), roots, join=True)
        text = st.text_area(label, key=widget_key(item), height=90 if not part else 68,
                            placeholder=DATASET_PLACEHOLDER,
                            help=f"{item.help}. One dataset per line: a folder holding images/ and masks/, or "
                                 f"'{DATASET_PAIR_FORM}', inside the folders this server offers (or your own "
                                 "dataset); several are combined. The Prepare page fills in the dataset chosen "
                                 "there.")
        try:
            pairs = dataset_list(text, roots)
        except ValueError as error:
            found.append(str(error))
            pairs = []
        options.set_value(config, images, [str(image) for image, _ in pairs])
        options.set_value(config, masks, [str(mask) for _, mask in pairs])


def option_form(prepared: str = "") -> tuple[dict[str, Any], list[str]]:
    """Every settable option's widget, in one expander per group (:data:`GROUP_TITLES`), and the
    configuration dictionary they make with what is wrong with typed text.

    Parameters
    ----------
    prepared
        The dataset chosen on the Prepare page (:func:`moleseg.app.ui.prepared_dataset_text`): the training
        datasets' starting text; none when empty.

    Returns
    -------
    (config, problems)
        ``config`` holds every option: a widget's value, or the starting value where the option does not
        matter (:func:`moleseg.core.options.needed`).
    """
    n_item = options.option("model.n_classes")
    n_classes = st.session_state.get(widget_key(n_item), n_item.default)
    if n_classes not in n_item.choices:  # read before its radio: a browser's message may hold any text until
        n_classes = n_item.default  # Streamlit draws the radio, which then puts it back to this default
    start = starting_values(n_classes)
    config = options.defaults()
    found: list[str] = []
    if prepared:
        st.session_state.setdefault(widget_key(options.option("images")), prepared)
    for index, (group, heading) in enumerate(GROUP_TITLES.items()):
        items = [item for item in options.OPTIONS if item.group == group and item.settable]
        if not items:
            continue
        with st.expander(heading, expanded=index == 0):
            if group == "data":
                _dataset_widgets(config, found)
            columns = st.columns(COLUMNS)
            placed = 0
            for item in items:
                if item.kind == "folders":
                    continue
                key = widget_key(item, n_classes)
                initial = options.get_value(start, item.name)
                if item.name == "weights":
                    value = _weights_widget(item, initial, key, found)
                elif item.name == "cache_dir":
                    value = _cache_widget(columns[placed % COLUMNS], key, found)
                    placed += 1
                else:
                    matters = options.needed(item, config)
                    value, problems = option_widget(item, columns[placed % COLUMNS], initial, key,
                                                    disabled=not matters)
                    placed += 1
                    found.extend(problems)
                    if not matters:
                        value = initial
                options.set_value(config, item.name, value)
    return config, found
