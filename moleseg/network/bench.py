"""Speed benchmark of moleseg's networks and of the whole prediction path (``make bench``).

Usage::

    python -m moleseg.network.bench [--steps N] [--quick] [--backbones mobilenetv2,resnet50] [--json FILE]

What is measured (one table row per configuration):

* **training images/s** -- DeepLabV3+ (3 classes, random weights, Adam, class-weighted cross-entropy)
  on a synthetic batch of 8 images of 256 x 256 px; ``--steps`` timed steps after one warm-up step,
  so graph tracing is excluded.
* **inference ms/image** -- the same network built for 512 x 512 px inputs, batch 1, called as
  :mod:`moleseg.network.predict` calls it (``model(x, training=False)`` inside a ``tf.function``); the mean of
  ``--steps`` calls after one warm-up call.
* Backbones **mobilenetv2** and **resnet50**, each with two heads: **dense** -- plain 3x3 convolutions
  in ASPP and decoder with a decoder width of 256 (as keras.io's DeepLabV3+ example and the paper) --
  and **separable** -- depthwise-separable 3x3 convolutions with width 128 (moleseg's default and the
  shipped models' setting).
* **end-to-end ms/image** -- :func:`moleseg.engine.segmenter.segment` (resize, network, resize back,
  cleanup) on one synthetic 765 x 574 RGB image (PH2's size), with the shipped
  ``models/dermoscopy.keras`` when it is present and with the classical segmenter; the first call
  (which loads and traces) is excluded.
* **peak RSS** -- the process' maximum resident memory after each row (``getrusage``), so the
  last value is the peak of the whole benchmark.

``--quick`` checks that everything runs in a minute or two: training at 64 px batch 2, inference at
128 px, 2 timed steps. Its numbers are not representative. Run the full benchmark on an idle machine:
other processes on the CPU slow every row.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

#: (head name, separable convolutions, decoder width): see the module docstring.
HEADS: tuple[tuple[str, bool, int], ...] = (("dense", False, 256), ("separable", True, 128))
BACKBONES: tuple[str, ...] = ("mobilenetv2", "resnet50")
#: Size of the end-to-end test image (width, height): a PH2 image.
END_TO_END_SIZE: tuple[int, int] = (765, 574)


@dataclass
class Settings:
    train_size: int = 256
    train_batch: int = 8
    infer_size: int = 512
    steps: int = 10
    end_to_end_repeats: int = 5


@dataclass
class Row:
    name: str
    parameters: int | None = None
    train_images_per_s: float | None = None
    infer_ms: float | None = None
    end_to_end_ms: float | None = None
    peak_rss_mib: float = 0.0
    note: str = ""


def peak_rss_mib() -> float:
    """Maximum resident set size of this process so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _timed(function: Callable[[], object], repeats: int) -> float:
    """Mean seconds of ``repeats`` calls after one untimed warm-up call."""
    function()
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / max(1, repeats)


def _release() -> None:
    import keras

    keras.backend.clear_session()
    gc.collect()


def _train_throughput(config, batch: int, steps: int) -> tuple[float, int]:
    """(images per second, parameter count) of training steps on a synthetic batch."""
    import keras

    from moleseg.network.model.build import build_model, count_parameters
    from moleseg.network.model.losses import SegmentationLoss

    rng = np.random.default_rng(0)
    model = build_model(config, weights="none")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=SegmentationLoss("weighted_ce", [0.2, 2.0, 0.8]))
    size = config.input_size
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    labels = np.eye(3, dtype=np.float32)[rng.integers(0, 3, (batch, size, size))]
    seconds = _timed(lambda: model.train_on_batch(images, labels), steps)
    return batch / seconds, count_parameters(model)


def _inference_latency(config, steps: int) -> float:
    """Milliseconds per batch-1 call, as moleseg.network.predict calls the network."""
    import tensorflow as tf

    from moleseg.network.model.build import build_model

    model = build_model(config, weights="none")

    @tf.function(reduce_retracing=True)
    def predict(x):
        return model(x, training=False)

    size = config.input_size
    image = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype(np.float32)
    return 1000.0 * _timed(lambda: predict(image).numpy(), steps)


def bench_network(backbone: str, head: str, separable: bool, width: int, settings: Settings) -> Row:
    """Training throughput and inference latency of one DeepLabV3+ configuration."""
    from moleseg.network.model.build import ModelConfig

    row = Row(name=f"{backbone} {head} (width {width})")
    train_config = ModelConfig(backbone=backbone, input_size=settings.train_size, n_classes=3,
                               separable=separable, decoder_width=width)
    row.train_images_per_s, row.parameters = _train_throughput(train_config, settings.train_batch, settings.steps)
    _release()
    infer_config = ModelConfig(backbone=backbone, input_size=settings.infer_size, n_classes=3,
                               separable=separable, decoder_width=width)
    row.infer_ms = _inference_latency(infer_config, settings.steps)
    _release()
    row.peak_rss_mib = peak_rss_mib()
    return row


