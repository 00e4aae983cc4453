"""A training feed without ``tf.data``: a :class:`keras.utils.PyDataset` for every Keras backend (JAX).

It reads the same pairs and makes the same targets as :func:`moleseg.network.data.make_dataset`
(:func:`moleseg.network.examples.load_example`, optionally through an
:class:`~moleseg.network.examples.ExampleCache`) and applies the same random augmentation in numpy/OpenCV:
one affine warp (rotation, reflection, translation, scale; :func:`moleseg.network.examples.inverse_affine`)
for the image (bilinear) and the labels (nearest), then colour jitter on the image
(:data:`moleseg.network.examples.COLOUR_JITTER`). It imports no TensorFlow. Each example's
random draws come from a numpy generator seeded with ``(seed, epoch, position)``, so a batch is the same
whichever worker thread makes it. Given the same draws, :func:`warp_pair` and :func:`jitter_colour` agree
with the ``tf.data`` pipeline's ops (tests/test_feed.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import keras
import numpy as np

from moleseg.core.pairing import Pair
from moleseg.network.examples import (COLOUR_JITTER, AugmentConfig, ExampleCache, TargetConfig, apply_hard_cases,
                                      hard_case_rng, inverse_affine, load_example, pair_repeats)

#: :attr:`AugmentConfig.fill_mode` as OpenCV border modes (TensorFlow's "reflect" repeats the edge pixel).
BORDER_MODES: dict[str, int] = {"reflect": cv2.BORDER_REFLECT, "constant": cv2.BORDER_CONSTANT,
                                "nearest": cv2.BORDER_REPLICATE, "wrap": cv2.BORDER_WRAP}


@dataclass(frozen=True)
class AffineDraw:
    """One example's geometric augmentation: angle in radians, zoom factor (> 0), flips (±1), shifts in px."""

    angle: float = 0.0
    scale: float = 1.0
    flip_x: float = 1.0
    flip_y: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0

    @classmethod
    def draw(cls, augment: AugmentConfig, rng: np.random.Generator) -> "AffineDraw":
        """Random parameters in the ranges of ``augment`` (a disabled augmentation keeps its identity value).
        Six numbers are always drawn, so enabling one augmentation does not change another's draws."""
        uniform = rng.uniform(0.0, 1.0, 6)
        limit = math.radians(augment.rotation_deg)
        return cls(angle=(2 * uniform[0] - 1) * limit,
                   scale=1.0 + (2 * uniform[1] - 1) * augment.scale_range,
                   flip_x=-1.0 if augment.reflection and uniform[2] < 0.5 else 1.0,
                   flip_y=-1.0 if augment.reflection and uniform[3] < 0.5 else 1.0,
                   shift_x=(2 * uniform[4] - 1) * augment.translation_px,
                   shift_y=(2 * uniform[5] - 1) * augment.translation_px)

    def inverse_map(self, size: int) -> np.ndarray:
        """The output->input map as OpenCV's ``(2, 3)`` matrix for a ``size`` px square."""
        values = inverse_affine(size, math.cos(self.angle), math.sin(self.angle), self.scale, self.flip_x,
                                self.flip_y, self.shift_x, self.shift_y)
        return np.asarray(values, dtype=np.float64).reshape(2, 3)


@dataclass(frozen=True)
class ColourDraw:
    """One example's colour jitter: brightness delta (of the 0..1 range), contrast and saturation factors,
    hue delta (fraction of the hue circle)."""

    brightness: float = 0.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0

    @classmethod
    def draw(cls, strength: float, rng: np.random.Generator) -> "ColourDraw":
        """Random parameters at ``strength`` 0..1 (see :data:`moleseg.network.examples.COLOUR_JITTER`)."""
        uniform = 2 * rng.uniform(0.0, 1.0, 4) - 1
        return cls(brightness=uniform[0] * COLOUR_JITTER["brightness"] * strength,
                   contrast=1.0 + uniform[1] * COLOUR_JITTER["contrast"] * strength,
                   saturation=1.0 + uniform[2] * COLOUR_JITTER["saturation"] * strength,
                   hue=uniform[3] * COLOUR_JITTER["hue"] * strength)


