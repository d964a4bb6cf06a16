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
``joint_hit_rate``, the share of answers to requests naming two or more dimensions that hit every named
dimension; ``empty_rate``, the share of all answers with nothing in them, and ``empty_by_request``, how many
of them each request got (keyed by its prefix, e.g. ``"<formality 0>"``); the mean mapped reward (the
RM's Gaussian mapping of the request) over all answers; the compute of its training runs
(``compute.json`` files of ``ComputeCallback``), in device-hours and tokens; and
``train_eval_prompt_overlap``, the number of evaluation prompts found (prefix stripped) in the training
prompts of any of its training runs, read back from each run's ``config.yaml`` (must be 0).

``python -m moslim_pl.baselines.comparison SPEC.json --out comparison.json`` runs it from a spec::

    {"reward_model": DIR, "num_prompts": 16, "max_new_tokens": 64,
     "data": {"synthetic": {"num_prompts": 300, "seed": 0}, "seed": 0, "val_fraction": 0.2,
              "max_prompt_length": 32, "chat_template": false},
     "methods": {"moslim": {"kind": "prefix", "policy": DIR, "compute": [FILE, ...]},
                 "morlhf": {"kind": "weights", "policies": [DIR, ...], "weights": [[w, ...], ...], ...},
                 "rewarded_soups": {"kind": "soup", "base": DIR, "experts": {dim: DIR}, ...},
                 "ric": {"kind": "prefix", "policy": DIR, ...}}}

``data`` says where the evaluation prompts come from (the held-out split of the policy stage's
``PromptDataModule``: the synthetic world's size and seed, the split's seed and fraction) and how the
policies read them (``max_prompt_length``, ``chat_template``: the training configs' ``model.sampling``
values, as ``max_new_tokens`` is), never defaults. A method's ``train_runs`` (run folders; default: the folders of its ``compute`` files)
are the runs whose training prompts the overlap counts.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from moslim_pl.errors import MoslimError
from moslim_pl.evaluation.controllability import spearman
from moslim_pl.prefix import format_prefix
from moslim_pl.schema import Dimension
from moslim_pl.utils.io import atomic_file

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
    from moslim_pl.evaluation.text_metrics import empty_rate, is_empty

    requested: dict[str, list[int]] = {d.name: [] for d in dimensions}
    achieved: dict[str, list[int]] = {d.name: [] for d in dimensions}
    hits: dict[str, list[bool]] = {d.name: [] for d in dimensions}
    joint_hits: list[bool] = []
    answers: list[str] = []
    rewards: list[float] = []
    empty_by_request: dict[str, int] = {}
    for request in request_grid(dimensions):
        responses = responder(list(prompts), request)
        answers += responses
        empty_by_request[format_prefix(request, "")] = sum(is_empty(text) for text in responses)
        prefixed = [format_prefix(request, p) for p in prompts]
        rewards += rm_reward(prefixed, responses).tolist()
        levels = [oracle(p, r) for p, r in zip(prompts, responses, strict=True)]
        for name, level in request.items():
            hits[name] += [row[name] == level for row in levels]
            if len(request) == 1:
                requested[name] += [level] * len(levels)
                achieved[name] += [row[name] for row in levels]
        if len(request) >= 2:
            joint_hits += [all(row[name] == level for name, level in request.items()) for row in levels]
    return {
        "dimensions": {
            d.name: {
                "spearman_oracle": spearman(requested[d.name], achieved[d.name]),
                "hit_rate": sum(hits[d.name]) / len(hits[d.name]),
            }
            for d in dimensions
        },
        "mean_rho": sum(spearman(requested[n], achieved[n]) for n in requested) / len(requested),
        "joint_hit_rate": sum(joint_hits) / len(joint_hits) if joint_hits else 0.0,
        "empty_rate": empty_rate(answers),
        "empty_by_request": empty_by_request,
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


def training_prompts(run: str | Path) -> set[str]:
    """The training prompts (prefix stripped) of one training run, rebuilt from its ``config.yaml``.

    The run's datamodule is instantiated from the config LightningCLI saved beside its logs and split as
    in training: an SFT or reward-model run's training rows, a policy run's training prompts.
    """
    import yaml
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule

    from moslim_pl.data.preference import PreferenceDataModule
    from moslim_pl.data.prompts import PromptDataModule
    from moslim_pl.data.sft import SFTDataModule
    from moslim_pl.prefix import strip_prefix

    file = Path(run) / "config.yaml"
    if not file.is_file():
        raise MoslimError(f"train_runs: {run} has no config.yaml (a moslim-pl fit run folder is needed)")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    config = yaml.safe_load(file.read_text())
    data = parser.instantiate_classes(parser.parse_object({"data": config["data"]})).data
    if isinstance(data, PromptDataModule):
        data.setup("fit")
        prompts: list[Any] = list(data.train_prompts)
    elif isinstance(data, SFTDataModule):
        prompts = [row.prompt for row in data.split_rows()[0]]
    elif isinstance(data, PreferenceDataModule):
        rows = data.split_rows()[0]
        prompts = [row.prompt for row in rows]
    else:
        raise MoslimError(f"train_runs: {run} trains on {type(data).__name__}, which the overlap cannot read")
    dims = getattr(data, "dimensions", None) or ()
    texts = (p if isinstance(p, str) else str(p[-1].get("content", "")) for p in prompts)
    return {strip_prefix(t, dims) if dims else t for t in texts}


def train_eval_overlap(prompts: Sequence[str], runs: Sequence[str | Path]) -> int:
    """How many of the evaluation ``prompts`` are training prompts of any of ``runs``."""
    seen: set[str] = set()
    for run in runs:
        seen |= training_prompts(run)
    return sum(p in seen for p in prompts)


# ---------------------------------------------------------------------------------------- responders


class Reading(NamedTuple):
    """How every method reads a prompt and answers it: the policies' training settings (spec ``data``)."""

    max_prompt_length: int
    chat_template: bool
    max_new_tokens: int


class _Generator:
    """Greedy answers of one causal LM, batched; the model can be swapped (soups) without reloading."""

    def __init__(
        self,
        folder: str,
        dimensions: Sequence[Dimension],
        reading: Reading,
        batch_size: int = 32,
    ):
        from moslim_pl.models.backbone import load_causal_lm, load_tokenizer

        self.tokenizer = load_tokenizer(folder)
        self.model = load_causal_lm(folder, tokenizer=self.tokenizer).eval()
        self.dimensions = dimensions
        self.reading = reading
        self.batch_size = batch_size

    def __call__(self, texts: list[str]) -> list[str]:
        from moslim_pl.generation import encode_prompts, generate

        out: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            batch = encode_prompts(
                self.tokenizer,
                texts[start : start + self.batch_size],
                self.reading.max_prompt_length,
                self.reading.chat_template,
                dimensions=self.dimensions,
            )
            out += generate(
                self.model, self.tokenizer, batch, max_new_tokens=self.reading.max_new_tokens, temperature=0.0
            ).responses
        return out


def prefix_responder(policy: str, dimensions: Sequence[Dimension], reading: Reading) -> Responder:
    answer = _Generator(policy, dimensions, reading)
    return lambda prompts, request: answer([format_prefix(request, p) for p in prompts])


def weights_responder(
    policies: Sequence[str],
    weights: Sequence[Sequence[float]],
    dimensions: Sequence[Dimension],
    reading: Reading,
) -> Responder:
    if len(policies) != len(weights) or any(len(w) != len(dimensions) for w in weights):
        raise MoslimError(f"morlhf: need one weight vector of {len(dimensions)} per policy")
    answers = [_Generator(p, dimensions, reading) for p in policies]
    return lambda prompts, request: answers[nearest_policy(request, dimensions, weights)](list(prompts))


def soup_responder(
    base: str, experts: dict[str, str], dimensions: Sequence[Dimension], reading: Reading
) -> Responder:
    from moslim_pl.baselines.soups import interpolate
    from moslim_pl.models.backbone import load_causal_lm

    missing = [d.name for d in dimensions if d.name not in experts]
    if missing:
        raise MoslimError(f"rewarded_soups: no expert policy for {', '.join(missing)}")
    answer = _Generator(base, dimensions, reading)
    states = [load_causal_lm(f).state_dict() for f in (base, *(experts[d.name] for d in dimensions))]
    current: list[tuple[float, ...]] = []

    def respond(prompts: list[str], request: Request) -> list[str]:
        lambdas = soup_lambdas(request, dimensions)
        if current != [lambdas]:
            answer.model.load_state_dict(interpolate(states, lambdas))
            current[:] = [lambdas]
        return answer(list(prompts))

    return respond


def build_responder(spec: dict[str, Any], dimensions: Sequence[Dimension], reading: Reading) -> Responder:
    kind = spec.get("kind")
    if kind == "prefix":
        return prefix_responder(spec["policy"], dimensions, reading)
    if kind == "weights":
        return weights_responder(spec["policies"], spec["weights"], dimensions, reading)
    if kind == "soup":
        return soup_responder(spec["base"], spec["experts"], dimensions, reading)
    raise MoslimError(f"unknown method kind {kind!r}; expected prefix, weights or soup")


def format_comparison(table: dict[str, dict[str, Any]]) -> str:
    names = list(next(iter(table.values()))["dimensions"]) if table else []
    header = f"{'method':<16}" + "".join(f"{n[:11] + ' rho':>16}{'hit':>6}" for n in names)
    lines = [header + f"{'mean rho':>10}{'joint':>7}{'empty':>7}{'reward':>8}{'hours':>8}{'Mtokens':>9}"]
    for method, row in table.items():
        dims = row["dimensions"]
        cells = "".join(f"{dims[n]['spearman_oracle']:>16.3f}{dims[n]['hit_rate']:>6.2f}" for n in names)
        mean_rho = row.get("mean_rho", sum(dims[n]["spearman_oracle"] for n in names) / len(names))
        hours, tokens = row["compute_hours"], row.get("compute_tokens", 0) / 1e6
        joint, empty = row.get("joint_hit_rate", 0.0), row.get("empty_rate", 0.0)
        lines.append(
            f"{method:<16}{cells}{mean_rho:>10.3f}{joint:>7.2f}{empty:>7.2f}{row['mean_reward']:>8.3f}"
            f"{hours:>8.4f}{tokens:>9.2f}"
        )
    return "\n".join(lines)


DATA_KEYS = ("synthetic", "seed", "val_fraction", "max_prompt_length", "chat_template")


def spec_data(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec's ``data`` block, every key present (the harness assumes no default)."""
    data = spec.get("data")
    if not isinstance(data, dict):
        raise MoslimError("comparison spec: data is missing (see moslim_pl.baselines.comparison)")
    missing = [key for key in DATA_KEYS if key not in data]
    if missing:
        raise MoslimError(f"comparison spec: data.{missing[0]} is missing (need {', '.join(DATA_KEYS)})")
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="compare MOSLIM with the paper's baselines")
    parser.add_argument("spec", help="JSON spec (see the module docstring)")
    parser.add_argument("--out", required=True, help="the comparison JSON to write")
    args = parser.parse_args(argv)

    from moslim_pl.data import PromptDataModule, synthetic
    from moslim_pl.data.sources import SyntheticConfig
    from moslim_pl.models.reward_model import MultiHeadRewardModel

    spec = json.loads(Path(args.spec).read_text())
    data = spec_data(spec)
    rm = MultiHeadRewardModel.from_pretrained(spec["reward_model"]).eval()
    dims = rm.dimensions
    prompts = PromptDataModule(
        synthetic=SyntheticConfig(**data["synthetic"]),
        seed=data["seed"],
        val_fraction=data["val_fraction"],
        num_test_prompts=spec.get("num_prompts", 16),
    ).sweep_prompts()
    reading = Reading(data["max_prompt_length"], data["chat_template"], spec.get("max_new_tokens", 64))

    def rm_reward(prefixed: list[str], responses: list[str]) -> torch.Tensor:
        return rm.score(prefixed, responses, batch_size=32).reward

    table = {}
    for method, method_spec in spec["methods"].items():
        responder = build_responder(method_spec, dims, reading)
        row = evaluate(responder, prompts, dims, synthetic.oracle, rm_reward)
        row.update(compute_totals(method_spec.get("compute", [])))
        runs = method_spec.get("train_runs", [str(Path(f).parent) for f in method_spec.get("compute", [])])
        row["train_eval_prompt_overlap"] = train_eval_overlap(prompts, runs)
        table[method] = row
        sys.stdout.write(f"evaluated {method}\n")
    with atomic_file(args.out) as tmp:
        tmp.write_text(json.dumps(table, indent=2) + "\n")
    sys.stdout.write(format_comparison(table) + f"\nwrote {args.out}\n")


if __name__ == "__main__":
    main()
