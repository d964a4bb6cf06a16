"""Sources: loading, label parsing, row-kind detection, coarsening and one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import datasets
import pytest

from moslim_pl.data.sources import (
    Columns,
    DataError,
    DataSource,
    SyntheticConfig,
    load_source,
    parse_label,
    read_rows,
)
from moslim_pl.data.types import ALL_HEADS, IGNORE_LABEL
from moslim_pl.schema import Dimension

DIMS = (Dimension("helpfulness", 0, 4), Dimension("verbose", 0, 4, column="verbosity"))


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return str(path)


def _rows(rows: list[dict], dims=DIMS, columns: Columns = Columns()):  # noqa: B008
    return read_rows(datasets.Dataset.from_list(rows), dims, columns, "mem")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3), (3.0, 3), ("3", 3), (" 4 ", 4), ("2.0", 2), (-1, -1), (None, None), ("N/A", None), ("", None)]
    + [(math.nan, None), ("nan", None), ("null", None)],
)
def test_parse_label_accepts_integers_and_missing(value, expected) -> None:
    assert parse_label(value) == expected


@pytest.mark.parametrize("value", [3.5, "abc", "3.5", True, [1], "inf"])
def test_parse_label_rejects_non_integers(value) -> None:
    with pytest.raises(ValueError, match="not an integer"):
        parse_label(value)


def test_describe_names_the_source() -> None:
    assert DataSource("json", data_files="data.jsonl").describe() == "json:data.jsonl"
    assert DataSource("json", data_files=["a.jsonl", "b.jsonl"]).describe() == "json:a.jsonl (+1 more)"
    assert DataSource("nvidia/HelpSteer", split="validation").describe() == "nvidia/HelpSteer[validation]"
    assert DataSource().describe() == "synthetic"


def test_load_json_with_max_rows_and_bare_file(tmp_path: Path) -> None:
    rows = [{"prompt": f"p{i}", "response": "r", "helpfulness": i % 5} for i in range(10)]
    path = _write_jsonl(tmp_path / "data.jsonl", rows)
    assert len(load_source(DataSource("json", data_files=path))) == 10
    assert load_source(DataSource("json", data_files=path, max_rows=3))["prompt"][:] == ["p0", "p1", "p2"]
    assert len(load_source(DataSource(path))) == 10  # a bare file path picks the builder from its extension


def test_load_failure_is_one_line_naming_the_source(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match=r"cannot load json:.*nope\.jsonl") as err:
        load_source(DataSource("json", data_files=missing))
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="max_rows"):
        load_source(DataSource("json", data_files=missing, max_rows=0))


def test_load_synthetic_source() -> None:
    dataset = load_source(DataSource(max_rows=5), SyntheticConfig(num_prompts=4, responses_per_prompt=3))
    assert len(dataset) == 5
    assert {"prompt", "response"} <= set(dataset.column_names)


def test_pointwise_rows_map_columns_and_ignore_missing_labels() -> None:
    rows = _rows(
        [
            {"prompt": "p", "response": "a", "helpfulness": 4, "verbosity": "1"},
            {"prompt": "p", "response": "b", "helpfulness": None, "verbosity": "N/A"},
            {"prompt": "q", "response": "c", "helpfulness": 2.0, "verbosity": "3"},
        ]
    )
    assert [r.labels for r in rows] == [((4, 1),), ((IGNORE_LABEL, IGNORE_LABEL),), ((2, 3),)]
    assert rows[0].responses == ("a",) and rows[0].pair_dim is None


def test_pointwise_source_without_one_dimension_column_ignores_that_head() -> None:
    rows = _rows([{"prompt": "p", "response": "a", "verbosity": 2}])
    assert rows[0].labels == ((IGNORE_LABEL, 2),)


def test_coarsening_uses_label_to_class() -> None:
    dims = (Dimension("h", 0, 4, bins=2), Dimension("v", 0, 4, bins=3))
    rows = _rows([{"prompt": "p", "response": "r", "h": raw, "v": raw} for raw in range(5)], dims)
    assert [r.labels[0][0] for r in rows] == [0, 0, 0, 1, 1]
    assert [r.labels[0][1] for r in rows] == [0, 0, 1, 1, 2]
    assert [r.labels[0][0] for r in rows] == [dims[0].label_to_class(raw) for raw in range(5)]


def test_pairwise_rows_with_pair_dimension_and_optional_labels() -> None:
    columns = Columns(pair_dimension="judged")
    rows = _rows(
        [
            {"prompt": "p", "chosen": "a", "rejected": "b", "judged": "verbose", "verbosity_chosen": 3},
            {"prompt": "q", "chosen": "c", "rejected": "d", "judged": None, "verbosity_chosen": None},
        ],
        columns=columns,
    )
    assert rows[0].responses == ("a", "b")
    assert rows[0].pair_dim == 1 and rows[1].pair_dim == ALL_HEADS
    assert rows[0].labels == ((IGNORE_LABEL, 3), (IGNORE_LABEL, IGNORE_LABEL))
    assert rows[1].labels == ((IGNORE_LABEL,) * 2,) * 2


def _assert_one_line(err: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message


@pytest.mark.parametrize(
    ("row", "parts"),
    [
        (
            {"prompt": "p", "response": "r", "helpfulness": 7},
            ["row 1", "'helpfulness'", "label 7 outside 0..4"],
        ),
        ({"prompt": "p", "response": "r", "verbosity": "lots"}, ["row 1", "'verbosity'", "not an integer"]),
        ({"prompt": "p", "response": "r", "verbosity": 2.5}, ["row 1", "'verbosity'", "not an integer"]),
        ({"prompt": "p", "response": "  ", "verbosity": 2}, ["row 1", "'response'", "empty"]),
        ({"prompt": "", "response": "r", "verbosity": 2}, ["row 1", "'prompt'", "empty"]),
        ({"prompt": "p", "response": None, "verbosity": 2}, ["row 1", "'response'", "missing"]),
    ],
)
def test_bad_pointwise_rows_name_source_row_and_column(tmp_path: Path, row: dict, parts: list[str]) -> None:
    good = {"prompt": "p", "response": "r", "helpfulness": 1, "verbosity": 1}
    source = DataSource("json", data_files=_write_jsonl(tmp_path / "bad.jsonl", [good, {**good, **row}]))
    with pytest.raises(DataError) as err:
        read_rows(load_source(source), DIMS, Columns(), source.describe())
    _assert_one_line(err, "json:", "bad.jsonl row 1,", *parts)


def test_unknown_pair_dimension_names_row_and_column() -> None:
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b", "dim": "helpfulness"}] * 2
    rows.append({"prompt": "p", "chosen": "a", "rejected": "b", "dim": "charm"})
    with pytest.raises(DataError) as err:
        _rows(rows, columns=Columns(pair_dimension="dim"))
    _assert_one_line(err, "mem row 2, column 'dim'", "unknown dimension 'charm'")


@pytest.mark.parametrize(
    ("row", "columns", "parts"),
    [
        ({"text": "p", "response": "r", "helpfulness": 1}, Columns(), ["missing column 'prompt'"]),
        (
            {"prompt": "p", "answer": "r", "helpfulness": 1},
            Columns(),
            ["missing column 'response'", "'chosen'"],
        ),
        ({"prompt": "p", "response": "r", "score": 1}, Columns(), ["no dimension column", "'verbosity'"]),
        ({"prompt": "p", "chosen": "a", "rejected": "b"}, Columns(pair_dimension="d"), ["column 'd'"]),
    ],
)
def test_bad_columns_name_source_and_column(row: dict, columns: Columns, parts: list[str]) -> None:
    with pytest.raises(DataError) as err:
        _rows([row], columns=columns)
    _assert_one_line(err, "mem:", *parts)
