"""Device profiles (moleseg.core.devices) and the Analyse page's pixel size remembered across sessions by them."""

from __future__ import annotations

import json
import threading

import pytest

from app_helpers import app_test, texts
from moleseg.app.ui import PAGE_FILES
from moleseg.core.devices import (DeviceProfile, checked_profile, choose_profile, read_profiles, save_profile)


def test_profiles_are_saved_replaced_chosen_and_bad_files_named(tmp_path):
    path = tmp_path / "devices.json"
    assert read_profiles(path).profiles == ()
    save_profile(path, checked_profile("  DermLite   DL4 ", 0.0125))
    saved = save_profile(path, DeviceProfile("Heine", 0.02))
    assert [p.name for p in saved.profiles] == ["DermLite DL4", "Heine"] and saved.last == "Heine"
    saved = save_profile(path, DeviceProfile("DermLite DL4", 0.0130))  # same name: replaced, last in the list
    assert saved.profiles == (DeviceProfile("Heine", 0.02), DeviceProfile("DermLite DL4", 0.013))
    assert choose_profile(path, "Heine").last == "Heine" and read_profiles(path).last == "Heine"
    assert choose_profile(path, "").last == ""
    with pytest.raises(ValueError, match="no device profile called 'Zeiss'"):
        choose_profile(path, "Zeiss")
    with pytest.raises(ValueError, match="above 0 and at most 10 mm per px"):
        checked_profile("x", 0)
    with pytest.raises(ValueError, match="give the device a name"):
        checked_profile("   ", 0.01)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"^{path}: not a device profiles file"):
        read_profiles(path)
    path.write_text(json.dumps({"profiles": [{"name": "a", "pixel_size_mm": -1}]}))
    with pytest.raises(ValueError, match=f"^{path}: a device profile is not valid"):
        read_profiles(path)


def test_two_sessions_saving_two_profiles_at_once_keep_both(tmp_path, monkeypatch):
    """Each save read the file, added its profile and wrote it back: two sessions of a user saving at once both
    read the file before either wrote it, and the second write dropped the first profile."""
    from moleseg.core import devices

    path = tmp_path / "devices.json"
    write = devices.atomic_write
    other: list[threading.Thread] = []

    def meanwhile(target, data):  # the first save's write: the other session saves now
        if not other:
            other.append(threading.Thread(target=save_profile, args=(path, DeviceProfile("FotoFinder", 0.01))))
            other[0].start()
            other[0].join(timeout=1.0)  # finished here before; waits for this save now
        return write(target, data)

    monkeypatch.setattr(devices, "atomic_write", meanwhile)
    save_profile(path, DeviceProfile("DermLite", 0.02))
    other[0].join()
    assert sorted(profile.name for profile in read_profiles(path).profiles) == ["DermLite", "FotoFinder"]

def test_the_pixel_size_is_remembered_in_a_new_session_by_its_device(app_folders, monkeypatch, tmp_path):
    monkeypatch.setenv("MOLESEG_CORRECTIONS_DIR", str(tmp_path / "mine" / "dataset"))
    at = app_test(PAGE_FILES["analyse"])
    assert at.number_input(key="analyse_pixel_size").value == 0.0
    at.number_input(key="analyse_pixel_size").set_value(0.0125).run()
    assert not at.text_input  # the saving block's widgets are made only once it is opened
    at.session_state["analyse_device_open"] = True
    at.run()
    at.text_input(key="analyse_device_name").input("DermLite DL4").run()
    at.button(key="analyse_device_save").click().run()
    assert "Saved the device profile DermLite DL4 (0.0125 mm per px)." in texts(at.success)
    assert json.loads((tmp_path / "mine" / "devices.json").read_text())["last"] == "DermLite DL4"

    again = app_test(PAGE_FILES["analyse"])  # a new session
    assert again.selectbox(key="analyse_device").value == "DermLite DL4"
    assert again.number_input(key="analyse_pixel_size").value == 0.0125
    again.selectbox(key="analyse_device").set_value("none: type the pixel size").run()
    assert again.number_input(key="analyse_pixel_size").value == 0.0125  # kept, but no profile next time
    assert app_test(PAGE_FILES["analyse"]).number_input(key="analyse_pixel_size").value == 0.0

    (tmp_path / "mine" / "devices.json").write_text("[]")
    broken = app_test(PAGE_FILES["analyse"])
    assert not broken.exception
    assert any("devices.json: not a device profiles file" in text for text in texts(broken.warning))
