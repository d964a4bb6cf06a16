"""The SFT datamodule: (prompt, response) rows in, right-padded causal-LM batches (``SFTBatch``) out.

A row becomes the prompt's ids exactly as the policy will later read it (``moslim_pl.data.prompt_encoding.encode_prompts``,
without its left padding), then the response's ids and an end of sequence, so that RL starts from a
model that knows where its answer begins and ends. The loss covers the response tokens only: the
labels are ``IGNORE_LABEL`` on the prompt and on padding.

Rows are ``prompt``/``response`` columns, TRL's prompt-completion rows (``prompt``/``completion``) or its
``messages`` rows (split at the last assistant turn), standard or conversational (docs/user_guide.md,
"Prompt data, SFT data and predict files").
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import datasets
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from moslim_pl.data.common import (
    TokenizedDataModule,
    check_loader_args,
    prefetch_sources,
    seeded_loader,
    set_loader_args,
    take_sources,
    train_val_rows,
)
from moslim_pl.data.messages import (
    MESSAGES_COLUMN,
    Prompt,
    add_prefix,
    as_dicts,
    assistant_text,
    split_messages,
)
from moslim_pl.data.prompt_encoding import encode_prompts
from moslim_pl.data.prompts import read_prompts, read_texts
from moslim_pl.data.rows import DataError, DataSource, SyntheticConfig, parse_label
from moslim_pl.data.sources import load_source, resolve_dimensions
from moslim_pl.data.types import IGNORE_LABEL
from moslim_pl.errors import MoslimError
from moslim_pl.schema import Dimension

log = logging.getLogger(__name__)


COMPLETION_COLUMN = "completion"
"""TRL's prompt-completion column, read when there is no ``response_column``."""


class SFTRow(NamedTuple):
    prompt: Prompt
    """Text, or a conversation (``Messages``) ending with a user turn."""
    response: str
    targets: dict[str, int] | None = None
    """RiC (``label_prefix``): the levels of the row's own labels, written as the prompt's prefix only
    after the prompt-disjoint split, so that one question never lands on both sides of it."""


class SFTExample(NamedTuple):
    """One encoded row: ``input_ids`` and ``labels`` of the same length (``IGNORE_LABEL`` on the prompt)."""

    input_ids: list[int]
    labels: list[int]


class SFTBatch(NamedTuple):
    """Right-padded causal-LM batch. Shapes: N rows, T tokens (the longest row)."""

    input_ids: Tensor
    """[N, T] long, right-padded with the tokenizer's pad id."""
    attention_mask: Tensor
    """[N, T] long, 1 for real tokens."""
    labels: Tensor
    """[N, T] long: the token id on response tokens, ``IGNORE_LABEL`` on prompt tokens and padding."""


@dataclass(frozen=True)
class SFTEncoding:
    """How the SFT stage reads a (prompt, response) pair; the LightningModule owns it.

    Args:
        max_length: token budget of prompt plus response; a longer response loses its end (and its EOS).
        max_prompt_length: prompt budget, cut as ``moslim_pl.data.prompt_encoding.encode_prompts`` cuts (prefix and end kept).
        chat_template: the prompt is the user turn (a conversation: all its messages) of the tokenizer's
            chat template plus its generation prompt, the response the assistant turn up to the template's
            end-of-turn token.
    """

    max_length: int = 256
    max_prompt_length: int = 128
    chat_template: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.max_prompt_length < self.max_length:
            raise MoslimError(
                f"need 1 <= max_prompt_length < max_length, got {self.max_prompt_length} and {self.max_length}"
            )

    def encode(
        self, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], responses: Sequence[str]
    ) -> list[SFTExample]:
        """Encode the pairs; each distinct prompt is tokenized once."""
        # lazy: rollout imports the reward model, which imports this package
        distinct = list(dict.fromkeys(prompts))
        prompt_ids: dict[Prompt, list[int]] = {}
        for start in range(0, len(distinct), 1024):  # chunks bound the padded tensor's size
            chunk = distinct[start : start + 1024]
            batch = encode_prompts(tokenizer, chunk, self.max_prompt_length, self.chat_template)
            for prompt, row, mask in zip(chunk, batch.input_ids, batch.attention_mask, strict=True):
                prompt_ids[prompt] = row[mask.bool()].tolist()
        examples = []
        for prompt, response in zip(prompts, responses, strict=True):
            ids = prompt_ids[prompt]
            target = self.response_ids(tokenizer, prompt, response)[: self.max_length - len(ids)]
            examples.append(SFTExample(ids + target, [IGNORE_LABEL] * len(ids) + target))
        return examples

    def response_ids(self, tokenizer: PreTrainedTokenizerBase, prompt: Prompt, response: str) -> list[int]:
        """The ids the model learns to generate after the prompt, ending with the tokenizer's EOS."""
        eos = tokenizer.eos_token_id
        if eos is None:
            raise MoslimError("SFT needs a tokenizer with an eos token: the policy must learn to stop")
        text = response
        if self.chat_template:
            user = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else as_dicts(prompt)
            head = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(
                [*user, {"role": "assistant", "content": response}], tokenize=False
            )
            if full.startswith(head):
                # The template's closing (end-of-turn token) is part of what the model must generate;
                # the whitespace after it is not.
                text = full[len(head) :].rstrip()
            else:
                _warn_template_once()
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids if ids and ids[-1] == eos else [*ids, eos]

    def to_dict(self) -> dict:
        return asdict(self)


