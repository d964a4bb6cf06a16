"""LightningModule that trains the multi-head classification reward model: one cross-entropy per head on
labelled responses, a Bradley-Terry loss on the judged head's expected level for preference pairs
(``moslim_pl.losses.pairwise``; docs/user_guide.md, "Pairs train the heads")."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric, MetricCollection, SumMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix
from torchmetrics.utilities import dim_zero_cat

from moslim_pl.callbacks import media
from moslim_pl.data.encoding import PairEncoding
from moslim_pl.data.types import IGNORE_LABEL, RewardBatch
from moslim_pl.errors import MoslimError
from moslim_pl.evaluation.plots import confusion_matrix_image
from moslim_pl.losses import bradley_terry_loss, multi_head_cross_entropy, pair_accuracy, pair_scores
from moslim_pl.losses.pairwise import within_prompt_rank_counts
from moslim_pl.models.backbone import load_backbone, load_tokenizer
from moslim_pl.models.card import training_summary
from moslim_pl.models.lora import LoRAConfig, apply_lora
from moslim_pl.models.reward_model import MultiHeadRewardModel
from moslim_pl.models.sharding import fsdp1_root, full_state_dict, shard_mesh, shard_model
from moslim_pl.modules.metric_hooks import MetricEvalHooks
from moslim_pl.modules.optim import OptimizerLogging, adamw_with_warmup
from moslim_pl.rewards.mapping import expected_level
from moslim_pl.schema import Dimension, check_dimensions
from moslim_pl.utils.distributed import is_rank_zero
from moslim_pl.utils.hparams import as_dataclass

log = logging.getLogger(__name__)


def _head_metrics(num_levels: int) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_levels, average="micro", ignore_index=IGNORE_LABEL),
            "acc_within1": MeanMetric(),
            "mae": MeanMetric(),
            "confusion": MulticlassConfusionMatrix(num_levels, ignore_index=IGNORE_LABEL),
            "count": SumMetric(),
            "pair_acc": MeanMetric(),
            "pair_count": SumMetric(),
        },
        compute_groups=False,
    )


class WithinPromptRankAccuracy(Metric):
    """``val/rank_acc/<head>``: the share of same-prompt response pairs with different labels that a head's
    expected level orders correctly (``moslim_pl.losses.pairwise.within_prompt_rank_counts``).

    Responses to one prompt may fall into different batches (and ranks), so the scores are gathered
    over the whole epoch and compared at ``compute``.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("prompt_ids", default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor, labels: Tensor, prompt_ids: Tensor) -> None:
        """scores [N, K] float, labels [N, K] long, prompt_ids [N] long."""
        self.scores.append(scores.detach().float())
        self.labels.append(labels)
        self.prompt_ids.append(prompt_ids)

    def compute(self) -> tuple[Tensor, Tensor]:
        """``(correct [K], count [K])``; no data: empty tensors."""
        if isinstance(self.scores, list) and not self.scores:
            return torch.zeros(0), torch.zeros(0, dtype=torch.long)
        return within_prompt_rank_counts(
            dim_zero_cat(self.scores), dim_zero_cat(self.labels), dim_zero_cat(self.prompt_ids)
        )


