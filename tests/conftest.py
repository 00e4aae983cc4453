"""Shared test fixtures and helpers. Append new fixtures below; keep each section small."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# --------------------------------------------------------------------------------------------------
# Real data (../shared/data next to the project; override with MOLESEG_SHARED_DATA)

SHARED_DATA: Path = Path(
    os.environ.get("MOLESEG_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)


def require_shared(subpath: str | os.PathLike[str] = "") -> Path:
    """Path of ``SHARED_DATA / subpath``, or skip the calling test when it does not exist."""
    path = SHARED_DATA / subpath
    if not path.exists():
        pytest.skip(f"shared data not found at {path}: real-data tests skipped")
    return path


@pytest.fixture
def shared_data() -> Path:
    """Root of the real data (skips the test when absent)."""
    return require_shared()


# --------------------------------------------------------------------------------------------------
# Synthetic dermoscopy scenes (textured skin with a lesion), for registration and comparison tests

def _lesion_scene(*, radius_px: float = 60.0, angle_deg: float = 0.0, shift_px: tuple[float, float] = (0.0, 0.0),
                  size_px: int = 320, seed: int = 0):
    """A textured skin image with a brown, slightly ragged lesion, seen rotated and shifted.

    The scene (skin texture, pigment dots, the lesion of mean radius ``radius_px``) is drawn on a canvas
    twice the size, rotated by ``angle_deg`` (counter-clockwise as displayed) about the canvas centre,
    moved by ``shift_px`` (dx, dy), and the central ``size_px`` square is cut out, so no edge is blank.
    The lesion's texture is the same for every radius (grow the radius to grow the lesion).

    Returns
    -------
    image : (size_px, size_px, 3) uint8
    lesion : (size_px, size_px) bool
        The true lesion.
    """
    import cv2
    import numpy as np

    canvas = 2 * size_px
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.standard_normal((canvas, canvas)).astype(np.float32), (0, 0), 3.0)
    noise = noise / noise.std()
    fine = cv2.GaussianBlur(rng.standard_normal((canvas, canvas)).astype(np.float32), (0, 0), 1.0)
    fine = fine / fine.std()
    skin = np.stack([215 + 10 * noise + 5 * fine, 170 + 10 * noise + 5 * fine, 150 + 10 * noise + 5 * fine], -1)
    for _ in range(250):  # freckle-like dots all over the skin: texture the features can hold on to
        x, y = rng.uniform(0, canvas, 2)
        cv2.circle(skin, (int(x), int(y)), int(rng.integers(1, 4)), (170.0, 120.0, 100.0), -1)
    rows, cols = np.mgrid[:canvas, :canvas].astype(np.float32)
    centre = canvas / 2
    angles = np.arctan2(rows - centre, cols - centre)
    wobble = 1 + 0.06 * np.sin(3 * angles + 0.5) + 0.04 * np.sin(5 * angles + 1.3)
    lesion = np.hypot(rows - centre, cols - centre) <= radius_px * wobble
    pigment = np.stack([110 + 12 * noise, 65 + 10 * noise, 45 + 8 * noise], -1)
    image = np.where(lesion[..., None], pigment, skin)
    matrix = cv2.getRotationMatrix2D((centre, centre), angle_deg, 1.0)
    matrix[:, 2] += shift_px
    image = cv2.warpAffine(np.clip(image, 0, 255).astype(np.float32), matrix, (canvas, canvas),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    lesion = cv2.warpAffine(lesion.astype(np.float32), matrix, (canvas, canvas), flags=cv2.INTER_LINEAR) >= 0.5
    start = (canvas - size_px) // 2
    crop = slice(start, start + size_px)
    return np.clip(np.round(image[crop, crop]), 0, 255).astype(np.uint8), lesion[crop, crop]


@pytest.fixture
def lesion_scene():
    """Factory of synthetic lesion images: ``lesion_scene(radius_px=, angle_deg=, shift_px=, seed=)``."""
    return _lesion_scene


# --------------------------------------------------------------------------------------------------
# Saved records: every test gets its own data folder, never the user's

@pytest.fixture(autouse=True)
def records_data_dir(tmp_path_factory, monkeypatch) -> Path:
    """A fresh ``MOLESEG_DATA_DIR`` for each test (the records database and files go there)."""
    from moleseg.core.config import DATA_DIR_ENV

    folder = tmp_path_factory.mktemp("moleseg-data")
    monkeypatch.setenv(DATA_DIR_ENV, str(folder))
    return folder
