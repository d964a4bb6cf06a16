"""The multi-head classification reward model: one backbone, one classification head per dimension.

Each head classifies a (prompt, response) pair into its dimension's intensity levels. Heads with fewer
levels than the widest one are padded so that every output is one ``[N, K, L]`` tensor (``K`` heads,
``L`` = the largest number of levels). The running statistics of every (head, level) probability live in
buffers, so that checkpoints and exports carry them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moslim_pl.data.collate import right_pad
from moslim_pl.data.encoding import PairEncoding
from moslim_pl.data.messages import Prompt, parse_prompt_prefix
from moslim_pl.errors import MoslimError
from moslim_pl.models.backbone import is_encoder, load_backbone, load_tokenizer
from moslim_pl.models.card import CARD_FILE, reward_model_card
from moslim_pl.models.compat import accepted_arguments, base_model, positions_from_mask
from moslim_pl.models.io import refuse_sequence_classification
from moslim_pl.models.lora import is_lora, merged_copy
from moslim_pl.models.rm_format import (
    FORMAT_VERSION,
    HEADS_FILE,
    RM_ARCHITECTURE,
    RM_CONFIG,
    RM_NOTE,
    quiet_transformers,
    read_config,
)
from moslim_pl.models.sharding import is_sharded
from moslim_pl.rewards.mapping import map_rewards, resolve_targets
from moslim_pl.schema import Dimension, check_dimensions, default_targets
from moslim_pl.utils.io import atomic_folder

log = logging.getLogger(__name__)

POOLINGS = ("auto", "last", "cls", "mean", "mean_sqrt")


class ScoreOutput(NamedTuple):
    """What :meth:`MultiHeadRewardModel.score` (and ``moslim_pl.rollout.score_responses``) returns (CPU,
    float32 where float; N pairs, K heads, L levels)."""

    reward: Tensor
    """[N] the mapped scalar reward."""
    components: Tensor
    """[N, K] per-dimension terms of the reward (0 where masked)."""
    mask: Tensor
    """[N, K] bool, True where the dimension contributes."""
    probs: Tensor
    """[N, K, L] per-head probabilities, exact 0 on padded levels."""
    requested: Tensor
    """[N, K] long class index requested by the targets (the prefix, else the defaults); -1 = not named."""
    hit: Tensor
    """[N, K] bool, the head's argmax equals the requested class (False where nothing is requested)."""


def _segment_separator(backbone: nn.Module, tokenizer: PreTrainedTokenizerBase | None) -> int | None:
    """The [SEP] id when the backbone has segment embeddings and the tokenizer emits segment ids."""
    if tokenizer is None or getattr(backbone.config, "type_vocab_size", 1) < 2:
        return None
    if "token_type_ids" not in getattr(tokenizer, "model_input_names", ()):
        return None
    return tokenizer.sep_token_id