class RewardModelModule(OptimizerLogging, MetricEvalHooks, LightningModule):
    """Trains :class:`MultiHeadRewardModel`; logs ``train/loss``, ``val/acc/<head>`` and friends.

    Args:
        backbone: a Hugging Face id or folder, or a tiny pseudo id (``moslim/tiny-llama``) built from a config.
        dimensions: the dimension schema; ``None`` takes the datamodule's (``data.dimensions``).
        pooling: ``auto`` (last non-pad token for decoders, mean for encoders), ``last``, ``cls``, ``mean``
            or ``mean_sqrt`` (sum / sqrt(tokens): keeps a length signal; see ``MultiHeadRewardModel``).
        tiny_config: overrides of the tiny backbone's config (``hidden_size``, ``num_hidden_layers``, ...).
        max_length: the RM's maximum input length (the datamodule tokenizes with it).
        chat_template: format (prompt, response) with the tokenizer's chat template.
        max_prompt_length: keep at most this many prompt tokens, so long contexts leave room for the
            response (``None``: only ``max_length`` limits).
        learning_rate, weight_decay, warmup_steps: AdamW with linear warm-up then constant.
        head_learning_rate: learning rate of the freshly initialized heads (default: ``learning_rate``);
            a pretrained backbone wants a small rate, new heads a larger one.
        trust_remote_code, gguf_file: passed to ``from_pretrained``.
        lora: train LoRA adapters on the backbone instead of its weights (the heads stay fully trainable);
            the export merges them, so it is a plain backbone that ``MultiHeadRewardModel.from_pretrained``
            reloads. ``target_modules: [all-linear]`` takes every linear layer of the backbone.
        pair_loss_weight: weight of the Bradley-Terry loss of preference pairs against the cross-entropy
            of labelled responses: ``loss = CE + pair_loss_weight * BT`` (each the mean over the heads
            that have labels, resp. pairs, in the batch). 0 leaves pairs to validation only.
    """

    def __init__(
        self,
        backbone: str = "moslim/tiny-llama",
        dimensions: list[Dimension] | None = None,
        pooling: str = "auto",
        tiny_config: dict[str, Any] | None = None,
        max_length: int = 256,
        chat_template: bool = False,
        max_prompt_length: int | None = None,
        learning_rate: float = 1e-3,
        head_learning_rate: float | None = None,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        trust_remote_code: bool = False,
        gguf_file: str | None = None,
        lora: LoRAConfig | None = None,
        pair_loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if pair_loss_weight < 0:
            raise MoslimError(f"pair_loss_weight must be non-negative, got {pair_loss_weight}")
        self.save_hyperparameters()
        self.lora = as_dataclass(LoRAConfig, lora)
        self.hparams["lora"] = None if self.lora is None else asdict(self.lora)  # plain, for checkpoints
        self.tokenizer_name = backbone
        self.encoding = PairEncoding(max_length, chat_template, max_prompt_length)
        self.rm: MultiHeadRewardModel | None = None
        if dimensions is not None:
            self._build(check_dimensions(dimensions))

    # ------------------------------------------------------------------ construction
    def _build(self, dimensions: Sequence[Dimension]) -> None:
        hp = self.hparams
        kwargs = {"trust_remote_code": hp.trust_remote_code, "gguf_file": hp.gguf_file}
        tokenizer = load_tokenizer(hp.backbone, **kwargs)
        # validate/test run configure_model under inference mode; parameters made there could never train
        with torch.inference_mode(False):
            backbone = load_backbone(hp.backbone, tokenizer=tokenizer, tiny_config=hp.tiny_config, **kwargs)
            self.rm = MultiHeadRewardModel(
                backbone,
                dimensions,
                pooling=hp.pooling,
                tokenizer=tokenizer,
                encoding=self.encoding,
            )
            if self.lora is not None:
                # before any sharding (configure_model): FSDP2 then wraps the adapted blocks
                self.rm.backbone = apply_lora(self.rm.backbone, self.lora, task_type="FEATURE_EXTRACTION")
                trainable = sum(p.numel() for p in self.rm.parameters() if p.requires_grad)
                total = sum(p.numel() for p in self.rm.parameters())
                log.info(
                    "LoRA reward model: %d of %d parameters train (adapters and heads)", trainable, total
                )
            self.val_metrics = nn.ModuleDict({d.name: _head_metrics(d.num_levels) for d in dimensions})
            self.val_pair_acc = MeanMetric()
            self.val_rank_acc = WithinPromptRankAccuracy()
        # from_pretrained returns modules in eval mode, and Lightning keeps each submodule's mode:
        # without this, dropout would stay off during training
        self.rm.train()
        # stored as plain dicts so checkpoints rebuild the same heads without the datamodule
        self.hparams["dimensions"] = [d.to_dict() for d in self.rm.dimensions]

    def configure_model(self) -> None:
        if self.rm is None:
            datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
            dims = getattr(datamodule, "dimensions", None)
            if dims is None:
                raise MoslimError("model.dimensions is not set and the datamodule declares no dimensions")
            self._build(check_dimensions(dims))
        if self.device_mesh is not None:  # ModelParallelStrategy (configs/trainer/fsdp2.yaml): FSDP2
            shard_model(self.rm, shard_mesh(self.device_mesh))

    @property
    def dimensions(self) -> tuple[Dimension, ...]:
        if self.rm is None:
            raise RuntimeError("the reward model is built in configure_model(); call it first")
        return self.rm.dimensions

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Logits [N, K, L] of every head (see ``MultiHeadRewardModel.forward``)."""
        return self.rm(input_ids, attention_mask)

    # ------------------------------------------------------------------ steps
    def _losses(self, logits: Tensor, batch: RewardBatch) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(probs [N, K, L], expected [N, K], loss [], ce terms, pair terms)`` of a batch.

        The loss is ``CE + pair_loss_weight * BT``; ``ce`` and ``bt`` are ``(loss, per_head, has)`` triples.
        """
        ce = multi_head_cross_entropy(logits, batch.labels)
        probs = logits.float().softmax(-1)
        expected = expected_level(probs)  # [N, K] in class units: the pairs' score
        bt = bradley_terry_loss(expected, batch.pairs, batch.pair_dims, batch.pair_margins)
        return probs, expected, ce[0] + self.hparams.pair_loss_weight * bt[0], ce, bt

    def training_step(self, batch: RewardBatch, batch_idx: int) -> dict[str, Tensor]:
        logits = self(batch.input_ids, batch.attention_mask)
        probs, _, loss, (_, per_head, has_labels), (pair_loss, pair_per_head, has_pairs) = self._losses(
            logits, batch
        )
        size = batch.input_ids.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        for k, dim in enumerate(self.dimensions):
            if has_labels[k]:
                self.log(f"train/loss/{dim.name}", per_head[k], batch_size=size)
            if has_pairs[k]:
                self.log(f"train/pair_loss/{dim.name}", pair_per_head[k], batch_size=batch.pairs.shape[0])
        if batch.pairs.numel():
            self.log("train/pair_loss", pair_loss, batch_size=batch.pairs.shape[0])
        # the probabilities of every sequence (pairs' sides included) feed RewardStatsCallback without a
        # second forward pass, so pair-only data still gives the Gaussian mapping its statistics
        return {"loss": loss, "probs": probs.detach()}

    def _eval_step(self, batch: RewardBatch, stage: str) -> None:
        logits = self(batch.input_ids, batch.attention_mask)
        probs, expected, loss, (_, _, has_labels), _ = self._losses(logits, batch)
        size = batch.input_ids.shape[0]
        if bool(has_labels.any()) or batch.pairs.numel():
            self.log(f"{stage}/loss", loss, batch_size=size, sync_dist=True)
        if batch.prompt_ids is not None:
            self.val_rank_acc.update(expected, batch.labels, batch.prompt_ids)
        pair_correct, pair_head = (
            pair_accuracy(expected, batch.pairs, batch.pair_dims) if batch.pairs.numel() else (None, None)
        )
        for k, dim in enumerate(self.dimensions):
            labels = batch.labels[:, k]
            valid = labels != IGNORE_LABEL
            metrics = self.val_metrics[dim.name]
            head_logits = logits[:, k, : dim.num_levels]
            metrics["count"].update(valid.sum())
            metrics["acc"].update(head_logits, labels)
            metrics["confusion"].update(head_logits, labels)
            if bool(valid.any()):
                pred = head_logits[valid].argmax(-1)
                metrics["acc_within1"].update(((pred - labels[valid]).abs() <= 1).float())
                metrics["mae"].update((expected[valid, k] - labels[valid]).abs())
            judged = pair_head == k if pair_head is not None else None
            # counted on every step (0 too), so every rank takes the same branch at epoch end
            metrics["pair_count"].update(0 if judged is None else judged.sum())
            if judged is not None and bool(judged.any()):
                metrics["pair_acc"].update(pair_correct[judged])
        if batch.pairs.numel():
            num_levels = torch.tensor([d.num_levels for d in self.dimensions], device=probs.device)
            chosen = pair_scores(probs, num_levels, batch.pair_dims, batch.pairs[:, 0])
            rejected = pair_scores(probs, num_levels, batch.pair_dims, batch.pairs[:, 1])
            # a tie counts half, so a constant RM scores 0.5 rather than 0 or 1
            self.val_pair_acc.update((chosen > rejected).float() + 0.5 * (chosen == rejected).float())

    def validation_step(self, batch: RewardBatch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: RewardBatch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_epoch_end(self, stage: str) -> None:
        images = []
        for dim in self.dimensions:
            metrics = self.val_metrics[dim.name]
            # count is synced across ranks, so every rank takes the same branch (and the same collectives)
            if metrics["count"].compute() > 0:
                for name in ("acc", "acc_within1", "mae"):
                    self.log(f"{stage}/{name}/{dim.name}", metrics[name].compute())
                images.append((dim, metrics["confusion"].compute()))
            if metrics["pair_count"].compute() > 0:
                self.log(f"{stage}/pair_acc/{dim.name}", metrics["pair_acc"].compute())
        if self.val_pair_acc.update_count:
            self.log(f"{stage}/pair_acc", self.val_pair_acc.compute())
        if self.val_rank_acc.update_count:
            correct, count = (t.reshape(-1) for t in self.val_rank_acc.compute())  # compute squeezes K=1
            for k, dim in enumerate(self.dimensions):
                if k < len(count) and count[k] > 0:
                    self.log(f"{stage}/rank_acc/{dim.name}", (correct[k] / count[k]).float())
        # validate()/test() run under inference mode; states reset there could not be updated by the
        # no-grad validation inside a later fit()
        with torch.inference_mode(False):
            self.val_metrics.apply(lambda m: m.reset() if isinstance(m, Metric) else None)
            self.val_pair_acc.reset()
            self.val_rank_acc.reset()
        if self.trainer.sanity_checking or self.global_rank != 0:
            return
        if self.loggers:  # to the loggers that take images (callbacks/media.py)
            for dim, matrix in images:
                image = confusion_matrix_image(matrix, dim)
                media.log_image(self.loggers, f"{stage}/confusion/{dim.name}", image, self.global_step)

    # ------------------------------------------------------------------ optimisation and export
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        head_lr = hp.head_learning_rate or hp.learning_rate
        return adamw_with_warmup(
            self.named_parameters(),
            hp.learning_rate,
            hp.weight_decay,
            hp.warmup_steps,
            lr_for=lambda name: head_lr if name.startswith("rm.heads.") else hp.learning_rate,
        )

    def export(self, folder: str | Path) -> Path:
        """Write the RM as a Hugging Face-format folder (see ``MultiHeadRewardModel.save_pretrained``).

        Under FSDP every rank must call it (the shards are gathered); rank 0 writes.
        """
        state = full_state_dict(self.rm, root=fsdp1_root(self))
        if is_rank_zero():
            self.rm.save_pretrained(folder, state_dict=state, training=training_summary(self))
        return Path(folder)
