"""The policy modules' test loop (controllability sweep), the sweep callback and predict (JSONL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lightning.pytorch import seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from moslim_pl.callbacks import ControllabilityCallback, PredictionWriter
from moslim_pl.data import PromptDataModule
from moslim_pl.data.sources import DataError
from moslim_pl.data.synthetic import DIMENSIONS
from moslim_pl.errors import MoslimError
from moslim_pl.evaluation.tensorboard import read_scalar_steps
from moslim_pl.modules import RLOOModule
from moslim_pl.modules.settings import SamplingConfig

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def _module(rm: Path) -> RLOOModule:
    seed_everything(0)
    return RLOOModule(
        reward_model=str(rm),
        tiny_config=TINY,
        num_samples=2,
        sampling=SamplingConfig(max_new_tokens=6, max_prompt_length=32),
    )


def _images(log_dir: Path) -> list[str]:
    tags = []
    for file in log_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(file), size_guidance={"images": 0})
        accumulator.Reload()
        tags += accumulator.Tags()["images"]
    return tags


def test_test_loop_sweeps_every_dimension_and_level(formality_rm, rl_trainer, tmp_path: Path) -> None:
    module = _module(formality_rm)
    data = PromptDataModule(num_test_prompts=3, eval_batch_size=2)
    trainer = rl_trainer(1, logger=TensorBoardLogger(tmp_path, name="sweep"))
    (metrics,) = trainer.test(module, datamodule=data)

    table = json.loads((Path(trainer.log_dir) / "controllability.json").read_text())
    assert list(table) == [d.name for d in DIMENSIONS]
    for dim in DIMENSIONS:
        levels = table[dim.name]["levels"]
        assert list(levels) == [str(level) for level in range(dim.min_level, dim.max_level + 1)]
        # 3 prompts per level, answered in two test batches (2 + 1) and concatenated
        assert all(v["n"] == 3 for v in levels.values())
        assert levels["0"]["oracle"] is not None  # the synthetic source has an oracle
        assert metrics[f"test/spearman_rm/{dim.name}"] == pytest.approx(table[dim.name]["spearman_rm"])
        assert f"test/spearman_oracle/{dim.name}" in metrics
    assert (Path(trainer.log_dir) / "controllability.png").read_bytes()[:4] == b"\x89PNG"
    assert "test/controllability" in _images(tmp_path)


def test_sweep_callback_logs_every_n_steps(formality_rm, rl_trainer, tmp_path: Path) -> None:
    module = _module(formality_rm)
    data = PromptDataModule(num_test_prompts=4, batch_size=2)
    callback = ControllabilityCallback(every_n_train_steps=2, num_prompts=2)
    trainer = rl_trainer(
        4,
        logger=TensorBoardLogger(tmp_path, name="cb"),
        callbacks=[callback],
        limit_val_batches=0,
        log_every_n_steps=1,
    )
    trainer.fit(module, datamodule=data)
    # each sweep is written once, at its step (Lightning's self.log re-wrote it at steps 3 and 4 too)
    steps = read_scalar_steps(tmp_path)
    assert steps["sweep/spearman_rm/verbosity"] == [2, 4]
    assert steps["sweep/spearman_oracle/formality"] == [2, 4]
    assert "sweep/spearman_rm/verbosity" in trainer.callback_metrics  # what the model card reads
    written = sorted(p.name for p in Path(trainer.log_dir).glob("controllability_step*.json"))
    assert written == ["controllability_step2.json", "controllability_step4.json"]
    table = json.loads((Path(trainer.log_dir) / "controllability_step4.json").read_text())
    assert table["verbosity"]["levels"]["3"]["n"] == 2
    assert "sweep/controllability" in _images(tmp_path)
    assert callback.state_dict() == {"last_sweep": 4}
    with pytest.raises(MoslimError, match="every_n_train_steps"):
        ControllabilityCallback(every_n_train_steps=0)


def test_predict_writes_jsonl_in_input_order(formality_rm, rl_trainer, tmp_path: Path) -> None:
    prompts = ["<formality 0> explain bees .", "tell me about rivers .", "<verbosity 3> <formality 2> hi ."]
    file = tmp_path / "prompts.txt"
    file.write_text("\n".join(prompts[:2]) + "\n\n" + prompts[2] + "\n")  # a blank line is skipped
    out = tmp_path / "out" / "predictions.jsonl"
    trainer = rl_trainer(1, logger=False, callbacks=[PredictionWriter(str(out))])
    trainer.predict(
        _module(formality_rm),
        datamodule=PromptDataModule(predict_file=str(file), eval_batch_size=2),
        return_predictions=False,
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["prompt"] for row in rows] == prompts and [row["index"] for row in rows] == [0, 1, 2]
    for row in rows:
        assert isinstance(row["response"], str) and set(row["levels"]) == {d.name for d in DIMENSIONS}
        assert -10 < row["reward"] < 10

    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text(json.dumps({"prompt": prompts[0]}) + "\n")
    data = PromptDataModule(predict_file=str(jsonl))
    data.setup("predict")
    assert data.predict_prompts == prompts[:1]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.txt", "<verbosity 9> hi .\n", r"line 1: .*verbosity"),
        ("bad.jsonl", '{"text": "hi"}\n', r"line 1, column 'prompt': missing or empty prompt"),
        ("bad.jsonl", "{not json\n", r"line 1: not JSON"),
        ("empty.txt", "\n\n", r"no prompts"),
    ],
)
def test_predict_file_errors_name_the_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    file = tmp_path / name
    file.write_text(text)
    with pytest.raises(DataError, match=message):
        PromptDataModule(predict_file=str(file)).setup("predict")
    with pytest.raises(DataError, match="no such file"):
        PromptDataModule(predict_file=str(tmp_path / "missing.txt")).setup("predict")
    with pytest.raises(MoslimError, match="predict_file"):
        PromptDataModule().setup("predict")


def test_predict_on_a_plain_prompt_loader_keeps_every_row(formality_rm, rl_trainer, tmp_path: Path) -> None:
    from torch.utils.data import DataLoader

    prompts = ["<formality 0> explain bees .", "tell me about rivers .", "hi ."]
    out = tmp_path / "predictions.jsonl"
    trainer = rl_trainer(1, logger=False, callbacks=[PredictionWriter(str(out))])
    loader = DataLoader(prompts, batch_size=2, collate_fn=list)
    trainer.predict(_module(formality_rm), loader, return_predictions=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["prompt"] for row in rows] == prompts and all(row["index"] is None for row in rows)


def test_predict_from_a_training_config_writes_predictions_without_training_data(
    formality_rm, tmp_path: Path
) -> None:
    """ppo_quickstart.yaml lists no PredictionWriter and its training source is unreachable here: predict
    still answers the predict file and writes predictions.jsonl (it used to exit 0 without writing)."""
    from moslim_pl.cli import main

    config = Path(__file__).resolve().parents[2] / "configs" / "policy" / "ppo_quickstart.yaml"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("<formality 0> explain bees .\ntell me about rivers .\n")
    dimensions = json.dumps([d.to_dict() for d in DIMENSIONS])
    main(
        [
            "predict",
            "--config",
            str(config),
            "--model.policy",
            "moslim/tiny-llama",
            "--model.tiny_config",
            json.dumps(TINY),
            "--model.reward_model",
            str(formality_rm),
            "--model.sampling.max_new_tokens",
            "4",
            "--data.source",
            json.dumps({"path": "json", "data_files": str(tmp_path / "nowhere" / "train.jsonl")}),
            "--data.dimensions",
            dimensions,
            "--data.predict_file",
            str(prompts),
            "--trainer.logger.init_args.save_dir",
            str(tmp_path / "runs"),
        ]
    )
    (written,) = (tmp_path / "runs").rglob("predictions.jsonl")
    rows = [json.loads(line) for line in written.read_text().splitlines()]
    assert [row["index"] for row in rows] == [0, 1]
    assert rows[0]["prompt"] == "<formality 0> explain bees ." and isinstance(rows[0]["response"], str)


def test_policy_modules_use_the_chat_template_by_default(formality_rm, tmp_path: Path) -> None:
    from moslim_pl.models.backbone import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer("moslim/tiny-llama")
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} [SEP] {% endfor %}"
    load_causal_lm("moslim/tiny-llama", tokenizer=tokenizer, tiny_config=TINY).save_pretrained(
        tmp_path / "chat"
    )
    tokenizer.save_pretrained(tmp_path / "chat")
    chat = RLOOModule(
        policy=str(tmp_path / "chat"),
        reward_model=str(formality_rm),
        sampling=SamplingConfig(max_prompt_length=32),
    )
    assert chat.sampling.chat_template is True and chat.hparams.sampling["chat_template"] is True
    tiny = _module(formality_rm)
    assert tiny.sampling.chat_template is False  # the tiny tokenizer has no template
    assert tiny.hparams.sampling["chat_template"] is False
