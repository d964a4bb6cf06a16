"""The paper comparison: request grid, each baseline's control mapping, and the table on fake policies."""

from __future__ import annotations

import json

import pytest
import torch

from moslim_pl.data.synthetic import DIMENSIONS, oracle
from moslim_pl.evaluation.comparison import (
    compute_totals,
    evaluate,
    format_comparison,
    nearest_policy,
    request_grid,
    soup_lambdas,
    weight_vector,
)
from moslim_pl.prefix import parse_prefix

# verbosity 0..3, formality 0..2, helpfulness 0..3


def test_request_grid() -> None:
    grid = request_grid(DIMENSIONS)
    assert grid[:4] == [{"verbosity": level} for level in range(4)]
    assert len(grid) == (4 + 3 + 4) + 2**3
    assert grid[-1] == {"verbosity": 3, "formality": 2, "helpfulness": 3}


def test_control_mappings_by_hand() -> None:
    # formality 1 of 0..2 -> t = 0.5 -> w = 0; verbosity 3 of 0..3 -> t = 1 -> w = 1; unnamed -> 0
    assert weight_vector({"formality": 1, "verbosity": 3}, DIMENSIONS) == [1.0, 0.0, 0.0]
    weights = [[1, 1, 1], [-1, -1, 1], [1, -1, -1]]
    assert nearest_policy({"verbosity": 0}, DIMENSIONS, weights) == 1  # (-1,0,0): 2.24 / 1.41 / 2.24
    assert nearest_policy({"verbosity": 3}, DIMENSIONS, weights) == 0  # tie 0 and 2 -> the first
    assert nearest_policy({"formality": 0, "helpfulness": 0}, DIMENSIONS, weights) == 2
    # verbosity 1 of 0..3 -> t = 1/3, one named dimension: lambda = (2/3, 1/3, 0, 0)
    assert soup_lambdas({"verbosity": 1}, DIMENSIONS) == pytest.approx((2 / 3, 1 / 3, 0.0, 0.0))
    # two named: t = (1, 0.5) / 2 -> (0.5, 0.25), start gets 0.25
    assert soup_lambdas({"verbosity": 3, "formality": 1}, DIMENSIONS) == pytest.approx((0.25, 0.5, 0.25, 0.0))
    full = soup_lambdas({"verbosity": 3, "formality": 2, "helpfulness": 3}, DIMENSIONS)
    assert full == pytest.approx((0.0, 1 / 3, 1 / 3, 1 / 3)) and sum(full) == pytest.approx(1.0)


def _obedient_verbosity(prompts, request):
    n = {0: 1, 1: 2, 2: 4, 3: 6}[request.get("verbosity", 0)]
    return [" ".join(["rivers flow ."] * n)] * len(prompts)


def test_evaluate_table_on_a_fake_policy(tmp_path) -> None:
    prompts = ["tell me about rivers .", "explain bees ."]

    def rm_reward(prefixed, responses):
        assert all(parse_prefix(p, DIMENSIONS)[0] for p in prefixed)  # the request reaches the RM
        return torch.ones(len(responses))

    row = evaluate(_obedient_verbosity, prompts, DIMENSIONS, oracle, rm_reward)
    verbosity = row["dimensions"]["verbosity"]
    assert verbosity["spearman_oracle"] == pytest.approx(1.0)
    # verbosity is hit in its 4 single requests and in all 8 combinations (levels 0 and 3)
    assert verbosity["hit_rate"] == pytest.approx(1.0)
    assert row["dimensions"]["formality"]["spearman_oracle"] == 0.0  # deaf to formality
    assert row["mean_reward"] == 1.0
    file = tmp_path / "compute.json"
    file.write_text(json.dumps({"device_hours": 0.25, "tokens": 1000}))
    assert compute_totals([file, file]) == {"compute_hours": 0.5, "compute_tokens": 2000}
    text = format_comparison({"moslim": {**row, "compute_hours": 0.5, "compute_tokens": 2000}})
    assert "moslim" in text and "1.000" in text and "0.00" in text.splitlines()[1][-9:]
