"""The preference datamodule: sources end to end, prompt-disjoint split, truncation, loaders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from moslim_pl.data import DataError, DataSource, PreferenceDataModule, SyntheticConfig
from moslim_pl.data.common import split_by_prompt
from moslim_pl.data.sources import PreferenceRow, load_source, read_rows
from moslim_pl.data.types import ALL_HEADS, IGNORE_LABEL
from moslim_pl.schema import Dimension

TOKENIZER = "moslim/tiny-llama"
HELPSTEER = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "helpsteer_sample.jsonl"
DIMS = [Dimension("helpfulness", 0, 4), Dimension("verbose", 0, 3, column="verbosity")]
# Words of the synthetic vocabulary, so the tiny word tokenizer maps each to a distinct id.
WORDS = [
    "rivers",
    "delta",
    "estuary",
    "tributary",
    "volcanoes",
    "magma",
    "lava",
    "crater",
    "oceans",
    "tides",
    "salinity",
    "coral",
]


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return str(path)


def _pointwise_rows(num_prompts: int, per_prompt: int = 3) -> list[dict]:
    return [
        {
            "prompt": f"tell me about {WORDS[p % len(WORDS)]} {p} .",
            "response": " ".join(WORDS[: 1 + r]),
            "helpfulness": (p + r) % 5,
            "verbosity": r % 4,
        }
        for p in range(num_prompts)
        for r in range(per_prompt)
    ]


def _datamodule(tmp_path: Path, rows: list[dict], **kwargs) -> PreferenceDataModule:
    source = DataSource("json", data_files=_write_jsonl(tmp_path / "data.jsonl", rows))
    kwargs = {"tokenizer": TOKENIZER, "source": source, "dimensions": DIMS, **kwargs}
    dm = PreferenceDataModule(**kwargs)
    dm.setup("fit")
    return dm


def test_pointwise_jsonl_end_to_end(tmp_path: Path) -> None:
    rows = _pointwise_rows(10)
    rows[0]["verbosity"] = None  # a missing label: that head ignores the row
    del rows[1]["helpfulness"]
    dm = _datamodule(tmp_path, rows, batch_size=4)
    assert dm.dimensions == tuple(DIMS)
    examples = dm.train_dataset + dm.val_dataset
    assert len(examples) == 30
    assert all(len(ex["input_ids"]) == 1 and ex["pair_dim"] is None for ex in examples)
    labels = sorted(tuple(ex["labels"][0]) for ex in examples)
    assert (0, IGNORE_LABEL) in labels and (IGNORE_LABEL, 1) in labels

    batch = next(iter(dm.train_dataloader()))
    assert batch.input_ids.shape[0] == 4 and batch.labels.shape == (4, 2)
    assert batch.pairs.shape == (0, 2)
    lengths = batch.attention_mask.sum(1)
    assert lengths.max() == batch.input_ids.shape[1]  # padded to the longest in the batch, not max_length
    assert (batch.input_ids[batch.attention_mask == 0] == dm.pad_token_id).all()


def test_pairwise_jsonl_with_pair_dimension(tmp_path: Path) -> None:
    rows = [
        {
            "prompt": f"about {w} .",
            "chosen": f"{w} delta .",
            "rejected": "lava",
            "judge": ["verbose", None][i % 2],
        }
        for i, w in enumerate(WORDS)
    ]
    dm = _datamodule(tmp_path, rows, pair_dimension_column="judge", batch_size=3, val_fraction=0.25)
    assert len(dm.train_dataset) == 9 and len(dm.val_dataset) == 3
    assert {ex["pair_dim"] for ex in dm.train_dataset + dm.val_dataset} == {1, ALL_HEADS}
    batch = next(iter(dm.val_dataloader()))
    assert batch.input_ids.shape[0] == 6
    assert batch.pairs.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert (batch.labels == IGNORE_LABEL).all()


def test_val_source_replaces_the_split(tmp_path: Path) -> None:
    val = DataSource("json", data_files=_write_jsonl(tmp_path / "val.jsonl", _pointwise_rows(2, 2)))
    dm = _datamodule(tmp_path, _pointwise_rows(5), val_source=val)
    assert len(dm.train_dataset) == 15 and len(dm.val_dataset) == 4
    assert len(list(dm.test_dataloader())) == 1


def _rows(num_prompts: int) -> list[PreferenceRow]:
    return [
        PreferenceRow(f"p{p}", (f"r{r}",), ((0,),), None)
        for p in range(num_prompts)
        for r in range(p % 4 + 1)
    ]


def test_split_is_prompt_disjoint_sized_and_seeded() -> None:
    rows = _rows(50)
    train, val = split_by_prompt(rows, 0.2, seed=3)
    train_prompts, val_prompts = {r.prompt for r in train}, {r.prompt for r in val}
    assert not train_prompts & val_prompts
    assert len(train) + len(val) == len(rows)
    assert len(val_prompts) == 10
    assert split_by_prompt(rows, 0.2, seed=3) == (train, val)
    assert {r.prompt for r in split_by_prompt(rows, 0.2, seed=4)[1]} != val_prompts


def test_split_keeps_a_prompt_on_each_side() -> None:
    assert len({r.prompt for r in split_by_prompt(_rows(3), 0.01, 0)[1]}) == 1
    assert len({r.prompt for r in split_by_prompt(_rows(3), 0.99, 0)[0]}) == 1
    with pytest.raises(DataError, match="at least 2 distinct prompts"):
        split_by_prompt(_rows(1), 0.2, 0)


def test_datamodule_split_is_deterministic(tmp_path: Path) -> None:
    rows = _pointwise_rows(20)
    a = _datamodule(tmp_path, rows, seed=1)
    b = _datamodule(tmp_path, rows, seed=1)
    assert a.val_dataset == b.val_dataset and len(a.val_dataset) == 4 * 3
    order = [next(iter(dm.train_dataloader())).input_ids for dm in (a, b)]
    assert torch.equal(*order)  # the seeded shuffle repeats


def test_truncation_cuts_the_prompt_and_keeps_the_response(tmp_path: Path) -> None:
    response = "magma lava crater ."
    rows = [{"prompt": " ".join(WORDS * 5), "response": response, "helpfulness": 1, "verbosity": 0}] * 2
    rows.append({"prompt": "rivers", "response": "delta", "helpfulness": 2, "verbosity": 1})
    dm = _datamodule(tmp_path, rows, max_length=16, val_fraction=0.5)
    long_ids = next(ex for ex in dm.train_dataset + dm.val_dataset if len(ex["input_ids"][0]) > 5)[
        "input_ids"
    ][0]
    response_ids = dm.tokenizer(response, add_special_tokens=False)["input_ids"]
    assert len(long_ids) == 16
    assert long_ids[-1 - len(response_ids) : -1] == response_ids  # followed by the tokenizer's end token
    assert long_ids[0] == dm.tokenizer(WORDS[0], add_special_tokens=False)["input_ids"][0]


@pytest.mark.parametrize(
    ("change", "parts"),
    [
        ({"helpfulness": 7}, ["row 4, column 'helpfulness'", "label 7 outside 0..4"]),
        ({"verbosity": "three"}, ["row 4, column 'verbosity'", "not an integer"]),
        ({"response": " "}, ["row 4, column 'response'", "empty"]),
    ],
)
def test_bad_rows_fail_setup_with_one_line(tmp_path: Path, change: dict, parts: list[str]) -> None:
    rows = _pointwise_rows(3)
    rows[4].update(change)
    with pytest.raises(DataError) as err:
        _datamodule(tmp_path, rows)
    assert "\n" not in str(err.value) and "json:" in str(err.value) and "data.jsonl" in str(err.value)
    for part in parts:
        assert part in str(err.value)


def test_missing_column_and_unknown_pair_dimension_fail_setup(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.jsonl: missing column 'prompt'"):
        _datamodule(tmp_path, [{"question": "q", "response": "r", "helpfulness": 1}])
    rows = [
        {"prompt": "p", "chosen": "a", "rejected": "b", "d": "helpfulness"},
        {"prompt": "q", "chosen": "a", "rejected": "b", "d": "x"},
    ]
    with pytest.raises(DataError, match=r"data\.jsonl row 1, column 'd': unknown dimension 'x'"):
        _datamodule(tmp_path, rows, pair_dimension_column="d")


def test_user_errors_are_one_line() -> None:
    with pytest.raises(ValueError, match="needs `dimensions`"):
        PreferenceDataModule(source=DataSource("json", data_files="x.jsonl"))
    with pytest.raises(ValueError, match="val_fraction"):
        PreferenceDataModule(val_fraction=1.0)
    with pytest.raises(ValueError, match="batch_size"):
        PreferenceDataModule(batch_size=0)
    with pytest.raises(RuntimeError, match="setup"):
        PreferenceDataModule().train_dataloader()
    dm = PreferenceDataModule(
        synthetic=SyntheticConfig(num_prompts=3, responses_per_prompt=1), chat_template=True
    )
    with pytest.raises(ValueError, match="no chat template"):
        dm.setup("fit")


def test_synthetic_source_with_default_dimensions() -> None:
    from moslim_pl.data.synthetic import DIMENSIONS

    dm = PreferenceDataModule(synthetic=SyntheticConfig(num_prompts=20, responses_per_prompt=2), batch_size=8)
    assert dm.dimensions == tuple(DIMENSIONS)
    dm.setup("fit")
    assert len(dm.train_dataset) + len(dm.val_dataset) == 40
    batch = next(iter(dm.train_dataloader()))
    assert batch.labels.shape == (8, len(DIMENSIONS))
    assert (batch.labels >= 0).all()  # the oracle labels every dimension


@pytest.mark.skipif(not HELPSTEER.exists(), reason="HelpSteer sample absent (../shared/data)")
def test_helpsteer_sample() -> None:
    names = ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]
    dm = PreferenceDataModule(
        tokenizer=TOKENIZER,
        source=DataSource("json", data_files=str(HELPSTEER)),
        dimensions=[Dimension(name, 0, 4) for name in names],
        max_length=128,
    )
    dm.setup("fit")
    assert len(dm.train_dataset) + len(dm.val_dataset) == 500
    assert all(len(ex["labels"][0]) == 5 for ex in dm.train_dataset)
    rows = read_rows(load_source(dm.source), dm.dimensions)
    train, val = split_by_prompt(rows, dm.val_fraction, dm.seed)
    assert len({r.prompt for r in rows}) == 139
    assert len({r.prompt for r in val}) == 28  # round(0.2 * 139)
    assert (len(train), len(val)) == (len(dm.train_dataset), len(dm.val_dataset))
    batch = next(iter(dm.val_dataloader()))
    assert batch.input_ids.shape[1] <= 128
    assert batch.labels.max() <= 4


def test_a_head_without_any_training_label_is_an_error(tmp_path: Path) -> None:
    rows = [{"prompt": f"p{i}", "response": "r", "helpfulness": 1} for i in range(4)]
    with pytest.raises(DataError) as err:
        _datamodule(tmp_path, rows, val_fraction=0.5)
    message = str(err.value)
    assert "dimension 'verbose' has no label" in message and "column 'verbosity'" in message
    assert "\n" not in message
