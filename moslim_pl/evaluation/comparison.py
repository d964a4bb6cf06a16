"""The paper's comparison: MOSLIM against MORLHF, Rewarded Soups and RiC on the same requests.

Every method answers the same held-out prompts for the same grid of requests (``{dimension: level}``):
every level of every single dimension (for Spearman's rho per dimension) plus every combination of the
extreme levels of all dimensions. Each method turns a request into its own control:

- ``prefix`` (MOSLIM, RiC): the request is written as the prompt's prefix.
- ``weights`` (MORLHF): one policy per weight vector of the ``linear`` mapping; the request becomes the
  vector ``w_d = 2 * level_d / (levels_d - 1) - 1`` (0 for unnamed dimensions) and the policy whose
  weight vector is nearest (Euclidean) answers.
- ``soup`` (Rewarded Soups): one expert per dimension plus the shared start; the request becomes
  ``lambda_d = level_d / (levels_d - 1) / n`` for the ``n`` named dimensions and the rest of the mass on
  the start, and the interpolated weights answer.

Measured per method: per dimension, Spearman's rho between requested and oracle level over the
single-dimension requests and the hit rate (oracle level == requested) over every request naming it;
the mean mapped reward (the RM's Gaussian mapping of the request) over all answers; and the compute of
its training runs (``compute.json`` files of ``ComputeCallback``), in device-hours and tokens.

``python -m moslim_pl.evaluation.comparison SPEC.json --out comparison.json`` runs it from a spec::

    {"reward_model": DIR, "num_prompts": 16, "max_new_tokens": 64,
     "methods": {"moslim": {"kind": "prefix", "policy": DIR, "compute": [FILE, ...]},
                 "morlhf": {"kind": "weights", "policies": [DIR, ...], "weights": [[w, ...], ...], ...},
                 "rewarded_soups": {"kind": "soup", "base": DIR, "experts": {dim: DIR}, ...},
                 "ric": {"kind": "prefix", "policy": DIR, ...}}}
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from moslim_pl.errors import MoslimError
from moslim_pl.evaluation.controllability import spearman
from moslim_pl.models.io import atomic_file
from moslim_pl.prefix import format_prefix
from moslim_pl.schema import Dimension

Request = dict[str, int]
Responder = Callable[[list[str], Request], list[str]]
Oracle = Callable[[str, str], dict[str, int]]


def request_grid(dimensions: Sequence[Dimension]) -> list[Request]:
    """Every level of every single dimension, then every combination of all dimensions' extreme levels."""
    single = [{d.name: level} for d in dimensions for level in range(d.min_level, d.max_level + 1)]
    extremes = [(d.min_level, d.max_level) for d in dimensions]
    combos = [dict(zip([d.name for d in dimensions], c, strict=True)) for c in itertools.product(*extremes)]
    return single + combos


def _normalized(request: Request, dimensions: Sequence[Dimension]) -> dict[str, float]:
    """Requested levels as fractions of each dimension's range: ``{name: t in [0, 1]}``."""
    by_name = {d.name: d for d in dimensions}
    return {
        name: (level - by_name[name].min_level) / (by_name[name].num_levels - 1)
        for name, level in request.items()
    }


def weight_vector(request: Request, dimensions: Sequence[Dimension]) -> list[float]:
    """MORLHF's control for a request: ``2 t - 1`` per named dimension (``t``: normalized level), else 0."""
    t = _normalized(request, dimensions)
    return [2.0 * t[d.name] - 1.0 if d.name in t else 0.0 for d in dimensions]


def nearest_policy(
    request: Request, dimensions: Sequence[Dimension], weights: Sequence[Sequence[float]]
) -> int:
    """Index of the trained weight vector nearest (Euclidean) to the request's; the first on ties."""
    target = torch.tensor(weight_vector(request, dimensions))
    distances = [float((torch.tensor(w, dtype=torch.float32) - target).norm()) for w in weights]
    return min(range(len(weights)), key=lambda i: (round(distances[i], 9), i))


