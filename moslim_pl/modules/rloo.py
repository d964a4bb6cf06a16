"""LightningModule that optimizes the prompt-steered policy with RLOO against the frozen multi-head RM.

Each training batch is a list of prompts (``<name level>`` prefix or none). One step reads::

    k samples per prompt -> RM reward (prefix stripped by the RM) -> minus beta * KL to the reference
    -> leave-one-out advantages -> REINFORCE (optionally PPO-clipped) update(s) of the policy

The reference model is a frozen copy of the initial policy (with ``lora``: the policy with its adapters
disabled); the RM is loaded from its export, frozen and never trained. Dropout stays off in all three models (as TRL does): the log-probs that train the policy
must be those of the distribution that sampled; Lightning's warning that modules are in eval mode at the
start of training is therefore expected.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from moslim_pl.errors import MoslimError, require
from moslim_pl.losses import (
    kl_estimate,
    masked_mean,
    rloo_advantages,
    rloo_loss,
    scale_advantages,
    shape_rewards,
)
from moslim_pl.modules.policy import PolicyModule
from moslim_pl.modules.settings import KLConfig
from moslim_pl.rollout import entropy_from_logits, rollout_inputs


@contextmanager
def _checkpointing(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Let Hugging Face's checkpointed blocks checkpoint although the policy stays in eval mode.

    They only checkpoint in training mode; the policy is kept in eval mode (no dropout), so only the
    blocks' own ``training`` flag is raised (not their submodules': dropout stays off) for the pass.
    """
    blocks = (
        [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True] if enabled else []
    )
    modes = [block.training for block in blocks]
    for block in blocks:
        block.training = True
    try:
        yield
    finally:
        for block, mode in zip(blocks, modes, strict=True):
            block.training = mode


class RLOOModule(PolicyModule):
    """RLOO policy optimization; logs ``rollout/*``, ``reward/<head>``, ``train/*`` and ``val/*``.

    Takes the shared arguments of :class:`~moslim_pl.modules.policy.PolicyModule` and its own:

    Args:
        num_samples: ``k`` responses per prompt (>= 2: the baseline of each is the mean of the others).
        kl: the KL penalty: each sequence's reward becomes ``r - beta * KL_seq``
            (``moslim_pl.modules.settings.KLConfig``).
        clip_ratio: PPO-style token ratio clipping; only bites with ``updates_per_rollout > 1``.
        updates_per_rollout: optimizer steps taken on each rollout (each is one ``global_step``); the
            Trainer's ``accumulate_grad_batches`` needs 1.
        normalize_advantages: divide each rollout's advantages by their standard deviation over the
            batch (per rank), so the step size does not depend on the reward's units
            (:func:`moslim_pl.losses.rloo.scale_advantages`); off by default (the RLOO paper's update).
        gradient_checkpointing: recompute each transformer block's activations in the backward pass of
            the training forward instead of keeping them: less memory for more time (about one more
            forward pass). The policy must be a Hugging Face model that supports it. The training forward
            then runs full sequences (the shared-prompt pass needs the KV cache, which checkpointing drops).
        compile: run the training forward through ``torch.compile(policy, dynamic=True)`` (generation and
            the reference stay eager). The first steps pay the compilation; then it also runs full
            sequences. Off by default: on CPUs it did not pay off in ``docs/benchmarks.md``.
    """

    def __init__(
        self,
        num_samples: int = 4,
        kl: KLConfig = KLConfig(),
        clip_ratio: float | None = None,
        updates_per_rollout: int = 1,
        normalize_advantages: bool = False,
        gradient_checkpointing: bool = False,
        compile: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if gradient_checkpointing:
            base = self.policy.get_base_model() if hasattr(self.policy, "get_base_model") else self.policy
            if not getattr(base, "supports_gradient_checkpointing", False):
                raise MoslimError(f"{type(base).__name__} does not support gradient checkpointing")
            options = {"use_reentrant": False}
            if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x's name
                base.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
            else:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
        # a wrapper that shares the policy's parameters; not a child module (no second state-dict entry)
        self.__dict__["_training_forward"] = torch.compile(self.policy, dynamic=True) if compile else None

    def _check_arguments(self) -> None:
        hp = self.hparams
        require(hp.num_samples >= 2, "num_samples", ">= 2 (RLOO's baseline)", hp.num_samples)
        require(hp.updates_per_rollout >= 1, "updates_per_rollout", ">= 1", hp.updates_per_rollout)
        require(hp.clip_ratio is None or hp.clip_ratio > 0, "clip_ratio", "> 0 or None", hp.clip_ratio)

    def _steps_per_rollout(self) -> tuple[int, str]:
        steps = self.hparams.updates_per_rollout
        return steps, f"updates_per_rollout={steps}"

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Sequence[str], batch_idx: int) -> Tensor:
        hp = self.hparams
        rollout_number = self._rollout_number()  # before this rollout's optimizer steps
        prompts, rollout, scores, reward = self._sample(batch, hp.num_samples)
        inputs = rollout_inputs(rollout)
        mask = rollout.response_mask
        group = hp.num_samples  # the k samples of a prompt share its columns: the prompt runs once
        ref_logprobs = self.reference_logprobs(*inputs, group_size=group)

        window = self._next_window()
        kl_coef = self.kl_controller.value
        losses, clip_fractions = [], []
        policy, policy_group = None, group
        if self._training_forward is not None:
            policy, policy_group = self._training_forward, 1
        elif hp.gradient_checkpointing:
            policy_group = 1
        for update in range(hp.updates_per_rollout):
            with _checkpointing(self.policy, hp.gradient_checkpointing):
                logits, logprobs = self._policy_logprobs(rollout, policy, group_size=policy_group)
            if update == 0:  # the policy that sampled: fixes the KL, the advantages and the old log-probs
                old_logprobs = logprobs.detach()
                kl = kl_estimate(old_logprobs, ref_logprobs, mask)
                advantages = rloo_advantages(shape_rewards(reward, kl, kl_coef), hp.num_samples)
                if hp.normalize_advantages:
                    advantages = scale_advantages(advantages)
                entropy = masked_mean(entropy_from_logits(logits.detach()), mask)
            loss, stats = rloo_loss(logprobs, old_logprobs, advantages, mask, hp.clip_ratio)
            # with accumulate_grad_batches N: the loss (a mean over sequences) / N, so that N equal
            # micro-batches sum to the full batch's gradient
            self._backward_and_step(loss, window)
            losses.append(loss.detach())
            clip_fractions.append(stats["clip_fraction"])

        size = len(rollout.responses)
        metrics = {"loss": torch.stack(losses).mean(), "kl_coef": kl_coef}
        if hp.clip_ratio is not None:
            metrics["clip_fraction"] = torch.stack(clip_fractions).mean()
        self._log_train(metrics, size, prog_bar=("loss",))
        self._log_step_end(prompts, rollout, scores, kl, entropy, rollout_number)
        return metrics["loss"]
