"""Run by tests/distributed/test_online_dpo_ties.py under ``torchrun --nproc-per-node 2`` (gloo, CPU).

Online-DPO with one pair per rank and 1-token answers, where the reward ties rank 1's pair and never
rank 0's: rank 0 has a loss, rank 1 none. Two short fits in one launch, under DDP and then under FSDP2;
every rank writes its final policy weights and what it logged to ``OUT/<strategy>-rank<r>.*``.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.strategies import DDPStrategy, Strategy
from torch.utils.data import DataLoader

from moslim_pl.callbacks.nonfinite import NonFiniteGuard
from moslim_pl.data.synthetic import DIMENSIONS, generate_prompts
from moslim_pl.models.backbone import load_backbone, load_tokenizer
from moslim_pl.models.reward_model import MultiHeadRewardModel
from moslim_pl.models.sharding import full_state_dict
from moslim_pl.modules import OnlineDPOModule
from moslim_pl.modules.settings import OptimConfig, SamplingConfig
from moslim_pl.rollout import RewardOutput, Rollout
from moslim_pl.strategies import FSDP2Strategy

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
TINY_RM = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
STEPS = 2
TIMEOUT = timedelta(seconds=60)  # a collective that waits longer fails the run instead of blocking it


class TiedOnRankOne(OnlineDPOModule):
    """Rewards ``[1, 0]`` for each pair on rank 0 (chosen: the first sample), ``[0, 0]`` (a tie) on rank 1."""

    def _score(self, prompts: list[str], rollout: Rollout) -> RewardOutput:
        scores = super()._score(prompts, rollout)
        reward = torch.zeros_like(scores.reward)
        if self.global_rank == 0:
            reward[0::2] = 1.0
        return scores._replace(reward=reward)


def _reward_model(folder: Path) -> Path:
    """An untrained tiny RM export: the rewards are set by :class:`TiedOnRankOne`, not read from it."""
    torch.manual_seed(0)
    tokenizer = load_tokenizer("moslim/tiny-llama")
    backbone = load_backbone("moslim/tiny-llama", tokenizer=tokenizer, tiny_config=TINY_RM)
    MultiHeadRewardModel(backbone, DIMENSIONS, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def _fit(strategy: Strategy, rm: Path) -> tuple[TiedOnRankOne, Trainer, dict[str, torch.Tensor]]:
    seed_everything(0)
    module = TiedOnRankOne(
        reward_model=str(rm),
        tiny_config=TINY,
        log_samples_every_n_steps=None,
        sampling=SamplingConfig(max_new_tokens=1, max_prompt_length=16),
        optim=OptimConfig(learning_rate=1e-2),
    )
    initial = {k: v.detach().clone() for k, v in module.policy.state_dict().items()}
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy=strategy,
        max_steps=STEPS,
        callbacks=[NonFiniteGuard(max_consecutive=1)],  # its collective runs before every optimizer step
        logger=False,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    # 2 prompts a step: Lightning's distributed sampler hands each rank one (one pair per rank)
    trainer.fit(module, DataLoader(generate_prompts(2 * STEPS, seed=0), batch_size=1))
    return module, trainer, initial


def _metrics(trainer: Trainer) -> dict[str, Any]:
    return {
        "global_step": trainer.global_step,
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
    }


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    rm = _reward_model(out / f"rm{rank}")  # one copy per rank: no rank waits for another's files

    ddp = DDPStrategy(find_unused_parameters=False, process_group_backend="gloo", timeout=TIMEOUT)
    module, trainer, initial = _fit(ddp, rm)
    state = {k: v.detach().clone() for k, v in module.policy.state_dict().items()}
    torch.save({"initial": initial, "final": state}, out / f"ddp-rank{rank}.pt")
    (out / f"ddp-rank{rank}.json").write_text(json.dumps(_metrics(trainer)))

    # FSDP2 reuses the process group that DDP set up
    module, trainer, initial = _fit(FSDP2Strategy(process_group_backend="gloo", timeout=TIMEOUT), rm)
    gathered = full_state_dict(module.policy)  # a collective: rank 0 receives the full weights
    if rank == 0:
        torch.save({"initial": initial, "final": gathered}, out / f"fsdp2-rank{rank}.pt")
    (out / f"fsdp2-rank{rank}.json").write_text(json.dumps(_metrics(trainer)))


if __name__ == "__main__":
    main()
