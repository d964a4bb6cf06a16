"""OnlineDPOModule: a policy learns against a hand-built reward model; ties, logging and export."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from moslim_pl.callbacks.nonfinite import NonFiniteGuard
from moslim_pl.data.synthetic import generate_prompts
from moslim_pl.errors import MoslimError
from moslim_pl.models.backbone import load_causal_lm, load_tokenizer
from moslim_pl.modules import OnlineDPOModule
from moslim_pl.modules.settings import OptimConfig, SamplingConfig


def test_online_dpo_learns_to_follow_the_prefix(
    formality_prompts, read_logs, rl_trainer, formality_rm: Path, tmp_path: Path
) -> None:
    # <formality 0> asks for casual markers; the RM's default target (no prefix) is formal, so the
    # reward only rises if the RM gets the original prompts, prefix included.
    seed_everything(0)
    module = OnlineDPOModule(
        reward_model=str(formality_rm),
        beta=0.1,
        log_samples_every_n_steps=10,
        sampling=SamplingConfig(max_new_tokens=16, max_prompt_length=32),
        optim=OptimConfig(learning_rate=3e-3),
    )
    steps = 60
    trainer = rl_trainer(
        steps,
        logger=TensorBoardLogger(tmp_path, name="online_dpo"),
        log_every_n_steps=1,
        limit_val_batches=2,
        num_sanity_val_steps=0,
    )
    train = DataLoader(formality_prompts(0, 64, seed=0), batch_size=8, shuffle=True)
    val = DataLoader(formality_prompts(0, 8, seed=1), batch_size=4)
    start = time.perf_counter()
    trainer.fit(module, train, val)
    elapsed = time.perf_counter() - start

    scalars, texts = read_logs(tmp_path)
    reward = scalars["rollout/reward"]
    assert len(reward) == steps
    first, last = sum(reward[:5]) / 5, sum(reward[-5:]) / 5
    print(
        f"rollout/reward first 5 steps {first:.3f}, last 5 steps {last:.3f}, {steps} steps in {elapsed:.1f}s; "
        f"hit rate last {scalars['rollout/hit_rate/formality'][-1]:.2f}, kl last {scalars['rollout/kl'][-1]:.2f}"
    )
    assert last > first + 0.3
    assert scalars["rollout/hit_rate/formality"][-1] > 0.5
    for key in (
        "rollout/kl",
        "rollout/entropy",
        "rollout/response_length",
        "reward/formality",
        "train/loss",
        "train/dpo_accuracy",
        "train/tie_fraction",
        "val/reward",
        "val/hit_rate/formality",
    ):
        assert key in scalars, key
    assert "reward/verbosity" not in scalars  # not requested by any prompt
    assert all(0.0 <= t <= 1.0 for t in scalars["train/tie_fraction"])
    assert "rollout/samples/text_summary" in texts

    # The reference and the RM never moved; the export reloads as a plain causal LM.
    assert not torch.equal(module.policy.lm_head.weight, module.reference.lm_head.weight)
    assert all(not p.requires_grad for p in (*module.reference.parameters(), *module.rm.parameters()))
    initial = load_causal_lm("moslim/tiny-llama", tokenizer=module.tokenizer)
    assert initial.lm_head.weight.shape == module.policy.lm_head.weight.shape
    folder = module.export(tmp_path / "policy")
    reloaded = load_causal_lm(str(folder))
    torch.testing.assert_close(reloaded.lm_head.weight, module.policy.lm_head.weight)
    assert load_tokenizer(str(folder)).get_vocab() == module.tokenizer.get_vocab()


def test_all_ties_leave_the_policy_unchanged_and_checkpoint(
    read_logs, rl_trainer, formality_rm: Path, tmp_path: Path
) -> None:
    # <verbosity 1> asks nothing of the formality head, and the hand-built verbosity head is uniform:
    # every response gets the same reward, so every pair ties and no gradient reaches the policy.
    seed_everything(2)
    module = OnlineDPOModule(
        reward_model=str(formality_rm),
        log_samples_every_n_steps=None,
        sampling=SamplingConfig(max_new_tokens=4),
        optim=OptimConfig(learning_rate=1e-2),
    )
    before = [p.detach().clone() for p in module.policy.parameters()]
    trainer = rl_trainer(2, logger=TensorBoardLogger(tmp_path, name="online_dpo"), log_every_n_steps=1)
    prompts = [f"<verbosity 1> {p}" for p in generate_prompts(4, seed=0)]
    trainer.fit(module, DataLoader(prompts, batch_size=2))
    assert trainer.global_step == 2
    scalars, _ = read_logs(tmp_path)
    assert scalars["train/tie_fraction"] == [pytest.approx(1.0)] * 2
    assert "train/loss" not in scalars
    for old, new in zip(before, module.policy.parameters(), strict=True):
        assert torch.equal(old, new)

    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    restored = OnlineDPOModule.load_from_checkpoint(path)
    assert restored.hparams.beta == module.hparams.beta
    torch.testing.assert_close(restored.policy.lm_head.weight, module.policy.lm_head.weight)


class _GradSnapshot(Callback):
    """The policy's gradients as the optimizer is about to step (after backward and clipping)."""

    def __init__(self) -> None:
        self.grads: list[dict[str, Tensor | None]] = []

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer
    ) -> None:
        self.grads.append(
            {n: None if p.grad is None else p.grad.clone() for n, p in pl_module.policy.named_parameters()}
        )


