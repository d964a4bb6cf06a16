"""RewardModelModule: metrics by hand on fixed logits, learning on the synthetic world."""

from __future__ import annotations

import json
import math

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from moslim_pl.data import PreferenceDataModule, SyntheticConfig
from moslim_pl.data.types import IGNORE_LABEL, RewardBatch
from moslim_pl.modules import RewardModelModule
from moslim_pl.schema import Dimension

DIMS = [Dimension("a", 0, 2), Dimension("b", 0, 1)]
NEG = -1e9
# sequence id (input_ids[:, 0]) -> logits [K=2, L=3]; head b has 2 levels (third padded)
LOGITS = {
    0: [[5.0, 0.0, 0.0], [0.0, 5.0, NEG]],  # predicts a=0, b=1
    1: [[0.0, 0.0, 5.0], [5.0, 0.0, NEG]],  # predicts a=2, b=0
    2: [[0.0, 5.0, 0.0], [0.0, 5.0, NEG]],  # predicts a=1, b=1
}


class FixedLogits(RewardModelModule):
    def forward(self, input_ids, attention_mask):
        return torch.tensor([LOGITS[int(i)] for i in input_ids[:, 0]])


def _batch(ids, labels, pairs=(), pair_dims=(), prompt_ids=None):
    n = len(ids)
    return RewardBatch(
        torch.tensor(ids).unsqueeze(1),
        torch.ones(n, 1, dtype=torch.long),
        torch.tensor(labels),
        torch.tensor(pairs, dtype=torch.long).reshape(-1, 2),
        torch.tensor(pair_dims, dtype=torch.long),
        prompt_ids=None if prompt_ids is None else torch.tensor(prompt_ids),
    )


def test_validation_metrics_by_hand():
    module = FixedLogits(dimensions=DIMS, tiny_config={"hidden_size": 16, "num_hidden_layers": 1})
    batches = [
        # head a: labels 0 (hit), 0 (pred 2: miss, off by 2), 2 (pred 1: miss, within one)
        # head b: labels 1 (hit), missing, 1 (hit)
        _batch([0, 1, 2], [[0, 1], [0, IGNORE_LABEL], [2, 1]], prompt_ids=[7, 7, 7]),
        # pairs: (row0 chosen, row1 rejected) judged on head a; (row1, row0) on all heads
        _batch([0, 1], [[IGNORE_LABEL, IGNORE_LABEL]] * 2, pairs=[[0, 1], [1, 0]], pair_dims=[0, -1]),
    ]
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.validate(module, dataloaders=DataLoader(batches, batch_size=None))
    assert metrics["val/acc/a"] == pytest.approx(1 / 3)
    assert metrics["val/acc/b"] == pytest.approx(1.0)
    assert metrics["val/acc_within1/a"] == pytest.approx(2 / 3)
    # expected levels are near-argmax (softmax of 5 vs 0): |0-0| + |2-0| + |1-2| ~ 3 -> mae ~ 1
    p_hi = math.exp(5) / (math.exp(5) + 2)
    e0 = 2 * (1 - p_hi) / 2 * 1.5  # row 0: 1*(1-p)/2 + 2*(1-p)/2
    e1 = 2 * p_hi + (1 - p_hi) / 2
    e2 = p_hi + (1 - p_hi)  # 0*(1-p)/2 + 1*p + 2*(1-p)/2
    assert metrics["val/mae/a"] == pytest.approx((abs(e0 - 0) + abs(e1 - 0) + abs(e2 - 2)) / 3, abs=1e-5)
    # pair 1: head a normalized E(row0) < E(row1) -> chosen row0 loses; pair 2: mean over heads
    # row1 = (e1/2 + E_b(row1)) / 2 vs row0 = (e0/2 + E_b(row0)) / 2, E_b(row1) ~ 0, E_b(row0) ~ 1
    eb0 = math.exp(5) / (math.exp(5) + 1)
    row1, row0 = (e1 / 2 + (1 - eb0)) / 2, (e0 / 2 + eb0) / 2
    assert metrics["val/pair_acc"] == pytest.approx((0.0 + float(row1 > row0)) / 2)
    # per head, on the head's own expected level: pair 1 judges a (e0 < e1: wrong); pair 2 judges a
    # (e1 > e0: right) and b (E_b(row1) < E_b(row0): wrong)
    assert metrics["val/pair_acc/a"] == pytest.approx(0.5)
    assert metrics["val/pair_acc/b"] == pytest.approx(0.0)
    # within prompt 7, head a: (row0 label 0, row2 label 2) e0 < e2 right; (row1 label 0, row2) e1 > e2
    # wrong; head b has no two different labels, so no rank_acc
    assert metrics["val/rank_acc/a"] == pytest.approx(0.5)
    assert "val/rank_acc/b" not in metrics


