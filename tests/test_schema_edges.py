"""Dimension ``edges``: coarsening at chosen raw labels (skewed real labels), checked by hand."""

from __future__ import annotations

import json

import pytest

from moslim_pl.schema import Dimension, SchemaError, check_dimensions, describe_dimensions


def test_edges_cut_the_raw_range_where_told() -> None:
    # raw 0-1 -> 0, 2 -> 1, 3-4 -> 2 (HelpSteer verbosity: label 4 is rare, so equal-width bins would
    # leave the top level nearly empty: bins=3 sends only raw 4 to level 2)
    dim = Dimension("verbosity", 0, 4, edges=[2, 3])
    assert dim.num_levels == 3
    assert (dim.min_level, dim.max_level) == (0, 2)
    assert [dim.label_to_class(raw) for raw in range(5)] == [0, 0, 1, 2, 2]
    assert [Dimension("v", 0, 4, bins=3).label_to_class(raw) for raw in range(5)] == [0, 0, 1, 1, 2]
    # a shifted range: levels start at low, classes at 0
    shifted = Dimension("s", 1, 7, edges=[4])
    assert [shifted.label_to_class(raw) for raw in range(1, 8)] == [0, 0, 0, 1, 1, 1, 1]
    assert (shifted.min_level, shifted.max_level) == (1, 2)
    assert describe_dimensions([dim]) == "verbosity 0..4 cut at [2, 3]"


def test_edges_round_trip_through_the_export_dict() -> None:
    dim = Dimension("verbosity", 0, 4, edges=[2, 3], default=1)
    plain = json.loads(json.dumps(dim.to_dict()))
    assert plain["edges"] == [2, 3]
    assert check_dimensions([plain]) == (dim,)
    assert "edges" not in Dimension("v").to_dict()  # exports without edges read as before


@pytest.mark.parametrize(
    ("edges", "bins", "message"),
    [
        ([2, 2], None, "increase strictly"),
        ([3, 2], None, "increase strictly"),
        ([0, 2], None, "within 1..4"),
        ([5], None, "within 1..4"),
        ([], None, "non-empty list"),
        (["2"], None, "non-empty list"),
        ([2], 3, "bins or edges"),
    ],
)
def test_bad_edges_name_the_dimension(edges, bins, message) -> None:
    with pytest.raises(SchemaError, match=message) as err:
        Dimension("verbosity", 0, 4, edges=edges, bins=bins)
    assert "'verbosity'" in str(err.value)
