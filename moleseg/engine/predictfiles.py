"""Image files through the network to result files on disk, as ``moleseg predict`` runs it: unique output
names, each image's files written all or nothing and in input order, a full disk stopping the run
(:func:`predict_files`, on the batch pipeline of :func:`moleseg.engine.batches.segment_batches`). No TensorFlow
here.
"""

from __future__ import annotations

import errno
import functools
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from moleseg.core.config import INFERENCE_BATCH_SIZE
from moleseg.core.errors import first_line
from moleseg.core.report import AnalysisSettings
from moleseg.engine.batches import failure_reason, segment_batches
from moleseg.engine.pipeline import ResultFiles, measure_and_draw
from moleseg.engine.segmenter import MODEL_THRESHOLD, Segmentation, Segmenter


def _sub_folder(folder: Path, name: str) -> Path:
    """The folder of ``folder / name``, made when missing (``folder`` too); OSError when a folder on the way below
    ``folder`` is a link (planted by whoever else may write the output folder: what is written through it lands
    wherever it points)."""
    folder.mkdir(parents=True, exist_ok=True)
    parent = folder
    for part in Path(name).parent.parts:
        parent = parent / part
        if parent.is_symlink():
            raise OSError(errno.ELOOP, f"{parent} is a link, not a folder of this run: nothing is written through it",
                          str(parent))
        parent.mkdir(exist_ok=True)
    return parent


def write_all_or_nothing(folder: str | Path, files: dict[str, bytes]) -> list[Path]:
    """Write ``{relative name: content}`` into ``folder`` atomically, creating sub-folders (never through a
    link in it: OSError); when one file cannot be written, the ones already written are removed and the error
    is raised. A file of the same name is replaced (a link of that name too: never what it points to)."""
    from moleseg.core.atomic import atomic_write, fsync_folder

    written: list[Path] = []
    try:
        for name, data in files.items():
            target = _sub_folder(Path(folder), name) / Path(name).name
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
        Why the run stopped early (a full disk, Ctrl-C), or None.
    interrupted
        Ctrl-C stopped it (KeyboardInterrupt): the images written before are in :attr:`rows`; the caller writes
        their table, then ends as interrupted.
    object_rows
        Two-class (cells) models: one row per cell / nucleus of the images written.
    settings
        ``(image, settings, None)`` of each row, for the CSV's settings sidecar
        (:func:`moleseg.core.report.settings_sidecar`).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    stopped: str | None = None
    interrupted: bool = False
    object_rows: list[dict[str, Any]] = field(default_factory=list)
    settings: list[tuple[str, Any, None]] = field(default_factory=list)


def _disk_full(error: OSError) -> bool:
    import errno

    return error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


@dataclass
class Finished:
    """One image of :func:`predict_files` ready to write: its CSV row, cell rows, settings, note, its result files
    (encoded by the writer thread) under ``stem`` and its outline files."""

    row: dict[str, Any]
    object_rows: list[dict[str, Any]]
    settings: AnalysisSettings
    error: str | None
    files: ResultFiles
    stem: str
    outlines: dict[str, bytes]


#: Batches :func:`predict_files` hands its writer thread ahead of the one it writes; beyond that the network
#: waits for the disk (the pictures of each batch are held until encoded and written).
WRITES_AHEAD: int = 2


