"""Training: the article's method (solver, epochs, mini-batch, learning rate, class-weighted loss,
random affine augmentation) with validation FM through the real prediction + cleanup path, a run
folder per training, checkpoints every epoch, resume, progress callbacks, and distribution.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from moleseg import __version__
from moleseg.core.atomic import remove_stale_temporaries
from moleseg.core.cleanup import CLEANUP_VARIANTS, CleanupSettings
from moleseg.core import options
from moleseg.core.config import EXAMPLES_CACHE_NAME, cache_dir, class_names
from moleseg.network.cluster import (WORKER_DEBUG_ENV, WorkerRole, average_over_workers, broadcast_from_chief,
                                     current_role, epoch_shard, write_seen)
from moleseg.network.data import (AugmentConfig, ExampleCache, TargetConfig, class_frequencies_of, crop_counts,
                          inverse_frequency_weights, make_dataset, split_pairs)
from moleseg.engine.evaluate import evaluate_pairs, read_pair
from moleseg.engine.overlap import file_sha256
from moleseg.core.metrics import scores
from moleseg.network.build import ModelConfig, build_model, count_parameters
from moleseg.network.io import load_keras_model, save_model
from moleseg.network.losses import SegmentationLoss
from moleseg.core.pairing import Pair, PairingError, pair_folders
from moleseg.network.predict import KerasSegmenter, prediction_function
from moleseg.engine.runs import RunFiles, RunLog, RunState, read_json, read_state, write_history, write_json
from moleseg.engine.segmenter import clean, cleanup_for_image

SOLVERS: tuple[str, ...] = options.SOLVERS
SCHEDULES: tuple[str, ...] = options.SCHEDULES
#: At most this many training pairs is a small dataset: BatchNorm layers that start from loaded statistics
#: (ImageNet or a model fine-tuned from) keep them and are frozen, since a few images cannot estimate better.
SMALL_DATASET_PAIRS = 20
#: Training images whose batch statistics replace unconverged BatchNorm moving statistics at the end.
BATCHNORM_REESTIMATE_IMAGES = 32
DEFAULT_CACHE_DIR = cache_dir()


class TrainingError(RuntimeError):
    """Training could not start or produced an unusable model; the message says why."""


class TrainingCancelled(RuntimeError):
    """The progress callback asked to stop."""


def _default(name: str) -> Any:
    """A dataclass field whose default is the option ``name``'s in :mod:`moleseg.core.options`."""
    value = options.default(name)
    if isinstance(value, list):
        return field(default_factory=lambda: options.default(name))
    return value


