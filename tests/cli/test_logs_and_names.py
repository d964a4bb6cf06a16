"""Logs people read and names people can find (issue 15, items 4 and 5): a CSV-logger run writes every
scalar (throughput included) and one note about figures; ``--help`` lists schemas, mappings and
aggregations; short class names resolve; a command line that drops the exact-resume, NaN-guard or export
callbacks of a config is warned about."""

from __future__ import annotations

import csv
import json
import logging
import sys
from pathlib import Path

import pytest
import yaml
from jsonargparse import Namespace
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from moslim_pl.cli import main, warn_lost_callbacks
from moslim_pl.data.schemas import SCHEMAS
from moslim_pl.data.synthetic import DIMENSIONS
from moslim_pl.models.backbone import load_backbone, load_tokenizer
from moslim_pl.models.reward_model import MultiHeadRewardModel
from moslim_pl.rewards.mapping import AGGREGATIONS, MAPPINGS

ROOT = Path(__file__).resolve().parents[2]
RLOO_CONFIG = str(ROOT / "configs" / "policy" / "rloo_quickstart.yaml")
RM_CONFIG = str(ROOT / "configs" / "reward_model" / "quickstart.yaml")
TINY = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
THROUGHPUT = ("train/tokens_per_s", "train/samples_per_s")


def _csv_columns(folder: Path) -> tuple[set[str], dict[str, list[float]]]:
    (path,) = folder.rglob("metrics.csv")
    with path.open() as file:
        rows = list(csv.DictReader(file))
    values = {key: [float(row[key]) for row in rows if row[key]] for key in rows[0]}
    return set(rows[0]), values


def _tb_scalars(folder: Path) -> set[str]:
    tags: set[str] = set()
    for file in folder.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(file), size_guidance={"scalars": 0})
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


def _messages(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == logger]


def test_rloo_csv_run_writes_every_scalar_and_one_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "argv", ["moslim-pl"])
    tokenizer = load_tokenizer("moslim/tiny-llama")
    backbone = load_backbone("moslim/tiny-llama", tokenizer=tokenizer, tiny_config=TINY)
    MultiHeadRewardModel(backbone, DIMENSIONS, tokenizer=tokenizer).save_pretrained(tmp_path / "rm")
    loggers = [
        {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            "init_args": {"save_dir": str(tmp_path / "tb")},
        },
        {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(tmp_path / "csv")},
        },
    ]
    with caplog.at_level(logging.INFO):
        main(
            [
                "fit",
                "--config",
                RLOO_CONFIG,
                "--model.init_args.policy=moslim/tiny-llama",
                f"--model.init_args.reward_model={tmp_path / 'rm'}",
                f"--model.init_args.tiny_config={json.dumps(TINY)}",
                "--model.init_args.sampling.max_new_tokens=4",
                "--model.init_args.log_samples_every_n_steps=1",
                "--data.init_args.batch_size=4",
                "--trainer.max_steps=3",
                "--trainer.log_every_n_steps=1",
                "--trainer.limit_val_batches=0",
                "--trainer.enable_progress_bar=false",
                "--trainer.callbacks=[]",  # drops the config's RNGStateCallback, NonFiniteGuard, ExportCallback
                f"--trainer.logger={json.dumps(loggers)}",
            ]
        )
    columns, values = _csv_columns(tmp_path / "csv")
    scalars = _tb_scalars(tmp_path / "tb") - {"hp_metric"}  # TensorBoard's own placeholder, not logged
    assert scalars <= columns, scalars - columns
    for tag in (*THROUGHPUT, "train/lr", "train/grad_norm", "rollout/reward", "train/loss"):
        assert tag in scalars and values[tag], tag
    assert all(v > 0 for tag in THROUGHPUT for v in values[tag])
    notes = _messages(caplog, "moslim_pl.callbacks.media")
    assert len(notes) == 1 and "CSVLogger takes scalars only" in notes[0]  # 3 sample tables, one note
    (lost,) = _messages(caplog, "moslim_pl.cli")
    for name in ("RNGStateCallback", "NonFiniteGuard", "ExportCallback"):
        assert name in lost


def test_reward_model_csv_run_logs_throughput_and_notes_the_confusion_matrices_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "argv", ["moslim-pl"])
    with caplog.at_level(logging.INFO):
        main(
            [
                "fit",
                "--config",
                RM_CONFIG,
                f"--model.init_args.tiny_config={json.dumps(TINY)}",
                "--data.init_args.synthetic.num_prompts=10",
                "--data.init_args.synthetic.responses_per_prompt=2",
                "--trainer.max_epochs=2",  # one training batch, then validation (confusion matrices)
                "--trainer.limit_train_batches=1",
                "--trainer.limit_val_batches=1",
                "--trainer.log_every_n_steps=1",
                "--trainer.num_sanity_val_steps=0",
                "--trainer.enable_progress_bar=false",
                f'--trainer.logger={{"class_path": "CSVLogger", "init_args": {{"save_dir": "{tmp_path}"}}}}',
            ]
        )
    columns, values = _csv_columns(tmp_path)
    for tag in (*THROUGHPUT, "train/lr", "train/grad_norm", "train/loss"):
        assert values.get(tag), tag
    assert all(v > 0 for tag in THROUGHPUT for v in values[tag])
    assert any(column.startswith("val/acc/") for column in columns)
    notes = _messages(caplog, "moslim_pl.callbacks.media")
    assert len(notes) == 1 and "val/confusion/" in notes[0]
    assert not _messages(caplog, "moslim_pl.cli")  # the config's callbacks are all there


