"""The one schema of training options (moleseg.core.options): every option reachable from the command line
and the Train page, config files round-trip through ``moleseg train --config``, bad values are refused with a
message naming the option, and the shipped recipes are the configurations shipped.py trained before."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from moleseg.app.ui import PAGE_FILES
from moleseg.cli import build_parser
from moleseg.cli.training import train_config_of
from moleseg.core import config, options
from moleseg.core.backbones import backbones_for
from moleseg.core.configfile import read_config_file
from moleseg.core.modelinfo import ModelFileError, ModelInfo

ROOT = Path(__file__).resolve().parents[1]
#: A value other than the default for each settable option, and its command-line text.
OTHER_VALUES: dict[str, tuple[object, str]] = {
    "images": (["/d/a/images"], "/d/a/images"), "masks": (["/d/a/masks"], "/d/a/masks"),
    "validation_images": (["/d/v/images"], "/d/v/images"), "validation_masks": (["/d/v/masks"], "/d/v/masks"),
    "test_images": (["/d/t/images"], "/d/t/images"), "test_masks": (["/d/t/masks"], "/d/t/masks"),
    "model.architecture": ("unet", "unet"), "model.backbone": ("resnet18", "resnet18"),
    "model.input_size": (320, "320"), "model.n_classes": (2, "2"), "model.separable": (False, None),
    "model.decoder_width": (64, "64"), "model.aspp_rates": ([4, 8, 12], "4,8,12"), "model.dropout": (0.2, "0.2"),
    "weights": ("none", "none"), "border_width_px": (2, "2"), "shape": ("disk", "disk"),
    "closing_radius_px": (3, "3"), "solver": ("sgdm", "sgdm"), "epochs": (5, "5"), "batch_size": (4, "4"),
    "learning_rate": (0.01, "0.01"), "schedule": ("piecewise", "piecewise"), "momentum": (0.8, "0.8"),
    "loss": ("dice_ce", "dice_ce"), "class_weighting": (False, None),
    "augment": (["scale", "colour"], "scale,color"), "rotation_deg": (90.0, "90"), "translation_px": (20.0, "20"),
    "scale_range": (0.15, "0.15"), "colour": (0.25, "0.25"), "hard_case_share": (0.4, "0.4"), "validation_split": (0.2, "0.2"),
    "test_split": (0.1, "0.1"), "validation_fold": (2, "2"), "seed": (11, "11"), "early_stopping_patience": (3, "3"),
    "bn_momentum": (0.5, "0.5"), "strategy": ("mirrored", "mirrored"), "mixed_precision": ("off", "off"),
    "train_fm_images": (4, "4"), "inference": ("tiles", "tiles"), "crops_per_image": (2, "2"),
    "crops_by_area": (True, None), "tile_scale": (2.0, "2"), "colour_constancy": ("shades_of_grey", "shades_of_grey"), "calibrate": (False, None), "cache_dir": ("/c", "/c"), "name": ("n", "n"),
}
#: The recipes shipped.py held before they became models/<name>.config.json (folders relative to the data).
OLD_RECIPES = {
    "dermoscopy": dict(
        folders=["moles/seed/train", "moles/isic2017", "moles/ham10000", "moles/ph2"],
        model=dict(architecture="deeplabv3plus", backbone="mobilenetv2", input_size=320, n_classes=3,
                   separable=True, decoder_width=128, aspp_rates=[4, 8, 12], dropout=0.1),
        weights="imagenet", border_width_px=4, shape="diamond", closing_radius_px=15, solver="adam",
        learning_rate=1e-3, schedule="cosine", epochs=30, batch_size=8, loss="dice_ce", class_weighting=False,
        augment=["rotation", "reflection", "translation", "scale", "colour"], rotation_deg=180.0,
        translation_px=20.0, scale_range=0.1, colour=0.5, validation_split=0.15, seed=7, name="dermoscopy"),
    "cells": dict(
        folders=["cells/dsb2018_brightfield", "cells/dsb2018_fluo"],
        model=dict(architecture="deeplabv3plus", backbone="mobilenetv2", input_size=256, n_classes=2,
                   separable=True, decoder_width=128, aspp_rates=[4, 8, 12], dropout=0.1),
        weights="imagenet", border_width_px=2, shape="diamond", closing_radius_px=3, solver="adam",
        learning_rate=1e-3, schedule="cosine", epochs=40, batch_size=8, loss="dice_ce", class_weighting=False,
        augment=["rotation", "reflection", "translation", "scale", "colour"], rotation_deg=180.0,
        translation_px=20.0, scale_range=0.15, colour=0.5, validation_split=0.2, test_split=0.0, seed=11,
        inference="tiles", crops_per_image=1, crops_by_area=True, name="cells"),
}


def _parse(*arguments: str):
    return build_parser().parse_args(["train", "--out", "/runs/r", *arguments])


def _flags(item: options.Option, value: object, text: str | None) -> list[str]:
    if item.kind == "bool":
        return [item.cli_flag if value else f"--no-{item.cli_flag[2:]}"]
    return [item.cli_flag, text]


def test_every_option_has_a_distinct_other_value_and_the_defaults_are_valid():
    settable = {o.name for o in options.OPTIONS if o.settable}
    assert set(OTHER_VALUES) == settable
    for name, (value, _) in OTHER_VALUES.items():
        item = options.option(name)
        assert value != item.default and item.problems(value) == [], name
        assert item.problems(item.default) == [] and item.group in options.GROUPS and item.help, name
        assert item.widget in options.WIDGETS and (item.widget != "slider" or None not in (item.low, item.high)), name
    assert options.problems(options.defaults(), data=False) == []
    assert options.problems(options.defaults()) == [
        "give at least one training dataset (an images folder and a masks folder)"]


@pytest.mark.parametrize("name", sorted(OTHER_VALUES))
def test_each_option_is_reachable_from_the_command_line(name):
    item = options.option(name)
    value, text = OTHER_VALUES[name]
    config = train_config_of(_parse(*_flags(item, value, text)))
    assert options.get_value(config, name) == value
    expected = options.defaults()
    options.set_value(expected, name, value)
    if name != "name":
        expected["name"] = "r"  # the run folder's name when not given
    assert config == expected  # nothing else moved


@pytest.mark.parametrize("flags, name, value", [
    (["--image-size", "64"], "model.input_size", 64), (["--dense-head"], "model.separable", False),
    (["--no-class-weights"], "class_weighting", False), (["--early-stopping", "4"], "early_stopping_patience", 4),
    (["--no-calibrate"], "calibrate", False), (["--crops-by-area"], "crops_by_area", True),
    (["--classes", "2"], "model.n_classes", 2), (["--augment", "none"], "augment", []),
    (["--bn-momentum", "auto"], "bn_momentum", "auto"),
])
def test_older_flags_still_work(flags, name, value):
    assert options.get_value(train_config_of(_parse(*flags)), name) == value


def test_each_option_has_a_widget_on_the_train_page(app_folders):
    from app_helpers import app_test
    from moleseg.app.trainform import widget_key

    settable = [o for o in options.OPTIONS if o.settable]
    # model.bn_momentum is written by training from bn_momentum, size_reference_px is the unit of the px sizes
    # (older configurations: their input size): neither a flag nor a widget
    assert [o.name for o in options.OPTIONS if not o.settable] == ["model.bn_momentum", "size_reference_px"]
    keys = [widget_key(item) for item in settable if item.name not in dict(options.FOLDER_PAIRS).values()]
    assert len(set(keys)) == len(keys)  # one widget per option (a masks folder shares its images' text area)
    at = app_test(PAGE_FILES["train"])
    assert not at.exception
    classes = options.default("model.n_classes")
    for item in settable:
        key = widget_key(item, classes) if item.name not in dict(options.FOLDER_PAIRS).values() else \
            widget_key(options.option({m: i for i, m in options.FOLDER_PAIRS}[item.name]))
        assert key in at.session_state, f"{item.name}: no widget {key}"
    assert at.number_input(key="train_input_size").min == 32 and at.number_input(key="train_input_size").step == 16
    assert at.slider(key="train_validation_split").max == 0.95  # one step inside the open bound 1
    assert at.number_input(key="train_decoder_width").min == 1


#: A made-up option, for the test that one schema entry is everything.
WARMUP = options.Option(name="warmup_epochs", group="training", kind="int", default=2,
                        help="epochs of linear learning-rate warm-up", low=0, high=10, unit="epochs")


def test_one_schema_entry_is_a_flag_a_widget_a_config_key_and_a_study_factor(monkeypatch, app_folders, tmp_path,
                                                                             capsys):
    from app_helpers import app_test
    from moleseg.core.trainconfig import TrainConfig
    from moleseg.engine.studyplan import check_study, load_study

    monkeypatch.setattr(options, "OPTIONS", (*options.OPTIONS, WARMUP))
    # a flag of moleseg train, with the schema's range in its help and its parse errors
    assert train_config_of(_parse("--warmup-epochs", "3"))["warmup_epochs"] == 3
    assert train_config_of(_parse())["warmup_epochs"] == 2
    with pytest.raises(SystemExit):
        _parse("--help")
    assert "--warmup-epochs INT epochs of linear learning-rate warm-up (allowed: 0 <= value <= 10; unit: epochs; " \
        "default: 2)" in " ".join(capsys.readouterr().out.split())
    # a key of the typed configuration, checked
    assert TrainConfig(images=["i"], masks=["m"], warmup_epochs=5).warmup_epochs == 5
    assert TrainConfig.from_dict({"images": ["i"], "masks": ["m"]}).to_dict()["warmup_epochs"] == 2
    with pytest.raises(ValueError, match=r"^warmup epochs must be a whole number \(0 <= value <= 10, in epochs\), "
                                         r"not 11$"):
        TrainConfig(images=["i"], masks=["m"], warmup_epochs=11)
    # a study factor, checked by the study's validation
    study_file = tmp_path / "warmup.yaml"
    study_file.write_text("factors:\n  warmup_epochs: [0, 4, 12]\n")
    assert check_study(load_study(study_file)) == [
        "12 (warmup_epochs): warmup epochs must be a whole number (0 <= value <= 10, in epochs), not 12"]
    # a Train-page widget with the schema's range and default, in its group's expander
    at = app_test(PAGE_FILES["train"])
    assert not at.exception
    widget = at.number_input(key="train_warmup_epochs")
    assert (widget.min, widget.max, widget.value, widget.label) == (0, 10, 2, "Warmup epochs")
    widget.set_value(7).run()
    assert at.session_state["train_config"]["warmup_epochs"] == 7


def test_a_config_round_trips_through_config_json_and_train_config(tmp_path):
    from moleseg.core.trainconfig import TrainConfig

    values = options.defaults()
    for name, (value, _) in OTHER_VALUES.items():
        options.set_value(values, name, value)
    config = TrainConfig.from_dict(values)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**config.to_dict(), "run_dir": "/somewhere"}))
    again = TrainConfig.from_dict(train_config_of(_parse("--config", str(path))))
    assert again == config
    # flags given explicitly override the file
    overridden = train_config_of(_parse("--config", str(path), "--epochs", "9", "--image-size", "64"))
    assert (overridden["epochs"], overridden["model"]["input_size"], overridden["seed"]) == (9, 64, 11)


def test_relative_folders_of_a_config_file_are_under_the_data_root(tmp_path):
    path = tmp_path / "recipes" / "r.config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"images": ["set/images", "/abs/images"], "masks": ["set/masks", "/abs/masks"]}))
    config = train_config_of(_parse("--config", str(path)))
    assert config["images"] == [str(path.parent / "set/images"), "/abs/images"]
    config = train_config_of(_parse("--config", str(path), "--data-root", str(tmp_path / "data")))
    assert config["masks"] == [str(tmp_path / "data" / "set/masks"), "/abs/masks"]


@pytest.mark.parametrize("name, value, words", [
    ("solver", "lbfgs", "solver must be one of sgdm, rmsprop, adam, not 'lbfgs'"),
    ("model.input_size", 100, "input size must be a whole number (32 <= value <= 1024, a multiple of 16, in px), not 100"),
    ("epochs", 0, "epochs must be a whole number (1 <= value <= 1000, in epochs), not 0"),
    ("model.aspp_rates", [6, 12], "aspp rates must be 3 whole numbers, not [6, 12]"),
    ("bn_momentum", 1.5, "bn momentum must be 'auto' or a number (0 < value < 1), not 1.5"),
    ("augment", ["twist"], "unknown augmentation twist; choose from rotation, reflection, translation, scale, colour, zoom_in, pink, vignette, halo"),
    ("colour", 2.0, "colour must be a number (0 <= value <= 1), not 2.0"),
    ("crops_by_area", "yes", "crops by area must be true or false, not 'yes'"),
])
def test_invalid_values_are_refused_naming_the_option(name, value, words):
    config = {**options.defaults(), "images": ["i"], "masks": ["m"]}
    options.set_value(config, name, value)
    assert options.problems(config) == [words]


def test_an_on_off_setting_is_refused_in_the_same_words_by_the_options_and_the_cleanup():
    from moleseg.core.cleanup import CleanupSettings

    assert options.not_true_or_false("fill holes", 1) == "fill holes must be true or false, not 1"
    with pytest.raises(ValueError) as refused:
        CleanupSettings(fill_holes="yes")
    assert str(refused.value) == options.not_true_or_false("fill_holes", "yes")


def test_the_command_line_refuses_bad_values_naming_the_option(tmp_path, capsys):
    from moleseg.cli import main

    assert main(["train", "--images", str(tmp_path), "--masks", str(tmp_path), "--out", str(tmp_path / "r"),
                 "--dropout", "1.5"]) == 2
    assert "dropout must be a number (0 <= value < 1), not 1.5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parse("--aspp-rates", "4,x")
    assert "aspp rates: '4,x' is not a comma list of whole numbers" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"solvr": "adam"}))
    with pytest.raises(ValueError, match="bad.json: unknown option solvr$"):
        train_config_of(_parse("--config", str(bad)))


@pytest.mark.parametrize("name, flag, value, limit", [
    ("epochs", "--epochs", 5000, config.MAX_EPOCHS), ("batch_size", "--batch-size", 512, config.MAX_BATCH_SIZE),
    ("model.input_size", "--input-size", 2048, config.MAX_INPUT_SIZE_PX),
])
def test_a_config_file_or_a_flag_asking_more_than_the_ceiling_is_refused_naming_it(tmp_path, capsys, name, flag,
                                                                                   value, limit):
    """Before, any number passed: 5000 epochs or a 2048 px input from a config.json or a flag would have run."""
    from moleseg.app.trainform import _number_bounds
    from moleseg.cli import main

    item = options.option(name)
    assert item.high == limit and _number_bounds(item, int)[1] == limit  # the Train page's widget stops there
    assert item.problems(limit) == [] and item.problems(value) != []
    words = f"{item.label} must be a whole number ({item.range_text()}, in {item.unit}), not {value}"
    path = tmp_path / "config.json"
    values: dict = {}
    options.set_value(values, name, value)
    path.write_text(json.dumps(values))
    out = tmp_path / "r"
    assert main(["train", "--config", str(path), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: {path}: {words}\n"
    assert main(["train", "--images", str(tmp_path), "--masks", str(tmp_path), "--out", str(out), flag,
                 str(value)]) == 2
    assert capsys.readouterr().err == f"error: {words}\n"
    assert not out.exists()


@pytest.mark.parametrize("name", sorted(OLD_RECIPES))
def test_the_recipe_files_are_the_configurations_the_shipped_models_were_trained_with(name, tmp_path):
    """``moleseg train --config models/NAME.config.json`` gives the configuration recorded in
    ``models/NAME.json`` by the training of the shipped model (folders relative to the data root), and every
    option that shipped.py's recipes set before the one-house change still has its value."""
    recorded = json.loads((ROOT / "models" / f"{name}.json").read_text(encoding="utf-8"))
    config = train_config_of(_parse("--config", str(ROOT / "models" / f"{name}.config.json"),
                                    "--data-root", str(tmp_path)))
    expected = options.merged(options.with_size_reference(recorded["config"]))
    # the data root of the training that made it is replaced by this test's
    expected["images"] = [str(tmp_path / folder / "images") for folder in recorded["train_folders"]]
    expected["masks"] = [str(tmp_path / folder / "masks") for folder in recorded["train_folders"]]
    for item in options.OPTIONS:  # values the training sets itself (BatchNorm momentum) are not the recipe's
        if not item.settable:
            options.set_value(expected, item.name, options.get_value(config, item.name))
    assert config == expected
    old = dict(OLD_RECIPES[name])
    assert [str(tmp_path / folder / "images") for folder in old.pop("folders")] == config["images"]
    assert {key: value for key, value in options.merged(old).items() if key in old} == {key: config[key] for key in old}


