"""moleseg installs like a package: the wheel built from the sources, installed into a fresh venv, runs its
``moleseg`` command from a folder outside the checkout and predicts with the shipped model it carries."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synthetic import mole_image

from moleseg.core.imagewrite import write_png

PROJECT = Path(__file__).resolve().parents[1]
#: What the wheel is built from (the rest of the checkout is not needed).
SOURCES = ("moleseg", "models", "studies", "pyproject.toml", "setup.py", "README.md")


def _run(command: list[str | Path], **options) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=120, **options)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_predicts_outside_the_checkout(tmp_path):
    if not (PROJECT / "models" / "dermoscopy.keras").is_file():
        pytest.skip("models/dermoscopy.keras is absent: nothing to ship")
    # nothing of the checkout on the path: no PYTHONPATH, no models folder named from outside
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "MOLESEG_MODELS_DIR", "MOLESEG_RUNS_DIR")}
    source = tmp_path / "source"  # a copy, so that the build writes nothing into the checkout
    for name in SOURCES:
        if (PROJECT / name).is_dir():
            shutil.copytree(PROJECT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(PROJECT / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
          "-w", tmp_path / "wheels", source], env=env)
    (wheel,) = (tmp_path / "wheels").glob("moleseg-*.whl")

    fresh = tmp_path / "venv"
    venv.create(fresh, with_pip=False)
    python = fresh / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--quiet", wheel], env=env)
    # the third-party packages (TensorFlow...) come from this test's own venv, as a plain path entry: the
    # .pth files there, among them the editable moleseg finder of the checkout, are not run
    fresh_packages = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], env=env).stdout.strip())
    (fresh_packages / "project-packages.pth").write_text(sysconfig.get_path("purelib") + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env["XDG_DATA_HOME"] = str(tmp_path / "user-data")  # the user's data folder of an installed moleseg
    env.pop("MOLESEG_CORRECTIONS_DIR", None)
    env.pop("MOLESEG_DATA_DIR", None)  # the tests' own data folder is not the installed user's
    where = _run([python, "-c", "import moleseg, moleseg.core.config as c, moleseg.engine.studyplan as s; "
                  "print(moleseg.__file__); print(c.models_dir()); print(c.corrections_dir()); "
                  "print(','.join(p.name for p in s.study_files()))"], cwd=elsewhere, env=env).stdout.split()
    package_file, models = Path(where[0]), Path(where[1])
    assert package_file.is_relative_to(fresh_packages), package_file
    assert models == package_file.parent / "models"
    # corrections go to the user's data folder, not beside site-packages; the shipped studies come along
    assert Path(where[2]) == tmp_path / "user-data" / "moleseg" / "corrections"
    assert where[3].split(",") == sorted(p.name for p in (PROJECT / "studies").glob("*.yaml"))
    assert {p.name for p in models.iterdir()} >= {"dermoscopy.keras", "dermoscopy.onnx", "dermoscopy.json",
                                                 "cells.keras", "cells.onnx", "cells.json"}

    command = fresh / "bin" / "moleseg"
    usage = _run([command, "--help"], cwd=elsewhere, env=env).stdout
    assert usage.startswith("usage: moleseg") and "predict" in usage

    image, truth = mole_image(128, 160, seed=3)
    write_png(elsewhere / "mole.png", image)
    predicted = _run([command, "predict", "--out", "out", "mole.png"], cwd=elsewhere, env=env)
    assert "1 image written" in predicted.stdout, predicted.stdout + predicted.stderr
    assert sorted(p.name for p in (elsewhere / "out").iterdir()) == [
        "measurements.csv", "measurements.settings.json", "mole_classes.png", "mole_mask.png", "mole_overlay.png"]
    with Image.open(elsewhere / "out" / "mole_mask.png") as opened:
        mask = np.asarray(opened) > 0
    assert mask.shape == truth.shape
    jaccard = (mask & truth).sum() / (mask | truth).sum()
    assert jaccard > 0.5, jaccard  # the mole is found
    with open(elsewhere / "out" / "measurements.csv", newline="", encoding="utf-8") as table:
        rows = list(csv.DictReader(table))
    assert [row["image"] for row in rows] == ["mole.png"]
