"""Study files (YAML) and configuration files (JSON) from untrusted hands: deep nesting, numbers of thousands
of digits and duplicate keys are each refused with one message naming the file, never a bare parser error
and never a silent last-one-wins."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from moleseg.cli import main
from moleseg.core.configfile import read_config_file
from moleseg.engine.studyplan import StudyError, load_study

DATA = "name: t\ndata: {root: ., images: i, masks: m, split: {by: group, pattern: '(a)', test: [a]}}\n"
DIGITS = sys.get_int_max_str_digits() + 1


def _study(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(DATA + text, encoding="utf-8")
    return path


@pytest.mark.parametrize("nested", ["[" * 20_000 + "]" * 20_000, "{a: " * 10_000 + "1" + "}" * 10_000],
                         ids=["lists", "mappings"])
def test_a_deeply_nested_study_file_is_refused_by_name(tmp_path, nested):
    path = _study(tmp_path, f"base: {nested}\nfactors: {{solver: [adam]}}\n")
    with pytest.raises(StudyError) as caught:
        load_study(path)
    assert str(caught.value) == f"{path}: not a valid study file (nested too deeply)"


def test_a_number_of_too_many_digits_in_a_study_file_is_refused_by_name(tmp_path):
    path = _study(tmp_path, f"base: {{epochs: {'9' * DIGITS}}}\nfactors: {{solver: [adam]}}\n")
    with pytest.raises(StudyError) as caught:
        load_study(path)
    assert str(caught.value) == (f"{path}: not a valid study file (a number of more than {DIGITS - 1} digits)")


def test_a_duplicate_key_in_a_study_file_is_refused_not_overridden(tmp_path):
    path = _study(tmp_path, "repeats: 1\nfactors: {solver: [adam]}\nrepeats: 900\n")
    with pytest.raises(StudyError) as caught:
        load_study(path)
    assert str(caught.value) == (f"{path}: not a valid study file (the key 'repeats' is given twice, on lines 3 "
                                 "and 5)")
    nested = _study(tmp_path, "base: {epochs: 2,\n  epochs: 400}\nfactors: {solver: [adam]}\n")
    with pytest.raises(StudyError, match=r"the key 'epochs' is given twice, on lines 3 and 4\)$"):
        load_study(nested)


def test_a_study_file_without_duplicates_still_loads(tmp_path):
    study = load_study(_study(tmp_path, "repeats: 2\nbase: {epochs: 2}\nfactors: {solver: [adam, sgdm]}\n"))
    assert (study.repeats, study.base, list(study.factors["solver"])) == (2, {"epochs": 2}, ["adam", "sgdm"])


def test_the_command_line_names_the_study_file(tmp_path, capsys):
    path = _study(tmp_path, "base: " + "[" * 50_000 + "\n")
    assert main(["study", "--config", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"error: {path}: not a valid study file (nested too deeply)"


@pytest.mark.parametrize(("text", "reason"), [
    ("[" * 100_000, "nested too deeply"),
    ('{"epochs": ' + "9" * DIGITS + "}", f"a number of more than {DIGITS - 1} digits"),
    ('{"epochs": 1,\n "epochs": 400}', "the key 'epochs' is given twice"),
], ids=["nested", "digits", "duplicate"])
def test_a_malformed_configuration_file_is_refused_by_name(tmp_path, text, reason):
    path = tmp_path / "config.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as caught:
        read_config_file(path)
    assert str(caught.value) == f"{path}: not a JSON configuration file ({reason})"


def test_a_configuration_file_without_duplicates_still_reads(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"epochs": 3, "model": {"n_classes": 2}}', encoding="utf-8")
    assert read_config_file(path)["epochs"] == 3


DEEP = "[" * 100_000


def test_run_records_profiles_and_provenance_nested_too_deeply_are_refused_by_name(tmp_path):
    from moleseg.core.dataset import pair_paths, read_provenance
    from moleseg.core.devices import read_profiles
    from moleseg.engine.runs import RunRecordError, read_json, read_record

    path = tmp_path / "state.json"
    path.write_text(DEEP, encoding="utf-8")
    assert read_json(path, default="none") == "none"
    with pytest.raises(RunRecordError) as caught:
        read_record(path)
    assert str(caught.value) == f"{path}: damaged, not a readable JSON file (nested too deeply)"
    with pytest.raises(ValueError) as caught:
        read_profiles(path)
    assert str(caught.value) == f"{path}: not a device profiles file (nested too deeply)"
    provenance = pair_paths(tmp_path, "a")[2]
    provenance.parent.mkdir(parents=True)
    provenance.write_text(DEEP, encoding="utf-8")
    assert read_provenance(tmp_path, "a") is None