def synthetic_dermoscopy_image(width: int = END_TO_END_SIZE[0], height: int = END_TO_END_SIZE[1]) -> np.ndarray:
    """A dark irregular lesion on pinkish skin with noise and a dark vignette, ``(height, width, 3)`` uint8."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    cy, cx = height / 2, width / 2
    angle = np.arctan2(yy - cy, xx - cx)
    radius = min(height, width) * (0.28 + 0.03 * np.sin(5 * angle))
    lesion = np.hypot((yy - cy) * 1.1, xx - cx) < radius
    image = np.empty((height, width, 3), np.float32)
    image[:] = (215, 170, 160)
    image[lesion] = (110, 70, 55)
    vignette = np.hypot((yy - cy) / height, (xx - cx) / width) > 0.62
    image[vignette] *= 0.15
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def bench_end_to_end(spec: str | Path, name: str, repeats: int) -> Row:
    """Predict + clean one 765 x 574 image with a segmenter (its first, loading call excluded)."""
    from moleseg.engine.segmenter import segment
    from moleseg.network.loading import load_segmenter

    row = Row(name=name)
    segmenter = load_segmenter(spec)
    image = synthetic_dermoscopy_image()
    row.end_to_end_ms = 1000.0 * _timed(lambda: segment(segmenter, image), repeats)
    row.peak_rss_mib = peak_rss_mib()
    return row


def _format(value: float | int | None, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value / 1e6:.2f} M"
    return f"{value:.{digits}f}"


def format_table(rows: list[Row], settings: Settings) -> str:
    headers = ("configuration", "parameters", f"train img/s ({settings.train_size}px, batch {settings.train_batch})",
               f"infer ms/img ({settings.infer_size}px)", "end-to-end ms", "peak RSS MiB")
    cells = [(r.name + (f"  [{r.note}]" if r.note else ""), _format(r.parameters, 0),
              _format(r.train_images_per_s, 2), _format(r.infer_ms, 1), _format(r.end_to_end_ms, 1),
              f"{r.peak_rss_mib:.0f}") for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths)),
             "-|-".join("-" * w for w in widths)]
    for cell in cells:
        lines.append(" | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cell, widths))))
    return "\n".join(lines)


def machine_summary() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, {len(gpus)} GPU, Python "
            f"{platform.python_version()}, TensorFlow {tf.__version__}, load average "
            f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")


def run(settings: Settings, backbones: list[str], models_dir: Path, echo: Callable[[str], None] = print
        ) -> list[Row]:
    """Every row of the benchmark, echoing progress; a failing row is reported in its note."""
    rows: list[Row] = []
    for backbone in backbones:
        for head, separable, width in HEADS:
            echo(f"... {backbone} {head}")
            try:
                rows.append(bench_network(backbone, head, separable, width, settings))
            except Exception as error:  # noqa: BLE001 -- keep benchmarking the other rows
                rows.append(Row(name=f"{backbone} {head} (width {width})", peak_rss_mib=peak_rss_mib(),
                                note=f"failed: {type(error).__name__}: {error}"[:120]))
    shipped = models_dir / "dermoscopy.keras"
    label = f"end to end: {models_dir.name}/dermoscopy.keras"
    if shipped.is_file():
        echo("... end to end, shipped dermoscopy model")
        rows.append(bench_end_to_end(shipped, label, settings.end_to_end_repeats))
    else:
        rows.append(Row(name=label, peak_rss_mib=peak_rss_mib(), note="not present"))
    echo("... end to end, classical")
    rows.append(bench_end_to_end("classical", "end to end: classical", settings.end_to_end_repeats))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moleseg.network.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, help="timed steps / calls per measurement (default 10, quick 2)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (train 64 px batch 2, inference 128 px) to check that it runs")
    parser.add_argument("--backbones", default=",".join(BACKBONES), help="comma list (default: %(default)s)")
    parser.add_argument("--models-dir", type=Path, help="folder of the shipped models (default: models/)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from moleseg.core.config import models_dir

    settings = Settings(train_size=64, train_batch=2, infer_size=128, steps=2, end_to_end_repeats=1) \
        if args.quick else Settings()
    if args.steps is not None:
        if args.steps < 1:
            parser.error("--steps must be at least 1")
        settings.steps = args.steps
        settings.end_to_end_repeats = args.steps if args.quick else max(1, min(args.steps, 5))
    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    from moleseg.network.model.backbones import BACKBONES as KNOWN

    unknown = [b for b in backbones if b not in KNOWN]
    if unknown:
        parser.error(f"unknown backbone {', '.join(unknown)}; choose from {', '.join(KNOWN)}")
    started = time.time()
    echo = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    echo(f"moleseg benchmark{' (quick: sizes are not representative)' if args.quick else ''}: "
         f"{settings.steps} timed step(s) per measurement")
    rows = run(settings, backbones, args.models_dir or models_dir(), echo)
    print(machine_summary())
    print(format_table(rows, settings))
    print(f"dense head: decoder width 256 (keras.io); separable head: width 128 (moleseg default). "
          f"Total {time.time() - started:.0f} s, peak RSS {peak_rss_mib():.0f} MiB.")
    if args.json:
        args.json.write_text(json.dumps({"settings": asdict(settings), "machine": machine_summary(),
                                         "rows": [asdict(r) for r in rows]}, indent=2))
    return 1 if any(r.note.startswith("failed") for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
