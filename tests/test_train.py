"""Tests of moleseg.network.train: the loss falls, a training writes its run folder, resumes, cancels, checks its
BatchNorm statistics, and runs under MirroredStrategy and mixed precision.

Speed: networks are tiny (64 px, resnet18 with a 16-channel head, one or two steps per epoch). Graph
tracing of a train step costs tens of seconds on a busy 2-core CPU, so only the plain training run and
the MirroredStrategy run use graphs; the others run TensorFlow functions eagerly (``eager`` fixture),
which exercises the same Python code path.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from synthetic import lesion_dataset  # noqa: E402
from moleseg.network.data import make_dataset  # noqa: E402
from moleseg.network.examples import TargetConfig  # noqa: E402
from moleseg.core.trainconfig import ModelConfig, TrainConfig  # noqa: E402
from moleseg.core.modelinfo import read_model_info  # noqa: E402
from moleseg.core.pairing import pair_folders  # noqa: E402
from moleseg.engine.runs import read_history, read_json  # noqa: E402
from moleseg.network.train import Trainer, train  # noqa: E402
from moleseg.network.trainsetup import (Progress, TrainingCancelled, TrainingError, augment_config,  # noqa: E402
                                        auto_bn_momentum, target_config)

PROJECT = Path(__file__).resolve().parents[1]
SIZE = 64


def tiny_config(image_dir: Path, mask_dir: Path, cache: Path, size: int = SIZE, **options) -> TrainConfig:
    """A training of a few seconds on ``size`` px inputs. BatchNorm momentum 0.01: after one or two steps the
    moving statistics are those of the last batch (see lesion_dataset for why that makes the BatchNorm check
    pass). No calibration after the training (a load of the model file and its predictions with and without
    flips): the run-folder test turns it on and checks it."""
    values = dict(
        images=[str(image_dir)], masks=[str(mask_dir)],
        model=ModelConfig(backbone="resnet18", input_size=size, decoder_width=16, aspp_rates=(1, 2, 3), dropout=0.0),
        weights="none", epochs=2, batch_size=4, augment=[], validation_split=0.25, train_fm_images=2,
        cache_dir=str(cache), learning_rate=1e-3, bn_momentum=0.01, calibrate=False,
    )
    values.update(options)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path]:
    return lesion_dataset(tmp_path_factory.mktemp("synthetic"), n=8)


@pytest.fixture
def eager():
    """Run tf.functions eagerly (no graph tracing) for the duration of a test."""
    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(False)


# -- small pieces --------------------------------------------------------------------------------


def test_auto_bn_momentum():
    assert auto_bn_momentum(0) == 0.99
    assert auto_bn_momentum(-5) == 0.99
    assert auto_bn_momentum(2) == 0.1  # 0.01 ** 1 = 0.01, clipped to 0.1
    assert auto_bn_momentum(10) == pytest.approx(0.01 ** (1 / 5))  # forget within 5 steps: 0.398
    value = auto_bn_momentum(100)
    assert value == pytest.approx(0.01 ** (2 / 100))
    assert value ** 50 == pytest.approx(0.01)  # forgets its start within half the training
    assert auto_bn_momentum(460) == pytest.approx(0.01 ** (2 / 460))
    assert auto_bn_momentum(10_000) == 0.99  # clipped to Keras' default
    values = [auto_bn_momentum(steps) for steps in (10, 30, 100, 300, 1000, 3000)]
    assert values == sorted(values)
    # with the epoch length: forget within min(half the training, max(3 epochs, 30 steps))
    assert auto_bn_momentum(1000, 10) == pytest.approx(0.01 ** (1 / 30))  # 30 steps > 3 epochs of 10
    assert auto_bn_momentum(1000, 100) == pytest.approx(0.01 ** (1 / 300))  # 3 epochs of 100 steps
    assert auto_bn_momentum(40, 100) == pytest.approx(0.01 ** (1 / 20))  # half the training is shorter
    assert auto_bn_momentum(100_000, 2000) == 0.99


@pytest.mark.parametrize(
    "options, words",
    [
        (dict(solver="sgd"), "solver"),
        (dict(schedule="linear"), "schedule"),
        (dict(loss="bce"), "loss"),
        (dict(epochs=0), "epochs"),
        (dict(batch_size=0), "batch size"),
        (dict(learning_rate=0.0), "learning rate"),
        (dict(masks=[]), "pairs"),
        (dict(strategy="tpu"), "strategy"),
        (dict(mixed_precision="maybe"), "mixed precision"),
        (dict(augment=["twist"]), "unknown augmentation"),
        (dict(tile_scale=2.0, inference="resize"), "tile scale 2 needs inference 'tiles'"),
    ],
)
def test_train_config_validation(options, words, tmp_path):
    with pytest.raises(ValueError, match=words):
        tiny_config(tmp_path / "i", tmp_path / "m", tmp_path / "c", **options)


def test_train_config_round_trip(tmp_path):
    config = tiny_config(tmp_path / "i", tmp_path / "m", tmp_path / "c", augment=["rotation", "scale"])
    values = json.loads(json.dumps(config.to_dict()))
    again = TrainConfig.from_dict({**values, "run_dir": "ignored"})
    assert again == config
    assert isinstance(again.model, ModelConfig)
    assert augment_config(again).names() == ["rotation", "scale"]
    # 4 px at the 256 px reference input is 1 px at this 64 px input
    assert target_config(again) == TargetConfig(input_size=SIZE, n_classes=3, border_width_px=1, shape="diamond")
    two = tiny_config(tmp_path / "i", tmp_path / "m", tmp_path / "c",
                      model=ModelConfig(input_size=SIZE, n_classes=2))
    assert target_config(two).border_width_px == 0


def test_a_64_px_training_scales_its_border_and_closing_radius(tmp_path, dataset):
    from moleseg.network.trainsetup import default_cleanup, model_info

    images, masks = dataset
    config = tiny_config(images, masks, tmp_path / "cache", border_width_px=4, closing_radius_px=15)
    assert config.size_reference_px == 256 and config.model.input_size == SIZE
    assert (config.border_width_input_px, config.closing_radius_input_px) == (1, 4)  # 4 and 15 px at 256 px
    assert target_config(config).border_width_px == 1
    cleanup = default_cleanup(config, "article")
    assert (cleanup.border_width_px, cleanup.closing_radius_px) == (1, 4)
    info = model_info(config, frequencies=np.ones(3) / 3, weights=None, n_train=6, n_validation=2, rule="article",
                      epoch=1, val_fm=0.5)
    assert info["border_width_px"] == 1 and info["cleanup"]["closing_radius_px"] == 4  # moleseg.json: px of the input
    # the targets of the training: a 1 px border band around the lesion of each 64 px example
    from moleseg.core.config import BORDER
    from moleseg.network.examples import prepare_example

    pair = pair_folders(images, masks).pairs[0]
    _, labels = prepare_example(pair, target_config(config))
    inside = labels > 0
    band = labels == BORDER
    eroded = np.zeros_like(inside)
    eroded[1:-1, 1:-1] = inside[1:-1, 1:-1] & inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:]
    assert band.any() and np.array_equal(band, inside & ~eroded)  # exactly the lesion's outermost pixel ring
    # an older run's config.json (no size_reference_px) gave px of its own input: it means what it meant
    older = {key: value for key, value in config.to_dict().items() if key != "size_reference_px"}
    assert target_config(TrainConfig.from_dict(older)).border_width_px == 4


def test_missing_folders_are_a_training_error(tmp_path):
    config = tiny_config(tmp_path / "nothing" / "images", tmp_path / "nothing" / "masks", tmp_path / "cache")
    with pytest.raises(TrainingError, match="nothing"):
        train(config, tmp_path / "run")


def test_resume_without_a_run_is_a_training_error(tmp_path):
    config = tiny_config(tmp_path / "i", tmp_path / "m", tmp_path / "c")
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(config, tmp_path / "empty_run", resume=True)


# -- the loss falls on real images ---------------------------------------------------------------


@pytest.mark.slow
def test_loss_falls_on_real_images(seed_moles_run):
    """Two epochs of 7 steps on the 56 training pairs of the seed moles (MobileNetV2 from ImageNet, 64 px):
    the weighted cross-entropy falls by more than a tenth from the first epoch's mean to the second's."""
    history = read_history(seed_moles_run / "history.csv")
    epoch_losses = [row["loss"] for row in history]
    assert [row["epoch"] for row in history] == [1.0, 2.0]
    assert all(math.isfinite(v) for v in epoch_losses)
    assert epoch_losses[-1] < epoch_losses[0], epoch_losses
    assert epoch_losses[-1] < 0.9 * epoch_losses[0], f"loss barely moved: {epoch_losses}"
    config = read_json(seed_moles_run / "config.json")
    assert config["model"]["backbone"] == "mobilenetv2" and config["weights"] == "imagenet"
    assert config["loss"] == "weighted_ce" and config["model"]["input_size"] == SIZE
    assert "pairs: 56 train, 14 validation" in (seed_moles_run / "log.txt").read_text()


# -- a whole training ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FinishedRun:
    """A whole training of :func:`tiny_config` (graph mode, calibration and a test split included)."""

    config: TrainConfig
    run: Path
    evaluation: dict
    events: list[Progress]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> FinishedRun:
    """Two epochs on 10 synthetic pairs (6 train, 2 validation, 2 test), calibrated, with every progress event;
    the tests only read its folder."""
    folder = tmp_path_factory.mktemp("finished")
    images, masks = lesion_dataset(folder / "data", n=10, seed=1)
    config = tiny_config(images, masks, folder / "cache", test_split=0.2, name="tiny-run", calibrate=True)
    events: list[Progress] = []
    evaluation = train(config, folder / "run", progress=events.append)
    return FinishedRun(config, folder / "run", evaluation, events)


@pytest.mark.slow
def test_train_writes_the_run_folder(finished_run):
    run, evaluation, events = finished_run.run, finished_run.evaluation, finished_run.events

    for name in ("config.json", "history.csv", "model.keras", "last.keras", "state.json", "log.txt",
                 "evaluation.json"):
        assert (run / name).is_file(), name
    saved = read_json(run / "config.json")
    assert saved["epochs"] == 2 and saved["model"]["backbone"] == "resnet18" and saved["run_dir"] == str(run)
    history = read_history(run / "history.csv")
    assert [row["epoch"] for row in history] == [1.0, 2.0]
    for row in history:
        assert 0.0 <= row["val_fm"] <= 1.0 and 0.0 <= row["train_fm"] <= 1.0
        assert row["loss"] > 0 and row["val_loss"] is not None
        assert row["rule"] in ("article", "grow_inside")
        assert row["learning_rate"] > 0
    state = read_json(run / "state.json")
    assert state["status"] == "done" and state["epoch"] == 2 and state["epochs"] == 2
    assert 1 <= state["best_epoch"] <= 2
    assert state["best_val_fm"] == pytest.approx(max(row["val_fm"] for row in history), abs=1e-5)

    assert evaluation == read_json(run / "evaluation.json")
    assert evaluation["best_epoch"] == state["best_epoch"]
    assert evaluation["n"] == 2  # the 20 % test split of 10 pairs, evaluated at the end
    assert set(evaluation["fm"]) == {"mean", "std", "min", "max"}
    assert evaluation["baseline"]["n"] == 2

    info = read_model_info(run / "model.keras")
    assert info["name"] == "tiny-run" and info["n_classes"] == 3 and info["input_size"] == SIZE
    assert info["training"]["epoch"] == state["best_epoch"]
    assert info["training"]["n_train"] == 6 and info["training"]["n_validation"] == 2
    assert info["cleanup_variant"] == state["best_rule"] and info["cleanup"]["rule"]
    # the checkpoint describes its network, as every moleseg model file does (what a load builds)
    assert read_model_info(run / "last.keras") == {"epoch": 2, "checkpoint": True, "model": saved["model"]}
    # the last epoch's validation loss and pixel accuracy: its network on the 2 validation examples at 64 px
    from moleseg.network.batchnorm import FusedBatchNormalization
    from moleseg.network.trainsetup import split_of

    # the run's own checkpoint with its compiled loss, read by Keras (moleseg's loader compiles nothing)
    last = keras.saving.load_model(run / "last.keras", compile=True,
                                   custom_objects={"moleseg>FusedBatchNormalization": FusedBatchNormalization})
    validation = split_of(finished_run.config)[1]
    images, labels = next(iter(make_dataset(validation, target_config(finished_run.config), batch_size=4)))
    probabilities = last(images, training=False)
    assert history[-1]["val_loss"] == pytest.approx(float(last.loss(labels, probabilities)), rel=1e-4)
    assert history[-1]["val_accuracy"] == pytest.approx(
        float(np.mean(np.argmax(labels, -1) == np.argmax(probabilities, -1))), abs=1e-5)
    # flips and lesion threshold chosen on the 2 validation images and stored in the model
    calibration = info["calibration"]
    assert calibration["n_images"] == 2 and len(calibration["table"]) == 20  # 2 flip settings x 10 thresholds
    chosen = [row for row in calibration["table"] if row["lesion_threshold"] == info["lesion_threshold"]
              and row["test_time_augmentation"] == info["test_time_augmentation"]]
    assert chosen and chosen[0]["fm"] == pytest.approx(calibration["fm"]) and calibration["fm"] >= calibration["baseline_fm"]
    assert evaluation["calibration"]["lesion_threshold"] == info["lesion_threshold"]

    log = (run / "log.txt").read_text()
    assert "pairs: 6 train, 2 validation, 2 test" in log
    assert "epoch 2/2" in log and "BatchNorm check" in log and "done: best validation FM" in log
    assert "decision: " in log and "2 images)" in log
    assert "1 replica;" in log and "precision float32" in log and "BatchNorm momentum 0.0100" in log

    phases = {event.phase for event in events}
    assert {"prepare", "train", "validate", "epoch", "calibrate", "evaluate", "done"} <= phases
    # calibration and test evaluation count their own work, with their own ETA
    calibrating = [e for e in events if e.phase == "calibrate"]
    assert {e.steps for e in calibrating} == {2 * 2 * 11}  # 2 images x 2 flip settings x (predict + 10 thresholds)
    assert [e.step for e in calibrating][0] == 0 and calibrating[-1].step == 44
    assert calibrating[-1].eta_seconds == 0.0
    evaluating = [e for e in events if e.phase == "evaluate"]
    assert {e.steps for e in evaluating} == {4} and evaluating[-1].step == 4  # 2 test images, model + baseline
    validating = [e for e in events if e.phase == "validate"]
    assert {e.steps for e in validating} == {2 + 2} and max(e.step for e in validating) == 4
    assert state["job_seconds"] > state["training_seconds"] > 0  # the whole job, calibration and test included
    steps = [e for e in events if e.phase == "train"]
    assert len(steps) == 4 and steps[0].steps == 2 and steps[-1].epoch == 2  # 6 pairs / batch 4 = 2 steps
    assert all(e.eta_seconds is not None and e.eta_seconds >= 0 for e in steps)

    from moleseg.engine.segmenter import segment
    from moleseg.network.loading import load_segmenter

    segmenter = load_segmenter(run / "model.keras")
    image = np.full((50, 70, 3), 200, np.uint8)
    result = segment(segmenter, image)
    assert result.probabilities.shape == (50, 70, 3) and result.lesion.shape == (50, 70)


@pytest.mark.slow
def test_a_cancelled_run_resumes_after_its_last_epoch(tmp_path, dataset, eager):
    """Cancelled from the progress callback in epoch 2, the run keeps epoch 1; resumed with more epochs it
    trains epochs 2 and 3 only; resumed once finished it trains nothing more."""
    images, masks = dataset
    run = tmp_path / "run"

    events: list[Progress] = []

    def cancel_in_epoch_2(event: Progress) -> bool:
        events.append(event)
        return event.phase == "train" and event.epoch == 2

    with pytest.raises(TrainingCancelled, match="cancelled after epoch 1"):
        train(tiny_config(images, masks, tmp_path / "cache", epochs=2), run, progress=cancel_in_epoch_2)
    cancelled_at = next(i for i, e in enumerate(events) if e.phase == "train" and e.epoch == 2)
    assert events[cancelled_at].step == 1 and events[cancelled_at:] == [events[cancelled_at]]  # stopped at once
    assert read_model_info(run / "model.keras")["training"]["epoch"] == 1  # the best model so far is kept
    state = read_json(run / "state.json")
    assert state["status"] == "cancelled"
    assert state["epoch"] == 1, "the cancelled (unfinished) epoch must not count as done"
    assert len(read_history(run / "history.csv")) == 1
    assert read_model_info(run / "last.keras")["epoch"] == 1
    assert not (run / "evaluation.json").exists()
    assert "cancelled after epoch 1" in (run / "log.txt").read_text()

    # the cancelled run resumes where it stopped, with one epoch more: epochs 2 and 3 are trained, 1 is not
    events.clear()
    train(tiny_config(images, masks, tmp_path / "cache", epochs=3), run, resume=True, progress=events.append)
    history = read_history(run / "history.csv")
    assert [row["epoch"] for row in history] == [1.0, 2.0, 3.0]
    log = (run / "log.txt").read_text()
    assert "resuming after epoch 1" in log
    assert "epoch 3/3" in log
    state = read_json(run / "state.json")
    assert state["epoch"] == 3 and state["status"] == "done"
    assert read_json(run / "config.json")["epochs"] == 3
    trained = [e for e in events if e.phase == "train"]
    assert trained and {e.epoch for e in trained} == {2, 3}  # epoch 1 was not trained again

    # resuming a finished run trains nothing more
    train(tiny_config(images, masks, tmp_path / "cache", epochs=3), run, resume=True)
    assert len(read_history(run / "history.csv")) == 3
    assert "nothing to train: 3 of 3 epochs done" in (run / "log.txt").read_text()


def test_prepare_applies_the_automatic_bn_momentum(tmp_path, dataset):
    images, masks = dataset
    config = tiny_config(images, masks, tmp_path / "cache", bn_momentum="auto", epochs=30, batch_size=1)
    trainer = Trainer(config, tmp_path / "run")
    trainer.prepare(resume=False)
    assert (len(trainer.train_pairs), len(trainer.validation_pairs)) == (6, 2)
    assert trainer.total_steps == 6 * 30
    expected = auto_bn_momentum(180, 6)
    assert expected == pytest.approx(0.01 ** (1 / 30))  # 30 steps: shorter than half of 180, longer than 3 epochs
    assert config.model.bn_momentum == pytest.approx(expected)
    assert trainer.model.get_layer("conv1_bn").momentum == pytest.approx(expected)
    assert trainer.model.get_layer("decoder_block1_bn").momentum == pytest.approx(expected)
    assert f"BatchNorm momentum {expected:.4f}" in (tmp_path / "run" / "log.txt").read_text()
    assert read_json(tmp_path / "run" / "config.json")["model"]["bn_momentum"] == pytest.approx(expected)


# -- BatchNorm check -----------------------------------------------------------------------------


def _grey_threshold_model(size: int) -> keras.Model:
    """RGB -> grey -> BatchNorm -> fixed 1x1 classifier: INSIDE where the normalised grey is dark,
    BACK where it is light, BORDER never; exact with batch statistics, wrong with garbage moving ones."""
    inputs = keras.Input((size, size, 3))
    grey = keras.layers.Conv2D(1, 1, use_bias=False, name="grey")(inputs)
    normalised = keras.layers.BatchNormalization(name="bn")(grey)
    logits = keras.layers.Conv2D(3, 1, name="logits")(normalised)
    outputs = keras.layers.Activation("softmax")(logits)
    model = keras.Model(inputs, outputs)
    model.get_layer("grey").set_weights([np.full((1, 1, 3, 1), 1 / 3, np.float32)])
    model.get_layer("logits").set_weights([np.array([[[[5.0, 0.0, -5.0]]]], np.float32),
                                           np.array([0.0, -1.0, 0.0], np.float32)])
    return model


def _bn_trainer(tmp_path: Path, model: keras.Model) -> Trainer:
    images, masks = lesion_dataset(tmp_path / "bn_data", n=4, size=32, seed=3)
    config = tiny_config(images, masks, tmp_path / "cache", batch_size=4)
    trainer = Trainer(config, tmp_path / "run")
    trainer.train_pairs = pair_folders(images, masks).pairs
    trainer.validation_pairs = []
    trainer.targets = TargetConfig(input_size=32, n_classes=3, border_width_px=1)
    trainer.cache = None
    trainer.model = model
    return trainer


def test_batchnorm_check_fails_on_garbage_moving_statistics(tmp_path):
    model = _grey_threshold_model(32)
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.zeros(1, np.float32))
    bn.moving_variance.assign(np.full(1, 1e12, np.float32))  # normalised values ~0: nothing is lesion
    trainer = _bn_trainer(tmp_path, model)
    with pytest.raises(TrainingError, match="BatchNorm moving statistics have not converged"):
        trainer.check_batchnorm()
    assert float(bn.moving_variance.numpy()[0]) == pytest.approx(1e12)  # the check restored them
    assert "BatchNorm check: FM 1.000 with batch statistics, 0.000 in inference mode" in \
        (tmp_path / "run" / "log.txt").read_text()


def test_batchnorm_check_passes_with_converged_statistics(tmp_path):
    model = _grey_threshold_model(32)
    trainer = _bn_trainer(tmp_path, model)
    images, _ = next(iter(make_dataset(trainer.train_pairs, trainer.targets, batch_size=4)))
    grey = images.numpy().mean(axis=-1)
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.array([grey.mean()], np.float32))
    bn.moving_variance.assign(np.array([grey.var()], np.float32))
    trainer.check_batchnorm()  # no error
    np.testing.assert_allclose(bn.moving_mean.numpy(), [grey.mean()], rtol=1e-6)
    assert "1.000 in inference mode" in (tmp_path / "run" / "log.txt").read_text()


@pytest.mark.parametrize("in_memory", [False, True], ids=["file", "in-memory"])
def test_unconverged_batchnorm_statistics_are_reestimated_not_a_failure(tmp_path, monkeypatch, in_memory):
    """A tiny dataset's model with lagging moving statistics ends usable: the end-of-training check replaces
    them by the training images' statistics and stores the model again (no failure after the run), whether
    it reads the model file or takes the network in memory that was just saved there. (The grey-threshold
    network is no network moleseg builds, which moleseg's loader refuses: this test's own file is read by Keras.)"""
    from moleseg.network import bnrescue
    from moleseg.network.io import save_model

    def load_keras_model(path):
        return keras.saving.load_model(path)

    monkeypatch.setattr(bnrescue, "load_keras_model", load_keras_model)

    model = _grey_threshold_model(32)
    bn = model.get_layer("bn")
    bn.moving_variance.assign(np.full(1, 1e12, np.float32))
    trainer = _bn_trainer(tmp_path, model)
    save_model(model, tmp_path / "run" / "model.keras", {"name": "tiny"})
    trainer.model_is_best, trainer.strategy = in_memory, tf.distribute.get_strategy()
    trainer.ensure_batchnorm()
    # re-estimated in place, or in a loaded copy (the network in memory keeps its statistics)
    assert (float(bn.moving_variance.numpy()[0]) != pytest.approx(1e12)) == in_memory
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "1 layers re-estimated from 4 training images" in log
    assert "1.000 in inference mode" in log
    saved = load_keras_model(tmp_path / "run" / "model.keras").get_layer("bn")
    images, _ = next(iter(make_dataset(trainer.train_pairs, trainer.targets, batch_size=4)))
    grey = images.numpy().mean(axis=-1)
    np.testing.assert_allclose(saved.moving_mean.numpy(), [grey.mean()], rtol=1e-4)
    np.testing.assert_allclose(saved.moving_variance.numpy(), [grey.var()], rtol=1e-3)
    assert read_model_info(tmp_path / "run" / "model.keras")["name"] == "tiny"


def test_loaded_batchnorm_statistics_are_frozen_on_small_datasets():
    from moleseg.network.bnrescue import freeze_loaded_batchnorm

    fresh = _grey_threshold_model(32)
    assert freeze_loaded_batchnorm(fresh) == 0 and fresh.get_layer("bn").trainable
    loaded = _grey_threshold_model(32)
    loaded.get_layer("bn").moving_mean.assign(np.array([120.0], np.float32))
    assert freeze_loaded_batchnorm(loaded) == 1 and not loaded.get_layer("bn").trainable


def test_small_imagenet_training_freezes_the_encoder_statistics(tmp_path):
    images, masks = lesion_dataset(tmp_path / "data", n=6, vary=True)
    config = tiny_config(images, masks, tmp_path / "cache", model=ModelConfig(backbone="mobilenetv2", input_size=SIZE),
                         weights="imagenet", validation_split=0.34)
    trainer = Trainer(config, tmp_path / "run")
    trainer.prepare(resume=False)
    frozen = [layer for layer in trainer.model.layers
              if isinstance(layer, keras.layers.BatchNormalization) and not layer.trainable]
    assert len(frozen) > 20  # MobileNetV2's encoder
    assert all(float(np.max(np.abs(layer.moving_mean.numpy()))) > 0 for layer in frozen)
    assert "4 training pairs <= 20" in (tmp_path / "run" / "log.txt").read_text()


# -- distribution and precision ------------------------------------------------------------------

MIRRORED_SCRIPT = textwrap.dedent(
    """
    import sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    tf.config.experimental.enable_op_determinism()

    from moleseg.core.trainconfig import ModelConfig, TrainConfig
    from moleseg.network.train import train

    images, masks, cache, run = sys.argv[1:5]
    config = TrainConfig(
        images=[images], masks=[masks], weights="none", epochs=4, batch_size=4, augment=[], seed=0,
        model=ModelConfig(backbone="resnet18", input_size=64, decoder_width=16, aspp_rates=(1, 2, 3), dropout=0.0),
        validation_split=0.25, train_fm_images=2, cache_dir=cache, strategy="mirrored", calibrate=False,
    )
    print(len(tf.config.list_logical_devices("CPU")), "logical CPUs")
    train(config, run)
    """
)


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path, dataset):
    """Trains with 2 replicas (seeded, deterministic ops); the loss falls over 8 steps and the BatchNorm
    moving statistics (auto momentum) have converged: the end-of-training check passes."""
    images, masks = dataset
    run = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, str(images), str(masks), str(tmp_path / "cache"), str(run)],
        capture_output=True, text=True, timeout=240, cwd=PROJECT, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 logical CPUs" in result.stdout
    log = (run / "log.txt").read_text()
    assert "strategy MirroredStrategy with 2 replicas" in log
    assert read_json(run / "state.json")["status"] == "done"
    history = read_history(run / "history.csv")
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    assert "BatchNorm check" in log


@pytest.mark.slow
def test_mixed_precision_on_trains_on_cpu(tmp_path, dataset, eager):
    """One epoch in mixed_float16 at 32 px: the CPU runs float16 convolutions' gradients without oneDNN's
    kernels (about 4 times slower per pixel than float32), so this run's images are a quarter of the others'."""
    images, masks = dataset
    run = tmp_path / "run"
    size = SIZE // 2
    try:
        train(tiny_config(images, masks, tmp_path / "cache", size, epochs=1, mixed_precision="on"), run)
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    log = (run / "log.txt").read_text()
    assert "precision mixed_float16" in log
    assert read_json(run / "state.json")["status"] == "done"
    history = read_history(run / "history.csv")
    assert len(history) == 1 and math.isfinite(history[0]["loss"])
    from moleseg.network.io import load_keras_model

    model = load_keras_model(run / "model.keras")
    assert model.get_layer("probabilities").dtype_policy.compute_dtype == "float32"
    output = np.asarray(model(np.zeros((1, size, size, 3), np.float32), training=False))
    assert output.dtype == np.float32 and output.shape == (1, size, size, 3)
    np.testing.assert_allclose(output.sum(axis=-1), 1.0, atol=1e-3)


@pytest.mark.slow
def test_shipped_build_installs_evaluates_and_recalibrates(tmp_path, monkeypatch, eager):
    """``make models`` end to end on a tiny recipe: train, strip, install, evaluate, record; then
    ``--calibrate-only`` chooses the decision again from the run's validation split."""
    from moleseg.tools import shipped, shipped_calibration, shipped_recipes

    data = tmp_path / "data"
    lesion_dataset(data / "set", n=10, seed=2)
    lesion_dataset(data / "test", n=3, seed=3)
    recipe = dict(images=["set/images"], masks=["set/masks"], recipe={"test": ["test"]},
                  model=dict(backbone="resnet18", input_size=SIZE, decoder_width=16, aspp_rates=[1, 2, 3], dropout=0.0),
                  weights="none", epochs=2, batch_size=4, augment=[], validation_split=0.3, train_fm_images=2,
                  cache_dir=str(tmp_path / "cache"), bn_momentum=0.01, seed=5, name="tiny")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.config.json").write_text(json.dumps(recipe))
    monkeypatch.setattr(shipped_recipes, "MODELS_DIR", tmp_path / "models")
    monkeypatch.setattr(shipped_recipes, "RUNS_DIR", tmp_path / "runs")

    record = shipped.build_shipped("tiny", data)
    model = tmp_path / "models" / "tiny.keras"
    assert model.is_file() and (tmp_path / "runs" / "shipped-tiny" / "model.keras").is_file()
    assert model.stat().st_size < (tmp_path / "runs" / "shipped-tiny" / "model.keras").stat().st_size  # no optimizer
    saved = json.loads((tmp_path / "models" / "tiny.json").read_text())
    assert saved["evaluation"]["test"]["model"]["n"] == 3 and saved["evaluation"]["test"]["classical"]["n"] == 3
    assert 0.0 <= saved["evaluation"]["test"]["model"]["fm"]["mean"] <= 1.0
    assert saved["wall_seconds"] > 0 and saved["config"]["epochs"] == 2 == record["config"]["epochs"]
    info = read_model_info(model)
    assert info["calibration"]["n_images"] == 3  # 30 % of 10 pairs, chosen at the end of training
    assert saved["calibration"]["lesion_threshold"] == info["lesion_threshold"]

    again = shipped_calibration.calibrate_shipped("tiny", data)
    assert again["calibration"]["calibration"]["table"] == info["calibration"]["table"]  # same split, same answer
    assert again["wall_seconds"] == saved["wall_seconds"]  # the training's record is kept


