"""What a training configuration means for the network, before any step: its data split, targets,
augmentation, optimiser, BatchNorm momentum, default cleanup and the metadata stored with its model, and
the progress a training reports.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import keras
import numpy as np

from moleseg import __version__
from moleseg.core.cleanup import CLEANUP_VARIANTS, CleanupSettings
from moleseg.core.config import class_names
from moleseg.core.pairing import Pair, PairingError, pair_folders
from moleseg.core.trainconfig import TrainConfig, training_name
from moleseg.network.examples import AugmentConfig, TargetConfig, split_pairs


class TrainingError(RuntimeError):
    """Training could not start or produced an unusable model; the message says why."""


class TrainingCancelled(RuntimeError):
    """The progress callback asked to stop."""


def augment_config(config: TrainConfig) -> AugmentConfig:
    """The random transformations of a training."""
    return AugmentConfig.from_names(config.augment, translation_px=config.translation_px,
                                    rotation_deg=config.rotation_deg, scale_range=config.scale_range,
                                    colour=config.colour, hard_case_share=config.hard_case_share)


def target_config(config: TrainConfig) -> TargetConfig:
    """How a training's masks become targets and its images network inputs."""
    n_classes = config.model.n_classes
    return TargetConfig(input_size=config.model.input_size, n_classes=n_classes,
                        border_width_px=config.border_width_input_px if n_classes == 3 else 0,
                        shape=config.shape, fit="crop" if config.inference == "tiles" else "resize",
                        scale=config.tile_scale, colour_constancy=config.colour_constancy)


@dataclass
class Progress:
    """What a progress callback receives (after every training step, validation/calibration/evaluation
    image batch and epoch).

    ``step``/``steps`` and ``eta_seconds`` belong to the current phase: training steps of the epoch in
    ``train``, images (or image passes) in ``validate``, ``calibrate`` and ``evaluate``.
    """

    phase: str  # "prepare", "train", "validate", "epoch", "calibrate", "evaluate", "done"
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    eta_seconds: float | None = None
    message: str = ""


ProgressCallback = Callable[[Progress], bool | None]
"""Called with progress; returning True asks training to stop (cancel)."""


def collect_pairs(images: Sequence[str], masks: Sequence[str], log: Callable[[str], None]) -> list[Pair]:
    """Pairs of every (images, masks) folder pair, with each pairing report logged."""
    pairs: list[Pair] = []
    for image_dir, mask_dir in zip(images, masks):
        report = pair_folders(image_dir, mask_dir)
        log(f"pairing {image_dir} + {mask_dir}: {report.summary()}")
        pairs.extend(report.pairs)
    return pairs


def split_of(config: TrainConfig, log: Callable[[str], None] = lambda line: None
             ) -> tuple[list[Pair], list[Pair], list[Pair]]:
    """The ``(train, validation, test)`` pairs of a training, as its seed splits them (reproducible).

    Raises
    ------
    TrainingError
        When a folder cannot be paired or is too small to split.
    """
    try:
        pairs = collect_pairs(config.images, config.masks, log)
        if config.validation_images:
            validation = collect_pairs(config.validation_images, config.validation_masks, log)
            train, _, test = split_pairs(pairs, validation_fraction=0.0, test_fraction=config.test_split,
                                         seed=config.seed) if config.test_split else (pairs, [], [])
        else:
            train, validation, test = split_pairs(pairs, validation_fraction=config.validation_split,
                                                  test_fraction=config.test_split, seed=config.seed,
                                                  fold=config.validation_fold)
        if config.test_images:
            test = collect_pairs(config.test_images, config.test_masks, log)
    except (PairingError, ValueError) as error:
        raise TrainingError(str(error)) from error
    return train, validation, test


def auto_bn_momentum(total_steps: int, steps_per_epoch: int | None = None) -> float:
    """BatchNorm momentum whose moving statistics forget their initial values early enough.

    The statistics must forget (down to 1 %) within ``min(total_steps / 2, max(3 epochs, 30 steps))``
    steps: ``momentum ** steps = 0.01``, clipped to 0.1..0.99. Keras' default 0.99 needs ~460 steps,
    so a short training would predict nothing in inference mode, and a long one would show a
    meaningless validation FM for its first epochs.
    """
    if total_steps <= 0:
        return 0.99
    window = total_steps / 2.0
    if steps_per_epoch:
        window = min(window, max(3.0 * steps_per_epoch, 30.0))
    return float(np.clip(0.01 ** (1.0 / max(window, 1.0)), 0.1, 0.99))


