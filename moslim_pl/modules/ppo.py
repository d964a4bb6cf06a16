"""LightningModule that optimizes the prompt-steered policy with PPO against the frozen multi-head RM.

Each training batch is a list of prompts (``<name level>`` prefix or none). One step reads::

    k samples per prompt -> RM reward (prefix stripped by the RM)
    -> under no_grad: the sampling policy's token log-probs (kept as the old log-probs), the critic's
       values, the reference's log-probs
    -> token rewards: -beta * KL_t on every token, + the RM reward on the last one
    -> GAE advantages and returns (advantages optionally whitened)
    -> ppo_epochs passes over the rollout in num_minibatches shuffled minibatches, each one optimizer
       step (one global_step) on the clipped policy loss + vf_coef * the clipped value loss

The critic is either a separate model (the policy's backbone, loaded again from ``policy``, plus a scalar
head; trained alongside) or a scalar head on the policy's last hidden states (``critic: shared``). The
reference model is a frozen copy of the initial policy (with ``lora``: the policy with its adapters
disabled); the RM is loaded from its export, frozen and never trained. Dropout stays off in every model (as in :class:`RLOOModule`), the critic included: its
values at rollout time must be those it is trained against.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from moslim_pl.errors import MoslimError
from moslim_pl.losses.kl import kl_controller, token_kl
from moslim_pl.losses.ppo import (
    explained_variance,
    gae,
    ppo_policy_loss,
    ppo_value_loss,
    token_rewards,
    whiten,
)
from moslim_pl.models.backbone import load_backbone
from moslim_pl.models.compat import forward_kwargs
from moslim_pl.models.lora import LoRAConfig
from moslim_pl.modules.optim import adamw_with_warmup
from moslim_pl.modules.policy import PolicyModule
from moslim_pl.rollout import (
    entropy_from_logits,
    penalize,
    response_logits,
    rollout_inputs,
    token_logprobs,
)

CRITICS = ("separate", "shared")


class PPOModule(PolicyModule):
    """PPO policy optimization; logs ``rollout/*``, ``reward/<head>``, ``train/*`` and ``val/*``.

    Args:
        policy: the initial policy: a hub id, a folder (an SFT export in practice) or ``moslim/tiny-llama``.
        reward_model: the folder of a reward model export (``RewardModelModule.export``); required.
        tiny_config: overrides of the tiny policy's config (only for ``moslim/tiny-llama``).
        critic: ``separate``: the policy's backbone loaded again from ``policy`` (``AutoModel``) with a
            scalar head, trained alongside; ``shared``: a scalar head on the policy's last hidden states
            (cheaper; the value loss then also moves the policy's backbone).
        num_samples: responses per prompt (PPO needs no group: 1 is fine).
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
        kl_coef: ``beta`` of the per-token KL penalty (the initial value when adaptive).
        kl_target, kl_horizon: with ``kl_target`` set, ``beta`` adapts towards this per-sequence KL over a
            horizon counted in samples (Ziegler et al.); ``None`` keeps ``beta`` fixed.
        gamma, lam: GAE's discount and ``lambda``.
        whiten_advantages: normalize the advantages of each rollout to mean 0, variance 1.
        clip_ratio: PPO's ``eps`` of the policy ratio.
        value_clip: how far the values may move from their rollout predictions (``None``: unclipped).
        vf_coef: weight of the value loss in the summed loss.
        ppo_epochs, num_minibatches: passes over each rollout, each in this many shuffled minibatches;
            every minibatch is one optimizer step and one ``global_step``.
        max_grad_norm: gradient norm clipping over the policy and the critic together (``None``: off).
            The Trainer's ``gradient_clip_val`` (with its ``gradient_clip_algorithm``), when set, replaces
            it; the Trainer's ``accumulate_grad_batches N`` takes one optimizer step every N rollouts, with
            ``ppo_epochs=1`` and ``num_minibatches=1`` only (else each rollout takes several steps).
        learning_rate, weight_decay, warmup_steps: AdamW with linear warm-up then constant.
        value_learning_rate: the critic's (and value head's) learning rate; ``None``: ``learning_rate``.
        missing_eos_penalty: subtracted from the reward of responses cut at ``max_new_tokens``.
        empty_penalty: subtracted from the reward of responses with nothing in them (no
            non-whitespace character): an RM never trained on an empty answer may score it well
            (``docs/concepts.md``, "The empty answer"); ``None``: off.
        val_temperature: sampling temperature of validation (one response per prompt; 0 = greedy).
        log_samples_every_n_steps: text samples to the loggers every this many rollouts (``None``: never).
        rm_batch_size: pairs per RM forward pass.
        trust_remote_code: passed to ``from_pretrained`` for the policy and the critic.
        lora: train LoRA adapters instead of the whole policy; the reference is then the policy with
            its adapters disabled (no frozen copy), and the export merges the adapters. A separate critic
            still trains in full; ``critic: shared`` puts the value head on the adapted policy.
    """

    def __init__(
        self,
        policy: str = "moslim/tiny-llama",
        reward_model: str | None = None,
        tiny_config: dict[str, Any] | None = None,
        critic: str = "separate",
        num_samples: int = 1,
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
        gamma: float = 1.0,
        lam: float = 0.95,
        whiten_advantages: bool = True,
        clip_ratio: float = 0.2,
        value_clip: float | None = 0.2,
        vf_coef: float = 0.1,
        ppo_epochs: int = 4,
        num_minibatches: int = 1,
        max_grad_norm: float | None = 1.0,
        learning_rate: float = 1e-5,
        value_learning_rate: float | None = None,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
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
        self._build_critic()
        self.kl_controller = kl_controller(kl_coef, kl_target, kl_horizon)

    def _check_arguments(self) -> None:
        hp = self.hparams
        if hp.critic not in CRITICS:
            raise MoslimError(f"unknown critic {hp.critic!r}; expected one of {', '.join(CRITICS)}")
        if hp.num_samples < 1:
            raise MoslimError(f"num_samples must be >= 1, got {hp.num_samples}")
        if hp.ppo_epochs < 1 or hp.num_minibatches < 1:
            raise MoslimError(
                f"ppo_epochs and num_minibatches must be >= 1, got {hp.ppo_epochs}, {hp.num_minibatches}"
            )
        if not (0.0 <= hp.gamma <= 1.0 and 0.0 <= hp.lam <= 1.0):
            raise MoslimError(f"gamma and lam must be in [0, 1], got {hp.gamma}, {hp.lam}")
        if hp.clip_ratio <= 0:
            raise MoslimError(f"clip_ratio must be > 0, got {hp.clip_ratio}")
        if hp.value_clip is not None and hp.value_clip <= 0:
            raise MoslimError(f"value_clip must be > 0 or None, got {hp.value_clip}")
        if hp.vf_coef < 0:
            raise MoslimError(f"vf_coef must be >= 0, got {hp.vf_coef}")
        if hp.value_learning_rate is not None and hp.value_learning_rate <= 0:
            raise MoslimError(f"value_learning_rate must be > 0 or None, got {hp.value_learning_rate}")

    def _check_accumulation(self, accumulate: int) -> None:
        hp = self.hparams
        if hp.ppo_epochs * hp.num_minibatches != 1:
            raise MoslimError(
                f"accumulate_grad_batches={accumulate} needs ppo_epochs=1 and num_minibatches=1 (got "
                f"{hp.ppo_epochs}, {hp.num_minibatches}): each rollout's later minibatches need the step "
                "before them; raise the batch size instead"
            )

    def _build_critic(self) -> None:
        hp = self.hparams
        with torch.inference_mode(False):  # as the base's models: parameters that can train
            if hp.critic == "separate":
                self.critic_backbone: nn.Module | None = load_backbone(
                    hp.policy,
                    tokenizer=self.tokenizer,
                    tiny_config=hp.tiny_config,
                    trust_remote_code=hp.trust_remote_code,
                )
                hidden = self.critic_backbone.config.hidden_size
            else:
                self.critic_backbone = None
                hidden = self.policy.config.hidden_size
            # Zero init: every value starts at 0, so the first advantages are the rewards-to-go.
            self.value_head = nn.Linear(hidden, 1)
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
        self.train()

    def train(self, mode: bool = True) -> PPOModule:
        super().train(mode)
        # Dropout in the critic would make its training values differ from those of the rollout.
        if getattr(self, "critic_backbone", None) is not None:
            self.critic_backbone.eval()
        return self

    # ------------------------------------------------------------------ forward passes
    def _logits_and_values(
        self, sequences: Tensor, attention_mask: Tensor, prompt_length: int
    ) -> tuple[Tensor, Tensor]:
        """Policy logits ``[n, R, V]`` (at the sampling temperature) and values ``[n, R]``.

        The value of response token ``t`` is ``V(prompt + response[:t])``, read from the hidden state at
        the position that predicts token ``t``, like its logits.
        """
        hp = self.hparams
        num_response = sequences.shape[1] - prompt_length
        if self.critic_backbone is None:
            kwargs = forward_kwargs(self.policy, attention_mask, sequences.shape[1], num_response + 1)
            out = self.policy(input_ids=sequences, use_cache=False, output_hidden_states=True, **kwargs)
            logits = out.logits[:, -(num_response + 1) : -1].float() / hp.temperature
            hidden = out.hidden_states[-1]
        else:
            logits = response_logits(self.policy, sequences, attention_mask, prompt_length, hp.temperature)
            kwargs = forward_kwargs(self.critic_backbone, attention_mask, sequences.shape[1], 0)
            hidden = self.critic_backbone(input_ids=sequences, use_cache=False, **kwargs).last_hidden_state
        hidden = hidden[:, prompt_length - 1 : prompt_length - 1 + num_response]
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()
        return logits, values

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Sequence[str], batch_idx: int) -> Tensor:
        hp = self.hparams
        prompts = self._prompts(batch)
        rollout = self._rollout(prompts, hp.num_samples, hp.temperature)
        size = len(rollout.responses)
        if size < hp.num_minibatches:
            raise MoslimError(
                f"a rollout of {size} responses cannot fill num_minibatches={hp.num_minibatches} "
                f"minibatches: raise the batch size or num_samples"
            )
        scores = self._score(prompts, rollout)
        reward = scores.reward
        reward = penalize(reward, rollout, hp.missing_eos_penalty, hp.empty_penalty)
        sequences, attention_mask, prompt_length, mask = rollout_inputs(rollout)
        tokens = sequences[:, prompt_length:]
        keep = mask.bool()
        kl_coef = self.kl_controller.value

        # The sampling policy, once: its log-probs are the old log-probs of every PPO epoch.
        with torch.no_grad():
            logits, old_values = self._logits_and_values(sequences, attention_mask, prompt_length)
            old_logprobs = torch.where(keep, token_logprobs(logits, tokens), torch.zeros_like(old_values))
            entropy = (entropy_from_logits(logits) * mask).sum() / mask.sum().clamp(min=1)
            del logits
            ref_logprobs = self.reference_logprobs(
                sequences, attention_mask, prompt_length, mask, temperature=hp.temperature
            )
            old_values = torch.where(keep, old_values, torch.zeros_like(old_values))
            kl = torch.where(keep, token_kl(old_logprobs, ref_logprobs), torch.zeros_like(old_values))
            rewards = token_rewards(reward, kl, mask, kl_coef)
            advantages, returns = gae(rewards, old_values, mask, hp.gamma, hp.lam)
            if hp.whiten_advantages:
                advantages = whiten(advantages, mask)
            value_ev = explained_variance(old_values, returns, mask)

        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        first, last = self._window()
        self._micro_batches += 1
        steps_per_rollout = hp.ppo_epochs * hp.num_minibatches
        rollout_number = self.global_step // steps_per_rollout
        stats: dict[str, list[Tensor]] = {}
        for _ in range(hp.ppo_epochs):
            order = torch.randperm(size, device=sequences.device)
            for rows in torch.tensor_split(order, hp.num_minibatches):
                logits, values = self._logits_and_values(sequences[rows], attention_mask[rows], prompt_length)
                logprobs = token_logprobs(logits, tokens[rows])
                policy_loss, policy_stats = ppo_policy_loss(
                    logprobs, old_logprobs[rows], advantages[rows], mask[rows], hp.clip_ratio
                )
                value_loss, value_stats = ppo_value_loss(
                    values, old_values[rows], returns[rows], mask[rows], hp.value_clip
                )
                loss = policy_loss + hp.vf_coef * value_loss
                if first:
                    optimizer.zero_grad()
                self.manual_backward(self._accumulated(loss))
                if last:
                    self._clip_and_step(optimizer, scheduler)
                step_stats = {"loss": loss, "policy_loss": policy_loss, "value_loss": value_loss}
                for key, value in {**step_stats, **policy_stats, **value_stats}.items():
                    stats.setdefault(key, []).append(value.detach())

        means = {key: torch.stack(values).mean() for key, values in stats.items()}
        self.log("train/loss", means["loss"], prog_bar=True, batch_size=size)
        for key in ("policy_loss", "value_loss", "clip_fraction", "approx_kl", "value_clip_fraction"):
            self.log(f"train/{key}", means[key], batch_size=size)
        self.log("train/value_explained_variance", value_ev, batch_size=size)
        self.log("train/value_mean", (old_values * mask).sum() / mask.sum().clamp(min=1), batch_size=size)
        self.log("train/kl_coef", kl_coef, batch_size=size)
        sequence_kl = kl.sum(-1)
        self._log_rollout(scores, rollout, sequence_kl, entropy)
        self._update_kl_controller(sequence_kl, size)
        if hp.log_samples_every_n_steps and rollout_number % hp.log_samples_every_n_steps == 0:
            self._log_samples(prompts, rollout, scores.reward)
        return means["loss"]

    # ------------------------------------------------------------------ optimisation, checkpoints, export
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        value_lr = hp.learning_rate if hp.value_learning_rate is None else hp.value_learning_rate

        def lr_for(name: str) -> float:
            return value_lr if name.startswith(("critic_backbone.", "value_head.")) else hp.learning_rate

        # The reference and the RM are frozen (requires_grad False): the helper leaves them out.
        return adamw_with_warmup(
            self.named_parameters(), hp.learning_rate, hp.weight_decay, hp.warmup_steps, lr_for=lr_for
        )
