"""The real-chat recipe's policy trains on the reward model's training prompts only."""

from __future__ import annotations

from pathlib import Path

import yaml

from moslim_pl.data import PreferenceDataModule, PromptDataModule, preference
from moslim_pl.data.common import train_val_rows
from moslim_pl.schema import Dimension

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _data_args(path: Path) -> dict:
    return yaml.safe_load(path.read_text())["data"]["init_args"]


def test_rl_prompts_are_the_reward_models_training_prompts(helpsteer_sample: Path, monkeypatch) -> None:
    rm_args = _data_args(CONFIGS / "reward_model" / "real_chat-minilm.yaml")
    rl_args = _data_args(CONFIGS / "policy" / "real_chat-smollm2-cpu.yaml")
    assert (rm_args["seed"], rm_args["val_fraction"]) == (rl_args["seed"], rl_args["val_fraction"])
    # RL trains a subset of the heads, each declared exactly as the reward model's
    rm_heads = {d["name"]: d for d in rm_args["dimensions"]}
    assert rl_args["dimensions"] and all(rm_heads[d["name"]] == d for d in rl_args["dimensions"])
    source = {"path": "json", "data_files": str(helpsteer_sample)}
    dimensions = [Dimension(**d) for d in rm_args["dimensions"]]
    rm_data = PreferenceDataModule(
        source=source, dimensions=dimensions, seed=rm_args["seed"], val_fraction=rm_args["val_fraction"]
    )
    splits = []

    def recording(*args, **kwargs):
        splits.append(train_val_rows(*args, **kwargs))
        return splits[-1]

    monkeypatch.setattr(preference, "train_val_rows", recording)
    rm_data.setup("fit")
    ((rm_train_rows, rm_val_rows),) = splits
    rl_data = PromptDataModule(
        source=source, dimensions=dimensions, seed=rl_args["seed"], val_fraction=rl_args["val_fraction"]
    )
    rl_data.setup("fit")
    rm_val = {row.prompt for row in rm_val_rows}
    rm_train = {row.prompt for row in rm_train_rows}
    assert rm_val and not rm_val & set(rl_data.train_prompts)
    assert set(rl_data.train_prompts) == rm_train