def test_model_info_reads_old_files_and_round_trips():
    old = {"name": "m", "n_classes": 3, "input_size": 256, "model": {"backbone": "resnet18"},
           "training": {"solver": "sgdm", "epoch": 4}, "checkpoint": False, "cleanup": {"closing_radius_px": 9}}
    info = ModelInfo.from_dict(old)
    assert (info.name, info.n_classes, info.inference, info.tile_scale, info.lesion_threshold) == \
        ("m", 3, "resize", 1.0, None)
    assert info.to_dict() == {**old, "inference": "resize", "tile_scale": 1.0, "colour_constancy": "none",
                              "test_time_augmentation": False}  # others kept
    assert ModelInfo.from_dict({**old, "tile_scale": 2}).tile_scale == 2.0
    # a file without its training configuration (the shipped ones): fine-tuning keeps how images were prepared
    prepared = ModelInfo.from_dict({**old, "inference": "tiles", "tile_scale": 2, "colour_constancy": "shades_of_grey"})
    assert (prepared.train_config["tile_scale"], prepared.train_config["colour_constancy"]) == (2.0, "shades_of_grey")
    for field, bad, reason in (("tile_scale", "big", "must be a number, not 'big'"),
                               ("tile_scale", float("nan"), "must be a number, not nan"),
                               ("tile_scale", 9, r"tile scale must be a number \(0.25 <= value <= 4"),
                               ("input_size", [2], r"must be a number, not \[2\]"),
                               ("colour_constancy", "retinex", "colour constancy must be one of"),
                               ("n_classes", 4, "n classes must be one of 3, 2, not 4")):
        with pytest.raises(ModelFileError, match=reason):
            ModelInfo.from_dict({**old, field: bad})
    config = info.train_config
    assert (config["solver"], config["model"]["backbone"], config["closing_radius_px"]) == ("sgdm", "resnet18", 9)
    assert config["epochs"] == options.default("epochs")
    assert options.problems({**config, "images": ["i"], "masks": ["m"]}) == []
    assert ModelInfo.from_dict({}).n_classes is None and ModelInfo.from_dict({"name": None}).name == "model"


