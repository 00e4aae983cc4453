"""Images through the network batch by batch: one pipeline, :func:`segment_batches`, for the app's Analyse page
(:func:`analyse_batches`, an :class:`moleseg.engine.pipeline.Analysis` per image) and ``moleseg predict``
(:mod:`moleseg.engine.predictfiles`, with :func:`moleseg.engine.pipeline.measure_and_draw`), and one wording for
an image without a result (:func:`failure_reason`). No TensorFlow here.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import Future
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np

from moleseg.core.cleanup import CleanupSettings
from moleseg.core.config import INFERENCE_BATCH_SIZE
from moleseg.engine.pipeline import Analysis, OverlayStyle, check_image_side, finish_analysis
from moleseg.engine.segmenter import MODEL_THRESHOLD, Segmentation, Segmenter, clean

#: What :func:`segment_batches` makes of each image (its caller's ``finish``).
T = TypeVar("T")


def segment_batches(segmenter: Segmenter, images: Sequence[Callable[[], np.ndarray]],
                    finish: Callable[[int, np.ndarray, Segmentation], T], *, batch_size: int = INFERENCE_BATCH_SIZE,
                    settings: CleanupSettings | None = None, lesion_threshold: Any = MODEL_THRESHOLD,
                    workers: int | None = None) -> Iterator[list[T | Exception]]:
    """Read, predict and clean images, ``batch_size`` (>= 1) per network call, and ``finish`` each: each batch's
    results in input order, what ``finish`` returned or the exception that stopped that image.

    ``images``: one callable per image returning it as RGB uint8 (a file's reader; an error it raises is that
    image's result). ``finish(index, image, segmentation)``: what is made of an image once cleaned (its
    measurements, pictures, files), ``index`` its place in ``images``. A pipeline across the cores: a pool of
    ``workers`` threads (default: the CPU count) reads the next batch and cleans and finishes this one while this
    thread runs the network on the next (reading, OpenCV, numpy and the network release the GIL); a batch is
    handed out once finished, while the next is finished and the one after read: three batches in flight at
    most. An image with a side under :data:`moleseg.core.config.MIN_IMAGE_SIDE_PX` gets the ValueError of
    :func:`check_image_side`; when the network fails on a batch, each of its images is predicted alone, so that
    only the image at fault fails (an out-of-memory batch too: one image needs less), unless it failed alone on
    every image of the last batch it failed on and fails again on this batch's first: then the network itself
    is failing and the others get the batch's error untried (two calls per batch, not one per image).
    ``lesion_threshold``: 0..1, None for the arg-max, default the model's own. Closing the iterator early (the
    caller stops reading) cancels the reads and finishes not yet started.
    """
    from concurrent.futures import ThreadPoolExecutor

    batch_size = max(1, int(batch_size))
    starts = range(0, len(images), batch_size)

    def read(index: int) -> np.ndarray:
        image = images[index]()
        check_image_side(image)
        return image

    def cleaned(index: int, image: np.ndarray, probabilities: np.ndarray) -> T:
        return finish(index, image, clean(segmenter, probabilities, settings, lesion_threshold=lesion_threshold))

    def called(batch: list[np.ndarray]) -> list[np.ndarray] | Exception:
        try:
            return list(segmenter.predict_probabilities(batch))
        except Exception as error:  # noqa: BLE001 -- one image at fault must not take its batch down
            return error

    failing = False  # every image of the last batch the network failed on failed alone too

    def predicted(batch: list[np.ndarray]) -> list[np.ndarray | Exception]:
        nonlocal failing
        found = called(batch)
        if not isinstance(found, Exception):
            failing = False
            return found
        results: list[np.ndarray | Exception] = []
        for image in batch:
            alone = called([image]) if len(batch) > 1 else found
            results.append(alone if isinstance(alone, Exception) else alone[0])
            if failing and isinstance(alone, Exception):  # still failing on any image: the rest are not tried
                return results + [found] * (len(batch) - len(results))
            failing = False
        failing = len(batch) > 1 and all(isinstance(result, Exception) for result in results)
        return results

    pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1, thread_name_prefix="moleseg-batch")
    try:
        def reading(start: int) -> list[Future]:
            return [pool.submit(read, index) for index in range(start, min(start + batch_size, len(images)))]

        next_reads = reading(starts[0]) if starts else []
        finishing: list[Future | Exception] | None = None
        for number, start in enumerate(starts):
            reads, next_reads = next_reads, reading(starts[number + 1]) if number + 1 < len(starts) else []
            results: list[Future | Exception | np.ndarray] = []
            for job in reads:
                try:
                    results.append(job.result())
                except Exception as error:  # noqa: BLE001 -- a file that cannot be read or is too small
                    results.append(error)
            batch = [image for image in results if isinstance(image, np.ndarray)]
            probabilities = iter(predicted(batch) if batch else [])
            for slot, image in enumerate(results):
                if isinstance(image, np.ndarray):
                    found = next(probabilities)
                    results[slot] = (found if isinstance(found, Exception)
                                     else pool.submit(cleaned, start + slot, image, found))
            if finishing is not None:
                yield _outcomes(finishing)
            finishing = results
        if finishing is not None:
            yield _outcomes(finishing)
    finally:  # the caller stopped early: nothing queued is started
        pool.shutdown(wait=True, cancel_futures=True)


def _outcomes(jobs: Sequence[Future | Exception]) -> list[Any]:
    """The results of :func:`segment_batches`' jobs of one batch, in order: each result or its exception."""
    outcomes: list[Any] = []
    for job in jobs:
        if isinstance(job, Exception):
            outcomes.append(job)
            continue
        try:
            outcomes.append(job.result())
        except Exception as error:  # noqa: BLE001 -- this image's cleanup or what is made of it failed
            outcomes.append(error)
    return outcomes


