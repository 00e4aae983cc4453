"""Pixel-classification losses: weighted cross-entropy (the article's), Dice, focal, Dice + cross-entropy.

All take one-hot targets ``(B, H, W, C)`` and softmax probabilities of the same shape, and are
registered Keras objects so a compiled model (with its optimizer state) saves and resumes.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from moleseg.core import options

LOSSES: tuple[str, ...] = options.LOSSES
_EPSILON = 1e-6


@keras.saving.register_keras_serializable(package="moleseg")
class SegmentationLoss(keras.losses.Loss):
    """One loss object for every kind, so that saving and resuming need a single registered class.

    Parameters
    ----------
    kind
        ``weighted_ce`` (cross-entropy weighted per class, the article's), ``ce``, ``dice`` (soft Dice
        over the classes present), ``focal`` (gamma 2, class-weighted), ``dice_ce`` (sum of the two).
    class_weights
        Weight per class (e.g. inverse frequency); ``None`` means 1 for every class.
    """

    def __init__(self, kind: str = "weighted_ce", class_weights: Sequence[float] | None = None,
                 name: str = "segmentation_loss", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        if kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
        self.kind = kind
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def _weights(self, y_true):
        if self.class_weights is None:
            return ops.ones_like(y_true[..., 0])
        weights = ops.convert_to_tensor(self.class_weights, dtype=y_true.dtype)
        return ops.sum(y_true * weights, axis=-1)

    def _cross_entropy(self, y_true, y_pred, weighted: bool):
        y_pred = ops.clip(y_pred, _EPSILON, 1.0 - _EPSILON)
        per_pixel = -ops.sum(y_true * ops.log(y_pred), axis=-1)
        if weighted:
            per_pixel = per_pixel * self._weights(y_true)
        return ops.mean(per_pixel, axis=(1, 2))

    def _dice(self, y_true, y_pred):
        intersection = ops.sum(y_true * y_pred, axis=(1, 2))
        total = ops.sum(y_true + y_pred, axis=(1, 2))
        dice = (2.0 * intersection + 1.0) / (total + 1.0)
        return 1.0 - ops.mean(dice, axis=-1)

    def _focal(self, y_true, y_pred, gamma: float = 2.0):
        y_pred = ops.clip(y_pred, _EPSILON, 1.0 - _EPSILON)
        focal = -ops.sum(y_true * ops.power(1.0 - y_pred, gamma) * ops.log(y_pred), axis=-1)
        return ops.mean(focal * self._weights(y_true), axis=(1, 2))

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        if self.kind == "weighted_ce":
            return self._cross_entropy(y_true, y_pred, weighted=True)
        if self.kind == "ce":
            return self._cross_entropy(y_true, y_pred, weighted=False)
        if self.kind == "dice":
            return self._dice(y_true, y_pred)
        if self.kind == "focal":
            return self._focal(y_true, y_pred)
        return self._dice(y_true, y_pred) + self._cross_entropy(y_true, y_pred, weighted=self.class_weights is not None)

    def get_config(self) -> dict:
        return {**super().get_config(), "kind": self.kind, "class_weights": self.class_weights}
