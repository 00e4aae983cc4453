"""Training on several devices and machines: the distribution strategy, and the training loop of the
workers of a cluster (``MultiWorkerMirroredStrategy``), which steps with ``strategy.run`` because Keras 3's
``fit`` does not run under that strategy. One machine trains with ``fit`` (:mod:`moleseg.network.train`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Protocol, Sequence

import keras
import numpy as np
import tensorflow as tf

from moleseg.core.pairing import Pair
from moleseg.core.trainconfig import TrainConfig
from moleseg.core.words import count_of
from moleseg.engine.runs import RunState
from moleseg.network.cluster import (WORKER_DEBUG_ENV, WorkerRole, average_over_workers, broadcast_from_chief,
                                     epoch_shard, write_seen)
from moleseg.network.data import make_dataset
from moleseg.network.examples import ExampleCache, TargetConfig
from moleseg.network.trainsetup import TrainingError, augment_config


class Trainer(Protocol):
    """What the workers' loop reads and sets of a training (:class:`moleseg.network.train.Trainer`)."""

    config: TrainConfig
    role: WorkerRole
    strategy: tf.distribute.Strategy
    model: keras.Model
    train_pairs: Sequence[Pair]
    targets: TargetConfig
    cache: ExampleCache
    crop_counts: Sequence[int]
    initial_epoch: int
    steps_per_epoch: int
    cancelled: bool
    log: Callable[[str], None]

    def build_compiled(self) -> keras.Model:
        """A new compiled model in the current strategy scope (also set as ``model``)."""

    def resume_state(self, state: RunState) -> None:
        """Take epoch, best score and history of the interrupted run's ``state.json``."""


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


def worker_steps_per_epoch(trainer: Trainer) -> int:
    """Steps of one epoch when several workers train: each worker reads its own equal share."""
    role, replicas = trainer.role, trainer.strategy.num_replicas_in_sync
    each = sum(trainer.crop_counts) // role.count
    if each == 0:
        raise TrainingError(f"{count_of(sum(trainer.crop_counts), 'training example')} cannot be shared by {role.count} "
                            "workers: give at least one training image per worker")
    per_worker = max(1, trainer.config.batch_size // replicas) * max(1, replicas // role.count)
    return math.ceil(each / per_worker)


def prepare_workers(trainer: Trainer, saved: keras.Model | None, state: RunState) -> None:
    """Build the same model on every worker (variables are created in the same order everywhere, as
    ``MultiWorkerMirroredStrategy`` needs), then give every worker the chief's weights, optimizer state
    and epoch: after a restart, all resume from the chief's last checkpoint."""
    model = trainer.build_compiled()  # its optimizer's variables too
    resuming = saved is not None
    if saved is not None:
        model.set_weights(saved.get_weights())
        for variable, value in zip(model.optimizer.variables, saved.optimizer.variables):
            variable.assign(value)
        trainer.resume_state(state)
    variables = list(model.weights) + list(model.optimizer.variables)
    values = [np.asarray(v.numpy()) for v in variables]
    values.append(np.array([trainer.initial_epoch if resuming else 0], np.float32))
    synced = broadcast_from_chief(trainer.strategy, values)
    for variable, value in zip(variables, synced):
        variable.assign(value)
    trainer.initial_epoch = int(synced[-1][0])
    if not trainer.role.chief and trainer.initial_epoch:
        trainer.log(f"worker {trainer.role.index}: resuming after epoch {trainer.initial_epoch} from the chief's weights")

# ----------------------------------------------------------------------------------------------


def worker_dataset(trainer: Trainer, epoch: int, context: tf.distribute.InputContext) -> tf.data.Dataset:
    """This worker's shard of ``epoch`` (its own files, in a seeded order; auto-sharding off)."""
    config = trainer.config
    shard = epoch_shard(trainer.crop_counts, epoch=epoch, seed=config.seed, role=trainer.role)
    debug = os.environ.get(WORKER_DEBUG_ENV)
    if debug:
        write_seen(debug, trainer.role, epoch + 1, [trainer.train_pairs[i].image.name for i in shard])
    unique, counts = np.unique(shard, return_counts=True)
    order = np.random.default_rng([config.seed, epoch, trainer.role.index]).permutation(len(unique))
    dataset = make_dataset([trainer.train_pairs[i] for i in unique[order]], trainer.targets,
                           batch_size=max(1, config.batch_size // context.num_replicas_in_sync),
                           augment=augment_config(config), shuffle=True,
                           seed=config.seed + 1000 * epoch + trainer.role.index, cache=trainer.cache,
                           crops_per_image=counts[order])
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)


def fit_workers(trainer: Trainer, callbacks: keras.callbacks.CallbackList, validation: tf.data.Dataset | None) -> None:
    """The training loop of several workers, stepping with ``strategy.run`` (Keras 3's ``fit`` does not
    run under ``MultiWorkerMirroredStrategy``), with the same callbacks as ``fit``. Every worker runs
    the same steps; stopping (cancel, early stopping) is the chief's decision, shared by all."""
    strategy, model, config = trainer.strategy, trainer.model, trainer.config
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
    for epoch in range(trainer.initial_epoch, config.epochs):
        callbacks.on_epoch_begin(epoch)
        iterator = iter(strategy.distribute_datasets_from_function(
            lambda context, epoch=epoch: worker_dataset(trainer, epoch, context)))
        losses, accuracies = [], []
        for step in range(trainer.steps_per_epoch):
            callbacks.on_train_batch_begin(step)
            loss, accuracy = distributed_step(iterator)
            losses.append(float(loss))
            accuracies.append(float(accuracy))
            callbacks.on_train_batch_end(step, {"loss": float(np.mean(losses)),
                                                "accuracy": float(np.mean(accuracies))})
            if chief_says(trainer.cancelled):
                trainer.cancelled = True
                break
        if trainer.cancelled:
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
        np.savez(Path(debug) / f"worker{trainer.role.index}-weights.npz",
                 *[np.asarray(w.numpy()) for w in model.weights])
