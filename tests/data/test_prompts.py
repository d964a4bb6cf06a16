"""PromptDataModule and PrefixSampler: seeded, resumable prefix sampling over prompt-disjoint splits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from moslim_pl.data.prompts import PrefixSampler, PromptDataModule
from moslim_pl.data.sources import DataError, DataSource, SyntheticConfig
from moslim_pl.data.synthetic import DIMENSIONS
from moslim_pl.errors import MoslimError
from moslim_pl.prefix import format_prefix, parse_prefix
from moslim_pl.schema import Dimension


def _dm(**kwargs) -> PromptDataModule:
    kwargs = {"synthetic": SyntheticConfig(num_prompts=100), "batch_size": 8, **kwargs}
    dm = PromptDataModule(**kwargs)
    dm.setup("fit")
    return dm


def _epochs(dm: PromptDataModule, num_epochs: int) -> list[list[str]]:
    loader = dm.train_dataloader()
    return [[p for batch in loader for p in batch] for _ in range(num_epochs)]


def test_batches_are_prefixed_prompt_lists() -> None:
    dm = _dm(no_prefix_prob=0.0)
    assert len(dm.train_prompts) == 80 and len(dm.val_prompts) == 20
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, list) and len(batch) == 8 and all(isinstance(p, str) for p in batch)
    for prompt in batch:
        targets, text = parse_prefix(prompt, DIMENSIONS)
        assert targets and text in dm.train_prompts


def test_deterministic_by_seed_and_new_each_epoch() -> None:
    first = _epochs(_dm(seed=3), 2)
    assert first == _epochs(_dm(seed=3), 2)
    assert first[0] != first[1]  # another order and other prefixes in the next epoch
    assert first[0] != _epochs(_dm(seed=4), 1)[0]


def test_prefixes_parse_and_stay_in_range() -> None:
    dims = [Dimension("a", 0, 4), Dimension("b", 1, 3), Dimension("c", 0, 1), Dimension("d", 2, 5, bins=2)]
    sampler = PrefixSampler(1, dims, seed=0, no_prefix_prob=0.0, max_dimensions=2)
    sizes = Counter()
    for i in range(2000):
        drawn = sampler.targets(str(i))
        targets, text = parse_prefix(format_prefix(drawn, "hi"), dims)
        assert targets == drawn and text == "hi"
        sizes[len(targets)] += 1
        assert list(targets) == [d.name for d in dims if d.name in targets]  # schema order
        for dim in dims:
            if dim.name in targets:
                assert dim.min_level <= targets[dim.name] <= dim.max_level
    assert set(sizes) == {1, 2} and abs(sizes[1] - sizes[2]) < 200  # sizes uniform by default
    levels = Counter(sampler.targets(str(i)).get("a") for i in range(2000))
    assert set(levels) - {None} == {0, 1, 2, 3, 4}


def test_no_prefix_fraction_and_size_weights() -> None:
    sampler = PrefixSampler(1, DIMENSIONS, seed=1, no_prefix_prob=0.3, size_weights=[0, 0, 1])
    draws = [sampler.targets(str(i)) for i in range(4000)]
    assert sum(not t for t in draws) / len(draws) == pytest.approx(0.3, abs=0.03)
    assert {len(t) for t in draws if t} == {3}
    dm = _dm(no_prefix_prob=0.25, synthetic=SyntheticConfig(num_prompts=320))
    prompts = [p for epoch in _epochs(dm, 3) for p in epoch]
    bare = sum(not parse_prefix(p, DIMENSIONS)[0] for p in prompts)
    assert bare / len(prompts) == pytest.approx(0.25, abs=0.05)


def test_state_dict_round_trip_resumes_the_sequence() -> None:
    dm = _dm(seed=7)
    expected = _epochs(_dm(seed=7), 2)
    iterator = iter(dm.train_dataloader())
    seen = [p for _ in range(3) for p in next(iterator)]
    state = dm.state_dict()
    assert state == {"seed": 7, "epoch": 0, "position": 24}

    resumed = PromptDataModule(synthetic=SyntheticConfig(num_prompts=100), batch_size=8, seed=7)
    resumed.load_state_dict(state)  # Lightning restores after setup; before it works too
    resumed.setup("fit")
    rest = _epochs(resumed, 2)
    assert seen + rest[0] == expected[0]
    assert rest[1] == expected[1]

    # a state saved at the end of an epoch resumes at the next one; Lightning's set_epoch agrees
    resumed = _dm(seed=7)
    resumed.load_state_dict({"seed": 7, "epoch": 0, "position": 80})
    resumed.sampler.set_epoch(1)
    assert _epochs(resumed, 1)[0] == expected[1]


def test_validation_prefixes_are_fixed() -> None:
    dm = _dm()
    assert list(dm.val_dataloader())[0] == dm.val_prompts[:8]
    assert dm.val_prompts == _dm().val_prompts
    assert all(parse_prefix(p, DIMENSIONS)[1] not in dm.train_prompts for p in dm.val_prompts)


def _jsonl(tmp_path: Path, rows: list[dict]) -> DataSource:
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return DataSource(str(path))


DIMS = [Dimension("x", 0, 2), Dimension("y", 0, 1)]


def test_file_source_is_deduplicated_and_split_by_prompt(tmp_path: Path) -> None:
    rows = [{"question": f"question {i // 3}"} for i in range(30)]  # 10 prompts, 3 rows each
    dm = _dm(source=_jsonl(tmp_path, rows), dimensions=DIMS, prompt_column="question", val_fraction=0.3)
    assert len(dm.train_prompts) == 7 and len(dm.val_prompts) == 3
    val_texts = {parse_prefix(p, DIMS)[1] for p in dm.val_prompts}
    assert not val_texts & set(dm.train_prompts)


@pytest.mark.parametrize(
    ("rows", "column", "message"),
    [
        (
            [{"text": "a"}, {"text": "b"}],
            "prompt",
            r"prompts.jsonl: missing column 'prompt'; columns are text",
        ),
        ([{"prompt": "a"}, {"prompt": "  "}], "prompt", r"prompts.jsonl row 1, column 'prompt': empty text"),
        ([{"prompt": "a"}, {"prompt": None}], "prompt", r"row 1, column 'prompt': missing"),
        ([{"prompt": "a"}, {"prompt": "<x 1> b"}], "prompt", r"row 1, column 'prompt': the prompt already"),
        ([{"prompt": "<x 9> a"}], "prompt", r"row 0, column 'prompt': bad prefix tag '<x 9>'"),
    ],
)
def test_bad_rows_are_one_line_data_errors(tmp_path: Path, rows, column, message) -> None:
    with pytest.raises(DataError, match=message) as info:
        _dm(source=_jsonl(tmp_path, rows), dimensions=DIMS, prompt_column=column)
    assert "\n" not in str(info.value)


def test_bad_configuration() -> None:
    with pytest.raises(MoslimError, match="min_dimensions <= max_dimensions"):
        PromptDataModule(max_dimensions=4)
    with pytest.raises(MoslimError, match="size_weights needs 2"):
        PromptDataModule(max_dimensions=2, size_weights=[1.0])
    with pytest.raises(MoslimError, match="needs `dimensions`"):
        PromptDataModule(source=DataSource("json", data_files="x.jsonl"))


class _Recorder(LightningModule):
    """Records the prompts of every training batch; one parameter so that the optimizer has work."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[list[str]] = []

    def training_step(self, batch: list[str], batch_idx: int) -> torch.Tensor:
        self.seen.append(batch)
        return self.weight**2

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path: Path, ckpt_path: str | None = None, **trainer_kwargs) -> _Recorder:
    module = _Recorder()
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        **trainer_kwargs,
    )
    trainer.fit(module, datamodule=_dm(seed=5), ckpt_path=ckpt_path)
    return module


def test_trainer_resumes_mid_epoch_with_the_same_prompts(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=13, save_top_k=-1)
    full = _fit(tmp_path, enable_checkpointing=True, callbacks=[checkpoint]).seen
    assert len(full) == 20  # 80 training prompts, batches of 8, two epochs
    (path,) = tmp_path.glob("*step=13.ckpt")
    resumed = _fit(tmp_path, ckpt_path=str(path), enable_checkpointing=False).seen
    assert resumed == full[13:]
