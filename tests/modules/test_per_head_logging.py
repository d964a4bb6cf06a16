"""Per-head rollout metrics are written on the steps that measured them, and only there."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from moslim_pl.evaluation.tensorboard import read_scalar_steps
from moslim_pl.modules import RLOOModule
from moslim_pl.modules.settings import SamplingConfig

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def test_a_head_no_prompt_named_gets_no_value_on_that_step(formality_rm, rl_trainer, tmp_path: Path) -> None:
    seed_everything(0)
    module = RLOOModule(
        reward_model=str(formality_rm),
        tiny_config=TINY,
        num_samples=2,
        sampling=SamplingConfig(max_new_tokens=4, max_prompt_length=32),
    )
    # step 0 names formality only, step 1 verbosity only, step 2 formality again
    prompts = ["<formality 0> explain bees .", "<verbosity 1> explain bees .", "<formality 2> hi ."]
    loader = DataLoader(prompts, batch_size=1, collate_fn=list)
    trainer = rl_trainer(3, logger=TensorBoardLogger(tmp_path), log_every_n_steps=1)
    trainer.fit(module, loader)
    steps = read_scalar_steps(tmp_path)
    assert steps["rollout/reward"] == [0, 1, 2]
    # Lightning's own self.log would have written formality's step-0 value again at step 1
    assert sorted(steps["reward/formality"]) == [0, 2]
    assert sorted(steps["rollout/hit_rate/formality"]) == [0, 2]
    assert steps["reward/verbosity"] == [1] and steps["rollout/hit_rate/verbosity"] == [1]
