"""Policy training on the synthetic world with the exact oracle in place of the reward model's heads.

    OMP_NUM_THREADS=1 python benchmarks/oracle_reward.py fit --config configs/policy/rloo_quickstart.yaml \\
        --model.policy SFT_EXPORT --model.reward_model RM_EXPORT [moslim-pl options]

Runs ``moslim-pl`` in this process with :meth:`MultiHeadRewardModel.score` given, for every (prompt,
response) pair, the one-hot probabilities of the synthetic world's oracle levels (``oracle_probs``)
instead of the RM's. The RM export still supplies the schema, the running statistics and the mapping,
so the reward is the recipe's Gaussian z-score of an RM that is never wrong: what RL learns from a
perfect reward model in the same steps. The question it answers (``docs/results.md``, quickstart): is
the quickstart limited by its reward model or by the RL itself?
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

from moslim_pl.data.messages import Prompt, parse_prompt_prefix
from moslim_pl.data.synthetic import oracle
from moslim_pl.errors import MoslimError
from moslim_pl.models.reward_model import MultiHeadRewardModel

_model_score = MultiHeadRewardModel.score


def oracle_probs(
    rm: MultiHeadRewardModel, prompts: Sequence[Prompt], responses: Sequence[str]
) -> torch.Tensor:
    """``[N, K, L]``: 1 at the oracle's class of each head, 0 elsewhere (prompts' prefixes stripped)."""
    probs = torch.zeros(len(prompts), len(rm.dimensions), rm.max_levels)
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        _, text = parse_prompt_prefix(prompt, rm.dimensions)
        if not isinstance(text, str):
            raise MoslimError("oracle_reward: the synthetic oracle reads text prompts, got a conversation")
        levels = oracle(text, response)
        for k, dim in enumerate(rm.dimensions):
            if dim.name not in levels:
                raise MoslimError(f"oracle_reward: the synthetic world has no dimension {dim.name!r}")
            probs[i, k, dim.label_to_class(levels[dim.name])] = 1.0
    return probs


def _oracle_score(self: MultiHeadRewardModel, prompts, responses, *args, **kwargs):
    kwargs["probs"] = oracle_probs(self, prompts, responses)
    return _model_score(self, prompts, responses, *args, **kwargs)


def main(args: list[str]) -> None:
    from moslim_pl.cli import main as cli_main

    MultiHeadRewardModel.score = _oracle_score
    try:
        cli_main(args)
    finally:
        MultiHeadRewardModel.score = _model_score


if __name__ == "__main__":
    main(sys.argv[1:])
