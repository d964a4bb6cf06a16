"""The paper comparison: request grid, each baseline's control mapping, and the table on fake policies."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from moslim_pl.baselines.comparison import (
    compute_totals,
    evaluate,
    format_comparison,
    nearest_policy,
    request_grid,
    soup_lambdas,
    spec_data,
    train_eval_overlap,
    training_prompts,
    weight_vector,
)
from moslim_pl.data.prompts import PromptDataModule
from moslim_pl.data.sources import SyntheticConfig
from moslim_pl.data.synthetic import DIMENSIONS, oracle
from moslim_pl.errors import MoslimError
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
    # the 8 extreme combinations: verbosity always hit, formality 0 and helpfulness 0 (no marker, no
    # keyword) only when requested -> 2 of 8 combinations hit jointly
    assert row["joint_hit_rate"] == pytest.approx(0.25)
    assert row["empty_rate"] == 0.0
    silent = evaluate(lambda prompts, request: [""] * len(prompts), prompts, DIMENSIONS, oracle, rm_reward)
    assert silent["empty_rate"] == 1.0
    # every request of the grid (4 + 3 + 4 single levels, 8 combinations) answered empty by both prompts
    assert len(silent["empty_by_request"]) == 19
    assert set(silent["empty_by_request"].values()) == {2}
    assert silent["empty_by_request"]["<formality 0>"] == 2
    assert row["empty_by_request"]["<verbosity 0> <formality 2> <helpfulness 3>"] == 0
    # "" is verbosity 0, casual, no keyword: the combination (0, 0, 0) is hit, 1 of 8
    assert silent["joint_hit_rate"] == pytest.approx(1 / 8)
    file = tmp_path / "compute.json"
    file.write_text(json.dumps({"device_hours": 0.25, "tokens": 1000}))
    assert compute_totals([file, file]) == {"compute_hours": 0.5, "compute_tokens": 2000}
    text = format_comparison({"moslim": {**row, "compute_hours": 0.5, "compute_tokens": 2000}})
    assert "moslim" in text and "1.000" in text and "0.00" in text.splitlines()[1][-9:]


def _run_folder(tmp_path, name: str, data: dict) -> str:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump({"data": data}))
    return str(folder)


def test_train_eval_prompt_overlap_reads_each_runs_config(tmp_path) -> None:
    world = {"num_prompts": 20, "responses_per_prompt": 2, "seed": 0}
    held_out = PromptDataModule(
        synthetic=SyntheticConfig(**world), val_fraction=0.25, num_test_prompts=None
    ).sweep_prompts()
    assert len(held_out) == 5
    sft = {
        "class_path": "moslim_pl.data.SFTDataModule",
        "init_args": {"synthetic": world, "val_fraction": 0.25},
    }
    ric = {**sft, "init_args": {**sft["init_args"], "label_prefix": True}}
    rm = {**sft, "class_path": "moslim_pl.data.PreferenceDataModule"}
    policy = {
        "class_path": "moslim_pl.data.PromptDataModule",
        "init_args": {"synthetic": world, "val_fraction": 0.25},
    }
    runs = [
        _run_folder(tmp_path, n, d) for n, d in (("sft", sft), ("ric", ric), ("rm", rm), ("policy", policy))
    ]
    assert training_prompts(runs[1]) == training_prompts(runs[0]) == training_prompts(runs[2])
    assert len(training_prompts(runs[3])) == 15
    assert train_eval_overlap(held_out, runs) == 0
    # another split fraction trains on held-out prompts, and the count says how many
    leaky = {**policy, "init_args": {**policy["init_args"], "val_fraction": 0.1}}
    assert train_eval_overlap(held_out, [_run_folder(tmp_path, "leaky", leaky)]) == 5 - 2
    with pytest.raises(MoslimError, match="has no config.yaml"):
        training_prompts(tmp_path)


def test_spec_data_names_the_missing_field() -> None:
    data = {"synthetic": {}, "seed": 0, "val_fraction": 0.2, "max_prompt_length": 32, "chat_template": False}
    assert spec_data({"data": data}) is data
    with pytest.raises(MoslimError, match=r"data\.max_prompt_length is missing"):
        spec_data({"data": {k: v for k, v in data.items() if k != "max_prompt_length"}})
    with pytest.raises(MoslimError, match="data is missing"):
        spec_data({})
