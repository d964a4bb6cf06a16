"""The controllability sweep: does changing the prefix change the behaviour, dimension by dimension?

For every dimension and every level, held-out prompts get that single prefix (``<verbosity 2> ...``);
the policy answers; the achieved level is measured by the reward model (its expected level) and, where
an oracle exists (the synthetic world), by the oracle. Spearman's rho between requested and achieved
levels summarizes each dimension: 1 is perfect monotone control, 0 none.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from moslim_pl.models.io import atomic_file
from moslim_pl.prefix import format_prefix
from moslim_pl.schema import Dimension

Oracle = Callable[[str, str], dict[str, int]]
Generate = Callable[[list[str]], list[str]]
Score = Callable[[list[str], list[str]], Tensor]


def _ranks(values: Tensor) -> Tensor:
    """Ranks from 1, ties sharing their average rank (as Spearman's rho needs)."""
    order = values.argsort()
    ranks = torch.empty_like(values, dtype=torch.float64)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=torch.float64)
    for value in values.unique():
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation; 0.0 when either side is constant (no ordering to agree with)."""
    rx, ry = _ranks(torch.tensor(x, dtype=torch.float64)), _ranks(torch.tensor(y, dtype=torch.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = (rx.square().sum() * ry.square().sum()).sqrt()
    return 0.0 if float(denominator) == 0.0 else float((rx * ry).sum() / denominator)


def sweep(
    dimensions: Sequence[Dimension],
    prompts: Sequence[str],
    generate: Generate,
    rm_levels: Score,
    oracle: Oracle | None = None,
) -> dict[str, dict]:
    """Run the sweep.

    Args:
        dimensions: the dimensions to sweep (every level of each).
        prompts: held-out prompts without prefix.
        generate: prompts with prefix -> responses.
        rm_levels: (prompts with prefix, responses) -> [N, K] expected level of every head, in levels
            (``Dimension.min_level`` based), e.g. from ``MultiHeadRewardModel.score(...).probs``.
        oracle: (prompt, response) -> {name: level}; ``None`` when the data has no oracle.

    Returns:
        ``{dim: {"spearman_rm": float, "spearman_oracle": float | None, "levels": {level: {"rm": mean,
        "oracle": mean | None, "n": count}}}}``.
    """
    table: dict[str, dict] = {}
    for k, dim in enumerate(dimensions):
        requested, by_rm, by_oracle, levels = [], [], [], {}
        for level in range(dim.min_level, dim.max_level + 1):
            prefixed = [format_prefix({dim.name: level}, prompt) for prompt in prompts]
            responses = generate(prefixed)
            achieved_rm = rm_levels(prefixed, responses)[:, k].tolist()
            achieved_oracle = (
                [oracle(p, r)[dim.name] for p, r in zip(prefixed, responses, strict=True)] if oracle else None
            )
            requested += [level] * len(prompts)
            by_rm += achieved_rm
            by_oracle += achieved_oracle or []
            levels[str(level)] = {
                "rm": sum(achieved_rm) / len(achieved_rm),
                "oracle": None if achieved_oracle is None else sum(achieved_oracle) / len(achieved_oracle),
                "n": len(prompts),
            }
        table[dim.name] = {
            "spearman_rm": spearman(requested, by_rm),
            "spearman_oracle": spearman(requested, by_oracle) if oracle else None,
            "levels": levels,
        }
    return table


def format_table(table: dict[str, dict]) -> str:
    """A plain-text table of the sweep (one row per dimension)."""
    lines = [
        f"{'dimension':<14} {'rho_oracle':>10} {'rho_rm':>8}  achieved (oracle | rm) per requested level"
    ]
    for name, row in table.items():
        rho_o = "n/a" if row["spearman_oracle"] is None else f"{row['spearman_oracle']:.3f}"
        cells = []
        for level, values in row["levels"].items():
            oracle = "-" if values["oracle"] is None else f"{values['oracle']:.2f}"
            cells.append(f"{level}: {oracle} | {values['rm']:.2f}")
        lines.append(f"{name:<14} {rho_o:>10} {row['spearman_rm']:>8.3f}  " + "   ".join(cells))
    return "\n".join(lines)


def plot(table: dict[str, dict]) -> object:
    """Requested vs achieved level, one line per dimension (oracle solid, RM dashed); a matplotlib figure."""
    from moslim_pl.evaluation.plots import plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for name, row in table.items():
        levels = [int(level) for level in row["levels"]]
        line = None
        if row["spearman_oracle"] is not None:
            (line,) = ax.plot(
                levels, [v["oracle"] for v in row["levels"].values()], "o-", label=f"{name} (oracle)"
            )
        color = None if line is None else line.get_color()
        ax.plot(levels, [v["rm"] for v in row["levels"].values()], "s--", color=color, label=f"{name} (RM)")
    ax.set_xlabel("requested level")
    ax.set_ylabel("achieved level")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def write(table: dict[str, dict], out_dir: str | Path, name: str = "controllability") -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.png`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    json_path, png_path = out_dir / f"{name}.json", out_dir / f"{name}.png"
    with atomic_file(json_path) as tmp:
        tmp.write_text(json.dumps(table, indent=2) + "\n")
    from moslim_pl.evaluation.plots import plt

    figure = plot(table)
    with atomic_file(png_path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return json_path, png_path


def sweep_exports(
    policy: str,
    reward_model: str,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    max_prompt_length: int = 128,
    temperature: float = 0.0,
    batch_size: int = 16,
    oracle: Oracle | None = None,
) -> dict[str, dict]:
    """The sweep of an exported policy (Hugging Face folder) measured by an exported reward model."""
    from moslim_pl.generation import encode_prompts, generate
    from moslim_pl.models.backbone import load_causal_lm, load_tokenizer
    from moslim_pl.models.reward_model import MultiHeadRewardModel

    rm = MultiHeadRewardModel.from_pretrained(reward_model).eval()
    tokenizer = load_tokenizer(policy)
    model = load_causal_lm(policy, tokenizer=tokenizer).eval()
    level_index = torch.arange(rm.max_levels, dtype=torch.float32)
    offsets = torch.tensor([d.min_level for d in rm.dimensions], dtype=torch.float32)

    def answer(texts: list[str]) -> list[str]:
        responses: list[str] = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            batch = encode_prompts(tokenizer, chunk, max_prompt_length, dimensions=rm.dimensions)
            rollout = generate(
                model, tokenizer, batch, max_new_tokens=max_new_tokens, temperature=temperature
            )
            responses += rollout.responses
        return responses

    def rm_levels(texts: list[str], responses: list[str]) -> Tensor:
        probs = rm.score(texts, responses, batch_size=batch_size).probs  # [N, K, L]
        return (probs * level_index).sum(-1) + offsets

    return sweep(rm.dimensions, prompts, answer, rm_levels, oracle)


def held_out_prompts(datamodule: object) -> list[str]:
    """The validation prompts of a ``PromptDataModule`` without their prefixes (never seen in training)."""
    from moslim_pl.prefix import strip_prefix

    datamodule.setup("validate")
    return [strip_prefix(p, datamodule.dimensions) for p in datamodule.val_prompts]


def main(argv: list[str] | None = None) -> None:
    """``python -m moslim_pl.evaluation.controllability --policy DIR --reward_model DIR --out DIR``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="controllability sweep of an exported policy")
    parser.add_argument("--policy", required=True, help="exported policy folder (or hub id)")
    parser.add_argument("--reward_model", required=True, help="exported reward model folder")
    parser.add_argument("--out", required=True, help="folder for <name>.json and <name>.png")
    parser.add_argument("--name", default="controllability")
    parser.add_argument("--num_prompts", type=int, default=16, help="held-out synthetic prompts used")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prompt split (as in training)")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--no_oracle", action="store_true", help="do not measure with the synthetic oracle")
    args = parser.parse_args(argv)

    from moslim_pl.data import PromptDataModule, synthetic

    prompts = held_out_prompts(PromptDataModule(seed=args.seed))[: args.num_prompts]
    table = sweep_exports(
        args.policy,
        args.reward_model,
        prompts,
        max_new_tokens=args.max_new_tokens,
        oracle=None if args.no_oracle else synthetic.oracle,
    )
    json_path, _ = write(table, args.out, args.name)
    sys.stdout.write(format_table(table) + f"\nwrote {json_path}\n")


if __name__ == "__main__":
    main()