def test_px_sizes_are_given_at_the_reference_input_and_scaled_to_the_actual_one(tmp_path):
    assert options.default("size_reference_px") == 256
    assert options.scaled_px(4, 64) == 1 and options.scaled_px(15, 64) == 4 and options.scaled_px(15, 512) == 30
    assert options.scaled_px(0, 64) == 0 and options.scaled_px(1, 32) == 1  # zero stays zero, else at least 1 px
    # an older configuration file (no size_reference_px) gave its sizes in px of its own input: same meaning
    older = tmp_path / "config.json"
    older.write_text(json.dumps({"model": {"input_size": 64}, "border_width_px": 4, "closing_radius_px": 15}))
    values = read_config_file(older)
    assert values["size_reference_px"] == 64
    assert options.scaled_px(values["border_width_px"], 64, values["size_reference_px"]) == 4
    newer = tmp_path / "new.json"
    newer.write_text(json.dumps({"model": {"input_size": 64}, "border_width_px": 4, "size_reference_px": 256}))
    assert read_config_file(newer)["size_reference_px"] == 256
    assert "size_reference_px" not in options.with_size_reference({"solver": "adam"})  # no size: nothing to say


def test_the_typed_configuration_is_the_schema_s_and_refuses_unknown_keys():
    from moleseg.core.trainconfig import ModelConfig, TrainConfig

    config = TrainConfig(images=["i"], masks=["m"], augment=[" Color", "rotation", ""], rotation_deg=90,
                         model={"aspp_rates": [4, 8, 12]})
    assert (config.augment, config.rotation_deg, config.model.aspp_rates) == (["colour", "rotation"], 90.0, (4, 8, 12))
    assert config.to_dict()["model"]["aspp_rates"] == [4, 8, 12] and isinstance(config.model, ModelConfig)
    assert TrainConfig.from_dict({**config.to_dict(), "run_dir": "/r", "recipe": {}}) == config
    known = ", ".join(o.name for o in options.top_level())
    with pytest.raises(ValueError, match=f"^unknown option solvr; known: {known}, model$"):
        TrainConfig.from_dict({"images": ["i"], "masks": ["m"], "solvr": "adam"})
    with pytest.raises(ValueError, match="^unknown model option depth; known: architecture, "):
        TrainConfig.from_dict({"images": ["i"], "masks": ["m"], "model": {"depth": 3}})
    with pytest.raises(AttributeError, match="TrainConfig has no option 'solvr'"):
        config.solvr  # noqa: B018
    # one message per broken rule, the same wherever the configuration is checked
    with pytest.raises(ValueError, match="^give at least one training dataset .*; tile scale 2 needs inference "
                                         "'tiles' [(]with 'resize' every image is resized to the input size[)]$"):
        TrainConfig(tile_scale=2.0)