def warp_pair(image: np.ndarray, labels: np.ndarray, draw: AffineDraw, fill_mode: str = "reflect"
              ) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``image`` ((S, S, 3), any dtype; returned float32 0..255, bilinear) and ``labels`` ((S, S) uint8,
    nearest) by the same affine transform ``draw``; ``fill_mode`` is one of :data:`BORDER_MODES`.

    Matches TensorFlow's ``ImageProjectiveTransformV3`` to float round-off for "reflect" (the default),
    "constant" and "nearest"; with "wrap" OpenCV interpolates across the seam where TensorFlow clamps, so
    pixels sampled within 1 px of the wrapped edge differ."""
    if fill_mode not in BORDER_MODES:
        raise ValueError(f"unknown fill mode {fill_mode!r}; choose from {', '.join(BORDER_MODES)}")
    size = image.shape[0]
    matrix = draw.inverse_map(size)
    border = BORDER_MODES[fill_mode]
    warped_image = cv2.warpAffine(image.astype(np.float32), matrix, (image.shape[1], size),
                                  flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=border, borderValue=0)
    warped_labels = cv2.warpAffine(np.ascontiguousarray(labels, dtype=np.uint8), matrix, (labels.shape[1], size),
                                   flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=border, borderValue=0)
    return warped_image, warped_labels


def jitter_colour(image: np.ndarray, draw: ColourDraw) -> np.ndarray:
    """Brightness, contrast, saturation and hue changes of an RGB float32 image in 0..255 (in that order,
    as ``tf.image.adjust_*``), clipped to 0..255."""
    unit = image.astype(np.float32) / 255.0 + np.float32(draw.brightness)
    mean = unit.mean(axis=(0, 1), keepdims=True)
    unit = (unit - mean) * np.float32(draw.contrast) + mean
    hsv = cv2.cvtColor(unit, cv2.COLOR_RGB2HSV)  # float input: H in degrees 0..360, S and V unscaled
    hsv[..., 1] = np.clip(hsv[..., 1] * np.float32(draw.saturation), 0.0, 1.0)
    unit = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    hsv = cv2.cvtColor(unit, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = np.mod(hsv[..., 0] + np.float32(draw.hue * 360.0), 360.0)
    unit = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return np.clip(unit, 0.0, 1.0) * np.float32(255.0)


class PairFeed(keras.utils.PyDataset):
    """Batches of ``(images float32 (B, S, S, 3) in 0..255, one-hot labels float32 (B, S, S, C))``, the
    backend-neutral twin of :func:`moleseg.network.data.make_dataset` (same arguments, same meaning).

    With ``shuffle`` the order changes every epoch (seeded by ``(seed, epoch)``); every example of every
    epoch draws its crop and augmentation from ``numpy.random.default_rng((seed, epoch, position))``.
    ``workers`` threads make batches ahead of the training (OpenCV releases the GIL).
    """

    def __init__(self, pairs: Sequence[Pair], targets: TargetConfig, *, batch_size: int,
                 augment: AugmentConfig | None = None, shuffle: bool = False, seed: int = 0,
                 cache: ExampleCache | None = None, drop_remainder: bool = False,
                 crops_per_image: int | Sequence[int] = 1, workers: int = 1, max_queue_size: int = 10) -> None:
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max_queue_size)
        counts = pair_repeats(pairs, crops_per_image)
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        self.pairs = list(pairs)
        self.targets = targets
        self.batch_size = batch_size
        self.augment = augment if augment is not None and augment.enabled else None
        self.shuffle = shuffle
        self.seed = seed
        self.cache = cache
        self.drop_remainder = drop_remainder
        self.entries = np.repeat(np.arange(len(pairs)), counts)
        if drop_remainder and len(self.entries) < batch_size:
            raise ValueError(f"{len(self.entries)} examples are fewer than one batch of {batch_size}")
        self.epoch = 0
        self.order = self._order(0)

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.entries))
        return np.random.default_rng((self.seed, epoch)).permutation(len(self.entries))

    def __len__(self) -> int:
        whole, rest = divmod(len(self.entries), self.batch_size)
        return whole if self.drop_remainder or not rest else whole + 1

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order(self.epoch)

    def example(self, position: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``position``-th example of the (unshuffled) entries in ``epoch``: ``(image float32 (S, S, 3)
        0..255, labels uint8 (S, S))``, cropped and augmented."""
        pair = self.pairs[int(self.entries[position])]
        image, labels = load_example(pair, self.targets, self.cache)
        rng = np.random.default_rng((self.seed, epoch, int(position)))
        size = self.targets.input_size
        if self.targets.fit == "crop":
            top = int(rng.integers(0, image.shape[0] - size + 1))
            left = int(rng.integers(0, image.shape[1] - size + 1))
            image, labels = image[top:top + size, left:left + size], labels[top:top + size, left:left + size]
        image = image.astype(np.float32)
        if self.augment is not None:
            augment = self.augment
            if augment.hard_cases:
                image, labels = apply_hard_cases(image, labels, augment, self.targets,
                                                 hard_case_rng(np.array([self.seed, epoch, int(position)])))
            if augment.rotation_deg or augment.reflection or augment.translation_px or augment.scale_range:
                image, labels = warp_pair(image, labels, AffineDraw.draw(augment, rng), augment.fill_mode)
            if augment.colour:
                image = jitter_colour(image, ColourDraw.draw(augment.colour, rng))
        return image, labels

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        positions = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        examples = [self.example(int(position), self.epoch) for position in positions]
        images = np.stack([image for image, _ in examples])
        labels = np.stack([labels for _, labels in examples])
        one_hot = np.eye(self.targets.n_classes, dtype=np.float32)[labels]
        return images, one_hot
