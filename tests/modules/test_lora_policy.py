"""LoRA policies: no reference copy, the reference is the adapter-disabled base, export merges."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import seed_everything
from torch.utils.data import DataLoader

from moslim_pl.errors import MoslimError
from moslim_pl.generation import encode_prompts, generate
from moslim_pl.models.backbone import load_causal_lm
from moslim_pl.models.lora import LoRAConfig
from moslim_pl.modules import OnlineDPOModule, RLOOModule
from moslim_pl.modules.settings import OptimConfig, SamplingConfig
from moslim_pl.rollout import rollout_inputs, sequence_logprobs

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def _rloo(rm: Path, **kwargs) -> RLOOModule:
    seed_everything(0)
    return RLOOModule(
        reward_model=str(rm),
        tiny_config=TINY,
        num_samples=2,
        sampling=SamplingConfig(max_new_tokens=8, max_prompt_length=32),
        optim=OptimConfig(learning_rate=1e-2),
        **kwargs,
    )


def test_lora_policy_has_no_reference_copy_and_trains_only_adapters(
    formality_rm, formality_prompts, rl_trainer, tmp_path: Path
) -> None:
    module = _rloo(formality_rm, lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    assert module.reference is None and module.hparams.lora == {
        "r": 4,
        "alpha": 8,
        "dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"],
    }
    trainable = {n for n, p in module.policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    base_before = {n: p.detach().clone() for n, p in module.policy.named_parameters() if not p.requires_grad}

    prompts = formality_prompts(0, 4, seed=0)
    batch = encode_prompts(module.tokenizer, prompts, 32)
    rollout = generate(module.policy, module.tokenizer, batch, max_new_tokens=8, num_samples=2)
    # adapters start at B = 0: the reference (adapters off) equals the policy
    with torch.no_grad():
        policy_lp = sequence_logprobs(module.policy, *rollout_inputs(rollout))
    reference_lp = module.reference_logprobs(*rollout_inputs(rollout), temperature=1.0)
    torch.testing.assert_close(policy_lp, reference_lp)

    rl_trainer(3, logger=False).fit(module, DataLoader(prompts, batch_size=2), DataLoader(prompts[:2]))
    for n, p in module.policy.named_parameters():
        if not p.requires_grad:
            torch.testing.assert_close(p, base_before[n])  # the base (the reference) never moves
    with torch.no_grad():
        trained_lp = sequence_logprobs(module.policy, *rollout_inputs(rollout))
    # the adapters moved the policy, while the reference stays the initial model
    assert not torch.allclose(trained_lp, policy_lp)
    torch.testing.assert_close(
        module.reference_logprobs(*rollout_inputs(rollout), temperature=1.0), reference_lp
    )

    # export merges: a plain model whose log-probs are the trained policy's
    folder = module.export(tmp_path / "export")
    merged = load_causal_lm(str(folder)).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(sequence_logprobs(merged, *rollout_inputs(rollout)), trained_lp)
    assert module.reference is None and hasattr(module.policy, "disable_adapter")  # still adapted


def test_lora_online_dpo_and_config_errors(formality_rm) -> None:
    module = OnlineDPOModule(reward_model=str(formality_rm), tiny_config=TINY, lora=LoRAConfig(r=2))
    assert module.reference is None
    with pytest.raises(MoslimError, match="lora: need r >= 1"):
        _rloo(formality_rm, lora={"r": 0})
    with pytest.raises(MoslimError, match="lora:"):
        _rloo(formality_rm, lora={"target_modules": ["no_such_layer"]})
