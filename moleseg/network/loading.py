"""Loading segmenters from a name or a model file, and calibrating a model file in place.

TensorFlow is imported only when a ``.keras`` model is loaded (:mod:`moleseg.network.predict`), so the
command line and the app can list and describe models without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from moleseg.core.classical import ClassicalSegmenter
from moleseg.core.modelinfo import read_model_info, write_model_info
from moleseg.core.pairing import Pair
from moleseg.core.config import CLASSICAL_NAMES, DEFAULT_CHECK_SHARE
from moleseg.engine.calibrate import (Calibration, ConfidenceCalibration, calibrate, calibrate_confidence,
                                      calibrated_info)
from moleseg.engine.segmenter import Segmenter

if TYPE_CHECKING:
    from moleseg.network.predict import KerasSegmenter


def load_segmenter(spec: str | Path, *, test_time_augmentation: bool | None = None) -> Segmenter:
    """A classical segmenter by one of its names (:data:`moleseg.core.config.CLASSICAL_NAMES`) or a moleseg
    ``.keras`` file by its path.

    Raises
    ------
    moleseg.core.modelinfo.ModelFileError
        When the file is missing or not a moleseg model.
    """
    text = str(spec)
    if text in CLASSICAL_NAMES:
        return ClassicalSegmenter(n_classes=CLASSICAL_NAMES[text])
    read_model_info(text)  # a clear error for a wrong file, before TensorFlow is imported
    from moleseg.network.predict import KerasSegmenter

    return KerasSegmenter.from_file(text, test_time_augmentation=test_time_augmentation)


def preload(spec: str | Path) -> Segmenter:
    """:func:`load_segmenter` with its network ready to answer at once, for a server to call when it starts.

    A ``.keras`` model's prediction function is made (the shipped ONNX file, or the per-machine cache: no
    TensorFlow when either is there) and called once on a blank image at the network's input size, so that
    the first image pays neither the runtime's session nor its first-call allocations. The classical
    segmenters need nothing prepared.

    Raises
    ------
    moleseg.core.modelinfo.ModelFileError
        When the file is missing or not a moleseg model.
    """
    segmenter = load_segmenter(spec)
    predict_network = getattr(segmenter, "predict_network", None)
    size = getattr(segmenter, "input_size", None)
    if predict_network is not None and size:
        predict_network(np.zeros((1, size, size, 3), np.float32))
    return segmenter


def calibrate_model_file(path: str | Path, pairs: Sequence[Pair], *,
                         progress: Callable[[str], None] | None = None,
                         step: Callable[[int, int], None] | None = None,
                         segmenter: KerasSegmenter | None = None) -> Calibration:
    """Calibrate the moleseg ``.keras`` file at ``path`` on ``pairs`` and store the decision in it
    (its ``moleseg.json``, rewritten atomically), then the confidence threshold of that decision
    (:func:`calibrate_confidence_file`). ``progress``: messages; ``step(done, total)``: see
    :func:`moleseg.engine.calibrate.calibrate`; ``segmenter``: the file's network when it is loaded already
    (its flips are left as found), None loads it from ``path``."""
    if segmenter is None:
        from moleseg.network.predict import KerasSegmenter

        segmenter = KerasSegmenter.from_file(path, test_time_augmentation=False)
    calibration = calibrate(segmenter, pairs, progress=progress, step=step)
    info = calibrated_info(read_model_info(path), calibration)
    write_model_info(path, info)
    calibration.confidence = calibrate_confidence_file(path, pairs, progress=progress,
                                                       segmenter=segmenter.with_info(info))
    return calibration


def calibrate_confidence_file(path: str | Path, pairs: Sequence[Pair], *, share: float = DEFAULT_CHECK_SHARE,
                              progress: Callable[[str], None] | None = None,
                              segmenter: Segmenter | None = None) -> ConfidenceCalibration:
    """Choose the confidence threshold of the moleseg ``.keras`` file at ``path`` on ``pairs`` (validation
    images, segmented with the file's own decision; the classical baseline scored beside them) and store it
    in the file's ``moleseg.json`` (rewritten atomically, no TensorFlow needed for that). ``segmenter``: the
    file's network with that decision when it is in memory already; None loads it from ``path``."""
    segmenter = segmenter if segmenter is not None else load_segmenter(path)
    baseline = ClassicalSegmenter(n_classes=segmenter.n_classes)
    result = calibrate_confidence(segmenter, pairs, share=share, baseline=baseline, progress=progress)
    write_model_info(path, {**read_model_info(path), **result.info_update()})
    return result
