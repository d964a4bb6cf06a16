"""RLOOModule: a policy learns against a hand-built reward model; logging, checkpoints and export."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from moslim_pl.errors import MoslimError
from moslim_pl.models.backbone import load_causal_lm, load_tokenizer
from moslim_pl.models.reward_model import MultiHeadRewardModel
from moslim_pl.modules import RLOOModule
from moslim_pl.modules.settings import KLConfig, OptimConfig, RewardConfig, SamplingConfig

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def test_hand_built_rm_rewards_the_requested_markers(formality_rm: Path) -> None:
    rm = MultiHeadRewardModel.from_pretrained(formality_rm)
    out = rm.score(["<formality 0> explain bees ."] * 2, ["yeah , bees", "moreover , bees"])
    assert out.reward[0] > 0.3 > out.reward[1]


def test_rloo_learns_to_follow_the_prefix(
    formality_prompts, read_logs, rl_trainer, formality_rm: Path, tmp_path: Path
) -> None:
    # <formality 0> asks for casual markers; the RM's default target (no prefix) is formal, so the
    # reward only rises if the RM gets the original prompts, prefix included.
    seed_everything(0)
    module = RLOOModule(
        reward_model=str(formality_rm),
        num_samples=4,
        log_samples_every_n_steps=10,
        sampling=SamplingConfig(max_new_tokens=16, max_prompt_length=32),
        optim=OptimConfig(learning_rate=3e-3),
        kl=KLConfig(coef=0.01),
    )
    steps = 40
    trainer = rl_trainer(
        steps,
        logger=TensorBoardLogger(tmp_path, name="rloo"),
        log_every_n_steps=1,
        limit_val_batches=2,
        num_sanity_val_steps=0,
    )
    train = DataLoader(formality_prompts(0, 64, seed=0), batch_size=4, shuffle=True)
    val = DataLoader(formality_prompts(0, 8, seed=1), batch_size=4)
    start = time.perf_counter()
    trainer.fit(module, train, val)
    elapsed = time.perf_counter() - start

    scalars, texts = read_logs(tmp_path)
    reward = scalars["rollout/reward"]
    assert len(reward) == steps
    first, last = sum(reward[:5]) / 5, sum(reward[-5:]) / 5
    print(
        f"rollout/reward first 5 steps {first:.3f}, last 5 steps {last:.3f}, {steps} steps in {elapsed:.1f}s"
    )
    assert last > first + 0.3
    assert scalars["rollout/hit_rate/formality"][-1] > 0.5
    for key in (
        "rollout/kl",
        "rollout/entropy",
        "rollout/response_length",
        "reward/formality",
        "train/loss",
        "train/kl_coef",
        "val/reward",
        "val/hit_rate/formality",
    ):
        assert key in scalars, key
    assert "reward/verbosity" not in scalars  # not requested by any prompt
    assert scalars["train/kl_coef"] == [pytest.approx(0.01)] * steps
    assert "rollout/samples/text_summary" in texts

    # The reference and the RM never moved; the export reloads as a plain causal LM.
    reference = load_causal_lm("moslim/tiny-llama", tokenizer=module.tokenizer)
    assert not torch.equal(module.policy.lm_head.weight, module.reference.lm_head.weight)
    assert all(not p.requires_grad for p in (*module.reference.parameters(), *module.rm.parameters()))
    assert reference.lm_head.weight.shape == module.policy.lm_head.weight.shape
    folder = module.export(tmp_path / "policy")
    module.export(tmp_path / "policy")  # replaces the previous export
    reloaded = load_causal_lm(str(folder))
    torch.testing.assert_close(reloaded.lm_head.weight, module.policy.lm_head.weight)
    assert load_tokenizer(str(folder)).get_vocab() == module.tokenizer.get_vocab()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".policy")] == []


def test_adaptive_kl_clipping_and_checkpoint(
    formality_prompts, read_logs, rl_trainer, formality_rm: Path, tmp_path: Path
) -> None:
    seed_everything(1)
    module = RLOOModule(
        reward_model=str(formality_rm),
        num_samples=2,
        clip_ratio=0.2,
        updates_per_rollout=2,
        log_samples_every_n_steps=None,
        sampling=SamplingConfig(max_new_tokens=6),
        optim=OptimConfig(learning_rate=1e-2),
        kl=KLConfig(coef=0.1, target=0.5, horizon=100),
        reward=RewardConfig(missing_eos_penalty=1.0),
    )
    reference = [p.clone() for p in module.reference.parameters()]
    trainer = rl_trainer(4, logger=TensorBoardLogger(tmp_path, name="rloo"), log_every_n_steps=1)
    trainer.fit(module, DataLoader(formality_prompts(2, 8, seed=0), batch_size=2))
    assert trainer.global_step == 4  # two rollouts, two updates each
    scalars, _ = read_logs(tmp_path)
    # the KL of a freshly moved policy is far above the target at first: beta grows
    assert module.kl_controller.value != pytest.approx(0.1)
    assert "train/clip_fraction" in scalars
    for before, after in zip(reference, module.reference.parameters(), strict=True):
        assert torch.equal(before, after)

    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["kl_controller"] == {"value": module.kl_controller.value}
    # the frozen RM is rebuilt from its export, not stored; the reference of a randomly initialized tiny
    # policy is stored (tests/modules/test_policy_evaluation.py covers a pretrained policy's)
    keys = checkpoint["state_dict"]
    assert any(k.startswith("policy.") for k in keys) and any(k.startswith("reference.") for k in keys)
    assert not any(k.startswith("rm.") for k in keys)
    restored = RLOOModule.load_from_checkpoint(path)
    assert restored.kl_controller.value == module.kl_controller.value
    for name, tensor in module.state_dict().items():  # policy, reference and RM all equal
        torch.testing.assert_close(restored.state_dict()[name], tensor, msg=name)
    # resuming a fit from the checkpoint also rebuilds them (strict loading of the trained weights)
    resumed = RLOOModule(**module.hparams)
    rl_trainer(5, logger=False).fit(
        resumed, DataLoader(formality_prompts(2, 8, seed=0), batch_size=2), ckpt_path=path
    )
    for before, after in zip(reference, resumed.reference.parameters(), strict=True):
        assert torch.equal(before, after)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": 1}, "num_samples must be >= 2"),
        ({"sampling": {"temperature": 0.0}}, "sampling.temperature must be > 0, got 0.0"),
        ({"sampling": {"val_temperature": -1.0}}, "sampling.val_temperature must be >= 0"),
        ({"sampling": {"temprature": 1.0}}, "sampling: .*unexpected keyword argument 'temprature'"),
        ({"reward": {"mapping": "nope"}}, "reward.mapping must be one of gaussian, "),
        ({"reward": {"aggregation": "max"}}, "reward.aggregation: unknown aggregation 'max'"),
        ({"reward": {"aggregation": "softmin:0"}}, "softmin temperature must be a positive number"),
        ({"reward": {"sigma_floor": -1.0}}, "reward.sigma_floor must be >= 0"),
        ({"reward": {"z_clip": 0.0}}, "reward.z_clip must be > 0 or None"),
        ({"reward": {"mapping": "linear"}}, "reward.mapping_weights"),
        ({"optim": {"learning_rate": 0.0}}, "optim.learning_rate must be > 0"),
        ({"optim": {"max_grad_norm": 0.0}}, "optim.max_grad_norm must be > 0 or None"),
        ({"kl": {"coef": -1.0}}, "kl.coef must be >= 0"),
        ({"kl": {"target": 0.0}}, "kl.target must be > 0 or None"),
        ({"updates_per_rollout": 0}, "updates_per_rollout"),
    ],
)
def test_bad_arguments(formality_rm: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(MoslimError, match=match):
        RLOOModule(reward_model=str(formality_rm), **kwargs)


def test_reward_model_is_required() -> None:
    with pytest.raises(MoslimError, match="reward_model"):
        RLOOModule()


def test_batches_must_be_prompt_strings(formality_rm: Path) -> None:
    module = RLOOModule(reward_model=str(formality_rm), sampling=SamplingConfig(max_new_tokens=2))
    with pytest.raises(MoslimError, match="prompt strings"):
        module.validation_step({"input_ids": torch.zeros(2, 3)}, 0)


def test_checkpoint_of_a_pretrained_policy_leaves_out_the_frozen_models(
    formality_prompts, rl_trainer, formality_rm: Path, tmp_path: Path
) -> None:
    tokenizer = load_tokenizer("moslim/tiny-llama")
    start = tmp_path / "sft"
    load_causal_lm("moslim/tiny-llama", tokenizer=tokenizer, tiny_config=TINY).save_pretrained(start)
    tokenizer.save_pretrained(start)
    module = RLOOModule(
        policy=str(start),
        reward_model=str(formality_rm),
        num_samples=2,
        sampling=SamplingConfig(max_new_tokens=6),
    )
    trainer = rl_trainer(2, logger=False)
    trainer.fit(module, DataLoader(formality_prompts(2, 4, seed=0), batch_size=2))
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    keys = torch.load(path, weights_only=True)["state_dict"]
    assert keys and all(k.startswith("policy.") for k in keys)
    restored = RLOOModule.load_from_checkpoint(path)
    for name, tensor in module.state_dict().items():  # trained policy, initial reference, RM
        torch.testing.assert_close(restored.state_dict()[name], tensor, msg=name)


@pytest.mark.parametrize(
    "option",
    [{"gradient_checkpointing": True}, pytest.param({"compile": True}, marks=pytest.mark.slow)],  # ~45 s cold
)
def test_memory_and_speed_options_train_the_same_policy(
    formality_prompts, rl_trainer, formality_rm: Path, option: dict
) -> None:
    """Checkpointing and torch.compile change how the training forward runs, not what it computes."""
    if option.get("compile"):
        pytest.importorskip("torch._inductor", reason="torch.compile needs inductor")
    updates = []
    for extra in ({}, option):
        seed_everything(0)
        module = RLOOModule(
            reward_model=str(formality_rm),
            num_samples=2,
            log_samples_every_n_steps=None,
            sampling=SamplingConfig(max_new_tokens=4, max_prompt_length=32),
            optim=OptimConfig(learning_rate=1e-2),
            **extra,
        )
        start = torch.cat([p.detach().flatten() for p in module.policy.parameters()])
        rl_trainer(2).fit(module, DataLoader(formality_prompts(0, 4, seed=0), batch_size=2))
        updates.append(torch.cat([p.detach().flatten() for p in module.policy.parameters()]) - start)
    if option.get("gradient_checkpointing"):
        assert all(layer.gradient_checkpointing for layer in module.policy.model.layers), "blocks checkpoint"
        assert not module.policy.training  # dropout stays off
    # Adam magnifies float-rounding differences of near-zero gradients elementwise: compare the updates whole
    assert torch.nn.functional.cosine_similarity(updates[0], updates[1], dim=0) > 0.99
    assert updates[1].norm() == pytest.approx(float(updates[0].norm()), rel=0.05)


def test_penalties_for_cut_and_empty_responses() -> None:
    from moslim_pl.generation import Rollout
    from moslim_pl.rollout import penalize

    responses = ["a full answer", " \n", "cut answer", ""]
    rollout = Rollout(
        sequences=torch.zeros(4, 3, dtype=torch.long),
        attention_mask=torch.ones(4, 3, dtype=torch.long),
        prompt_length=1,
        response_mask=torch.ones(4, 2, dtype=torch.long),
        responses=responses,
        prompt_index=torch.tensor([0, 0, 1, 1]),
        finished=torch.tensor([True, True, False, False]),
    )
    reward = torch.tensor([0.5, 0.5, 0.5, 0.5])
    # row 1 is empty (whitespace only): -2; row 2 is cut: -1; row 3 is both: -3
    assert penalize(reward, rollout, 1.0, 2.0).tolist() == [0.5, -1.5, -0.5, -2.5]
    assert torch.equal(penalize(reward, rollout, None, None), reward)


@pytest.mark.parametrize("stage", ["rloo", "ppo", "online_dpo"])
def test_every_stage_passes_its_penalties_to_the_reward(
    stage: str, formality_prompts, rl_trainer, formality_rm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    from moslim_pl.modules import OnlineDPOModule, PPOModule
    from moslim_pl.rollout import penalize

    module_file = importlib.import_module("moslim_pl.modules.policy")  # the base scores for every stage
    seen: list[tuple] = []

    def recording(reward, rollout, missing_eos_penalty, empty_penalty):
        seen.append((missing_eos_penalty, empty_penalty))
        return penalize(reward, rollout, missing_eos_penalty, empty_penalty)

    monkeypatch.setattr(module_file, "penalize", recording)
    cls = {"rloo": RLOOModule, "ppo": PPOModule, "online_dpo": OnlineDPOModule}[stage]
    module = cls(
        reward_model=str(formality_rm),
        log_samples_every_n_steps=None,
        sampling=SamplingConfig(max_new_tokens=4),
        reward=RewardConfig(missing_eos_penalty=0.5, empty_penalty=2.0),
    )
    rl_trainer(1).fit(module, DataLoader(formality_prompts(2, 2, seed=0), batch_size=2))
    assert seen and set(seen) == {(0.5, 2.0)}
