"""The Prepare page's computing: a pair's training targets previewed, the dataset-wide class frequencies
(run as a background task of the server's :func:`moleseg.app.ui.task_registry`, per server, keyed by its
inputs), the warnings about empty and full masks, and the pairing tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from moleseg.app.ui import plain_markdown
from moleseg.core.config import DEFAULT_BORDER_WIDTH_PX, DEFAULT_CLASS_COUNT, DEFAULT_SHAPE, class_names
from moleseg.core.imageio import (EMPTY_MASK_MEANING, FULL_MASK_MEANING, ImageReadError, mask_problem, read_image,
                                  read_mask)
from moleseg.core.words import count_of
from moleseg.engine.tasks import Progress

@dataclass
class TargetPreview:
    """One pair's image, mask, BACK/BORDER/INSIDE labels and their colours and frequencies."""

    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    picture: np.ndarray
    frequencies: np.ndarray
    n_classes: int
    resized_mask: bool = False

    @property
    def mask_problem(self) -> str | None:
        """Why the mask is suspicious (empty or full, :func:`moleseg.core.imageio.mask_problem`), or None."""
        return mask_problem(self.mask)

    def frequency_rows(self) -> list[dict[str, Any]]:
        return frequency_rows(self.frequencies, self.n_classes, self.labels.size)


def frequency_rows(frequencies: np.ndarray, n_classes: int, pixels: int | None = None) -> list[dict[str, Any]]:
    """Rows ``{"class", "fraction", "percent"[, "pixels"]}``."""
    rows = []
    for name, value in zip(class_names(n_classes), frequencies):
        row: dict[str, Any] = {"class": name, "fraction": round(float(value), 6),
                               "percent": f"{100 * float(value):.2f} %"}
        if pixels:
            row["pixels"] = int(round(float(value) * pixels))
        rows.append(row)
    return rows


def target_preview(image_path: str | Path, mask_path: str | Path, *, classes: int = DEFAULT_CLASS_COUNT,
                   border_width_px: int = DEFAULT_BORDER_WIDTH_PX, shape: str = DEFAULT_SHAPE,
                   border_at_image_edge: bool = False) -> TargetPreview:
    """Targets of one pair as training would make them (the mask resized to the image when they differ).

    Raises
    ------
    moleseg.core.imageio.ImageReadError
        An unreadable image or mask.
    """
    from moleseg.core.resize import resize_mask_to
    from moleseg.core.render import class_map
    from moleseg.core.targets import class_frequencies, make_targets

    image = read_image(image_path)
    mask = read_mask(mask_path, allow_empty=True)
    resized = mask.shape != image.shape[:2]
    if resized:
        mask = resize_mask_to(mask, image.shape[0], image.shape[1])
    labels = make_targets(mask, classes=classes, border_width_px=border_width_px, shape=shape,
                          border_at_image_edge=border_at_image_edge)
    return TargetPreview(image=image, mask=mask, labels=labels, picture=class_map(labels, classes),
                         frequencies=class_frequencies(labels, classes), n_classes=classes, resized_mask=resized)


#: Mask names listed in one empty/full warning; more are counted ("and N more").
MASK_NAMES_SHOWN = 10


def degenerate_mask_warnings(empty: Sequence[str], full: Sequence[str]) -> list[str]:
    """The app's warnings about empty and full masks (:func:`moleseg.core.imageio.mask_problem`), as markdown:
    ``"2 empty masks (...): a.png, b.png"`` (the names escaped, :func:`moleseg.app.ui.plain_markdown`) and the same
    for full ones; none when both lists are empty."""
    def names(items: Sequence[str]) -> str:
        shown = ", ".join(plain_markdown(item) for item in items[:MASK_NAMES_SHOWN])
        return shown + (f" and {len(items) - MASK_NAMES_SHOWN} more" if len(items) > MASK_NAMES_SHOWN else "")

    lines = []
    if empty:
        lines.append(f"{count_of(len(empty), 'empty mask')} ({EMPTY_MASK_MEANING}; scored and trained as 'no "
                     f"lesion'): {names(empty)}")
    if full:
        lines.append(f"{count_of(len(full), 'full mask')} ({FULL_MASK_MEANING}): {names(full)}")
    return lines


