"""LightningModule for supervised fine-tuning of the policy: next-token cross-entropy on the response.

The quickstart uses it to teach a tiny model the synthetic world's language without any prefix, the
starting point of RL (prefixes are learned by RL alone: ``docs/concepts.md``, section 6). The export is a
plain Hugging Face causal-LM folder that ``load_causal_lm`` and ``AutoModelForCausalLM.from_pretrained`` reload.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor
from torchmetrics import SumMetric
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moslim_pl.data.prompt_encoding import resolve_chat_template
from moslim_pl.data.sft import SFTBatch, SFTEncoding
from moslim_pl.losses.sft import response_nll
from moslim_pl.models.backbone import load_trainable_causal_lm
from moslim_pl.models.card import CARD_FILE, policy_card, training_summary
from moslim_pl.models.io import save_pretrained_atomic
from moslim_pl.models.sharding import fsdp1_root, shard_mesh, shard_model
from moslim_pl.modules.metric_hooks import MetricEvalHooks
from moslim_pl.modules.optim import OptimizerLogging, adamw_with_warmup

log = logging.getLogger(__name__)


class SFTModule(OptimizerLogging, MetricEvalHooks, LightningModule):
    """Fine-tunes a causal LM on (prompt, response) pairs; logs ``train/loss``, ``val/loss``, ``val/ppl``.

    The losses are means over response tokens (every token weighs the same, whatever its row's length).

    Args:
        model: a Hugging Face id or folder of a decoder, or ``moslim/tiny-llama`` built from a config.
        tiny_config: overrides of the tiny model's config (``hidden_size``, ``num_hidden_layers``, ...).
        max_length: token budget of prompt plus response (the datamodule encodes with it).
        max_prompt_length: prompt budget, cut as the RL stages cut prompts (``moslim_pl.data.prompt_encoding.encode_prompts``).
        chat_template: prompt and response as a user and an assistant turn of the tokenizer's template.
        learning_rate, weight_decay, warmup_steps: AdamW with linear warm-up then constant.
        trust_remote_code: passed to ``from_pretrained``.
    """

    def __init__(
        self,
        model: str = "moslim/tiny-llama",
        tiny_config: dict[str, Any] | None = None,
        max_length: int = 256,
        max_prompt_length: int = 128,
        chat_template: bool = False,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.tokenizer_name = model
        self.encoding = SFTEncoding(max_length, max_prompt_length, chat_template)
        self.lm: PreTrainedModel | None = None
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.val_nll = SumMetric()
        self.val_tokens = SumMetric()

    def configure_model(self) -> None:
        if self.lm is None:
            self._build()
        if self.device_mesh is not None:  # ModelParallelStrategy (configs/trainer/fsdp2.yaml): FSDP2
            shard_model(self.lm, shard_mesh(self.device_mesh))

    def _build(self) -> None:
        hp = self.hparams
        self.tokenizer, self.lm = load_trainable_causal_lm(
            hp.model, tiny_config=hp.tiny_config, trust_remote_code=hp.trust_remote_code
        )
        # a chat model fine-tuned on raw text unlearns its turns: warn (an absent template with True raises)
        resolve_chat_template(self.tokenizer, hp.chat_template, hp.model)
        # from_pretrained returns eval mode, and Lightning keeps each submodule's mode: dropout would stay off
        self.lm.train()

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Next-token logits ``[N, T, V]`` of right-padded ``input_ids [N, T]``."""
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    def _nll(self, batch: SFTBatch) -> tuple[Tensor, Tensor]:
        return response_nll(self(batch.input_ids, batch.attention_mask), batch.labels)

    def training_step(self, batch: SFTBatch, batch_idx: int) -> Tensor:
        nll, count = self._nll(batch)
        loss = nll / count.clamp(min=1)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.input_ids.shape[0])
        return loss

    def validation_step(self, batch: SFTBatch, batch_idx: int) -> None:
        nll, count = self._nll(batch)
        self.val_nll.update(nll)
        self.val_tokens.update(count)

    def test_step(self, batch: SFTBatch, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def _eval_epoch_end(self, stage: str) -> None:
        # both sums are synced across ranks, so every rank logs the same token-weighted mean
        tokens = self.val_tokens.compute()
        if tokens > 0:
            loss = self.val_nll.compute() / tokens
            self.log(f"{stage}/loss", loss)
            self.log(f"{stage}/ppl", torch.exp(loss))
        # validate()/test() run under inference mode; states reset there could not be updated later in fit()
        with torch.inference_mode(False):
            self.val_nll.reset()
            self.val_tokens.reset()

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        return adamw_with_warmup(self.named_parameters(), hp.learning_rate, hp.weight_decay, hp.warmup_steps)

    def export(self, folder: str | Path) -> Path:
        """Write model, generation config, tokenizer and a ``README.md`` model card as a Hugging Face folder,
        atomically.

        Staged in a sibling folder and renamed, so an existing export is replaced only by a complete one.
        Under FSDP every rank must call it (the shards are gathered); rank 0 writes.
        """
        if self.lm is None:
            raise RuntimeError("the model is built in configure_model(); call it first")
        card = policy_card(str(self.hparams.model), None, training_summary(self))
        folder = save_pretrained_atomic(
            folder,
            self.lm,
            self.tokenizer,
            fsdp_root=fsdp1_root(self),
            extra=lambda staging: (staging / CARD_FILE).write_text(card),
        )
        log.info("exported the fine-tuned model to %s", folder)
        return folder
