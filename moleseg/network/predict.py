"""A loaded Keras network as a :class:`moleseg.engine.segmenter.Segmenter`: any image size in, probabilities out.

Each image is resized to the network's square input, predicted in batches (optionally with flips as
test-time augmentation, averaged), and the probabilities are resized back to the image's own size.

Importing this module does not import TensorFlow: a network whose converted ONNX file is in the
per-machine cache (:mod:`moleseg.network.compiled`) is predicted with ONNX Runtime, and TensorFlow is only
imported when the Keras model itself is needed (first prediction on a machine, training, the TensorFlow
runtime).
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from moleseg.core.cleanup import CleanupSettings
from moleseg.core.config import class_names
from moleseg.core.modelinfo import (ModelInfo, check_keras_file, described_network, file_info, network_contradiction,
                                   read_model_info)
from moleseg.core.resize import network_image, resize_probabilities

if TYPE_CHECKING:  # Keras (and TensorFlow) are imported only when a network must be built or traced
    import keras


INFERENCE_MODES: tuple[str, ...] = ("resize", "tiles")
#: Overlap of neighbouring tiles, as a fraction of the tile side.
TILE_OVERLAP = 0.25


def tile_starts(length: int, tile: int, overlap: float = TILE_OVERLAP) -> list[int]:
    """Start offsets (px) of tiles of side ``tile`` covering ``length`` px with at least ``overlap``."""
    if length <= tile:
        return [0]
    stride = max(1, int(tile * (1.0 - overlap)))
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def blend_window(tile: int) -> np.ndarray:
    """``(tile, tile)`` weights, highest at the centre, positive at the edges (for blending tiles)."""
    ramp = np.minimum(np.arange(tile) + 1, np.arange(tile)[::-1] + 1).astype(np.float32)
    ramp = np.minimum(ramp / (tile / 4.0), 1.0)
    return np.outer(ramp, ramp) + 1e-3


class KerasSegmenter:
    """A moleseg network with its metadata.

    Parameters
    ----------
    model
        Keras model mapping ``(B, S, S, 3)`` 0..255 RGB to ``(B, S, S, C)`` probabilities.
    info
        The model's ``moleseg.json`` (at least ``n_classes`` and ``input_size``).
    test_time_augmentation
        Average the predictions of the image and its left-right, up-down flips (3x the cost).
    batch_size
        Images per network call.
    source
        The ``.keras`` file the model comes from (the per-machine inference cache is keyed on it).
    predict_function
        An already traced prediction function to use instead of building one
        (:func:`prediction_function` of the live model, for training's validation passes).

    Two ways to fit an image to the network, chosen by ``info["inference"]``:

    ``"resize"`` (default, dermoscopy)
        The whole image is resized to the square input: the network sees the whole lesion.
    ``"tiles"`` (cells)
        The image is cut at its own scale (times ``info["tile_scale"]``, the scale the model was trained at)
        into overlapping squares of the input size (reflect-padded when smaller), predicted in batches and
        blended with a smooth window, and the probabilities resized back to the image's size: small
        objects such as nuclei keep their size whatever the image size.
    """

    def __init__(self, model: keras.Model | None, info: dict[str, Any], *, test_time_augmentation: bool | None = None,
                 batch_size: int = 8, source: str | Path | None = None,
                 predict_function: Callable[[np.ndarray], Any] | None = None) -> None:
        if model is None and source is None:
            raise ValueError("a KerasSegmenter needs a model or the .keras file it comes from")
        self._model = model
        self.source = None if source is None else Path(source)
        self.info = dict(info)
        record = ModelInfo.from_dict(info)
        self.n_classes = record.n_classes or int(self.model.output_shape[-1])
        self.class_names = record.class_names or class_names(self.n_classes)
        self.input_size = record.input_size or int(self.model.input_shape[1])
        self.info.setdefault("input_size", self.input_size)
        self.name = record.name
        self.cleanup_defaults = CleanupSettings.from_dict(record.cleanup)
        if test_time_augmentation is None:
            test_time_augmentation = record.test_time_augmentation
        self.test_time_augmentation = test_time_augmentation
        self.batch_size = batch_size
        self.inference = record.inference
        self.tile_scale = float(record.tile_scale)  # both checked by ModelInfo.from_dict (ModelFileError)
        self.colour_constancy = record.colour_constancy
        if self.inference not in INFERENCE_MODES:
            raise ValueError(f"unknown inference mode {self.inference!r}; choose one of {', '.join(INFERENCE_MODES)}")
        self._predict_fn = predict_function
        #: What went wrong with the per-machine inference cache while predicting (each also a UserWarning),
        #: for a caller to show: a damaged or changed entry (rebuilt), a runtime error (TensorFlow used).
        self.cache_notes: list[str] = []
        #: :func:`moleseg.network.compiled.network_content` of the bytes the model was loaded from :attr:`source`,
        #: the key its cache entry is written under; None when it was not loaded from it here or the file
        #: changed during the load (the network is then not cached).
        self._network_content: str | None = None

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> "KerasSegmenter":
        """The segmenter of a moleseg ``.keras`` file. When its inference graph is cached already
        (:func:`moleseg.network.compiled.any_cached`) and ``moleseg.json`` gives the classes and input size,
        the Keras model is only loaded if :attr:`model` is asked for; otherwise it is loaded now, so a
        damaged file is reported here (:class:`moleseg.core.modelinfo.ModelFileError`)."""
        from moleseg.network.compiled import any_cached

        info = read_model_info(check_keras_file(path))
        record = file_info(path, info)  # copies it
        network = described_network(info, path)  # the network built from it, or found in the cache under it
        network_contradiction(path, record, network.input_size, network.n_classes)
        model, content = None, None
        if not (record.n_classes and record.input_size and any_cached(path)):
            model, content = _load_network(path)
        info.setdefault("name", Path(path).stem)
        info["path"] = str(path)
        segmenter = cls(model, info, source=path, **kwargs)
        segmenter._network_content = content
        return segmenter

    def with_info(self, info: dict[str, Any]) -> "KerasSegmenter":
        """This network and its prediction function with the metadata ``info`` instead (another decision:
        lesion threshold, flips, ...; the same classes and input size)."""
        return KerasSegmenter(self._model, {**self.info, **info}, batch_size=self.batch_size, source=self.source,
                              predict_function=self.inference_function())

    @property
    def model(self) -> keras.Model:
        """The Keras network (loaded from :attr:`source` on first use when the segmenter was made without it)."""
        if self._model is None:
            self._model, self._network_content = _load_network(self.source)
        return self._model

    def inference_function(self) -> Callable[[np.ndarray], Any]:
        """The compiled prediction function, ``(B, S, S, 3)`` float32 -> ``(B, S, S, C)`` probabilities.

        For a segmenter read from a file, in this order: the ONNX file shipped beside a shipped model
        (:func:`moleseg.network.compiled.shipped_onnx`, its SHA-256 checked; no TensorFlow, no conversion);
        the network's ONNX file from the per-machine cache
        of :mod:`moleseg.network.compiled`, run by ONNX Runtime (the default runtime; no TensorFlow); its
        cached TensorFlow SavedModel; else the Keras model with BatchNormalization folded into the
        convolutions (:func:`moleseg.network.inference.fold_batchnorm`, same outputs within 1e-5) in a
        ``tf.function`` with a fixed input signature ``(None, S, S, 3)``, so no batch size traces it again
        -- which is then converted to ONNX (used from now on if it matches TensorFlow) or saved as a
        SavedModel for the next process. A damaged cache entry, or one whose files do not match their
        recorded SHA-256 (:func:`moleseg.network.compiled.entry_problem`), is rebuilt with one warning
        (:attr:`cache_notes`); a cache that cannot be written only costs the next process its start-up time."""
        if self._predict_fn is None:
            self._predict_fn = self._cached_function() or self._built_function()
        return self._predict_fn

    def runtime(self) -> str:
        """The runtime that predicts the network: ``"onnxruntime"`` or ``"tensorflow"`` (makes the prediction
        function first: :meth:`inference_function`)."""
        return "onnxruntime" if hasattr(self.inference_function(), "session") else "tensorflow"

    def _cached_function(self) -> Callable[[np.ndarray], Any] | None:
        """The prediction function from the per-machine cache, or None."""
        if self.source is None:
            return None
        from moleseg.network import compiled

        shipped, problem = compiled.shipped_onnx(self.source)
        if problem is not None:
            self._note(f"shipped ONNX file of {self.source.name} not used: {problem}; using the per-machine "
                       "inference cache instead")
        elif shipped is not None:
            try:
                return compiled.onnx_function(shipped)
            except Exception as error:  # noqa: BLE001 -- a damaged shipped file: the per-machine cache instead
                self._note(f"shipped ONNX file {shipped} unreadable ({type(error).__name__}); using the "
                           "per-machine inference cache instead")
        onnx_entry = compiled.cached_onnx(self.source)
        if onnx_entry is not None and compiled.onnx_usable(onnx_entry):
            entry, load = onnx_entry, compiled.load_onnx_function
        else:  # the SavedModel, unless the network is about to be converted (no ONNX entry yet)
            entry, load = compiled.cached_entry(self.source), compiled.load_cached_function
            if entry is None or (onnx_entry is None and self._convert_to_onnx()):
                return None
        problem = compiled.entry_problem(entry)
        if problem is not None:
            self._note(f"cached inference graph {entry} not used: {problem}; rebuilding it from the model file")
            compiled.discard(entry)
            return None
        try:
            return load(entry)
        except Exception as error:  # noqa: BLE001 -- a damaged entry: rebuild it from the .keras file
            self._note(f"cached inference graph {entry} unreadable ({type(error).__name__}); "
                       "rebuilding it from the model file")
            compiled.discard(entry)
            return None

    def _note(self, text: str) -> None:
        """Keep ``text`` in :attr:`cache_notes` and warn with it."""
        self.cache_notes.append(text)
        warnings.warn(text, stacklevel=4)

    def _convert_to_onnx(self) -> bool:
        """True when this network should be converted to ONNX now (wanted, convertible, read from a file)."""
        from moleseg.network import compiled

        return self.source is not None and compiled.onnx_wanted() and compiled.onnx_convertible()

    def _built_function(self) -> Callable[[np.ndarray], Any]:
        """The folded Keras model's traced prediction function, cached for later processes (ONNX or
        SavedModel); the ONNX Runtime function when the conversion matched TensorFlow."""
        return self._cache(*self._folded_function())

    def _folded_function(self) -> tuple[keras.Model, Callable[[np.ndarray], Any]]:
        """The Keras model with BatchNormalization folded, and its traced prediction function (TensorFlow)."""
        from moleseg.network.inference import fold_batchnorm

        model = fold_batchnorm(self.model)
        return model, prediction_function(model)

    def _cache(self, model: keras.Model, function: Callable[[np.ndarray], Any]) -> Callable[[np.ndarray], Any]:
        """Write the cache entry of the folded ``model`` whose TensorFlow prediction function is ``function``
        (ONNX, else SavedModel); the ONNX Runtime function when the conversion matched TensorFlow, else
        ``function``."""
        from moleseg.network import compiled

        input_shape = tuple(self.model.input_shape[1:])
        content = self._network_content
        if self.source is None or content is None or not compiled.cache_enabled():
            return function
        try:
            if self._convert_to_onnx():
                entry = compiled.save_onnx(self.source, model, input_shape, function, content=content)
                if compiled.onnx_usable(entry):
                    return compiled.load_onnx_function(entry)
                warnings.warn(f"{self.source.name}: predicting with TensorFlow, the ONNX conversion is not used "
                              f"({(entry / compiled.UNUSABLE_FILE).read_text().strip()})", stacklevel=3)
            compiled.save_cached_function(self.source, model, input_shape, content=content)
        except Exception as error:  # noqa: BLE001 -- a cache that cannot be written only costs time
            warnings.warn(f"inference cache not written ({type(error).__name__}: {error}); the next "
                          "start will be slower", stacklevel=3)
        return function

    def _network(self, batch: np.ndarray) -> np.ndarray:
        """The network's probabilities for a batch. A function loaded from a cache entry that fails (ONNX
        Runtime refusing another network's file, ...) or answers with another shape than ``(B, S, S, C)`` is
        replaced by TensorFlow's, which predicts this batch and the next ones, and the entry is rebuilt for the
        next process (one warning)."""
        batch = np.asarray(batch, np.float32)
        function = self.inference_function()
        entry = getattr(function, "entry", None)  # a cache entry, rebuilt when it fails
        loaded = entry or getattr(function, "file", None)  # or the shipped ONNX file, kept
        try:
            probabilities = np.asarray(function(batch))
            expected = (*batch.shape[:3], self.n_classes)
            if loaded is not None and probabilities.shape != expected:
                raise ValueError(f"probabilities of shape {probabilities.shape}, not {expected}")
            return probabilities
        except Exception as error:  # noqa: BLE001 -- a loaded graph is untrusted: fall back to TensorFlow
            if loaded is None:
                raise
            from moleseg.network import compiled

            what = "cached inference graph" if entry is not None else "shipped ONNX file"
            self._note(f"{what} {loaded} failed ({type(error).__name__}); predicting with "
                       "TensorFlow and rebuilding it from the model file")
            if entry is not None:
                compiled.discard(entry)
            model, tensorflow = self._folded_function()
            self._cache(model, tensorflow)
            self._predict_fn = tensorflow
            return np.asarray(tensorflow(batch))

    def predict_network(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for a ``(B, S, S, 3)`` float32 batch at the input size, with optional flips."""
        if not self.test_time_augmentation:
            return self._network(batch)
        # one network call for the image and its two flips: faster on a CPU than three calls
        count = batch.shape[0]
        stacked = self._network(np.concatenate([batch, batch[:, :, ::-1], batch[:, ::-1]]))
        return (stacked[:count] + stacked[count:2 * count][:, :, ::-1] + stacked[2 * count:][:, ::-1]) / 3.0

    def predict_probabilities(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``(H, W, C)`` float32 probabilities at each RGB uint8 image's own size."""
        if self.inference == "tiles":
            return [self._predict_tiled(image) for image in images]
        results: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            batch = np.stack([self.network_input(image) for image in chunk]).astype(np.float32)
            for image, probabilities in zip(chunk, self.predict_network(batch)):
                results.append(resize_probabilities(probabilities, image.shape[0], image.shape[1]))
        return results

    def network_input(self, image: np.ndarray) -> np.ndarray:
        """An RGB uint8 image as the network sees it in ``"resize"`` mode: resized to the input size, then
        colour-corrected as the model was trained (``colour_constancy``)."""
        return network_image(image, self.colour_constancy, input_size=self.input_size)

    def _predict_tiled(self, image: np.ndarray) -> np.ndarray:
        """Probabilities of one image predicted tile by tile at its own scale times :attr:`tile_scale`
        (colour-corrected whole, as the model was trained), resized back to the image's size."""
        seen = network_image(image, self.colour_constancy, scale=self.tile_scale)
        probabilities = self._predict_tiles_at_scale(seen)
        if seen.shape[:2] != image.shape[:2]:
            return resize_probabilities(probabilities, image.shape[0], image.shape[1])
        return probabilities

    def _predict_tiles_at_scale(self, image: np.ndarray) -> np.ndarray:
        """Probabilities of one image predicted tile by tile as it is."""
        size = self.input_size
        height, width = image.shape[:2]
        pad_y, pad_x = max(0, size - height), max(0, size - width)
        padded = np.pad(image, ((0, pad_y), (0, pad_x), (0, 0)), mode="reflect") if pad_y or pad_x else image
        full_h, full_w = padded.shape[:2]
        window = blend_window(size)[..., None]
        total = np.zeros((full_h, full_w, self.n_classes), np.float32)
        weight = np.zeros((full_h, full_w, 1), np.float32)
        corners = [(y, x) for y in tile_starts(full_h, size) for x in tile_starts(full_w, size)]
        for start in range(0, len(corners), self.batch_size):
            chunk = corners[start:start + self.batch_size]
            batch = np.stack([padded[y:y + size, x:x + size] for y, x in chunk]).astype(np.float32)
            for (y, x), probabilities in zip(chunk, self.predict_network(batch)):
                total[y:y + size, x:x + size] += probabilities * window
                weight[y:y + size, x:x + size] += window
        return (total / weight)[:height, :width]


#: The steps :func:`prepare_inference` reports, in order (``progress(done, len(PREPARE_STEPS), text)``).
PREPARE_STEPS: tuple[str, ...] = (
    "checking for a shipped or cached inference form",
    "loading the model (TensorFlow)",
    "folding BatchNormalization and tracing the network",
    "converting to ONNX and checking it against TensorFlow",
)


def prepare_inference(path: str | Path,
                      progress: Callable[[int, int, str], None] | None = None) -> str:
    """Make a ``.keras`` file's inference form now, so that its first prediction starts at once: for a user's
    own model, the ONNX conversion checked against TensorFlow (or the SavedModel) in the per-machine cache;
    nothing for a shipped model (its ONNX file is shipped) or a model converted before. Minutes for a model
    not yet converted: run it in the background (:class:`moleseg.engine.tasks.TaskRegistry` takes this
    function's ``progress`` as its own) and poll the task.

    Parameters
    ----------
    path
        A moleseg ``.keras`` file.
    progress
        ``progress(done, total, text)``: ``done`` of ``total`` (:data:`PREPARE_STEPS`) steps, and the next
        step's words (``"ready"`` at the end).

    Returns
    -------
    str
        The runtime the network will be predicted with: ``"onnxruntime"`` or ``"tensorflow"``.

    Raises
    ------
    moleseg.core.modelinfo.ModelFileError
        The file is missing or not a moleseg model.
    """
    from moleseg.network import compiled

    report = progress or (lambda done, total, text: None)
    total = len(PREPARE_STEPS)
    report(0, total, PREPARE_STEPS[0])
    if compiled.any_cached(path):
        segmenter = KerasSegmenter.from_file(path, test_time_augmentation=False)
    else:
        report(1, total, PREPARE_STEPS[1])
        segmenter = KerasSegmenter.from_file(path, test_time_augmentation=False)
        report(2, total, PREPARE_STEPS[2])
        model, function = segmenter._folded_function()
        report(3, total, PREPARE_STEPS[3])
        segmenter._predict_fn = segmenter._cache(model, function)
    runtime = segmenter.runtime()
    report(total, total, "ready")
    return runtime


def prediction_function(model: keras.Model) -> Callable[[np.ndarray], Any]:
    """``model`` in inference mode as a ``tf.function`` traced once for a fixed ``(None, S, S, 3)`` float32
    signature, so no batch size traces it again. It reads ``model``'s variables, so it follows their
    changes: :meth:`KerasSegmenter.inference_function` gives it a BatchNorm-folded copy (a snapshot), and
    training's validation gives it the live model, traced once for every epoch (a folded copy per epoch
    would cost a fold and a trace each time; pass it as ``KerasSegmenter(..., predict_function=)``)."""
    import tensorflow as tf

    signature = [tf.TensorSpec((None, *tuple(model.input_shape[1:])), tf.float32)]

    @tf.function(input_signature=signature)
    def predict(x):
        return model(x, training=False)

    return predict


def _load_network(path: str | Path) -> tuple[keras.Model, str | None]:
    """The Keras network of the ``.keras`` file ``path`` and the
    :func:`moleseg.network.compiled.network_content` of the bytes it was built from (taken before and after the
    load), or None for the latter when the cache is off or the file changed meanwhile (one warning: its network
    is then not cached, so that no entry is filed under the key of bytes it was not made from).

    Raises
    ------
    ModelFileError
        The file is missing, damaged or not a moleseg model (:func:`moleseg.network.io.load_keras_model`).
    """
    from moleseg.network import compiled
    from moleseg.network.io import load_keras_model

    def content() -> str | None:
        if not compiled.cache_enabled():
            return None
        try:
            return compiled.network_content(path)
        except (OSError, ValueError, zipfile.BadZipFile):  # the load names what is wrong with the file
            return None

    before = content()
    model = load_keras_model(path)
    if before is not None and content() != before:
        warnings.warn(f"{Path(path).name} changed while it was loaded; its network is not cached", stacklevel=3)
        before = None
    return model, before
