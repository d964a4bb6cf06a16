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

from moslim_pl.data.messages import add_prefix
from moslim_pl.rewards.mapping import expected_level
from moslim_pl.schema import Dimension
from moslim_pl.utils.io import atomic_file

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


def sweep_records(
    dimensions: Sequence[Dimension],
    prompts: Sequence[str],
    generate: Generate,
    rm_levels: Score,
    oracle: Oracle | None = None,
    advance: Callable[[int], None] | None = None,
) -> Tensor:
    """Answer every prompt under every single-dimension prefix; one record per answer.

    Args:
        dimensions: the dimensions to sweep (every level of each), in the RM's head order.
        prompts: prompts without prefix (held out from training).
        generate: prompts with prefix -> responses.
        rm_levels: (prompts with prefix, responses) -> [N, K] expected level of every head, in levels
            (``Dimension.min_level`` based), e.g. from ``MultiHeadRewardModel.score(...).probs``.
        oracle: (prompt, response) -> {name: level}; ``None`` when the data has no oracle.
        advance: called with ``len(prompts)`` after each level (a progress bar's ``update``).

    Returns:
        ``[M, 4]`` float64 records ``(dimension index, requested level, RM level, oracle level or NaN)``,
        ``M = len(prompts) * sum(levels)``. Records from several ranks concatenate before
        :func:`summarize`.
    """
    records = []
    for k, dim in enumerate(dimensions):
        for level in range(dim.min_level, dim.max_level + 1):
            prefixed = [add_prefix({dim.name: level}, prompt) for prompt in prompts]  # text or conversation
            responses = generate(prefixed)
            achieved_rm = rm_levels(prefixed, responses)[:, k].double().cpu()
            achieved_oracle = torch.tensor(
                [oracle(p, r)[dim.name] for p, r in zip(prefixed, responses, strict=True)]
                if oracle
                else [float("nan")] * len(prompts),
                dtype=torch.float64,
            )
            fixed = torch.tensor([k, level], dtype=torch.float64).expand(len(prompts), 2)
            records.append(torch.cat([fixed, achieved_rm[:, None], achieved_oracle[:, None]], dim=1))
            if advance is not None:
                advance(len(prompts))
    return torch.cat(records) if records else torch.zeros(0, 4, dtype=torch.float64)


def summarize(dimensions: Sequence[Dimension], records: Tensor) -> dict[str, dict]:
    """The sweep's table from :func:`sweep_records`' ``[M, 4]`` records.

    Returns:
        ``{dim: {"spearman_rm": float, "spearman_oracle": float | None, "levels": {level: {"rm": mean,
        "oracle": mean | None, "n": count}}}}``; the oracle entries are ``None`` when no record has one.
    """
    table: dict[str, dict] = {}
    for k, dim in enumerate(dimensions):
        rows = records[records[:, 0] == k]
        with_oracle = bool(len(rows)) and not bool(rows[:, 3].isnan().any())
        levels = {}
        for level in range(dim.min_level, dim.max_level + 1):
            at = rows[rows[:, 1] == level]
            levels[str(level)] = {
                "rm": float(at[:, 2].mean()) if len(at) else None,
                "oracle": float(at[:, 3].mean()) if with_oracle and len(at) else None,
                "n": len(at),
            }
        table[dim.name] = {
            "spearman_rm": spearman(rows[:, 1].tolist(), rows[:, 2].tolist()),
            "spearman_oracle": spearman(rows[:, 1].tolist(), rows[:, 3].tolist()) if with_oracle else None,
            "levels": levels,
        }
    return table


def sweep(
    dimensions: Sequence[Dimension],
    prompts: Sequence[str],
    generate: Generate,
    rm_levels: Score,
    oracle: Oracle | None = None,
) -> dict[str, dict]:
    """Run the sweep and summarize it: :func:`summarize` of :func:`sweep_records` (same arguments)."""
    return summarize(dimensions, sweep_records(dimensions, prompts, generate, rm_levels, oracle))


def rm_expected_levels(probs: Tensor, dimensions: Sequence[Dimension]) -> Tensor:
    """``[N, K, L]`` head probabilities -> ``[N, K]`` expected level, in each dimension's own levels."""
    offsets = torch.tensor([d.min_level for d in dimensions], dtype=probs.dtype, device=probs.device)
    return expected_level(probs) + offsets


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


def main(argv: list[str] | None = None) -> None:
    """``python -m moslim_pl.evaluation.controllability FILE.json...``: print the tables of sweep files.

    The sweep itself runs as the policy modules' test loop: ``moslim-pl test --config ... --model.policy
    EXPORT`` writes ``<log_dir>/controllability.json``.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="print controllability tables written by moslim-pl test")
    parser.add_argument("files", nargs="+", help="controllability JSON files")
    args = parser.parse_args(argv)
    for file in args.files:
        table = json.loads(Path(file).read_text())
        sys.stdout.write(f"{file}\n{format_table(table)}\n")


if __name__ == "__main__":
    main()
