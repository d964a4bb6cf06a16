"""OnlineDPOModule: a policy learns against a hand-built reward model; ties, logging and export."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from moslim_pl.data.synthetic import CASUAL_MARKERS, DIMENSIONS, FORMAL_MARKERS, generate_prompts
from moslim_pl.errors import MoslimError
from moslim_pl.models.backbone import load_backbone, load_causal_lm, load_tokenizer
from moslim_pl.models.reward_model import MultiHeadRewardModel
from moslim_pl.modules import OnlineDPOModule

HIDDEN = 16
WEIGHT = 20.0


@pytest.fixture(scope="module")
def formality_rm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RM export whose formality head counts markers, weights set by hand (as in test_rloo.py).

    The backbone's output is the final RMSNorm of the token embeddings; mean pooling gives the share of
    formal and casual marker tokens of the pair, and the formality head's logit of level 2 (formal) is
    ``WEIGHT`` times the formal share, that of level 0 (casual) ``WEIGHT`` times the casual share.
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


def test_online_dpo_learns_to_follow_the_prefix(formality_rm: Path, tmp_path: Path) -> None:
    # <formality 0> asks for casual markers; the RM's default target (no prefix) is formal, so the
    # reward only rises if the RM gets the original prompts, prefix included.
    seed_everything(0)
    module = OnlineDPOModule(
        reward_model=str(formality_rm),
        max_new_tokens=16,
        max_prompt_length=32,
        beta=0.1,
        learning_rate=3e-3,
        log_samples_every_n_steps=10,
    )
    steps = 60
    trainer = _trainer(
        steps,
        logger=TensorBoardLogger(tmp_path, name="online_dpo"),
        log_every_n_steps=1,
        limit_val_batches=2,
        num_sanity_val_steps=0,
    )
    train = DataLoader(_prompts(0, 64, seed=0), batch_size=8, shuffle=True)
    val = DataLoader(_prompts(0, 8, seed=1), batch_size=4)
    start = time.perf_counter()
    trainer.fit(module, train, val)
    elapsed = time.perf_counter() - start

    scalars, texts = _tensorboard(tmp_path)
    reward = scalars["rollout/reward"]
    assert len(reward) == steps
    first, last = sum(reward[:5]) / 5, sum(reward[-5:]) / 5
    print(
        f"rollout/reward first 5 steps {first:.3f}, last 5 steps {last:.3f}, {steps} steps in {elapsed:.1f}s; "
        f"hit rate last {scalars['rollout/hit_rate/formality'][-1]:.2f}, kl last {scalars['rollout/kl'][-1]:.2f}"
    )
    assert last > first + 0.3
    assert scalars["rollout/hit_rate/formality"][-1] > 0.5
    for key in (
        "rollout/kl",
        "rollout/entropy",
        "rollout/response_length",
        "reward/formality",
        "train/loss",
        "train/dpo_accuracy",
        "train/tie_fraction",
        "val/reward",
        "val/hit_rate/formality",
    ):
        assert key in scalars, key
    assert "reward/verbosity" not in scalars  # not requested by any prompt
    assert all(0.0 <= t <= 1.0 for t in scalars["train/tie_fraction"])
    assert "rollout/samples/text_summary" in texts

    # The reference and the RM never moved; the export reloads as a plain causal LM.
    assert not torch.equal(module.policy.lm_head.weight, module.reference.lm_head.weight)
    assert all(not p.requires_grad for p in (*module.reference.parameters(), *module.rm.parameters()))
    initial = load_causal_lm("moslim/tiny-llama", tokenizer=module.tokenizer)
    assert initial.lm_head.weight.shape == module.policy.lm_head.weight.shape
    folder = module.export(tmp_path / "policy")
    reloaded = load_causal_lm(str(folder))
    torch.testing.assert_close(reloaded.lm_head.weight, module.policy.lm_head.weight)
    assert load_tokenizer(str(folder)).get_vocab() == module.tokenizer.get_vocab()


def test_all_ties_leave_the_policy_unchanged_and_checkpoint(formality_rm: Path, tmp_path: Path) -> None:
    # <verbosity 1> asks nothing of the formality head, and the hand-built verbosity head is uniform:
    # every response gets the same reward, so every pair ties and no gradient reaches the policy.
    seed_everything(2)
    module = OnlineDPOModule(
        reward_model=str(formality_rm), max_new_tokens=4, learning_rate=1e-2, log_samples_every_n_steps=None
    )
    before = [p.detach().clone() for p in module.policy.parameters()]
    trainer = _trainer(2, logger=TensorBoardLogger(tmp_path, name="online_dpo"), log_every_n_steps=1)
    prompts = [f"<verbosity 1> {p}" for p in generate_prompts(4, seed=0)]
    trainer.fit(module, DataLoader(prompts, batch_size=2))
    assert trainer.global_step == 2
    scalars, _ = _tensorboard(tmp_path)
    assert scalars["train/tie_fraction"] == [pytest.approx(1.0)] * 2
    assert "train/loss" not in scalars
    for old, new in zip(before, module.policy.parameters(), strict=True):
        assert torch.equal(old, new)

    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    restored = OnlineDPOModule.load_from_checkpoint(path)
    assert restored.hparams.beta == module.hparams.beta
    torch.testing.assert_close(restored.policy.lm_head.weight, module.policy.lm_head.weight)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": 0.0}, "temperature > 0"),
        ({"beta": 0.0}, "beta > 0"),
        ({"mapping": "nope"}, "unknown reward mapping"),
        ({"mapping": "linear"}, "mapping_weights"),
    ],
)
def test_bad_arguments(formality_rm: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(MoslimError, match=match):
        OnlineDPOModule(reward_model=str(formality_rm), **kwargs)


def test_reward_model_is_required() -> None:
    with pytest.raises(MoslimError, match="reward_model"):
        OnlineDPOModule()


def test_batches_must_be_prompt_strings(formality_rm: Path) -> None:
    module = OnlineDPOModule(reward_model=str(formality_rm), max_new_tokens=2)
    with pytest.raises(MoslimError, match="prompt strings"):
        module.validation_step({"input_ids": torch.zeros(2, 3)}, 0)
