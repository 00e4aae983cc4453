"""The pixel size input of the Analyse and Compare pages with the user's device profiles
(:mod:`moleseg.core.devices`): a select box of named devices whose pixel size fills the input, the last one
chosen again in a new session, and saving the pixel size typed as a named profile. The profiles live in the
user's own space (per user in shared mode)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

from moleseg.app.identity import Refusal, find_user_space
from moleseg.core.config import MAX_PIXEL_SIZE_MM
from moleseg.core.devices import DeviceProfiles, checked_profile, choose_profile, read_profiles, save_profile
from moleseg.core.userspace import UserSpace

#: The select box's entry for no profile (the pixel size typed by hand).
NO_PROFILE: str = "none: type the pixel size"


def pixel_size_value(key: str) -> float:
    """The pixel size (mm per px, 0 when none) of the :func:`pixel_size_input` whose widget keys start with
    ``key``, as it is now."""
    return float(st.session_state.get(pixel_size_key(key), 0.0))


def pixel_size_key(key: str) -> str:
    """The session-state key of the pixel size widget of the :func:`pixel_size_input` whose keys start with ``key``."""
    return f"{key}_pixel_size"


def profiles_path(space: UserSpace) -> Path:
    """The device profiles file of a user's space (:attr:`moleseg.core.userspace.UserSpace.device_profiles`)."""
    return space.device_profiles


def _profiles(path: Path) -> DeviceProfiles:
    try:
        return read_profiles(path)
    except ValueError as error:
        st.warning(f"Device profiles not used: {error}")
        return DeviceProfiles()


def pixel_size_input(key: str, zero_means: str = "pixels only (or the DICOM files' own pixel spacing)",
                     on_change: Callable[[], None] | None = None) -> float:
    """A pixel size (mm per px, 0: ``zero_means``, said in its help) with the device profiles of this session's
    user; widget keys start with ``key``. ``on_change``: the callback of a size typed while nothing drawn here
    depends on it (the box that saves it as a profile closed); None: the usual rerun."""
    space = find_user_space()
    path = profiles_path(space) if isinstance(space, UserSpace) else None
    profiles = _profiles(path) if path is not None else DeviceProfiles()
    names = [profile.name for profile in profiles.profiles]
    size_key, device_key, message_key = pixel_size_key(key), f"{key}_device", f"{key}_device_message"
    if device_key not in st.session_state:  # a new session: the device used last, and its pixel size
        last = profiles.named(profiles.last)
        st.session_state[device_key] = last.name if last else NO_PROFILE
        st.session_state.setdefault(size_key, last.pixel_size_mm if last else 0.0)
    if st.session_state[device_key] not in [NO_PROFILE, *names]:
        st.session_state[device_key] = NO_PROFILE

    def chosen() -> None:
        name = st.session_state[device_key]
        profile = profiles.named(name)
        if profile is not None:
            st.session_state[size_key] = profile.pixel_size_mm
        if path is not None:
            try:
                choose_profile(path, "" if profile is None else name)
            except (OSError, ValueError) as error:
                st.session_state[message_key] = f"Could not remember the device: {error}"

    st.selectbox("Device profile", [NO_PROFILE, *names], key=device_key, on_change=chosen,
                 help="A named dermatoscope (or microscope) and its pixel size, saved in your own folder; the "
                      "one chosen last is chosen again in your next session.")
    size = st.number_input("Pixel size (mm per px)", min_value=0.0, max_value=MAX_PIXEL_SIZE_MM, step=0.001,
                           format="%.4f", key=size_key,
                           on_change=None if st.session_state.get(f"{key}_device_open") else on_change,
                           help=f"Give it to get lengths in mm and the area in mm² as well. 0: {zero_means}.")
    if path is None or isinstance(space, Refusal):
        st.caption(f"Device profiles are not kept: {space.message}")
        return float(size)

    def save() -> None:
        try:
            profile = checked_profile(st.session_state.get(f"{key}_device_name", ""), st.session_state[size_key])
            save_profile(path, profile)
        except (OSError, ValueError) as error:
            st.session_state[message_key] = f"Could not save the device profile: {error}"
        else:
            st.session_state[device_key] = profile.name
            st.session_state[message_key] = f"Saved the device profile {profile.name} ({profile.pixel_size_mm:g} mm per px)."

    box = st.expander("Save as a device profile", key=f"{key}_device_open", on_change="rerun")
    if box.open:  # its widgets only while it is open (Streamlit's lazy expander): fewer elements per rerun
        box.text_input("Device name", key=f"{key}_device_name", placeholder="e.g. DermLite DL4, 10x")
        box.button("Save the pixel size under this name", key=f"{key}_device_save", on_click=save,
                   disabled=size <= 0)
    message = st.session_state.pop(message_key, None)
    if message:
        (st.success if message.startswith("Saved") else st.error)(message)
    return float(size)
