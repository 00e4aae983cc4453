"""Image files through the network to result files on disk, as ``moleseg predict`` runs it: unique output
names, each image's files written all or nothing, and the pipeline that decodes, predicts, measures, encodes and
writes across the cores (:func:`predict_files`). No TensorFlow here.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from moleseg.core.config import INFERENCE_BATCH_SIZE
from moleseg.core.report import AnalysisSettings
from moleseg.engine.pipeline import check_image_side, measure_and_encode
from moleseg.engine.segmenter import MODEL_THRESHOLD, Segmenter, clean


def write_all_or_nothing(folder: str | Path, files: dict[str, bytes]) -> list[Path]:
    """Write ``{relative name: content}`` into ``folder`` atomically, creating sub-folders; when one file
    cannot be written, the ones already written are removed and the error is raised."""
    from moleseg.core.atomic import atomic_write, fsync_folder

    written: list[Path] = []
    try:
        for name, data in files.items():
            target = Path(folder) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            written.append(atomic_write(target, data, sync_folder=False))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    for parent in dict.fromkeys(path.parent for path in written):  # each folder once, after its last rename
        fsync_folder(parent)
    return written


def output_stems(paths: Sequence[str | Path]) -> list[str]:
    """Unique output stems for input files, in their order (POSIX-style, relative, no extension).

    A file's stem alone (``IMD004``) when no other input has it; otherwise its path without extension
    relative to the common folder of all inputs (``a/IMD004``, ``b/IMD004``), with the extension added
    (``a/IMD004_jpg``, ``a/IMD004_png``) when that is still shared. Compared case-insensitively, so the
    names are unique on case-insensitive file systems too.
    """
    resolved = [Path(p).resolve() for p in paths]
    if not resolved:
        return []
    root = Path(os.path.commonpath([str(p.parent) for p in resolved]))
    by_stem = Counter(p.stem.casefold() for p in resolved)
    relative = [p.relative_to(root).with_suffix("").as_posix() for p in resolved]
    by_relative = Counter(r.casefold() for r in relative)
    stems: list[str] = []
    for path, rel in zip(resolved, relative):
        if by_stem[path.stem.casefold()] == 1:
            stems.append(path.stem)
        elif by_relative[rel.casefold()] == 1:
            stems.append(rel)
        else:
            stems.append(f"{rel}_{path.suffix.lstrip('.').lower()}")
    seen: set[str] = set()
    for index, stem in enumerate(stems):  # same name and extension in different case: number them
        base, number = stem, 2
        while stems[index].casefold() in seen:
            stems[index], number = f"{base}_{number}", number + 1
        seen.add(stems[index].casefold())
    return stems


@dataclass
class PredictOutcome:
    """What :func:`predict_files` did.

    Attributes
    ----------
    rows
        One measurements row per image written (``image``, ``source``, ``output`` and the measurements).
    failures
        ``(file name, reason)`` of the files that were skipped, in input order.
    stopped
        Why the run stopped early (a full disk), or None.
    object_rows
        Two-class (cells) models: one row per cell / nucleus of the images written.
    settings
        ``(image, settings, None)`` of each row, for the CSV's settings sidecar
        (:func:`moleseg.core.report.settings_sidecar`).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    stopped: str | None = None
    object_rows: list[dict[str, Any]] = field(default_factory=list)
    settings: list[tuple[str, Any, None]] = field(default_factory=list)


def _disk_full(error: OSError) -> bool:
    import errno

    return error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


@dataclass
class Finished:
    """One image of :func:`predict_files` ready to write: its CSV row, cell rows, settings, note and files."""

    row: dict[str, Any]
    object_rows: list[dict[str, Any]]
    settings: AnalysisSettings
    error: str | None
    encoded: dict[str, bytes]


