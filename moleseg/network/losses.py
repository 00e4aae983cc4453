"""Pixel-classification losses: weighted cross-entropy (the article's), Dice, focal, Dice + cross-entropy,
Lovász-softmax (a surrogate of the per-image Jaccard index, Berman et al., CVPR 2018) alone or + cross-entropy.

All take one-hot targets ``(B, H, W, C)`` and softmax probabilities of the same shape, and are
registered Keras objects so a compiled model (with its optimizer state) saves and resumes.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from moleseg.core import options

_EPSILON = 1e-6


@keras.saving.register_keras_serializable(package="moleseg")
class SegmentationLoss(keras.losses.Loss):
    """One loss object for every kind, so that saving and resuming need a single registered class.

    Parameters
    ----------
    kind
        ``weighted_ce`` (cross-entropy weighted per class, the article's), ``ce``, ``dice`` (soft Dice
        over the classes present), ``focal`` (gamma 2, class-weighted), ``dice_ce`` (sum of the two),
        ``lovasz`` (Lovász-softmax: the convex extension of 1 - Jaccard per class present, averaged per
        image; 0 for a perfect and 1 for an entirely wrong one-hot prediction), ``lovasz_ce`` (Lovász +
        cross-entropy, weighted when class weights are given).
    class_weights
        Weight per class (e.g. inverse frequency); ``None`` means 1 for every class.
    """

    def __init__(self, kind: str = "weighted_ce", class_weights: Sequence[float] | None = None,
                 name: str = "segmentation_loss", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        if kind not in options.LOSSES:
            raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(options.LOSSES)}")
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

    def _lovasz(self, y_true, y_pred):
        # per image and class: pixel errors |target - probability| sorted in decreasing order, dotted with
        # the gradient of the Lovász extension of the Jaccard loss at that order (Berman et al., Alg. 1)
        n_classes = y_true.shape[-1]
        n_pixels = y_true.shape[1] * y_true.shape[2]
        target = ops.reshape(ops.transpose(y_true, (0, 3, 1, 2)), (-1, n_classes, n_pixels))
        errors = ops.abs(target - ops.reshape(ops.transpose(y_pred, (0, 3, 1, 2)), (-1, n_classes, n_pixels)))
        errors_sorted, order = ops.top_k(errors, k=n_pixels, sorted=True)
        target_sorted = ops.take_along_axis(target, order, axis=-1)
        total = ops.sum(target_sorted, axis=-1, keepdims=True)
        intersection = total - ops.cumsum(target_sorted, axis=-1)
        union = total + ops.cumsum(1.0 - target_sorted, axis=-1)
        jaccard = 1.0 - intersection / union
        gradient = ops.concatenate([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], axis=-1)
        per_class = ops.sum(errors_sorted * ops.stop_gradient(gradient), axis=-1)
        present = ops.cast(total[..., 0] > 0, per_class.dtype)
        return ops.sum(per_class * present, axis=-1) / ops.maximum(ops.sum(present, axis=-1), 1.0)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        if self.kind == "weighted_ce":
            return self._cross_entropy(y_true, y_pred, weighted=True)
        if self.kind == "ce":
            return self._cross_entropy(y_true, y_pred, weighted=False)
        if self.kind == "focal":
            return self._focal(y_true, y_pred)
        region = self._lovasz if self.kind.startswith("lovasz") else self._dice
        if not self.kind.endswith("_ce"):
            return region(y_true, y_pred)
        return region(y_true, y_pred) + self._cross_entropy(y_true, y_pred, weighted=self.class_weights is not None)

    def get_config(self) -> dict:
        return {**super().get_config(), "kind": self.kind, "class_weights": self.class_weights}
