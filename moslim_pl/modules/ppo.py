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

from moslim_pl.errors import MoslimError, require
from moslim_pl.losses import (
    explained_variance,
    gae,
    masked_mean,
    ppo_policy_loss,
    ppo_value_loss,
    token_kl,
    token_rewards,
    whiten,
)
from moslim_pl.models.backbone import load_backbone
from moslim_pl.models.compat import forward_kwargs
from moslim_pl.modules.optim import adamw_with_warmup
from moslim_pl.modules.policy import PolicyModule
from moslim_pl.modules.settings import KLConfig
from moslim_pl.rollout import entropy_from_logits, response_logits, rollout_inputs, token_logprobs

CRITICS = ("separate", "shared")


class PPOModule(PolicyModule):
    """PPO policy optimization; logs ``rollout/*``, ``reward/<head>``, ``train/*`` and ``val/*``.

    Takes the shared arguments of :class:`~moslim_pl.modules.policy.PolicyModule` and its own:

    Args:
        critic: ``separate``: the policy's backbone loaded again from ``policy`` (``AutoModel``) with a
            scalar head, trained alongside; ``shared``: a scalar head on the policy's last hidden states
            (cheaper; the value loss then also moves the policy's backbone). With ``lora`` a separate
            critic still trains in full; ``critic: shared`` puts the value head on the adapted policy.
        num_samples: responses per prompt (PPO needs no group: 1 is fine).
        kl: the KL penalty: ``-beta * KL_t`` on every token (``moslim_pl.modules.settings.KLConfig``).
        gamma, lam: GAE's discount and ``lambda``.
        whiten_advantages: normalize the advantages of each rollout to mean 0, variance 1.
        clip_ratio: PPO's ``eps`` of the policy ratio.
        value_clip: how far the values may move from their rollout predictions (``None``: unclipped).
        vf_coef: weight of the value loss in the summed loss.
        ppo_epochs, num_minibatches: passes over each rollout, each in this many shuffled minibatches;
            every minibatch is one optimizer step and one ``global_step`` (``optim.max_grad_norm`` clips
            the policy and the critic together). The Trainer's ``accumulate_grad_batches`` needs
            ``ppo_epochs=1`` and ``num_minibatches=1`` (else each rollout takes several steps).
        value_learning_rate: the critic's (and value head's) learning rate; ``None``:
            ``optim.learning_rate``.
    """

    def __init__(
        self,
        critic: str = "separate",
        num_samples: int = 1,
        kl: KLConfig = KLConfig(),
        gamma: float = 1.0,
        lam: float = 0.95,
        whiten_advantages: bool = True,
        clip_ratio: float = 0.2,
        value_clip: float | None = 0.2,
        vf_coef: float = 0.1,
        ppo_epochs: int = 4,
        num_minibatches: int = 1,
        value_learning_rate: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._build_critic()

    def _check_arguments(self) -> None:
        hp = self.hparams
        require(hp.critic in CRITICS, "critic", f"one of {', '.join(CRITICS)}", hp.critic)
        require(hp.num_samples >= 1, "num_samples", ">= 1", hp.num_samples)
        require(hp.ppo_epochs >= 1, "ppo_epochs", ">= 1", hp.ppo_epochs)
        require(hp.num_minibatches >= 1, "num_minibatches", ">= 1", hp.num_minibatches)
        require(0.0 <= hp.gamma <= 1.0, "gamma", "in [0, 1]", hp.gamma)
        require(0.0 <= hp.lam <= 1.0, "lam", "in [0, 1]", hp.lam)
        require(hp.clip_ratio > 0, "clip_ratio", "> 0", hp.clip_ratio)
        require(hp.value_clip is None or hp.value_clip > 0, "value_clip", "> 0 or None", hp.value_clip)
        require(hp.vf_coef >= 0, "vf_coef", ">= 0", hp.vf_coef)
        value_lr = hp.value_learning_rate
        require(value_lr is None or value_lr > 0, "value_learning_rate", "> 0 or None", value_lr)

    def _steps_per_rollout(self) -> tuple[int, str]:
        hp = self.hparams
        return (
            hp.ppo_epochs * hp.num_minibatches,
            f"ppo_epochs={hp.ppo_epochs} x num_minibatches={hp.num_minibatches}",
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
        temperature = self.sampling.temperature
        num_response = sequences.shape[1] - prompt_length
        if self.critic_backbone is None:
            kwargs = forward_kwargs(self.policy, attention_mask, sequences.shape[1], num_response + 1)
            out = self.policy(input_ids=sequences, use_cache=False, output_hidden_states=True, **kwargs)
            logits = out.logits[:, -(num_response + 1) : -1].float() / temperature
            hidden = out.hidden_states[-1]
        else:
            logits = response_logits(self.policy, sequences, attention_mask, prompt_length, temperature)
            kwargs = forward_kwargs(self.critic_backbone, attention_mask, sequences.shape[1], 0)
            hidden = self.critic_backbone(input_ids=sequences, use_cache=False, **kwargs).last_hidden_state
        hidden = hidden[:, prompt_length - 1 : prompt_length - 1 + num_response]
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()
        return logits, values

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Sequence[str], batch_idx: int) -> Tensor:
        hp = self.hparams
        rollout_number = self._rollout_number()  # before this rollout's optimizer steps
        prompts, rollout, scores, reward = self._sample(batch, hp.num_samples)
        size = len(rollout.responses)
        if size < hp.num_minibatches:
            raise MoslimError(
                f"a rollout of {size} responses cannot fill num_minibatches={hp.num_minibatches} "
                f"minibatches: raise the batch size or num_samples"
            )
        sequences, attention_mask, prompt_length, mask = rollout_inputs(rollout)
        tokens = sequences[:, prompt_length:]
        keep = mask.bool()
        kl_coef = self.kl_controller.value

        # The sampling policy, once: its log-probs are the old log-probs of every PPO epoch.
        with torch.no_grad():
            logits, old_values = self._logits_and_values(sequences, attention_mask, prompt_length)
            old_logprobs = torch.where(keep, token_logprobs(logits, tokens), torch.zeros_like(old_values))
            entropy = masked_mean(entropy_from_logits(logits), mask)
            del logits
            ref_logprobs = self.reference_logprobs(sequences, attention_mask, prompt_length, mask)
            old_values = torch.where(keep, old_values, torch.zeros_like(old_values))
            kl = torch.where(keep, token_kl(old_logprobs, ref_logprobs), torch.zeros_like(old_values))
            rewards = token_rewards(reward, kl, mask, kl_coef)
            advantages, returns = gae(rewards, old_values, mask, hp.gamma, hp.lam)
            if hp.whiten_advantages:
                advantages = whiten(advantages, mask)
            value_ev = explained_variance(old_values, returns, mask)

        window = self._next_window()
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
                self._backward_and_step(loss, window)
                step_stats = {"loss": loss, "policy_loss": policy_loss, "value_loss": value_loss}
                for key, value in {**step_stats, **policy_stats, **value_stats}.items():
                    stats.setdefault(key, []).append(value.detach())

        means = {key: torch.stack(values).mean() for key, values in stats.items()}
        keys = ("loss", "policy_loss", "value_loss", "clip_fraction", "approx_kl", "value_clip_fraction")
        metrics = {key: means[key] for key in keys}
        metrics["value_explained_variance"] = value_ev
        metrics["value_mean"] = masked_mean(old_values, mask)
        metrics["kl_coef"] = kl_coef
        self._log_train(metrics, size, prog_bar=("loss",))
        self._log_step_end(prompts, rollout, scores, kl.sum(-1), entropy, rollout_number)
        return means["loss"]

    # ------------------------------------------------------------------ optimisation, checkpoints, export
    def configure_optimizers(self) -> dict[str, Any]:
        optim, value_lr = self.optim, self.hparams.value_learning_rate
        value_lr = optim.learning_rate if value_lr is None else value_lr

        def lr_for(name: str) -> float:
            return value_lr if name.startswith(("critic_backbone.", "value_head.")) else optim.learning_rate

        # The reference and the RM are frozen (requires_grad False): the helper leaves them out.
        return adamw_with_warmup(
            self.named_parameters(),
            optim.learning_rate,
            optim.weight_decay,
            optim.warmup_steps,
            lr_for=lr_for,
        )
