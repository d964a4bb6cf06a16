import pytest
from hypothesis import given
from hypothesis import strategies as st

from moslim_pl.prefix import PrefixError, format_prefix, parse_prefix, strip_prefix
from moslim_pl.schema import Dimension

DIMS = (
    Dimension("helpfulness", 0, 4),
    Dimension("verbosity", 1, 5),
    Dimension("harm-less_ness", 0, 9, bins=3),
)


def test_parse_two_tags():
    targets, prompt = parse_prefix("<helpfulness 4> <verbosity 1> Explain tides.", DIMS)
    assert targets == {"helpfulness": 4, "verbosity": 1}
    assert list(targets) == ["helpfulness", "verbosity"]
    assert prompt == "Explain tides."


def test_no_prefix_and_non_tag_brackets_are_prompt_text():
    assert parse_prefix("Explain tides.", DIMS) == ({}, "Explain tides.")
    assert parse_prefix("<div> is an html tag?", DIMS) == ({}, "<div> is an html tag?")
    assert parse_prefix("<helpfulness 2> <b>bold</b>", DIMS) == ({"helpfulness": 2}, "<b>bold</b>")


def test_coarsened_dimension_levels():
    # 0..9 in 3 bins: levels 0, 1, 2
    assert parse_prefix("<harm-less_ness 2> x", DIMS)[0] == {"harm-less_ness": 2}
    with pytest.raises(PrefixError, match="level 3 outside 0..2"):
        parse_prefix("<harm-less_ness 3> x", DIMS)


@pytest.mark.parametrize(
    ("text", "tag", "position", "reason"),
    [
        ("<helpfulnes 4> hi", "<helpfulnes 4>", 0, "unknown dimension 'helpfulnes'"),
        ("<helpfulness 4> <verbosity 0> hi", "<verbosity 0>", 16, "level 0 outside 1..5"),
        ("<helpfulness 4> <helpfulness 3> hi", "<helpfulness 3>", 16, "requested twice"),
        ("<helpfulness four> hi", "<helpfulness four>", 0, "expected '<name level>'"),
        ("<helpfulness> hi", "<helpfulness>", 0, "expected '<name level>'"),
        ("<helpfulness  4> hi", "<helpfulness  4>", 0, "expected '<name level>'"),
        ("<helpfulness 4><verbosity 2> hi", "<helpfulness 4>", 0, "followed by one space"),
    ],
)
def test_errors_name_tag_and_position(text, tag, position, reason):
    with pytest.raises(PrefixError) as info:
        parse_prefix(text, DIMS)
    assert info.value.tag == tag
    assert info.value.position == position
    message = str(info.value)
    assert reason in message and repr(tag) in message and f"position {position}" in message
    assert "\n" not in message


def test_format_and_strip():
    assert format_prefix({"helpfulness": 4, "verbosity": 1}, "Hi") == "<helpfulness 4> <verbosity 1> Hi"
    assert format_prefix({}, "Hi") == "Hi"
    assert format_prefix({"verbosity": 2}, "") == "<verbosity 2>"
    assert strip_prefix("<verbosity 2> Hi there", DIMS) == "Hi there"


@st.composite
def _targets(draw):
    chosen = draw(st.lists(st.sampled_from(DIMS), unique_by=lambda d: d.name, max_size=len(DIMS)))
    return {d.name: draw(st.integers(d.min_level, d.max_level)) for d in chosen}


@given(_targets(), st.text().filter(lambda s: not s.startswith("<")))
def test_round_trip(targets, prompt):
    assert parse_prefix(format_prefix(targets, prompt), DIMS) == (targets, prompt)