@dataclass
class TrainConfig:
    """Every option of a training (written to the run's ``config.json``); the fields are the options of
    :mod:`moleseg.core.options` (``model`` holds the ``model.*`` ones), with their defaults and checks.

    Folders are given as parallel lists (several datasets can be combined). Fractions are 0..1,
    learning rate is per step; border width and closing radius are px at a ``size_reference_px`` input
    (:attr:`border_width_input_px` and :attr:`closing_radius_input_px` are what they become at the input
    size), the other sizes px of the network input.
    """

    images: list[str] = _default("images")
    masks: list[str] = _default("masks")
    validation_images: list[str] = _default("validation_images")
    validation_masks: list[str] = _default("validation_masks")
    test_images: list[str] = _default("test_images")
    test_masks: list[str] = _default("test_masks")
    model: ModelConfig = field(default_factory=ModelConfig)
    weights: str = _default("weights")
    border_width_px: int = _default("border_width_px")
    shape: str = _default("shape")
    closing_radius_px: int = _default("closing_radius_px")
    size_reference_px: int = _default("size_reference_px")
    solver: str = _default("solver")
    epochs: int = _default("epochs")
    batch_size: int = _default("batch_size")
    learning_rate: float = _default("learning_rate")
    schedule: str = _default("schedule")
    momentum: float = _default("momentum")
    loss: str = _default("loss")
    class_weighting: bool = _default("class_weighting")
    augment: list[str] = _default("augment")
    rotation_deg: float = _default("rotation_deg")
    translation_px: float = _default("translation_px")
    scale_range: float = _default("scale_range")
    colour: float = _default("colour")
    hard_case_share: float = _default("hard_case_share")
    validation_split: float = _default("validation_split")
    test_split: float = _default("test_split")
    validation_fold: int = _default("validation_fold")
    seed: int = _default("seed")
    early_stopping_patience: int = _default("early_stopping_patience")
    bn_momentum: str | float = _default("bn_momentum")
    strategy: str = _default("strategy")
    mixed_precision: str = _default("mixed_precision")
    train_fm_images: int = _default("train_fm_images")
    inference: str = _default("inference")
    crops_per_image: int = _default("crops_per_image")
    crops_by_area: bool = _default("crops_by_area")
    colour_constancy: str = _default("colour_constancy")
    tile_scale: float = _default("tile_scale")
    calibrate: bool = _default("calibrate")
    cache_dir: str | None = _default("cache_dir")
    name: str | None = _default("name")

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ModelConfig.from_dict(self.model)
        self.augment = [{"color": "colour"}.get(name.strip().lower(), name.strip().lower())
                        for name in self.augment if name.strip()]
        problems = options.problems(self.to_dict())  # the model's options were checked by ModelConfig
        if not self.images:
            problems.insert(0, "give image and mask folders in pairs (no training images folder)")
        if self.tile_scale != 1.0 and self.inference != "tiles":
            problems.append(f"tile scale {self.tile_scale:g} needs inference 'tiles' (with '{self.inference}' "
                            "every image is resized to the input size)")
        if problems:
            raise ValueError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["model"] = self.model.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """The configuration of a dictionary (unknown keys ignored); one stored without
        ``size_reference_px`` keeps its meaning (:func:`moleseg.core.options.with_size_reference`)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = options.with_size_reference(values)
        return cls(**{k: v for k, v in values.items() if k in names})

    @property
    def border_width_input_px(self) -> int:
        """The border width in px of the network input (``border_width_px`` scaled to the input size)."""
        return options.scaled_px(self.border_width_px, self.model.input_size, self.size_reference_px)

    @property
    def closing_radius_input_px(self) -> int:
        """The closing radius in px of the network input (``closing_radius_px`` scaled to the input size)."""
        return options.scaled_px(self.closing_radius_px, self.model.input_size, self.size_reference_px)

    def augment_config(self) -> AugmentConfig:
        return AugmentConfig.from_names(self.augment, translation_px=self.translation_px,
                                        rotation_deg=self.rotation_deg, scale_range=self.scale_range,
                                        colour=self.colour, hard_case_share=self.hard_case_share)

    def target_config(self) -> TargetConfig:
        return TargetConfig(input_size=self.model.input_size, n_classes=self.model.n_classes,
                            border_width_px=self.border_width_input_px if self.model.n_classes == 3 else 0,
                            shape=self.shape, fit="crop" if self.inference == "tiles" else "resize",
                            scale=self.tile_scale,
                            colour_constancy=self.colour_constancy)


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


def choose_strategy(name: str) -> tf.distribute.Strategy:
    """``mirrored`` over all GPUs (or all logical CPUs when there is no GPU), ``default`` one device,
    ``auto`` mirrored when several GPUs exist, and ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG``
    describes a cluster."""
    if os.environ.get("TF_CONFIG") and name != "default":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "auto" and len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


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
    split; :func:`training_image_hashes`), stored sorted under ``info["training"]["image_sha256"]`` so that
    :mod:`moleseg.engine.overlap` finds them under any name or folder.
    """
    n_classes = config.model.n_classes
    info = {
        "name": config.name or f"{config.model.architecture}-{config.model.backbone}",
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


def training_image_hashes(pairs: Sequence[Pair]) -> list[str]:
    """The distinct hex SHA-256 digests of the pairs' image files, sorted (64 characters each)."""
    return sorted({file_sha256(pair.image) for pair in pairs})


class _EpochEnd(keras.callbacks.Callback):
    """Validation FM through the app's own prediction + cleanup path, history, checkpoints, progress."""

    def __init__(self, trainer: "Trainer") -> None:
        super().__init__()
        self.trainer = trainer
        self.epoch_started = time.time()
        self.train_started = time.time()

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.epoch_started = time.time()

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        trainer = self.trainer
        trainer.steps_done += 1
        elapsed = time.time() - self.train_started
        remaining_steps = trainer.total_steps - trainer.steps_done
        eta = elapsed / max(1, trainer.steps_this_session) * remaining_steps
        trainer.steps_this_session += 1
        logs = logs or {}
        stop = trainer.report(Progress("train", trainer.current_epoch + 1, trainer.config.epochs, batch + 1,
                                       trainer.steps_per_epoch, loss=float(logs.get("loss", float("nan"))),
                                       metrics={"accuracy": float(logs.get("accuracy", float("nan")))},
                                       eta_seconds=eta))
        if stop:
            trainer.cancelled = True
            self.model.stop_training = True
            if not trainer.role.distributed:  # out of fit now: no validation pass of the unfinished epoch
                raise TrainingCancelled(f"training cancelled after epoch {trainer.current_epoch}")

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = logs if logs is not None else {}
        trainer = self.trainer
        if trainer.cancelled:  # an unfinished epoch: not saved, so not counted as done
            return
        trainer.current_epoch = epoch + 1
        try:
            scores = trainer.validation_scores()
        except TrainingCancelled:
            trainer.current_epoch = epoch  # its validation was cut short: the epoch is not saved
            raise
        logs.update(scores)
        row = {"epoch": epoch + 1, "loss": logs.get("loss"), "accuracy": logs.get("accuracy"),
               "val_loss": logs.get("val_loss"), "val_accuracy": logs.get("val_accuracy"),
               "learning_rate": trainer.current_learning_rate(), "seconds": time.time() - self.epoch_started,
               **scores}
        trainer.end_epoch(row)


class Trainer:
    """Runs one training into one run folder. Use :func:`train` unless you need the pieces."""

    def __init__(self, config: TrainConfig, run_dir: str | Path, *, progress: ProgressCallback | None = None,
                 echo: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.role: WorkerRole = current_role()
        self.output_dir = Path(run_dir)
        # Only the chief writes the run folder; other workers write to a temporary folder removed at the end.
        self.run_dir = (self.output_dir if self.role.chief
                        else Path(tempfile.mkdtemp(prefix=f"moleseg-worker{self.role.index}-")))
        self.files = RunFiles(self.run_dir)
        self.progress = progress
        self.log = RunLog(self.files.log, echo=echo)
        self.cancelled = False
        self.history: list[dict] = []
        self.current_epoch = 0
        self.steps_done = 0
        self.steps_this_session = 0
        self.best_val_fm = -1.0
        self.best_epoch = 0
        self.best_rule = next(iter(CLEANUP_VARIANTS[config.model.n_classes]))
        self.training_seconds = 0.0
        self.job_started = time.time()
        self.earlier_job_seconds = 0.0  # wall time of the earlier sessions of a resumed run
        self._validation_function: tuple[keras.Model, Callable[[np.ndarray], Any]] | None = None

    # ----------------------------------------------------------------------------------------------
    def report(self, progress: Progress) -> bool:
        if self.progress is None:
            return False
        return bool(self.progress(progress))

    def phase_ticker(self, phase: str, total: int, message: str) -> Callable[[int], None]:
        """A ``tick(done)`` for a phase of ``total`` units (images): reports ``done``/``total`` with the
        phase's ETA, and raises :class:`TrainingCancelled` when the callback asks to stop (on one
        worker; a worker of a cluster only notes it, the chief's decision stops them all)."""
        started = time.time()
        epoch, epochs = self.current_epoch, self.config.epochs

        def tick(done: int) -> None:
            eta = (time.time() - started) / done * max(0, total - done) if done else None
            if self.report(Progress(phase, epoch, epochs, done, total, eta_seconds=eta, message=message)):
                self.cancelled = True
                if not self.role.distributed:
                    raise TrainingCancelled(f"training cancelled after epoch {self.current_epoch}")

        tick(0)
        return tick

    def current_learning_rate(self) -> float:
        optimizer = self.model.optimizer
        rate = optimizer.learning_rate
        return float(keras.ops.convert_to_numpy(rate))

    # ----------------------------------------------------------------------------------------------
    def prepare(self, resume: bool) -> None:
        config = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        keras.utils.set_random_seed(config.seed)  # the same initial weights and dropout draws for one seed
        gpus = tf.config.list_physical_devices("GPU")
        if config.mixed_precision == "on" or (config.mixed_precision == "auto" and gpus):
            keras.mixed_precision.set_global_policy("mixed_float16")
        else:
            keras.mixed_precision.set_global_policy("float32")
        self.strategy = choose_strategy(config.strategy)
        cache_dir = Path(config.cache_dir) if config.cache_dir else DEFAULT_CACHE_DIR / EXAMPLES_CACHE_NAME
        self.cache = ExampleCache(cache_dir)
        self.targets = config.target_config()
        train, validation, test = split_of(config, self.log)
        if not train:
            raise TrainingError("no training pairs left after the validation/test split")
        self.train_pairs, self.validation_pairs, self.test_pairs = train, validation, test
        fold = (f" (fold {config.validation_fold})" if config.validation_fold and not config.validation_images
                else "")
        self.log(f"pairs: {len(train)} train, {len(validation)} validation{fold}, {len(test)} test")
        self.image_sha256 = training_image_hashes([*train, *validation])  # not the test split: it stays a test
        self.report(Progress("prepare", 0, config.epochs, 0, len(train), message="preparing targets"))
        self.frequencies = class_frequencies_of(train, self.targets, self.cache, warn=self.log)
        self.class_weights = inverse_frequency_weights(self.frequencies) if config.class_weighting else None
        self.log(f"class frequencies {np.round(self.frequencies, 4).tolist()}, weights "
                 f"{None if self.class_weights is None else np.round(self.class_weights, 3).tolist()}")
        by_area = config.crops_by_area and config.inference == "tiles"
        self.crop_counts = crop_counts(train, config.model.input_size, config.crops_per_image, by_area=by_area,
                                       scale=self.targets.scale)
        if by_area:
            self.log(f"crops per epoch: {sum(self.crop_counts)} from {len(train)} images (by area, "
                     f"{min(self.crop_counts)}..{max(self.crop_counts)} per image)")
        self.steps_per_epoch = math.ceil(sum(self.crop_counts) / config.batch_size)
        if self.role.distributed:
            self.steps_per_epoch = self._worker_steps_per_epoch()
        self.total_steps = self.steps_per_epoch * config.epochs
        if config.bn_momentum == "auto":
            config.model.bn_momentum = auto_bn_momentum(self.total_steps, self.steps_per_epoch)
        else:
            config.model.bn_momentum = float(config.bn_momentum)
        self.log(f"devices: {len(gpus)} GPU; strategy {type(self.strategy).__name__} with "
                 f"{self.strategy.num_replicas_in_sync} replica(s); precision "
                 f"{keras.mixed_precision.global_policy().name}; BatchNorm momentum {config.model.bn_momentum:.4f}")
        state = read_state(self.run_dir) or RunState()
        self.initial_epoch = 0
        checkpoint = self.files.last
        can_resume = resume and checkpoint.is_file() and state.epoch > 0
        # The chief reads its checkpoint outside the strategy's scope: variables created in the scope are
        # created together on every worker.
        saved = (keras.saving.load_model(checkpoint, compile=True)
                 if self.role.distributed and can_resume else None)
        with self.strategy.scope():
            if self.role.distributed:
                self._prepare_workers(saved, state)
            elif can_resume:
                self.model = load_keras_model(self.files.last, compile=True)
                self._resume_state(state)
            else:
                self._build_compiled()
        self.current_epoch = self.initial_epoch
        self.steps_done = self.initial_epoch * self.steps_per_epoch
        self.log(f"model {config.model.architecture}/{config.model.backbone} {config.model.input_size}px, "
                 f"{count_parameters(self.model):,} weights, encoder init {config.weights}")
        write_json(self.files.config, {**config.to_dict(), "run_dir": str(self.run_dir)})

    def _build_compiled(self) -> keras.Model:
        """A new model compiled with the training's solver, loss and accuracy metric (in the current scope)."""
        config = self.config
        self.model = build_model(config.model, weights=config.weights)
        if config.weights != "none" and len(self.train_pairs) <= SMALL_DATASET_PAIRS:
            frozen = freeze_loaded_batchnorm(self.model)
            self.log(f"small dataset ({len(self.train_pairs)} training pairs <= {SMALL_DATASET_PAIRS}): {frozen} "
                     "BatchNorm layers keep the statistics loaded with the weights (frozen)")
        loss = SegmentationLoss(config.loss, self.class_weights)
        self.model.compile(optimizer=make_optimizer(config, self.total_steps), loss=loss,
                           metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
        return self.model

    def _resume_state(self, state: RunState) -> None:
        """Epoch, best score and history of the interrupted run (the chief's ``state.json``)."""
        from moleseg.engine.runs import read_history

        self.initial_epoch = state.epoch
        self.best_val_fm = state.best_val_fm
        self.best_epoch = state.best_epoch
        self.best_rule = state.best_rule or self.best_rule
        self.training_seconds = state.training_seconds
        self.earlier_job_seconds = state.job_seconds or 0.0
        self.history = [row for row in read_history(self.files.history)
                        if row.get("epoch") and row["epoch"] <= self.initial_epoch]
        self.log(f"resuming after epoch {self.initial_epoch} (best FM {self.best_val_fm:.4f} "
                 f"at epoch {self.best_epoch})")

    def _worker_steps_per_epoch(self) -> int:
        """Steps of one epoch when several workers train: each worker reads its own equal share."""
        role, replicas = self.role, self.strategy.num_replicas_in_sync
        each = sum(self.crop_counts) // role.count
        if each == 0:
            raise TrainingError(f"{sum(self.crop_counts)} training example(s) cannot be shared by {role.count} "
                                "workers: give at least one training image per worker")
        per_worker = max(1, self.config.batch_size // replicas) * max(1, replicas // role.count)
        return math.ceil(each / per_worker)

    def _prepare_workers(self, saved: keras.Model | None, state: RunState) -> None:
        """Build the same model on every worker (variables are created in the same order everywhere, as
        ``MultiWorkerMirroredStrategy`` needs), then give every worker the chief's weights, optimizer state
        and epoch: after a restart, all resume from the chief's last checkpoint."""
        model = self._build_compiled()
        model.optimizer.build(model.trainable_variables)
        resuming = saved is not None
        if saved is not None:
            model.set_weights(saved.get_weights())
            for variable, value in zip(model.optimizer.variables, saved.optimizer.variables):
                variable.assign(value)
            self._resume_state(state)
        variables = list(model.weights) + list(model.optimizer.variables)
        values = [np.asarray(v.numpy()) for v in variables]
        values.append(np.array([self.initial_epoch if resuming else 0], np.float32))
        synced = broadcast_from_chief(self.strategy, values)
        for variable, value in zip(variables, synced):
            variable.assign(value)
        self.initial_epoch = int(synced[-1][0])
        if not self.role.chief and self.initial_epoch:
            self.log(f"worker {self.role.index}: resuming after epoch {self.initial_epoch} from the chief's weights")

    # ----------------------------------------------------------------------------------------------
    def _segmenter(self, rule: str) -> KerasSegmenter:
        info = model_info(self.config, frequencies=self.frequencies, weights=self.class_weights,
                          n_train=len(self.train_pairs), n_validation=len(self.validation_pairs),
                          rule=rule, epoch=self.current_epoch, val_fm=None, image_sha256=self.image_sha256)
        # traced once per model object; it follows the weights from epoch to epoch
        if self._validation_function is None or self._validation_function[0] is not self.model:
            self._validation_function = (self.model, prediction_function(self.model))
        return KerasSegmenter(self.model, info, batch_size=self.config.batch_size,
                              predict_function=self._validation_function[1])

    def _mean_fm_by_rule(self, pairs: Sequence[Pair], rules: Sequence[str],
                         tick: Callable[[int], None] | None = None, done: int = 0) -> dict[str, float]:
        """Mean FM of ``pairs`` for each cleanup variant, predicting each image once (inference mode);
        ``tick(done + images scored so far)`` after each batch."""
        segmenter = self._segmenter(rules[0])
        totals = {rule: [] for rule in rules}
        batch = self.config.batch_size
        for start in range(0, len(pairs), batch):
            read = [read_pair(pair) for pair in pairs[start:start + batch]]
            images, masks = [image for image, _ in read], [mask for _, mask in read]
            for mask, probabilities in zip(masks, segmenter.predict_probabilities(images)):
                defaults = cleanup_for_image(segmenter, mask.shape)
                for rule in rules:
                    variant = dataclasses.replace(defaults, **CLEANUP_VARIANTS[self.config.model.n_classes][rule])
                    lesion = clean(segmenter, probabilities, variant).lesion
                    totals[rule].append(float(scores(lesion, mask)["fm"]))
            if tick is not None:
                tick(done + start + len(read))
        return {rule: float(np.mean(values)) if values else float("nan") for rule, values in totals.items()}

    @property
    def train_fm_pairs(self) -> list[Pair]:
        """The training pairs scored after each epoch (``train_fm_images`` of them); the epoch is chosen on
        them when there is no validation split."""
        return self.train_pairs[: self.config.train_fm_images]

    def validation_scores(self) -> dict[str, float]:
        """Mean FM in inference mode at each image's own size, for each lesion rule (three classes)."""
        rules = tuple(CLEANUP_VARIANTS[self.config.model.n_classes])
        subset = self.train_fm_pairs
        pairs = self.validation_pairs or subset
        tick = self.phase_ticker("validate", len(pairs) + len(subset), "validation FM")
        by_rule = self._mean_fm_by_rule(pairs, rules, tick)
        scores_row: dict = {f"val_fm_{rule}": value for rule, value in by_rule.items()}
        best_rule = max(rules, key=lambda r: -1.0 if math.isnan(by_rule[r]) else by_rule[r])
        scores_row["val_fm"] = by_rule[best_rule]
        scores_row["rule"] = best_rule
        scores_row["train_fm"] = (self._mean_fm_by_rule(subset, (best_rule,), tick, len(pairs))[best_rule]
                                  if subset else float("nan"))
        return scores_row

    def end_epoch(self, row: dict) -> None:
        """Write history, checkpoints and state after an epoch."""
        self.history.append(row)
        write_history(self.files.history, self.history)
        epoch = row["epoch"]
        val_fm = row["val_fm"]
        improved = not math.isnan(val_fm) and val_fm > self.best_val_fm
        if improved:
            self.best_val_fm, self.best_epoch, self.best_rule = val_fm, epoch, row["rule"]
            info = model_info(self.config, frequencies=self.frequencies, weights=self.class_weights,
                              n_train=len(self.train_pairs), n_validation=len(self.validation_pairs),
                              rule=row["rule"], epoch=epoch, val_fm=val_fm, image_sha256=self.image_sha256)
            save_model(self.model, self.files.model, info)
        save_model(self.model, self.files.last, {"epoch": epoch, "checkpoint": True})
        self.training_seconds += row["seconds"]
        self._write_state("running")
        chosen_by = "val FM" if self.validation_pairs else "val FM (no validation split: training images)"
        self.log(f"epoch {epoch}/{self.config.epochs}: loss {row['loss']:.4f}, accuracy {row['accuracy']:.4f}, "
                 f"train FM {row['train_fm']:.4f}, {chosen_by} {val_fm:.4f} ({row['rule']})"
                 + (" *best*" if improved else ""))
        self.report(Progress("epoch", epoch, self.config.epochs, self.steps_per_epoch, self.steps_per_epoch,
                             loss=row["loss"], metrics={k: v for k, v in row.items() if isinstance(v, float)}))

    @property
    def job_seconds(self) -> float:
        """Wall time of the whole job so far, in seconds: preparation, epochs, validation, calibration and
        test evaluation, over every session of a resumed run."""
        return self.earlier_job_seconds + time.time() - self.job_started

    def _write_state(self, status: str) -> None:
        RunState(epoch=self.current_epoch, epochs=self.config.epochs, best_epoch=self.best_epoch,
                 best_val_fm=float(self.best_val_fm), best_rule=self.best_rule, status=status,
                 training_seconds=float(self.training_seconds), job_seconds=self.job_seconds).write(self.run_dir)

    def batchnorm_images(self, limit: int) -> np.ndarray:
        """Up to ``limit`` training images as one network input batch (no augmentation)."""
        pairs = self.train_pairs[:limit]
        images, _ = next(iter(make_dataset(pairs, self.targets, batch_size=len(pairs), cache=self.cache)))
        return images.numpy()

    def ensure_batchnorm(self) -> None:
        """Check the best model in inference mode; when its BatchNorm moving statistics lag (few steps),
        replace them by the statistics of the training images and store the model again.

        Raises
        ------
        TrainingError
            When the model still fails in inference mode, with what to change.
        """
        from moleseg.core.modelinfo import read_model_info

        path = self.files.model
        trained, self.model = self.model, load_keras_model(path)
        try:
            try:
                self.check_batchnorm()
            except TrainingError:
                images = self.batchnorm_images(BATCHNORM_REESTIMATE_IMAGES)
                count = reestimate_batchnorm(self.model, images)
                self.log(f"BatchNorm moving statistics had not converged: {count} layers re-estimated from "
                         f"{len(images)} training images")
                try:
                    self.check_batchnorm()
                except TrainingError as error:
                    raise TrainingError(
                        "the model only works on the images it was trained with (its BatchNorm statistics do not "
                        "fit new images): add more training images, or start from the shipped model or ImageNet "
                        "weights") from error
                save_model(self.model, path, read_model_info(path))
        finally:
            self.model = trained

    def check_batchnorm(self) -> None:
        """Fail loudly when inference mode predicts nothing while batch statistics do (moving BatchNorm
        statistics not converged): such a model would silently draw no lesion in the app."""
        pairs = self.validation_pairs or self.train_pairs
        dataset = make_dataset(pairs[: self.config.batch_size], self.targets, batch_size=self.config.batch_size,
                               cache=self.cache)
        images, labels = next(iter(dataset))
        truth = np.argmax(labels.numpy(), axis=-1) > 0
        saved = [w.numpy() for w in self.model.non_trainable_weights]
        batch_mode = np.argmax(np.asarray(self.model(images, training=True)), axis=-1) > 0
        for variable, value in zip(self.model.non_trainable_weights, saved):
            variable.assign(value)
        inference = np.argmax(np.asarray(self.model(images, training=False)), axis=-1) > 0

        def fm(pred: np.ndarray) -> float:
            tp = float(np.sum(pred & truth))
            return 2 * tp / max(1.0, 2 * tp + float(np.sum(pred & ~truth)) + float(np.sum(~pred & truth)))

        batch_fm, inference_fm = fm(batch_mode), fm(inference)
        self.log(f"BatchNorm check: FM {batch_fm:.3f} with batch statistics, {inference_fm:.3f} in inference mode")
        if batch_fm >= 0.5 and inference_fm < 0.5 * batch_fm:
            raise TrainingError(
                f"the model works with batch statistics (FM {batch_fm:.2f}) but not in inference mode "
                f"(FM {inference_fm:.2f}): its BatchNorm moving statistics have not converged. Train for more "
                "steps, or lower the BatchNorm momentum (bn_momentum)."
            )

    # ----------------------------------------------------------------------------------------------
    def fit(self) -> None:
        config = self.config
        if self.initial_epoch >= config.epochs:
            self.log(f"nothing to train: {self.initial_epoch} of {config.epochs} epochs done")
            return
        with self.strategy.scope():
            train = make_dataset(self.train_pairs, self.targets, batch_size=config.batch_size,
                                 augment=config.augment_config(), shuffle=True, seed=config.seed,
                                 cache=self.cache, crops_per_image=self.crop_counts)
            validation = None
            if self.validation_pairs:
                validation = make_dataset(self.validation_pairs, self.targets, batch_size=config.batch_size,
                                          cache=self.cache)
        callbacks: list[keras.callbacks.Callback] = [_EpochEnd(self)]
        if config.early_stopping_patience > 0:
            callbacks.append(keras.callbacks.EarlyStopping(monitor="val_fm", mode="max",
                                                           patience=config.early_stopping_patience))
        self._write_state("running")
        if self.role.distributed:
            self._fit_workers(keras.callbacks.CallbackList(callbacks, model=self.model), validation)
        else:
            try:
                self.model.fit(train, validation_data=validation, epochs=config.epochs,
                               initial_epoch=self.initial_epoch, callbacks=callbacks, verbose=0)
            except TrainingCancelled:
                self.cancelled = True
        if self.cancelled:
            raise TrainingCancelled(f"training cancelled after epoch {self.current_epoch}")

    def _worker_dataset(self, epoch: int, context: tf.distribute.InputContext) -> tf.data.Dataset:
        """This worker's shard of ``epoch`` (its own files, in a seeded order; auto-sharding off)."""
        config = self.config
        shard = epoch_shard(self.crop_counts, epoch=epoch, seed=config.seed, role=self.role)
        debug = os.environ.get(WORKER_DEBUG_ENV)
        if debug:
            write_seen(debug, self.role, epoch + 1, [self.train_pairs[i].image.name for i in shard])
        unique, counts = np.unique(shard, return_counts=True)
        order = np.random.default_rng([config.seed, epoch, self.role.index]).permutation(len(unique))
        dataset = make_dataset([self.train_pairs[i] for i in unique[order]], self.targets,
                               batch_size=max(1, config.batch_size // context.num_replicas_in_sync),
                               augment=config.augment_config(), shuffle=True,
                               seed=config.seed + 1000 * epoch + self.role.index, cache=self.cache,
                               crops_per_image=counts[order])
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return dataset.with_options(options)

    def _fit_workers(self, callbacks: keras.callbacks.CallbackList, validation: tf.data.Dataset | None) -> None:
        """The training loop of several workers, stepping with ``strategy.run`` (Keras 3's ``fit`` does not
        run under ``MultiWorkerMirroredStrategy``), with the same callbacks as ``fit``. Every worker runs
        the same steps; stopping (cancel, early stopping) is the chief's decision, shared by all."""
        strategy, model, config = self.strategy, self.model, self.config
        optimizer, loss_function = model.optimizer, model.loss
        replicas = strategy.num_replicas_in_sync

        def replica_step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            with tf.GradientTape() as tape:
                predictions = model(images, training=True)
                loss = loss_function(labels, predictions)
                if model.losses:
                    loss = loss + tf.add_n(model.losses)
                scaled = optimizer.scale_loss(loss / replicas)
            gradients = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(labels, -1), tf.argmax(predictions, -1)),
                                              tf.float32))
            return loss, accuracy

        @tf.function(reduce_retracing=True)
        def distributed_step(iterator) -> tuple[tf.Tensor, tf.Tensor]:
            images, labels = next(iterator)
            loss, accuracy = strategy.run(replica_step, args=(images, labels))
            return (strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None),
                    strategy.reduce(tf.distribute.ReduceOp.MEAN, accuracy, axis=None))

        def validation_logs() -> dict[str, float]:
            if validation is None:
                return {}
            losses, accuracies = [], []
            for images, labels in validation:
                predictions = model(images, training=False)
                losses.append(float(loss_function(labels, predictions)))
                accuracies.append(float(np.mean(np.argmax(labels, -1) == np.argmax(predictions, -1))))
            return {"val_loss": float(np.mean(losses)), "val_accuracy": float(np.mean(accuracies))}

        def chief_says(flag: bool) -> bool:
            return bool(broadcast_from_chief(strategy, [np.array([float(flag)], np.float32)])[0][0])

        model.stop_training = False
        callbacks.on_train_begin()
        for epoch in range(self.initial_epoch, config.epochs):
            callbacks.on_epoch_begin(epoch)
            iterator = iter(strategy.distribute_datasets_from_function(
                lambda context, epoch=epoch: self._worker_dataset(epoch, context)))
            losses, accuracies = [], []
            for step in range(self.steps_per_epoch):
                callbacks.on_train_batch_begin(step)
                loss, accuracy = distributed_step(iterator)
                losses.append(float(loss))
                accuracies.append(float(accuracy))
                callbacks.on_train_batch_end(step, {"loss": float(np.mean(losses)),
                                                    "accuracy": float(np.mean(accuracies))})
                if chief_says(self.cancelled):
                    self.cancelled = True
                    break
            if self.cancelled:
                break
            statistics = model.non_trainable_weights  # BatchNorm moving statistics: each worker saw its own data
            for variable, value in zip(statistics, average_over_workers(strategy, [v.numpy() for v in statistics])):
                variable.assign(value)
            logs = {"loss": float(np.mean(losses)), "accuracy": float(np.mean(accuracies)), **validation_logs()}
            callbacks.on_epoch_end(epoch, logs)
            if chief_says(bool(model.stop_training)):
                break
        callbacks.on_train_end()
        debug = os.environ.get(WORKER_DEBUG_ENV)
        if debug:
            np.savez(Path(debug) / f"worker{self.role.index}-weights.npz",
                     *[np.asarray(w.numpy()) for w in model.weights])

    def calibrate_best(self) -> dict[str, Any]:
        """Choose the best model's flips and lesion threshold by validation FM and store them in it."""
        from moleseg.network.loading import calibrate_model_file

        tick: Callable[[int], None] | None = None

        def step(done: int, total: int) -> None:
            nonlocal tick
            if tick is None:
                tick = self.phase_ticker("calibrate", total, "choosing flips and lesion threshold by validation FM")
            tick(done)

        calibration = calibrate_model_file(self.files.model, self.validation_pairs, progress=self.log, step=step)
        self.log(calibration.summary())
        return calibration.info_update()

    def finish(self) -> dict:
        """Check the best model, evaluate it on the test split, write ``evaluation.json``."""
        from moleseg.network.loading import load_segmenter

        if self.best_epoch == 0:
            raise TrainingError("no epoch produced a model (no validation FM)")
        self.ensure_batchnorm()
        evaluation: dict[str, Any] = {"best_epoch": self.best_epoch, "best_val_fm": self.best_val_fm,
                                      "rule": self.best_rule}
        if self.config.calibrate and self.validation_pairs:
            evaluation["calibration"] = self.calibrate_best()
        if self.test_pairs:
            count = len(self.test_pairs)
            tick = self.phase_ticker("evaluate", 2 * count, "evaluating the test split (model, then baseline)")
            best = load_segmenter(self.files.model)
            summary, _, _ = evaluate_pairs(best, self.test_pairs, batch_size=self.config.batch_size,
                                           progress=lambda done, total, name: tick(done))
            baseline, _, _ = evaluate_pairs(load_segmenter(f"classical{self.config.model.n_classes}"),
                                            self.test_pairs, progress=lambda done, total, name: tick(count + done))
            evaluation.update(summary)
            evaluation["baseline"] = {k: v for k, v in baseline.items() if k != "per_image"}
            self.log(f"test FM {summary['fm']['mean']:.4f} (classical baseline {baseline['fm']['mean']:.4f})")
        write_json(self.files.evaluation, evaluation)
        self._write_state("done")
        self.report(Progress("done", self.current_epoch, self.config.epochs, 0, 0,
                             metrics={"best_val_fm": self.best_val_fm}, message="done"))
        chosen_by = ("validation FM" if self.validation_pairs
                     else f"FM of {len(self.train_fm_pairs)} training images "
                          "(no validation split)")
        self.log(f"done: best {chosen_by} {self.best_val_fm:.4f} at epoch {self.best_epoch} "
                 f"({self.best_rule} rule), {self.job_seconds / 60:.1f} min in all "
                 f"({self.training_seconds / 60:.1f} min of epochs)")
        return evaluation


def freeze_loaded_batchnorm(model: keras.Model) -> int:
    """Freeze the BatchNorm layers whose moving statistics were loaded (not Keras' initial zeros and ones):
    they then normalise with those statistics while training. Returns how many were frozen."""
    frozen = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            mean, variance = layer.moving_mean.numpy(), layer.moving_variance.numpy()
            if np.any(mean != 0.0) or np.any(variance != 1.0):
                layer.trainable = False
                frozen += 1
    return frozen


def reestimate_batchnorm(model: keras.Model, images: np.ndarray) -> int:
    """Set the moving statistics of every trainable BatchNorm layer to those of ``images`` (one batch in
    training mode with momentum 0; the weights do not change). Returns how many layers were set."""
    layers = [layer for layer in _all_layers(model)
              if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    momenta = [layer.momentum for layer in layers]
    try:
        for layer in layers:
            layer.momentum = 0.0
        model(images, training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return len(layers)


def _all_layers(model: keras.Layer) -> list[keras.Layer]:
    """Every layer of ``model``, nested models included."""
    found: list[keras.Layer] = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        found.extend(_all_layers(layer))
    return found


def train(config: TrainConfig, run_dir: str | Path, *, resume: bool = False,
          progress: ProgressCallback | None = None, echo: Callable[[str], None] | None = None) -> dict:
    """Train into ``run_dir`` and return the test evaluation (see :mod:`moleseg.engine.runs` for the files).

    With ``resume``, the saved ``config.json`` of ``run_dir`` is used (only ``epochs`` may grow) and
    training continues after the last completed epoch, with the optimizer's state.

    Raises
    ------
    TrainingError
        Bad data or a model that does not work in inference mode.
    TrainingCancelled
        When ``progress`` returned True.
    """
    run_dir = Path(run_dir)
    if resume and current_role().chief:  # other workers of a cluster take the chief's state when they start
        remove_stale_temporaries(run_dir)  # left by a killed run's atomic writes
        saved = read_json(RunFiles(run_dir).config)
        if saved is None and RunFiles(run_dir).config.is_file():
            raise TrainingError(f"{RunFiles(run_dir).config}: damaged (not valid JSON); the run cannot be resumed")
        if saved is None:
            raise TrainingError(f"{run_dir}: nothing to resume (no {RunFiles.CONFIG})")
        epochs = max(config.epochs, int(saved.get("epochs", 0)))
        saved.pop("run_dir", None)
        config = TrainConfig.from_dict({**saved, "epochs": epochs})
    trainer = Trainer(config, run_dir, progress=progress, echo=echo)
    try:
        trainer.prepare(resume)
        started = time.time()
        trainer.fit()
        trainer.log(f"fit took {time.time() - started:.0f} s")
        if not trainer.role.chief:
            return {"worker": trainer.role.index, "best_epoch": trainer.current_epoch, "best_val_fm": float("nan")}
        return trainer.finish()
    except TrainingCancelled as cancelled:
        if trainer.role.chief and trainer.run_dir.is_dir():
            trainer._write_state("cancelled")  # also when cancelled while validating, calibrating or evaluating
            trainer.log(str(cancelled))
        raise
    except Exception:
        if trainer.role.chief and trainer.run_dir.is_dir():
            trainer._write_state("failed")  # the runs table and the app say "failed", not "running"
        raise
    finally:
        if not trainer.role.chief:
            shutil.rmtree(trainer.run_dir, ignore_errors=True)