def test_a_rank_with_only_ties_backpropagates_exact_zeros_when_another_has_pairs(
    monkeypatch: pytest.MonkeyPatch, rl_trainer, formality_rm: Path
) -> None:
    # Every pair ties here (see the test above), but the strategy's count of valid pairs says another
    # rank has one: under DDP this rank must join the gradient all-reduce, with a zero gradient on every
    # parameter (tests/distributed/test_online_dpo_ties.py runs the real 2-process case).
    seed_everything(2)
    module = OnlineDPOModule(
        reward_model=str(formality_rm),
        log_samples_every_n_steps=None,
        sampling=SamplingConfig(max_new_tokens=4),
        optim=OptimConfig(learning_rate=1e-2),
    )
    before = [p.detach().clone() for p in module.policy.parameters()]
    snapshot = _GradSnapshot()
    trainer = rl_trainer(
        1, logger=False, log_every_n_steps=1, callbacks=[snapshot, NonFiniteGuard(max_consecutive=1)]
    )
    monkeypatch.setattr(trainer.strategy, "reduce", lambda tensor, **kwargs: tensor + 1)
    prompts = [f"<verbosity 1> {p}" for p in generate_prompts(2, seed=0)]
    trainer.fit(module, DataLoader(prompts, batch_size=2))
    (grads,) = snapshot.grads
    assert all(g is not None and not g.any() for g in grads.values()), "a parameter without a zero gradient"
    assert trainer.callback_metrics["train/tie_fraction"] == 1.0
    assert "train/loss" not in trainer.callback_metrics
    assert trainer.callback_metrics["train/nonfinite_steps"] == 0.0
    # Adam's first step on zero gradients (no weight decay) leaves the weights as they were
    for old, new in zip(before, module.policy.parameters(), strict=True):
        assert torch.equal(old, new)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sampling": {"temperature": 0.0}}, "sampling.temperature must be > 0"),
        ({"beta": 0.0}, "beta must be > 0"),
        ({"reward": {"mapping": "nope"}}, "reward.mapping must be one of"),
        ({"reward": {"aggregation": "max"}}, "unknown aggregation 'max'"),
        ({"reward": {"mapping": "linear"}}, "reward.mapping_weights"),
    ],
)
def test_bad_arguments(formality_rm: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(MoslimError, match=match):
        OnlineDPOModule(reward_model=str(formality_rm), **kwargs)


def test_reward_model_is_required() -> None:
    with pytest.raises(MoslimError, match="reward_model"):
        OnlineDPOModule()


def test_batches_must_be_prompt_strings(formality_rm: Path) -> None:
    module = OnlineDPOModule(reward_model=str(formality_rm), sampling=SamplingConfig(max_new_tokens=2))
    with pytest.raises(MoslimError, match="prompt strings"):
        module.validation_step({"input_ids": torch.zeros(2, 3)}, 0)