@pytest.mark.slow
def test_model_records_training_hashes_so_a_renamed_copy_is_found(tmp_path, finished_run):
    """The model file holds the SHA-256 of its training and validation images; evaluating a renamed copy of
    one in another folder reports the overlap, and the held-out test split of the same folder does not."""
    import hashlib
    import shutil

    from moleseg.core.dataset import image_sha256
    from moleseg.core.imageio import read_image
    from moleseg.engine.overlap import training_overlap
    from moleseg.network.trainsetup import split_of

    config, run = finished_run.config, finished_run.run
    info = read_model_info(run / "model.keras")
    train_pairs, validation_pairs, test_pairs = split_of(config)
    seen = [*train_pairs, *validation_pairs]  # each image's file bytes and decoded pixels
    expected = sorted({hashlib.sha256(pair.image.read_bytes()).hexdigest() for pair in seen}
                      | {image_sha256(read_image(pair.image)) for pair in seen})
    assert info["training"]["image_sha256"] == expected and len(expected) == 16
    assert all(len(digest) == 64 for digest in expected)

    elsewhere = tmp_path / "clinic"
    elsewhere.mkdir()
    copy = elsewhere / "visit-2026-05-06.png"
    shutil.copy(train_pairs[0].image, copy)
    new = elsewhere / "new.png"
    shutil.copy(test_pairs[0].image, new)  # an unseen image (the test split), also renamed
    overlap = training_overlap(info, [copy, new, test_pairs[1].image])
    assert overlap.images == (copy,) and (overlap.count, overlap.total) == (1, 3)
    assert overlap.warning().startswith("1 of 3 evaluated images were used to train this model")


