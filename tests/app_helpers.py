"""Helpers of the app tests (tests/test_app_*.py): synthetic moles, datasets and an isolated AppTest."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

APP = Path(__file__).resolve().parents[1] / "app.py"
SKIN = (224, 172, 150)
MOLE = (90, 55, 40)


def mole_image(height: int = 96, width: int = 112, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A dark ellipse on skin colour with a little noise: ``(image (H, W, 3) uint8, mask (H, W) bool)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    cy = height / 2 + rng.uniform(-0.08, 0.08) * height
    cx = width / 2 + rng.uniform(-0.08, 0.08) * width
    ry, rx = height * rng.uniform(0.2, 0.3), width * rng.uniform(0.2, 0.3)
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    image = np.empty((height, width, 3), dtype=np.float64)
    image[:] = SKIN
    image[mask] = MOLE
    image += rng.normal(0.0, 5.0, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def make_dataset(folder: Path, count: int = 6, size: int = 96, mask_suffix: str = "") -> Path:
    """``folder/images/m<i>.png`` and ``folder/masks/m<i><mask_suffix>.png`` (0/255)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image, mask = mole_image(size, size, seed=index)
        Image.fromarray(image).save(folder / "images" / f"m{index}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / f"m{index}{mask_suffix}.png")
    return folder


def isolate(monkeypatch, tmp_path: Path) -> dict[str, Path]:
    """Point the app at empty models/runs folders and a private temporary folder (no shipped model:
    the app falls back to the classical baseline, whatever is installed in the project)."""
    folders = {name: tmp_path / name for name in ("models", "runs", "tmp", "cache")}
    for folder in folders.values():
        folder.mkdir(exist_ok=True)
    monkeypatch.setenv("MOLESEG_MODELS_DIR", str(folders["models"]))
    monkeypatch.setenv("MOLESEG_RUNS_DIR", str(folders["runs"]))
    monkeypatch.setenv("MOLESEG_TMPDIR", str(folders["tmp"]))
    monkeypatch.setenv("MOLESEG_CACHE", str(folders["cache"]))
    return folders


def app_test(page: str | None = None, timeout: float = 60, empty_cache: bool = True):
    """An AppTest of app.py, run once, switched to ``page`` (a ``moleseg.app.ui.PAGE_FILES`` value) and run.
    The server's analysis cache is emptied first unless ``empty_cache`` is false (the tests of one process
    share it, as the sessions of a server do)."""
    from streamlit.testing.v1 import AppTest

    from moleseg.app import ui

    if empty_cache:
        ui.analysis_store().clear()
    at = AppTest.from_file(str(APP), default_timeout=timeout).run()
    if page:
        at.switch_page(page).run()
    return at


def run_until(at, condition: Callable[[Any], bool], timeout: float = 60, pause: float = 0.2):
    """Run ``at`` again (as the page's polling fragment would) until ``condition(at)`` holds; fails after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition(at):
        assert time.monotonic() < deadline, f"not reached within {timeout} s"
        time.sleep(pause)
        at.run()
    return at


def texts(elements) -> list[str]:
    return [str(element.value) for element in elements]
