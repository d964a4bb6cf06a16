"""Lightning's own knobs in the RL stages: accumulate_grad_batches and gradient_clip_val (manual optimization)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, seed_everything
from torch.utils.data import DataLoader

from moslim_pl.errors import MoslimError
from moslim_pl.generation import Rollout
from moslim_pl.modules import OnlineDPOModule, PPOModule, RLOOModule
from moslim_pl.modules.settings import OptimConfig, SamplingConfig

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


class Grads(Callback):
    """The gradients each optimizer step sees (after clipping), by parameter name."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.steps.append(
            {n: p.grad.detach().clone() for n, p in pl_module.policy.named_parameters() if p.grad is not None}
        )


def _rows(rollout: Rollout, start: int, stop: int, prompt_offset: int) -> Rollout:
    return Rollout(
        rollout.sequences[start:stop],
        rollout.attention_mask[start:stop],
        rollout.prompt_length,
        rollout.response_mask[start:stop],
        rollout.responses[start:stop],
        rollout.prompt_index[start:stop] - prompt_offset,
        rollout.finished[start:stop],
    )


def _module(cls, rm: Path, **kwargs):
    seed_everything(0)
    return cls(
        reward_model=str(rm),
        tiny_config=TINY,
        sampling=SamplingConfig(max_new_tokens=6, max_prompt_length=32),
        **kwargs,
    )


@pytest.mark.parametrize(
    ("cls", "kwargs", "samples"),
    [
        (RLOOModule, {"num_samples": 2}, 2),
        (PPOModule, {"num_samples": 2, "ppo_epochs": 1, "whiten_advantages": False, "critic": "shared"}, 2),
        (OnlineDPOModule, {}, 2),
    ],
)
def test_two_accumulated_half_batches_match_one_full_batch(
    cls, kwargs, samples, formality_rm: Path, formality_prompts, rl_trainer
) -> None:
    """The same rollouts, once as one batch of 4 prompts, once as 2 accumulated batches of 2: one optimizer
    step each, with the same gradients (clipping off, so that the raw sums are compared)."""
    prompts = formality_prompts(0, 4, seed=0)
    full = _module(cls, formality_rm, optim=OptimConfig(max_grad_norm=None), **kwargs)
    accumulated = _module(cls, formality_rm, optim=OptimConfig(max_grad_norm=None), **kwargs)
    for a, b in zip(full.parameters(), accumulated.parameters(), strict=True):
        assert torch.equal(a, b)
    torch.manual_seed(1)
    rollout = full._rollout(prompts, samples, 1.0)
    # the RM reads the text: marker words make the rewards of a prompt's samples differ
    words = ["moreover , yeah", "yeah", "moreover", "furthermore , notably", "honestly", "notably , yeah"]
    rollout = rollout._replace(responses=[words[i % len(words)] for i in range(len(rollout.responses))])
    half = 2 * samples
    full._rollout = lambda p, n, t: rollout
    accumulated._rollout = lambda p, n, t: (
        _rows(rollout, 0, half, 0) if p == prompts[:2] else _rows(rollout, half, 2 * half, 2)
    )
    grads_full, grads_accumulated = Grads(), Grads()
    rl_trainer(1, logger=False, callbacks=[grads_full]).fit(full, DataLoader(prompts, batch_size=4))
    trainer = rl_trainer(1, logger=False, callbacks=[grads_accumulated], accumulate_grad_batches=2)
    trainer.fit(accumulated, DataLoader(prompts, batch_size=2))
    assert trainer.global_step == 1 and len(grads_accumulated.steps) == 1 and len(grads_full.steps) == 1
    (expected,), (got,) = grads_full.steps, grads_accumulated.steps
    assert expected.keys() == got.keys() and expected
    diff = max(float((expected[n] - got[n]).abs().max()) for n in expected)
    scale = max(float(g.abs().max()) for g in expected.values())
    print(
        f"{cls.__name__}: accumulate 2 x 2 prompts vs 4 prompts: max abs grad diff {diff:.3g} (max grad {scale:.3g})"
    )
    assert diff < 1e-6 * max(1.0, scale)
    for a, b in zip(full.policy.parameters(), accumulated.policy.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_refusals_and_trainer_clipping(formality_rm: Path, formality_prompts, rl_trainer) -> None:
    prompts = formality_prompts(0, 4, seed=0)
    module = _module(RLOOModule, formality_rm, num_samples=2, updates_per_rollout=2)
    with pytest.raises(MoslimError, match=r"one optimizer step per rollout, got 2 \(updates_per_rollout=2\)"):
        rl_trainer(1, logger=False, accumulate_grad_batches=2).fit(module, DataLoader(prompts, batch_size=2))
    module = _module(PPOModule, formality_rm, num_samples=2)
    with pytest.raises(MoslimError, match=r"got 4 \(ppo_epochs=4 x num_minibatches=1\)"):
        rl_trainer(1, logger=False, accumulate_grad_batches=2).fit(module, DataLoader(prompts, batch_size=2))
    # the trainer's gradient_clip_val (by value here) replaces optim.max_grad_norm
    module = _module(RLOOModule, formality_rm, num_samples=2, optim=OptimConfig(learning_rate=1.0))
    grads = Grads()
    trainer = rl_trainer(
        1, logger=False, callbacks=[grads], gradient_clip_val=1e-4, gradient_clip_algorithm="value"
    )
    trainer.fit(module, DataLoader(prompts, batch_size=2))
    assert module._clip == (1e-4, "value")
    assert max(float(g.abs().max()) for g in grads.steps[0].values()) <= 1e-4 + 1e-12
