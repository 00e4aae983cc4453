"""The app's home page: what it does, which model, which device, links; and no TensorFlow at home."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile

from app_helpers import APP, app_test, texts
from moleseg.app.ui import PAGE_FILES
from moleseg.core.report import DISCLAIMER


#: What the browser reads as an emoji code in markdown (Streamlit's frontend then fetches its emoji library).
EMOJI_CODE = re.compile(r":(?!material/|streamlit:)[\w+-][\w_+-]*:")


def headline(at) -> dict[str, str]:
    """The home page's "Model in use: **name**" and "Device: **name**" lines, as label -> value."""
    found = (re.fullmatch(r"(Model in use|Device): \*\*(.+)\*\*", text) for text in texts(at.markdown))
    return dict(match.groups() for match in found if match)


def test_home_shows_the_model_the_device_and_links_to_every_page(app_folders, monkeypatch, tmp_path):
    at = app_test()
    assert not at.exception
    assert not at.metric  # a metric makes the browser fetch and run its own script first
    shown = headline(at)
    assert shown["Model in use"] == "classical baseline"
    assert shown["Device"] in ("CPU", "GPU")
    assert any("No trained model is installed" in text for text in texts(at.info))
    links = [link.proto.page for link in at.get("page_link") if link.proto.page != "train" or "Train:" in
             link.proto.label]  # url paths of the pages (the no-model notice links Train too)
    assert links == ["analyse", "prepare", "train", "evaluate", "history", "compare", "study"]
    labels = [link.proto.label.split(":")[0] for link in at.get("page_link") if ":" in link.proto.label]
    assert labels == ["Analyse", "Prepare targets", "Train", "Evaluate", "History", "Compare visits", "Study"]
    assert any(text.startswith("Model: classical baseline, version 0.1.0. Device: ") for text in texts(at.caption))
    assert texts(at.warning) == [DISCLAIMER]


def test_home_names_an_installed_shipped_model(app_folders, monkeypatch, tmp_path):
    with zipfile.ZipFile(app_folders["models"] / "dermoscopy.keras", "w") as archive:  # metadata only: no TF needed
        archive.writestr("moleseg.json", json.dumps({"name": "dermoscopy", "n_classes": 3, "input_size": 320}))
    at = app_test()
    assert not at.exception
    assert headline(at)["Model in use"] == "dermoscopy"
    assert any(text.startswith("Model: dermoscopy. Device: ") for text in texts(at.caption))  # no version in the file
    assert not any("No trained model is installed" in text for text in texts(at.info))
    from moleseg.app.ui import MODEL_KEY

    at.session_state[MODEL_KEY] = "classical"  # chosen on another page: the model in use
    assert headline(at.run())["Model in use"] == "classical baseline"
    at.session_state[MODEL_KEY] = str(app_folders["models"] / "gone.keras")  # no longer offered: the default
    assert headline(at.run())["Model in use"] == "dermoscopy"


def test_pages_without_a_network_never_import_tensorflow(tmp_path):
    """Every page (Analyse with the classical model) loads without importing TensorFlow (checked in a
    fresh interpreter, since other tests of this process may have imported it)."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(APP.parent / 'tests')!r})
        from app_helpers import app_test
        from synthetic import mole_image, png_bytes
        from moleseg.app.ui import PAGE_FILES
        at = app_test()
        assert not at.exception, at.exception
        for page in ("prepare", "train", "evaluate", "study", "history", "compare", "analyse"):
            at.switch_page(PAGE_FILES[page]).run()
            assert not at.exception, (page, at.exception)
        at.selectbox(key="analyse_model").set_value("classical").run()
        at.file_uploader(key="analyse_upload_files").set_value(("m.png", png_bytes(mole_image()[0]), "image/png")).run()
        assert len(at.get("image")) == 1 and not at.exception  # the overlay (the class map only in its tab)
        print("TF" if any(name in sys.modules for name in ("tensorflow", "keras")) else "NO-TF")
    """)
    env = {**os.environ, "MOLESEG_MODELS_DIR": str(tmp_path), "MOLESEG_RUNS_DIR": str(tmp_path / "runs"),
           "MOLESEG_TMPDIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, env=env,
                            cwd=APP.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "NO-TF"


def test_a_shipped_cells_model_alone_is_listed_but_not_the_default(app_folders, monkeypatch, tmp_path):
    with zipfile.ZipFile(app_folders["models"] / "cells.keras", "w") as archive:
        archive.writestr("moleseg.json", json.dumps({"name": "cells", "n_classes": 2, "input_size": 320}))
    at = app_test()
    assert headline(at)["Model in use"] == "classical baseline"
    assert any("No trained model is installed" in text for text in texts(at.info))
    at.switch_page(PAGE_FILES["analyse"]).run()
    picker = at.selectbox(key="analyse_model")
    assert picker.value == "classical"
    assert "cells (shipped, cells, 2 classes)" in picker.options


def test_the_device_is_looked_up_once_per_server(app_folders, monkeypatch):
    from moleseg.app import models, ui

    calls = []
    monkeypatch.setattr(models, "device_summary", lambda: calls.append(1) or "GPU (Test card)")
    ui.device_summary.clear()
    try:
        at = app_test()
        at.run()
        app_test()  # another session
        assert headline(at)["Device"] == "GPU"
        assert any("Device: GPU (Test card)" in text for text in texts(at.caption))
        assert len(calls) == 1
    finally:
        ui.device_summary.clear()


def test_a_version_with_a_time_is_shown_without_an_emoji_code(app_folders, monkeypatch, tmp_path):
    with zipfile.ZipFile(app_folders["models"] / "dermoscopy.keras", "w") as archive:
        archive.writestr("moleseg.json", json.dumps({"name": "dermoscopy", "n_classes": 3, "input_size": 320,
                                                     "version": "2026-11-25T05:12:45"}))
    at = app_test()
    caption = next(text for text in texts(at.caption) if text.startswith("Model: "))
    assert caption.startswith("Model: dermoscopy, version 2026-11-25T05\\:12\\:45. Device: ")  # shown as 05:12:45
    assert not [text for text in texts(at.markdown) + texts(at.caption) if EMOJI_CODE.search(text)]
