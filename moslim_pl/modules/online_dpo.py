"""LightningModule that optimizes the prompt-steered policy with Online-DPO against the frozen multi-head RM.

Each training batch is a list of prompts (``<name level>`` prefix or none). One step reads::

    2 samples per prompt -> RM reward of each (ORIGINAL prompt, prefix stripped by the RM)
    -> the higher reward is chosen, the lower rejected; tied pairs are dropped
    -> DPO loss on the pairs' sequence log-probs against the frozen reference -> one optimizer step

(Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback", with the RM as the
annotator.) The reference model is a frozen copy of the initial policy (with ``lora``: the policy with
its adapters disabled); the RM is loaded from its export, frozen and never trained. Dropout stays off in all three models, as in :class:`RLOOModule`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from moslim_pl.errors import MoslimError
from moslim_pl.losses.dpo import dpo_loss
from moslim_pl.losses.kl import kl_estimate
from moslim_pl.models.lora import LoRAConfig
from moslim_pl.modules.policy import PolicyModule
from moslim_pl.rollout import (
    entropy_from_logits,
    penalize,
    response_logits,
    rollout_inputs,
    token_logprobs,
)

_NUM_SAMPLES = 2  # one pair per prompt


class OnlineDPOModule(PolicyModule):
    """Online-DPO policy optimization; logs ``rollout/*``, ``reward/<head>``, ``train/*`` and ``val/*``.

    Args:
        policy: the initial policy: a hub id, a folder (an SFT export in practice) or ``moslim/tiny-llama``.
        reward_model: the folder of a reward model export (``RewardModelModule.export``); required.
        tiny_config: overrides of the tiny policy's config (only for ``moslim/tiny-llama``).
        max_new_tokens, temperature, top_p: sampling of the two training responses per prompt
            (``temperature > 0``); the DPO log-probs are taken at the same temperature.
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
        beta: DPO's ``beta``: the implicit reward is ``beta * (log pi - log pi_ref)``.
        learning_rate, weight_decay, warmup_steps: AdamW with linear warm-up then constant.
        max_grad_norm: gradient norm clipping (``None``: off). The Trainer's ``gradient_clip_val`` (with its
            ``gradient_clip_algorithm``), when set, replaces it; the Trainer's ``accumulate_grad_batches N``
            takes one optimizer step every N batches (each batch's mean loss divided by N).
        missing_eos_penalty: subtracted from the reward of responses cut at ``max_new_tokens`` before
            the pair is ranked.
        empty_penalty: subtracted from the reward of responses with nothing in them (no
            non-whitespace character): an RM never trained on an empty answer may score it well
            (``docs/concepts.md``, "The empty answer"); ``None``: off.
        val_temperature: sampling temperature of validation (one response per prompt; 0 = greedy).
        log_samples_every_n_steps: text samples to the loggers every this many steps (``None``: never).
        rm_batch_size: pairs per RM forward pass.
        trust_remote_code: passed to ``from_pretrained`` for the policy.
        lora: train LoRA adapters instead of the whole policy; the reference is then the policy with
            its adapters disabled (no frozen copy), and the export merges the adapters.
    """

    def __init__(
        self,
        policy: str = "moslim/tiny-llama",
        reward_model: str | None = None,
        tiny_config: dict[str, Any] | None = None,
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
        beta: float = 0.1,
        learning_rate: float = 1e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        max_grad_norm: float | None = 1.0,
        missing_eos_penalty: float | None = None,
        empty_penalty: float | None = None,
        val_temperature: float = 0.0,
        log_samples_every_n_steps: int | None = 50,
        rm_batch_size: int = 16,
        trust_remote_code: bool = False,
        lora: LoRAConfig | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._check_arguments()
        self._build_models()

    def _check_arguments(self) -> None:
        hp = self.hparams
        if hp.beta <= 0:
            raise MoslimError(f"DPO needs beta > 0, got {hp.beta}")

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Sequence[str], batch_idx: int) -> Tensor:
        hp = self.hparams
        step = self.global_step
        prompts = self._prompts(batch)
        rollout = self._rollout(prompts, _NUM_SAMPLES, hp.temperature)
        scores = self._score(prompts, rollout)
        reward = scores.reward
        reward = penalize(reward, rollout, hp.missing_eos_penalty, hp.empty_penalty)
        inputs = rollout_inputs(rollout)
        mask = rollout.response_mask
        ref_logprobs = self.reference_logprobs(*inputs, temperature=hp.temperature)
        logits = response_logits(self.policy, *inputs[:3], temperature=hp.temperature)
        logprobs = token_logprobs(logits, rollout.sequences[:, rollout.prompt_length :])
        logprobs = torch.where(mask.bool(), logprobs, torch.zeros_like(logprobs))
        kl = kl_estimate(logprobs.detach(), ref_logprobs, mask)
        entropy = (entropy_from_logits(logits.detach()) * mask).sum() / mask.sum().clamp(min=1)

        # Rows 2b and 2b + 1 are the two samples of prompt b: the higher reward is chosen.
        pair_reward = reward.reshape(-1, _NUM_SAMPLES)
        pair_policy = logprobs.sum(-1).reshape(-1, _NUM_SAMPLES)
        pair_ref = ref_logprobs.sum(-1).reshape(-1, _NUM_SAMPLES)
        chosen = pair_reward.argmax(-1, keepdim=True)
        rejected = 1 - chosen
        valid = pair_reward[:, 0] != pair_reward[:, 1]  # a tie says nothing: dropped from the loss

        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        first, last = self._window()
        self._micro_batches += 1
        if first:  # grads to None: without valid pairs the step below leaves the policy as is
            optimizer.zero_grad()
        # Under DDP/FSDP2 the backward pass is a collective (gradient all-reduce / reduce-scatter): either
        # every rank runs it or none does, else the ranks hang or drift apart. A rank whose pairs all tie
        # still runs it, on a zero loss that reaches every parameter; with no valid pair on any rank none
        # runs it. One process: the sum is this rank's own count, so nothing changes there.
        any_valid = bool(self.trainer.strategy.reduce(valid.sum(), reduce_op="sum") > 0)
        if valid.any():
            loss, stats = dpo_loss(
                pair_policy.gather(-1, chosen).squeeze(-1)[valid],
                pair_policy.gather(-1, rejected).squeeze(-1)[valid],
                pair_ref.gather(-1, chosen).squeeze(-1)[valid],
                pair_ref.gather(-1, rejected).squeeze(-1)[valid],
                hp.beta,
            )
        else:
            # Exact-zero gradients on every parameter (the masked log-probs are zeros, not NaN), which the
            # all-reduce averages with the other ranks' as it does any rank's share of the batch.
            loss = pair_policy.sum() * 0.0
        if any_valid:
            self.manual_backward(self._accumulated(loss))
        if last:  # always stepped, so that global_step counts training steps (optimizer steps)
            if any_valid or self._accumulate > 1:
                self._clip_and_step(optimizer, scheduler)
            else:  # no gradient to clip
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()

        pairs = pair_reward.shape[0]
        self.log("train/tie_fraction", 1.0 - valid.float().mean(), batch_size=pairs)
        if valid.any():
            valid_pairs = int(valid.sum())
            self.log("train/loss", loss.detach(), prog_bar=True, batch_size=valid_pairs)
            self.log("train/dpo_accuracy", stats["accuracy"], batch_size=valid_pairs)
            self.log("train/dpo_margin", stats["margin"], batch_size=valid_pairs)
            self.log("train/chosen_reward", stats["chosen_reward"], batch_size=valid_pairs)
            self.log("train/rejected_reward", stats["rejected_reward"], batch_size=valid_pairs)
            gap = (pair_reward.gather(-1, chosen) - pair_reward.gather(-1, rejected)).squeeze(-1)[valid]
            self.log("train/rm_reward_gap", gap.mean(), batch_size=valid_pairs)
        self._log_rollout(scores, rollout, kl, entropy)
        if hp.log_samples_every_n_steps and step % hp.log_samples_every_n_steps == 0:
            self._log_samples(prompts, rollout, scores.reward)
        return loss.detach() if valid.any() else reward.new_zeros(())
