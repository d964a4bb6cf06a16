"""What every RL stage shares: the policy, its frozen reference, the frozen RM, the shared settings, rollouts,
scoring, the optimizer step, logging, evaluation, checkpoints and export.

One shallow base class: RLOO, PPO and Online-DPO each add only their own parameters, loss and
``training_step``; the rollout math itself lives in ``moslim_pl.rollout`` as plain functions. The base's
constructor takes (and documents) the shared arguments: ``policy``, ``reward_model``, ``tiny_config``, the
settings groups ``sampling``, ``reward`` and ``optim`` (``moslim_pl.modules.settings``),
``log_samples_every_n_steps``, ``trust_remote_code`` and ``lora``. A subclass's constructor declares its own
parameters (a KL-penalized stage also ``kl: KLConfig``) and ``**kwargs``, and starts with
``super().__init__(**kwargs)``: LightningCLI follows ``**kwargs`` into this constructor, so ``--help`` lists
both, and ``save_hyperparameters`` here collects both. The base then calls the subclass's
``_check_arguments()`` and builds the models; afterwards the groups are ``self.sampling``,
``self.reward``, ``self.optim`` and ``self.kl`` (``None`` without), and ``self.kl_controller`` holds
the adaptive or fixed ``beta`` (``None`` without ``kl``).

A training step uses :meth:`PolicyModule._sample` (rollout, scores, penalized reward),
:meth:`PolicyModule._policy_logprobs` and :meth:`PolicyModule.reference_logprobs` (log-probs at the
sampling temperature), ``_next_window`` and ``_backward_and_step`` (zero_grad, backward, clipping and
step with the trainer's accumulation: ``moslim_pl.modules.optim.ManualOptimization``), ``_log_train``
and ``_log_step_end`` (``moslim_pl.modules.policy_logging``).

Dropout stays off in all three models (as TRL does): the log-probs that train the policy must be those of
the distribution that sampled; Lightning's warning that modules are in eval mode is therefore expected.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.strategies import FSDPStrategy
from torch import Tensor, nn

from moslim_pl.callbacks.predictions import PredictionWriter
from moslim_pl.callbacks.throughput import ThroughputCallback
from moslim_pl.data.messages import Prompt, is_messages
from moslim_pl.data.prompt_encoding import resolve_chat_template
from moslim_pl.errors import MoslimError
from moslim_pl.models.backbone import load_trainable_causal_lm
from moslim_pl.models.lora import LoRAConfig, apply_lora, reference_mode
from moslim_pl.models.reward_model import MultiHeadRewardModel
from moslim_pl.models.sharding import is_sharded, shard_mesh, shard_model
from moslim_pl.modules.optim import ManualOptimization, adamw_with_warmup
from moslim_pl.modules.policy_eval import PolicyEvaluation
from moslim_pl.modules.policy_io import PolicyIO
from moslim_pl.modules.policy_logging import PolicyLogging
from moslim_pl.modules.settings import (
    GROUPS,
    OptimConfig,
    RewardConfig,
    SamplingConfig,
    settings_group,
)
from moslim_pl.rollout import (
    RewardOutput,
    Rollout,
    encode_prompts,
    generate,
    masked_logprobs,
    penalize,
    response_logits,
    score_responses,
    sequence_logprobs,
)
from moslim_pl.utils.hparams import as_dataclass

log = logging.getLogger(__name__)


class PolicyModule(PolicyEvaluation, PolicyLogging, PolicyIO, ManualOptimization, LightningModule):
    """Base of the RL LightningModules; see the module docstring for the contract.

    Args:
        policy: the initial policy: a hub id, a folder (an SFT export in practice) or ``moslim/tiny-llama``.
        reward_model: the folder of a reward model export (``RewardModelModule.export``); required.
        tiny_config: overrides of the tiny policy's config (only for ``moslim/tiny-llama``).
        sampling: how the policy samples (``moslim_pl.modules.settings.SamplingConfig``).
        reward: how the RM's outputs become the reward (``moslim_pl.modules.settings.RewardConfig``).
        optim: the optimizer (``moslim_pl.modules.settings.OptimConfig``). The Trainer's
            ``accumulate_grad_batches N`` takes one optimizer step every N training batches (each batch's
            loss divided by N).
        log_samples_every_n_steps: text samples to the loggers every this many rollouts (``None``: never).
        trust_remote_code: passed to ``from_pretrained`` for the policy (and PPO's separate critic).
        lora: train LoRA adapters instead of the whole policy; the reference is then the policy with
            its adapters disabled (no frozen copy), and the export merges the adapters.
    """

    def __init__(
        self,
        policy: str = "moslim/tiny-llama",
        reward_model: str | None = None,
        tiny_config: dict[str, Any] | None = None,
        sampling: SamplingConfig = SamplingConfig(),
        reward: RewardConfig = RewardConfig(),
        optim: OptimConfig = OptimConfig(),
        log_samples_every_n_steps: int | None = 50,
        trust_remote_code: bool = False,
        lora: LoRAConfig | None = None,
    ) -> None:
        super().__init__()
        # the subclass's own arguments too: Lightning collects those of every constructor in the chain
        self.save_hyperparameters()
        self._check_arguments()
        self._build_models()

    def _check_arguments(self) -> None:
        """Check the subclass's own hyperparameters, before any model is loaded (overridden by stages)."""

    def _steps_per_rollout(self) -> tuple[int, str]:
        """Optimizer steps (``global_step``s) each rollout takes, and the arguments that set them; one for
        stages that step once per training batch (overridden by those that step several times)."""
        return 1, ""

    def _rollout_number(self) -> int:
        """The training batch (rollout) this step belongs to, counted from 0."""
        return self.global_step // self._steps_per_rollout()[0]

    def _check_accumulation(self, accumulate: int) -> None:
        steps, settings = self._steps_per_rollout()
        if steps != 1:
            raise MoslimError(
                f"accumulate_grad_batches={accumulate} needs one optimizer step per rollout, got {steps} "
                f"({settings}): each rollout's later steps need the step before them"
            )

    def _build_models(self) -> None:
        hp = self.hparams
        self.automatic_optimization = False
        if hp.reward_model is None:
            raise MoslimError(
                f"{type(self).__name__} needs reward_model: the folder of a reward model export"
            )
        self._build_settings()
        self.tokenizer_name = hp.policy
        self.tokenizer, self.policy = load_trainable_causal_lm(
            hp.policy, tiny_config=hp.tiny_config, trust_remote_code=hp.trust_remote_code
        )
        chat_template = resolve_chat_template(self.tokenizer, self.sampling.chat_template, hp.policy)
        self._set_group("sampling", dataclasses.replace(self.sampling, chat_template=chat_template))
        # validate/test may build the module under inference mode; parameters made there could never train
        with torch.inference_mode(False):
            lora = as_dataclass(LoRAConfig, hp.get("lora"))
            # plain and complete, for checkpoints
            hp["lora"] = None if lora is None else dataclasses.asdict(lora)
            if lora is not None:
                # The reference is the same weights with the adapters off: no second copy in memory.
                self.policy = apply_lora(self.policy, lora)
                self.reference: nn.Module | None = None
            else:
                self.reference = copy.deepcopy(self.policy).requires_grad_(False)
            self.rm = MultiHeadRewardModel.from_pretrained(hp.reward_model).requires_grad_(False)
        self.train()  # puts the three models in eval mode (see train())
        weights = self.reward.mapping_weights
        if self.reward.mapping == "linear" and (weights is None or len(weights) != len(self.rm.names)):
            raise MoslimError(
                f"the linear mapping needs reward.mapping_weights with one weight per head {self.rm.names}, "
                f"got {weights}"
            )
        self._val_totals: Tensor | None = None
        self.rollout_tokens = 0
        self.rollout_samples = 0  # sequences of those rollouts (ThroughputCallback reads both)

    def _build_settings(self) -> None:
        """The settings groups as typed attributes (``self.sampling``...; ``self.kl`` is ``None`` for a stage
        without one) and as plain, complete dicts in ``hparams`` (for checkpoints); the KL controller."""
        for name, cls in GROUPS.items():
            if name in self.hparams:
                self._set_group(name, settings_group(cls, self.hparams[name], name))
            else:
                setattr(self, name, None)
        self.kl_controller = self.kl.controller() if self.kl is not None else None

    def _set_group(self, name: str, group: Any) -> None:
        setattr(self, name, group)
        self.hparams[name] = dataclasses.asdict(group)

    def configure_model(self) -> None:
        """Under ``ModelParallelStrategy`` (``configs/trainer/fsdp2.yaml``) shard every model with FSDP2.

        The models are built in ``__init__``; here each of :meth:`shardable_models` gets ``fully_shard``
        per transformer block, then on its root. Generation stays in lockstep across ranks
        (``moslim_pl.generation``), as the sharded forward passes need.
        """
        if self._trainer is not None and isinstance(self.trainer.strategy, FSDPStrategy):
            raise MoslimError(
                "the policy stages shard with FSDP2: use configs/trainer/fsdp2.yaml (ModelParallelStrategy) "
                "instead of FSDPStrategy"
            )
        if self.device_mesh is None:
            return
        mesh = shard_mesh(self.device_mesh)
        for model in self.shardable_models().values():
            shard_model(model, mesh)

    def shardable_models(self) -> dict[str, nn.Module]:
        """The models FSDP2 shards, by attribute name: every child module that holds parameters (policy,
        reference, RM and whatever a subclass adds, e.g. a critic and its value head). Every trainable
        parameter must be in one of them: FSDP2 syncs the gradients of sharded parameters only."""
        return {
            name: child for name, child in self.named_children() if next(child.parameters(), None) is not None
        }

    def train(self, mode: bool = True) -> PolicyModule:
        super().train(mode)
        # Dropout would make the training log-probs differ from those of the sampling distribution (and
        # perturb the reference and the reward); none of the three models ever needs it.
        for model in (self.policy, self.reference, self.rm):
            if model is not None:
                model.eval()
        return self

    def reference_logprobs(
        self,
        sequences: Tensor,
        attention_mask: Tensor,
        prompt_length: int,
        response_mask: Tensor,
        temperature: float | None = None,
        group_size: int = 1,
    ) -> Tensor:
        """Per-token log-probs ``[N, R]`` under the reference (no grad): the frozen copy, or the policy
        with its LoRA adapters disabled, at ``temperature`` (default: ``sampling.temperature``, that of the
        training rollouts). ``group_size``: rows sharing their prompt in groups of this size run it once
        (``moslim_pl.rollout.response_logits``)."""
        inputs = (sequences, attention_mask, prompt_length, response_mask)
        temperature = self.sampling.temperature if temperature is None else temperature
        # Inference mode skips autograd's bookkeeping; not under FSDP2, whose weight buffers made there could
        # never serve a forward pass with grad again (as in moslim_pl.generation).
        with torch.inference_mode(not is_sharded(self.policy)), torch.no_grad():
            if self.reference is not None:
                logprobs = sequence_logprobs(
                    self.reference, *inputs, temperature=temperature, group_size=group_size
                )
            else:
                with reference_mode(self.policy) as base:
                    logprobs = sequence_logprobs(
                        base, *inputs, temperature=temperature, group_size=group_size
                    )
        return logprobs.clone()  # an ordinary tensor: losses with grad may use it

    def _policy_logprobs(
        self, rollout: Rollout, model: nn.Module | None = None, group_size: int = 1
    ) -> tuple[Tensor, Tensor]:
        """The training forward of the policy (or ``model``, e.g. its compiled wrapper) on a rollout, with
        grad: the response logits ``[N, R, V]`` at ``sampling.temperature`` and the response tokens'
        log-probs ``[N, R]`` (0 where ``response_mask`` is 0)."""
        logits = response_logits(
            self.policy if model is None else model,
            rollout.sequences,
            rollout.attention_mask,
            rollout.prompt_length,
            temperature=self.sampling.temperature,
            group_size=group_size,
        )
        return logits, masked_logprobs(
            logits, rollout.sequences, rollout.prompt_length, rollout.response_mask
        )

    def _prompts(self, batch: Sequence[Prompt]) -> list[Prompt]:
        """A batch's prompts: strings, or conversations as ``Messages`` (``moslim_pl.data.messages``)."""
        valid = isinstance(batch, (list, tuple)) and batch
        if not valid or not all(isinstance(p, str) or is_messages(p) for p in batch):
            raise MoslimError(
                f"{type(self).__name__} expects non-empty lists of prompt strings or conversations "
                f"(Messages) as batches, got {type(batch).__name__}"
            )
        return list(batch)

    def _rollout(self, prompts: list[Prompt], num_samples: int, temperature: float) -> Rollout:
        sampling = self.sampling
        batch = encode_prompts(
            self.tokenizer,
            prompts,
            sampling.max_prompt_length,
            sampling.chat_template,
            dimensions=self.rm.dimensions,
        )
        rollout = generate(
            self.policy,
            self.tokenizer,
            batch,
            max_new_tokens=sampling.max_new_tokens,
            temperature=temperature,
            top_p=sampling.top_p,
            num_samples=num_samples,
        )
        if self.training:  # tokens through the policy in training rollouts (ComputeCallback reads it)
            self.rollout_tokens += int(rollout.attention_mask.sum())
            self.rollout_samples += len(rollout.responses)
        return rollout

    def _score(self, prompts: list[Prompt], rollout: Rollout) -> RewardOutput:
        # The ORIGINAL prompts, prefix included: the RM strips the prefix and reads the targets from it.
        texts = [prompts[i] for i in rollout.prompt_index.tolist()]
        scores = score_responses(self.rm, texts, rollout.responses, **self.reward.score_options())
        return RewardOutput(*(t.to(self.device) for t in scores))  # score_responses answers on the CPU

    def _sample(
        self, batch: Sequence[Prompt], num_samples: int
    ) -> tuple[list[Prompt], Rollout, RewardOutput, Tensor]:
        """A training batch's prompts, their rollout of ``num_samples`` responses each at
        ``sampling.temperature``, its scores, and the reward the loss uses: the RM's, less
        ``reward.missing_eos_penalty`` and ``reward.empty_penalty`` where they apply (``scores.reward``
        stays the RM's, as logged)."""
        prompts = self._prompts(batch)
        rollout = self._rollout(prompts, num_samples, self.sampling.temperature)
        scores = self._score(prompts, rollout)
        reward = penalize(scores.reward, rollout, self.reward.missing_eos_penalty, self.reward.empty_penalty)
        return prompts, rollout, scores, reward

    def configure_optimizers(self) -> dict[str, Any]:
        optim = self.optim
        return adamw_with_warmup(
            self.policy.named_parameters(), optim.learning_rate, optim.weight_decay, optim.warmup_steps
        )

    # ------------------------------------------------------------------ callbacks (predict, trainer knobs)
    def configure_callbacks(self) -> list[Callback]:
        """``moslim-pl predict`` always writes ``predictions.jsonl``: a :class:`PredictionWriter` is added
        when the trainer has no prediction writer of its own (a training config need not list one).

        When fitting, the trainer's ``accumulate_grad_batches`` and ``gradient_clip_val`` are taken over
        here (:meth:`_take_over_trainer_knobs`): this is the one hook Lightning runs before it checks them;
        a :class:`ThroughputCallback` logs ``train/tokens_per_s`` and ``train/samples_per_s``.
        """
        trainer = self._trainer
        if trainer is not None and trainer.training:
            self._take_over_trainer_knobs()
            return [ThroughputCallback()]
        if trainer is None or not trainer.predicting:
            return []
        if any(isinstance(callback, BasePredictionWriter) for callback in trainer.callbacks):
            return []
        return [PredictionWriter()]
