"""moslim_pl.integrations.trl: a MOSLIM reward model as a TRL reward function, in TRL's RLOOTrainer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from moslim_pl.errors import MoslimError
from moslim_pl.integrations.trl import completion_text, prompt_text, reward_function
from moslim_pl.models.backbone import load_causal_lm, load_tokenizer
from moslim_pl.models.reward_model import MultiHeadRewardModel

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def test_standard_and_conversational_rewards_equal_score(formality_rm: Path) -> None:
    rm = MultiHeadRewardModel.from_pretrained(formality_rm)
    func = reward_function(formality_rm, batch_size=2)
    prompts = ["<formality 0> explain bees .", "<formality 2> explain bees .", "explain bees ."]
    completions = ["yeah , bees", "moreover , bees", "bees"]
    expected = rm.score(prompts, completions).reward
    assert func(prompts=prompts, completions=completions) == expected.tolist()
    conversational = func(
        prompts=[
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": p}] for p in prompts
        ],
        completions=[[{"role": "assistant", "content": c}] for c in completions],
        completion_ids=[[1], [2], [3]],  # TRL's extra keyword arguments are accepted and ignored
    )
    assert conversational == expected.tolist()
    assert func.__name__ == "moslim_reward"
    linear = reward_function(rm, mapping="linear", weights=[0.0, 1.0, 0.0])
    assert (
        linear(prompts, completions)
        == rm.score(prompts, completions, mapping="linear", weights=[0, 1, 0]).reward.tolist()
    )


def test_message_parts_and_refusals(formality_rm: Path) -> None:
    assert prompt_text([{"role": "user", "content": [{"type": "text", "text": "<formality 1> hi"}]}]) == (
        "<formality 1> hi"
    )
    assert (
        completion_text([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}])
        == "a\nb"
    )
    with pytest.raises(MoslimError, match="needs a user message"):
        prompt_text([{"role": "system", "content": "x"}])
    with pytest.raises(MoslimError, match="unknown reward mapping"):
        reward_function(formality_rm, mapping="nope")
    with pytest.raises(MoslimError, match="linear mapping needs weights"):
        reward_function(formality_rm, mapping="linear")
    with pytest.raises(MoslimError, match="not a reward model export|no such folder"):
        reward_function(formality_rm.parent / "missing")
    with pytest.raises(MoslimError, match="must match"):
        reward_function(formality_rm)(["a"], [])


def test_rloo_trainer_two_steps_logs_the_moslim_reward(formality_rm: Path, tmp_path: Path) -> None:
    """TRL's own RLOOTrainer, two steps on a tiny policy; every reward it logged is ``score().reward``."""
    trl = pytest.importorskip("trl")
    from datasets import Dataset

    tokenizer = load_tokenizer("moslim/tiny-llama")
    torch.manual_seed(0)
    policy = load_causal_lm("moslim/tiny-llama", tokenizer=tokenizer, tiny_config=TINY)
    policy_dir = tmp_path / "policy"
    policy.save_pretrained(policy_dir)
    tokenizer.save_pretrained(policy_dir)

    func = reward_function(formality_rm, batch_size=4)
    calls: list[tuple[list[str], list[str], list[float]]] = []

    def moslim_reward(prompts: list[str], completions: list[str], **kwargs) -> list[float]:
        rewards = func(prompts, completions, **kwargs)
        calls.append((list(prompts), list(completions), rewards))
        return rewards

    logged: list[dict[str, float]] = []

    class Logs(trl.trainer.rloo_trainer.TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs) -> None:
            logged.append(dict(logs or {}))

    # markers in the prompts (the RM pools over prompt and response): rewards differ from row to row
    prompts = [
        "<formality 0> moreover explain bees .",
        "<formality 2> moreover tell me about rivers .",
        "<formality 0> yeah explain bees .",
        "<formality 1> tell me about rivers .",
    ]
    config = trl.RLOOConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=6,
        max_steps=2,
        logging_steps=1,
        learning_rate=1e-3,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = trl.RLOOTrainer(
        model=str(policy_dir),
        reward_funcs=[moslim_reward],
        args=config,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer,
        callbacks=[Logs()],
    )
    trainer.train()

    assert trainer.state.global_step == 2 and len(calls) == 2
    rm = MultiHeadRewardModel.from_pretrained(formality_rm)
    step_logs = [entry for entry in logged if "rewards/moslim_reward/mean" in entry]
    assert len(step_logs) == 2
    worst, rewards_seen = 0.0, set()
    for (call_prompts, completions, rewards), entry in zip(calls, step_logs, strict=True):
        expected = rm.score(call_prompts, completions).reward
        worst = max(worst, float((torch.tensor(rewards) - expected).abs().max()))
        rewards_seen.update(rewards)
        # the mean TRL logged for the step is the mean of the same rewards
        assert entry["rewards/moslim_reward/mean"] == pytest.approx(float(expected.mean()), abs=1e-6)
        assert "moslim/formality" in entry  # per-head terms through TRL's log_metric
    print(f"TRL RLOOTrainer rewards vs MultiHeadRewardModel.score: max abs diff {worst:.3g}")
    assert worst < 1e-6
    assert len(rewards_seen) >= 3  # not a constant reward
