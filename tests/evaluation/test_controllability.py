"""The controllability sweep: Spearman by hand, a perfectly and a not-at-all controllable fake policy."""

from __future__ import annotations

import json

import pytest
import torch

from moslim_pl.data.synthetic import DIMENSIONS, oracle
from moslim_pl.evaluation.controllability import (
    format_table,
    rm_expected_levels,
    spearman,
    summarize,
    sweep,
    sweep_records,
    write,
)
from moslim_pl.prefix import parse_prefix


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # x ranks 1 2 3 4, y = [1, 3, 2, 4] ranks 1 3 2 4: d^2 = 0+1+1+0 = 2; rho = 1 - 6*2/(4*15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # ties get their average rank: y ranks [1.5, 1.5, 3, 4] -> Pearson of ranks
    assert spearman([1, 2, 3, 4], [5, 5, 6, 7]) == pytest.approx(0.9486832980505138)
    assert spearman([1, 2, 3], [2, 2, 2]) == 0.0


def _sentences(n: int) -> str:
    return " ".join(["rivers flow ."] * n)


def _obedient(prompts: list[str]) -> list[str]:
    """A fake policy that follows <verbosity n> exactly: 1, 2, 4 or 6 sentences."""
    out = []
    for prompt in prompts:
        targets, _ = parse_prefix(prompt, DIMENSIONS)
        out.append(_sentences({0: 1, 1: 2, 2: 4, 3: 6}[targets.get("verbosity", 0)]))
    return out


def _rm_levels(prompts, responses):
    # a fake RM that reads the oracle's levels: [N, K]
    return torch.tensor(
        [[oracle(p, r)[d.name] for d in DIMENSIONS] for p, r in zip(prompts, responses, strict=True)]
    ).float()


def test_sweep_measures_control(tmp_path):
    prompts = ["tell me about rivers .", "explain bees ."]
    table = sweep(DIMENSIONS[:1], prompts, _obedient, _rm_levels, oracle)
    row = table["verbosity"]
    assert row["spearman_oracle"] == pytest.approx(1.0) and row["spearman_rm"] == pytest.approx(1.0)
    assert [row["levels"][str(level)]["oracle"] for level in range(4)] == [0, 1, 2, 3]
    assert row["levels"]["0"]["n"] == 2
    deaf = sweep(DIMENSIONS[:1], prompts, lambda ps: [_sentences(2)] * len(ps), _rm_levels, oracle)
    assert deaf["verbosity"]["spearman_oracle"] == 0.0
    json_path, png_path = write(table, tmp_path)
    assert json.loads(json_path.read_text()) == table
    assert png_path.read_bytes()[:4] == b"\x89PNG"
    assert "verbosity" in format_table(table) and "1.000" in format_table(table)


def test_sweep_without_oracle():
    table = sweep(DIMENSIONS[:1], ["hi ."], _obedient, _rm_levels, oracle=None)
    assert table["verbosity"]["spearman_oracle"] is None
    assert table["verbosity"]["levels"]["2"]["oracle"] is None


def test_records_from_ranks_concatenate_to_the_whole_sweep():
    prompts = ["tell me about rivers .", "explain bees .", "describe the moon ."]
    whole = sweep(DIMENSIONS, prompts, _obedient, _rm_levels, oracle)
    parts = [
        sweep_records(DIMENSIONS, chunk, _obedient, _rm_levels, oracle)
        for chunk in (prompts[:2], prompts[2:])
    ]
    records = torch.cat(parts)
    assert records.shape == (3 * sum(d.num_levels for d in DIMENSIONS), 4)
    assert summarize(DIMENSIONS, records) == whole
    # expected level in each dimension's own levels: p = [0.25, 0.75] over levels 1..2 -> 1.75
    dims = [type(DIMENSIONS[0])(name="x", low=1, high=2)]
    probs = torch.tensor([[[0.25, 0.75]]])
    assert rm_expected_levels(probs, dims).item() == pytest.approx(1.75)
