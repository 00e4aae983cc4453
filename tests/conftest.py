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
# Small synthetic lesion sets (dark disks on light skin) for CLI and engine tests


@pytest.fixture
def lesion_set():
    """A factory ``lesion_set(folder, n=3, size=64, names=None) -> (images_dir, masks_dir)``: dark disks
    on light skin in ``images/`` and their 0/255 masks in ``masks/``, PNG, same file names."""
    import numpy as np

    from moleseg.core.imageio import write_png

    def make(folder: Path, n: int = 3, size: int = 64, names: list[str] | None = None) -> tuple[Path, Path]:
        rng = np.random.default_rng(0)
        images, masks = folder / "images", folder / "masks"
        images.mkdir(parents=True, exist_ok=True)
        masks.mkdir(parents=True, exist_ok=True)
        yy, xx = np.mgrid[:size, :size]
        for index, name in enumerate(names or [f"{i:03d}.png" for i in range(n)]):
            cy, cx = rng.integers(size * 3 // 8, size * 5 // 8, 2)
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 5) ** 2
            image = np.where(mask[..., None], np.array([80, 55, 40]), np.array([215, 185, 175]))
            image = np.clip(image + rng.integers(-6, 7, image.shape), 0, 255).astype(np.uint8)
            write_png(images / name, image)
            write_png(masks / name, mask)
        return images, masks

    return make