def soup_lambdas(request: Request, dimensions: Sequence[Dimension]) -> tuple[float, ...]:
    """Rewarded Soups' control: ``(lambda_start, lambda_dim1, ...)``; ``t_d / n`` per named dimension."""
    t = _normalized(request, dimensions)
    experts = [t[d.name] / len(t) if d.name in t else 0.0 for d in dimensions]
    return (max(0.0, 1.0 - sum(experts)), *experts)


def evaluate(
    responder: Responder,
    prompts: Sequence[str],
    dimensions: Sequence[Dimension],
    oracle: Oracle,
    rm_reward: Callable[[list[str], list[str]], torch.Tensor],
) -> dict[str, Any]:
    """One method's row of the table (see the module docstring); ``rm_reward(prefixed, responses) -> [N]``."""
    requested: dict[str, list[int]] = {d.name: [] for d in dimensions}
    achieved: dict[str, list[int]] = {d.name: [] for d in dimensions}
    hits: dict[str, list[bool]] = {d.name: [] for d in dimensions}
    rewards: list[float] = []
    for request in request_grid(dimensions):
        responses = responder(list(prompts), request)
        prefixed = [format_prefix(request, p) for p in prompts]
        rewards += rm_reward(prefixed, responses).tolist()
        levels = [oracle(p, r) for p, r in zip(prompts, responses, strict=True)]
        for name, level in request.items():
            hits[name] += [row[name] == level for row in levels]
            if len(request) == 1:
                requested[name] += [level] * len(levels)
                achieved[name] += [row[name] for row in levels]
    return {
        "dimensions": {
            d.name: {
                "spearman_oracle": spearman(requested[d.name], achieved[d.name]),
                "hit_rate": sum(hits[d.name]) / len(hits[d.name]),
            }
            for d in dimensions
        },
        "mean_reward": sum(rewards) / len(rewards),
    }


def compute_totals(files: Sequence[str | Path]) -> dict[str, float]:
    """``{"compute_hours", "compute_tokens"}``: sums of ``device_hours`` and ``tokens`` over
    ``ComputeCallback`` records. Wall-clock hours move with the machine's load; tokens do not."""
    records = [json.loads(Path(f).read_text()) for f in files]
    return {
        "compute_hours": sum(float(r["device_hours"]) for r in records),
        "compute_tokens": sum(int(r["tokens"]) for r in records),
    }


# ---------------------------------------------------------------------------------------- responders


class _Generator:
    """Greedy answers of one causal LM, batched; the model can be swapped (soups) without reloading."""

    def __init__(
        self, folder: str, dimensions: Sequence[Dimension], max_new_tokens: int, batch_size: int = 32
    ):
        from moslim_pl.models.backbone import load_causal_lm, load_tokenizer

        self.tokenizer = load_tokenizer(folder)
        self.model = load_causal_lm(folder, tokenizer=self.tokenizer).eval()
        self.dimensions = dimensions
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def __call__(self, texts: list[str]) -> list[str]:
        from moslim_pl.generation import encode_prompts, generate

        out: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            batch = encode_prompts(
                self.tokenizer, texts[start : start + self.batch_size], 128, dimensions=self.dimensions
            )
            out += generate(
                self.model, self.tokenizer, batch, max_new_tokens=self.max_new_tokens, temperature=0.0
            ).responses
        return out


def prefix_responder(policy: str, dimensions: Sequence[Dimension], max_new_tokens: int) -> Responder:
    answer = _Generator(policy, dimensions, max_new_tokens)
    return lambda prompts, request: answer([format_prefix(request, p) for p in prompts])


def weights_responder(
    policies: Sequence[str],
    weights: Sequence[Sequence[float]],
    dimensions: Sequence[Dimension],
    max_new_tokens: int,
) -> Responder:
    if len(policies) != len(weights) or any(len(w) != len(dimensions) for w in weights):
        raise MoslimError(f"morlhf: need one weight vector of {len(dimensions)} per policy")
    answers = [_Generator(p, dimensions, max_new_tokens) for p in policies]
    return lambda prompts, request: answers[nearest_policy(request, dimensions, weights)](list(prompts))