@pytest.mark.slow
def test_a_fine_tuning_resumes_without_the_model_it_started_from(tmp_path, dataset, eager):
    """A resumed training reads its network, weights, solver and frozen BatchNorm layers from its own last.keras:
    the model file it was fine-tuned from (its ``weights`` option) is not read again, so a run resumes after that
    file is gone (moved, deleted, on a drive no longer mounted), with the layers its start froze still frozen."""
    import shutil

    from moleseg.network.bnrescue import all_layers

    images, masks = dataset
    train(tiny_config(images, masks, tmp_path / "cache", epochs=1), tmp_path / "source_run")
    source = tmp_path / "source.keras"
    shutil.copyfile(tmp_path / "source_run" / "model.keras", source)
    run = tmp_path / "run"
    train(tiny_config(images, masks, tmp_path / "cache", epochs=1, weights=str(source)), run)
    # 6 training pairs: the 29 BatchNorm layers, each with the source's trained statistics, are frozen
    assert "29 BatchNorm layers keep the statistics loaded with the weights (frozen)" in (run / "log.txt").read_text()
    source.unlink()
    trainer = Trainer(tiny_config(images, masks, tmp_path / "cache", epochs=2, weights=str(source)), run)
    trainer.prepare(resume=True)
    batchnorm = [layer for layer in all_layers(trainer.model) if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(batchnorm) == 29 and not any(layer.trainable for layer in batchnorm)
    train(tiny_config(images, masks, tmp_path / "cache", epochs=2, weights=str(source)), run, resume=True)
    assert [row["epoch"] for row in read_history(run / "history.csv")] == [1.0, 2.0]
    assert "resuming after epoch 1" in (run / "log.txt").read_text()


def test_a_rescue_read_from_the_model_file_keeps_the_frozen_batchnorm_statistics(tmp_path, monkeypatch):
    """The BatchNorm rescue re-estimates the layers training moved, not those a small dataset's training kept
    frozen with the statistics it started from: read from the model file (the best epoch was not the last), its
    network's frozen layers are frozen as saved, as the network in memory's are."""
    from synthetic import TINY_MODEL_SIZE, tiny_model_file

    from moleseg.network import bnrescue
    from moleseg.network.io import load_keras_model, save_model

    path = tiny_model_file(tmp_path)
    model = load_keras_model(path)
    batchnorm = [layer for layer in bnrescue.all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    encoder = [layer for layer in batchnorm if not layer.name.startswith(("aspp", "decoder"))]
    for layer in encoder:  # as freeze_loaded_batchnorm leaves them: statistics of their own, frozen
        layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.25, np.float32))
        layer.trainable = False
    save_model(model, path, read_model_info(path))
    checks = iter([True, False])

    def check(model, images, labels, log):  # the first check finds the statistics lagging, the second fine
        if next(checks):
            raise TrainingError("lagging")

    monkeypatch.setattr(bnrescue, "check_batchnorm", check)
    images = np.random.default_rng(1).uniform(0, 255, (2, TINY_MODEL_SIZE, TINY_MODEL_SIZE, 3)).astype(np.float32)
    said: list[str] = []
    bnrescue.ensure_batchnorm(path, (images, images), lambda: images, said.append)
    assert (len(batchnorm), len(encoder)) == (29, 15)
    assert said == ["BatchNorm moving statistics had not converged: 14 layers re-estimated from 2 training images"]
    rescued = {layer.name: layer for layer in bnrescue.all_layers(load_keras_model(path))}
    for layer in encoder:
        np.testing.assert_array_equal(rescued[layer.name].moving_mean.numpy(), 0.25)
