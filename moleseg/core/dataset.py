"""The user's own dataset: images and their (corrected) lesion masks, saved where training and evaluation
read them.

Layout: ``<folder>/images/<stem>.png``, ``<folder>/masks/<stem>.png`` (0/255, same name: the pairing
rule :func:`moleseg.core.pairing.pair_folders` reads first) and ``<folder>/provenance/<stem>.json``
(model, settings, corrected by hand or accepted as is, date). Every file is written atomically, the
provenance last, so a pair is complete whenever its record exists.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from moleseg.core.atomic import atomic_write
from moleseg.core.imageio import encode_png

IMAGES, MASKS, PROVENANCE = "images", "masks", "provenance"


@dataclass(frozen=True)
class SavedPair:
    """The files of one saved pair."""

    image: Path
    mask: Path
    provenance: Path


def _free_stem(folder: Path, stem: str) -> str:
    base = re.sub(r"[^\w.+-]+", "_", stem).strip("._") or "image"
    candidate, index = base, 2
    while any((folder / sub / f"{candidate}{suffix}").exists()
               for sub, suffix in ((IMAGES, ".png"), (MASKS, ".png"), (PROVENANCE, ".json"))):
        candidate, index = f"{base}_{index}", index + 1
    return candidate


def save_pair(folder: str | Path, stem: str, image: np.ndarray, lesion: np.ndarray,
              provenance: Mapping[str, Any], *, created: datetime | None = None) -> SavedPair:
    """Save an RGB image and its lesion mask as a pair of the dataset in ``folder`` (created if missing).

    ``stem`` names the files (made safe; ``_2``, ``_3`` ... when taken: nothing is overwritten).
    ``provenance`` (JSON-serialisable) is stored with ``saved`` (ISO date), ``image``, ``mask`` and the
    mask's size added.

    Raises
    ------
    ValueError
        Image and mask of different sizes, or an empty image.
    OSError
        The folder cannot be written.
    """
    image = np.asarray(image)
    mask = np.asarray(lesion, dtype=bool)
    if image.ndim < 2 or image.size == 0:
        raise ValueError("cannot save an empty image")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"image and mask differ in size: {image.shape[:2]} vs {mask.shape}")
    root = Path(folder)
    for sub in (IMAGES, MASKS, PROVENANCE):
        (root / sub).mkdir(parents=True, exist_ok=True)
    stem = _free_stem(root, stem)
    image_path = atomic_write(root / IMAGES / f"{stem}.png", encode_png(image))
    mask_path = atomic_write(root / MASKS / f"{stem}.png", encode_png(mask.astype(np.uint8) * 255))
    record = {**provenance, "image": f"{IMAGES}/{image_path.name}", "mask": f"{MASKS}/{mask_path.name}",
              "size": [int(mask.shape[1]), int(mask.shape[0])],
              "saved": (created or datetime.now().astimezone()).isoformat(timespec="seconds")}
    provenance_path = atomic_write(root / PROVENANCE / f"{stem}.json",
                                   (json.dumps(record, indent=1, default=str) + "\n").encode("utf-8"))
    return SavedPair(image_path, mask_path, provenance_path)
