"""Numbers in words (moleseg.core.words) and the messages built with them: counts in the right number, byte
sizes in a unit that fits, and the command line's refusals worded for what was asked."""

from __future__ import annotations

import zipfile

import pytest

from moleseg import cli
from moleseg.core.archive import ArchiveError, BudgetTally, ZipBudget
from moleseg.core.pairing import split_sizes
from moleseg.core.words import capitalised, count_of, noun_for, size_text


def test_capitalised_raises_the_first_letter_only():
    assert capitalised("another training is running in Moles-V2") == "Another training is running in Moles-V2"
    assert capitalised("") == "" and capitalised("4 images") == "4 images"


def test_a_count_takes_its_noun_in_the_right_number():
    assert [count_of(n, "pair") for n in (0, 1, 2)] == ["0 pairs", "1 pair", "2 pairs"]
    assert count_of(1, "run") == "1 run" and count_of(3, "entry", "entries") == "3 entries"
    assert [noun_for(n, "key") for n in (0, 1, 2)] == ["keys", "key", "keys"]
    assert noun_for(2, "size mismatch", "size mismatches") == "size mismatches"


def test_a_size_takes_the_largest_unit_it_reaches():
    assert size_text(900) == "900 bytes" and size_text(1) == "1 byte"
    assert size_text(1024) == "1 KB" and size_text(12 * 1024 + 100) == "12.1 KB"
    assert size_text(1024**2) == "1 MB" and size_text(int(1.5 * 1024**3)) == "1.5 GB"


def test_a_one_megabyte_budget_is_told_in_megabytes():
    member = zipfile.ZipInfo("big.bin")
    member.file_size, member.compress_size = 2 * 1024**2, 2 * 1024**2
    with pytest.raises(ArchiveError, match=r"^the archive would unpack to more than 1 MB \(at 'big.bin'\)$"):
        BudgetTally(ZipBudget(max_members=4, max_bytes=1024**2)).add(member)


def test_a_split_of_too_few_pairs_says_so_in_the_singular():
    assert split_sizes(5, 0.15) == (4, 1, 0) and split_sizes(10, 0.2, 0.1) == (7, 2, 1)
    with pytest.raises(ValueError, match=r"^1 pair is too few to split off a validation set and keep one to train on$"):
        split_sizes(1, 0.15)
    with pytest.raises(ValueError, match=r"^2 pairs are too few to split off validation and test sets"):
        split_sizes(2, 0.15, 0.2)


def test_prepare_refuses_a_border_of_zero_pixels(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["prepare", "--masks", str(tmp_path), "--out", str(tmp_path / "o"), "--border-width-px", "0"])
    assert stopped.value.code == 2
    assert "--border-width-px: must be at least 1, not 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bench_of_the_classical_baseline_names_it(capsys):
    assert cli.main(["bench", "--model", "classical"]) == 2
    err = capsys.readouterr().err
    assert "--model classical is the classical baseline" in err and "no shipped model found" not in err
    assert cli.main(["bench", "--model", "classical3"]) == 2
    assert "--model classical3 is the classical baseline" in capsys.readouterr().err

