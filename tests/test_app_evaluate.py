"""The Evaluate page: FM per image, the statistics table, worst images, and the comparison of runs."""

from __future__ import annotations

import json
import threading
import zipfile

import numpy as np

from app_helpers import app_test, run_until, texts
from synthetic import make_dataset
from moleseg.app.ui import PAGE_FILES, plain_markdown
from moleseg.app import evaluation
from moleseg.core.imageio import read_mask
from moleseg.engine.runs import write_json

PAGE = PAGE_FILES["evaluate"]


def summary_frame(at):
    return next(frame.value for frame in at.dataframe if "metric" in frame.value.columns)


def test_the_classical_segmenter_on_a_small_set(app_folders, monkeypatch, tmp_path):
    dataset = make_dataset(tmp_path / "test", count=5, size=80)
    at = app_test(PAGE)
    at.selectbox(key="evaluate_model").set_value("classical").run()
    at.text_input(key="evaluate_folder").set_value(str(dataset)).run()
    at.number_input(key="evaluate_worst").set_value(2).run()
    at.button(key="evaluate_run").click().run()
    run_until(at, lambda at: any(metric.label == "Mean FM" for metric in at.metric))  # in the background
    assert not at.exception and not at.error
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Images"] == "5" and float(metrics["Mean FM"]) > 0.9
    table = summary_frame(at)
    assert list(table["metric"]) == [evaluation.METRIC_LABELS[key] for key in ("fm", "cm", "cr", "jaccard", "hd95",
                                                                               "border_fm")]
    assert {"classical mean", "classical std", "classical min", "classical max"} <= set(table.columns)
    assert evaluation.BORDER_FM_TEXT in texts(at.caption)  # what "border band FM" measures, under the table
    assert len(at.get("plotly_chart")) == 1
    assert len(at.get("image")) == 2  # the two worst images with their overlays


def test_the_training_overlap_warning_is_a_sentence(app_folders, monkeypatch, tmp_path):
    from moleseg.engine.overlap import TrainingOverlap

    dataset = make_dataset(tmp_path / "test", count=2, size=60)
    monkeypatch.setattr(evaluation, "training_overlap", lambda info, images: TrainingOverlap(
        tuple(images), len(images), ("train/images",), True))  # every image was a training image
    at = app_test(PAGE)
    at.selectbox(key="evaluate_model").set_value("classical").run()
    at.text_input(key="evaluate_folder").set_value(str(dataset)).run()
    at.button(key="evaluate_run").click().run()
    run_until(at, lambda at: any(metric.label == "Mean FM" for metric in at.metric))
    (warning,) = [text for text in texts(at.warning) if "used to train" in text]
    assert warning.startswith("All evaluated images were used to train this model") and warning.endswith(".")


def test_an_evaluation_survives_a_widget_touch_and_a_page_switch(app_folders, monkeypatch, tmp_path):
    dataset = make_dataset(tmp_path / "test", count=3, size=64)
    gate = threading.Event()  # holds the evaluation until the page has been touched and left
    evaluate = evaluation.evaluate_with_baseline
    monkeypatch.setattr(evaluation, "evaluate_with_baseline",
                        lambda *args, **kwargs: gate.wait(30) and evaluate(*args, **kwargs))
    at = app_test(PAGE)
    at.selectbox(key="evaluate_model").set_value("classical").run()
    at.text_input(key="evaluate_folder").set_value(str(dataset)).run()
    at.checkbox(key="evaluate_hd95").set_value(False).run()
    at.button(key="evaluate_run").click().run()
    assert len(at.get("progress")) == 1 and not at.metric  # running: a progress bar, no result yet
    at.number_input(key="evaluate_worst").set_value(1).run()  # a widget touch
    assert len(at.get("progress")) == 1 and not at.exception
    at.switch_page(PAGE_FILES["prepare"]).run()
    assert not at.get("progress")
    at.switch_page(PAGE).run()
    assert len(at.get("progress")) == 1
    gate.set()
    run_until(at, lambda at: any(metric.label == "Mean FM" for metric in at.metric))
    assert not at.get("progress") and not at.exception and not at.error
    from moleseg.core.classical import ClassicalSegmenter
    from moleseg.core.pairing import pair_folders

    expected = evaluate(ClassicalSegmenter(), pair_folders(dataset / "images", dataset / "masks").pairs,
                        with_hd95=False, worst_count=4)
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Images"] == "3" and metrics["Mean FM"] == f"{expected['summary']['fm']['mean']:.4f}"
    assert len(at.get("image")) == 3  # the worst images asked for when it started (4, of 3 pairs)


def test_a_missing_test_set_is_one_clear_error(app_folders, monkeypatch, tmp_path):
    at = app_test(PAGE)
    worst = at.number_input(key="evaluate_worst")  # the page offers the evaluation's own default and limit
    assert (worst.value, worst.max) == (evaluation.WORST_SHOWN, evaluation.WORST_SHOWN_MAX) == (4, 20)
    at.text_input(key="evaluate_folder").set_value(str(tmp_path / "none")).run()
    at.button(key="evaluate_run").click().run()
    assert not at.exception
    assert texts(at.error) == [plain_markdown(f"{tmp_path / 'none'} is not inside the data folders this server offers")]


