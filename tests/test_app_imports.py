"""The app's home and Analyse pages start without TensorFlow (a page imports it only when it trains or
converts a model): both pages run in a new Python process, as a freshly started server runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from app_helpers import APP

#: Runs the home page, then the Analyse page, and prints which heavy modules the process holds.
SCRIPT = """
import json, sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=60).run()
home = [str(title.value) for title in at.title]
at.switch_page("app_pages/analyse.py").run()
print(json.dumps({"home": home, "analyse": [str(title.value) for title in at.title],
                  "exceptions": len(at.exception), "loaded": sorted(m for m in ("tensorflow", "keras", "tf2onnx")
                                                                     if m in sys.modules)}))
"""


def test_the_home_and_analyse_pages_start_without_tensorflow(app_folders):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(APP)], cwd=APP.parent, env=dict(os.environ),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"home": ["moleseg: mole border analysis"], "analyse": ["Analyse mole images"], "exceptions": 0,
                    "loaded": []}
