"""The real-chat recipe's evaluation: sweep a policy over held-out questions, then report start vs trained.

    python recipes/real_chat/evaluate.py sweep --policy ID_OR_EXPORT --reward-model RM_EXPORT \
        --questions mt_bench_questions.jsonl --out OUT/eval/start.json
    python recipes/real_chat/evaluate.py report --start OUT/eval/start.json --trained OUT/eval/trained.json \
        --out OUT [--minutes M]

``sweep`` answers the first turn of every question under every level of every RM head (one named
dimension per prompt), greedily, and writes every answer with its measurements: words, readability grade,
relevance (MiniLM cosine) and the RM's expected level of each head (``moslim_pl.evaluation.text_sweep``).
``length-signal`` prints, for a sweep, how closely each RM head follows the answers' word count among the
answers to one question (``moslim_pl.evaluation.text_sweep.length_signal``): the length signal RL gets;
``--reward-model EXPORT`` scores the sweep's answers with another RM first (a candidate RM, checked on the
start policy's answers before any RL run).
``report`` writes ``real_chat.json``, one PNG per measured dimension (requested level against the
measured value, start vs trained) and ``examples.md`` (one question at the low, middle and high level).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from pathlib import Path

import torch

from moslim_pl.evaluation.controllability import rm_expected_levels
from moslim_pl.evaluation.plots import plt
from moslim_pl.evaluation.text_metrics import Relevance
from moslim_pl.evaluation.text_sweep import SweepRecord, length_signal, measure, summarize, sweep_answers
from moslim_pl.generation import encode_prompts, generate, resolve_chat_template
from moslim_pl.models.backbone import load_causal_lm, load_tokenizer
from moslim_pl.models.reward_model import MultiHeadRewardModel
from moslim_pl.utils.io import atomic_file

log = logging.getLogger("real_chat")


def read_questions(path: str, limit: int | None) -> list[str]:
    """First user turns of an MT-Bench-style JSONL (``turns``), or a ``prompt`` column."""
    questions = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            questions.append(row["turns"][0] if "turns" in row else row["prompt"])
    return questions[:limit]


def rm_levels(rm: MultiHeadRewardModel, prompts: list[str], responses: list[str]) -> list[dict[str, float]]:
    """The RM's expected level of every head, one ``{head: level}`` per (prompt, response)."""
    with torch.inference_mode():
        probs = rm.score(prompts, responses, batch_size=32).probs
    levels = rm_expected_levels(probs, rm.dimensions)
    return [{name: float(row[k]) for k, name in enumerate(rm.names)} for row in levels]


