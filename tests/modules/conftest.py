"""Fixtures of the RL module tests: a hand-built reward model, prompts, a trainer, TensorBoard reading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from moslim_pl.data.synthetic import CASUAL_MARKERS, DIMENSIONS, FORMAL_MARKERS, generate_prompts
from moslim_pl.models.backbone import load_backbone, load_tokenizer
from moslim_pl.models.reward_model import MultiHeadRewardModel

HIDDEN = 16
WEIGHT = 20.0


@pytest.fixture(scope="session")
def formality_rm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RM export whose formality head counts markers: no training, weights set by hand.

    The layers' output projections are zero, so the backbone's output is the final RMSNorm of the token
    embeddings: ``sqrt(H) * e0`` for a formal marker, ``sqrt(H) * e1`` for a casual one, ``sqrt(H) * e2``
    for any other token. Mean pooling turns that into the share of formal and casual tokens of the pair,
    and the formality head's logit of level 2 (formal) is ``WEIGHT`` times the formal share, that of
    level 0 (casual) ``WEIGHT`` times the casual share. The other heads are uniform.
    """
    tokenizer = load_tokenizer("moslim/tiny-llama")
    config = {
        "hidden_size": HIDDEN,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
    }
    backbone = load_backbone("moslim/tiny-llama", tokenizer=tokenizer, tiny_config=config)
    rm = MultiHeadRewardModel(backbone, DIMENSIONS, pooling="mean", tokenizer=tokenizer)
    with torch.no_grad():
        for layer in backbone.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings = backbone.get_input_embeddings().weight
        embeddings.zero_()
        embeddings[:, 2] = 1.0
        for axis, markers in ((0, FORMAL_MARKERS), (1, CASUAL_MARKERS)):
            for ids in tokenizer.convert_tokens_to_ids(list(markers)):
                embeddings[ids] = 0.0
                embeddings[ids, axis] = 1.0
        for head in rm.heads.values():
            head.weight.zero_()
            head.bias.zero_()
        rm.heads["formality"].weight[2, 0] = WEIGHT / HIDDEN**0.5
        rm.heads["formality"].weight[0, 1] = WEIGHT / HIDDEN**0.5
    folder = tmp_path_factory.mktemp("rm") / "export"
    rm.save_pretrained(folder)
    return folder


def _prompts(level: int, count: int, seed: int) -> list[str]:
    return [f"<formality {level}> {p}" for p in generate_prompts(count, seed=seed)]


def _tensorboard(log_dir: Path) -> tuple[dict[str, list[float]], list[str]]:
    scalars: dict[str, list[float]] = {}
    texts: list[str] = []
    for file in sorted(log_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(file), size_guidance={"scalars": 0, "tensors": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(e.value for e in accumulator.Scalars(tag))
        texts.extend(accumulator.Tags()["tensors"])
    return scalars, texts


def _trainer(max_steps: int, **kwargs) -> Trainer:
    return Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


@pytest.fixture
def formality_prompts():
    """``(level, count, seed) -> prompts`` carrying ``<formality level>``."""
    return _prompts


@pytest.fixture
def read_logs():
    """``log_dir -> (scalars, text tags)`` from TensorBoard event files."""
    return _tensorboard


@pytest.fixture
def rl_trainer():
    """``(max_steps, **kwargs) -> Trainer`` on the CPU without checkpoints or progress bars."""
    return _trainer
