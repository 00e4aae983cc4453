"""Tests of k-fold cross-validation read out of fold models (moleseg.engine.crossval) and of its step in the
shipped models' tool (``python -m moleseg.tools.shipped --crossval``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synthetic import RedChannelSegmenter, TruthSegmenter, disk, disk_pairs  # four disks, the last blurred
from moleseg.core.imagewrite import write_png
from moleseg.core.metrics import scores
from moleseg.core.modelinfo import ModelInfo
from moleseg.core.pairing import Pair
from moleseg.engine.crossval import Fold, cross_validate, score_fold

RADIUS_PX = 12


def _blurred() -> np.ndarray:
    """The last image of ``disk_pairs``: a blurred disk, probability 0.5 at 9.6 px from the centre and 0.3 at
    12 px (the truth)."""
    rows, cols = np.ogrid[:40, :40]
    distance = np.sqrt((rows - 20) ** 2 + (cols - 20) ** 2)
    return np.clip((RADIUS_PX - distance) / RADIUS_PX + 0.3, 0, 1)


def test_out_of_fold_figures_by_hand(tmp_path):
    pairs = disk_pairs(tmp_path)
    folds = [Fold("fold 0", RedChannelSegmenter(), pairs[:2]), Fold("fold 1", RedChannelSegmenter(), pairs[2:])]
    result = cross_validate(folds, thresholds=(0.3, 0.5), baseline=TruthSegmenter(), share=0.25)

    truth = disk((40, 40), (20, 20), RADIUS_PX)
    red = np.round(_blurred() * 255) / 255
    blurred_argmax = float(scores(red > 0.5, truth)["fm"])       # class 1 wins only above 0.5
    blurred_at_03 = float(scores(red >= 0.3, truth)["fm"])
    assert blurred_argmax < 0.85 < 0.95 < blurred_at_03
    assert {(row["cleanup_variant"], row["lesion_threshold"]) for row in result.decision_table} == {
        (variant, threshold) for variant in (None, "largest", "all_components") for threshold in (None, 0.3, 0.5)}
    table = {row["lesion_threshold"]: row for row in result.decision_table if row["cleanup_variant"] is None}
    assert table[None]["fm"] == pytest.approx((3 + blurred_argmax) / 4)
    assert table[None]["min_fm"] == pytest.approx(blurred_argmax)
    assert table[0.3]["fm"] == pytest.approx((3 + blurred_at_03) / 4)
    assert result.lesion_threshold == 0.3 and result.fm["mean"] == pytest.approx(table[0.3]["fm"])

    assert [row["fold"] for row in result.per_image] == ["fold 0"] * 2 + ["fold 1"] * 2
    assert [fold["n_images"] for fold in result.folds] == [2, 2]
    assert result.folds[0]["fm"]["mean"] == pytest.approx(1.0)
    assert result.folds[1]["fm"]["mean"] == pytest.approx((1 + blurred_at_03) / 2)
    assert result.baseline_fm["mean"] == pytest.approx(1.0) and result.n_worse_than_baseline == 0
    # the least confident quarter is the blurred image, which is not bad any more at threshold 0.3
    first = result.confidence.per_image[0]
    assert first["image"] == "3.png" and first["check_border"] and result.confidence.share == 0.25
    assert result.confidence.n_bad == 0
    assert [row["check_border"] for row in result.per_image] == [False, False, False, True]
    record = result.to_dict()
    assert "per_image" not in record["confidence"] and "per_image" not in record["decision"]["confidence_calibration"]
    assert record["n_folds"] == 2 and record["n_images"] == 4 and record["confidence"]["threshold"] == pytest.approx(
        result.confidence.threshold)
    assert "2-fold cross-validation, 4 images out of fold (threshold 0.30, largest cleanup)" in result.summary()
    # what a model trained on every pair is installed with
    info = ModelInfo.from_dict({"name": "all pairs", **record["decision"]})
    assert info.lesion_threshold == 0.3 and info.test_time_augmentation is False
    assert info.confidence_threshold == pytest.approx(result.confidence.threshold)
    assert record["decision"]["calibration"]["method"] == "2-fold cross-validation, out of fold"
    assert record["decision"]["calibration"]["baseline_fm"] == pytest.approx(table[None]["fm"])


def test_arg_max_stays_without_a_real_gain(tmp_path):
    crisp = disk_pairs(tmp_path)[:3]
    result = cross_validate([Fold("a", RedChannelSegmenter(), crisp[:1]), Fold("b", RedChannelSegmenter(), crisp[1:])],
                            thresholds=(0.3, 0.5))
    assert result.lesion_threshold is None and result.fm["mean"] == pytest.approx(1.0)
    assert result.baseline_fm is None and result.n_worse_than_baseline is None


def test_a_cleanup_variant_that_gains_out_of_fold_goes_into_the_decision(tmp_path):
    """Each image holds the true disk and a 3 x 3 px speck of false lesion: the fold models keep every
    component (the rule their training chose), the "largest" variant drops the speck and wins."""
    truth = disk((40, 40), (20, 20), RADIUS_PX)
    image = np.zeros((40, 40, 3), np.uint8)
    image[..., 0] = truth * 255
    image[1:4, 1:4, 0] = 255
    pairs = []
    for index in range(2):
        image_path, mask_path = tmp_path / f"{index}.png", tmp_path / f"{index}_mask.png"
        write_png(image_path, image)
        write_png(mask_path, truth)
        pairs.append(Pair(image=image_path, mask=mask_path, rule="test", image_size=None, mask_size=None))
    trained = {"cleanup_variant": "all_components"}  # the rule both fold trainings chose
    result = cross_validate([Fold("a", RedChannelSegmenter(trained), pairs[:1]),
                             Fold("b", RedChannelSegmenter(trained), pairs[1:])], thresholds=(0.5,))
    assert result.compared_with["cleanup_variant"] == "all_components" and result.rules == ["all_components"] * 2
    table = {(row["cleanup_variant"], row["lesion_threshold"]): row["fm"] for row in result.decision_table}
    with_speck = float(scores(image[..., 0] > 127, truth)["fm"])
    assert table[None, None] == pytest.approx(with_speck) and table["all_components", None] == pytest.approx(with_speck)
    assert table["largest", None] == pytest.approx(1.0)
    assert result.lesion_threshold is None and result.cleanup["cleanup_variant"] == "largest"
    assert result.cleanup["cleanup"]["largest_component"] is True
    assert result.decision()["cleanup"] == result.cleanup["cleanup"] and "largest cleanup" in result.summary()


def test_images_no_fold_validated_are_named(tmp_path):
    pairs = disk_pairs(tmp_path)
    result = cross_validate([Fold("a", RedChannelSegmenter(), pairs[:2]), Fold("b", RedChannelSegmenter(), pairs[2:3])],
                            thresholds=(0.5,), all_pairs=pairs)
    assert result.not_validated == ["3.png"] and result.n_images == 3
    assert "3 images out of fold (1 not validated)" in result.summary()


def test_folds_must_not_overlap_nor_be_empty(tmp_path):
    pairs = disk_pairs(tmp_path)
    with pytest.raises(ValueError, match="1.png is in both a and b"):
        cross_validate([Fold("a", RedChannelSegmenter(), pairs[:2]), Fold("b", RedChannelSegmenter(), pairs[1:])])
    with pytest.raises(ValueError, match="fold b has no validation pairs"):
        cross_validate([Fold("a", RedChannelSegmenter(), pairs), Fold("b", RedChannelSegmenter(), [])])
    with pytest.raises(ValueError, match="at least one fold"):
        cross_validate([])


def test_scores_kept_from_an_earlier_call_give_the_same_figures(tmp_path):
    pairs = disk_pairs(tmp_path)
    folds = [Fold("a", RedChannelSegmenter(), pairs[:2]), Fold("b", RedChannelSegmenter(), pairs[2:])]
    fresh = cross_validate(folds, thresholds=(None, 0.3), baseline=TruthSegmenter(), share=0.25)
    kept = json.loads(json.dumps(score_fold(folds[1], (None, 0.3), baseline=TruthSegmenter())))  # kept as JSON
    assert [row["image"] for row in kept] == ["2.png", "3.png"]
    assert {(entry["cleanup_variant"], entry["lesion_threshold"]) for entry in kept[1]["by"]} == {
        (variant, threshold) for variant in (None, "largest", "all_components") for threshold in (None, 0.3)}
    again = cross_validate(folds, thresholds=(None, 0.3), baseline=TruthSegmenter(), share=0.25, scored={"b": kept})
    assert again.to_dict() == fresh.to_dict()
    with pytest.raises(ValueError, match="the scores given for a are not of its 2 validation images"):
        cross_validate(folds, thresholds=(None, 0.3), scored={"a": kept})
    with pytest.raises(ValueError, match=r"the scores given for b \(2.png\) are not of the cleanup variants and "
                                         r"thresholds asked for"):
        cross_validate(folds, thresholds=(None, 0.5), scored={"b": kept})
    one_variant_less = [dict(row, by=row["by"][1:]) for row in kept]
    with pytest.raises(ValueError, match=r"the scores given for b \(2.png\) are not of the cleanup variants and "
                                         r"thresholds asked for"):
        cross_validate(folds, thresholds=(None, 0.3), scored={"b": one_variant_less})
    for broken in ({**kept[0]["by"][0], "fm": "high"}, {"fm": 1.0}, "scores"):
        malformed = [dict(row, by=[broken, *row["by"][1:]]) for row in kept]
        with pytest.raises(ValueError, match=r"^the scores given for b \(2.png\) are not scores of cleanup variants "
                                             r"and thresholds$"):
            cross_validate(folds, thresholds=(None, 0.3), scored={"b": malformed})
    with pytest.raises(ValueError, match=r"the scores given for b \(2.png\) have no baseline FM"):
        cross_validate(folds, thresholds=(None, 0.3), baseline=TruthSegmenter(),
                       scored={"b": [{key: value for key, value in row.items() if key != "baseline_fm"} for row in kept]})


def test_the_shipped_tool_scores_a_fold_once_per_model_file(tmp_path, monkeypatch):
    from moleseg.engine import crossval
    from moleseg.tools.shipped_calibration import kept_fold_scores

    fold = Fold("fold-0", RedChannelSegmenter(), disk_pairs(tmp_path)[:2])
    model = tmp_path / "model.keras"
    model.write_bytes(b"weights of one training")
    first = kept_fold_scores(fold, model, (None, 0.3), tmp_path / "scores", TruthSegmenter())
    (kept,) = (tmp_path / "scores").iterdir()
    assert kept.name.startswith("fold-0-") and [row["image"] for row in first] == ["0.png", "1.png"]
    monkeypatch.setattr(crossval, "score_fold", lambda *args, **kwargs: pytest.fail("scored again"))
    assert kept_fold_scores(fold, model, (None, 0.3), tmp_path / "scores", TruthSegmenter()) == first
    model.write_bytes(b"weights of another training")  # a retrained fold is scored again
    monkeypatch.setattr(crossval, "score_fold", lambda *args, **kwargs: [{"image": "scored again"}])
    assert kept_fold_scores(fold, model, (None, 0.3), tmp_path / "scores", TruthSegmenter()) == [{"image": "scored again"}]
    assert len(list((tmp_path / "scores").iterdir())) == 2


def test_the_shipped_tool_needs_one_model_for_crossval(tmp_path, capsys):
    from moleseg.tools.shipped import main

    assert main(["--data", str(tmp_path), "--crossval", str(tmp_path / "run")]) == 2
    assert "--crossval needs one --only NAME" in capsys.readouterr().err


def test_the_shipped_tool_names_a_run_that_is_not_finished(tmp_path, capsys, monkeypatch):
    import sys

    from moleseg.tools.shipped import main

    for module in ("moleseg.network.data", "moleseg.network.train"):  # the runs are checked before TensorFlow
        monkeypatch.setitem(sys.modules, module, None)
    (tmp_path / "fold0").mkdir()
    assert main(["--data", str(tmp_path), "--only", "dermoscopy", "--crossval", str(tmp_path / "fold0")]) == 2
    error = capsys.readouterr().err
    assert f"{tmp_path / 'fold0'}: not a finished training run (no config.json or model.keras)" in error
    assert "Traceback" not in error


def _fold_run(folder: Path, config: dict) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.keras").write_bytes(b"not read: the options are checked first")
    return folder


def test_the_shipped_tool_takes_folds_of_its_own_recipe_only(tmp_path, capsys):
    from moleseg.tools.shipped import main
    from moleseg.tools.shipped_recipes import recipe_config, recipe_options

    recipe = recipe_config("dermoscopy", tmp_path).to_dict()
    fold = {**recipe, "validation_split": 0.2, "validation_fold": 0, "run_dir": "elsewhere", "calibrate": False,
            "model": {**recipe["model"], "bn_momentum": 0.9326}}  # derived from the steps at training time
    assert recipe_options(fold) == recipe_options(recipe)           # the split and the run may differ
    other = _fold_run(tmp_path / "other", {**fold, "learning_rate": recipe["learning_rate"] / 10})
    assert main(["--data", str(tmp_path), "--only", "dermoscopy", "--crossval", str(other)]) == 2
    assert f"{other}: not a fold of the dermoscopy recipe (learning_rate differ from dermoscopy.config.json)" \
        in capsys.readouterr().err
    first, again = _fold_run(tmp_path / "a", fold), _fold_run(tmp_path / "b", fold)
    assert main(["--data", str(tmp_path), "--only", "dermoscopy", "--crossval", str(first), str(again)]) == 2
    assert f"{again}: a second run of validation fold 0" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_on_every_pair_is_installed_with_its_recipes_crossval_decision(tmp_path, monkeypatch, capsys):
    """``--install`` of a run without a validation split takes the lesion and confidence thresholds (and the
    cleanup rule) recorded by ``--crossval`` for the same recipe; for another recipe it warns and keeps none."""
    pytest.importorskip("tensorflow")
    import shutil

    from moleseg.core.modelinfo import read_info
    from moleseg.tools import shipped, shipped_recipes
    from moleseg.network.build import ModelConfig, build_model
    from moleseg.network.io import save_model

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(shipped_recipes.recipe_path("dermoscopy"), models)
    monkeypatch.setattr(shipped_recipes, "MODELS_DIR", models)
    monkeypatch.setattr(shipped, "evaluate_shipped", lambda *args, **kwargs: {})
    monkeypatch.setattr(shipped, "build_shipped_onnx", lambda name, data_dir: {"file": f"{name}.onnx"})
    monkeypatch.setattr(shipped, "confidence_record",
                        lambda name, data_dir, threshold, validation: {"threshold": threshold, "validation": validation})
    run = tmp_path / "all-pairs"
    run.mkdir()
    config = {**shipped_recipes.recipe_config("dermoscopy", tmp_path).to_dict(), "validation_split": 0.0, "run_dir": str(run)}
    (run / "config.json").write_text(json.dumps(config))
    network = ModelConfig(backbone="mobilenetv2", input_size=32, decoder_width=8, aspp_rates=(1, 2, 3))
    save_model(build_model(network, weights="none"), run / "model.keras",
               {"name": "dermoscopy", "n_classes": 3, "input_size": 32, "model": network.to_dict(),
                "cleanup": {"rule": "article"}, "cleanup_variant": "article", "training": {"n_validation": 0}})
    decision = {"test_time_augmentation": False, "lesion_threshold": 0.6, "confidence_threshold": 0.8,
                "calibration": {"fm": 0.95, "n_images": 210}, "confidence_calibration": {"n_images": 210},
                "cleanup": {"rule": "grow_inside"}, "cleanup_variant": "grow_inside"}
    crossval = {"config": shipped_recipes.recipe_options(config), "decision": decision}
    (models / "dermoscopy.json").write_text(json.dumps({"crossval": crossval}))

    record = shipped.install_shipped("dermoscopy", run, 60.0, tmp_path)
    info = read_info(models / "dermoscopy.keras")
    assert info.lesion_threshold == 0.6 and info.confidence_threshold == 0.8
    assert info.cleanup["rule"] == "grow_inside" and record["crossval"] == crossval
    assert record["confidence"] == {"threshold": 0.8, "validation": {"n_images": 210}}

    other = {**crossval, "config": {**crossval["config"], "epochs": 1}}
    (models / "dermoscopy.json").write_text(json.dumps({"crossval": other}))
    capsys.readouterr()
    record = shipped.install_shipped("dermoscopy", run, 60.0, tmp_path)
    assert "no cross-validation of this recipe (make crossval)" in capsys.readouterr().err
    info = read_info(models / "dermoscopy.keras")
    assert info.lesion_threshold is None and info.confidence_threshold is None and "crossval" not in record


def test_the_confidence_from_crossval_needs_a_crossval_record_of_the_installed_recipe(tmp_path, monkeypatch, capsys):
    import shutil

    from moleseg.tools import shipped, shipped_recipes

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(shipped_recipes.recipe_path("dermoscopy"), models)
    monkeypatch.setattr(shipped_recipes, "MODELS_DIR", models)
    (models / "dermoscopy.json").write_text(json.dumps({"config": {"learning_rate": 0.001}}))
    assert shipped.main(["--data", str(tmp_path), "--only", "dermoscopy", "--confidence-from-crossval"]) == 2
    assert (f"{models / 'dermoscopy.json'}: no cross-validation record to choose the confidence threshold from "
            "(python -m moleseg.tools.shipped --only dermoscopy --crossval RUN_DIR...)") in capsys.readouterr().err
    crossval = {"config": {"learning_rate": 0.01}, "per_image": [{"fold": "a", "fm": 0.9, "confidence": 0.5}]}
    (models / "dermoscopy.json").write_text(json.dumps({"config": {"learning_rate": 0.001}, "crossval": crossval}))
    assert shipped.main(["--data", str(tmp_path), "--only", "dermoscopy", "--confidence-from-crossval"]) == 2
    error = capsys.readouterr().err
    assert "the cross-validation is of another recipe than the installed model (learning_rate differ)" in error
    assert "Traceback" not in error
