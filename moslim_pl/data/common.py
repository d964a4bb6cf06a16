"""What every datamodule shares: the prompt-disjoint train/val split, reading sources into hparams-safe
dataclasses, the argument checks, and (for the datamodules that tokenize) the tokenizer and encoding the
LightningModule decides, and seeded loaders.

Imported by :mod:`moslim_pl.data.preference`, :mod:`moslim_pl.data.sft` and :mod:`moslim_pl.data.prompts`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, ClassVar, TypeVar

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Sampler
from transformers import PreTrainedTokenizerBase

from moslim_pl.data.rows import DataError, DataSource, PreferenceRow, SyntheticConfig
from moslim_pl.data.sources import load_source
from moslim_pl.errors import MoslimError
from moslim_pl.models.backbone import load_tokenizer
from moslim_pl.utils.hparams import as_dataclass, plain_hparams

log = logging.getLogger(__name__)

DEFAULT_TOKENIZER = "moslim/tiny-llama"

R = TypeVar("R")


def split_by_prompt(
    rows: Sequence[PreferenceRow], val_fraction: float, seed: int, description: str = "source"
) -> tuple[list[PreferenceRow], list[PreferenceRow]]:
    """Split rows so that no prompt is on both sides; about ``val_fraction`` of the prompts go to val.

    Deterministic for a given ``seed``: distinct prompts (in first-seen order) are shuffled with it and
    the first ``round(val_fraction * num_prompts)`` of them (at least one, never all) form validation.
    """
    prompts = list(dict.fromkeys(row.prompt for row in rows))
    if len(prompts) < 2:
        raise DataError(
            f"{description}: a prompt-disjoint split needs at least 2 distinct prompts, got {len(prompts)}"
        )
    random.Random(seed).shuffle(prompts)
    num_val = min(max(1, round(val_fraction * len(prompts))), len(prompts) - 1)
    val_prompts = set(prompts[:num_val])
    train = [row for row in rows if row.prompt not in val_prompts]
    val = [row for row in rows if row.prompt in val_prompts]
    return train, val


def train_val_rows(
    read: Callable[[DataSource], list[R]],
    source: DataSource | Sequence[DataSource],
    val_source: DataSource | None,
    val_fraction: float,
    seed: int,
) -> tuple[list[R], list[R]]:
    """Rows of ``source`` (several: their concatenation) split by prompt, or ``source`` and ``val_source``
    when one is given.

    ``read`` turns a source into rows with a ``prompt`` attribute; prompts on both sides of a given
    ``val_source`` are allowed but logged, since they inflate validation scores.
    """
    sources = [source] if isinstance(source, DataSource) else list(source)
    train = [row for src in sources for row in read(src)]
    if val_source is None:
        return split_by_prompt(train, val_fraction, seed, describe(sources))
    val = read(val_source)
    shared = {row.prompt for row in train} & {row.prompt for row in val}
    if shared:
        log.warning("%d prompt(s) appear in both the train and the val source", len(shared))
    return train, val


def prefetch_sources(sources: Sequence[DataSource | None], trust_remote_code: bool) -> None:
    """``prepare_data``: hub sources download here once per node, before ``setup`` runs on every rank."""
    for source in sources:
        if source is not None and not source.is_synthetic:
            load_source(source, trust_remote_code=trust_remote_code)


def check_loader_args(
    val_source: DataSource | None, val_fraction: float, num_workers: int, **at_least_one: int | None
) -> None:
    """The datamodules' shared argument checks; ``at_least_one`` names sizes that must be >= 1 when set."""
    if val_source is None and not 0.0 < val_fraction < 1.0:
        raise MoslimError(f"val_fraction must be in (0, 1) when no val_source is given, got {val_fraction}")
    for name, value in at_least_one.items():
        if value is not None and value < 1:
            raise MoslimError(f"{name} must be at least 1, got {value}")
    if num_workers < 0:
        raise MoslimError(f"num_workers must be non-negative, got {num_workers}")


def describe(sources: Sequence[DataSource]) -> str:
    """The sources' names joined, for messages."""
    return " + ".join(src.describe() for src in sources)