def soup_responder(
    base: str, experts: dict[str, str], dimensions: Sequence[Dimension], max_new_tokens: int
) -> Responder:
    from moslim_pl.models.backbone import load_causal_lm
    from moslim_pl.models.soups import interpolate

    missing = [d.name for d in dimensions if d.name not in experts]
    if missing:
        raise MoslimError(f"rewarded_soups: no expert policy for {', '.join(missing)}")
    answer = _Generator(base, dimensions, max_new_tokens)
    states = [load_causal_lm(f).state_dict() for f in (base, *(experts[d.name] for d in dimensions))]
    current: list[tuple[float, ...]] = []

    def respond(prompts: list[str], request: Request) -> list[str]:
        lambdas = soup_lambdas(request, dimensions)
        if current != [lambdas]:
            answer.model.load_state_dict(interpolate(states, lambdas))
            current[:] = [lambdas]
        return answer(list(prompts))

    return respond


def build_responder(spec: dict[str, Any], dimensions: Sequence[Dimension], max_new_tokens: int) -> Responder:
    kind = spec.get("kind")
    if kind == "prefix":
        return prefix_responder(spec["policy"], dimensions, max_new_tokens)
    if kind == "weights":
        return weights_responder(spec["policies"], spec["weights"], dimensions, max_new_tokens)
    if kind == "soup":
        return soup_responder(spec["base"], spec["experts"], dimensions, max_new_tokens)
    raise MoslimError(f"unknown method kind {kind!r}; expected prefix, weights or soup")


def format_comparison(table: dict[str, dict[str, Any]]) -> str:
    names = list(next(iter(table.values()))["dimensions"]) if table else []
    header = f"{'method':<16}" + "".join(f"{n[:11] + ' rho':>16}{'hit':>6}" for n in names)
    lines = [header + f"{'mean rho':>10}{'reward':>8}{'hours':>8}{'Mtokens':>9}"]
    for method, row in table.items():
        dims = row["dimensions"]
        cells = "".join(f"{dims[n]['spearman_oracle']:>16.3f}{dims[n]['hit_rate']:>6.2f}" for n in names)
        mean_rho = sum(dims[n]["spearman_oracle"] for n in names) / len(names)
        hours, tokens = row["compute_hours"], row.get("compute_tokens", 0) / 1e6
        lines.append(
            f"{method:<16}{cells}{mean_rho:>10.3f}{row['mean_reward']:>8.3f}{hours:>8.4f}{tokens:>9.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="compare MOSLIM with the paper's baselines")
    parser.add_argument("spec", help="JSON spec (see the module docstring)")
    parser.add_argument("--out", required=True, help="the comparison JSON to write")
    args = parser.parse_args(argv)

    from moslim_pl.data import PromptDataModule, synthetic
    from moslim_pl.models.reward_model import MultiHeadRewardModel

    spec = json.loads(Path(args.spec).read_text())
    rm = MultiHeadRewardModel.from_pretrained(spec["reward_model"]).eval()
    dims = rm.dimensions
    prompts = PromptDataModule(
        seed=spec.get("seed", 0), num_test_prompts=spec.get("num_prompts", 16)
    ).sweep_prompts()

    def rm_reward(prefixed: list[str], responses: list[str]) -> torch.Tensor:
        return rm.score(prefixed, responses, batch_size=32).reward

    table = {}
    for method, method_spec in spec["methods"].items():
        responder = build_responder(method_spec, dims, spec.get("max_new_tokens", 64))
        row = evaluate(responder, prompts, dims, synthetic.oracle, rm_reward)
        row.update(compute_totals(method_spec.get("compute", [])))
        table[method] = row
        sys.stdout.write(f"evaluated {method}\n")
    with atomic_file(args.out) as tmp:
        tmp.write_text(json.dumps(table, indent=2) + "\n")
    sys.stdout.write(format_comparison(table) + f"\nwrote {args.out}\n")


if __name__ == "__main__":
    main()