def test_a_training_without_a_name_is_named_by_its_network():
    from moleseg.core.trainconfig import training_name

    unnamed = options.defaults()
    assert not unnamed["name"] and training_name(unnamed) == "deeplabv3plus-mobilenetv2"
    assert training_name({**unnamed, "name": "moles v2"}) == "moles v2"


@pytest.mark.parametrize("architecture, backbone, refused", [
    ("fpn", "inceptionresnetv2", True), ("unet", "inceptionresnetv2", True), ("linknet", "xception", True),
    ("unet", "vgg16_hed", False), ("fpn", "vgg16_hed", True), ("deeplabv3plus", "inceptionresnetv2", False),
    ("linknet", "resnet18", False)])
def test_an_architecture_is_refused_on_a_backbone_it_is_not_built_on(architecture, backbone, refused):
    """segmentation-models' Inception-ResNet has Lambda layers, which Keras's safe mode refuses to load: a unet, fpn
    or linknet on it trained for hours and could never be opened; refused with the choices before anything starts."""
    found = options.problems({"images": ["i"], "masks": ["m"],
                              "model": {"architecture": architecture, "backbone": backbone}})
    expected = [f"model.architecture {architecture} is not built on {backbone}; its backbones: "
                + ", ".join(backbones_for(architecture))] if refused else []
    assert found == expected
    assert "inceptionresnetv2" not in backbones_for("unet") and "vgg16_hed" in backbones_for("unet")
