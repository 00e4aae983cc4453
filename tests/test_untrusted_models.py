"""A ``.keras`` file whose network Keras refuses: the refusal is one line of bounded length naming the file, not
Keras's message with the file's whole configuration in it (100 kB and three lines for a crafted file)."""

from __future__ import annotations

import json
import zipfile

import pytest

from moleseg.core.errors import MAX_REASON_CHARACTERS
from moleseg.core.modelinfo import ModelFileError


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
    message = str(caught.value)
    assert message.startswith("evil.keras: cannot load this model (TypeError: ")
    assert "\n" not in message and len(message) <= len("evil.keras: cannot load this model ()") + MAX_REASON_CHARACTERS
    assert "x" * 1000 not in message
    assert not (tmp_path / "PWNED").exists() and not list(tmp_path.glob("PWNED*"))
