"""Fuzzing (hypothesis, 10,000 examples each; slow): the prefix parser and the row validation raise only
their documented errors, and valid prefixes round-trip.

Run with ``python -m pytest -m slow tests/test_fuzz.py``. Any exception other than a ``MoslimError``
(``PrefixError``, ``SchemaError``, ``DataError``) fails a test: a user must never see a traceback for text
or rows they wrote.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from moslim_pl.data.sources import Columns, DataError, check_label, check_text, parse_label, read_rows
from moslim_pl.data.types import ALL_HEADS, IGNORE_LABEL
from moslim_pl.errors import MoslimError
from moslim_pl.prefix import PrefixError, format_prefix, parse_prefix, strip_prefix
from moslim_pl.schema import Dimension, SchemaError

FUZZ = settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

pytestmark = pytest.mark.slow

# ------------------------------------------------------------------------------------------ strategies
NAME = st.from_regex(r"[A-Za-z0-9_\-]{1,10}", fullmatch=True).filter(lambda n: n.strip("_-"))


@st.composite
def dimensions(draw: st.DrawFn, max_size: int = 4) -> tuple[Dimension, ...]:
    names = draw(st.lists(NAME, min_size=1, max_size=max_size, unique=True))
    dims = []
    for name in names:
        low = draw(st.integers(-5, 5))
        high = low + draw(st.integers(1, 6))
        bins = draw(st.none() | st.integers(2, high - low + 1))
        dims.append(Dimension(name, low, high, bins=bins))
    return tuple(dims)


@st.composite
def targets(draw: st.DrawFn, dims: tuple[Dimension, ...]) -> dict[str, int]:
    chosen = draw(st.lists(st.sampled_from(dims), unique_by=lambda d: d.name, max_size=len(dims)))
    return {d.name: draw(st.integers(d.min_level, d.max_level)) for d in chosen}


TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
# pieces that look like tags, nearly-tags and prompt text, so the parser's branches are reached
PIECE = st.one_of(
    TEXT,
    st.sampled_from(["<", ">", " ", "  ", "\n", "\t", "<>", "< >", "-", "0", "00", "-1", "<div>", "\u00a0"]),
    st.builds(lambda n, lv: f"<{n} {lv}>", NAME, st.integers(-20, 20)),
    st.builds(
        lambda n, lv: f"<{n} {lv}>", NAME, st.from_regex(r"-?[0-9\u0660-\u0669]{1,30}", fullmatch=True)
    ),
    st.builds(lambda n, sp, lv: f"<{n}{sp}{lv}>", NAME, st.sampled_from(["", "  ", "\t", "\n"]), TEXT),
)


@st.composite
def prefix_like(draw: st.DrawFn, dims: tuple[Dimension, ...]) -> str:
    known = st.builds(
        lambda d, lv: f"<{d.name} {lv}>", st.sampled_from(dims), st.integers(-10, 10)
    )  # known names, levels in and out of range
    pieces = draw(st.lists(st.one_of(PIECE, known), max_size=8))
    return "".join(pieces)


# ---------------------------------------------------------------------------------------- prefix parser
@FUZZ
@given(data=st.data())
def test_parse_prefix_raises_only_prefix_errors(data: st.DataObject) -> None:
    dims = data.draw(dimensions())
    text = data.draw(st.one_of(TEXT, prefix_like(dims)))
    try:
        levels, prompt = parse_prefix(text, dims)
    except PrefixError as err:
        assert "\n" not in str(err) and str(err).startswith("bad prefix tag ")
        assert 0 <= err.position < len(text) and err.tag in text
        return
    assert text.endswith(prompt)
    by_name = {d.name: d for d in dims}
    for name, level in levels.items():
        assert by_name[name].min_level <= level <= by_name[name].max_level
    if not levels:
        assert prompt == text
    # what parsed is canonical once formatted: parsing it again gives the same levels and prompt
    assert parse_prefix(format_prefix(levels, prompt), dims) == (levels, prompt)
    assert strip_prefix(text, dims) == prompt


@FUZZ
@given(data=st.data())
def test_valid_prefixes_round_trip(data: st.DataObject) -> None:
    dims = data.draw(dimensions())
    requested = data.draw(targets(dims))
    prompt = data.draw(st.one_of(TEXT, prefix_like(dims)))
    try:  # a prompt that itself starts with a tag (or a broken one) is not a prompt the prefix can carry
        own, _ = parse_prefix(prompt, dims)
    except PrefixError:
        own = {"broken": 0}
    assume(not own)
    text = format_prefix(requested, prompt)
    assert parse_prefix(text, dims) == (requested, prompt)
    assert list(parse_prefix(text, dims)[0]) == list(requested)  # the tags' order is kept


@FUZZ
@given(name=st.one_of(NAME, st.text(max_size=6)), low=st.integers(-3, 3), span=st.integers(-1, 4))
def test_a_dimension_that_constructs_can_be_requested(name: str, low: int, span: int) -> None:
    try:
        dim = Dimension(name, low, low + span)
    except SchemaError:
        return
    for level in (dim.min_level, dim.max_level):
        assert parse_prefix(f"<{name} {level}> hi", [dim]) == ({name: level}, "hi")


def test_a_level_too_long_for_int_is_a_prefix_error() -> None:
    # int() refuses more than 4300 digits with a plain ValueError; the parser names the tag instead
    with pytest.raises(PrefixError, match="the level has too many digits"):
        parse_prefix("<a " + "9" * 5000 + "> hi", [Dimension("a")])


# ------------------------------------------------------------------------------------------ row validation
class Table:
    """The part of ``datasets.Dataset`` that ``read_rows`` uses, holding arbitrary Python cells (a real
    Arrow table would reject mixed types before validation sees them)."""

    def __init__(self, columns: dict[str, list]) -> None:
        self.columns = columns

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def select_columns(self, names: list[str]) -> Table:
        return Table({name: self.columns[name] for name in names})

    def to_dict(self) -> dict[str, list]:
        return dict(self.columns)


SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        ["", " ", "N/A", "na", "nan", "NaN", "null", "none", "3", "3.0", " 2 ", "1e3", "inf", "-0"]
    ),
    TEXT,
)
CELL = st.one_of(
    SCALAR, st.lists(SCALAR, max_size=2), st.dictionaries(st.text(max_size=3), SCALAR, max_size=2)
)


@st.composite
def tables(draw: st.DrawFn, dims: tuple[Dimension, ...]) -> Table:
    label_columns = [d.source_column for d in dims]
    label_columns += [f"{c}_{side}" for c in label_columns for side in ("chosen", "rejected")]
    pool = ["prompt", "response", "chosen", "rejected", "pair_dim", *label_columns, "other"]
    names = draw(st.lists(st.sampled_from(pool), unique=True, max_size=len(pool)))
    num_rows = draw(st.integers(0, 4))
    columns = {}
    for name in names:
        if name == "pair_dim":
            cell = st.one_of(CELL, st.sampled_from([d.name for d in dims]))
        elif name in ("prompt", "response", "chosen", "rejected"):
            cell = st.one_of(TEXT, CELL)
        else:
            cell = st.one_of(CELL, st.integers(-8, 12))
        columns[name] = draw(st.lists(cell, min_size=num_rows, max_size=num_rows))
    return Table(columns)


@FUZZ
@given(data=st.data())
def test_read_rows_raises_only_data_errors(data: st.DataObject) -> None:
    dims = data.draw(dimensions(max_size=3))
    table = data.draw(tables(dims))
    pair_column = data.draw(st.sampled_from([None, "pair_dim"]))
    try:
        rows = read_rows(table, dims, Columns(pair_dimension=pair_column), "fuzz")
    except DataError as err:
        assert isinstance(err, MoslimError)
        assert "\n" not in str(err) and str(err).startswith("fuzz")
        return
    assert len(rows) == len(table)
    for row in rows:
        assert all(isinstance(t, str) and t.strip() for t in (row.prompt, *row.responses))
        assert len(row.labels) == len(row.responses) in (1, 2)
        for labels in row.labels:
            assert len(labels) == len(dims)
            for dim, label in zip(dims, labels, strict=True):
                assert label == IGNORE_LABEL or 0 <= label < dim.num_levels
        assert (
            row.pair_dim is None
            if len(row.responses) == 1
            else row.pair_dim in (ALL_HEADS, *range(len(dims)))
        )


@FUZZ
@given(dim=dimensions(max_size=1).map(lambda dims: dims[0]), value=CELL)
def test_one_cell_is_a_label_a_text_or_a_data_error(dim: Dimension, value: object) -> None:
    try:
        label = check_label(dim, value, "row 0, column 'x'")
    except DataError as err:
        assert str(err).startswith("row 0, column 'x': ") and "\n" not in str(err)
    else:
        assert label == IGNORE_LABEL or 0 <= label < dim.num_levels
        raw = parse_label(value)
        assert (raw is None) == (label == IGNORE_LABEL)
        if isinstance(value, float) and not math.isnan(value):
            assert raw == value
    try:
        assert check_text(value, "here") == value
    except DataError as err:
        assert str(err).startswith("here: ")
