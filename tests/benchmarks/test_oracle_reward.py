"""benchmarks/oracle_reward.py: the RM's score maps the synthetic oracle's levels, exactly."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from moslim_pl.data.synthetic import DIMENSIONS, generate_response, vocabulary
from moslim_pl.models.backbone import build_word_tokenizer, load_backbone
from moslim_pl.models.reward_model import MultiHeadRewardModel

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "oracle_reward.py"


@pytest.fixture
def world_rm() -> MultiHeadRewardModel:
    tokenizer = build_word_tokenizer(vocabulary(prefix_tokens=False))
    torch.manual_seed(0)
    rm = MultiHeadRewardModel(
        load_backbone("moslim/tiny-llama", tokenizer=tokenizer), DIMENSIONS, tokenizer=tokenizer
    )
    rm.stats_mean.fill_(0.25)
    rm.stats_std.fill_(0.5)
    rm.stats_count.fill_(1.0)
    return rm.eval()


def test_oracle_probs_and_the_patched_score(world_rm: MultiHeadRewardModel, load_script) -> None:
    module = load_script(SCRIPT)
    rng = random.Random(0)
    levels = {"verbosity": 2, "formality": 0, "helpfulness": 3}
    response = generate_response("rivers", levels, rng)
    prompts = ["<verbosity 2> <helpfulness 3> tell me about rivers .", "<helpfulness 1> explain rivers ."]
    probs = module.oracle_probs(world_rm, prompts, [response, response])
    assert probs.shape == (2, 3, 4) and torch.equal(probs.sum(-1), torch.ones(2, 3))
    # every head's 1 sits at the oracle's level (formality has 3 levels: class 3 is padding)
    assert probs[0].argmax(-1).tolist() == [2, 0, 3] and torch.equal(probs[0], probs[1])
    original = MultiHeadRewardModel.score
    MultiHeadRewardModel.score = module._oracle_score
    try:
        out = world_rm.score(prompts, [response, response])
    finally:
        MultiHeadRewardModel.score = original
    # row 0: verbosity and helpfulness hit, (1 - 0.25) / 0.5 = 1.5 each; row 1: helpfulness miss, -0.5
    torch.testing.assert_close(out.reward, torch.tensor([1.5, -0.5]), atol=1e-4, rtol=0)
    assert out.hit.tolist() == [[True, False, True], [False, False, False]]
