"""What every RL stage shares: the policy, its frozen reference, the frozen RM, rollouts, logging, export.

One shallow base class (RLOO, Online-DPO and PPO each add only their own loss and training step);
the rollout math itself lives in ``moslim_pl.rollout`` as plain functions. Subclasses keep their full
constructor signature (the CLI reads it), call ``save_hyperparameters()`` and then ``_build_models()``.
Required hyperparameters: policy, reward_model, tiny_config, max_new_tokens, temperature, top_p,
max_prompt_length, chat_template, mapping, mapping_weights, max_grad_norm, learning_rate, weight_decay,
warmup_steps, val_temperature, log_samples_every_n_steps, rm_batch_size, trust_remote_code; optional: lora,
sigma_floor, z_clip, aggregation, missing_eos_penalty, empty_penalty.

Dropout stays off in all three models (as TRL does): the log-probs that train the policy must be those of
the distribution that sampled; Lightning's warning that modules are in eval mode is therefore expected.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from torch import Tensor, nn

from moslim_pl.callbacks import media
from moslim_pl.callbacks.predictions import PredictionWriter
from moslim_pl.callbacks.throughput import ThroughputCallback
from moslim_pl.data.messages import Prompt, is_messages, prompt_text
from moslim_pl.data.prompt_encoding import resolve_chat_template
from moslim_pl.errors import MoslimError
from moslim_pl.models.backbone import TINY_BACKBONES, load_causal_lm, load_tokenizer
from moslim_pl.models.card import CARD_FILE, policy_card, training_summary
from moslim_pl.models.io import save_pretrained_atomic
from moslim_pl.models.lora import LoRAConfig, apply_lora, is_lora, merged_copy, reference_mode
from moslim_pl.models.reward_model import MultiHeadRewardModel
from moslim_pl.models.sharding import is_sharded, shard_mesh, shard_model
from moslim_pl.modules.optim import ManualOptimization, adamw_with_warmup
from moslim_pl.modules.policy_eval import PolicyEvaluation
from moslim_pl.rewards.mapping import MAPPINGS, parse_aggregation
from moslim_pl.rollout import (
    RewardOutput,
    Rollout,
    encode_prompts,
    generate,
    score_responses,
    sequence_logprobs,
)
from moslim_pl.utils.hparams import as_dataclass

log = logging.getLogger(__name__)

_SAMPLE_ROWS = 8  # rows of the text table logged (callbacks/media.py)
ADAPTER_FOLDER = "adapter"  # a LoRA policy's PEFT adapter, inside its export


_CELL_CHARS = 300  # long prompts (documents to summarize...) keep their start and their end


def _markdown_cell(text: str) -> str:
    if len(text) > 2 * _CELL_CHARS:
        text = f"{text[:_CELL_CHARS]} [...] {text[-_CELL_CHARS:]}"
    return text.replace("|", "\\|").replace("\n", " ")


class PolicyModule(PolicyEvaluation, ManualOptimization, LightningModule):
    """Base of the RL LightningModules; see the module docstring for the contract."""

    def _build_models(self) -> None:
        hp = self.hparams
        self.automatic_optimization = False
        if hp.reward_model is None:
            raise MoslimError(
                f"{type(self).__name__} needs reward_model: the folder of a reward model export"
            )
        if hp.temperature <= 0 or hp.val_temperature < 0:
            raise MoslimError(
                f"need temperature > 0 and val_temperature >= 0, got {hp.temperature}, {hp.val_temperature}"
            )
        if hp.get("sigma_floor", 0.0) < 0 or (hp.get("z_clip") is not None and hp.z_clip <= 0):
            raise MoslimError(
                f"need sigma_floor >= 0 and z_clip > 0 (or None), got {hp.get('sigma_floor')}, {hp.get('z_clip')}"
            )
        if hp.mapping not in MAPPINGS:
            raise MoslimError(f"unknown reward mapping {hp.mapping!r}; expected one of {', '.join(MAPPINGS)}")
        try:
            parse_aggregation(hp.get("aggregation", "mean"))
        except ValueError as err:
            raise MoslimError(str(err)) from None
        self.tokenizer_name = hp.policy
        self.tokenizer = load_tokenizer(hp.policy, trust_remote_code=hp.trust_remote_code)
        hp["chat_template"] = resolve_chat_template(self.tokenizer, hp.chat_template, hp.policy)
        # validate/test may build the module under inference mode; parameters made there could never train
        with torch.inference_mode(False):
            self.policy = load_causal_lm(
                hp.policy,
                tokenizer=self.tokenizer,
                tiny_config=hp.tiny_config,
                trust_remote_code=hp.trust_remote_code,
            )
            lora = as_dataclass(LoRAConfig, hp.get("lora"))
            hp["lora"] = None if lora is None else asdict(lora)  # plain and complete, for checkpoints
            if lora is not None:
                # The reference is the same weights with the adapters off: no second copy in memory.
                self.policy = apply_lora(self.policy, lora)
                self.reference: nn.Module | None = None
            else:
                self.reference = copy.deepcopy(self.policy).requires_grad_(False)
            self.rm = MultiHeadRewardModel.from_pretrained(hp.reward_model).requires_grad_(False)
        self.train()  # puts the three models in eval mode (see train())
        weights = hp.mapping_weights
        if hp.mapping == "linear" and (weights is None or len(weights) != len(self.rm.names)):
            raise MoslimError(
                f"the linear mapping needs mapping_weights with one weight per head {self.rm.names}, got {weights}"
            )
        self._val_totals: Tensor | None = None
        self.rollout_tokens = 0
        self.rollout_samples = 0  # sequences of those rollouts (ThroughputCallback reads both)

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
        temperature: float,
        group_size: int = 1,
    ) -> Tensor:
        """Per-token log-probs ``[N, R]`` under the reference (no grad): the frozen copy, or the policy
        with its LoRA adapters disabled. ``group_size``: rows sharing their prompt in groups of this size
        run it once (``moslim_pl.rollout.response_logits``)."""
        inputs = (sequences, attention_mask, prompt_length, response_mask)
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

    def _prompts(self, batch: Sequence[Prompt]) -> list[Prompt]:
        """A batch's prompts: strings, or conversations as ``Messages`` (``moslim_pl.data.messages``)."""
        valid = isinstance(batch, (list, tuple)) and batch
        if not valid or not all(isinstance(p, str) or is_messages(p) for p in batch):
            raise MoslimError(
                f"{type(self).__name__} expects non-empty lists of prompt strings or conversations "
                f"(Messages) as batches, got {type(batch).__name__}"
            )
        return list(batch)

    def _rollout(self, prompts: list[str], num_samples: int, temperature: float) -> Rollout:
        hp = self.hparams
        batch = encode_prompts(
            self.tokenizer, prompts, hp.max_prompt_length, hp.chat_template, dimensions=self.rm.dimensions
        )
        rollout = generate(
            self.policy,
            self.tokenizer,
            batch,
            max_new_tokens=hp.max_new_tokens,
            temperature=temperature,
            top_p=hp.top_p,
            num_samples=num_samples,
        )
        if self.training:  # tokens through the policy in training rollouts (ComputeCallback reads it)
            self.rollout_tokens += int(rollout.attention_mask.sum())
            self.rollout_samples += len(rollout.responses)
        return rollout

    def _score(self, prompts: list[str], rollout: Rollout) -> RewardOutput:
        hp = self.hparams
        # The ORIGINAL prompts, prefix included: the RM strips the prefix and reads the targets from it.
        texts = [prompts[i] for i in rollout.prompt_index.tolist()]
        scores = score_responses(
            self.rm,
            texts,
            rollout.responses,
            mapping=hp.mapping,
            weights=hp.mapping_weights,
            batch_size=hp.rm_batch_size,
            sigma_floor=hp.get("sigma_floor", 0.0),  # checkpoints of older versions lack the two guards
            z_clip=hp.get("z_clip"),
            aggregation=hp.get("aggregation", "mean"),
        )
        return RewardOutput(*(t.to(self.device) for t in scores))  # score_responses answers on the CPU

    @property
    def _step_metrics_read(self) -> bool:
        """Whether anything reads this training step's metrics: the logger (Lightning writes every
        ``log_every_n_steps`` steps), or a progress bar (every step)."""
        trainer = self._trainer
        if trainer is None or not self.training:
            return True
        return trainer.progress_bar_callback is not None or trainer._logger_connector.should_update_logs

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """``LightningModule.log``, except that a training step's per-step metrics are dropped on steps
        whose metrics nothing reads (no progress bar, and not a logging step of the logger): each call
        costs about a millisecond, a few percent of a small model's RL step. ``trainer.callback_metrics``
        then hold the values of the last logging step."""
        if kwargs.get("on_epoch") or self._step_metrics_read:
            super().log(name, value, *args, **kwargs)

    def _log_rollout(self, scores: RewardOutput, rollout: Rollout, kl: Tensor, entropy: Tensor) -> None:
        if not self._step_metrics_read:
            return
        size = len(rollout.responses)
        self.log("rollout/reward", scores.reward.mean(), prog_bar=True, batch_size=size)
        self.log("rollout/kl", kl.mean(), prog_bar=True, batch_size=size)
        self.log("rollout/entropy", entropy, batch_size=size)
        self.log("rollout/response_length", rollout.response_mask.sum(-1).float().mean(), batch_size=size)
        self.log("rollout/finished", rollout.finished.float().mean(), batch_size=size)
        requested = scores.requested >= 0
        per_head = {}
        for k, name in enumerate(self.rm.names):
            if scores.mask[:, k].any():
                per_head[f"reward/{name}"] = float(scores.components[scores.mask[:, k], k].mean())
            if requested[:, k].any():
                per_head[f"rollout/hit_rate/{name}"] = float(scores.hit[requested[:, k], k].float().mean())
        self._log_present(per_head)

    def _log_present(self, metrics: dict[str, float]) -> None:
        """Write metrics that exist on some steps only (a head no prompt of the batch named has no reward)
        straight to the loggers, on rank 0 at Lightning's logging steps. Through ``self.log`` Lightning
        would write a key's last value again on every later step of the epoch, inventing a measurement."""
        trainer = self._trainer
        if trainer is None or not self.training:
            for name, value in metrics.items():
                self.log(name, value)
            return
        if not trainer._logger_connector.should_update_logs or not trainer.is_global_zero or not metrics:
            return
        step = trainer.fit_loop.epoch_loop._batches_that_stepped  # the step Lightning logs scalars at
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    def _log_samples(self, prompts: list[str], rollout: Rollout, reward: Tensor) -> None:
        if self.global_rank != 0:
            return
        rows = [
            [
                _markdown_cell(prompt_text(prompts[int(rollout.prompt_index[i])])),
                _markdown_cell(rollout.responses[i]),
                f"{float(reward[i]):.3f}",
            ]
            for i in range(min(len(rollout.responses), _SAMPLE_ROWS))
        ]
        media.log_table(
            self.loggers, "rollout/samples", ["prompt", "response", "reward"], rows, self.global_step
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

    def _update_kl_controller(self, kl: Tensor, size: int) -> None:
        """Feed the rollout's per-sequence KL ``[N]`` to ``self.kl_controller`` (RLOO, PPO).

        Every rank must hold the same beta: the controller sees the KL averaged over all ranks.
        """
        mean_kl = self.trainer.strategy.reduce(kl.mean().detach(), reduce_op="mean")
        self.kl_controller.update(float(mean_kl), n_steps=size * self.trainer.world_size)

    # ------------------------------------------------------------------ checkpoints
    def _frozen_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes left out of checkpoints: the frozen models that construction rebuilds.

        The RM always comes back from its export; the reference (the initial policy) only when the policy
        loads pretrained weights: a ``moslim/tiny-*`` policy starts from random ones, so its reference is
        kept; FSDP2's sharded checkpoints keep everything. For SmolLM2 with a MiniLM RM that is
        about 2.2 -> 1.6 GB (the policy and its AdamW state remain; estimated from the tensor sizes).
        """
        if isinstance(getattr(self._trainer, "strategy", None), ModelParallelStrategy):
            return ()  # sharded (distributed) checkpoints load into the module's full key set
        return ("rm.",) if self.hparams.policy in TINY_BACKBONES else ("reference.", "rm.")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict")
        if isinstance(state, dict):
            for key in [k for k in state if k.startswith(self._frozen_prefixes())]:
                del state[key]
        if hasattr(self, "kl_controller"):
            checkpoint["kl_controller"] = self.kl_controller.state_dict()
        if self._accumulate != 1:
            checkpoint["moslim_micro_batches"] = self._micro_batches

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict")
        if isinstance(state, dict):
            # the frozen models as this module just rebuilt them, so that strict loading still checks
            # every trained parameter (older checkpoints that hold them load as they are)
            for key, value in self.state_dict().items():
                if key.startswith(self._frozen_prefixes()):
                    state.setdefault(key, value)
        if hasattr(self, "kl_controller") and "kl_controller" in checkpoint:
            self.kl_controller.load_state_dict(checkpoint["kl_controller"])
        self._micro_batches = int(checkpoint.get("moslim_micro_batches", 0))

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        return adamw_with_warmup(
            self.policy.named_parameters(), hp.learning_rate, hp.weight_decay, hp.warmup_steps
        )

    def export(self, folder: str | Path) -> Path:
        """Write the policy (LoRA adapters merged), its tokenizer and a ``README.md`` model card as a Hugging
        Face folder, atomically. ``load_causal_lm(folder)`` and ``AutoModelForCausalLM.from_pretrained(folder)``
        reload it.

        With ``lora``, ``<folder>/adapter`` also holds the adapters alone in PEFT's layout
        (``adapter_config.json``, ``adapter_model.safetensors``, tokenizer, card): ``PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(policy), "<folder>/adapter")`` gives the merged model's
        log-probs (``docs/user_guide.md``, "Exports"). Not under FSDP2 sharding (the merged model only).
        """
        lora = is_lora(self.policy)
        policy = merged_copy(self.policy) if lora else self.policy
        training = training_summary(self)
        dimensions = self.rm.dimensions
        base = str(self.hparams.policy)
        write_adapter = lora and not is_sharded(self.policy)
        if lora and not write_adapter:
            log.warning(
                "the policy is sharded: its export holds the merged model only, no PEFT adapter folder"
            )

        def extra(staging: Path) -> None:
            (staging / CARD_FILE).write_text(policy_card(base, dimensions, training))
            if write_adapter:
                adapter = staging / ADAPTER_FOLDER
                self.policy.save_pretrained(adapter)
                self.tokenizer.save_pretrained(adapter)
                (adapter / CARD_FILE).write_text(policy_card(base, dimensions, training, adapter=True))

        save_pretrained_atomic(folder, policy, self.tokenizer, extra=extra)
        log.info("exported the policy to %s", folder)
        return Path(folder)