def dataset_frequencies(mask_paths: Sequence[str | Path], *, classes: int = DEFAULT_CLASS_COUNT,
                        border_width_px: int = DEFAULT_BORDER_WIDTH_PX, shape: str = DEFAULT_SHAPE,
                        border_at_image_edge: bool = False,
                        progress: Callable[[int, int], None] | None = None,
                        degenerate: dict[str, list[str]] | None = None
                        ) -> tuple[np.ndarray, int, list[str]]:
    """Class frequencies over all masks (pixel-weighted), the number of masks read, and read errors.
    The names of empty and full masks are appended to ``degenerate["empty"]`` / ``degenerate["full"]``
    when given."""
    from moleseg.core.targets import class_frequencies, make_targets

    totals = np.zeros(classes, dtype=np.float64)
    read, errors = 0, []
    for index, path in enumerate(mask_paths, start=1):
        try:
            mask = read_mask(path, allow_empty=True)
        except ImageReadError as error:
            errors.append(str(error))
            continue
        if degenerate is not None and mask_problem(mask) is not None:
            degenerate.setdefault("full" if mask.any() else "empty", []).append(Path(path).name)
        labels = make_targets(mask, classes=classes, border_width_px=border_width_px, shape=shape,
                              border_at_image_edge=border_at_image_edge)
        totals += class_frequencies(labels, classes) * labels.size
        read += 1
        if progress:
            progress(index, len(mask_paths))
    share = totals / totals.sum() if totals.sum() else totals
    return share, read, errors


def frequencies_key(masks_dir: str | Path, *, classes: int, border_width_px: int, shape: str,
                    border_at_image_edge: bool) -> tuple:
    """The key of a dataset-wide class-frequency scan in the app's task registry."""
    return ("frequencies", str(Path(masks_dir).resolve()), int(classes), int(border_width_px), str(shape),
            bool(border_at_image_edge))


def frequencies_task(mask_paths: Sequence[str | Path], *, classes: int, border_width_px: int, shape: str,
                     border_at_image_edge: bool) -> Callable[[Progress], dict[str, Any]]:
    """The work of a dataset-wide scan for :meth:`moleseg.engine.tasks.TaskRegistry.submit`:
    ``{"rows" (frequency_rows), "read" (masks read), "errors" (read errors), "warnings" (empty and full
    masks, :func:`degenerate_mask_warnings`)}``."""
    paths = list(mask_paths)

    def work(progress: Progress) -> dict[str, Any]:
        degenerate: dict[str, list[str]] = {}
        share, read, errors = dataset_frequencies(
            paths, classes=classes, border_width_px=border_width_px, shape=shape,
            border_at_image_edge=border_at_image_edge, degenerate=degenerate,
            progress=lambda done, total: progress(done, total, f"{done}/{total} masks"))
        return {"rows": frequency_rows(share, classes), "read": read, "errors": errors,
                "warnings": degenerate_mask_warnings(degenerate.get("empty", []), degenerate.get("full", []))}

    return work


def pairing_rows(report: Any) -> dict[str, list[dict[str, Any]]]:
    """Tables of a :class:`moleseg.core.pairing.PairingReport`: ``pairs`` (with rule and sizes), ``unpaired``,
    ``mismatches``."""
    def size(value: Any) -> str:
        return "unreadable" if value is None else f"{value[0]} x {value[1]}"

    pairs = [{"image": p.image.name, "mask": p.mask.name, "rule": p.rule, "image size": size(p.image_size),
              "mask size": size(p.mask_size), "sizes differ": p.size_mismatch} for p in report.pairs]
    unpaired = ([{"kind": "image", "file": p.name} for p in report.unpaired_images]
                + [{"kind": "mask", "file": p.name} for p in report.unpaired_masks])
    mismatches = [{"image": p.image.name, "image size": size(p.image_size), "mask": p.mask.name,
                   "mask size": size(p.mask_size)} for p in report.size_mismatches]
    return {"pairs": pairs, "unpaired": unpaired, "mismatches": mismatches}