def _fake_run(runs, name, solver, fm_mean, minutes):
    run = runs / name
    run.mkdir()
    with zipfile.ZipFile(run / "model.keras", "w") as archive:  # metadata only: listed without TensorFlow
        archive.writestr("moleseg.json", json.dumps({"name": name, "n_classes": 3, "input_size": 256}))
    write_json(run / "config.json", {"solver": solver, "batch_size": 8, "learning_rate": 0.001,
                                     "augment": ["rotation"], "model": {"backbone": "mobilenetv2",
                                                                        "architecture": "deeplabv3plus"}})
    write_json(run / "state.json", {"epoch": 30, "best_val_fm": fm_mean, "status": "done",
                                    "training_seconds": minutes * 60})
    write_json(run / "evaluation.json", {"fm": {"mean": fm_mean, "std": 0.05, "min": 0.7, "max": 0.97}})


def test_runs_are_compared_side_by_side(app_folders, monkeypatch, tmp_path):
    _fake_run(app_folders["runs"], "adam-run", "adam", 0.91, 12)
    _fake_run(app_folders["runs"], "sgdm-run", "sgdm", 0.88, 20)
    at = app_test(PAGE)
    assert not at.exception
    assert any(label.startswith("run adam-run") for label in at.selectbox(key="evaluate_model").options)
    table = next(frame.value for frame in at.dataframe if "solver" in frame.value.columns)
    assert set(table["run"]) == {"adam-run", "sgdm-run"}
    assert {"backbone", "epochs", "batch_size", "learning_rate", "augmentation", "test_fm_mean",
            "training_minutes"} <= set(table.columns)
    assert sorted(table["solver"]) == ["adam", "sgdm"]


def test_summary_rows_put_the_baseline_beside_the_model():
    summary = {"n": 2, "fm": {"mean": 0.9, "std": 0.1, "min": 0.8, "max": 1.0}}
    baseline = {"n": 2, "fm": {"mean": 0.7, "std": 0.1, "min": 0.6, "max": 0.8}}
    rows = evaluation.summary_rows(summary, baseline, model_name="net")
    assert rows == [{"metric": evaluation.METRIC_LABELS["fm"], "net mean": 0.9, "net std": 0.1, "net min": 0.8,
                     "net max": 1.0, "classical baseline mean": 0.7, "classical baseline std": 0.1,
                     "classical baseline min": 0.6, "classical baseline max": 0.8}]


def test_evaluate_with_baseline_scores_both_on_the_same_pairs(tmp_path):
    from moleseg.core.classical import ClassicalSegmenter
    from moleseg.core.pairing import pair_folders

    dataset = make_dataset(tmp_path / "test", count=3, size=64)
    pairs = pair_folders(dataset / "images", dataset / "masks").pairs
    calls = []
    result = evaluation.evaluate_with_baseline(ClassicalSegmenter(), pairs, baseline=ClassicalSegmenter(),
                                               with_hd95=False, worst_count=1,
                                               progress=lambda done, total, what: calls.append(what))
    assert result["summary"]["n"] == result["baseline"]["n"] == 3
    assert result["summary"]["fm"] == result["baseline"]["fm"]
    assert len(result["worst"]) == len(result["pictures"]) == 1
    assert calls[0] == "classical" and calls[-1] == "baseline classical"
    (name, picture), = result["pictures"]
    truth = read_mask(next(pair.mask for pair in pairs if pair.image.name == name))
    outline = np.all(picture == evaluation.TRUTH_COLOR, axis=-1)  # the true lesion outlined in magenta
    assert evaluation.TRUTH_COLOR == (255, 0, 255) and "magenta" in evaluation.WORST_CAPTION
    assert outline.any() and truth[outline].all()


def test_the_evaluate_page_compares_with_another_model_on_the_corrections(app_folders, monkeypatch, tmp_path):
    import numpy as np

    from moleseg.core.dataset import save_pair

    corrections = tmp_path / "corrections"
    monkeypatch.setenv("MOLESEG_CORRECTIONS_DIR", str(corrections))
    mask = np.zeros((40, 50), bool)
    mask[10:30, 10:40] = True
    save_pair(corrections, "mole", np.full((40, 50, 3), 180, np.uint8), mask, {"status": "corrected by hand"})
    with zipfile.ZipFile(app_folders["models"] / "dermoscopy.keras", "w") as archive:
        archive.writestr("moleseg.json", json.dumps({"name": "dermoscopy", "n_classes": 3, "input_size": 64}))
    with zipfile.ZipFile(app_folders["models"] / "cells.keras", "w") as archive:  # another kind: not offered
        archive.writestr("moleseg.json", json.dumps({"name": "cells", "n_classes": 2, "input_size": 64}))
    at = app_test(PAGE_FILES["evaluate"])
    at.selectbox(key="evaluate_model").set_value("classical").run()
    at.button(key="evaluate_use_corrections").click().run()
    assert at.text_input(key="evaluate_folder").value == str(corrections)
    compare = at.selectbox(key="evaluate_compare")
    assert compare.options == ["no other model", "dermoscopy (shipped, dermoscopy, 3 classes)"]
    compare.set_value(str(app_folders["models"] / "dermoscopy.keras")).run()
    assert at.checkbox(key="evaluate_baseline").disabled
    assert not at.exception


