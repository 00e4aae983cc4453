"""The user's own dataset: images and their (corrected) lesion masks, saved where training and evaluation
read them.

Layout: ``<folder>/images/<stem>.png``, ``<folder>/masks/<stem>.png`` (0/255, same name: the pairing
rule :func:`moleseg.core.pairing.pair_folders` reads first) and ``<folder>/provenance/<stem>.json``
(model, settings, corrected by hand or accepted as is, date, the image's content hash). Every file is
written atomically, the provenance last, so a pair is complete whenever its record exists; one save at a
time in a folder (in one server process), so two sessions saving images of one name keep both.

One entry per image: saving an image whose pixels are already in the dataset (:func:`image_sha256` of the
decoded image, whatever its file name) replaces that entry's mask and record instead of adding a second,
conflicting pair; a different image under a taken name gets a new name (``_2``, ``_3`` ...).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from moleseg.core.atomic import atomic_write, path_lock
from moleseg.core.imageio import ImageReadError, read_image
from moleseg.core.imagewrite import encode_png

IMAGES, MASKS, PROVENANCE = "images", "masks", "provenance"
#: Key of the image's content hash (:func:`image_sha256`) in a provenance record.
HASH_KEY = "image_sha256"


@dataclass(frozen=True)
class SavedPair:
    """The files of one saved pair; ``replaced``: the image was already in the dataset (same pixels) and
    only its mask and record were written again."""

    image: Path
    mask: Path
    provenance: Path
    replaced: bool = False


def image_sha256(image: np.ndarray) -> str:
    """Hex SHA-256 of an image's pixels (shape, dtype and values): equal for the same picture decoded from
    any file name or format that keeps the pixels."""
    values = np.ascontiguousarray(image)
    digest = hashlib.sha256(f"{values.shape}|{values.dtype.str}|".encode())
    digest.update(values.tobytes())
    return digest.hexdigest()


def pair_paths(folder: str | Path, stem: str) -> tuple[Path, Path, Path]:
    """The image, mask and provenance files of the pair ``stem`` in the dataset ``folder`` (whether or not
    they exist): ``images/<stem>.png``, ``masks/<stem>.png``, ``provenance/<stem>.json``."""
    root = Path(folder)
    return root / IMAGES / f"{stem}.png", root / MASKS / f"{stem}.png", root / PROVENANCE / f"{stem}.json"


def read_provenance(folder: str | Path, stem: str) -> dict[str, Any] | None:
    """The provenance record of the pair ``stem`` in the dataset ``folder``; None when it is missing,
    unreadable or not a JSON object."""
    try:
        record = json.loads(pair_paths(folder, stem)[2].read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def _recorded_hash(root: Path, stem: str) -> str | None:
    value = (read_provenance(root, stem) or {}).get(HASH_KEY)
    return value if isinstance(value, str) else None


def find_image(folder: str | Path, sha256: str) -> str | None:
    """Stem of the dataset's entry whose image has content hash ``sha256`` (:func:`image_sha256`), or None.

    The hash recorded in the entry's provenance is used when there is one; images saved without it (older
    saves, files copied in by hand) are decoded and hashed. Unreadable images are skipped.
    """
    images = Path(folder) / IMAGES
    if not images.is_dir():
        return None
    root = images.parent
    for path in sorted(images.glob("*.png")):
        recorded = _recorded_hash(root, path.stem)
        if recorded is None:
            try:
                recorded = image_sha256(read_image(path))
            except ImageReadError:
                continue
        if recorded == sha256:
            return path.stem
    return None


def _free_stem(folder: Path, stem: str) -> str:
    base = re.sub(r"[^\w.+-]+", "_", stem).strip("._") or "image"
    candidate, index = base, 2
    while any(path.exists() for path in pair_paths(folder, candidate)):
        candidate, index = f"{base}_{index}", index + 1
    return candidate


def save_pair(folder: str | Path, stem: str, image: np.ndarray, lesion: np.ndarray,
              provenance: Mapping[str, Any], *, created: datetime | None = None) -> SavedPair:
    """Save an RGB image and its lesion mask as a pair of the dataset in ``folder`` (created if missing).

    An image already in the dataset (same pixels, :func:`find_image`, whatever its name) keeps its entry:
    its mask and record are replaced atomically and the result says ``replaced``. Otherwise ``stem`` names
    the new files (made safe; ``_2``, ``_3`` ... when taken by another image: nothing is overwritten).
    ``provenance`` (JSON-serialisable) is stored with ``saved`` (ISO date), ``image``, ``mask``, the
    mask's size and the image's content hash (:data:`HASH_KEY`) added.

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
    with path_lock(root):  # one save at a time in this folder: two sessions of a user may save at once
        return _save_locked(root, stem, image, mask, provenance, created)


def _save_locked(root: Path, stem: str, image: np.ndarray, mask: np.ndarray, provenance: Mapping[str, Any],
                 created: datetime | None) -> SavedPair:
    """The body of :func:`save_pair`, under the dataset's lock: the name it picks is still free when written."""
    sha256 = image_sha256(image)
    existing = find_image(root, sha256)
    stem = _free_stem(root, stem) if existing is None else existing
    image_path, mask_path, provenance_path = pair_paths(root, stem)
    if existing is None:
        atomic_write(image_path, encode_png(image))  # else the same pixels: kept as they are
    atomic_write(mask_path, encode_png(mask.astype(np.uint8) * 255))
    record = {**provenance, "image": f"{IMAGES}/{image_path.name}", "mask": f"{MASKS}/{mask_path.name}",
              "size": [int(mask.shape[1]), int(mask.shape[0])], HASH_KEY: sha256,
              "saved": (created or datetime.now().astimezone()).isoformat(timespec="seconds")}
    atomic_write(provenance_path, (json.dumps(record, indent=1, default=str) + "\n").encode("utf-8"))
    return SavedPair(image_path, mask_path, provenance_path, replaced=existing is not None)
