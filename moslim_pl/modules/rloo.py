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

from moslim_pl.errors import MoslimError
from moslim_pl.losses.kl import kl_controller, kl_estimate, shape_rewards
from moslim_pl.losses.rloo import rloo_advantages, rloo_loss, scale_advantages
from moslim_pl.models.lora import LoRAConfig
from moslim_pl.modules.policy import PolicyModule
from moslim_pl.rollout import (
    entropy_from_logits,
    penalize,
    response_logits,
    rollout_inputs,
    token_logprobs,
)


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

    Args:
        policy: the initial policy: a hub id, a folder (an SFT export in practice) or ``moslim/tiny-llama``.
        reward_model: the folder of a reward model export (``RewardModelModule.export``); required.
        tiny_config: overrides of the tiny policy's config (only for ``moslim/tiny-llama``).
        num_samples: ``k`` responses per prompt (>= 2: the baseline of each is the mean of the others).
        max_new_tokens, temperature, top_p: sampling of the training rollouts (``temperature > 0``).
        max_prompt_length: prompt tokens kept (the prefix and the end of the prompt survive a cut).
        chat_template: render each prompt as the user turn of the policy tokenizer's chat template;
            ``None`` (default): whenever the tokenizer has one (an explicit ``false`` for a chat model warns).
        mapping, mapping_weights: the reward mapping (``moslim_pl.rewards.mapping``); weights for ``linear``.
        sigma_floor, z_clip: guards of the ``gaussian`` mapping: a floor on each statistic's sigma and a
            clamp of each z-term to ``[-z_clip, z_clip]`` (``moslim_pl.rewards.mapping.gaussian_mapping``);
            the defaults (0, ``None``) are the paper's formula.
        aggregation: how the named dimensions' terms become one reward: ``mean`` (the paper's), ``min``
            (the worst named dimension decides: a hit cannot buy off a miss) or ``softmin[:tau]`` (a smooth
            minimum, temperature ``tau``, default 1; ``docs/concepts.md``).
        kl_coef: ``beta`` of the reward shaping ``r - beta * KL_seq`` (the initial value when adaptive).
        kl_target, kl_horizon: with ``kl_target`` set, ``beta`` adapts towards this per-sequence KL over a
            horizon counted in samples (Ziegler et al.); ``None`` keeps ``beta`` fixed.
        clip_ratio: PPO-style token ratio clipping; only bites with ``updates_per_rollout > 1``.
        updates_per_rollout: optimizer steps taken on each rollout (each is one ``global_step``).
        normalize_advantages: divide each rollout's advantages by their standard deviation over the
            batch (per rank), so the step size does not depend on the reward's units
            (:func:`moslim_pl.losses.rloo.scale_advantages`); off by default (the RLOO paper's update).
        max_grad_norm: gradient norm clipping (``None``: off). The Trainer's ``gradient_clip_val`` (with its
            ``gradient_clip_algorithm``), when set, replaces it; the Trainer's ``accumulate_grad_batches N``
            takes one optimizer step every N rollouts (with ``updates_per_rollout=1``).
        learning_rate, weight_decay, warmup_steps: AdamW with linear warm-up then constant.
        missing_eos_penalty: subtracted from the reward of responses cut at ``max_new_tokens``.
        empty_penalty: subtracted from the reward of responses with nothing in them (no
            non-whitespace character): an RM never trained on an empty answer may score it well
            (``docs/concepts.md``, "The empty answer"); ``None``: off.
        val_temperature: sampling temperature of validation (one response per prompt; 0 = greedy).
        log_samples_every_n_steps: text samples to the loggers every this many rollouts (``None``: never).
        rm_batch_size: pairs per RM forward pass.
        trust_remote_code: passed to ``from_pretrained`` for the policy.
        lora: train LoRA adapters instead of the whole policy; the reference is then the policy with
            its adapters disabled (no frozen copy), and the export merges the adapters.
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
        policy: str = "moslim/tiny-llama",
        reward_model: str | None = None,
        tiny_config: dict[str, Any] | None = None,
        num_samples: int = 4,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_prompt_length: int = 256,
        chat_template: bool | None = None,
        mapping: str = "gaussian",
        mapping_weights: list[float] | None = None,
        sigma_floor: float = 0.0,
        z_clip: float | None = None,
        aggregation: str = "mean",
        kl_coef: float = 0.05,
        kl_target: float | None = None,
        kl_horizon: float = 10000.0,
        clip_ratio: float | None = None,
        updates_per_rollout: int = 1,
        normalize_advantages: bool = False,
        max_grad_norm: float | None = 1.0,
        learning_rate: float = 1e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        missing_eos_penalty: float | None = None,
        empty_penalty: float | None = None,
        val_temperature: float = 0.0,
        log_samples_every_n_steps: int | None = 50,
        rm_batch_size: int = 16,
        trust_remote_code: bool = False,
        lora: LoRAConfig | None = None,
        gradient_checkpointing: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._check_arguments()
        self._build_models()
        self.kl_controller = kl_controller(kl_coef, kl_target, kl_horizon)
        if gradient_checkpointing:
            base = self.policy.get_base_model() if hasattr(self.policy, "get_base_model") else self.policy
            if not getattr(base, "supports_gradient_checkpointing", False):
                raise MoslimError(f"{type(base).__name__} does not support gradient checkpointing")
            kwargs = {"use_reentrant": False}
            if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x's name
                base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        # a wrapper that shares the policy's parameters; not a child module (no second state-dict entry)
        self.__dict__["_training_forward"] = torch.compile(self.policy, dynamic=True) if compile else None

    def _check_arguments(self) -> None:
        hp = self.hparams
        if hp.num_samples < 2:
            raise MoslimError(f"RLOO needs num_samples >= 2 (its baseline), got {hp.num_samples}")
        if hp.updates_per_rollout < 1:
            raise MoslimError(f"updates_per_rollout must be >= 1, got {hp.updates_per_rollout}")
        if hp.clip_ratio is not None and hp.clip_ratio <= 0:
            raise MoslimError(f"clip_ratio must be > 0 or None, got {hp.clip_ratio}")

    def _check_accumulation(self, accumulate: int) -> None:
        if self.hparams.updates_per_rollout != 1:
            raise MoslimError(
                f"accumulate_grad_batches={accumulate} needs updates_per_rollout=1 (got "
                f"{self.hparams.updates_per_rollout}): each rollout's later updates need the step before them"
            )

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Sequence[str], batch_idx: int) -> Tensor:
        hp = self.hparams
        prompts = self._prompts(batch)
        rollout = self._rollout(prompts, hp.num_samples, hp.temperature)
        scores = self._score(prompts, rollout)
        reward = scores.reward
        reward = penalize(reward, rollout, hp.missing_eos_penalty, hp.empty_penalty)
        inputs = rollout_inputs(rollout)
        mask = rollout.response_mask
        group = hp.num_samples  # the k samples of a prompt share its columns: the prompt runs once
        ref_logprobs = self.reference_logprobs(*inputs, temperature=hp.temperature, group_size=group)

        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        first, last = self._window()
        self._micro_batches += 1
        kl_coef = self.kl_controller.value
        rollout_number = self.global_step // hp.updates_per_rollout
        losses, clip_fractions = [], []
        policy, policy_group = self.policy, group
        if self._training_forward is not None:
            policy, policy_group = self._training_forward, 1
        elif hp.gradient_checkpointing:
            policy_group = 1
        for update in range(hp.updates_per_rollout):
            with _checkpointing(self.policy, hp.gradient_checkpointing):
                logits = response_logits(
                    policy, *inputs[:3], temperature=hp.temperature, group_size=policy_group
                )
            logprobs = token_logprobs(logits, rollout.sequences[:, rollout.prompt_length :])
            logprobs = torch.where(mask.bool(), logprobs, torch.zeros_like(logprobs))
            if update == 0:  # the policy that sampled: fixes the KL, the advantages and the old log-probs
                old_logprobs = logprobs.detach()
                kl = kl_estimate(old_logprobs, ref_logprobs, mask)
                advantages = rloo_advantages(shape_rewards(reward, kl, kl_coef), hp.num_samples)
                if hp.normalize_advantages:
                    advantages = scale_advantages(advantages)
                entropy = (entropy_from_logits(logits.detach()) * mask).sum() / mask.sum().clamp(min=1)
            loss, stats = rloo_loss(logprobs, old_logprobs, advantages, mask, hp.clip_ratio)
            if first:
                optimizer.zero_grad()
            # with accumulate_grad_batches N: the loss (a mean over sequences) / N, so that N equal
            # micro-batches sum to the full batch's gradient
            self.manual_backward(self._accumulated(loss))
            if last:
                self._clip_and_step(optimizer, scheduler)
            losses.append(loss.detach())
            clip_fractions.append(stats["clip_fraction"])

        size = len(rollout.responses)
        self.log("train/loss", torch.stack(losses).mean(), prog_bar=True, batch_size=size)
        self.log("train/kl_coef", kl_coef, batch_size=size)
        if hp.clip_ratio is not None:
            self.log("train/clip_fraction", torch.stack(clip_fractions).mean(), batch_size=size)
        self._log_rollout(scores, rollout, kl, entropy)
        self._update_kl_controller(kl, size)
        if hp.log_samples_every_n_steps and rollout_number % hp.log_samples_every_n_steps == 0:
            self._log_samples(prompts, rollout, scores.reward)
        return torch.stack(losses).mean()