class MultiHeadRewardModel(nn.Module):
    """A backbone with one ``nn.Linear(hidden, num_levels)`` head per preference dimension.

    Args:
        backbone: a base model without LM head (``AutoModel``), returning ``last_hidden_state``; it may
            be wrapped with LoRA adapters (``apply_lora(..., task_type="FEATURE_EXTRACTION")``).
        dimensions: the schema; head order follows it.
        pooling: ``"auto"`` (``"last"`` for decoders, ``"mean"`` for encoders), ``"last"`` (last attended
            token, for left or right padding), ``"cls"`` (first attended token, i.e. position 0 under right
            padding), ``"mean"`` (mean over attended tokens) or ``"mean_sqrt"`` (sum over attended tokens
            divided by the square root of their number, sentence-transformers' ``mean_sqrt_len_tokens``:
            the pooled norm grows with length, so heads can read how long the text is, which a mean hides).
        tokenizer: needed by :meth:`score` and saved by :meth:`save_pretrained`.
        encoding: how :meth:`score` turns a (prompt, response) pair into ids (length budget, chat template,
            prompt cap); the datamodule must use the same for training.
    """

    def __init__(
        self,
        backbone: PreTrainedModel,
        dimensions: Sequence[Dimension],
        pooling: str = "auto",
        tokenizer: PreTrainedTokenizerBase | None = None,
        encoding: PairEncoding | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise MoslimError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
        self.backbone = backbone
        self._dimensions = check_dimensions(dimensions)
        encoder = is_encoder(backbone.config)
        self.pooling = ("mean" if encoder else "last") if pooling == "auto" else pooling
        self.tokenizer = tokenizer
        self.encoding = encoding or PairEncoding()
        # Decoders with left padding need positions counted from the first real token to match the
        # unpadded sequence; encoders keep their own scheme (RoBERTa offsets positions by the pad id).
        self._pass_positions = not encoder and "position_ids" in accepted_arguments(
            type(base_model(backbone))
        )
        # BERT-like encoders were pretrained with segment ids telling the prompt (segment 0, up to the
        # first [SEP]) from the response (segment 1); batches carry only ids and mask, so rebuild them.
        self._segment_sep_id = _segment_separator(backbone, tokenizer) if encoder else None
        # ALBERT-like models embed in a smaller size than their hidden states; hidden_size is what pools.
        hidden = (
            getattr(backbone.config, "hidden_size", None) or backbone.get_input_embeddings().embedding_dim
        )
        dtype = next(backbone.parameters()).dtype
        self.heads = nn.ModuleDict(
            {d.name: nn.Linear(hidden, d.num_levels, dtype=dtype) for d in self._dimensions}
        )
        levels = torch.tensor([d.num_levels for d in self._dimensions], dtype=torch.long)
        valid = torch.arange(int(levels.max())) < levels[:, None]  # [K, L]
        self.register_buffer("stats_mean", valid.float() / levels[:, None].float())
        self.register_buffer("stats_std", torch.ones(valid.shape))
        self.register_buffer("stats_count", torch.zeros(()))
        self.register_buffer("num_levels", levels, persistent=False)
        self._warned_no_stats = False

    @property
    def dimensions(self) -> tuple[Dimension, ...]:
        return self._dimensions

    @property
    def names(self) -> list[str]:
        return [d.name for d in self._dimensions]

    @property
    def num_levels_list(self) -> list[int]:
        return [d.num_levels for d in self._dimensions]

    @property
    def max_levels(self) -> int:
        return max(self.num_levels_list)

    def _pool(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        """``hidden [N, T, H]``, ``attention_mask [N, T]`` -> ``[N, H]``."""
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        if self.pooling in ("mean", "mean_sqrt"):
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            count = mask.sum(1).clamp(min=1)
            return (hidden * mask).sum(1) / (count if self.pooling == "mean" else count.sqrt())
        if self.pooling == "cls":
            return hidden[rows, attention_mask.long().argmax(-1)]
        # Highest attended position: the last real token whichever side the padding is on.
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        return hidden[rows, (positions * attention_mask.long()).argmax(-1)]

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``input_ids [N, T]``, ``attention_mask [N, T]`` -> logits ``[N, K, L]``.

        Levels a head does not have hold ``finfo(dtype).min`` so that softmax gives them 0.
        """
        kwargs = {}
        if self._pass_positions:
            kwargs["position_ids"] = positions_from_mask(attention_mask)
        if self._segment_sep_id is not None:
            is_sep = (input_ids == self._segment_sep_id).long()
            after_first_sep = (is_sep.cumsum(-1) - is_sep) >= 1
            kwargs["token_type_ids"] = (after_first_sep & attention_mask.bool()).long()
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        pooled = self._pool(out.last_hidden_state, attention_mask)
        width = self.max_levels
        logits = []
        for head in self.heads.values():
            head_logits = head(pooled.to(head.weight.dtype))
            fill = torch.finfo(head_logits.dtype).min
            logits.append(F.pad(head_logits, (0, width - head_logits.shape[-1]), value=fill))
        return torch.stack(logits, dim=1)

    def probabilities(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Per-head softmax ``[N, K, L]``; padded levels are exactly 0."""
        probs = self(input_ids, attention_mask).softmax(-1)
        valid = torch.arange(probs.shape[-1], device=probs.device) < self.num_levels[:, None]
        return probs * valid

    def targets_tensor(self, targets: Sequence[Mapping[str, int]]) -> Tensor:
        """Rows of ``{name: level}`` (prefix levels) -> ``[N, K]`` long class indices, -1 where not named."""
        index = {d.name: k for k, d in enumerate(self._dimensions)}
        out = torch.full((len(targets), len(index)), -1, dtype=torch.long)
        for row, requested in enumerate(targets):
            for name, level in requested.items():
                if name not in index:
                    raise MoslimError(
                        f"unknown dimension {name!r} in targets row {row}; known: {', '.join(index)}"
                    )
                out[row, index[name]] = self._dimensions[index[name]].level_to_class(int(level))
        return out

    def default_targets_tensor(self) -> Tensor:
        """``[K]`` long class indices targeted by a prompt without prefix, -1 for dimensions left out."""
        return self.targets_tensor([default_targets(self._dimensions)])[0]

    @torch.inference_mode()
    def score(
        self,
        prompts: Sequence[Prompt],
        responses: Sequence[str],
        targets: Sequence[Mapping[str, int]] | None = None,
        mapping: str = "gaussian",
        weights: Sequence[float] | None = None,
        batch_size: int = 16,
        sigma_floor: float = 0.0,
        z_clip: float | None = None,
        aggregation: str = "mean",
        probs: Tensor | None = None,
    ) -> ScoreOutput:
        """Score (prompt, response) pairs; the prompts' ``<name level>`` prefixes are stripped first.

        Args:
            prompts: N prompts, with or without prefix: text, or conversations (``Messages``) whose last
                user turn may start with the prefix.
            responses: N responses.
            targets: N rows of ``{name: level}``; default: each prompt's prefix. A row naming nothing
                gets the default targets.
            mapping: a reward mapping of ``moslim_pl.rewards.mapping`` (the running stats feed ``gaussian``).
            weights: ``[K]`` weights of the ``linear`` mapping.
            batch_size: pairs per forward pass.
            sigma_floor, z_clip: guards of the ``gaussian`` mapping against tiny statistics
                (``moslim_pl.rewards.mapping.gaussian_mapping``); the defaults leave it unguarded.
            aggregation: ``mean`` (the paper's), ``min`` or ``softmin[:tau]`` of the named dimensions' terms
                (``moslim_pl.rewards.mapping.parse_aggregation``).
            probs: ``[N, K, L]`` probabilities to map instead of the model's (``benchmarks/oracle_reward.py``).
        """
        if self.tokenizer is None:
            raise MoslimError("score() needs a tokenizer: pass tokenizer= to MultiHeadRewardModel")
        if len(prompts) != len(responses) or (targets is not None and len(targets) != len(prompts)):
            raise MoslimError(
                f"score() got {len(prompts)} prompts, {len(responses)} responses and "
                f"{'no' if targets is None else len(targets)} target rows; they must match"
            )
        if mapping == "gaussian" and not self._warned_no_stats and float(self.stats_count) == 0:
            self._warned_no_stats = True
            log.warning(
                "the reward model's statistics were never collected (stats_count 0): the gaussian mapping "
                "z-scores with their placeholders (mean 1/levels, std 1); train the RM with "
                "RewardStatsCallback, or use mapping expected_level (docs/concepts.md, section 3)"
            )
        # A conversation's prefix is in its last user turn; without it the conversation is encoded as the
        # RM's conversational training rows are (PairEncoding, docs/user_guide.md "TRL formats").
        parsed = [parse_prompt_prefix(prompt, self._dimensions) for prompt in prompts]
        rows = [levels for levels, _ in parsed] if targets is None else targets
        target_idx = resolve_targets(self.targets_tensor(rows), self.default_targets_tensor())
        if probs is None:
            pairs = zip(parsed, responses, strict=True)
            encoded = [self.encoding.encode(self.tokenizer, text, response) for (_, text), response in pairs]
            probs = self._batched_probabilities(encoded, batch_size)
        elif (shape := [len(prompts), len(self._dimensions), self.max_levels]) != list(probs.shape):
            raise MoslimError(f"score(): probs must be [N, K, L] = {shape}, got {list(probs.shape)}")
        out = map_rewards(
            mapping,
            probs,
            target_idx,
            mean=self.stats_mean.detach().float().cpu(),
            std=self.stats_std.detach().float().cpu(),
            num_levels=self.num_levels.cpu(),
            weights=None if weights is None else torch.tensor(weights, dtype=torch.float32),
            sigma_floor=sigma_floor,
            z_clip=z_clip,
            aggregation=aggregation,
        )
        hit = (probs.argmax(-1) == target_idx) & (target_idx >= 0)
        return ScoreOutput(out.reward.float(), out.components.float(), out.mask, probs, target_idx, hit)

    def _batched_probabilities(self, encoded: list[list[int]], batch_size: int) -> Tensor:
        """Token id lists -> CPU float32 probabilities ``[N, K, L]``, right-padding each batch to its longest."""
        device = next(self.parameters()).device
        pad_id = self.tokenizer.pad_token_id
        was_training = self.training
        self.eval()  # dropout would make scores depend on the call
        # FSDP2 keeps the buffers of the weights it gathers in its first forward pass: made under inference
        # mode they could never serve a pass with grad (and one rank's FSDP2 fails outright), so no_grad.
        sharded = is_sharded(self)
        try:
            chunks = []
            for start in range(0, len(encoded), batch_size):
                input_ids, attention_mask = right_pad(encoded[start : start + batch_size], pad_id)
                with torch.inference_mode(not sharded), torch.no_grad():
                    probs = self.probabilities(input_ids.to(device), attention_mask.to(device))
                chunks.append(probs.float().cpu())
        finally:
            self.train(was_training)
        if not chunks:
            return torch.zeros((0, len(self._dimensions), self.max_levels))
        return torch.cat(chunks)

    def _head_state(self, state_dict: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Heads' weights and the persistent stats buffers, i.e. everything but the backbone."""
        state = self.state_dict() if state_dict is None else state_dict
        return {
            key: value.detach().cpu().contiguous()
            for key, value in state.items()
            if not key.startswith("backbone.")
        }

    def save_pretrained(
        self,
        folder: str | Path,
        state_dict: Mapping[str, Tensor] | None = None,
        training: Mapping[str, Any] | None = None,
    ) -> None:
        """Export to a Hugging Face-format folder, atomically (staged in a sibling folder, then renamed).

        The folder holds the backbone's own files (``AutoModel.from_pretrained(folder)`` loads it alone),
        the tokenizer's files, ``moslim_rm.json`` (schema, pooling, encoding) and ``heads.safetensors``
        (heads and running statistics), and a ``README.md`` model card (``training``: what
        ``moslim_pl.models.card.training_summary`` says about the run, shown in the card). Loading the
        folder with ``AutoModelForSequenceClassification`` is refused (``moslim_pl.models.io.refuse_sequence_classification``):
        it would put a random one-logit head on the backbone. An existing folder is replaced only once the
        new one is complete.
        ``state_dict``: the full weights to write instead of the module's own (a sharded model's,
        gathered with ``moslim_pl.models.sharding.full_state_dict``). A backbone with LoRA adapters
        (``RewardModelModule(lora=...)``) is written merged, as the plain backbone.
        """
        backbone_state = None
        if state_dict is not None:
            backbone_state = {
                key.removeprefix("backbone."): value
                for key, value in state_dict.items()
                if key.startswith("backbone.")
            }
        backbone = self.backbone
        if is_lora(backbone):
            # LoRA adapters merged into the weights: the export is a plain backbone (no PEFT needed to load)
            backbone, backbone_state = merged_copy(backbone, backbone_state), None
        with atomic_folder(folder) as staging:
            backbone.save_pretrained(staging, state_dict=backbone_state)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(staging)
            save_file(self._head_state(state_dict), staging / HEADS_FILE)
            config = {
                "format_version": FORMAT_VERSION,
                "dimensions": [d.to_dict() for d in self._dimensions],
                "pooling": self.pooling,
                "encoding": self.encoding.to_dict(),
            }
            (staging / RM_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
            refuse_sequence_classification(staging, RM_ARCHITECTURE, RM_NOTE)
            card = reward_model_card(
                self._dimensions,
                self.pooling,
                self.encoding.to_dict(),
                self.stats_mean.detach().float().cpu(),
                self.stats_std.detach().float().cpu(),
                float(self.stats_count),
                type(backbone.get_base_model() if is_lora(backbone) else backbone).__name__,
                training,
            )
            (staging / CARD_FILE).write_text(card)
        log.info("exported reward model to %s", folder)

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, *, dtype: torch.dtype | str | None = None
    ) -> MultiHeadRewardModel:
        """Reload an export of :meth:`save_pretrained` (backbone, tokenizer, schema, heads and statistics)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise MoslimError(f"cannot load reward model {str(folder)!r}: no such folder")
        config = read_config(folder)
        has_tokenizer = any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
        tokenizer = load_tokenizer(str(folder)) if has_tokenizer else None
        with quiet_transformers():  # the refusal's empty head tensors are reported as unexpected
            backbone = load_backbone(str(folder), dtype=dtype)
        model = cls(
            backbone,
            config["dimensions"],
            pooling=config["pooling"],
            tokenizer=tokenizer,
            encoding=config["encoding"],
        )
        heads_path = folder / HEADS_FILE
        if not heads_path.is_file():
            raise MoslimError(f"reward model export {str(folder)!r} lacks {HEADS_FILE}")
        state = load_file(heads_path)
        expected = set(model._head_state())
        if set(state) != expected:
            raise MoslimError(
                f"{heads_path} does not match the schema in {RM_CONFIG}: "
                f"missing {sorted(expected - set(state))}, unexpected {sorted(set(state) - expected)}"
            )
        model.load_state_dict(state, strict=False)
        return model