@functools.cache
def _warn_template_once() -> None:
    log.warning(
        "the chat template renders the prompt differently with and without the assistant turn: the "
        "response is trained as its plain text plus EOS, without the template's end-of-turn tokens"
    )


def collate_sft_batch(examples: Sequence[SFTExample], pad_token_id: int) -> SFTBatch:
    """Right-pad the examples to the longest one: ids with ``pad_token_id``, labels with ``IGNORE_LABEL``."""
    if not examples:
        raise ValueError("cannot collate an empty batch")
    longest = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
    labels = torch.full((len(examples), longest), IGNORE_LABEL, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids, dtype=torch.long)
        attention_mask[row, :n] = 1
        labels[row, :n] = torch.tensor(example.labels, dtype=torch.long)
    return SFTBatch(input_ids, attention_mask, labels)


def label_targets(
    row: Mapping[str, Any], dimensions: Sequence[Dimension], where: str = "row"
) -> dict[str, int]:
    """The prefix levels of a labelled row (RiC): ``{name: level}`` of every dimension whose label is present.

    A raw label maps to its level as the reward model's heads see it (``Dimension.label_to_class``, so
    coarsening applies); a missing label (``None``, NaN, ``"N/A"``) leaves the dimension out. A bad
    label is a one-line ``DataError`` naming ``where`` and the column.
    """
    targets: dict[str, int] = {}
    for dim in dimensions:
        column = dim.source_column
        try:
            raw = parse_label(row.get(column))
            if raw is not None:
                targets[dim.name] = dim.min_level + dim.label_to_class(raw)
        except ValueError as err:  # a non-integer label, or SchemaError: out of range
            raise DataError(f"{where}, column {column!r}: {err}") from None
    return targets


def _with_prefix(rows: Sequence[SFTRow]) -> list[SFTRow]:
    """RiC's rows with their label prefix written into the prompt; other rows as they are."""
    return [r if r.targets is None else SFTRow(add_prefix(r.targets, r.prompt), r.response) for r in rows]


def _read_pairs(
    dataset: datasets.Dataset, prompt_column: str, response_column: str, description: str
) -> tuple[list[Prompt], list[str]]:
    """Prompts and responses of the rows: ``prompt_column`` with ``response_column`` (or TRL's
    ``completion``), or TRL's ``messages`` split at the last assistant turn; a bad cell is a one-line
    ``DataError`` naming the row and the column."""
    names = dataset.column_names
    if prompt_column not in names and MESSAGES_COLUMN in names:
        pairs = []
        for i, value in enumerate(dataset[MESSAGES_COLUMN]):
            try:
                pairs.append(split_messages(value, f"{description} row {i}, column {MESSAGES_COLUMN!r}"))
            except MoslimError as err:
                raise DataError(str(err)) from None
        return [p for p, _ in pairs], [r for _, r in pairs]
    prompts = read_prompts(dataset, prompt_column, description)
    if response_column not in names and COMPLETION_COLUMN in names:
        response_column = COMPLETION_COLUMN
    if response_column not in names or isinstance(dataset.features[response_column], datasets.Value):
        return prompts, read_texts(dataset, response_column, description)
    responses = []
    for i, value in enumerate(dataset[response_column]):  # one assistant message each
        try:
            responses.append(assistant_text(value, f"{description} row {i}, column {response_column!r}"))
        except MoslimError as err:
            raise DataError(str(err)) from None
    return prompts, responses