def failure_reason(name: str, error: BaseException) -> str:
    """Why the image file ``name`` got no result, in one line: a reader's refusal as it is (it names the file),
    another refusal (too small, no outline) after the file's name, anything else (the network failing on it)
    as "``name``: could not be analysed (...)"."""
    from moleseg.core.errors import first_line
    from moleseg.core.imagefile import ImageReadError

    text = first_line(error)
    if isinstance(error, ImageReadError):
        return text
    return f"{name}: {text}" if isinstance(error, ValueError) else f"{name}: could not be analysed ({text})"


def analyse_batches(segmenter: Segmenter, images: Sequence[Callable[[], np.ndarray]], *,
                    batch_size: int = INFERENCE_BATCH_SIZE, settings: CleanupSettings | None = None,
                    pixel_size_mm: float | None = None, style: OverlayStyle | None = None,
                    lesion_threshold: Any = MODEL_THRESHOLD, workers: int | None = None,
                    prepare: Callable[[Analysis], Any] | None = None) -> Iterator[list[Analysis | Exception]]:
    """Read, predict, clean and measure images, ``batch_size`` (>= 1) per network call: each batch's results in
    input order, an :class:`Analysis` or the exception that stopped that image (:func:`segment_batches`: the
    next batch read and this one measured in a pool of ``workers`` threads while the network runs).

    ``images``: one callable per image returning it as RGB uint8. ``lesion_threshold``: 0..1, None for the
    arg-max, default the model's own. ``prepare``: called in the pool on each analysis once it is measured, for
    what the caller will show of every image (the Analyse page's grid thumbnail, kept with the analysis), so
    that it too is made while the network runs; its result is dropped and an error it raises is that image's
    result.
    """
    style = style or OverlayStyle()

    def finish(index: int, image: np.ndarray, segmentation: Segmentation) -> Analysis:
        analysis = finish_analysis(image, segmentation, segmenter, pixel_size_mm, style)
        if prepare is not None:
            prepare(analysis)
        return analysis

    return segment_batches(segmenter, images, finish, batch_size=batch_size, settings=settings,
                           lesion_threshold=lesion_threshold, workers=workers)


def analyse_images(segmenter: Segmenter, images: Sequence[np.ndarray], *, settings: CleanupSettings | None = None,
                   pixel_size_mm: float | None = None, style: OverlayStyle | None = None,
                   lesion_threshold: Any = MODEL_THRESHOLD, workers: int | None = None) -> list[Analysis]:
    """Predict RGB uint8 images in batches of :data:`moleseg.core.config.INFERENCE_BATCH_SIZE`, then clean,
    measure and draw each (:func:`analyse_batches`, the cleanup and the measurements of one batch overlapping
    the network's run on the next).

    ``lesion_threshold``: 0..1, None for the arg-max, default the model's own (see :mod:`moleseg.engine.calibrate`).
    Raises ValueError ("image too small") before predicting when an image has a side under
    :data:`moleseg.core.config.MIN_IMAGE_SIDE_PX`, and the first image's error otherwise.
    """
    for image in images:
        check_image_side(image)
    analyses = [outcome for batch in analyse_batches(
        segmenter, [functools.partial(np.asarray, image) for image in images], settings=settings,
        pixel_size_mm=pixel_size_mm, style=style, lesion_threshold=lesion_threshold, workers=workers)
        for outcome in batch]
    for outcome in analyses:
        if isinstance(outcome, Exception):
            raise outcome
    return analyses
