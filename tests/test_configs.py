"""Every YAML under configs/ parses through the real CLI and starts with a header comment."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from moslim_pl.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
QUICKSTART = ROOT / "configs" / "reward_model" / "quickstart.yaml"


def test_there_are_configs():
    assert QUICKSTART in CONFIGS and len(CONFIGS) >= 3


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_config_parses(config: Path, capsys):
    text = config.read_text()
    assert text.startswith("#"), (
        "each config starts with a header comment saying what it does and how to run it"
    )
    assert "moslim-pl" in text.split("\n\n")[0] or "Run on" in text
    content = yaml.safe_load(text)
    # trainer presets are composed after a stage config, as their headers say
    configs = [config] if "model" in content else [QUICKSTART, config]
    args = ["fit"]
    for path in configs:
        args += ["--config", str(path)]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("moslim_pl.")


@pytest.mark.parametrize(
    "name",
    ["reward_model/helpsteer-minilm.yaml", "reward_model/helpsteer_pku_mix.yaml", "policy/rloo_smollm2.yaml"],
)
def test_helpsteer_defaults_ask_for_a_good_answer_of_middle_length(name: str):
    """A bare prompt targets high quality and middle complexity and verbosity (docs/user_guide.md)."""
    from moslim_pl.schema import Dimension, default_targets

    content = yaml.safe_load((ROOT / "configs" / name).read_text())
    dims = [Dimension(**d) for d in content["data"]["init_args"]["dimensions"]]
    expected = {"helpfulness": 4, "correctness": 4, "coherence": 4, "complexity": 2, "verbosity": 2}
    if any(d.name == "harmlessness" for d in dims):
        expected["harmlessness"] = 3
    assert default_targets(dims) == expected
