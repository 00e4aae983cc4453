"""Convert a folded moleseg network to ONNX, for prediction with ONNX Runtime (see :mod:`moleseg.network.compiled`).

The conversion is ``tf2onnx``'s, from the network's prediction function with the fixed input signature
``(None, S, S, 3)`` float32 (batch size free). Keras' ``Normalization`` layer keeps its mean and variance as
constant tensors captured by the traced function, which ``tf2onnx`` (and Keras' own
``export(format="onnx")``, built on it) turns into extra graph *inputs*; :func:`onnx_bytes` makes every
such captured constant an initializer again, so the ONNX network has one input, the images.
"""

from __future__ import annotations

import numpy as np

#: ONNX operator set of the converted networks (ONNX Runtime 1.17 and later run it).
ONNX_OPSET: int = 17
#: Largest absolute difference allowed between ONNX Runtime's and TensorFlow's probabilities (0..1 each)
#: for a converted network to be used ("match TF within 1e-4").
ONNX_TOLERANCE: float = 1e-4
#: Name of the converted network's input.
INPUT_NAME: str = "images"


def onnx_bytes(model, input_shape: tuple[int, ...]) -> bytes:
    """The serialised ONNX model of a Keras network, inference mode, input ``(None, *input_shape)`` float32.

    Parameters
    ----------
    model
        A Keras model (moleseg's folded inference model: :func:`moleseg.network.inference.fold_batchnorm`).
    input_shape
        ``(S, S, 3)``: the network's input without the batch axis.

    Raises
    ------
    ImportError
        ``tf2onnx`` or ``onnx`` is not installed.
    Exception
        Whatever ``tf2onnx`` raises for an operation it cannot convert.
    """
    import onnx
    import tensorflow as tf
    import tf2onnx

    signature = [tf.TensorSpec((None, *input_shape), tf.float32, name=INPUT_NAME)]

    @tf.function(input_signature=signature)
    def predict(images):
        return model(images, training=False)

    constants = {internal.name: external.numpy() for external, internal in predict.get_concrete_function().graph.captures
                 if external.dtype != tf.resource}
    proto, _ = tf2onnx.convert.from_function(predict, input_signature=signature, opset=ONNX_OPSET)
    graph = proto.graph
    for graph_input in list(graph.input):
        if graph_input.name in constants:
            graph.initializer.append(onnx.numpy_helper.from_array(constants[graph_input.name], graph_input.name))
            graph.input.remove(graph_input)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def converter_versions() -> dict[str, str]:
    """Versions of the libraries that convert a network and check it: TensorFlow, tf2onnx, ONNX Runtime."""
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    return {"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__, "onnxruntime": onnxruntime.__version__}


def probe_batch(input_shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Two 0..255 float32 images of ``input_shape`` to compare runtimes on: uniform noise, and a dark
    round blob with a soft edge on a light background (a lesion-like picture)."""
    height, width = input_shape[:2]
    noise = np.random.default_rng(seed).uniform(0.0, 255.0, (height, width, input_shape[2]))
    rows, columns = np.mgrid[0:height, 0:width]
    distance = np.hypot((rows - height / 2) / height, (columns - width / 2) / width)
    darkness = np.clip((0.35 - distance) / 0.1, 0.0, 1.0)[..., None]
    blob = 220.0 - darkness * np.array([150.0, 170.0, 180.0])[: input_shape[2]]
    return np.stack([noise, blob]).astype(np.float32)


def largest_difference(first, second) -> float:
    """Largest absolute element-wise difference of two arrays; ``inf`` when either has a NaN or the shapes differ."""
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    if first.shape != second.shape or np.isnan(first).any() or np.isnan(second).any():
        return float("inf")
    return float(np.abs(first - second).max()) if first.size else 0.0
