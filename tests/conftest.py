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
