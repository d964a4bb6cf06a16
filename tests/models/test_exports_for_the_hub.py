"""Exports ready for the hub: a model card in every export, RM exports refused as sequence classifiers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification

from moslim_pl.models.backbone import load_backbone, load_tokenizer
from moslim_pl.models.io import refuse_sequence_classification
from moslim_pl.models.reward_model import RM_ARCHITECTURE, MultiHeadRewardModel
from moslim_pl.schema import Dimension

TINY = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
DIMS = [Dimension("verbosity", 0, 3), Dimension("formality", 0, 2, default=2)]


def _rm(backbone: str = "moslim/tiny-llama") -> MultiHeadRewardModel:
    torch.manual_seed(0)
    tokenizer = load_tokenizer(backbone)
    model = load_backbone(backbone, tokenizer=tokenizer, tiny_config=TINY)
    return MultiHeadRewardModel(model, DIMS, tokenizer=tokenizer)


@pytest.mark.parametrize("backbone", ["moslim/tiny-llama", "moslim/tiny-bert"])
def test_rm_export_refuses_sequence_classification(backbone: str, tmp_path: Path) -> None:
    rm = _rm(backbone)
    rm.save_pretrained(
        tmp_path / "rm", training={"stage": "RewardModelModule", "metrics": {"val/acc/verbosity": 0.5}}
    )
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert config["architectures"] == [RM_ARCHITECTURE] and "MultiHeadRewardModel" in config["moslim_note"]
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm", num_labels=1)  # TRL's way
    # the backbone alone still loads, with the same weights
    backbone_only = AutoModel.from_pretrained(tmp_path / "rm")
    for name, value in rm.backbone.state_dict().items():
        assert torch.equal(backbone_only.state_dict()[name], value), name
    reloaded = MultiHeadRewardModel.from_pretrained(tmp_path / "rm")
    prompts, responses = ["<verbosity 3> rivers ."] * 2, ["rivers flow .", "yeah"]
    assert torch.equal(reloaded.score(prompts, responses).reward, rm.score(prompts, responses).reward)


def test_rm_model_card(tmp_path: Path) -> None:
    rm = _rm()
    rm.save_pretrained(
        tmp_path / "rm",
        training={
            "stage": "RewardModelModule",
            "steps": 12,
            "epochs": 1,
            "data": {"class": "PreferenceDataModule", "source": {"path": "synthetic"}},
            "metrics": {"val/acc/verbosity": 0.75},
        },
    )
    card = (tmp_path / "rm" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n")
    for text in (
        "| `verbosity` | 0..3 |",
        "| `formality` | 0..2 | 2 |",
        "## Running statistics",
        "| `formality` | 2 | 0.3333 | 1.0000 |",
        "PreferenceDataModule",
        "| `val/acc/verbosity` | 0.75 |",
        "MultiHeadRewardModel.from_pretrained",
        "reward_function(",
        "not a sequence-classification model",
    ):
        assert text in card, text


def test_refusal_of_a_sharded_backbone(tmp_path: Path) -> None:
    tokenizer = load_tokenizer("moslim/tiny-llama")
    model = load_backbone("moslim/tiny-llama", tokenizer=tokenizer, tiny_config=TINY)
    model.save_pretrained(tmp_path / "b", max_shard_size="20KB")
    assert (tmp_path / "b" / "model.safetensors.index.json").is_file()
    assert refuse_sequence_classification(tmp_path / "b", RM_ARCHITECTURE, "note") == ["score.weight"]
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "b")
    AutoModel.from_pretrained(tmp_path / "b")