def predict_files(segmenter: Segmenter, files: Sequence[Path], out: Path, *, batch_size: int = INFERENCE_BATCH_SIZE,
                  pixel_size_mm: float | None = None, lesion_threshold: Any = MODEL_THRESHOLD,
                  outlines: Sequence[str] = (), model_version: str = "", workers: int | None = None,
                  progress: Callable[[int], None] | None = None,
                  note: Callable[[str, str], None] | None = None,
                  output_names: Sequence[str] | None = None, with_names: bool = True) -> PredictOutcome:
    """Segment image files and write ``<stem>_overlay.png``, ``_mask.png``, ``_classes.png`` (and outlines).

    The batch pipeline of :func:`moleseg.engine.batches.segment_batches` (a pool of ``workers`` threads,
    default the CPU count, reads the next batch and cleans this one while the network runs; a network error
    stays with the image at fault), each image measured beside the drawing of its overlay
    (:func:`moleseg.engine.pipeline.measure_and_draw`), while a writer thread encodes and writes the previous
    batches' files in input order (one folder fsync per image). Bad files are skipped (see
    :attr:`PredictOutcome.failures`); on a full disk the run stops and no later image is read or written.

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
    with_names
        False: each image's files, its CSV row's ``image`` and ``output`` and its settings are named after its
        pixels (:func:`moleseg.core.dicomexport.neutral_file_name`, as the app's exports without names and the
        DICOM export without identifiers are) instead of its file; an image whose pixels give the name of an
        earlier one's files is not written (a failure naming both): no output replaces another's. The rows'
        ``source`` is still the input's path, for the caller, which leaves it out of what it writes.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    from moleseg.core.dicomexport import neutral_file_name, neutral_name
    from moleseg.core.dicomio import dicom_pixel_size
    from moleseg.core.imageio import read_image

    stems = list(output_stems(files) if output_names is None else output_names)
    file_sizes: dict[int, float | None] = {}  # a DICOM file's own pixel spacing, when no pixel size is given
    named_for: dict[str, str] = {}  # without names: a stem written (case folded) and the input it was written for
    outcome = PredictOutcome()

    def read(index: int) -> np.ndarray:
        image = read_image(files[index])
        if pixel_size_mm is None:
            file_sizes[index] = dicom_pixel_size(files[index])
        return image

    def finish(index: int, image: np.ndarray, segmentation: Segmentation) -> Finished:
        path, stem, name = files[index], stems[index], files[index].name
        analysis = measure_and_draw(image, segmentation, segmenter, drawer,
                                    pixel_size_mm=pixel_size_mm or file_sizes.get(index))
        if not with_names:
            stem, name = neutral_name(analysis.pixel_sha256), neutral_file_name(analysis.pixel_sha256, name)
        row = {"image": name, "source": str(path), "output": stem,
               **({"note": analysis.notes} if analysis.notes else {}), **analysis.flag_row, **analysis.rounded_row}
        return Finished(row, analysis.object_rows(stem), analysis.settings(model_version), analysis.error,
                        analysis.result_files, stem, analysis.outline_files(stem, outlines) if outlines else {})

    def write(path: Path, finished: Finished) -> None:
        """Encode and write one finished image; on a full disk, :attr:`PredictOutcome.stopped` says so."""
        taken = named_for.get(finished.stem.casefold())
        if taken is not None:  # without names: the same pixels (or their digest's first digits) as an earlier input's
            outcome.failures.append((path.name, f"{path.name}: its files would replace those of {taken}, whose pixels "
                                                 f"give the same name ({finished.stem}); without --without-names they "
                                                 "are named after the files"))
            return
        try:
            encoded = {**finished.files.files(finished.stem), **finished.outlines}
        except Exception as error:  # noqa: BLE001 -- this image's files could not be encoded: the others go on
            outcome.failures.append((path.name, f"{path.name}: cannot encode its results ({first_line(error)})"))
            return
        try:
            write_all_or_nothing(out, encoded)
        except OSError as error:
            if _disk_full(error):
                outcome.stopped = (f"the disk is full: {path.name} and the images after it were not written "
                                   f"({error.strerror or error})")
            else:
                outcome.failures.append((path.name, f"{path.name}: cannot write its results "
                                                     f"({error.strerror or error})"))
            return
        if finished.error and note is not None:
            note(path.name, finished.error)
        if not with_names:
            named_for[finished.stem.casefold()] = path.name
        outcome.rows.append(finished.row)
        outcome.object_rows.extend(finished.object_rows)
        outcome.settings.append((finished.row["image"], finished.settings, None))

    def write_batch(first: int, results: list[Finished | Exception]) -> None:
        """The writer thread's work: one batch, in input order, nothing after a full disk."""
        for path, result in zip(files[first:first + len(results)], results):
            if outcome.stopped:
                return
            if isinstance(result, Exception):
                outcome.failures.append((path.name, failure_reason(path.name, result)))
            else:
                write(path, result)

    def report(done: int, job: Future) -> None:
        job.result()
        if progress is not None and done < len(files):
            progress(done)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="moleseg-write") as writer, \
            ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1, thread_name_prefix="moleseg-draw") as drawer:
        batches = segment_batches(segmenter, [functools.partial(read, index) for index in range(len(files))], finish,
                                  batch_size=batch_size, lesion_threshold=lesion_threshold, workers=workers)
        written: list[tuple[int, Future]] = []  # (files done when it is written, the write of a batch)
        done = 0
        try:
            for results in batches:
                written.append((done + len(results), writer.submit(write_batch, done, results)))
                done += len(results)
                while written and (written[0][1].done() or len(written) > WRITES_AHEAD):  # report what is written
                    report(*written.pop(0))
                if outcome.stopped:
                    break
        except KeyboardInterrupt:  # Ctrl-C: the batches handed to the writer are written, then the table of them
            outcome.interrupted = True
        finally:
            batches.close()  # after a full disk or Ctrl-C: no image is read or finished any more
        for finished_write in written:
            report(*finished_write)
    if outcome.interrupted:
        outcome.stopped = outcome.stopped or "interrupted"
    if progress is not None and not outcome.stopped:
        progress(len(files))
    return outcome