def sweep(args: argparse.Namespace) -> None:
    started = time.time()
    torch.manual_seed(0)
    questions = read_questions(args.questions, args.limit)
    rm = MultiHeadRewardModel.from_pretrained(args.reward_model).eval()
    tokenizer = load_tokenizer(args.policy)
    chat = resolve_chat_template(tokenizer, None, args.policy)
    policy = load_causal_lm(args.policy, tokenizer=tokenizer).eval()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()

    def answer(prompts: list[str]) -> tuple[list[str], list[bool]]:
        responses, finished = [], []
        for start in range(0, len(prompts), args.batch_size):
            batch = encode_prompts(
                tokenizer,
                prompts[start : start + args.batch_size],
                args.max_prompt_length,
                chat,
                rm.dimensions,
            )
            with torch.inference_mode(), autocast:
                rollout = generate(
                    policy, tokenizer, batch, max_new_tokens=args.max_new_tokens, temperature=0.0
                )
            responses += rollout.responses
            finished += rollout.finished.tolist()
        log.info("%s: %d answers (%.0f s so far)", prompts[0][:24], len(prompts), time.time() - started)
        return responses, finished

    dimensions = [d for d in rm.dimensions if not args.dimensions or d.name in args.dimensions]
    records = sweep_answers(dimensions, questions, answer)
    measure(records, Relevance(), lambda prompts, responses: rm_levels(rm, prompts, responses))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "policy": args.policy,
        "questions": len(questions),
        "seconds": time.time() - started,
        "records": [r.to_dict() for r in records],
    }
    with atomic_file(out) as tmp:
        tmp.write_text(json.dumps(payload, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("wrote %d answers to %s in %.0f s", len(records), out, payload["seconds"])


def _load(path: str) -> tuple[dict, list[SweepRecord]]:
    payload = json.loads(Path(path).read_text(encoding="utf-8"))
    return payload, [SweepRecord(**row) for row in payload["records"]]


def _examples(start: list[SweepRecord], trained: list[SweepRecord], dimensions: list[str]) -> str:
    """For each dimension, the first question at its lowest, middle and highest level, start vs trained."""
    lines = ["# Example answers (greedy; the same question at low, middle and high level)", ""]
    for dimension in dimensions:
        rows = [r for r in trained if r.dimension == dimension]
        levels = sorted({r.level for r in rows})
        chosen = [levels[0], levels[len(levels) // 2], levels[-1]]
        question = rows[0].question
        lines += [
            f"## {dimension}",
            "",
            f"Question: {question}",
            "",
            "| level | start | trained |",
            "|---|---|---|",
        ]
        for level in dict.fromkeys(chosen):
            cells = []
            for records in (start, trained):
                match = next(
                    r
                    for r in records
                    if r.dimension == dimension and r.level == level and r.question == question
                )
                text = match.response.replace("|", "\\|").replace("\n", " ")
                cells.append(f"{text} *({match.words} words)*")
            lines.append(f"| {level} | {cells[0]} | {cells[1]} |")
        lines.append("")
    return "\n".join(lines)


def report(args: argparse.Namespace) -> None:
    out = Path(args.out)
    (start_payload, start), (trained_payload, trained) = _load(args.start), _load(args.trained)
    summaries = {"start": summarize(start), "trained": summarize(trained)}
    result = {
        name: {k: v for k, v in summary.items() if k not in ("levels", "mean_words")}
        for name, summary in summaries.items()
    }
    result["eval_prompts"] = start_payload["questions"]
    result["minutes"] = args.minutes
    result["mean_words"] = {name: s["mean_words"] for name, s in summaries.items()}
    result["levels"] = {name: s["levels"] for name, s in summaries.items()}
    result["sweep_seconds"] = {"start": start_payload["seconds"], "trained": trained_payload["seconds"]}
    with atomic_file(out / "real_chat.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    for key in summaries["trained"]["levels"]:
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
        for name, style in (("start", "o--"), ("trained", "s-")):
            levels = summaries[name]["levels"].get(key, {})
            rho = summaries[name]["spearman"].get(key, float("nan"))
            ax.plot([int(x) for x in levels], list(levels.values()), style, label=f"{name} (rho {rho:.2f})")
        ax.set_xticks(sorted({int(x) for s in summaries.values() for x in s["levels"].get(key, {})}))
        ax.set_xlabel("requested level")
        ax.set_ylabel(key)
        ax.set_title(key + (" (RM-measured)" if key.startswith("rm/") else " (text)"))
        ax.legend()
        ax.grid(alpha=0.3)
        with atomic_file(out / f"real_chat_{key.replace('/', '_')}.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
    dimensions = list(dict.fromkeys(r.dimension for r in trained))
    with atomic_file(out / "examples.md") as tmp:
        tmp.write_text(_examples(start, trained, dimensions), encoding="utf-8")
    log.info(
        "wrote %s:\n%s",
        out / "real_chat.json",
        json.dumps({k: result[k] for k in ("start", "trained")}, indent=1),
    )


def signal(args: argparse.Namespace) -> None:
    """Print, per RM head, how closely it follows word count among one question's answers of a sweep.

    With ``--reward-model``, the sweep's answers are scored again by that RM first, so a candidate RM is
    checked on the policy's answers in a minute, before any RL run trains against it.
    """
    _, records = _load(args.sweep)
    if args.reward_model:
        rm = MultiHeadRewardModel.from_pretrained(args.reward_model).eval()
        scores = rm_levels(rm, [r.prompt for r in records], [r.response for r in records])
        for record, row in zip(records, scores, strict=True):
            record.rm_levels = row
    for head in records[0].rm_levels:
        rho, questions = length_signal(records, head)
        sys.stdout.write(
            f"{head:12s} within-question Spearman(words, RM level) {rho:.3f} over {questions} questions\n"
        )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("sweep", help="answer and measure the sweep for one policy")
    one.add_argument("--policy", required=True, help="hub id or export folder")
    one.add_argument("--reward-model", required=True, help="the RM export folder")
    one.add_argument("--questions", required=True, help="MT-Bench-style JSONL (first turn of `turns`)")
    one.add_argument("--out", required=True, help="the JSON file of answers and measurements")
    one.add_argument("--limit", type=int, default=None, help="first N questions only")
    one.add_argument("--dimensions", nargs="*", default=None, help="sweep these heads only (default: all)")
    one.add_argument("--max-new-tokens", type=int, default=160, help="as the policy trained")
    one.add_argument("--max-prompt-length", type=int, default=128)
    one.add_argument("--batch-size", type=int, default=80)
    one.add_argument("--bf16", action="store_true", help="bf16 autocast (CPUs with AVX512-BF16, GPUs)")
    two = commands.add_parser("report", help="real_chat.json, PNGs and examples.md from two sweeps")
    two.add_argument("--start", required=True)
    two.add_argument("--trained", required=True)
    two.add_argument("--out", required=True)
    two.add_argument("--minutes", type=float, default=None, help="the recipe's wall-clock minutes")
    three = commands.add_parser("length-signal", help="how closely each RM head follows length, per question")
    three.add_argument("sweep", help="a sweep's JSON (OUT/eval/start.json)")
    three.add_argument("--reward-model", default=None, help="score the answers with this RM export first")
    args = parser.parse_args()
    {"sweep": sweep, "report": report, "length-signal": signal}[args.command](args)


if __name__ == "__main__":
    main()