def take_sources(
    module: LightningDataModule, source: Any, val_source: Any, synthetic: Any, reads_schemas: bool = False
) -> None:
    """Set ``source``, ``val_source`` and ``synthetic`` on a datamodule, keeping plain dicts in its hparams
    (so checkpoints load with ``torch.load(weights_only=True)``).

    Only a datamodule that ``reads_schemas`` accepts a source with a dataset ``schema``; the others
    would silently read its raw columns.
    """
    plain_hparams(module.hparams, ("source", "val_source", "synthetic"))
    module.source = as_dataclass(DataSource, source) or DataSource()
    module.val_source = as_dataclass(DataSource, val_source)
    module.synthetic = as_dataclass(SyntheticConfig, synthetic) or SyntheticConfig()
    for src in (module.source, module.val_source):
        if not reads_schemas and src is not None and src.schema is not None:
            raise MoslimError(
                f"{type(module).__name__} reads the raw columns of {src.describe()!r}: dataset schemas "
                f"(here {src.schema!r}) are read by PreferenceDataModule only; remove `schema`"
            )


def seeded_loader(
    dataset: Sequence[Any] | None,
    batch_size: int,
    collate_fn: Callable[[list[Any]], Any],
    num_workers: int,
    *,
    seed: int | None = None,
    sampler: Sampler | None = None,
    shuffle: bool = False,
) -> DataLoader:
    """A ``DataLoader`` over ``dataset`` built in ``setup``; ``seed``: the loader draws its workers' base seed
    (and, with ``shuffle``, its order) from a fresh generator seeded with it, not from the global RNG that
    training draws from."""
    if dataset is None:
        raise RuntimeError("the datasets are built in setup(); call setup('fit') first")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=shuffle,
        generator=None if seed is None else torch.Generator().manual_seed(seed),
        collate_fn=collate_fn,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def set_loader_args(
    module: LightningDataModule,
    batch_size: int,
    eval_batch_size: int | None,
    num_workers: int,
    seed: int,
    trust_remote_code: bool,
) -> None:
    """The loader arguments every datamodule takes, as attributes (``eval_batch_size`` defaults to
    ``batch_size``)."""
    module.batch_size = batch_size
    module.eval_batch_size = eval_batch_size or batch_size
    module.num_workers = num_workers
    module.seed = seed
    module.trust_remote_code = trust_remote_code


class TokenizedDataModule(LightningDataModule):
    """Base of the datamodules that tokenize (``PreferenceDataModule``, ``SFTDataModule``).

    The LightningModule decides how text is read: unless the datamodule sets them, its ``tokenizer_name``
    and ``encoding`` (an ``encoding_class``) are taken in ``setup``, then the datamodule's own encoding
    arguments (``None`` = unset) override single fields. A subclass's ``__init__`` sets ``tokenizer_name``
    and calls :meth:`_init_tokenization` and :func:`set_loader_args`; its class names ``encoding_class``.
    """

    encoding_class: ClassVar[type]
    needs_pad_token: ClassVar[bool] = False

    def _init_tokenization(
        self, max_length: int | None, max_prompt_length: int | None, chat_template: bool | None
    ) -> None:
        """The encoding arguments (``None``: the LightningModule's), and the state that ``setup`` fills."""
        self._encoding_overrides = {
            "max_length": max_length,
            "max_prompt_length": max_prompt_length,
            "chat_template": chat_template,
        }
        self.encoding: Any = None
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.train_dataset: list[Any] | None = None
        self.val_dataset: list[Any] | None = None

    def _lightning_module(self) -> Any:
        return self.trainer.lightning_module if self.trainer is not None else None

    def _take_model_settings(self) -> None:
        """Fill unset tokenization settings from the LightningModule."""
        module = self._lightning_module()
        if self.tokenizer_name is None:
            self.tokenizer_name = getattr(module, "tokenizer_name", DEFAULT_TOKENIZER)
        base = getattr(module, "encoding", None)
        base = base if isinstance(base, self.encoding_class) else self.encoding_class()
        overrides = {k: v for k, v in self._encoding_overrides.items() if v is not None}
        self.encoding = replace(base, **overrides)

    def _load_tokenizer(self) -> PreTrainedTokenizerBase:
        tokenizer = load_tokenizer(self.tokenizer_name, trust_remote_code=self.trust_remote_code)
        if self.needs_pad_token and tokenizer.pad_token_id is None:
            raise MoslimError(f"tokenizer {self.tokenizer_name!r} has no pad token")
        if self.encoding.chat_template and not getattr(tokenizer, "chat_template", None):
            raise MoslimError(
                f"chat_template=True but tokenizer {self.tokenizer_name!r} has no chat template"
            )
        return tokenizer
