"""``make gpu-check``: does this machine train the shipped dermoscopy recipe on its GPU, fast enough?

``python -m moleseg.tools.gpu_check [--cpu] [--steps N] [--backend tensorflow|jax]`` checks that the
backend sees a GPU, trains the recipe's network (``models/dermoscopy.config.json``: architecture, backbone, input
size, loss, solver, learning rate, batch size and augmentation; random initial weights) for ``--steps``
steps with mixed precision on synthetic dermoscopy-like pairs, and prints the training images/s, the input
pipeline's images/s alone (the same pipeline, no network) and the loss curve. It fails (exit
status 1) when the loss does not fall or when the pipeline starves the accelerator (pipeline images/s below
:data:`PIPELINE_MARGIN` times the training images/s). ``--cpu``: a few steps at a tiny input on the CPU,
float32 (the self-test of this script). Exit status 2: it could not run (no GPU, bad recipe).

``--backend tensorflow`` feeds the training with the ``tf.data`` pipeline (:func:`moleseg.network.data.make_dataset`);
``--backend jax`` with the backend-neutral :class:`moleseg.network.feed.PairFeed` (the same targets and
augmentation in numpy/OpenCV, one thread per core) and Keras' own ``fit`` compiled by JAX. Keras picks its
backend when first imported, so :func:`main` sets ``KERAS_BACKEND`` before importing it; in a process that
has already imported Keras with another backend, run the check as ``python -m`` in a new process.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from moleseg.core.configfile import read_config_file
from moleseg.tools.shipped_recipes import recipe_path
from moleseg.tools.synthetic import write_pairs

if TYPE_CHECKING:
    from moleseg.network.feed import PairFeed

#: The recipe trained: the shipped dermoscopy recipe.
RECIPE = recipe_path("dermoscopy")
#: The pipeline must deliver at least this many times the images the training consumes.
PIPELINE_MARGIN = 1.2
#: Backends ``--backend`` accepts.
BACKENDS: tuple[str, ...] = ("tensorflow", "jax")
#: Synthetic pairs written (the pipeline reads and augments them afresh every epoch).
SYNTHETIC_PAIRS = 64
#: ``--cpu``: input side in px, steps, batch size.
CPU_INPUT, CPU_STEPS, CPU_BATCH = 64, 6, 2
#: Training steps of the GPU check (the recipe's size and batch, mixed precision).
GPU_STEPS = 300


@dataclass
class CheckResult:
    """What the check measured: images/s of the training and of the pipeline alone, the loss curve
    (mean loss of each block of steps), and the problems found (empty: passed)."""

    device: str
    train_images_per_s: float
    pipeline_images_per_s: float
    losses: list[float]
    problems: list[str]

    def report(self) -> str:
        curve = ", ".join(f"{loss:.4f}" for loss in self.losses)
        lines = [f"device: {self.device}",
                 f"training: {self.train_images_per_s:.1f} images/s",
                 f"input pipeline alone: {self.pipeline_images_per_s:.1f} images/s "
                 f"({self.pipeline_images_per_s / max(self.train_images_per_s, 1e-9):.2f} x training; "
                 f"{self.pipeline_images_per_s / max(1, os.cpu_count() or 1):.1f} images/s per core, "
                 f"{os.cpu_count()} cores)",
                 f"loss curve: {curve}"]
        lines += [f"FAILED: {problem}" for problem in self.problems] or ["OK"]
        return "\n".join(lines)


def run_check(*, cpu: bool, steps: int | None = None, recipe: Path = RECIPE, blocks: int = 6,
              backend: str = "tensorflow") -> CheckResult:
    """Train the recipe's network for ``steps`` steps and measure it (see the module's description).

    ``backend`` must be the Keras backend already selected (``KERAS_BACKEND`` before Keras is imported).

    Raises
    ------
    RuntimeError
        When no GPU is seen (not ``cpu``), or Keras runs another backend than ``backend``.
    ValueError
        When the recipe cannot be read.
    """
    from moleseg.core.trainconfig import TrainConfig
    from moleseg.network.build import ModelConfig, build_model
    from moleseg.network.devices import accelerators, keras_backend, start_training
    from moleseg.network.examples import ExampleCache
    from moleseg.network.feed import PairFeed
    from moleseg.network.losses import SegmentationLoss
    from moleseg.network.trainsetup import augment_config, compile_for_training, target_config

    if keras_backend() != backend:
        raise RuntimeError(f"Keras already runs the {keras_backend()} backend, not {backend}: set "
                           f"KERAS_BACKEND={backend} before Keras is imported (python -m moleseg.tools.gpu_check)")
    gpus = accelerators(backend)
    if not cpu and not gpus:
        advice = {"tensorflow": "CUDA libraries (pip install tensorflow[and-cuda])",
                  "jax": "CUDA libraries (pip install jax[cuda12])"}[backend]
        raise RuntimeError(f"the {backend} backend sees no GPU: check the NVIDIA driver, {advice} and "
                           "CUDA_VISIBLE_DEVICES")
    values = read_config_file(recipe)
    values.update(images=["synthetic"], masks=["synthetic"], weights="none")
    if cpu:
        values["model"] = {**values["model"], "input_size": CPU_INPUT}
        values["batch_size"] = CPU_BATCH
    config = TrainConfig.from_dict(values)
    steps = steps or (CPU_STEPS if cpu else GPU_STEPS)
    blocks = max(2, min(blocks, steps))
    per_block = max(1, steps // blocks)
    start_training(mixed_precision=not cpu, seed=config.seed)
    device = f"CPU (--cpu, {backend})" if cpu else f"{', '.join(gpus)} ({backend})"
    with tempfile.TemporaryDirectory(prefix="moleseg-gpu-check-") as folder:
        size = config.model.input_size
        pairs = write_pairs(Path(folder) / "data", SYNTHETIC_PAIRS if not cpu else 8, (size, size))
        cache = ExampleCache(Path(folder) / "cache")
        feed_options = dict(batch_size=config.batch_size, augment=augment_config(config), shuffle=True,
                            seed=config.seed, cache=cache, drop_remainder=True)
        if backend == "tensorflow":
            from moleseg.network.data import make_dataset  # tf.data: the only TensorFlow import of the check

            dataset = make_dataset(pairs, target_config(config), **feed_options).repeat()
            iterator = iter(dataset)
            # the pipeline alone: warm (files cached, tf.data autotuned), then timed
            for _ in range(min(per_block, 4)):
                next(iterator)
            started = time.perf_counter()
            pipeline_batches = max(per_block, 4)
            for _ in range(pipeline_batches):
                next(iterator)
            pipeline_ips = pipeline_batches * config.batch_size / (time.perf_counter() - started)
        else:
            workers = os.cpu_count() or 1
            # one pass of the feed holds a block of steps (each repeat of a pair is a fresh augmentation)
            repeats = math.ceil(per_block * config.batch_size / len(pairs))
            dataset = PairFeed(pairs, target_config(config), workers=workers, crops_per_image=repeats,
                               **feed_options)
            for pair in pairs:  # warm: files prepared and cached, as tf.data's are above
                cache.get(pair, target_config(config))
            pipeline_ips = feed_images_per_second(dataset, workers)

        model_config = ModelConfig.from_dict({**config.model.to_dict(), "bn_momentum": 0.9})
        model = build_model(model_config, weights="none")
        compile_for_training(model, config, steps, SegmentationLoss(config.loss, None))
        losses: list[float] = []
        timed_seconds, timed_steps = 0.0, 0
        for block in range(blocks):
            started = time.perf_counter()
            history = model.fit(dataset, steps_per_epoch=per_block, epochs=1, verbose=0, shuffle=False)
            if block > 0:  # the first block traces and compiles the step
                timed_seconds += time.perf_counter() - started
                timed_steps += per_block
            losses.append(float(history.history["loss"][-1]))
    train_ips = timed_steps * config.batch_size / max(timed_seconds, 1e-9)
    problems = []
    if not losses[-1] < losses[0]:
        problems.append(f"the loss did not fall ({losses[0]:.4f} in the first block of {per_block} steps, "
                        f"{losses[-1]:.4f} in the last)")
    if pipeline_ips < PIPELINE_MARGIN * train_ips:
        problems.append(f"the input pipeline starves the training: {pipeline_ips:.1f} images/s alone, below "
                        f"{PIPELINE_MARGIN} x the {train_ips:.1f} images/s the training consumes")
    return CheckResult(device=device, train_images_per_s=train_ips, pipeline_images_per_s=pipeline_ips,
                       losses=losses, problems=problems)


def feed_images_per_second(feed: "PairFeed", workers: int, batches: int = 8) -> float:
    """Images/s of a :class:`moleseg.network.feed.PairFeed` alone, ``batches`` batches made by ``workers``
    threads as ``fit`` does (one epoch's batches, cycling)."""
    from concurrent.futures import ThreadPoolExecutor

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        made = list(pool.map(lambda index: len(feed[index % len(feed)][0]), range(batches)))
    return sum(made) / (time.perf_counter() - started)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moleseg.tools.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help=f"a few steps at {CPU_INPUT} px on the CPU (self-test)")
    parser.add_argument("--steps", type=int, default=None, help=f"training steps (default {GPU_STEPS}; --cpu: "
                                                                f"{CPU_STEPS})")
    parser.add_argument("--backend", choices=BACKENDS, default="tensorflow", help="Keras backend")
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="training recipe (a config.json)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    os.environ["KERAS_BACKEND"] = args.backend
    try:
        result = run_check(cpu=args.cpu, steps=args.steps, recipe=args.recipe, backend=args.backend)
    except (RuntimeError, ValueError) as error:
        print(f"gpu-check could not run: {error}", file=sys.stderr)
        return 2
    print(result.report(), flush=True)
    return 1 if result.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
