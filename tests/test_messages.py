"""Words that several places show, each written once: a missing folder, a training's cancel and the
benchmark targets' verdicts, pinned as the user reads them."""

from __future__ import annotations

import pytest


def _bench_result(load_before: float, quick: bool = False) -> dict:
    """A benchmark result with the end-to-end time (30 ms) and the app's home page (0.5 s) measured."""
    before = {"load_average": [load_before, 0, 0], "cpu_count": 2, "wall_s": 0.0, "machine_cpu_s": 0.0,
              "own_cpu_s": 0.0}
    after = {"load_average": [0.2, 0, 0], "cpu_count": 2, "wall_s": 100.0, "machine_cpu_s": 10.0,
             "own_cpu_s": 10.0}
    return {"before": before, "after": after, "settings": {"quick": quick}, "end_to_end_ms": 30.0,
            "app": {"settings": {"quick": quick}, "engine_batch12_s": 1.0, "home_s": 0.5}}


def test_a_missing_folder_is_refused_in_the_same_words_by_the_pairing_and_the_dataset_picker(tmp_path):
    from moleseg.core.pairing import PairingError, list_images
    from moleseg.engine.session import dataset_folders

    missing = tmp_path / "nope"
    with pytest.raises(PairingError) as from_pairing:
        list_images(missing)
    with pytest.raises(ValueError) as from_picker:
        dataset_folders(str(missing))
    assert str(from_pairing.value) == str(from_picker.value) == f"folder not found: {missing}"


def test_a_cancelled_training_names_its_last_saved_epoch():
    pytest.importorskip("keras")
    from moleseg.network.train import cancelled_after
    from moleseg.network.trainsetup import TrainingCancelled

    cancel = cancelled_after(3)
    assert isinstance(cancel, TrainingCancelled) and str(cancel) == "training cancelled after epoch 3"


def test_the_engine_and_app_benchmarks_give_the_same_verdicts_in_the_same_words():
    pytest.importorskip("tensorflow")
    from moleseg.tools import bench
    from moleseg.tools.bench_app import app_target_verdicts

    busy, idle, quick = _bench_result(1.5), _bench_result(0.2), _bench_result(0.2, quick=True)
    assert bench.target_verdicts(busy)["end_to_end_ms"] == app_target_verdicts(busy)["home_s"] \
        == bench.NOT_IDLE == "not measured on an idle machine"
    assert bench.target_verdicts(quick)["end_to_end_ms"] == app_target_verdicts(quick)["home_s"] \
        == bench.QUICK_RUN == "quick run"
    assert bench.target_verdicts(idle)["cold_start_s"] == app_target_verdicts(idle)["slider_overlay_s"] \
        == bench.NOT_MEASURED == "not measured"
    assert bench.target_verdicts(idle)["end_to_end_ms"] == app_target_verdicts(idle)["home_s"] == "met"
