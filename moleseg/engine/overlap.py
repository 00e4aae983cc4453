"""Is an evaluation a test? The evaluated images that the model was trained on.

A model file records its training image folders (``moleseg.json``: ``info["training"]["images"]``) and,
since moleseg records them at training time, the SHA-256 digests of every image of its training and
validation split (``info["training"]["image_sha256"]``): of each file and of its decoded pixels
(:func:`image_digests`), and, for a fine-tuned model, those its starting model recorded. With recorded
hashes, an evaluated image counts as seen in training when either digest of it is among them: a copy under
another name or folder, or re-encoded (an uploaded JPEG saved as PNG into the corrections dataset), is
caught, and the held-out test split of the same folder is not (it is a test). Without recorded hashes (older
model files), an image counts when its resolved path is a file of one of the training folders, or when
its content equals that of a file of those folders that still exist.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moleseg.core.pairing import Pair, list_images

__all__ = ["TrainingOverlap", "file_sha256", "image_digests", "training_image_hashes", "training_overlap"]

#: Bytes read at a time when hashing a file.
_CHUNK_BYTES = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def image_digests(path: str | Path) -> list[str]:
    """Hex SHA-256 digests of an image file: of its bytes and, when it decodes, of its pixels
    (:func:`moleseg.core.dataset.image_sha256`, the same for any file format that keeps the pixels)."""
    from moleseg.core.dataset import image_sha256
    from moleseg.core.imageio import ImageReadError, read_image

    digests = [file_sha256(path)]
    try:
        digests.append(image_sha256(read_image(path)))
    except ImageReadError:
        pass
    return digests


def training_image_hashes(pairs: Sequence[Pair], inherited: Sequence[str] = ()) -> list[str]:
    """What a model records of the images that shaped it: the distinct digests of the pairs' images
    (:func:`image_digests`) and the ``inherited`` ones (a fine-tune's starting model's), sorted (64 hex
    characters each)."""
    return sorted({digest for pair in pairs for digest in image_digests(pair.image)} | set(inherited))


@dataclass(frozen=True)
class TrainingOverlap:
    """Evaluated images the model was trained on.

    Attributes
    ----------
    images : tuple of Path
        The evaluated images found in the training data (same path or same content).
    total : int
        Number of evaluated images.
    training_folders : tuple of str
        The training folders the model file names.
    known : bool
        False when the model records no training data (nothing could be checked).
    """

    images: tuple[Path, ...]
    total: int
    training_folders: tuple[str, ...]
    known: bool

    @property
    def count(self) -> int:
        return len(self.images)

    def warning(self) -> str | None:
        """A sentence for the user when some evaluated images were training images, else None."""
        if not self.count:
            return None
        share = "all" if self.count == self.total else f"{self.count} of {self.total}"
        return (f"{share} evaluated images were used to train this model (same file or same content): "
                "the scores measure fit to the training data, not performance on new images")

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "total": self.total, "known": self.known,
                "training_folders": list(self.training_folders), "images": [str(p) for p in self.images]}


def training_overlap(info: Mapping[str, Any], images: Sequence[str | Path]) -> TrainingOverlap:
    """Which of ``images`` the model described by ``info`` (its ``moleseg.json``) was trained on."""
    training = info.get("training") or {}
    folders = tuple(str(folder) for folder in training.get("images") or [])
    recorded = set(training.get("image_sha256") or [])
    if not folders and not recorded:
        return TrainingOverlap(images=(), total=len(images), training_folders=(), known=False)
    training_files: set[Path] = set()
    if not recorded:
        for folder in folders:
            if Path(folder).is_dir():
                training_files.update(path.resolve() for path in list_images(folder))
    hashes = recorded or {file_sha256(path) for path in training_files}
    seen = []
    for image in images:
        path = Path(image)
        if path.resolve() in training_files or (hashes and not hashes.isdisjoint(image_digests(path))):
            seen.append(path)
    return TrainingOverlap(images=tuple(seen), total=len(images), training_folders=folders, known=True)