def test_short_fit_learns():
    torch.manual_seed(0)
    data = PreferenceDataModule(
        synthetic=SyntheticConfig(num_prompts=60, responses_per_prompt=4), batch_size=16
    )
    module = RewardModelModule(learning_rate=3e-3, max_length=128)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=6,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    (before,) = trainer.validate(module, datamodule=data, verbose=False)
    trainer.fit(module, datamodule=data)
    (after,) = trainer.validate(module, datamodule=data, verbose=False)
    assert after["val/loss"] < before["val/loss"] - 0.3
    for dim in data.dimensions:  # every head well above chance (1 / levels) after six short epochs
        assert after[f"val/acc/{dim.name}"] > 1 / dim.num_levels + 0.25, dim.name


def _synthetic_files(tmp_path, num_prompts: int = 60):
    """The synthetic world as a pointwise file without helpfulness, and helpfulness pairs derived from it."""
    from moslim_pl.data.pairs import within_prompt_pairs
    from moslim_pl.data.synthetic import generate_rows

    rows = generate_rows(num_prompts, 4, 0, 0.0)
    pairs = within_prompt_pairs(rows, ["helpfulness"])
    pointwise = [{k: v for k, v in row.items() if k != "helpfulness"} for row in rows]
    files = {}
    for name, content in (("pointwise", pointwise), ("pairs", pairs)):
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(row) + "\n" for row in content))
    return files


def _fit(data, epochs: int = 6):
    torch.manual_seed(0)
    module = RewardModelModule(learning_rate=3e-3, max_length=128)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    (before,) = trainer.validate(module, datamodule=data, verbose=False)
    trainer.fit(module, datamodule=data)
    (after,) = trainer.validate(module, datamodule=data, verbose=False)
    return before, after


def test_pairs_alone_train_the_judged_head(tmp_path):
    files = _synthetic_files(tmp_path)
    data = PreferenceDataModule(
        source={"path": "json", "data_files": str(files["pairs"])},
        dimensions=[Dimension("helpfulness", 0, 3)],
        pair_dimension_column="dimension",
        batch_size=16,
    )
    before, after = _fit(data)
    assert after["val/loss"] < before["val/loss"] - 0.1
    assert after["val/pair_acc/helpfulness"] > 0.8 > before["val/pair_acc/helpfulness"]


def test_pointwise_and_pairwise_sources_mix(tmp_path):
    files = _synthetic_files(tmp_path)
    dims = [Dimension("verbosity", 0, 3), Dimension("formality", 0, 2), Dimension("helpfulness", 0, 3)]
    data = PreferenceDataModule(
        sources=[
            {"path": "json", "data_files": str(files["pointwise"])},
            {"path": "json", "data_files": str(files["pairs"])},
        ],
        dimensions=dims,
        pair_dimension_column="dimension",
        batch_size=16,
    )
    _, after = _fit(data)
    # the labelled heads learn from cross-entropy, the pair-judged head from its pairs
    assert after["val/acc/verbosity"] > 0.5 and after["val/rank_acc/verbosity"] > 0.7
    assert after["val/pair_acc/helpfulness"] > 0.8
    assert "val/acc/helpfulness" not in after  # no helpfulness label anywhere
