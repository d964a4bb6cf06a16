"""The policy's datamodule: prompts in, prompts with a sampled ``<name level>`` prefix out (``list[Prompt]``).

A prompt is text, or a conversation (``moslim_pl.data.messages.Messages``: TRL's conversational
prompt-only rows, or ``messages`` rows up to their last user turn) whose prefix goes at the start of its
last user turn (docs/user_guide.md, "Prompt data, SFT data and predict files").

Every training prompt gets a prefix from :class:`PrefixSampler`: with probability ``no_prefix_prob`` none
(the reward model's default targets then apply), else a random non-empty subset of the dimensions, each
at a uniformly drawn level. A draw depends only on ``(seed, epoch, position)``, so a run is reproducible
and a checkpoint resumes the same sequence (the sampler's state travels in the datamodule's
``state_dict``). Validation prompts get fixed prefixes, the same in every epoch.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import datasets
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from moslim_pl.data.common import (
    check_loader_args,
    prefetch_sources,
    set_loader_args,
    split_by_prompt,
    take_sources,
)
from moslim_pl.data.messages import (
    MESSAGES_COLUMN,
    Prompt,
    add_prefix,
    is_conversation,
    messages_prompt,
    parse_prompt_prefix,
    prompt_cell,
    strip_prompt_prefix,
)
from moslim_pl.data.prompt_file import read_prompt_file
from moslim_pl.data.rows import DataError, DataSource, SyntheticConfig, check_text
from moslim_pl.data.samplers import ResumableSampler, SamplerStateMixin
from moslim_pl.data.sources import load_source, resolve_dimensions
from moslim_pl.data.synthetic import generate_prompts, oracle
from moslim_pl.errors import MoslimError
from moslim_pl.prefix import PrefixError
from moslim_pl.schema import Dimension, check_dimensions, describe_dimensions

log = logging.getLogger(__name__)


def read_texts(dataset: datasets.Dataset, column: str, description: str = "source") -> list[str]:
    """The non-empty strings of ``column``; a missing column or a bad cell is a one-line ``DataError``."""
    if column not in dataset.column_names:
        columns = ", ".join(sorted(dataset.column_names))
        raise DataError(f"{description}: missing column {column!r}; columns are {columns}")
    texts = dataset[column]
    for i, value in enumerate(texts):
        if value is None:
            problem = "missing"
        elif not isinstance(value, str):
            problem = f"not text ({type(value).__name__})"
        elif not value.strip():
            problem = "empty text"
        else:
            continue
        raise DataError(f"{description} row {i}, column {column!r}: {problem}")
    return list(texts)


def read_prompts(dataset: datasets.Dataset, column: str, description: str = "source") -> list[Prompt]:
    """The prompts of ``column`` (text, or conversations ending with a user turn) or, without that column,
    of TRL's ``messages`` column (each conversation up to its last user turn); a bad cell is a one-line
    ``DataError`` naming the row and the column."""
    if column not in dataset.column_names and MESSAGES_COLUMN in dataset.column_names:
        read, column = messages_prompt, MESSAGES_COLUMN
    elif column in dataset.column_names and not isinstance(dataset.features[column], datasets.Value):
        read = prompt_cell  # a column of lists: conversations
    else:
        return read_texts(dataset, column, description)
    prompts = []
    for i, value in enumerate(dataset[column]):
        where = f"{description} row {i}, column {column!r}"
        try:
            prompts.append(read(value, where) if is_conversation(value) else check_text(value, where))
        except MoslimError as err:
            raise DataError(str(err)) from None
    return prompts


class _Prompt(NamedTuple):
    prompt: Prompt  # what split_by_prompt reads


class PrefixSampler(ResumableSampler):
    """Shuffles the training prompts each epoch and draws a prefix for every (epoch, position).

    Yields ``(prompt_index, targets)`` with ``targets`` a ``{name: level}`` dict in schema order (empty:
    no prefix). Epochs, resuming and the sharding across ranks are :class:`ResumableSampler`'s; the
    order is its own (``random.Random``, seeded by ``(seed, epoch)``).

    Args:
        num_prompts: the training prompts' count.
        dimensions: the schema the prefixes name.
        seed: seeds the order and the prefixes.
        no_prefix_prob: probability of no prefix.
        min_dimensions, max_dimensions: range of the number of named dimensions (``None``: all).
        size_weights: relative weights of the sizes ``min_dimensions..max_dimensions`` (default: uniform).
        shuffle: shuffle the prompts each epoch (else dataset order).
    """

    seed_name = "prefix"

    def __init__(
        self,
        num_prompts: int,
        dimensions: Sequence[Dimension],
        seed: int = 0,
        no_prefix_prob: float = 0.1,
        min_dimensions: int = 1,
        max_dimensions: int | None = None,
        size_weights: Sequence[float] | None = None,
        shuffle: bool = True,
    ) -> None:
        self.dimensions = check_dimensions(dimensions)
        max_dimensions = len(self.dimensions) if max_dimensions is None else max_dimensions
        if not 1 <= min_dimensions <= max_dimensions <= len(self.dimensions):
            raise MoslimError(
                f"need 1 <= min_dimensions <= max_dimensions <= {len(self.dimensions)} (the number of "
                f"dimensions), got {min_dimensions} and {max_dimensions}"
            )
        if not 0.0 <= no_prefix_prob <= 1.0:
            raise MoslimError(f"no_prefix_prob must be in [0, 1], got {no_prefix_prob}")
        self.sizes = list(range(min_dimensions, max_dimensions + 1))
        if size_weights is not None and (
            len(size_weights) != len(self.sizes) or min(size_weights) < 0 or sum(size_weights) <= 0
        ):
            raise MoslimError(
                f"size_weights needs {len(self.sizes)} non-negative weights (sizes {self.sizes}) with a "
                f"positive sum, got {list(size_weights)}"
            )
        self.size_weights = list(size_weights) if size_weights is not None else None
        self.no_prefix_prob = no_prefix_prob
        super().__init__(num_prompts, seed, shuffle)

    @property
    def num_prompts(self) -> int:
        return self.num_items

    # ------------------------------------------------------------------ draws
    def targets(self, key: str) -> dict[str, int]:
        """The prefix drawn for ``key``: a pure function of ``(seed, key)``."""
        rng = random.Random(f"moslim-prefix:{self.seed}:{key}")
        if rng.random() < self.no_prefix_prob:
            return {}
        size = rng.choices(self.sizes, weights=self.size_weights)[0]
        chosen = sorted(rng.sample(range(len(self.dimensions)), size))
        return {d.name: rng.randint(d.min_level, d.max_level) for d in (self.dimensions[k] for k in chosen)}

    def order(self, epoch: int) -> list[int]:
        """The prompt indices of ``epoch`` in visiting order."""
        indices = list(range(self.num_prompts))
        if self.shuffle:
            random.Random(f"moslim-prompt-order:{self.seed}:{epoch}").shuffle(indices)
        return indices

    def item(self, epoch: int, position: int, index: int) -> tuple[int, dict[str, int]]:
        return index, self.targets(f"{epoch}:{position}")


class _PrefixedPrompts(Dataset):
    """Indexed by the sampler's ``(prompt_index, targets)``; returns the prompt with its prefix."""

    def __init__(self, prompts: Sequence[Prompt]) -> None:
        self.prompts = list(prompts)

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, item: tuple[int, dict[str, int]]) -> Prompt:
        index, targets = item
        return add_prefix(targets, self.prompts[index])


