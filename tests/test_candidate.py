"""The candidate-recipe comparison: options that differ, and the paired figures on the common images."""

import json

import pytest

from moleseg.core.config import MODELS_DIR
from moleseg.tools.candidate import paired_comparison, recipe_change


def test_recipe_change_names_only_the_options_that_differ():
    shipped = json.loads((MODELS_DIR / "dermoscopy.config.json").read_text())
    candidate = {**shipped, "epochs": 12, "images": ["/elsewhere/images"], "name": "other",
                 "model": {**shipped["model"], "backbone": "vgg16_hed", "input_size": 256}}
    assert recipe_change(shipped, candidate) == {"epochs": 12, "model.backbone": "vgg16_hed",
                                                 "model.input_size": 256}
    assert recipe_change(shipped, shipped) == {}


def test_paired_comparison_counts_by_hand():
    candidate = {"IMD001": 0.90, "IMD002": 0.80, "ISIC_1": 0.95, "seed_1": 0.70, "only_ours": 0.1}
    shipped = {"IMD001": 0.85, "IMD002": 0.86, "ISIC_1": 0.95, "seed_1": 0.90, "only_shipped": 0.2}
    result = paired_comparison(candidate, shipped)
    assert result["n_images"] == 4
    assert result["mean_fm"] == pytest.approx((0.90 + 0.80 + 0.95 + 0.70) / 4)
    assert result["shipped_mean_fm"] == pytest.approx((0.85 + 0.86 + 0.95 + 0.90) / 4)
    assert (result["under_0.85"], result["shipped_under_0.85"]) == (2, 0)
    assert (result["better_by_0.02"], result["worse_by_0.02"]) == (1, 2)
    assert (result["min_fm"], result["shipped_min_fm"]) == (0.70, 0.85)
    assert result["per_source"]["PH2"] == {"n": 2, "mean_fm": pytest.approx(0.85), "shipped_mean_fm": pytest.approx(0.855)}
    assert result["per_source"]["seed"]["n"] == 1 and 0 < result["wilcoxon_p"] <= 1


def test_paired_comparison_without_common_images_says_so():
    with pytest.raises(ValueError, match="no image in common"):
        paired_comparison({"a": 0.9}, {"b": 0.9})
