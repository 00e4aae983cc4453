"""The size of a split pattern once the regex package writes out its counted repetitions (it compiled
``a{4294967294}`` so, taking all the memory)."""

from __future__ import annotations

import pytest

from moleseg.core.patternsize import spelled_out_size


@pytest.mark.parametrize(("pattern", "size"), [
    (r"a{4294967294}", 4294967294),
    (r"(?:(?:a{1000}){1000}){1000}", 1002002000),  # the group prefixes "?:" count too: a bound, not the count
    (r"\d{4}-\d{2}-\d{2}", 10),
    (r"^(\w+)_(\d+)_(\d+)", 9),
    (r"^(b_frame_[0-9]+|frame_[0-9]+)_", 21),  # each alternative counts
    (r"a{2,}b{,3}c{1,4}", 9),  # the larger count given
    (r"[(]{5}", 5),  # a parenthesis in a set opens no group
    (r"[]({5}]", 1),  # a "]" first in a set is a member
    (r"[^]]{7}", 7),
    (r"[[:alpha:]]{9}", 9),
    (r"[[:](?:a{10}){10}:]", 123),  # "[:" without a class name: the set ends at the first "]"
    (r"\({100}", 100),
    (r"\p{L}{3}", 3),  # a property's braces are no count
    (r"(?#(){100}", 5),  # a comment ends at the first ")"
    (r"( {100}){100}", 10000),
])
def test_counted_repetitions_multiply_what_they_repeat(pattern, size):
    assert spelled_out_size(pattern) == size


@pytest.mark.parametrize(("pattern", "flag"), [("(?x)a{3}", "x"), ("(?ix:a)", "x"), ("(?V1)[[a]--b]", "V1")])
def test_verbose_mode_and_version1_are_refused(pattern, flag):
    with pytest.raises(ValueError) as caught:
        spelled_out_size(pattern)
    assert str(caught.value) == f"the flag {flag} is not for split patterns"
    assert spelled_out_size("(?P<x>a)(?i:b)") == 10 # a group named x, another flag: counted
