"""The benchmark's prediction and training paths: its image files, one image end to end, a folder through
``moleseg predict``'s pipeline, a cold start in a new process, and training steps with and without the input
pipeline (see :mod:`moleseg.tools.bench`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from moleseg.core.words import count_of
from moleseg.tools.bench_machine import BenchSettings

#: End-to-end stages that are not "around the network": reading the file, the network itself, and encoding the
#: result files (``moleseg predict``'s writer thread encodes them while the next images are predicted; the app
#: encodes them only for a download or a ZIP).
NOT_AROUND_NETWORK: tuple[str, ...] = ("decode", "network", "encode_files")
#: Size of the end-to-end and synthetic images (width, height): a PH2 image.
END_TO_END_SIZE: tuple[int, int] = (765, 574)


def image_files(folder: Path | None, count: int, scratch: Path) -> tuple[list[Path], str]:
    """``count`` image files: the first of ``folder`` (sorted), or synthetic 765 x 574 JPEGs written into
    ``scratch``; and a description of them."""
    from moleseg.core.pairing import list_images

    if folder is not None:
        files = list_images(folder)[:count]
        if not files:
            raise ValueError(f"{folder}: no images found")
        return files, f"{count_of(len(files), 'real image')} from {folder}"
    from moleseg.core.imagewrite import encode_jpeg
    from moleseg.tools.synthetic import random_dermoscopy

    scratch.mkdir(parents=True, exist_ok=True)
    files = []
    for index in range(count):
        path = scratch / f"synthetic_{index:03d}.jpg"
        image, _ = random_dermoscopy((END_TO_END_SIZE[1], END_TO_END_SIZE[0]), seed=index)
        path.write_bytes(encode_jpeg(image, quality=92))
        files.append(path)
    return files, f"{count} synthetic {END_TO_END_SIZE[0]} x {END_TO_END_SIZE[1]} JPEG(s) (no --images given)"


def bench_end_to_end(segmenter: Any, path: Path, settings: BenchSettings) -> dict[str, Any]:
    """Median ms of each stage of one image file's analysis as ``moleseg predict`` runs it, and of their sum
    (repeat by repeat). After the cleanup, what an image needs to be shown, its measurements, its overlay and the
    overlay's JPEG as the Analyse page shows it, is shared by two threads
    (:func:`moleseg.engine.pipeline.measure_and_draw` with ``shown``: the overlay, its JPEG, the border widths'
    two distance transforms, the colours and the model's confidence, which the page and ``moleseg predict``'s table
    show, in one, the other shape measurements in the other, each taking what the other has not started): stage
    ``measure_and_draw``; then stage ``encode_files``: the three PNG files
    ``moleseg predict`` writes (:meth:`moleseg.engine.pipeline.Analysis.files`), encoded in another thread as its
    writer thread encodes them (the app encodes them only for a download or a ZIP). ``parts`` gives the medians of
    parts run
    one after the other in one thread (``measurements``: every measurement, colours and border widths included;
    ``overlay``; ``png_encode``: the overlay's PNG; ``jpeg_encode``: its JPEG as the Analyse page shows it).
    ``network_ms``: the network stage; ``around_network_ms``: every stage but decoding, the network and encoding
    the files (:data:`NOT_AROUND_NETWORK`: resizing in and out, cleanup, measurements and overlay), and
    ``around_network_ratio`` the one over the other (medians over the repeats); ``around_network_stages`` names
    the stages counted.
    ``cpu_stages`` and ``around_network_cpu_ms``: the same stages in CPU ms of the whole process (every thread:
    the drawing thread, OpenCV's and the runtime's), which a busy machine does not inflate as it does wall time.
    The same image is analysed every repeat, so from the warm-up on its colours are remembered
    (:func:`moleseg.core.colour.code_classes`) as in the app's slider; a new image's colours are classified
    once."""
    from concurrent.futures import ThreadPoolExecutor

    from moleseg.core.config import OVERLAY_PNG_COMPRESSION_LEVEL
    from moleseg.core.imageio import read_image
    from moleseg.core.imagewrite import display_jpeg, encode_png
    from moleseg.core.measure import measure_lesion
    from moleseg.core.render import overlay
    from moleseg.core.resize import resize_probabilities
    from moleseg.engine.pipeline import measure_and_draw
    from moleseg.engine.segmenter import clean

    def once(drawer: ThreadPoolExecutor) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
        stages: dict[str, float] = {}
        cpu: dict[str, float] = {}
        clock, cpu_clock = time.perf_counter(), time.process_time()

        def lap(name: str, laps: dict[str, float]) -> None:
            nonlocal clock, cpu_clock
            now, cpu_now = time.perf_counter(), time.process_time()
            laps[name] = 1000.0 * (now - clock)
            if laps is stages:
                cpu[name] = 1000.0 * (cpu_now - cpu_clock)
            clock, cpu_clock = now, cpu_now

        image = read_image(path)
        lap("decode", stages)
        if segmenter.inference == "resize" and not segmenter.test_time_augmentation:
            batch = segmenter.network_input(image)[None].astype(np.float32)
            lap("resize_in", stages)
            small = segmenter.predict_network(batch)[0]
            lap("network", stages)
            probabilities = resize_probabilities(small, image.shape[0], image.shape[1])
            lap("resize_out", stages)
        else:
            probabilities = segmenter.predict_probabilities([image])[0]
            lap("network", stages)
        segmentation = clean(segmenter, probabilities)
        lap("cleanup", stages)
        analysis = measure_and_draw(image, segmentation, segmenter, drawer, shown=True)
        lap("measure_and_draw", stages)
        drawer.submit(analysis.files, path.stem).result()  # in another thread, as moleseg predict's writer
        lap("encode_files", stages)
        parts: dict[str, float] = {}
        if segmentation.lesion.any():
            measure_lesion(segmentation.lesion, border=segmentation.border, image=image)
        lap("measurements", parts)
        picture = overlay(image, segmentation.lesion, segmentation.border)
        lap("overlay", parts)
        encode_png(picture, OVERLAY_PNG_COMPRESSION_LEVEL)
        lap("png_encode", parts)
        display_jpeg(picture)
        lap("jpeg_encode", parts)
        return stages, parts, cpu

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="moleseg-bench-draw") as drawer:
        for _ in range(settings.warmup):
            once(drawer)
        runs = [once(drawer) for _ in range(max(1, settings.repeats))]
    stages = [stage for stage, _, _ in runs]
    parts = [part for _, part, _ in runs]
    cpu = [times for _, _, times in runs]

    def around_network(run: dict[str, float]) -> float:
        return sum(ms for name, ms in run.items() if name not in NOT_AROUND_NETWORK)

    around = [around_network(run) for run in stages]
    network = float(np.median([run["network"] for run in stages]))
    return {"ms": float(np.median([sum(run.values()) for run in stages])),
            "network_ms": network, "around_network_ms": float(np.median(around)),
            "around_network_cpu_ms": float(np.median([around_network(run) for run in cpu])),
            "cpu_stages": {name: float(np.median([run[name] for run in cpu])) for name in cpu[0]},
            "around_network_stages": [name for name in stages[0] if name not in NOT_AROUND_NETWORK],
            "around_network_ratio": float(np.median(around)) / network if network > 0 else float("nan"),
            "stages": {name: float(np.median([run[name] for run in stages])) for name in stages[0]},
            "parts": {name: float(np.median([run[name] for run in parts])) for name in parts[0]},
            "image": str(path), "size": list(END_TO_END_SIZE)}


def bench_predict(segmenter: Any, files: list[Path], scratch: Path) -> dict[str, Any]:
    """Images per second of :func:`moleseg.engine.predictfiles.predict_files` (one untimed warm-up image)."""
    from moleseg.engine.predictfiles import predict_files

    predict_files(segmenter, files[:1], scratch / "warmup")
    started = time.perf_counter()
    outcome = predict_files(segmenter, files, scratch / "predict")
    seconds = time.perf_counter() - started
    if outcome.failures or outcome.stopped:
        raise RuntimeError(f"predict failed on the benchmark images: {outcome.failures or outcome.stopped}")
    return {"images": len(files), "seconds": seconds, "images_per_s": len(files) / seconds}


def cold_start_seconds(model: str, image: Path, scratch: Path) -> float:
    """Wall seconds of ``python -m moleseg.cli predict --model MODEL IMAGE`` in a new process."""
    package_root = str(Path(__file__).resolve().parents[2])
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "moleseg.cli", "predict", "--quiet", "--model", model, "--out",
               str(scratch / "cold"), str(image)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"cold start failed: {result.stderr.strip()[-300:]}")
    return seconds


def runtime_in_use(segmenter: Any) -> str:
    """The runtime ``moleseg predict`` ran the benchmarked network with: ``onnxruntime`` or ``tensorflow``."""
    return segmenter.runtime()


def cached_inference_graph(model: str) -> bool:
    """True when ``model`` is a ``.keras`` file whose inference graph is in the per-machine cache
    (:mod:`moleseg.network.compiled`): its cold start then skips rebuilding the Keras model."""
    from moleseg.network.compiled import any_cached

    return Path(model).suffix == ".keras" and Path(model).is_file() and any_cached(model)


def training_pairs(files: list[Path], scratch: Path) -> list[Any]:
    """The benchmark's image files as training pairs, each with an elliptical lesion mask (PNG) written to
    ``scratch``: the input pipeline's cost does not depend on where the lesion is."""
    import cv2

    from moleseg.core.imageio import read_image
    from moleseg.core.imagewrite import write_png
    from moleseg.core.pairing import Pair

    scratch.mkdir(parents=True, exist_ok=True)
    pairs = []
    for path in files:
        height, width = read_image(path).shape[:2]
        mask = np.zeros((height, width), np.uint8)
        cv2.ellipse(mask, (width // 2, height // 2), (width // 4, height // 3), 20.0, 0.0, 360.0, 255, -1)
        write_png(scratch / f"{path.stem}.png", mask)
        pairs.append(Pair(image=path, mask=scratch / f"{path.stem}.png", rule="same name"))
    return pairs


def bench_training(info: dict[str, Any], settings: BenchSettings, pairs: list[Any] | None = None) -> dict[str, Any]:
    """Training images/s of the model's architecture on a synthetic in-memory batch (median step after
    warm-up), and with ``pairs``: the input pipeline alone (``make_dataset`` as training builds it: lazy
    decoding, the augmentations the model records, at the default ranges) and training fed by it (``fit`` steps). The pipeline
    runs in parallel with the steps (prefetch), so ``input_bound_share`` = 1 - fed rate / in-memory rate
    is the share of step time lost to the input."""
    from moleseg.core import options
    from moleseg.core.trainconfig import ModelConfig
    from moleseg.network.data import make_dataset
    from moleseg.network.examples import AugmentConfig, TargetConfig
    from moleseg.network.profiling import step_seconds, step_timing_model

    config = ModelConfig.from_dict({**info.get("model", {}), "input_size": settings.train_size or info["input_size"]})
    model = step_timing_model(config)
    rng = np.random.default_rng(0)
    size, batch = config.input_size, settings.train_batch
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    labels = np.eye(config.n_classes, dtype=np.float32)[rng.integers(0, config.n_classes, (batch, size, size))]
    seconds = step_seconds(model, images, labels, settings.train_steps, settings.warmup)
    result = {"input_size": size, "batch": batch, "architecture": f"{config.architecture} {config.backbone}",
              "step_ms": 1000.0 * seconds, "images_per_s": batch / seconds}
    if not pairs:
        return result
    augment_names = info.get("training", {}).get("augment") or options.default("augment")
    augment = AugmentConfig.from_names(augment_names)
    targets = TargetConfig(input_size=size, n_classes=config.n_classes)
    steps = max(2, 2 * settings.train_steps)
    examples = steps * batch

    dataset = make_dataset(pairs, targets, batch_size=batch, augment=augment, shuffle=True, seed=1).repeat()
    iterator = iter(dataset)
    next(iterator)  # warm-up: the pipeline's threads and first reads
    started = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    input_rate = examples / (time.perf_counter() - started)
    model.fit(dataset, steps_per_epoch=settings.warmup + 1, epochs=1, verbose=0)
    started = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    fed_rate = examples / (time.perf_counter() - started)
    result.update(input_images_per_s=input_rate, fed_images_per_s=fed_rate,
                  input_bound_share=max(0.0, 1.0 - fed_rate / result["images_per_s"]),
                  augment=list(augment_names), pipeline_images=len(pairs))
    return result
