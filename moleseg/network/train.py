"""One training into one run folder: the epochs (Keras ``fit`` on one machine, :mod:`moleseg.network.distributed`
on a cluster), validation FM after each through the real prediction + cleanup path, checkpoints, resume,
progress and cancel, then the BatchNorm check (:mod:`moleseg.network.bnrescue`), calibration and the
test evaluation. What the configuration means before the first step is :mod:`moleseg.network.trainsetup`.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import numpy as np

from moleseg.core.atomic import remove_stale_temporaries
from moleseg.core.cleanup import CLEANUP_VARIANTS
from moleseg.core.config import CLASSICAL_MODELS, EXAMPLES_CACHE_NAME, cache_dir
from moleseg.core.metrics import scores
from moleseg.core.modelinfo import read_model_info, write_model_info
from moleseg.core.pairing import Pair
from moleseg.core.trainconfig import MODEL_SECTION, TrainConfig
from moleseg.core.words import count_of
from moleseg.engine.evaluate import evaluate_pairs, read_pair
from moleseg.engine.launch import resume_config
from moleseg.engine.finetune import inherited_image_hashes
from moleseg.engine.overlap import training_image_hashes
from moleseg.engine.runs import (RunFiles, RunLog, RunState, read_history, read_state, write_history,
                                 write_json)
from moleseg.engine.segmenter import clean, cleanup_for_image
from moleseg.network.bnrescue import check_batchnorm, ensure_batchnorm, freeze_loaded_batchnorm
from moleseg.network.build import build_model, count_parameters
from moleseg.network.cluster import WorkerRole, current_role
from moleseg.network.configguard import checked_network
from moleseg.network.data import make_dataset
from moleseg.network.devices import accelerators, start_training
from moleseg.network.distributed import choose_strategy, fit_workers, prepare_workers, worker_steps_per_epoch
from moleseg.network.examples import ExampleCache, class_frequencies_of, crop_counts, inverse_frequency_weights
from moleseg.network.io import load_weights_into, save_model
from moleseg.network.losses import SegmentationLoss
from moleseg.network.predict import KerasSegmenter, prediction_function
from moleseg.network.weightpaths import freeze_as_saved
from moleseg.network.trainsetup import (Progress, ProgressCallback, TrainingCancelled, TrainingError, augment_config,
                                        auto_bn_momentum, compile_for_training, model_info, split_of,
                                        target_config)

#: At most this many training pairs is a small dataset: BatchNorm layers that start from loaded statistics
#: (ImageNet or a model fine-tuned from) keep them and are frozen, since a few images cannot estimate better.
SMALL_DATASET_PAIRS = 20
#: Training images whose batch statistics replace unconverged BatchNorm moving statistics at the end.
BATCHNORM_REESTIMATE_IMAGES = 32
DEFAULT_CACHE_DIR = cache_dir()


def cancelled_after(epoch: int) -> TrainingCancelled:
    """The cancel of a training whose last saved epoch is ``epoch`` (0 to the configured epochs), in the
    words the user sees: ``"training cancelled after epoch 3"``."""
    return TrainingCancelled(f"training cancelled after epoch {epoch}")


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
                raise cancelled_after(trainer.current_epoch)

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
        if trainer.validation_dataset is not None and "val_loss" not in logs:  # one process: not fit's own pass
            logs.update(trainer.validation_loss())
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
        self.model_is_best = False  # the network in memory is the one last saved as the best model file
        self.training_seconds = 0.0
        self.job_started = time.time()
        self.earlier_job_seconds = 0.0  # wall time of the earlier sessions of a resumed run
        self._validation_function: tuple[keras.Model, Callable[[np.ndarray], Any]] | None = None
        self.validation_dataset: Any = None  # the validation split at the network's input size, once fit starts

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
                    raise cancelled_after(self.current_epoch)

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
        gpus = accelerators("tensorflow")
        # one seed: the same initial weights and dropout draws
        start_training(mixed_precision=config.mixed_precision == "on" or (config.mixed_precision == "auto" and bool(gpus)),
                       seed=config.seed)
        self.strategy = choose_strategy(config.strategy)
        cache_dir = Path(config.cache_dir) if config.cache_dir else DEFAULT_CACHE_DIR / EXAMPLES_CACHE_NAME
        self.cache = ExampleCache(cache_dir)
        self.targets = target_config(config)
        train, validation, test = split_of(config, self.log)
        if not train:
            raise TrainingError("no training pairs left after the validation/test split")
        self.train_pairs, self.validation_pairs, self.test_pairs = train, validation, test
        fold = (f" (fold {config.validation_fold})" if config.validation_fold and not config.validation_images
                else "")
        self.log(f"pairs: {len(train)} train, {len(validation)} validation{fold}, {len(test)} test")
        self.image_sha256 = training_image_hashes([*train, *validation],  # not the test split: it stays a test
                                                  inherited_image_hashes(config.weights))
        tick = self.phase_ticker("prepare", len(train), "preparing targets")
        self.frequencies = class_frequencies_of(train, self.targets, self.cache, warn=self.log, tick=tick)
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
            self.steps_per_epoch = worker_steps_per_epoch(self)
        self.total_steps = self.steps_per_epoch * config.epochs
        if config.bn_momentum == "auto":
            config.model.bn_momentum = auto_bn_momentum(self.total_steps, self.steps_per_epoch)
        else:
            config.model.bn_momentum = float(config.bn_momentum)
        self.log(f"devices: {len(gpus)} GPU; strategy {type(self.strategy).__name__} with "
                 f"{count_of(self.strategy.num_replicas_in_sync, 'replica')}; precision "
                 f"{keras.mixed_precision.global_policy().name}; BatchNorm momentum {config.model.bn_momentum:.4f}")
        state = read_state(self.run_dir) or RunState()
        self.initial_epoch = 0
        checkpoint = self.files.last
        can_resume = resume and checkpoint.is_file() and state.epoch > 0
        # The chief reads its checkpoint (into the run's network, built and compiled as at its start) outside the
        # strategy's scope: variables created in the scope are created together on every worker.
        saved = (load_weights_into(self.build_compiled(checkpoint), checkpoint)
                 if self.role.distributed and can_resume else None)
        with self.strategy.scope():
            if self.role.distributed:
                prepare_workers(self, saved, state)
            elif can_resume:  # the run's network built and compiled as at its start; its last weights and solver
                load_weights_into(self.build_compiled(checkpoint), checkpoint)
                self.resume_state(state)
            else:
                self.build_compiled()
        self.current_epoch = self.initial_epoch
        self.steps_done = self.initial_epoch * self.steps_per_epoch
        self.log(f"model {config.model.architecture}/{config.model.backbone} {config.model.input_size}px, "
                 f"{count_parameters(self.model):,} weights, encoder init {config.weights}")
        write_json(self.files.config, {**config.to_dict(), "run_dir": str(self.run_dir)})

    def build_compiled(self, checkpoint: Path | None = None) -> keras.Model:
        """A new model compiled with the training's solver (its variables created), loss and accuracy metric (in the
        current scope). For the ``checkpoint`` of a resumed run (whose weights are then read into it), its network
        alone, with the BatchNorm layers the run's start froze frozen again: the file the run started from (its
        ``weights`` option) is not read again, and need not be there any more."""
        config = self.config
        self.model = build_model(config.model, weights=config.weights if checkpoint is None else "none")
        if checkpoint is not None:
            freeze_as_saved(self.model, checked_network(checkpoint)[0])
        elif config.weights != "none" and len(self.train_pairs) <= SMALL_DATASET_PAIRS:
            frozen = freeze_loaded_batchnorm(self.model)
            self.log(f"small dataset ({len(self.train_pairs)} training pairs <= {SMALL_DATASET_PAIRS}): {frozen} "
                     "BatchNorm layers keep the statistics loaded with the weights (frozen)")
        loss = SegmentationLoss(config.loss, self.class_weights)
        compile_for_training(self.model, config, self.total_steps, loss,
                             metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
        return self.model

    def resume_state(self, state: RunState) -> None:
        """Epoch, best score and history of the interrupted run (the chief's ``state.json``)."""
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

    def _segmenter(self, rule: str) -> KerasSegmenter:
        info = model_info(self.config, frequencies=self.frequencies, weights=self.class_weights,
                          n_train=len(self.train_pairs), n_validation=len(self.validation_pairs),
                          rule=rule, epoch=self.current_epoch, val_fm=None, image_sha256=self.image_sha256)
        return KerasSegmenter(self.model, info, batch_size=self.config.batch_size,
                              predict_function=self.validation_predict())

    def validation_predict(self) -> Callable[[np.ndarray], Any]:
        """The model in inference mode, traced once per model object (it follows the weights from epoch to
        epoch): the validation FM's predictions and the validation loss."""
        if self._validation_function is None or self._validation_function[0] is not self.model:
            self._validation_function = (self.model, prediction_function(self.model))
        return self._validation_function[1]

    def validation_loss(self) -> dict[str, float]:
        """``val_loss`` and ``val_accuracy`` (the share of pixels of the right class) of the validation split at
        the network's input size, each a mean over its examples, predicted by :meth:`validation_predict`: the
        validation needs no evaluation step of Keras' own (one trace less)."""
        loss_function = self.model.loss
        losses, accuracies, counts = [], [], []
        for images, labels in self.validation_dataset:
            probabilities = self.validation_predict()(images)
            losses.append(float(loss_function(labels, probabilities)))
            accuracies.append(float(np.mean(np.argmax(labels, -1) == np.argmax(probabilities, -1))))
            counts.append(len(labels))
        return {"val_loss": float(np.average(losses, weights=counts)),
                "val_accuracy": float(np.average(accuracies, weights=counts))}

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
        self.model_is_best = improved
        if improved:
            self.best_val_fm, self.best_epoch, self.best_rule = val_fm, epoch, row["rule"]
            info = model_info(self.config, frequencies=self.frequencies, weights=self.class_weights,
                              n_train=len(self.train_pairs), n_validation=len(self.validation_pairs),
                              rule=row["rule"], epoch=epoch, val_fm=val_fm, image_sha256=self.image_sha256)
            save_model(self.model, self.files.model, info)
        # the network it holds described, as every moleseg model file's (moleseg.network.build.load_keras_model)
        checkpoint = {"epoch": epoch, "checkpoint": True, MODEL_SECTION: self.config.model.to_dict()}
        if improved:  # the same network as the best model's file just written: copied, not saved again
            write_model_info(self.files.last, checkpoint, source=self.files.model)
        else:
            save_model(self.model, self.files.last, checkpoint)
        self.training_seconds += row["seconds"]
        self.write_state("running")
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

    def write_state(self, status: str) -> None:
        RunState(epoch=self.current_epoch, epochs=self.config.epochs, best_epoch=self.best_epoch,
                 best_val_fm=float(self.best_val_fm), best_rule=self.best_rule, status=status,
                 training_seconds=float(self.training_seconds), job_seconds=self.job_seconds).write(self.run_dir)

    def check_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """One batch of validation (or training) inputs and targets for the BatchNorm check."""
        pairs = self.validation_pairs or self.train_pairs
        dataset = make_dataset(pairs[: self.config.batch_size], self.targets, batch_size=self.config.batch_size,
                               cache=self.cache)
        images, labels = next(iter(dataset))
        return images.numpy(), labels.numpy()

    def batchnorm_images(self, limit: int) -> np.ndarray:
        """Up to ``limit`` training images as one network input batch (no augmentation)."""
        pairs = self.train_pairs[:limit]
        images, _ = next(iter(make_dataset(pairs, self.targets, batch_size=len(pairs), cache=self.cache)))
        return images.numpy()

    def check_batchnorm(self) -> None:
        """:func:`moleseg.network.bnrescue.check_batchnorm` of the current model."""
        check_batchnorm(self.model, *self.check_batch(), self.log)

    def ensure_batchnorm(self) -> None:
        """:func:`moleseg.network.bnrescue.ensure_batchnorm` of the best model file, re-estimating from up to
        :data:`BATCHNORM_REESTIMATE_IMAGES` training images. The network in memory is checked instead of the
        file's copy when it is the one just saved there and its variables are not a strategy's replicas."""
        in_memory = self.model_is_best and self.strategy.num_replicas_in_sync == 1
        ensure_batchnorm(self.files.model, self.check_batch(),
                         lambda: self.batchnorm_images(BATCHNORM_REESTIMATE_IMAGES), self.log,
                         model=self.model if in_memory else None)

    # ----------------------------------------------------------------------------------------------
    def fit(self) -> None:
        config = self.config
        if self.initial_epoch >= config.epochs:
            self.log(f"nothing to train: {self.initial_epoch} of {config.epochs} epochs done")
            return
        with self.strategy.scope():
            train = make_dataset(self.train_pairs, self.targets, batch_size=config.batch_size,
                                 augment=augment_config(config), shuffle=True, seed=config.seed,
                                 cache=self.cache, crops_per_image=self.crop_counts)
            validation = None
            if self.validation_pairs:
                validation = make_dataset(self.validation_pairs, self.targets, batch_size=config.batch_size,
                                          cache=self.cache)
        self.validation_dataset = validation
        callbacks: list[keras.callbacks.Callback] = [_EpochEnd(self)]
        if config.early_stopping_patience > 0:
            callbacks.append(keras.callbacks.EarlyStopping(monitor="val_fm", mode="max",
                                                           patience=config.early_stopping_patience))
        self.write_state("running")
        if self.role.distributed:
            fit_workers(self, keras.callbacks.CallbackList(callbacks, model=self.model), validation)
        else:
            try:
                self.model.fit(train, epochs=config.epochs, initial_epoch=self.initial_epoch, callbacks=callbacks,
                               verbose=0)
            except TrainingCancelled:
                self.cancelled = True
        if self.cancelled:
            raise cancelled_after(self.current_epoch)

    def calibrate_best(self, best: KerasSegmenter) -> dict[str, Any]:
        """Choose the best model's flips and lesion threshold by validation FM and store them in it; ``best``:
        the best model file's network."""
        from moleseg.network.loading import calibrate_model_file

        tick: Callable[[int], None] | None = None

        def step(done: int, total: int) -> None:
            nonlocal tick
            if tick is None:
                tick = self.phase_ticker("calibrate", total, "choosing flips and lesion threshold by validation FM")
            tick(done)

        calibration = calibrate_model_file(self.files.model, self.validation_pairs, progress=self.log, step=step,
                                           segmenter=best)
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
        best: KerasSegmenter | None = None  # the best model file's network, loaded once for both passes
        if self.config.calibrate and self.validation_pairs:
            best = KerasSegmenter.from_file(self.files.model)
            evaluation["calibration"] = self.calibrate_best(best)
        if self.test_pairs:
            count = len(self.test_pairs)
            tick = self.phase_ticker("evaluate", 2 * count, "evaluating the test split (model, then baseline)")
            # with the decision the file holds now (the calibration's, when it ran)
            best = (best.with_info(read_model_info(self.files.model)) if best is not None
                    else load_segmenter(self.files.model))
            summary, _, _ = evaluate_pairs(best, self.test_pairs, batch_size=self.config.batch_size,
                                           progress=lambda done, total, name: tick(done))
            baseline, _, _ = evaluate_pairs(load_segmenter(CLASSICAL_MODELS[self.config.model.n_classes]),
                                            self.test_pairs, progress=lambda done, total, name: tick(count + done))
            evaluation.update(summary)
            evaluation["baseline"] = {k: v for k, v in baseline.items() if k != "per_image"}
            self.log(f"test FM {summary['fm']['mean']:.4f} (classical baseline {baseline['fm']['mean']:.4f})")
        write_json(self.files.evaluation, evaluation)
        self.write_state("done")
        self.report(Progress("done", self.current_epoch, self.config.epochs, 0, 0,
                             metrics={"best_val_fm": self.best_val_fm}, message="done"))
        chosen_by = ("validation FM" if self.validation_pairs
                     else f"FM of {len(self.train_fm_pairs)} training images "
                          "(no validation split)")
        self.log(f"done: best {chosen_by} {self.best_val_fm:.4f} at epoch {self.best_epoch} "
                 f"({self.best_rule} rule), {self.job_seconds / 60:.1f} min in all "
                 f"({self.training_seconds / 60:.1f} min of epochs)")
        return evaluation


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
        try:
            saved = resume_config(run_dir, config.epochs)
        except ValueError as error:  # nothing to resume, or a damaged file of the run (named)
            raise TrainingError(str(error)) from None
        config = TrainConfig.from_dict(saved)
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
            trainer.write_state("cancelled")  # also when cancelled while validating, calibrating or evaluating
            trainer.log(str(cancelled))
        raise
    except Exception:
        if trainer.role.chief and trainer.run_dir.is_dir():
            trainer.write_state("failed")  # the runs table and the app say "failed", not "running"
        raise
    finally:
        if not trainer.role.chief:
            shutil.rmtree(trainer.run_dir, ignore_errors=True)