def test_help_lists_schemas_mappings_aggregations_and_short_names(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", RLOO_CONFIG, "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert SCHEMAS and {"helpsteer", "ultrafeedback", "hh_rlhf"} <= set(SCHEMAS)
    for name in (*SCHEMAS, *MAPPINGS, *AGGREGATIONS):
        assert name in out, name
    assert f"Reward mappings (--model.reward.mapping): {', '.join(MAPPINGS)}." in out
    assert (
        f"Aggregations (--model.reward.aggregation): {', '.join(AGGREGATIONS)} (softmin:<temperature>)."
        in out
    )
    for name in ("RLOOModule", "PPOModule", "PromptDataModule", "ExportCallback", "RNGStateCallback"):
        assert name in out, name


def test_short_class_names_resolve(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                "--config",
                RLOO_CONFIG,
                "--model=RLOOModule",
                "--data=PromptDataModule",
                "--trainer.callbacks+=RewardStatsCallback",
                "--trainer.callbacks+=LearningRateMonitor",
                "--print_config",
            ]
        )
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["class_path"] == "moslim_pl.modules.RLOOModule"
    assert config["data"]["class_path"] == "moslim_pl.data.PromptDataModule"
    callbacks = [c["class_path"] for c in config["trainer"]["callbacks"]]
    assert callbacks[0] == "moslim_pl.callbacks.RNGStateCallback"  # += appends: the config's list stays
    assert callbacks[-2:] == [
        "moslim_pl.callbacks.RewardStatsCallback",
        "lightning.pytorch.callbacks.LearningRateMonitor",
    ]
    assert config["model"]["init_args"]["reward"]["mapping"] == "gaussian"  # the config's options stay too


@pytest.mark.parametrize("form", ["spaced", "inline"])
def test_a_settings_field_is_set_to_null_from_the_command_line(
    capsys: pytest.CaptureFixture, form: str
) -> None:
    # jsonargparse rejects `--model.reward.empty_penalty null` under a class_path model; main rewrites it
    # into the group's JSON form, which keeps the config's other fields of the group.
    if form == "spaced":
        nulls = ["--model.reward.empty_penalty", "null", "--model.sampling.chat_template", "None"]
    else:
        nulls = ["--model.reward.empty_penalty=null", "--model.sampling.chat_template=None"]
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                "--config",
                RLOO_CONFIG,
                "--model.sampling.chat_template",
                "false",
                *nulls,
                "--print_config",
            ]
        )
    config = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    assert config["reward"]["empty_penalty"] is None and config["sampling"]["chat_template"] is None
    assert config["reward"]["mapping"] == "gaussian" and config["sampling"]["max_new_tokens"] == 64


def test_null_field_args_leaves_other_arguments_alone() -> None:
    from moslim_pl.modules.settings import null_field_args

    args = ["fit", "--model.reward.z_clip", "2", "--model.lora.r", "null", "--data.reward.x", "null"]
    assert null_field_args(args) == args  # a value, a group that is no settings group, not under --model
    assert null_field_args(["--model.kl.target=null", "--model.kl.coef", "0.1"]) == [
        "--model.kl",
        '{"target": null}',
        "--model.kl.coef",
        "0.1",
    ]


@pytest.mark.parametrize(
    ("kept", "lost"),
    [
        (["moslim_pl.callbacks.ComputeCallback"], ["RNGStateCallback", "NonFiniteGuard", "ExportCallback"]),
        (["moslim_pl.callbacks.RNGStateCallback", "moslim_pl.callbacks.ExportCallback"], ["NonFiniteGuard"]),
        (
            ["moslim_pl.callbacks.RNGStateCallback", "NonFiniteGuard", "moslim_pl.callbacks.ExportCallback"],
            [],
        ),
    ],
)
def test_lost_callbacks_are_warned_about(
    caplog: pytest.LogCaptureFixture, kept: list[str], lost: list[str]
) -> None:
    config = Namespace(trainer=Namespace(callbacks=[Namespace(class_path=c) for c in kept]))
    with caplog.at_level(logging.WARNING, logger="moslim_pl.cli"):
        assert warn_lost_callbacks(["fit", "--config", RLOO_CONFIG], config) == lost
    messages = _messages(caplog, "moslim_pl.cli")
    assert len(messages) == (1 if lost else 0)
    if lost:
        assert "--trainer.callbacks+=" in messages[0] and all(name in messages[0] for name in lost)
    # no config: nothing to lose
    assert warn_lost_callbacks(["fit"], Namespace(trainer=Namespace(callbacks=None))) == []
