"""The BatchNorm rescue: a model whose BatchNorm moving statistics have not converged (few training steps)
works with batch statistics but predicts nothing in inference mode. Here it is found, its statistics
re-estimated from training images, or the training refused with what to change; and BatchNorm layers
that start from loaded statistics are frozen on small datasets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import keras
import numpy as np

from moleseg.core.modelinfo import read_model_info
from moleseg.network.configguard import checked_network
from moleseg.network.io import load_keras_model, save_model
from moleseg.network.trainsetup import TrainingError
from moleseg.network.weightpaths import freeze_as_saved


def check_batchnorm(model: keras.Model, images: np.ndarray, labels: np.ndarray, log: Callable[[str], None]) -> None:
    """Fail loudly when inference mode predicts nothing while batch statistics do (moving BatchNorm
    statistics not converged): such a model would silently draw no lesion in the app.

    Parameters
    ----------
    model
        The network; its weights are left as they were.
    images, labels
        One batch of network inputs and their one-hot targets.
    log
        Receives the FM in both modes.

    Raises
    ------
    TrainingError
        When the FM with batch statistics is at least 0.5 and the inference-mode FM under half of it.
    """
    truth = np.argmax(np.asarray(labels), axis=-1) > 0
    saved = [w.numpy() for w in model.non_trainable_weights]
    batch_mode = np.argmax(np.asarray(model(images, training=True)), axis=-1) > 0
    for variable, value in zip(model.non_trainable_weights, saved):
        variable.assign(value)
    inference = np.argmax(np.asarray(model(images, training=False)), axis=-1) > 0

    def fm(pred: np.ndarray) -> float:
        tp = float(np.sum(pred & truth))
        return 2 * tp / max(1.0, 2 * tp + float(np.sum(pred & ~truth)) + float(np.sum(~pred & truth)))

    batch_fm, inference_fm = fm(batch_mode), fm(inference)
    log(f"BatchNorm check: FM {batch_fm:.3f} with batch statistics, {inference_fm:.3f} in inference mode")
    if batch_fm >= 0.5 and inference_fm < 0.5 * batch_fm:
        raise TrainingError(
            f"the model works with batch statistics (FM {batch_fm:.2f}) but not in inference mode "
            f"(FM {inference_fm:.2f}): its BatchNorm moving statistics have not converged. Train for more "
            "steps, or lower the BatchNorm momentum (bn_momentum)."
        )


def ensure_batchnorm(path: Path, check: tuple[np.ndarray, np.ndarray], training_images: Callable[[], np.ndarray],
                     log: Callable[[str], None], *, model: keras.Model | None = None) -> None:
    """Check the model file at ``path`` in inference mode (:func:`check_batchnorm` on the batch ``check``);
    when its BatchNorm moving statistics lag, replace them by the statistics of ``training_images()``
    and store the model again (with its metadata).

    Parameters
    ----------
    model
        The network stored in ``path`` when it is in memory already (its statistics are then re-estimated in
        place); None loads it from ``path``.

    Raises
    ------
    TrainingError
        When the model still fails in inference mode, with what to change.
    """
    if model is None:  # the file's network, its BatchNorm layers frozen as the training froze them (not rescued)
        model = load_keras_model(path)
        freeze_as_saved(model, checked_network(path)[0])
    try:
        check_batchnorm(model, *check, log)
    except TrainingError:
        images = training_images()
        count = reestimate_batchnorm(model, images)
        log(f"BatchNorm moving statistics had not converged: {count} layers re-estimated from "
            f"{len(images)} training images")
        try:
            check_batchnorm(model, *check, log)
        except TrainingError as error:
            raise TrainingError(
                "the model only works on the images it was trained with (its BatchNorm statistics do not "
                "fit new images): add more training images, or start from the shipped model or ImageNet "
                "weights") from error
        save_model(model, path, read_model_info(path))


def freeze_loaded_batchnorm(model: keras.Model) -> int:
    """Freeze the BatchNorm layers whose moving statistics were loaded (not Keras' initial zeros and ones):
    they then normalise with those statistics while training. Returns how many were frozen."""
    frozen = 0
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            mean, variance = layer.moving_mean.numpy(), layer.moving_variance.numpy()
            if np.any(mean != 0.0) or np.any(variance != 1.0):
                layer.trainable = False
                frozen += 1
    return frozen


def reestimate_batchnorm(model: keras.Model, images: np.ndarray) -> int:
    """Set the moving statistics of every trainable BatchNorm layer to those of ``images`` (one batch in
    training mode with momentum 0; the weights do not change). Returns how many layers were set."""
    layers = [layer for layer in all_layers(model)
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


def all_layers(model: keras.Layer) -> list[keras.Layer]:
    """Every layer of ``model``, nested models included."""
    found: list[keras.Layer] = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        found.extend(all_layers(layer))
    return found