def test_the_model_beside_the_evaluated_one_is_the_chosen_one_or_the_classical_baseline_of_its_kind():
    from moleseg.app.models import ModelChoice, classical_choice

    network = ModelChoice(spec="/models/cells.keras", label="cells", kind="shipped", n_classes=2)
    other = ModelChoice(spec="/runs/tuned/model.keras", label="tuned", kind="run", n_classes=2)
    assert evaluation.baseline_choice(network, 2, compare=other, with_baseline=True) == (other, "tuned")
    beside, name = evaluation.baseline_choice(network, 2, compare=None, with_baseline=True)
    assert (beside.spec, beside.kind, name) == ("classical2", "classical", "classical baseline")
    assert beside == classical_choice(2) and beside.label == "classical baseline (cells, 2 classes, no network)"
    assert evaluation.baseline_choice(network, 2, compare=None, with_baseline=False) == (None, "classical baseline")
    classical = classical_choice(3)
    assert evaluation.baseline_choice(classical, 3, compare=None, with_baseline=True) == (None, "classical baseline")


def test_file_names_in_a_shared_test_set_draw_no_link_under_the_worst_images(app_folders, tmp_path):
    # a data root is shared: a file name there is anyone's text, and st.image's caption reads markdown
    import shutil

    from moleseg.app import ui

    name = "[Sign in again](https:evil.example).png"
    dataset = make_dataset(tmp_path / "test", count=1, size=64)
    for folder in ("images", "masks"):
        shutil.move(dataset / folder / "m0.png", dataset / folder / name)
    at = app_test(PAGE)
    at.selectbox(key="evaluate_model").set_value("classical").run()
    at.text_input(key="evaluate_folder").set_value(str(dataset)).run()
    at.checkbox(key="evaluate_hd95").set_value(False).run()
    at.button(key="evaluate_run").click().run()
    run_until(at, lambda at: any(metric.label == "Mean FM" for metric in at.metric))
    assert not at.exception and not at.error
    [caption] = [image.caption for element in at.get("image") for image in element.proto.imgs]
    fm = float(next(metric.value for metric in at.metric if metric.label == "Mean FM"))
    assert caption == f"{ui.plain_markdown(name)}: FM {fm:.3f}"
    assert all("Sign in again](" not in text for text in texts(at.caption) + texts(at.markdown))


def test_file_names_in_a_refused_test_set_draw_no_link(app_folders, tmp_path):
    from moleseg.app import ui

    name = "[Sign in again](https:evil.example).png"
    dataset = make_dataset(tmp_path / "test", count=2, size=64)
    (dataset / "images" / name).write_bytes((dataset / "images" / "m0.png").read_bytes())
    for path in (dataset / "masks").iterdir():
        path.rename(path.with_name("z" + path.name))  # no name matches, and the counts differ: refused
    at = app_test(PAGE)
    at.selectbox(key="evaluate_model").set_value("classical").run()
    at.text_input(key="evaluate_folder").set_value(str(dataset)).run()
    at.button(key="evaluate_run").click().run()
    assert not at.exception
    [error] = texts(at.error)
    assert ui.plain_markdown(name) in error and "Sign in again](" not in error


def test_the_worst_pictures_are_kept_and_shown_at_the_display_size(tmp_path):
    # up to WORST_SHOWN_MAX pictures, held with the result and encoded for the browser at each rerun: at full size
    # a test set of 25-megapixel images held 20 x 75 MB and encoded each again on every touch of the page
    from PIL import Image

    from synthetic import mole_image
    from moleseg.core.classical import ClassicalSegmenter
    from moleseg.core.pairing import pair_folders
    from moleseg.core.render import DISPLAY_SIDE_PX

    image, mask = mole_image(90, DISPLAY_SIDE_PX + 300)
    for folder, array in (("images", image), ("masks", mask.astype(np.uint8) * 255)):
        (tmp_path / folder).mkdir()
        Image.fromarray(array).save(tmp_path / folder / "wide.png")
    pairs = pair_folders(tmp_path / "images", tmp_path / "masks").pairs
    [(name, picture)] = evaluation.worst_overlays(ClassicalSegmenter(), pairs, ["wide.png"])
    assert name == "wide.png" and picture.shape == (72, DISPLAY_SIDE_PX, 3)