def make_optimizer(config: TrainConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """The solver with its learning-rate schedule (the article: sgdm, rmsprop, adam)."""
    rate: Any = config.learning_rate
    if config.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(config.learning_rate, max(1, total_steps), alpha=0.01)
    elif config.schedule == "piecewise":  # Matlab's "piecewise": drop by 10x at 1/2 and 3/4 of the steps
        boundaries = [max(1, total_steps // 2), max(2, (3 * total_steps) // 4)]
        rate = keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries, [config.learning_rate, config.learning_rate / 10, config.learning_rate / 100])
    if config.solver == "sgdm":
        return keras.optimizers.SGD(rate, momentum=config.momentum)
    if config.solver == "rmsprop":
        return keras.optimizers.RMSprop(rate)
    return keras.optimizers.Adam(rate)


def compile_for_training(model: keras.Model, config: TrainConfig, total_steps: int, loss: keras.losses.Loss,
                         metrics: Sequence[keras.metrics.Metric] = ()) -> None:
    """Compile ``model`` with the training's solver (:func:`make_optimizer`) and create the solver's
    variables (momenta, moments) at once.

    Left to Keras (without a distribution strategy), they are created inside the trace of the first training
    step, each behind a conditional initialiser of the graph: about half of that trace's CPU time (a
    MobileNetV2 DeepLabV3+ with adam, 396 variables: 30 -> 15 CPU-s).
    """
    model.compile(optimizer=make_optimizer(config, total_steps), loss=loss, metrics=list(metrics))
    model.optimizer.build(model.trainable_variables)


def default_cleanup(config: TrainConfig, variant: str) -> CleanupSettings:
    """Cleanup settings (px of the network input) of a training's model with one of its variants."""
    n_classes = config.model.n_classes
    border = config.border_width_input_px
    base = CleanupSettings(rule="article", closing_radius_px=config.closing_radius_input_px, fill_holes=True,
                           largest_component=True, border_width_px=border if n_classes == 3 else max(1, border),
                           shape=config.shape)
    return dataclasses.replace(base, **CLEANUP_VARIANTS[n_classes][variant])


def model_info(config: TrainConfig, *, frequencies: np.ndarray, weights: np.ndarray | None,
               n_train: int, n_validation: int, rule: str, epoch: int, val_fm: float | None,
               image_sha256: Sequence[str] = (), extra: dict | None = None) -> dict[str, Any]:
    """The ``moleseg.json`` stored with a model: everything needed to predict and describe it.

    ``rule`` names the cleanup variant (see :data:`CLEANUP_VARIANTS`) chosen by validation FM.
    ``image_sha256``: hex SHA-256 digests of the images that shaped the model (its training and validation
    split; :func:`moleseg.engine.overlap.training_image_hashes`), stored sorted under
    ``info["training"]["image_sha256"]`` so that
    :mod:`moleseg.engine.overlap` finds them under any name or folder.
    """
    n_classes = config.model.n_classes
    info = {
        "name": training_name(config.to_dict()),
        "moleseg_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "n_classes": n_classes,
        "class_names": list(class_names(n_classes)),
        "input_size": config.model.input_size,
        "border_width_px": config.border_width_input_px if n_classes == 3 else 0,  # px of the input
        "shape": config.shape,
        "cleanup": default_cleanup(config, rule).to_dict(),
        "cleanup_variant": rule,
        "inference": config.inference,
        "tile_scale": config.tile_scale,
        "colour_constancy": config.colour_constancy,
        "model": config.model.to_dict(),
        "training": {
            "images": list(config.images), "n_train": n_train, "n_validation": n_validation,
            "class_frequencies": [float(f) for f in frequencies],
            "class_weights": None if weights is None else [float(w) for w in weights],
            "solver": config.solver, "learning_rate": config.learning_rate, "batch_size": config.batch_size,
            "loss": config.loss, "augment": list(config.augment), "seed": config.seed, "epoch": epoch,
            "weights": config.weights, "image_sha256": sorted(image_sha256),
        },
        "config": config.to_dict(),
        "validation_fm": val_fm,
    }
    if extra:
        info.update(extra)
    return info

