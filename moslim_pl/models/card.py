"""Model cards: the ``README.md`` every export carries (what it is, dimensions, statistics, training, loading).

The card is plain Markdown with a YAML header the Hugging Face hub reads (``library_name``, ``tags``).
``training_summary`` collects what a LightningModule knows about its run (stage, data, steps, the last
logged metrics, hyperparameters); the export functions pass it in. See ``docs/user_guide.md``
("Exports: model card, PEFT adapters").
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from moslim_pl.schema import Dimension, default_targets

CARD_FILE = "README.md"
_METRIC_PREFIXES = ("val/", "test/", "train/", "rollout/", "reward/", "sweep/")
_MAX_VALUE_CHARS = 200


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a hyperparameter (dataclasses and unknown objects as their text)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {name: _plain(getattr(value, name)) for name in value.__dataclass_fields__}
    return str(value)


def _short(value: Any) -> str:
    text = json.dumps(_plain(value)) if not isinstance(value, str) else value
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def training_summary(module: Any) -> dict[str, Any]:
    """What a LightningModule's run says about itself: ``stage``, ``data``, ``steps``, ``epochs``,
    ``metrics`` (the last logged scalars, by name) and ``hyperparameters``. Empty parts are left out;
    a module without a trainer gives its stage and hyperparameters only."""
    summary: dict[str, Any] = {"stage": type(module).__name__}
    hparams = getattr(module, "hparams", None)
    if hparams:
        summary["hyperparameters"] = {k: _plain(v) for k, v in dict(hparams).items()}
    trainer = getattr(module, "_trainer", None)
    if trainer is None:
        return summary
    summary["steps"] = int(trainer.global_step)
    summary["epochs"] = int(trainer.current_epoch)
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is not None:
        data = {"class": type(datamodule).__name__}
        data_hparams = getattr(datamodule, "hparams", None)
        if data_hparams:
            data.update({k: _plain(v) for k, v in dict(data_hparams).items()})
        summary["data"] = data
    metrics = {}
    for name, value in trainer.callback_metrics.items():
        if not name.startswith(_METRIC_PREFIXES):
            continue
        number = float(value) if isinstance(value, (Tensor, int, float)) else None
        if number is not None and math.isfinite(number):
            metrics[name] = number
    if metrics:
        summary["metrics"] = dict(sorted(metrics.items()))
    return summary


def _header(tags: Sequence[str], base_model: str | None = None) -> list[str]:
    lines = ["---", "library_name: transformers", "tags:"]
    lines += [f"- {tag}" for tag in tags]
    if base_model and "/" in base_model and not base_model.startswith(("moslim/", "/", ".")):
        lines.append(f"base_model: {base_model}")
    return [*lines, "---", ""]


def _dimensions_table(dimensions: Sequence[Dimension]) -> list[str]:
    defaults = default_targets(dimensions)
    rows = ["| dimension | levels | default target (no prefix) |", "|---|---|---|"]
    for d in dimensions:
        default = defaults.get(d.name)
        rows.append(f"| `{d.name}` | {d.min_level}..{d.max_level} | {'-' if default is None else default} |")
    return rows


def _training_section(training: Mapping[str, Any] | None) -> list[str]:
    if not training:
        return ["## Training", "", "No training information was recorded with this export.", ""]
    lines = ["## Training", "", f"- stage: `{training.get('stage', '?')}`"]
    if "steps" in training:
        lines.append(
            f"- optimizer steps: {training['steps']} (epochs started: {training.get('epochs', 0) + 1})"
        )
    data = training.get("data")
    if data:
        described = ", ".join(f"{k}: `{_short(v)}`" for k, v in data.items() if k != "class")
        lines.append(f"- data: `{data.get('class', '?')}`" + (f" ({described})" if described else ""))
    lines.append("")
    metrics = training.get("metrics")
    if metrics:
        lines += ["### Metrics (last logged values)", "", "| metric | value |", "|---|---|"]
        lines += [f"| `{name}` | {value:.4g} |" for name, value in metrics.items()]
        lines.append("")
    hparams = training.get("hyperparameters")
    if hparams:
        lines += ["### Hyperparameters", "", "| name | value |", "|---|---|"]
        lines += [f"| `{name}` | `{_short(value)}` |" for name, value in hparams.items()]
        lines.append("")
    return lines


def reward_model_card(
    dimensions: Sequence[Dimension],
    pooling: str,
    encoding: Mapping[str, Any],
    stats_mean: Tensor,
    stats_std: Tensor,
    stats_count: float,
    backbone_type: str,
    training: Mapping[str, Any] | None = None,
) -> str:
    """The ``README.md`` of a reward-model export. ``stats_mean``, ``stats_std``: ``[K, L]``."""
    names = [d.name for d in dimensions]
    example = " ".join(f"<{d.name} {d.max_level}>" for d in dimensions[:2])
    lines = _header(["moslim", "reward-model", "multi-objective"])
    lines += [
        "# MOSLIM multi-head reward model",
        "",
        f"A multi-head classification reward model trained with "
        f"[moslim-pl](https://arxiv.org/abs/2505.20336): one `{backbone_type}` backbone and one "
        f"classification head per preference dimension ({', '.join(f'`{n}`' for n in names)}), each "
        "classifying a (prompt, response) pair into its intensity levels. A prompt asks for levels with a "
        f"prefix (`{example} Explain tides.`); the reward mapping turns the heads' probabilities and the "
        "requested levels into one scalar reward.",
        "",
        "**This is not a sequence-classification model.** `AutoModelForSequenceClassification` would put "
        "a random one-logit head on the backbone, so loading it that way is refused (a size-mismatch "
        "error on the classification head). `AutoModel` loads the backbone alone.",
        "",
        "## Dimensions and levels",
        "",
        *_dimensions_table(dimensions),
        "",
        f"Pooling: `{pooling}`. Encoding: `{json.dumps(_plain(encoding))}`.",
        "",
        "## Running statistics",
        "",
        f"Mean and standard deviation of each head's probability of each level, over {stats_count:.0f} "
        "scored pairs (they feed the `gaussian` mapping):",
        "",
        "| dimension | level | mean | std |",
        "|---|---|---|---|",
    ]
    for k, d in enumerate(dimensions):
        for c in range(d.num_levels):
            lines.append(
                f"| `{d.name}` | {d.min_level + c} | {float(stats_mean[k, c]):.4f} | {float(stats_std[k, c]):.4f} |"
            )
    lines.append("")
    lines += _training_section(training)
    lines += [
        "## How to load it",
        "",
        "```python",
        "from moslim_pl.models.reward_model import MultiHeadRewardModel",
        "",
        'rm = MultiHeadRewardModel.from_pretrained("path/to/this/folder")',
        f'out = rm.score(["{example} Explain tides."], ["Tides follow the moon."], mapping="gaussian")',
        "out.reward, out.probs  # [N] mapped reward, [N, K, L] per-head probabilities",
        "```",
        "",
        "As a reward function of TRL's trainers (`RLOOTrainer`, `GRPOTrainer`, ...):",
        "",
        "```python",
        "from moslim_pl.integrations.trl import reward_function",
        "",
        'reward_funcs = [reward_function("path/to/this/folder", mapping="gaussian")]',
        "```",
        "",
    ]
    return "\n".join(lines)


def policy_card(
    base_model: str,
    dimensions: Sequence[Dimension] | None,
    training: Mapping[str, Any] | None = None,
    adapter: bool = False,
) -> str:
    """The ``README.md`` of a policy export (merged model, or with ``adapter`` a PEFT LoRA adapter folder)."""
    stage = (training or {}).get("stage", "a moslim-pl stage")
    kind = "LoRA adapter (PEFT)" if adapter else "causal language model"
    lines = _header(["moslim", "prompt-steered", "rlhf"] + (["peft", "lora"] if adapter else []), base_model)
    lines += [f"# MOSLIM policy ({kind})", ""]
    if dimensions:
        example = " ".join(f"<{d.name} {d.max_level}>" for d in dimensions[:2])
        lines += [
            f"A policy trained by `{stage}` of [moslim-pl](https://arxiv.org/abs/2505.20336) to follow "
            f"prefixes that request preference levels: start a prompt with `{example}` (any subset of "
            "the dimensions below, any levels, one space apart) and the response follows the request. A "
            "prompt without prefix gets the reward model's default targets.",
            "",
            "## Dimensions and levels",
            "",
            *_dimensions_table(dimensions),
            "",
        ]
    else:
        example = ""
        lines += [f"A causal language model fine-tuned by `{stage}` of moslim-pl (no prefixes).", ""]
    lines += _training_section(training)
    prompt = f"{example} Explain tides.".strip()
    if adapter:
        lines += [
            "## How to load it",
            "",
            "```python",
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'base = AutoModelForCausalLM.from_pretrained("{base_model}")',
            'model = PeftModel.from_pretrained(base, "path/to/this/folder")',
            'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
            "```",
            "",
        ]
    else:
        lines += [
            "## How to load it",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")',
            'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
            f'ids = tokenizer("{prompt}", return_tensors="pt").input_ids',
            "print(tokenizer.decode(model.generate(ids, max_new_tokens=64)[0, ids.shape[1]:]))",
            "```",
            "",
        ]
    return "\n".join(lines)
