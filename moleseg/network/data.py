"""The article's "datastore": a lazy ``tf.data`` pipeline of image/label pairs with affine augmentation.

Files are read one at a time as the pipeline needs them (memory stays flat in the dataset size), each
prepared by :func:`moleseg.network.examples.load_example` (optionally through its on-disk cache), then
augmented in TensorFlow with the same random affine transform for the image (bilinear) and the labels
(nearest). The settings and everything else that needs no TensorFlow live in :mod:`moleseg.network.examples`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import tensorflow as tf

from moleseg.core.pairing import Pair
from moleseg.network.examples import (COLOUR_JITTER, AugmentConfig, ExampleCache, TargetConfig, apply_hard_cases,
                                      hard_case_rng, inverse_affine, load_example, pair_repeats)


def _affine_matrix(size: int, augment: AugmentConfig, seed: tf.Tensor) -> tf.Tensor:
    """Random output->input projective transform (8 numbers) for ImageProjectiveTransformV3."""
    seeds = tf.random.experimental.stateless_split(seed, 6)
    angle = tf.constant(0.0)
    if augment.rotation_deg:
        limit = math.radians(augment.rotation_deg)
        angle = tf.random.stateless_uniform([], seeds[0], -limit, limit)
    scale = tf.constant(1.0)
    if augment.scale_range:
        scale = tf.random.stateless_uniform([], seeds[1], 1.0 - augment.scale_range, 1.0 + augment.scale_range)
    flip_x = tf.constant(1.0)
    flip_y = tf.constant(1.0)
    if augment.reflection:
        flip_x = tf.where(tf.random.stateless_uniform([], seeds[2]) < 0.5, -1.0, 1.0)
        flip_y = tf.where(tf.random.stateless_uniform([], seeds[3]) < 0.5, -1.0, 1.0)
    shift_x = tf.constant(0.0)
    shift_y = tf.constant(0.0)
    if augment.translation_px:
        shift_x = tf.random.stateless_uniform([], seeds[4], -augment.translation_px, augment.translation_px)
        shift_y = tf.random.stateless_uniform([], seeds[5], -augment.translation_px, augment.translation_px)
    return tf.stack([*inverse_affine(size, tf.cos(angle), tf.sin(angle), scale, flip_x, flip_y, shift_x, shift_y),
                     0.0, 0.0])


def warp(image: tf.Tensor, transform: tf.Tensor, *, interpolation: str, fill_mode: str) -> tf.Tensor:
    """Apply an 8-number projective transform to a ``(H, W, C)`` tensor (float32)."""
    shape = tf.shape(image)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform[None], output_shape=shape[:2], fill_value=0.0,
        interpolation=interpolation.upper(), fill_mode=fill_mode.upper(),
    )[0]


def augment_example(image: tf.Tensor, labels: tf.Tensor, augment: AugmentConfig, seed: tf.Tensor,
                    targets: TargetConfig | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Augment one example: the hard cases (:func:`moleseg.core.hardcases.hard_cases`, numpy, when
    enabled; ``targets`` says how a zoom makes labels again and, with colour constancy, the picture is
    corrected again after them), then the same affine warp for ``image``
    (float32 (S, S, 3), bilinear) and ``labels`` (int (S, S), nearest), then colour jitter on the image only."""
    size = image.shape[0]
    image = tf.cast(image, tf.float32)
    if augment.hard_cases:
        targets = targets or TargetConfig(input_size=size)

        def apply(image_np: np.ndarray, labels_np: np.ndarray, seed_np: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return apply_hard_cases(image_np, labels_np.astype(np.uint8), augment, targets, hard_case_rng(seed_np))

        label_dtype = labels.dtype
        image, labels = tf.numpy_function(apply, [image, tf.cast(labels, tf.uint8), seed], [tf.float32, tf.uint8],
                                          stateful=False)
        image.set_shape((size, size, 3))
        labels = tf.cast(tf.ensure_shape(labels, (size, size)), label_dtype)
    if augment.rotation_deg or augment.reflection or augment.translation_px or augment.scale_range:
        transform = _affine_matrix(size, augment, seed)
        image = warp(image, transform, interpolation="bilinear", fill_mode=augment.fill_mode)
        warped = warp(tf.cast(labels[..., None], tf.float32), transform, interpolation="nearest",
                      fill_mode=augment.fill_mode)
        labels = tf.cast(tf.round(warped[..., 0]), labels.dtype)
    if augment.colour:
        strength = augment.colour
        seeds = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed, 7), 4)
        image = image / 255.0
        contrast, saturation = COLOUR_JITTER["contrast"] * strength, COLOUR_JITTER["saturation"] * strength
        image = tf.image.stateless_random_brightness(image, COLOUR_JITTER["brightness"] * strength, seeds[0])
        image = tf.image.stateless_random_contrast(image, 1 - contrast, 1 + contrast, seeds[1])
        image = tf.image.stateless_random_saturation(image, 1 - saturation, 1 + saturation, seeds[2])
        image = tf.image.stateless_random_hue(image, COLOUR_JITTER["hue"] * strength, seeds[3])
        image = tf.clip_by_value(image, 0.0, 1.0) * 255.0
    return image, labels


