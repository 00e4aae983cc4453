"""The pages' server paths: which folders a browser user may read (the data roots of the settings, the user's
own "My dataset" and runs (:func:`moleseg.app.identity.user_space`), the session's own uploads), a picker over
them, and the notice shown when the server offers none.

Every path typed in a page goes through :func:`moleseg.core.roots.resolve_inside_roots` with one of these
root lists; the app writes only under its own data and cache folders.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from moleseg.app import ui
from moleseg.app.identity import user_space
from moleseg.core.roots import folders_inside
from moleseg.core.settings import load_settings
from moleseg.engine.session import DATASET_PAIR_FORM, SessionFolder

#: Shown where a page would take a server folder and the server offers none.
NO_ROOTS_NOTICE: str = ("This server offers no data folders (its operator lists them in the data_roots setting; "
                        "see the README's Security section): upload your images instead, or a dataset ZIP on the "
                        "Prepare page.")
#: What a dataset typed in a page may be (the sentence goes into the text box's help).
DATASET_PATH_HELP: str = (f"A folder holding images/ and masks/, or two folders as '{DATASET_PAIR_FORM}', inside the "
                          "folders this server offers (or your own dataset).")
#: Seconds a listing of the folders inside the roots is reused.
LISTING_TTL_S: float = 30.0


def data_roots() -> tuple[Path, ...]:
    """The folders the server's operator offers (``data_roots`` of :func:`load_settings`)."""
    return load_settings().data_roots


def dataset_roots() -> tuple[Path, ...]:
    """Where a page may read a dataset: the data roots, the user's own dataset ("My dataset") and this browser
    session's own folder (a dataset unpacked from an uploaded ZIP), never another session's or user's."""
    own = st.session_state.get(ui.SESSION_FOLDER_KEY)
    session = (own.path,) if isinstance(own, SessionFolder) and not own.removed else ()
    return (*data_roots(), user_space().dataset, *session)


def model_file_roots() -> tuple[Path, ...]:
    """Where a page may read a model file: the data roots and the user's own runs."""
    return (*data_roots(), user_space().runs)


def study_file_roots(shipped: Path) -> tuple[Path, ...]:
    """Where the Study page may read a study file: the ``shipped`` studies folder and the data roots."""
    return (shipped, *data_roots())


@st.cache_data(ttl=LISTING_TTL_S, show_spinner=False)
def _listing(roots: tuple[Path, ...]) -> list[str]:
    return [str(folder) for folder in folders_inside(roots)]


def path_picker(target_key: str, choices: list[str], *, label: str = "Folders on this server",
                join: bool = False) -> None:
    """A select box of ``choices``; picking one writes it into the text input ``target_key`` (appended as a new
    line with ``join``, for a list of folders), which stays free to edit."""
    pick_key = f"{target_key}_pick"

    def pick() -> None:
        chosen = st.session_state.get(pick_key)
        if not chosen:
            return
        current = str(st.session_state.get(target_key) or "").strip()
        st.session_state[target_key] = f"{current}\n{chosen}" if join and current else chosen

    st.selectbox(label, [""] + choices, key=pick_key, on_change=pick,
                 format_func=lambda choice: choice or f"choose one of {len(choices)}...")


def folder_picker(target_key: str, roots: tuple[Path, ...], *, join: bool = False) -> None:
    """:func:`path_picker` over the folders inside ``roots``, two levels deep."""
    path_picker(target_key, _listing(roots), join=join)


def dataset_picker(target_key: str) -> tuple[Path, ...]:
    """The notice when the server offers no data folders and a picker of the folders inside
    :func:`dataset_roots`, writing into the text input ``target_key``; returns those roots."""
    roots = dataset_roots()
    if not data_roots():
        st.info(NO_ROOTS_NOTICE)
    folder_picker(target_key, roots)
    return roots
