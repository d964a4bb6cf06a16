"""The real CLI on the six-head mix config (HelpSteer + PKU-SafeRLHF schemas), local files, tiny backbone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moslim_pl.cli import main
from moslim_pl.models.reward_model import MultiHeadRewardModel

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "reward_model" / "helpsteer_pku_mix.yaml"
FIXTURES = ROOT / "tests" / "data" / "fixtures"
TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def _args(tmp_path: Path, sources: list[dict]) -> list[str]:
    return [
        "fit",
        "--config",
        str(CONFIG),
        f"--data.init_args.sources={json.dumps(sources)}",
        "--data.init_args.val_fraction=0.4",
        "--model.init_args.backbone=moslim/tiny-llama",
        f"--model.init_args.tiny_config={json.dumps(TINY)}",
        "--model.init_args.warmup_steps=0",
        "--trainer.max_epochs=2",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]


def _local(schema: str, file: Path) -> dict:
    return {"path": "json", "data_files": str(file), "schema": schema}


def test_mix_config_fits_six_heads_from_local_files(tmp_path: Path, read_scalars) -> None:
    sources = [
        _local("helpsteer", FIXTURES / "helpsteer.jsonl"),
        _local("pku_saferlhf", FIXTURES / "pku_saferlhf.jsonl"),
    ]
    main(_args(tmp_path, sources))
    (run,) = (tmp_path / "reward_model_helpsteer_pku_mix").iterdir()
    rm = MultiHeadRewardModel.from_pretrained(run / "export")
    names = ["helpfulness", "correctness", "coherence", "complexity", "verbosity", "harmlessness"]
    assert [d.name for d in rm.dimensions] == names
    assert (rm.dimensions[-1].low, rm.dimensions[-1].high) == (0, 3)
    scalars = read_scalars(run)
    assert scalars["train/loss"] and scalars["val/loss"]


def _bad_rating(tmp_path: Path) -> Path:
    rows = [json.loads(line) for line in (FIXTURES / "helpsteer.jsonl").read_text().splitlines()]
    rows[1]["coherence"] = "good"
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        (lambda tmp: FIXTURES / "hh_rlhf.jsonl", "row 0, column 'prompt': missing (schema 'helpsteer' needs"),
        (_bad_rating, "bad.jsonl row 1, column 'coherence': label 'good' is not an integer"),
    ],
)
def test_bad_data_ends_with_one_line(tmp_path: Path, capsys, file, expected: str) -> None:
    sources = [_local("helpsteer", file(tmp_path))]
    with pytest.raises(SystemExit) as exit_info:
        main(_args(tmp_path, sources))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("moslim-pl: error: ") and expected in err[-1]
    assert "Traceback" not in "\n".join(err)
