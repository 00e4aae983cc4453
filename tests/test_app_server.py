"""The app's server launcher (``moleseg.app.server``): the modules ``app.py`` and its pages import at their top
level, read from their source, and loaded in the background once the server listens, without TensorFlow."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from app_helpers import APP
from moleseg.app.server import load_modules, top_level_imports


def test_the_top_level_imports_of_a_script_are_read_in_order_once_each(tmp_path):
    script = tmp_path / "page.py"
    script.write_text(textwrap.dedent("""
        from __future__ import annotations
        import os, json.decoder
        from moleseg.core import config, words as said
        from . import sibling
        import os

        def later():
            import tensorflow
    """))
    assert top_level_imports(script) == ["os", "json.decoder", "moleseg.core", "moleseg.core.config",
                                         "moleseg.core.words"]


def test_loading_skips_names_that_are_not_modules_and_modules_that_fail():
    assert load_modules(["json", "json.decoder", "json.dumps", "moleseg_no_such_module"]) == ["json", "json.decoder"]


def test_the_warm_up_loads_what_the_pages_import_and_never_tensorflow():
    """In a fresh interpreter (other tests of this process may have imported TensorFlow)."""
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from moleseg.app.server import warm_up
        loaded = warm_up(Path({str(APP)!r}))
        print(int("tensorflow" in sys.modules), int("keras" in sys.modules),
              *(int(name in loaded) for name in ("moleseg.app.ui", "moleseg.app.results", "moleseg.app.evaluation")),
              int("sqlalchemy" in sys.modules), int("pyarrow" in loaded), int("moleseg.app.ui.PAGE_FILES" in loaded))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=APP.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["0", "0", "1", "1", "1", "1", "1", "0"]
