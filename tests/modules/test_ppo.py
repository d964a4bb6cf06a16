"""PPOModule: a policy learns against a hand-built reward model; both critics, checkpoints and export."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from moslim_pl.errors import MoslimError
from moslim_pl.models.backbone import load_causal_lm
from moslim_pl.modules import PPOModule
from moslim_pl.modules.settings import KLConfig, OptimConfig, RewardConfig, SamplingConfig


def test_ppo_learns_to_follow_the_prefix(
    formality_prompts, read_logs, rl_trainer, formality_rm: Path, tmp_path: Path
) -> None:
    # <formality 0> asks for casual markers; the RM's default target (no prefix) is formal, so the
    # reward only rises if the RM gets the original prompts, prefix included.
    seed_everything(0)
    module = PPOModule(
        reward_model=str(formality_rm),
        num_samples=2,
        value_learning_rate=1e-2,
        ppo_epochs=2,
        num_minibatches=2,
        log_samples_every_n_steps=5,
        sampling=SamplingConfig(max_new_tokens=16, max_prompt_length=32),
        optim=OptimConfig(learning_rate=3e-3),
        kl=KLConfig(coef=0.01),
    )
    rollouts, steps_per_rollout = 32, 4
    trainer = rl_trainer(
        rollouts * steps_per_rollout,
        logger=TensorBoardLogger(tmp_path, name="ppo"),
        log_every_n_steps=1,
        limit_val_batches=2,
        num_sanity_val_steps=0,
    )
    train = DataLoader(formality_prompts(0, 64, seed=0), batch_size=4, shuffle=True)
    val = DataLoader(formality_prompts(0, 8, seed=1), batch_size=4)
    start = time.perf_counter()
    trainer.fit(module, train, val)
    elapsed = time.perf_counter() - start
    assert trainer.global_step == rollouts * steps_per_rollout  # one global step per minibatch

    scalars, texts = read_logs(tmp_path)
    reward = scalars["rollout/reward"]
    assert len(reward) == rollouts
    first, last = sum(reward[:5]) / 5, sum(reward[-5:]) / 5
    print(f"rollout/reward first 5 rollouts {first:.3f}, last 5 {last:.3f}, {rollouts} in {elapsed:.1f}s")
    assert last > first + 0.3
    assert scalars["rollout/hit_rate/formality"][-1] > 0.5
    for key in (
        "rollout/kl",
        "rollout/entropy",
        "reward/formality",
        "train/loss",
        "train/policy_loss",
        "train/value_loss",
        "train/clip_fraction",
        "train/approx_kl",
        "train/value_explained_variance",
        "train/kl_coef",
        "val/reward",
        "val/hit_rate/formality",
    ):
        assert key in scalars, key
    assert scalars["train/kl_coef"] == [pytest.approx(0.01)] * rollouts
    assert max(scalars["train/clip_fraction"]) > 0  # later epochs move the ratio off 1
    assert "rollout/samples/text_summary" in texts
    # the critic learned something: the value head left its zero init
    assert module.value_head.weight.abs().sum() > 0

    # The reference, the RM and dropout stayed frozen; the export is the policy alone.
    assert all(not p.requires_grad for p in (*module.reference.parameters(), *module.rm.parameters()))
    assert not module.critic_backbone.training
    folder = module.export(tmp_path / "policy")
    reloaded = load_causal_lm(str(folder))
    torch.testing.assert_close(reloaded.lm_head.weight, module.policy.lm_head.weight)


@pytest.mark.parametrize("critic", ["separate", "shared"])
def test_both_critics_adaptive_kl_and_checkpoint(
    critic: str, formality_prompts, read_logs, rl_trainer, formality_rm: Path, tmp_path: Path
) -> None:
    seed_everything(1)
    module = PPOModule(
        reward_model=str(formality_rm),
        critic=critic,
        num_samples=2,
        ppo_epochs=2,
        num_minibatches=2,
        value_clip=None,
        whiten_advantages=False,
        log_samples_every_n_steps=None,
        sampling=SamplingConfig(max_new_tokens=6),
        optim=OptimConfig(learning_rate=1e-2),
        kl=KLConfig(coef=0.1, target=0.5, horizon=100),
        reward=RewardConfig(missing_eos_penalty=1.0),
    )
    assert (module.critic_backbone is None) == (critic == "shared")
    head = module.value_head.weight.clone()
    policy = module.policy.lm_head.weight.clone()
    reference = [p.clone() for p in module.reference.parameters()]
    trainer = rl_trainer(8, logger=TensorBoardLogger(tmp_path, name="ppo"), log_every_n_steps=1)
    trainer.fit(module, DataLoader(formality_prompts(2, 8, seed=0), batch_size=2))
    assert trainer.global_step == 8  # two rollouts of 2 epochs x 2 minibatches
    scalars, _ = read_logs(tmp_path)
    assert len(scalars["train/value_loss"]) == 2
    assert module.kl_controller.value != pytest.approx(0.1)
    assert not torch.equal(module.value_head.weight, head)
    assert not torch.equal(module.policy.lm_head.weight, policy)
    for before, after in zip(reference, module.reference.parameters(), strict=True):
        assert torch.equal(before, after)

    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["kl_controller"] == {"value": module.kl_controller.value}
    restored = PPOModule.load_from_checkpoint(path)
    assert restored.kl_controller.value == module.kl_controller.value
    torch.testing.assert_close(restored.value_head.weight, module.value_head.weight)
    torch.testing.assert_close(restored.policy.lm_head.weight, module.policy.lm_head.weight)


def test_lora_policy_with_shared_critic(formality_prompts, rl_trainer, formality_rm: Path) -> None:
    seed_everything(0)
    tiny = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    module = PPOModule(
        reward_model=str(formality_rm),
        tiny_config=tiny,
        critic="shared",
        num_samples=2,
        ppo_epochs=1,
        lora={"r": 2},
        sampling=SamplingConfig(max_new_tokens=6),
        optim=OptimConfig(learning_rate=1e-2),
    )
    assert module.reference is None  # the reference is the adapter-disabled policy
    base = {n: p.detach().clone() for n, p in module.policy.named_parameters() if not p.requires_grad}
    head = module.value_head.weight.clone()
    rl_trainer(2, logger=False).fit(module, DataLoader(formality_prompts(0, 4, seed=0), batch_size=2))
    for n, p in module.policy.named_parameters():
        if not p.requires_grad:
            torch.testing.assert_close(p, base[n])  # only the adapters (and the value head) train
    assert not torch.equal(module.value_head.weight, head)


def test_value_learning_rate_is_its_own_group(formality_rm: Path) -> None:
    module = PPOModule(
        reward_model=str(formality_rm), value_learning_rate=1e-2, optim=OptimConfig(learning_rate=1e-4)
    )
    optimizer = module.configure_optimizers()["optimizer"]
    critic = {id(p) for p in (*module.critic_backbone.parameters(), *module.value_head.parameters())}
    for group in optimizer.param_groups:
        in_critic = {id(p) in critic for p in group["params"]}
        assert len(in_critic) == 1  # a group is all critic or all policy
        assert group["lr"] == (1e-2 if in_critic.pop() else 1e-4)
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == critic | {id(p) for p in module.policy.parameters()}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"critic": "nope"}, "critic must be one of separate, shared"),
        ({"num_samples": 0}, "num_samples"),
        ({"ppo_epochs": 0}, "ppo_epochs"),
        ({"num_minibatches": 0}, "num_minibatches"),
        ({"gamma": 1.5}, r"gamma must be in \[0, 1\]"),
        ({"lam": -0.1}, r"lam must be in \[0, 1\]"),
        ({"clip_ratio": 0.0}, "clip_ratio"),
        ({"value_clip": 0.0}, "value_clip"),
        ({"vf_coef": -1.0}, "vf_coef"),
        ({"value_learning_rate": 0.0}, "value_learning_rate"),
        ({"kl": {"coef": -1.0}}, "kl.coef must be >= 0"),
        ({"sampling": {"temperature": 0.0}}, "sampling.temperature must be > 0"),
        ({"reward": {"mapping": "nope"}}, "reward.mapping must be one of"),
        ({"reward": {"aggregation": "max"}}, "unknown aggregation 'max'"),
    ],
)
def test_bad_arguments(formality_rm: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(MoslimError, match=match) as info:
        PPOModule(reward_model=str(formality_rm), **kwargs)
    assert "\n" not in str(info.value)


def test_reward_model_is_required() -> None:
    with pytest.raises(MoslimError, match="reward_model"):
        PPOModule()


def test_minibatches_must_fit_the_rollout(formality_prompts, rl_trainer, formality_rm: Path) -> None:
    module = PPOModule(
        reward_model=str(formality_rm), num_minibatches=4, sampling=SamplingConfig(max_new_tokens=2)
    )
    trainer = rl_trainer(1, logger=False)
    with pytest.raises(MoslimError, match="num_minibatches=4"):
        trainer.fit(module, DataLoader(formality_prompts(0, 4, seed=0), batch_size=2))
