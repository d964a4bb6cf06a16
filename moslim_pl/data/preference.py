"""The reward model's datamodule: preference rows in, tokenized reward batches (``RewardBatch``) out.

Rows come from a ``DataSource`` or a mix of them (see ``sources.py`` for the generic pointwise and pairwise
rows, ``schemas.py`` for the public datasets' schemas). Unless a separate validation source is given,
validation is a prompt-disjoint split of the training rows:
a prompt's responses all land on the same side, so validation accuracy measures generalization to
new prompts rather than recall of seen ones.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

from torch.utils.data import DataLoader

from moslim_pl.data.collate import RewardExample, collate_reward_batch
from moslim_pl.data.common import (
    TokenizedDataModule,
    check_loader_args,
    describe,
    prefetch_sources,
    seeded_loader,
    set_loader_args,
    take_sources,
    train_val_rows,
)
from moslim_pl.data.encoding import PairEncoding
from moslim_pl.data.rows import Columns, DataError, DataSource, PreferenceRow, SyntheticConfig
from moslim_pl.data.samplers import LengthGroupedSampler, ResumableSampler, SamplerStateMixin
from moslim_pl.data.schemas import convert_source
from moslim_pl.data.sources import load_source, read_rows, resolve_dimensions
from moslim_pl.data.types import ALL_HEADS, IGNORE_LABEL
from moslim_pl.errors import MoslimError
from moslim_pl.schema import Dimension, describe_dimensions
from moslim_pl.utils.hparams import as_dataclass, plain_hparams

log = logging.getLogger(__name__)


class PreferenceDataModule(SamplerStateMixin, TokenizedDataModule):
    """Pointwise and pairwise preference data for the multi-head reward model.

    Args:
        tokenizer: tokenizer name or path, given to ``moslim_pl.models.backbone.load_tokenizer``;
            ``None`` takes the LightningModule's (``tokenizer_name``), so the RM's own tokenizer is used.
        source: the training rows; defaults to the embedded synthetic world. A source is a
            ``{path, name, data_dir, data_files, split, revision, max_rows, schema, schema_options}``
            mapping (``load_dataset``'s arguments). Without ``schema`` the row kind is detected from the
            columns (pointwise, pairwise, TRL's standard and conversational formats); ``schema`` reads a
            public dataset's own columns: ``helpsteer``, ``helpsteer2``, ``ultrafeedback``,
            ``pku_saferlhf`` or ``hh_rlhf`` (``schema_options: {dimension: harmlessness}`` picks the head
            its pairs train). docs/user_guide.md, "Dataset schemas".
        sources: several training sources mixed into one reward model (instead of ``source``); their
            rows are concatenated before the prompt-disjoint split, and a row's labels for dimensions
            its source lacks are missing (ignored by those heads). Pointwise and pairwise sources mix.
        dimensions: the heads; defaults to the union of the sources' own dimensions (the synthetic
            world's, or those each dataset ``schema`` declares; see ``moslim_pl.data.schemas``).
        val_source: validation rows; without it validation is a prompt-disjoint split of ``source``.
        synthetic: size and noise of the synthetic world.
        prompt_column / response_column: text columns of pointwise rows.
        chosen_column / rejected_column: text columns of pairwise rows.
        pair_dimension_column: column naming the dimension a pair judges (else every head judges it).
        val_fraction: share of the prompts held out for validation when ``val_source`` is not given.
        max_length: longest sequence; the prompt is cut first. ``None``: the LightningModule's.
        chat_template: encode with the tokenizer's chat template (for chat backbones). ``None``: the
            LightningModule's.
        max_prompt_length: keep at most this many prompt tokens. ``None``: the LightningModule's.
            Without a LightningModule (or one without ``encoding``) the defaults are the tiny tokenizer
            and ``PairEncoding()``.
        batch_size: training rows per batch (a pairwise row counts once, yielding two sequences).
        eval_batch_size: validation rows per batch; defaults to ``batch_size``.
        num_workers: DataLoader workers.
        seed: seeds the validation split and the training shuffle.
        trust_remote_code: allow code from the hub for the tokenizer and the dataset.
        group_by_length: batch training rows of similar token counts (a pairwise row counts its longer
            sequence), so that dynamic padding pads less and steps are faster; see
            ``moslim_pl.data.samplers.LengthGroupedSampler`` (each epoch's shuffled rows cut into
            groups of 50 batches, fewer when the epoch has under 200 batches, each sorted by length;
            the batches then shuffled; seeded, resumable and sharded like the default order). Changes
            the batches' composition, hence the results; validation is unaffected. Off by default.
    """

    encoding_class = PairEncoding
    needs_pad_token = True

    def __init__(
        self,
        tokenizer: str | None = None,
        source: DataSource | None = None,
        sources: list[DataSource] | None = None,
        dimensions: list[Dimension] | None = None,
        val_source: DataSource | None = None,
        synthetic: SyntheticConfig | None = None,
        prompt_column: str = "prompt",
        response_column: str = "response",
        chosen_column: str = "chosen",
        rejected_column: str = "rejected",
        pair_dimension_column: str | None = None,
        val_fraction: float = 0.2,
        max_length: int | None = None,
        chat_template: bool | None = None,
        max_prompt_length: int | None = None,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        trust_remote_code: bool = False,
        group_by_length: bool = False,
    ) -> None:
        super().__init__()
        # the module logs the tokenization settings it owns; the same keys here would clash when unset
        self.save_hyperparameters(ignore=["max_length", "chat_template", "max_prompt_length", "dimensions"])
        check_loader_args(
            val_source,
            val_fraction,
            num_workers,
            max_length=max_length,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
        )
        self.tokenizer_name = tokenizer
        if sources is not None and (source is not None or not sources):
            raise MoslimError("give either `source` or a non-empty `sources` list, not both")
        take_sources(self, source, val_source, synthetic, reads_schemas=True)
        plain_hparams(self.hparams, ("sources",))
        if sources:
            self.sources: tuple[DataSource, ...] = tuple(as_dataclass(DataSource, src) for src in sources)
            self.source = self.sources[0]
        else:
            self.sources = (self.source,)
        self.dimensions: tuple[Dimension, ...] = resolve_dimensions(dimensions, *self.sources)
        self.columns = Columns(
            prompt_column, response_column, chosen_column, rejected_column, pair_dimension_column
        )
        self.val_fraction = val_fraction
        self._init_tokenization(max_length, max_prompt_length, chat_template)
        set_loader_args(self, batch_size, eval_batch_size, num_workers, seed, trust_remote_code)
        self.group_by_length = group_by_length
        self.sampler: ResumableSampler | None = None
        self._pending_state: dict[str, Any] | None = None

    @property
    def pad_token_id(self) -> int:
        if self.tokenizer is None:
            raise RuntimeError("the tokenizer is loaded in setup(); call setup('fit') first")
        return self.tokenizer.pad_token_id

    def prepare_data(self) -> None:
        prefetch_sources((*self.sources, self.val_source), self.trust_remote_code)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        self._take_model_settings()
        self.tokenizer = self._load_tokenizer()
        train_rows, val_rows = self.split_rows()
        self._check_every_head_has_labels(train_rows)
        self.train_dataset = self._encode(train_rows)
        self.val_dataset = self._encode(val_rows)
        # Straight runs visit the rows in the order a seeded shuffling DataLoader did; the sampler's
        # state travels in checkpoints, so a resumed run continues its epoch where it stopped.
        if self.group_by_length:
            lengths = [max(map(len, example["input_ids"])) for example in self.train_dataset]
            self.sampler = LengthGroupedSampler(lengths, self.batch_size, self.seed)
        else:
            self.sampler = ResumableSampler(len(self.train_dataset), self.seed, batch_size=self.batch_size)
        if self._pending_state is not None:
            self.sampler.load_state_dict(self._pending_state)
            self._pending_state = None
        for split, rows in (("train", train_rows), ("val", val_rows)):
            pairs = sum(len(row.responses) == 2 for row in rows)
            prompts = len({row.prompt for row in rows})
            log.info("%s: %d rows (%d pairwise), %d prompts", split, len(rows), pairs, prompts)

    def _check_every_head_has_labels(self, rows: Sequence[PreferenceRow]) -> None:
        """A head with neither a training label nor a training pair is a misnamed column or dimension,
        not something to train (it would stay at its random initialization)."""
        judged = {row.pair_dim for row in rows if row.pair_dim is not None}
        for k, dim in enumerate(self.dimensions):
            if k in judged or ALL_HEADS in judged:
                continue
            if not any(labels[k] != IGNORE_LABEL for row in rows for labels in row.labels):
                raise DataError(
                    f"{describe(self.sources)}: dimension {dim.name!r} has no label and no pair in the training "
                    f"rows (column {dim.source_column!r} missing or empty, and no pair judged on it)"
                )

    def _take_model_settings(self) -> None:
        """Fill unset tokenization settings from the LightningModule: the RM decides how it reads text."""
        self._check_model_dimensions(self._lightning_module())
        super()._take_model_settings()

    def _check_model_dimensions(self, module: Any) -> None:
        """The reward model's heads, when already built (``model.dimensions``, or a checkpoint's), must be
        the datamodule's dimensions: labels and logits would not line up."""
        rm = getattr(module, "rm", None)
        heads = getattr(rm, "dimensions", None)
        if heads is None:
            return

        def spec(dims: Sequence[Dimension]) -> list[tuple]:
            return [(d.name, d.low, d.high, d.num_levels, d.edges) for d in dims]

        if spec(heads) != spec(self.dimensions):
            raise MoslimError(
                f"the reward model's heads ({describe_dimensions(heads)}) do not match the data's dimensions "
                f"({describe_dimensions(self.dimensions)}): leave model.dimensions unset (a ckpt_path sets them "
                "to the checkpoint's)"
            )

    def split_rows(self) -> tuple[list[PreferenceRow], list[PreferenceRow]]:
        """The (train, val) rows of the sources, split by prompt unless a ``val_source`` is given."""
        return train_val_rows(self._read, self.sources, self.val_source, self.val_fraction, self.seed)

    def _read(self, source: DataSource) -> list[PreferenceRow]:
        dataset = load_source(source, self.synthetic, self.trust_remote_code)
        if source.schema is not None:
            return convert_source(dataset, source, self.dimensions)
        return read_rows(dataset, self.dimensions, self.columns, source.describe())

    def _encode(self, rows: Sequence[PreferenceRow]) -> list[RewardExample]:
        def encode(prompt: str, response: str) -> list[int]:
            return self.encoding.encode(self.tokenizer, prompt, response)

        prompt_ids: dict[str, int] = {}
        return [
            RewardExample(
                input_ids=[encode(row.prompt, response) for response in row.responses],
                labels=[list(labels) for labels in row.labels],
                pair_dim=row.pair_dim,
                margin=row.margin,
                prompt_index=prompt_ids.setdefault(row.prompt, len(prompt_ids)),
            )
            for row in rows
        ]

    def _loader(
        self, dataset: list[RewardExample] | None, batch_size: int, sampler: ResumableSampler | None = None
    ) -> DataLoader:
        collate = functools.partial(collate_reward_batch, pad_token_id=self.pad_token_id)
        seed = self.seed if sampler is not None else None
        return seeded_loader(dataset, batch_size, collate, self.num_workers, seed=seed, sampler=sampler)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, self.batch_size, self.sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, self.eval_batch_size)
