"""What a synthetic-world policy writes, measured by the oracle, and how well an RM reads it.

    python benchmarks/policy_samples.py POLICY_EXPORT [--reward-model RM_EXPORT] [--prompts 60]
        [--samples 4] [--request helpfulness=1] [--seed 0]

Answers the first ``--prompts`` held-out prompts of the quickstart's prompt split (seed 0, the sweep's
prompts first), ``--samples`` times each at temperature 1 (the training rollouts' distribution) and once
greedily (the sweep's), with the ``--request`` prefix (default: none). For each way it prints the share of
answers that mention a topic keyword twice (``repeat``), that mention a keyword of another topic
(``off_topic``; the oracle counts neither), and the oracle's helpfulness levels. With ``--reward-model``,
it also prints, per head, the RM's accuracy against the oracle on the sampled answers: the accuracy that
matters to RL, on the policy's own answers rather than on the RM's validation data.
"""

from __future__ import annotations

import argparse
import collections
import json

import torch

from moslim_pl.data import PromptDataModule, synthetic
from moslim_pl.data.sources import SyntheticConfig
from moslim_pl.generation import encode_prompts, generate
from moslim_pl.models.backbone import load_causal_lm, load_tokenizer
from moslim_pl.prefix import format_prefix

_KEYWORD_TOPIC = {k: t for t, keywords in synthetic.TOPICS.items() for k in keywords}


def keyword_use(prompt: str, response: str) -> tuple[bool, bool]:
    """(a topic keyword is mentioned twice, a keyword of another topic is mentioned)."""
    topic = synthetic.topic_of(prompt)
    tokens = synthetic.tokenize(response)
    own = [t for t in tokens if _KEYWORD_TOPIC.get(t) == topic]
    return len(own) > len(set(own)), any(t in _KEYWORD_TOPIC and _KEYWORD_TOPIC[t] != topic for t in tokens)


def summarize(prompts: list[str], responses: list[str]) -> dict:
    """Shares of repeating and off-topic answers, and the oracle's helpfulness levels."""
    uses = [keyword_use(p, r) for p, r in zip(prompts, responses, strict=True)]
    levels = collections.Counter(
        synthetic.oracle(p, r)["helpfulness"] for p, r in zip(prompts, responses, strict=True)
    )
    return {
        "n": len(responses),
        "repeat": round(sum(u[0] for u in uses) / len(uses), 3),
        "off_topic": round(sum(u[1] for u in uses) / len(uses), 3),
        "helpfulness_levels": dict(sorted(levels.items())),
    }


def rm_accuracy(rm_path: str, prompts: list[str], responses: list[str]) -> dict[str, float]:
    """Per head: the share of answers whose RM argmax is the oracle's level."""
    from moslim_pl.models.reward_model import MultiHeadRewardModel

    rm = MultiHeadRewardModel.from_pretrained(rm_path).eval()
    probs = rm.score(prompts, responses).probs
    truth = [synthetic.oracle(p, r) for p, r in zip(prompts, responses, strict=True)]
    return {
        dim.name: round(
            sum(int(probs[i, k].argmax()) == dim.label_to_class(t[dim.name]) for i, t in enumerate(truth))
            / len(truth),
            3,
        )
        for k, dim in enumerate(rm.dimensions)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("policy")
    parser.add_argument("--reward-model")
    parser.add_argument("--prompts", type=int, default=60)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--request", default="", help="a prefix request, e.g. helpfulness=1 (default: none)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    try:
        request = {k: int(v) for k, v in (item.split("=") for item in args.request.split(",") if item)}
    except ValueError:
        parser.error(
            f"--request: expected name=level[,name=level...], e.g. helpfulness=1, got {args.request!r}"
        )
    data = PromptDataModule(synthetic=SyntheticConfig(num_prompts=300, seed=0), num_test_prompts=args.prompts)
    prompts = [format_prefix(request, p) for p in data.sweep_prompts()]
    tokenizer = load_tokenizer(args.policy)
    model = load_causal_lm(args.policy, tokenizer=tokenizer).eval()
    report = {}
    for name, temperature, copies in (("sampled", 1.0, args.samples), ("greedy", 0.0, 1)):
        texts = [p for p in prompts for _ in range(copies)]
        batch = encode_prompts(tokenizer, texts, 32, False, dimensions=synthetic.DIMENSIONS)
        with torch.no_grad():
            responses = generate(
                model, tokenizer, batch, max_new_tokens=64, temperature=temperature
            ).responses
        report[name] = summarize(texts, responses)
        if args.reward_model and name == "sampled":
            report[name]["rm_accuracy"] = rm_accuracy(args.reward_model, texts, responses)
    print(json.dumps(report))  # noqa: T201


if __name__ == "__main__":
    main()
