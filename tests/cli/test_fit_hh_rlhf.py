"""The issue's command: the HH-RLHF config trains a harmlessness head from pairs alone (local files)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from moslim_pl.cli import main
from moslim_pl.models.reward_model import MultiHeadRewardModel

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "reward_model" / "hh_rlhf-minilm.yaml"
FIXTURES = ROOT / "tests" / "data" / "fixtures"
TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def _source(file: str) -> str:
    return json.dumps(
        {
            "path": "json",
            "data_files": str(FIXTURES / file),
            "schema": "hh_rlhf",
            "schema_options": {"dimension": "harmlessness"},
        }
    )


def _args(tmp_path: Path, train: str = "hh_rlhf_harmless_train.jsonl") -> list[str]:
    return [
        "fit",
        "--config",
        str(CONFIG),
        f"--data.sources=[{_source(train)}]",
        f"--data.val_source={_source('hh_rlhf_harmless_eval.jsonl')}",
        # a tiny backbone instead of MiniLM: seconds on a CPU
        "--model.backbone=moslim/tiny-llama",
        f"--model.tiny_config={json.dumps(TINY)}",
        "--model.warmup_steps=0",
        "--data.batch_size=4",
        "--trainer.max_epochs=2",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]


def test_hh_rlhf_config_trains_a_head_from_pairs_alone(tmp_path: Path, read_scalars) -> None:
    main(_args(tmp_path))
    (run,) = (tmp_path / "reward_model_hh_rlhf_minilm").iterdir()
    scalars = read_scalars(run)
    assert len(scalars["val/pair_acc/harmlessness"]) >= 2  # every validation (val_check_interval 0.25)
    assert 0.0 <= scalars["val/pair_acc/harmlessness"][-1] <= 1.0
    pair_losses = scalars["train/pair_loss"]
    assert pair_losses and all(math.isfinite(v) for v in pair_losses)
    assert scalars["train/loss"] == pytest.approx(pair_losses)  # pairs alone: the loss is the BT loss
    assert scalars["val/loss"]  # what ModelCheckpoint monitors
    rm = MultiHeadRewardModel.from_pretrained(run / "export")
    (head,) = rm.dimensions
    assert (head.name, head.low, head.high) == ("harmlessness", 0, 4)
    assert float(rm.stats_count) > 0  # the Gaussian mapping's statistics come from the pairs' responses


def test_bad_pair_row_ends_with_one_line(tmp_path: Path, capsys) -> None:
    rows = [json.loads(line) for line in (FIXTURES / "hh_rlhf_harmless_train.jsonl").read_text().splitlines()]
    rows[2]["rejected"] = None
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(SystemExit) as exit_info:
        main(_args(tmp_path, str(bad)))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"moslim-pl: error: json:{bad} row 2, column 'rejected': missing"


def test_schema_names_are_in_the_cli_help(capsys) -> None:
    from moslim_pl.data.schemas import SCHEMAS

    with pytest.raises(SystemExit):
        main(["fit", "--data.help", "moslim_pl.data.PreferenceDataModule"])
    text = " ".join(capsys.readouterr().out.split())
    for name in SCHEMAS:
        assert f"``{name}``" in text, name