def make_dataset(pairs: Sequence[Pair], targets: TargetConfig, *, batch_size: int,
                 augment: AugmentConfig | None = None, shuffle: bool = False, seed: int = 0,
                 cache: ExampleCache | None = None, drop_remainder: bool = False,
                 crops_per_image: int | Sequence[int] = 1) -> tf.data.Dataset:
    """A batched dataset of ``(images float32 (B, S, S, 3) in 0..255, one-hot labels float32 (B, S, S, C))``.

    Files are read lazily in parallel (``num_parallel_calls=AUTOTUNE``) and prefetched, in the order of
    the (seeded) shuffle whatever the load, so a training is repeatable on one machine. With
    ``shuffle`` the order changes every epoch (seeded); augmentation draws a fresh transform per
    example and epoch from ``seed``. ``crops_per_image`` is one count for every pair or one per pair
    (see :func:`crop_counts`); each occurrence of a pair in an epoch is a fresh random crop.
    """
    counts = pair_repeats(pairs, crops_per_image)
    paths = [(str(p.image), str(p.mask)) for p in pairs]
    by_index = list(pairs)
    size = targets.input_size

    def load(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return load_example(by_index[int(index)], targets, cache)

    def load_tf(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image, labels = tf.numpy_function(load, [index], [tf.uint8, tf.uint8], stateful=False)
        if targets.fit == "crop":
            image.set_shape((None, None, 3))
            labels.set_shape((None, None))
            crop_seed = tf.stack([index, tf.constant(seed, tf.int64)])
            if shuffle:
                crop_seed = crop_seed + tf.random.uniform([2], 0, 2**31 - 1, dtype=tf.int64)
            stacked = tf.concat([image, labels[..., None]], axis=-1)
            stacked = tf.image.stateless_random_crop(stacked, (size, size, 4), crop_seed)
            image, labels = stacked[..., :3], stacked[..., 3]
        image.set_shape((size, size, 3))
        labels.set_shape((size, size))
        return image, labels

    dataset = tf.data.Dataset.from_tensor_slices(np.repeat(np.arange(len(paths), dtype=np.int64), counts))
    if shuffle:
        dataset = dataset.shuffle(sum(counts), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(load_tf, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if augment is not None and augment.enabled:
        counter = tf.data.Dataset.random(seed=seed).map(lambda x: tf.stack([x, x // 7]))
        dataset = tf.data.Dataset.zip((dataset, counter)).map(
            lambda example, example_seed: augment_example(example[0], example[1], augment, example_seed, targets),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    def finish(image: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.cast(image, tf.float32), tf.one_hot(tf.cast(labels, tf.int32), targets.n_classes)

    dataset = dataset.map(finish, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