class SFTDataModule(TokenizedDataModule):
    """(prompt, response) rows for supervised fine-tuning of the policy (loss on the response only).

    Args:
        tokenizer: tokenizer name or path (``load_tokenizer``); ``None`` takes the LightningModule's
            (``tokenizer_name``), so the policy's own tokenizer is used.
        source: the training rows; defaults to the synthetic world (responses of every level, no prefix).
            Columns ``prompt_column`` and ``response_column`` (or TRL's ``completion``), text or
            conversations, or TRL's ``messages`` (the last assistant turn is the response).
        val_source: validation rows; without it validation is a prompt-disjoint split of ``source``.
        synthetic: size and seed of the synthetic world.
        prompt_column / response_column: the text columns.
        val_fraction: share of the prompts held out for validation when ``val_source`` is not given.
        max_length, max_prompt_length, chat_template: override the LightningModule's ``encoding``
            (``SFTEncoding``; its defaults without a LightningModule). ``None``: the module's.
        batch_size: training rows per batch.
        eval_batch_size: validation rows per batch; defaults to ``batch_size``.
        num_workers: DataLoader workers.
        seed: seeds the validation split and the training shuffle.
        trust_remote_code: allow code from the hub for the tokenizer and the dataset.
        label_prefix: RiC ("rewards in context", Yang et al. 2024): every prompt gets the prefix of its
            own row's labels (``<verbosity 2> <formality 0> ...``, missing labels left out), so that the
            prefix controls the output at inference without RL. Off: prompts are used as they are.
        dimensions: the schema of ``label_prefix`` (label columns, ranges, coarsening); defaults to the
            synthetic world's for a synthetic source.
    """

    encoding_class = SFTEncoding

    def __init__(
        self,
        tokenizer: str | None = None,
        source: DataSource | None = None,
        val_source: DataSource | None = None,
        synthetic: SyntheticConfig | None = None,
        prompt_column: str = "prompt",
        response_column: str = "response",
        val_fraction: float = 0.2,
        max_length: int | None = None,
        max_prompt_length: int | None = None,
        chat_template: bool | None = None,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        trust_remote_code: bool = False,
        label_prefix: bool = False,
        dimensions: list[Dimension] | None = None,
    ) -> None:
        super().__init__()
        # the module logs the encoding settings it owns; the same keys here would clash when unset
        self.save_hyperparameters(ignore=["max_length", "max_prompt_length", "chat_template", "dimensions"])
        check_loader_args(
            val_source, val_fraction, num_workers, batch_size=batch_size, eval_batch_size=eval_batch_size
        )
        self.tokenizer_name = tokenizer
        take_sources(self, source, val_source, synthetic)
        self.prompt_column = prompt_column
        self.response_column = response_column
        self.label_prefix = label_prefix
        self.dimensions = resolve_dimensions(dimensions, self.source) if label_prefix else None
        self.val_fraction = val_fraction
        self._init_tokenization(max_length, max_prompt_length, chat_template)
        set_loader_args(self, batch_size, eval_batch_size, num_workers, seed, trust_remote_code)

    def prepare_data(self) -> None:
        prefetch_sources((self.source, self.val_source), self.trust_remote_code)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        self._take_model_settings()
        self.tokenizer = self._load_tokenizer()
        train_rows, val_rows = self.split_rows()
        train_rows, val_rows = _with_prefix(train_rows), _with_prefix(val_rows)
        self.train_dataset = self._encode(train_rows)
        self.val_dataset = self._encode(val_rows)
        for split, rows in (("train", train_rows), ("val", val_rows)):
            log.info("%s: %d rows, %d prompts", split, len(rows), len({r.prompt for r in rows}))

    def split_rows(self) -> tuple[list[SFTRow], list[SFTRow]]:
        """The (train, val) rows, split on the raw prompt (without RiC's label prefix, which is written
        into ``prompt`` later from ``targets``): the training prompts are ``{r.prompt for r in train}``."""
        return train_val_rows(self._read, self.source, self.val_source, self.val_fraction, self.seed)

    def _read(self, source: DataSource) -> list[SFTRow]:
        dataset = load_source(source, self.synthetic, self.trust_remote_code)
        description = source.describe()
        prompts, responses = _read_pairs(dataset, self.prompt_column, self.response_column, description)
        if self.label_prefix:
            for dim in self.dimensions:
                if dim.source_column not in dataset.column_names:
                    raise DataError(
                        f"{description}: missing label column {dim.source_column!r} (label_prefix)"
                    )
            labels = {dim.source_column: dataset[dim.source_column] for dim in self.dimensions}
            return [
                SFTRow(
                    prompt,
                    response,
                    label_targets(
                        {c: v[i] for c, v in labels.items()}, self.dimensions, f"{description} row {i}"
                    ),
                )
                for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True))
            ]
        return [SFTRow(p, r) for p, r in zip(prompts, responses, strict=True)]

    def _encode(self, rows: Sequence[SFTRow]) -> list[SFTExample]:
        return self.encoding.encode(self.tokenizer, [r.prompt for r in rows], [r.response for r in rows])

    def _loader(self, dataset: list[SFTExample] | None, batch_size: int, shuffle: bool) -> DataLoader:
        # a fresh seeded generator per loader makes the epoch order reproducible without global seeding
        collate = functools.partial(collate_sft_batch, pad_token_id=self.tokenizer.pad_token_id)
        seed = self.seed if shuffle else None
        return seeded_loader(dataset, batch_size, collate, self.num_workers, seed=seed, shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, self.eval_batch_size, shuffle=False)