def _collate(prompts: list[Prompt]) -> list[Prompt]:
    return list(prompts)


class PromptDataModule(SamplerStateMixin, LightningDataModule):
    """Prompts for the policy, each batch a ``list[Prompt]`` of prompts with their prefix already written
    (a conversation's at the start of its last user turn).

    Args:
        source: the prompts (a ``prompt_column`` of any ``DataSource``, text or conversations, or TRL's
            ``messages`` column when there is no ``prompt_column``); defaults to the synthetic world's
            prompts (``synthetic.num_prompts`` of them, seeded by ``synthetic.seed``). Repeated prompts
            (one per response in preference data) are kept once.
        val_source: validation prompts; without it validation is a prompt-disjoint split of ``source``.
        dimensions: the schema the prefixes name; defaults to the synthetic world's for a synthetic
            source. It must match the reward model's.
        synthetic: size and seed of the synthetic world.
        prompt_column: the prompt column of a non-synthetic source.
        val_fraction: share of the prompts held out for validation when ``val_source`` is not given.
        no_prefix_prob: probability that a prompt gets no prefix (then the RM's default targets apply).
        min_dimensions, max_dimensions: how many dimensions a prefix names (``None``: up to all).
        size_weights: relative weights of the sizes ``min_dimensions..max_dimensions`` (default: uniform).
        batch_size: training prompts per batch.
        eval_batch_size: validation prompts per batch; defaults to ``batch_size``.
        num_workers: DataLoader workers.
        seed: seeds the split, the training order and every prefix.
        trust_remote_code: allow code from the hub for the dataset.
        num_test_prompts: held-out prompts that ``moslim-pl test`` (the controllability sweep) answers
            under every single-dimension prefix; ``None``: all of them.
        predict_file: the prompts ``moslim-pl predict`` answers: a ``.txt`` file (one prompt per line) or
            a ``.jsonl`` file of objects with ``prompt_column`` (text or a conversation) or ``messages``;
            each prompt may start with a prefix (a conversation's last user turn).
    """

    def __init__(
        self,
        source: DataSource | None = None,
        val_source: DataSource | None = None,
        dimensions: list[Dimension] | None = None,
        synthetic: SyntheticConfig | None = None,
        prompt_column: str = "prompt",
        val_fraction: float = 0.2,
        no_prefix_prob: float = 0.1,
        min_dimensions: int = 1,
        max_dimensions: int | None = None,
        size_weights: list[float] | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        trust_remote_code: bool = False,
        num_test_prompts: int | None = 16,
        predict_file: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["dimensions"])
        if num_test_prompts is not None and num_test_prompts < 1:
            raise MoslimError(f"num_test_prompts must be >= 1 or None, got {num_test_prompts}")
        check_loader_args(
            val_source, val_fraction, num_workers, batch_size=batch_size, eval_batch_size=eval_batch_size
        )
        take_sources(self, source, val_source, synthetic)
        self.dimensions = resolve_dimensions(dimensions, self.source)
        self.prompt_column = prompt_column
        self.val_fraction = val_fraction
        self._prefix_args = {
            "no_prefix_prob": no_prefix_prob,
            "min_dimensions": min_dimensions,
            "max_dimensions": max_dimensions,
            "size_weights": size_weights,
        }
        # Checked now, so that a bad prefix distribution fails before any data is read.
        PrefixSampler(0, self.dimensions, seed, **self._prefix_args)
        set_loader_args(self, batch_size, eval_batch_size, num_workers, seed, trust_remote_code)
        self.num_test_prompts = num_test_prompts
        self.predict_file = predict_file
        self.predict_prompts: list[Prompt] | None = None
        self.train_prompts: list[Prompt] | None = None
        self.val_prompts: list[Prompt] | None = None
        self.sampler: PrefixSampler | None = None
        self._pending_state: dict[str, Any] | None = None

    # ------------------------------------------------------------------ reading
    def prepare_data(self) -> None:
        # predict reads predict_file only: the training prompts need not be reachable (nor downloaded)
        if self.trainer is not None and self.trainer.predicting:
            return
        prefetch_sources((self.source, self.val_source), self.trust_remote_code)

    def _read(self, source: DataSource) -> list[Prompt]:
        description = source.describe()
        name = self.prompt_column
        if source.is_synthetic:
            if source.max_rows is not None and source.max_rows < 1:
                raise DataError(f"{description}: max_rows must be at least 1, got {source.max_rows}")
            num = self.synthetic.num_prompts
            prompts = generate_prompts(min(num, source.max_rows or num), self.synthetic.seed)
            if not prompts:
                raise DataError(f"{description}: the source has no rows")
        else:
            dataset = load_source(source, self.synthetic, self.trust_remote_code)
            prompts = read_prompts(dataset, self.prompt_column, description)
            if self.prompt_column not in dataset.column_names:
                name = MESSAGES_COLUMN
        for i, prompt in enumerate(prompts):
            column = repr(name) if isinstance(prompt, str) else f"{name!r}, last user turn"
            try:
                targets, _ = parse_prompt_prefix(prompt, self.dimensions)
            except PrefixError as err:
                raise DataError(f"{description} row {i}, column {column}: {err}") from None
            if targets:
                raise DataError(
                    f"{description} row {i}, column {column}: the prompt already starts with "
                    "a prefix; give prompts without one (the datamodule samples them)"
                )
        unique = list(dict.fromkeys(prompts))
        if len(unique) < len(prompts):
            log.info("%s: %d repeated prompt(s) kept once", description, len(prompts) - len(unique))
        return unique

    @property
    def oracle(self) -> Callable[[str, str], dict[str, int]] | None:
        """The synthetic world's exact oracle for a synthetic source, else ``None`` (the sweep uses it)."""
        if not self.source.is_synthetic:
            return None
        return oracle

    def _read_predict_file(self) -> list[Prompt]:
        if self.predict_file is None:
            raise MoslimError("moslim-pl predict needs data.predict_file: a .txt or .jsonl file of prompts")
        return read_prompt_file(self.predict_file, self.prompt_column, self.dimensions)

    def sweep_prompts(self) -> list[Prompt]:
        """The first ``num_test_prompts`` held-out prompts, without prefix (never seen in training)."""
        self.setup("test")
        prompts = [strip_prompt_prefix(p, self.dimensions) for p in self.val_prompts]
        return prompts[: self.num_test_prompts]

    def _check_reward_model(self) -> None:
        """Every dimension a prefix may name must be a head of the policy's reward model, with its levels."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        heads = getattr(getattr(module, "rm", None), "dimensions", None)
        if heads is None:
            return
        by_name = {d.name: d for d in heads}
        for dim in self.dimensions:
            head = by_name.get(dim.name)
            if head is None or (head.min_level, head.max_level) != (dim.min_level, dim.max_level):
                found = "no such head" if head is None else f"levels {head.min_level}..{head.max_level}"
                raise MoslimError(
                    f"data dimension {dim.name!r} (levels {dim.min_level}..{dim.max_level}) does not match "
                    f"the reward model ({found}; its heads: {describe_dimensions(heads)})"
                )

    def setup(self, stage: str | None = None) -> None:
        self._check_reward_model()
        if stage == "predict":
            self.predict_prompts = self._read_predict_file()
            return
        if self.train_prompts is not None:
            return
        prompts = self._read(self.source)
        if self.val_source is None:
            train, val = split_by_prompt(
                [_Prompt(p) for p in prompts], self.val_fraction, self.seed, self.source.describe()
            )
            self.train_prompts, self.val_prompts = [r.prompt for r in train], [r.prompt for r in val]
        else:
            self.train_prompts, self.val_prompts = prompts, self._read(self.val_source)
            shared = set(self.train_prompts) & set(self.val_prompts)
            if shared:
                log.warning("%d prompt(s) appear in both the train and the val source", len(shared))
        self.sampler = PrefixSampler(len(self.train_prompts), self.dimensions, self.seed, **self._prefix_args)
        if self._pending_state is not None:
            self.sampler.load_state_dict(self._pending_state)
            self._pending_state = None
        # Fixed per validation prompt: every epoch evaluates the same requests.
        self.val_prompts = [
            add_prefix(self.sampler.targets(f"val:{i}"), prompt) for i, prompt in enumerate(self.val_prompts)
        ]
        log.info("prompts: %d train, %d val", len(self.train_prompts), len(self.val_prompts))

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        if self.train_prompts is None or self.sampler is None:
            raise RuntimeError("the prompts are read in setup(); call setup('fit') first")
        return DataLoader(
            _PrefixedPrompts(self.train_prompts),
            batch_size=self.batch_size,
            sampler=self.sampler,
            collate_fn=_collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        if self.val_prompts is None:
            raise RuntimeError("the prompts are read in setup(); call setup('fit') first")
        return DataLoader(self.val_prompts, batch_size=self.eval_batch_size, collate_fn=_collate)

    def test_dataloader(self) -> DataLoader:
        """Held-out prompts WITHOUT prefix: the policy modules sweep every dimension and level over them."""
        return DataLoader(self.sweep_prompts(), batch_size=self.eval_batch_size, collate_fn=_collate)

    def predict_dataloader(self) -> DataLoader:
        """Rows ``{"index", "prompt"}`` of ``predict_file``, in file order."""
        if self.predict_prompts is None:
            self.setup("predict")
        rows = [{"index": i, "prompt": p} for i, p in enumerate(self.predict_prompts)]
        return DataLoader(rows, batch_size=self.eval_batch_size, collate_fn=list)
