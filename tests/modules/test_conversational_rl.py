"""A conversational prompt file (a system prompt, two user turns) drives an RLOO step, the controllability
sweep and ``moslim-pl predict``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

import moslim_pl.modules.policy as policy_module
from moslim_pl.cli import main
from moslim_pl.data import PromptDataModule
from moslim_pl.data.messages import parse_prompt_prefix
from moslim_pl.data.sources import DataSource
from moslim_pl.data.synthetic import DIMENSIONS
from moslim_pl.modules import RLOOModule
from moslim_pl.modules.settings import SamplingConfig

ROOT = Path(__file__).resolve().parents[2]
TINY = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}


def _conversation(question: str, prefix: str = "") -> list[dict]:
    return [
        {"role": "system", "content": "give few details ."},
        {"role": "user", "content": "tell me about rivers ."},
        {"role": "assistant", "content": "rivers have a delta ."},
        {"role": "user", "content": prefix + question},
    ]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_conversational_prompts_drive_an_rloo_step(
    formality_rm: Path, rl_trainer, read_logs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    questions = ["explain bees .", "describe deserts .", "explain castles .", "describe coffee ."]
    source = _write(tmp_path / "train.jsonl", [{"prompt": _conversation(q)} for q in questions])
    val = _write(tmp_path / "val.jsonl", [{"prompt": _conversation("explain clouds .")}])
    data = PromptDataModule(
        source=DataSource(str(source)),
        val_source=DataSource(str(val)),
        dimensions=list(DIMENSIONS),
        batch_size=2,
        no_prefix_prob=0.0,
    )
    scored = []
    score = policy_module.score_responses

    def spy(rm, prompts, responses, **kwargs):
        scored.extend(prompts)
        return score(rm, prompts, responses, **kwargs)

    monkeypatch.setattr(policy_module, "score_responses", spy)
    module = RLOOModule(
        reward_model=str(formality_rm),
        num_samples=2,
        tiny_config=TINY,
        sampling=SamplingConfig(max_new_tokens=4, max_prompt_length=64),
    )
    trainer = rl_trainer(
        1,
        logger=TensorBoardLogger(tmp_path, name="rloo"),
        log_every_n_steps=1,
        limit_val_batches=1,
        val_check_interval=1,
    )
    trainer.fit(module, datamodule=data)

    scalars, _ = read_logs(tmp_path)
    assert len(scalars["rollout/reward"]) == 1 and torch.isfinite(torch.tensor(scalars["train/loss"])).all()
    assert "val/reward" in scalars
    assert scored and all(isinstance(p, tuple) and len(p) == 4 for p in scored)  # the whole conversations
    for prompt in scored:
        targets, bare = parse_prompt_prefix(prompt, DIMENSIONS)
        assert targets, prompt  # every prompt got a prefix, at the start of its last user turn
        assert prompt[:3] == bare[:3] and bare[3][1] in [*questions, "explain clouds ."]
    # the controllability sweep (moslim-pl test) asks each level in the held-out conversation's last user turn
    scored.clear()
    rm_score = module.rm.score

    def spy_rm(prompts, responses, **kwargs):
        scored.extend(prompts)
        return rm_score(prompts, responses, **kwargs)

    monkeypatch.setattr(module.rm, "score", spy_rm)
    trainer.test(module, datamodule=data)
    assert list(tmp_path.rglob("controllability.json"))
    assert len(scored) == sum(d.max_level - d.min_level + 1 for d in DIMENSIONS)
    assert all(len(parse_prompt_prefix(p, DIMENSIONS)[0]) == 1 and p[:3] == scored[0][:3] for p in scored)


def test_predict_answers_a_conversational_file(
    formality_rm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        {"prompt": _conversation("explain bees .", "<formality 0> ")},
        {
            "messages": [
                *_conversation("explain bees .", "<formality 2> "),
                {"role": "assistant", "content": "x"},
            ]
        },
        {"prompt": "<formality 1> explain bees ."},
    ]
    file = _write(tmp_path / "prompts.jsonl", rows)
    monkeypatch.setattr(sys, "argv", ["moslim-pl"])
    main(
        [
            "predict",
            "--config",
            str(ROOT / "configs" / "policy" / "rloo_quickstart.yaml"),
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
            "--trainer.enable_progress_bar=false",
            "--model.init_args.policy=moslim/tiny-llama",
            f"--model.init_args.reward_model={formality_rm}",
            f"--model.init_args.tiny_config={json.dumps(TINY)}",
            f"--data.init_args.predict_file={file}",
        ]
    )
    (written,) = (tmp_path / "runs").rglob("predictions.jsonl")
    predictions = [json.loads(line) for line in written.read_text().splitlines()]
    assert [p["index"] for p in predictions] == [0, 1, 2]
    # the prompt field keeps the conversation as it was given (a messages row: up to its last user turn)
    assert predictions[0]["prompt"] == rows[0]["prompt"]
    assert predictions[1]["prompt"] == rows[1]["messages"][:-1]
    assert predictions[2]["prompt"] == rows[2]["prompt"]
    for p in predictions:
        assert isinstance(p["response"], str) and isinstance(p["reward"], float)
        assert set(p["levels"]) == {d.name for d in DIMENSIONS}
