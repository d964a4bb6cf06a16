"""RewardStatsCallback: EMA updates by hand, exact re-estimation with the final weights."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Trainer

from moslim_pl.callbacks import ExportCallback, RewardStatsCallback
from moslim_pl.data import PreferenceDataModule, SyntheticConfig
from moslim_pl.models.reward_model import MultiHeadRewardModel
from moslim_pl.modules import RewardModelModule


def _module() -> RewardModelModule:
    module = RewardModelModule(
        tiny_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
    )
    return module


def _data() -> PreferenceDataModule:
    return PreferenceDataModule(
        synthetic=SyntheticConfig(num_prompts=20, responses_per_prompt=2), batch_size=8
    )


class _IdentityStrategy:
    def reduce(self, tensor, reduce_op="sum"):
        return tensor


def test_ema_by_hand():
    data = _data()
    module = _module()
    module._build(data.dimensions)
    rm = module.rm
    trainer = SimpleNamespace(strategy=_IdentityStrategy())
    callback = RewardStatsCallback(momentum=0.5)
    k, levels = rm.stats_mean.shape
    first = torch.rand(4, k, levels)
    second = torch.rand(2, k, levels)
    callback.on_train_batch_end(trainer, module, {"loss": None, "probs": first}, None, 0)
    # the first batch initializes the statistics to its own moments
    assert torch.allclose(rm.stats_mean, first.mean(0), atol=1e-6)
    assert torch.allclose(rm.stats_std, first.std(0, unbiased=False), atol=1e-6)
    callback.on_train_batch_end(trainer, module, {"loss": None, "probs": second}, None, 1)
    m1, v1 = first.mean(0), first.var(0, unbiased=False)
    m2, v2 = second.mean(0), second.var(0, unbiased=False)
    mean = 0.5 * m1 + 0.5 * m2
    var = 0.5 * v1 + 0.5 * v2 + 0.25 * (m2 - m1) ** 2
    assert torch.allclose(rm.stats_mean, mean, atol=1e-6)
    assert torch.allclose(rm.stats_std, var.sqrt(), atol=1e-6)
    assert rm.stats_count.item() == 6


def test_non_finite_batch_never_enters_the_statistics():
    module = _module()
    module._build(_data().dimensions)
    rm = module.rm
    trainer = SimpleNamespace(strategy=_IdentityStrategy(), global_step=7)
    callback = RewardStatsCallback(momentum=0.5)
    k, levels = rm.stats_mean.shape
    callback.on_train_batch_end(trainer, module, {"loss": None, "probs": torch.rand(4, k, levels)}, None, 0)
    before = (rm.stats_mean.clone(), rm.stats_std.clone(), rm.stats_count.clone())
    for bad in (float("nan"), float("inf")):
        probs = torch.rand(3, k, levels)
        probs[1, 0, 0] = bad
        callback.on_train_batch_end(trainer, module, {"loss": None, "probs": probs}, None, 1)
        for kept, now in zip(before, (rm.stats_mean, rm.stats_std, rm.stats_count), strict=True):
            assert torch.equal(kept, now)


def test_export_carries_the_reestimated_statistics_whatever_the_order(tmp_path):
    data = _data()
    module = _module()
    export = tmp_path / "export"
    trainer = Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        # the export first: it still must carry the re-estimated statistics, not the moving average
        callbacks=[ExportCallback(dirpath=str(export)), RewardStatsCallback(momentum=0.1)],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=data)
    exported = MultiHeadRewardModel.from_pretrained(export)
    # 3 steps of 8 rows fed the moving average 24 rows; the re-estimation reads the whole training set
    assert module.rm.stats_count.item() == len(data.train_dataset) != 24
    assert exported.stats_count.item() == len(data.train_dataset)
    assert torch.equal(exported.stats_mean, module.rm.stats_mean)
    assert torch.equal(exported.stats_std, module.rm.stats_std)


def test_needs_probs_from_training_step():
    module = _module()
    module._build(_data().dimensions)
    with pytest.raises(RuntimeError, match="probs"):
        RewardStatsCallback().on_train_batch_end(SimpleNamespace(), module, {"loss": 1.0}, None, 0)


@pytest.mark.parametrize("momentum", [0.0, 1.5])
def test_bad_momentum(momentum):
    with pytest.raises(ValueError, match="momentum"):
        RewardStatsCallback(momentum=momentum)


def test_reestimate_matches_exact_moments_with_final_weights(tmp_path):
    data = _data()
    module = _module()
    trainer = Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[RewardStatsCallback(momentum=0.1)],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=data)
    module.eval()
    with torch.no_grad():
        probs = torch.cat(
            [module.rm.probabilities(b.input_ids, b.attention_mask) for b in data.train_dataloader()]
        ).double()
    assert module.rm.stats_count.item() == len(data.train_dataset)
    assert torch.allclose(module.rm.stats_mean.double(), probs.mean(0), atol=1e-5)
    assert torch.allclose(module.rm.stats_std.double(), probs.std(0, unbiased=False), atol=1e-5)
