"""Untrusted ``.keras`` files: one that is not a network moleseg builds is refused before Keras reads it, in one
line naming the file; a ``moleseg.json`` whose input size is beyond the option's range, or that contradicts its
network, is refused (tests/test_untrusted_networks.py: a forged ``config.json`` never reaches Keras)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from moleseg.core.modelinfo import ModelFileError, read_model_info, write_model_info


def _keras_file(path, config):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.0.0", "date_saved": "2026-01-01"}))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", b"")
        archive.writestr("moleseg.json", "{}")
    return path


@pytest.mark.parametrize("config", [
    {"module": "builtins", "class_name": "eval", "config": "x" * 100_000},
    {"module": "os", "class_name": "system", "config": {"command": "touch PWNED"}},
], ids=["long", "os.system"])
def test_a_refused_network_is_told_in_one_bounded_line(tmp_path, config):
    from moleseg.network.io import load_keras_model

    path = _keras_file(tmp_path / "evil.keras", config)
    with pytest.raises(ModelFileError) as caught:
        load_keras_model(path)
    message = str(caught.value)  # refused by moleseg.network.configguard before Keras reads it
    assert message == f"evil.keras: the network is of class {config['class_name']!r}, not a functional Keras model"
    assert not (tmp_path / "PWNED").exists() and not list(tmp_path.glob("PWNED*"))


SHIPPED = Path(__file__).resolve().parents[1] / "models" / "dermoscopy.keras"


def _with_info(tmp_path: Path, **changes: object) -> Path:
    """A copy of the shipped dermoscopy model (a 320 px, three-class network) with ``changes`` in its moleseg.json."""
    path = tmp_path / "d.keras"
    write_model_info(path, {**read_model_info(SHIPPED), **changes}, source=SHIPPED)
    return path


def test_an_input_size_beyond_the_option_s_range_is_refused_before_any_image_is_resized_to_it(tmp_path):
    from moleseg.network.loading import load_segmenter

    path = _with_info(tmp_path, input_size=12_000)  # each image resized to 12000 px square: 5.9 GB, 38 s
    with pytest.raises(ModelFileError) as caught:
        load_segmenter(path)
    assert str(caught.value) == ("d.keras: its moleseg.json: input size must be a whole number (32 <= value <= 1024, "
                                 "a multiple of 16, in px), not 12000")


@pytest.mark.parametrize(("changes", "said", "taken"), [
    ({"input_size": 512}, "an input of 512 px", "an input of 320 px"),
    ({"n_classes": 2}, "2 classes", "3 classes"),
], ids=["input size", "classes"])
def test_a_moleseg_json_that_contradicts_its_network_is_refused(tmp_path, changes, said, taken):
    from moleseg.network.loading import load_segmenter

    with pytest.raises(ModelFileError) as caught:
        load_segmenter(_with_info(tmp_path, **changes))
    assert str(caught.value) == f"d.keras: its moleseg.json says {said}, its network has {taken}"
