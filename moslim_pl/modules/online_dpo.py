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

from torch import Tensor

from moslim_pl.errors import require
from moslim_pl.losses import dpo_loss, kl_estimate, masked_mean
from moslim_pl.modules.policy import PolicyModule
from moslim_pl.rollout import entropy_from_logits, rollout_inputs

_NUM_SAMPLES = 2  # one pair per prompt


class OnlineDPOModule(PolicyModule):
    """Online-DPO policy optimization; logs ``rollout/*``, ``reward/<head>``, ``train/*`` and ``val/*``.

    Two responses per prompt are sampled at ``sampling.temperature``, and the DPO log-probs are taken at
    the same temperature; ``reward.missing_eos_penalty`` and ``reward.empty_penalty`` apply before the
    pair is ranked. Takes the shared arguments of :class:`~moslim_pl.modules.policy.PolicyModule` and
    its own:

    Args:
        beta: DPO's ``beta``: the implicit reward is ``beta * (log pi - log pi_ref)``.
    """

    def __init__(self, beta: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def _check_arguments(self) -> None:
        require(self.hparams.beta > 0, "beta", "> 0", self.hparams.beta)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Sequence[str], batch_idx: int) -> Tensor:
        hp = self.hparams
        rollout_number = self._rollout_number()  # before this rollout's optimizer steps
        prompts, rollout, scores, reward = self._sample(batch, _NUM_SAMPLES)
        mask = rollout.response_mask
        ref_logprobs = self.reference_logprobs(*rollout_inputs(rollout))
        logits, logprobs = self._policy_logprobs(rollout)
        kl = kl_estimate(logprobs.detach(), ref_logprobs, mask)
        entropy = masked_mean(entropy_from_logits(logits.detach()), mask)

        # Rows 2b and 2b + 1 are the two samples of prompt b: the higher reward is chosen.
        pair_reward = reward.reshape(-1, _NUM_SAMPLES)
        pair_policy = logprobs.sum(-1).reshape(-1, _NUM_SAMPLES)
        pair_ref = ref_logprobs.sum(-1).reshape(-1, _NUM_SAMPLES)
        chosen = pair_reward.argmax(-1, keepdim=True)
        rejected = 1 - chosen
        valid = pair_reward[:, 0] != pair_reward[:, 1]  # a tie says nothing: dropped from the loss

        window = self._next_window()
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
        # always stepped, so that global_step counts training steps (optimizer steps)
        self._backward_and_step(loss if any_valid else None, window)

        pairs = pair_reward.shape[0]
        self._log_train({"tie_fraction": 1.0 - valid.float().mean()}, pairs)
        if valid.any():
            gap = (pair_reward.gather(-1, chosen) - pair_reward.gather(-1, rejected)).squeeze(-1)[valid]
            metrics = {
                "loss": loss.detach(),
                "dpo_accuracy": stats["accuracy"],
                "dpo_margin": stats["margin"],
                "chosen_reward": stats["chosen_reward"],
                "rejected_reward": stats["rejected_reward"],
                "rm_reward_gap": gap.mean(),
            }
            self._log_train(metrics, int(valid.sum()), prog_bar=("loss",))
        self._log_step_end(prompts, rollout, scores, kl, entropy, rollout_number)
        return loss.detach() if valid.any() else reward.new_zeros(())