def predict_files(segmenter: Segmenter, files: Sequence[Path], out: Path, *, batch_size: int = INFERENCE_BATCH_SIZE,
                  pixel_size_mm: float | None = None, lesion_threshold: Any = MODEL_THRESHOLD,
                  outlines: Sequence[str] = (), model_version: str = "", workers: int | None = None,
                  progress: Callable[[int], None] | None = None,
                  note: Callable[[str, str], None] | None = None,
                  output_names: Sequence[str] | None = None) -> PredictOutcome:
    """Segment image files and write ``<stem>_overlay.png``, ``_mask.png``, ``_classes.png`` (and outlines).

    A pipeline across the cores: a thread pool of ``workers`` (default: the CPU count) decodes the next
    batch while the network predicts this one, and cleans, measures and encodes each image's PNGs once,
    while a writer thread writes the previous batch's files in input order (one folder fsync per image). Bad files are skipped (see
    :attr:`PredictOutcome.failures`); on a full disk the run stops and no later image is written.

    Parameters
    ----------
    batch_size
        Images per network call (>= 1).
    pixel_size_mm
        mm per pixel of every image; None: a DICOM file's own pixel spacing, pixels for other files.
    progress
        Called with the number of files done (written or skipped) after each batch.
    note
        Called with ``(file name, message)`` for an image written with a note ("no lesion found").
    output_names
        The output stems of ``files`` (default :func:`output_stems` of them; a shard of an archive passes
        those of the whole archive, so its files are named as in a single run).
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    from moleseg.core.dicomio import dicom_pixel_size
    from moleseg.core.imageio import ImageReadError, read_image

    stems = dict(zip(files, output_stems(files) if output_names is None else output_names))
    file_sizes: dict[int, float | None] = {}  # a DICOM file's own pixel spacing, when no pixel size is given
    outcome = PredictOutcome()
    failures: list[tuple[int, str, str]] = []
    batch_size = max(1, int(batch_size))
    chunks = [list(range(start, min(start + batch_size, len(files)))) for start in range(0, len(files), batch_size)]

    def decode(index: int) -> np.ndarray | None:
        path = files[index]
        try:
            image = read_image(path)
            check_image_side(image)
            if pixel_size_mm is None:
                file_sizes[index] = dicom_pixel_size(path)
            return image
        except (ImageReadError, ValueError) as error:
            reason = str(error)
            failures.append((index, path.name, reason if isinstance(error, ImageReadError) else f"{path.name}: {reason}"))
            return None

    def finish(index: int, image: np.ndarray, probabilities: np.ndarray) -> Finished | None:
        path = files[index]
        segmentation = clean(segmenter, probabilities, None, lesion_threshold=lesion_threshold)
        analysis, encoded = measure_and_encode(image, segmentation, segmenter, stems[path], drawer,
                                               pixel_size_mm=pixel_size_mm or file_sizes.get(index))
        try:
            if outlines:
                encoded.update(analysis.outline_files(stems[path], outlines))
        except ValueError as error:
            failures.append((index, path.name, str(error)))
            return None
        row = {"image": path.name, "source": str(path), "output": stems[path],
               **({"note": analysis.notes} if analysis.notes else {}), **analysis.flag_row, **analysis.rounded_row}
        return Finished(row, analysis.object_rows(stems[path]), analysis.settings(model_version), analysis.error,
                        encoded)

    def write(index: int, job: Future) -> bool:
        """Write one finished image; False when the disk is full (the run stops)."""
        finished = job.result()
        if finished is None:
            return True
        path = files[index]
        try:
            write_all_or_nothing(out, finished.encoded)
        except OSError as error:
            if _disk_full(error):
                outcome.stopped = (f"the disk is full: {path.name} and the images after it were not written "
                                   f"({error.strerror or error})")
                return False
            failures.append((index, path.name, f"{path.name}: cannot write its results ({error.strerror or error})"))
            return True
        if finished.error and note is not None:
            note(path.name, finished.error)
        outcome.rows.append(finished.row)
        outcome.object_rows.extend(finished.object_rows)
        outcome.settings.append((path.name, finished.settings, None))
        return True

    stop_index = len(files)

    def write_all(jobs: list[tuple[int, Future]]) -> None:
        nonlocal stop_index
        for index, job in jobs:
            if outcome.stopped:
                job.cancel()
            elif not write(index, job):
                stop_index = index

    # One writer thread writes the batches in input order (fsync waits for the disk) while this thread
    # runs the network on the next batch; the pool decodes, cleans, measures and encodes.
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1, thread_name_prefix="moleseg-predict") as pool, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="moleseg-write") as writer, \
            ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1, thread_name_prefix="moleseg-draw") as drawer:
        decoding = [pool.submit(decode, index) for index in chunks[0]] if chunks else []
        pending: list[tuple[int, Future]] = []
        written: list[tuple[int, Future]] = []  # (files done when it is written, the write of a batch)
        for number, chunk in enumerate(chunks):
            decoded = [(index, job.result()) for index, job in zip(chunk, decoding)]
            if number + 1 < len(chunks):  # the next batch decodes while the network runs
                decoding = [pool.submit(decode, index) for index in chunks[number + 1]]
            decoded = [(index, image) for index, image in decoded if image is not None]
            probabilities = segmenter.predict_probabilities([image for _, image in decoded]) if decoded else []
            if number > 0:
                written.append((chunks[number - 1][-1] + 1, writer.submit(write_all, pending)))
            pending = [(index, pool.submit(finish, index, image, p)) for (index, image), p in zip(decoded, probabilities)]
            while written and written[0][1].done():  # report the batches written meanwhile
                done, job = written.pop(0)
                job.result()
                if progress is not None:
                    progress(done)
            if outcome.stopped:
                break
        for job in decoding:
            job.cancel()
        if not outcome.stopped:
            written.append((len(files), writer.submit(write_all, pending)))
        else:
            for _, job in pending:
                job.cancel()
        for done, job in written:
            job.result()
            if progress is not None and done < len(files):
                progress(done)
    if progress is not None and not outcome.stopped:
        progress(len(files))
    outcome.failures = [(name, reason) for index, name, reason in sorted(failures, key=lambda failure: failure[0])
                        if index < stop_index]
    return outcome
