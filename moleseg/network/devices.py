"""The Keras backend this process runs, the GPUs it sees, and the precision and seed a training starts with.

Keras picks its backend when first imported: import this module only after ``KERAS_BACKEND`` is set.
"""

from __future__ import annotations

import keras


def keras_backend() -> str:
    """The backend Keras runs in this process: ``"tensorflow"``, ``"jax"`` or ``"torch"``."""
    return keras.backend.backend()


def accelerators(backend: str) -> list[str]:
    """The GPUs the Keras ``backend`` sees (names), empty without one."""
    if backend == "tensorflow":
        import tensorflow as tf

        return [device.name for device in tf.config.list_physical_devices("GPU")]
    try:
        return list(keras.distribution.list_devices("gpu"))
    except RuntimeError:  # JAX: "Unknown backend: 'gpu' requested, but no platforms ... are present"
        return []


def start_training(*, mixed_precision: bool, seed: int) -> None:
    """Set Keras' global precision (``mixed_float16`` when ``mixed_precision``, else ``float32``) and seed
    Python's, numpy's and the backend's random generators with ``seed``."""
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")
    keras.utils.set_random_seed(seed)
